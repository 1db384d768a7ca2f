//! `elasticache-auth-proxy verify`: the migration guide's "verify both
//! authentication methods" and "connect with IAM" steps as one command.
//! With the proxy's own settings it checks, in order, where the AWS
//! credentials come from, that a token can be signed, the TCP connect and
//! the TLS handshake, and then each configured method's `AUTH` followed by
//! `ACL WHOAMI`; in cluster mode, every node too. Each check is one row with
//! its outcome, latency and, when it fails, what to look at. Nothing secret
//! (password, token, signature, AWS keys) is ever part of a row.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::{
    auth::{token, Identity, Method},
    cluster::rewrite::{self, Named, Role},
    config::{AuthMode, Config},
    error::{Error, Kind},
    resp::{self, tree, Scanner, Side},
    upstream::{Connector, Stream},
};

/// One row of the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// What was checked, e.g. `iam auth` or `node 10.0.1.5:6379 (primary)`.
    pub check: String,
    pub ok: bool,
    /// How long it took, where that means something.
    #[serde(rename = "ms", serialize_with = "millis")]
    pub latency: Option<Duration>,
    /// What was found, or why it failed and what to look at.
    pub detail: String,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&((d.as_secs_f64() * 1e4).round() / 10.0)),
        None => s.serialize_none(),
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        check: impl Into<String>,
        result: Result<String, String>,
        latency: Option<Duration>,
    ) -> bool {
        let ok = result.is_ok();
        self.checks.push(Check {
            check: check.into(),
            ok,
            latency,
            detail: result.unwrap_or_else(|e| e),
        });
        ok
    }

    /// The failed checks' names, for the summary line.
    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.check.as_str())
            .collect()
    }

    /// An aligned text table and a one-line verdict.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .checks
            .iter()
            .map(|c| {
                [
                    c.check.clone(),
                    if c.ok { "ok" } else { "FAILED" }.to_string(),
                    c.latency.map_or(String::new(), |d| {
                        format!("{:.1} ms", d.as_secs_f64() * 1e3)
                    }),
                    c.detail.clone(),
                ]
            })
            .collect();
        let header = ["CHECK", "RESULT", "TIME", "DETAIL"].map(String::from);
        let mut widths = [0; 3];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:w0$}  {:w1$}  {:>w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        if self.ok {
            out.push_str("verify: every configured authentication method works\n");
        } else {
            out.push_str(&format!("verify: FAILED: {}\n", self.failed().join(", ")));
        }
        out
    }

    /// The same as JSON, for scripts.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// Runs every check `cfg` calls for. `credentials` stands in for the AWS
/// SDK's default chain (tests, embedding); `None` loads the chain.
pub async fn run(cfg: &Config, credentials: Option<Credentials>) -> Report {
    let mut report = Report::default();
    let connector = match Connector::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            report.push("tls setup", Err(e.to_string()), None);
            return report;
        }
    };
    let mut methods: Vec<(Method, Identity)> = Vec::new();
    if let Some(iam) = &cfg.auth.iam {
        if let Some(identity) = iam_identity(iam, credentials, &mut report).await {
            methods.push((Method::Iam, identity));
        }
    }
    if cfg.auth.mode != AuthMode::Iam {
        if let Some(p) = &cfg.auth.password {
            let identity = Identity {
                method: Method::Password,
                user: p.user.clone(),
                secret: p.secret.clone(),
            };
            methods.push((Method::Password, identity));
        }
    }
    let seed = Target {
        label: None,
        connector: connector.clone(),
    };
    let nodes = seed
        .check(&methods, cfg.cluster.is_some(), &mut report)
        .await;
    if let Some(nodes) = nodes {
        for node in nodes {
            let role = match node.role {
                Some(Role::Replica) => "replica",
                _ => "primary",
            };
            let target = Target {
                label: Some(format!("node {}:{} ({role})", node.host, node.port)),
                connector: connector.for_node(&node.host, node.port),
            };
            target.check(&methods, false, &mut report).await;
        }
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    report
}

