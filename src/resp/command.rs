//! What a client command is, as far as the proxy cares: a pure function of
//! the command name (and, for a few commands, their arguments).

/// A kind of pub/sub subscription; each has its own set and its own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PubSub {
    /// SUBSCRIBE / UNSUBSCRIBE
    Channel,
    /// PSUBSCRIBE / PUNSUBSCRIBE
    Pattern,
    /// SSUBSCRIBE / SUNSUBSCRIBE
    Shard,
}

impl PubSub {
    /// The first element of a confirmation reply.
    pub fn word(self, unsub: bool) -> &'static [u8] {
        match (self, unsub) {
            (PubSub::Channel, false) => b"subscribe",
            (PubSub::Channel, true) => b"unsubscribe",
            (PubSub::Pattern, false) => b"psubscribe",
            (PubSub::Pattern, true) => b"punsubscribe",
            (PubSub::Shard, false) => b"ssubscribe",
            (PubSub::Shard, true) => b"sunsubscribe",
        }
    }

    /// The command that subscribes to this kind, for re-subscribing.
    pub fn command(self) -> &'static [u8] {
        self.word(false)
    }
}

/// CLIENT REPLY modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    Skip,
}

/// The proxy's view of a client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Relayed as is; the proxy tracks only its reply.
    Plain,
    /// `AUTH ...`: answered by the proxy, never forwarded.
    Auth,
    /// `HELLO ...`: forwarded without its AUTH clause.
    Hello,
    /// `CLIENT ...`: only `CLIENT REPLY` matters; needs the arguments.
    Client,
    /// `CLIENT REPLY ON|OFF|SKIP`.
    ClientReply(ReplyMode),
    /// `SELECT ...`: the database matters when a session moves; needs the argument.
    Select,
    /// `SELECT <db>`.
    SelectDb(u32),
    /// `RESET`: de-authenticates the upstream connection.
    Reset,
    /// A (un)subscribe command naming `channels` channels (0: all, for unsubscribe).
    Sub {
        kind: PubSub,
        unsub: bool,
        channels: u64,
    },
    Monitor,
    Multi,
    Exec,
    Discard,
    Quit,
    /// `SYNC` / `PSYNC`: the reply may start a replication stream.
    Sync,
    /// `CLUSTER ...`: the topology subcommands matter; needs the arguments.
    Cluster,
    /// `CLUSTER SLOTS | SHARDS | NODES | REPLICAS | SLAVES`: the reply names
    /// nodes (rewritten in cluster mode).
    Topology(Topology),
}

/// Which topology reply a `CLUSTER` subcommand gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Slots,
    Shards,
    /// `CLUSTER NODES`, and the node lines of `CLUSTER REPLICAS` / `SLAVES`.
    Nodes,
}

impl Class {
    /// What Redis runs before a client has authenticated (the `no_auth`
    /// commands the proxy tells apart); everything else gets NOAUTH.
    pub fn allowed_unauthenticated(self) -> bool {
        matches!(
            self,
            Class::Auth | Class::Hello | Class::Quit | Class::Reset
        )
    }

    /// Whether the command turns the connection into something else
    /// (a transaction, a replication stream, a reset one, a closed one).
    pub fn changes_connection(self) -> bool {
        matches!(
            self,
            Class::Sync | Class::Quit | Class::Reset | Class::Multi | Class::Exec | Class::Discard
        )
    }

    /// Whether the session must see the whole command before acting on it
    /// (it rewrites or drops it); every other command streams through.
    pub fn needs_args(self) -> bool {
        matches!(
            self,
            Class::Auth | Class::Hello | Class::Client | Class::Select | Class::Cluster
        )
    }
}

