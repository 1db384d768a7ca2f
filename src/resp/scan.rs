//! Resumable RESP frame-boundary scanner: finds where each top-level frame ends
//! without copying or decoding it. Owns wire-level validation; not what frames mean.
//!
//! `redis-protocol`'s decoders need a whole frame in one buffer and start over
//! on every partial read, which is quadratic for a 100 MB value arriving in
//! 64 KiB reads and holds the value in memory. This scanner keeps its position
//! between reads, so each byte is looked at once and a frame can be forwarded
//! piece by piece while it is still arriving.

use std::fmt;

/// The largest inline command Redis accepts (`PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;
/// Redis's limits for a connection that has not authenticated yet
/// (`authRequired`): arguments per command and bytes per argument.
const UNAUTH_MAX_ARGS: u64 = 10;
const UNAUTH_MAX_BULK: u64 = 16 * 1024;
/// Deepest aggregate nesting accepted: far beyond what any server sends
/// (Redis returns a few thousand levels from Lua at most), and it keeps the
/// scanner's stack under 16 MiB even for a reply streamed through unheld.
pub const MAX_DEPTH: usize = 1 << 20;

/// Marks a RESP3 streamed aggregate (`*?`) on the stack: ends at `.`.
const STREAMED: u64 = u64::MAX;

/// Which side of the conversation the bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client commands: a multibulk of bulk strings, or an inline line.
    Request,
    /// Server replies: any RESP2 or RESP3 frame.
    Reply,
}

/// Malformed input; the message follows Redis's own `Protocol error:` wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[derive(Clone, Copy, Debug)]
enum State {
    /// The next byte is a type byte.
    Start,
    /// Reading the decimal after a type byte (`*`, `$`, `%`, ...).
    Number {
        ty: u8,
        neg: bool,
        val: u64,
        digits: u8,
        cr: bool,
    },
    /// Skipping a line-type element up to its `\n`.
    Line,
    /// Skipping a bulk payload; counts the trailing CRLF.
    Payload(u64),
    /// A request that is not a multibulk: one line, up to `\n`.
    Inline,
}

#[derive(Clone, Copy, Debug)]
struct Open {
    /// Elements still expected, or `STREAMED`.
    remaining: u64,
    /// An attribute map: its completion does not count as an element.
    attr: bool,
    /// A streamed string (`$?`): holds `;len` chunks, not elements.
    chunks: bool,
}

/// What the scanner knows about the frame in progress (request side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Number of arguments of a multibulk command (0 for inline).
    pub argc: u64,
    /// Offset and length of the first argument within the frame, once its
    /// length line has been read.
    pub name: Option<(usize, usize)>,
    /// True once the first argument has been read completely.
    pub name_done: bool,
    /// The frame is an inline command (a plain text line).
    pub inline: bool,
}

/// A resumable scanner for one direction of one connection.
#[derive(Debug)]
pub struct Scanner {
    side: Side,
    state: State,
    stack: Vec<Open>,
    /// Bytes of the current frame consumed so far.
    frame_len: usize,
    /// Length of the current line (line-type elements and inline requests).
    line_len: usize,
    /// The current line's last byte so far was `\r` (a line can end in
    /// the next read).
    line_cr: bool,
    /// Largest bulk string or line accepted.
    max_element: u64,
    head: Head,
    /// Request side: index of the bulk being read.
    arg: u64,
    /// Request side: apply Redis's limits for unauthenticated connections.
    unauthenticated: bool,
    /// Try [`Scanner::whole`] at each frame start (off only in tests and
    /// fuzzing, to compare it with the state machine alone).
    fast: bool,
}

impl Scanner {
    /// A scanner that refuses any bulk string or line longer than `max_element`.
    pub fn new(side: Side, max_element: u64) -> Self {
        Scanner {
            side,
            state: State::Start,
            stack: Vec::new(),
            frame_len: 0,
            line_len: 0,
            line_cr: false,
            max_element,
            head: Head::default(),
            arg: 0,
            unauthenticated: false,
            fast: true,
        }
    }

