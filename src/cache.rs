//! The verified-token cache: a verdict is kept, from a token's second
//! sighting, for as long as every time rule it met holds (its [`Window`]) and
//! the key that verified it is still published. Bounded by entries and bytes.

use std::sync::Arc;

use crate::claims::{Window, now_secs};
use crate::keystore::{KeyStore, Snapshot};
use crate::principal::Principal;

/// Verified tokens, keyed by the whole token (two tokens never collide),
/// each kept until its own `exp` (+ leeway). Only successes are cached, and
/// only from their second sighting (see [`Doorkeeper`]).
pub(crate) struct TokenCache {
    tokens: moka::sync::Cache<Arc<str>, Arc<CachedToken>>,
    doorkeeper: Doorkeeper,
}

/// Remembers, approximately, which tokens were seen recently: one slot per
/// expected cache entry holding a keyed 64-bit hash of the token's signature.
/// A wrong answer is harmless: "seen" admits a token one sighting early,
/// "not seen" one sighting late. Only admission depends on it, never a verdict.
pub(crate) struct Doorkeeper {
    slots: Box<[std::sync::atomic::AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl Doorkeeper {
    fn new(slots: usize) -> Self {
        let n = slots.clamp(1024, 1 << 22).next_power_of_two();
        Doorkeeper {
            slots: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn slot(&self, token: &str) -> (&std::sync::atomic::AtomicU64, u64) {
        use std::hash::BuildHasher as _;
        // The signature is enough to tell tokens apart here, and short to hash.
        let sig = token.rsplit_once('.').map_or(token, |(_, s)| s);
        let h = self.hasher.hash_one(sig) | 1;
        (&self.slots[(h as usize) & (self.slots.len() - 1)], h)
    }

    /// Was `token` seen before? Marks it seen. Called only for tokens that
    /// verified, so garbage cannot push hot tokens out of the filter.
    fn seen_before(&self, token: &str) -> bool {
        let (slot, h) = self.slot(token);
        slot.swap(h, std::sync::atomic::Ordering::Relaxed) == h
    }

    /// Was `token` seen before? Does not mark it.
    fn contains(&self, token: &str) -> bool {
        let (slot, h) = self.slot(token);
        slot.load(std::sync::atomic::Ordering::Relaxed) == h
    }
}

impl TokenCache {
    /// At most `max_entries` entries and about `max_bytes`.
    pub(crate) fn new(max_entries: u64, max_bytes: u64) -> Self {
        // Weights are in KiB: moka sizes its frequency sketch from the capacity,
        // and a capacity counted in bytes would make the sketch itself large.
        let capacity_kib = (max_bytes / 1024).max(1);
        // Every entry weighs at least capacity / max_entries, so both bounds hold.
        let floor = (capacity_kib / max_entries.max(1)).max(1);
        let tokens = moka::sync::Cache::builder()
            .max_capacity(capacity_kib)
            .weigher(move |k: &Arc<str>, v: &Arc<CachedToken>| {
                entry_kib(k.len(), v.principal.claims().len())
                    .max(floor)
                    .min(u64::from(u32::MAX)) as u32
            })
            .expire_after(ExpireAtExp)
            .build();
        TokenCache {
            tokens,
            doorkeeper: Doorkeeper::new(usize::try_from(max_entries).unwrap_or(usize::MAX)),
        }
    }

    /// The cached verdict for `token` at wall-clock time `now`, if it was
    /// verified before and is still valid. Never does I/O or signature work.
    ///
    /// The cache's own expiry runs on the monotonic clock, the claims on
    /// the wall clock: when the wall clock jumps ahead (an NTP step, a VM
    /// resumed), an entry outlives its window, and this check refuses it.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Principal> {
        if !self.doorkeeper.contains(token) {
            return None;
        }
        let hit = self.tokens.get(token)?;
        if !hit.window.contains(now) {
            return None;
        }
        match hit.store.snapshot() {
            Snapshot::Ready(keys) if keys.contains_id(hit.key_id) => Some(hit.principal.clone()),
            _ => {
                self.tokens.invalidate(token);
                None
            }
        }
    }

    /// A token just verified: cached on its second verified sighting, so a
    /// token seen once costs no insert and a flood of one-off (or invalid)
    /// tokens cannot push the hot ones out.
    pub(crate) fn admit(&self, token: &str, entry: CachedToken) {
        if self.doorkeeper.seen_before(token) {
            self.tokens.insert(token.into(), Arc::new(entry));
        }
    }

    /// How many verdicts are cached.
    pub(crate) fn len(&self) -> u64 {
        self.tokens.run_pending_tasks();
        self.tokens.entry_count()
    }
}

pub(crate) struct CachedToken {
    pub(crate) principal: Principal,
    /// The key store and key instance that verified it: a refresh that
    /// withdraws the key ends the entry's validity at once.
    pub(crate) store: Arc<KeyStore>,
    pub(crate) key_id: u64,
    /// Every time rule the token met, as one window.
    pub(crate) window: Window,
}

struct ExpireAtExp;

impl moka::Expiry<Arc<str>, Arc<CachedToken>> for ExpireAtExp {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<CachedToken>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            value.window.until.saturating_sub(now_secs()),
        ))
    }
}

