//! Proves the harness itself against a real redis-server: TLS, ACL users,
//! CA pinning, mTLS, kill-on-drop, and the real redis-cli.

mod common;

use std::net::TcpStream;

use common::{redis_cli, text, tls_connect, tls_connector, RedisOptions, RedisServer, Resp};

#[tokio::test]
async fn tls_auth_and_default_user_off() {
    let server = RedisServer::start(RedisOptions::default());
    let connector = server.tls_connector();

    let mut app = Resp::over(tls_connect(&connector, server.tls_port).await.unwrap());
    assert_eq!(
        text(&app.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );
    assert_eq!(text(&app.cmd(&[b"ACL", b"WHOAMI"]).await), "$app");
    assert_eq!(text(&app.cmd(&[b"SET", b"k", b"v"]).await), "+OK");
    // RESP2 nulls, bare and nested, then the RESP3 null after HELLO 3.
    assert_eq!(text(&app.cmd(&[b"GET", b"missing"]).await), "_");
    assert_eq!(text(&app.cmd(&[b"MGET", b"k", b"missing"]).await), "[v,_]");
    assert_eq!(text(&app.cmd(&[b"RPUSH", b"l", b"a", b"b"]).await), ":2");
    assert_eq!(
        text(&app.cmd(&[b"LRANGE", b"l", b"0", b"-1"]).await),
        "[a,b]"
    );

    // Several commands in one write: replies come back one frame at a time.
    app.send_raw(&[common::encode_command(&[b"PING"]), b"GET k\r\n".to_vec()].concat())
        .await;
    assert_eq!(text(&app.read().await), "+PONG");
    assert_eq!(text(&app.read().await), "$v");

    let hello = text(&app.cmd(&[b"HELLO", b"3"]).await);
    assert!(
        hello.starts_with("%{") && hello.contains("proto:3"),
        "{hello}"
    );

    let mut anon = Resp::over(tls_connect(&connector, server.tls_port).await.unwrap());
    let reply = text(&anon.cmd(&[b"GET", b"x"]).await);
    assert!(reply.starts_with("-NOAUTH"), "{reply}");
    let reply = text(&anon.cmd(&[b"AUTH", b"default", b""]).await);
    assert!(reply.starts_with("-WRONGPASS"), "{reply}");
}

#[tokio::test]
async fn wrong_ca_is_refused() {
    let server = RedisServer::start(RedisOptions::default());
    let wrong = tls_connector(&server.certs.other_ca, None);
    let err = tls_connect(&wrong, server.tls_port)
        .await
        .expect_err("handshake must fail");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_cert_required() {
    let server = RedisServer::start(RedisOptions {
        require_client_cert: true,
        ..Default::default()
    });
    let certs = &server.certs;

    // With TLS 1.3 the client finishes its side before the server checks for a
    // certificate, so the refusal may surface as an alert on the first read.
    match tls_connect(&server.tls_connector(), server.tls_port).await {
        Err(_) => {}
        Ok(stream) => assert!(
            Resp::over(stream).read_closed().await,
            "no-cert session survived"
        ),
    }

    let mtls = tls_connector(&certs.ca, Some((&certs.client_cert, &certs.client_key)));
    let mut conn = Resp::over(tls_connect(&mtls, server.tls_port).await.unwrap());
    assert_eq!(
        text(&conn.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );
    assert_eq!(text(&conn.cmd(&[b"PING"]).await), "+PONG");
}

#[tokio::test]
async fn plain_port_and_kill_mid_session() {
    let mut server = RedisServer::start(RedisOptions {
        plain_port: true,
        ..Default::default()
    });
    let mut plain = Resp::connect(server.plain_addr().unwrap()).await;
    assert_eq!(
        text(&plain.cmd(&[b"AUTH", b"app", b"app-secret-pw"]).await),
        "+OK"
    );

    server.kill();
    assert!(
        plain.read_closed().await,
        "session must see the upstream die"
    );
    assert!(TcpStream::connect(server.tls_addr()).is_err());
    assert!(server.log().contains("Ready to accept connections"));
}

#[test]
fn drop_kills_the_server() {
    let server = RedisServer::start(RedisOptions::default());
    let addr = server.tls_addr();
    assert!(TcpStream::connect(addr).is_ok());
    drop(server);
    // Kill + wait on drop: the kernel has closed the listener by now.
    assert!(
        TcpStream::connect(addr).is_err(),
        "port {} still accepting",
        addr.port()
    );
}

#[test]
fn real_redis_cli_over_tls() {
    let server = RedisServer::start(RedisOptions::default());
    let port = server.tls_port.to_string();
    let ca = server.certs.ca.display().to_string();
    let out = redis_cli(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--tls",
        "--cacert",
        &ca,
        "--user",
        "app",
        "--pass",
        "app-secret-pw",
        "--no-auth-warning",
        "PING",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

#[tokio::test]
async fn resp_reassembles_split_frames() {
    let (client, mut peer) = tokio::io::duplex(64);
    let mut resp = Resp::over(client);
    // One byte per write: every prefix of each frame is seen as incomplete.
    let wire = b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n%1\r\n+k\r\n_\r\n-ERR boom\r\n";
    let writer = tokio::spawn(async move {
        for byte in wire {
            tokio::io::AsyncWriteExt::write_all(&mut peer, &[*byte])
                .await
                .unwrap();
        }
        peer // keep open until the reader is done
    });
    assert_eq!(text(&resp.read().await), "[a,_,7]");
    assert_eq!(text(&resp.read().await), "%{k:_}");
    assert_eq!(text(&resp.read().await), "-ERR boom");
    drop(writer.await.unwrap());
    assert!(resp.read_closed().await);
}