    /// Turns the one-pass fast path off (or back on), so that tests and the
    /// fuzzers can check it against the state machine alone.
    #[cfg(any(fuzzing, test))]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    /// Applies (or lifts) Redis's limits for a connection that must still
    /// authenticate: at most 10 arguments of at most 16 KiB each.
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
    }

    /// True between frames.
    pub fn at_boundary(&self) -> bool {
        self.frame_len == 0
    }

    /// Bytes of the frame in progress consumed so far.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// What is known of the request in progress (or just completed).
    pub fn head(&self) -> Head {
        self.head
    }

    /// Consumes bytes of `buf` until one top-level frame completes or `buf`
    /// runs out. Returns the bytes consumed and whether a frame completed at
    /// that point. Bytes not consumed (a partial length line) must be offered
    /// again, with more after them, on the next call.
    pub fn advance(&mut self, buf: &[u8]) -> Result<(usize, bool), Error> {
        if self.frame_len == 0 {
            self.head = Head::default();
            self.arg = 0;
            // A frame that starts here and ends in `buf` is read in one
            // pass; anything else goes through the state machine below.
            if self.fast {
                if let Some(n) = self.whole(buf) {
                    return Ok((n, true));
                }
            }
        }
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Start => {
                    let b = buf[i];
                    i += 1;
                    if let Some(done) = self.start(b)? {
                        if done {
                            return Ok(self.finish(i));
                        }
                    }
                }
                State::Number {
                    ty,
                    neg,
                    val,
                    digits,
                    cr,
                } => {
                    let b = buf[i];
                    i += 1;
                    if cr {
                        // Redis skips the byte after a request's `\r`
                        // unread; a reply's must be `\n`.
                        if b != b'\n' && self.side == Side::Reply {
                            return Err(self.bad_number(ty));
                        }
                        let at = self.frame_len + i;
                        if self.number(ty, neg, val, digits, at)? {
                            return Ok(self.finish(i));
                        }
                    } else if b == b'\r' {
                        self.state = State::Number {
                            ty,
                            neg,
                            val,
                            digits,
                            cr: true,
                        };
                    } else if b == b'-' && digits == 0 && !neg {
                        self.state = State::Number {
                            ty,
                            neg: true,
                            val,
                            digits,
                            cr,
                        };
                    } else if b == b'?' && digits == 0 && !neg && self.side == Side::Reply {
                        // RESP3 streamed type: `$?` / `*?`; `u64::MAX` marks it.
                        self.state = State::Number {
                            ty,
                            neg,
                            val: STREAMED,
                            digits: 1,
                            cr,
                        };
                    } else if b.is_ascii_digit()
                        && digits < 19
                        && val != STREAMED
                        // Redis's string2ll: no leading zeros, no `-0`.
                        && !(self.side == Side::Request
                            && ((digits > 0 && val == 0) || (b == b'0' && digits == 0 && neg)))
                    {
                        self.state = State::Number {
                            ty,
                            neg,
                            val: val * 10 + u64::from(b - b'0'),
                            digits: digits + 1,
                            cr,
                        };
                    } else {
                        return Err(self.bad_number(ty));
                    }
                }
                State::Line | State::Inline => {
                    let rest = &buf[i..];
                    match memchr::memchr(b'\n', rest) {
                        Some(at) => {
                            // A reply's line ends at CRLF only: a client
                            // library reads `+a\n:1\r\n` as one line, so
                            // ending it at the LF would invent a reply.
                            let cr = if at > 0 {
                                rest[at - 1] == b'\r'
                            } else {
                                self.line_cr
                            };
                            if matches!(self.state, State::Line) && !cr {
                                return Err(Error(self.proto("line not ended by CRLF")));
                            }
                            self.line_len += at + 1;
                            i += at + 1;
                            self.check_line()?;
                            let inline = matches!(self.state, State::Inline);
                            self.state = State::Start;
                            self.line_len = 0;
                            if inline || self.element_done() {
                                return Ok(self.finish(i));
                            }
                        }
                        None => {
                            self.line_len += rest.len();
                            if let Some(&last) = rest.last() {
                                self.line_cr = last == b'\r';
                            }
                            i = buf.len();
                            self.check_line()?;
                        }
                    }
                }
                State::Payload(left) => {
                    let take = ((buf.len() - i) as u64).min(left);
                    let end = i + take as usize;
                    let new_left = left - take;
                    // A reply's payload must end in CRLF; they may arrive in
                    // different reads, so check each as it passes. Redis
                    // skips the two bytes after a request's argument unread,
                    // and so does the proxy.
                    let cr_ok =
                        !(left >= 2 && new_left < 2) || buf[end - (2 - new_left as usize)] == b'\r';
                    let lf_ok = new_left > 0 || buf[end - 1] == b'\n';
                    if self.side == Side::Reply && (!cr_ok || !lf_ok) {
                        return Err(Error(self.proto("bulk string not followed by CRLF")));
                    }
                    i = end;
                    if new_left > 0 {
                        self.state = State::Payload(new_left);
                        continue;
                    }
                    self.state = State::Start;
                    if self.side == Side::Request && self.arg == 1 {
                        self.head.name_done = true;
                    }
                    if self.in_chunked_string() {
                        continue;
                    }
                    if self.element_done() {
                        return Ok(self.finish(i));
                    }
                }
            }
        }
        self.frame_len += i;
        Ok((i, false))
    }

    /// The fast path: a whole frame at the start of `buf`, read in one pass
    /// without the state machine (each length line's digits in one loop,
    /// each payload jumped over by its length). `Some(len)` only for a frame
    /// the state machine would also end at `len`, with the same [`Head`];
    /// `None` decides nothing: the frame is incomplete, unusual (inline,
    /// streamed, attributes, `*0`) or malformed, and the state machine
    /// scans it from its first byte, with its errors. So the fast path
    /// never refuses input and changes no state when it declines.
    fn whole(&mut self, buf: &[u8]) -> Option<usize> {
        match self.side {
            Side::Request => {
                let (len, head) = whole_request(buf, self.max_element, self.unauthenticated)?;
                self.head = head;
                self.arg = head.argc;
                Some(len)
            }
            Side::Reply => whole_reply(buf, self.max_element),
        }
    }

    fn finish(&mut self, consumed: usize) -> (usize, bool) {
        self.frame_len = 0;
        (consumed, true)
    }

    fn proto(&self, what: &str) -> String {
        match self.side {
            Side::Request => format!("Protocol error: {what}"),
            Side::Reply => format!("invalid RESP from the server: {what}"),
        }
    }

    fn bad_number(&self, ty: u8) -> Error {
        Error(match (self.side, ty) {
            (Side::Request, b'*') => "Protocol error: invalid multibulk length".into(),
            (Side::Request, _) => "Protocol error: invalid bulk length".into(),
            (Side::Reply, _) => self.proto(&format!("bad length after '{}'", ty as char)),
        })
    }

    fn check_line(&self) -> Result<(), Error> {
        if matches!(self.state, State::Inline) && self.line_len > MAX_INLINE {
            return Err(Error("Protocol error: too big inline request".into()));
        }
        if self.line_len as u64 > self.max_element {
            return Err(Error(self.proto(&format!(
                "line longer than the proxy's max-frame-size ({} bytes)",
                self.max_element
            ))));
        }
        Ok(())
    }

    fn in_chunked_string(&self) -> bool {
        self.stack.last().is_some_and(|o| o.chunks)
    }

    /// Handles a type byte. `Some(true)`: a top-level frame completed.
    fn start(&mut self, b: u8) -> Result<Option<bool>, Error> {
        let top_level = self.stack.is_empty();
        if self.side == Side::Request {
            if top_level && self.frame_len == 0 && b != b'*' {
                self.head.inline = true;
                self.state = State::Inline;
                self.line_len = 1;
                if b == b'\n' {
                    self.state = State::Start;
                    self.line_len = 0;
                    return Ok(Some(true));
                }
                return Ok(None);
            }
            if !top_level && b != b'$' {
                // Redis prints the byte as it is (`%c`); a non-ASCII one
                // cannot go in this String, so it is escaped.
                let got = if b.is_ascii() {
                    (b as char).to_string()
                } else {
                    (b as char).escape_default().to_string()
                };
                return Err(Error(format!("Protocol error: expected '$', got '{got}'")));
            }
        } else if self.in_chunked_string() && b != b';' {
            return Err(Error(self.proto("expected ';' chunk in a streamed string")));
        } else if !self.in_chunked_string() && b == b';' {
            // A chunk outside a streamed string would close whatever
            // aggregate is open.
            return Err(Error(self.proto("unexpected ';'")));
        }
        match b {
            b'*' | b'$' | b'%' | b'~' | b'>' | b'|' | b'=' | b'!' | b';' => {
                self.state = State::Number {
                    ty: b,
                    neg: false,
                    val: 0,
                    digits: 0,
                    cr: false,
                };
                Ok(None)
            }
            b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                self.state = State::Line;
                self.line_len = 1;
                self.line_cr = false;
                Ok(None)
            }
            b'.' => {
                // End of a streamed aggregate: the line `.\r\n`.
                match self.stack.last() {
                    Some(o) if o.remaining == STREAMED && !o.chunks => {
                        self.stack.pop();
                        // Count the streamed aggregate itself once its `.` line
                        // is skipped: push a one-element marker the line fills.
                        self.stack.push(Open {
                            remaining: 1,
                            attr: false,
                            chunks: false,
                        });
                        self.state = State::Line;
                        self.line_len = 1;
                        self.line_cr = false;
                        Ok(None)
                    }
                    _ => Err(Error(self.proto("unexpected '.'"))),
                }
            }
            other => Err(Error(self.proto(&format!(
                "unknown type byte '{}'",
                (other as char).escape_default()
            )))),
        }
    }

    /// Handles a complete length line; `at` is the frame offset just past it.
    /// Returns true when a top-level frame completed.
    fn number(
        &mut self,
        ty: u8,
        neg: bool,
        val: u64,
        digits: u8,
        at: usize,
    ) -> Result<bool, Error> {
        self.state = State::Start;
        if digits == 0 {
            return Err(self.bad_number(ty));
        }
        let streamed = val == STREAMED;
        if self.side == Side::Request {
            if ty == b'*' {
                // string2ll refuses what does not fit an i64.
                if neg && val > 1 << 63 {
                    return Err(self.bad_number(ty));
                }
                // Redis ignores `*0` and `*-1`: no command, no reply.
                if neg || val == 0 {
                    return Ok(true);
                }
                if val > i32::MAX as u64 {
                    return Err(self.bad_number(ty));
                }
                if self.unauthenticated && val > UNAUTH_MAX_ARGS {
                    return Err(Error(
                        "Protocol error: unauthenticated multibulk length".into(),
                    ));
                }
                self.head.argc = val;
                self.open(val, false, false);
                return Ok(false);
            }
            // A bulk argument. Past max-frame-size the proxy answers as
            // Redis does past its proto-max-bulk-len.
            if neg || val > self.max_element {
                return Err(Error("Protocol error: invalid bulk length".into()));
            }
            if self.unauthenticated && val > UNAUTH_MAX_BULK {
                return Err(Error("Protocol error: unauthenticated bulk length".into()));
            }
            if self.arg == 0 {
                self.head.name = Some((at, val as usize));
            }
            self.arg += 1;
            self.state = State::Payload(val + 2);
            return Ok(false);
        }
        // The one negative length a server sends is -1 (a null). Client
        // libraries refuse any other (hiredis: "out of range"), and
        // `$-0` is an empty string to some: a null here could invent or
        // swallow a reply.
        if neg && (val, digits) != (1, 1) {
            return Err(self.bad_number(ty));
        }
        match ty {
            b'$' | b'=' | b'!' => {
                if streamed && ty == b'$' {
                    self.open(STREAMED, false, true);
                    return Ok(false);
                }
                if neg {
                    return Ok(self.element_done());
                }
                // `txt:` comes first; hiredis refuses a shorter one.
                if ty == b'=' && val < 4 {
                    return Err(Error(self.proto("verbatim string without its format")));
                }
                if val > self.max_element {
                    return Err(Error(self.proto(&format!(
                        "bulk length {val} exceeds the proxy's max-frame-size ({} bytes)",
                        self.max_element
                    ))));
                }
                self.state = State::Payload(val + 2);
                Ok(false)
            }
            b';' => {
                if val == 0 {
                    // The zero-length chunk ends the streamed string.
                    self.stack.pop();
                    return Ok(self.element_done());
                }
                if val > self.max_element {
                    return Err(Error(self.proto("streamed chunk too large")));
                }
                self.state = State::Payload(val + 2);
                Ok(false)
            }
            _ => {
                if neg {
                    // `*-1`: the RESP2 null array.
                    return Ok(self.element_done());
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Error(
                        self.proto(&format!("reply nested deeper than {MAX_DEPTH} levels")),
                    ));
                }
                if streamed {
                    self.open(STREAMED, ty == b'|', false);
                    return Ok(false);
                }
                let n = if matches!(ty, b'%' | b'|') {
                    val.checked_mul(2)
                        .ok_or_else(|| Error(self.proto("map too large")))?
                } else {
                    val
                };
                if n == 0 {
                    return Ok(if ty == b'|' {
                        false
                    } else {
                        self.element_done()
                    });
                }
                self.open(n, ty == b'|', false);
                Ok(false)
            }
        }
    }

    /// Opens an aggregate. Redis nests replies as deep as a script makes
    /// them, so depth is limited only by [`MAX_DEPTH`], which bounds the
    /// stack of a reply that is streamed rather than held.
    fn open(&mut self, remaining: u64, attr: bool, chunks: bool) {
        self.stack.push(Open {
            remaining,
            attr,
            chunks,
        });
    }

    /// One element ended; closes every aggregate it completes. True when the
    /// top-level frame is complete.
    fn element_done(&mut self) -> bool {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return true;
            };
            if top.remaining == STREAMED {
                return false;
            }
            top.remaining -= 1;
            if top.remaining > 0 {
                return false;
            }
            let attr = top.attr;
            self.stack.pop();
            if attr {
                // An attribute precedes the element it describes.
                return false;
            }
        }
    }
}

