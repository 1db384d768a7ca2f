//! Owns IAM token validation: is this string a valid ElastiCache IAM token for
//! this user at this moment? A pure function: no I/O, no clock (the caller
//! passes `now`), no logging, no counters.
//!
//! SigV4 query-signature verification is implemented here with `hmac` and
//! `sha2`, deliberately independent of the proxy's signer (`aws-sigv4`), so
//! the botocore known-answer vectors check two implementations, not one.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use elasticache_auth_proxy::auth::Secret;

type HmacSha256 = Hmac<Sha256>;
/// Decoded query parameters in token order.
type Params = Vec<(String, String)>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Hex SHA-256 of the empty payload: ElastiCache tokens sign no body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The longest presign lifetime ElastiCache accepts (15 minutes).
const MAX_EXPIRES: u64 = 900;

/// What a token is checked against; built once from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Replication group id or serverless cache name, already lowercased.
    pub cache_name: String,
    pub region: String,
    /// `elasticache` or `memorydb`: the SigV4 service name.
    pub service: String,
    /// Serverless caches require `ResourceType=ServerlessCache`; node-based
    /// caches must not have it.
    pub serverless: bool,
    /// How far in the future `X-Amz-Date` may be.
    pub clock_skew: Duration,
    pub credentials: Vec<Credential>,
}

/// AWS credentials the emulator accepts signatures from.
#[derive(Clone, Debug)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// STS session token: when set, tokens must carry exactly this value.
    pub session_token: Option<Secret>,
    /// When temporary credentials stop being valid; tokens they signed die too.
    pub expires_at: Option<SystemTime>,
}

/// Index into [`Settings::credentials`] of the credential that signed a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialIndex(pub usize);

/// Why a token was refused. [`Reject::reason`] is stable: it labels the stats.
/// Messages describe the check, never the token's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("not a token: expected <host>/?<query> with valid percent-encoding")]
    Malformed,
    #[error("host is not the configured cache name (lowercased, no port)")]
    Host,
    #[error("Action is not connect")]
    Action,
    #[error("User does not match the AUTH user")]
    User,
    #[error("ResourceType does not match the cache kind (serverless or node-based)")]
    ResourceType,
    #[error("X-Amz-Algorithm is not AWS4-HMAC-SHA256")]
    Algorithm,
    #[error("X-Amz-SignedHeaders is not host")]
    SignedHeaders,
    #[error("X-Amz-Credential is malformed or its date differs from X-Amz-Date")]
    Credential,
    #[error("access key id is not a configured credential")]
    UnknownAccessKey,
    #[error("credential scope names another region")]
    Region,
    #[error("credential scope names another service")]
    Service,
    #[error("X-Amz-Date is missing or malformed")]
    Date,
    #[error("X-Amz-Date is in the future beyond the allowed clock skew")]
    NotYetValid,
    #[error("X-Amz-Expires is missing or not in 1..=900")]
    Expires,
    #[error("token has expired")]
    Expired,
    #[error("session token is missing, unexpected or wrong")]
    SessionToken,
    #[error("the signing credentials have expired")]
    CredentialExpired,
    #[error("signature does not match")]
    Signature,
}

impl Reject {
    /// Every reason, in the order stats list them.
    pub const ALL: [Reject; 18] = [
        Reject::Malformed,
        Reject::Host,
        Reject::Action,
        Reject::User,
        Reject::ResourceType,
        Reject::Algorithm,
        Reject::SignedHeaders,
        Reject::Credential,
        Reject::UnknownAccessKey,
        Reject::Region,
        Reject::Service,
        Reject::Date,
        Reject::NotYetValid,
        Reject::Expires,
        Reject::Expired,
        Reject::SessionToken,
        Reject::CredentialExpired,
        Reject::Signature,
    ];

