//! Revoking tokens before they expire: by client ("tokens of client X
//! issued before T", what a leaked secret needs), by tenant, or by `jti`.
//!
//! [`Revocations`] is the list a [`Verifier`](crate::Verifier) consults on
//! every request, token-cache hits included, in memory. Fill it yourself
//! ([`Revocations::revoke`]), or let the `redis` feature's
//! [`Fleet`](crate::fleet::Fleet) keep it in step across replicas.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::principal::Principal;
use crate::rejection::{Reason, Rejection};

/// The longest issuer, client id, tenant or `jti` a revocation may name.
pub(crate) const MAX_FIELD_BYTES: usize = 1024;

/// How many revocations a list holds at most.
pub(crate) const MAX_ENTRIES: usize = 1_000_000;

/// The latest moment a revocation may name (9999-12-31): stored values
/// come from the network, and `SystemTime` arithmetic must not overflow.
const MAX_TIME: u64 = 253_402_300_799;

/// What a revocation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Client,
    Tenant,
    Jti,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Client => "client",
            Target::Tenant => "tenant",
            Target::Jti => "jti",
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn parse(s: &str) -> Option<Target> {
        match s {
            "client" => Some(Target::Client),
            "tenant" => Some(Target::Tenant),
            "jti" => Some(Target::Jti),
            _ => None,
        }
    }
}

/// One revocation: the tokens of an issuer's client, or tenant, issued
/// before a moment (`iat` at or before it, to the second: a token issued in
/// the very second of a revocation is revoked too; a token without `iat`
/// cannot show it was issued after, so it is revoked too), or the one token
/// with a `jti`.
///
/// ```
/// use m2m_guard::Revocation;
/// use std::time::{Duration, SystemTime};
///
/// // A leaked client secret, rotated now: every token issued so far is dead.
/// let leaked = Revocation::client("https://acme.kinde.com", "billing-sync");
/// // A tenant offboarded an hour ago.
/// let gone = Revocation::tenant("https://acme.kinde.com", "org_123")
///     .issued_before(SystemTime::now() - Duration::from_secs(3600));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Revocation {
    pub(crate) target: Target,
    pub(crate) issuer: String,
    pub(crate) value: String,
    /// Unix seconds: tokens issued before this are revoked (jti: any).
    pub(crate) before: u64,
    /// Unix seconds: past this no token it could match is valid any more;
    /// set when the revocation is recorded.
    pub(crate) expires_at: u64,
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("kind", &self.target.as_str())
            .field("issuer", &crate::text::remote(&self.issuer, 200))
            .field("value", &crate::text::remote(&self.value, 200))
            .field("before", &self.before)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Revocation {
    fn new(target: Target, issuer: String, value: String) -> Self {
        Revocation {
            target,
            issuer,
            value,
            before: crate::claims::now_secs(),
            expires_at: 0,
        }
    }

    /// The tokens of client `client_id` (the verified client id) of
    /// `issuer` (the token's exact `iss`), issued before now.
    pub fn client(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::new(Target::Client, issuer.into(), client_id.into())
    }

    /// The tokens of tenant / org `tenant` of `issuer`, issued before now.
    pub fn tenant(issuer: impl Into<String>, tenant: impl Into<String>) -> Self {
        Self::new(Target::Tenant, issuer.into(), tenant.into())
    }

    /// The token of `issuer` with this `jti`.
    pub fn jti(issuer: impl Into<String>, jti: impl Into<String>) -> Self {
        Self::new(Target::Jti, issuer.into(), jti.into())
    }

    /// Revoke the tokens issued before `moment` instead of now: tokens
    /// issued later (after a secret rotation) stay valid. Meaningless for a
    /// `jti`.
    #[must_use]
    pub fn issued_before(mut self, moment: SystemTime) -> Self {
        self.before = unix_secs(moment).min(MAX_TIME);
        self
    }

    /// `client`, `tenant` or `jti`.
    pub fn kind(&self) -> &'static str {
        self.target.as_str()
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id, tenant or `jti`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Tokens issued before this are revoked.
    pub fn before(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.before)
    }

    /// When the revocation is dropped: no token it matches can still be
    /// valid then. `UNIX_EPOCH` before it is recorded.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }

    /// Checked before it is recorded: bounded, non-empty fields.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, v) in [("issuer", &self.issuer), (self.kind(), &self.value)] {
            if v.is_empty() || v.len() > MAX_FIELD_BYTES || v.chars().any(char::is_control) {
                return Err(format!(
                    "a revocation's {name} must be 1 to {MAX_FIELD_BYTES} bytes without control characters"
                ));
            }
        }
        Ok(())
    }

    /// The revocation with its expiry set: `retention` past `before` (a
    /// `jti`'s token, whenever it was issued, within `retention` of now).
    pub(crate) fn recorded(mut self, now: u64, retention: Duration) -> Self {
        let from = match self.target {
            Target::Jti => now.max(self.before),
            _ => self.before,
        };
        self.expires_at = from.saturating_add(retention.as_secs()).min(MAX_TIME);
        self
    }

    /// The key of its row: one row per issuer, kind and value.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn id(&self) -> String {
        json!([self.target.as_str(), self.issuer, self.value]).to_string()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn to_json(&self) -> String {
        json!({
            "kind": self.target.as_str(),
            "issuer": self.issuer,
            "value": self.value,
            "before": self.before,
            "expires_at": self.expires_at,
        })
        .to_string()
    }

    /// Parse a stored revocation strictly (it comes from the network).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_json(text: &str) -> Option<Revocation> {
        if text.len() > 4 * MAX_FIELD_BYTES {
            return None;
        }
        let doc = crate::json::parse_object(text.as_bytes())?;
        let str_of = |k: &str| match doc.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let time = |k: &str| doc.get(k)?.as_u64().filter(|t| *t <= MAX_TIME);
        let r = Revocation {
            target: Target::parse(&str_of("kind")?)?,
            issuer: str_of("issuer")?,
            value: str_of("value")?,
            before: time("before")?,
            expires_at: time("expires_at")?,
        };
        r.validate().ok()?;
        Some(r)
    }
}

