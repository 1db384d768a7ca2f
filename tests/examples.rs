//! The deployment examples under docker/ and config/ pass the proxy flags
//! it really accepts: each is parsed by the real CLI and loaded by the real
//! config.

use clap::Parser;
use elasticache_auth_proxy::{
    cli::{Cli, Command},
    config::Config,
};

fn loads(source: &str, args: &[String]) -> Config {
    let argv = std::iter::once("elasticache-auth-proxy".to_string()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{source}: {e}"));
    Config::load(cli.args, &|_| None).unwrap_or_else(|e| panic!("{source}: {e}"))
}

#[test]
fn ecs_task_definition_flags_are_valid() {
    let text = include_str!("../docker/ecs-task-definition.json");
    let task: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    let proxy = task["containerDefinitions"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "elasticache-auth-proxy")
        .expect("the proxy container");
    let args: Vec<String> = proxy["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("string").to_string())
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--iam-user=")));
    let cfg = loads("ecs-task-definition.json", &args);
    // Its health check: the healthcheck subcommand in exec form (the image
    // has no shell), asking /startup on the port this task's proxy serves.
    let check: Vec<&str> = proxy["healthCheck"]["command"]
        .as_array()
        .expect("healthCheck command")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    assert_eq!(check[..2], ["CMD", "/usr/local/bin/elasticache-auth-proxy"]);
    let cli = Cli::try_parse_from(&check[1..]).unwrap_or_else(|e| panic!("{check:?}: {e}"));
    let Some(Command::Healthcheck(health)) = cli.command else {
        panic!("not the healthcheck subcommand: {check:?}");
    };
    let want = format!("http://{}/startup", cfg.admin_listen);
    assert_eq!(health.url.to_string(), want);
}

/// The proxy's args in a Kubernetes example: the `- --flag[=value]` items.
fn kubernetes_args(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("- --"))
        .map(|a| format!("--{a}"))
        .collect()
}

#[test]
fn kubernetes_sidecar_flags_are_valid() {
    let args = kubernetes_args(include_str!("../docker/kubernetes-sidecar.yaml"));
    assert!(args.len() >= 5, "{args:?}");
    assert!(args.iter().any(|a| a == "--admin-listen=0.0.0.0:9090"));
    loads("kubernetes-sidecar.yaml", &args);
}

#[test]
fn kubernetes_cluster_sidecar_flags_are_valid_and_enable_cluster_mode() {
    let args = kubernetes_args(include_str!("../docker/kubernetes-cluster-sidecar.yaml"));
    let cfg = loads("kubernetes-cluster-sidecar.yaml", &args);
    let cluster = cfg.cluster.expect("cluster mode on");
    assert!(cluster.ports.is_some(), "{args:?}");
    assert!(args.iter().any(|a| a == "--admin-listen=0.0.0.0:9090"));
}

#[test]
fn cluster_config_example_loads_in_cluster_mode() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cluster.example.toml");
    let cfg = loads("cluster.example.toml", &[format!("--config={path}")]);
    let cluster = cfg.cluster.expect("cluster mode on");
    assert!(cluster.ports.is_some());
    assert!(cfg.auth.iam.is_some(), "IAM is configured");
}

#[test]
fn serverless_reader_example_loads_two_routes_to_the_two_endpoints() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/serverless-reader.example.toml"
    );
    let cfg = loads(
        "serverless-reader.example.toml",
        &[format!("--config={path}")],
    );
    let [reader] = &cfg.routes[..] else {
        panic!("one [[route]]: {:?}", cfg.routes)
    };
    assert_eq!(cfg.route.as_deref(), Some("default"));
    assert_eq!(reader.route.as_deref(), Some("reader"));
    assert_eq!((cfg.listen.port(), reader.listen.port()), (6379, 6380));
    assert_eq!((cfg.upstream.port, reader.upstream.port), (6379, 6380));
    assert_eq!(cfg.upstream.host, reader.upstream.host);
    for route in [&cfg, reader] {
        let iam = route.auth.iam.as_ref().expect("IAM");
        assert!(iam.serverless && route.cluster.is_some());
        assert_eq!(iam.cache_name, "orders");
    }
    assert_eq!(reader.max_connections, 10000);
}
