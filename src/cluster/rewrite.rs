//! Address rewriting: the replies that name cluster nodes (CLUSTER SLOTS,
//! SHARDS, NODES, REPLICAS, and -MOVED / -ASK errors, also inside an EXEC
//! result) get the proxy's local listener in place of each node's address.
//! Pure functions over bytes and a [`Locate`]; nothing else is touched.

use std::net::SocketAddr;

use crate::resp::tree::{self, Value};

/// A node as a reply names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named<'a> {
    /// The node id, where the reply carries one.
    pub id: Option<&'a str>,
    /// The endpoint clients are told to use: hostname or IP.
    pub host: &'a str,
    pub port: u16,
    /// Primary or replica, where the reply tells.
    pub role: Option<Role>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

/// Finds (or makes) the local listener that stands for a node. `None`
/// leaves the node's address as the server wrote it.
pub trait Locate {
    fn local(&mut self, node: &Named<'_>) -> Option<SocketAddr>;
}

impl<F: FnMut(&Named<'_>) -> Option<SocketAddr>> Locate for F {
    fn local(&mut self, node: &Named<'_>) -> Option<SocketAddr> {
        self(node)
    }
}

/// Which redirect an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    Moved,
    Ask,
}

impl Redirect {
    pub fn as_str(self) -> &'static str {
        match self {
            Redirect::Moved => "moved",
            Redirect::Ask => "ask",
        }
    }
}

/// Whether a complete reply frame is a `-MOVED` or `-ASK` error.
pub fn is_redirect(frame: &[u8]) -> bool {
    frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK ")
}

/// Rewrites `-MOVED <slot> <host>:<port>` or `-ASK ...` (the whole frame,
/// CRLF included). An empty host means the node the session talks to:
/// `current_host`.
pub fn redirect(
    frame: &[u8],
    current_host: &str,
    locate: &mut dyn Locate,
) -> Option<(Redirect, Vec<u8>)> {
    let line = std::str::from_utf8(frame.strip_suffix(b"\r\n")?).ok()?;
    let mut words = line[1..].split(' ');
    let (word, slot, addr) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let kind = match word {
        "MOVED" => Redirect::Moved,
        "ASK" => Redirect::Ask,
        _ => return None,
    };
    let (host, port) = addr.rsplit_once(':')?;
    let host = if host.is_empty() { current_host } else { host };
    let node = Named {
        id: None,
        host,
        port: port.parse().ok()?,
        role: matches!(kind, Redirect::Moved).then_some(Role::Primary),
    };
    let local = locate.local(&node)?;
    Some((kind, format!("-{word} {slot} {local}\r\n").into_bytes()))
}

/// Rewrites a `CLUSTER SLOTS` reply (RESP2 or RESP3): each node's endpoint
/// and port, and the `ip` / `hostname` networking metadata of Redis 7.
/// An empty or null endpoint means the node the command was sent to,
/// `current_host` (a node that never met a peer does not know its IP).
pub fn slots(frame: &[u8], current_host: &str, locate: &mut dyn Locate) -> Option<Vec<u8>> {
    let (mut v, _) = tree::parse(frame)?;
    let Value::Aggregate(_, ranges) = &mut v else {
        return None;
    };
    for range in ranges {
        let Value::Aggregate(_, fields) = range else {
            return None;
        };
        // start, end, then the primary and its replicas.
        for (i, node) in fields.iter_mut().enumerate().skip(2) {
            let role = if i == 2 { Role::Primary } else { Role::Replica };
            slots_node(node, role, current_host, locate);
        }
    }
    Some(encoded(&v))
}

fn slots_node(node: &mut Value, role: Role, current_host: &str, locate: &mut dyn Locate) {
    let Value::Aggregate(_, fields) = node else {
        return;
    };
    let (Some(host), Some(port)) = (
        fields.first().and_then(|v| endpoint(v, current_host)),
        fields.get(1).and_then(Value::integer),
    ) else {
        return;
    };
    let id = fields.get(2).and_then(utf8);
    let Ok(port) = u16::try_from(port) else {
        return;
    };
    let named = Named {
        id: id.as_deref(),
        host: &host,
        port,
        role: Some(role),
    };
    let Some(local) = locate.local(&named) else {
        return;
    };
    let ip = local.ip().to_string();
    fields[0] = Value::bulk(ip.clone());
    fields[1] = Value::int(local.port().into());
    if let Some(Value::Aggregate(_, meta)) = fields.get_mut(3) {
        set_addresses(meta, &ip, local.port());
    }
}