/// What a verifier does when the list may be out of date: its source (the
/// fleet's Redis) has not answered for longer than the staleness bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenStale {
    /// Keep verifying with the last list (the default): every revocation
    /// known so far still holds, and an outage of the revocation store is
    /// not an outage of the API. Revocations made meanwhile arrive once the
    /// store is back.
    #[default]
    KeepServing,
    /// Answer 503 (`revocations_unavailable`) until the list is current
    /// again: no token is accepted that might have been revoked since.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    before: u64,
    expires_at: u64,
}

#[derive(Debug, Default)]
struct IssuerEntries {
    clients: HashMap<String, Entry>,
    tenants: HashMap<String, Entry>,
    jtis: HashMap<String, Entry>,
}

impl IssuerEntries {
    fn of(&mut self, target: Target) -> &mut HashMap<String, Entry> {
        match target {
            Target::Client => &mut self.clients,
            Target::Tenant => &mut self.tenants,
            Target::Jti => &mut self.jtis,
        }
    }

    fn len(&self) -> usize {
        self.clients.len() + self.tenants.len() + self.jtis.len()
    }
}

/// Follow-the-source state, for a list kept in step with a shared store.
#[derive(Debug)]
struct Sync {
    /// Unix milliseconds of the last confirmed sync; 0: never.
    synced_at_ms: AtomicU64,
    max_staleness: Duration,
    when_stale: WhenStale,
}

struct Shared {
    entries: RwLock<HashMap<String, IssuerEntries>>,
    /// Entries held, for the empty fast path and the bound.
    len: AtomicUsize,
    /// Bumped (under the write lock, after the change) by every change: a
    /// token found not revoked at one generation stays so until the next.
    generation: AtomicU64,
    /// When a local list was last pruned (unix seconds).
    pruned_at: AtomicU64,
    retention: Duration,
    sync: Option<Sync>,
}

