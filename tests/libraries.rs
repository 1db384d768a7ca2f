//! Real client libraries (redis-py sync and asyncio, ioredis, node-redis)
//! through the proxy, each beside raw sockets and compared with talking to
//! redis-server directly, for how failures reach an app (issue 9):
//! - item 1: when the proxy cannot serve (upstream unreachable, AUTH
//!   rejected), the app's first real command fails with the proxy's error,
//!   not with a broken pipe or a closed connection;
//! - item 2: when the server closes a connection that owes nothing
//!   (CLIENT KILL), the app sees what it sees direct: a plain EOF.
//!
//! The libraries are installed project-locally by scripts/deps.sh; the
//! scripts that drive them are in tests/clients/ (common::clients runs them).

mod common;

use common::{text, Endpoint, Library, Proxy, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::error::Kind;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

/// How long a raw client waits to be sure the proxy sends nothing unasked.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

/// redis-py's modes, each with its retries pinned. Retries would only repeat
/// the same failure for item 1, so there they are off.
const PY_SYNC: &[&str] = &["--retries", "0"];
const PY_ASYNC: &[&str] = &["--asyncio", "--retries", "0"];

// ---- harness ----

/// Why a proxy cannot serve its clients.
#[derive(Clone, Copy, Debug)]
enum Broken {
    /// Nothing listens at the upstream address.
    Unreachable,
    /// The upstream refuses the proxy's password.
    WrongPassword,
}

/// A proxy in front of `redis` that fails the way `broken` says, and the
/// kind of error it must report.
async fn broken_proxy(redis: &RedisServer, broken: Broken) -> (Proxy, Kind) {
    let mut args = Proxy::args(redis);
    match broken {
        Broken::Unreachable => {
            let port = common::free_port();
            args.upstream = Some(format!("127.0.0.1:{port}").parse().unwrap());
            (
                Proxy::start_with(args, "app-secret-pw").await,
                Kind::Connect,
            )
        }
        Broken::WrongPassword => (Proxy::start_with(args, "wrong").await, Kind::AuthRejected),
    }
}

/// The error class each library gives a server's `-ERR` reply.
fn reply_error_class(lib: Library) -> &'static str {
    match lib {
        Library::RedisPy => "ResponseError",
        Library::Ioredis => "ReplyError",
        // node-redis 5's ErrorReply subclass for a `-` simple error.
        Library::NodeRedis => "SimpleError",
    }
}

