//! Owns the single-value setting types (duration, size, mode, endpoint, enums): each parses from
//! a flag, an environment variable or a TOML string the same way; cross-setting rules live in `config`.

use std::{fmt, net::Ipv6Addr, str::FromStr, time::Duration};

use serde::{de::Error as _, Deserialize, Deserializer};

/// Deserializes any `FromStr` type from a string, so TOML accepts exactly what the flag accepts.
fn from_string<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    String::deserialize(d)?.parse().map_err(D::Error::custom)
}

/// Implements `Deserialize` through `FromStr` for the listed types.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_string(d)
            }
        }
    )*};
}
deserialize_from_str!(HumanDuration, Upstream, LogLevel);

/// A duration in humantime syntax ("500ms", "5s", "11h", "0").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("{e}; use a duration such as \"500ms\", \"5s\" or \"1m\""))
    }
}

/// A byte count: a plain integer or one with a case-insensitive suffix B, KB, KiB, MB, MiB, GB, GiB
/// (KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024). TOML also takes a bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "expected bytes or a size with B, KB, KiB, MB, MiB, GB or GiB such as \"512MiB\", got {s:?}"
            )
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, suffix) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(unit)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// A TOML value that may be written as a string or a bare integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrInt {
    Int(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrInt::deserialize(d)? {
            StringOrInt::Int(n) => Ok(ByteSize(n)),
            StringOrInt::Text(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

/// Unix file permission bits written as an octal string ("0660", "660" or "0o660").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixMode(pub u32);

impl FromStr for UnixMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().strip_prefix("0o").unwrap_or(s.trim());
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(UnixMode(mode)),
            _ => Err(format!(
                "expected an octal mode such as \"0660\", got {s:?}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for UnixMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StringOrInt::deserialize(d)? {
            // A bare TOML integer is decimal (660 is not 0o660), so insist on the quoted octal form.
            StringOrInt::Int(n) => Err(D::Error::custom(format!(
                "quote the octal mode: \"0{n}\", not {n}"
            ))),
            StringOrInt::Text(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

/// An inclusive range of TCP ports, written `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected FIRST-LAST such as \"7000-7099\", got {s:?}");
        let (first, last) = s.trim().split_once('-').ok_or_else(bad)?;
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
        match (port(first), port(last)) {
            (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
            (Some(_), Some(_)) => Err(format!("the first port comes first, got {s:?}")),
            _ => Err(bad()),
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// The upstream endpoint: a DNS name, IPv4 address or bracketed IPv6 address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host without brackets; also the default TLS server name.
    pub host: String,
    pub port: u16,
}

impl FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{why} in {s:?}; expected HOST:PORT such as \"my-cache.abc123.use1.cache.amazonaws.com:6379\" or \"[::1]:6379\""
            )
        };
        let (host, port) = s
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port"))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("invalid port")),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("invalid IPv6 address"))?
                .to_string(),
            None if host.contains(':') => return Err(bad("IPv6 address without brackets")),
            None if host.is_empty()
                || host
                    .contains(|c: char| c.is_whitespace() || c == '/' || c == '[' || c == ']') =>
            {
                return Err(bad("invalid host"));
            }
            None => host.to_string(),
        };
        Ok(Upstream { host, port })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A tracing level (error, warn, info, debug, trace) or an EnvFilter-style directive containing '='.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let level = s.trim();
        let lower = level.to_ascii_lowercase();
        if ["error", "warn", "info", "debug", "trace"].contains(&lower.as_str()) {
            Ok(LogLevel(lower))
        } else if level.contains('=') {
            Ok(LogLevel(level.to_string()))
        } else {
            Err(format!(
                "expected error, warn, info, debug, trace or a directive like \"info,elasticache_auth_proxy=debug\", got {s:?}"
            ))
        }
    }
}

/// Implements `FromStr` through `clap::ValueEnum`, so environment variables accept the flag's values.
macro_rules! from_str_via_value_enum {
    ($($ty:ty),*) => {$(
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$ty as clap::ValueEnum>::from_str(s.trim(), false).map_err(|_| {
                    let names: Vec<_> = <$ty as clap::ValueEnum>::value_variants()
                        .iter()
                        .filter_map(|v| clap::ValueEnum::to_possible_value(v))
                        .map(|v| v.get_name().to_string())
                        .collect();
                    format!("expected one of {}, got {s:?}", names.join(", "))
                })
            }
        }
    )*};
}
from_str_via_value_enum!(AuthMode, LogFormat, Service, Switch);