/// The revocation list a [`Verifier`](crate::Verifier) checks on every
/// request (give it with
/// [`VerifierBuilder::revocations`](crate::VerifierBuilder::revocations)).
/// Cheap to clone: clones share the list.
///
/// A revoked token gets 401 `invalid_token` with reason
/// [`Reason::Revoked`], on the full verification path and on token-cache
/// hits alike; the cached verdict is dropped. The check is in memory: a few
/// hash lookups under a read lock, none at all while the list is empty.
///
/// ```
/// use m2m_guard::{Revocation, Revocations};
///
/// let revocations = Revocations::new();
/// revocations.revoke(Revocation::client("https://acme.kinde.com", "billing-sync"))?;
/// // Verifier::builder().revocations(revocations.clone()) ...
/// # Ok::<(), m2m_guard::BuildError>(())
/// ```
#[derive(Clone)]
pub struct Revocations {
    shared: Arc<Shared>,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("held", &self.len())
            .field("retention", &self.shared.retention)
            .field("synced", &self.shared.sync.is_some())
            .finish()
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new()
    }
}

impl Revocations {
    /// An empty list of this process, each revocation kept 24 hours past
    /// its `before` (see [`Revocations::with_retention`]).
    pub fn new() -> Self {
        Self::build(Duration::from_secs(24 * 3600), None)
    }

    fn build(retention: Duration, sync: Option<Sync>) -> Self {
        Revocations {
            shared: Arc::new(Shared {
                entries: RwLock::default(),
                len: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                pruned_at: AtomicU64::new(0),
                retention,
                sync,
            }),
        }
    }

    /// An empty list keeping each revocation for `retention` past its
    /// `before` (at least 1 minute, at most 1 year): then no token it
    /// matches can be valid any more, provided no issuer issues tokens
    /// valid for longer. Set [`Issuer::max_token_lifetime`](crate::Issuer::max_token_lifetime)
    /// to make that a rule: a verifier refuses to build when an issuer's
    /// maximum lifetime exceeds the retention.
    pub fn with_retention(retention: Duration) -> Self {
        Self::build(
            retention.clamp(
                Duration::from_secs(60),
                Duration::from_secs(366 * 24 * 3600),
            ),
            None,
        )
    }

