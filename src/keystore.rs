//! One issuer's key set: cached, refreshed in the background, refetched
//! (single-flight, rate-limited) on an unknown `kid`, and kept when the issuer
//! is down for at most `max_stale`.
//!
//! Locks are `std::sync` locks held for a few instructions, never across an
//! `.await`: a request only ever waits on the shared fetch future itself, and
//! only when it cannot be answered without new keys.

use futures_util::FutureExt as _;
use reqwest::Url;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, instant_after};
use crate::clock::Clock;
use crate::error::{FetchError, error_chain};
use crate::fetch::Fetcher;
use crate::flight::{Flight, Lost, SingleFlight};
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
    pub(crate) backoff: Backoff,
    /// Where good key sets are shared with sibling replicas (warm starts).
    pub(crate) mirror: Option<Mirror>,
    /// The configured issuer: the `issuer` label of metrics and health.
    pub(crate) label: Arc<str>,
    /// Whether this store sets the issuer's key-set gauges (not when the
    /// issuer has a key set per tenant: they would overwrite each other).
    pub(crate) gauges: bool,
}

/// A key set as shared between replicas: the JWKS document as fetched, when
/// (unix seconds), and how long it was fresh and may then be stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedKeys {
    pub(crate) jwks: String,
    pub(crate) fetched_at: u64,
    pub(crate) fresh_for: u64,
    pub(crate) stale_for: u64,
}

// Used by the fleet.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl SharedKeys {
    pub(crate) fn to_json(&self) -> String {
        json!({
            "jwks": self.jwks,
            "fetched_at": self.fetched_at,
            "fresh_for": self.fresh_for,
            "stale_for": self.stale_for,
        })
        .to_string()
    }

    /// Parsed strictly: it comes from the network.
    pub(crate) fn from_json(text: &str) -> Option<SharedKeys> {
        let doc = crate::json::parse_object(text.as_bytes())?;
        Some(SharedKeys {
            jwks: match doc.get("jwks")? {
                Value::String(s) => s.clone(),
                _ => return None,
            },
            fetched_at: doc.get("fetched_at")?.as_u64()?,
            fresh_for: doc.get("fresh_for")?.as_u64()?,
            stale_for: doc.get("stale_for")?.as_u64()?,
        })
    }
}

/// Shares key sets between replicas (the `redis` feature's fleet).
pub(crate) trait KeyMirror: Send + Sync + 'static {
    /// Publish this store's last good key set (best effort).
    fn publish(
        &self,
        source: String,
        keys: SharedKeys,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The key set a sibling published, if any.
    fn lookup(
        &self,
        source: String,
    ) -> Pin<Box<dyn Future<Output = Option<SharedKeys>> + Send + '_>>;
}

/// A [`KeyMirror`] in a policy.
#[derive(Clone)]
pub(crate) struct Mirror(pub(crate) Arc<dyn KeyMirror>);

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            default_ttl: Duration::from_secs(10 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            max_stale: Duration::from_secs(12 * 60 * 60),
            unknown_kid_cooldown: Duration::from_secs(30),
            backoff: Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            mirror: None,
            label: Arc::from(""),
            gauges: true,
        }
    }
}

pub(crate) type SharedFetch = Flight<Arc<KeySet>, Arc<FetchError>>;

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// A configured JWKS URL.
    Jwks(Url),
    /// The `jwks_uri` of the metadata found at `base` (OpenID Connect, then
    /// RFC 8414), whose `issuer` must equal `issuer` (`base` itself, except
    /// for a multi-tenant issuer's tenant-independent metadata); discovered
    /// on the first fetch and again after any failed fetch (an issuer may
    /// move it).
    Discovery { base: String, issuer: String },
}

struct State {
    keys: Option<Arc<KeySet>>,
    /// Start a background refresh from here on (3/4 of the TTL).
    refresh_at: Instant,
    /// Past this the keys are no longer used.
    usable_until: Instant,
    /// No fetch before this (backoff after failures).
    next_attempt: Instant,
    /// Consecutive failed fetches; 0 when the last fetch succeeded.
    failures: u32,
    last_kid_refetch: Option<Instant>,
    /// When a fetch last succeeded.
    last_ok: Option<Instant>,
    /// When the keys in use were fetched (here, or by a sibling).
    fetched: Option<Instant>,
    /// The keys in use are fresh until this, then stale until `usable_until`.
    fresh_until: Instant,
    /// The last failure, sanitised, for health.
    last_error: Option<String>,
}