/// How the proxy authenticates to the upstream.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// `AUTH [user] <password>` with a static password.
    Password,
    /// `AUTH <iam-user> <token>` with a fresh SigV4 token; never falls back.
    Iam,
    /// IAM first; the password user when IAM is unavailable or refused.
    IamWithPasswordFallback,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Password => "password",
            AuthMode::Iam => "iam",
            AuthMode::IamWithPasswordFallback => "iam-with-password-fallback",
        }
    }

    pub fn uses_iam(self) -> bool {
        self != AuthMode::Password
    }
}

/// The AWS service IAM tokens are signed for.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// Amazon ElastiCache (Redis OSS, Valkey).
    Elasticache,
    /// Amazon MemoryDB.
    Memorydb,
}

impl Service {
    /// The SigV4 signing name.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Elasticache => "elasticache",
            Service::Memorydb => "memorydb",
        }
    }
}

/// A feature turned on or off (`on` / `off`).
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Switch {
    On,
    Off,
}

/// Log output format.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("512MiB", Some(512 << 20)),
            ("64 kb", Some(64_000)),
            ("2GiB", Some(2 << 30)),
            ("3GB", Some(3_000_000_000)),
            ("10b", Some(10)),
            ("1.5MiB", None),
            ("MiB", None),
            ("12 parsecs", None),
            ("99999999999GiB", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<ByteSize>().ok().map(|b| b.0),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn unix_mode() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0660", Some(0o660)),
            ("600", Some(0o600)),
            ("0o775", Some(0o775)),
            ("0680", None),
            ("", None),
            ("17777", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<UnixMode>().ok().map(|m| m.0),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn upstream() {
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("cache.example.com:6379", Some(("cache.example.com", 6379))),
            ("10.0.0.1:6380", Some(("10.0.0.1", 6380))),
            ("[::1]:6379", Some(("::1", 6379))),
            ("[fe80::1]:7000", Some(("fe80::1", 7000))),
            ("::1:6379", None),
            ("cache.example.com", None),
            ("cache.example.com:0", None),
            ("cache.example.com:99999", None),
            (":6379", None),
            ("redis://cache:6379", None),
            ("[nothost]:6379", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Upstream>().ok();
            assert_eq!(
                got.as_ref().map(|u| (u.host.as_str(), u.port)),
                *want,
                "{input}"
            );
            if let Some(u) = got {
                assert_eq!(u.to_string(), *input, "round trip");
            }
        }
    }

    #[test]
    fn durations_levels_and_enums() {
        assert_eq!(
            "500ms".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_millis(500)))
        );
        assert_eq!(
            "0".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::ZERO))
        );
        assert!("5 parsecs".parse::<HumanDuration>().is_err());
        for (input, ok) in [
            ("info", true),
            ("WARN", true),
            ("info,my_crate=debug", true),
            ("loud", false),
        ] {
            assert_eq!(input.parse::<LogLevel>().is_ok(), ok, "{input}");
        }
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("password".parse::<AuthMode>(), Ok(AuthMode::Password));
        assert_eq!("iam".parse::<AuthMode>(), Ok(AuthMode::Iam));
        assert_eq!(
            "iam-with-password-fallback".parse::<AuthMode>(),
            Ok(AuthMode::IamWithPasswordFallback)
        );
        assert_eq!(
            "sso".parse::<AuthMode>(),
            Err(
                "expected one of password, iam, iam-with-password-fallback, got \"sso\""
                    .to_string()
            )
        );
    }
}
