//! ElastiCache IAM tokens: a SigV4 query presign of
//! `GET http://<cache-id>/?Action=connect&User=<user-id>`, as a pure function
//! of (credentials, time, parameters). Does no I/O and knows no RESP.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{
        sign as sigv4_sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    },
    sign::v4,
};

use super::Secret;
use crate::config::Service;

/// The longest a token may live; ElastiCache refuses longer ones.
pub const LIFETIME: Duration = Duration::from_secs(900);

/// What a token is signed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Replication group id or serverless cache name (lowercased when signed).
    pub cache_name: String,
    /// ElastiCache user id (lowercased when signed).
    pub user: String,
    pub region: String,
    pub service: Service,
    /// Serverless caches sign `ResourceType=ServerlessCache`; node-based never do.
    pub serverless: bool,
}

/// A signed token and how long it can be used.
#[derive(Clone, Debug)]
pub struct Token {
    /// `<cache-id>/?Action=connect&User=...&X-Amz-...`; the secret part.
    pub value: Secret,
    pub signed_at: SystemTime,
    /// The earlier of the token's own expiry and the credentials' expiry:
    /// a token signed with STS credentials dies with them.
    pub expires_at: SystemTime,
}

/// Signing failed (bad parameters; never a network error).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign an IAM token: {0}")]
pub struct SignError(String);

/// Signs a token at `at`. Cache and user ids are lowercased and the host
/// carries no port, as ElastiCache validates them.
pub fn sign(creds: &Credentials, p: &Params, at: SystemTime) -> Result<Token, SignError> {
    let host = p.cache_name.to_ascii_lowercase();
    let mut query = String::from("Action=connect&User=");
    encode(&p.user.to_ascii_lowercase(), &mut query);
    if p.serverless {
        query.push_str("&ResourceType=ServerlessCache");
    }
    let url = format!("http://{host}/?{query}");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(LIFETIME);
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&p.region)
        .name(p.service.as_str())
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    // Only `host` is signed, with the SHA-256 of an empty payload.
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _) = sigv4_sign(request, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    // The token is the URL without its scheme.
    let mut token = format!("{host}/?{query}");
    for (key, value) in instructions.params() {
        token.push('&');
        token.push_str(key);
        token.push('=');
        encode(value, &mut token);
    }
    let own_expiry = at + LIFETIME;
    let expires_at = creds.expiry().map_or(own_expiry, |c| c.min(own_expiry));
    Ok(Token {
        value: Secret::new(token),
        signed_at: at,
        expires_at,
    })
}

/// Percent-encodes as SigV4 does: RFC 3986 unreserved characters stay,
/// every other byte becomes `%XX`.
fn encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(session: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            session.map(String::from),
            None,
            "test",
        )
    }

    fn params(cache: &str, user: &str, serverless: bool) -> Params {
        Params {
            cache_name: cache.into(),
            user: user.into(),
            region: "us-east-1".into(),
            service: Service::Elasticache,
            serverless,
        }
    }

    /// The query parameters of a token, by name.
    fn query(token: &Token) -> Vec<(String, String)> {
        let (_, q) = token.value.expose().split_once("/?").unwrap();
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn lowercases_names_and_never_adds_a_port() {
        let t = sign(
            &creds(None),
            &params("My-Cache", "App-User", false),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert!(t
            .value
            .expose()
            .starts_with("my-cache/?Action=connect&User=app-user&"));
        assert!(!t.value.expose().contains(':'));
    }

    #[test]
    fn resource_type_only_when_serverless() {
        let at = SystemTime::UNIX_EPOCH;
        let node = query(&sign(&creds(None), &params("c", "u", false), at).unwrap());
        let serverless = query(&sign(&creds(None), &params("c", "u", true), at).unwrap());
        assert!(!node.iter().any(|(k, _)| k == "ResourceType"));
        assert!(serverless.contains(&("ResourceType".into(), "ServerlessCache".into())));
    }

    #[test]
    fn session_token_is_included_and_signed() {
        let q = query(
            &sign(
                &creds(Some("tok/en+=")),
                &params("c", "u", false),
                SystemTime::UNIX_EPOCH,
            )
            .unwrap(),
        );
        assert!(q.contains(&("X-Amz-Security-Token".into(), "tok%2Fen%2B%3D".into())));
        assert!(q.contains(&("X-Amz-SignedHeaders".into(), "host".into())));
        assert!(q.contains(&("X-Amz-Expires".into(), "900".into())));
    }

    #[test]
    fn expiry_is_the_earlier_of_token_and_credentials() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = sign(&creds(None), &params("c", "u", false), at).unwrap();
        assert_eq!(t.expires_at, at + LIFETIME);
        let short = Credentials::new(
            "A",
            "s",
            Some("t".into()),
            Some(at + Duration::from_secs(60)),
            "test",
        );
        let t = sign(&short, &params("c", "u", false), at).unwrap();
        assert_eq!(t.expires_at, at + Duration::from_secs(60));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = sign(
            &creds(Some("session")),
            &params("c", "u", false),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("X-Amz-Signature"), "{shown}");
        assert!(!shown.contains("session"), "{shown}");
    }
}
