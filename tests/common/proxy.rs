//! The proxy under test, started in-process on port 0 in front of a
//! `RedisServer`, shut down (and drained) on drop.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use elasticache_auth_proxy::{config, server::Server};
use tokio::{sync::oneshot, task::JoinHandle};

use super::RedisServer;

/// The environment variable the test proxies read their password from.
pub const PASSWORD_ENV: &str = "TEST_UPSTREAM_PASSWORD";

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub unix_socket: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Default settings against `redis` as user `app` over TLS with the test CA.
    pub fn args(redis: &RedisServer) -> config::Args {
        config::Args {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            upstream: Some(format!("localhost:{}", redis.tls_port).parse().unwrap()),
            tls_ca_file: Some(redis.certs.ca.clone()),
            password_user: Some("app".into()),
            password_env: Some(PASSWORD_ENV.into()),
            ..Default::default()
        }
    }

    /// Starts a proxy with default settings in front of `redis`.
    pub async fn start(redis: &RedisServer) -> Proxy {
        Proxy::start_with(Proxy::args(redis), "app-secret-pw").await
    }

    /// Starts a proxy with `args`; `password` is what `PASSWORD_ENV` holds.
    pub async fn start_with(args: config::Args, password: &str) -> Proxy {
        let env: HashMap<String, String> =
            [(PASSWORD_ENV.to_string(), password.to_string())].into();
        let lookup = move |k: &str| env.get(k).cloned();
        let cfg = config::Config::load(args, &lookup).expect("test config is valid");
        let server = Server::bind(&cfg).await.expect("proxy binds");
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            unix_socket: cfg.unix_socket.clone(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts the drain and returns the task that ends when it is over.
    pub fn shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("proxy already shut down")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
