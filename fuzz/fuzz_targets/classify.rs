//! The command classifier (names, CLIENT REPLY, SELECT, HELLO) against
//! renderings of what Redis itself does with the same arguments. Input:
//! arguments separated by 0xff bytes.
//!
//! What must hold: every name Redis would run as AUTH, HELLO, CLIENT, ...
//! is seen as that (or refused, for a NUL-smuggled name); a CLIENT REPLY
//! Redis would obey is seen with its mode; a SELECT Redis would obey is seen
//! with its database; a HELLO is answered with Redis's own error where Redis
//! would refuse its options, and otherwise forwarded so that Redis sets the
//! same protocol and name, with no credentials left in it.
#![no_main]

use elasticache_auth_proxy::resp::{command, Class, ReplyMode};
use elasticache_auth_proxy_fuzz::reference::{self, strcaseeq, Hello};
use libfuzzer_sys::fuzz_target;

/// The names the proxy treats specially, with their class for `argc`.
fn named(name: &str, argc: u64) -> Option<Class> {
    use command::PubSub::*;
    let sub = |kind, unsub| Class::Sub {
        kind,
        unsub,
        channels: argc - 1,
    };
    Some(match name {
        "auth" => Class::Auth,
        "hello" => Class::Hello,
        "client" => Class::Client,
        "reset" => Class::Reset,
        "subscribe" => sub(Channel, false),
        "unsubscribe" => sub(Channel, true),
        "psubscribe" => sub(Pattern, false),
        "punsubscribe" => sub(Pattern, true),
        "ssubscribe" => sub(Shard, false),
        "sunsubscribe" => sub(Shard, true),
        "monitor" => Class::Monitor,
        "select" => Class::Select,
        "multi" => Class::Multi,
        "exec" => Class::Exec,
        "discard" => Class::Discard,
        "quit" => Class::Quit,
        "sync" | "psync" => Class::Sync,
        "cluster" => Class::Cluster,
        _ => return None,
    })
}

/// Redis looks a name up by all its bytes but may match it as a C string.
fn expected_class(name: &[u8], argc: u64) -> Class {
    let c_name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    let lower = String::from_utf8_lossy(c_name).to_ascii_lowercase();
    match named(&lower, argc) {
        Some(_) if c_name.len() < name.len() => Class::NulInName,
        Some(class) if std::str::from_utf8(c_name).is_ok() => class,
        _ => Class::Plain,
    }
}

fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|&b| b == 0xff).take(16).collect();
    let argc = args.len() as u64;
    let class = command::classify(args[0], argc);
    assert_eq!(
        class,
        expected_class(args[0], argc),
        "classify({:?})",
        args[0]
    );

    match class {
        Class::Client => {
            let want = match &args[..] {
                [_, sub, _] if strcaseeq(sub, "reply") && sub.contains(&0) => Class::NulInName,
                [_, sub, mode] if strcaseeq(sub, "reply") => {
                    if strcaseeq(mode, "on") {
                        Class::ClientReply(ReplyMode::On)
                    } else if strcaseeq(mode, "off") {
                        Class::ClientReply(ReplyMode::Off)
                    } else if strcaseeq(mode, "skip") {
                        Class::ClientReply(ReplyMode::Skip)
                    } else {
                        Class::Plain
                    }
                }
                _ => Class::Plain,
            };
            assert_eq!(command::classify_client(&args), want);
        }
        Class::Select => {
            // Redis switches only for a string2ll integer in range; the
            // proxy records the database only once the reply is +OK.
            if let [_, db] = &args[..] {
                if let Some(n) =
                    reference::string2ll(db).filter(|n| (0..=i64::from(i32::MAX)).contains(n))
                {
                    assert_eq!(command::classify_select(&args), Class::SelectDb(n as u32));
                }
            }
        }
        Class::Hello => check_hello(&args),
        _ => {}
    }
});

fn check_hello(args: &[&[u8]]) {
    let got = command::hello(args);
    match (reference::hello(args), got) {
        (Hello::BadProto, Ok(h)) => {
            // Forwarded as `HELLO <protover>` for Redis to refuse.
            assert_eq!(h.args, args[..2].to_vec());
            assert_eq!(h.auth, None);
            assert_eq!(reference::hello(&h.args), Hello::BadProto);
        }
        (Hello::Syntax(opt), Err(e)) => {
            assert_eq!(e, format!("Syntax error in HELLO option '{opt}'"))
        }
        (Hello::BadName, Err(e)) => assert_eq!(
            e,
            "Client names cannot contain spaces, newlines or special characters."
        ),
        (
            Hello::Run {
                proto,
                auth,
                setname,
            },
            Ok(h),
        ) => {
            assert_eq!(h.auth, auth, "credentials taken out");
            assert_eq!(h.proto.map(i64::from), proto);
            // What goes upstream runs as the same HELLO, without credentials.
            assert_eq!(
                reference::hello(&h.args),
                Hello::Run {
                    proto,
                    auth: None,
                    setname
                },
                "forwarded {:?}",
                h.args
            );
        }
        (want, got) => panic!("Redis: {want:?}, proxy: {got:?}"),
    }
}
