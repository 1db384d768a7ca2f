//! Stateful Redis features through the proxy (invariants 1–2): transactions,
//! databases, pub/sub, blocking commands, MONITOR, client tracking, CLIENT
//! REPLY, HELLO, RESET, QUIT, inline and binary commands, a 100 MB value.
//! Each test asserts what a client would see: exact replies, in order.

mod common;

use std::time::{Duration, Instant};

use common::{encode_command, text, Proxy, RedisOptions, RedisServer, Resp};
use redis_protocol::resp3::types::OwnedFrame;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Poll interval for conditions another connection brings about.
const POLL: Duration = Duration::from_millis(5);
/// How long a poll may take before the test fails.
const POLL_DEADLINE: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for. A negative check has to wait.
const QUIET: Duration = Duration::from_millis(150);

async fn start() -> (RedisServer, Proxy) {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    (redis, proxy)
}

/// Splits a command line on spaces (no quoting: tests that need spaces or
/// binary arguments build the arguments themselves).
fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

/// Sends one command written as a line and returns the rendered reply.
async fn run(c: &mut Resp, line: &str) -> String {
    text(&c.cmd(&words(line)).await)
}

/// Several commands in one write.
fn batch(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|line| encode_command(&words(line)))
        .collect()
}

/// Reads one frame per expected rendering and compares each in order.
async fn expect(c: &mut Resp, want: &[&str]) {
    for (i, want) in want.iter().enumerate() {
        assert_eq!(text(&c.read().await), *want, "reply #{i}");
    }
}

/// Asserts no frame arrives within `QUIET` (bytes that do arrive stay
/// buffered and fail the next `expect`).
async fn expect_quiet(c: &mut Resp) {
    if let Ok(frame) = tokio::time::timeout(QUIET, c.read()).await {
        panic!("unexpected reply: {}", text(&frame));
    }
}

/// Polls `INFO clients` until `blocked_clients` is `n`.
async fn wait_blocked(control: &mut Resp, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let info = text(&control.cmd(&words("INFO clients")).await);
        if info.contains(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {want:?} in {info}");
        tokio::time::sleep(POLL).await;
    }
}

