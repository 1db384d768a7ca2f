//! Upstream connections: TCP connect with a timeout, rustls TLS with SNI and
//! verification, and the AUTH handshake; and, when they fail, telling a
//! plaintext port from a TLS one so the error names the real mistake.
//! Knows nothing of client sessions.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

mod tickets;

use crate::{
    auth::Identity,
    config,
    error::{Error, Kind},
    resp::{self, Scanner, Side},
};

/// A TLS setup that cannot work: a file that holds no usable PEM, a key that
/// does not belong to its certificate, an invalid server name. Each is a
/// configuration mistake, named by its setting.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file a setting names does not hold what the setting needs.
    #[error("--{setting} {path}: {reason}")]
    File {
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("--tls-client-key {key} is not the private key of --tls-client-cert {cert}; use the key the certificate was issued for")]
    KeyMismatch { cert: String, key: String },
    #[error("--tls-server-name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// How long a TLS handshake may go unanswered before the connector asks the
/// server, on a second connection, whether it speaks plaintext RESP. A
/// plaintext redis-server never answers a ClientHello: it waits for a
/// newline that never comes, so only asking tells it from a slow TLS server.
const PROBE_AFTER: Duration = Duration::from_millis(300);

/// The first line of `reply` if it is a RESP simple string or error, made
/// printable for a log line; `None` for anything else (a TLS alert, silence).
fn plaintext_reply(reply: &[u8]) -> Option<String> {
    let end = memchr::memchr(b'\n', reply)?;
    let line = reply[..end].strip_suffix(b"\r")?;
    let printable = line.iter().all(|b| (b' '..=b'~').contains(b));
    if !matches!(line.first(), Some(b'+' | b'-')) || !printable {
        return None;
    }
    let line = String::from_utf8_lossy(line);
    Some(line.chars().take(80).collect())
}

/// Opens authenticated-ready connections to the upstream server.
#[derive(Clone)]
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    auth_timeout: Duration,
    max_frame: u64,
}

