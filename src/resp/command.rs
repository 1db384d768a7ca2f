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
    /// A name with a NUL byte whose part before the NUL is one of the names
    /// above (`AUTH\0x`). Redis looks names up with a hash of every byte but
    /// compares them as C strings, so now and then (about one name in 200
    /// on Redis 7.0) it runs such a name as that command: an AUTH or a
    /// CLIENT REPLY the proxy would not have seen. Refused locally.
    NulInName,
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
            Class::Auth
                | Class::Hello
                | Class::Client
                | Class::Select
                | Class::Cluster
                | Class::NulInName
        )
    }
}

/// The client's error for [`Class::NulInName`] (without `-` and CRLF).
pub const NUL_IN_NAME: &str = "ERR elasticache-auth-proxy: refused a command name with a NUL byte, which the server may run as the command named before the NUL";

/// `strcasecmp(arg, word) == 0`, as Redis compares option words: `arg` is
/// read as a C string, ending at its first NUL (`word` has none).
fn c_eq_ignore_case(arg: &[u8], word: &[u8]) -> bool {
    let arg = &arg[..memchr::memchr(0, arg).unwrap_or(arg.len())];
    arg.eq_ignore_ascii_case(word)
}

/// Classifies a command from its name and argument count (including the name).
pub fn classify(name: &[u8], argc: u64) -> Class {
    if let Some(nul) = memchr::memchr(0, name) {
        return match classify(&name[..nul], argc) {
            Class::Plain => Class::Plain,
            _ => Class::NulInName,
        };
    }
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
        // Subcommands are looked up like command names (see `NulInName`).
        [_, sub, _] if sub.contains(&0) && c_eq_ignore_case(sub, b"reply") => Class::NulInName,
        [_, sub, mode] if sub.eq_ignore_ascii_case(b"reply") => {
            // Redis reads the mode with strcasecmp: `OFF\0x` is OFF.
            if c_eq_ignore_case(mode, b"on") {
                Class::ClientReply(ReplyMode::On)
            } else if c_eq_ignore_case(mode, b"off") {
                Class::ClientReply(ReplyMode::Off)
            } else if c_eq_ignore_case(mode, b"skip") {
                Class::ClientReply(ReplyMode::Skip)
            } else {
                Class::Plain
            }
        }
        _ => Class::Plain,
    }
}

/// Whether `CLIENT ...` (all its arguments, name included) is `CLIENT
/// SETINFO`: the library name and version it sets survive RESET (Redis
/// 7.2), so a connection that ran it is not reused. Compared as Redis
/// compares subcommand names, up to a NUL, so `SETINFO\0x` counts too.
pub fn client_sets_info(args: &[&[u8]]) -> bool {
    args.get(1)
        .is_some_and(|sub| c_eq_ignore_case(sub, b"setinfo"))
}

/// Whether `CLIENT ...` is `CLIENT NO-EVICT` or `CLIENT NO-TOUCH`: Redis
/// 7.0's RESET keeps NO-EVICT (only 7.2 clears both), so a connection that
/// ran either is not reused.
pub fn client_sets_no_evict_or_touch(args: &[&[u8]]) -> bool {
    args.get(1)
        .is_some_and(|sub| c_eq_ignore_case(sub, b"no-evict") || c_eq_ignore_case(sub, b"no-touch"))
}

