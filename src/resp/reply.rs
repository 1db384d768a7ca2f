//! What a server reply is, as far as the proxy cares: errors, pub/sub
//! messages and confirmations, MONITOR lines. Looks at frame heads only;
//! frames are never decoded on the relay path except confirmations.

use bytes::Bytes;
use redis_protocol::resp3::{decode::complete::decode_range, types::RangeFrame};

/// True for `-ERR ...` and RESP3 blob errors.
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// True for a RESP3 push frame (`>`).
pub fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&b'>')
}

/// The first element of an aggregate (`*` or `>`) when it is a bulk or simple
/// string. Outer `None`: more bytes are needed to tell. `Some(None)`: not an
/// aggregate, or its first element is not a string.
pub fn first_string(frame: &[u8]) -> Option<Option<&[u8]>> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return Some(None);
    }
    let (count, rest) = line(&frame[1..])?;
    if count.first() == Some(&b'-') || count == b"0" {
        return Some(None);
    }
    match rest.first()? {
        b'$' => {
            let (len, body) = line(&rest[1..])?;
            match std::str::from_utf8(len)
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            {
                Some(len) => body.get(..len).map(Some),
                None => Some(None),
            }
        }
        b'+' => line(&rest[1..]).map(|(s, _)| Some(s)),
        _ => Some(None),
    }
}

/// Splits off one CRLF-terminated line: (content, rest).
fn line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(b'\n', buf)?;
    let content = &buf[..at];
    Some((
        content.strip_suffix(b"\r").unwrap_or(content),
        &buf[at + 1..],
    ))
}

/// A pub/sub message delivered to a subscriber (not a reply to a command).
pub fn is_message_word(word: &[u8]) -> bool {
    matches!(word, b"message" | b"pmessage" | b"smessage")
}

/// A MONITOR line: `+1700000000.123456 [0 127.0.0.1:5000] "get" "k"`.
pub fn is_monitor_line(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"+") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(rest) = rest.get(digits..).filter(|_| digits > 0) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b".") else {
        return false;
    };
    let frac = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    frac > 0 && rest[frac..].starts_with(b" [")
}

/// A pub/sub confirmation: `[word, channel-or-nil, count]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub word: Bytes,
    pub channel: Option<Bytes>,
    pub count: i64,
}

/// Decodes a complete confirmation frame: a RESP2 array or a RESP3 push.
/// Each goes to its own protocol's decoder (RESP3 has no `$-1` null).
pub fn confirmation(frame: &[u8]) -> Option<Confirmation> {
    let text = |r: (usize, usize)| Bytes::copy_from_slice(&frame[r.0..r.1]);
    if frame.first() == Some(&b'*') {
        use redis_protocol::resp2::{decode::decode_range, types::RangeFrame as F};
        let (F::Array(elements), _) = decode_range(frame).ok()?? else {
            return None;
        };
        let string = |f: &F| match f {
            F::BulkString(r) | F::SimpleString(r) => Some(text(*r)),
            _ => None,
        };
        return match elements.as_slice() {
            [word, channel, F::Integer(count)] => Some(Confirmation {
                word: string(word)?,
                channel: string(channel),
                count: *count,
            }),
            _ => None,
        };
    }
    let (RangeFrame::Push { data: elements, .. }, _) = decode_range(frame).ok()?? else {
        return None;
    };
    let string = |f: &RangeFrame| match f {
        RangeFrame::BlobString { data, .. } | RangeFrame::SimpleString { data, .. } => {
            Some(text(*data))
        }
        _ => None,
    };
    match elements.as_slice() {
        [word, channel, RangeFrame::Number { data: count, .. }] => Some(Confirmation {
            word: string(word)?,
            channel: string(channel),
            count: *count,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_string_of_partial_and_complete_frames() {
        type Case<'a> = (&'a [u8], Option<Option<&'a [u8]>>);
        let cases: &[Case] = &[
            (b"*3\r\n$7\r\nmessage\r\n$1\r\nc", Some(Some(b"message"))),
            (b"*3\r\n$7\r\nmess", None),
            (b"*3\r\n", None),
            (b"*3", None),
            (b">3\r\n$10\r\ninvalidate\r\n", Some(Some(b"invalidate"))),
            (b"*2\r\n+pong\r\n", Some(Some(b"pong"))),
            (b"*-1\r\n", Some(None)),
            (b"*0\r\n", Some(None)),
            (b"*2\r\n:1\r\n:2\r\n", Some(None)),
            (b"$5\r\nhello\r\n", Some(None)),
            (b"+OK\r\n", Some(None)),
        ];
        for (frame, want) in cases {
            assert_eq!(
                first_string(frame),
                *want,
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn monitor_lines() {
        assert!(is_monitor_line(
            b"+1700000000.123456 [0 127.0.0.1:5000] \"get\" \"k\"\r\n"
        ));
        assert!(is_monitor_line(b"+1.5 [0 lua] \"ping\"\r\n"));
        assert!(!is_monitor_line(b"+OK\r\n"));
        assert!(!is_monitor_line(b"+PONG\r\n"));
        assert!(!is_monitor_line(b"+123 [x]\r\n"));
        assert!(!is_monitor_line(b"$3\r\n1.2 [\r\n"));
    }

    #[test]
    fn decodes_confirmations() {
        let c = confirmation(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n").unwrap();
        assert_eq!(c.word.as_ref(), b"subscribe");
        assert_eq!(c.channel.as_deref(), Some(&b"ch"[..]));
        assert_eq!(c.count, 1);
        let c = confirmation(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n").unwrap();
        assert_eq!(c.channel, None);
        let c = confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n").unwrap();
        assert_eq!((c.channel, c.count), (None, 0));
        assert_eq!(confirmation(b"+OK\r\n"), None);
    }
}
