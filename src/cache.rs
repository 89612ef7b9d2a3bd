//! The verified-token cache: a verdict is kept, from a token's second
//! sighting, for as long as every time rule it met holds (its [`Window`]) and
//! the key that verified it is still published. Bounded by entries and bytes.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::claims::{Window, now_secs};
use crate::keystore::{KeyStore, Snapshot};
use crate::principal::Principal;

/// Verified tokens, keyed by the whole token (two tokens never collide),
/// each kept until its own `exp` (+ leeway). Only successes are cached, and
/// only from their second sighting (see [`Doorkeeper`]).
pub(crate) struct TokenCache {
    /// Hashed with foldhash, seeded at random (minimally DoS-resistant,
    /// and a few ns for the 24-byte key where SipHash takes ~60): its keys
    /// are verified tokens' tags (the issuer's signature bytes), which
    /// callers cannot choose, and lookups insert nothing.
    tokens: moka::sync::Cache<TokenKey, Arc<CachedToken>, foldhash::fast::RandomState>,
    /// `m2m_guard_token_cache_hits_total`, batched (see [`crate::metrics`]).
    hits: crate::metrics::BatchedCounter,
    doorkeeper: Doorkeeper,
}

/// How many bytes at the end of a token stand for it in hashes and in the
/// first step of comparisons: 16 base64url characters, 96 bits of signature.
const TAG: usize = 16;

/// The last [`TAG`] bytes of `token`, zero-padded in front when shorter.
fn tag(token: &(impl AsRef<[u8]> + ?Sized)) -> [u8; TAG] {
    let b = token.as_ref();
    let n = b.len().min(TAG);
    let mut out = [0; TAG];
    out[TAG - n..].copy_from_slice(&b[b.len() - n..]);
    out
}

/// A cache key: the whole token, with its [`tag`] inline. Hashing reads the
/// tag and the length, not the whole ~1 KB token; equality compares the
/// inline tags first, so a lookup probing past other entries does not read
/// their tokens (all of one issuer's tokens have the same length and a long
/// common prefix), then the whole tokens: two tokens never collide. Only
/// verified tokens are inserted, and their signatures are the issuer's, not
/// the caller's, to choose: callers cannot crowd one bucket.
#[derive(Clone)]
struct TokenKey {
    tag: [u8; TAG],
    token: Arc<str>,
}

/// A borrowed [`TokenKey`], to look one up without allocating.
struct TokenRef<'a> {
    tag: [u8; TAG],
    token: &'a [u8],
}

impl<'a> TokenRef<'a> {
    fn new(token: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        let token = token.as_ref();
        TokenRef {
            tag: tag(token),
            token,
        }
    }
}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        TokenRef::hash_parts(&self.tag, self.token.len(), h);
    }
}

impl std::hash::Hash for TokenRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        TokenRef::hash_parts(&self.tag, self.token.len(), h);
    }
}

impl TokenRef<'_> {
    fn hash_parts<H: std::hash::Hasher>(tag: &[u8; TAG], len: usize, h: &mut H) {
        h.write(tag);
        h.write_usize(len);
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.token == other.token
    }
}

impl Eq for TokenKey {}

impl moka::Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        self.tag == key.tag && self.token == key.token.as_bytes()
    }
}

