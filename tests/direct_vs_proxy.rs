//! Differential check of invariants 1–2: the same raw RESP scripts go once
//! straight to Redis over TLS and twice through the proxy (in one write, and
//! cut into small writes), and the reply byte streams must be identical
//! once key prefixes and connection ids are normalized.
//!
//! Scripts may use the proxy-handled commands only where Redis answers them
//! the same way: `AUTH app app-secret-pw` is `+OK` on both sides, and after
//! RESET a direct connection needs that AUTH while the proxy answers it.

mod common;

use std::time::Duration;

use common::{encode_command, text, Proxy, RedisOptions, RedisServer, Resp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

const SENTINEL: &[u8] = b"__end_of_script__";
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Placeholder for the per-run key prefix in scripts.
const KEY: &[u8] = b"{k}";

/// How a script's reply stream ends.
#[derive(Clone, Copy)]
enum Ending {
    /// `ECHO <SENTINEL>` is appended; read until its reply.
    Sentinel,
    /// The script ends with a protocol error: read until the server closes.
    Close,
}

struct Script {
    name: &'static str,
    body: Vec<Part>,
    ending: Ending,
}

/// A piece of a script; `{k}` anywhere in it becomes the key prefix.
#[derive(Clone)]
enum Part {
    /// Encoded as a multibulk after the prefix is filled in.
    Command(Vec<Vec<u8>>),
    /// Sent as is (inline commands, malformed input): no `$len` may cover
    /// a `{k}`.
    Raw(Vec<u8>),
}

/// Commands written as lines split on spaces.
fn cmds(lines: &[&str]) -> Vec<Part> {
    lines
        .iter()
        .map(|line| Part::Command(line.split(' ').map(|w| w.as_bytes().to_vec()).collect()))
        .collect()
}

fn cmd(args: &[&[u8]]) -> Vec<Part> {
    vec![Part::Command(args.iter().map(|a| a.to_vec()).collect())]
}

fn raw(bytes: &[u8]) -> Vec<Part> {
    vec![Part::Raw(bytes.to_vec())]
}

/// The bytes of `parts` with `{k}` replaced by `prefix`.
fn render(parts: &[Part], prefix: &str) -> Vec<u8> {
    let fill = |b: &[u8]| replace(b, KEY, prefix.as_bytes());
    parts
        .iter()
        .flat_map(|part| match part {
            Part::Command(args) => {
                let args: Vec<Vec<u8>> = args.iter().map(|a| fill(a)).collect();
                encode_command(&args.iter().map(Vec::as_slice).collect::<Vec<_>>())
            }
            Part::Raw(bytes) => fill(bytes),
        })
        .collect()
}

fn script(name: &'static str, body: Vec<Part>) -> Script {
    Script {
        name,
        body,
        ending: Ending::Sentinel,
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Replaces the digits after an `id` key (HELLO replies, both protocols).
fn normalize_ids(stream: &[u8]) -> Vec<u8> {
    const ID: &[u8] = b"$2\r\nid\r\n:";
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        if stream[i..].starts_with(ID) {
            out.extend_from_slice(ID);
            out.push(b'N');
            i += ID.len();
            while i < stream.len() && stream[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

/// Sends `body` (whole, or in `chunk`-byte writes) and returns every reply
/// byte up to and including the sentinel's reply, or up to EOF. `Err` says
/// what arrived before the time ran out or the connection closed early.
async fn exchange<S>(
    conn: &mut S,
    body: &[u8],
    ending: Ending,
    chunk: Option<usize>,
) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = body.to_vec();
    let end = format!(
        "${}\r\n{}\r\n",
        SENTINEL.len(),
        String::from_utf8_lossy(SENTINEL)
    );
    if let Ending::Sentinel = ending {
        body.extend(encode_command(&[b"ECHO", SENTINEL]));
    }
    let mut replies = Vec::new();
    let read_all = async {
        let write = async {
            match chunk {
                None => conn.write_all(&body).await.expect("write script"),
                Some(n) => {
                    for piece in body.chunks(n) {
                        conn.write_all(piece).await.expect("write script");
                        conn.flush().await.expect("flush");
                        // Give the proxy a chance to see each piece alone.
                        tokio::task::yield_now().await;
                    }
                }
            }
            conn.flush().await.expect("flush");
        };
        write.await;
        let mut buf = vec![0; 64 * 1024];
        loop {
            match ending {
                Ending::Sentinel if replies.ends_with(end.as_bytes()) => return true,
                _ => {}
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return matches!(ending, Ending::Close),
                Ok(n) => replies.extend_from_slice(&buf[..n]),
            }
        }
    };
    match timeout(READ_TIMEOUT, read_all).await {
        Ok(true) => Ok(replies),
        Ok(false) => Err(format!("closed early after: {}", escape(&replies))),
        Err(_) => Err(format!(
            "no end of replies within {READ_TIMEOUT:?} after: {}",
            escape(&replies)
        )),
    }
}

fn escape(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes.escape_ascii().collect::<Vec<u8>>()).into_owned()
}

/// The first difference between two streams, with some context, or `None`.
fn diff(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let from = at.saturating_sub(120);
    let show = |s: &[u8]| escape(&s[from..(at + 120).min(s.len())]);
    Some(format!(
        "first difference at byte {at} (of {} vs {}):\n  direct: …{}\n  proxy:  …{}",
        a.len(),
        b.len(),
        show(a),
        show(b)
    ))
}

/// Runs `script` direct, through the proxy in one write, and through the
/// proxy in 7-byte writes; returns what differed, if anything.
async fn check(redis: &RedisServer, proxy: &Proxy, n: usize, script: &Script) -> Option<String> {
    // Equal-length prefixes, so RESP lengths do not change when normalized.
    let prefix = |side: &str| format!("t{n:03}{side}:");
    let body = |side: &str| render(&script.body, &prefix(side));
    let normalize = |side: &str, stream: Vec<u8>| {
        normalize_ids(&replace(
            &stream,
            prefix(side).as_bytes(),
            prefix("x").as_bytes(),
        ))
    };

    let tls = common::tls_connect(&redis.tls_connector(), redis.tls_port)
        .await
        .expect("direct TLS");
    let mut direct = Resp::over(tls);
    // Its +OK is read here and not compared: through the proxy there is none.
    let auth = direct.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await;
    assert_eq!(text(&auth), "+OK");
    let want = match exchange(direct.stream(), &body("d"), script.ending, None).await {
        Ok(stream) => normalize("d", stream),
        Err(e) => return Some(format!("script {:?} direct: {e}", script.name)),
    };

    let mut failures = Vec::new();
    for (how, chunk, side) in [("one write", None, "p"), ("7-byte writes", Some(7), "q")] {
        let mut conn = Resp::connect(proxy.addr).await;
        conn.stream().set_nodelay(true).expect("nodelay");
        let outcome = exchange(conn.stream(), &body(side), script.ending, chunk).await;
        let what = match outcome.map(|got| diff(&want, &normalize(side, got))) {
            Ok(None) => continue,
            Ok(Some(d)) => d,
            Err(e) => format!("{e}\n  direct was: {}", escape(&want)),
        };
        failures.push(format!(
            "script {:?} via proxy ({how}): {what}",
            script.name
        ));
    }
    (!failures.is_empty()).then(|| failures.join("\n"))
}

/// Runs each script against one Redis and one proxy and fails listing
/// every script whose replies differ.
async fn check_all(scripts: Vec<Script>) {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut failures = Vec::new();
    for (n, script) in scripts.iter().enumerate() {
        if let Some(f) = check(&redis, &proxy, n, script).await {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn scripts() -> Vec<Script> {
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\n\0$-1\r\n*3\r\n").collect();
    let big = vec![b'B'; 200 * 1024];
    let mut pipeline = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("{{k}}p{}", i % 7), format!("v{i}"));
        pipeline.extend(match i % 6 {
            0 => cmd(&[b"SET", k.as_bytes(), v.as_bytes()]),
            1 => cmd(&[b"GET", k.as_bytes()]),
            2 => cmd(&[b"INCR", format!("{{k}}n{}", i % 3).as_bytes()]),
            3 => cmd(&[b"AUTH", b"app", b"app-secret-pw"]),
            4 => cmd(&[b"ECHO", v.as_bytes()]),
            _ => cmd(&[b"APPEND", k.as_bytes(), b"+"]),
        });
    }

    vec![
        script(
            "strings",
            cmds(&[
                "SET {k}a 1",
                "GET {k}a",
                "INCR {k}a",
                "INCRBY {k}a 10",
                "APPEND {k}s hello",
                "GETRANGE {k}s 1 3",
                "MSET {k}m1 x {k}m2 y",
                "MGET {k}m1 {k}m2 {k}none",
                "DEL {k}a {k}m1",
                "EXISTS {k}a {k}m2",
                "SETNX {k}m2 z",
                "STRLEN {k}s",
                "INCRBYFLOAT {k}f 1.5",
                "TYPE {k}s",
                "SET {k}e v EX 1000",
                "TTL {k}e",
                "PERSIST {k}e",
                "TTL {k}e",
                "GETDEL {k}e",
            ]),
        ),
        script(
            "errors",
            [
                cmds(&[
                    "NOSUCHCMD a b",
                    "GET",
                    "GET a b",
                    "SET {k}x",
                    "SET {k}str abc",
                    "INCR {k}str",
                    "LPUSH {k}str x",
                    "SELECT 99",
                    "EXEC",
                    "DISCARD",
                    "CONFIG SET nosuch 1",
                    "PING a b c",
                    "CLIENT REPLY maybe",
                    "CLIENT REPLY",
                    "CLIENT NOSUCH",
                    "AUTH",
                    "AUTH a b c d",
                ]),
                // An empty command name, and an empty multibulk (ignored).
                raw(b"*1\r\n$0\r\n\r\n*0\r\n"),
                cmds(&["HELLO 4", "HELLO x", "PING"]),
            ]
            .concat(),
        ),
        script(
            "transactions",
            cmds(&[
                "MULTI",
                "SET {k}a 1",
                "INCR {k}a",
                "GET {k}a",
                "LPUSH {k}a x",
                "EXEC",
                "MULTI",
                "SET {k}b 1",
                "DISCARD",
                "GET {k}b",
                "MULTI",
                "SET {k}c 1",
                "SET {k}c",
                "EXEC",
                "GET {k}c",
                "MULTI",
                "MULTI",
                "EXEC",
                "MULTI",
                "PING",
                "ECHO queued",
                "EXEC",
            ]),
        ),
        script(
            "watch",
            cmds(&[
                "WATCH {k}w",
                "SET {k}w 1",
                "MULTI",
                "INCR {k}w",
                "EXEC",
                "WATCH {k}w",
                "MULTI",
                "INCR {k}w",
                "EXEC",
                "WATCH {k}w",
                "UNWATCH",
                "SET {k}w 5",
                "MULTI",
                "INCR {k}w",
                "EXEC",
                "MULTI",
                "WATCH {k}w",
                "EXEC",
            ]),
        ),
        script(
            "resp3",
            cmds(&[
                "HELLO 3",
                "SET {k}a 1",
                "GET {k}a",
                "GET {k}none",
                "HSET {k}h f1 v1 f2 v2",
                "HGETALL {k}h",
                "SADD {k}s 3 1 2",
                "SMEMBERS {k}s",
                "ZADD {k}z 1.5 m",
                "ZSCORE {k}z m",
                "ZRANGE {k}z 0 -1 WITHSCORES",
                "EXISTS {k}a",
                "LPOP {k}none",
                "MGET {k}a {k}none",
                "INCRBYFLOAT {k}f 0.25",
                "BLPOP {k}none 0.01",
                "NOSUCHCMD",
                "HELLO",
                "HELLO 2",
                "HGETALL {k}h",
                "ZSCORE {k}z m",
                "BLPOP {k}none 0.01",
            ]),
        ),
        script(
            "client reply",
            cmds(&[
                "CLIENT REPLY OFF",
                "SET {k}a 1",
                "AUTH app app-secret-pw",
                "NOSUCHCMD",
                "GET {k}a",
                "CLIENT REPLY ON",
                "GET {k}a",
                "CLIENT REPLY SKIP",
                "INCR {k}a",
                "INCR {k}a",
                "CLIENT REPLY SKIP",
                "CLIENT REPLY SKIP",
                "INCR {k}a",
                "INCR {k}a",
                "CLIENT REPLY SKIP",
                "CLIENT REPLY ON",
                "CLIENT REPLY OFF",
                "CLIENT REPLY SKIP",
                "PING",
                "CLIENT REPLY ON",
                "AUTH app app-secret-pw",
                "CLIENT REPLY SKIP",
                "MULTI",
                "INCR {k}a",
                "EXEC",
                "HELLO 3",
                "CLIENT REPLY SKIP",
                "GET {k}a",
                "GET {k}a",
                "CLIENT REPLY OFF",
                "HELLO 2",
                "CLIENT REPLY ON",
                "GET {k}a",
            ]),
        ),
        script(
            "pubsub resp2",
            cmds(&[
                "SUBSCRIBE {k}a {k}b",
                "PSUBSCRIBE {k}p*",
                "PING",
                "PING hello",
                "GET {k}x",
                "CLIENT REPLY OFF",
                "UNSUBSCRIBE {k}a",
                "UNSUBSCRIBE",
                "PUNSUBSCRIBE",
                "SSUBSCRIBE {k}s",
                "SUNSUBSCRIBE {k}s",
                "UNSUBSCRIBE",
                "GET {k}x",
                "SUBSCRIBE {k}c {k}c",
                "UNSUBSCRIBE {k}c {k}never",
                "SUBSCRIBE",
                "PING",
            ]),
        ),
        script(
            "pubsub resp3",
            cmds(&[
                "HELLO 3",
                "SUBSCRIBE {k}a",
                "GET {k}x",
                "PUBLISH {k}a hi",
                "PING",
                "SSUBSCRIBE {k}s",
                "SPUBLISH {k}s m",
                "SUNSUBSCRIBE",
                "UNSUBSCRIBE {k}a",
                "PSUBSCRIBE {k}*",
                "PUBLISH {k}zz yo",
                "CLIENT REPLY OFF",
                "PUBLISH {k}zz quiet",
                "CLIENT REPLY ON",
                "PUNSUBSCRIBE",
                "UNSUBSCRIBE",
                "PUNSUBSCRIBE",
                "SUNSUBSCRIBE",
                "HELLO 2",
            ]),
        ),
        script(
            "inline",
            raw(b"PING\r\n\r\nSET {k}i \"hello world\"\r\nGET {k}i\r\nSET {k}h \"a\\x00b\\r\\n\"\r\n\
GET {k}h\r\n  ECHO   spaced  \r\nping\nSET {k}q 'it\\'s'\r\nGET {k}q\r\nAUTH app app-secret-pw\r\n\
HELLO 3\r\nGET {k}q\r\nHELLO 2\r\nCLIENT REPLY SKIP\r\nGET {k}i\r\nGET {k}q\r\n"),
        ),
        script(
            "select",
            cmds(&[
                "SELECT 3",
                "SET {k}a three",
                "SELECT 0",
                "GET {k}a",
                "SELECT 3",
                "GET {k}a",
                "MOVE {k}a 4",
                "SELECT 4",
                "GET {k}a",
                "SELECT 0",
            ]),
        ),
        script(
            "blocking",
            cmds(&[
                "BLPOP {k}none 0.01",
                "RPUSH {k}l a b c",
                "BLPOP {k}l 0",
                "BRPOPLPUSH {k}l {k}m 0",
                "BLMOVE {k}l {k}m LEFT RIGHT 0",
                "LRANGE {k}m 0 -1",
                "XADD {k}s 1-1 f v",
                "XREAD BLOCK 10 STREAMS {k}s 0",
                "XREAD BLOCK 10 STREAMS {k}s $",
                "WAIT 0 0",
                "BZPOPMIN {k}none 0.01",
                "ZADD {k}z 1 m",
                "BZPOPMIN {k}z 0",
            ]),
        ),
        script(
            "binary and large",
            [
                cmd(&[b"SET", b"{k}bin", &binary]),
                cmd(&[b"GET", b"{k}bin"]),
                cmd(&[b"SET", b"{k}\r\n\0", b"key with CRLF"]),
                cmd(&[b"GET", b"{k}\r\n\0"]),
                cmd(&[b"SET", b"{k}big", &big]),
                cmd(&[b"GET", b"{k}big"]),
                cmds(&["STRLEN {k}big", "MULTI", "GET {k}big", "GET {k}big", "EXEC"]),
                cmds(&["HELLO 3", "GET {k}big", "SUBSCRIBE {k}c"]),
                cmd(&[b"PUBLISH", b"{k}c", &big]),
                cmds(&["UNSUBSCRIBE", "HELLO 2", "GETRANGE {k}big 0 9"]),
            ]
            .concat(),
        ),
        script(
            "reset",
            cmds(&[
                "SELECT 2",
                "SET {k}a 1",
                "MULTI",
                "SET {k}a 2",
                "RESET",
                "AUTH app app-secret-pw",
                "GET {k}a",
                "EXEC",
                "HELLO 3",
                "RESET",
                "AUTH app app-secret-pw",
                "HGETALL {k}none",
                "CLIENT REPLY OFF",
                "SET {k}b 1",
                "RESET",
                "AUTH app app-secret-pw",
                "GET {k}b",
                "SUBSCRIBE {k}c",
                "RESET",
                "AUTH app app-secret-pw",
                "PING",
                "CLIENT REPLY SKIP",
                "RESET",
                "AUTH app app-secret-pw",
                "ACL WHOAMI",
            ]),
        ),
        script(
            "client tracking resp3",
            cmds(&[
                "HELLO 3",
                "CLIENT TRACKING ON",
                "GET {k}t",
                "SET {k}t 1",
                "GET {k}t",
                "SET {k}t 2",
                "CLIENT TRACKING OFF",
                "SET {k}t 3",
                // NOLOOP: Redis sends broadcast invalidations once per
                // event-loop turn, so whether a client hears of its own
                // writes before TRACKING OFF depends on how its commands
                // were batched, which 7-byte writes change by design.
                "CLIENT TRACKING ON BCAST PREFIX {k}b NOLOOP",
                "SET {k}b1 x",
                "MSET {k}b2 y {k}b3 z",
                "CLIENT TRACKING OFF",
                "HELLO 2",
                "GET {k}t",
            ]),
        ),
        script(
            "unsubscribe from nothing",
            cmds(&[
                "UNSUBSCRIBE",
                "PUNSUBSCRIBE",
                "SUNSUBSCRIBE",
                "UNSUBSCRIBE {k}x",
                "HELLO 3",
                "UNSUBSCRIBE",
                "PUNSUBSCRIBE {k}y",
                "SUNSUBSCRIBE",
                "HELLO 2",
            ]),
        ),
        script(
            "auth and hello",
            cmds(&[
                "AUTH app app-secret-pw",
                "HELLO 3 AUTH app app-secret-pw",
                "ACL WHOAMI",
                "HELLO 2 AUTH app app-secret-pw SETNAME named",
                "CLIENT GETNAME",
                "HELLO 3 auth app",
                "HELLO 3 SETNAME other",
                "CLIENT GETNAME",
                "HELLO 2",
                "MULTI",
                "HELLO 3",
                "EXEC",
                "HELLO 2",
            ]),
        ),
        script("pipeline of 300", pipeline),
        script(
            "scripting",
            [
                cmd(&[b"EVAL", b"return {1, 'two', {3}}", b"0"]),
                cmd(&[
                    b"EVAL",
                    b"redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])",
                    b"1",
                    b"{k}e",
                    b"lua",
                ]),
                cmd(&[b"EVAL", b"return redis.error_reply('MY error')", b"0"]),
                cmd(&[b"EVAL", b"return {err = 'boom'}", b"0"]),
                cmds(&["HELLO 3"]),
                cmd(&[
                    b"EVAL",
                    b"redis.setresp(3); return redis.call('HGETALL', KEYS[1])",
                    b"1",
                    b"{k}none",
                ]),
                cmd(&[b"EVAL", b"return {double = 1.5}", b"0"]),
                cmds(&["HELLO 2"]),
            ]
            .concat(),
        ),
        script(
            "subscribe inside multi",
            cmds(&[
                "MULTI",
                "SUBSCRIBE {k}a",
                "PING",
                "EXEC",
                "PING",
                "UNSUBSCRIBE",
                "PING",
                "MULTI",
                "SUBSCRIBE {k}b",
                "EXEC",
                "RESET",
                "AUTH app app-secret-pw",
                "PING",
            ]),
        ),
        Script {
            name: "quit ends the pipeline",
            body: cmds(&["SET {k}a 1", "HELLO 3", "GET {k}a", "QUIT", "PING"]),
            ending: Ending::Close,
        },
        Script {
            name: "protocol error: bad bulk length",
            body: [cmds(&["SET {k}a 1", "GET {k}a"]), raw(b"*1\r\n$x\r\n")].concat(),
            ending: Ending::Close,
        },
        Script {
            name: "protocol error: bad multibulk length first",
            body: raw(b"*x\r\n"),
            ending: Ending::Close,
        },
        Script {
            name: "protocol error: unbalanced quotes",
            body: raw(b"PING\r\nSET {k}a \"b\r\nPING\r\n"),
            ending: Ending::Close,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_replies_match_direct_replies() {
    let scripts = scripts();
    assert!(scripts.len() >= 10);
    check_all(scripts).await;
}

// ---- differences found, one test each ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_then_auth() {
    check_all(vec![script(
        "skip then auth",
        cmds(&[
            "CLIENT REPLY SKIP",
            "AUTH app app-secret-pw",
            "INCR {k}n",
            "PING",
            "CLIENT REPLY SKIP",
            "AUTH app-secret-pw",
            "INCR {k}n",
        ]),
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_then_local_hello_error() {
    check_all(vec![script(
        "skip then local HELLO error",
        cmds(&["CLIENT REPLY SKIP", "HELLO 3 auth app", "INCR {k}n"]),
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_auth_error_keeps_the_clients_spelling() {
    check_all(vec![script(
        "HELLO AUTH without password, upper case",
        cmds(&["HELLO 3 AUTH app", "HELLO 3 Auth"]),
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_then_empty_command() {
    check_all(vec![script(
        "skip then empty line",
        raw(b"CLIENT REPLY SKIP\r\n\r\nPING\r\nCLIENT REPLY SKIP\r\n*0\r\nPING\r\n"),
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_while_subscribed_resp2() {
    check_all(vec![script(
        "auth while subscribed",
        cmds(&["SUBSCRIBE {k}c", "AUTH app app-secret-pw", "UNSUBSCRIBE"]),
    )])
    .await;
}
