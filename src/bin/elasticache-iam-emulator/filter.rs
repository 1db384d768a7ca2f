//! Owns the client → backend command stream: finds frame boundaries with the
//! library's resumable `Scanner`, forwards every frame byte for byte except an
//! AUTH/HELLO naming an IAM user, and tracks MULTI. Each rewrite is a command
//! whose *backend* reply is the emulated reply, so replies stay in order with
//! no reply bookkeeping. Decides nothing about tokens: it asks a [`Gate`].
//!
//! Memory is bounded: frames stream through as they arrive, except a frame
//! whose name is not known yet, an inline line (≤ 64 KiB, the scanner's cap)
//! and AUTH/HELLO frames (held up to [`MAX_HELD`]).

use bytes::BytesMut;
use elasticache_auth_proxy::resp::{encode_command, inline, Scanner, Side};

/// Replaces an IAM AUTH inside MULTI: Redis refuses an unknown command at
/// queue time, which makes EXEC abort, as ElastiCache refuses IAM AUTH in a
/// transaction. It has no arguments, so the token never reaches the error text.
pub const IN_MULTI_COMMAND: &str = "IAM-AUTH-NOT-SUPPORTED-IN-MULTI";

/// A throttled IAM AUTH goes to the backend as `HELLO 3 <this>`, which
/// answers `-ERR Syntax error in HELLO option '<this>'` in the AUTH's place
/// in the reply stream; the relay replaces that frame with ElastiCache's
/// throttling reply (`throttle-reply`). HELLO is used (not EVAL) because it
/// runs before authentication and for every ACL user, where EVAL would
/// answer `-NOAUTH` or `-NOPERM` instead.
pub const THROTTLED_MESSAGE: &str = "IAM authentication throttled (elasticache-iam-emulator)";

/// Largest AUTH/HELLO frame held for rewriting. IAM tokens are well under
/// 2 KiB; a bigger frame is forwarded untouched, so the backend refuses it.
pub const MAX_HELD: usize = 64 * 1024;

/// Largest bulk string accepted, as Redis's default `proto-max-bulk-len`.
const MAX_ELEMENT: u64 = 512 * 1024 * 1024;

/// Longer first arguments cannot be a command this filter cares about.
const LONGEST_NAME: usize = 16;

/// The gate's answer to an IAM AUTH outside MULTI.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Forward the command with this password in place of the token: the
    /// backend password if the token is valid, a wrong one if not.
    Password(Vec<u8>),
    /// Over the rate limit: forward the throttling stand-in instead.
    Throttled,
}

/// Things the gate is told about but does not decide.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// An IAM AUTH inside MULTI, replaced by [`IN_MULTI_COMMAND`].
    IamAuthInMulti,
    /// AUTH/HELLO AUTH for a non-IAM user, forwarded unchanged.
    PasswordAuth,
    /// RESET: the backend drops the connection's identity.
    Reset,
}

/// Decides IAM authentication for one connection.
pub trait Gate {
    /// Whether `user` authenticates with IAM tokens.
    fn is_iam_user(&self, user: &[u8]) -> bool;
    /// An IAM AUTH/HELLO outside MULTI; `token` must never be logged.
    fn iam_auth(&mut self, user: &[u8], token: &[u8]) -> Rewrite;
    fn notice(&mut self, notice: Notice);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Name not known yet: hold the bytes.
    Undecided,
    /// Forward bytes as they arrive.
    Pass,
    /// AUTH/HELLO: hold the whole frame, then rewrite it.
    Hold,
}

/// The command-stream filter of one connection.
#[derive(Debug)]
pub struct Filter {
    scanner: Scanner,
    mode: Mode,
    /// The current frame from its first byte, while not in `Pass` mode.
    held: BytesMut,
    /// After a protocol error everything is forwarded as-is: Redis answers
    /// the error itself and closes the connection.
    raw: bool,
    /// Between MULTI and EXEC/DISCARD/RESET, as the commands were sent.
    in_multi: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            scanner: Scanner::new(Side::Request, MAX_ELEMENT),
            mode: Mode::Undecided,
            held: BytesMut::new(),
            raw: false,
            in_multi: false,
        }
    }
}

