//! Keeps a current IAM token ready (invariant 4): a background task fetches
//! credentials (cached until shortly before they expire), signs, publishes
//! the token on a watch channel and sleeps until the next refresh. The
//! connection path only reads the channel: no signing, no credential fetch.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use aws_credential_types::{
    provider::{ProvideCredentials, SharedCredentialsProvider},
    Credentials,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::token::{self, Params, Token};
use crate::metrics::Metrics;

/// Refresh when this fraction of the remaining life has passed.
const REFRESH_FRACTION: f64 = 0.5;
/// Never refresh more often than this (a token that is nearly dead still
/// gets a new one soon enough)...
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// ...nor less often than this.
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// A token with less life left than this is not handed out: it must
/// outlive the AUTH round trip.
pub const MIN_VALIDITY: Duration = Duration::from_secs(2);
/// A refresh comes at least this long before the token expires, so a
/// usable token is always in place.
const REFRESH_LEAD: Duration = Duration::from_secs(3);
/// Credentials are refetched when less than this (or 30% of their life,
/// up to 5 minutes) remains.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(6);
/// Backoff after failures: base, doubling, capped.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// When to refresh a token that expires at `expires_at`, seen at `now`:
/// halfway through its remaining life, and no later than `REFRESH_LEAD`
/// before it expires.
pub fn refresh_in(now: SystemTime, expires_at: SystemTime) -> Duration {
    let remaining = expires_at.duration_since(now).unwrap_or_default();
    let halfway = remaining.mul_f64(REFRESH_FRACTION);
    halfway
        .min(remaining.saturating_sub(REFRESH_LEAD))
        .clamp(MIN_REFRESH, MAX_REFRESH)
}

/// How long to wait after `failures` consecutive failures; `jitter` in
/// [0, 1) spreads a fleet's retries.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let capped = exp.min(BACKOFF_MAX);
    // Full jitter on the upper half keeps a floor while spreading retries.
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Whether cached credentials are still good at `now`: they are used until
/// less than 30% of their life (at most 5 minutes, at least 6 s) remains.
pub fn credentials_fresh(
    now: SystemTime,
    fetched_at: SystemTime,
    expiry: Option<SystemTime>,
) -> bool {
    let Some(expiry) = expiry else {
        return true;
    };
    let life = expiry.duration_since(fetched_at).unwrap_or_default();
    let margin = life
        .mul_f64(0.3)
        .min(Duration::from_secs(300))
        .max(CREDENTIALS_MARGIN);
    expiry.duration_since(now).is_ok_and(|left| left > margin)
}

/// What the connection path sees.
#[derive(Clone, Debug, Default)]
pub struct Current {
    pub token: Option<Arc<Token>>,
    /// Why the last refresh failed (no secrets), while it keeps failing.
    pub error: Option<Arc<str>>,
}

/// Counters a test or a metric can read.
#[derive(Debug, Default)]
pub struct Stats {
    pub signatures: AtomicU64,
    pub credential_fetches: AtomicU64,
}

/// Starts the refresher; the returned receiver always holds the latest state.
pub fn spawn(
    provider: SharedCredentialsProvider,
    params: Params,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
) -> watch::Receiver<Current> {
    let (tx, rx) = watch::channel(Current::default());
    tokio::spawn(run(provider, params, stats, metrics, tx));
    rx
}

