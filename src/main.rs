//! The binary: CLI → config → logging → run → exit code.

use std::process::ExitCode;

use clap::Parser;
use elasticache_auth_proxy::{
    auth,
    cli::{Cli, Command, TokenArgs},
    config, server,
};
use tracing_subscriber::EnvFilter;

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EXIT_USAGE: u8 = 64;

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
    if let Some(Command::Token(args)) = cli.command {
        return token(args);
    }
    let env = |key: &str| std::env::var(key).ok();
    let cfg = match config::Config::load(cli.args, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("elasticache-auth-proxy: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(&cfg);
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("elasticache-auth-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match server::Server::bind(&cfg).await {
            Ok(server) => {
                server.run(server::shutdown_signal()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("cannot start: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `elasticache-auth-proxy token`: prints one token on stdout, nothing else.
fn token(args: TokenArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("elasticache-auth-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signed = runtime.block_on(auth::sign_once(
        &args.cache_name,
        &args.iam_user,
        args.region,
        args.serverless,
        args.service,
    ));
    match signed {
        Ok(token) => {
            println!("{}", token.value.expose());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("elasticache-auth-proxy token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &config::Config) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        config::LogFormat::Text => builder.init(),
    }
}
