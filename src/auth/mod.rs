//! Who the proxy says it is upstream: identities (user + secret) per upstream
//! connection, and the redacting [`Secret`] type. Knows nothing of RESP or sockets.

pub mod secret;

pub use secret::Secret;

use crate::config;

/// How an identity authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Password,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
        }
    }
}

/// Credentials for one upstream AUTH.
#[derive(Clone, Debug)]
pub struct Identity {
    pub method: Method,
    /// `None`: the legacy single-password `AUTH <password>`.
    pub user: Option<String>,
    pub secret: Secret,
}

impl Identity {
    /// The arguments of the AUTH command for this identity.
    pub fn auth_command(&self) -> Vec<&[u8]> {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &self.user {
            args.push(user.as_bytes());
        }
        args.push(self.secret.expose().as_bytes());
        args
    }

    /// The user name for logs (`default` for the legacy single password).
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// Hands out the identity for each new upstream connection.
#[derive(Clone, Debug)]
pub struct Provider {
    password: Option<Identity>,
}

impl Provider {
    pub fn new(auth: &config::Auth) -> Self {
        Provider {
            password: auth.password.as_ref().map(|p| Identity {
                method: Method::Password,
                user: p.user.clone(),
                secret: p.secret.clone(),
            }),
        }
    }

    /// The identity for a new upstream connection.
    pub fn identity(&self) -> Result<Identity, crate::error::Error> {
        self.password.clone().ok_or_else(|| {
            crate::error::Error::new(
                crate::error::Kind::Identity,
                crate::error::Side::Internal,
                "no password configured",
            )
        })
    }
}