/// The fields of `CLIENT INFO` that RESET restores, e.g. `db=0 resp=2`.
async fn client_state(c: &mut Resp) -> String {
    let info = text(&c.cmd(&words("CLIENT INFO")).await);
    let keep = [
        "flags=", "db=", "sub=", "psub=", "ssub=", "multi=", "user=", "resp=",
    ];
    info.trim_start_matches('$')
        .split_whitespace()
        .filter(|f| keep.iter().any(|k| f.starts_with(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The state every RESET must leave behind, whatever came before it.
const CLEAN: &str = "flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 user=app resp=2";

fn number(frame: &OwnedFrame) -> i64 {
    match frame {
        OwnedFrame::Number { data, .. } => *data,
        other => panic!("not a number: {}", text(other)),
    }
}

fn blob(frame: &OwnedFrame) -> &[u8] {
    match frame {
        OwnedFrame::BlobString { data, .. } => data,
        other => panic!("not a bulk string: {}", text(other)),
    }
}

// ---- 1. transactions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_discard_watch_and_execabort() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    let mut other = Resp::connect(proxy.addr).await;

    c.send_raw(&batch(&[
        "MULTI",
        "SET tx:a 1",
        "INCR tx:a",
        "GET tx:a",
        "LPUSH tx:a x",
        "EXEC",
    ]))
    .await;
    expect(
        &mut c,
        &[
            "+OK",
            "+QUEUED",
            "+QUEUED",
            "+QUEUED",
            "+QUEUED",
            "[OK,2,2,-WRONGTYPE Operation against a key holding the wrong kind of value]",
        ],
    )
    .await;

    // DISCARD drops the queue; nothing ran.
    c.send_raw(&batch(&[
        "MULTI",
        "SET tx:d 1",
        "DISCARD",
        "GET tx:d",
        "EXEC",
    ]))
    .await;
    expect(
        &mut c,
        &["+OK", "+QUEUED", "+OK", "_", "-ERR EXEC without MULTI"],
    )
    .await;

    // WATCH: another client changes the key between WATCH and EXEC.
    assert_eq!(run(&mut c, "SET tx:w 1").await, "+OK");
    assert_eq!(run(&mut c, "WATCH tx:w").await, "+OK");
    assert_eq!(run(&mut other, "SET tx:w 2").await, "+OK");
    c.send_raw(&batch(&["MULTI", "INCR tx:w", "EXEC", "GET tx:w"]))
        .await;
    expect(&mut c, &["+OK", "+QUEUED", "_", "$2"]).await;
    // And unmodified, the same transaction runs.
    c.send_raw(&batch(&["WATCH tx:w", "MULTI", "INCR tx:w", "EXEC"]))
        .await;
    expect(&mut c, &["+OK", "+OK", "+QUEUED", "[3]"]).await;

    // A syntax error while queueing aborts the whole transaction.
    c.send_raw(&batch(&[
        "MULTI",
        "SET tx:e 1",
        "SET tx:e",
        "EXEC",
        "GET tx:e",
    ]))
    .await;
    expect(
        &mut c,
        &[
            "+OK",
            "+QUEUED",
            "-ERR wrong number of arguments for 'set' command",
            "-EXECABORT Transaction discarded because of previous errors.",
            "_",
        ],
    )
    .await;
    assert_eq!(run(&mut c, "PING").await, "+PONG");
}

// ---- 2. databases ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_isolates_databases() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    let mut other = Resp::connect(proxy.addr).await;

    assert_eq!(run(&mut c, "SELECT 1").await, "+OK");
    assert_eq!(run(&mut c, "SET db:k in-db-1").await, "+OK");
    assert_eq!(run(&mut c, "GET db:k").await, "$in-db-1");
    // A second client starts in db 0 and does not see it...
    assert_eq!(run(&mut other, "GET db:k").await, "_");
    assert_eq!(run(&mut other, "SET db:k in-db-0").await, "+OK");
    // ...and its write does not reach db 1.
    assert_eq!(run(&mut c, "GET db:k").await, "$in-db-1");
    assert_eq!(run(&mut other, "SELECT 1").await, "+OK");
    assert_eq!(run(&mut other, "GET db:k").await, "$in-db-1");
    assert_eq!(run(&mut c, "SELECT 0").await, "+OK");
    assert_eq!(run(&mut c, "GET db:k").await, "$in-db-0");
}

// ---- 3. pub/sub ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_delivers_every_message_in_order_with_its_kind() {
    const N: usize = 1000;
    /// One message in the middle is larger than the proxy's streaming
    /// threshold, so it is relayed while still arriving.
    const LARGE_AT: usize = 500;
    let large = "L".repeat(300 * 1024);
    let (_redis, proxy) = start().await;
    let mut sub = Resp::connect(proxy.addr).await;
    let mut publisher = Resp::connect(proxy.addr).await;

    sub.send_raw(&batch(&[
        "SUBSCRIBE ch:1 ch:2",
        "PSUBSCRIBE pat:*",
        "SSUBSCRIBE shard:1",
    ]))
    .await;
    expect(
        &mut sub,
        &[
            "[subscribe,ch:1,1]",
            "[subscribe,ch:2,2]",
            "[psubscribe,pat:*,3]",
            "[ssubscribe,shard:1,1]",
        ],
    )
    .await;

    let payload = |i: usize| {
        if i == LARGE_AT {
            large.clone()
        } else {
            format!("m-{i}")
        }
    };
    let mut out = Vec::new();
    for i in 0..N {
        let p = payload(i);
        let command: [&str; 3] = match i % 4 {
            0 => ["PUBLISH", "ch:1", &p],
            1 => ["PUBLISH", "ch:2", &p],
            2 => ["PUBLISH", "pat:x", &p],
            _ => ["SPUBLISH", "shard:1", &p],
        };
        out.extend(encode_command(&command.map(str::as_bytes)));
    }
    publisher.send_raw(&out).await;
    for i in 0..N {
        assert_eq!(text(&publisher.read().await), ":1", "publish #{i}");
    }
    for i in 0..N {
        let p = payload(i);
        let want = match i % 4 {
            0 => format!("[message,ch:1,{p}]"),
            1 => format!("[message,ch:2,{p}]"),
            2 => format!("[pmessage,pat:*,pat:x,{p}]"),
            _ => format!("[smessage,shard:1,{p}]"),
        };
        let got = text(&sub.read().await);
        assert!(got == want, "message #{i}: {:.80} != {want:.80}", got);
    }

    // PING in RESP2 subscribed mode is a two-element array.
    assert_eq!(run(&mut sub, "PING").await, "[pong,]");
    assert_eq!(run(&mut sub, "PING hi").await, "[pong,hi]");

    // UNSUBSCRIBE with no arguments confirms each channel, in the server's
    // order; the counts go down and include the pattern still subscribed.
    sub.send(&words("UNSUBSCRIBE")).await;
    let (first, second) = (text(&sub.read().await), text(&sub.read().await));
    let channel = |c: &str, count: &str| {
        c.strip_prefix("[unsubscribe,")
            .and_then(|c| c.strip_suffix(count))
            .map(str::to_owned)
    };
    let mut channels = [channel(&first, ",2]"), channel(&second, ",1]")];
    channels.sort();
    assert_eq!(
        channels,
        [Some("ch:1".to_owned()), Some("ch:2".to_owned())],
        "{first} {second}"
    );
    assert_eq!(
        run(&mut sub, "PUNSUBSCRIBE").await,
        "[punsubscribe,pat:*,0]"
    );
    // Still subscribed to a shard channel: other commands are refused.
    assert_eq!(
        run(&mut sub, "GET ps:x").await,
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    );
    assert_eq!(
        run(&mut sub, "SUNSUBSCRIBE").await,
        "[sunsubscribe,shard:1,0]"
    );
    assert_eq!(run(&mut sub, "GET ps:x").await, "_");
    assert_eq!(run(&mut sub, "PING").await, "+PONG");
    assert_eq!(run(&mut publisher, "PUBLISH ch:1 late").await, ":0");
    assert_eq!(run(&mut sub, "ECHO done").await, "$done");
}

// ---- 4. blocking commands ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_are_woken_by_other_clients() {
    let (_redis, proxy) = start().await;
    let mut blocked = Resp::connect(proxy.addr).await;
    let mut waker = Resp::connect(proxy.addr).await;

    blocked.send(&words("BLPOP bl:list 0")).await;
    wait_blocked(&mut waker, 1).await;
    assert_eq!(run(&mut waker, "LPUSH bl:list v1").await, ":1");
    assert_eq!(text(&blocked.read().await), "[bl:list,v1]");

    blocked.send(&words("BRPOPLPUSH bl:src bl:dst 0")).await;
    wait_blocked(&mut waker, 1).await;
    assert_eq!(run(&mut waker, "RPUSH bl:src moved").await, ":1");
    assert_eq!(text(&blocked.read().await), "$moved");
    assert_eq!(run(&mut waker, "LRANGE bl:dst 0 -1").await, "[moved]");

    blocked
        .send(&words("XREAD BLOCK 0 STREAMS bl:stream $"))
        .await;
    wait_blocked(&mut waker, 1).await;
    assert_eq!(run(&mut waker, "XADD bl:stream 5-1 f v").await, "$5-1");
    assert_eq!(text(&blocked.read().await), "[[bl:stream,[[5-1,[f,v]]]]]");

    assert_eq!(run(&mut blocked, "WAIT 0 0").await, ":0");
    // A blocking command with a timeout that runs out.
    assert_eq!(run(&mut blocked, "BLPOP bl:none 0.05").await, "_");

    // A command pipelined behind a blocking one is answered only after it.
    assert_eq!(run(&mut waker, "SET bl:x after").await, "+OK");
    blocked
        .send_raw(&batch(&["BLPOP bl:late 0", "GET bl:x"]))
        .await;
    wait_blocked(&mut waker, 1).await;
    expect_quiet(&mut blocked).await;
    assert_eq!(run(&mut waker, "LPUSH bl:late served").await, ":1");
    expect(&mut blocked, &["[bl:late,served]", "$after"]).await;
}

