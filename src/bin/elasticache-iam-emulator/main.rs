//! elasticache-iam-emulator: a local stand-in for an ElastiCache cache with IAM
//! authentication, for the proxy's tests and demo. TLS RESP in front of a real
//! redis-server: AUTH/HELLO for IAM users must carry a SigV4 token that
//! ElastiCache would accept; everything else is relayed byte for byte.
//!
//! # Layout
//! - `config`: TOML file + `--listen` → validated `Config`.
//! - `verify`: the pure token check (own SigV4 with hmac + sha2).
//! - `filter`: the client command stream: which frames to rewrite, MULTI state.
//! - `relay`: one connection: bytes both ways, the filter's gate, session age.
//! - `throttle`: the IAM AUTH token bucket. `stats`: counters and their listener.
//! - `server`: TLS, accept loop, listeners. Redaction is the library's `auth::Secret`.
//!
//! Binary contract: prints `listening <addr>` and `stats <addr>` on stdout once
//! both listeners are bound, logs to stderr, exits 0 on SIGTERM/SIGINT, 64 on
//! a bad configuration.
#![forbid(unsafe_code)]

mod config;
mod filter;
mod relay;
mod server;
mod stats;
mod throttle;
mod verify;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// Local ElastiCache IAM emulator: TLS RESP front for a redis-server that
/// checks IAM tokens the way ElastiCache does.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// TOML configuration (see config/emulator.example.toml)
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// TLS RESP listen address; overrides `listen` in the file
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and succeed; a bad flag is a usage error.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let env = |key: &str| std::env::var(key).ok();
    let cfg = match config::Config::load(&cli.config, cli.listen, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("elasticache-iam-emulator: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(elasticache_auth_proxy::config::log_colour(
            std::io::stderr().is_terminal(),
            &env,
        ))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("elasticache-iam-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match server::Server::bind(cfg).await {
            Ok(server) => server,
            Err(e @ server::Error::Tls(_)) => {
                eprintln!("elasticache-iam-emulator: configuration error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                eprintln!("elasticache-iam-emulator: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (Ok(addr), Ok(stats)) = (server.local_addr(), server.stats_addr()) else {
            eprintln!("elasticache-iam-emulator: cannot read the bound addresses");
            return ExitCode::FAILURE;
        };
        // The two lines scripts and tests wait for; then logs go to stderr only.
        let mut out = std::io::stdout().lock();
        let printed = writeln!(out, "listening {addr}")
            .and_then(|()| writeln!(out, "stats {stats}"))
            .and_then(|()| out.flush());
        drop(out);
        if let Err(e) = printed {
            eprintln!("elasticache-iam-emulator: cannot write to stdout: {e}");
            return ExitCode::FAILURE;
        }
        tracing::info!(%addr, %stats, "elasticache-iam-emulator ready");
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); only SIGINT stops the emulator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
