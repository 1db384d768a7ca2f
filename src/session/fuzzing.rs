//! A session's relay driven in memory, without sockets or timers, for the
//! fuzzer (`fuzz/fuzz_targets/relay.rs`). Built only with `--cfg fuzzing`,
//! which cargo-fuzz sets: the production path has no trace of it.
//!
//! The fuzzer plays both peers: it hands client bytes in (when the relay
//! would read the client), takes what the relay queued for the server,
//! answers with server bytes, and takes what the relay queued for the
//! client. The relay's handlers are the ones `Relay::run` calls; only the
//! socket reads and writes around them are replaced.

use std::sync::Arc;

use bytes::BytesMut;

use super::{Conn, Context, Out, Relay};
use crate::{
    auth::{self, Method},
    config, metrics,
};

/// One in-memory session over an upstream connection that authenticated
/// with the password.
pub struct Harness {
    relay: Relay,
}

impl Harness {
    /// A context for in-memory sessions: password mode as `user` with
    /// `password`, and an upstream address that is never dialled.
    pub fn context(user: &str, password: &str) -> Arc<Context> {
        let args = config::Args {
            listen: Some("127.0.0.1:0".parse().expect("a literal address")),
            upstream: Some("127.0.0.1:9".parse().expect("a literal address")),
            no_tls: Some(true),
            password_user: Some(user.into()),
            password_env: Some("FUZZ_PASSWORD".into()),
            ..Default::default()
        };
        let password = password.to_string();
        let lookup = move |k: &str| (k == "FUZZ_PASSWORD").then(|| password.clone());
        let cfg = config::Config::load(args, &lookup).expect("the fuzz config is valid");
        let metrics = Arc::new(metrics::Metrics::new());
        let auth = auth::Provider::with_credentials(
            &cfg.auth,
            None,
            String::new(),
            std::time::Duration::from_secs(1),
            metrics.clone(),
        );
        let (_, drain) = tokio::sync::watch::channel(false);
        Arc::new(Context {
            connector: crate::upstream::Connector::new(&cfg).expect("the fuzz connector"),
            auth,
            limits: super::Limits {
                max_frame: cfg.max_frame_size,
                max_pipeline: crate::server::MAX_PIPELINE,
                idle_timeout: cfg.idle_timeout,
                max_session_age: cfg.max_session_age,
                reauth_after: cfg.reauth_after,
            },
            metrics,
            client_password: None,
            drain,
            health: Arc::new(crate::admin::Health::new(cfg.max_connections)),
            cluster: None,
            route: None,
            pool: None,
        })
    }

    pub fn new(ctx: Arc<Context>) -> Harness {
        let conn = Conn {
            id: 0,
            peer: "fuzz".into(),
            node: None,
            pool: None,
        };
        Harness {
            relay: Relay::new(ctx, BytesMut::new(), Method::Password, conn),
        }
    }

    /// Whether the relay would read the client now.
    pub fn reads_client(&self) -> bool {
        self.relay.reads_client()
    }

    /// Whether the relay would read the server now.
    pub fn reads_server(&self) -> bool {
        self.relay.reads_upstream()
    }

    /// Whether the session ended or is ending (nothing more is read).
    pub fn closing(&self) -> bool {
        self.relay.closing.is_some() || self.relay.close_when_settled.is_some()
    }

    /// Bytes the client sent, as one read.
    pub fn client_read(&mut self, bytes: &[u8]) {
        self.relay.cbuf.extend_from_slice(bytes);
        self.relay.on_client_bytes();
        self.relay.try_reauth();
    }

    /// Bytes the server sent, as one read.
    pub fn server_read(&mut self, bytes: &[u8]) {
        self.relay.ubuf.extend_from_slice(bytes);
        if let Err(e) = self.relay.on_upstream_bytes() {
            self.relay.fail(e);
        }
        self.relay.try_reauth();
    }

    /// The re-authentication timer fires: the relay re-authenticates at its
    /// next safe point (with the password, the identity this context has).
    pub fn reauth_due(&mut self) {
        self.relay.reauth_due = true;
        self.relay.reauth_with_password = true;
        self.relay.try_reauth();
    }

    /// Whether a re-authentication is due and not yet sent.
    pub fn reauth_pending(&self) -> bool {
        self.relay.reauth_due
    }

    /// What the relay queued for the server, as the socket would take it.
    pub fn take_to_server(&mut self) -> Vec<u8> {
        take(&mut self.relay.to_up)
    }

    /// What the relay queued for the client.
    pub fn take_to_client(&mut self) -> Vec<u8> {
        take(&mut self.relay.to_client)
    }

    /// Bytes the relay holds in its buffers and queues.
    pub fn held(&self) -> usize {
        let r = &self.relay;
        r.cbuf.len() + r.ubuf.len() + r.to_up.len + r.to_client.len
    }

    /// Replies the relay still expects from the server.
    pub fn pending(&self) -> usize {
        self.relay.ledger.len()
    }
}

fn take(out: &mut Out) -> Vec<u8> {
    let mut v = Vec::with_capacity(out.len);
    for b in out.queue.drain(..) {
        v.extend_from_slice(&b);
    }
    out.len = 0;
    v
}