/// Whether `CLIENT ...` is `CLIENT TRACKING` (on or off): RESET turns
/// tracking off but leaves the keys the connection read in the server's
/// tracking table under its client id, so a later client of the same
/// connection that turned tracking on would be told of keys it never read.
/// A connection that ran it is not reused.
pub fn client_tracks(args: &[&[u8]]) -> bool {
    args.get(1)
        .is_some_and(|sub| c_eq_ignore_case(sub, b"tracking"))
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

/// Splits a client's `HELLO [protover [AUTH user pass] [SETNAME name]]`,
/// reading the options as Redis's helloCommand does: in order, each word
/// compared as a C string (`AUTH\0x` is AUTH), `SETNAME`'s name checked.
/// An option Redis would refuse (unknown, or AUTH without both user and
/// password) gets Redis's own error, answered locally so the credentials
/// around it never leave the proxy. A bad protocol version is Redis's to
/// refuse first, before any option: only `HELLO <protover>` is forwarded.
pub fn hello<'a>(args: &[&'a [u8]]) -> Result<Hello<'a>, String> {
    let proto = args.get(1).and_then(|p| match *p {
        b"2" => Some(2),
        b"3" => Some(3),
        _ => None,
    });
    if args.len() >= 2 && proto.is_none() {
        return Ok(Hello {
            proto,
            args: args[..2].to_vec(),
            auth: None,
        });
    }
    let mut out = args[..args.len().min(2)].to_vec();
    let mut auth = None;
    let mut i = 2;
    while i < args.len() {
        let (opt, more) = (args[i], args.len() - 1 - i);
        if c_eq_ignore_case(opt, b"auth") && more >= 2 {
            auth = Some((args[i + 1], args[i + 2]));
            i += 3;
        } else if c_eq_ignore_case(opt, b"setname") && more >= 1 {
            if args[i + 1].iter().any(|c| !(b'!'..=b'~').contains(c)) {
                return Err(
                    "Client names cannot contain spaces, newlines or special characters.".into(),
                );
            }
            out.extend_from_slice(&args[i..i + 2]);
            i += 2;
        } else {
            // Redis quotes the option as the client spelled it, up to a NUL.
            let opt = &opt[..memchr::memchr(0, opt).unwrap_or(opt.len())];
            return Err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            ));
        }
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
            // Redis may run `AUTH\0x` as AUTH (it did for about one
            // random suffix in 200 on 7.0.15): never forwarded.
            ("AUTH\0x", 3, Class::NulInName),
            ("client\0", 3, Class::NulInName),
            ("subscribe\0abc", 2, Class::NulInName),
            ("GET\0x", 2, Class::Plain),
            ("\0auth", 2, Class::Plain),
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
            // redis-server 7.0.15 turned replies off for `OFF\0x`.
            (
                &[b"client", b"reply", b"OFF\0x"],
                Class::ClientReply(ReplyMode::Off),
            ),
            (&[b"client", b"reply\0x", b"off"], Class::NulInName),
        ];
        for (args, want) in cases {
            assert_eq!(classify_client(args), *want, "{args:?}");
        }
    }

    #[test]
    fn client_setinfo_is_told_apart() {
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"], true),
            (&[b"client", b"setinfo", b"lib-ver", b"5.0"], true),
            (&[b"client", b"SetInfo"], true),
            (&[b"client", b"setinfo\0x", b"lib-name", b"x"], true),
            (&[b"client", b"setname", b"x"], false),
            (&[b"client", b"info"], false),
            (&[b"client"], false),
        ];
        for (args, want) in cases {
            assert_eq!(client_sets_info(args), *want, "{args:?}");
        }
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"CLIENT", b"NO-EVICT", b"on"], true),
            (&[b"client", b"no-touch", b"ON"], true),
            (&[b"client", b"No-Evict\0", b"off"], true),
            (&[b"client", b"no-evicted", b"on"], false),
            (&[b"client", b"setname", b"no-evict"], false),
        ];
        for (args, want) in cases {
            assert_eq!(client_sets_no_evict_or_touch(args), *want, "{args:?}");
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
            // As redis-server 7.0.15 answered each: options in order, so
            // `auth` can be a client name; words compared as C strings.
            (
                &[b"hello", b"3", b"SETNAME", b"auth"],
                Ok((Some(3), vec![b"hello", b"3", b"SETNAME", b"auth"])),
            ),
            (
                &[b"hello", b"2", b"SETNAME", b"auth", b"x", b"y"],
                Err("Syntax error in HELLO option 'x'".into()),
            ),
            (
                &[b"hello", b"2", b"AUTH\0x", b"u", b"p"],
                Ok((Some(2), vec![b"hello", b"2"])),
            ),
            (
                &[b"hello", b"2", b"FOO\0bar"],
                Err("Syntax error in HELLO option 'FOO'".into()),
            ),
            (
                &[b"hello", b"3", b"SETNAME", b"a b", b"FOO"],
                Err("Client names cannot contain spaces, newlines or special characters.".into()),
            ),
            // A bad version is refused before the options are read.
            (
                &[b"hello", b"4", b"AUTH", b"u", b"p", b"FOO"],
                Ok((None, vec![b"hello", b"4"])),
            ),
        ];
        for (args, want) in cases {
            let got = hello(args).map(|h| (h.proto, h.args));
            assert_eq!(got, want, "{args:?}");
        }
    }
}
