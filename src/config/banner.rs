//! The start banner: what this proxy will do, one line per topic, for the
//! person reading the log. Never a secret: passwords appear only as where
//! they were read from.

use super::{AuthMode, Config, PasswordSource};

impl Config {
    /// `(topic, line)` pairs: mode, identity, credentials, upstream,
    /// listeners, admin.
    pub fn banner(&self) -> Vec<(&'static str, String)> {
        let mut lines = Vec::new();
        let cluster = match &self.cluster {
            Some(_) if self.auth.iam.as_ref().is_some_and(|i| i.serverless) => {
                " in cluster mode (serverless)"
            }
            Some(_) => " in cluster mode",
            None => "",
        };
        let mode = match self.auth.mode {
            AuthMode::Iam => "IAM tokens only",
            AuthMode::Password => "password only",
            AuthMode::IamWithPasswordFallback => {
                "IAM first, the password user when IAM is unavailable, refused or throttled"
            }
        };
        lines.push((
            "mode",
            format!("{} ({mode}){cluster}", self.auth.mode.as_str()),
        ));

        let mut identity = Vec::new();
        if let Some(iam) = &self.auth.iam {
            let kind = if iam.serverless {
                "serverless cache"
            } else {
                "cache"
            };
            let region = iam.region.as_deref().unwrap_or("from the AWS SDK chain");
            identity.push(format!(
                "IAM user {} for {kind} {} (region {region}, service {})",
                iam.user,
                iam.cache_name,
                iam.service.as_str()
            ));
        }
        if let Some(p) = &self.auth.password {
            let user = p.user.as_deref().map_or_else(
                || "legacy AUTH <password> (user default)".to_string(),
                |u| format!("password user {u}"),
            );
            let source = match &p.source {
                PasswordSource::Env(var) => format!("from ${var}"),
                PasswordSource::File(path) => format!("from {}", path.display()),
            };
            identity.push(format!("{user}, password {source}"));
        }
        lines.push(("identity", identity.join("; ")));

        if self.auth.iam.is_some() {
            lines.push((
                "credentials",
                "the AWS SDK's default chain (environment, profile, web identity/IRSA, ECS and EKS Pod Identity, IMDS); the provider that answers is logged at the first fetch".into(),
            ));
        }

        let tls = match &self.tls {
            Some(t) => {
                let mut tls = format!("TLS, certificate verified as {}", t.server_name);
                if let Some(ca) = &t.ca_file {
                    tls.push_str(&format!(", CA {} and the system roots", ca.display()));
                }
                if t.client_cert.is_some() {
                    tls.push_str(", client certificate");
                }
                tls
            }
            None => "PLAINTEXT (--no-tls; local development only)".into(),
        };
        let seed = if self.cluster.is_some() {
            " (configuration endpoint: the seed)"
        } else {
            ""
        };
        lines.push((
            "upstream",
            format!("{}:{}{seed}, {tls}", self.upstream.host, self.upstream.port),
        ));

        let mut listen = vec![format!("{} (plain RESP)", self.listen)];
        if let Some(path) = &self.unix_socket {
            listen.push(format!(
                "unix socket {} (mode {:o})",
                path.display(),
                self.unix_socket_mode
            ));
        }
        if let Some(c) = &self.cluster {
            listen.push(match c.ports {
                Some(r) => format!(
                    "one per cluster node on ports {}-{} of {}",
                    r.first,
                    r.last,
                    self.listen.ip()
                ),
                None => format!(
                    "one per cluster node on ephemeral ports of {}",
                    self.listen.ip()
                ),
            });
        }
        if self.client_password.is_some() {
            listen.push("clients must AUTH with the client password first".into());
        }
        lines.push(("listeners", listen.join("; ")));

        lines.push((
            "admin",
            format!(
                "http://{} (/metrics, /startup, /readiness, /liveness, POST /quitquitquit)",
                self.admin_listen
            ),
        ));
        lines
    }
}
