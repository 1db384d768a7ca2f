//! Known-answer tests: the proxy's IAM token signer reproduces, parameter for
//! parameter and signature for signature, the tokens AWS's own botocore makes
//! (tests/fixtures/gen_iam_vectors.py, the snippet from AWS's migration guide).

use aws_credential_types::Credentials;
use elasticache_auth_proxy::{
    auth::token::{sign, Params},
    config::Service,
};

/// A token's host and its query parameters, sorted: botocore and aws-sigv4
/// may order parameters differently; ElastiCache's check does not care.
fn parts(token: &str) -> (String, Vec<String>) {
    let (host, query) = token.split_once("/?").expect("token has /?");
    let mut params: Vec<String> = query.split('&').map(String::from).collect();
    params.sort();
    (host.to_string(), params)
}

#[test]
fn signer_matches_botocore_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/iam_vectors.json"
    ))
    .expect("vectors are committed");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let vectors = doc["vectors"].as_array().expect("vectors array");
    assert!(
        vectors.len() >= 6,
        "node-based, serverless, session tokens, mixed case"
    );
    for v in vectors {
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
        let creds = Credentials::new(
            s("access_key_id"),
            s("secret_access_key"),
            v["session_token"].as_str().map(String::from),
            None,
            "vector",
        );
        let params = Params {
            cache_name: s("cache_name"),
            user: s("user_id"),
            region: s("region"),
            service: match s("service").as_str() {
                "memorydb" => Service::Memorydb,
                _ => Service::Elasticache,
            },
            serverless: v["serverless"].as_bool().expect("serverless"),
        };
        let at = humantime::parse_rfc3339(&s("time")).expect("RFC 3339 time");
        let token = sign(&creds, &params, at).expect("signs");
        let (got_host, got) = parts(token.value.expose());
        let (want_host, want) = parts(&s("token"));
        assert_eq!(got_host, want_host, "{}: host", s("name"));
        assert_eq!(got, want, "{}: parameters and signature", s("name"));
    }
}