/// What a token whose `kid` is not in the current keys should get.
pub(crate) enum KidMiss {
    /// A newer key set than the one the caller looked in: look again.
    Newer(Arc<KeySet>),
    /// The fetch started (or joined) for it: await it and look again.
    Refetch(SharedFetch),
    /// The last fetch succeeded within the unknown-kid cooldown: the key set
    /// is fresh and really lacks the kid.
    Fresh,
    /// The last fetch failed and fetches are backing off for this long: the
    /// token may be good, we cannot tell.
    Unavailable(Duration),
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
    source: KeySource,
    /// The key-set URL in use: the configured one, or the last discovered
    /// one (`None` until discovery first succeeds).
    jwks_url: RwLock<Option<Url>>,
    /// With discovery: a fetch failed, so discover again before the next
    /// one (the issuer may have moved its keys); the last URL is still used
    /// when discovery itself fails.
    rediscover: AtomicBool,
    fetcher: Arc<Fetcher>,
    policy: RefreshPolicy,
    state: RwLock<State>,
    flight: SingleFlight<Arc<KeySet>, Arc<FetchError>>,
    fetches: AtomicU64,
    clock: Clock,
    /// When the store was made, and, for a tenant's store
    /// ([`KeyStore::for_tenant`]), how many whole seconds after that a
    /// token its keys verified was last presented (a cache hit included):
    /// what a tenant's idleness is judged by. Written at most once a second;
    /// `None` for other stores, so their cache hits pay one branch.
    created: Instant,
    used_secs: Option<AtomicU64>,
}

/// One key store's state, for [`Verifier::health`](crate::Verifier::health).
#[derive(Debug, Clone)]
pub(crate) struct StoreHealth {
    pub(crate) loaded: bool,
    pub(crate) ever_loaded: bool,
    pub(crate) age: Option<Duration>,
    pub(crate) stale: bool,
    pub(crate) usable_for: Duration,
    pub(crate) last_error: Option<String>,
    pub(crate) next_attempt_in: Duration,
}

impl KeyStore {
    pub(crate) fn new(
        source: KeySource,
        fetcher: Arc<Fetcher>,
        policy: RefreshPolicy,
        clock: Clock,
    ) -> Self {
        let now = clock.now();
        let jwks_url = match &source {
            KeySource::Jwks(url) => Some(url.clone()),
            KeySource::Discovery { .. } => None,
        };
        KeyStore {
            source,
            jwks_url: RwLock::new(jwks_url),
            rediscover: AtomicBool::new(false),
            fetcher,
            policy,
            state: RwLock::new(State {
                keys: None,
                refresh_at: now,
                usable_until: now,
                next_attempt: now,
                failures: 0,
                last_kid_refetch: None,
                last_ok: None,
                fetched: None,
                fresh_until: now,
                last_error: None,
            }),
            flight: SingleFlight::default(),
            fetches: AtomicU64::new(0),
            clock,
            created: now,
            used_secs: None,
        }
    }

    /// A tenant's store: [`KeyStore::new`] that also notes when it was last
    /// used ([`KeyStore::last_used`]).
    pub(crate) fn for_tenant(
        source: KeySource,
        fetcher: Arc<Fetcher>,
        policy: RefreshPolicy,
        clock: Clock,
    ) -> Self {
        KeyStore {
            used_secs: Some(AtomicU64::new(0)),
            ..KeyStore::new(source, fetcher, policy, clock)
        }
    }

    /// When a token these keys verified was last presented (to the second;
    /// the store's making when none was, or when it is no tenant's store).
    pub(crate) fn last_used(&self) -> Instant {
        let secs = self
            .used_secs
            .as_ref()
            .map_or(0, |u| u.load(Ordering::Relaxed));
        instant_after(self.created, Duration::from_secs(secs))
    }

