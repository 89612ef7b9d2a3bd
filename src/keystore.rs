//! One issuer's key set: cached, refreshed in the background, refetched
//! (single-flight, rate-limited) on an unknown `kid`, and kept when the issuer
//! is down for at most `max_stale`.
//!
//! Locks are `std::sync` locks held for a few instructions, never across an
//! `.await`: a request only ever waits on the shared fetch future itself, and
//! only when it cannot be answered without new keys.

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use reqwest::Url;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::FetchError;
use crate::fetch::Fetcher;
use crate::jwks::{KeySet, parse_jwks};

/// Timing policy of a key store.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    /// Used when the response has no `Cache-Control: max-age`.
    pub(crate) default_ttl: Duration,
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    /// How long past its TTL a key set may still be used when refreshes fail.
    pub(crate) max_stale: Duration,
    /// Minimum time between two refetches caused by unknown `kid`s.
    pub(crate) unknown_kid_cooldown: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            default_ttl: Duration::from_secs(10 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            max_stale: Duration::from_secs(12 * 60 * 60),
            unknown_kid_cooldown: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

type SharedFetch = Shared<BoxFuture<'static, Result<Arc<KeySet>, Arc<FetchError>>>>;

struct State {
    keys: Option<Arc<KeySet>>,
    /// Start a background refresh from here on (3/4 of the TTL).
    refresh_at: Instant,
    /// Past this the keys are no longer used.
    usable_until: Instant,
    /// No fetch before this (backoff after failures).
    next_attempt: Instant,
    failures: u32,
    last_kid_refetch: Option<Instant>,
}

/// What a request may do with the current keys.
pub(crate) enum Snapshot {
    /// Keys usable now.
    Ready(Arc<KeySet>),
    /// No usable keys, and a fetch may be attempted now.
    NeedFetch,
    /// No usable keys, and fetches are backing off for this long.
    Unavailable(Duration),
}

pub(crate) struct KeyStore {
    url: Url,
    fetcher: Arc<Fetcher>,
    policy: RefreshPolicy,
    state: RwLock<State>,
    inflight: Mutex<Option<SharedFetch>>,
    fetches: AtomicU64,
}

impl KeyStore {
    pub(crate) fn new(url: Url, fetcher: Arc<Fetcher>, policy: RefreshPolicy) -> Self {
        let now = Instant::now();
        KeyStore {
            url,
            fetcher,
            policy,
            state: RwLock::new(State {
                keys: None,
                refresh_at: now,
                usable_until: now,
                next_attempt: now,
                failures: 0,
                last_kid_refetch: None,
            }),
            inflight: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// How many key-set fetches were started.
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The keys a request may use now; starts a background refresh when due.
    pub(crate) fn snapshot(self: &Arc<Self>) -> Snapshot {
        let now = Instant::now();
        let (snap, refresh) = {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            match &st.keys {
                Some(keys) if now < st.usable_until => (
                    Snapshot::Ready(keys.clone()),
                    now >= st.refresh_at && now >= st.next_attempt,
                ),
                _ if now >= st.next_attempt => (Snapshot::NeedFetch, false),
                _ => (Snapshot::Unavailable(st.next_attempt - now), false),
            }
        };
        if refresh {
            // Routine refresh: the request goes on with the current keys.
            drop(self.refresh());
        }
        snap
    }

    /// How long until the next fetch may be attempted (at least one second).
    pub(crate) fn retry_after(&self) -> Duration {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.next_attempt
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    }

    /// Whether an unknown `kid` may trigger a refetch now; if so, the
    /// cooldown starts now (so concurrent callers share one refetch).
    pub(crate) fn claim_kid_refetch(&self) -> bool {
        let now = Instant::now();
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if now < st.next_attempt {
            return false;
        }
        match st.last_kid_refetch {
            Some(t) if now.duration_since(t) < self.policy.unknown_kid_cooldown => false,
            _ => {
                st.last_kid_refetch = Some(now);
                true
            }
        }
    }

    /// Join the fetch in flight, or start one. The fetch runs on its own task,
    /// so it completes even if every caller gives up waiting.
    pub(crate) fn refresh(self: &Arc<Self>) -> SharedFetch {
        let mut slot = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fut) = slot.as_ref() {
            return fut.clone();
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = this.fetch_once().await;
            // Clear the slot before the result is seen, so a caller that reads
            // the new state and still misses a key can start the next fetch.
            *this.inflight.lock().unwrap_or_else(|e| e.into_inner()) = None;
            result
        });
        let fut = async move {
            task.await
                .unwrap_or_else(|_| Err(Arc::new(FetchError::Cancelled)))
        }
        .boxed()
        .shared();
        *slot = Some(fut.clone());
        fut
    }

    async fn fetch_once(&self) -> Result<Arc<KeySet>, Arc<FetchError>> {
        let result = match self.fetcher.get(&self.url).await {
            Ok(fetched) => parse_jwks(&fetched.body, self.fetcher.limits.max_keys)
                .map(|set| (set, fetched.max_age)),
            Err(e) => Err(e),
        };
        let now = Instant::now();
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((mut set, max_age)) => {
                if let Some(prev) = &st.keys {
                    set.inherit_ids(prev);
                }
                let ttl = max_age
                    .unwrap_or(self.policy.default_ttl)
                    .clamp(self.policy.min_ttl, self.policy.max_ttl);
                let set = Arc::new(set);
                tracing::debug!(
                    target: "m2m_guard::keys",
                    url = %self.url,
                    keys = set.len(),
                    skipped = set.skipped,
                    ttl_secs = ttl.as_secs(),
                    "key set refreshed"
                );
                st.keys = Some(set.clone());
                st.refresh_at = now + ttl * 3 / 4;
                st.usable_until = now + ttl + self.policy.max_stale;
                st.failures = 0;
                st.next_attempt = now;
                Ok(set)
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                let backoff = backoff(&self.policy, st.failures);
                st.next_attempt = now + backoff;
                tracing::warn!(
                    target: "m2m_guard::keys",
                    url = %self.url,
                    error = %e,
                    failures = st.failures,
                    retry_in_ms = backoff.as_millis() as u64,
                    has_keys = st.keys.is_some(),
                    "key set fetch failed"
                );
                Err(Arc::new(e))
            }
        }
    }
}

/// Exponential backoff with full jitter in its upper half.
fn backoff(policy: &RefreshPolicy, failures: u32) -> Duration {
    let exp = policy
        .backoff_min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(policy.backoff_max);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RefreshPolicy::default();
        for _ in 0..100 {
            let b1 = backoff(&p, 1);
            assert!(b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1));
            let b4 = backoff(&p, 4);
            assert!(b4 >= Duration::from_secs(4) && b4 <= Duration::from_secs(8));
            assert!(backoff(&p, 1000) <= p.backoff_max);
        }
    }
}
