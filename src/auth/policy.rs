//! Which authentication methods a new upstream connection tries, in order:
//! a pure decision over the mode and how IAM has fared lately, so a broken
//! IAM setup does not double every connection's latency in
//! `iam-with-password-fallback`, and IAM comes back by itself once it works.

use std::time::{Duration, Instant};

use super::Method;
use crate::config::AuthMode;

/// After IAM fails, the password is used directly for this long, doubling
/// with each further failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How IAM has fared (shared by all connections).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IamHealth {
    /// IAM failures since the last success.
    pub failures: u32,
    /// IAM is skipped until then (fallback mode only).
    pub retry_at: Option<Instant>,
}

/// What a connection tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub methods: &'static [Method],
    /// IAM was skipped because of recent failures.
    pub iam_in_backoff: bool,
}

/// The methods to try now.
pub fn plan(mode: AuthMode, health: &IamHealth, now: Instant) -> Plan {
    let plan = |methods, iam_in_backoff| Plan {
        methods,
        iam_in_backoff,
    };
    match mode {
        AuthMode::Password => plan(&[Method::Password], false),
        // Never falls back, so never skips IAM either.
        AuthMode::Iam => plan(&[Method::Iam], false),
        AuthMode::IamWithPasswordFallback => match health.retry_at {
            Some(at) if now < at => plan(&[Method::Password], true),
            _ => plan(&[Method::Iam, Method::Password], false),
        },
    }
}

/// Records an IAM attempt's outcome.
pub fn record(health: &mut IamHealth, ok: bool, now: Instant) {
    if ok {
        *health = IamHealth::default();
    } else {
        health.failures = health.failures.saturating_add(1);
        let backoff = BASE_BACKOFF
            .saturating_mul(1 << health.failures.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        health.retry_at = Some(now + backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_backoff() {
        let now = Instant::now();
        let mut h = IamHealth::default();
        let fallback = AuthMode::IamWithPasswordFallback;
        assert_eq!(
            plan(AuthMode::Password, &h, now).methods,
            &[Method::Password]
        );
        assert_eq!(plan(AuthMode::Iam, &h, now).methods, &[Method::Iam]);
        assert_eq!(
            plan(fallback, &h, now).methods,
            &[Method::Iam, Method::Password]
        );

        // A failure: password only for 1 s, then IAM is tried again.
        record(&mut h, false, now);
        let p = plan(fallback, &h, now + Duration::from_millis(500));
        assert_eq!(
            (p.methods, p.iam_in_backoff),
            (&[Method::Password][..], true)
        );
        assert_eq!(
            plan(fallback, &h, now + Duration::from_secs(1)).methods,
            &[Method::Iam, Method::Password]
        );
        // `iam` mode never skips IAM.
        assert_eq!(plan(AuthMode::Iam, &h, now).methods, &[Method::Iam]);

        // Backoff doubles and is capped.
        let cases = [(2, 2), (3, 4), (4, 8), (7, 60), (20, 60)];
        for (failures, secs) in cases {
            let mut h = IamHealth {
                failures: failures - 1,
                retry_at: None,
            };
            record(&mut h, false, now);
            assert_eq!(
                h.retry_at,
                Some(now + Duration::from_secs(secs)),
                "{failures} failures"
            );
        }

        // One success clears it.
        record(&mut h, true, now);
        assert_eq!(h, IamHealth::default());
    }
}