impl Connector {
    /// Builds the TLS client configuration once: system roots plus the
    /// configured CA bundle, and the client certificate for mTLS.
    pub fn new(cfg: &config::Config) -> Result<Self, SetupError> {
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some((
                TlsConnector::from(Arc::new(client_config(t)?)),
                ServerName::try_from(t.server_name.clone())
                    .map_err(|_| SetupError::ServerName(t.server_name.clone()))?,
            )),
        };
        Ok(Connector {
            host: cfg.upstream.host.clone(),
            port: cfg.upstream.port,
            tls,
            connect_timeout: cfg.connect_timeout,
            auth_timeout: cfg.auth_timeout,
            max_frame: cfg.max_frame_size,
        })
    }

    /// The same settings for another node of a cluster. A node announced
    /// by a DNS name is verified against that name; one announced by IP
    /// against the configured server name (`--tls-server-name` or the
    /// configuration endpoint's host), as ElastiCache's wildcard
    /// certificates allow.
    pub fn for_node(&self, host: &str, port: u16) -> Connector {
        let mut node = self.clone();
        node.host = host.to_string();
        node.port = port;
        if host.parse::<std::net::IpAddr>().is_err() {
            if let (Some((tls, _)), Ok(name)) = (&self.tls, ServerName::try_from(host.to_string()))
            {
                node.tls = Some((tls.clone(), name));
            }
        }
        node
    }

    /// The host connections go to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `host:port` for logs.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// TCP connect and TLS handshake, together within the connect timeout.
    pub async fn connect(&self) -> Result<(Stream, Timings), Error> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = tokio::time::timeout_at(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            Error::upstream(
                Kind::ConnectTimeout,
                format!(
                    "no TCP connection to {} within {:?}",
                    self.target(),
                    self.connect_timeout
                ),
            )
        })?
        .map_err(|e| {
            Error::upstream(Kind::Connect, format!("connect to {}: {e}", self.target()))
        })?;
        // Commands are small and latency-bound: never wait to coalesce them.
        tcp.set_nodelay(true)
            .map_err(|e| Error::upstream(Kind::Connect, format!("TCP_NODELAY: {e}")))?;
        let mut timings = Timings {
            tcp: started.elapsed(),
            tls: None,
            handshake: None,
        };
        let Some((connector, name)) = &self.tls else {
            return Ok((Stream::plain(tcp), timings));
        };
        let handshake = Instant::now();
        let tls = tokio::select! {
            r = connector.connect(name.clone(), Tcp::new(tcp)) => match r {
                Ok(tls) => tls,
                Err(e) => return Err(self.handshake_failed(e, deadline).await),
            },
            // Only a server that answers plaintext ends this branch.
            reply = self.plaintext_after(PROBE_AFTER, deadline) => {
                return Err(self.not_tls(&reply));
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(Error::upstream(
                    Kind::TlsHandshake,
                    format!(
                        "TLS handshake with {} timed out after {:?}: the server accepted TCP but never completed the handshake",
                        self.target(),
                        self.connect_timeout
                    ),
                ));
            }
        };
        timings.tls = Some(handshake.elapsed());
        timings.handshake = tls.get_ref().1.handshake_kind().map(Handshake::from);
        Ok((Stream::Tls(Box::new(tls)), timings))
    }

    /// Whether a failed first plaintext exchange looks like a TLS port: it
    /// closed or reset without a byte (redis-server's TLS port does), or
    /// answered with a TLS record (an alert, 0x15).
    fn tls_port(&self, stream: &Stream, e: &io::Error, reply: &[u8]) -> Option<Error> {
        let Stream::Plain { heard, .. } = stream else {
            return None;
        };
        let closed = matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        );
        let how = if closed && !heard {
            format!("closed the connection ({e}) without answering")
        } else if matches!(reply.first(), Some(0x15 | 0x16)) {
            format!(
                "sent a TLS record (0x{:02x}), not RESP, in answer to",
                reply[0]
            )
        } else {
            return None;
        };
        Some(Error::upstream(
            Kind::TlsExpected,
            format!(
                "{} {how} the proxy's first plaintext command: it looks like a TLS port; remove --no-tls",
                self.target()
            ),
        ))
    }

    /// Classifies a failed handshake. Non-TLS bytes in answer to the
    /// ClientHello mean a plaintext server; a close without an answer is
    /// what some plaintext servers do too, so that one is checked.
    async fn handshake_failed(&self, e: io::Error, deadline: tokio::time::Instant) -> Error {
        let rustls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidMessage(_)) = rustls {
            return Error::upstream(
                Kind::NotTls,
                format!(
                    "TLS with {}: {e}: the server answered the TLS ClientHello with bytes that are not TLS; if it is a plaintext port, use --no-tls or the TLS port",
                    self.target()
                ),
            );
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            if let Ok(Some(reply)) = tokio::time::timeout_at(deadline, self.plaintext()).await {
                return self.not_tls(&reply);
            }
        }
        Error::upstream(
            Kind::TlsHandshake,
            format!("TLS with {}: {e}", self.target()),
        )
    }

    fn not_tls(&self, reply: &str) -> Error {
        Error::upstream(
            Kind::NotTls,
            format!(
                "{} did not answer the TLS handshake but answered a plaintext PING with {reply:?}: it is a plaintext port; use --no-tls, or the TLS port",
                self.target()
            ),
        )
    }

    /// After `after` (if the handshake is still going), asks the server in
    /// plaintext; resolves only if it answers, so a select can race it.
    async fn plaintext_after(&self, after: Duration, deadline: tokio::time::Instant) -> String {
        tokio::time::sleep(after).await;
        match tokio::time::timeout_at(deadline, self.plaintext()).await {
            Ok(Some(reply)) => reply,
            _ => std::future::pending().await,
        }
    }

    /// Whether the server speaks plaintext RESP: on a connection of its own,
    /// sends `PING` and returns the first line of a RESP answer (`+PONG`,
    /// `-NOAUTH ...`, `-DENIED ...`). A TLS server closes or sends an alert:
    /// `None`. The caller bounds the wait.
    async fn plaintext(&self) -> Option<String> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .ok()?;
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut reply = Vec::with_capacity(128);
        while !reply.contains(&b'\n') && reply.len() < 128 {
            if tcp.read_buf(&mut reply).await.ok()? == 0 {
                break;
            }
        }
        plaintext_reply(&reply)
    }

    /// Sends `AUTH` for `identity` and waits for `+OK`. Bytes the server sent
    /// after the reply (there should be none) are left in `rest`.
    pub async fn authenticate(
        &self,
        stream: &mut Stream,
        identity: &Identity,
        rest: &mut BytesMut,
    ) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut out = BytesMut::new();
        resp::encode_command(&mut out, &identity.auth_command());
        let exchange = async {
            stream.write_all(&out).await?;
            stream.flush().await?;
            let mut scanner = Scanner::new(Side::Reply, self.max_frame);
            let mut scanned = 0;
            loop {
                if stream.read_buf(rest).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during AUTH",
                    ));
                }
                let (n, done) = scanner
                    .advance(&rest[scanned..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                scanned += n;
                if done {
                    return Ok(rest.split_to(scanned));
                }
            }
        };
        let reply = tokio::time::timeout(self.auth_timeout, exchange)
            .await
            .map_err(|_| {
                Error::upstream(
                    Kind::AuthTimeout,
                    format!("no AUTH reply within {:?}", self.auth_timeout),
                )
            })?
            .map_err(|e| {
                self.tls_port(stream, &e, rest)
                    .unwrap_or_else(|| exchange_error(e))
            })?;
        if reply.starts_with(b"+OK\r\n") {
            Ok(started.elapsed())
        } else {
            // The server's error line names the failure (WRONGPASS, NOPERM)
            // and never echoes credentials.
            let line = String::from_utf8_lossy(&reply);
            Err(Error::upstream(
                Kind::AuthRejected,
                line.trim_start_matches(['-', '!']).trim_end().to_string(),
            ))
        }
    }
}

