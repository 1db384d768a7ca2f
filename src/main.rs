//! The binary: CLI → config → logging → run → exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;

use elasticache_auth_proxy::{
    admin::{Admin, Served},
    auth,
    cli::{Cli, Command, Output, TokenArgs, VerifyArgs},
    config, server, verify,
};
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: with glibc the memory of sessions
/// that closed stayed with the process for good (204 MB 10 s after 9000
/// idle sessions closed). jemalloc's background thread purges freed pages
/// within about a second; its settings are baked in at build time by
/// `.cargo/config.toml`. Measurements: README "## Performance".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    match cli.command {
        Some(Command::Token(args)) => return token(args),
        Some(Command::Verify(args)) => return verify(args),
        Some(Command::Healthcheck(args)) => return healthcheck(&args),
        None => {}
    }
    let env = |key: &str| std::env::var(key).ok();
    let cfg = match config::Config::load(cli.args, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("elasticache-auth-proxy: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(
        &cfg,
        config::log_colour(std::io::stderr().is_terminal(), &env),
    );
    for (i, route) in cfg.all_routes().enumerate() {
        // The admin server is the process's: said once.
        let banner = route
            .banner()
            .into_iter()
            .filter(|(t, _)| i == 0 || *t != "admin");
        for (topic, line) in banner {
            match &route.route {
                Some(name) => tracing::info!("route `{name}` {topic}: {line}"),
                None => tracing::info!("{topic}: {line}"),
            }
        }
    }
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(serve(&cfg))
}

/// Binds every route's server and the admin server, then serves until
/// SIGTERM/SIGINT or POST /quitquitquit, which drain every route at once.
async fn serve(cfg: &config::Config) -> ExitCode {
    let mut servers = Vec::new();
    for route in cfg.all_routes() {
        let named = route
            .route
            .as_deref()
            .map_or_else(String::new, |name| format!("route `{name}`: "));
        match server::Server::bind(route).await {
            Ok(server) => servers.push(server),
            Err(e) if e.is_config() => {
                tracing::error!("cannot start: {named}configuration error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                tracing::error!("cannot start: {named}{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let admin = match Admin::bind(cfg.admin_listen).await {
        Ok(admin) => admin,
        Err(e) => {
            tracing::error!("cannot start: admin listener on {}: {e}", cfg.admin_listen);
            return ExitCode::FAILURE;
        }
    };
    let served = cfg
        .all_routes()
        .zip(&servers)
        .map(|(route, server)| Served {
            route: route.route.clone(),
            health: server.health(),
            metrics: server.metrics(),
        })
        .collect();

    // POST /quitquitquit drains like SIGTERM.
    let quit = Arc::new(Notify::new());
    tokio::spawn(admin.run_routes(served, quit.clone(), std::future::pending()));
    // One signal (or request) drains every route.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = server::shutdown_signal() => {}
            () = quit.notified() => tracing::info!("POST /quitquitquit received"),
        }
        let _ = stop.send(true);
    });
    let mut running = tokio::task::JoinSet::new();
    for server in servers {
        let mut stopped = stopped.clone();
        running.spawn(server.run_until(
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
            server::shutdown_signal,
        ));
    }
    while running.join_next().await.is_some() {}
    ExitCode::SUCCESS
}

/// Builds a runtime, saying why on stderr when it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("elasticache-auth-proxy: cannot start the runtime: {e}"))
        .ok()
}

/// `elasticache-auth-proxy token`: prints one token on stdout, nothing else.
fn token(args: TokenArgs) -> ExitCode {
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
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

/// `elasticache-auth-proxy verify`: the report on stdout; 0 only when every
/// check passed.
fn verify(args: Box<VerifyArgs>) -> ExitCode {
    let env = |key: &str| std::env::var(key).ok();
    let cfg = match config::Config::load(args.args, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("elasticache-auth-proxy verify: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let report = runtime.block_on(verify::run(&cfg, None));
    match args.output {
        Output::Table => print!("{}", report.table()),
        Output::Json => print!("{}", report.json()),
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logs to stderr in the configured format; `colour` only for text on a terminal.
fn init_logging(cfg: &config::Config, colour: bool) {
    use tracing_subscriber::{
        filter::{FilterExt, LevelFilter, Targets},
        layer::SubscriberExt,
        util::SubscriberInitExt,
        Layer,
    };
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Whatever level is asked for, the AWS SDK and HTTP crates stay at info:
    // at debug/trace aws-sigv4 logs canonical requests (token material, the
    // session token) and the SDK's HTTP client logs credential responses.
    let secrets = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("aws_sigv4", LevelFilter::INFO)
        .with_target("aws_config", LevelFilter::INFO)
        .with_target("aws_credential_types", LevelFilter::INFO)
        .with_target("aws_smithy_runtime", LevelFilter::INFO)
        .with_target("aws_smithy_runtime_api", LevelFilter::INFO)
        .with_target("aws_smithy_http_client", LevelFilter::INFO)
        .with_target("aws_smithy_types", LevelFilter::INFO)
        .with_target("hyper", LevelFilter::INFO)
        .with_target("hyper_util", LevelFilter::INFO)
        .with_target("h2", LevelFilter::INFO);
    let filter = filter.and(secrets);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match cfg.log_format {
        config::LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(filter),
            )
            .init(),
        config::LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init(),
    }
}

/// `elasticache-auth-proxy healthcheck`: one line, on stdout for 200 and on
/// stderr otherwise; no runtime, no logging setup.
fn healthcheck(args: &elasticache_auth_proxy::cli::HealthcheckArgs) -> ExitCode {
    match elasticache_auth_proxy::healthcheck::check(&args.url, args.timeout.0) {
        Ok(line) => {
            println!("healthcheck: {line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("healthcheck: {line}");
            ExitCode::FAILURE
        }
    }
}
