//! A fault-injecting TCP relay, placed between the proxy and an upstream
//! (a redis-server port, or the emulator). Bytes pass through unchanged
//! until the planned fault. Owns the relay's sockets and the fault plan,
//! nothing else.
//!
//! Faults are placed in the server's reply stream. On a plaintext upstream
//! the relay reads that stream as RESP (the crate's own reply scanner), so
//! a fault can sit at an exact point: "after the first reply and 100 bytes
//! into the second". Over TLS it counts bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elasticache_auth_proxy::resp::{Scanner, Side};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where in the server's reply stream a fault happens.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// Complete RESP replies relayed first (plaintext upstreams only; the
    /// proxy's own AUTH reply is the first).
    pub replies: usize,
    /// Then this many bytes of the next reply.
    pub bytes: usize,
}

/// What the relay does to connections accepted while it is planned.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Bytes pass both ways untouched.
    Pass,
    /// Every chunk, each way, waits this long.
    Latency(Duration),
    /// Accepts the TCP connection, reads, never forwards, never answers.
    BlackHole,
    /// At `At`, both sides are reset (RST, no FIN).
    Reset(At),
    /// At `At`, the server's bytes stop; nothing closes (a stalled server).
    Stall(At),
    /// TLS: when the client begins its `n`-th application-data record
    /// (TLS 1.3: the 1st is its Finished, the 2nd its first command, such as
    /// the proxy's AUTH), that record is not forwarded and both sides are
    /// reset.
    ResetOnClientRecord(usize),
}

/// A running relay; stops (and drops its connections) on drop.
pub struct FaultRelay {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Fault>>,
    upstream: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultRelay {
    /// Relays to `upstream`, passing everything until [`FaultRelay::set`].
    pub async fn start(upstream: SocketAddr) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Fault::Pass));
        let upstream = Arc::new(Mutex::new(upstream));
        let task = tokio::spawn({
            let (plan, upstream) = (plan.clone(), upstream.clone());
            async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let fault = *plan.lock().unwrap();
                    let to = *upstream.lock().unwrap();
                    conns.spawn(relay(client, to, fault));
                    // Reap finished relays so the set stays small.
                    while conns.try_join_next().is_some() {}
                }
            }
        });
        FaultRelay {
            addr,
            plan,
            upstream,
            task,
        }
    }

    /// Where connections accepted from now on go: a restarted server on
    /// another port looks, to the proxy, like a restart on the same one.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// The fault for connections accepted from now on.
    pub fn set(&self, fault: Fault) {
        *self.plan.lock().unwrap() = fault;
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    if let Fault::BlackHole = fault {
        let mut sink = [0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if let Fault::Reset(_) | Fault::ResetOnClientRecord(_) = fault {
        // SO_LINGER 0: closing sends RST instead of FIN.
        for s in [&client, &server] {
            s.set_zero_linger().unwrap();
        }
    }
    let delay = match fault {
        Fault::Latency(d) => d,
        _ => Duration::ZERO,
    };
    let at_fault = {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = async {
            let mut records = match fault {
                Fault::ResetOnClientRecord(n) => Some(Records::new(n)),
                _ => None,
            };
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) => {
                        let _ = sw.shutdown().await;
                        // The server may still answer what was sent.
                        std::future::pending::<()>().await;
                    }
                    Ok(n) => {
                        tokio::time::sleep(delay).await;
                        let pass = records.as_mut().map_or(n, |r| r.pass(&buf[..n]));
                        if sw.write_all(&buf[..pass]).await.is_err() || pass < n {
                            return pass < n;
                        }
                    }
                    Err(_) => return false,
                }
            }
        };
        let down = async {
            let at = match fault {
                Fault::Reset(at) | Fault::Stall(at) => Some(at),
                _ => None,
            };
            let mut cut = Cut::new(at);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = cw.shutdown().await;
                        return false;
                    }
                    Ok(n) => n,
                };
                tokio::time::sleep(delay).await;
                let pass = cut.pass(&buf[..n]);
                if cw.write_all(&buf[..pass]).await.is_err() {
                    return false;
                }
                if cut.reached() {
                    return true;
                }
            }
        };
        tokio::select! {
            reached = down => reached,
            reached = up => reached,
        }
    };
    if at_fault && matches!(fault, Fault::Stall(_)) {
        // Hold both connections open and forward nothing more.
        std::future::pending::<()>().await;
    }
    if at_fault {
        // Let the proxy read what was relayed: a reset discards the
        // receiver's unread bytes, and the fault is meant to come after them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A reset: both sockets close with SO_LINGER 0.
    drop((client, server));
}

/// Finds where the client's `n`-th TLS application-data record begins.
struct Records {
    n: usize,
    seen: usize,
    /// Bytes left of the record in progress.
    left: usize,
    /// A record header split across reads.
    header: Vec<u8>,
}

impl Records {
    fn new(n: usize) -> Records {
        Records {
            n,
            seen: 0,
            left: 0,
            header: Vec::new(),
        }
    }

    /// How many of `chunk`'s bytes come before the `n`-th record.
    fn pass(&mut self, chunk: &[u8]) -> usize {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.left > 0 {
                let take = self.left.min(chunk.len() - pos);
                self.left -= take;
                pos += take;
                continue;
            }
            let start = pos - self.header.len().min(pos);
            while self.header.len() < 5 && pos < chunk.len() {
                self.header.push(chunk[pos]);
                pos += 1;
            }
            if self.header.len() < 5 {
                return chunk.len();
            }
            let header = std::mem::take(&mut self.header);
            if header[0] == 23 {
                self.seen += 1;
                if self.seen == self.n {
                    return start;
                }
            }
            self.left = usize::from(u16::from_be_bytes([header[3], header[4]]));
        }
        pos
    }
}

/// Counts the server's bytes up to the fault point.
struct Cut {
    at: Option<At>,
    scanner: Scanner,
    replies: usize,
    into: usize,
}

impl Cut {
    fn new(at: Option<At>) -> Cut {
        Cut {
            at,
            scanner: Scanner::new(Side::Reply, u64::MAX),
            replies: 0,
            into: 0,
        }
    }

    fn reached(&self) -> bool {
        self.at
            .is_some_and(|at| self.replies == at.replies && self.into == at.bytes)
    }

    /// How many of `chunk`'s bytes go before the fault.
    fn pass(&mut self, chunk: &[u8]) -> usize {
        let Some(at) = self.at else {
            return chunk.len();
        };
        let mut pos = 0;
        while pos < chunk.len() && !self.reached() {
            if self.replies == at.replies {
                let take = (at.bytes - self.into).min(chunk.len() - pos);
                self.into += take;
                pos += take;
                continue;
            }
            let (n, done) = self
                .scanner
                .advance(&chunk[pos..])
                .expect("server sends RESP");
            pos += n;
            if done {
                self.replies += 1;
            }
        }
        pos
    }
}
