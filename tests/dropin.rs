//! Drop-in to the byte (issue 9): how failures and edge cases reach a client
//! through the proxy, each compared with redis-server direct where Redis has
//! an answer of its own. Raw sockets here; the client libraries are in
//! `libraries.rs`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{free_port, text, Proxy, RedisOptions, RedisServer, Resp};
use elasticache_auth_proxy::{config, error::Kind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "app-secret-pw";

/// Everything the peer sends until it closes, or `None` if it is still open
/// after `limit` (what it sent so far is in the panic message of callers).
async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => {
                eprintln!(
                    "still open after {limit:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                );
                return None;
            }
        }
    }
}

/// A direct TLS connection to `redis`, authenticated as `app`.
async fn direct(redis: &RedisServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = common::tls_connect(&redis.tls_connector(), redis.tls_port)
        .await
        .expect("TLS to redis");
    auth_as_app(&mut s).await;
    s
}

/// `AUTH app <password>`, and its `+OK`.
async fn auth_as_app<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(&common::encode_command(&[
        b"AUTH",
        b"app",
        PASSWORD.as_bytes(),
    ]))
    .await
    .unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
}

/// One scrape of the proxy's `/metrics`.
async fn metrics(admin: SocketAddr) -> String {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let body = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    String::from_utf8(body).unwrap()
}