// ---- 5. MONITOR ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_sees_other_clients_and_reset_ends_it() {
    let (_redis, proxy) = start().await;
    let mut monitor = Resp::connect(proxy.addr).await;
    assert_eq!(run(&mut monitor, "MONITOR").await, "+OK");
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(run(&mut c, "SET mk mv").await, "+OK");

    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let line = text(&monitor.read().await);
        assert!(line.starts_with('+'), "not a MONITOR line: {line}");
        // The proxy's own AUTH shows redacted, never the password.
        assert!(!line.contains("app-secret-pw"), "{line}");
        // MONITOR shows arguments as the client sent them.
        if line.ends_with(r#""SET" "mk" "mv""#) {
            break;
        }
        assert!(Instant::now() < deadline, "SET never seen");
    }

    monitor.send(&words("RESET")).await;
    // MONITOR lines may still precede the RESET reply; nothing else may.
    loop {
        let line = text(&monitor.read().await);
        if line == "+RESET" {
            break;
        }
        assert!(line.contains(" ["), "not a MONITOR line: {line}");
    }
    assert_eq!(run(&mut monitor, "ACL WHOAMI").await, "$app");
    assert_eq!(run(&mut monitor, "GET mk").await, "$mv");
    assert_eq!(client_state(&mut monitor).await, CLEAN);
    // No longer a monitor: another client's commands stay out of its stream.
    assert_eq!(run(&mut c, "SET mk2 v").await, "+OK");
    assert_eq!(run(&mut monitor, "PING").await, "+PONG");
}

