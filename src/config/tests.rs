//! Unit tests for `config`: precedence, validation messages and the example file.

use std::collections::HashMap;

use clap::Parser;

use super::*;

const PASSWORD: &str = "hunter2-do-not-print";
const EXAMPLE: &str = include_str!("../../config/example.toml");

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn flags(argv: &str) -> Result<Args, clap::Error> {
    Cli::try_parse_from(std::iter::once("proxy").chain(argv.split_whitespace())).map(|c| c.args)
}

/// Loads with `{dir}` in argv, env and file replaced by a temp dir holding `pw` (the password),
/// `empty`, `ca.pem`, `cert.pem`, `key.pem` and, if given, `config.toml`. `PW` always holds the password.
fn load(argv: &str, env: &[(&str, &str)], file: Option<&str>) -> Result<Config, Error> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (name, text) in [
        ("pw", format!("{PASSWORD}\n")),
        ("empty", "\n".into()),
        ("ca.pem", "ca".into()),
    ]
    .into_iter()
    .chain([("cert.pem", "c".into()), ("key.pem", "k".into())])
    .chain(file.map(|f| ("config.toml", f.replace("{dir}", &d))))
    {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("{dir}", &d)))
        .chain([("PW".to_string(), PASSWORD.to_string())])
        .collect();
    Config::load(flags(&argv.replace("{dir}", &d)).unwrap(), &|k| {
        map.get(k).cloned()
    })
}

/// Extra environment entries for one case.
type Env<'a> = &'a [(&'a str, &'a str)];

const BASE: &str = "--upstream cache.example.com:6379 --password-env PW";

#[test]
fn precedence_flags_env_file_defaults() {
    let file = "listen = \"127.0.0.1:7001\"\nmax-connections = 5\nlog-level = \"debug\"\nidle-timeout = \"1m\"";
    let env_cfg = ("ELASTICACHE_AUTH_PROXY_CONFIG", "{dir}/config.toml");
    let env_max = ("ELASTICACHE_AUTH_PROXY_MAX_CONNECTIONS", "6");
    let env_level = ("ELASTICACHE_AUTH_PROXY_LOG_LEVEL", "warn");
    #[rustfmt::skip]
    // Expected (listen, max-connections, log-level, idle-timeout secs).
    type Want<'a> = (&'a str, usize, &'a str, u64);
    let cases: &[(&str, Env, Option<&str>, Want)] = &[
        ("", &[], None, ("127.0.0.1:6379", 10_000, "info", 0)),
        (
            "--config {dir}/config.toml",
            &[],
            Some(file),
            ("127.0.0.1:7001", 5, "debug", 60),
        ),
        (
            "",
            &[env_cfg, env_max, env_level],
            Some(file),
            ("127.0.0.1:7001", 6, "warn", 60),
        ),
        (
            "--log-level trace --idle-timeout 2s",
            &[env_cfg, env_max, env_level],
            Some(file),
            ("127.0.0.1:7001", 6, "trace", 2),
        ),
        (
            "--listen [::1]:7002 --max-connections 0",
            &[env_max],
            None,
            ("[::1]:7002", 0, "info", 0),
        ),
    ];
    for (argv, env, file, want) in cases {
        let c =
            load(&format!("{BASE} {argv}"), env, *file).unwrap_or_else(|e| panic!("{argv}: {e}"));
        let got = (
            c.listen.to_string(),
            c.max_connections,
            c.log_level.as_str(),
            c.idle_timeout.as_secs(),
        );
        assert_eq!(
            got,
            (want.0.to_string(), want.1, want.2, want.3),
            "{argv} {env:?}"
        );
    }
}