/// Rewrites a `CLUSTER SHARDS` reply: every node's `ip`, `endpoint`,
/// `hostname`, `port` and `tls-port`. The proxy's listeners are plaintext,
/// so a `tls-port` becomes the `port` clients connect to.
/// An empty endpoint means the node the command was sent to, as in [`slots`].
pub fn shards(
    frame: &[u8],
    tls: bool,
    current_host: &str,
    locate: &mut dyn Locate,
) -> Option<Vec<u8>> {
    let (mut v, _) = tree::parse(frame)?;
    let Value::Aggregate(_, shards) = &mut v else {
        return None;
    };
    for shard in shards {
        let Value::Aggregate(_, kv) = shard else {
            return None;
        };
        let Some(nodes) = field_mut(kv, "nodes") else {
            continue;
        };
        let Value::Aggregate(_, nodes) = nodes else {
            continue;
        };
        for node in nodes {
            if let Value::Aggregate(_, kv) = node {
                shards_node(kv, tls, current_host, locate);
            }
        }
    }
    Some(encoded(&v))
}

fn shards_node(kv: &mut Vec<Value>, tls: bool, current_host: &str, locate: &mut dyn Locate) {
    let get = |key: &str| field(kv, key);
    let port_key = if tls && get("tls-port").is_some() {
        "tls-port"
    } else {
        "port"
    };
    let Some(port) = get(port_key)
        .and_then(Value::integer)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return;
    };
    let known = ["endpoint", "hostname", "ip"]
        .into_iter()
        .filter_map(|k| get(k).and_then(utf8))
        .find(|h| !h.is_empty() && h != "?");
    let host = match known {
        Some(host) => host,
        None if get("ip").is_some_and(|v| endpoint(v, current_host).is_some()) => {
            current_host.to_string()
        }
        None => return,
    };
    let id = get("id").and_then(utf8);
    let role = get("role").and_then(utf8).map(|r| {
        if r == "master" {
            Role::Primary
        } else {
            Role::Replica
        }
    });
    let named = Named {
        id: id.as_deref(),
        host: &host,
        port,
        role,
    };
    let Some(local) = locate.local(&named) else {
        return;
    };
    let ip = local.ip().to_string();
    set_addresses(kv, &ip, local.port());
    // One plaintext port: drop `tls-port`, or rename it when it is the only one.
    if let Some(at) = key_index(kv, "tls-port") {
        if key_index(kv, "port").is_some() {
            kv.drain(at..at + 2);
        } else {
            kv[at] = Value::bulk("port");
        }
    }
}

/// In a key/value list, sets `ip`, `endpoint` and `hostname` to `ip` and
/// `port` / `tls-port` to `port`.
fn set_addresses(kv: &mut [Value], ip: &str, port: u16) {
    for pair in kv.chunks_exact_mut(2) {
        let Some(key) = pair[0].text() else {
            continue;
        };
        match key {
            b"ip" | b"endpoint" | b"hostname" => pair[1] = Value::bulk(ip),
            b"port" | b"tls-port" => pair[1] = Value::int(port.into()),
            _ => {}
        }
    }
}

/// Rewrites the text of `CLUSTER NODES` (a bulk or verbatim string) or the
/// array of such lines `CLUSTER REPLICAS` returns. An empty IP (the node's
/// own, before it met a peer) means `current_host`, as in [`slots`].
pub fn nodes(frame: &[u8], current_host: &str, locate: &mut dyn Locate) -> Option<Vec<u8>> {
    let (mut v, _) = tree::parse(frame)?;
    match &mut v {
        Value::Bulk(ty @ (b'$' | b'='), text) => {
            let prefix = if *ty == b'=' { 4 } else { 0 };
            let body = nodes_text(text.get(prefix..)?, current_host, locate)?;
            text.truncate(prefix);
            text.extend_from_slice(&body);
        }
        Value::Aggregate(_, lines) => {
            for line in lines {
                if let Value::Bulk(b'$', text) = line {
                    if let Some(body) = nodes_text(text, current_host, locate) {
                        *text = body;
                    }
                }
            }
        }
        _ => return None,
    }
    Some(encoded(&v))
}

