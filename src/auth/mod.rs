//! Who the proxy says it is upstream: the identity (user + secret) for each
//! upstream connection, chosen by the policy (password, IAM, IAM with
//! password fallback), and the redacting [`Secret`] type. Knows nothing of
//! RESP or sockets.

pub mod policy;
pub mod refresher;
pub mod secret;
pub mod token;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
pub use secret::Secret;
use tokio::sync::watch;

use crate::{
    config::{self, AuthMode},
    error::{Error, Kind, Side},
    metrics::Metrics,
};

/// How an identity authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Password,
    Iam,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Iam => "iam",
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
        match &self.user {
            Some(user) => vec![b"AUTH", user.as_bytes(), self.secret.expose().as_bytes()],
            None => vec![b"AUTH", self.secret.expose().as_bytes()],
        }
    }

    /// `user secret` as HELLO's AUTH clause takes them (the legacy password
    /// belongs to `default`).
    pub fn hello_auth(&self) -> Vec<&[u8]> {
        vec![
            self.user.as_deref().unwrap_or("default").as_bytes(),
            self.secret.expose().as_bytes(),
        ]
    }

    /// The user name for logs (`default` for the legacy single password).
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// The proxy could not set up authentication.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region to sign IAM tokens for: set --region (env ELASTICACHE_AUTH_PROXY_REGION, config key `region`), or AWS_REGION, or a region in the AWS profile")]
    NoRegion,
    /// The SDK chain came up without any provider (not a credential fetch,
    /// which happens later and is retried).
    #[error("no AWS credentials provider could be configured")]
    NoCredentials,
}

/// Signs one token now with the default AWS credential chain (the `token`
/// command). The error names what is missing, never a secret.
pub async fn sign_once(
    cache_name: &str,
    user: &str,
    region: Option<String>,
    serverless: bool,
    service: config::Service,
) -> Result<token::Token, String> {
    let sdk = sdk_config(region.as_deref()).await;
    let region = sdk
        .region()
        // The token command has only the flag, not the proxy's env and key.
        .ok_or("no AWS region: set --region or AWS_REGION, or a region in the AWS profile")?
        .to_string();
    let creds = fetch_credentials(&sdk).await?;
    let params = token::Params {
        cache_name: cache_name.into(),
        user: user.into(),
        region,
        service,
        serverless,
    };
    token::sign(&creds, &params, std::time::SystemTime::now()).map_err(|e| e.to_string())
}

/// The AWS SDK's configuration from its default chains, with `region` in
/// place of the region chain when given.
pub(crate) async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    loader.load().await
}

/// One fetch from `sdk`'s credentials chain. The error names the providers
/// tried, never a key.
pub(crate) async fn fetch_credentials(
    sdk: &aws_config::SdkConfig,
) -> Result<aws_credential_types::Credentials, String> {
    use aws_credential_types::provider::ProvideCredentials;
    let provider = sdk
        .credentials_provider()
        .ok_or(SetupError::NoCredentials.to_string())?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| format!("no AWS credentials: {}", DisplayErrorChain(&e)))
}

/// Which provider of the chain the credentials came from, as the SDK marks
/// them; `credentials` when it did not (explicit ones, a custom provider).
pub fn credential_source(creds: &aws_credential_types::Credentials) -> &'static str {
    use aws_credential_types::credential_feature::AwsCredentialFeature as F;
    let features = creds
        .get_property::<Vec<F>>()
        .map(Vec::as_slice)
        .unwrap_or_default();
    // The most specific first: a web identity profile is also a profile.
    let names: &[(F, &str)] = &[
        (
            F::CredentialsProfileStsWebIdToken,
            "web identity token (IRSA)",
        ),
        (
            F::CredentialsEnvVarsStsWebIdToken,
            "web identity token (IRSA)",
        ),
        (
            F::CredentialsStsAssumeRoleWebId,
            "web identity token (IRSA)",
        ),
        (
            F::CredentialsHttp,
            "container credentials endpoint (ECS task role or EKS Pod Identity)",
        ),
        (F::CredentialsImds, "instance metadata (IMDS)"),
        (F::CredentialsProfileSso, "SSO (AWS profile)"),
        (F::CredentialsSso, "SSO"),
        (
            F::CredentialsProfileProcess,
            "credential_process (AWS profile)",
        ),
        (F::CredentialsProcess, "credential_process"),
        (F::CredentialsStsAssumeRole, "assumed role (AWS profile)"),
        (F::CredentialsProfile, "AWS profile"),
        (F::CredentialsEnvVars, "environment (AWS_ACCESS_KEY_ID)"),
    ];
    names
        .iter()
        .find(|(f, _)| features.contains(f))
        .map_or("credentials given to the proxy", |(_, name)| name)
}

/// An error with its sources, `a: b: c`.
pub(crate) struct DisplayErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for DisplayErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// IAM tokens kept fresh in the background.
#[derive(Clone)]
struct Iam {
    user: String,
    current: watch::Receiver<refresher::Current>,
    stats: Arc<refresher::Stats>,
}