    /// Stable label for stats and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Host => "host",
            Reject::Action => "action",
            Reject::User => "user",
            Reject::ResourceType => "resource_type",
            Reject::Algorithm => "algorithm",
            Reject::SignedHeaders => "signed_headers",
            Reject::Credential => "credential",
            Reject::UnknownAccessKey => "unknown_access_key",
            Reject::Region => "region",
            Reject::Service => "service",
            Reject::Date => "date",
            Reject::NotYetValid => "not_yet_valid",
            Reject::Expires => "expires",
            Reject::Expired => "expired",
            Reject::SessionToken => "session_token",
            Reject::CredentialExpired => "credential_expired",
            Reject::Signature => "signature",
        }
    }

    /// Position in [`Reject::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        // Every variant is listed in ALL, so the search always succeeds.
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Checks that `token` authenticates `auth_user` (the AUTH user name, as
/// given) against `cfg` at time `now`. Returns which credential signed it.
pub fn verify(
    token: &str,
    auth_user: &str,
    now: SystemTime,
    cfg: &Settings,
) -> Result<CredentialIndex, Reject> {
    let (host, params) = parse(token)?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };

    if host.contains(':') || host != cfg.cache_name {
        return Err(Reject::Host);
    }
    if get("Action") != Some("connect") {
        return Err(Reject::Action);
    }
    if get("User") != Some(auth_user) {
        return Err(Reject::User);
    }
    let resource_ok = match get("ResourceType") {
        Some(kind) => cfg.serverless && kind == "ServerlessCache",
        None => !cfg.serverless,
    };
    if !resource_ok {
        return Err(Reject::ResourceType);
    }
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(Reject::Algorithm);
    }
    if get("X-Amz-SignedHeaders") != Some("host") {
        return Err(Reject::SignedHeaders);
    }

    // <AKID>/<yyyymmdd>/<region>/<service>/aws4_request
    let scope: Vec<&str> = get("X-Amz-Credential")
        .ok_or(Reject::Credential)?
        .split('/')
        .collect();
    let [akid, date, region, service, terminator] = scope[..] else {
        return Err(Reject::Credential);
    };
    if terminator != "aws4_request" {
        return Err(Reject::Credential);
    }
    let index = cfg
        .credentials
        .iter()
        .position(|c| c.access_key_id == akid)
        .ok_or(Reject::UnknownAccessKey)?;
    let credential = &cfg.credentials[index];

    let amz_date = get("X-Amz-Date").ok_or(Reject::Date)?;
    let signed_at = parse_amz_date(amz_date).ok_or(Reject::Date)?;
    if date != &amz_date[..8] {
        return Err(Reject::Credential);
    }
    if region != cfg.region {
        return Err(Reject::Region);
    }
    if service != cfg.service {
        return Err(Reject::Service);
    }

    // A date past now + skew is "not yet valid"; `None` means now + skew
    // overflowed SystemTime, i.e. nothing can be too far in the future.
    if now
        .checked_add(cfg.clock_skew)
        .is_some_and(|t| signed_at > t)
    {
        return Err(Reject::NotYetValid);
    }
    let expires = get("X-Amz-Expires")
        .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|e| (1..=MAX_EXPIRES).contains(e))
        .ok_or(Reject::Expires)?;
    // The date was parsed from a four-digit year, so adding 900 s cannot overflow.
    if signed_at
        .checked_add(Duration::from_secs(expires))
        .is_none_or(|end| now > end)
    {
        return Err(Reject::Expired);
    }

    let session_ok = match (&credential.session_token, get("X-Amz-Security-Token")) {
        (Some(want), Some(got)) => constant_time_eq(want.expose().as_bytes(), got.as_bytes()),
        (None, None) => true,
        _ => false,
    };
    if !session_ok {
        return Err(Reject::SessionToken);
    }
    if credential.expires_at.is_some_and(|at| now > at) {
        return Err(Reject::CredentialExpired);
    }

    let given = get("X-Amz-Signature")
        .and_then(hex_decode_32)
        .ok_or(Reject::Signature)?;
    let string_to_sign = string_to_sign(host, &params, amz_date, date, region, service);
    let key = signing_key(credential.secret_access_key.expose(), date, region, service);
    let mac = hmac(&key, string_to_sign.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| Reject::Signature)?;
    Ok(CredentialIndex(index))
}

