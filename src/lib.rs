//! elasticache-auth-proxy: plain RESP on localhost in, authenticated TLS to
//! ElastiCache (Redis OSS 7+ / Valkey) out.
//!
//! # Layout
//! - [`config`]: typed configuration from file, environment and flags.
//! - [`server`]: listeners, accept loop, connection limit, graceful drain.
//! - [`session`]: one task per client: relays bytes, keeps the reply ledger;
//!   and the warm pool of ready upstream connections.
//! - [`upstream`]: TCP + TLS connector and the AUTH handshake.
//! - [`cluster`]: cluster mode: the node ↔ local listener map, and the
//!   rewriting of replies that name nodes.
//! - [`auth`]: identities per connection: IAM token signer, credentials
//!   refresher, fallback policy, password user, secret redaction.
//! - [`resp`]: RESP frame boundaries and the few commands the proxy understands.
//! - [`error`]: one error taxonomy: kind and side, and what clients are told.
//! - [`admin`]: HTTP endpoints: metrics, startup/readiness/liveness, quit.
//! - [`healthcheck`]: the `healthcheck` subcommand's one GET of an admin endpoint.
//! - [`metrics`]: one struct of typed Prometheus metric handles.
//! - [`verify`]: the `verify` command: each auth method checked end to end.
//!
//! Data flows one way: server → session → upstream; auth is asked by both;
//! resp is used by all.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod metrics;
pub mod resp;
pub mod server;
pub mod session;
pub mod upstream;
pub mod verify;
