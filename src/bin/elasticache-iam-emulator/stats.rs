//! Owns the counters and their plain-text rendering (`name value` lines), and
//! the stats listener that writes them to whoever connects. Counts; decides nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::verify::Reject;

/// Every counter; relaxed atomics, as each is independent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections that completed the TLS handshake.
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub iam_auth_success_total: AtomicU64,
    /// Per [`Reject`], in [`Reject::ALL`] order; the total is their sum.
    failures: [AtomicU64; Reject::ALL.len()],
    pub iam_auth_throttled_total: AtomicU64,
    /// AUTH/HELLO AUTH for non-IAM users passed to the backend (the backend
    /// decides; its verdict is not seen here).
    pub password_auth_total: AtomicU64,
    /// IAM connections closed for passing max-session-age.
    pub sessions_expired_total: AtomicU64,
    pub iam_auth_in_multi_total: AtomicU64,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failure(&self, reason: Reject) {
        Stats::inc(&self.failures[reason.index()]);
    }

    /// All counters as `name value\n` lines, failures once in total and once
    /// per reason (`iam_auth_failure_total{reason="signature"} 0`).
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let failures: Vec<u64> = self.failures.iter().map(get).collect();
        let mut out = String::new();
        let mut line = |name: &str, value: u64| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{name} {value}");
        };
        line("connections_total", get(&self.connections_total));
        line("connections_active", get(&self.connections_active));
        line("iam_auth_success_total", get(&self.iam_auth_success_total));
        line("iam_auth_failure_total", failures.iter().sum());
        for (reason, n) in Reject::ALL.iter().zip(&failures) {
            line(
                &format!("iam_auth_failure_total{{reason=\"{}\"}}", reason.reason()),
                *n,
            );
        }
        line(
            "iam_auth_throttled_total",
            get(&self.iam_auth_throttled_total),
        );
        line("password_auth_total", get(&self.password_auth_total));
        line("sessions_expired_total", get(&self.sessions_expired_total));
        line(
            "iam_auth_in_multi_total",
            get(&self.iam_auth_in_multi_total),
        );
        out
    }
}

/// Accepts on `listener` forever: each connection gets the counters, then EOF.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let text = stats.render();
                tokio::spawn(async move {
                    // A reader that goes away early loses nothing we care about.
                    let _ = stream.write_all(text.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
            Err(e) => {
                tracing::warn!("stats accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let stats = Stats::default();
        Stats::inc(&stats.connections_total);
        stats.failure(Reject::Signature);
        stats.failure(Reject::Signature);
        stats.failure(Reject::Expired);
        let text = stats.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "connections_total 1");
        assert!(lines.contains(&"iam_auth_failure_total 3"));
        assert!(lines.contains(&"iam_auth_failure_total{reason=\"signature\"} 2"));
        assert!(lines.contains(&"iam_auth_failure_total{reason=\"expired\"} 1"));
        assert!(lines.contains(&"iam_auth_failure_total{reason=\"host\"} 0"));
        assert_eq!(lines.len(), 8 + Reject::ALL.len());
        assert!(lines.iter().all(|l| l.split(' ').count() == 2));
    }
}
