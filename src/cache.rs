//! The verified-token cache: a verdict is kept, from a token's second
//! sighting, for as long as every time rule it met holds (its [`Window`]) and
//! the key that verified it is still published. Bounded by entries and bytes.
//!
//! Its own structure, not moka (which the crate still uses for DPoP proof
//! keys): a hit must cost a lookup, not a lookup plus the bookkeeping of an
//! LFU policy. The cache is split into shards, each a `RwLock` over a hash
//! index (hashbrown's `HashTable`) into a vector of entries. A hit takes the
//! shard's read lock, compares, clones the principal and marks the entry
//! referenced (a relaxed store, skipped when already marked). The insert
//! that needs room first drops the shard's expired entries (when one may
//! have expired), then evicts by CLOCK (second chance): a new entry takes
//! its victim's place behind the hand. Admission is the [`Doorkeeper`]'s:
//! only a token verified twice enters, so one-off tokens never push hot
//! ones out. An entry heavier than a shard's part of the bounds is not
//! cached.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use crate::claims::Window;
use crate::keystore::KeyStore;
use crate::principal::Principal;

/// Verified tokens, keyed by the whole token (two tokens never collide).
/// A hit is refused outside the entry's [`Window`]; expired entries stay
/// until an insert needs room. Only successes are cached, and only from
/// their second sighting (see [`Doorkeeper`]).
pub(crate) struct TokenCache {
    shards: Box<[Shard]>,
    /// Hashes a token's [`tag`] and length with foldhash, seeded at random
    /// (minimally DoS-resistant, and a few ns for the 24 bytes where
    /// SipHash takes ~60): the tags are verified tokens' signature bytes,
    /// which callers cannot choose, and lookups insert nothing.
    hasher: foldhash::fast::RandomState,
    /// `log2(shards.len())`.
    shard_bits: u32,
    /// Bytes per weight unit (see [`TokenCache::new`]).
    unit: u64,
    /// Each shard's part of the capacity, in units: a heavier entry is not
    /// cached.
    shard_budget: u64,
    /// `m2m_guard_token_cache_hits_total`, batched (see [`crate::metrics`]).
    hits: crate::metrics::BatchedCounter,
    doorkeeper: Doorkeeper,
}

/// One shard, on cache lines of its own: its lock word is written by every
/// read.
#[repr(align(128))]
struct Shard(RwLock<Entries>);

impl Shard {
    // Poisoning cannot leave a shard half-written: the write sections index
    // only within bounds they just checked, and an allocation failure aborts.
    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// At most this many shards (a power of two); fewer for small caches, so
/// that each holds at least [`MIN_SHARD_ENTRIES`] entries (a working set
/// near the bound spreads evenly enough over them) and [`MIN_SHARD_BYTES`]
/// (large tokens still fit in one).
const MAX_SHARDS: u64 = 1024;
const MIN_SHARD_ENTRIES: u64 = 256;
const MIN_SHARD_BYTES: u64 = 256 * 1024;

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

/// One shard's entries: a dense vector (the CLOCK hand walks it) and a hash
/// index of positions in it. Each entry keeps its hash, so the index is
/// rebuilt from the vector alone and probing compares hashes before it
/// reads a token.
struct Entries {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// The sum of the slots' weights, at most `budget`.
    weight: u64,
    budget: u64,
    /// The CLOCK hand: the next slot eviction looks at.
    hand: usize,
    /// No slot's window ends before this (a lower bound: removals leave it).
    earliest_end: u64,
}

struct Slot {
    hash: u64,
    tag: [u8; TAG],
    /// The whole token: equality is exact, never by hash.
    token: Box<[u8]>,
    entry: CachedToken,
    weight: u64,
    /// Read since the hand last passed: spared once.
    referenced: AtomicBool,
}

impl Slot {
    fn is(&self, hash: u64, tag: &[u8; TAG], token: &[u8]) -> bool {
        self.hash == hash && self.tag == *tag && {
            // Almost surely the hit: among many clients' tokens its
            // principal is cold too, so have it loading while the token's
            // bytes are compared, not after.
            self.entry.principal.touch();
            *self.token == *token
        }
    }
}

impl Entries {
    fn new(budget: u64) -> Self {
        Entries {
            index: HashTable::new(),
            slots: Vec::new(),
            weight: 0,
            budget,
            hand: 0,
            earliest_end: u64::MAX,
        }
    }