impl Connector {
    /// Makes a connection whose client has left fresh again: `RESET` and
    /// `AUTH` for `identity` in one write, then exactly `+RESET` and `+OK`
    /// and nothing more, within the AUTH timeout. `Ok`: the AUTH's round
    /// trip. A refused AUTH is `AuthRejected` with the server's line; any
    /// other reply, a byte too many, a close or the timeout is an error of
    /// its kind. Only for a connection with no reply outstanding.
    pub async fn reset(&self, stream: &mut Stream, identity: &Identity) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut out = BytesMut::new();
        resp::encode_command(&mut out, &[b"RESET"]);
        resp::encode_command(&mut out, &identity.auth_command());
        let mut rest = BytesMut::new();
        let exchange = async {
            stream.write_all(&out).await?;
            stream.flush().await?;
            let mut scanner = Scanner::new(Side::Reply, self.max_frame);
            let mut replies = Vec::with_capacity(2);
            let mut scanned = 0;
            while replies.len() < 2 {
                if scanned == rest.len() && stream.read_buf(&mut rest).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during RESET and AUTH",
                    ));
                }
                let (n, done) = scanner
                    .advance(&rest[scanned..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                scanned += n;
                if done {
                    replies.push(rest.split_to(scanned));
                    scanned = 0;
                }
            }
            Ok(replies)
        };
        let replies = tokio::time::timeout(self.auth_timeout, exchange)
            .await
            .map_err(|_| {
                Error::upstream(
                    Kind::AuthTimeout,
                    format!("no RESET and AUTH replies within {:?}", self.auth_timeout),
                )
            })?
            .map_err(exchange_error)?;
        let rtt = started.elapsed();
        let printable = |b: &[u8]| {
            let line = String::from_utf8_lossy(&b[..b.len().min(80)]);
            line.trim_end().to_string()
        };
        if &replies[0][..] != b"+RESET\r\n" {
            return Err(Error::upstream(
                Kind::Protocol,
                format!("unexpected reply to RESET: {}", printable(&replies[0])),
            ));
        }
        if &replies[1][..] != resp::OK {
            // The server's error line names the failure (WRONGPASS, NOPERM)
            // and never echoes credentials.
            let kind = if replies[1].starts_with(b"-") {
                Kind::AuthRejected
            } else {
                Kind::Protocol
            };
            let line = printable(&replies[1]);
            return Err(Error::upstream(
                kind,
                line.trim_start_matches('-').to_string(),
            ));
        }
        if !rest.is_empty() {
            return Err(Error::upstream(
                Kind::Protocol,
                format!("{} bytes after the AUTH reply", rest.len()),
            ));
        }
        Ok(rtt)
    }
}

/// The error for a failed AUTH exchange (write or read).
fn exchange_error(e: io::Error) -> Error {
    // TLS 1.3 servers check the client certificate after the handshake, so
    // a refusal shows up on the first read.
    let tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match e.kind() {
        _ if tls => Error::upstream(
            Kind::TlsHandshake,
            format!("TLS: {e} (if the server requires client certificates, set --tls-client-cert and --tls-client-key)"),
        ),
        io::ErrorKind::UnexpectedEof => Error::upstream(Kind::Closed, e.to_string()),
        io::ErrorKind::InvalidData => Error::upstream(Kind::Protocol, e.to_string()),
        _ => Error::upstream(Kind::Io, e.to_string()),
    }
}