/// The credentials and token rows; the identity to authenticate with when
/// both work.
async fn iam_identity(
    iam: &crate::config::Iam,
    credentials: Option<Credentials>,
    report: &mut Report,
) -> Option<Identity> {
    let started = Instant::now();
    let (region, creds) = match credentials {
        Some(creds) => (iam.region.clone(), Ok(creds)),
        None => {
            let sdk = crate::auth::sdk_config(iam.region.as_deref()).await;
            let region = sdk.region().map(|r| r.to_string());
            (region, crate::auth::fetch_credentials(&sdk).await)
        }
    };
    let creds = match creds {
        Ok(creds) => creds,
        Err(e) => {
            report.push("aws credentials", Err(e), Some(started.elapsed()));
            return None;
        }
    };
    let now = SystemTime::now();
    let expiry = match creds.expiry() {
        Some(at) => format!("expire {} ({})", rfc3339(at), until(now, at)),
        None => "long-term, no expiry".into(),
    };
    let fresh = creds.expiry().is_none_or(|at| at > now);
    let detail = format!("from {}; {expiry}", crate::auth::credential_source(&creds));
    let result = if fresh {
        Ok(detail)
    } else {
        Err(format!("{detail}: already expired; refresh them"))
    };
    if !report.push("aws credentials", result, Some(started.elapsed())) {
        return None;
    }
    let Some(region) = region else {
        let e = crate::auth::SetupError::NoRegion.to_string();
        report.push("sign token", Err(e), None);
        return None;
    };
    let params = token::Params {
        cache_name: iam.cache_name.clone(),
        user: iam.user.clone(),
        region: region.clone(),
        service: iam.service,
        serverless: iam.serverless,
    };
    let started = Instant::now();
    let signed = token::sign(&creds, &params, SystemTime::now());
    let elapsed = started.elapsed();
    match signed {
        Ok(t) => {
            let kind = if iam.serverless {
                "serverless cache"
            } else {
                "cache"
            };
            let detail = format!(
                "user {}, {kind} {}, region {region}, service {}; valid until {} ({})",
                iam.user,
                iam.cache_name,
                iam.service.as_str(),
                rfc3339(t.expires_at),
                until(SystemTime::now(), t.expires_at)
            );
            report.push("sign token", Ok(detail), Some(elapsed));
            Some(Identity {
                method: Method::Iam,
                user: Some(iam.user.clone()),
                secret: t.value,
            })
        }
        Err(e) => {
            report.push("sign token", Err(e.to_string()), Some(elapsed));
            None
        }
    }
}

/// The seed endpoint, or one node of a cluster.
struct Target {
    /// `None`: the configured endpoint, one row per step; a node gets one
    /// row for all of them.
    label: Option<String>,
    connector: Connector,
}

impl Target {
    /// Connects once per method, authenticates and asks `ACL WHOAMI`. With
    /// `topology`, also reads the cluster's nodes through the first method
    /// that works and returns them.
    async fn check(
        &self,
        methods: &[(Method, Identity)],
        topology: bool,
        report: &mut Report,
    ) -> Option<Vec<Node>> {
        let mut nodes = None;
        let mut seen = Vec::new();
        let whole = Instant::now();
        for (i, (method, identity)) in methods.iter().enumerate() {
            let started = Instant::now();
            let (mut stream, timings) = match self.connector.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let name = self.row(if e.kind == Kind::TlsHandshake {
                        "tls handshake"
                    } else {
                        "tcp connect"
                    });
                    report.push(name, Err(e.detail), Some(started.elapsed()));
                    return None;
                }
            };
            // The connection's own rows, once.
            if i == 0 && self.label.is_none() {
                report.push(
                    "tcp connect",
                    Ok(self.connector.target()),
                    Some(timings.tcp),
                );
                if let Some(tls) = timings.tls {
                    report.push("tls handshake", Ok(tls_detail(&stream)), Some(tls));
                }
            }
            let name = method.as_str();
            let mut rest = BytesMut::new();
            let auth = self
                .connector
                .authenticate(&mut stream, identity, &mut rest)
                .await;
            let whoami = match auth {
                Ok(latency) => {
                    if self.label.is_none() {
                        report.push(
                            format!("{name} auth"),
                            Ok(format!("+OK as {}", identity.user_name())),
                            Some(latency),
                        );
                    }
                    let started = Instant::now();
                    let reply = command(&mut stream, &mut rest, &[b"ACL", b"WHOAMI"]).await;
                    let whoami = reply.map(|r| first_line(&r));
                    if self.label.is_none() {
                        report.push(
                            format!("{name} whoami"),
                            whoami.clone().map(|w| format!("ACL WHOAMI: {w}")),
                            Some(started.elapsed()),
                        );
                    }
                    whoami
                }
                Err(e) => {
                    let why = rejected(*method, &e);
                    if self.label.is_none() {
                        report.push(
                            format!("{name} auth"),
                            Err(why.clone()),
                            Some(started.elapsed()),
                        );
                    }
                    Err(why)
                }
            };
            if let Ok(user) = &whoami {
                seen.push(format!("{name}: {user}"));
                if topology && nodes.is_none() {
                    let started = Instant::now();
                    let read = read_nodes(&mut stream, &mut rest).await;
                    let result = read.as_ref().map(|n| summary(n)).map_err(Clone::clone);
                    report.push("cluster topology", result, Some(started.elapsed()));
                    nodes = Some(read.unwrap_or_default());
                }
            } else if let (Some(label), Err(e)) = (&self.label, &whoami) {
                report.push(
                    label.clone(),
                    Err(format!("{name}: {e}")),
                    Some(started.elapsed()),
                );
                return None;
            }
        }
        if let Some(label) = &self.label {
            report.push(label.clone(), Ok(seen.join("; ")), Some(whole.elapsed()));
        }
        nodes
    }

    fn row(&self, step: &str) -> String {
        match &self.label {
            Some(label) => label.clone(),
            None => step.to_string(),
        }
    }
}

