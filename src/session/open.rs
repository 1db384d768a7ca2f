//! Opening a session's upstream connection: connect, then authenticate with
//! the methods the policy picks, logging (the auth audit log) and counting
//! every attempt. Knows nothing of the relay.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::{info, warn};

use super::{Conn, Context};
use crate::{
    auth::Method,
    error::{Error, Kind},
    upstream::Stream,
};

/// Connects and authenticates one upstream connection, trying the methods
/// the policy picks in order, on the same connection (a refused AUTH leaves
/// it usable). Every attempt is logged and counted.
pub(super) async fn open(
    ctx: &Context,
    conn: &Conn,
    rest: &mut BytesMut,
) -> Result<(Stream, Method), Error> {
    let m = &ctx.metrics;
    // In cluster mode a node's listener connects to that node.
    let connector = conn.node.as_ref().map_or(&ctx.connector, |n| &n.connector);
    let (mut stream, timings) = connector.connect().await?;
    m.upstream_connections.inc();
    m.upstream_connect_duration
        .observe(timings.tcp.as_secs_f64());
    if let Some(tls) = timings.tls {
        m.upstream_tls_duration.observe(tls.as_secs_f64());
    }
    if let Some(kind) = timings.handshake {
        m.upstream_tls_handshakes
            .with_label_values(&[kind.as_str()])
            .inc();
    }
    let plan = ctx.auth.plan();
    // Why IAM is not being used, once the password is tried in its place.
    let mut fallback_reason = plan.iam_in_backoff.then_some("backoff");
    let mut failed: Vec<(Method, Error)> = Vec::new();
    for &method in plan.methods {
        let fallback = method == Method::Password && fallback_reason.is_some();
        if let (true, Some(reason)) = (fallback, fallback_reason) {
            m.auth_fallbacks.with_label_values(&[reason]).inc();
        }
        let started = Instant::now();
        let (user, result) = match ctx.auth.identity(method).await {
            Ok(identity) => {
                let result = connector.authenticate(&mut stream, &identity, rest).await;
                (identity.user_name().to_string(), result)
            }
            Err(e) => ("-".to_string(), Err(e)),
        };
        record_attempt(
            ctx,
            conn,
            method,
            &user,
            &result,
            started.elapsed(),
            fallback,
            false,
        );
        if method == Method::Iam {
            ctx.auth.record_iam(result.is_ok());
        }
        match result {
            Ok(_) => return Ok((stream, method)),
            Err(e) if matches!(e.kind, Kind::AuthRejected | Kind::Identity) => {
                if method == Method::Iam {
                    fallback_reason = Some(if is_throttle(&e) {
                        "throttled"
                    } else if e.kind == Kind::Identity {
                        "token_unavailable"
                    } else {
                        "rejected"
                    });
                }
                failed.push((method, e));
            }
            // A dead or silent connection cannot take another AUTH.
            Err(e) => return Err(e),
        }
    }
    // Every method failed: one error naming each method's failure.
    let kind = failed.last().map_or(Kind::Identity, |(_, e)| e.kind);
    let detail = failed
        .iter()
        .map(|(m, e)| format!("{}: {}", m.as_str(), e.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let mut error = Error::upstream(kind, detail);
    error.hint = Some(
        failed
            .iter()
            .map(|(m, e)| format!("{}: {}", m.as_str(), short_reason(e)))
            .collect::<Vec<_>>()
            .join("; "),
    );
    Err(error)
}

/// How ElastiCache says it throttled an IAM AUTH: over the limit on an
/// authenticated connection, the IAM service unavailable, and, before
/// authentication, a bare `service is not available` (AWS's public-endpoint
/// documentation). Any message naming throttling counts too.
const THROTTLE_MESSAGES: &[&str] = &[
    "exceeded limit of iam authentication requests",
    "iam authentication service is not available",
    "service is not available",
    "throttl",
];

/// Whether the server throttled an AUTH (IamAuthenticationThrottling).
pub(crate) fn is_throttle(e: &Error) -> bool {
    e.kind == Kind::AuthRejected && {
        let detail = e.detail.to_ascii_lowercase();
        THROTTLE_MESSAGES.iter().any(|m| detail.contains(m))
    }
}

/// A few safe words for the client about why a method failed: the server's
/// error code (WRONGPASS, NOPERM), never its whole line or a secret.
fn short_reason(e: &Error) -> String {
    match e.kind {
        Kind::AuthRejected if is_throttle(e) => "throttled".into(),
        Kind::AuthRejected => {
            let code = e.detail.split_whitespace().next().unwrap_or("");
            if !code.is_empty() && code.len() <= 24 && code.bytes().all(|b| b.is_ascii_uppercase())
            {
                code.into()
            } else {
                "refused".into()
            }
        }
        Kind::Identity => "no credentials".into(),
        other => other.as_str().into(),
    }
}

/// Logs (the auth audit log) and counts one authentication attempt.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_attempt(
    ctx: &Context,
    conn: &Conn,
    method: Method,
    user: &str,
    result: &Result<Duration, Error>,
    took: Duration,
    fallback: bool,
    reauth: bool,
) {
    let m = &ctx.metrics;
    let outcome = if result.is_ok() { "success" } else { "failure" };
    m.auth_attempts
        .with_label_values(&[method.as_str(), outcome])
        .inc();
    match result {
        Ok(rtt) => m
            .upstream_auth_duration
            .with_label_values(&[method.as_str()])
            .observe(rtt.as_secs_f64()),
        Err(e) if e.kind == Kind::AuthRejected => {
            m.auth_failures.with_label_values(&[method.as_str()]).inc();
            if is_throttle(e) {
                m.iam_throttled.inc();
            }
        }
        Err(_) => {}
    }
    let duration_us = took.as_micros() as u64;
    match result {
        Ok(_) => info!(
            target: "auth",
            route = ctx.route.as_deref(),
            conn = conn.id,
            client = %conn.peer,
            node = conn.node_name(),
            method = method.as_str(),
            user,
            outcome,
            reason = "",
            duration_us,
            fallback,
            reauth,
            "upstream AUTH succeeded"
        ),
        Err(e) => warn!(
            target: "auth",
            route = ctx.route.as_deref(),
            conn = conn.id,
            client = %conn.peer,
            node = conn.node_name(),
            method = method.as_str(),
            user,
            outcome,
            reason = %e.detail,
            kind = e.kind.as_str(),
            duration_us,
            fallback,
            reauth,
            "upstream AUTH failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elasticache_throttling_replies_are_throttling() {
        let rejected = |line: &str| Error::upstream(Kind::AuthRejected, line);
        for line in [
            "ERR Exceeded limit of IAM Authentication requests",
            "ERR IAM Authentication service is not available",
            "ERR service is not available",
            "ERR Syntax error in HELLO option 'IAM authentication throttled (elasticache-iam-emulator)'",
        ] {
            assert!(is_throttle(&rejected(line)), "{line}");
            assert_eq!(short_reason(&rejected(line)), "throttled", "{line}");
        }
        for line in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOPERM this user has no permissions",
        ] {
            assert!(!is_throttle(&rejected(line)), "{line}");
        }
        // A connection that failed is not a throttled AUTH, whatever it says.
        let io = Error::upstream(Kind::Io, "service is not available");
        assert!(!is_throttle(&io));
    }
}
