//! `elasticache-auth-proxy healthcheck`: one bounded HTTP GET to an admin
//! endpoint, for container health checks in an image with no shell or curl
//! (distroless). It owns the request and its verdict; the endpoints and what
//! they mean belong to [`crate::admin`].

use std::{
    fmt,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    str::FromStr,
    time::{Duration, Instant},
};

/// The most of a response that is read: the status line and the first body
/// line are all the verdict needs, and a peer cannot make us buffer more.
const MAX_RESPONSE: usize = 8 * 1024;
/// The most of the body's first line that is printed.
const MAX_REASON: usize = 200;

/// An `http://host[:port]/path` URL: the only kind the admin server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    host: String,
    port: u16,
    path: String,
}

impl FromStr for Url {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{why}; use a URL such as http://127.0.0.1:9090/startup");
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is served by the admin endpoints"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        // "[::1]:9090" or "host:9090"; no port means HTTP's 80.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().map_err(|_| bad("bad port"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// GETs `url` within `timeout` in all. `Ok` with the one line to print when
/// it answered 200; `Err` with the line saying why not otherwise.
pub fn check(url: &Url, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let answer = fetch(url, deadline).and_then(|response| verdict(&response));
    match answer {
        Ok((200, reason)) => Ok(format!("{url}: 200 {reason}")),
        Ok((status, reason)) => Err(format!("{url}: {status} {reason}")),
        Err(why) => Err(format!("{url}: {why}")),
    }
}

/// Connects, sends the request and reads the response (up to
/// [`MAX_RESPONSE`]), every step bounded by `deadline`.
fn fetch(url: &Url, deadline: Instant) -> Result<Vec<u8>, String> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_string())
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("cannot resolve {}: no address", url.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|()| {
            write!(
                stream,
                "GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
                url.path, url.host, url.port
            )
        })
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while response.len() < MAX_RESPONSE {
        // A fresh read timeout each time, so a slow trickle still ends at
        // the deadline.
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| format!("cannot read the response: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the response".into())
            }
            Err(e) => return Err(format!("cannot read the response: {e}")),
        }
    }
    Ok(response)
}

/// The status code and the body's first line (the admin server's reason,
/// such as `ok` or `upstream failing: connect`) of an HTTP/1.x response.
fn verdict(response: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            let shown: String = status_line.chars().take(MAX_REASON).collect();
            format!("not an HTTP response: {shown:?}")
        })?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let reason: String = body
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_REASON)
        .collect();
    Ok((status, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = |host: &str, port, path: &str| {
            Ok(Url {
                host: host.into(),
                port,
                path: path.into(),
            })
        };
        let cases: &[(&str, Result<Url, ()>)] = &[
            (
                "http://127.0.0.1:9090/startup",
                url("127.0.0.1", 9090, "/startup"),
            ),
            ("http://localhost:9090", url("localhost", 9090, "/")),
            ("http://example/readiness", url("example", 80, "/readiness")),
            ("http://[::1]:9090/liveness", url("::1", 9090, "/liveness")),
            ("http://[::1]/x", url("::1", 80, "/x")),
            ("https://127.0.0.1:9090/startup", Err(())),
            ("127.0.0.1:9090/startup", Err(())),
            ("http://127.0.0.1:port/startup", Err(())),
            ("http://:9090/startup", Err(())),
        ];
        for (text, want) in cases {
            let got = text.parse::<Url>().map_err(|_| ());
            assert_eq!(&got, want, "{text}");
            if let Ok(url) = got {
                assert_eq!(url.to_string().parse::<Url>(), Ok(url), "{text} round trip");
            }
        }
    }

    #[test]
    fn verdicts() {
        // (response, Ok((status, reason)) or Err for "not HTTP")
        type Case = (&'static [u8], Result<(u16, &'static str), ()>);
        let cases: &[Case] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Ok((200, "ok")),
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\n\r\nupstream failing: connect\nmore",
                Ok((503, "upstream failing: connect")),
            ),
            (b"HTTP/1.0 404 Not Found\r\n\r\n", Ok((404, ""))),
            // Headers cut short by the size cap: the status still counts.
            (b"HTTP/1.1 200 OK\r\ncontent-", Ok((200, ""))),
            (b"", Err(())),
            (b"-ERR unknown command\r\n", Err(())),
            (b"HTTP/1.1 abc OK\r\n\r\n", Err(())),
        ];
        for (response, want) in cases {
            let got = verdict(response);
            let got = got.as_ref().map(|(s, r)| (*s, r.as_str())).map_err(|_| ());
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(response));
        }
    }
}