// ---- 6. client-side caching ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_resp3_push_keeps_replies_in_line() {
    let (_redis, proxy) = start().await;
    let mut t = Resp::connect(proxy.addr).await;
    let mut writer = Resp::connect(proxy.addr).await;

    assert!(run(&mut t, "HELLO 3").await.contains("proto:3"));
    assert_eq!(run(&mut t, "CLIENT TRACKING ON").await, "+OK");
    assert_eq!(run(&mut writer, "SET tr:k v1").await, "+OK");
    assert_eq!(run(&mut t, "GET tr:k").await, "$v1");
    assert_eq!(run(&mut writer, "SET tr:k v2").await, "+OK");
    // The invalidation was queued for `t` before its next command ran, so
    // it comes first, then the replies in order.
    t.send_raw(&batch(&["PING", "GET tr:k", "ACL WHOAMI"]))
        .await;
    expect(&mut t, &[">[invalidate,[tr:k]]", "+PONG", "$v2", "$app"]).await;
    // Tracked again by that GET: a second change, a second push.
    assert_eq!(run(&mut writer, "DEL tr:k").await, ":1");
    expect(&mut t, &[">[invalidate,[tr:k]]"]).await;
    assert_eq!(run(&mut t, "CLIENT TRACKING OFF").await, "+OK");
    assert_eq!(run(&mut t, "GET tr:k").await, "_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_redirect_reaches_a_resp2_subscriber() {
    let (_redis, proxy) = start().await;
    let mut a = Resp::connect(proxy.addr).await;
    let mut b = Resp::connect(proxy.addr).await;
    let mut writer = Resp::connect(proxy.addr).await;

    let id = number(&a.cmd(&words("CLIENT ID")).await);
    assert_eq!(
        run(&mut a, "SUBSCRIBE __redis__:invalidate").await,
        "[subscribe,__redis__:invalidate,1]"
    );
    let on = format!("CLIENT TRACKING ON REDIRECT {id}");
    assert_eq!(run(&mut b, &on).await, "+OK");
    assert_eq!(run(&mut b, "GET rd:k").await, "_");
    assert_eq!(run(&mut writer, "SET rd:k 1").await, "+OK");
    expect(&mut a, &["[message,__redis__:invalidate,[rd:k]]"]).await;
    // Both connections still answer in order.
    assert_eq!(run(&mut a, "PING").await, "[pong,]");
    assert_eq!(run(&mut b, "GET rd:k").await, "$1");
}

// ---- 7. CLIENT REPLY ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_skip_on_line_up() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;

    c.send_raw(&batch(&[
        "CLIENT REPLY OFF",
        "SET cr:x 1",
        "AUTH whatever",
        "GET cr:x",
        "CLIENT REPLY ON",
        "GET cr:x",
        "CLIENT REPLY SKIP",
        "SET cr:y 2",
        "GET cr:y",
        "CLIENT REPLY SKIP",
        "CLIENT REPLY SKIP",
        "INCR cr:y",
        "INCR cr:y",
        "CLIENT REPLY OFF",
        "CLIENT REPLY SKIP",
        "PING",
        "CLIENT REPLY ON",
        "PING",
    ]))
    .await;
    expect(&mut c, &["+OK", "$1", "$2", ":4", "+OK", "+PONG"]).await;
    expect_quiet(&mut c).await;

    // One command at a time, as an interactive client would.
    c.send(&words("CLIENT REPLY OFF")).await;
    c.send(&words("SET cr:z 1")).await;
    c.send(&words("AUTH whatever")).await;
    assert_eq!(run(&mut c, "CLIENT REPLY ON").await, "+OK");
    assert_eq!(run(&mut c, "GET cr:z").await, "$1");
    c.send(&words("CLIENT REPLY SKIP")).await;
    c.send(&words("INCR cr:z")).await;
    assert_eq!(run(&mut c, "INCR cr:z").await, ":3");
}

