//! The verifier's clock: real time, or real time plus a skew that a test
//! moves forward ([`TestClock`](crate::test_util::TestClock)). Both the
//! monotonic clock of the key store (TTLs, `max_stale`, backoff, cooldowns)
//! and the wall clock of the claim rules (`exp`, `nbf`, `iat`) read it, so a
//! test that advances it sees one consistent future.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backoff::instant_after;
use crate::claims::now_secs;

#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    /// How far ahead of real time, in nanoseconds; `None` in production.
    skew: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// Real time plus the shared `skew` (nanoseconds).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn skewed(skew: Arc<AtomicU64>) -> Self {
        Clock { skew: Some(skew) }
    }

    fn skew(&self) -> Duration {
        self.skew
            .as_ref()
            .map_or(Duration::ZERO, |s| Duration::from_nanos(s.load(Relaxed)))
    }

    /// The monotonic time now.
    pub(crate) fn now(&self) -> Instant {
        let now = Instant::now();
        match self.skew {
            None => now,
            Some(_) => instant_after(now, self.skew()),
        }
    }

    /// The wall-clock time now, in seconds since the Unix epoch.
    pub(crate) fn wall_secs(&self) -> u64 {
        match self.skew {
            None => now_secs(),
            // Added before truncating, so the wall clock never lags the
            // monotonic one by a fraction of a second.
            Some(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_add(self.skew())
                .as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_moves_both_clocks_together() {
        let skew = Arc::new(AtomicU64::new(0));
        let clock = Clock {
            skew: Some(skew.clone()),
        };
        let (mono, wall) = (clock.now(), clock.wall_secs());
        skew.store(3_600_000_000_000, Relaxed); // one hour
        assert!(clock.now() >= mono + Duration::from_secs(3600));
        assert!(clock.now() < mono + Duration::from_secs(3700));
        assert!(clock.wall_secs() >= wall + 3600 && clock.wall_secs() < wall + 3700);
        skew.store(u64::MAX, Relaxed);
        let _ = (clock.now(), clock.wall_secs()); // saturates, never panics
        let real = Clock::default();
        assert!(real.now() >= mono);
        assert!(real.wall_secs() < wall + 100);
    }
}
