//! The fleet: what every replica of an API must know at once, kept in
//! Redis (or a wire-compatible server such as Valkey). Feature `redis`.
//!
//! - **Revocations** ([`Fleet::revoke`]): every replica loads the whole
//!   list at start and follows changes on a Redis stream, so a revocation
//!   reaches all of them within a second; requests check it in memory and
//!   never wait on Redis.
//! - **A shared DPoP replay store** ([`Fleet::replay_store`]): a proof
//!   replayed against another replica is refused.
//! - **Warm starts** (on with [`FleetBuilder::warm_start`] and a shared
//!   secret): each replica publishes its last good key set per issuer,
//!   authenticated; a replica that starts while the issuer is down uses it,
//!   within the same `max_stale` rules as keys of its own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use m2m_guard::fleet::Fleet;
//! use m2m_guard::{Dpop, Issuer, M2mAuthLayer, Revocation, Verifier};
//!
//! let fleet = Fleet::builder("redis://redis.internal:6379").build()?;
//! let verifier = Verifier::builder()
//!     .issuer(Issuer::new("https://acme.kinde.com").audience("https://api.acme.com"))
//!     .fleet(&fleet)
//!     .build()
//!     .await?;
//! let auth = M2mAuthLayer::new(verifier)
//!     .dpop(Dpop::new("https://api.acme.com").replay_store(fleet.replay_store()));
//!
//! // Elsewhere (an operator tool, an admin endpoint): every replica refuses
//! // the client's tokens issued so far within a second.
//! fleet.revoke(Revocation::client("https://acme.kinde.com", "billing-sync")).await?;
//! # Ok(()) }
//! ```
//!
//! # Data model
//!
//! Under a key prefix (default `m2m-guard`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:revocations` | hash | one field per revoked issuer + kind + value (a JSON array), the revocation as JSON: `kind`, `issuer`, `value`, `before`, `expires_at` (unix seconds) |
//! | `{prefix}:revocations:expiry` | sorted set | the same fields, scored by `expires_at`; expired rows are removed with every revocation |
//! | `{prefix}:revocations:log` | stream | one entry per change (field `revocation`), capped near 100,000 entries; replicas follow it with `XREAD BLOCK` |
//! | `{prefix}:dpop:{digest}` | string | a DPoP proof seen (`SET NX PX`), for its lifetime |
//! | `{prefix}:keys:{digest}` | string | with warm starts on: an issuer's last good key set (`doc`: JSON with `jwks`, `fetched_at`, `fresh_for`, `stale_for`; `mac`: its HMAC-SHA-256 under the fleet's secret), expiring with its `max_stale` |
//!
//! A revocation is written by one Lua script (hash, sorted set and stream
//! together), so no replica sees one without the others. After any
//! reconnect a replica reloads the whole hash before following the stream
//! again: a change made while it was away is never missed. With Redis
//! persistence (AOF or RDB) revocations survive a Redis restart; a replica
//! restart loads them again.

use futures_util::FutureExt as _;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, instant_after};
use crate::dpop::{ReplayStore, ReplayStoreError};
use crate::keystore::{KeyMirror, SharedKeys};
use crate::revocation::{MAX_ENTRIES, Revocation, Revocations, WhenStale};

/// The revocation write: newer `before` wins, expired rows go, the change
/// is logged; refused past the bound (`-1`).
const REVOKE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
for _, f in ipairs(expired) do redis.call('HDEL', KEYS[1], f) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, o = pcall(cjson.decode, old)
  if ok and type(o) == 'table' and tonumber(o.before) and tonumber(o.before) >= tonumber(ARGV[5]) then
    return old
  end
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', 'revocation', ARGV[2])
return ARGV[2]
";

/// Something the fleet could not do. Never shows the Redis password.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The configuration is invalid.
    #[error("invalid fleet configuration: {0}")]
    Config(String),
    /// Redis could not be reached or failed.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The revocation list holds as many revocations as it may.
    #[error("the revocation list is full ({MAX_ENTRIES} revocations)")]
    Full,
}