fn client_config(t: &config::Tls) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    // A container may have no system roots; the CA file may be all there is.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &t.ca_file {
        let file = PemFile::read("tls-ca-file", path)?;
        for cert in file.certificates()? {
            roots
                .add(cert)
                .map_err(|e| file.error(format!("holds a certificate that is not valid: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &t.client_cert {
        None => builder.with_no_client_auth(),
        Some(cc) => {
            let certs = PemFile::read("tls-client-cert", &cc.cert)?.certificates()?;
            let key = PemFile::read("tls-client-key", &cc.key)?.private_key()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        SetupError::KeyMismatch {
                            cert: cc.cert.display().to_string(),
                            key: cc.key.display().to_string(),
                        }
                    }
                    e => SetupError::File {
                        setting: "tls-client-key",
                        path: cc.key.display().to_string(),
                        reason: format!("unusable private key: {e}"),
                    },
                })?
        }
    };
    // Resumption spares the server a certificate signature per connection;
    // rustls's default cache holds too few tickets for a burst (see tickets).
    config.resumption = rustls::client::Resumption::store(Arc::new(tickets::Tickets::new()));
    Ok(config)
}

/// A file a TLS setting names, read once, with errors that name the setting
/// and say what the file should hold instead.
struct PemFile {
    setting: &'static str,
    path: String,
    bytes: Vec<u8>,
}

impl PemFile {
    fn read(setting: &'static str, path: &std::path::Path) -> Result<PemFile, SetupError> {
        let mut file = PemFile {
            setting,
            path: path.display().to_string(),
            bytes: Vec::new(),
        };
        file.bytes = std::fs::read(path).map_err(|e| file.error(format!("cannot read: {e}")))?;
        Ok(file)
    }

    fn error(&self, reason: String) -> SetupError {
        SetupError::File {
            setting: self.setting,
            path: self.path.clone(),
            reason,
        }
    }

    /// Every `CERTIFICATE` block; at least one.
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, SetupError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(format!("cannot read its PEM: {e}")))?;
        if certs.is_empty() {
            return Err(self.error(self.not_pem(
                "certificate (no -----BEGIN CERTIFICATE----- block)",
                "openssl x509 -inform der",
            )));
        }
        Ok(certs)
    }

    /// The first private key block (PKCS#8, PKCS#1 or SEC1).
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, SetupError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => self.error(self.not_pem(
                "private key (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)",
                "openssl pkey -inform der",
            )),
            e => self.error(format!("cannot read its PEM: {e}")),
        })
    }

    /// Why a file without the expected PEM block was refused, with the fix
    /// when it looks like DER (binary ASN.1: a SEQUENCE with a long length).
    fn not_pem(&self, expected: &str, convert: &str) -> String {
        let der = matches!(self.bytes.as_slice(), [0x30, 0x81..=0x84, ..]);
        if der {
            format!(
                "holds no PEM {expected}; it looks like DER: convert it with `{convert} -in {} -out {}.pem`",
                self.path, self.path
            )
        } else {
            format!("holds no PEM {expected}")
        }
    }
}

/// How long connecting took, and what kind of TLS handshake it was.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub tcp: Duration,
    /// `None` without TLS.
    pub tls: Option<Duration>,
    /// `None` without TLS.
    pub handshake: Option<Handshake>,
}

/// What a completed TLS handshake cost the server: a full one (certificate
/// signature, key exchange) or a resumption of an earlier session from a
/// ticket the same server sent for the same server name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Full, with or without a HelloRetryRequest.
    Full,
    Resumed,
}

impl Handshake {
    pub const ALL: [Handshake; 2] = [Handshake::Full, Handshake::Resumed];

    /// The `kind` label of `upstream_tls_handshakes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Full => "full",
            Handshake::Resumed => "resumed",
        }
    }
}

impl From<rustls::HandshakeKind> for Handshake {
    fn from(kind: rustls::HandshakeKind) -> Handshake {
        match kind {
            rustls::HandshakeKind::Resumed => Handshake::Resumed,
            rustls::HandshakeKind::Full | rustls::HandshakeKind::FullWithHelloRetryRequest => {
                Handshake::Full
            }
        }
    }
}

/// An upstream connection, TLS or (for local development) plain TCP.
pub enum Stream {
    Tls(Box<TlsStream<Tcp>>),
    /// `heard`: the server has sent something. A TLS port closes on the
    /// first plaintext command without sending a RESP byte.
    Plain {
        tcp: TcpStream,
        heard: bool,
    },
}

