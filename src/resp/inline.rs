//! Inline commands (`PING` typed into telnet): split a line into arguments
//! exactly as Redis's `sdssplitargs` does, quotes and escapes included.

/// Splits an inline command line (without its line ending) into arguments.
/// `None` means unbalanced quotes, which Redis reports as a protocol error.
pub fn split(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // sdssplitargs walks a C string: a NUL ends the line.
    let line = &line[..memchr::memchr(0, line).unwrap_or(line.len())];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && isspace(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if inq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && hex(line.get(i + 2)).is_some()
                            && hex(line.get(i + 3)).is_some() =>
                    {
                        // Checked just above: both are hex digits.
                        cur.push(
                            hex(line.get(i + 2)).unwrap() * 16 + hex(line.get(i + 3)).unwrap(),
                        );
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        cur.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // A closing quote must be followed by a space or the end.
                        if line.get(i + 1).is_some_and(|&c| !isspace(c)) {
                            return None;
                        }
                        inq = false;
                        i += 1;
                        break;
                    }
                    Some(c) => cur.push(c),
                }
            } else if insq {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        cur.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&c| !isspace(c)) {
                            return None;
                        }
                        insq = false;
                        i += 1;
                        break;
                    }
                    Some(c) => cur.push(c),
                }
            } else {
                match c {
                    None => break,
                    // Not `isspace`: sdssplitargs ends a bare word only at
                    // these, so a vertical tab or form feed stays in it.
                    Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(c) => cur.push(c),
                }
            }
            i += 1;
        }
        let _ = (inq, insq);
        args.push(cur);
    }
}

/// C's `isspace` in the "C" locale, which sdssplitargs skips between words
/// and accepts after a closing quote. Unlike `u8::is_ascii_whitespace` it
/// includes the vertical tab (0x0b).
fn isspace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(c: Option<&u8>) -> Option<u8> {
    (*c? as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::split;

    fn s(line: &str) -> Option<Vec<String>> {
        split(line.as_bytes()).map(|v| {
            v.into_iter()
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .collect()
        })
    }

    #[test]
    fn splits_like_sdssplitargs() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("", Some(&[])),
            ("   ", Some(&[])),
            ("PING", Some(&["PING"])),
            ("set  a   b", Some(&["set", "a", "b"])),
            (r#"set k "hello world""#, Some(&["set", "k", "hello world"])),
            (r#"set k "a\nb\x41""#, Some(&["set", "k", "a\nbA"])),
            ("set k 'it\\'s'", Some(&["set", "k", "it's"])),
            ("set k 'a\\nb'", Some(&["set", "k", "a\\nb"])),
            (r#"set k "unterminated"#, None),
            (r#"set k "closed"x"#, None),
            ("set k 'open", None),
            ("\tget\tk\t", Some(&["get", "k"])),
            ("PING\0", Some(&["PING"])),
            ("set k v\0ignored", Some(&["set", "k", "v"])),
            ("\0", Some(&[])),
            ("set k \"a\0b\"", None),
            // What redis-server 7.0.15 ran: a vertical tab or form feed
            // inside a bare word is part of it, and both separate words
            // after a closing quote or before the first word.
            ("ECHO a\x0bb", Some(&["ECHO", "a\x0bb"])),
            ("ECHO a\x0cb", Some(&["ECHO", "a\x0cb"])),
            ("\x0bECHO ab", Some(&["ECHO", "ab"])),
            ("\x0cECHO ab\x0c", Some(&["ECHO", "ab\x0c"])),
            ("ECHO \"a\"\x0bb", Some(&["ECHO", "a", "b"])),
            ("ECHO 'a'\x0cb", Some(&["ECHO", "a", "b"])),
        ];
        for (line, want) in cases {
            let want = want.map(|w| w.iter().map(|x| x.to_string()).collect::<Vec<_>>());
            assert_eq!(s(line), want, "line {line:?}");
        }
    }
}