/// Remembers, approximately, which verified tokens were seen recently: a
/// keyed 64-bit hash of each token's signature end, in set-associative
/// buckets of [`WAYS`] slots (one cache line), with about two slots per
/// cache entry. A wrong answer costs time, never a verdict: "seen" admits a
/// token one sighting early, "not seen" one sighting late. Buckets (rather
/// than one slot per hash) matter: two tokens sharing a single slot would
/// each overwrite the other's mark and, used alternately, never be admitted.
pub(crate) struct Doorkeeper {
    slots: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

/// Slots per doorkeeper bucket: 8 × 8 bytes, one 64-byte cache line.
const WAYS: usize = 8;

impl Doorkeeper {
    fn new(entries: usize) -> Self {
        let n = entries
            .saturating_mul(2)
            .clamp(1024, 1 << 23)
            .next_power_of_two();
        Doorkeeper {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The two buckets `token` may be marked in, and its hash (never 0,
    /// the empty slot). Two choices keep buckets from overflowing at two
    /// slots per entry (one choice loses ~1.5 % of a full working set).
    fn buckets(&self, token: &str) -> ([&[AtomicU64]; 2], u64) {
        use std::hash::BuildHasher as _;
        // The end of the signature is enough to tell tokens apart here, and
        // short to hash.
        let h = self.hasher.hash_one(tag(token)) | 1;
        let mask = self.slots.len() / WAYS - 1;
        let at = |bits: u64| {
            let start = (bits as usize & mask) * WAYS;
            &self.slots[start..start + WAYS]
        };
        ([at(h >> 8), at(h >> 36)], h)
    }

    /// Was `token` seen before? Marks it seen, in an empty slot of one of
    /// its buckets or, when both are full, in a pseudo-random slot. Called
    /// only for tokens that verified, so garbage cannot push hot tokens out.
    fn seen_before(&self, token: &str) -> bool {
        let (buckets, h) = self.buckets(token);
        let mut empty = None;
        for slot in buckets.iter().flat_map(|b| b.iter()) {
            match slot.load(Relaxed) {
                v if v == h => return true,
                0 if empty.is_none() => empty = Some(slot),
                _ => {}
            }
        }
        // The low bits chose no bucket: they pick the slot to replace.
        let slot = empty.unwrap_or(&buckets[0][(h >> 1) as usize % WAYS]);
        slot.store(h, Relaxed);
        false
    }

    /// Was `token` seen before? Does not mark it.
    #[cfg(test)]
    fn contains(&self, token: &str) -> bool {
        let (buckets, h) = self.buckets(token);
        buckets
            .iter()
            .flat_map(|b| b.iter())
            .any(|s| s.load(Relaxed) == h)
    }
}

impl TokenCache {
    /// At most `max_entries` entries and about `max_bytes`.
    pub(crate) fn new(max_entries: u64, max_bytes: u64) -> Self {
        // Weights are in units of half an entry's share of the bytes, so
        // the capacity is 2 × `max_entries` units. Every entry weighs at
        // least two units, so at most `max_entries` fit; weights round up,
        // so the bytes stay within `max_bytes`, and rounding wastes at most
        // half an entry's share.
        let slots = max_entries.max(1).saturating_mul(2);
        let unit = (max_bytes / slots).max(1);
        let capacity = (max_bytes / unit).clamp(2, slots);
        let tokens = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |k: &TokenKey, v: &Arc<CachedToken>| {
                entry_bytes(k.token.len(), v.principal.claims().len())
                    .div_ceil(unit)
                    .clamp(2, u64::from(u32::MAX)) as u32
            })
            .expire_after(ExpireAtExp)
            .build_with_hasher(foldhash::fast::RandomState::default());
        TokenCache {
            tokens,
            hits: crate::metrics::cache_hits(),
            doorkeeper: Doorkeeper::new(usize::try_from(max_entries.max(1)).unwrap_or(usize::MAX)),
        }
    }

    /// The cached verdict for `token` at wall-clock time `now`, if it was
    /// verified before and is still valid. Never does I/O or signature work.
    ///
    /// The cache's own expiry runs on the monotonic clock, the claims on
    /// the wall clock: when the wall clock jumps ahead (an NTP step, a VM
    /// resumed), an entry outlives its window, and this check refuses it.
    pub(crate) fn get(&self, token: &(impl AsRef<[u8]> + ?Sized), now: u64) -> Option<Principal> {
        let token = token.as_ref();
        // A miss is counted by the verification that follows it, so a
        // malformed token the layer refuses after asking is not one.
        let found = self.get_inner(token, now);
        if found.is_some() {
            self.hits.add();
        }
        found
    }

    fn get_inner(&self, token: &[u8], now: u64) -> Option<Principal> {
        let hit = self.tokens.get(&TokenRef::new(token))?;
        if !hit.window.contains(now) {
            return None;
        }
        match hit.store.snapshot() {
            Snapshot::Ready(keys) if keys.contains_id(hit.key_id) => Some(hit.principal.clone()),
            _ => {
                self.tokens.invalidate(&TokenRef::new(token));
                None
            }
        }
    }

    /// Drop `token`'s verdict (it was revoked).
    pub(crate) fn invalidate(&self, token: &(impl AsRef<[u8]> + ?Sized)) {
        let token = token.as_ref();
        self.tokens.invalidate(&TokenRef::new(token));
    }

    /// A token just verified: cached on its second verified sighting, so a
    /// token seen once costs no insert and a flood of one-off (or invalid)
    /// tokens cannot push the hot ones out.
    pub(crate) fn admit(&self, token: &str, entry: CachedToken) {
        if self.doorkeeper.seen_before(token) {
            let key = TokenKey {
                tag: tag(token),
                token: token.into(),
            };
            self.tokens.insert(key, Arc::new(entry));
            crate::metrics::cache("admission");
        }
    }

    /// Hand the batched hit count to the recorder in use.
    pub(crate) fn flush_metrics(&self) {
        self.hits.flush();
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

impl moka::Expiry<TokenKey, Arc<CachedToken>> for ExpireAtExp {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<CachedToken>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            value.window.until.saturating_sub(now_secs()),
        ))
    }
}

/// Resident size of one cache entry in bytes: the token itself, the
/// decoded claims (JSON values, map nodes and strings: about twice the
/// encoded payload, which is about 3/4 of the token) and fixed overhead
/// (principal, entry, moka's bookkeeping). Measured with `benches/memory.rs`.
pub(crate) fn entry_bytes(token_len: usize, claim_count: usize) -> u64 {
    768 + token_len as u64 * 5 / 2 + claim_count as u64 * 96
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

    /// A verified entry for client `c`, valid from `now - 10` until `now + 100`.
    fn entry(now: u64) -> CachedToken {
        entry_maker(now)()
    }

    /// Makes entries like [`entry`], all verified by one key store.
    fn entry_maker(now: u64) -> impl Fn() -> CachedToken {
        let set = test_key_set();
        let Lookup::Found(key) = set.find(Some("k"), Algorithm::ES256) else {
            panic!("the key is found");
        };
        let key_id = key.id;
        let store = KeyStore::preloaded(set);
        move || CachedToken {
            principal: Principal::from_parts(PrincipalParts {
                issuer: "https://issuer.example".into(),
                metrics: Arc::new(crate::metrics::IssuerMetrics::new(
                    &"https://issuer.example".into(),
                    false,
                )),
                subject: None,
                client_id: Some("c".into()),
                tenant: None,
                scopes: Scopes::from_vec(Vec::new()),
                expires_at: now + 100,
                issued_at: None,
                jti: None,
                machine: true,
                claims: Object::new(),
            }),
            store: store.clone(),
            key_id,
            window: Window {
                from: now - 10,
                until: now + 100,
            },
        }
    }

    #[tokio::test]
    async fn a_cache_hit_is_refused_outside_its_window_whatever_the_cache_holds() {
        let cache = TokenCache::new(100, 1 << 20);
        let now = now_secs();
        let entry = entry(now);
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
        assert_eq!(entry_bytes(0, 0), 768);
        assert_eq!(entry_bytes(1000, 10), 4228); // 768 + 2500 + 960
        assert_eq!(entry_bytes(4096, 0), 11008); // 768 + 10240
        assert_eq!(entry_bytes(0, 100), 10368); // 768 + 9600
        assert_eq!(entry_bytes(102, 0), 1023); // 768 + 255
        assert_eq!(entry_bytes(102, 1), 1119); // + 96
        assert_eq!(entry_bytes(103, 0), 1025); // 768 + 257
    }

    #[test]
    fn the_cache_key_hash_reads_the_tag_and_the_length() {
        use std::hash::BuildHasher as _;
        let h = std::hash::RandomState::new();
        let key = |t: &str| TokenKey {
            tag: tag(t),
            token: t.into(),
        };
        let a = "x".repeat(100) + &"s".repeat(TAG);
        let b = "y".repeat(100) + &"s".repeat(TAG);
        assert_eq!(
            h.hash_one(key(&a)),
            h.hash_one(key(&b)),
            "same tag and length"
        );
        assert_eq!(h.hash_one(key(&a)), h.hash_one(TokenRef::new(&a)));
        let longer = "x".repeat(101) + &"s".repeat(TAG);
        assert_ne!(h.hash_one(key(&a)), h.hash_one(key(&longer)));
        let other_tag = "x".repeat(100) + &"t".repeat(TAG);
        assert_ne!(h.hash_one(key(&a)), h.hash_one(key(&other_tag)));
        assert_ne!(h.hash_one(key("short")), h.hash_one(key("shorT")));
        assert_eq!(tag("ab"), *b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0ab");
        assert_eq!(&tag(&a), b"ssssssssssssssss");
        // Equality: tags first, then whole tokens.
        use moka::Equivalent as _;
        assert!(TokenRef::new(&a).equivalent(&key(&a)));
        assert!(
            !TokenRef::new(&a).equivalent(&key(&b)),
            "same tag, other token"
        );
        assert!(!TokenRef::new(&a).equivalent(&key(&other_tag)));
        assert!(key(&a) == key(&a));
        assert!(key(&a) != key(&b));
        let mut forged = key(&a);
        forged.tag = tag(&other_tag);
        assert!(forged != key(&a), "the tags are compared too");
    }

    #[tokio::test]
    async fn tokens_with_one_hash_are_still_told_apart() {
        // Same tail, same length: one hash. Equality compares whole tokens.
        let a = "x".repeat(100) + &"s".repeat(TAG);
        let b = "y".repeat(100) + &"s".repeat(TAG);
        let cache = TokenCache::new(100, 1 << 20);
        let now = now_secs();
        cache.doorkeeper.seen_before(&a);
        cache.admit(&a, entry(now));
        assert!(cache.get(&a, now).is_some());
        assert!(
            cache.doorkeeper.contains(&b),
            "the doorkeeper cannot tell them apart"
        );
        assert!(cache.get(&b, now).is_none(), "the cache can");
    }

    #[test]
    fn doorkeeper_marks_and_remembers_by_signature() {
        let d = Doorkeeper::new(1024);
        assert!(!d.contains("h.p.sig1"));
        assert!(!d.seen_before("h.p.sig1"), "first sighting");
        assert!(d.contains("h.p.sig1"));
        assert!(d.seen_before("h.p.sig1"), "second sighting");
        assert!(!d.contains("h.p.sig2"));
        assert_eq!(d.slots.len(), 2048);
        assert_eq!(Doorkeeper::new(10_000).slots.len(), 32_768);
        assert_eq!(Doorkeeper::new(0).slots.len(), 1024);
        assert_eq!(Doorkeeper::new(usize::MAX).slots.len(), 1 << 23);
    }

    /// Two choices per token keep an overloaded filter useful: ten filters
    /// of 1,024 slots, each given 768 tokens (three quarters full) once,
    /// keep about 99 % of the marks; with one bucket per token (or the
    /// second choice always the same bucket) about 95 %. Simulated over
    /// 200 runs: 7,602 ± 10 of 7,680 kept with two choices, 7,306 ± 25
    /// with the second choice collapsed; the bound sits 15 deviations
    /// below the first and 5 above the second (the hasher is keyed at
    /// random, so the test is statistical, not flaky).
    #[test]
    fn two_choices_keep_an_overloaded_filter_useful() {
        let mut kept = 0;
        for f in 0..10 {
            let d = Doorkeeper::new(0);
            assert_eq!(d.slots.len(), 1024);
            let tokens: Vec<String> = (0..768).map(|i| format!("h.p.{f:03}{i:013}")).collect();
            for t in &tokens {
                assert!(!d.seen_before(t), "distinct tokens");
            }
            kept += tokens.iter().filter(|t| d.contains(t)).count();
        }
        assert!(kept >= 7450, "{kept} of 7680 marks kept");
    }

    /// Both bounds hold (whole-KiB weights with a floor let 51 entries into
    /// a cache of 50), and rounding does not shrink the cache much below
    /// what its bytes allow.
    #[test]
    fn the_capacity_counts_entries_not_bytes_and_both_bounds_hold() {
        for (entries, bytes, want) in [
            (10_000, 32 << 20, 20_000),
            (25_000, 128 << 20, 50_000),
            (10_000, 4 << 20, 20_000),
            (1, 1, 2),
            (0, 0, 2),
        ] {
            let cache = TokenCache::new(entries, bytes);
            assert_eq!(
                cache.tokens.policy().max_capacity(),
                Some(want),
                "{entries} entries, {bytes} bytes"
            );
        }
        let now = now_secs();
        let entry = entry_maker(now);
        let held = |cache: &TokenCache, n: usize, token_len: usize| {
            for i in 0..n {
                let t = format!("h.{}.{i:032}", "p".repeat(token_len - 35));
                cache.doorkeeper.seen_before(&t);
                cache.admit(&t, entry());
            }
            cache.tokens.run_pending_tasks();
            cache.tokens.entry_count()
        };
        // The bytes bind: 200 KiB hold 42 entries of 4,863 B, and 40 fit
        // once each rounds up to whole units (1 KiB here).
        let bytes_bound = held(&TokenCache::new(100, 200 << 10), 100, 1638);
        assert!(
            (30..=40).contains(&bytes_bound),
            "{bytes_bound} entries held"
        );
        // The entries bind: 50 entries of 1 KiB in a cache of 50 and 1 MiB.
        let entries_bound = held(&TokenCache::new(50, 1 << 20), 80, 100);
        assert!(
            (40..=50).contains(&entries_bound),
            "{entries_bound} entries held"
        );
        // The defaults with typical entries (4,228 B: a 1 KB token and ten
        // claims' worth): 32 MiB hold 7,936; whole units of 1,677 B keep
        // 6,666 of them (one-unit shares rounded up kept 5,000).
        let typical = held(&TokenCache::new(10_000, 32 << 20), 8000, 1384);
        assert!((6_300..=6_666).contains(&typical), "{typical} entries held");
    }

    /// A full working set of distinct tokens, each used in turn (many
    /// clients, each reusing its own token): every token is admitted on its
    /// second sighting and then answered from the cache. With one slot per
    /// hash, tokens sharing a slot took turns overwriting each other's mark
    /// and were never admitted; and a lookup gated on the doorkeeper missed
    /// cached tokens whose mark had been overwritten since.
    #[tokio::test]
    async fn every_token_of_a_full_working_set_is_admitted_and_hit() {
        let n = 4000;
        // Room for a quarter more: moka's eviction is approximate right at
        // its bound, and the doorkeeper is what is under test.
        let cache = TokenCache::new(n as u64 * 5 / 4, 1 << 30);
        let now = now_secs();
        let entry = entry_maker(now);
        let tokens: Vec<String> = (0..n).map(|i| format!("h.p.sig{i:032}")).collect();
        for _sighting in 0..2 {
            for t in &tokens {
                if cache.get(t, now).is_none() {
                    cache.admit(t, entry());
                }
            }
        }
        let hits = tokens
            .iter()
            .filter(|t| cache.get(t, now).is_some())
            .count();
        assert_eq!(hits, n, "every token of the working set is cached");
        // More first sightings of other tokens (a busy doorkeeper) do not
        // turn cached tokens into misses.
        for i in 0..4 * n {
            cache.admit(&format!("h.p.{i:031}-other"), entry());
        }
        let hits = tokens
            .iter()
            .filter(|t| cache.get(t, now).is_some())
            .count();
        assert_eq!(hits, n, "cached tokens stay hits");
    }
}