impl Filter {
    /// Consumes `input` into `out` (the bytes for the backend). A partial
    /// length line may stay in `input`; append the next read to it.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut, gate: &mut impl Gate) {
        while !input.is_empty() {
            if self.raw {
                out.extend_from_slice(input);
                input.clear();
                return;
            }
            let (n, done) = match self.scanner.advance(input) {
                Ok(step) => step,
                Err(_) => {
                    self.raw = true;
                    out.extend_from_slice(&self.held.split());
                    continue;
                }
            };
            let chunk = input.split_to(n);
            match self.mode {
                Mode::Pass => out.extend_from_slice(&chunk),
                Mode::Undecided | Mode::Hold => self.held.extend_from_slice(&chunk),
            }
            if self.mode == Mode::Undecided {
                self.decide(gate);
            }
            if self.mode == Mode::Hold && self.held.len() > MAX_HELD {
                self.mode = Mode::Pass;
            }
            if self.mode == Mode::Pass {
                out.extend_from_slice(&self.held.split());
            }
            if !done {
                // Out of bytes, or a partial length line left for next time.
                return;
            }
            self.finish(out, gate);
            self.mode = Mode::Undecided;
        }
    }

    /// Picks the mode of a multibulk frame once its name is known.
    fn decide(&mut self, gate: &mut impl Gate) {
        let head = self.scanner.head();
        if head.inline {
            // Held whole and decided in `finish`.
            return;
        }
        match head.name {
            Some((_, len)) if len > LONGEST_NAME => self.mode = Mode::Pass,
            Some((at, len)) if head.name_done => {
                let name = self.held[at..at + len].to_vec();
                self.mode = self.on_name(&name, head.argc, gate);
            }
            _ => {}
        }
    }

    /// Tracks MULTI state; `Hold` for AUTH/HELLO, `Pass` for the rest.
    fn on_name(&mut self, name: &[u8], argc: u64, gate: &mut impl Gate) -> Mode {
        let is = |cmd: &str| name.eq_ignore_ascii_case(cmd.as_bytes());
        if is("AUTH") || is("HELLO") {
            return Mode::Hold;
        }
        // With extra arguments these fail their arity check and change nothing.
        if argc == 1 {
            if is("MULTI") {
                self.in_multi = true;
            } else if is("EXEC") || is("DISCARD") {
                self.in_multi = false;
            } else if is("RESET") {
                self.in_multi = false;
                gate.notice(Notice::Reset);
            }
        }
        Mode::Pass
    }

    /// A frame completed: forward what is still held, rewritten if need be.
    fn finish(&mut self, out: &mut BytesMut, gate: &mut impl Gate) {
        let frame = self.held.split();
        match self.mode {
            Mode::Pass => {}
            Mode::Hold => match multibulk_args(&frame) {
                Some(args) => self.auth(&frame, &args, out, gate),
                None => out.extend_from_slice(&frame),
            },
            Mode::Undecided if self.scanner.head().inline => {
                let line = trim_eol(&frame);
                match inline::split(line) {
                    Some(args) if !args.is_empty() => {
                        let mode = self.on_name(&args[0], args.len() as u64, gate);
                        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                        if mode == Mode::Hold {
                            self.auth(&frame, &args, out, gate);
                        } else {
                            out.extend_from_slice(&frame);
                        }
                    }
                    // Empty lines and bad quoting: Redis deals with them.
                    _ => out.extend_from_slice(&frame),
                }
            }
            // `*0`, `*-1`: Redis ignores them.
            Mode::Undecided => out.extend_from_slice(&frame),
        }
    }

    /// An AUTH or HELLO: rewrite if it names an IAM user, else forward it.
    fn auth(&mut self, frame: &[u8], args: &[&[u8]], out: &mut BytesMut, gate: &mut impl Gate) {
        match auth_form(args) {
            Form::Named { user, password } if gate.is_iam_user(args[user]) => {
                if self.in_multi {
                    gate.notice(Notice::IamAuthInMulti);
                    encode_command(out, &[IN_MULTI_COMMAND]);
                    return;
                }
                match gate.iam_auth(args[user], args[password]) {
                    Rewrite::Password(replacement) => {
                        let mut args = args.to_vec();
                        args[password] = &replacement;
                        encode_command(out, &args);
                    }
                    Rewrite::Throttled => encode_command(out, &["HELLO", "3", THROTTLED_MESSAGE]),
                }
            }
            Form::Named { .. } | Form::Default => {
                gate.notice(Notice::PasswordAuth);
                out.extend_from_slice(frame);
            }
            Form::None => out.extend_from_slice(frame),
        }
    }
}

