//! The whole session relay in memory (`session::fuzzing::Harness`): a
//! fuzzer-chosen client stream, cut into fuzzer-chosen reads, goes through
//! the proxy to a scripted server that answers every command in order, in
//! fuzzer-chosen pieces, while re-authentications fall due at fuzzer-chosen
//! points. What the client receives must be exactly what the same server
//! gives the same commands on a direct connection (invariant 2), except what
//! the proxy owns: its answer to the client's AUTH. The proxy's own AUTHs
//! reach the server only at safe points (invariant 3) and never show; the
//! session never sticks, and holds no more than its bounds (invariant 7).
//!
//! Each input byte is one step: `00cccccc` appends command `c` (bit 5:
//! inline) to what the client will send; `01nnnnnn` the client sends up to
//! n+1 more bytes; `10nnnnnn` the server sends up to n+1 bytes of its
//! output; `11......` a re-authentication falls due.
#![no_main]

use std::sync::{Arc, OnceLock};

use elasticache_auth_proxy::session::{fuzzing::Harness, Context};
use elasticache_auth_proxy_fuzz::reference;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

const PROXY_USER: &str = "fuzz-proxy-user";
const PROXY_SECRET: &str = "fuzz-proxy-secret-b7e1";

/// What the proxy answers for the client's AUTH inside MULTI (it cannot
/// queue a command it answers itself).
const AUTH_IN_MULTI: &[u8] = b"-ERR elasticache-auth-proxy: AUTH inside MULTI is not supported; the proxy authenticates the connection itself\r\n";

/// The commands a client sends; the server below knows each.
const COMMANDS: &[&[&str]] = &[
    &["GET", "k"],
    &["SET", "k", "v v"],
    &["PING"],
    &["AUTH", "app", "app-pass"],
    &["AUTH", "app-pass"],
    &["AUTH"],
    &["AUTH", "a", "b", "c"],
    &["HELLO", "3"],
    &["HELLO", "2", "AUTH", "app", "app-pass"],
    &["HELLO", "3", "AUTH", "app", "app-pass", "SETNAME", "app"],
    &["HELLO"],
    &["MULTI"],
    &["EXEC"],
    &["DISCARD"],
    &["CLIENT", "REPLY", "OFF"],
    &["CLIENT", "REPLY", "ON"],
    &["CLIENT", "REPLY", "SKIP"],
    &["RESET"],
    &["INCR", "n"],
    &["ECHO", "it's \"q\""],
];

fn context() -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    CTX.get_or_init(|| Harness::context(PROXY_USER, PROXY_SECRET))
        .clone()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    On,
    Off,
    /// CLIENT REPLY SKIP ran: the next command's reply is dropped.
    SkipNext,
    Skip,
}

/// A Redis-like server for the commands above. `direct` plays the same
/// server as a client's direct connection would meet it, with the proxy's
/// own answers where the proxy owns the reply.
struct Server {
    direct: bool,
    authed: bool,
    multi: Option<Vec<Vec<Vec<u8>>>>,
    mode: Mode,
    proto: u8,
    counter: i64,
    /// Replies produced and not yet sent.
    out: Vec<u8>,
    /// Bytes received and not yet parsed (the proxy side).
    input: Vec<u8>,
    last_was_reset: bool,
}

impl Server {
    fn new(direct: bool) -> Server {
        Server {
            direct,
            authed: true,
            multi: None,
            mode: Mode::On,
            proto: 2,
            counter: 0,
            out: Vec::new(),
            input: Vec::new(),
            last_was_reset: false,
        }
    }