/// `<id> <ip:port@cport[,hostname]> <flags> <primary> ...` per line: the
/// address field gets the local listener (the bus port stays, clients
/// never use it).
fn nodes_text(text: &[u8], current_host: &str, locate: &mut dyn Locate) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&nodes_line(line, current_host, locate).unwrap_or_else(|| line.to_string()));
    }
    Some(out.into_bytes())
}

fn nodes_line(line: &str, current_host: &str, locate: &mut dyn Locate) -> Option<String> {
    let mut fields: Vec<&str> = line.split(' ').collect();
    let (id, addr, flags) = (*fields.first()?, *fields.get(1)?, *fields.get(2)?);
    let (hostport, rest) = addr.split_once('@')?;
    let (bus, hostname) = match rest.split_once(',') {
        Some((bus, hostname)) => (bus, Some(hostname)),
        None => (rest, None),
    };
    let (ip, port) = hostport.rsplit_once(':')?;
    let host = match hostname.filter(|h| !h.is_empty()).unwrap_or(ip) {
        "" => current_host,
        "?" => return None,
        host => host,
    };
    let role = if flags.contains("master") {
        Role::Primary
    } else {
        Role::Replica
    };
    let named = Named {
        id: Some(id),
        host,
        port: port.parse().ok()?,
        role: Some(role),
    };
    let local = locate.local(&named)?;
    let ip = local.ip();
    let new = match hostname {
        Some(_) => format!("{local}@{bus},{ip}"),
        None => format!("{local}@{bus}"),
    };
    fields[1] = &new;
    Some(fields.join(" "))
}

/// Rewrites the -MOVED / -ASK errors among the elements of an EXEC result.
/// `None` when there are none (the common case: check first, cheaply).
pub fn exec(
    frame: &[u8],
    current_host: &str,
    locate: &mut dyn Locate,
    mut counted: impl FnMut(Redirect),
) -> Option<Vec<u8>> {
    if !frame
        .windows(6)
        .any(|w| w == b"-MOVED" || &w[..4] == b"-ASK")
    {
        return None;
    }
    let (mut v, _) = tree::parse(frame)?;
    let Value::Aggregate(_, items) = &mut v else {
        return None;
    };
    let mut changed = false;
    for item in items {
        if let Value::Line(line) = item {
            let mut frame = line.clone();
            frame.extend_from_slice(b"\r\n");
            if !is_redirect(&frame) {
                continue;
            }
            if let Some((kind, new)) = redirect(&frame, current_host, locate) {
                counted(kind);
                *line = new[..new.len() - 2].to_vec();
                changed = true;
            }
        }
    }
    changed.then(|| encoded(&v))
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    tree::encode(v, &mut out);
    out
}

/// A node's endpoint as a reply gives it: empty or null means the node the
/// command went to (`current_host`); `?` (no hostname known) is `None`.
fn endpoint(v: &Value, current_host: &str) -> Option<String> {
    match v {
        Value::Line(l) if l == b"$-1" || l == b"_" => Some(current_host.to_string()),
        _ => match utf8(v)?.as_str() {
            "" => Some(current_host.to_string()),
            "?" => None,
            host => Some(host.to_string()),
        },
    }
}

fn utf8(v: &Value) -> Option<String> {
    v.text()
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(str::to_string)
}

fn key_index(kv: &[Value], key: &str) -> Option<usize> {
    (0..kv.len())
        .step_by(2)
        .find(|&i| kv[i].text() == Some(key.as_bytes()))
}

fn field<'a>(kv: &'a [Value], key: &str) -> Option<&'a Value> {
    key_index(kv, key).and_then(|i| kv.get(i + 1))
}

fn field_mut<'a>(kv: &'a mut [Value], key: &str) -> Option<&'a mut Value> {
    key_index(kv, key).and_then(move |i| kv.get_mut(i + 1))
}

#[cfg(test)]
mod tests;