// ---- 8. names and HELLO ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setname_and_hello_with_auth_and_setname() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;

    assert_eq!(run(&mut c, "CLIENT GETNAME").await, "_");
    assert_eq!(run(&mut c, "CLIENT SETNAME first").await, "+OK");
    assert_eq!(run(&mut c, "CLIENT GETNAME").await, "$first");

    let hello = run(&mut c, "HELLO 3 AUTH anyuser anypass SETNAME second").await;
    assert!(hello.starts_with("%{"), "{hello}");
    assert!(hello.contains("proto:3"), "{hello}");
    assert!(hello.contains("server:redis"), "{hello}");
    assert_eq!(run(&mut c, "CLIENT GETNAME").await, "$second");
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
    assert_eq!(run(&mut c, "HSET hl:h f v").await, ":1");
    assert_eq!(run(&mut c, "HGETALL hl:h").await, "%{f:v}");

    let hello = run(&mut c, "HELLO 2").await;
    assert!(
        hello.starts_with("[server,redis,") && hello.contains(",proto,2,"),
        "{hello}"
    );
    assert_eq!(run(&mut c, "HGETALL hl:h").await, "[f,v]");

    // An AUTH clause without a password is Redis's own syntax error, and
    // the connection stays usable.
    assert_eq!(
        run(&mut c, "HELLO 3 auth onlyuser").await,
        "-ERR Syntax error in HELLO option 'auth'"
    );
    assert_eq!(run(&mut c, "PING").await, "+PONG");
    assert!(client_state(&mut c).await.contains("resp=2"));
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
}

// ---- 9. RESET ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_restores_a_clean_authenticated_connection_from_any_state() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    let mut other = Resp::connect(proxy.addr).await;

    // Inside MULTI: the queue is dropped.
    c.send_raw(&batch(&[
        "MULTI",
        "SET rs:m 1",
        "RESET",
        "EXEC",
        "GET rs:m",
    ]))
    .await;
    expect(
        &mut c,
        &["+OK", "+QUEUED", "+RESET", "-ERR EXEC without MULTI", "_"],
    )
    .await;
    assert_eq!(client_state(&mut c).await, CLEAN);

    // While subscribed (RESP2).
    c.send_raw(&batch(&["SUBSCRIBE rs:ch", "PSUBSCRIBE rs:*", "RESET"]))
        .await;
    expect(
        &mut c,
        &["[subscribe,rs:ch,1]", "[psubscribe,rs:*,2]", "+RESET"],
    )
    .await;
    assert_eq!(run(&mut other, "PUBLISH rs:ch gone").await, ":0");
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
    assert_eq!(client_state(&mut c).await, CLEAN);

    // In RESP3.
    assert!(run(&mut c, "HELLO 3").await.contains("proto:3"));
    assert_eq!(run(&mut c, "RESET").await, "+RESET");
    assert_eq!(run(&mut c, "HGETALL rs:none").await, "[]");
    assert_eq!(client_state(&mut c).await, CLEAN);

    // After CLIENT REPLY OFF: RESET turns replies back on and answers.
    c.send_raw(&batch(&[
        "CLIENT REPLY OFF",
        "SET rs:off 1",
        "RESET",
        "GET rs:off",
    ]))
    .await;
    expect(&mut c, &["+RESET", "$1"]).await;
    assert_eq!(client_state(&mut c).await, CLEAN);

    // After SELECT 5: back in db 0.
    c.send_raw(&batch(&[
        "SELECT 5",
        "SET rs:db five",
        "RESET",
        "GET rs:db",
    ]))
    .await;
    expect(&mut c, &["+OK", "+OK", "+RESET", "_"]).await;
    assert_eq!(client_state(&mut c).await, CLEAN);

    // Everything in one write: the proxy's re-AUTH slots in invisibly.
    c.send_raw(&batch(&["RESET", "ACL WHOAMI", "PING"])).await;
    expect(&mut c, &["+RESET", "$app", "+PONG"]).await;
    expect_quiet(&mut c).await;

    // Several RESETs back to back, each re-authenticated.
    c.send_raw(&batch(&[
        "RESET",
        "RESET",
        "SELECT 2",
        "RESET",
        "CLIENT INFO",
    ]))
    .await;
    expect(&mut c, &["+RESET", "+RESET", "+OK", "+RESET"]).await;
    assert!(text(&c.read().await).contains(" db=0 "));
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
}