/// Unix seconds, for the expiry gauges.
fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn run(
    provider: SharedCredentialsProvider,
    params: Params,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Current>,
) {
    let mut cached: Option<(Credentials, SystemTime)> = None;
    // Where the credentials come from, logged once and again if it changes.
    let mut logged_source: Option<&'static str> = None;
    let mut failures = 0u32;
    loop {
        let now = SystemTime::now();
        let started = std::time::Instant::now();
        let creds = match &cached {
            Some((c, fetched)) if credentials_fresh(now, *fetched, c.expiry()) => Ok(c.clone()),
            _ => {
                stats.credential_fetches.fetch_add(1, Ordering::Relaxed);
                match provider.provide_credentials().await {
                    // Already expired (a stale cache, a clock far off): no
                    // token signed with them would be accepted.
                    Ok(c) if c.expiry().is_some_and(|at| at <= now + MIN_VALIDITY) => {
                        let at = c.expiry().map_or_else(String::new, |at| {
                            humantime::format_rfc3339_seconds(at).to_string()
                        });
                        Err(format!(
                            "the AWS credentials from {} expired at {at}, when they were handed out (is the clock right? is the credentials source serving stale credentials?)",
                            super::credential_source(&c)
                        ))
                    }
                    Ok(c) => {
                        let source = super::credential_source(&c);
                        if logged_source != Some(source) {
                            let expires = c.expiry().map_or("never".to_string(), |at| {
                                humantime::format_rfc3339_seconds(at).to_string()
                            });
                            info!(%expires, "AWS credentials from {source}");
                            logged_source = Some(source);
                        }
                        cached = Some((c.clone(), SystemTime::now()));
                        Ok(c)
                    }
                    // The SDK's errors name the providers tried, never a key.
                    Err(e) => Err(format!(
                        "no AWS credentials: {}",
                        super::DisplayErrorChain(&e)
                    )),
                }
            }
        };
        let signed = creds.and_then(|c| {
            stats.signatures.fetch_add(1, Ordering::Relaxed);
            metrics.credentials_expiry.set(c.expiry().map_or(0, unix));
            token::sign(&c, &params, SystemTime::now()).map_err(|e| e.to_string())
        });
        metrics
            .token_refresh_duration
            .observe(started.elapsed().as_secs_f64());
        let wait = match signed {
            Ok(token) => {
                failures = 0;
                metrics
                    .token_refreshes
                    .with_label_values(&["success"])
                    .inc();
                metrics.token_expiry.set(unix(token.expires_at));
                let wait = refresh_in(SystemTime::now(), token.expires_at);
                debug!(refresh_in = ?wait, "IAM token refreshed");
                tx.send_replace(Current {
                    token: Some(Arc::new(token)),
                    error: None,
                });
                wait
            }
            Err(reason) => {
                failures += 1;
                metrics
                    .token_refreshes
                    .with_label_values(&["failure"])
                    .inc();

                let wait = backoff(failures, jitter());
                warn!(%reason, retry_in = ?wait, failures, "IAM token refresh failed");
                // Keep a token that is still valid: a brief credentials
                // outage must not fail connections that could still work.
                tx.send_modify(|cur| {
                    if cur
                        .token
                        .as_ref()
                        .is_some_and(|t| !usable(t, SystemTime::now()))
                    {
                        cur.token = None;
                    }
                    cur.error = Some(reason.into());
                });
                wait
            }
        };
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Whether a token can still be sent: it must outlive the AUTH round trip.
pub fn usable(token: &Token, now: SystemTime) -> bool {
    token
        .expires_at
        .duration_since(now)
        .is_ok_and(|left| left >= MIN_VALIDITY)
}

/// A cheap, dependency-free jitter in [0, 1).
pub(crate) fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn refresh_timing() {
        let cases: &[(u64, u64, Duration)] = &[
            // now, expires_at, refresh in
            (0, 900, Duration::from_secs(300)), // a fresh token: capped at 5 min
            (0, 400, Duration::from_secs(200)), // half of what is left
            (0, 8, Duration::from_secs(4)),
            (0, 5, Duration::from_secs(2)), // at least 3 s before expiry
            (0, 60, Duration::from_secs(30)), // short-lived STS credentials
            (0, 1, Duration::from_secs(1)), // floor
            (100, 50, Duration::from_secs(1)), // already expired: retry soon
        ];
        for &(now, exp, want) in cases {
            assert_eq!(
                refresh_in(at(now), at(exp)),
                want,
                "now {now} expires {exp}"
            );
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(125));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        assert!(backoff(30, 0.0) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn credentials_are_refetched_before_they_expire() {
        let cases: &[(u64, u64, Option<u64>, bool)] = &[
            // now, fetched, expiry, fresh
            (0, 0, None, true), // long-term keys never expire
            (0, 0, Some(3600), true),
            (3200, 0, Some(3600), true),  // 400 s left > 300 s margin
            (3400, 0, Some(3600), false), // 200 s left
            (3, 0, Some(10), true),       // 10 s credentials: 6 s margin
            (5, 0, Some(10), false),
            (13, 0, Some(20), true), // 7 s left
            (15, 0, Some(20), false),
            (11, 0, Some(10), false), // expired
        ];
        for &(now, fetched, exp, want) in cases {
            assert_eq!(
                credentials_fresh(at(now), at(fetched), exp.map(at)),
                want,
                "now {now} fetched {fetched} expiry {exp:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_a_token_ready_and_signs_in_the_background() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let stats = Arc::new(Stats::default());
        let params = Params {
            cache_name: "c".into(),
            user: "u".into(),
            region: "us-east-1".into(),
            service: crate::config::Service::Elasticache,
            serverless: false,
        };
        let metrics = Arc::new(Metrics::new());
        let mut rx = spawn(
            SharedCredentialsProvider::new(creds),
            params,
            stats.clone(),
            metrics.clone(),
        );
        rx.wait_for(|c| c.token.is_some()).await.unwrap();
        assert_eq!(stats.signatures.load(Ordering::Relaxed), 1);
        // Reading the token any number of times signs nothing.
        for _ in 0..1000 {
            assert!(rx.borrow().token.is_some());
        }
        assert_eq!(stats.signatures.load(Ordering::Relaxed), 1);
        // The paused clock jumps to each refresh: one signature per 5 min
        // (the SystemTime-based expiry stays 900 s ahead of real time).
        tokio::time::sleep(Duration::from_secs(301)).await;
        rx.changed().await.unwrap();
        assert_eq!(stats.signatures.load(Ordering::Relaxed), 2);
        assert_eq!(
            stats.credential_fetches.load(Ordering::Relaxed),
            1,
            "static keys are cached"
        );
        let text = metrics.render();
        assert!(
            text.contains("elasticache_auth_proxy_token_refreshes_total{outcome=\"success\"} 2"),
            "{text}"
        );
    }
}
