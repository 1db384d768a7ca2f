//! The command line: `elasticache-auth-proxy [OPTIONS]` runs the proxy;
//! `elasticache-auth-proxy token ...` prints one IAM token;
//! `elasticache-auth-proxy verify [OPTIONS]` checks each auth method;
//! `elasticache-auth-proxy healthcheck` asks the admin endpoint (containers).

use clap::{Parser, Subcommand};

use crate::config::{self, Service};

/// Lets unchanged applications use AWS ElastiCache (Redis OSS / Valkey) over
/// TLS with IAM or password authentication: clients speak plain RESP to this
/// proxy, which opens a TLS connection per client and authenticates it upstream.
#[derive(Debug, Parser)]
#[command(
    name = "elasticache-auth-proxy",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: config::Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET an admin endpoint once: exit 0 on 200, 1 otherwise, one line
    /// printed (a container health check for images with no shell or curl)
    Healthcheck(HealthcheckArgs),
    /// Print one IAM auth token, signed with the default AWS credential chain
    /// (for redis-cli / valkey-cli --user <iam-user> --pass "$(...)", or scripts)
    Token(TokenArgs),
    /// Check, with the proxy's own settings (flags, environment, file), each
    /// configured authentication method end to end: AWS credentials, token
    /// signing, TCP, TLS, IAM and password AUTH with ACL WHOAMI, and every
    /// node with --cluster. Exits 0 only when all of them work
    Verify(Box<VerifyArgs>),
}

/// The proxy's settings, and how to print the report.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub args: config::Args,
    /// How to print the report: an aligned table, or JSON for scripts
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub output: Output,
}

/// `verify`'s report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What the token is for.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Replication group id or serverless cache name (not the endpoint)
    #[arg(long, value_name = "NAME")]
    pub cache_name: String,
    /// ElastiCache IAM user (user id = user name)
    #[arg(long, value_name = "USER")]
    pub iam_user: String,
    /// AWS region [default: from the AWS SDK chain, e.g. AWS_REGION]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// The cache is ElastiCache Serverless
    #[arg(long)]
    pub serverless: bool,
    /// AWS service the token is signed for
    #[arg(long, value_name = "SERVICE", default_value = "elasticache")]
    pub service: Service,
}

/// Which admin endpoint `healthcheck` asks, and for how long.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The endpoint; /startup stays 200 once the proxy has authenticated
    /// upstream, so an outage of the cache does not restart the container
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9090/startup"
    )]
    pub url: crate::healthcheck::Url,
    /// Give up after this long in all
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub timeout: config::HumanDuration,
}