fn unavailable(e: &redis::RedisError) -> FleetError {
    // The error text of a command or a connection, never the URL.
    FleetError::Unavailable(crate::text::remote(&e.to_string(), 300))
}

/// Configures a [`Fleet`]. Its `Debug` never shows the Redis password.
#[derive(Clone)]
pub struct FleetBuilder {
    url: String,
    prefix: String,
    retention: Duration,
    max_staleness: Duration,
    when_stale: WhenStale,
    timeout: Duration,
    warm_start: Option<[u8; 32]>,
}

impl fmt::Debug for FleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBuilder")
            .field("redis", &endpoint_of(&self.url))
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .field("max_staleness", &self.max_staleness)
            .field("when_stale", &self.when_stale)
            .field("timeout", &self.timeout)
            .field("warm_start", &self.warm_start.is_some())
            .finish()
    }
}

impl FleetBuilder {
    /// The key prefix, to share one Redis among several APIs. Defaults to
    /// `m2m-guard`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a revocation is kept past its `before`: at least the
    /// longest lifetime of your issuers' tokens. Defaults to 24 hours.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long the list may go without a confirmed sync before it counts
    /// as stale, and what the verifier does then. Defaults to 60 s and
    /// [`WhenStale::KeepServing`]: an outage of Redis is not an outage of
    /// the API, and every revocation known so far still holds. Choose
    /// [`WhenStale::Refuse`] when accepting a token revoked during a Redis
    /// outage is worse than refusing every token meanwhile.
    ///
    /// Either way a replica answers 503 until its first sync: one started
    /// while Redis is down does not serve without the list.
    pub fn when_stale(mut self, max_staleness: Duration, policy: WhenStale) -> Self {
        self.max_staleness = max_staleness;
        self.when_stale = policy;
        self
    }

    /// The time limit of one Redis command (a DPoP replay check, a
    /// revocation write) and of a connection attempt. Defaults to 500 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Turn on warm starts: key sets this replica fetches are published,
    /// and a replica that cannot reach an issuer and never loaded its keys
    /// uses the set a sibling published. Off by default, and on only with
    /// a secret every replica shares (at least 32 bytes, e.g. from your
    /// secret store): published sets carry an HMAC under it, so write
    /// access to Redis alone cannot make a replica trust someone else's
    /// keys. A shorter secret fails [`FleetBuilder::build`].
    pub fn warm_start(mut self, secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        self.warm_start = Some(if secret.len() < 32 {
            [0; 32]
        } else {
            crate::dpop::sha256(secret)
        });
        self
    }

    /// Check the configuration and start following the revocation list in
    /// the background (on the current Tokio runtime). Redis need not be up:
    /// the replica connects, and reconnects, on its own, with backoff.
    ///
    /// # Errors
    /// [`FleetError::Config`] for an invalid URL or setting.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn build(self) -> Result<Fleet, FleetError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| FleetError::Config("the Redis URL is not valid".into()))?;
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self.prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(FleetError::Config(
                "the key prefix must be 1 to 64 visible ASCII characters".into(),
            ));
        }
        let range = |name: &str, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                Err(FleetError::Config(format!(
                    "{name} {d:?} is out of range ({min:?} ..= {max:?})"
                )))
            } else {
                Ok(())
            }
        };
        const SEC: Duration = Duration::from_secs(1);
        range("retention", self.retention, 60 * SEC, 366 * 24 * 3600 * SEC)?;
        range(
            "max_staleness",
            self.max_staleness,
            SEC,
            7 * 24 * 3600 * SEC,
        )?;
        range("timeout", self.timeout, Duration::from_millis(10), 60 * SEC)?;
        if self.warm_start == Some([0; 32]) {
            return Err(FleetError::Config(
                "the warm-start secret must be at least 32 bytes".into(),
            ));
        }
        let revocations = Revocations::synced(self.retention, self.max_staleness, self.when_stale);
        let (alive, stopped) = tokio::sync::watch::channel(());
        let inner = Arc::new(Inner {
            redis: Redis {
                client,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                next_attempt: Mutex::new(Instant::now()),
                failures: Mutex::new(0),
                timeout: self.timeout,
            },
            keys: Keys::new(&self.prefix),
            revocations: revocations.clone(),
            retention: self.retention,
            warm_start: self.warm_start,
            endpoint: endpoint_of(&self.url),
        });
        tokio::spawn(follow(inner.clone(), stopped));
        Ok(Fleet {
            inner,
            _alive: Arc::new(alive),
        })
    }
}