#[test]
fn defaults_and_derived_values() {
    let c = load(BASE, &[], None).unwrap();
    assert_eq!(
        c.upstream,
        Upstream {
            host: "cache.example.com".into(),
            port: 6379
        }
    );
    let tls = c.tls.unwrap();
    assert_eq!(
        (tls.server_name.as_str(), tls.ca_file, tls.client_cert),
        ("cache.example.com", None, None)
    );
    assert_eq!(
        (c.unix_socket, c.unix_socket_mode, c.max_frame_size),
        (None, 0o660, 512 << 20)
    );
    assert_eq!(
        (c.connect_timeout, c.auth_timeout, c.drain_timeout),
        (
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(30)
        )
    );
    assert_eq!(
        (c.log_format, c.auth.mode, c.warnings.len()),
        (LogFormat::Text, AuthMode::Password, 0)
    );

    let c = load(
        "--upstream h:1 --password-file {dir}/pw --password-user app --no-tls --listen 0.0.0.0:1",
        &[],
        None,
    )
    .unwrap();
    let pw = c.auth.password.as_ref().unwrap();
    assert_eq!(
        (pw.secret.expose(), pw.user.as_deref()),
        (PASSWORD, Some("app"))
    );
    assert!(matches!(pw.source, PasswordSource::File(_)));
    assert!(c.tls.is_none());
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(!format!("{c:?}").contains(PASSWORD));

    let argv = "--upstream h:1 --password-env PW --tls-client-cert {dir}/cert.pem --tls-client-key {dir}/key.pem --tls-ca-file {dir}/ca.pem --tls-server-name n";
    let c = load(argv, &[], None).unwrap();
    let tls = c.tls.as_ref().unwrap();
    assert!(tls.client_cert.is_some() && tls.ca_file.is_some() && tls.server_name == "n");
    assert_eq!(c.auth.password.as_ref().unwrap().secret.expose(), PASSWORD);
    assert!(!format!("{c:?}").contains(PASSWORD));
}

