//! The files in `monitoring/` against the real thing. Every metric, and every
//! exact label value, that the Grafana dashboard and the Prometheus alert
//! rules query is one a freshly started proxy exports on `/metrics` (a typo
//! or a rename would leave a panel on "no data" and an alert that never
//! fires). And promtool accepts the rules, passes their unit tests
//! (`monitoring/alerts.test.yaml`), and parses every dashboard query.
//! The proxy runs in process, IAM with password fallback as in the
//! migration, in front of the local IAM emulator and a real redis-server.
//! No client connects: what is checked is what a fresh proxy shows.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use aws_credential_types::Credentials;
use common::{backend_options, http_get, Emulator, EmulatorOptions, Proxy, RedisServer};
use elasticache_auth_proxy::config::{self, AuthMode};
use elasticache_auth_proxy::metrics::PREFIX;

const DASHBOARD: &str = "monitoring/grafana-dashboard.json";
const RULES: &str = "monitoring/alerts.yaml";
const RULE_TESTS: &str = "monitoring/alerts.test.yaml";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- what the files query ----

/// One query and where it came from, for failure messages.
struct Query {
    source: String,
    expr: String,
}

/// Every PromQL query in the dashboard: panel targets (rows nest their
/// panels when collapsed) and the template variables' queries.
fn dashboard_queries(json: &serde_json::Value) -> Vec<Query> {
    fn panels(list: &serde_json::Value, out: &mut Vec<Query>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            let targets = panel["targets"].as_array();
            if panel["type"] != "row" {
                assert!(
                    targets.is_some_and(|t| !t.is_empty()),
                    "panel {title:?} has no query"
                );
            }
            for t in targets.into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push(Query {
                    source: format!("panel {title:?}"),
                    expr: expr.to_string(),
                });
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&json["panels"], &mut out);
    for var in json["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = &var["query"];
        let q = q["query"].as_str().or(q.as_str()).unwrap_or_default();
        // label_values(<selector>, <label>): the label is no metric.
        let expr = match q.strip_prefix("label_values(") {
            Some(rest) => rest.rsplit_once(',').map_or(rest, |(selector, _)| selector),
            None => q,
        };
        out.push(Query {
            source: format!("variable {}", var["name"]),
            expr: expr.to_string(),
        });
    }
    out
}

/// The `expr:` of every rule in a rule file. It reads the two YAML forms a
/// rule file uses, `expr: <one line>` and a block scalar `expr: |` (the
/// lines indented deeper than the key), and checks it found one per
/// `- alert:` / `- record:`, so a form it cannot read fails the test.
fn rule_exprs(yaml: &str) -> Vec<Query> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut rule = String::new();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(name) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("- record:"))
        {
            rules += 1;
            rule = name.trim().to_string();
        }
        let Some(value) = t.strip_prefix("expr:").map(str::trim) else {
            continue;
        };
        let expr = if value.starts_with(['|', '>']) {
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            value.to_string()
        };
        out.push(Query {
            source: format!("rule {rule} (line {})", i + 1),
            expr,
        });
    }
    assert_eq!(out.len(), rules, "an expr: per rule in:\n{yaml}");
    out
}

// ---- PromQL, read as far as needed ----

/// A series selector in a query: the metric and its `label="value"`
/// matchers (regex and negative matchers, and values with Grafana
/// variables, select nothing fixed and are left out).
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    equal: Vec<(String, String)>,
}

/// Words that are PromQL syntax, not metrics. The aggregations are here
/// as well as read as functions: `sum by (le) (...)` puts a word between
/// the name and its parenthesis.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
];
/// Keywords whose parenthesised list holds label names (`group_left` may
/// also stand alone).
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index just past the string literal opening at `i`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index just past the first `close` at or after `i`.
fn skip_past(b: &[u8], i: usize, close: u8) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == close)
        .map_or(b.len(), |p| i + p + 1)
}