/// The leading decimal digits of `line`, at most 19 (so the value cannot
/// overflow), and how many there were. Inlined into both length readers:
/// it is the fast path's inner loop.
#[inline(always)]
fn digits(line: &[u8]) -> (u64, usize) {
    let mut val = 0u64;
    let mut n = 0;
    while n < 19 {
        match line.get(n) {
            Some(&b) if b.is_ascii_digit() => val = val * 10 + u64::from(b - b'0'),
            _ => break,
        }
        n += 1;
    }
    (val, n)
}

/// A request's length line (after its `*` or `$`) at `at`, as the state
/// machine reads it: 1 to 18 digits with no leading zero, `\r`, and one
/// byte Redis skips unread. The number and the offset past the line, or
/// `None` for anything else (a sign, 19 digits, too few bytes).
#[inline]
fn request_number(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let line = buf.get(at..)?;
    let (val, n) = digits(line);
    if n == 0 || n > 18 || (line[0] == b'0' && n > 1) || line.get(n) != Some(&b'\r') {
        return None;
    }
    let end = at + n + 2;
    (end <= buf.len()).then_some((val, end))
}

/// A reply's length line (after its type byte) at `at`, as the state
/// machine reads it: 1 to 18 digits (leading zeros allowed) or `-1`, then
/// CRLF. `Some((None, end))` is the null length `-1`.
#[inline]
fn reply_number(buf: &[u8], at: usize) -> Option<(Option<u64>, usize)> {
    let line = buf.get(at..)?;
    if line.first() == Some(&b'-') {
        return line.starts_with(b"-1\r\n").then_some((None, at + 4));
    }
    let (val, n) = digits(line);
    if n == 0 || n > 18 || line.get(n..n + 2) != Some(b"\r\n") {
        return None;
    }
    Some((Some(val), at + n + 2))
}

