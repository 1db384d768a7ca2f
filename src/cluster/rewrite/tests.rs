//! Rewrites checked against replies captured from a Redis 7.0 TLS cluster.

use super::*;

/// Maps upstream port p to 127.0.0.1:(p + 10000) and records each node.
fn locator(seen: &mut Vec<(Option<String>, String, u16, Option<Role>)>) -> impl Locate + '_ {
    move |n: &Named<'_>| {
        seen.push((n.id.map(str::to_string), n.host.to_string(), n.port, n.role));
        Some(SocketAddr::from(([127, 0, 0, 1], n.port + 10000)))
    }
}

const ID1: &str = "53d97bbcc2c05ca9b9bff2cd8e13eed7e561ffff";

#[test]
fn moved_and_ask_name_the_local_listener() {
    let mut seen = Vec::new();
    let mut loc = locator(&mut seen);
    assert_eq!(
        redirect(b"-MOVED 12182 127.0.0.1:7103\r\n", "h", &mut loc),
        Some((
            Redirect::Moved,
            b"-MOVED 12182 127.0.0.1:17103\r\n".to_vec()
        ))
    );
    assert_eq!(
        redirect(b"-ASK 1 node-2.example:7102\r\n", "h", &mut loc),
        Some((Redirect::Ask, b"-ASK 1 127.0.0.1:17102\r\n".to_vec()))
    );
    // An unknown endpoint (empty host) is the node the session is on.
    assert_eq!(
        redirect(b"-MOVED 5 :7101\r\n", "current.example", &mut loc),
        Some((Redirect::Moved, b"-MOVED 5 127.0.0.1:17101\r\n".to_vec()))
    );
    assert_eq!(redirect(b"-MOVED oops\r\n", "h", &mut loc), None);
    drop(loc);
    assert_eq!(seen[1].1, "node-2.example");
    assert_eq!(seen[2].1, "current.example");
    assert!(is_redirect(b"-ASK 1 a:1\r\n") && !is_redirect(b"-ERR MOVED\r\n"));
}

#[test]
fn cluster_slots_resp2_and_resp3() {
    for meta in ["*0", "%0"] {
        let reply = format!(
            "*1\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7101\r\n$40\r\n{ID1}\r\n{meta}\r\n*4\r\n$9\r\n127.0.0.1\r\n:7104\r\n$2\r\nr1\r\n{meta}\r\n"
        );
        let mut seen = Vec::new();
        let out = slots(reply.as_bytes(), "h", &mut locator(&mut seen)).unwrap();
        let want = format!(
            "*1\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:17101\r\n$40\r\n{ID1}\r\n{meta}\r\n*4\r\n$9\r\n127.0.0.1\r\n:17104\r\n$2\r\nr1\r\n{meta}\r\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert_eq!(seen[0].3, Some(Role::Primary));
        assert_eq!(seen[1].3, Some(Role::Replica));
        assert_eq!(seen[0].0.as_deref(), Some(ID1));
    }
    // Redis 7's networking metadata, announced by hostname.
    let reply = b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$10\r\nnode-1.tld\r\n:7101\r\n$2\r\nn1\r\n%2\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n$8\r\nhostname\r\n$10\r\nnode-1.tld\r\n";
    let mut seen = Vec::new();
    let out = slots(reply, "h", &mut locator(&mut seen)).unwrap();
    assert_eq!(
        out,
        b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:17101\r\n$2\r\nn1\r\n%2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nhostname\r\n$9\r\n127.0.0.1\r\n"
    );
    assert_eq!(seen[0].1, "node-1.tld");
}

/// Captured from a one-node Redis 7.0 cluster that never met a peer (how a
/// serverless-like single node answers): it does not know its own IP, so
/// every endpoint is empty, meaning "the node you asked".
#[test]
fn an_empty_endpoint_is_the_node_asked() {
    let id = "78b6db8d04e72da5a7d1faf73265e4591d63c3f3";
    let slots_reply =
        format!("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:7991\r\n$40\r\n{id}\r\n*0\r\n");
    let mut seen = Vec::new();
    let out = slots(
        slots_reply.as_bytes(),
        "cache.example",
        &mut locator(&mut seen),
    )
    .unwrap();
    let want = format!(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:17991\r\n$40\r\n{id}\r\n*0\r\n"
    );
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!(seen[0].1, "cache.example");

    let shards_reply = format!("*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n$2\r\nid\r\n$40\r\n{id}\r\n$4\r\nport\r\n:7991\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n");
    let mut seen = Vec::new();
    let out = shards(
        shards_reply.as_bytes(),
        true,
        "cache.example",
        &mut locator(&mut seen),
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(
            ":17991\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n"
        ),
        "{out}"
    );
    assert_eq!(seen[0].1, "cache.example");

    let line = format!("{id} :7991@17991 myself,master - 0 0 0 connected 0-16383\n");
    let nodes_reply = format!("${}\r\n{line}\r\n", line.len());
    let mut seen = Vec::new();
    let out = nodes(
        nodes_reply.as_bytes(),
        "cache.example",
        &mut locator(&mut seen),
    )
    .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains(" 127.0.0.1:17991@17991 myself"));
    assert_eq!(seen[0].1, "cache.example");

    // `?` (a hostname is preferred but none is set) stays as it is.
    let unknown = b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$1\r\n?\r\n:7991\r\n$2\r\nn1\r\n";
    let out = slots(unknown, "cache.example", &mut locator(&mut Vec::new())).unwrap();
    assert_eq!(out, unknown.to_vec());
}