/// `None` if `result` (`{"reply"}` or `{"error"}` from a script) is the
/// library's reply error carrying the proxy's message for `kind`, else why
/// not.
fn not_proxy_error(lib: Library, result: &Value, kind: Kind) -> Option<String> {
    let want = kind.client_message();
    let class = &result["error"]["class"];
    // redis-py includes the base classes, so a subclass would do too.
    let classes = result["error"]["mro"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_reply_error =
        *class == json!(reply_error_class(lib)) || classes.contains(&json!(reply_error_class(lib)));
    let message = result["error"]["message"].as_str().unwrap_or_default();
    // redis-py drops the `ERR ` code from the message; the others keep it.
    let same_text = message.starts_with(want)
        || message.starts_with(want.strip_prefix("ERR ").expect("proxy errors are ERR"));
    if is_reply_error && same_text {
        None
    } else {
        Some(format!(
            "wanted {} with {want:?}, got {result}",
            reply_error_class(lib)
        ))
    }
}

/// Item 1 for `lib`: in each of `modes` (script flags), the library connects
/// to a proxy broken as `broken` and runs `GET k`; that command must fail
/// with the proxy's error. All modes run before the test fails, so the
/// message shows each.
async fn first_command_gets_proxy_error(lib: Library, modes: &[&[&str]], broken: Broken) {
    let redis = RedisServer::start(RedisOptions::default());
    let (proxy, kind) = broken_proxy(&redis, broken).await;
    let mut failures = Vec::new();
    for flags in modes {
        let run = lib
            .run(
                flags,
                &Endpoint::proxy(proxy.addr),
                "command",
                &["GET", "k"],
            )
            .await;
        if let Some(why) = not_proxy_error(lib, &run.json["result"], kind) {
            failures.push(format!(
                "{lib:?} {flags:?}: {why}\n  whole report: {}\n  stderr: {}",
                run.json,
                run.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{broken:?}: the app's first command must fail with the proxy's error:\n{}",
        failures.join("\n")
    );
}

/// What a library does after a server-side kill, per mode: script flags,
/// and the outcome direct (as `by_class` renders it).
type KillModes = Vec<(&'static [&'static str], Value)>;

/// Item 2 for `lib`: in each of `modes`, the library runs `GET k`, its
/// connection is killed by CLIENT KILL ID while nothing is owed, and it runs
/// `GET k` again, once direct over TLS and once at `other`. Direct must do
/// what the table says (so a change in the library shows), and `other` the
/// same as direct: same reply or same error class, same error events, and
/// no "Command queue state error" in the log. All modes run before the test
/// fails, so the message shows each.
async fn kill_looks_as_direct(
    lib: Library,
    modes: &KillModes,
    redis: &RedisServer,
    other: &Endpoint,
) {
    let mut failures = Vec::new();
    for (flags, want_direct) in modes {
        let direct = lib
            .run(flags, &Endpoint::direct(redis), "kill", &["GET", "k"])
            .await;
        let via = lib.run(flags, other, "kill", &["GET", "k"]).await;
        for (side, run) in [("direct", &direct), ("other", &via)] {
            let setup = (&run.json["before"], &run.json["killed"]);
            assert_eq!(
                setup,
                (&null_reply(), &json!({"reply": 1})),
                "{lib:?} {flags:?} {side}: the first GET or the kill went wrong: {}",
                run.json
            );
        }
        // What the app sees after the kill: the command's outcome and every
        // error the library reported on the side (events, uncaught throws).
        let seen = |run: &common::Run| {
            json!({
                "after": run.json["after"],
                "events": run.json["events"],
                "uncaught": run.json["uncaught"],
            })
        };
        assert_eq!(
            by_class(&seen(&direct)),
            *want_direct,
            "{lib:?} {flags:?}: direct no longer does what this test pins \
             (re-check the library version): {}\n  stderr: {}",
            seen(&direct),
            direct.stderr
        );
        if by_class(&seen(&via)) != by_class(&seen(&direct)) {
            failures.push(format!(
                "{lib:?} {flags:?}:\n  direct: {}\n  port {}: {}\n  its stderr: {}",
                seen(&direct),
                other.port,
                seen(&via),
                via.stderr.trim()
            ));
        }
        // ioredis logs this (without an error listener) when a reply comes
        // with no command waiting for it.
        for (side, run) in [("direct", &direct), ("other", &via)] {
            if run.stderr.contains("Command queue state error") {
                failures.push(format!(
                    "{lib:?} {flags:?} {side} logged: {}",
                    run.stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "after a server-side kill with nothing owed, the app must see what it sees direct:\n{}",
        failures.join("\n")
    );
}

/// Item 2 through a proxy in front of a fresh redis.
async fn server_kill_looks_as_direct(lib: Library, modes: KillModes) {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    kill_looks_as_direct(lib, &modes, &redis, &Endpoint::proxy(proxy.addr)).await;
}

fn redis_py_kill_modes() -> KillModes {
    let after_retry = json!({"after": null_reply(), "events": null, "uncaught": null});
    let raised = json!({"after": raised("ConnectionError"), "events": null, "uncaught": null});
    vec![
        // The default client: the pool notices the closed socket when it
        // hands the connection out, and reconnects.
        (&["--retries", "3"], after_retry.clone()),
        // One connection, no retries: the close surfaces as ConnectionError,
        // which app reconnect logic catches.
        (&["--single-connection", "--retries", "0"], raised),
        // One connection with retries: ConnectionError is retried on a fresh
        // connection, so the command succeeds.
        (&["--single-connection", "--retries", "3"], after_retry),
    ]
}

fn redis_py_asyncio_kill_modes() -> KillModes {
    let after_retry = json!({"after": null_reply(), "events": null, "uncaught": null});
    let raised = json!({"after": raised("ConnectionError"), "events": null, "uncaught": null});
    vec![
        // As sync: the pool reconnects a connection it finds closed, retries
        // or not; a single connection without retries raises ConnectionError.
        (&["--asyncio", "--retries", "3"], after_retry.clone()),
        (&["--asyncio", "--retries", "0"], after_retry),
        (
            &["--asyncio", "--single-connection", "--retries", "0"],
            raised,
        ),
    ]
}

fn ioredis_kill_modes() -> KillModes {
    // ioredis reconnects on its own and runs the command; direct it reports
    // no error event at all.
    vec![(
        &[],
        json!({"after": null_reply(), "events": [], "uncaught": null}),
    )]
}

fn node_redis_kill_modes() -> KillModes {
    // node-redis reports the close as an error event, reconnects, and runs
    // the command.
    let closed = json!({"class": "SocketClosedUnexpectedlyError"});
    vec![(
        &[],
        json!({"after": null_reply(), "events": [closed], "uncaught": []}),
    )]
}

/// What an app can act on in a script's report: replies as they are, errors
/// by class alone. Messages are left out because the transport words them:
/// redis-py asyncio says "Connection lost." writing to a closed TLS
/// connection (direct) and "Connection closed by server." reading a closed
/// TCP one (the proxy's plain listener), for the same ConnectionError.
fn by_class(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("class") => json!({"class": m["class"]}),
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), by_class(v))).collect(),
        Value::Array(items) => items.iter().map(by_class).collect(),
        other => other.clone(),
    }
}

/// A command that succeeded with a null reply (`GET` of a missing key).
fn null_reply() -> Value {
    json!({"reply": null})
}

/// A command that raised `class`, as `by_class` renders it.
fn raised(class: &str) -> Value {
    json!({"error": {"class": class}})
}

/// A raw TLS connection straight to `redis`, authenticated as `app`.
async fn direct_raw(
    redis: &RedisServer,
) -> Resp<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = common::tls_connect(&redis.tls_connector(), redis.tls_port)
        .await
        .expect("TLS to redis");
    let mut c = Resp::over(tls);
    let auth = c.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await;
    assert_eq!(text(&auth), "+OK");
    c
}

/// Kills the upstream connection whose CLIENT ID is `id`, from a direct
/// connection of its own.
async fn kill(redis: &RedisServer, id: &str) {
    let mut admin = direct_raw(redis).await;
    let reply = admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]).await;
    assert_eq!(text(&reply), ":1", "CLIENT KILL ID {id}");
}

