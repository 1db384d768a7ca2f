//! The command line: `elasticache-auth-proxy [OPTIONS]` runs the proxy.

use clap::Parser;

use crate::config;

/// Lets unchanged applications use AWS ElastiCache (Redis OSS / Valkey) over
/// TLS with an authenticated user: clients speak plain RESP to this proxy,
/// which opens a TLS connection per client and authenticates it upstream.
#[derive(Debug, Parser)]
#[command(name = "elasticache-auth-proxy", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub args: config::Args,
}