    /// Note that a token these keys verified was presented now: a
    /// signature they checked, or a cache hit on one. Only a verified token
    /// is a use, so forged tokens naming a tenant cannot keep its place in
    /// the [`TenantStores`](crate::tenant::TenantStores) table. A read, and
    /// a write only when the second has moved on (never back, however two
    /// requests race).
    pub(crate) fn mark_used(&self) {
        if self.used_secs.is_some() {
            self.mark_used_at(self.clock.now());
        }
    }

    /// [`Self::mark_used`], with the clock already read.
    fn mark_used_at(&self, now: Instant) {
        if let Some(used) = &self.used_secs {
            let secs = now.saturating_duration_since(self.created).as_secs();
            if used.load(Ordering::Relaxed) < secs {
                used.fetch_max(secs, Ordering::Relaxed);
            }
        }
    }

    /// A store already holding `set`, for unit tests.
    #[cfg(test)]
    pub(crate) fn preloaded(set: KeySet) -> Arc<KeyStore> {
        let fetcher = Fetcher::new(None, crate::fetch::FetchLimits::default()).unwrap();
        let url = Url::parse("https://keys.example/jwks").unwrap();
        let store = Arc::new(KeyStore::new(
            KeySource::Jwks(url),
            Arc::new(fetcher),
            RefreshPolicy::default(),
            Clock::default(),
        ));
        store.record(Ok((set, None))).unwrap();
        store
    }

