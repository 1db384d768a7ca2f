//! The proxy under test, started in-process on port 0 in front of a
//! `RedisServer`, shut down (and drained) on drop.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use aws_credential_types::{provider::SharedCredentialsProvider, Credentials};
use elasticache_auth_proxy::{admin::Admin, auth, config, metrics::Metrics, server::Server};
use tokio::{sync::oneshot, task::JoinHandle};

use super::RedisServer;

/// The environment variable the test proxies read their password from.
pub const PASSWORD_ENV: &str = "TEST_UPSTREAM_PASSWORD";

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin HTTP endpoints (/metrics, /readiness, ...).
    pub admin: SocketAddr,
    /// Notified by POST /quitquitquit.
    pub quit: std::sync::Arc<tokio::sync::Notify>,
    admin_task: JoinHandle<()>,
    pub unix_socket: Option<PathBuf>,
    /// The auth provider, for its signing counters.
    pub auth: Option<auth::Provider>,
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

    /// `args` with the warm pool off, for tests that count what each client
    /// connection costs upstream (connections, AUTHs, signings, handshakes,
    /// fallbacks) or fault the next upstream connection: the pool's own
    /// connections would add theirs, or take the fault.
    pub fn no_pool(args: config::Args) -> config::Args {
        config::Args {
            pool_size: Some(0),
            ..args
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
        Proxy::serve(server, &cfg, None).await
    }

    /// Starts a proxy from a loaded configuration (for settings whose
    /// secrets come from variables other than `PASSWORD_ENV`).
    pub async fn serve_config(cfg: &config::Config) -> Proxy {
        let server = Server::bind(cfg).await.expect("proxy binds");
        Proxy::serve(server, cfg, None).await
    }

    /// Settings for IAM against the emulator on `emulator_port`, trusting
    /// `redis`'s test CA (the emulator serves the same certificate).
    pub fn iam_args(redis: &RedisServer, emulator_port: u16) -> config::Args {
        config::Args {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            upstream: Some(format!("localhost:{emulator_port}").parse().unwrap()),
            tls_ca_file: Some(redis.certs.ca.clone()),
            auth: Some(config::AuthMode::Iam),
            iam_user: Some(super::IAM_USER.into()),
            cache_name: Some(super::CACHE.into()),
            region: Some(super::REGION.into()),
            ..Default::default()
        }
    }

    /// Starts a proxy whose IAM tokens are signed with `creds` (instead of
    /// the process's AWS credential chain); `password` backs `PASSWORD_ENV`.
    pub async fn start_with_credentials(
        args: config::Args,
        password: &str,
        creds: Credentials,
    ) -> Proxy {
        let env: HashMap<String, String> =
            [(PASSWORD_ENV.to_string(), password.to_string())].into();
        let lookup = move |k: &str| env.get(k).cloned();
        let cfg = config::Config::load(args, &lookup).expect("test config is valid");
        let provider = auth::Provider::with_credentials(
            &cfg.auth,
            Some(SharedCredentialsProvider::new(creds)),
            super::REGION.into(),
            std::time::Duration::from_secs(5),
            std::sync::Arc::new(Metrics::new()),
        );
        let server = Server::bind_with(&cfg, provider.clone())
            .await
            .expect("proxy binds");
        Proxy::serve(server, &cfg, Some(provider)).await
    }

    async fn serve(server: Server, cfg: &config::Config, auth: Option<auth::Provider>) -> Proxy {
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.local_addr();
        // The admin endpoints on a port of their own, as the binary runs them.
        let admin = Admin::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("admin binds");
        let admin_addr = admin.local_addr();
        let quit = std::sync::Arc::new(tokio::sync::Notify::new());
        let admin_task = tokio::spawn(admin.run(
            server.health(),
            server.metrics(),
            quit.clone(),
            std::future::pending(),
        ));
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin: admin_addr,
            quit,
            admin_task,
            unix_socket: cfg.unix_socket.clone(),
            auth,
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
        self.admin_task.abort();
    }
}