// ---- the libraries work at all, direct and through a healthy proxy ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_library_round_trips_direct_and_through_the_proxy() {
    // Without this, a failure below could be the harness's, not the proxy's.
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let cases: [(Library, &[&str]); 4] = [
        (Library::RedisPy, PY_SYNC),
        (Library::RedisPy, PY_ASYNC),
        (Library::Ioredis, &[]),
        (Library::NodeRedis, &[]),
    ];
    for (lib, flags) in cases {
        for endpoint in [Endpoint::direct(&redis), Endpoint::proxy(proxy.addr)] {
            let run = lib.run(flags, &endpoint, "command", &["ECHO", "hi"]).await;
            assert_eq!(
                run.json["result"],
                json!({"reply": "hi"}),
                "{lib:?} {flags:?} at port {}: {}\n{}",
                endpoint.port,
                run.json,
                run.stderr
            );
        }
    }
}

// ---- item 1: the proxy's own error reaches the app's first real command ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_first_command_gets_unreachable_upstream_error() {
    first_command_gets_proxy_error(Library::RedisPy, &[PY_SYNC, PY_ASYNC], Broken::Unreachable)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_first_command_gets_rejected_auth_error() {
    first_command_gets_proxy_error(
        Library::RedisPy,
        &[PY_SYNC, PY_ASYNC],
        Broken::WrongPassword,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_first_command_gets_unreachable_upstream_error() {
    first_command_gets_proxy_error(Library::Ioredis, &[&[]], Broken::Unreachable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_first_command_gets_rejected_auth_error() {
    first_command_gets_proxy_error(Library::Ioredis, &[&[]], Broken::WrongPassword).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_first_command_gets_unreachable_upstream_error() {
    first_command_gets_proxy_error(Library::NodeRedis, &[&[]], Broken::Unreachable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_first_command_gets_rejected_auth_error() {
    first_command_gets_proxy_error(Library::NodeRedis, &[&[]], Broken::WrongPassword).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_gets_the_proxy_error_in_reply_to_each_command() {
    // What the libraries above do on the wire: a handshake command whose
    // error they ignore, then the app's command. Each gets the error in its
    // turn, and nothing comes before the first command (that would be read
    // as the handshake's reply, which is how the app's error got lost).
    let redis = RedisServer::start(RedisOptions::default());
    for broken in [Broken::Unreachable, Broken::WrongPassword] {
        let (proxy, kind) = broken_proxy(&redis, broken).await;
        let mut c = Resp::connect(proxy.addr).await;
        let mut early = [0u8; 256];
        match tokio::time::timeout(QUIET, c.stream().read(&mut early)).await {
            Err(_) => {} // quiet until asked: right
            Ok(Ok(n)) => panic!(
                "{broken:?}: the proxy sent {:?} before any command",
                String::from_utf8_lossy(&early[..n])
            ),
            Ok(Err(e)) => panic!("{broken:?}: read before any command failed: {e}"),
        }
        // The fixed line, with a hint of which method failed how.
        let want = format!("-{}", kind.client_message());
        let setinfo = text(&c.cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"raw"]).await);
        assert!(
            setinfo.starts_with(&want),
            "{broken:?}: handshake reply {setinfo}"
        );
        let ping = c.cmd(&[b"PING"]).await;
        assert_eq!(text(&ping), setinfo, "{broken:?}: the app's command");
    }
}

// ---- item 2: an upstream close with nothing owed is a plain EOF ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_comparison_holds_between_tls_and_plain_direct() {
    // The item 2 tests compare TLS direct with the proxy's plain listener.
    // Here both sides are redis itself (TLS port, plain port), so any
    // difference would be the transport's or the harness's, not the proxy's:
    // this must pass for the comparison to mean anything.
    let redis = RedisServer::start(RedisOptions {
        plain_port: true,
        ..Default::default()
    });
    let plain = Endpoint {
        tls_ca: None,
        port: redis.plain_port.expect("plain port asked for"),
        ..Endpoint::direct(&redis)
    };
    let tables = [
        (Library::RedisPy, redis_py_kill_modes()),
        (Library::RedisPy, redis_py_asyncio_kill_modes()),
        (Library::Ioredis, ioredis_kill_modes()),
        (Library::NodeRedis, node_redis_kill_modes()),
    ];
    for (lib, modes) in tables {
        kill_looks_as_direct(lib, &modes, &redis, &plain).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_sees_a_server_kill_as_direct() {
    server_kill_looks_as_direct(Library::RedisPy, redis_py_kill_modes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_asyncio_sees_a_server_kill_as_direct() {
    server_kill_looks_as_direct(Library::RedisPy, redis_py_asyncio_kill_modes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_reconnects_after_a_server_kill_as_direct() {
    server_kill_looks_as_direct(Library::Ioredis, ioredis_kill_modes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_reconnects_after_a_server_kill_as_direct() {
    server_kill_looks_as_direct(Library::NodeRedis, node_redis_kill_modes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_connection_killed_by_the_server_reads_eof_with_no_bytes() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;

    let mut direct = direct_raw(&redis).await;
    let id = text(&direct.cmd(&[b"CLIENT", b"ID"]).await);
    kill(&redis, id.trim_start_matches(':')).await;
    let direct_bytes = direct.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&direct_bytes), "", "direct");

    let mut via = Resp::connect(proxy.addr).await;
    assert_eq!(text(&via.cmd(&[b"PING"]).await), "+PONG");
    // Through the proxy CLIENT ID names the proxy's upstream connection.
    let id = text(&via.cmd(&[b"CLIENT", b"ID"]).await);
    kill(&redis, id.trim_start_matches(':')).await;
    let proxy_bytes = via.read_until_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&proxy_bytes),
        String::from_utf8_lossy(&direct_bytes),
        "through the proxy, as direct: EOF with nothing before it"
    );
}