/// Why an AUTH failed, with what to check.
fn rejected(method: Method, e: &Error) -> String {
    let wrongpass = e.kind == Kind::AuthRejected && e.detail.starts_with("WRONGPASS");
    match method {
        Method::Iam if crate::session::is_throttle(e) => format!(
            "{}: ElastiCache throttled IAM authentication (IamAuthenticationThrottling); retry later, and spread connection bursts",
            e.detail
        ),
        Method::Iam if wrongpass => format!(
            "IAM was rejected ({}): the token was refused; check --cache-name (the replication group id or serverless cache name, not the endpoint), --serverless, --region, --iam-user (an ElastiCache user with IAM authentication, user id = user name), and that the AWS identity is allowed elasticache:Connect on the cache and the user",
            e.detail
        ),
        Method::Password if wrongpass => format!(
            "the password was rejected ({}): check --password-user and the password's source",
            e.detail
        ),
        _ => e.detail.clone(),
    }
}

/// A cluster node as the topology names it.
#[derive(Debug)]
struct Node {
    host: String,
    port: u16,
    role: Option<Role>,
}

/// `CLUSTER SHARDS` (every node, replicas too), or `CLUSTER SLOTS` where
/// the server has no SHARDS.
async fn read_nodes(stream: &mut Stream, rest: &mut BytesMut) -> Result<Vec<Node>, String> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut record = |n: &Named<'_>| {
        if !nodes.iter().any(|m| m.host == n.host && m.port == n.port) {
            nodes.push(Node {
                host: n.host.to_string(),
                port: n.port,
                role: n.role,
            });
        }
        None
    };
    let tls = matches!(stream, Stream::Tls(_));
    let shards = command(stream, rest, &[b"CLUSTER", b"SHARDS"]).await?;
    if !shards.starts_with(b"-") {
        rewrite::shards(&shards, tls, "", &mut record)
            .ok_or("cannot read the CLUSTER SHARDS reply")?;
    } else {
        let slots = command(stream, rest, &[b"CLUSTER", b"SLOTS"]).await?;
        if slots.starts_with(b"-") {
            return Err(format!(
                "CLUSTER SLOTS: {}; is cluster mode enabled on this cache?",
                first_line(&slots)
            ));
        }
        rewrite::slots(&slots, "", &mut record).ok_or("cannot read the CLUSTER SLOTS reply")?;
    }
    nodes.sort_by_key(|n| (n.role == Some(Role::Replica), n.host.clone(), n.port));
    Ok(nodes)
}

fn summary(nodes: &[Node]) -> String {
    let replicas = nodes
        .iter()
        .filter(|n| n.role == Some(Role::Replica))
        .count();
    format!(
        "{} nodes: {} primaries, {replicas} replicas",
        nodes.len(),
        nodes.len() - replicas
    )
}

/// Sends one command and reads its whole reply.
async fn command(
    stream: &mut Stream,
    rest: &mut BytesMut,
    args: &[&[u8]],
) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    resp::encode_command(&mut out, args);
    let exchange = async {
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut scanner = Scanner::new(Side::Reply, u64::MAX);
        crate::session::read_reply(stream, &mut scanner, rest).await
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(reply)) => Ok(reply.to_vec()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err("the server closed the connection".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no reply within 10s".into()),
    }
}

/// A simple reply's text: `app-iam` for `$7\r\napp-iam\r\n`, the message
/// of an error.
fn first_line(reply: &[u8]) -> String {
    match tree::parse(reply) {
        Some((v, _)) if v.text().is_some() => {
            String::from_utf8_lossy(v.text().unwrap_or_default()).into_owned()
        }
        _ => {
            let line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
            String::from_utf8_lossy(line).into_owned()
        }
    }
}

/// Protocol version, cipher suite and the server certificate's subject and
/// expiry.
fn tls_detail(stream: &Stream) -> String {
    let Stream::Tls(tls) = stream else {
        return "plaintext (--no-tls)".into();
    };
    let conn = tls.get_ref().1;
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .unwrap_or("unknown protocol")
        .replace('_', ".")
        .replace("TLSv1.", "TLS 1.");
    let mut detail = version;
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        match x509_parser::parse_x509_certificate(cert) {
            Ok((_, cert)) => {
                let not_after = cert.validity().not_after.timestamp();
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
                detail.push_str(&format!(
                    "; certificate {}, expires {} ({})",
                    cert.subject(),
                    rfc3339(at),
                    until(SystemTime::now(), at)
                ));
            }
            Err(_) => detail.push_str("; certificate not readable"),
        }
    }
    detail
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `in 14m 59s`, `in 364d 23h`, or `2h 5m ago`: the two largest units.
fn until(now: SystemTime, at: SystemTime) -> String {
    let (d, ago) = match at.duration_since(now) {
        Ok(d) => (d, false),
        Err(e) => (e.duration(), true),
    };
    let s = d.as_secs();
    let parts = [
        (s / 86400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|&(n, _)| n > 0).unwrap_or(3);
    let shown: Vec<String> = parts[first..(first + 2).min(4)]
        .iter()
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if ago {
        format!("{} ago", shown.join(" "))
    } else {
        format!("in {}", shown.join(" "))
    }
}