/// [`Scanner::whole`] for a request: a multibulk of one or more bulk
/// strings, all in `buf`. Its length and what the state machine would
/// report as its [`Head`].
fn whole_request(buf: &[u8], max_element: u64, unauthenticated: bool) -> Option<(usize, Head)> {
    if buf.first() != Some(&b'*') {
        return None;
    }
    let (argc, mut i) = request_number(buf, 1)?;
    // `*0` is no command (the state machine's); an argument takes at least
    // 6 bytes (`$0\r\n\r\n`), so a count `buf` cannot hold is left to the
    // state machine too, which also bounds the loop below by `buf`.
    if argc == 0
        || argc > ((buf.len() - i) / 6) as u64
        || (unauthenticated && argc > UNAUTH_MAX_ARGS)
    {
        return None;
    }
    let mut name = None;
    for k in 0..argc {
        if buf.get(i) != Some(&b'$') {
            return None;
        }
        let (len, at) = request_number(buf, i + 1)?;
        if len > max_element || (unauthenticated && len > UNAUTH_MAX_BULK) {
            return None;
        }
        // The argument's two trailing bytes are skipped unread, as Redis
        // does and the state machine does.
        let end = usize::try_from(len).ok()?.checked_add(at + 2)?;
        if end > buf.len() {
            return None;
        }
        if k == 0 {
            name = Some((at, len as usize));
        }
        i = end;
    }
    let head = Head {
        argc,
        name,
        name_done: true,
        inline: false,
    };
    Some((i, head))
}

/// [`Scanner::whole`] for a reply: line types, bulk strings, verbatim
/// strings and blob errors, and arrays, maps, sets and pushes of them,
/// nested, all in `buf`. Nesting needs no stack here: one count of the
/// elements still owed says when the frame ends (an aggregate of n owes n
/// in its own place). Attributes, streamed types and `.` are left to the
/// state machine.
fn whole_reply(buf: &[u8], max_element: u64) -> Option<usize> {
    let mut owed: usize = 1;
    // Aggregates opened so far: the state machine's stack is never deeper,
    // so below MAX_DEPTH it cannot refuse the frame for its depth.
    let mut aggregates = 0usize;
    let mut i = 0;
    loop {
        let ty = *buf.get(i)?;
        match ty {
            b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                let lf = i + 1 + memchr::memchr(b'\n', &buf[i + 1..])?;
                // Ended by CRLF, and no longer than the state machine takes.
                if lf == i + 1 || buf[lf - 1] != b'\r' || (lf + 1 - i) as u64 > max_element {
                    return None;
                }
                i = lf + 1;
            }
            b'$' | b'=' | b'!' => {
                let (len, at) = reply_number(buf, i + 1)?;
                i = at;
                if let Some(len) = len {
                    if len > max_element || (ty == b'=' && len < 4) {
                        return None;
                    }
                    let end = usize::try_from(len).ok()?.checked_add(at + 2)?;
                    if buf.get(end - 2..end) != Some(b"\r\n") {
                        return None;
                    }
                    i = end;
                }
            }
            b'*' | b'%' | b'~' | b'>' => {
                let (len, at) = reply_number(buf, i + 1)?;
                i = at;
                if let Some(len) = len {
                    if aggregates >= MAX_DEPTH {
                        return None;
                    }
                    aggregates += 1;
                    let n = if ty == b'%' { len.checked_mul(2)? } else { len };
                    // Each element takes at least 3 bytes: a count `buf`
                    // cannot hold goes to the state machine, and `owed`
                    // stays at most one more than the bytes left.
                    let left = buf.len() - i;
                    if n > left as u64 || owed + n as usize > left + 1 {
                        return None;
                    }
                    owed += n as usize;
                }
            }
            _ => return None,
        }
        // This element is one of those owed.
        owed -= 1;
        if owed == 0 {
            return Some(i);
        }
    }
}

