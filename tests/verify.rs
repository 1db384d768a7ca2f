//! `elasticache-auth-proxy verify` (issue 11): the real binary, its AWS
//! credentials from the environment as the SDK chain finds them, against
//! the IAM emulator in front of a real TLS redis-server with an IAM user
//! and a password user, and against a real TLS cluster.

mod common;

use std::process::{Command, Output};

use common::{
    backend_options, Announce, Emulator, EmulatorOptions, RedisCluster, RedisServer, CACHE,
    IAM_USER, REGION,
};

const BIN: &str = env!("CARGO_BIN_EXE_elasticache-auth-proxy");
const SECRET_KEY: &str = "test-secret-key";
const PASSWORD: &str = "app-secret-pw";

/// Runs `verify` against `upstream` with both methods configured, the AWS
/// secret `secret`, and `more` flags.
fn verify(upstream: &str, ca: &std::path::Path, secret: &str, more: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("CACHE_PASSWORD", PASSWORD)
        .arg("verify")
        .args(["--upstream", upstream, "--tls-ca-file"])
        .arg(ca)
        .args([
            "--iam-user",
            IAM_USER,
            "--cache-name",
            CACHE,
            "--region",
            REGION,
        ])
        .args(["--password-user", "app", "--password-env", "CACHE_PASSWORD"])
        .args(more)
        .output()
        .expect("run verify")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No secret in anything verify prints: the password, the AWS secret, a
/// token or its signature.
fn no_secret(out: &Output, secret: &str) {
    let all = format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr));
    for s in [
        PASSWORD,
        secret,
        "X-Amz-Signature",
        "X-Amz-Credential",
        "AKIDTEST",
    ] {
        assert!(!all.contains(s), "verify printed {s:?}:\n{all}");
    }
}

/// The row whose first column is `check`.
fn row<'a>(table: &'a str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{check}  ")))
        .unwrap_or_else(|| panic!("no {check:?} row:\n{table}"))
}

fn iam_backend() -> (RedisServer, Emulator) {
    let redis = RedisServer::start(backend_options());
    let emulator = Emulator::start(&redis, &EmulatorOptions::default());
    (redis, emulator)
}

#[test]
fn both_methods_work_and_each_identity_is_shown() {
    let (redis, emulator) = iam_backend();
    let upstream = format!("localhost:{}", emulator.addr.port());
    let out = verify(&upstream, &redis.certs.ca, SECRET_KEY, &[]);
    let table = stdout(&out);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        row(&table, "aws credentials").contains("environment"),
        "{table}"
    );
    assert!(row(&table, "sign token").contains(&format!("user {IAM_USER}, cache {CACHE}")));
    assert!(row(&table, "tls handshake").contains("TLS 1.3"), "{table}");
    assert!(row(&table, "tls handshake").contains("expires"), "{table}");
    assert!(row(&table, "iam whoami").contains(&format!("ACL WHOAMI: {IAM_USER}")));
    assert!(row(&table, "password whoami").contains("ACL WHOAMI: app"));
    assert!(table.contains("every configured authentication method works"));
    assert!(!table.contains("FAILED"), "{table}");
    no_secret(&out, SECRET_KEY);
    // Each method really authenticated at the server.
    assert_eq!(emulator.stat("iam_auth_success_total"), 1);
    assert_eq!(emulator.stat("password_auth_total"), 1);

    // The same as JSON, for scripts.
    let out = verify(
        &upstream,
        &redis.certs.ca,
        SECRET_KEY,
        &["--output", "json"],
    );
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    let whoami = checks.iter().find(|c| c["check"] == "iam whoami").unwrap();
    assert_eq!(whoami["ok"], true);
    assert!(whoami["ms"].as_f64().unwrap() >= 0.0);
    assert!(checks.iter().all(|c| c["ok"] == true), "{report}");
    no_secret(&out, SECRET_KEY);
}

#[test]
fn a_wrong_aws_secret_fails_and_says_iam_was_rejected() {
    let (redis, emulator) = iam_backend();
    let upstream = format!("localhost:{}", emulator.addr.port());
    let wrong = "not-the-secret-key";
    let out = verify(&upstream, &redis.certs.ca, wrong, &[]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let iam = row(&table, "iam auth");
    assert!(iam.contains("FAILED"), "{iam}");
    assert!(iam.contains("IAM was rejected (WRONGPASS"), "{iam}");
    assert!(
        iam.contains("--cache-name") && iam.contains("elasticache:Connect"),
        "{iam}"
    );
    // The password still works, and the verdict names what failed.
    assert!(row(&table, "password whoami").contains("ACL WHOAMI: app"));
    assert!(table.contains("verify: FAILED: iam auth"), "{table}");
    no_secret(&out, wrong);
}

#[test]
fn an_unreachable_upstream_fails_on_the_connect_row() {
    let (redis, _emulator) = iam_backend();
    let port = common::free_port();
    let out = verify(
        &format!("localhost:{port}"),
        &redis.certs.ca,
        SECRET_KEY,
        &[],
    );
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(row(&table, "tcp connect").contains("FAILED"), "{table}");
    // The checks that need no connection ran and passed.
    assert!(!row(&table, "sign token").contains("FAILED"), "{table}");
}

/// In cluster mode every node is checked with every method: through its
/// own emulator, so each node checks the token.
#[test]
fn cluster_mode_checks_every_node() {
    let cluster = RedisCluster::start_announcing(3, 1, Announce::Iam(EmulatorOptions::default()));
    let upstream = format!("localhost:{}", cluster.emulators[0].addr.port());
    let out = verify(&upstream, &cluster.certs.ca, SECRET_KEY, &["--cluster"]);
    let table = stdout(&out);
    assert!(out.status.success(), "{table}");
    assert!(
        row(&table, "cluster topology").contains("6 nodes: 3 primaries, 3 replicas"),
        "{table}"
    );
    let nodes: Vec<&str> = table.lines().filter(|l| l.starts_with("node ")).collect();
    assert_eq!(nodes.len(), 6, "{table}");
    for node in &nodes {
        assert!(
            node.contains(&format!("iam: {IAM_USER}; password: app")),
            "{node}"
        );
    }
    for (i, emulator) in cluster.emulators.iter().enumerate() {
        assert!(
            emulator.stat("iam_auth_success_total") >= 1,
            "node {i} saw no IAM AUTH"
        );
    }
    no_secret(&out, SECRET_KEY);
}