    /// The key-set URL in use, once known.
    pub(crate) fn url(&self) -> Option<Url> {
        self.jwks_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// No fetch ever succeeded, and at least one failed.
    pub(crate) fn never_loaded(&self) -> bool {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.last_ok.is_none() && st.failures > 0
    }

    /// How many key-set fetches were started.
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The store's state now.
    pub(crate) fn health(&self) -> StoreHealth {
        let now = self.clock.now();
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let usable = st.keys.is_some() && now < st.usable_until;
        StoreHealth {
            loaded: usable,
            ever_loaded: st.keys.is_some(),
            age: st.fetched.map(|f| now.saturating_duration_since(f)),
            stale: usable && now >= st.fresh_until,
            usable_for: if usable {
                st.usable_until.saturating_duration_since(now)
            } else {
                Duration::ZERO
            },
            last_error: st.last_error.clone(),
            next_attempt_in: st.next_attempt.saturating_duration_since(now),
        }
    }

    /// Set the issuer's key-set gauges from the state.
    pub(crate) fn set_gauges(&self) {
        if self.policy.gauges {
            let h = self.health();
            crate::metrics::key_state(&self.policy.label, h.age, h.stale, h.usable_for);
        }
    }

    /// The keys a request may use now; starts a background refresh when due.
    pub(crate) fn snapshot(self: &Arc<Self>) -> Snapshot {
        self.with_keys(|keys, _| keys.clone())
            .map_or_else(|unusable| unusable, Snapshot::Ready)
    }

    /// Whether the keys a request may use now still hold the key instance
    /// `id` (a cached verdict's key): [`Self::snapshot`] without taking a
    /// handle on the set, so a cache hit touches no shared reference count.
    /// Starts a background refresh when due, as `snapshot` does.
    pub(crate) fn holds(self: &Arc<Self>, id: u64) -> bool {
        self.with_keys(|keys, now| {
            let held = keys.contains_id(id);
            if held {
                self.mark_used_at(now);
            }
            held
        })
        .unwrap_or(false)
    }

    /// `usable(keys, now)` when keys are usable now, else why not
    /// ([`Snapshot::NeedFetch`] or [`Snapshot::Unavailable`]); starts a
    /// background refresh when due.
    fn with_keys<T>(
        self: &Arc<Self>,
        usable: impl FnOnce(&Arc<KeySet>, Instant) -> T,
    ) -> Result<T, Snapshot> {
        let now = self.clock.now();
        let (snap, refresh) = {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            match &st.keys {
                Some(keys) if now < st.usable_until => (
                    Ok(usable(keys, now)),
                    now >= st.refresh_at && now >= st.next_attempt,
                ),
                _ if now >= st.next_attempt => (Err(Snapshot::NeedFetch), false),
                _ => (
                    Err(Snapshot::Unavailable(
                        st.next_attempt.saturating_duration_since(now),
                    )),
                    false,
                ),
            }
        };
        if refresh {
            // Routine refresh: the request goes on with the current keys.
            drop(self.refresh());
        }
        snap
    }

    /// How long a request waits for this store's fetches, in all: one
    /// fetch's discovery, RFC 8414 fallback, key set and a sibling's mirror
    /// may each take the fetch timeout, a request only that once.
    pub(crate) fn wait_limit(&self) -> Duration {
        self.fetcher.limits.timeout
    }

    /// How long until the next fetch may be attempted (at least one second).
    pub(crate) fn retry_after(&self) -> Duration {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.next_attempt
            .saturating_duration_since(self.clock.now())
            .max(Duration::from_secs(1))
    }

    /// What a token whose `kid` is missing from `seen` (the key set the
    /// caller looked in) gets. Unknown kids trigger at most one refetch per
    /// cooldown while fetches succeed; while they fail, the backoff alone
    /// paces them. Decided and started under one lock, so two callers never
    /// both see the cooldown without one of them seeing the fetch.
    pub(crate) fn on_unknown_kid(self: &Arc<Self>, seen: &Arc<KeySet>) -> KidMiss {
        let now = self.clock.now();
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = &st.keys
            && !Arc::ptr_eq(keys, seen)
        {
            // A fetch landed since the caller took its snapshot.
            return KidMiss::Newer(keys.clone());
        }
        if st.failures > 0 {
            if now < st.next_attempt {
                return KidMiss::Unavailable(st.next_attempt.saturating_duration_since(now));
            }
            st.last_kid_refetch = Some(now);
            crate::metrics::unknown_kid(&self.policy.label, "refetch");
            return KidMiss::Refetch(self.refresh());
        }
        if self.flight.is_running() {
            // Joining the fetch under way costs nothing.
            return KidMiss::Refetch(self.refresh());
        }
        match st.last_kid_refetch {
            // Fresh only if the refetch the cooldown stands for really
            // landed: one that never ran (no runtime, a runtime shutting
            // down) or was lost proves nothing about the kid.
            Some(t)
                if now.saturating_duration_since(t) < self.policy.unknown_kid_cooldown
                    && st.last_ok.is_some_and(|ok| ok >= t) =>
            {
                crate::metrics::unknown_kid(&self.policy.label, "refused_cooldown");
                KidMiss::Fresh
            }
            _ => {
                st.last_kid_refetch = Some(now);
                crate::metrics::unknown_kid(&self.policy.label, "refetch");
                KidMiss::Refetch(self.refresh())
            }
        }
    }

    /// Join the fetch in flight, or start one. The fetch runs on its own task,
    /// so it completes even if every caller gives up waiting.
    pub(crate) fn refresh(self: &Arc<Self>) -> SharedFetch {
        let this = Arc::clone(self);
        let (flight, started) = self.flight.join_or_start(
            move || async move { this.fetch_once().await },
            |lost| {
                Arc::new(match lost {
                    Lost::Panicked => FetchError::Panicked,
                    Lost::Cancelled => FetchError::Cancelled,
                })
            },
        );
        if started {
            self.fetches.fetch_add(1, Ordering::Relaxed);
        }
        flight
    }

    /// The key-set URL, discovering it first when needed.
    async fn resolve_url(&self) -> Result<Url, FetchError> {
        let (base, issuer, last) = match &self.source {
            KeySource::Jwks(url) => return Ok(url.clone()),
            KeySource::Discovery { base, issuer } => (base, issuer, self.url()),
        };
        if let Some(url) = &last
            && !self.rediscover.load(Ordering::Relaxed)
        {
            return Ok(url.clone());
        }
        match self.fetcher.discover(base, issuer).await {
            Ok(url) => {
                *self.jwks_url.write().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
                self.rediscover.store(false, Ordering::Relaxed);
                Ok(url)
            }
            // Discovery down, keys perhaps not: try the last known URL.
            Err(e) => last.ok_or(e),
        }
    }

    async fn load(&self) -> Result<(KeySet, Option<Duration>, bytes::Bytes), FetchError> {
        let url = self.resolve_url().await?;
        let fetched = self.fetcher.get(&url).await?;
        let set = parse_jwks(&fetched.body, self.fetcher.limits.max_keys)?;
        Ok((set, fetched.max_age, fetched.body.freeze()))
    }

    /// The TTL of a key set fetched with this `Cache-Control: max-age`.
    fn ttl(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.policy.default_ttl)
            .clamp(self.policy.min_ttl, self.policy.max_ttl)
    }

