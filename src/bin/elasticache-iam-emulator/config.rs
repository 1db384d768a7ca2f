//! Owns the emulator's configuration: a TOML file (kebab-case keys, unknown
//! keys rejected) plus `--listen`, validated into [`Config`] in one place.
//! Reads the environment through a lookup function; opens no sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::verify::{self, Credential};
use elasticache_auth_proxy::auth::Secret;

/// The file as written; every key is documented in `config/emulator.example.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    listen: Option<SocketAddr>,
    stats_listen: Option<SocketAddr>,
    backend: String,
    backend_password_env: String,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    cache_name: String,
    region: String,
    #[serde(default)]
    service: Service,
    #[serde(default)]
    serverless: bool,
    #[serde(default)]
    iam_users: Vec<String>,
    max_session_age: Option<String>,
    clock_skew: Option<String>,
    #[serde(default)]
    iam_auth_rate: u32,
    #[serde(default)]
    throttle_reply: ThrottleReply,
    #[serde(default)]
    credentials: Vec<CredentialFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CredentialFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expires_at: Option<String>,
}

/// Which AWS service signs tokens: the SigV4 service name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    #[default]
    Elasticache,
    Memorydb,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Elasticache => "elasticache",
            Service::Memorydb => "memorydb",
        }
    }
}

/// What a throttled IAM AUTH is answered with: ElastiCache's three replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThrottleReply {
    /// Over the IAM authentication rate limit.
    #[default]
    ExceededLimit,
    /// The IAM authentication service is unavailable (an authenticated
    /// connection's re-AUTH).
    IamServiceUnavailable,
    /// The bare reply before authentication (AWS's public-endpoint
    /// documentation).
    ServiceUnavailable,
}

impl ThrottleReply {
    /// The whole reply frame, as ElastiCache sends it.
    pub fn frame(self) -> &'static [u8] {
        match self {
            ThrottleReply::ExceededLimit => {
                b"-ERR Exceeded limit of IAM Authentication requests\r\n"
            }
            ThrottleReply::IamServiceUnavailable => {
                b"-ERR IAM Authentication service is not available\r\n"
            }
            ThrottleReply::ServiceUnavailable => b"-ERR service is not available\r\n",
        }
    }
}

/// Validated settings.
#[derive(Debug)]
pub struct Config {
    /// TLS RESP listener for clients.
    pub listen: SocketAddr,
    /// Plain TCP listener that writes the counters and closes.
    pub stats_listen: SocketAddr,
    /// The real redis-server, `HOST:PORT`, plain TCP.
    pub backend: String,
    /// Password of every IAM user's same-named ACL user on the backend.
    pub backend_password: Secret,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Users whose AUTH/HELLO carries an IAM token; others go to the backend as-is.
    pub iam_users: Vec<String>,
    /// An IAM-authenticated connection is closed this long after its last
    /// successful IAM AUTH.
    pub max_session_age: Duration,
    /// IAM AUTH attempts per second across all connections; 0 = unlimited.
    pub iam_auth_rate: u32,
    /// What a throttled IAM AUTH is answered with.
    pub throttle_reply: ThrottleReply,
    /// What tokens are checked against.
    pub verify: verify::Settings,
}

/// A configuration the emulator cannot run with. Messages never quote values
/// of secret keys (TOML errors are reduced to message and position).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> Error {
    Error::Invalid {
        key,
        why: why.into(),
    }
}