/// Every series selector in `expr`, in order. Everything that is not a
/// function, a keyword, a label list, a number, a string, a duration or a
/// Grafana variable is taken for a metric name, so an unknown word fails
/// the test instead of passing unseen.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'#' => i = skip_past(b, i, b'\n'),
            // A range, a subquery step: durations and Grafana variables.
            b'[' => i = skip_past(b, i, b']'),
            b'{' => panic!("a selector with no metric name in {expr:?}"),
            // $var, ${var}, $__rate_interval
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    i = skip_past(b, i, b'}');
                }
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
            }
            // Numbers, durations (5m) and exponents (1e-3) are no metric.
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_word_start(c) => {
                let start = i;
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = b[i..].iter().position(|c| !c.is_ascii_whitespace());
                let next = next.map(|p| (i + p, b[i + p]));
                match next {
                    Some((at, b'(')) if LABEL_LISTS.contains(&word) => i = skip_past(b, at, b')'),
                    // A function or an aggregation: read on into its arguments.
                    Some((_, b'(')) => {}
                    _ if KEYWORDS.contains(&word) || LABEL_LISTS.contains(&word) => {}
                    Some((at, b'{')) => {
                        let (equal, end) = matchers(expr, at);
                        out.push(Selector {
                            metric: word.to_string(),
                            equal,
                        });
                        i = end;
                    }
                    _ => out.push(Selector {
                        metric: word.to_string(),
                        equal: Vec::new(),
                    }),
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The `label="value"` matchers of the `{...}` opening at `open`, and the
/// index past its `}`.
fn matchers(expr: &str, open: usize) -> (Vec<(String, String)>, usize) {
    let b = expr.as_bytes();
    let mut equal = Vec::new();
    let mut i = open + 1;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        match b.get(i) {
            Some(b'}') => return (equal, i + 1),
            Some(&c) if is_word_start(c) => {}
            _ => panic!("cannot read the matchers at {:?}", &expr[open..]),
        }
        let start = i;
        while i < b.len() && is_word(b[i]) {
            i += 1;
        }
        let label = &expr[start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = &expr[op_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        assert!(
            matches!(b.get(i), Some(b'"' | b'\'' | b'`')),
            "no quoted value for {label} in {:?}",
            &expr[open..]
        );
        let end = skip_string(b, i);
        let value = &expr[i + 1..end - 1];
        if op == "=" && !value.contains('$') {
            equal.push((label.to_string(), value.to_string()));
        }
        i = end;
    }
}

#[test]
fn selectors_are_read_from_promql() {
    let q = r#"histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{method="iam", job=~"$job"}[$__rate_interval])))
        / on (job) group_left b{x!="y"} - time() > 0 and bool c offset 5m or min(d{e='f'} > 1e-3)"#;
    let sel = |metric: &str, equal: &[(&str, &str)]| Selector {
        metric: metric.into(),
        equal: equal.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
    };
    assert_eq!(
        selectors(q),
        [
            sel("a_bucket", &[("method", "iam")]),
            sel("b", &[]),
            sel("c", &[]),
            sel("d", &[("e", "f")]),
        ]
    );
}

// ---- what the proxy exports ----

/// The series of one scrape: sample name → the label sets it has. A
/// histogram shows as its `_bucket`, `_sum` and `_count` samples only,
/// which is what a query must name, so the base name is not a series.
struct Exported(HashMap<String, Vec<HashMap<String, String>>>);

impl Exported {
    fn parse(text: &str) -> Exported {
        let mut series: HashMap<String, Vec<HashMap<String, String>>> = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = if line[name_end..].starts_with('{') {
                matchers(line, name_end).0
            } else {
                Vec::new()
            };
            series
                .entry(line[..name_end].to_string())
                .or_default()
                .push(labels.into_iter().collect());
        }
        Exported(series)
    }

    /// Why `sel` selects nothing, if it does not.
    fn missing(&self, sel: &Selector) -> Option<String> {
        let Some(sets) = self.0.get(&sel.metric) else {
            return Some(format!("{} is not exported", sel.metric));
        };
        sel.equal.iter().find_map(|(k, v)| {
            let has = sets.iter().any(|set| set.get(k) == Some(v));
            let seen: BTreeSet<_> = sets.iter().filter_map(|set| set.get(k)).collect();
            (!has).then(|| {
                format!(
                    "{}{{{k}=\"{v}\"}} is not exported ({k}: {seen:?})",
                    sel.metric
                )
            })
        })
    }
}

/// A proxy as a migration runs it, just started: IAM first, the password
/// user as the fallback, nothing connected yet.
async fn fresh_proxy() -> (RedisServer, Emulator, Proxy) {
    let redis = RedisServer::start(backend_options());
    let emulator = Emulator::start(&redis, &EmulatorOptions::default());
    let args = config::Args {
        auth: Some(AuthMode::IamWithPasswordFallback),
        password_user: Some("app".into()),
        password_env: Some(common::PASSWORD_ENV.into()),
        ..Proxy::iam_args(&redis, emulator.addr.port())
    };
    let creds = Credentials::new("AKIDTEST", "test-secret-key", None, None, "test");
    let proxy = Proxy::start_with_credentials(args, "app-secret-pw", creds).await;
    (redis, emulator, proxy)
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported() {
    let (_redis, _emulator, proxy) = fresh_proxy().await;
    let (status, scrape) = http_get(proxy.admin, "/metrics").await;
    assert_eq!(status, 200, "{scrape}");
    let exported = Exported::parse(&scrape);
    // The suffix rule the check relies on: a histogram is queried by its
    // samples' names, and its base name selects nothing.
    let histogram = format!("{PREFIX}_upstream_connect_duration_seconds");
    assert!(exported.0.contains_key(&format!("{histogram}_bucket")));
    assert!(!exported.0.contains_key(&histogram));

    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let queries: Vec<Query> = dashboard_queries(&dashboard)
        .into_iter()
        .chain(rule_exprs(&read(RULES)))
        .collect();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in &queries {
        let found = selectors(&q.expr);
        if found.is_empty() {
            problems.push(format!("{}: no metric in {:?}", q.source, q.expr));
        }
        for sel in found {
            if let Some(why) = exported.missing(&sel) {
                problems.push(format!("{}: {why}", q.source));
            }
            used.insert(sel.metric);
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\n/metrics:\n{scrape}",
        problems.join("\n")
    );
    // The alerts' subjects are among what was checked.
    for metric in [
        "authentication_failures_total",
        "iam_authentication_throttled_total",
        "iam_session_expirations_total",
        "credentials_expiry_timestamp_seconds",
        "upstream_connections_active",
        "upstream_auth_duration_seconds_bucket",
    ] {
        assert!(
            used.contains(&format!("{PREFIX}_{metric}")),
            "{metric} unused"
        );
    }
}

// ---- promtool ----

/// promtool, or `None` with a loud note (a failure under CI, which must
/// have it: scripts/deps.sh installs Debian's `prometheus` package).
fn promtool() -> Option<Command> {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if found {
        return Some(Command::new("promtool"));
    }
    let note = "promtool not found: the monitoring rules were NOT checked \
                (scripts/deps.sh installs it: Debian's `prometheus` package)";
    assert!(std::env::var_os("CI").is_none(), "{note}");
    eprintln!("\n*** SKIPPED: {note} ***\n");
    None
}

fn run_promtool(args: &[&str]) -> String {
    let mut cmd = promtool().expect("checked by the caller");
    cmd.args(args).current_dir(repo_file("."));
    let what = format!("promtool {}", args.join(" "));
    let out = common::run_bounded(&mut cmd, &what, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {}\n{text}", out.status);
    text
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    if promtool().is_none() {
        return;
    }
    let checked = run_promtool(&["check", "rules", RULES]);
    let rules = rule_exprs(&read(RULES)).len();
    assert!(
        checked.contains(&format!("SUCCESS: {rules} rules found")),
        "{checked}"
    );
    let tested = run_promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn promtool_parses_every_dashboard_query() {
    if promtool().is_none() {
        return;
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    // Each query as a recording rule, with Grafana's variables as Grafana
    // would fill them in; a JSON string is a YAML double-quoted scalar.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = dashboard_queries(&dashboard);
    for (n, q) in queries.iter().enumerate() {
        let expr = q
            .expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "6h")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        let expr = serde_json::to_string(&expr).expect("a string encodes");
        file.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&path, &file).expect("write the queries");
    let checked = run_promtool(&["check", "rules", path.to_str().expect("UTF-8 path")]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}\n{file}"
    );
}