    /// This store's identity among replicas sharing key sets.
    fn mirror_name(&self) -> String {
        match &self.source {
            KeySource::Jwks(url) => format!("jwks {url}"),
            KeySource::Discovery { base, .. } => format!("discovery {base}"),
        }
    }

    /// Share a good key set with sibling replicas, in the background.
    fn publish(&self, body: &[u8], max_age: Option<Duration>) {
        let (Some(mirror), Ok(jwks)) = (&self.policy.mirror, std::str::from_utf8(body)) else {
            return;
        };
        let keys = SharedKeys {
            jwks: jwks.to_owned(),
            fetched_at: self.clock.wall_secs(),
            fresh_for: self.ttl(max_age).as_secs(),
            stale_for: self.policy.max_stale.as_secs(),
        };
        let (mirror, name) = (mirror.0.clone(), self.mirror_name());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { mirror.publish(name, keys).await });
        }
    }

    /// A store that never loaded keys and cannot fetch them: the key set a
    /// sibling published, checked as strictly as a fetched one and used
    /// only within the same fresh + `max_stale` window from when the
    /// sibling fetched it.
    async fn warm_start(&self) -> Option<(KeySet, Instant, Instant, Instant)> {
        let mirror = self.policy.mirror.as_ref()?;
        let shared = tokio::time::timeout(
            self.fetcher.limits.timeout,
            mirror.0.lookup(self.mirror_name()),
        )
        .await
        .ok()??;
        let now_wall = self.clock.wall_secs();
        // A key set from the future (a sibling's clock far ahead) is refused.
        if shared.fetched_at > now_wall.saturating_add(60)
            || shared.jwks.len() > self.fetcher.limits.max_bytes
        {
            return None;
        }
        let age = Duration::from_secs(now_wall.saturating_sub(shared.fetched_at));
        // Never longer than this store's own policy allows.
        let fresh = Duration::from_secs(shared.fresh_for).min(self.policy.max_ttl);
        let stale = Duration::from_secs(shared.stale_for).min(self.policy.max_stale);
        let left = (fresh + stale).checked_sub(age)?;
        let set = parse_jwks(shared.jwks.as_bytes(), self.fetcher.limits.max_keys).ok()?;
        let now = self.clock.now();
        let fetched = now.checked_sub(age).unwrap_or(now);
        let fresh_until = instant_after(now, fresh.saturating_sub(age));
        Some((set, instant_after(now, left), fetched, fresh_until))
    }

    async fn fetch_once(&self) -> Result<Arc<KeySet>, Arc<FetchError>> {
        // However this fetch ends before its outcome is recorded (a panic
        // anywhere below, the task dropped by a runtime shutting down), it
        // counts as a failed fetch: it backs off, and an unknown-kid refetch
        // that never landed cannot make the cooldown answer 401.
        let mut unrecorded = Unrecorded(Some(self));
        let started = std::time::Instant::now();
        // A panic while loading is a failed fetch like any other: it backs
        // off, so a panic that repeats cannot cost a fetch per request.
        let result = std::panic::AssertUnwindSafe(self.load())
            .catch_unwind()
            .await
            .unwrap_or(Err(FetchError::Panicked));
        let warm = match &result {
            Err(_)
                if self
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys
                    .is_none() =>
            {
                std::panic::AssertUnwindSafe(self.warm_start())
                    .catch_unwind()
                    .await
                    .unwrap_or(None)
            }
            _ => None,
        };
        // Past the last await: nothing can cancel the rest.
        unrecorded.0 = None;
        let took = Some(started.elapsed());
        let outcome = match result {
            Ok((set, max_age, body)) => {
                crate::metrics::key_fetch(&self.policy.label, "ok", took);
                let recorded = self.record(Ok((set, max_age)));
                if recorded.is_ok() {
                    self.publish(&body, max_age);
                }
                recorded
            }
            Err(e) => {
                crate::metrics::key_fetch(&self.policy.label, "error", took);
                let failed = self.record(Err(e));
                match warm {
                    Some((set, usable_until, fetched, fresh_until)) => {
                        crate::metrics::key_fetch(&self.policy.label, "warm_start", None);
                        Ok(self.record_warm(set, usable_until, fetched, fresh_until))
                    }
                    None => failed,
                }
            }
        };
        self.set_gauges();
        outcome
    }

    /// Use a sibling's key set until `usable_until`; fetches go on backing
    /// off and replace it as soon as one succeeds.
    fn record_warm(
        &self,
        set: KeySet,
        usable_until: Instant,
        fetched: Instant,
        fresh_until: Instant,
    ) -> Arc<KeySet> {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let set = Arc::new(set);
        tracing::warn!(
            target: "m2m_guard::keys",
            source = %self.source,
            keys = set.len(),
            usable_for_secs = usable_until.saturating_duration_since(self.clock.now()).as_secs(),
            "issuer unreachable: using the key set a sibling replica published"
        );
        st.keys = Some(set.clone());
        st.usable_until = usable_until;
        st.fetched = Some(fetched);
        st.fresh_until = fresh_until;
        st.refresh_at = self.clock.now();
        set
    }

    /// Record a fetch's outcome in the state.
    fn record(
        &self,
        result: Result<(KeySet, Option<Duration>), FetchError>,
    ) -> Result<Arc<KeySet>, Arc<FetchError>> {
        let now = self.clock.now();
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((mut set, max_age)) => {
                if let Some(prev) = &st.keys {
                    set.inherit_ids(prev);
                }
                let ttl = self.ttl(max_age);
                let set = Arc::new(set);
                tracing::debug!(
                    target: "m2m_guard::keys",
                    source = %self.source,
                    keys = set.len(),
                    skipped = set.skipped,
                    ttl_secs = ttl.as_secs(),
                    "key set refreshed"
                );
                st.keys = Some(set.clone());
                st.refresh_at = instant_after(now, ttl - ttl / 4);
                st.usable_until = instant_after(instant_after(now, ttl), self.policy.max_stale);
                st.failures = 0;
                st.next_attempt = now;
                st.last_ok = Some(now);
                st.fetched = Some(now);
                st.fresh_until = instant_after(now, ttl);
                st.last_error = None;
                Ok(set)
            }
            Err(e) => {
                if matches!(self.source, KeySource::Discovery { .. }) {
                    // Discover again next time: the issuer may have moved its keys.
                    self.rediscover.store(true, Ordering::Relaxed);
                }
                st.failures = st.failures.saturating_add(1);
                st.last_error = Some(crate::text::remote(&error_chain(&e), 300));
                let backoff = self.policy.backoff.delay(st.failures);
                st.next_attempt = instant_after(now, backoff);
                tracing::warn!(
                    target: "m2m_guard::keys",
                    source = %self.source,
                    error = %error_chain(&e),
                    failures = st.failures,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    has_keys = st.keys.is_some(),
                    "key set fetch failed"
                );
                Err(Arc::new(e))
            }
        }
    }
}

/// Records a failed fetch when dropped armed: the fetch's task was dropped
/// (runtime shutting down) before its outcome could be recorded.
struct Unrecorded<'a>(Option<&'a KeyStore>);

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.0.take() {
            // Armed only across the await: the task was dropped unfinished.
            drop(store.record(Err(FetchError::Cancelled)));
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Jwks(url) => write!(f, "{url}"),
            KeySource::Discovery { base, .. } => {
                write!(f, "discovery of {}", crate::text::remote(base, 200))
            }
        }
    }
}