/// Where the credentials are in an AUTH/HELLO command.
#[derive(Debug, PartialEq, Eq)]
enum Form {
    /// Argument indexes of user and password.
    Named { user: usize, password: usize },
    /// `AUTH <password>`: the `default` user.
    Default,
    /// No credentials, or a syntax error the backend reports itself.
    None,
}

/// Reads AUTH/HELLO arguments as Redis does: `AUTH [user] password`;
/// `HELLO protover [AUTH user password] [SETNAME name]` with options in any
/// order, the last AUTH winning, and any other option a syntax error.
fn auth_form(args: &[&[u8]]) -> Form {
    let is = |arg: &[u8], word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
    if is(args[0], "AUTH") {
        return match args.len() {
            2 => Form::Default,
            3 => Form::Named {
                user: 1,
                password: 2,
            },
            _ => Form::None,
        };
    }
    // HELLO: a bad protocol version is answered before any option is read.
    if args.len() < 2 || !matches!(args[1], b"2" | b"3") {
        return Form::None;
    }
    let mut found = Form::None;
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if is(args[j], "AUTH") && more >= 2 {
            found = Form::Named {
                user: j + 1,
                password: j + 2,
            };
            j += 3;
        } else if is(args[j], "SETNAME") && more >= 1 {
            j += 2;
        } else {
            return Form::None;
        }
    }
    found
}

/// The arguments of a complete multibulk of bulk strings (already validated
/// by the scanner; `None` only if that assumption breaks).
fn multibulk_args(frame: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = frame.strip_prefix(b"*")?;
    let (argc, after) = number_line(rest)?;
    rest = after;
    let mut args = Vec::with_capacity(argc.min(64));
    for _ in 0..argc {
        let (len, after) = number_line(rest.strip_prefix(b"$")?)?;
        args.push(after.get(..len)?);
        rest = after.get(len + 2..)?;
    }
    (!args.is_empty()).then_some(args)
}

