//! The references the targets compare the proxy with, written apart from
//! the proxy's code: the `redis-protocol` decoder (a third-party RESP parser)
//! and line-by-line Rust renderings of the Redis C functions the proxy
//! imitates (`sdssplitargs`, `helloCommand`'s option loop, `string2ll`).

use redis_protocol::{
    resp2::{self, types::Resp2Frame},
    resp3::{self, types::Resp3Frame},
};

/// What the decoder makes of the bytes at a frame start.
#[derive(Debug, PartialEq, Eq)]
pub enum Oracle {
    /// A frame of this many bytes that re-encodes to exactly those bytes, so
    /// no leniency of either parser is involved.
    Frame(usize),
    /// The bytes are a valid prefix; a frame needs more.
    Incomplete,
    /// Refused, or decoded from bytes that are not its canonical encoding.
    Other,
}

/// Decodes a reply as a client library would: RESP2 first (so `$-1` and
/// `*-1` are nulls), RESP3 for the types RESP2 lacks.
pub fn reply(buf: &[u8]) -> Oracle {
    match resp2::decode::decode(buf) {
        Ok(Some((f, n))) => return canonical2(&f, &buf[..n]),
        Ok(None) => return Oracle::Incomplete,
        Err(_) => {}
    }
    match resp3::decode::complete::decode(buf) {
        Ok(Some((f, n))) => {
            let mut out = vec![0; f.encode_len(false)];
            let same = resp3::encode::complete::encode(&mut out, &f, false).is_ok()
                && out == buf[..n]
                && clean3(&f);
            if same {
                Oracle::Frame(n)
            } else {
                Oracle::Other
            }
        }
        Ok(None) => Oracle::Incomplete,
        Err(_) => Oracle::Other,
    }
}