/// `host:port` of a Redis URL, for Debug: never the password.
fn endpoint_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379))))
        .unwrap_or_else(|| "redis".into())
}

struct Keys {
    revocations: String,
    expiry: String,
    log: String,
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            revocations: format!("{prefix}:revocations"),
            expiry: format!("{prefix}:revocations:expiry"),
            log: format!("{prefix}:revocations:log"),
            prefix: prefix.to_owned(),
        }
    }
}

/// One lazily (re)connected multiplexed connection. Callers arriving during
/// a connection attempt wait for it (at most the timeout); while attempts
/// back off after a failure, they fail at once.
struct Redis {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
    next_attempt: Mutex<Instant>,
    failures: Mutex<u32>,
    timeout: Duration,
}

const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl Redis {
    fn config(&self, response: Option<Duration>) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(response)
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn backing_off(&self) -> Result<(), FleetError> {
        let next = *self.next_attempt.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() < next {
            return Err(FleetError::Unavailable(
                "not connected (reconnecting with backoff)".into(),
            ));
        }
        Ok(())
    }

    async fn connection(&self) -> Result<MultiplexedConnection, FleetError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        self.backing_off()?;
        // One attempt at a time; those who arrive meanwhile take its result.
        let _gate = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        self.backing_off()?;
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config(Some(self.timeout)))
            .await
        {
            Ok(c) => {
                *self.failures.lock().unwrap_or_else(|e| e.into_inner()) = 0;
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                *failures = failures.saturating_add(1);
                *self.next_attempt.lock().unwrap_or_else(|e| e.into_inner()) =
                    instant_after(Instant::now(), BACKOFF.delay(*failures));
                Err(unavailable(&e))
            }
        }
    }

    /// Run `f` on the connection; a broken connection is dropped so the
    /// next call reconnects.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // One bound for the connection (waited for or made) and the command.
        let call = async {
            let conn = self.connection().await.map_err(Err)?;
            f(conn).await.map_err(Ok)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Err(not_connected))) => Err(not_connected),
            Ok(Err(Ok(e))) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err(unavailable(&e))
            }
            Err(_) => {
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Err(FleetError::Unavailable(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

struct Inner {
    redis: Redis,
    keys: Keys,
    revocations: Revocations,
    retention: Duration,
    /// The key of published key sets' HMAC, when warm starts are on.
    warm_start: Option<[u8; 32]>,
    endpoint: String,
}

/// A connection to the fleet's Redis: revocations, the shared replay
/// store, warm starts. Cheap to clone. See the [module docs](self).
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
    /// Dropped with the last handle (a verifier that joined holds one): the
    /// follower stops and its connection closes.
    _alive: Arc<tokio::sync::watch::Sender<()>>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("redis", &self.inner.endpoint)
            .field("prefix", &self.inner.keys.prefix)
            .field("revocations", &self.inner.revocations.len())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Start configuring a fleet on the Redis at `url`
    /// (`redis://[:password@]host[:port][/db]`; this build has no TLS to
    /// Redis: keep it on a private network, or use a TLS sidecar).
    pub fn builder(url: impl Into<String>) -> FleetBuilder {
        FleetBuilder {
            url: url.into(),
            prefix: "m2m-guard".into(),
            retention: Duration::from_secs(24 * 3600),
            max_staleness: Duration::from_secs(60),
            when_stale: WhenStale::KeepServing,
            timeout: Duration::from_millis(500),
            warm_start: None,
        }
    }

    /// The revocation list this replica keeps in step with Redis; what
    /// [`VerifierBuilder::fleet`](crate::VerifierBuilder::fleet) gives the
    /// verifier.
    pub fn revocations(&self) -> Revocations {
        self.inner.revocations.clone()
    }

    /// Revoke on every replica: written to Redis, applied here at once,
    /// followed by the others within a second. A later `before` for the
    /// same client, tenant or `jti` replaces an earlier one; an earlier one
    /// changes nothing. Returns the revocation in force for that row (with
    /// its expiry): this one, or the later one already stored.
    ///
    /// # Errors
    /// [`FleetError::Config`] for an invalid revocation,
    /// [`FleetError::Unavailable`] when Redis cannot be reached (nothing
    /// was revoked), [`FleetError::Full`].
    pub async fn revoke(&self, revocation: Revocation) -> Result<Revocation, FleetError> {
        revocation.validate().map_err(FleetError::Config)?;
        let now = crate::claims::now_secs();
        let r = revocation.recorded(now, self.inner.retention);
        let keys = &self.inner.keys;
        let script = redis::Script::new(REVOKE);
        let (id, json) = (r.id(), r.to_json());
        let outcome: redis::Value = self
            .inner
            .redis
            .run(|mut c| async move {
                script
                    .key(&keys.revocations)
                    .key(&keys.expiry)
                    .key(&keys.log)
                    .arg(&id)
                    .arg(&json)
                    .arg(r.expires_at)
                    .arg(now)
                    .arg(r.before)
                    .arg(MAX_ENTRIES)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        // The row in force: this one, or one with a later `before` already there.
        let stored = match outcome {
            redis::Value::Int(i) if i < 0 => return Err(FleetError::Full),
            v => redis::from_redis_value::<String>(v)
                .ok()
                .and_then(|s| Revocation::from_json(&s))
                .ok_or_else(|| {
                    FleetError::Unavailable("an unexpected answer to a revocation".into())
                })?,
        };
        let changed = stored == r;
        // Here at once (the follower will see it again: applying is idempotent).
        if let Err(e) = self.inner.revocations.apply(stored.clone(), now) {
            tracing::warn!(target: "m2m_guard::fleet", error = %e, "revocation not applied locally");
        }
        tracing::info!(
            target: "m2m_guard::fleet",
            kind = stored.kind(),
            issuer = %crate::text::remote(stored.issuer(), 200),
            value = %crate::text::remote(stored.value(), 200),
            before = stored.before,
            changed,
            "revoked"
        );
        Ok(stored)
    }

    /// Every revocation stored in Redis and not yet expired, read from
    /// Redis itself (not this replica's copy).
    ///
    /// # Errors
    /// [`FleetError::Unavailable`] when Redis cannot be reached.
    pub async fn list(&self) -> Result<Vec<Revocation>, FleetError> {
        let key = self.inner.keys.revocations.clone();
        let rows: Vec<(String, String)> = self
            .inner
            .redis
            .run(|mut c| async move { c.hgetall(key).await })
            .await?;
        let now = crate::claims::now_secs();
        let mut all: Vec<Revocation> = rows
            .iter()
            .filter_map(|(_, v)| Revocation::from_json(v))
            .filter(|r| r.expires_at > now)
            .collect();
        all.sort_by(|a, b| {
            (a.issuer(), a.kind(), a.value()).cmp(&(b.issuer(), b.kind(), b.value()))
        });
        Ok(all)
    }

    /// A DPoP [`ReplayStore`] shared by every replica on this Redis
    /// (`SET NX PX`): a proof replayed against another replica is refused.
    /// When Redis does not answer within the fleet's timeout the request
    /// gets 503 (`replay_check_unavailable`), never a pass.
    ///
    /// Run that Redis with `maxmemory-policy noeviction` (Redis's default):
    /// the proofs' keys are the fleet's only keys with a TTL, so under
    /// memory pressure a `volatile-*` policy evicts them first, and an
    /// evicted proof can be replayed; with `noeviction` a full Redis fails
    /// the write, which is a 503.
    pub fn replay_store(&self) -> RedisReplayStore {
        RedisReplayStore {
            fleet: self.clone(),
        }
    }

    /// The key mirror for warm starts, if on.
    pub(crate) fn key_mirror(&self) -> Option<Arc<dyn KeyMirror>> {
        self.inner
            .warm_start
            .map(|_| Arc::new(self.clone()) as Arc<dyn KeyMirror>)
    }
}

/// A DPoP [`ReplayStore`] on the fleet's Redis; see [`Fleet::replay_store`].
#[derive(Clone, Debug)]
pub struct RedisReplayStore {
    fleet: Fleet,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ReplayStore for RedisReplayStore {
    fn check_and_insert(
        &self,
        key: [u8; 32],
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayStoreError>> + Send + '_>> {
        let name = format!("{}:dpop:{}", self.fleet.inner.keys.prefix, hex(&key));
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Box::pin(async move {
            let set: Option<String> = self
                .fleet
                .inner
                .redis
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(&name)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(|e| ReplayStoreError::Unavailable(e.to_string()))?;
            Ok(set.is_some())
        })
    }
}

impl KeyMirror for Fleet {
    fn publish(
        &self,
        source: String,
        keys: SharedKeys,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let Some(secret) = self.inner.warm_start else {
                return;
            };
            let name = self.mirror_key(&source);
            let ttl = keys.fresh_for.saturating_add(keys.stale_for).max(1);
            let doc = keys.to_json();
            let mac = crate::dpop::hmac_sha256(&secret, doc.as_bytes());
            let doc = serde_json::json!({"doc": doc, "mac": hex(&mac)}).to_string();
            let result = self
                .inner
                .redis
                .run(|mut c| async move { c.set_ex::<_, _, ()>(name, doc, ttl).await })
                .await;
            if let Err(e) = result {
                tracing::debug!(target: "m2m_guard::fleet", error = %e, "key set not published");
            }
        })
    }

    fn lookup(
        &self,
        source: String,
    ) -> Pin<Box<dyn Future<Output = Option<SharedKeys>> + Send + '_>> {
        Box::pin(async move {
            let name = self.mirror_key(&source);
            let doc: Option<String> = self
                .inner
                .redis
                .run(|mut c| async move { c.get(name).await })
                .await
                .map_err(|e| {
                    tracing::warn!(target: "m2m_guard::fleet", error = %e, "no warm start: Redis unavailable");
                })
                .ok()
                .flatten();
            let secret = self.inner.warm_start?;
            let outer = crate::json::parse_object(doc?.as_bytes())?;
            let (Some(serde_json::Value::String(inner)), Some(serde_json::Value::String(mac))) =
                (outer.get("doc"), outer.get("mac"))
            else {
                return None;
            };
            let expected = hex(&crate::dpop::hmac_sha256(&secret, inner.as_bytes()));
            // Compared in full, whatever differs first.
            let same = expected.len() == mac.len()
                && expected
                    .bytes()
                    .zip(mac.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if !same {
                tracing::warn!(target: "m2m_guard::fleet", "a published key set failed its HMAC: not used");
                return None;
            }
            SharedKeys::from_json(inner)
        })
    }
}

impl Fleet {
    fn mirror_key(&self, source: &str) -> String {
        format!(
            "{}:keys:{}",
            self.inner.keys.prefix,
            crate::dpop::sha256_b64(source.as_bytes())
        )
    }
}

/// Follow the revocation list until every handle is dropped: load it
/// whole, follow the stream, and after any failure reconnect (with
/// backoff) and load it whole again.
async fn follow(inner: Arc<Inner>, mut stopped: tokio::sync::watch::Receiver<()>) {
    let mut failures = 0u32;
    loop {
        let (error, loaded) = {
            let run = std::panic::AssertUnwindSafe(follow_once(&inner)).catch_unwind();
            let stop = stopped.changed();
            futures_util::pin_mut!(run, stop);
            match futures_util::future::select(run, stop).await {
                futures_util::future::Either::Left((Ok(ended), _)) => ended,
                futures_util::future::Either::Left((Err(_), _)) => {
                    ("the follower panicked".to_owned(), false)
                }
                // Every handle was dropped.
                futures_util::future::Either::Right(_) => return,
            }
        };
        failures = if loaded {
            1
        } else {
            failures.saturating_add(1)
        };
        let wait = BACKOFF.delay(failures);
        tracing::warn!(
            target: "m2m_guard::fleet",
            error = %error,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "revocation list: lost Redis, will reload"
        );
        let sleep = tokio::time::sleep(wait);
        let stop = stopped.changed();
        futures_util::pin_mut!(sleep, stop);
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(sleep, stop).await
        {
            return;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One connection's life: returns why it ended, and whether the list was
/// loaded on it.
async fn follow_once(inner: &Inner) -> (String, bool) {
    match follow_connection(inner).await {
        Ok(never) => match never {},
        Err((error, loaded)) => (error, loaded),
    }
}

enum Never {}

async fn follow_connection(inner: &Inner) -> Result<Never, (String, bool)> {
    let fail = |e: &redis::RedisError, loaded: bool| (unavailable(e).to_string(), loaded);
    let redis = &inner.redis;
    // Its own connection: a blocked XREAD must not hold up other commands.
    let mut conn = match redis
        .client
        .get_multiplexed_async_connection_with_config(
            &redis
                .config(Some(Duration::from_secs(30)))
                .set_connection_timeout(Some(redis.timeout.max(Duration::from_secs(1)))),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return Err(fail(&e, false)),
    };
    let keys = &inner.keys;
    // Where the stream is now, then the whole list: changes in between are
    // read again from the stream (applying is idempotent).
    let last: redis::streams::StreamRangeReply =
        match conn.xrevrange_count(&keys.log, "+", "-", 1).await {
            Ok(r) => r,
            Err(e) => return Err(fail(&e, false)),
        };
    let mut last_id = last
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |s| s.id.clone());
    let rows: Vec<(String, String)> = match conn.hgetall(&keys.revocations).await {
        Ok(r) => r,
        Err(e) => return Err(fail(&e, false)),
    };
    let mut all = Vec::with_capacity(rows.len());
    let mut invalid = 0usize;
    for (_, v) in &rows {
        match Revocation::from_json(v) {
            Some(r) => all.push(r),
            None => invalid += 1,
        }
    }
    if invalid > 0 {
        tracing::warn!(target: "m2m_guard::fleet", invalid, "revocation rows that do not parse were skipped");
    }
    let count = all.len();
    if let Err(e) = inner
        .revocations
        .replace_all(all, crate::claims::now_secs())
    {
        return Err((e, false));
    }
    inner.revocations.mark_synced(now_ms());
    tracing::info!(target: "m2m_guard::fleet", revocations = count, "revocation list loaded");
    let opts = redis::streams::StreamReadOptions::default()
        .block(1000)
        .count(1000);
    let mut pruned = Instant::now();
    loop {
        let reply: Option<redis::streams::StreamReadReply> =
            match conn.xread_options(&[&keys.log], &[&last_id], &opts).await {
                Ok(r) => r,
                Err(e) => return Err(fail(&e, true)),
            };
        let now = crate::claims::now_secs();
        for entry in reply.iter().flat_map(|r| &r.keys).flat_map(|k| &k.ids) {
            last_id.clone_from(&entry.id);
            let parsed = entry
                .map
                .get("revocation")
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .and_then(|s| Revocation::from_json(&s));
            match parsed {
                Some(r) => {
                    if let Err(e) = inner.revocations.apply(r, now) {
                        return Err((e, true));
                    }
                }
                None => {
                    tracing::warn!(target: "m2m_guard::fleet", "a revocation change that does not parse was skipped")
                }
            }
        }
        // An answer, even an empty one after the block, proves the list current.
        inner.revocations.mark_synced(now_ms());
        if pruned.elapsed() > Duration::from_secs(60) {
            inner.revocations.prune(now);
            pruned = Instant::now();
        }
    }
}