impl Config {
    /// Reads `path`, applies `listen` over the file's, and validates. `env`
    /// looks up environment variables (tests pass a map).
    pub fn load(
        path: &Path,
        listen: Option<SocketAddr>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base, env).map_err(|e| match e {
            Error::Parse {
                line,
                column,
                message,
                ..
            } => Error::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            other => other,
        })?;
        if let Some(listen) = listen {
            cfg.listen = listen;
        }
        Ok(cfg)
    }

    /// Parses and validates `text`; relative TLS paths are taken from `base`
    /// (the config file's directory).
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let file: File = toml::from_str(text).map_err(|e| parse_error(text, &e))?;

        let backend = file.backend.trim().to_string();
        let port_ok = backend
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(invalid("backend", "expected HOST:PORT"));
        }
        let backend_password = match env(&file.backend_password_env) {
            Some(value) if !value.is_empty() => Secret::new(value),
            _ => {
                return Err(invalid(
                    "backend-password-env",
                    format!(
                        "environment variable {} is not set or empty",
                        file.backend_password_env
                    ),
                ))
            }
        };
        if file.cache_name.is_empty() || file.cache_name.contains([':', '/']) {
            return Err(invalid(
                "cache-name",
                "expected a replication group id or serverless cache name",
            ));
        }
        if file.region.is_empty() {
            return Err(invalid("region", "must not be empty"));
        }
        for (i, user) in file.iam_users.iter().enumerate() {
            if user.is_empty() || user.contains(char::is_whitespace) {
                return Err(invalid("iam-users", format!("invalid user name {user:?}")));
            }
            if file.iam_users[..i].contains(user) {
                return Err(invalid("iam-users", format!("{user:?} listed twice")));
            }
        }
        let max_session_age = duration("max-session-age", file.max_session_age, "12h")?;
        if max_session_age.is_zero() {
            return Err(invalid("max-session-age", "must be more than 0"));
        }
        let clock_skew = duration("clock-skew", file.clock_skew, "5m")?;

        let mut credentials = Vec::with_capacity(file.credentials.len());
        for c in file.credentials {
            if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                return Err(invalid(
                    "credentials",
                    "access-key-id and secret-access-key must not be empty",
                ));
            }
            if credentials
                .iter()
                .any(|seen: &Credential| seen.access_key_id == c.access_key_id)
            {
                return Err(invalid(
                    "credentials",
                    format!("access-key-id {} listed twice", c.access_key_id),
                ));
            }
            let expires_at = match c.expires_at {
                None => None,
                Some(at) => Some(humantime::parse_rfc3339(&at).map_err(|_| {
                    invalid(
                        "credentials.expires-at",
                        format!("{at:?} is not an RFC 3339 UTC time like 2026-11-25T12:00:00Z"),
                    )
                })?),
            };
            credentials.push(Credential {
                access_key_id: c.access_key_id,
                secret_access_key: Secret::new(c.secret_access_key),
                session_token: c.session_token.map(Secret::new),
                expires_at,
            });
        }
        if !file.iam_users.is_empty() && credentials.is_empty() {
            return Err(invalid(
                "credentials",
                "iam-users needs at least one [[credentials]] table to verify tokens against",
            ));
        }

        Ok(Config {
            listen: file.listen.unwrap_or(([127, 0, 0, 1], 6380).into()),
            stats_listen: file.stats_listen.unwrap_or(([127, 0, 0, 1], 0).into()),
            backend,
            backend_password,
            tls_cert: base.join(file.tls_cert),
            tls_key: base.join(file.tls_key),
            iam_users: file.iam_users,
            max_session_age,
            iam_auth_rate: file.iam_auth_rate,
            throttle_reply: file.throttle_reply,
            verify: verify::Settings {
                // ElastiCache signs and checks the lowercased cache id.
                cache_name: file.cache_name.to_lowercase(),
                region: file.region,
                service: file.service.name().to_string(),
                serverless: file.serverless,
                clock_skew,
                credentials,
            },
        })
    }
}

fn duration(key: &'static str, value: Option<String>, default: &str) -> Result<Duration, Error> {
    let value = value.unwrap_or_else(|| default.to_string());
    humantime::parse_duration(&value).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like 12h or 500ms: {e}"),
        )
    })
}

