//! Owns the listeners: TLS setup, the client accept loop (one task per
//! connection: handshake, backend connect, relay) and the stats listener.
//! Knows nothing about RESP or tokens.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::relay::{self, Shared};
use crate::stats;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Bound listeners, ready to run.
pub struct Server {
    listener: TcpListener,
    stats_listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
}

/// Why the emulator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad certificate or key files: a configuration error.
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

impl Server {
    /// Loads the TLS files and binds both listeners.
    pub async fn bind(cfg: Config) -> Result<Server, Error> {
        let acceptor = acceptor(&cfg)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })
        };
        let listener = bind(cfg.listen).await?;
        let stats_listener = bind(cfg.stats_listen).await?;
        Ok(Server {
            listener,
            stats_listener,
            acceptor,
            shared: Arc::new(Shared::new(cfg)),
        })
    }

    /// The TLS RESP address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats_addr(&self) -> io::Result<SocketAddr> {
        self.stats_listener.local_addr()
    }

    /// Serves until `shutdown` resolves; open connections end with the runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            stats_listener,
            acceptor,
            shared,
        } = self;
        let stats = stats::serve(stats_listener, Arc::clone(&shared.stats));
        tokio::select! {
            () = accept_loop(listener, acceptor, shared) => {}
            () = stats => {}
            () = shutdown => tracing::info!("shutting down"),
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (acceptor, shared) = (acceptor.clone(), Arc::clone(&shared));
                let span = tracing::info_span!("conn", %peer);
                tokio::spawn(connection(stream, acceptor, shared).instrument(span));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client: TLS handshake, its own backend connection, relay.
async fn connection(stream: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    let stats = &shared.stats;
    stats::Stats::inc(&stats.connections_total);
    let _active = Active::new(&stats.connections_active);
    let connect = TcpStream::connect(shared.cfg.backend.as_str());
    let backend = match tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(backend)) => backend,
        Ok(Err(e)) => return tracing::warn!("cannot connect to the backend: {e}"),
        Err(_) => return tracing::warn!("backend connect timed out"),
    };
    let _ = backend.set_nodelay(true);
    tracing::debug!("connected");
    let end = relay::run(tls, backend, &shared).await;
    tracing::debug!(?end, "closed");
}

/// Counts a connection as active for as long as it lives.
struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    fn new(counter: &'a AtomicU64) -> Active<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Active(counter)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn acceptor(cfg: &Config) -> Result<TlsAcceptor, Error> {
    let tls = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(&cfg.tls_cert)
        .map_err(|e| tls("cannot read tls-cert", &cfg.tls_cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("cannot parse tls-cert", &cfg.tls_cert, &e))?;
    if chain.is_empty() {
        return Err(tls("no certificate in tls-cert", &cfg.tls_cert, &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key)
        .map_err(|e| tls("cannot read tls-key", &cfg.tls_key, &e))?;
    // Name the provider: the build enables aws-lc-rs only.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("tls-cert / tls-key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
