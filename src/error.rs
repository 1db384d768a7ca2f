//! One error taxonomy for everything that can end a session: a kind, the side
//! it came from, and the fixed line a client is told. Internal detail (OS
//! errors, certificate reasons) goes to logs, never to clients.

use std::fmt;

/// Which peer an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The cache server.
    Upstream,
    /// The application's connection.
    Downstream,
    /// The proxy itself (configuration, credentials).
    Internal,
}

/// What went wrong; tests and logs match on this, metrics label by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP connect did not finish in time.
    ConnectTimeout,
    /// TCP connect failed (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (certificate, name, protocol) or timed out.
    TlsHandshake,
    /// TLS is on but the server speaks plaintext: it answered the TLS
    /// ClientHello with non-TLS bytes, or a plaintext PING with RESP.
    NotTls,
    /// `--no-tls` is on but the server looks like a TLS port: it closed on
    /// the first plaintext command without a reply, or sent a TLS record.
    TlsExpected,
    /// The server rejected the proxy's AUTH.
    AuthRejected,
    /// The server did not answer the proxy's AUTH in time.
    AuthTimeout,
    /// The server closed the connection.
    Closed,
    /// Reading from or writing to the server failed.
    Io,
    /// The server sent bytes that are not RESP.
    Protocol,
    /// No identity could be produced (missing secret, credentials).
    Identity,
}

impl Kind {
    /// Every kind, so `/metrics` can show each at 0 before it first happens.
    /// A new variant goes here as well as in `as_str`.
    pub const ALL: [Kind; 11] = [
        Kind::ConnectTimeout,
        Kind::Connect,
        Kind::TlsHandshake,
        Kind::NotTls,
        Kind::TlsExpected,
        Kind::AuthRejected,
        Kind::AuthTimeout,
        Kind::Closed,
        Kind::Io,
        Kind::Protocol,
        Kind::Identity,
    ];

    /// A stable, low-cardinality name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConnectTimeout => "connect_timeout",
            Kind::Connect => "connect",
            Kind::TlsHandshake => "tls_handshake",
            Kind::NotTls => "not_tls",
            Kind::TlsExpected => "tls_expected",
            Kind::AuthRejected => "auth_rejected",
            Kind::AuthTimeout => "auth_timeout",
            Kind::Closed => "closed",
            Kind::Io => "io",
            Kind::Protocol => "protocol",
            Kind::Identity => "identity",
        }
    }

    /// The error line a client gets (without `-` and CRLF). Fixed text: it
    /// never carries internal detail or secrets.
    pub fn client_message(self) -> &'static str {
        match self {
            Kind::ConnectTimeout => "ERR elasticache-auth-proxy: timed out connecting to the upstream server; check --upstream and that the cache is reachable from here",
            Kind::Connect => "ERR elasticache-auth-proxy: cannot connect to the upstream server; check --upstream and that the cache is reachable from here",
            Kind::TlsHandshake => "ERR elasticache-auth-proxy: TLS handshake with the upstream server failed; check --tls-ca-file and --tls-server-name (the proxy log has the reason)",
            Kind::NotTls => "ERR elasticache-auth-proxy: the upstream server did not answer TLS; is this a plaintext port? (use --no-tls, or the TLS port)",
            Kind::TlsExpected => "ERR elasticache-auth-proxy: the upstream server did not answer plaintext RESP; it looks like a TLS port (remove --no-tls)",
            Kind::AuthRejected => "ERR elasticache-auth-proxy: the upstream server rejected the proxy's AUTH; check the proxy's user and credentials (the proxy log has the reason)",
            Kind::AuthTimeout => "ERR elasticache-auth-proxy: the upstream server did not answer the proxy's AUTH in time",
            Kind::Closed => "ERR elasticache-auth-proxy: the upstream server closed the connection",
            Kind::Io => "ERR elasticache-auth-proxy: the connection to the upstream server failed",
            Kind::Protocol => "ERR elasticache-auth-proxy: the upstream server sent invalid RESP",
            Kind::Identity => "ERR elasticache-auth-proxy: no credentials to authenticate upstream (the proxy log has the reason)",
        }
    }
}

/// An error with its kind, side and a detail for the log.
#[derive(Clone, Debug, thiserror::Error)]
pub struct Error {
    pub kind: Kind,
    pub side: Side,
    /// Log-only detail; must never contain a secret.
    pub detail: String,
    /// A short note for the client (e.g. each method's failure); must never
    /// contain a secret.
    pub hint: Option<String>,
}

impl Error {
    pub fn new(kind: Kind, side: Side, detail: impl Into<String>) -> Self {
        Error {
            kind,
            side,
            detail: detail.into(),
            hint: None,
        }
    }

    /// The error line a client gets (without `-` and CRLF).
    pub fn client_line(&self) -> String {
        match &self.hint {
            Some(hint) => format!("{} [{hint}]", self.kind.client_message()),
            None => self.kind.client_message().to_string(),
        }
    }

    pub fn upstream(kind: Kind, detail: impl Into<String>) -> Self {
        Error::new(kind, Side::Upstream, detail)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}): {}",
            self.kind.as_str(),
            self.side,
            self.detail
        )
    }
}
