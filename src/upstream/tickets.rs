//! The TLS session tickets upstream connections resume from: a bounded
//! store of the tickets each server sent, by server name. Owns only the
//! storing; rustls decides when a ticket is stored, offered and trusted.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::Hash,
    sync::Mutex,
};

use rustls::{
    client::{
        ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue,
        Tls13ClientSessionValue,
    },
    pki_types::ServerName,
    NamedGroup,
};

/// TLS 1.3 tickets kept per server name. Each resumption uses one up (a
/// ticket is single-use) and brings one or two new ones when its reply is
/// read, so a burst of new connections to one server resumes only as far
/// as there are tickets: this is the burst that can resume. rustls's own
/// cache keeps 8, and 50 clients connecting at once mostly did full
/// handshakes.
const PER_NAME: usize = 64;

/// TLS 1.3 tickets kept in all, whatever the number of names (cluster
/// nodes announced by name): a ticket holds the server's certificate chain,
/// a few KB, so this bounds the store to a few MB.
const TOTAL: usize = 1024;

/// Server names whose key-exchange hint and TLS 1.2 session are kept (in
/// rustls's own cache, which holds those as rustls means them to be).
const NAMES: usize = 256;

/// rustls's cache is sized in TLS 1.3 tickets, 8 per name: `new(n)` keeps
/// `n / 8` names.
const RUSTLS_TICKETS_PER_NAME: usize = 8;

/// The session store of the connector's TLS configuration. Tickets are
/// kept under the server name the connection verified, so a ticket is only
/// ever offered for that name, and a server that cannot decrypt it (another
/// server behind the name) answers with a full, verified handshake.
pub(super) struct Tickets {
    tls13: Mutex<Pool<ServerName<'static>, Tls13ClientSessionValue>>,
    /// Key-exchange hints and TLS 1.2 sessions.
    rest: ClientSessionMemoryCache,
}

impl Tickets {
    pub(super) fn new() -> Tickets {
        Tickets {
            tls13: Mutex::new(Pool::new(PER_NAME, TOTAL)),
            rest: ClientSessionMemoryCache::new(NAMES * RUSTLS_TICKETS_PER_NAME),
        }
    }

    fn tls13(
        &self,
    ) -> std::sync::MutexGuard<'_, Pool<ServerName<'static>, Tls13ClientSessionValue>> {
        // A panic while holding the lock leaves the pool consistent (each
        // operation is one push or pop), so a poisoned lock is still usable.
        self.tls13.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: a ticket and its secret are not for logs.
        let pool = self.tls13();
        f.debug_struct("Tickets")
            .field("tls13_tickets", &pool.len)
            .field("names", &pool.by_key.len())
            .finish_non_exhaustive()
    }
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.rest.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.rest.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.rest.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.rest.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.rest.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.tls13().insert(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.tls13().take(server_name)
    }
}

/// Values by key, each taken at most once, newest first, with at most
/// `per_key` under a key and `total` in all (the oldest go first).
struct Pool<K, V> {
    by_key: HashMap<K, VecDeque<V>>,
    len: usize,
    per_key: usize,
    total: usize,
}

impl<K: Hash + Eq, V> Pool<K, V> {
    fn new(per_key: usize, total: usize) -> Pool<K, V> {
        Pool {
            by_key: HashMap::new(),
            len: 0,
            per_key,
            total,
        }
    }

    fn insert(&mut self, key: K, value: V) {
        let values = self.by_key.entry(key).or_default();
        values.push_back(value);
        self.len += 1;
        if values.len() > self.per_key {
            values.pop_front();
            self.len -= 1;
        }
        if self.len > self.total {
            // The key with the most values gives up its oldest, so one busy
            // server cannot push every other out.
            if let Some(values) = self.by_key.values_mut().max_by_key(|v| v.len()) {
                values.pop_front();
                self.len -= 1;
            }
            self.by_key.retain(|_, v| !v.is_empty());
        }
    }

    /// The newest value: the one with the longest left to live.
    fn take(&mut self, key: &K) -> Option<V> {
        let values = self.by_key.get_mut(key)?;
        let value = values.pop_back();
        if values.is_empty() {
            self.by_key.remove(key);
        }
        self.len -= usize::from(value.is_some());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn values_are_taken_once_newest_first_and_only_under_their_key() {
        let mut pool = Pool::new(3, 10);
        for v in 1..=2 {
            pool.insert("a", v);
        }
        pool.insert("b", 10);
        assert_eq!(pool.take(&"c"), None);
        assert_eq!(pool.take(&"a"), Some(2));
        assert_eq!(pool.take(&"a"), Some(1));
        assert_eq!(pool.take(&"a"), None);
        assert_eq!(pool.take(&"b"), Some(10));
        assert_eq!((pool.len, pool.by_key.len()), (0, 0));
    }

    #[test]
    fn a_key_keeps_its_newest_values_up_to_its_bound() {
        let mut pool = Pool::new(3, 10);
        for v in 1..=5 {
            pool.insert("a", v);
        }
        assert_eq!(pool.len, 3);
        let taken: Vec<_> = std::iter::from_fn(|| pool.take(&"a")).collect();
        assert_eq!(taken, [5, 4, 3]);
    }

    #[test]
    fn past_the_total_the_fullest_key_gives_up_its_oldest() {
        let mut pool = Pool::new(4, 5);
        for v in 1..=4 {
            pool.insert("busy", v);
        }
        pool.insert("quiet", 100);
        pool.insert("other", 200);
        assert_eq!(pool.len, 5);
        assert_eq!(pool.take(&"quiet"), Some(100));
        assert_eq!(pool.take(&"other"), Some(200));
        let busy: Vec<_> = std::iter::from_fn(|| pool.take(&"busy")).collect();
        assert_eq!(busy, [4, 3, 2]);
        // Many keys of one value each: still bounded, emptied keys dropped.
        let mut pool = Pool::new(4, 5);
        for key in 0..20 {
            pool.insert(key, key);
        }
        assert_eq!((pool.len, pool.by_key.len()), (5, 5));
    }
}