/// Classifies a command from its name and argument count (including the name).
pub fn classify(name: &[u8], argc: u64) -> Class {
    // Every name the proxy cares about is short; skip the compares for the rest.
    if name.len() > 12 {
        return Class::Plain;
    }
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let sub = |kind, unsub| Class::Sub {
        kind,
        unsub,
        channels: argc.saturating_sub(1),
    };
    if is("auth") {
        Class::Auth
    } else if is("hello") {
        Class::Hello
    } else if is("client") {
        Class::Client
    } else if is("reset") {
        Class::Reset
    } else if is("subscribe") {
        sub(PubSub::Channel, false)
    } else if is("unsubscribe") {
        sub(PubSub::Channel, true)
    } else if is("psubscribe") {
        sub(PubSub::Pattern, false)
    } else if is("punsubscribe") {
        sub(PubSub::Pattern, true)
    } else if is("ssubscribe") {
        sub(PubSub::Shard, false)
    } else if is("sunsubscribe") {
        sub(PubSub::Shard, true)
    } else if is("monitor") {
        Class::Monitor
    } else if is("select") {
        Class::Select
    } else if is("multi") {
        Class::Multi
    } else if is("exec") {
        Class::Exec
    } else if is("discard") {
        Class::Discard
    } else if is("quit") {
        Class::Quit
    } else if is("sync") || is("psync") {
        Class::Sync
    } else if is("cluster") {
        Class::Cluster
    } else {
        Class::Plain
    }
}

/// Refines `CLUSTER ...` given all its arguments (name included).
pub fn classify_cluster(args: &[&[u8]]) -> Class {
    let Some(sub) = args.get(1) else {
        return Class::Plain;
    };
    let is = |s: &str| sub.eq_ignore_ascii_case(s.as_bytes());
    match args.len() {
        2 if is("slots") => Class::Topology(Topology::Slots),
        2 if is("shards") => Class::Topology(Topology::Shards),
        2 if is("nodes") => Class::Topology(Topology::Nodes),
        3 if is("replicas") || is("slaves") => Class::Topology(Topology::Nodes),
        _ => Class::Plain,
    }
}

/// Refines `CLIENT ...` given all its arguments (name included).
pub fn classify_client(args: &[&[u8]]) -> Class {
    match args {
        [_, sub, mode] if sub.eq_ignore_ascii_case(b"reply") => {
            if mode.eq_ignore_ascii_case(b"on") {
                Class::ClientReply(ReplyMode::On)
            } else if mode.eq_ignore_ascii_case(b"off") {
                Class::ClientReply(ReplyMode::Off)
            } else if mode.eq_ignore_ascii_case(b"skip") {
                Class::ClientReply(ReplyMode::Skip)
            } else {
                Class::Plain
            }
        }
        _ => Class::Plain,
    }
}

/// Refines `SELECT ...` given all its arguments (name included).
pub fn classify_select(args: &[&[u8]]) -> Class {
    match args {
        [_, db] => std::str::from_utf8(db)
            .ok()
            .and_then(|d| d.parse().ok())
            .map_or(Class::Plain, Class::SelectDb),
        _ => Class::Plain,
    }
}

/// A client's HELLO with its AUTH clause taken out.
#[derive(Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The protocol the reply switches to on success, if one was asked for.
    pub proto: Option<u8>,
    /// The arguments to forward (name included), without `AUTH user pass`.
    pub args: Vec<&'a [u8]>,
    /// The AUTH clause's user and password, if there was one.
    pub auth: Option<(&'a [u8], &'a [u8])>,
}