    /// Takes bytes from the proxy and runs every complete command.
    fn receive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            let (frame, n) = match decode(&self.input) {
                Ok(Some(done)) => done,
                Ok(None) => return,
                Err(e) => panic!("the proxy sent the server invalid RESP: {e:?}"),
            };
            let OwnedFrame::Array(items) = frame else {
                panic!("the proxy sent the server a non-command: {frame:?}");
            };
            let args = items
                .into_iter()
                .map(|i| match i {
                    OwnedFrame::BulkString(b) => b,
                    other => panic!("the proxy sent a non-bulk argument: {other:?}"),
                })
                .collect::<Vec<_>>();
            self.input.drain(..n);
            self.command(&args);
        }
    }

    fn command(&mut self, args: &[Vec<u8>]) {
        let name = args[0].to_ascii_lowercase();
        let reset_before = std::mem::replace(&mut self.last_was_reset, name == b"reset");
        if name == b"auth" && !self.direct {
            // Only the proxy's own AUTH may reach the server.
            assert_eq!(
                args,
                [&b"AUTH"[..], PROXY_USER.as_bytes(), PROXY_SECRET.as_bytes()],
                "a client AUTH reached the server"
            );
            assert!(self.multi.is_none(), "the proxy sent AUTH inside MULTI");
            assert_eq!(self.mode, Mode::On, "the proxy sent AUTH with replies off");
            // After RESET it goes right behind it; a re-auth waits for quiet.
            assert!(
                reset_before || self.out.is_empty(),
                "the proxy re-authenticated with replies outstanding"
            );
        }
        if name == b"auth" && self.direct {
            // The proxy answers the client's AUTH itself, in its turn.
            let reply = match args.len() {
                2 | 3 if self.multi.is_some() => AUTH_IN_MULTI.to_vec(),
                2 | 3 => b"+OK\r\n".to_vec(),
                4.. => b"-ERR syntax error\r\n".to_vec(),
                _ => b"-ERR wrong number of arguments for 'auth' command\r\n".to_vec(),
            };
            return self.emit(Some(reply));
        }
        if self.multi.is_some() && !matches!(&name[..], b"exec" | b"discard" | b"multi" | b"reset")
        {
            self.multi.as_mut().expect("checked").push(args.to_vec());
            return self.emit(Some(b"+QUEUED\r\n".to_vec()));
        }
        let reply = self.run(&name, args);
        self.emit(reply);
    }

    /// Sends a command's reply as CLIENT REPLY allows, then moves a SKIP on
    /// (Redis's resetClient).
    fn emit(&mut self, reply: Option<Vec<u8>>) {
        if let (Some(r), Mode::On) = (reply, self.mode) {
            self.out.extend_from_slice(&r);
        }
        self.mode = match self.mode {
            Mode::Skip => Mode::On,
            Mode::SkipNext => Mode::Skip,
            m => m,
        };
    }

    fn run(&mut self, name: &[u8], args: &[Vec<u8>]) -> Option<Vec<u8>> {
        let no_auth = matches!(name, b"auth" | b"hello" | b"reset");
        if !self.authed && !no_auth {
            return Some(b"-NOAUTH Authentication required.\r\n".to_vec());
        }
        Some(match name {
            b"auth" => {
                self.authed = true;
                b"+OK\r\n".to_vec()
            }
            b"hello" => {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                match reference::hello(&refs) {
                    reference::Hello::Run { proto, auth, .. } => {
                        if auth.is_none() && !self.authed {
                            return Some(b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n".to_vec());
                        }
                        self.authed = true;
                        if let Some(p) = proto {
                            self.proto = p as u8;
                        }
                        if self.proto == 3 {
                            b"%1\r\n+server\r\n+redis\r\n".to_vec()
                        } else {
                            b"*2\r\n+server\r\n+redis\r\n".to_vec()
                        }
                    }
                    other => panic!("HELLO the fuzzer does not send: {other:?}"),
                }
            }
            b"multi" if self.multi.is_some() => b"-ERR MULTI calls can not be nested\r\n".to_vec(),
            b"multi" => {
                self.multi = Some(Vec::new());
                b"+OK\r\n".to_vec()
            }
            b"exec" | b"discard" => match self.multi.take() {
                None if name == b"exec" => b"-ERR EXEC without MULTI\r\n".to_vec(),
                None => b"-ERR DISCARD without MULTI\r\n".to_vec(),
                Some(_) if name == b"discard" => b"+OK\r\n".to_vec(),
                Some(queued) => {
                    let mut out = format!("*{}\r\n", queued.len()).into_bytes();
                    for q in queued {
                        let name = q[0].to_ascii_lowercase();
                        let r = self.run(&name, &q).expect("queued commands reply");
                        out.extend_from_slice(&r);
                    }
                    out
                }
            },
            b"client" => {
                let mode = args[2].to_ascii_lowercase();
                match &mode[..] {
                    b"off" => self.mode = Mode::Off,
                    b"skip" if self.mode != Mode::Off => self.mode = Mode::SkipNext,
                    b"skip" => {}
                    _ => {
                        self.mode = Mode::On;
                        return Some(b"+OK\r\n".to_vec());
                    }
                }
                return None;
            }
            b"reset" => {
                self.multi = None;
                // RESET turns replies back on, but a pending SKIP still
                // swallows its own reply (clearClientConnectionState).
                if self.mode != Mode::Skip {
                    self.mode = Mode::On;
                }
                self.proto = 2;
                // Through the proxy RESET logs the connection out (the
                // proxy logs it back in); a direct client keeps its login.
                self.authed = self.direct;
                b"+RESET\r\n".to_vec()
            }
            b"ping" => b"+PONG\r\n".to_vec(),
            b"echo" => {
                let a = &args[1];
                let mut out = format!("${}\r\n", a.len()).into_bytes();
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
                out
            }
            _ => {
                self.counter += 1;
                format!(":{}\r\n", self.counter).into_bytes()
            }
        })
    }
}