// ---- 10. QUIT ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_answers_then_closes() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send_raw(&batch(&["SET q:k 1", "QUIT"])).await;
    expect(&mut c, &["+OK", "+OK"]).await;
    assert!(c.read_closed().await, "connection still open after QUIT");
    // The proxy keeps serving others.
    let mut d = Resp::connect(proxy.addr).await;
    assert_eq!(run(&mut d, "GET q:k").await, "$1");
}

// ---- 11. inline and binary ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_and_binary_safe_values() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;

    c.send_raw(b"SET ik \"hello world\"\r\nGET ik\r\n\r\nPING\r\n")
        .await;
    expect(&mut c, &["+OK", "$hello world", "+PONG"]).await;
    // Escapes and single quotes, a bare-LF line, and AUTH inline.
    c.send_raw(
        b"SET ihx \"a\\x00b\\r\\n\"\r\nGET ihx\nSET isq 'it\\'s'\r\nGET isq\r\nAUTH x y\r\n",
    )
    .await;
    expect(&mut c, &["+OK", "$a\0b\r\n", "+OK", "$it's", "+OK"]).await;

    // Every byte value, CRLF and NUL in both key and value.
    let key: &[u8] = b"bin\r\n\0key";
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\0\r\n$3\r\n").collect();
    assert_eq!(text(&c.cmd(&[b"SET", key, &value]).await), "+OK");
    assert_eq!(blob(&c.cmd(&[b"GET", key]).await), &value[..]);
    assert_eq!(number(&c.cmd(&[b"STRLEN", key]).await), value.len() as i64);
    assert_eq!(
        text(&c.cmd(&[b"GETRANGE", key, b"256", b"258"]).await),
        "$\r\n\0"
    );
}

// ---- 12. a 100 MB value ----

const BIG: usize = 100 * 1024 * 1024;
const BLOCK: usize = 64 * 1024;

/// 100 MB where every 64 KiB block starts with its own index, so a lost,
/// repeated or reordered block cannot compare equal.
fn big_value() -> Vec<u8> {
    let block: Vec<u8> = (0..BLOCK as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut value = Vec::with_capacity(BIG);
    for n in 0..BIG / BLOCK {
        let start = value.len();
        value.extend_from_slice(&block);
        value[start..start + 8].copy_from_slice(&(n as u64).to_le_bytes());
    }
    value
}

/// FNV-1a over 64-bit words (the length is a multiple of 8): a checksum that
/// stays cheap in debug builds.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(0x100_0000_01b3)
    })
}