/// Resident size of one cache entry, rounded up to KiB: the token itself,
/// the decoded claims (JSON values, map nodes and strings: about twice the
/// encoded payload, which is about 3/4 of the token) and fixed overhead
/// (principal, entry, moka's bookkeeping). Measured with `benches/memory.rs`.
pub(crate) fn entry_kib(token_len: usize, claim_count: usize) -> u64 {
    let bytes = 768 + token_len as u64 * 5 / 2 + claim_count as u64 * 96;
    bytes.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Object;
    use crate::jwks::{Lookup, parse_jwks};
    use crate::principal::{PrincipalParts, Scopes};
    use crate::token::Algorithm;

    fn test_key_set() -> crate::jwks::KeySet {
        let doc = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
            "x": "F1WulCUBEGfuO6Nr1HCYD2LGvhGvA0czde3owaUAAWo",
            "y": "_gg99BuscvD_dcq71U2n3BYKBrji3JnaD-vuH5lkMKo"}]});
        parse_jwks(doc.to_string().as_bytes(), 10).unwrap()
    }

    #[tokio::test]
    async fn a_cache_hit_is_refused_outside_its_window_whatever_the_cache_holds() {
        let set = test_key_set();
        let Lookup::Found(key) = set.find(Some("k"), Algorithm::ES256) else {
            panic!("the key is found");
        };
        let key_id = key.id;
        let store = KeyStore::preloaded(set);
        let cache = TokenCache::new(100, 1 << 20);
        let now = now_secs();
        let entry = CachedToken {
            principal: Principal::from_parts(PrincipalParts {
                issuer: "https://issuer.example".into(),
                subject: None,
                client_id: Some("c".into()),
                tenant: None,
                scopes: Scopes::from_vec(Vec::new()),
                expires_at: now + 100,
                issued_at: None,
                jti: None,
                claims: Object::new(),
            }),
            store,
            key_id,
            window: Window {
                from: now - 10,
                until: now + 100,
            },
        };
        let token = "h.p.sig";
        cache.doorkeeper.seen_before(token); // the first sighting
        cache.admit(token, entry);
        assert_eq!(cache.len(), 1);
        // The entry is in the cache for the whole test; only the window decides.
        assert!(cache.get(token, now).is_some());
        assert!(cache.get(token, now + 99).is_some(), "last second");
        assert!(cache.get(token, now + 100).is_none(), "until is exclusive");
        assert!(cache.get(token, now - 10).is_some(), "from is inclusive");
        assert!(cache.get(token, now - 11).is_none(), "before from");
        assert!(cache.get(token, now).is_some(), "still cached");
        assert!(cache.get("h.p.other", now).is_none());
    }

    /// The entry weight is calibrated by `benches/memory.rs` (resident
    /// growth against the bound); pinned here so a change is deliberate and
    /// re-measured.
    #[test]
    fn entry_weights_follow_the_measured_calibration() {
        // 768 B fixed + 2.5 B per token byte + 96 B per claim, rounded up to KiB.
        assert_eq!(entry_kib(0, 0), 1);
        assert_eq!(entry_kib(1000, 10), 5); // 768 + 2500 + 960 = 4228 B
        assert_eq!(entry_kib(4096, 0), 11); // 768 + 10240 = 11008 B
        assert_eq!(entry_kib(0, 100), 11); // 768 + 9600 = 10368 B
        assert_eq!(entry_kib(102, 0), 1); // 768 + 255 = 1023 B
        assert_eq!(entry_kib(102, 1), 2); // + 96 = 1119 B
        assert_eq!(entry_kib(103, 0), 2); // 768 + 257 = 1025 B
    }

    #[test]
    fn doorkeeper_marks_and_remembers_by_signature() {
        let d = Doorkeeper::new(1024);
        assert!(!d.contains("h.p.sig1"));
        assert!(!d.seen_before("h.p.sig1"), "first sighting");
        assert!(d.contains("h.p.sig1"));
        assert!(d.seen_before("h.p.sig1"), "second sighting");
        assert!(!d.contains("h.p.sig2"));
        assert_eq!(d.slots.len(), 1024);
        assert_eq!(Doorkeeper::new(10_000).slots.len(), 16_384);
    }
}