/// Encodes a command as a client sends it: multibulk, or an inline line
/// with quotes where an argument needs them.
fn encode(args: &[&str], inline: bool) -> Vec<u8> {
    if !inline {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        return reference::encode_command(&refs);
    }
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains([' ', '"', '\'']) {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                a.to_string()
            }
        })
        .collect();
    format!("{}\r\n", words.join(" ")).into_bytes()
}

/// The direct connection's replies to the commands the client sent, read
/// from its byte stream by the references (decoder, sdssplitargs).
fn direct_replies(mut stream: &[u8]) -> Vec<u8> {
    let mut server = Server::new(true);
    while !stream.is_empty() {
        let (args, n) = if stream[0] == b'*' {
            match decode(stream) {
                Ok(Some((OwnedFrame::Array(items), n))) => (
                    items
                        .into_iter()
                        .map(|i| match i {
                            OwnedFrame::BulkString(b) => b,
                            _ => unreachable!("the fuzzer encodes bulk strings"),
                        })
                        .collect::<Vec<_>>(),
                    n,
                ),
                other => unreachable!("the fuzzer encodes whole commands: {other:?}"),
            }
        } else {
            let nl = stream
                .iter()
                .position(|&b| b == b'\n')
                .expect("inline ends in LF");
            let line = stream[..nl].strip_suffix(b"\r").unwrap_or(&stream[..nl]);
            (
                reference::sdssplitargs(line).expect("balanced quotes"),
                nl + 1,
            )
        };
        server.command(&args);
        stream = &stream[n..];
    }
    server.out
}

/// Moves what the relay queued: to the server (which answers at once into
/// its output) and to the client.
fn pump(relay: &mut Harness, server: &mut Server, received: &mut Vec<u8>) {
    server.receive(&relay.take_to_server());
    received.extend(relay.take_to_client());
    // Invariant 7: what the session holds stays within its bounds.
    assert!(
        relay.held() < 4 << 20,
        "the session holds {} bytes",
        relay.held()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut relay = Harness::new(context());
    let mut server = Server::new(false);
    let mut client_stream = Vec::new();
    let mut sent = 0;
    let mut received = Vec::new();
    // CLIENT REPLY inside MULTI takes effect mid-EXEC, which no client
    // relies on; the generator keeps it out.
    let mut in_multi = false;

    for &step in data {
        let n = usize::from(step & 0x3f) + 1;
        match step >> 6 {
            0 => {
                let args = COMMANDS[usize::from(step & 0x1f) % COMMANDS.len()];
                match args[0] {
                    "MULTI" => in_multi = true,
                    "EXEC" | "DISCARD" | "RESET" => in_multi = false,
                    "CLIENT" if in_multi => continue,
                    _ => {}
                }
                client_stream.extend(encode(args, step & 0x20 != 0));
            }
            1 if relay.reads_client() && sent < client_stream.len() => {
                let end = (sent + n).min(client_stream.len());
                relay.client_read(&client_stream[sent..end]);
                sent = end;
            }
            2 if relay.reads_server() && !server.out.is_empty() => {
                let chunk: Vec<u8> = server.out.drain(..n.min(server.out.len())).collect();
                relay.server_read(&chunk);
            }
            3 => relay.reauth_due(),
            _ => {}
        }
        pump(&mut relay, &mut server, &mut received);
        if relay.closing() {
            break;
        }
    }
    // Then everything flows until nothing moves.
    loop {
        let before = (sent, server.out.len(), received.len());
        if relay.reads_client() && sent < client_stream.len() {
            relay.client_read(&client_stream[sent..]);
            sent = client_stream.len();
        }
        pump(&mut relay, &mut server, &mut received);
        if relay.reads_server() && !server.out.is_empty() {
            let all = std::mem::take(&mut server.out);
            relay.server_read(&all);
        }
        pump(&mut relay, &mut server, &mut received);
        if (sent, server.out.len(), received.len()) == before {
            break;
        }
    }

    assert!(
        !relay.closing(),
        "the session closed on well-formed traffic"
    );
    assert_eq!(
        sent,
        client_stream.len(),
        "the session stopped reading the client"
    );
    assert_eq!(
        relay.pending(),
        0,
        "the session waits for replies the server never sends"
    );
    let want = direct_replies(&client_stream);
    assert!(
        received == want,
        "the client saw\n{}\nwhere a direct client sees\n{}",
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&want)
    );
    let secret = PROXY_SECRET.as_bytes();
    assert!(!received.windows(secret.len()).any(|w| w == secret));
});