/// The value of one series (named without the prefix) in a scrape; 0 if absent.
fn series(scrape: &str, name: &str) -> f64 {
    let want = format!("elasticache_auth_proxy_{name} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

// ---- 1. the proxy's own errors, in turn ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_the_reply_to_each_command() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.upstream = Some(format!("localhost:{}", free_port()).parse().unwrap());
    let proxy = Proxy::start_with(args, PASSWORD).await;
    let want = format!("-{}", Kind::Connect.client_message());
    let mut c = Resp::connect(proxy.addr).await;
    // A library's handshake command, then the app's first real one: each
    // gets the reason, in its turn; nothing was written before it was asked.
    assert_eq!(
        text(&c.cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]).await),
        want
    );
    assert_eq!(text(&c.cmd(&[b"GET", b"k"]).await), want);
    // Pipelined: one answer per command, and an empty command gets none.
    c.send_raw(b"PING\r\n\r\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(text(&c.read().await), want);
    assert_eq!(text(&c.read().await), want);
    // QUIT is answered as Redis answers it, then the connection closes.
    assert_eq!(text(&c.cmd(&[b"QUIT"]).await), "+OK");
    assert!(c.read_closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_auth_is_the_reply_to_the_first_command() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start_with(Proxy::args(&redis), "wrong-password").await;
    let mut c = Resp::connect(proxy.addr).await;
    let reply = text(&c.cmd(&[b"SET", b"k", b"v"]).await);
    assert!(
        reply.starts_with(&format!("-{}", Kind::AuthRejected.client_message())),
        "{reply}"
    );
    assert!(reply.contains("WRONGPASS"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_costs_no_upstream_connection() {
    let redis = RedisServer::start(RedisOptions::default());
    // The pool off: it would open connections of its own.
    let proxy = Proxy::start_with(Proxy::no_pool(Proxy::args(&redis)), "app-secret-pw").await;
    for _ in 0..3 {
        let s = TcpStream::connect(proxy.addr).await.unwrap();
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics(proxy.admin).await;
    assert_eq!(series(&m, "client_connections_total"), 3.0, "{m}");
    assert_eq!(series(&m, "upstream_connections_total"), 0.0, "{m}");
    // The first command opens it.
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
    let m = metrics(proxy.admin).await;
    assert_eq!(series(&m, "upstream_connections_total"), 1.0, "{m}");
}

// ---- 2. an upstream close with nothing owed is a plain EOF ----

/// The id of the server connection behind `c`.
async fn client_id<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Resp<S>) -> String {
    text(&c.cmd(&[b"CLIENT", b"ID"]).await)
        .trim_start_matches(':')
        .to_string()
}

async fn kill(redis: &RedisServer, id: &str) {
    let mut admin = Resp::over(direct(redis).await);
    let reply = text(&admin.cmd(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]).await);
    assert_eq!(reply, ":1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_with_nothing_owed_is_an_eof_as_direct() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;

    let mut d = Resp::over(direct(&redis).await);
    let id = client_id(&mut d).await;
    kill(&redis, &id).await;
    let direct_saw = read_to_close(d.stream(), Duration::from_secs(5)).await;

    let mut p = Resp::connect(proxy.addr).await;
    let id = client_id(&mut p).await;
    kill(&redis, &id).await;
    let proxy_saw = read_to_close(p.stream(), Duration::from_secs(5)).await;

    assert_eq!(direct_saw, Some(Vec::new()), "direct");
    assert_eq!(proxy_saw, direct_saw, "through the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_with_a_reply_owed_gets_the_error_in_its_place() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut p = Resp::connect(proxy.addr).await;
    let id = client_id(&mut p).await;
    p.send(&[b"BLPOP", b"nothing-here", b"0"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(&redis, &id).await;
    assert_eq!(
        text(&p.read().await),
        format!("-{}", Kind::Closed.client_message())
    );
    assert!(p.read_closed().await);
}

// ---- 3. SYNC / PSYNC ----

/// A server holding `mb` MiB of incompressible values (1 KiB each, so an
/// RDB of them is at least that large), loaded in one pipeline.
async fn populated(mb: usize) -> RedisServer {
    let redis = RedisServer::start(RedisOptions::default());
    let mut d = direct(&redis).await;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut batch = Vec::new();
    let keys = mb * 1024;
    for i in 0..keys {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        batch.extend(common::encode_command(&[
            b"SET",
            format!("key:{i}").as_bytes(),
            &value,
        ]));
    }
    d.write_all(&batch).await.unwrap();
    let want = b"+OK\r\n".repeat(keys);
    let mut got = vec![0u8; want.len()];
    d.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want);
    redis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_rdb_through_the_proxy_writes_a_valid_dump() {
    let redis = populated(4).await;
    let proxy = Proxy::start(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.rdb");
    let out = common::redis_cli(&[
        "-p",
        &proxy.addr.port().to_string(),
        "--rdb",
        &file.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 4 << 20, "{size} bytes");
    let check = std::process::Command::new("redis-check-rdb")
        .arg(&file)
        .output()
        .expect("redis-check-rdb (redis-tools/redis-server)");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{report}");
    assert!(report.contains("4096 keys read"), "{report}");
    assert!(report.contains("RDB looks OK"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_sync_delivers_the_rdb_then_the_command_stream() {
    let redis = populated(1).await;
    let proxy = Proxy::start(&redis).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"SYNC\r\n").await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // `\n` keepalives while the server forks, then `$<len>\r\n<RDB>`.
    let (start, len) = loop {
        assert!(Instant::now() < deadline, "no RDB header: {buf:?}");
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("reading SYNC")
            .unwrap();
        assert!(n > 0, "closed before the RDB");
        buf.extend_from_slice(&chunk[..n]);
        let at = buf.iter().position(|&b| b != b'\n').unwrap_or(buf.len());
        if let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n") {
            assert_eq!(buf[at], b'$', "{:?}", &buf[at..at + end]);
            let len: usize = std::str::from_utf8(&buf[at + 1..at + end])
                .unwrap()
                .parse()
                .unwrap();
            break (at + end + 2, len);
        }
    };
    while buf.len() < start + len {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside the RDB");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&buf[start..start + 5], b"REDIS", "RDB magic");
    // After the RDB, the replication stream: a write elsewhere arrives here.
    let mut w = Resp::over(direct(&redis).await);
    assert_eq!(text(&w.cmd(&[b"SET", b"streamed-key", b"v"]).await), "+OK");
    let mut stream = buf[start + len..].to_vec();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stream.windows(12).any(|w| w == b"streamed-key") {
        assert!(Instant::now() < deadline, "no stream: {stream:?}");
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        stream.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sync_leaves_the_session_as_it_was() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    // PSYNC with a bad offset argument is refused with an error.
    c.send_raw(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$3\r\nabc\r\n*1\r\n$4\r\nPING\r\n")
        .await;
    let refused = text(&c.read().await);
    assert!(refused.starts_with("-ERR"), "{refused}");
    assert_eq!(text(&c.read().await), "+PONG");
    assert_eq!(
        text(&c.cmd(&[b"AUTH", b"x"]).await),
        "+OK",
        "still the proxy's session"
    );
}

/// Reads from `s` until what was read contains `needle`; panics after `limit`.
async fn read_until<S: AsyncRead + Unpin>(s: &mut S, needle: &[u8], limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no {:?} ({other:?}); got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&buf[..buf.len().min(300)])
            ),
        }
    }
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_replies_off_gets_the_stream_as_direct() {
    // Redis sends the replication stream even under CLIENT REPLY OFF/SKIP.
    let redis = populated(1).await;
    let proxy = Proxy::start(&redis).await;
    for mode in [&b"OFF"[..], b"SKIP"] {
        let mut input = common::encode_command(&[b"CLIENT", b"REPLY", mode]);
        input.extend(common::encode_command(&[b"SYNC"]));

        let mut d = direct(&redis).await;
        d.write_all(&input).await.unwrap();
        let direct_saw = read_until(&mut d, b"REDIS", Duration::from_secs(20)).await;
        let at = direct_saw.iter().position(|&b| b != b'\n').unwrap();
        assert_eq!(direct_saw[at], b'$', "direct");

        let mut p = TcpStream::connect(proxy.addr).await.unwrap();
        p.write_all(&input).await.unwrap();
        let proxy_saw = read_until(&mut p, b"REDIS", Duration::from_secs(20)).await;
        let at = proxy_saw.iter().position(|&b| b != b'\n').unwrap();
        assert_eq!(proxy_saw[at], b'$', "through the proxy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_ahead_of_a_refused_sync_leaves_the_session_as_it_was() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    let hello = text(&c.cmd(&[b"HELLO", b"3"]).await);
    assert!(hello.contains("proto"), "{hello}");
    assert_eq!(text(&c.cmd(&[b"CLIENT", b"TRACKING", b"ON"]).await), "+OK");
    c.cmd(&[b"GET", b"tracked"]).await;
    // The SET invalidates the key this client reads: the push comes after
    // the SET's +OK, ahead of the PSYNC's error.
    let mut input = common::encode_command(&[b"SET", b"tracked", b"v"]);
    input.extend(common::encode_command(&[b"PSYNC", b"?", b"abc"]));
    input.extend(common::encode_command(&[b"AUTH", b"legacy-password"]));
    c.send_raw(&input).await;
    assert_eq!(text(&c.read().await), "+OK");
    let push = text(&c.read().await);
    assert!(push.contains("invalidate"), "{push}");
    let refused = text(&c.read().await);
    assert!(refused.starts_with("-ERR"), "{refused}");
    assert_eq!(
        text(&c.read().await),
        "+OK",
        "the proxy still answers AUTH: the session stayed RESP"
    );
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psync_larger_than_a_streamed_command_still_starts_the_stream() {
    let redis = populated(1).await;
    let proxy = Proxy::start(&redis).await;
    // An unknown replication id of 100 KB: a full resync, as direct.
    let replid = vec![b'f'; 100 * 1024];
    let input = common::encode_command(&[b"PSYNC", &replid, b"-1"]);
    let mut p = TcpStream::connect(proxy.addr).await.unwrap();
    p.write_all(&input).await.unwrap();
    let got = read_until(&mut p, b"REDIS", Duration::from_secs(20)).await;
    let at = got.iter().position(|&b| b != b'\n').unwrap();
    assert!(
        got[at..].starts_with(b"+FULLRESYNC "),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
}

// ---- 4. replies nested deeper than any fixed limit ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_deep_script_reply_returns_and_the_session_stays_usable() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let script = b"local t={} local c=t for i=1,300 do local n={} c[1]=n c=n end return t";
    let cmd = common::encode_command(&[b"EVAL", script, b"0"]);
    let mut want = b"*1\r\n".repeat(300);
    want.extend_from_slice(b"*0\r\n");

    let mut d = direct(&redis).await;
    d.write_all(&cmd).await.unwrap();
    let mut got = vec![0u8; want.len()];
    d.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want, "direct");

    let mut p = TcpStream::connect(proxy.addr).await.unwrap();
    p.write_all(&cmd).await.unwrap();
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), p.read_exact(&mut got))
        .await
        .expect("the deep reply")
        .unwrap();
    assert_eq!(got, want, "through the proxy");
    let mut p = Resp::over(p);
    assert_eq!(text(&p.cmd(&[b"PING"]).await), "+PONG");
}

// ---- 5. commands followed at once by a half-close ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_then_a_half_close_get_their_replies_then_eof() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    // `printf 'PING\r\n' | nc -N 127.0.0.1 6379`
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PING\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(&b"+PONG\r\n"[..]));

    // A long pipeline: every reply, in order.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend(common::encode_command(&[
            b"SET",
            format!("k{i}").as_bytes(),
            b"v",
        ]));
    }
    s.write_all(&batch).await.unwrap();
    s.shutdown().await.unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got, b"+OK\r\n".repeat(2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_with_replies_off_still_runs_every_command() {
    let redis = RedisServer::start(RedisOptions {
        extra_args: vec!["--enable-debug-command".into(), "yes".into()],
        ..RedisOptions::default()
    });
    let proxy = Proxy::start(&redis).await;
    // Nothing is owed, and the server is paused: each client's EOF comes
    // while the proxy may still hold commands the kernel would not take
    // yet. How much the kernel buffers varies, so clients send from 32 KiB
    // to 2 MiB, each to a list of its own.
    let mut pause = Resp::over(direct(&redis).await);
    pause.send(&[b"DEBUG", b"SLEEP", b"3"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let value = vec![b'v'; 1024];
    let sizes_kib: Vec<usize> = (1..=32).map(|i| i * 256).collect();
    let clients: Vec<_> = sizes_kib
        .iter()
        .map(|&kib| {
            let value = value.clone();
            let addr = proxy.addr;
            tokio::spawn(async move {
                let list = format!("off:{kib}");
                let mut batch = common::encode_command(&[b"CLIENT", b"REPLY", b"OFF"]);
                for _ in 0..kib {
                    batch.extend(common::encode_command(&[b"RPUSH", list.as_bytes(), &value]));
                }
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&batch).await.unwrap();
                s.shutdown().await.unwrap();
                read_to_close(&mut s, Duration::from_secs(20)).await
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap().as_deref(), Some(&b""[..]));
    }
    assert_eq!(text(&pause.read().await), "+OK");
    let mut lost = Vec::new();
    for kib in &sizes_kib {
        let len = text(&pause.cmd(&[b"LLEN", format!("off:{kib}").as_bytes()]).await);
        if len != format!(":{kib}") {
            lost.push(format!("{kib} KiB sent, LLEN {len}"));
        }
    }
    assert!(lost.is_empty(), "commands lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_command_then_a_half_close_ends_as_direct() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let cmd = common::encode_command(&[b"BLPOP", b"empty-list", b"0"]);

    let mut d = direct(&redis).await;
    d.write_all(&cmd).await.unwrap();
    d.shutdown().await.unwrap();
    let direct_saw = read_to_close(&mut d, Duration::from_secs(5)).await;

    let mut p = TcpStream::connect(proxy.addr).await.unwrap();
    p.write_all(&cmd).await.unwrap();
    p.shutdown().await.unwrap();
    let started = Instant::now();
    let proxy_saw = read_to_close(&mut p, Duration::from_secs(5)).await;
    assert_eq!(direct_saw, Some(Vec::new()), "direct");
    assert_eq!(proxy_saw, direct_saw, "through the proxy");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

// ---- 6. protocol errors: Redis's own bytes ----

/// What a client gets for `input` direct and through a proxy, until close.
async fn both(redis: &RedisServer, proxy: &Proxy, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let limit = Duration::from_secs(5);
    let mut d = direct(redis).await;
    d.write_all(input).await.unwrap();
    let direct_saw = read_to_close(&mut d, limit)
        .await
        .unwrap_or_else(|| panic!("direct kept {input:?} open"));
    let mut p = TcpStream::connect(proxy.addr).await.unwrap();
    // The proxy answers the AUTH itself, as a legacy app's.
    auth_as_app(&mut p).await;
    p.write_all(input).await.unwrap();
    let proxy_saw = read_to_close(&mut p, limit)
        .await
        .unwrap_or_else(|| panic!("the proxy kept {input:?} open"));
    (direct_saw, proxy_saw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_error_is_redis_own_byte_for_byte() {
    // The proxy's max-frame-size and redis's proto-max-bulk-len agree, so
    // an oversized argument meets the same limit on both paths.
    let redis = RedisServer::start(RedisOptions {
        extra_args: vec!["--proto-max-bulk-len".into(), "1048576".into()],
        ..Default::default()
    });
    let mut args = Proxy::args(&redis);
    args.max_frame_size = Some("1MiB".parse().unwrap());
    let proxy = Proxy::start_with(args, PASSWORD).await;
    let mut huge_inline = vec![b'x'; 70 * 1024];
    huge_inline.extend_from_slice(b" no newline yet");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized bulk", b"*1\r\n$2000000\r\n".to_vec()),
        ("bulk over 512MB", b"*1\r\n$999999999999\r\n".to_vec()),
        ("negative bulk", b"*1\r\n$-5\r\n".to_vec()),
        ("bad bulk length", b"*1\r\n$abc\r\n".to_vec()),
        ("leading zero bulk", b"*1\r\n$04\r\nPING\r\n".to_vec()),
        ("bad multibulk length", b"*x\r\n".to_vec()),
        ("huge multibulk length", b"*99999999999\r\n".to_vec()),
        ("not a bulk", b"*2\r\n:1\r\n".to_vec()),
        ("unbalanced quotes", b"SET k \"v\r\n".to_vec()),
        ("huge inline", huge_inline),
        (
            "replies before the error",
            b"PING\r\nPING\r\n*1\r\n$x\r\n".to_vec(),
        ),
        (
            "no CRLF after an argument",
            b"*1\r\n$4\r\nPINGxxQUIT\r\n".to_vec(),
        ),
    ];
    for (name, input) in cases {
        let (direct_saw, proxy_saw) = both(&redis, &proxy, &input).await;
        assert!(!direct_saw.is_empty(), "{name}: direct said nothing");
        assert_eq!(
            String::from_utf8_lossy(&proxy_saw),
            String::from_utf8_lossy(&direct_saw),
            "{name}"
        );
    }
}

// ---- 11. a TLS client on the plain listener ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_is_told_in_the_log_counted_and_closed() {
    let redis = RedisServer::start(RedisOptions::default());
    // The pool off: it would open connections of its own.
    let proxy = Proxy::start_with(Proxy::no_pool(Proxy::args(&redis)), "app-secret-pw").await;
    let handshake = common::tls_connect(&redis.tls_connector(), proxy.addr.port()).await;
    assert!(
        handshake.is_err(),
        "a TLS handshake with the plain listener succeeded"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = metrics(proxy.admin).await;
    assert_eq!(series(&m, "client_tls_refused_total"), 1.0, "{m}");
    assert_eq!(series(&m, "upstream_connections_total"), 0.0, "{m}");
}

// ---- the optional local client password ----

const CLIENT_PW_VAR: &str = "TEST_CLIENT_PASSWORD";
const CLIENT_PW: &str = "local-client-pw";

async fn with_client_password(redis: &RedisServer) -> Proxy {
    // The pool off: the tests count what reaches the server, to which the
    // pool's refills would add their own connections and AUTHs.
    let mut args = Proxy::no_pool(Proxy::args(redis));
    args.client_password_env = Some(CLIENT_PW_VAR.into());
    // `Proxy::start_with` only knows the upstream password's variable.
    let env = |k: &str| match k {
        common::PASSWORD_ENV => Some(PASSWORD.to_string()),
        CLIENT_PW_VAR => Some(CLIENT_PW.to_string()),
        _ => None,
    };
    let cfg = config::Config::load(args, &env).expect("valid config");
    Proxy::serve_config(&cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_password_is_required_and_checked_as_redis_does() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = with_client_password(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(
        text(&c.cmd(&[b"GET", b"k"]).await),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        text(&c.cmd(&[b"HELLO", b"3"]).await),
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.";
    assert_eq!(text(&c.cmd(&[b"AUTH", b"nope"]).await), wrongpass);
    assert_eq!(text(&c.cmd(&[b"AUTH", b"app", b"nope"]).await), wrongpass);
    assert_eq!(
        text(&c.cmd(&[b"PING"]).await),
        "-NOAUTH Authentication required."
    );
    // Before AUTH, Redis's limits for unauthenticated clients apply.
    c.send_raw(b"*11\r\n").await;
    assert_eq!(
        text(&c.read().await),
        "-ERR Protocol error: unauthenticated multibulk length"
    );
    assert!(c.read_closed().await);

    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"AUTH", CLIENT_PW.as_bytes()]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    // RESET de-authenticates, as in Redis.
    assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
    assert_eq!(
        text(&c.cmd(&[b"PING"]).await),
        "-NOAUTH Authentication required."
    );
    assert_eq!(
        text(&c.cmd(&[b"AUTH", b"any-user", CLIENT_PW.as_bytes()]).await),
        "+OK"
    );
    assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");

    let mut c = Resp::connect(proxy.addr).await;
    let hello = text(
        &c.cmd(&[b"HELLO", b"3", b"AUTH", b"u", CLIENT_PW.as_bytes()])
            .await,
    );
    assert!(hello.contains("proto"), "{hello}");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");

    let m = metrics(proxy.admin).await;
    assert_eq!(
        series(&m, r#"client_auth_total{outcome="failure"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(
        series(&m, r#"client_auth_total{outcome="success"}"#),
        3.0,
        "{m}"
    );
}

/// `cmdstat_auth` calls and connections received, as the server counts them.
async fn server_auths_and_connections(redis: &RedisServer) -> (u64, u64) {
    let mut d = Resp::over(direct(redis).await);
    let info = text(&d.cmd(&[b"INFO", b"all"]).await);
    // `cmdstat_auth:calls=3,usec=...` and `total_connections_received:7`.
    let number = |prefix: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map_or(0, |rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
    };
    (
        number("cmdstat_auth:calls="),
        number("total_connections_received:"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_costs_no_upstream_auth() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = with_client_password(&redis).await;
    let (auths, conns) = server_auths_and_connections(&redis).await;

    // A client without the password, trying everything it may.
    let mut c = Resp::connect(proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(
            text(&c.cmd(&[b"GET", b"k"]).await),
            "-NOAUTH Authentication required."
        );
        assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
        let wrong = text(&c.cmd(&[b"AUTH", b"guess"]).await);
        assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
        let wrong = text(&c.cmd(&[b"HELLO", b"3", b"AUTH", b"u", b"guess"]).await);
        assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
    }
    assert_eq!(text(&c.cmd(&[b"QUIT"]).await), "+OK");
    assert!(c.read_closed().await);
    // (the direct connection that reads the counters is one connection and
    // one AUTH of its own)
    assert_eq!(
        server_auths_and_connections(&redis).await,
        (auths + 1, conns + 1),
        "nothing reached the server"
    );

    // Authenticated, then RESET: once re-authenticated upstream, later
    // RESETs before the next AUTH are answered by the proxy.
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"AUTH", CLIENT_PW.as_bytes()]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
    let (auths, _) = server_auths_and_connections(&redis).await;
    for _ in 0..5 {
        assert_eq!(text(&c.cmd(&[b"RESET"]).await), "+RESET");
    }
    assert_eq!(
        text(&c.cmd(&[b"PING"]).await),
        "-NOAUTH Authentication required."
    );
    assert_eq!(text(&c.cmd(&[b"AUTH", CLIENT_PW.as_bytes()]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(server_auths_and_connections(&redis).await.0, auths + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_password_any_auth_is_answered_ok() {
    let redis = RedisServer::start(RedisOptions::default());
    let proxy = Proxy::start(&redis).await;
    let mut c = Resp::connect(proxy.addr).await;
    assert_eq!(text(&c.cmd(&[b"AUTH", b"whatever"]).await), "+OK");
    assert_eq!(text(&c.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
}

// ---- 9. shutdown ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_idle_sessions_at_once_and_finishes_owed_replies() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.drain_timeout = Some("20s".parse().unwrap());
    let mut proxy = Proxy::start_with(args, PASSWORD).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut c = Resp::connect(proxy.addr).await;
        assert_eq!(text(&c.cmd(&[b"PING"]).await), "+PONG");
        idle.push(c);
    }
    let mut busy = Resp::connect(proxy.addr).await;
    busy.send(&[b"BLPOP", b"empty-list", b"1"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let drained = proxy.shutdown();
    for c in &mut idle {
        assert!(c.read_closed().await, "an idle session stayed open");
    }
    // The blocked command's reply is owed: it comes, then the close.
    assert_eq!(text(&busy.read().await), "_", "BLPOP timed out: nil");
    assert!(busy.read_closed().await);
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drained long before the 20 s deadline")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_keeps_subscribers_until_the_deadline() {
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.drain_timeout = Some("2s".parse().unwrap());
    let mut proxy = Proxy::start_with(args, PASSWORD).await;
    let mut sub = Resp::connect(proxy.addr).await;
    let confirm = text(&sub.cmd(&[b"SUBSCRIBE", b"news"]).await);
    assert!(confirm.contains("subscribe"), "{confirm}");
    let started = Instant::now();
    let drained = proxy.shutdown();
    // Still subscribed and delivered to after the drain began.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = Resp::over(direct(&redis).await);
    assert_eq!(
        text(&publisher.cmd(&[b"PUBLISH", b"news", b"m1"]).await),
        ":1"
    );
    let message = text(&sub.read().await);
    assert!(message.contains("m1"), "{message}");
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert!(sub.read_closed().await);
}

// ---- 8. health that tells the truth ----

/// `(status, body)` of `GET path` on the admin port.
async fn http_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let raw = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Polls `path` until it answers `want`, for up to 10 s.
async fn becomes(admin: SocketAddr, path: &str, want: (u16, &str)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = http_get(admin, path).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_and_readiness_follow_whether_the_upstream_authenticates() {
    let redis = RedisServer::start(RedisOptions::default());
    // Password mode with the wrong password: every connection would fail.
    // The pool off: a pooled connection authenticated before the password
    // changed would serve a client after it.
    let proxy = Proxy::start_with(Proxy::no_pool(Proxy::args(&redis)), "not-the-password").await;
    let failing = (503, "upstream failing: auth_rejected");
    becomes(proxy.admin, "/startup", failing).await;
    becomes(proxy.admin, "/readiness", failing).await;
    assert_eq!(http_get(proxy.admin, "/liveness").await, (200, "ok".into()));
    // Probes are rate-limited however often the endpoints are asked.
    for _ in 0..20 {
        http_get(proxy.admin, "/readiness").await;
    }
    let probes = series(
        &metrics(proxy.admin).await,
        r#"upstream_probes_total{outcome="failure"}"#,
    );
    assert!((1.0..=3.0).contains(&probes), "{probes} probes");

    // The server starts accepting that password: the next probe sees it.
    let mut admin = Resp::over(direct(&redis).await);
    let set = admin
        .cmd(&[b"ACL", b"SETUSER", b"app", b">not-the-password"])
        .await;
    assert_eq!(text(&set), "+OK");
    becomes(proxy.admin, "/readiness", (200, "ok")).await;
    assert_eq!(http_get(proxy.admin, "/startup").await, (200, "ok".into()));

    // A real session's failure turns readiness at once, without a probe.
    let set = admin
        .cmd(&[b"ACL", b"SETUSER", b"app", b"resetpass", b">another"])
        .await;
    assert_eq!(text(&set), "+OK");
    let mut c = Resp::connect(proxy.addr).await;
    let refused = text(&c.cmd(&[b"PING"]).await);
    assert!(refused.contains("rejected"), "{refused}");
    let (status, body) = http_get(proxy.admin, "/readiness").await;
    assert_eq!((status, body.as_str()), failing);
    // Started stays started.
    assert_eq!(http_get(proxy.admin, "/startup").await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_never_waits_for_a_probe() {
    // Accepts TCP and never answers: a probe hangs for the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = RedisServer::start(RedisOptions::default());
    let mut args = Proxy::args(&redis);
    args.upstream = Some(
        format!("localhost:{}", silent.local_addr().unwrap().port())
            .parse()
            .unwrap(),
    );
    args.connect_timeout = Some("5s".parse().unwrap());
    let proxy = Proxy::start_with(args, PASSWORD).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = http_get(proxy.admin, "/readiness").await;
        assert_eq!((status, body.as_str()), (503, "starting"));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}