/// Splits `<host>/?<query>` and percent-decodes the query into (key, value)
/// pairs. Duplicate keys and pieces without `=` are refused as ambiguous.
fn parse(token: &str) -> Result<(&str, Params), Reject> {
    let (host, query) = token.split_once("/?").ok_or(Reject::Malformed)?;
    if host.is_empty() || query.is_empty() {
        return Err(Reject::Malformed);
    }
    let mut params = Params::new();
    for piece in query.split('&') {
        let (k, v) = piece.split_once('=').ok_or(Reject::Malformed)?;
        let (k, v) = (
            percent_decode(k).ok_or(Reject::Malformed)?,
            percent_decode(v).ok_or(Reject::Malformed)?,
        );
        if k.is_empty() || params.iter().any(|(seen, _)| *seen == k) {
            return Err(Reject::Malformed);
        }
        params.push((k, v));
    }
    Ok((host, params))
}

/// RFC 3986 percent-decoding (`+` is a literal plus, as SigV4 treats it).
/// `None` on a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex_value(*b.get(i + 1)?)?;
            let lo = hex_value(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// SigV4 URI encoding: unreserved characters kept, all else `%XX` uppercase.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SigV4 string to sign for a presigned `GET /` with only `host` signed.
fn string_to_sign(
    host: &str,
    params: &[(String, String)],
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
) -> String {
    let mut query: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical = format!(
        "GET\n/\n{}\nhost:{host}\n\nhost\n{EMPTY_SHA256}",
        query.join("&")
    );
    format!(
        "{ALGORITHM}\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    )
}

/// The SigV4 key: HMAC chain from `"AWS4" + secret` over date, region,
/// service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes()).finalize().into_bytes().to_vec();
    }
    key
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac
}