    /// A list kept in step with a shared store: not usable (503) before its
    /// first sync, and past `max_staleness` without one as `when_stale`
    /// says.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn synced(
        retention: Duration,
        max_staleness: Duration,
        when_stale: WhenStale,
    ) -> Self {
        Self::build(
            retention,
            Some(Sync {
                synced_at_ms: AtomicU64::new(0),
                max_staleness,
                when_stale,
            }),
        )
    }

    /// How long a revocation is kept past its `before`.
    pub fn retention(&self) -> Duration {
        self.shared.retention
    }

    /// Revoke in this process. (A [`Fleet`](crate::fleet::Fleet) revokes on
    /// every replica.)
    ///
    /// # Errors
    /// [`BuildError::Config`](crate::BuildError) for an empty or oversized
    /// field, a full list (1,000,000 revocations), or a fleet's list (its
    /// next reload would drop a revocation made here: use
    /// [`Fleet::revoke`](crate::fleet::Fleet::revoke)).
    pub fn revoke(&self, revocation: Revocation) -> Result<(), crate::BuildError> {
        if self.shared.sync.is_some() {
            return Err(crate::BuildError::Config(
                "this list follows a fleet: revoke with Fleet::revoke".into(),
            ));
        }
        revocation.validate().map_err(crate::BuildError::Config)?;
        let now = crate::claims::now_secs();
        // Expired rows go at most once a minute (pruning walks the list).
        let last = self.shared.pruned_at.load(Ordering::Relaxed);
        if now >= last.saturating_add(60)
            && self
                .shared
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.prune(now);
        }
        self.apply(revocation.recorded(now, self.shared.retention), now)
            .map_err(crate::BuildError::Config)
    }

    /// How many revocations are held (expired ones until they are pruned).
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// `true` when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revocations held and not yet expired.
    pub fn list(&self) -> Vec<Revocation> {
        let now = crate::claims::now_secs();
        let entries = self
            .shared
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (issuer, set) in entries.iter() {
            for (target, map) in [
                (Target::Client, &set.clients),
                (Target::Tenant, &set.tenants),
                (Target::Jti, &set.jtis),
            ] {
                for (value, e) in map.iter().filter(|(_, e)| e.expires_at > now) {
                    out.push(Revocation {
                        target,
                        issuer: issuer.clone(),
                        value: value.clone(),
                        before: e.before,
                        expires_at: e.expires_at,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.issuer, a.kind(), &a.value).cmp(&(&b.issuer, b.kind(), &b.value)));
        out
    }

    /// Add one recorded revocation (a later `before` wins over an earlier
    /// one for the same row). Expired rows are pruned separately
    /// ([`Revocations::prune`]): pruning walks the whole list.
    pub(crate) fn apply(&self, mut r: Revocation, now: u64) -> Result<(), String> {
        // Kept at least this list's own retention, whoever wrote it.
        r.expires_at = r
            .expires_at
            .max(r.before.saturating_add(self.shared.retention.as_secs()))
            .min(MAX_TIME);
        let mut entries = self
            .shared
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if r.expires_at <= now {
            return Ok(());
        }
        let map = entries.entry(r.issuer).or_default().of(r.target);
        match map.get_mut(&r.value) {
            Some(e) => {
                if r.before >= e.before {
                    *e = Entry {
                        before: r.before,
                        expires_at: r.expires_at.max(e.expires_at),
                    };
                }
            }
            None => {
                if self.shared.len.load(Ordering::Relaxed) >= MAX_ENTRIES {
                    return Err(format!("the revocation list is full ({MAX_ENTRIES})"));
                }
                map.insert(
                    r.value,
                    Entry {
                        before: r.before,
                        expires_at: r.expires_at,
                    },
                );
            }
        }
        self.changed(&entries);
        Ok(())
    }

    /// After a change, under the write lock: the count, and a new generation.
    fn changed(&self, entries: &HashMap<String, IssuerEntries>) {
        self.shared.len.store(
            entries.values().map(IssuerEntries::len).sum(),
            Ordering::Relaxed,
        );
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Replace the whole list (a full load from the shared store).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn replace_all(&self, all: Vec<Revocation>, now: u64) -> Result<(), String> {
        if all.len() > MAX_ENTRIES {
            return Err(format!(
                "{} revocations stored: more than the {MAX_ENTRIES} a list holds",
                all.len()
            ));
        }
        let fresh = Revocations::with_retention(self.shared.retention);
        for r in all {
            fresh.apply(r, now)?;
        }
        let fresh = std::mem::take(
            &mut *fresh
                .shared
                .entries
                .write()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut entries = self
            .shared
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *entries = fresh;
        self.changed(&entries);
        Ok(())
    }

    /// Drop expired revocations.
    pub(crate) fn prune(&self, now: u64) {
        let mut entries = self
            .shared
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let before = self.shared.len.load(Ordering::Relaxed);
        prune(&mut entries, now);
        // Pruning only ever un-revokes: memos stay right, but the count moves.
        if entries.values().map(IssuerEntries::len).sum::<usize>() != before {
            self.changed(&entries);
        }
    }

    /// The list is current as of `now_ms` (unix milliseconds).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn mark_synced(&self, now_ms: u64) {
        if let Some(sync) = &self.shared.sync {
            sync.synced_at_ms.store(now_ms.max(1), Ordering::Relaxed);
        }
    }

    /// When the list was last confirmed current (a synced list), if ever.
    pub fn synced_at(&self) -> Option<SystemTime> {
        let ms = self
            .shared
            .sync
            .as_ref()?
            .synced_at_ms
            .load(Ordering::Relaxed);
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// For health: whether verification may use the list now.
    pub(crate) fn usable_now(&self) -> bool {
        self.usable().is_ok()
    }

    /// Whether the list may be used now: `Err` (503) before a synced list's
    /// first sync, and past its staleness bound under [`WhenStale::Refuse`].
    fn usable(&self) -> Result<(), Rejection> {
        let Some(sync) = &self.shared.sync else {
            return Ok(());
        };
        let at_ms = sync.synced_at_ms.load(Ordering::Relaxed);
        if at_ms == 0 {
            return Err(Rejection::unavailable(
                Reason::RevocationsUnavailable,
                Duration::from_secs(1),
            ));
        }
        // Real time in milliseconds, as the sync marks are (never a test clock).
        let age_ms = unix_millis().saturating_sub(at_ms);
        if sync.when_stale == WhenStale::Refuse
            && u128::from(age_ms) > sync.max_staleness.as_millis()
        {
            return Err(Rejection::unavailable(
                Reason::RevocationsUnavailable,
                Duration::from_secs(1),
            ));
        }
        Ok(())
    }

    /// Is this verified principal's token revoked, at `now` (unix seconds)?
    ///
    /// A token found not revoked is remembered with the list's generation:
    /// until the list changes, its next check (a token-cache hit) is two
    /// atomic loads. Entries only ever expire into "not revoked", so time
    /// passing cannot make that memo wrong.
    pub(crate) fn check(&self, p: &Principal, now: u64) -> Result<(), Rejection> {
        self.usable()?;
        // Read before the entries: a change after this bumps it again, so a
        // memo of this generation is never newer than what was looked at.
        let generation = self.shared.generation.load(Ordering::Acquire);
        if p.not_revoked_at(generation) {
            return Ok(());
        }
        if self.shared.len.load(Ordering::Relaxed) == 0 {
            p.set_not_revoked_at(generation);
            return Ok(());
        }
        let entries = self
            .shared
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(set) = entries.get(p.issuer()) else {
            p.set_not_revoked_at(generation);
            return Ok(());
        };
        let live = |e: &Entry| e.expires_at > now;
        // A token without `iat` cannot show it was issued after `before`.
        let issued_before =
            |e: &Entry| live(e) && p.issued_at_secs().is_none_or(|iat| iat <= e.before);
        let revoked = p
            .client_id()
            .and_then(|c| set.clients.get(c))
            .is_some_and(issued_before)
            || p.tenant()
                .and_then(|t| set.tenants.get(t))
                .is_some_and(issued_before)
            || p.jti().and_then(|j| set.jtis.get(j)).is_some_and(live);
        if revoked {
            return Err(Rejection::new(Reason::Revoked).with_issuer(p.configured_issuer().clone()));
        }
        p.set_not_revoked_at(generation);
        Ok(())
    }
}

fn prune(entries: &mut HashMap<String, IssuerEntries>, now: u64) {
    for set in entries.values_mut() {
        for map in [&mut set.clients, &mut set.tenants, &mut set.jtis] {
            map.retain(|_, e| e.expires_at > now);
        }
    }
    entries.retain(|_, set| set.len() > 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_revocations_parse_strictly() {
        let r = Revocation::client("https://iss", "svc")
            .issued_before(UNIX_EPOCH + Duration::from_secs(1000))
            .recorded(2000, Duration::from_secs(3600));
        assert_eq!(r.expires_at, 4600);
        assert_eq!(Revocation::from_json(&r.to_json()), Some(r.clone()));
        for bad in [
            r#"{"kind":"user","issuer":"i","value":"v","before":1,"expires_at":2}"#,
            r#"{"kind":"jti","issuer":"","value":"v","before":1,"expires_at":2}"#,
            r#"{"kind":"jti","issuer":"i","value":"v","before":-1,"expires_at":2}"#,
            r#"{"kind":"jti","issuer":"i","value":"a\u0007b","before":1,"expires_at":2}"#,
            r#"{"kind":"jti","issuer":"i","value":"v","before":1}"#,
            r#"["jti"]"#,
        ] {
            assert_eq!(Revocation::from_json(bad), None, "{bad}");
        }
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        assert!(Revocation::jti("i", long).validate().is_err());
        // A jti's token may have been issued any time: kept from now.
        let j = Revocation::jti("i", "j")
            .issued_before(UNIX_EPOCH)
            .recorded(2000, Duration::from_secs(60));
        assert_eq!(j.expires_at, 2060);
    }

    #[test]
    fn the_size_bounds_are_exact() {
        // A field of exactly the maximum is fine; one byte more is not.
        let max = "x".repeat(MAX_FIELD_BYTES);
        assert!(Revocation::jti("i", max.clone()).validate().is_ok());
        assert!(Revocation::jti("i", format!("{max}x")).validate().is_err());
        // The longest revocation round-trips through its stored form.
        let r = Revocation::client(max.clone(), max.clone()).recorded(1, Duration::from_secs(60));
        assert!(r.to_json().len() > 2 * MAX_FIELD_BYTES);
        assert_eq!(Revocation::from_json(&r.to_json()), Some(r.clone()));
        // A stored text is bounded as a whole, whatever it pads with.
        let short = Revocation::jti("i", "j")
            .recorded(1, Duration::from_secs(60))
            .to_json();
        let padded = |to: usize| {
            let pad = to - short.len() - r#","pad":"""#.len();
            format!(
                "{},\"pad\":\"{}\"}}",
                &short[..short.len() - 1],
                "p".repeat(pad)
            )
        };
        let at_limit = padded(4 * MAX_FIELD_BYTES);
        assert_eq!(at_limit.len(), 4 * MAX_FIELD_BYTES);
        assert!(Revocation::from_json(&at_limit).is_some());
        assert_eq!(
            Revocation::from_json(&padded(4 * MAX_FIELD_BYTES + 1)),
            None
        );
        assert_eq!(Revocation::from_json(&padded(10 * MAX_FIELD_BYTES)), None);
    }

    #[test]
    fn a_full_load_past_the_bound_is_refused_as_a_whole() {
        let now = crate::claims::now_secs();
        let list = Revocations::new();
        list.revoke(Revocation::client("i", "held")).unwrap();
        // Rows expired long ago (cheap to load: none is kept), exactly as
        // many as the shared store holds: the load is not refused.
        let long_ago = UNIX_EPOCH + Duration::from_secs(now - 10 * 24 * 3600);
        let mut all: Vec<Revocation> = (0..MAX_ENTRIES)
            .map(|i| {
                Revocation::jti("i", i.to_string())
                    .issued_before(long_ago)
                    .recorded(now - 10 * 24 * 3600, Duration::from_secs(60))
            })
            .collect();
        let fresh = Revocations::new();
        fresh.replace_all(all.clone(), now).unwrap();
        assert!(fresh.is_empty());
        // One more is refused before any is read, and the held list stays.
        all.push(Revocation::jti("i", "j").recorded(now, Duration::from_secs(60)));
        let err = list.replace_all(all, now).unwrap_err();
        assert!(err.contains("more than the 1000000 a list holds"), "{err}");
        assert_eq!(list.len(), 1, "the held list is kept");
    }

    #[test]
    fn a_reader_keeps_a_revocation_its_own_retention_whoever_wrote_it() {
        let t0 = crate::claims::now_secs();
        let list = Revocations::with_retention(Duration::from_secs(3600));
        // Written by a replica keeping revocations only a minute.
        let short = Revocation::client("i", "c")
            .issued_before(UNIX_EPOCH + Duration::from_secs(t0))
            .recorded(t0, Duration::from_secs(60));
        list.apply(short, t0).unwrap();
        assert_eq!(list.list()[0].expires_at, t0 + 3600);
        // And a stored time past year 9999 is refused, not a panic later.
        let far = r#"{"kind":"jti","issuer":"i","value":"v","before":18446744073709551615,"expires_at":1}"#;
        assert_eq!(Revocation::from_json(far), None);
    }

    #[test]
    fn a_later_before_wins_and_expired_rows_go() {
        let list = Revocations::with_retention(Duration::from_secs(100));
        let t0 = crate::claims::now_secs();
        let at = |t: u64| {
            Revocation::client("i", "c")
                .issued_before(UNIX_EPOCH + Duration::from_secs(t))
                .recorded(t, Duration::from_secs(100))
        };
        list.apply(at(t0), t0).unwrap();
        list.apply(at(t0 - 10), t0).unwrap();
        assert_eq!(
            list.list()[0].before,
            t0,
            "an earlier before does not shrink it"
        );
        list.apply(at(t0 + 5), t0).unwrap();
        assert_eq!(list.list()[0].before, t0 + 5);
        assert_eq!(list.list()[0].expires_at, t0 + 105);
        assert_eq!(list.len(), 1);
        // Already expired when it arrives: not added.
        let stale = Revocation::jti("i", "j")
            .issued_before(UNIX_EPOCH + Duration::from_secs(t0 - 600))
            .recorded(t0 - 500, Duration::from_secs(100));
        list.apply(stale, t0).unwrap();
        assert_eq!(list.len(), 1);
        // Kept while live, gone at its expiry second, its issuer with it.
        list.prune(t0 + 104);
        assert_eq!(list.len(), 1);
        list.prune(t0 + 105);
        assert_eq!(list.len(), 0);
        assert!(list.shared.entries.read().unwrap().is_empty());
    }

    #[test]
    fn a_revocation_shows_what_it_revokes() {
        let r = Revocation::client("https://iss.example", "svc")
            .issued_before(UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(
            (r.kind(), r.issuer(), r.value()),
            ("client", "https://iss.example", "svc")
        );
        assert_eq!(r.before(), UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(
            format!("{r:?}"),
            r#"Revocation { kind: "client", issuer: "https://iss.example", value: "svc", before: 1000, expires_at: 0 }"#
        );
    }

    #[test]
    fn every_kind_of_row_counts() {
        let now = crate::claims::now_secs();
        let list = Revocations::with_retention(Duration::from_secs(60));
        assert!(list.is_empty());
        for (r, held) in [
            (Revocation::jti("i", "j"), 1),
            (Revocation::tenant("i", "t"), 2),
            (Revocation::client("i", "c"), 3),
        ] {
            list.apply(r.recorded(now, Duration::from_secs(60)), now)
                .unwrap();
            assert_eq!(list.len(), held);
            assert!(!list.is_empty());
        }
        let shown = format!("{list:?}");
        assert!(
            shown.contains("held: 3") && shown.contains("synced: false"),
            "{shown}"
        );
    }

    #[test]
    fn retention_is_kept_between_a_minute_and_a_year() {
        let day = 24 * 3600;
        for (asked, kept) in [
            (1, 60),
            (60, 60),
            (366 * day, 366 * day),
            (400 * day, 366 * day),
        ] {
            let list = Revocations::with_retention(Duration::from_secs(asked));
            assert_eq!(list.retention(), Duration::from_secs(kept), "{asked}");
        }
    }

    #[test]
    fn a_local_revoke_prunes_expired_rows_at_most_once_a_minute() {
        let list = Revocations::with_retention(Duration::from_secs(60));
        let t0 = crate::claims::now_secs();
        // Live when applied (at t0 - 100), expired at t0 - 40.
        let expired = |jti: &str| {
            Revocation::jti("i", jti)
                .issued_before(UNIX_EPOCH + Duration::from_secs(t0 - 100))
                .recorded(t0 - 100, Duration::from_secs(60))
        };
        list.apply(expired("x"), t0 - 100).unwrap();
        assert_eq!(list.len(), 1);
        list.revoke(Revocation::client("i", "a")).unwrap();
        assert_eq!(list.len(), 1, "the expired row went");
        list.apply(expired("y"), t0 - 100).unwrap();
        list.revoke(Revocation::client("i", "b")).unwrap();
        assert_eq!(list.len(), 3, "no second prune within the minute");
    }

    #[test]
    fn a_revocation_holds_until_its_expiry_second() {
        let list = Revocations::with_retention(Duration::from_secs(60));
        let r = Revocation::client("https://issuer.example", "c")
            .issued_before(UNIX_EPOCH + Duration::from_secs(1000))
            .recorded(1000, Duration::from_secs(60));
        assert_eq!(r.expires_at, 1060);
        list.apply(r, 1000).unwrap();
        // A fresh principal each time: a pass is remembered.
        let p = || crate::principal::tests::with_claims("{}");
        assert_eq!(
            list.check(&p(), 1059).unwrap_err().reason(),
            Reason::Revoked
        );
        assert!(list.check(&p(), 1060).is_ok());
        // What `list` shows follows the same rule, on the real clock.
        loop {
            let t = crate::claims::now_secs();
            let list = Revocations::with_retention(Duration::from_secs(60));
            let r = Revocation::client("i", "c")
                .issued_before(UNIX_EPOCH + Duration::from_secs(t - 60))
                .recorded(t - 60, Duration::from_secs(60));
            list.apply(r, t - 1).unwrap();
            assert_eq!(list.len(), 1);
            let shown = list.list();
            if crate::claims::now_secs() == t {
                assert!(shown.is_empty(), "expired at {t}: {shown:?}");
                break;
            }
        }
    }
}
