//! A RESP value parsed for rewriting. Every frame keeps its type byte and
//! its bytes as written, so encoding an unchanged value gives back exactly
//! what the server sent; only the few replies the proxy rewrites (cluster
//! topology) are ever parsed this way.

/// Deepest nesting parsed; topology replies are four levels deep.
const MAX_DEPTH: usize = 16;

/// One RESP value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A line-type frame (`+ - : , ( # _`) or a null (`$-1`, `*-1`): the
    /// whole line, type byte included, without the CRLF.
    Line(Vec<u8>),
    /// A bulk string (`$`), verbatim string (`=`) or blob error (`!`).
    Bulk(u8, Vec<u8>),
    /// An aggregate (`* % ~ > |`). Map and attribute entries alternate
    /// key, value.
    Aggregate(u8, Vec<Value>),
}

impl Value {
    /// A bulk string.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(b'$', bytes.into())
    }

    /// An integer.
    pub fn int(n: i64) -> Value {
        Value::Line(format!(":{n}").into_bytes())
    }

    /// The text of a bulk, verbatim or simple string.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b'$', b) => Some(b),
            // `=` carries a three-letter format and a colon first.
            Value::Bulk(b'=', b) => b.get(4..),
            Value::Line(l) if l.first() == Some(&b'+') => Some(&l[1..]),
            _ => None,
        }
    }

    /// The value of an integer.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Value::Line(l) if l.first() == Some(&b':') => {
                std::str::from_utf8(&l[1..]).ok()?.parse().ok()
            }
            _ => None,
        }
    }

    /// The elements of an array, set, push or map.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Aggregate(_, items) => Some(items),
            _ => None,
        }
    }
}

/// Parses one complete frame at the start of `buf`: the value and its
/// length. `None` for anything incomplete, malformed, streamed (`$?`,
/// `*?`) or nested deeper than topology replies are.
pub fn parse(buf: &[u8]) -> Option<(Value, usize)> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Option<(Value, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[..end];
    let ty = *line.first()?;
    let after = end + 2;
    let count = || -> Option<i64> { std::str::from_utf8(&line[1..]).ok()?.parse().ok() };
    match ty {
        b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => Some((Value::Line(line.to_vec()), after)),
        b'$' | b'=' | b'!' => match count()? {
            -1 if ty == b'$' => Some((Value::Line(line.to_vec()), after)),
            n if n >= 0 => {
                let n = n as usize;
                let payload = buf.get(after..after + n)?;
                (buf.get(after + n..after + n + 2)? == b"\r\n")
                    .then(|| (Value::Bulk(ty, payload.to_vec()), after + n + 2))
            }
            _ => None,
        },
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let n = count()?;
            if n == -1 && ty == b'*' {
                return Some((Value::Line(line.to_vec()), after));
            }
            let n = usize::try_from(n).ok()?;
            let n = if matches!(ty, b'%' | b'|') {
                n.checked_mul(2)?
            } else {
                n
            };
            let mut items = Vec::with_capacity(n.min(1024));
            let mut at = after;
            for _ in 0..n {
                let (item, len) = parse_at(&buf[at..], depth + 1)?;
                items.push(item);
                at += len;
            }
            Some((Value::Aggregate(ty, items), at))
        }
        _ => None,
    }
}

/// Appends the RESP encoding of `v` to `out`.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Line(l) => {
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
        Value::Bulk(ty, b) => {
            out.push(*ty);
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Aggregate(ty, items) => {
            let n = if matches!(ty, b'%' | b'|') {
                items.len() / 2
            } else {
                items.len()
            };
            out.push(*ty);
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_values_encode_to_the_bytes_they_came_from() {
        let frames: [&[u8]; 6] = [
            b"*3\r\n*3\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7101\r\n$2\r\nid\r\n%0\r\n$-1\r\n*-1\r\n",
            b"%2\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*1\r\n%1\r\n$2\r\nip\r\n_\r\n",
            b"=8\r\ntxt:ab c\r\n",
            b"-MOVED 1 127.0.0.1:7000\r\n",
            b">2\r\n+a\r\n~1\r\n,1.5\r\n",
            b"!3\r\nerr\r\n",
        ];
        for frame in frames {
            let (v, n) = parse(frame).unwrap_or_else(|| panic!("{frame:?}"));
            assert_eq!(n, frame.len());
            let mut out = Vec::new();
            encode(&v, &mut out);
            assert_eq!(out, frame);
        }
        assert_eq!(
            parse(b"=8\r\ntxt:ab c\r\n").unwrap().0.text(),
            Some(&b"ab c"[..])
        );
    }

    #[test]
    fn incomplete_streamed_and_malformed_frames_are_not_parsed() {
        for frame in [
            &b"*2\r\n:1\r\n"[..],
            b"$5\r\nab",
            b"$2\r\nabcd\r\n",
            b"$?\r\n;1\r\na\r\n;0\r\n",
            b"*?\r\n:1\r\n.\r\n",
            b"x\r\n",
        ] {
            assert_eq!(parse(frame), None, "{frame:?}");
        }
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(&deep), None);
    }
}
