//! Owns the IAM AUTH rate limit: a token bucket refilled continuously at
//! `rate` per second, holding at most `rate` (the burst). Pure: the caller
//! passes the time.

use std::time::Instant;

/// A token bucket; `rate == 0` admits everything.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32, now: Instant) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Takes one token if there is one; `false` means throttled.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::{Duration, Instant};

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (time in ms, admitted?)
        let steps = [
            (0, true),
            (0, true),
            (0, false),
            (100, false),
            (500, true), // 0.5 s refills one token
            (500, false),
            (5000, true), // a long pause refills only up to the burst
            (5000, true),
            (5000, false),
        ];
        for (i, (ms, want)) in steps.into_iter().enumerate() {
            assert_eq!(b.take(at(ms)), want, "step {i} at {ms} ms");
        }
    }

    #[test]
    fn zero_is_unlimited() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0, t0);
        assert!((0..10_000).all(|_| b.take(t0)));
    }
}