/// Reads a bulk reply of `expected.len()` bytes straight off `stream`,
/// comparing each chunk as it arrives; returns the checksum of what came.
async fn read_bulk<S: AsyncRead + Unpin>(stream: &mut S, expected: &[u8]) -> u64 {
    let header = format!("${}\r\n", expected.len());
    let mut head = vec![0; header.len()];
    stream.read_exact(&mut head).await.expect("read header");
    assert_eq!(String::from_utf8_lossy(&head), header);
    let mut got = Vec::with_capacity(expected.len());
    let mut chunk = vec![0; 1 << 20];
    while got.len() < expected.len() {
        let want = chunk.len().min(expected.len() - got.len());
        let n = stream.read(&mut chunk[..want]).await.expect("read body");
        assert!(n > 0, "closed after {} bytes", got.len());
        let at = got.len();
        assert!(
            chunk[..n] == expected[at..at + n],
            "bytes differ in {at}..{}",
            at + n
        );
        got.extend_from_slice(&chunk[..n]);
    }
    let mut crlf = [0; 2];
    stream.read_exact(&mut crlf).await.expect("read CRLF");
    assert_eq!(&crlf, b"\r\n");
    checksum(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_value_round_trips() {
    let (redis, proxy) = start().await;
    let value = big_value();
    let sum = checksum(&value);
    let mut c = Resp::connect(proxy.addr).await;

    let started = Instant::now();
    let test = async {
        // Written in three parts so the test holds the value only once.
        c.send_raw(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${BIG}\r\n").as_bytes())
            .await;
        c.send_raw(&value).await;
        c.send_raw(b"\r\n").await;
        assert_eq!(text(&c.read().await), "+OK");
        let set = started.elapsed();
        assert_eq!(number(&c.cmd(&words("STRLEN big")).await), BIG as i64);

        c.send(&words("GET big")).await;
        assert_eq!(read_bulk(c.stream(), &value).await, sum);
        // The session goes on after the large reply.
        assert_eq!(run(&mut c, "PING").await, "+PONG");
        let get = started.elapsed() - set;

        let tls = common::tls_connect(&redis.tls_connector(), redis.tls_port)
            .await
            .expect("direct TLS");
        let mut direct = Resp::over(tls);
        assert_eq!(
            text(&direct.cmd(&words("AUTH app app-secret-pw")).await),
            "+OK"
        );
        direct.send(&words("GET big")).await;
        assert_eq!(read_bulk(direct.stream(), &value).await, sum);
        eprintln!(
            "100 MB: SET via proxy {set:?}, GET via proxy {get:?}, total with direct GET {:?}",
            started.elapsed()
        );
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("100 MB round trip within 60 s");
}

// ---- CLIENT REPLY meets the commands the proxy handles itself ----

/// Direct, Redis 7.0 skips RESET's own reply after `CLIENT REPLY SKIP`
/// (RESET clears SKIP_NEXT, not the SKIP already armed for it), so the
/// client sees only `+PONG`; the proxy's re-AUTH must not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_skip_then_reset() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send_raw(&batch(&["CLIENT REPLY SKIP", "RESET", "PING"]))
        .await;
    expect(&mut c, &["+PONG"]).await;
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
    assert_eq!(client_state(&mut c).await, CLEAN);
}

/// Redis 7 sends pub/sub confirmations even with replies off; the client
/// is then subscribed. Direct: `[subscribe,rs:c,1]`, `+RESET`, `+PONG`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_replies_off_then_reset() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send_raw(&batch(&[
        "CLIENT REPLY OFF",
        "SUBSCRIBE rs:c",
        "RESET",
        "PING",
    ]))
    .await;
    expect(&mut c, &["[subscribe,rs:c,1]", "+RESET", "+PONG"]).await;
    assert_eq!(run(&mut c, "ACL WHOAMI").await, "$app");
    assert_eq!(client_state(&mut c).await, CLEAN);
}

/// Direct, the AUTH after `CLIENT REPLY SKIP` is the command whose reply is
/// skipped: `[:1, +PONG]`. The proxy never forwards the client's AUTH, so
/// Redis applies the skip to INCR instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_skip_then_auth() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send_raw(&batch(&[
        "CLIENT REPLY SKIP",
        "AUTH someone else",
        "INCR sa:n",
        "PING",
    ]))
    .await;
    expect(&mut c, &[":1", "+PONG"]).await;
    // The same with HELLO's AUTH syntax error, also answered by the proxy.
    c.send_raw(&batch(&[
        "CLIENT REPLY SKIP",
        "HELLO 3 auth u",
        "INCR sa:n",
    ]))
    .await;
    expect(&mut c, &[":2"]).await;
    // And the ledger is still in step afterwards.
    c.send_raw(&batch(&["AUTH x y", "RESET", "ACL WHOAMI"]))
        .await;
    expect(&mut c, &["+OK", "+RESET", "$app"]).await;
}

/// Direct: `-ERR Protocol error: invalid bulk length`, then Redis closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_multibulk_gets_an_error_and_a_close() {
    let (_redis, proxy) = start().await;
    let mut c = Resp::connect(proxy.addr).await;
    c.send_raw(b"*1\r\n$x\r\n").await;
    expect(&mut c, &["-ERR Protocol error: invalid bulk length"]).await;
    assert!(c.read_closed().await, "still open after a protocol error");
}