/// Splits a client's `HELLO [protover [AUTH user pass] [SETNAME name]]`.
/// An AUTH clause without both user and password is Redis's syntax error,
/// answered locally so the partial credentials never leave the proxy.
pub fn hello<'a>(args: &[&'a [u8]]) -> Result<Hello<'a>, String> {
    let proto = args.get(1).and_then(|p| match *p {
        b"2" => Some(2),
        b"3" => Some(3),
        _ => None,
    });
    let mut out = Vec::with_capacity(args.len());
    let mut auth = None;
    let mut i = 0;
    while i < args.len() {
        if i >= 2 && args[i].eq_ignore_ascii_case(b"auth") {
            if i + 2 >= args.len() {
                // Redis quotes the option as the client spelled it.
                return Err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(args[i])
                ));
            }
            auth = Some((args[i + 1], args[i + 2]));
            i += 3;
            continue;
        }
        out.push(args[i]);
        i += 1;
    }
    Ok(Hello {
        proto,
        args: out,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_name_case_insensitively() {
        let cases: &[(&str, u64, Class)] = &[
            ("GET", 2, Class::Plain),
            ("auth", 2, Class::Auth),
            ("AuTh", 3, Class::Auth),
            ("hello", 2, Class::Hello),
            ("CLIENT", 3, Class::Client),
            ("reset", 1, Class::Reset),
            (
                "SUBSCRIBE",
                3,
                Class::Sub {
                    kind: PubSub::Channel,
                    unsub: false,
                    channels: 2,
                },
            ),
            (
                "punsubscribe",
                1,
                Class::Sub {
                    kind: PubSub::Pattern,
                    unsub: true,
                    channels: 0,
                },
            ),
            (
                "ssubscribe",
                2,
                Class::Sub {
                    kind: PubSub::Shard,
                    unsub: false,
                    channels: 1,
                },
            ),
            ("monitor", 1, Class::Monitor),
            ("multi", 1, Class::Multi),
            ("EXEC", 1, Class::Exec),
            ("discard", 1, Class::Discard),
            ("quit", 1, Class::Quit),
            ("SYNC", 1, Class::Sync),
            ("psync", 3, Class::Sync),
            ("averyveryverylongcommand", 1, Class::Plain),
        ];
        for (name, argc, want) in cases {
            assert_eq!(classify(name.as_bytes(), *argc), *want, "{name}");
        }
    }

    #[test]
    fn client_reply_modes() {
        let cases: &[(&[&[u8]], Class)] = &[
            (
                &[b"CLIENT", b"REPLY", b"off"],
                Class::ClientReply(ReplyMode::Off),
            ),
            (
                &[b"client", b"reply", b"ON"],
                Class::ClientReply(ReplyMode::On),
            ),
            (
                &[b"client", b"Reply", b"skip"],
                Class::ClientReply(ReplyMode::Skip),
            ),
            (&[b"client", b"reply", b"maybe"], Class::Plain),
            (&[b"client", b"reply"], Class::Plain),
            (&[b"client", b"setname", b"x"], Class::Plain),
        ];
        for (args, want) in cases {
            assert_eq!(classify_client(args), *want, "{args:?}");
        }
    }

    #[test]
    fn hello_drops_auth_clause() {
        type Case<'a> = (&'a [&'a [u8]], Result<(Option<u8>, Vec<&'a [u8]>), String>);
        let cases: Vec<Case> = vec![
            (&[b"HELLO"], Ok((None, vec![b"HELLO"]))),
            (&[b"HELLO", b"3"], Ok((Some(3), vec![b"HELLO", b"3"]))),
            (
                &[b"hello", b"3", b"AUTH", b"u", b"p", b"SETNAME", b"n"],
                Ok((Some(3), vec![b"hello", b"3", b"SETNAME", b"n"])),
            ),
            (
                &[b"hello", b"2", b"auth", b"u", b"p"],
                Ok((Some(2), vec![b"hello", b"2"])),
            ),
            (&[b"hello", b"4"], Ok((None, vec![b"hello", b"4"]))),
            (
                &[b"hello", b"3", b"auth", b"u"],
                Err("Syntax error in HELLO option 'auth'".into()),
            ),
            (
                &[b"hello", b"3", b"AUTH"],
                Err("Syntax error in HELLO option 'AUTH'".into()),
            ),
        ];
        for (args, want) in cases {
            let got = hello(args).map(|h| (h.proto, h.args));
            assert_eq!(got, want, "{args:?}");
        }
    }
}
