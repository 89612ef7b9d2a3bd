//! Retry timing shared by the key store and the client: exponential backoff
//! with jitter, and `Instant` arithmetic that cannot overflow.

use std::time::{Duration, Instant};

/// Exponential backoff: doubles from `min` up to `max`, each delay drawn
/// from the upper half of its step (jitter, so a fleet does not retry in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 for the first).
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// `now + d`, saturating at a far-future instant instead of panicking.
pub(crate) fn instant_after(now: Instant, d: Duration) -> Instant {
    // About 30 years, as tokio's own "far future".
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        for _ in 0..100 {
            let b1 = b.delay(1);
            assert!(b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1));
            let b4 = b.delay(4);
            assert!(b4 >= Duration::from_secs(4) && b4 <= Duration::from_secs(8));
            assert!(b.delay(u32::MAX) <= b.max);
            assert!(b.delay(u32::MAX) >= b.max / 2);
        }
        let huge = Backoff {
            min: Duration::MAX,
            max: Duration::MAX,
        };
        assert!(huge.delay(40) >= Duration::MAX / 2);
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        // A week (the largest max_stale) is exact, not cut short.
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(instant_after(now, week), now + week);
        let far = instant_after(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(86_400 * 365 * 30));
        assert_eq!(instant_after(now, Duration::from_secs(u64::MAX)), far);
    }
}