#[test]
fn errors_name_the_setting_and_never_the_password() {
    let env = |k: &'static str, v: &'static str| -> [(&'static str, &'static str); 1] { [(k, v)] };
    let with_file = "--upstream h:1 --password-env PW --config {dir}/config.toml";
    #[rustfmt::skip]
    let cases: &[(&str, Env, Option<&str>, &[&str])] = &[
        ("--password-env PW", &[], None, &["--upstream", "ELASTICACHE_AUTH_PROXY_UPSTREAM", "`upstream`"]),
        ("--upstream h:1", &[], None, &["--password-env", "--password-file"]),
        ("--upstream h:1 --password-env PW --password-file {dir}/pw", &[], None, &["--password-env", "--password-file"]),
        ("--upstream h:1 --password-env NOPE", &[], None, &["--password-env", "NOPE"]),
        ("--upstream h:1 --password-file {dir}/empty", &[], None, &["--password-file", "empty"]),
        ("--upstream h:1 --password-file {dir}/missing", &[], None, &["--password-file", "missing"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_TLS_CLIENT_CERT", "{dir}/cert.pem"), None, &["--tls-client-cert", "--tls-client-key"]),
        (&format!("{BASE} --tls-client-key {{dir}}/key.pem"), &[], None, &["--tls-client-key", "requires", "--tls-client-cert"]),
        (&format!("{BASE} --no-tls --tls-server-name x"), &[], None, &["--no-tls", "--tls-server-name"]),
        (&format!("{BASE} --tls-ca-file {{dir}}/nope.pem"), &[], None, &["--tls-ca-file", "nope.pem"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_CONNECT_TIMEOUT", "5 parsecs"), None, &["ELASTICACHE_AUTH_PROXY_CONNECT_TIMEOUT", "--connect-timeout"]),
        (&format!("{BASE} --auth-timeout 0"), &[], None, &["--auth-timeout", "greater than 0"]),
        (with_file, &[], Some("drain-timeout = \"soon\""), &["key `drain-timeout`", "config.toml"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_MAX_FRAME_SIZE", "12 parsecs"), None, &["ELASTICACHE_AUTH_PROXY_MAX_FRAME_SIZE"]),
        (&format!("{BASE} --max-frame-size 1000"), &[], None, &["--max-frame-size", "1KiB"]),
        (with_file, &[], Some("max-frame-size = \"lots\""), &["max-frame-size"]),
        (with_file, &[], Some("colour = \"blue\""), &["colour", "config.toml"]),
        (with_file, &[], Some("# c\n\npassword = \"hunter2-do-not-print\""), &["line 3", "key `password`"]),
        (with_file, &[], Some("config = \"other.toml\""), &["--config", "remove the key"]),
        (&format!("{BASE} --config {{dir}}/absent.toml"), &[], None, &["--config", "absent.toml"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_UNIX_SOCKET_MODE", "0999"), None, &["ELASTICACHE_AUTH_PROXY_UNIX_SOCKET_MODE", "octal"]),
        (with_file, &[], Some("unix-socket-mode = 660"), &["unix-socket-mode"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_NO_TLS", "yes"), None, &["ELASTICACHE_AUTH_PROXY_NO_TLS"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_AUTH", "sso"), None, &["ELASTICACHE_AUTH_PROXY_AUTH", "iam-with-password-fallback"]),
        (BASE, &env("ELASTICACHE_AUTH_PROXY_LOG_LEVEL", "loud"), None, &["ELASTICACHE_AUTH_PROXY_LOG_LEVEL"]),
    ];
    for (argv, env, file, wants) in cases {
        let err = load(argv, env, *file).expect_err(argv).to_string();
        for want in *wants {
            assert!(err.contains(want), "{argv} {env:?}: {err:?} lacks {want:?}");
        }
        assert!(!err.contains(PASSWORD), "{err}");
    }
}

#[test]
fn flag_syntax() {
    let cases: &[(&str, Result<Option<bool>, &str>)] = &[
        ("--no-tls", Ok(Some(true))),
        ("--no-tls false", Ok(Some(false))),
        ("--no-tls=true", Ok(Some(true))),
        ("", Ok(None)),
        ("--no-tls maybe", Err("--no-tls")),
        ("--max-frame-size 1parsec", Err("--max-frame-size")),
        ("--upstream cache", Err("--upstream")),
        ("--auth sso", Err("--auth")),
        ("--colour blue", Err("--colour")),
    ];
    for (argv, want) in cases {
        match (flags(argv), want) {
            (Ok(a), Ok(no_tls)) => assert_eq!(a.no_tls, *no_tls, "{argv}"),
            (Err(e), Err(name)) => assert!(e.to_string().contains(name), "{argv}: {e}"),
            (got, _) => panic!("{argv}: unexpected {:?}", got.map(|a| a.no_tls)),
        }
    }
}

/// `# key = value` lines of the example, uncommented, as (key, line).
fn example_settings() -> Vec<(&'static str, &'static str)> {
    EXAMPLE
        .lines()
        .filter_map(|l| l.strip_prefix("# ").or(Some(l)))
        .filter_map(|l| Some((l.split_once(" = ")?.0, l)))
        .filter(|(k, _)| Args::KEYS.contains(k))
        .collect()
}

#[test]
fn example_parses_with_every_key_uncommented() {
    let text: Vec<_> = example_settings().into_iter().map(|(_, l)| l).collect();
    let args: Args = toml::from_str(&text.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert!(args.upstream.is_some() && args.no_tls.is_some() && args.max_frame_size.is_some());
    // The commented-out example is itself a valid (empty) file.
    toml::from_str::<Args>(EXAMPLE).unwrap();
}

#[test]
fn example_documents_every_key() {
    let documented: Vec<_> = example_settings().into_iter().map(|(k, _)| k).collect();
    for key in Args::KEYS {
        assert_eq!(
            documented.iter().filter(|k| *k == key).count(),
            1,
            "{key} in example.toml"
        );
    }
    assert_eq!(Args::KEYS.len(), 37);
    assert!(Args::KEYS.contains(&"tls-client-cert") && Args::KEYS.contains(&"no-tls"));
}

#[test]
fn auth_mode_follows_what_is_configured() {
    let env = |k: &str| (k == "PW").then(|| "pw".to_string());
    let load = |args: &[&str]| {
        let mut all = vec!["proxy", "--upstream", "cache.example.com:6379"];
        all.extend_from_slice(args);
        Config::load(Cli::try_parse_from(all).unwrap().args, &env)
    };
    let cases: &[(&[&str], Result<AuthMode, &str>)] = &[
        (&["--password-env", "PW"], Ok(AuthMode::Password)),
        (
            &["--iam-user", "App", "--cache-name", "C"],
            Ok(AuthMode::Iam),
        ),
        (
            &[
                "--iam-user",
                "a",
                "--cache-name",
                "c",
                "--password-env",
                "PW",
            ],
            Ok(AuthMode::IamWithPasswordFallback),
        ),
        (&["--auth", "iam", "--cache-name", "c"], Err("--iam-user")),
        (&["--auth", "iam", "--iam-user", "a"], Err("--cache-name")),
        (
            &[
                "--auth",
                "iam-with-password-fallback",
                "--iam-user",
                "a",
                "--cache-name",
                "c",
            ],
            Err("password"),
        ),
    ];
    for (args, want) in cases {
        match (load(args), want) {
            (Ok(cfg), Ok(mode)) => assert_eq!(cfg.auth.mode, *mode, "{args:?}"),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{args:?}: {e}"),
            (got, want) => panic!("{args:?}: got {got:?}, want {want:?}"),
        }
    }
    // Names are lowercased as ElastiCache validates them.
    let cfg = load(&[
        "--iam-user",
        "App-User",
        "--cache-name",
        "My-Cache",
        "--serverless",
    ])
    .unwrap();
    let iam = cfg.auth.iam.unwrap();
    assert_eq!(
        (iam.user.as_str(), iam.cache_name.as_str(), iam.serverless),
        ("app-user", "my-cache", true)
    );
}

#[test]
fn reauth_after_defaults_below_the_session_age() {
    let env = |k: &str| (k == "PW").then(|| "pw".to_string());
    let load = |args: &[&str]| {
        let mut all = vec![
            "proxy",
            "--upstream",
            "c.example.com:6379",
            "--password-env",
            "PW",
        ];
        all.extend_from_slice(args);
        Config::load(Cli::try_parse_from(all).unwrap().args, &env)
    };
    let cfg = load(&[]).unwrap();
    assert_eq!(
        (cfg.max_session_age.as_secs(), cfg.reauth_after.as_secs()),
        (12 * 3600, 11 * 3600)
    );
    let cfg = load(&["--max-session-age", "12s"]).unwrap();
    assert_eq!(cfg.reauth_after, Duration::from_secs(11));
    let err = load(&["--max-session-age", "4s", "--reauth-after", "4s"]).unwrap_err();
    assert!(err.to_string().contains("--reauth-after"), "{err}");
}

#[test]
fn log_colour_only_on_a_terminal_without_no_color() {
    let cases: &[(bool, Option<&str>, bool)] = &[
        (true, None, true),
        (true, Some(""), true),
        (true, Some("1"), false),
        (true, Some("0"), false),
        (true, Some("false"), false),
        (false, None, false),
        (false, Some(""), false),
        (false, Some("1"), false),
    ];
    for &(terminal, no_color, want) in cases {
        let env = |k: &str| {
            (k == "NO_COLOR")
                .then(|| no_color.map(String::from))
                .flatten()
        };
        assert_eq!(log_colour(terminal, &env), want, "{terminal} {no_color:?}");
    }
}

#[test]
fn file_errors_name_the_line_and_key_and_show_the_fix() {
    let with_file = "--upstream h:1 --password-env PW --config {dir}/config.toml";
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        // Bare words where a string belongs: toml's "invalid float" and
        // "string values must be quoted" become the quoted line.
        ("listen = 127.0.0.1:7000", "line 1: the value of `listen` must be quoted: listen = \"127.0.0.1:7000\""),
        ("auth = iam", "line 1: the value of `auth` must be quoted: auth = \"iam\""),
        ("\n\nregion = us-east-1   # prod", "line 3: the value of `region` must be quoted: region = \"us-east-1\""),
        ("tls-ca-file = C:\\certs\\ca.pem", "the value of `tls-ca-file` must be quoted: tls-ca-file = \"C:\\\\certs\\\\ca.pem\""),
        ("max-frame-size = 64KiB", "max-frame-size = \"64KiB\""),
        // Valid TOML of the wrong type.
        ("upstream = 6379", "line 1: the value of `upstream` must be quoted: upstream = \"6379\""),
        ("idle-timeout = 30", "idle-timeout = \"30\""),
        ("max-connections = \"500\"", "line 1: `max-connections` takes a whole number without quotes: max-connections = 500"),
        ("no-tls = \"true\"", "line 1: `no-tls` takes true or false without quotes: no-tls = true"),
        ("no-tls = yes", "line 1: `no-tls` takes true or false without quotes, such as no-tls = true"),
        ("max-connections = 10k", "line 1: `max-connections` takes a whole number without quotes, such as max-connections = 500"),
        // A quote left open.
        ("upstream = \"h:1", "line 1: the value of `upstream` has no closing quote: upstream = \"h:1\""),
        // Other errors stay located and worded.
        ("drain-timeout = \"soon\"", "line 1, key `drain-timeout`: "),
        ("upstream", "line 1: "),
        ("upstream = \"h:1\"\n[tls]\nca-file = \"x\"", "line 2: the file has no tables such as `[tls]`"),
    ];
    for (file, want) in cases {
        let err = load(with_file, &[], Some(file))
            .expect_err(file)
            .to_string();
        assert!(err.contains(want), "{file}: {err:?} lacks {want:?}");
        for raw in [
            "invalid float",
            "expected nothing",
            "literal string",
            "invalid type",
        ] {
            assert!(!err.contains(raw), "{file}: {err}");
        }
    }
}

#[test]
fn file_errors_never_show_the_value_of_an_unknown_key() {
    let with_file = "--upstream h:1 --password-env PW --config {dir}/config.toml";
    let cases = [
        format!("pasword = {PASSWORD}"),
        format!("pasword = \"{PASSWORD}"),
        format!("pasword = \"{PASSWORD}\""),
        format!("pasword = 1{PASSWORD}"),
    ];
    for file in &cases {
        let err = load(with_file, &[], Some(file))
            .expect_err(file)
            .to_string();
        assert!(err.contains("line 1") && err.contains("`pasword`"), "{err}");
        assert!(err.contains("keys are the flag names"), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
    }
}

#[test]
fn value_kinds_match_what_each_key_deserializes() {
    for key in Args::KEYS {
        let parses = |value: &str| toml::from_str::<Args>(&format!("{key} = {value}")).is_ok();
        match value_kind(key) {
            ValueKind::Bool => assert!(parses("true"), "{key}"),
            ValueKind::Integer => assert!(parses("5") && !parses("\"5\""), "{key}"),
            // Only max-frame-size also takes a bare integer (a byte count).
            ValueKind::String => {
                assert!(!parses("true"), "{key} takes a bool");
                assert_eq!(parses("2048"), *key == "max-frame-size", "{key}");
            }
        }
    }
}

/// The start banner: one line per topic, what the proxy will do, and
/// never the password (only where it was read from).
#[test]
fn banner_says_mode_identity_upstream_listeners_and_admin() {
    let cfg = load(
        "--upstream clustercfg.c.example:6379 --cluster --cluster-ports 7000-7009 \
         --iam-user app-iam --cache-name orders --region eu-west-1 \
         --password-user legacy --password-env PW --unix-socket {dir}/s.sock",
        &[],
        None,
    )
    .unwrap();
    let banner = cfg.banner();
    let topics: Vec<&str> = banner.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        topics,
        [
            "mode",
            "identity",
            "credentials",
            "upstream",
            "listeners",
            "admin"
        ]
    );
    let line = |topic: &str| &banner.iter().find(|(t, _)| *t == topic).unwrap().1;
    assert!(line("mode").starts_with("iam-with-password-fallback (IAM first"));
    assert!(line("mode").ends_with("in cluster mode"));
    assert_eq!(
        line("identity"),
        "IAM user app-iam for cache orders (region eu-west-1, service elasticache); \
         password user legacy, password from $PW"
    );
    assert!(line("credentials").contains("default chain"));
    assert_eq!(
        line("upstream"),
        "clustercfg.c.example:6379 (configuration endpoint: the seed), TLS, certificate verified as clustercfg.c.example"
    );
    assert!(line("listeners").starts_with("127.0.0.1:6379 (plain RESP); unix socket "));
    assert!(line("listeners").ends_with("; one per cluster node on ports 7000-7009 of 127.0.0.1"));
    assert!(line("admin").starts_with("http://127.0.0.1:9090 (/metrics"));
    assert!(!format!("{banner:?}").contains(PASSWORD));

    let cfg = load("--upstream h:6379 --password-env PW --no-tls", &[], None).unwrap();
    let banner = cfg.banner();
    assert_eq!(banner[0].1, "password (password only)");
    assert_eq!(
        banner[1].1,
        "legacy AUTH <password> (user default), password from $PW"
    );
    assert!(banner.iter().all(|(t, _)| *t != "credentials"));
    assert!(banner[2].1.contains("PLAINTEXT"), "{banner:?}");
}

/// Two routes in one file: the top level (and the flags) describe the default
/// route, each `[[route]]` its own upstream and identity over the top level's
/// shared settings.
#[test]
fn routes_take_their_own_upstream_and_identity_and_the_shared_settings() {
    let file = r#"
upstream = "primary.example.com:6379"
password-user = "app"
password-env = "PW"
max-connections = 7
idle-timeout = "1m"

[[route]]
name = "reader"
listen = "127.0.0.1:6380"
upstream = "reader.example.com:6380"
iam-user = "reader-iam"
cache-name = "Orders"
serverless = true
"#;
    let cfg = load(
        "--config {dir}/config.toml --listen 127.0.0.1:7000",
        &[],
        Some(file),
    )
    .unwrap();
    assert_eq!(cfg.route.as_deref(), Some(DEFAULT_ROUTE));
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(cfg.upstream.host, "primary.example.com");
    assert_eq!(cfg.routes.len(), 1);
    let reader = &cfg.routes[0];
    assert_eq!(reader.route.as_deref(), Some("reader"));
    assert!(reader.routes.is_empty());
    assert_eq!(reader.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(reader.upstream.host, "reader.example.com");
    // Its own identity only: IAM, never the default route's password user.
    assert_eq!(reader.auth.mode, AuthMode::Iam);
    assert!(reader.auth.password.is_none());
    let iam = reader.auth.iam.as_ref().unwrap();
    assert_eq!(
        (iam.user.as_str(), iam.cache_name.as_str()),
        ("reader-iam", "orders")
    );
    assert!(iam.serverless);
    // The TLS server name follows its own upstream.
    assert_eq!(
        reader.tls.as_ref().unwrap().server_name,
        "reader.example.com"
    );
    // Shared settings come from the top level.
    assert_eq!(
        (reader.max_connections, reader.idle_timeout.as_secs()),
        (7, 60)
    );
    assert_eq!(reader.admin_listen, cfg.admin_listen);
    let names: Vec<_> = cfg.all_routes().map(|c| c.route.as_deref()).collect();
    assert_eq!(names, [Some("default"), Some("reader")]);

    // Without [[route]] nothing is labelled.
    let cfg = load(
        "--config {dir}/config.toml",
        &[],
        Some("upstream = \"h:1\"\npassword-env = \"PW\""),
    )
    .unwrap();
    assert_eq!((cfg.route, cfg.routes.len()), (None, 0));
}

#[test]
fn route_errors_name_the_route_and_the_key() {
    let with_file = "--config {dir}/config.toml";
    let top = "upstream = \"h:1\"\npassword-env = \"PW\"\nlisten = \"127.0.0.1:6379\"\n";
    let route = |name: &str, listen: &str| {
        format!("\n[[route]]\nname = \"{name}\"\nlisten = \"{listen}\"\nupstream = \"r:1\"\npassword-env = \"PW\"\n")
    };
    #[rustfmt::skip]
    let cases: Vec<(String, &[&str])> = vec![
        (route("reader", "127.0.0.1:6379"), &["route `reader`", "listen 127.0.0.1:6379 is also the default route's listen"]),
        (route("a", "127.0.0.1:6380") + &route("b", "127.0.0.1:6380"), &["route `b`", "listen 127.0.0.1:6380 is also route `a`'s listen"]),
        (route("a", "127.0.0.1:6380") + &route("a", "127.0.0.1:6381"), &["route `a`", "another route's"]),
        (route("default", "127.0.0.1:6380"), &["route `default`", "top-level"]),
        (route("reader", "127.0.0.1:6380") + "max-connections = 5\n", &["route `reader`", "key `max-connections` is shared by every route", "top level"]),
        (route("reader", "127.0.0.1:6380") + "colour = \"blue\"\n", &["route `reader`", "key `colour`: no such setting"]),
        (route("reader", "127.0.0.1:6380") + "config = \"x.toml\"\n", &["route `reader`", "key `config` is shared"]),
        ("\n[[route]]\nname = \"reader\"\nupstream = \"r:1\"\npassword-env = \"PW\"\n".into(), &["route `reader`", "set `listen`"]),
        ("\n[[route]]\nlisten = \"127.0.0.1:6380\"\n".into(), &["route 1 has no `name`"]),
        (route("read er", "127.0.0.1:6380"), &["`name` of route 1"]),
        // The route's own settings are resolved like the top level's, and
        // never borrow the default route's upstream or password.
        ("\n[[route]]\nname = \"reader\"\nlisten = \"127.0.0.1:6380\"\npassword-env = \"PW\"\n".into(), &["route `reader`: key `upstream` is required"]),
        ("\n[[route]]\nname = \"reader\"\nlisten = \"127.0.0.1:6380\"\nupstream = \"r:1\"\n".into(), &["route `reader`", "set one of key `password-env` or key `password-file`"]),
        ("\n[[route]]\nname = \"reader\"\nlisten = \"127.0.0.1:6380\"\nupstream = \"r:1\"\npassword-env = \"NOPE\"\n".into(), &["route `reader`", "NOPE"]),
        (route("reader", "nowhere"), &["route `reader`", "key `listen`"]),
        (format!("cluster = true\ncluster-ports = \"7000-7009\"\n{}cluster = true\ncluster-ports = \"7009-7019\"\n", route("reader", "127.0.0.1:6380")), &["route `reader`", "cluster-ports 7009-7019 overlap the default route's cluster-ports 7000-7009"]),
        ("\n[tls]\nca-file = \"x\"\n".to_string() + &route("reader", "127.0.0.1:6380"), &["no tables such as `[tls]`"]),
    ];
    for (routes, wants) in &cases {
        let file = format!("{top}{routes}");
        let err = load(with_file, &[], Some(&file))
            .expect_err(&file)
            .to_string();
        for want in *wants {
            assert!(err.contains(want), "{file}: {err:?} lacks {want:?}");
        }
        assert!(!err.contains(PASSWORD), "{err}");
        // A flag or variable sets only the default route: never the fix.
        assert!(!err.contains(ENV_PREFIX) && !err.contains(" --"), "{err}");
    }
    // Top-level errors of a file with routes keep their line.
    let file = format!(
        "listen = 127.0.0.1:7000\n{}",
        route("reader", "127.0.0.1:6380")
    );
    let err = load(with_file, &[], Some(&file)).unwrap_err().to_string();
    assert!(
        err.contains("line 1: the value of `listen` must be quoted"),
        "{err}"
    );
    // Port 0 is a fresh port for each bind, so it may repeat.
    let file = format!(
        "{}{}",
        top.replace("6379", "0"),
        route("reader", "127.0.0.1:0")
    );
    assert_eq!(load(with_file, &[], Some(&file)).unwrap().routes.len(), 1);
}

#[test]
fn route_keys_are_settings() {
    for key in ROUTE_KEYS {
        assert!(Args::KEYS.contains(key), "{key}");
    }
}

/// The commented `[[route]]` block of the example (its `#   ` lines) is a
/// route the real loader accepts.
#[test]
fn example_route_block_loads() {
    let block: Vec<_> = EXAMPLE
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .collect();
    assert_eq!(block.first(), Some(&"[[route]]"), "{block:?}");
    let file = format!(
        "upstream = \"h:1\"\npassword-env = \"PW\"\n{}",
        block.join("\n")
    );
    let cfg = load("--config {dir}/config.toml", &[], Some(&file)).unwrap();
    let reader = &cfg.routes[0];
    assert_eq!(reader.route.as_deref(), Some("reader"));
    assert!(reader.auth.iam.as_ref().is_some_and(|i| i.serverless));
    assert_eq!(reader.auth.mode, AuthMode::Iam);
}

/// `--pool-reuse` follows the pool unless set, reads `on`/`off` from a flag,
/// the environment and the file alike, and is refused without a pool.
#[test]
fn pool_reuse_defaults_to_the_pool_and_is_read_from_every_layer() {
    let base = "--upstream cache.example.com:6379 --password-env PW";
    let reuse = |argv: &str, env: &[(&str, &str)], file: Option<&str>| {
        load(&format!("{base} {argv}"), env, file).map(|c| c.pool_reuse)
    };
    assert!(reuse("", &[], None).unwrap(), "on with the default pool");
    assert!(
        !reuse("--pool-size 0", &[], None).unwrap(),
        "no pool, no reuse"
    );
    assert!(reuse("--pool-size 4", &[], None).unwrap(), "on with a pool");
    assert!(!reuse("--pool-size 4 --pool-reuse off", &[], None).unwrap());
    let env = [("ELASTICACHE_AUTH_PROXY_POOL_REUSE", "off")];
    assert!(!reuse("--pool-size 4", &env, None).unwrap());
    let file = "pool-size = 4\npool-reuse = \"off\"\n";
    assert!(!reuse("--config {dir}/config.toml", &[], Some(file)).unwrap());
    // The flag wins over the file.
    assert!(reuse(
        "--config {dir}/config.toml --pool-reuse on",
        &[],
        Some(file)
    )
    .unwrap());
    let err = reuse("--pool-size 0 --pool-reuse on", &[], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--pool-size"), "{err}");
    assert!(flags(&format!("{base} --pool-size 4 --pool-reuse maybe")).is_err());
}