/// Decodes a multibulk request; `Some(args)` only for a canonical array of
/// bulk strings (the one shape a client library sends).
pub fn request(buf: &[u8]) -> (Oracle, Option<Vec<Vec<u8>>>) {
    match resp2::decode::decode(buf) {
        Ok(Some((f, n))) => {
            let canon = canonical2(&f, &buf[..n]);
            let args = match (&canon, f) {
                (Oracle::Frame(_), resp2::types::OwnedFrame::Array(items)) => items
                    .into_iter()
                    .map(|i| match i {
                        resp2::types::OwnedFrame::BulkString(b) => Some(b),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            match args {
                Some(args) => (canon, Some(args)),
                None => (Oracle::Other, None),
            }
        }
        Ok(None) => (Oracle::Incomplete, None),
        Err(_) => (Oracle::Other, None),
    }
}

/// The canonical multibulk encoding of `args`, by the decoder's crate.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let f = resp2::types::OwnedFrame::Array(
        args.iter()
            .map(|a| resp2::types::OwnedFrame::BulkString(a.to_vec()))
            .collect(),
    );
    let mut out = vec![0; f.encode_len(false)];
    resp2::encode::encode(&mut out, &f, false).expect("sized by encode_len");
    out
}

fn canonical2(f: &resp2::types::OwnedFrame, bytes: &[u8]) -> Oracle {
    let mut out = vec![0; f.encode_len(false)];
    let same = resp2::encode::encode(&mut out, f, false).is_ok() && out == bytes && clean2(f);
    if same {
        Oracle::Frame(bytes.len())
    } else {
        Oracle::Other
    }
}

/// RESP forbids CR and LF inside a simple string or error; the decoder
/// lets a lone LF through.
fn clean2(f: &resp2::types::OwnedFrame) -> bool {
    use resp2::types::OwnedFrame as F;
    match f {
        F::SimpleString(s) => !s.contains(&b'\n'),
        F::Error(s) => !s.contains('\n'),
        F::Array(items) => items.iter().all(clean2),
        _ => true,
    }
}

fn clean3(f: &resp3::types::OwnedFrame) -> bool {
    use resp3::types::OwnedFrame as F;
    let attrs = |a: &Option<resp3::types::OwnedAttributes>| {
        a.as_ref()
            .is_none_or(|m| m.iter().all(|(k, v)| clean3(k) && clean3(v)))
    };
    match f {
        F::SimpleString { data, attributes } | F::BigNumber { data, attributes } => {
            !data.contains(&b'\n') && attrs(attributes)
        }
        F::SimpleError { data, attributes } => !data.contains('\n') && attrs(attributes),
        F::Array { data, attributes } | F::Push { data, attributes } => {
            data.iter().all(clean3) && attrs(attributes)
        }
        F::Set { data, attributes } => data.iter().all(clean3) && attrs(attributes),
        F::Map { data, attributes } => {
            data.iter().all(|(k, v)| clean3(k) && clean3(v)) && attrs(attributes)
        }
        F::BlobString { attributes, .. }
        | F::BlobError { attributes, .. }
        | F::VerbatimString { attributes, .. }
        | F::Boolean { attributes, .. }
        | F::Number { attributes, .. }
        | F::Double { attributes, .. } => attrs(attributes),
        F::Null => true,
        // Not replies: the decoder's client-side HELLO and stream pieces.
        F::Hello { .. } | F::ChunkedString(_) => false,
    }
}

/// Redis's `sdssplitargs` (sds.c), walked over a C string as the C does:
/// `line` is read up to its first NUL.
pub fn sdssplitargs(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut s = line.to_vec();
    s.push(0);
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let isspace = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let is_hex = |c: u8| c.is_ascii_hexdigit();
    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    let mut p = 0;
    let mut vector = Vec::new();
    loop {
        while at(p) != 0 && isspace(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(vector);
        }
        let (mut inq, mut insq, mut done) = (false, false, false);
        let mut current = Vec::new();
        while !done {
            if inq || insq {
                let quote = if inq { b'"' } else { b'\'' };
                if inq
                    && at(p) == b'\\'
                    && at(p + 1) == b'x'
                    && is_hex(at(p + 2))
                    && is_hex(at(p + 3))
                {
                    current.push(hex(at(p + 2)) * 16 + hex(at(p + 3)));
                    p += 3;
                } else if inq && at(p) == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if insq && at(p) == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if at(p) == quote {
                    // A closing quote must be followed by a space or the end.
                    if at(p + 1) != 0 && !isspace(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if at(p) == 0 {
                    // Unterminated quotes.
                    return None;
                } else {
                    current.push(at(p));
                }
            } else {
                match at(p) {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => current.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        vector.push(current);
    }
}

/// `strcasecmp(arg, word) == 0` with `arg` read as a C string.
pub fn strcaseeq(arg: &[u8], word: &str) -> bool {
    let end = arg.iter().position(|&c| c == 0).unwrap_or(arg.len());
    arg[..end].eq_ignore_ascii_case(word.as_bytes())
}

/// Redis's `string2ll` (util.c): optional `-`, no `+`, no leading zeros, no
/// spaces, fits a `long long`.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || s.len() > 1) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// What Redis's `helloCommand` does with a HELLO's arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// Refused for its protocol version, before any option is read.
    BadProto,
    /// `Syntax error in HELLO option '<opt>'`, opt as a C string.
    Syntax(String),
    /// A SETNAME name with a byte outside `!`..`~`.
    BadName,
    /// Accepted: the protocol asked for, the credentials and name used (the
    /// last of each).
    Run {
        proto: Option<i64>,
        auth: Option<(&'a [u8], &'a [u8])>,
        setname: Option<&'a [u8]>,
    },
}

/// Redis 7's `helloCommand` argument handling, statement by statement.
pub fn hello<'a>(argv: &[&'a [u8]]) -> Hello<'a> {
    let mut proto = None;
    if argv.len() >= 2 {
        match string2ll(argv[1]) {
            Some(v @ 2..=3) => proto = Some(v),
            _ => return Hello::BadProto,
        }
    }
    let (mut auth, mut setname) = (None, None);
    let mut j = 2;
    while j < argv.len() {
        let moreargs = argv.len() - 1 - j;
        let opt = argv[j];
        if strcaseeq(opt, "AUTH") && moreargs >= 2 {
            auth = Some((argv[j + 1], argv[j + 2]));
            j += 2;
        } else if strcaseeq(opt, "SETNAME") && moreargs >= 1 {
            let name = argv[j + 1];
            if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                return Hello::BadName;
            }
            setname = Some(name);
            j += 1;
        } else {
            let end = opt.iter().position(|&c| c == 0).unwrap_or(opt.len());
            return Hello::Syntax(String::from_utf8_lossy(&opt[..end]).into_owned());
        }
        j += 1;
    }
    Hello::Run {
        proto,
        auth,
        setname,
    }
}