/// `<digits>\r\n` at the start of `buf`: the number and what follows.
fn number_line(buf: &[u8]) -> Option<(usize, &[u8])> {
    let end = memchr::memchr(b'\r', buf)?;
    let n = std::str::from_utf8(&buf[..end]).ok()?.parse().ok()?;
    Some((n, buf.get(end + 2..)?))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use elasticache_auth_proxy::resp::encode_command;

    /// Accepts token "good", throttles token "slow", refuses the rest.
    #[derive(Default)]
    struct Fake {
        notices: Vec<Notice>,
        attempts: Vec<(String, String)>,
    }

    impl Gate for Fake {
        fn is_iam_user(&self, user: &[u8]) -> bool {
            user.starts_with(b"iam")
        }
        fn iam_auth(&mut self, user: &[u8], token: &[u8]) -> Rewrite {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            self.attempts.push((s(user), s(token)));
            match token {
                b"good" => Rewrite::Password(b"BACKEND".to_vec()),
                b"slow" => Rewrite::Throttled,
                _ => Rewrite::Password(b"WRONG".to_vec()),
            }
        }
        fn notice(&mut self, notice: Notice) {
            self.notices.push(notice);
        }
    }

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_command(&mut buf, args);
        buf.to_vec()
    }

    /// Feeds `input` split at every cut point; returns what reached the backend.
    fn run(input: &[u8], cuts: &[usize], gate: &mut Fake) -> Vec<u8> {
        let mut filter = Filter::default();
        let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
        let mut last = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            pending.extend_from_slice(&input[last..cut]);
            last = cut;
            filter.feed(&mut pending, &mut out, gate);
        }
        assert!(pending.is_empty(), "left over: {pending:?}");
        out.to_vec()
    }

    /// (what, client bytes, expected backend bytes)
    fn table() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let cat = |parts: &[Vec<u8>]| parts.concat();
        vec![
            (
                "plain commands pass",
                cat(&[cmd(&["SET", "k", "v"]), cmd(&["GET", "k"])]),
                cat(&[cmd(&["SET", "k", "v"]), cmd(&["GET", "k"])]),
            ),
            (
                "valid IAM AUTH",
                cmd(&["AUTH", "iam-user", "good"]),
                cmd(&["AUTH", "iam-user", "BACKEND"]),
            ),
            (
                "invalid IAM AUTH",
                cmd(&["auth", "iam-user", "bad"]),
                cmd(&["auth", "iam-user", "WRONG"]),
            ),
            (
                "throttled",
                cmd(&["AUTH", "iam-user", "slow"]),
                cmd(&["HELLO", "3", THROTTLED_MESSAGE]),
            ),
            (
                "HELLO AUTH with SETNAME",
                cmd(&["HELLO", "3", "SETNAME", "n", "AUTH", "iam-user", "good"]),
                cmd(&["HELLO", "3", "SETNAME", "n", "AUTH", "iam-user", "BACKEND"]),
            ),
            (
                "HELLO last AUTH wins",
                cmd(&["HELLO", "2", "AUTH", "app", "pw", "auth", "iam-x", "good"]),
                cmd(&[
                    "HELLO", "2", "AUTH", "app", "pw", "auth", "iam-x", "BACKEND",
                ]),
            ),
            (
                "password user",
                cmd(&["AUTH", "app", "pw"]),
                cmd(&["AUTH", "app", "pw"]),
            ),
            ("default user", cmd(&["AUTH", "pw"]), cmd(&["AUTH", "pw"])),
            (
                "AUTH syntax error",
                cmd(&["AUTH", "iam-user", "good", "x"]),
                cmd(&["AUTH", "iam-user", "good", "x"]),
            ),
            (
                "HELLO bad version",
                cmd(&["HELLO", "4", "AUTH", "iam-user", "good"]),
                cmd(&["HELLO", "4", "AUTH", "iam-user", "good"]),
            ),
            (
                "HELLO bad option",
                cmd(&["HELLO", "3", "AUTH", "iam-user", "good", "X"]),
                cmd(&["HELLO", "3", "AUTH", "iam-user", "good", "X"]),
            ),
            (
                "HELLO without AUTH",
                cmd(&["HELLO", "3"]),
                cmd(&["HELLO", "3"]),
            ),
            (
                "IAM AUTH in MULTI",
                cat(&[
                    cmd(&["MULTI"]),
                    cmd(&["AUTH", "iam-user", "good"]),
                    cmd(&["EXEC"]),
                    cmd(&["AUTH", "iam-user", "good"]),
                ]),
                cat(&[
                    cmd(&["MULTI"]),
                    cmd(&[IN_MULTI_COMMAND]),
                    cmd(&["EXEC"]),
                    cmd(&["AUTH", "iam-user", "BACKEND"]),
                ]),
            ),
            (
                "DISCARD and RESET end MULTI",
                cat(&[
                    cmd(&["multi"]),
                    cmd(&["discard"]),
                    cmd(&["AUTH", "iam-a", "good"]),
                    cmd(&["MULTI"]),
                    cmd(&["RESET"]),
                    cmd(&["AUTH", "iam-b", "bad"]),
                ]),
                cat(&[
                    cmd(&["multi"]),
                    cmd(&["discard"]),
                    cmd(&["AUTH", "iam-a", "BACKEND"]),
                    cmd(&["MULTI"]),
                    cmd(&["RESET"]),
                    cmd(&["AUTH", "iam-b", "WRONG"]),
                ]),
            ),
            (
                "MULTI with arguments is not MULTI",
                cat(&[cmd(&["MULTI", "x"]), cmd(&["AUTH", "iam-a", "good"])]),
                cat(&[cmd(&["MULTI", "x"]), cmd(&["AUTH", "iam-a", "BACKEND"])]),
            ),
            (
                "inline AUTH is rewritten as multibulk",
                b"AUTH iam-user good\r\nPING\r\n".to_vec(),
                cat(&[cmd(&["AUTH", "iam-user", "BACKEND"]), b"PING\r\n".to_vec()]),
            ),
            (
                "inline quoted HELLO",
                b"hello 3 auth \"iam-user\" 'bad'\n".to_vec(),
                cmd(&["hello", "3", "auth", "iam-user", "WRONG"]),
            ),
            (
                "inline MULTI counts",
                b"MULTI\r\nAUTH iam-user good\r\n".to_vec(),
                cat(&[b"MULTI\r\n".to_vec(), cmd(&[IN_MULTI_COMMAND])]),
            ),
            (
                "empty inline and *0 pass",
                b"\r\n*0\r\nPING\r\n".to_vec(),
                b"\r\n*0\r\nPING\r\n".to_vec(),
            ),
            (
                "long names pass",
                cmd(&["AUTHENTICATE-EVERYTHING-NOW", "iam-user", "good"]),
                cmd(&["AUTHENTICATE-EVERYTHING-NOW", "iam-user", "good"]),
            ),
            (
                "protocol error: raw from there on",
                b"*1\r\n$x\r\nAUTH iam-user good\r\n".to_vec(),
                b"*1\r\n$x\r\nAUTH iam-user good\r\n".to_vec(),
            ),
        ]
    }

    #[test]
    fn rewrites_at_every_split() {
        for (what, input, want) in table() {
            // Whole, then every single cut, then byte by byte.
            let mut splits: Vec<Vec<usize>> = vec![vec![]];
            splits.extend((1..input.len()).map(|i| vec![i]));
            splits.push((1..input.len()).collect());
            for cuts in splits {
                let got = run(&input, &cuts, &mut Fake::default());
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{what}, cuts {cuts:?}"
                );
            }
        }
    }

    #[test]
    fn tells_the_gate() {
        let mut gate = Fake::default();
        let input = [
            cmd(&["AUTH", "iam-user", "good"]),
            cmd(&["AUTH", "app", "pw"]),
            cmd(&["MULTI"]),
            cmd(&["HELLO", "3", "AUTH", "iam-user", "x"]),
            cmd(&["RESET"]),
        ]
        .concat();
        run(&input, &[], &mut gate);
        assert_eq!(gate.attempts, [("iam-user".into(), "good".into())]);
        assert_eq!(
            gate.notices,
            [Notice::PasswordAuth, Notice::IamAuthInMulti, Notice::Reset]
        );
    }

    #[test]
    fn oversized_auth_passes_untouched() {
        let big = "t".repeat(MAX_HELD + 10);
        let input = cmd(&["AUTH", "iam-user", &big]);
        let mut gate = Fake::default();
        assert_eq!(run(&input, &[100, 65_000], &mut gate), input);
        assert!(gate.attempts.is_empty());
    }

    #[test]
    fn big_values_stream_without_holding() {
        let value = "v".repeat(1 << 20);
        let input = cmd(&["SET", "k", &value]);
        let mut filter = Filter::default();
        let (mut pending, mut out) = (BytesMut::from(&input[..1000]), BytesMut::new());
        filter.feed(&mut pending, &mut out, &mut Fake::default());
        // Everything read so far went out: nothing is held for a SET.
        assert_eq!(out.len(), 1000);
        assert!(filter.held.is_empty());
    }
}