impl Stream {
    fn plain(tcp: TcpStream) -> Stream {
        Stream::Plain { tcp, heard: false }
    }

    /// Ready when a read may return something (bytes, the end, an error)
    /// without waiting; `Pending` (and woken when that changes) when a read
    /// would have to wait for the server. So a reader can take its buffer
    /// only when there is something to put in it.
    ///
    /// With TLS, a read waits only if rustls holds no plaintext and has
    /// seen no close_notify (`wants_read`), and the last socket read
    /// returned `WouldBlock` ([`Tcp::blocked`]): tokio-rustls reads the
    /// socket only while rustls holds no plaintext, decrypts every complete
    /// record it read, and ends a read that did not fill its buffer only on
    /// `WouldBlock`, on the end, or on an error (which it returns on the
    /// next read), each of which leaves a read ready but the first. Then
    /// only new bytes on the socket can make a read return, and the
    /// socket's readiness says when. A record with no application data (a
    /// session ticket) makes a read return `Pending`, as before.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tls(tls) => {
                let (io, conn) = tls.get_ref();
                if io.blocked && conn.wants_read() {
                    io.tcp.poll_read_ready(cx)
                } else {
                    Poll::Ready(Ok(()))
                }
            }
            Stream::Plain { tcp, .. } => tcp.poll_read_ready(cx),
        }
    }

    /// Two halves that read and write concurrently, as `tokio::io::split`
    /// makes, whose read half also has [`ReadHalf::poll_read_ready`].
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        let shared = Arc::new(Mutex::new(self));
        (ReadHalf(shared.clone()), WriteHalf(shared))
    }
}

/// The TCP connection under an upstream TLS stream. It notes whether the
/// last read found the socket drained, which [`Stream::poll_read_ready`]
/// needs to know.
pub struct Tcp {
    tcp: TcpStream,
    /// The last read returned `WouldBlock` (`Pending`).
    blocked: bool,
}

impl Tcp {
    fn new(tcp: TcpStream) -> Tcp {
        Tcp {
            tcp,
            blocked: false,
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.blocked = poll.is_pending();
        poll
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Plain { tcp, heard } => {
                let before = buf.filled().len();
                let poll = Pin::new(tcp).poll_read(cx, buf);
                *heard |= buf.filled().len() > before;
                poll
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Plain { tcp: s, .. } => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Plain { tcp: s, .. } => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Plain { tcp: s, .. } => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Plain { tcp: s, .. } => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Plain { tcp: s, .. } => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The reading half of a [`Stream::split`].
pub struct ReadHalf(Arc<Mutex<Stream>>);

/// The writing half of a [`Stream::split`].
pub struct WriteHalf(Arc<Mutex<Stream>>);

/// The stream behind a half. A poisoned lock (a panic while it was held,
/// which nothing here does) still holds a stream in a state some poll left
/// it in, as after any failed poll.
fn lock(shared: &Mutex<Stream>) -> MutexGuard<'_, Stream> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ReadHalf {
    /// [`Stream::poll_read_ready`].
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).poll_read_ready(cx)
    }

    /// The stream again, from the two halves of one split; `None` for
    /// halves of different streams.
    pub fn unsplit(self, write: WriteHalf) -> Option<Stream> {
        if !Arc::ptr_eq(&self.0, &write.0) {
            return None;
        }
        drop(write);
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::plaintext_reply;

    #[test]
    fn plaintext_reply_takes_only_a_resp_status_or_error_line() {
        let long = format!("-ERR {}\r\n", "x".repeat(200));
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"+PONG\r\n", Some("+PONG")),
            (
                b"-NOAUTH Authentication required.\r\n",
                Some("-NOAUTH Authentication required."),
            ),
            (
                b"-DENIED Redis is running in protected mode\r\nmore",
                Some("-DENIED Redis is running in protected mode"),
            ),
            (long.as_bytes(), Some(&long[..80])),
            // A TLS alert, silence, a partial line, other RESP, binary.
            (&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46], None),
            (b"", None),
            (b"+PONG", None),
            (b"+PONG\n", None),
            (b"$4\r\nPONG\r\n", None),
            (b"+\x00\xff\r\n", None),
        ];
        for (reply, want) in cases {
            assert_eq!(plaintext_reply(reply).as_deref(), *want, "{reply:?}");
        }
    }
}