/// Hands out the identities to try for each new upstream connection.
#[derive(Clone)]
pub struct Provider {
    mode: AuthMode,
    password: Option<Identity>,
    iam: Option<Iam>,
    /// How long a connection waits for the first token at cold start.
    cold_start: Duration,
    /// How IAM has fared lately (fallback mode skips it after failures).
    health: Arc<Mutex<policy::IamHealth>>,
    pub metrics: Arc<Metrics>,
}

impl Provider {
    /// Builds the provider; in IAM modes, resolves the region and credentials
    /// from the AWS SDK's default chain (environment, profile, web identity,
    /// ECS / EKS Pod Identity, IMDS) and starts the token refresher.
    pub async fn new(
        auth: &config::Auth,
        cold_start: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Provider, SetupError> {
        let Some(iam) = &auth.iam else {
            return Ok(Provider::with_credentials(
                auth,
                None,
                String::new(),
                cold_start,
                metrics,
            ));
        };
        let sdk = sdk_config(iam.region.as_deref()).await;
        let region = sdk.region().ok_or(SetupError::NoRegion)?.to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or(SetupError::NoCredentials)?;
        Ok(Provider::with_credentials(
            auth,
            Some(credentials),
            region,
            cold_start,
            metrics,
        ))
    }

    /// Builds the provider with an explicit credentials provider and region
    /// (for embedding and tests); starts the refresher in IAM modes.
    pub fn with_credentials(
        auth: &config::Auth,
        credentials: Option<SharedCredentialsProvider>,
        region: String,
        cold_start: Duration,
        metrics: Arc<Metrics>,
    ) -> Provider {
        let iam = match (&auth.iam, credentials) {
            (Some(iam), Some(credentials)) => {
                let stats = Arc::new(refresher::Stats::default());
                let params = token::Params {
                    cache_name: iam.cache_name.clone(),
                    user: iam.user.clone(),
                    region,
                    service: iam.service,
                    serverless: iam.serverless,
                };
                Some(Iam {
                    user: iam.user.clone(),
                    current: refresher::spawn(credentials, params, stats.clone(), metrics.clone()),
                    stats,
                })
            }
            _ => None,
        };
        Provider {
            mode: auth.mode,
            password: auth.password.as_ref().map(|p| Identity {
                method: Method::Password,
                user: p.user.clone(),
                secret: p.secret.clone(),
            }),
            iam,
            cold_start,
            health: Arc::default(),
            metrics,
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The methods to try, in order, for a new upstream connection.
    pub fn plan(&self) -> policy::Plan {
        // The lock guards two plain fields; it is never held across I/O.
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        policy::plan(self.mode, &health, Instant::now())
    }

    /// Records how an IAM attempt went, for the fallback backoff.
    pub fn record_iam(&self, ok: bool) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        policy::record(&mut health, ok, Instant::now());
    }

    /// Waits until the first identity is ready: at once for passwords; in
    /// `iam` mode until a token exists (there is nothing else to serve
    /// with); with fallback, until the first refresh's outcome is known (up
    /// to the cold-start timeout), since the password can serve meanwhile.
    pub async fn wait_ready(&self) {
        let Some(iam) = &self.iam else {
            return;
        };
        let mut rx = iam.current.clone();
        if self.mode == AuthMode::Iam {
            let _ = rx.wait_for(|c| c.token.is_some()).await;
        } else {
            let ready = |c: &refresher::Current| c.token.is_some() || c.error.is_some();
            let _ = tokio::time::timeout(self.cold_start, rx.wait_for(ready)).await;
        }
    }

    /// The identity for `method`, waiting (at cold start only) for the first
    /// IAM token.
    pub async fn identity(&self, method: Method) -> Result<Identity, Error> {
        if let (Method::Iam, Some(iam)) = (method, &self.iam) {
            let mut rx = iam.current.clone();
            let ready = |c: &refresher::Current| c.token.is_some() || c.error.is_some();
            if !ready(&rx.borrow()) {
                let _ = tokio::time::timeout(self.cold_start, rx.wait_for(ready)).await;
            }
        }
        self.current(method)
    }

    /// The identity for `method` now, without waiting: never signs and never
    /// fetches credentials (invariant 4).
    pub fn current(&self, method: Method) -> Result<Identity, Error> {
        let unavailable = |detail: String| Error::new(Kind::Identity, Side::Internal, detail);
        match method {
            Method::Password => self
                .password
                .clone()
                .ok_or_else(|| unavailable("no password configured".into())),
            Method::Iam => {
                let iam = self
                    .iam
                    .as_ref()
                    .ok_or_else(|| unavailable("IAM is not configured".into()))?;
                let current = iam.current.borrow();
                match &current.token {
                    Some(token) if refresher::usable(token, std::time::SystemTime::now()) => {
                        Ok(Identity {
                            method: Method::Iam,
                            user: Some(iam.user.clone()),
                            secret: token.value.clone(),
                        })
                    }
                    _ => Err(unavailable(match &current.error {
                        Some(reason) => format!("no valid IAM token: {reason}"),
                        None => "no IAM token yet (credentials are still being fetched)".into(),
                    })),
                }
            }
        }
    }

    /// Signing and credential counters (IAM modes).
    pub fn iam_stats(&self) -> Option<Arc<refresher::Stats>> {
        self.iam.as_ref().map(|i| i.stats.clone())
    }
}