/// The arguments of a complete multibulk command the request scanner
/// accepted, as ranges of `frame`. Read as Redis reads them: the byte after
/// each length line's `\r` and the two after each argument are skipped
/// unread, so `$4\r\nAUTHxx` is `AUTH`. Empty for anything else.
pub fn args(frame: &[u8]) -> Vec<std::ops::Range<usize>> {
    // The number on a length line starting at `at` (just after its type
    // byte), and where the line ends.
    let number = |at: usize| -> Option<(u64, usize)> {
        let cr = at + memchr::memchr(b'\r', frame.get(at..)?)?;
        let n = std::str::from_utf8(&frame[at..cr]).ok()?.parse().ok()?;
        Some((n, cr + 2))
    };
    let mut out = Vec::new();
    if frame.first() != Some(&b'*') {
        return out;
    }
    let Some((argc, mut at)) = number(1) else {
        return out;
    };
    for _ in 0..argc {
        if frame.get(at) != Some(&b'$') {
            return Vec::new();
        }
        let Some((len, start)) = number(at + 1) else {
            return Vec::new();
        };
        let end = start.saturating_add(len as usize);
        if end > frame.len() {
            return Vec::new();
        }
        out.push(start..end);
        at = end + 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces cut at `cuts` and returns the completed frame
    /// lengths, checking that unconsumed bytes are re-offered like the session does.
    fn frames(side: Side, input: &[u8], cuts: &[usize]) -> Result<Vec<usize>, Error> {
        let mut sc = Scanner::new(side, 1 << 20);
        let (mut done, mut start, mut avail_end, mut pos) = (Vec::new(), 0, 0, 0);
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
        bounds.push(input.len());
        for end in bounds {
            avail_end = avail_end.max(end);
            loop {
                let (n, complete) = sc.advance(&input[pos..avail_end])?;
                pos += n;
                if complete {
                    done.push(pos - start);
                    start = pos;
                } else {
                    break;
                }
                if pos == avail_end {
                    break;
                }
            }
        }
        Ok(done)
    }

    const REPLIES: &[(&[u8], &[usize])] = &[
        (b"+OK\r\n", &[5]),
        (b"-ERR bad\r\n:12\r\n", &[10, 5]),
        (b"$5\r\nhello\r\n$0\r\n\r\n$-1\r\n", &[11, 6, 5]),
        (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", &[19]),
        (b"*-1\r\n*0\r\n", &[5, 4]),
        (b"%1\r\n+k\r\n+v\r\n", &[12]),
        (b">3\r\n+message\r\n+ch\r\n$1\r\nx\r\n", &[26]),
        (b"|1\r\n+key\r\n+val\r\n+OK\r\n", &[21]),
        (b"*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n", &[20]),
        (b"_\r\n#t\r\n,1.5\r\n(123\r\n", &[3, 4, 6, 6]),
        (b"=8\r\ntxt:abcd\r\n!3\r\nerr\r\n", &[14, 9]),
        (b"$?\r\n;2\r\nab\r\n;1\r\nc\r\n;0\r\n", &[23]),
        (b"*?\r\n:1\r\n*?\r\n.\r\n.\r\n+after\r\n", &[18, 8]),
        (b"~2\r\n:1\r\n:2\r\n", &[12]),
    ];

    #[test]
    fn reply_boundaries_whole_and_split_everywhere() {
        for (input, want) in REPLIES {
            assert_eq!(
                frames(Side::Reply, input, &[]).unwrap(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for cut in 1..input.len() {
                assert_eq!(
                    frames(Side::Reply, input, &[cut]).unwrap(),
                    *want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn request_boundaries_and_heads() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nPING\r\n\r\n*0\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                frames(Side::Request, input, &[cut]).unwrap(),
                vec![31, 6, 2, 4],
                "cut {cut}"
            );
        }
        let mut sc = Scanner::new(Side::Request, 1 << 20);
        let (n, done) = sc
            .advance(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
            .unwrap();
        assert_eq!((n, done), (27, false));
        let head = sc.head();
        assert_eq!(
            (head.argc, head.name, head.name_done, head.inline),
            (3, Some((8, 3)), true, false)
        );
        assert_eq!(sc.frame_len(), 27);
        assert_eq!(sc.advance(b"lo\r\n").unwrap(), (4, true));
        assert!(sc.at_boundary());
        assert!(sc.advance(b"PING\r\n").unwrap().1);
        assert!(sc.head().inline);
    }

    /// Found by fuzz/fuzz_targets/scan_reply.rs: `$-0` was a null here but
    /// an empty string (awaiting its CRLF) to `redis-protocol`, and hiredis
    /// refuses it. Only -1 is a null; other negative lengths are refused.
    #[test]
    fn only_minus_one_is_a_null_length() {
        // -1 is a null for every aggregate too, as hiredis reads it.
        let nulls = b"$-1\r\n*-1\r\n%-1\r\n";
        assert_eq!(frames(Side::Reply, nulls, &[]).unwrap(), vec![5, 5, 5]);
        for bad in [&b"$-0\r\n"[..], b"$-2\r\n", b"*-5\r\n", b"$-01\r\n"] {
            let err = frames(Side::Reply, bad, &[]).unwrap_err();
            assert!(err.0.contains("bad length"), "{bad:?}: {err}");
        }
    }

    /// Found by fuzz/fuzz_targets/scan_reply.rs: a `;0` chunk outside a
    /// streamed string closed the aggregate around it, so `*2\r\n;0\r\n`
    /// was a whole reply. A chunk belongs in a `$?` string only.
    #[test]
    fn chunks_only_in_streamed_strings() {
        for bad in [&b";0\r\n"[..], b"*2\r\n;0\r\n", b"|1\r\n+k\r\n;0\r\n"] {
            let err = frames(Side::Reply, bad, &[]).unwrap_err();
            assert_eq!(
                err.0, "invalid RESP from the server: unexpected ';'",
                "{bad:?}"
            );
        }
        assert_eq!(
            frames(Side::Reply, b"$?\r\n;1\r\na\r\n;0\r\n", &[]).unwrap(),
            vec![15]
        );
    }

    /// Found by fuzz/fuzz_targets/scan_reply.rs: `=0\r\n\r\n` was a frame
    /// here, while a decoder waits for the 4-byte format (`txt:`) and
    /// hiredis refuses it.
    #[test]
    fn verbatim_strings_have_their_format() {
        assert_eq!(
            frames(Side::Reply, b"=8\r\ntxt:abcd\r\n=4\r\ntxt:\r\n", &[]).unwrap(),
            vec![14, 10]
        );
        let err = frames(Side::Reply, b"=3\r\nabc\r\n", &[]).unwrap_err();
        assert_eq!(
            err.0,
            "invalid RESP from the server: verbatim string without its format"
        );
    }

    /// Found by fuzz/fuzz_targets/scan_reply.rs: a reply line ended by a
    /// bare LF was cut there, so `+a\n:1\r\n` (one line to a client
    /// library) became two replies. It is refused, in any cut.
    #[test]
    fn reply_lines_end_at_crlf_only() {
        let input = b"+a\n:1\r\n";
        for cut in 0..input.len() {
            let err = frames(Side::Reply, input, &[cut]).unwrap_err();
            assert_eq!(
                err.0,
                "invalid RESP from the server: line not ended by CRLF"
            );
        }
        // A CR in the line is data; the line ends at the first CRLF, even
        // when the CR and the LF arrive in different reads.
        let input = b"+a\rb\r\n-ERR x\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                frames(Side::Reply, input, &[cut]).unwrap(),
                vec![6, 8],
                "cut {cut}"
            );
        }
        // Inline requests still end at a bare LF, as Redis reads them.
        assert_eq!(
            frames(Side::Request, b"PING\nPING\r\n", &[]).unwrap(),
            vec![5, 6]
        );
    }

    #[test]
    fn malformed_input_gets_redis_errors() {
        let cases: &[(Side, &[u8], &str)] = &[
            (
                Side::Request,
                b"*2\r\n:1\r\n",
                "Protocol error: expected ':', got ':'",
            ),
            (
                Side::Request,
                b"*x\r\n",
                "Protocol error: invalid multibulk length",
            ),
            (
                Side::Request,
                b"*1\r\n$-5\r\n",
                "Protocol error: invalid bulk length",
            ),
            (
                Side::Request,
                b"*1\r\n$abc\r\n",
                "Protocol error: invalid bulk length",
            ),
            (
                Side::Request,
                b"*1\r\n$2000000\r\n",
                "Protocol error: invalid bulk length",
            ),
            (
                Side::Request,
                b"*1\r\n$05\r\n",
                "Protocol error: invalid bulk length",
            ),
            (
                Side::Request,
                b"*01\r\n",
                "Protocol error: invalid multibulk length",
            ),
            (
                Side::Reply,
                b"$3\r\nabcde\r\n",
                "invalid RESP from the server: bulk string not followed by CRLF",
            ),
            (
                Side::Request,
                b"*99999999999\r\n",
                "Protocol error: invalid multibulk length",
            ),
            (
                Side::Reply,
                b"?what\r\n",
                "invalid RESP from the server: unknown type byte '?'",
            ),
            (
                Side::Reply,
                b".\r\n",
                "invalid RESP from the server: unexpected '.'",
            ),
        ];
        for (side, input, want) in cases {
            let err = frames(*side, input, &[]).unwrap_err();
            let want = want.replace("expected ':', got", "expected '$', got");
            assert!(err.0.starts_with(&want), "{input:?}: {err} (want {want})");
        }
        let mut long = vec![b'x'; MAX_INLINE + 10];
        long.push(b'\n');
        assert_eq!(
            frames(Side::Request, &long, &[1000]).unwrap_err().0,
            "Protocol error: too big inline request"
        );
    }

    #[test]
    fn replies_nest_as_deep_as_the_server_makes_them() {
        // What `EVAL "... for i=1,N ..."` returns: N nested one-element
        // arrays around an empty one.
        for depth in [300usize, 10_000] {
            let mut reply = b"*1\r\n".repeat(depth);
            reply.extend_from_slice(b"*0\r\n+after\r\n");
            assert_eq!(
                frames(Side::Reply, &reply, &[7, 1000]).unwrap(),
                vec![depth * 4 + 4, 8],
                "depth {depth}"
            );
        }
        // Only a server gone wrong nests deeper than the bound; it is an
        // error then, not an ever-growing stack.
        let endless = b"*1\r\n".repeat(MAX_DEPTH + 1);
        let err = frames(Side::Reply, &endless, &[64 * 1024]).unwrap_err();
        assert!(err.0.contains("nested deeper than"), "{err}");
    }

    #[test]
    fn request_length_lines_end_as_redis_reads_them() {
        // What redis-server 7.0.15 ran: any byte after a length line's
        // `\r` is skipped unread (`+PONG` for each of these).
        for input in [&b"*1\rX$4\r\nPING\r\n"[..], b"*1\r\n$4\rXPING\r\n"] {
            assert_eq!(frames(Side::Request, input, &[]).unwrap(), vec![14]);
            let (ranges, frame) = (args(input), input);
            assert_eq!(ranges.len(), 1);
            assert_eq!(&frame[ranges[0].clone()], b"PING");
        }
        // ...but a reply's length line ends in CRLF.
        assert!(frames(Side::Reply, b"$1\rXa\r\n", &[]).is_err());
        // string2ll refuses a negative count below i64::MIN: Redis
        // answers an error instead of ignoring it like `*-1`.
        assert_eq!(
            frames(Side::Request, b"*-9999999999999999999\r\n", &[])
                .unwrap_err()
                .0,
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            frames(Side::Request, b"*-9223372036854775808\r\n", &[]).unwrap(),
            vec![23]
        );
        // Redis shows the unexpected byte as it is (CR and LF become spaces
        // on the way out, as in Redis).
        assert_eq!(
            frames(Side::Request, b"*1\r\n\tx", &[]).unwrap_err().0,
            "Protocol error: expected '$', got '\t'"
        );
    }

    #[test]
    fn args_are_read_as_redis_reads_them() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", &[b"AUTH", b"pw"]),
            // The bytes after each argument are skipped unread.
            (b"*2\r\n$4\r\nAUTHxx$2\r\npwxx", &[b"AUTH", b"pw"]),
            (b"*1\r\n$0\r\n\r\n", &[b""]),
            (b"*0\r\n", &[]),
            (b"*-1\r\n", &[]),
            (b"PING\r\n", &[]),
        ];
        for (frame, want) in cases {
            assert_eq!(frames(Side::Request, frame, &[]).unwrap().len(), 1);
            let got: Vec<&[u8]> = args(frame).into_iter().map(|r| &frame[r]).collect();
            assert_eq!(got, *want, "{frame:?}");
        }
    }

    #[test]
    fn request_argument_crlf_is_skipped_unread_as_redis_does() {
        // Redis runs `PING` here; the two bytes after the argument are skipped.
        assert_eq!(
            frames(
                Side::Request,
                b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",
                &[]
            )
            .unwrap(),
            vec![14, 14]
        );
    }

    #[test]
    fn unauthenticated_limits_are_redis_own() {
        let scan = |input: &[u8]| {
            let mut sc = Scanner::new(Side::Request, 1 << 20);
            sc.set_unauthenticated(true);
            sc.advance(input).map(|(_, done)| done)
        };
        assert_eq!(
            scan(b"*11\r\n").unwrap_err().0,
            "Protocol error: unauthenticated multibulk length"
        );
        assert_eq!(
            scan(b"*1\r\n$16385\r\n").unwrap_err().0,
            "Protocol error: unauthenticated bulk length"
        );
        assert_eq!(scan(b"*10\r\n$16384\r\n"), Ok(false));
    }

    #[test]
    fn huge_bulk_is_skipped_in_pieces_without_buffering() {
        // A 100 MB value, offered in 64 KiB pieces: every piece is consumed
        // whole, so the caller can forward it and drop it.
        let len = 100 * 1024 * 1024;
        let mut sc = Scanner::new(Side::Request, 512 << 20);
        let header = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n");
        assert_eq!(
            sc.advance(header.as_bytes()).unwrap(),
            (header.len(), false)
        );
        let piece = vec![b'v'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(piece.len());
            assert_eq!(sc.advance(&piece[..n]).unwrap(), (n, false));
            left -= n;
        }
        assert_eq!(sc.advance(b"\r").unwrap(), (1, false));
        assert_eq!(sc.advance(b"\n").unwrap(), (1, true));
    }

    /// What a scanner reports for `input` offered in reads ending at `cuts`:
    /// each completed frame's length and head (request side), then the
    /// error, if one stopped it, or the bytes of a frame left in progress.
    fn trace(
        side: Side,
        max: u64,
        unauth: bool,
        fast: bool,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<(usize, Head)>, Result<usize, Error>) {
        let mut sc = Scanner::new(side, max);
        sc.set_unauthenticated(unauth);
        sc.set_fast_path(fast);
        let (mut out, mut start, mut pos) = (Vec::new(), 0, 0);
        let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
        ends.push(input.len());
        for end in ends {
            while pos < end {
                match sc.advance(&input[pos..end]) {
                    Ok((n, done)) => {
                        pos += n;
                        if done {
                            out.push((pos - start, sc.head()));
                            start = pos;
                        } else {
                            assert_eq!(pos, end, "a read not taken whole");
                            break;
                        }
                    }
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        (out, Ok(sc.frame_len()))
    }

    /// The streams the fast path is checked on: every shape it takes, and
    /// the ones next to them that it must leave to the state machine
    /// (inline, streamed, attributes, nulls, signs, leading zeros,
    /// malformed, over the size caps, incomplete at the end).
    const SHAPES: &[(Side, &[u8])] = &[
        (Side::Request, b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"),
        (Side::Request, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n"),
        (Side::Request, b"*1\r\n$0\r\n\r\n*2\r\n$4\r\na\r\nb\r\n$2\r\n\r\n\r\n"),
        (Side::Request, b"*1\rX$4\r\nPING\r\n*1\r\n$4\rXPINGxx*1\r\n$4\r\nPING\r\n"),
        (Side::Request, b"*0\r\n*-1\r\nPING\r\n\n*1\r\n$4\r\nPING\r\nGET k\n"),
        (Side::Request, b"*12\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n"),
        (Side::Request, b"*1\r\n$70\r\n0123456789012345678901234567890123456789012345678901234567890123456789\r\n"),
        (Side::Request, b"*1\r\n$4\r\nPING\r\n*2\r\n:1\r\n"),
        (Side::Request, b"*01\r\n"),
        (Side::Request, b"*1\r\n$05\r\nhello\r\n"),
        (Side::Request, b"*1\r\n$00\r\n\r\n"),
        (Side::Request, b"*1\r\n$-5\r\n"),
        (Side::Request, b"*-0\r\n"),
        (Side::Request, b"*99999999999\r\n"),
        (Side::Request, b"*9999999999999999999\r\n"),
        (Side::Request, b"*1\r\n$1234567890123456789\r\n"),
        (Side::Request, b"*-9223372036854775808\r\n*1\r\n$1\r\nx\r\n"),
        (Side::Request, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel"),
        (Side::Request, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r"),
        (Side::Request, b"*1\r\n$4\r\nPING\r\n*1x\r\n"),
        (Side::Request, b"*1\r\n$4x\r\nPING\r\n"),
        (Side::Request, b"*2\r\n$1\r\na\r\n*1\r\n"),
        (Side::Request, b"*100\r\n$1\r\na\r\n"),
        (Side::Reply, b"$-1\r\n$3\r\nabc\r\n$0\r\n\r\n+OK\r\n-ERR x\r\n:12\r\n"),
        (Side::Reply, b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n*1\r\n*1\r\n*1\r\n_\r\n"),
        (Side::Reply, b"%2\r\n+a\r\n*1\r\n:1\r\n+b\r\n%0\r\n~2\r\n,1.5\r\n(12\r\n>2\r\n+p\r\n#t\r\n"),
        (Side::Reply, b"*-1\r\n%-1\r\n~-1\r\n>-1\r\n=-1\r\n!-1\r\n*3\r\n$-1\r\n*-1\r\n_\r\n"),
        (Side::Reply, b"=8\r\ntxt:abcd\r\n!3\r\nerr\r\n$03\r\nabc\r\n*02\r\n:1\r\n:2\r\n"),
        (Side::Reply, b"$5\r\na\r\nb\r\r\n+a\rb\r\n$2\r\n\r\n\r\n"),
        (Side::Reply, b"|1\r\n+k\r\n+v\r\n+OK\r\n*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n"),
        (Side::Reply, b"$?\r\n;2\r\nab\r\n;0\r\n*?\r\n:1\r\n.\r\n*2\r\n$?\r\n;1\r\na\r\n;0\r\n:1\r\n"),
        (Side::Reply, b"*1\r\n:1\r\n$-0\r\n"),
        (Side::Reply, b"*1\r\n:1\r\n*-2\r\n"),
        (Side::Reply, b"$3\r\nabcde\r\n"),
        (Side::Reply, b"$3\r\nabc\n\n"),
        (Side::Reply, b"+OK\r\n+a\n:1\r\n"),
        (Side::Reply, b"+OK\r\n+\n"),
        (Side::Reply, b"+OK\r\n=3\r\nabc\r\n"),
        (Side::Reply, b"+OK\r\n$1\rXa\r\n"),
        (Side::Reply, b"*1\r\n;0\r\n"),
        (Side::Reply, b"*1\r\n.\r\n"),
        (Side::Reply, b"*1\r\n?x\r\n"),
        (Side::Reply, b"$12345678901234567890\r\n"),
        (Side::Reply, b"*1234567890123456789\r\n:1\r\n"),
        (Side::Reply, b"%9999999999999999999\r\n"),
        (Side::Reply, b"*3\r\n:1\r\n:2\r\n"),
        (Side::Reply, b"*1000000\r\n:1\r\n:2\r\n"),
        (Side::Reply, b"$70\r\n0123456789012345678901234567890123456789012345678901234567890123456789\r\n"),
        (Side::Reply, b"+0123456789012345678901234567890123456789012345678901234567890123456789\r\n"),
        (Side::Reply, b"+0123456789012345678901234567890123456789012345678901234567\r\n"),
        (Side::Reply, b"$5\r\nhel"),
    ];

    /// The fast path changes nothing: every stream in [`SHAPES`], whole and
    /// cut at every byte (and at every pair of bytes), with and without
    /// the unauthenticated limits and with a small size cap, gives the
    /// frames, heads, errors and bytes in progress of the state machine
    /// alone on the whole stream.
    #[test]
    fn fast_path_agrees_with_the_state_machine_in_every_cut() {
        let mut fast_frames = 0;
        for &(side, input) in SHAPES {
            for (max, unauth) in [(1 << 20, false), (1 << 20, true), (64, false)] {
                let want = trace(side, max, unauth, false, input, &[]);
                let whole = trace(side, max, unauth, true, input, &[]);
                let show = String::from_utf8_lossy(input);
                assert_eq!(whole, want, "{show:?} max {max} unauth {unauth}");
                fast_frames += whole.0.len();
                for a in 1..input.len() {
                    for fast in [true, false] {
                        let got = trace(side, max, unauth, fast, input, &[a]);
                        assert_eq!(got, want, "{show:?} cut at {a}, fast {fast}");
                    }
                    for b in a + 1..input.len() {
                        let got = trace(side, max, unauth, true, input, &[a, b]);
                        assert_eq!(got, want, "{show:?} cut at {a} and {b}");
                    }
                }
            }
        }
        assert!(fast_frames > 100);
    }

    /// The same on [`SHAPES`] with bytes changed, inserted and removed at
    /// random: whatever the bytes, the fast path agrees with the state
    /// machine, whole and in random reads.
    #[test]
    fn fast_path_agrees_on_mutated_shapes() {
        const BYTES: &[u8] = b"\r\n$*:+-_.;?|%~>=!#(,0123456789x";
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for &(side, input) in SHAPES {
            for _ in 0..300 {
                let mut m = input.to_vec();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(m.len() as u64 + 1) as usize;
                    let b = BYTES[rng.below(BYTES.len() as u64) as usize];
                    match rng.below(3) {
                        0 if at < m.len() => m[at] = b,
                        1 if at < m.len() => {
                            m.remove(at);
                        }
                        _ => m.insert(at, b),
                    }
                }
                let unauth = rng.below(2) == 0;
                let want = trace(side, 1 << 20, unauth, false, &m, &[]);
                let cut = rng.below(m.len() as u64 + 1) as usize;
                for cuts in [&[][..], &[cut]] {
                    let got = trace(side, 1 << 20, unauth, true, &m, cuts);
                    assert_eq!(got, want, "{:?} cuts {cuts:?}", String::from_utf8_lossy(&m));
                }
            }
        }
    }

    /// The shapes the fast path is for are taken by it, and the ones it
    /// must not take are left to the state machine.
    #[test]
    fn fast_path_takes_what_it_is_for() {
        let taken = |side: Side, frame: &[u8]| {
            let mut sc = Scanner::new(side, 1 << 20);
            sc.whole(frame)
        };
        for frame in [
            &b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n"[..],
            b"*1\r\n$0\r\n\r\n",
            b"*1\r\n$4\rXPINGxx",
        ] {
            assert_eq!(taken(Side::Request, frame), Some(frame.len()), "{frame:?}");
        }
        for frame in [
            &b"$-1\r\n"[..],
            b"$3\r\nabc\r\n",
            b"*2\r\n%1\r\n+a\r\n:1\r\n~0\r\n",
            b">2\r\n=5\r\ntxt:a\r\n!1\r\nx\r\n",
        ] {
            assert_eq!(taken(Side::Reply, frame), Some(frame.len()), "{frame:?}");
        }
        for frame in [&b"PING\r\n"[..], b"*0\r\n", b"*1\r\n$4\r\nPIN"] {
            assert_eq!(taken(Side::Request, frame), None, "{frame:?}");
        }
        for frame in [&b"|1\r\n+a\r\n+b\r\n+c\r\n"[..], b"$?\r\n;0\r\n", b"*1\r\n"] {
            assert_eq!(taken(Side::Reply, frame), None, "{frame:?}");
        }
    }

    /// A tiny deterministic generator (no extra dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn gen_frame(rng: &mut Rng, depth: u32) -> redis_protocol::resp3::types::OwnedFrame {
        use redis_protocol::resp3::types::OwnedFrame as F;
        let pick = if depth > 3 {
            rng.below(5)
        } else {
            rng.below(9)
        };
        let text = |rng: &mut Rng| -> Vec<u8> {
            let n = rng.below(40) as usize;
            (0..n)
                .map(|_| b"ab\r\n$*:+-x"[rng.below(10) as usize])
                .collect()
        };
        match pick {
            0 => F::BlobString {
                data: text(rng),
                attributes: None,
            },
            1 => F::SimpleString {
                data: b"OK".to_vec(),
                attributes: None,
            },
            2 => F::Number {
                data: rng.next() as i64 >> 3,
                attributes: None,
            },
            3 => F::Null,
            4 => F::SimpleError {
                data: "ERR x".into(),
                attributes: None,
            },
            5 | 6 => F::Array {
                data: (0..rng.below(5))
                    .map(|_| gen_frame(rng, depth + 1))
                    .collect(),
                attributes: None,
            },
            7 => F::Push {
                data: (0..1 + rng.below(4))
                    .map(|_| gen_frame(rng, depth + 1))
                    .collect(),
                attributes: None,
            },
            _ => F::Set {
                data: (0..rng.below(4))
                    .map(|i| F::Number {
                        data: i as i64,
                        attributes: None,
                    })
                    .collect(),
                attributes: None,
            },
        }
    }

    #[test]
    fn agrees_with_redis_protocol_on_generated_frames() {
        use redis_protocol::resp3::{
            decode::complete::decode, encode::complete::encode, types::Resp3Frame,
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let mut stream = Vec::new();
            let mut lens = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let frame = gen_frame(&mut rng, 0);
                let mut buf = vec![0; frame.encode_len(false)];
                let n = encode(&mut buf, &frame, false).unwrap();
                buf.truncate(n);
                // The oracle: redis-protocol decodes exactly this frame back.
                assert_eq!(decode(&buf).unwrap().map(|(_, n)| n), Some(n));
                lens.push(n);
                stream.extend_from_slice(&buf);
            }
            let cuts: Vec<usize> = (0..rng.below(4))
                .map(|_| rng.below(stream.len() as u64) as usize)
                .collect();
            let mut sorted = cuts.clone();
            sorted.sort_unstable();
            assert_eq!(
                frames(Side::Reply, &stream, &sorted).unwrap(),
                lens,
                "cuts {sorted:?}"
            );
            // The fast path takes these whole; the state machine alone agrees.
            assert_eq!(
                trace(Side::Reply, 1 << 20, false, true, &stream, &[]),
                trace(Side::Reply, 1 << 20, false, false, &stream, &[]),
            );
        }
    }
}