/// Message and position only: toml's own `Display` quotes the source line,
/// which may hold a secret key.
fn parse_error(text: &str, e: &toml::de::Error) -> Error {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    Error::Parse {
        path: PathBuf::new(),
        line,
        column,
        message: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../config/emulator.example.toml");

    fn env(key: &str) -> Option<String> {
        (key == "EMULATOR_BACKEND_PASSWORD").then(|| "backend-pw".to_string())
    }

    fn minimal(extra: &str) -> String {
        format!(
            r#"
backend = "127.0.0.1:6379"
backend-password-env = "EMULATOR_BACKEND_PASSWORD"
tls-cert = "cert.pem"
tls-key = "/abs/key.pem"
cache-name = "My-Cache"
region = "us-east-1"
{extra}"#
        )
    }

    #[test]
    fn example_parses_and_documents_every_key() {
        let cfg = Config::parse(EXAMPLE, Path::new("/etc/emulator"), &env).expect("example");
        assert_eq!(cfg.iam_users, ["iam-user-01"]);
        assert_eq!(cfg.verify.credentials.len(), 2);
        assert!(cfg.verify.credentials[1].expires_at.is_some());
        // Every key of the file format appears in the example, set or commented.
        for key in [
            "listen",
            "stats-listen",
            "backend",
            "backend-password-env",
            "tls-cert",
            "tls-key",
            "cache-name",
            "region",
            "service",
            "serverless",
            "iam-users",
            "max-session-age",
            "clock-skew",
            "iam-auth-rate",
            "throttle-reply",
            "access-key-id",
            "secret-access-key",
            "session-token",
            "expires-at",
        ] {
            assert!(EXAMPLE.contains(&format!("{key} =")), "{key} undocumented");
        }
        assert!(EXAMPLE.contains("[[credentials]]"));
    }

    #[test]
    fn defaults() {
        let cfg = Config::parse(&minimal(""), Path::new("/etc/e"), &env).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:6380".parse().unwrap());
        assert_eq!(cfg.stats_listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.backend_password.expose(), "backend-pw");
        assert_eq!(cfg.tls_cert, Path::new("/etc/e/cert.pem"));
        assert_eq!(cfg.tls_key, Path::new("/abs/key.pem"));
        assert_eq!(cfg.max_session_age, Duration::from_secs(12 * 3600));
        assert_eq!(cfg.verify.clock_skew, Duration::from_secs(300));
        assert_eq!(cfg.verify.cache_name, "my-cache");
        assert_eq!(cfg.verify.service, "elasticache");
        assert!(!cfg.verify.serverless);
        assert_eq!(cfg.iam_auth_rate, 0);
        assert_eq!(cfg.throttle_reply, ThrottleReply::ExceededLimit);
        let cfg = Config::parse(
            &minimal("throttle-reply = \"service-unavailable\""),
            Path::new("."),
            &env,
        )
        .unwrap();
        assert_eq!(
            cfg.throttle_reply.frame(),
            b"-ERR service is not available\r\n"
        );
    }

    #[test]
    fn rejects() {
        let cred = "[[credentials]]\naccess-key-id = \"AKID\"\nsecret-access-key = \"s\"\n";
        let rows: &[(&str, &str)] = &[
            ("unknown = 1", "unknown field"),
            ("service = \"s3\"", "unknown variant"),
            ("throttle-reply = \"slow\"", "unknown variant"),
            ("max-session-age = \"soon\"", "max-session-age"),
            ("max-session-age = \"0s\"", "more than 0"),
            ("clock-skew = 5", "invalid type"),
            ("iam-users = [\"a\"]", "at least one [[credentials]]"),
            ("iam-users = [\"a\", \"a\"]", "listed twice"),
            ("iam-users = [\"a b\"]", "invalid user name"),
        ];
        for (extra, want) in rows {
            let err = Config::parse(&minimal(extra), Path::new("."), &env).unwrap_err();
            assert!(err.to_string().contains(want), "{extra}: {err}");
        }
        let bad_expiry = format!("{cred}expires-at = \"tomorrow\"\n");
        let err = Config::parse(&minimal(&bad_expiry), Path::new("."), &env).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        let twice = format!("{cred}{cred}");
        let err = Config::parse(&minimal(&twice), Path::new("."), &env).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");

        let no_env = |_: &str| None;
        let err = Config::parse(&minimal(""), Path::new("."), &no_env).unwrap_err();
        assert!(
            err.to_string().contains("EMULATOR_BACKEND_PASSWORD"),
            "{err}"
        );
        let text = minimal("").replace("127.0.0.1:6379", "localhost");
        let err = Config::parse(&text, Path::new("."), &env).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let missing = minimal("").replace("region = \"us-east-1\"", "");
        let err = Config::parse(&missing, Path::new("."), &env).unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn parse_errors_do_not_quote_secrets() {
        let text = minimal("[[credentials]]\naccess-key-id = \"AKID\"\nsecret-access-key = \"TOPSECRET\"\nsession-token = 5\n");
        let err = Config::parse(&text, Path::new("."), &env).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(shown.contains(":11:"), "{shown}");
        let cfg_debug = format!(
            "{:?}",
            Config::parse(
                &minimal("[[credentials]]\naccess-key-id = \"AKID\"\nsecret-access-key = \"TOPSECRET\"\n"),
                Path::new("."),
                &env
            )
            .unwrap()
        );
        assert!(!cfg_debug.contains("TOPSECRET") && !cfg_debug.contains("backend-pw"));
    }
}