#[test]
fn cluster_shards_gets_one_plaintext_port() {
    for map in ["*14", "%7"] {
        let node = format!("{map}\r\n$2\r\nid\r\n$2\r\nn1\r\n$8\r\ntls-port\r\n:7103\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n");
        let shard_head = if map == "%7" { "%2" } else { "*4" };
        let reply = format!("*1\r\n{shard_head}\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n{node}");
        let mut seen = Vec::new();
        let out = String::from_utf8(
            shards(reply.as_bytes(), true, "h", &mut locator(&mut seen)).unwrap(),
        )
        .unwrap();
        assert!(out.contains("$4\r\nport\r\n:17103\r\n"), "{out}");
        assert!(!out.contains("tls-port") && !out.contains(":7103"), "{out}");
        assert!(
            out.contains("$6\r\nmaster\r\n$18\r\nreplication-offset"),
            "{out}"
        );
        assert_eq!(
            seen,
            vec![(
                Some("n1".into()),
                "127.0.0.1".into(),
                7103,
                Some(Role::Primary)
            )]
        );
    }
}

#[test]
fn cluster_nodes_and_replicas_lines() {
    let text = format!(
        "0342b5 127.0.0.1:7103@17103 master - 0 1796206752766 3 connected 10923-16383\n{ID1} 127.0.0.1:7101@17101,node-1.tld myself,master - 0 0 1 connected 0-5460\nbad line\n"
    );
    let reply = format!("${}\r\n{text}\r\n", text.len());
    let mut seen = Vec::new();
    let out =
        String::from_utf8(nodes(reply.as_bytes(), "h", &mut locator(&mut seen)).unwrap()).unwrap();
    assert!(
        out.contains("0342b5 127.0.0.1:17103@17103 master -"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{ID1} 127.0.0.1:17101@17101,127.0.0.1 myself,master"
        )),
        "{out}"
    );
    assert!(out.contains("\nbad line\n"), "{out}");
    assert_eq!(seen[1].1, "node-1.tld");
    // The bulk length was recomputed: the reply still parses whole.
    assert_eq!(tree::parse(out.as_bytes()).map(|(_, n)| n), Some(out.len()));

    // RESP3 verbatim text, and REPLICAS' array of lines.
    let verbatim = format!("={}\r\ntxt:{text}\r\n", text.len() + 4);
    let out =
        String::from_utf8(nodes(verbatim.as_bytes(), "h", &mut locator(&mut Vec::new())).unwrap())
            .unwrap();
    assert!(
        out.starts_with('=') && out.contains("txt:0342b5 127.0.0.1:17103@17103"),
        "{out}"
    );
    let line = "r1 127.0.0.1:7104@17104 slave 0342b5 0 0 3 connected";
    let replicas = format!("*1\r\n${}\r\n{line}\r\n", line.len());
    let out =
        String::from_utf8(nodes(replicas.as_bytes(), "h", &mut locator(&mut Vec::new())).unwrap())
            .unwrap();
    assert!(out.contains("r1 127.0.0.1:17104@17104 slave"), "{out}");
}

#[test]
fn exec_results_with_redirects() {
    let reply = b"*3\r\n+OK\r\n-MOVED 1 127.0.0.1:7102\r\n:1\r\n";
    let mut kinds = Vec::new();
    let out = exec(reply, "h", &mut locator(&mut Vec::new()), |k| kinds.push(k)).unwrap();
    assert_eq!(out, b"*3\r\n+OK\r\n-MOVED 1 127.0.0.1:17102\r\n:1\r\n");
    assert_eq!(kinds, vec![Redirect::Moved]);
    assert_eq!(
        exec(b"*1\r\n+OK\r\n", "h", &mut locator(&mut Vec::new()), |_| {}),
        None
    );
}