/// `yyyymmddThhmmssZ` → time; `None` unless exactly that shape and a real date.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape_ok {
        return None;
    }
    // All ASCII, so slicing at any index is on a char boundary.
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// 64 lowercase hex digits → 32 bytes.
fn hex_decode_32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 || b.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../../tests/fixtures/iam_vectors.json");

    /// One botocore vector with the settings it was made for.
    struct Case {
        name: String,
        token: String,
        user: String,
        now: SystemTime,
        cfg: Settings,
    }

    fn cases() -> Vec<Case> {
        let doc: serde_json::Value = serde_json::from_str(VECTORS).expect("vectors are JSON");
        let s = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_string);
        doc["vectors"]
            .as_array()
            .expect("vectors array")
            .iter()
            .map(|v| Case {
                name: s(v, "name").unwrap(),
                token: s(v, "token").unwrap(),
                user: s(v, "user_id").unwrap().to_lowercase(),
                now: humantime::parse_rfc3339(&s(v, "time").unwrap()).unwrap(),
                cfg: Settings {
                    cache_name: s(v, "cache_name").unwrap().to_lowercase(),
                    region: s(v, "region").unwrap(),
                    service: s(v, "service").unwrap(),
                    serverless: v["serverless"].as_bool().unwrap(),
                    clock_skew: Duration::from_secs(300),
                    credentials: vec![Credential {
                        access_key_id: s(v, "access_key_id").unwrap(),
                        secret_access_key: Secret::new(s(v, "secret_access_key").unwrap()),
                        session_token: s(v, "session_token").map(Secret::new),
                        expires_at: None,
                    }],
                },
            })
            .collect()
    }

    fn case(name: &str) -> Case {
        cases().into_iter().find(|c| c.name == name).unwrap()
    }

    fn check(c: &Case) -> Result<CredentialIndex, Reject> {
        verify(&c.token, &c.user, c.now, &c.cfg)
    }

    #[test]
    fn every_botocore_vector_verifies() {
        let all = cases();
        assert_eq!(all.len(), 7);
        for c in &all {
            assert_eq!(check(c), Ok(CredentialIndex(0)), "vector {:?}", c.name);
            // Still valid at the last second of its 900 s life.
            let last = c.now + Duration::from_secs(900);
            assert_eq!(
                verify(&c.token, &c.user, last, &c.cfg),
                Ok(CredentialIndex(0))
            );
        }
    }

    #[test]
    fn picks_the_credential_that_signed() {
        let mut c = case("node-based");
        let other = Credential {
            access_key_id: "AKIDOTHER".into(),
            ..c.cfg.credentials[0].clone()
        };
        c.cfg.credentials.insert(0, other);
        assert_eq!(check(&c), Ok(CredentialIndex(1)));
    }

    /// Each row: vector, how to spoil it, the expected rejection.
    #[test]
    fn rejections() {
        type Spoil = fn(&mut Case);
        let rows: &[(&str, &str, Spoil, Reject)] = &[
            (
                "wrong secret",
                "node-based",
                |c| {
                    c.cfg.credentials[0].secret_access_key = Secret::new("not-the-secret");
                },
                Reject::Signature,
            ),
            (
                "wrong region",
                "node-based",
                |c| c.cfg.region = "us-west-2".into(),
                Reject::Region,
            ),
            (
                "wrong service",
                "node-based",
                |c| c.cfg.service = "memorydb".into(),
                Reject::Service,
            ),
            (
                "memorydb token at elasticache",
                "memorydb",
                |c| {
                    c.cfg.service = "elasticache".into();
                },
                Reject::Service,
            ),
            (
                "wrong cache name",
                "node-based",
                |c| c.cfg.cache_name = "other-cache".into(),
                Reject::Host,
            ),
            (
                "mixed-case host",
                "node-based",
                |c| {
                    c.token = c.token.replacen("my-cache", "My-Cache", 1);
                },
                Reject::Host,
            ),
            (
                "host with port",
                "node-based",
                |c| {
                    c.token = c.token.replacen("my-cache/", "my-cache:6379/", 1);
                },
                Reject::Host,
            ),
            (
                "expired",
                "node-based",
                |c| c.now += Duration::from_secs(901),
                Reject::Expired,
            ),
            (
                "future-dated",
                "node-based",
                |c| c.now -= Duration::from_secs(600),
                Reject::NotYetValid,
            ),
            (
                "user mismatch",
                "node-based",
                |c| c.user = "other-user".into(),
                Reject::User,
            ),
            (
                "user case differs",
                "mixed-case inputs",
                |c| c.user = "App-User".into(),
                Reject::User,
            ),
            (
                "missing ResourceType for serverless",
                "node-based",
                |c| c.cfg.serverless = true,
                Reject::ResourceType,
            ),
            (
                "extra ResourceType for node-based",
                "serverless",
                |c| c.cfg.serverless = false,
                Reject::ResourceType,
            ),
            (
                "missing session token",
                "node-based",
                |c| {
                    c.cfg.credentials[0].session_token = Some(Secret::new("expected-token"));
                },
                Reject::SessionToken,
            ),
            (
                "wrong session token",
                "node-based with session token",
                |c| {
                    c.cfg.credentials[0].session_token = Some(Secret::new("another-token"));
                },
                Reject::SessionToken,
            ),
            (
                "unexpected session token",
                "node-based with session token",
                |c| {
                    c.cfg.credentials[0].session_token = None;
                },
                Reject::SessionToken,
            ),
            (
                "X-Amz-Expires=901",
                "node-based",
                |c| {
                    c.token = c.token.replace("X-Amz-Expires=900", "X-Amz-Expires=901");
                },
                Reject::Expires,
            ),
            (
                "X-Amz-Expires=0",
                "node-based",
                |c| {
                    c.token = c.token.replace("X-Amz-Expires=900", "X-Amz-Expires=0");
                },
                Reject::Expires,
            ),
            (
                "X-Amz-Expires not a number",
                "node-based",
                |c| {
                    c.token = c.token.replace("X-Amz-Expires=900", "X-Amz-Expires=+90");
                },
                Reject::Expires,
            ),
            (
                "tampered signature",
                "node-based",
                |c| {
                    let last = c.token.pop().unwrap();
                    c.token.push(if last == '0' { '1' } else { '0' });
                },
                Reject::Signature,
            ),
            (
                "uppercase hex signature",
                "node-based",
                |c| {
                    let at = c.token.rfind('=').unwrap() + 1;
                    let upper = c.token[at..].to_uppercase();
                    c.token.replace_range(at.., &upper);
                },
                Reject::Signature,
            ),
            (
                "short signature",
                "node-based",
                |c| {
                    c.token.pop();
                },
                Reject::Signature,
            ),
            (
                "tampered signed param",
                "node-based",
                |c| {
                    c.token = c.token.replace("Action=connect", "Action=connect&Extra=1");
                },
                Reject::Signature,
            ),
            (
                "credential expired",
                "node-based",
                |c| {
                    c.cfg.credentials[0].expires_at = Some(c.now - Duration::from_secs(1));
                },
                Reject::CredentialExpired,
            ),
            (
                "unknown access key",
                "node-based",
                |c| {
                    c.cfg.credentials[0].access_key_id = "AKIDOTHER".into();
                },
                Reject::UnknownAccessKey,
            ),
            (
                "wrong action",
                "node-based",
                |c| {
                    c.token = c.token.replace("Action=connect", "Action=Connect");
                },
                Reject::Action,
            ),
            (
                "wrong algorithm",
                "node-based",
                |c| {
                    c.token = c.token.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512");
                },
                Reject::Algorithm,
            ),
            (
                "more signed headers",
                "node-based",
                |c| {
                    c.token = c
                        .token
                        .replace("SignedHeaders=host", "SignedHeaders=host%3Bx-amz-date");
                },
                Reject::SignedHeaders,
            ),
            (
                "credential date differs",
                "node-based",
                |c| {
                    c.token = c.token.replace("%2F20261125%2F", "%2F20261124%2F");
                },
                Reject::Credential,
            ),
            (
                "credential scope too short",
                "node-based",
                |c| {
                    c.token = c.token.replace("%2Faws4_request", "");
                },
                Reject::Credential,
            ),
            (
                "bad X-Amz-Date",
                "node-based",
                |c| {
                    c.token = c
                        .token
                        .replace("X-Amz-Date=20261125T120000Z", "X-Amz-Date=20261125T126000Z");
                },
                Reject::Date,
            ),
            (
                "no /?",
                "node-based",
                |c| c.token = c.token.replacen("/?", "?", 1),
                Reject::Malformed,
            ),
            (
                "bad percent-encoding",
                "node-based",
                |c| {
                    c.token = c.token.replacen("%2F", "%2G", 1);
                },
                Reject::Malformed,
            ),
            (
                "truncated escape",
                "node-based",
                |c| c.token.push_str("&X=%4"),
                Reject::Malformed,
            ),
            (
                "escape to invalid UTF-8",
                "node-based",
                |c| c.token.push_str("&X=%FF"),
                Reject::Malformed,
            ),
            (
                "duplicate parameter",
                "node-based",
                |c| c.token.push_str("&User=app-user"),
                Reject::Malformed,
            ),
            (
                "piece without =",
                "node-based",
                |c| c.token.push_str("&flag"),
                Reject::Malformed,
            ),
            (
                "empty",
                "node-based",
                |c| c.token.clear(),
                Reject::Malformed,
            ),
            (
                "scheme kept",
                "node-based",
                |c| c.token.insert_str(0, "http://"),
                Reject::Host,
            ),
        ];
        for (what, vector, spoil, want) in rows {
            let mut c = case(vector);
            spoil(&mut c);
            assert_eq!(check(&c), Err(*want), "{what}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let good = case("node-based with session token");
        let mut inputs: Vec<String> = [
            "", "/?", "a/?", "/?=", "x/?&&", "x/?%", "x/?a=%", "x/?a=%zz", "é/?é=é",
            "my-cache/?X-Amz-Credential=////&X-Amz-Date=",
            "my-cache/?Action=connect&User=app-user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host&X-Amz-Credential=ASIAEXAMPLE%2F2026%2Feu-west-1%2Felasticache%2Faws4_request&X-Amz-Date=2026",
            "my-cache/?Action=connect&User=app-user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host&X-Amz-Credential=ASIAEXAMPLE%2F99991231%2Feu-west-1%2Felasticache%2Faws4_request&X-Amz-Date=99991231T235959Z&X-Amz-Expires=900",
        ]
        .map(String::from)
        .to_vec();
        // Every prefix of a real token.
        for (i, _) in good.token.char_indices() {
            inputs.push(good.token[..i].to_string());
        }
        for input in &inputs {
            assert!(
                verify(input, &good.user, good.now, &good.cfg).is_err(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn uri_encoding_matches_sigv4() {
        assert_eq!(uri_encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(uri_encode("a/b+c=d e"), "a%2Fb%2Bc%3Dd%20e");
        assert_eq!(uri_encode("é"), "%C3%A9");
        assert_eq!(percent_decode("a%2fb%2B+").as_deref(), Some("a/b++"));
    }

    #[test]
    fn reasons_are_distinct() {
        let mut seen: Vec<&str> = Reject::ALL.iter().map(|r| r.reason()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), Reject::ALL.len());
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