    fn find(&self, hash: u64, tag: &[u8; TAG], token: &[u8]) -> Option<usize> {
        self.index
            .find(hash, |&i| {
                self.slots
                    .get(i as usize)
                    .is_some_and(|s| s.is(hash, tag, token))
            })
            .map(|&i| i as usize)
    }

    /// Insert `slot` (at most `budget` heavy), making room: first by
    /// dropping expired entries, then by CLOCK. What leaves goes to
    /// `dropped`, to be freed outside the lock. When one eviction makes
    /// room, the new entry takes the victim's place and the hand moves past
    /// it, so the hand comes back to it only after a full turn: time to be
    /// read and spared.
    fn insert(&mut self, slot: Slot, now: u64, dropped: &mut Vec<Slot>) {
        if let Some(i) = self.find(slot.hash, &slot.tag, &slot.token) {
            dropped.push(self.remove(i));
        }
        if self.weight + slot.weight > self.budget && now >= self.earliest_end {
            self.purge(now, dropped);
        }
        while self.weight + slot.weight > self.budget {
            let victim = self.next_victim();
            if self.weight - self.slots[victim].weight + slot.weight <= self.budget {
                dropped.push(self.replace(victim, slot));
                self.hand = victim + 1;
                return;
            }
            // Not enough on its own: it goes, and the slot moved into its
            // place is looked at next.
            dropped.push(self.remove(victim));
        }
        let Ok(position) = u32::try_from(self.slots.len()) else {
            dropped.push(slot);
            return;
        };
        self.weight += slot.weight;
        self.earliest_end = self.earliest_end.min(slot.entry.window.until);
        let hash = slot.hash;
        self.slots.push(slot);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, position, |&i| slots[i as usize].hash);
    }

