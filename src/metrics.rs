//! One struct of typed metric handles, registered once, rendered in the
//! Prometheus text format for `/metrics`. Labels are low-cardinality enums
//! (method, outcome, reason, kind, direction), never user input.

use prometheus::{
    proto::MetricFamily, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric name starts with this.
pub const PREFIX: &str = "elasticache_auth_proxy";

/// Buckets for connect, TLS and AUTH latencies: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label values the proxy knows before anything happens. Each is
/// created at 0 at start, so a dashboard or an alert on a fresh proxy reads
/// 0, not "no data" (a labelled family with no series is not rendered).
pub mod labels {
    /// `method`: as `auth::Method::as_str`.
    pub const METHODS: &[&str] = &["iam", "password"];
    /// `outcome`, on every counter that has one.
    pub const OUTCOMES: &[&str] = &["success", "failure"];
    /// `reason` of `auth_fallbacks_total`.
    pub const FALLBACK_REASONS: &[&str] =
        &["token_unavailable", "rejected", "throttled", "backoff"];
    /// `role` of `cluster_nodes`.
    pub const ROLES: &[&str] = &["primary", "replica"];
    /// `kind` of `redirects_rewritten_total`: as `cluster::rewrite::Redirect::as_str`.
    pub const REDIRECTS: &[&str] = &["moved", "ask"];
    /// `direction` of `bytes_total`.
    pub const DIRECTIONS: &[&str] = &["to_upstream", "to_client"];
    /// `reason` of `pool_discards_total`: as `session::pool`.
    pub const POOL_DISCARDS: &[&str] = &[
        "aged",
        "closed",
        "unexpected_data",
        "reuse_refused",
        "reuse_failed",
    ];
    /// `kind` of `upstream_tls_handshakes_total`: as `upstream::Handshake::as_str`.
    pub const HANDSHAKES: &[&str] = &["full", "resumed"];
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    /// Upstream authentication attempts, by `method` (iam, password) and
    /// `outcome` (success, failure). An IAM attempt with no token available
    /// is a failure too, though no AUTH was sent.
    pub auth_attempts: IntCounterVec,
    /// Connections that turned to the password user because IAM did not
    /// work, by `reason` (token_unavailable, rejected, throttled, backoff);
    /// whether the password then worked is in `auth_attempts`.
    pub auth_fallbacks: IntCounterVec,
    /// Upstream AUTH attempts refused by the server (CloudWatch's
    /// AuthenticationFailures, seen from the proxy), by `method`.
    pub auth_failures: IntCounterVec,
    /// IAM AUTH attempts the server throttled (IamAuthenticationThrottling);
    /// also counted in `auth_failures`.
    pub iam_throttled: IntCounter,
    /// Re-authentications of live sessions (after RESET, before the 12 h
    /// cut-off), by `outcome`.
    pub reauths: IntCounterVec,
    /// Sessions moved to a fresh connection to re-authenticate (RESP2
    /// subscribers, MONITOR), by `outcome`.
    pub migrations: IntCounterVec,
    /// Messages that arrived on the new connection while the old one was
    /// still subscribed: each may also have come on the old one (delivered
    /// twice, never lost).
    pub migration_overlap_messages: IntCounter,
    /// IAM connections the server closed at the session-age limit
    /// (CloudWatch's IamAuthenticationExpirations, seen from the proxy).
    pub session_expirations: IntCounter,
    /// Token refreshes by `outcome`, and how long each took.
    pub token_refreshes: IntCounterVec,
    pub token_refresh_duration: Histogram,
    /// When the current token and the credentials behind it expire (Unix seconds).
    pub token_expiry: IntGauge,
    pub credentials_expiry: IntGauge,
    /// Client connections: open now, and accepted in total.
    pub client_connections_active: IntGauge,
    pub client_connections: IntCounter,
    /// Clients refused at --max-connections.
    pub client_connections_refused: IntCounter,
    /// Clients that began a TLS handshake on the plaintext listener.
    pub client_tls_refused: IntCounter,
    /// Cluster mode: upstream nodes known, by `role` (primary, replica).
    pub cluster_nodes: IntGaugeVec,
    /// Cluster mode: topology reads, by `outcome` (success, failure).
    pub topology_refreshes: IntCounterVec,
    /// Cluster mode: -MOVED / -ASK errors rewritten to a local listener, by `kind`.
    pub redirects_rewritten: IntCounterVec,
    /// Cluster mode: client sessions open now per upstream `node` (the
    /// label's values are bounded by the cluster's size).
    pub cluster_node_sessions: IntGaugeVec,
    /// Clients' AUTH against the local client password, by `outcome`.
    pub client_auth: IntCounterVec,
    /// Authenticated upstream connections open now, by `method`.
    pub upstream_connections_active: IntGaugeVec,
    /// Upstream connections opened in total.
    pub upstream_connections: IntCounter,
    /// Upstream latencies: TCP connect, TLS handshake, AUTH round trip.
    pub upstream_connect_duration: Histogram,
    pub upstream_tls_duration: Histogram,
    pub upstream_auth_duration: HistogramVec,
    /// Upstream TLS handshakes completed, by `kind` (full, resumed): a
    /// resumed one spares the server a certificate signature.
    pub upstream_tls_handshakes: IntCounterVec,
    /// Upstream errors by `kind` (see `error::Kind::as_str`).
    pub upstream_errors: IntCounterVec,
    /// Health probes of the upstream (connect and AUTH), by `outcome`.
    pub upstream_probes: IntCounterVec,
    /// Bytes relayed, by `direction` (to_upstream, to_client).
    pub bytes: IntCounterVec,
    /// The warm pool: connections ready now; clients that took one (hits)
    /// or found none (misses); connections opened into it; and those
    /// discarded instead of handed out (or instead of being reused), by
    /// `reason`; connections whose client left that went back after RESET
    /// and AUTH (reuses).
    pub pool_connections: IntGauge,
    /// How many it aims to keep ready now (sized by the accept rate).
    pub pool_target: IntGauge,
    pub pool_hits: IntCounter,
    pub pool_misses: IntCounter,
    pub pool_refills: IntCounter,
    pub pool_discards: IntCounterVec,
    pub pool_reuses: IntCounter,
}

impl Metrics {
    /// Unlabelled: the metrics of a proxy with one route.
    pub fn new() -> Metrics {
        Metrics::for_route(None)
    }

    /// With a `route` label on every series when `route` is named (a
    /// process serving several routes has one `Metrics` for each).
    pub fn for_route(route: Option<&str>) -> Metrics {
        let labels = route.map(|r| [("route".to_string(), r.to_string())].into());
        let registry = Registry::new_custom(None, labels).expect("`route` is a valid label name");
        let name = |n: &str| format!("{PREFIX}_{n}");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let counter = |n: &str, help: &str| IntCounter::new(name(n), help);
        let counter_vec = |n: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name(n), help), labels)
        };
        let histogram = |n: &str, help: &str| {
            Histogram::with_opts(
                HistogramOpts::new(name(n), help).buckets(LATENCY_BUCKETS.to_vec()),
            )
        };
        let m = Metrics {
            auth_attempts: reg!(counter_vec(
                "auth_attempts_total",
                "Upstream authentication attempts by method and outcome (no IAM token available counts as a failure).",
                &["method", "outcome"]
            )),
            auth_fallbacks: reg!(counter_vec(
                "auth_fallbacks_total",
                "Connections that turned to the password user because IAM did not work, by reason.",
                &["reason"]
            )),
            auth_failures: reg!(counter_vec(
                "authentication_failures_total",
                "Upstream AUTH attempts the server refused, by method.",
                &["method"]
            )),
            iam_throttled: reg!(counter(
                "iam_authentication_throttled_total",
                "IAM AUTH attempts the server throttled (also in authentication_failures_total)."
            )),
            reauths: reg!(counter_vec(
                "reauthentications_total",
                "Re-authentications of live sessions, by outcome.",
                &["outcome"]
            )),
            migrations: reg!(counter_vec(
                "session_migrations_total",
                "Sessions moved to a fresh authenticated connection, by outcome.",
                &["outcome"]
            )),
            migration_overlap_messages: reg!(counter(
                "migration_overlap_messages_total",
                "Pub/sub messages received on both connections during a migration window may be delivered twice; this counts the candidates."
            )),
            session_expirations: reg!(counter(
                "iam_session_expirations_total",
                "IAM connections the server closed at the session-age limit."
            )),
            token_refreshes: reg!(counter_vec(
                "token_refreshes_total",
                "IAM token refreshes by outcome.",
                &["outcome"]
            )),
            token_refresh_duration: reg!(histogram(
                "token_refresh_duration_seconds",
                "Time to fetch credentials (when due) and sign a token."
            )),
            token_expiry: reg!(IntGauge::new(
                name("token_expiry_timestamp_seconds"),
                "When the current IAM token expires (Unix time)."
            )),
            credentials_expiry: reg!(IntGauge::new(
                name("credentials_expiry_timestamp_seconds"),
                "When the AWS credentials behind the current token expire (Unix time; 0 = never)."
            )),
            client_connections_active: reg!(IntGauge::new(
                name("client_connections_active"),
                "Client connections open now."
            )),
            client_connections: reg!(counter(
                "client_connections_total",
                "Client connections accepted."
            )),
            client_connections_refused: reg!(counter(
                "client_connections_refused_total",
                "Client connections refused at --max-connections."
            )),
            client_tls_refused: reg!(counter(
                "client_tls_refused_total",
                "Client connections closed because the client spoke TLS to the plaintext listener."
            )),
            cluster_nodes: reg!(IntGaugeVec::new(
                Opts::new(
                    name("cluster_nodes"),
                    "Cluster mode: upstream nodes known, by role (primary, replica)."
                ),
                &["role"]
            )),
            topology_refreshes: reg!(counter_vec(
                "topology_refreshes_total",
                "Cluster mode: reads of the cluster topology, by outcome.",
                &["outcome"]
            )),
            redirects_rewritten: reg!(counter_vec(
                "redirects_rewritten_total",
                "Cluster mode: -MOVED and -ASK errors rewritten to name a local listener, by kind.",
                &["kind"]
            )),
            cluster_node_sessions: reg!(IntGaugeVec::new(
                Opts::new(
                    name("cluster_node_sessions"),
                    "Cluster mode: client sessions open now, by upstream node (host:port)."
                ),
                &["node"]
            )),
            client_auth: reg!(counter_vec(
                "client_auth_total",
                "Client AUTH (or HELLO AUTH) checked against --client-password-env/--client-password-file, by outcome.",
                &["outcome"]
            )),
            upstream_connections_active: reg!(IntGaugeVec::new(
                Opts::new(
                    name("upstream_connections_active"),
                    "Authenticated upstream connections open now, by method."
                ),
                &["method"]
            )),
            upstream_connections: reg!(counter(
                "upstream_connections_total",
                "Upstream connections opened (TCP connected)."
            )),
            upstream_connect_duration: reg!(histogram(
                "upstream_connect_duration_seconds",
                "Upstream TCP connect time."
            )),
            upstream_tls_duration: reg!(histogram(
                "upstream_tls_handshake_duration_seconds",
                "Upstream TLS handshake time."
            )),
            upstream_auth_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    name("upstream_auth_duration_seconds"),
                    "Upstream AUTH round trip, by method."
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method"]
            )),
            upstream_tls_handshakes: reg!(counter_vec(
                "upstream_tls_handshakes_total",
                "Upstream TLS handshakes completed, by kind (full, resumed from an earlier session's ticket).",
                &["kind"]
            )),
            upstream_errors: reg!(counter_vec(
                "upstream_errors_total",
                "Upstream errors by kind.",
                &["kind"]
            )),
            upstream_probes: reg!(counter_vec(
                "upstream_probes_total",
                "Upstream connections opened and authenticated only to answer /startup and /readiness, by outcome.",
                &["outcome"]
            )),
            bytes: reg!(counter_vec(
                "bytes_total",
                "Bytes relayed, by direction.",
                &["direction"]
            )),
            pool_connections: reg!(IntGauge::new(
                name("pool_connections"),
                "Warm pool: authenticated upstream connections ready for new clients now."
            )),
            pool_target: reg!(IntGauge::new(
                name("pool_target"),
                "Warm pool: connections it aims to keep ready now: the most new clients in one second of the last minute, at least 1 while clients came in the last 10 minutes, at most --pool-size."
            )),
            pool_hits: reg!(counter(
                "pool_hits_total",
                "Warm pool: new clients that took a ready connection."
            )),
            pool_misses: reg!(counter(
                "pool_misses_total",
                "Warm pool: new clients that found none ready and connected themselves."
            )),
            pool_refills: reg!(counter(
                "pool_refills_total",
                "Warm pool: connections opened and authenticated into the pool."
            )),
            pool_discards: reg!(counter_vec(
                "pool_discards_total",
                "Warm pool: connections discarded instead of handed out or reused, by reason (aged, closed, unexpected_data; reuse_refused: the client left something owed or state RESET may not clear; reuse_failed: RESET or AUTH not answered exactly as expected).",
                &["reason"]
            )),
            pool_reuses: reg!(counter(
                "pool_reuses_total",
                "Warm pool: connections whose client left cleanly, returned to the pool after RESET and a fresh AUTH."
            )),
            registry,
        };
        m.preinitialise();
        m
    }

    /// Creates every series whose labels are known statically (see
    /// `labels`), at 0. `cluster_node_sessions` is left out: its `node`
    /// values come from the cluster.
    fn preinitialise(&self) {
        use labels::*;
        for method in METHODS {
            for outcome in OUTCOMES {
                self.auth_attempts.with_label_values(&[method, outcome]);
            }
            self.auth_failures.with_label_values(&[method]);
            self.upstream_connections_active
                .with_label_values(&[method]);
            self.upstream_auth_duration.with_label_values(&[method]);
        }
        for outcome in OUTCOMES {
            for vec in [
                &self.reauths,
                &self.migrations,
                &self.token_refreshes,
                &self.topology_refreshes,
                &self.client_auth,
                &self.upstream_probes,
            ] {
                vec.with_label_values(&[outcome]);
            }
        }
        for reason in FALLBACK_REASONS {
            self.auth_fallbacks.with_label_values(&[reason]);
        }
        for kind in crate::error::Kind::ALL {
            self.upstream_errors.with_label_values(&[kind.as_str()]);
        }
        for role in ROLES {
            self.cluster_nodes.with_label_values(&[role]);
        }
        for kind in REDIRECTS {
            self.redirects_rewritten.with_label_values(&[kind]);
        }
        for direction in DIRECTIONS {
            self.bytes.with_label_values(&[direction]);
        }
        for reason in POOL_DISCARDS {
            self.pool_discards.with_label_values(&[reason]);
        }
        for kind in HANDSHAKES {
            self.upstream_tls_handshakes.with_label_values(&[kind]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render_all([self])
    }
}

/// The Prometheus text exposition of several routes' metrics: a family
/// several routes have is written once (one HELP and TYPE), holding every
/// route's series, as the format requires.
pub fn render_all<'a>(all: impl IntoIterator<Item = &'a Metrics>) -> String {
    let mut families: Vec<MetricFamily> = Vec::new();
    for metrics in all {
        for mut family in metrics.registry.gather() {
            match families.iter_mut().find(|f| f.name() == family.name()) {
                Some(merged) => merged.mut_metric().extend(family.take_metric()),
                None => families.push(family),
            }
        }
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    // Encoding metric families into a Vec cannot fail.
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding into memory");
    String::from_utf8(out).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_units() {
        let m = Metrics::new();
        m.auth_attempts.with_label_values(&["iam", "success"]).inc();
        m.bytes.with_label_values(&["to_client"]).inc_by(42);
        let text = m.render();
        assert!(
            text.contains(
                "elasticache_auth_proxy_auth_attempts_total{method=\"iam\",outcome=\"success\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("elasticache_auth_proxy_bytes_total{direction=\"to_client\"} 42"),
            "{text}"
        );
        assert!(text
            .contains("# TYPE elasticache_auth_proxy_upstream_connect_duration_seconds histogram"));
        assert!(!text.contains("route="), "{text}");
    }

    #[test]
    fn several_routes_render_one_family_with_each_routes_series() {
        let (primary, reader) = (
            Metrics::for_route(Some("default")),
            Metrics::for_route(Some("reader")),
        );
        primary.bytes.with_label_values(&["to_client"]).inc_by(3);
        reader.bytes.with_label_values(&["to_client"]).inc_by(5);
        // A family only the second route has is rendered too.
        reader.iam_throttled.inc();
        let text = render_all([&primary, &reader]);
        for line in [
            "elasticache_auth_proxy_bytes_total{direction=\"to_client\",route=\"default\"} 3",
            "elasticache_auth_proxy_bytes_total{direction=\"to_client\",route=\"reader\"} 5",
            "elasticache_auth_proxy_iam_authentication_throttled_total{route=\"reader\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        // One HELP and TYPE per family, as the exposition format requires.
        for prefix in ["# HELP ", "# TYPE "] {
            let mut names: Vec<_> = text
                .lines()
                .filter_map(|l| l.strip_prefix(prefix)?.split(' ').next())
                .collect();
            let all = names.len();
            names.dedup();
            assert_eq!(names.len(), all, "{text}");
        }
    }

    #[test]
    fn a_fresh_registry_shows_every_known_label_at_zero() {
        let text = Metrics::new().render();
        for series in [
            r#"auth_attempts_total{method="password",outcome="failure"} 0"#,
            r#"auth_fallbacks_total{reason="token_unavailable"} 0"#,
            r#"authentication_failures_total{method="iam"} 0"#,
            r#"upstream_connections_active{method="password"} 0"#,
            r#"upstream_auth_duration_seconds_count{method="iam"} 0"#,
            r#"upstream_errors_total{kind="tls_handshake"} 0"#,
            r#"session_migrations_total{outcome="failure"} 0"#,
            r#"bytes_total{direction="to_upstream"} 0"#,
            r#"upstream_tls_handshakes_total{kind="resumed"} 0"#,
        ] {
            assert!(
                text.contains(&format!("{PREFIX}_{series}\n")),
                "{series} in\n{text}"
            );
        }
        // The one family whose labels come from outside stays empty.
        assert!(!text.contains("cluster_node_sessions{"), "{text}");
    }

    #[test]
    fn preinitialised_labels_are_the_ones_the_code_counts() {
        use crate::{auth::Method, cluster::rewrite::Redirect, error::Kind, upstream::Handshake};
        let methods: Vec<_> = [Method::Iam, Method::Password].map(Method::as_str).into();
        assert_eq!(methods, labels::METHODS);
        let redirects: Vec<_> = [Redirect::Moved, Redirect::Ask]
            .map(Redirect::as_str)
            .into();
        assert_eq!(redirects, labels::REDIRECTS);
        let handshakes: Vec<_> = Handshake::ALL.map(Handshake::as_str).into();
        assert_eq!(handshakes, labels::HANDSHAKES);
        let mut kinds: Vec<_> = Kind::ALL.map(Kind::as_str).into();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Kind::ALL.len(), "Kind::ALL repeats a kind");
    }
}