    /// The first slot, from the hand on, not read since the hand last
    /// passed it; the marks on the way are cleared, and the hand stops
    /// there. Found within a turn and a slot. Called only while
    /// `weight > 0`, so some slot exists.
    fn next_victim(&mut self) -> usize {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            if !std::mem::take(self.slots[self.hand].referenced.get_mut()) {
                return self.hand;
            }
            self.hand += 1;
        }
    }

    /// Put `slot` at `i` in place of the slot there, which is returned.
    fn replace(&mut self, i: usize, slot: Slot) -> Slot {
        let old = self.slots[i].hash;
        if let Ok(found) = self.index.find_entry(old, |&p| p as usize == i) {
            found.remove();
        }
        self.weight = self.weight - self.slots[i].weight + slot.weight;
        self.earliest_end = self.earliest_end.min(slot.entry.window.until);
        let hash = slot.hash;
        let replaced = std::mem::replace(&mut self.slots[i], slot);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i as u32, |&p| slots[p as usize].hash);
        replaced
    }

    /// Remove the slot at `i`; the last slot takes its place.
    fn remove(&mut self, i: usize) -> Slot {
        let hash = self.slots[i].hash;
        if let Ok(found) = self.index.find_entry(hash, |&p| p as usize == i) {
            found.remove();
        }
        let last = self.slots.len() - 1;
        if i != last {
            let moved = self.slots[last].hash;
            if let Some(p) = self.index.find_mut(moved, |&p| p as usize == last) {
                *p = i as u32;
            }
        }
        let slot = self.slots.swap_remove(i);
        self.weight -= slot.weight;
        slot
    }

    /// Drop every entry whose window ended, into `dropped`.
    fn purge(&mut self, now: u64, dropped: &mut Vec<Slot>) {
        let mut i = 0;
        let mut earliest = u64::MAX;
        while i < self.slots.len() {
            let until = self.slots[i].entry.window.until;
            if until <= now {
                // The last slot moved into `i`: looked at next.
                dropped.push(self.remove(i));
            } else {
                earliest = earliest.min(until);
                i += 1;
            }
        }
        self.earliest_end = earliest;
    }

    /// How many entries are valid (by their window's end) at `now`.
    fn live(&self, now: u64) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.entry.window.until > now)
            .count() as u64
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
        // half an entry's share. Each shard gets an equal part.
        let slots = max_entries.max(1).saturating_mul(2);
        let unit = (max_bytes / slots).max(1);
        let capacity = (max_bytes / unit).clamp(2, slots);
        let shards = (max_entries / MIN_SHARD_ENTRIES)
            .min(max_bytes / MIN_SHARD_BYTES)
            .clamp(1, MAX_SHARDS);
        let shard_bits = shards.ilog2();
        let shards = 1u64 << shard_bits;
        // With one shard the budget is the capacity (at least 2); more
        // shards need at least 256 entries, so 512 units, each.
        let budget = capacity / shards;
        // First sightings are remembered for as many tokens as can be
        // cached: the entry bound, or the byte bound filled with the
        // smallest entries, whichever is less (so a large entry bound under
        // a small byte bound allocates no filter it could never use).
        let fits = max_entries.min(max_bytes / entry_bytes(0, 0)).max(1);
        TokenCache {
            shards: (0..shards)
                .map(|_| Shard(RwLock::new(Entries::new(budget))))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            shard_bits,
            unit,
            shard_budget: budget,
            hits: crate::metrics::cache_hits(),
            doorkeeper: Doorkeeper::new(usize::try_from(fits).unwrap_or(usize::MAX)),
        }
    }

    /// The hash of a token with this tag and length.
    fn hash(&self, tag: &[u8; TAG], len: usize) -> u64 {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = self.hasher.build_hasher();
        h.write(tag);
        h.write_usize(len);
        h.finish()
    }

    /// The shard of `hash`: bits 32 and up, which neither hashbrown's
    /// bucket index (the low bits) nor its control byte (the top 7) uses.
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash >> 32) as usize & ((1usize << self.shard_bits) - 1)]
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Entries> {
        self.shard(hash).read()
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Entries> {
        self.shard(hash).write()
    }

    /// The cached verdict for `token` at wall-clock time `now`, if it was
    /// verified before and is still valid. Never does I/O or signature work.
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
        let tag = tag(token);
        let hash = self.hash(&tag, token.len());
        {
            let entries = self.read(hash);
            let slot = &entries.slots[entries.find(hash, &tag, token)?];
            let hit = &slot.entry;
            // Outside its window the entry is refused but kept (the wall
            // clock may step back); eviction and `len` take expired ones.
            if !hit.window.contains(now) {
                return None;
            }
            if hit.store.holds(hit.key_id) {
                if !slot.referenced.load(Relaxed) {
                    slot.referenced.store(true, Relaxed);
                }
                return Some(hit.principal.clone());
            }
        }
        // Its key was withdrawn (or none is usable): the entry goes.
        self.remove(hash, &tag, token);
        None
    }

    fn remove(&self, hash: u64, tag: &[u8; TAG], token: &[u8]) {
        let _removed = {
            let mut entries = self.write(hash);
            entries.find(hash, tag, token).map(|i| entries.remove(i))
        }; // freed here, outside the lock
    }

    /// Drop `token`'s verdict (it was revoked).
    pub(crate) fn invalidate(&self, token: &(impl AsRef<[u8]> + ?Sized)) {
        let token = token.as_ref();
        let tag = tag(token);
        self.remove(self.hash(&tag, token.len()), &tag, token);
    }

    /// A token just verified, at wall-clock time `now`: cached on its second
    /// verified sighting, so a token seen once costs no insert and a flood
    /// of one-off (or invalid) tokens cannot push the hot ones out.
    pub(crate) fn admit(&self, token: &str, entry: CachedToken, now: u64) {
        if !self.doorkeeper.seen_before(token) {
            return;
        }
        let weight = entry_bytes(token.len(), entry.principal.claims().len())
            .div_ceil(self.unit)
            .max(2);
        if weight > self.shard_budget {
            return; // heavier than a shard: never cached
        }
        let tag = tag(token);
        let hash = self.hash(&tag, token.len());
        let slot = Slot {
            hash,
            tag,
            token: token.as_bytes().into(),
            entry,
            weight,
            referenced: AtomicBool::new(false),
        };
        let mut dropped = Vec::new();
        self.write(hash).insert(slot, now, &mut dropped);
        drop(dropped); // outside the lock
        crate::metrics::cache("admission");
    }

    /// Hand the batched hit count to the recorder in use.
    pub(crate) fn flush_metrics(&self) {
        self.hits.flush();
    }

    /// How many cached verdicts are still valid at wall-clock time `now`:
    /// expired entries, which eviction drops first, are not counted. Reads
    /// every entry, one shard's read lock at a time.
    pub(crate) fn len(&self, now: u64) -> u64 {
        self.shards.iter().map(|s| s.read().live(now)).sum()
    }

    /// The total weight the shards may hold, in units.
    #[cfg(test)]
    fn capacity(&self) -> u64 {
        self.shards.iter().map(|s| s.0.read().unwrap().budget).sum()
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

/// Resident size of one cache entry in bytes: the token itself, the
/// decoded claims (JSON values, map nodes and strings: about twice the
/// encoded payload, which is about 3/4 of the token) and fixed overhead
/// (principal, entry, index; an overestimate since the cache left moka). Measured with `benches/memory.rs`.
pub(crate) fn entry_bytes(token_len: usize, claim_count: usize) -> u64 {
    768 + token_len as u64 * 5 / 2 + claim_count as u64 * 96
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::now_secs;
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
        let make = client_entry_maker(now);
        move || make("c")
    }

    /// Makes entries like [`entry`] for a given client, all verified by one
    /// key store.
    fn client_entry_maker(now: u64) -> impl Fn(&str) -> CachedToken + Send + Sync {
        let set = test_key_set();
        let Lookup::Found(key) = set.find(Some("k"), Algorithm::ES256) else {
            panic!("the key is found");
        };
        let key_id = key.id;
        let store = KeyStore::preloaded(set);
        move |client: &str| CachedToken {
            principal: Principal::from_parts(PrincipalParts {
                issuer: "https://issuer.example".into(),
                metrics: Arc::new(crate::metrics::IssuerMetrics::new(
                    &"https://issuer.example".into(),
                    false,
                )),
                subject: None,
                client_id: Some(client.into()),
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
        cache.admit(token, entry, now);
        assert_eq!(cache.len(now), 1);
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
        let cache = TokenCache::new(100, 1 << 20);
        let h = |t: &str| cache.hash(&tag(t), t.len());
        let a = "x".repeat(100) + &"s".repeat(TAG);
        let b = "y".repeat(100) + &"s".repeat(TAG);
        assert_eq!(h(&a), h(&b), "same tag and length");
        let longer = "x".repeat(101) + &"s".repeat(TAG);
        assert_ne!(h(&a), h(&longer));
        let other_tag = "x".repeat(100) + &"t".repeat(TAG);
        assert_ne!(h(&a), h(&other_tag));
        assert_ne!(h("short"), h("shorT"));
        assert_eq!(tag("ab"), *b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0ab");
        assert_eq!(&tag(&a), b"ssssssssssssssss");
        // Equality: hashes, tags, then whole tokens.
        let now = now_secs();
        let slot = |t: &str| Slot {
            hash: h(t),
            tag: tag(t),
            token: t.as_bytes().into(),
            entry: entry(now),
            weight: 2,
            referenced: AtomicBool::new(false),
        };
        let sa = slot(&a);
        assert!(sa.is(h(&a), &tag(&a), a.as_bytes()));
        assert!(
            !sa.is(h(&b), &tag(&b), b.as_bytes()),
            "same tag, other token"
        );
        assert!(!sa.is(h(&other_tag), &tag(&other_tag), other_tag.as_bytes()));
        assert!(
            !sa.is(h(&a) ^ 1, &tag(&a), a.as_bytes()),
            "the hashes are compared"
        );
        assert!(
            !sa.is(h(&a), &tag(&other_tag), a.as_bytes()),
            "the tags are compared"
        );
    }

    #[tokio::test]
    async fn tokens_with_one_hash_are_still_told_apart() {
        // Same tail, same length: one hash. Equality compares whole tokens.
        let a = "x".repeat(100) + &"s".repeat(TAG);
        let b = "y".repeat(100) + &"s".repeat(TAG);
        let cache = TokenCache::new(100, 1 << 20);
        let now = now_secs();
        cache.doorkeeper.seen_before(&a);
        cache.admit(&a, entry(now), now);
        assert!(cache.get(&a, now).is_some());
        assert!(
            cache.doorkeeper.contains(&b),
            "the doorkeeper cannot tell them apart"
        );
        assert!(cache.get(&b, now).is_none(), "the cache can");
    }

    /// The filter remembers first sightings of as many tokens as the cache
    /// can hold: the entry bound, or the byte bound filled with the
    /// smallest entries (768 bytes), whichever is less.
    #[test]
    fn the_doorkeeper_is_sized_by_what_can_be_cached() {
        let slots = |entries, bytes| TokenCache::new(entries, bytes).doorkeeper.slots.len();
        assert_eq!(entry_bytes(0, 0), 768);
        assert_eq!(slots(10_000, 32 << 20), 32_768);
        assert_eq!(slots(100_000_000, 1024), 1024);
        assert_eq!(slots(100_000_000, 768 * 10_000), 32_768);
        assert_eq!(slots(10_000, 768 * 100_000_000), 32_768);
        assert_eq!(slots(100_000_000, 1 << 40), 1 << 23);
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
            // Each shard gets an equal part, rounded down.
            let (got, shards) = (cache.capacity(), cache.shards.len() as u64);
            assert!(
                got <= want && got + shards > want,
                "{entries} entries, {bytes} bytes: {got} units in {shards} shards"
            );
        }
        assert_eq!(TokenCache::new(10_000, 32 << 20).shards.len(), 32);
        assert_eq!(TokenCache::new(1_000, 32 << 20).shards.len(), 2);
        assert_eq!(TokenCache::new(511, 32 << 20).shards.len(), 1);
        assert_eq!(TokenCache::new(100_000_000, 1 << 40).shards.len(), 1024);
        // Few bytes for many entries: one shard, so a typical entry still
        // fits (32 shards of 2 KiB would have cached nothing).
        let small = TokenCache::new(100_000, 64 << 10);
        assert_eq!(small.shards.len(), 1);
        let now = now_secs();
        let t = format!("h.{}.sig", "p".repeat(1384));
        small.doorkeeper.seen_before(&t);
        small.admit(&t, entry(now), now);
        assert!(small.get(&t, now).is_some());
        let entry = entry_maker(now);
        let held = |cache: &TokenCache, n: usize, token_len: usize| {
            for i in 0..n {
                let t = format!("h.{}.{i:032}", "p".repeat(token_len - 35));
                cache.doorkeeper.seen_before(&t);
                cache.admit(&t, entry(), now);
            }
            cache.len(now)
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
        // Room for half as many more: each shard holds its equal part (16
        // shards of 375, loads of 250 ± 16), and the doorkeeper is what is
        // under test.
        let cache = TokenCache::new(n as u64 * 3 / 2, 1 << 30);
        let now = now_secs();
        let entry = entry_maker(now);
        let tokens: Vec<String> = (0..n).map(|i| format!("h.p.sig{i:032}")).collect();
        for _sighting in 0..2 {
            for t in &tokens {
                if cache.get(t, now).is_none() {
                    cache.admit(t, entry(), now);
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
            cache.admit(&format!("h.p.{i:031}-other"), entry(), now);
        }
        let hits = tokens
            .iter()
            .filter(|t| cache.get(t, now).is_some())
            .count();
        assert_eq!(hits, n, "cached tokens stay hits");
    }

    /// Admit `t` (its second sighting) into `cache` at `now`.
    fn admit_now(cache: &TokenCache, t: &str, e: CachedToken, now: u64) {
        cache.doorkeeper.seen_before(t);
        cache.admit(t, e, now);
    }

    /// CLOCK: an entry read since the hand last passed is spared once, an
    /// unread one goes; one heavier than its shard is not kept. One shard of
    /// four typical entries.
    #[tokio::test]
    async fn eviction_spares_entries_read_since_the_hand_passed() {
        let cache = TokenCache::new(4, 1 << 20);
        assert_eq!(cache.shards.len(), 1);
        let now = now_secs();
        let entry = entry_maker(now);
        for t in ["h.p.a", "h.p.b", "h.p.c", "h.p.d"] {
            admit_now(&cache, t, entry(), now);
        }
        assert_eq!(cache.len(now), 4);
        // a and c read: the next two inserts take b and d.
        assert!(cache.get("h.p.a", now).is_some());
        assert!(cache.get("h.p.c", now).is_some());
        admit_now(&cache, "h.p.e", entry(), now);
        admit_now(&cache, "h.p.f", entry(), now);
        let held = |ts: &[&str]| ts.iter().filter(|t| cache.get(**t, now).is_some()).count();
        assert_eq!(held(&["h.p.b", "h.p.d"]), 0);
        assert_eq!(held(&["h.p.a", "h.p.c", "h.p.e", "h.p.f"]), 4);
        // Too heavy for the shard: not kept, and nothing is evicted for it.
        let huge = format!("h.{}.x", "p".repeat(1 << 20));
        admit_now(&cache, &huge, entry(), now);
        assert!(cache.get(&huge, now).is_none());
        assert_eq!(cache.len(now), 4);
    }

    /// A new entry gets a turn of the hand before it can be evicted: tokens
    /// admitted in turn and read a few admissions later stay, while the old
    /// entries nobody reads go. (With the newest entry moved to where the
    /// hand stood, each newcomer went at the next insert and the stale
    /// entries stayed.)
    #[tokio::test]
    async fn new_entries_get_a_full_turn_and_unread_old_ones_go() {
        let cache = TokenCache::new(16, 1 << 20);
        let now = now_secs();
        let entry = entry_maker(now);
        let stale: Vec<String> = (0..16).map(|i| format!("h.p.stale{i:02}")).collect();
        for t in &stale {
            admit_now(&cache, t, entry(), now);
        }
        let fresh: Vec<String> = (0..48).map(|i| format!("h.p.fresh{i:02}")).collect();
        let mut hits = 0;
        for (i, t) in fresh.iter().enumerate() {
            admit_now(&cache, t, entry(), now);
            // Each newcomer is read again three admissions later.
            if i >= 3 && cache.get(&fresh[i - 3], now).is_some() {
                hits += 1;
            }
        }
        // Textbook CLOCK on a ring of 16, simulated, gives 39 of 45: once
        // every entry has been read, the hand sweeps a whole turn clearing
        // marks and takes the newest, not yet read. With the newest entry
        // moved to where the hand stood, newcomers went at the next insert.
        assert_eq!(hits, 39, "newcomers stay until read, as in CLOCK");
        let stale_held = stale
            .iter()
            .filter(|t| cache.get(*t, now).is_some())
            .count();
        assert_eq!(stale_held, 0, "the unread old entries went");
    }

    /// When room is needed, expired entries go before any live one, read
    /// or not, wherever the hand stands.
    #[tokio::test]
    async fn expired_entries_go_before_live_ones() {
        let cache = TokenCache::new(4, 1 << 20);
        let now = now_secs();
        let entry = entry_maker(now);
        for t in ["h.p.a", "h.p.b", "h.p.c", "h.p.d"] {
            admit_now(&cache, t, entry(), now);
        }
        // Nothing read; c and d (behind a and b for the hand) have expired.
        let mut expiring = entry();
        expiring.window.until = now + 5;
        admit_now(&cache, "h.p.c", expiring, now);
        let mut expiring = entry();
        expiring.window.until = now + 5;
        admit_now(&cache, "h.p.d", expiring, now);
        let later = now + 5;
        assert_eq!(cache.len(later), 2, "a and b are live, c and d expired");
        admit_now(&cache, "h.p.e", entry(), later);
        admit_now(&cache, "h.p.f", entry(), later);
        let held = |ts: &[&str]| {
            ts.iter()
                .filter(|t| cache.get(**t, later).is_some())
                .count()
        };
        assert_eq!(held(&["h.p.a", "h.p.b", "h.p.e", "h.p.f"]), 4);
        let entries = cache.shards[0].read();
        assert_eq!(entries.slots.len(), 4, "c and d are gone, not only refused");
        assert_eq!(entries.earliest_end, now + 100);
    }

    /// An entry heavier than its victim takes as many places as it needs:
    /// the shard's weight never passes its budget (the byte bound).
    #[tokio::test]
    async fn a_heavier_entry_takes_as_many_places_as_it_needs() {
        let cache = TokenCache::new(4, 1 << 20);
        let now = now_secs();
        let entry = entry_maker(now);
        for t in ["h.p.a", "h.p.b", "h.p.c", "h.p.d"] {
            admit_now(&cache, t, entry(), now);
        }
        // About 110 KB: three units of 128 KiB where the others weigh two.
        let heavy = format!("h.p.{}", "x".repeat(110_000));
        admit_now(&cache, &heavy, entry(), now);
        let entries = cache.shards[0].read();
        let weights: Vec<u64> = entries.slots.iter().map(|s| s.weight).collect();
        assert_eq!(weights.iter().sum::<u64>(), entries.weight);
        assert_eq!(
            entries.weight, 7,
            "two light entries went for one heavy: {weights:?}"
        );
        assert!(entries.weight <= entries.budget);
        drop(entries);
        assert!(cache.get(&heavy, now).is_some());
    }

    /// Expired entries are refused at once but only swept out when an
    /// insert needs room: an insert that still fits (to the exact budget)
    /// leaves them, the next one that does not sweeps them all first.
    #[tokio::test]
    async fn expired_entries_stay_until_room_is_needed() {
        let cache = TokenCache::new(4, 1 << 20);
        assert_eq!((cache.shards.len(), cache.shard_budget), (1, 8));
        let now = now_secs();
        let entry = entry_maker(now);
        for t in ["h.p.a", "h.p.b", "h.p.c"] {
            let mut expiring = entry();
            expiring.window.until = now + 5;
            admit_now(&cache, t, expiring, now);
        }
        let later = now + 5;
        assert_eq!(cache.len(later), 0);
        // Three entries of weight 2 and a fourth: exactly the budget.
        admit_now(&cache, "h.p.d", entry(), later);
        {
            let entries = cache.shards[0].read();
            assert_eq!(
                (entries.slots.len(), entries.weight),
                (4, 8),
                "nothing swept yet"
            );
        }
        assert!(
            cache.get("h.p.a", later).is_none(),
            "an expired entry is refused"
        );
        admit_now(&cache, "h.p.e", entry(), later);
        let entries = cache.shards[0].read();
        assert_eq!(
            (entries.slots.len(), entries.weight),
            (2, 4),
            "swept, then inserted"
        );
        drop(entries);
        assert!(cache.get("h.p.d", later).is_some() && cache.get("h.p.e", later).is_some());
    }

    /// Many threads reading, admitting, revoking and counting at once: every
    /// hit is its own token's verdict, and the shards stay consistent.
    #[test]
    fn concurrent_use_keeps_every_verdict_with_its_token() {
        let cache = Arc::new(TokenCache::new(600, 1 << 30));
        assert_eq!(cache.shards.len(), 2);
        let now = now_secs();
        let base = Arc::new(client_entry_maker(now));
        let threads: Vec<_> = (0..4u64)
            .map(|n| {
                let (cache, base) = (cache.clone(), base.clone());
                std::thread::spawn(move || {
                    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let client = format!("client{}", x % 1000);
                        let token = format!("h.p.{client}");
                        match x % 16 {
                            0 => cache.invalidate(&token),
                            1 => _ = cache.len(now),
                            2..=5 => {
                                cache.admit(&token, base(&client), now);
                            }
                            _ => {
                                if let Some(p) = cache.get(&token, now) {
                                    assert_eq!(p.client_id(), Some(client.as_str()));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut held = 0;
        for shard in cache.shards.iter() {
            let entries = shard.read();
            assert_consistent(&entries);
            held += entries.slots.len();
        }
        assert!(held > 0 && held <= 600, "{held} held");
    }

    /// The index, the weight and the earliest end agree with the entries.
    fn assert_consistent(entries: &Entries) {
        assert_eq!(entries.index.len(), entries.slots.len());
        assert_eq!(
            entries.weight,
            entries.slots.iter().map(|s| s.weight).sum::<u64>()
        );
        assert!(entries.weight <= entries.budget);
        for (i, s) in entries.slots.iter().enumerate() {
            assert_eq!(entries.find(s.hash, &s.tag, &s.token), Some(i));
            assert!(entries.earliest_end <= s.entry.window.until);
        }
    }

    /// A cache of one entry holds one: an entry exactly as heavy as its
    /// shard's budget is cached (only a heavier one is not).
    #[tokio::test]
    async fn a_cache_of_one_holds_one() {
        let cache = TokenCache::new(1, 1 << 20);
        assert_eq!(cache.shard_budget, 2);
        let now = now_secs();
        let entry = entry_maker(now);
        admit_now(&cache, "h.p.a", entry(), now);
        assert!(cache.get("h.p.a", now).is_some());
        admit_now(&cache, "h.p.b", entry(), now);
        assert!(cache.get("h.p.b", now).is_some() && cache.get("h.p.a", now).is_none());
        assert_eq!(cache.len(now), 1);
    }

    /// A revoked token's entry and one whose key left the key set are
    /// removed, not only refused: they hold no place the live ones need.
    #[tokio::test]
    async fn revoked_and_withdrawn_entries_leave() {
        let cache = TokenCache::new(4, 1 << 20);
        let now = now_secs();
        let entry = entry_maker(now);
        let mut withdrawn = entry();
        withdrawn.key_id = u64::MAX; // no key of the set has it
        admit_now(&cache, "h.p.a", entry(), now);
        admit_now(&cache, "h.p.b", entry(), now);
        admit_now(&cache, "h.p.c", withdrawn, now);
        assert_eq!(cache.shards[0].read().slots.len(), 3);
        cache.invalidate("h.p.a");
        assert!(cache.get("h.p.c", now).is_none());
        let entries = cache.shards[0].read();
        assert_eq!(entries.slots.len(), 1, "only b is left");
        assert_eq!(entries.weight, 2);
        drop(entries);
        assert!(cache.get("h.p.a", now).is_none() && cache.get("h.p.b", now).is_some());
    }

    /// A full cache: nearly every insert replaces an entry in place. The
    /// index follows each replacement (no stale position left, no other
    /// entry's position taken), with half the tokens sharing one hash.
    #[tokio::test]
    async fn replacements_keep_the_index_whole() {
        let cache = TokenCache::new(8, 1 << 30);
        assert_eq!(cache.shards.len(), 1);
        let now = now_secs();
        let entry = entry_maker(now);
        let token = |k: u32| {
            if k.is_multiple_of(2) {
                format!("{k:03}.p.one-tail-for-all")
            } else {
                format!("h.p.{k:015}")
            }
        };
        for round in 0..400u32 {
            let t = token(round.wrapping_mul(7919) % 97);
            if round % 3 == 0 {
                _ = cache.get(&t, now);
            } else {
                admit_now(&cache, &t, entry(), now);
            }
            assert_consistent(&cache.shards[0].read());
        }
        assert_eq!(cache.shards[0].read().slots.len(), 8);
    }

    /// Removal moves the last entry into the gap, a replacement puts a new
    /// entry in place of another: the index must follow, through any order
    /// of inserts, reads, evictions, expiries and removals, with half the
    /// tokens sharing one hash (same tail, same length).
    #[tokio::test]
    async fn the_index_follows_the_entries_through_every_change() {
        let cache = TokenCache::new(64, 1 << 30);
        assert_eq!(cache.shards.len(), 1);
        let start = now_secs();
        let entry = entry_maker(start);
        let token = |k: u32| {
            if k.is_multiple_of(2) {
                format!("{k:03}.p.one-tail-for-all")
            } else {
                format!("h.p.{k:015}")
            }
        };
        let (a, b) = (token(0), token(2));
        assert_eq!(a.len(), b.len());
        assert_eq!(cache.hash(&tag(&a), a.len()), cache.hash(&tag(&b), b.len()));
        for round in 0..1200u32 {
            let now = start + u64::from(round / 60);
            let k = round.wrapping_mul(7919) % 151;
            let t = token(k);
            match round % 5 {
                0 => cache.invalidate(&t),
                1 => _ = cache.get(&t, now),
                _ => {
                    let mut e = entry();
                    e.window.until = now + u64::from(k % 5);
                    admit_now(&cache, &t, e, now);
                }
            }
            assert_consistent(&cache.shards[0].read());
        }
        // A purge leaves no expired entry, however they lie.
        let later = start + 22;
        let mut entries = cache.shards[0].write();
        assert!(entries.slots.iter().any(|s| s.entry.window.until <= later));
        let mut dropped = Vec::new();
        entries.purge(later, &mut dropped);
        assert!(!dropped.is_empty());
        assert!(entries.slots.iter().all(|s| s.entry.window.until > later));
        let earliest = entries.slots.iter().map(|s| s.entry.window.until).min();
        assert_eq!(Some(entries.earliest_end), earliest.or(Some(u64::MAX)));
    }

    /// The hash is keyed at random per cache: which tokens share a shard
    /// or a bucket cannot be worked out in advance.
    #[test]
    fn each_cache_hashes_with_its_own_key() {
        let (a, b) = (TokenCache::new(10, 1 << 20), TokenCache::new(10, 1 << 20));
        let t = tag("h.p.signature-bytes");
        assert_ne!(a.hash(&t, 19), b.hash(&t, 19));
    }
}
