//! The verification path: parse, pick the issuer, pick the key, verify the
//! signature, then check the claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::VerifierBuilder;
use crate::error::{BuildError, Reason, Rejection};
use crate::jwks::{KeySet, Lookup};
use crate::keystore::{KeyStore, KidMiss, Snapshot};
use crate::principal::{Principal, PrincipalParts, Scopes};
use crate::token::{self, Algorithm, Object, Unverified};

/// Verifies M2M access tokens against one or more trusted issuers.
///
/// Cheap to clone: clones share the key caches. Build it with
/// [`Verifier::builder`], then either call [`Verifier::verify`] yourself or
/// hand it to [`M2mAuthLayer`](crate::M2mAuthLayer).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

pub(crate) struct VerifierInner {
    pub(crate) issuers: HashMap<String, IssuerVerifier>,
    pub(crate) max_token_bytes: usize,
    pub(crate) cache: Option<TokenCache>,
}

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

pub(crate) struct CachedToken {
    principal: Principal,
    /// The key store and key instance that verified it: a refresh that
    /// withdraws the key ends the entry's validity at once.
    store: Arc<KeyStore>,
    key_id: u64,
    /// Every time rule the token met, as one window.
    window: Window,
}

/// The whole seconds during which every time-based rule holds: valid while
/// `from <= now < until`. The intersection of `exp`, `nbf`, `iat` (not in the
/// future) and the maximum age, each with the leeway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    from: u64,
    until: u64,
}

impl Window {
    fn contains(&self, now: u64) -> bool {
        self.from <= now && now < self.until
    }
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

/// Build the token cache: at most `max_entries` entries and about `max_bytes`.
pub(crate) fn token_cache(max_entries: u64, max_bytes: u64) -> TokenCache {
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

/// Resident size of one cache entry, rounded up to KiB: the token itself,
/// the decoded claims (JSON values, map nodes and strings: about twice the
/// encoded payload, which is about 3/4 of the token) and fixed overhead
/// (principal, entry, moka's bookkeeping). Measured with `benches/memory.rs`.
pub(crate) fn entry_kib(token_len: usize, claim_count: usize) -> u64 {
    let bytes = 768 + token_len as u64 * 5 / 2 + claim_count as u64 * 96;
    bytes.div_ceil(1024)
}

/// Which `typ` header values are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    /// `at+jwt`, `application/at+jwt`, `JWT` or absent.
    Default,
    /// RFC 9068: `at+jwt` / `application/at+jwt` and its required claims.
    Strict,
}

pub(crate) struct IssuerVerifier {
    pub(crate) issuer: Arc<str>,
    pub(crate) audiences: Vec<String>,
    pub(crate) uses_audience: bool,
    pub(crate) token_use: Option<&'static str>,
    pub(crate) leeway: u64,
    pub(crate) max_lifetime: Option<u64>,
    pub(crate) max_age: Option<u64>,
    pub(crate) token_type: TokenType,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) tenant_claim: Option<String>,
    pub(crate) scope_claims: Vec<String>,
    pub(crate) client_id_claims: Vec<String>,
    pub(crate) allowed_client_ids: Option<HashSet<String>>,
    pub(crate) store: Arc<KeyStore>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// Start configuring a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    pub(crate) fn from_inner(inner: VerifierInner) -> Self {
        Verifier {
            inner: Arc::new(inner),
        }
    }

    /// The trusted issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.keys().map(String::as_str)
    }

    /// How many key-set fetches were started for `issuer` so far (for
    /// metrics and tests). `None` for an issuer that is not configured.
    pub fn key_fetch_count(&self, issuer: &str) -> Option<u64> {
        self.inner
            .issuers
            .get(issuer)
            .map(|i| i.store.fetch_count())
    }

    /// How many verified tokens the token cache holds (for metrics). A token
    /// enters the cache on its second sighting.
    pub fn cached_tokens(&self) -> u64 {
        self.inner.cache.as_ref().map_or(0, |c| {
            c.tokens.run_pending_tasks();
            c.tokens.entry_count()
        })
    }

    /// The key-set URL in use for `issuer`: the configured one, or the one
    /// discovery found (`None` before discovery succeeds, and for an issuer
    /// that is not configured).
    pub fn jwks_url(&self, issuer: &str) -> Option<String> {
        self.inner
            .issuers
            .get(issuer)
            .and_then(|i| i.store.url())
            .map(String::from)
    }

    /// Load every issuer's metadata and keys now rather than on the first
    /// request: the way to fail fast at start.
    ///
    /// Without it a service starts even while an issuer is down (requests
    /// get 503 with `Retry-After` until its keys load, then work without a
    /// restart). With it, start-up stops on the first issuer that cannot be
    /// reached, with the reason.
    ///
    /// # Errors
    /// [`BuildError::Unavailable`] naming the first issuer whose discovery
    /// document or key set could not be loaded, and why.
    pub async fn preload(&self) -> Result<(), BuildError> {
        for iv in self.inner.issuers.values() {
            if let Snapshot::Ready(_) = iv.store.snapshot() {
                continue;
            }
            iv.store
                .refresh()
                .await
                .map_err(|cause| BuildError::Unavailable {
                    issuer: iv.issuer.to_string(),
                    cause,
                })?;
        }
        Ok(())
    }

    /// Verify `token` (the bare JWT, without `Bearer `).
    ///
    /// A token verified before is answered from the token cache: every time
    /// rule (`exp`, `nbf`, `iat`, maximum age) is checked again, and the key
    /// that verified it must still be published.
    ///
    /// # Errors
    /// A [`Rejection`] saying why the token is not accepted; see [`Reason`].
    pub async fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        match self.verify_cached(token) {
            Some(p) => Ok(p),
            None => self.verify_cache_miss(token).await,
        }
    }

    /// The full verification, for a token [`Verifier::verify_cached`] did
    /// not answer; caches the verdict from the token's second sighting.
    pub(crate) async fn verify_cache_miss(&self, token: &str) -> Result<Principal, Rejection> {
        let entry = self.verify_uncached(token).await?;
        let principal = entry.principal.clone();
        // Admit a token into the cache on its second verified sighting: a
        // token seen once costs no cache insert, and a flood of one-off (or
        // invalid) tokens cannot push the hot ones out.
        if let Some(cache) = &self.inner.cache
            && cache.doorkeeper.seen_before(token)
        {
            cache.tokens.insert(token.into(), Arc::new(entry));
        }
        Ok(principal)
    }

    /// The cached verdict for `token`, if it was verified before and is
    /// still valid. Never does I/O or signature work.
    pub(crate) fn verify_cached(&self, token: &str) -> Option<Principal> {
        self.verify_cached_at(token, now_secs())
    }

    /// [`Verifier::verify_cached`] at wall-clock time `now`. The cache's own
    /// expiry runs on the monotonic clock, the claims on the wall clock:
    /// when the wall clock jumps ahead (an NTP step, a VM resumed), an entry
    /// outlives its window, and this check is what refuses it.
    fn verify_cached_at(&self, token: &str, now: u64) -> Option<Principal> {
        let cache = self.inner.cache.as_ref()?;
        if !cache.doorkeeper.contains(token) {
            return None;
        }
        let hit = cache.tokens.get(token)?;
        if !hit.window.contains(now) {
            return None;
        }
        match hit.store.snapshot() {
            Snapshot::Ready(keys) if keys.contains_id(hit.key_id) => Some(hit.principal.clone()),
            _ => {
                cache.tokens.invalidate(token);
                None
            }
        }
    }

    async fn verify_uncached(&self, token: &str) -> Result<CachedToken, Rejection> {
        let unverified = token::parse(token, self.inner.max_token_bytes)?;
        // The unverified `iss` only selects which configuration verifies the
        // token; an unknown issuer costs no fetch and no signature check.
        let iss = match unverified.claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, "iss")),
            None => return Err(Rejection::claim(Reason::MissingClaim, "iss")),
        };
        let iv = self
            .inner
            .issuers
            .get(iss)
            .ok_or_else(|| Rejection::new(Reason::UnknownIssuer))?;
        iv.verify(unverified)
            .await
            .map_err(|e| e.with_issuer(iv.issuer.clone()))
    }
}

fn check_typ(typ: Option<&str>, mode: TokenType) -> Result<(), Rejection> {
    let is_at =
        |t: &str| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt");
    let ok = match (typ, mode) {
        (Some(t), TokenType::Strict) => is_at(t),
        (None, TokenType::Strict) => false,
        (Some(t), TokenType::Default) => is_at(t) || t.eq_ignore_ascii_case("jwt"),
        (None, TokenType::Default) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(Reason::InvalidType))
    }
}

/// An RFC 7519 NumericDate in whole seconds, rounded both ways, so each rule
/// can round against the token: `exp` and an age limit count from `floor`,
/// `nbf` and "not issued in the future" from `ceil`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Date {
    floor: u64,
    ceil: u64,
}

/// RFC 7519 NumericDate: a non-negative number of seconds, fraction allowed.
fn numeric_date(claims: &Object, name: &str) -> Result<Option<Date>, Rejection> {
    // 9999-12-31T23:59:59Z: anything later is a forgery or a bug.
    const MAX: u64 = 253_402_300_799;
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                if u <= MAX {
                    return Ok(Some(Date { floor: u, ceil: u }));
                }
            } else if let Some(f) = n.as_f64()
                && f.is_finite()
                && (0.0..=MAX as f64).contains(&f)
            {
                return Ok(Some(Date {
                    floor: f.floor() as u64,
                    ceil: f.ceil() as u64,
                }));
            }
            Err(Rejection::claim(Reason::InvalidClaim, name))
        }
        Some(_) => Err(Rejection::claim(Reason::InvalidClaim, name)),
    }
}

/// An optional claim that must be a non-empty string when present.
fn opt_string(claims: &Object, name: &str) -> Result<Option<String>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::claim(Reason::InvalidClaim, name)),
    }
}

/// What the claim checks read from the claims. Every check runs before the
/// signature (each can only reject), so a token that must fail costs no key
/// work: no fetch, no unknown-kid cooldown.
struct Prechecked {
    window: Window,
    exp: Date,
    iat: Option<Date>,
    subject: Option<String>,
    jti: Option<String>,
    client_id: Option<String>,
    tenant: Option<String>,
    scopes: Scopes,
}

impl IssuerVerifier {
    /// Keys usable now, fetching (shared) when there are none.
    async fn keys_now(&self) -> Result<Arc<KeySet>, Rejection> {
        match self.store.snapshot() {
            Snapshot::Ready(keys) => Ok(keys),
            Snapshot::Unavailable(retry) => Err(Rejection::keys_unavailable(retry)),
            Snapshot::NeedFetch => self
                .store
                .refresh()
                .await
                .map_err(|_| Rejection::keys_unavailable(self.store.retry_after())),
        }
    }

    async fn verify(&self, t: Unverified<'_>) -> Result<CachedToken, Rejection> {
        let alg = t.header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(Rejection::new(Reason::UnsupportedAlgorithm));
        }
        check_typ(t.header.typ.as_deref(), self.token_type)?;
        // Every claim rule runs first (expired, wrong audience, a claim of the
        // wrong type, a client not allowed...): a token that can only fail
        // never costs a fetch or the unknown-kid cooldown.
        let pre = self.precheck(&t.claims, now_secs())?;

        let mut keys = self.keys_now().await?;
        let kid = t.header.kid.as_deref();
        // At most a newer snapshot or two and one refetch per token.
        let mut looks = 0;
        let mut refetched = false;
        loop {
            looks += 1;
            match keys.find(kid, alg) {
                Lookup::Found(key) => {
                    // Strict base64url: one signature, one encoding.
                    let valid = URL_SAFE_NO_PAD
                        .decode(t.signature)
                        .is_ok_and(|sig| key.verify(alg, t.signing_input.as_bytes(), &sig));
                    if !valid {
                        return Err(Rejection::new(Reason::InvalidSignature));
                    }
                    let key_id = key.id;
                    let window = pre.window;
                    return Ok(CachedToken {
                        principal: self.principal(t.claims, pre),
                        store: self.store.clone(),
                        key_id,
                        window,
                    });
                }
                Lookup::WrongAlgorithm => return Err(Rejection::new(Reason::AlgorithmMismatch)),
                Lookup::Ambiguous => return Err(Rejection::new(Reason::AmbiguousKey)),
                Lookup::UnknownKid if refetched || looks > 3 => {
                    // A key set fetched just now lacks the kid.
                    return Err(Rejection::new(Reason::UnknownKey));
                }
                Lookup::UnknownKid => match self.store.on_unknown_kid(&keys) {
                    KidMiss::Newer(newer) => keys = newer,
                    KidMiss::Fresh => return Err(Rejection::new(Reason::UnknownKey)),
                    // Our outage is never the caller's fault: the token may
                    // be signed by a key we cannot fetch yet.
                    KidMiss::Unavailable(retry) => {
                        return Err(Rejection::keys_unavailable(retry));
                    }
                    KidMiss::Refetch(fetch) => {
                        refetched = true;
                        keys = fetch
                            .await
                            .map_err(|_| Rejection::keys_unavailable(self.store.retry_after()))?;
                    }
                },
            }
        }
    }

    /// Every claim rule, on the unverified claims: time rules, audience,
    /// `token_use`, claim types, RFC 9068 required claims, the client allow-list.
    fn precheck(&self, claims: &Object, now: u64) -> Result<Prechecked, Rejection> {
        let leeway = self.leeway;
        // iss was matched exactly when this verifier was selected.
        // RFC 7519 §4.1.4: valid only while now is before exp (+ leeway).
        let exp = numeric_date(claims, "exp")?
            .ok_or_else(|| Rejection::claim(Reason::MissingClaim, "exp"))?;
        let mut window = Window {
            from: 0,
            until: exp.floor.saturating_add(leeway),
        };
        if now >= window.until {
            return Err(Rejection::new(Reason::Expired));
        }
        // §4.1.5: valid from nbf on (- leeway).
        let nbf = numeric_date(claims, "nbf")?;
        if let Some(nbf) = nbf {
            window.from = nbf.ceil.saturating_sub(leeway);
            if now < window.from {
                return Err(Rejection::new(Reason::NotYetValid));
            }
        }
        let iat = numeric_date(claims, "iat")?;
        if let Some(iat) = iat {
            let issued = iat.ceil.saturating_sub(leeway);
            if now < issued {
                return Err(Rejection::new(Reason::IssuedInFuture));
            }
            window.from = window.from.max(issued);
        }
        if let Some(max_age) = self.max_age {
            let iat = iat.ok_or_else(|| Rejection::claim(Reason::MissingClaim, "iat"))?;
            let too_old_at = iat.floor.saturating_add(max_age).saturating_add(leeway);
            if now >= too_old_at {
                return Err(Rejection::new(Reason::TooOld));
            }
            window.until = window.until.min(too_old_at);
        }
        if let Some(max) = self.max_lifetime {
            // Without iat the lifetime is unknown: measuring from now would
            // let an old token pass in its last minutes.
            let iat = iat.ok_or_else(|| Rejection::claim(Reason::MissingClaim, "iat"))?;
            if exp.ceil.saturating_sub(iat.floor) > max {
                return Err(Rejection::new(Reason::LifetimeTooLong));
            }
        }

        if self.uses_audience {
            self.check_audience(claims)?;
        } else if claims.contains_key("aud") {
            // Cognito access tokens never carry `aud`: one that does is an ID token.
            return Err(Rejection::claim(Reason::InvalidClaim, "aud"));
        }
        if let Some(expected) = self.token_use {
            match claims.get("token_use") {
                Some(Value::String(s)) if s == expected => {}
                Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, "token_use")),
                None => return Err(Rejection::claim(Reason::MissingClaim, "token_use")),
            }
        }
        let subject = opt_string(claims, "sub")?;
        let jti = opt_string(claims, "jti")?;
        // Every client-id claim is type-checked, not only up to the first
        // present one: a claim of the wrong type is never read as absent.
        let mut client_id = None;
        for name in &self.client_id_claims {
            let value = opt_string(claims, name)?;
            if client_id.is_none() {
                client_id = value;
            }
        }
        if self.token_type == TokenType::Strict {
            for (name, present) in [
                ("sub", subject.is_some()),
                ("jti", jti.is_some()),
                ("iat", iat.is_some()),
                ("client_id", opt_string(claims, "client_id")?.is_some()),
            ] {
                if !present {
                    return Err(Rejection::claim(Reason::MissingClaim, name));
                }
            }
        }
        if let Some(allowed) = &self.allowed_client_ids {
            match &client_id {
                Some(c) if allowed.contains(c) => {}
                _ => return Err(Rejection::new(Reason::ClientNotAllowed)),
            }
        }
        let tenant = match &self.tenant_claim {
            Some(name) => opt_string(claims, name)?,
            None => None,
        };
        let scopes = self.scopes(claims)?;
        Ok(Prechecked {
            window,
            exp,
            iat,
            subject,
            jti,
            client_id,
            tenant,
            scopes,
        })
    }

    /// The verified principal, once the signature holds.
    fn principal(&self, claims: Object, pre: Prechecked) -> Principal {
        Principal::from_parts(PrincipalParts {
            issuer: self.issuer.clone(),
            subject: pre.subject,
            client_id: pre.client_id,
            tenant: pre.tenant,
            scopes: pre.scopes,
            expires_at: pre.exp.floor,
            issued_at: pre.iat.map(|d| d.floor),
            jti: pre.jti,
            claims,
        })
    }

    fn check_audience(&self, claims: &Object) -> Result<(), Rejection> {
        let ok = match claims.get("aud") {
            None => return Err(Rejection::claim(Reason::MissingClaim, "aud")),
            Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) if !list.is_empty() => {
                let mut ok = false;
                for v in list {
                    let Value::String(a) = v else {
                        return Err(Rejection::claim(Reason::InvalidClaim, "aud"));
                    };
                    ok |= self.audiences.iter().any(|x| x == a);
                }
                ok
            }
            Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, "aud")),
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::new(Reason::InvalidAudience))
        }
    }

    fn scopes(&self, claims: &Object) -> Result<Scopes, Rejection> {
        let mut out = Vec::new();
        for name in &self.scope_claims {
            match claims.get(name) {
                None => {}
                Some(Value::String(s)) => {
                    out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
                }
                Some(Value::Array(list)) => {
                    for v in list {
                        match v {
                            Value::String(s) if !s.is_empty() && !s.contains(' ') => {
                                out.push(s.clone())
                            }
                            _ => return Err(Rejection::claim(Reason::InvalidClaim, name)),
                        }
                    }
                }
                Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, name)),
            }
        }
        Ok(Scopes::from_vec(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::parse_jwks;

    fn test_key_set() -> KeySet {
        let doc = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
            "x": "F1WulCUBEGfuO6Nr1HCYD2LGvhGvA0czde3owaUAAWo",
            "y": "_gg99BuscvD_dcq71U2n3BYKBrji3JnaD-vuH5lkMKo"}]});
        parse_jwks(doc.to_string().as_bytes(), 10).unwrap()
    }

    fn issuer_verifier(max_age: Option<u64>, max_lifetime: Option<u64>) -> IssuerVerifier {
        IssuerVerifier {
            issuer: "https://issuer.example".into(),
            audiences: vec!["api".into()],
            uses_audience: true,
            token_use: None,
            leeway: 60,
            max_lifetime,
            max_age,
            token_type: TokenType::Default,
            algorithms: Algorithm::ALL.to_vec(),
            tenant_claim: None,
            scope_claims: vec!["scope".into()],
            client_id_claims: vec!["client_id".into()],
            allowed_client_ids: None,
            store: KeyStore::preloaded(test_key_set()),
        }
    }

    /// The verdict of the claim rules at `now` for these claims (plus `aud`).
    fn at(iv: &IssuerVerifier, claims: serde_json::Value, now: u64) -> Result<Window, Reason> {
        let mut claims = match claims {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        claims.insert("aud".into(), "api".into());
        iv.precheck(&claims, now)
            .map(|p| p.window)
            .map_err(|e| e.reason())
    }

    #[tokio::test]
    async fn every_time_rule_is_exact_at_its_boundary_and_rounds_against_the_token() {
        use serde_json::json;
        let iv = issuer_verifier(None, None);
        // exp 1000, leeway 60: valid while now < 1060.
        assert!(at(&iv, json!({"exp": 1000}), 1059).is_ok());
        assert_eq!(at(&iv, json!({"exp": 1000}), 1060), Err(Reason::Expired));
        // A fractional exp is rounded down, never up.
        assert!(at(&iv, json!({"exp": 1000.5}), 1059).is_ok());
        assert_eq!(at(&iv, json!({"exp": 1000.5}), 1060), Err(Reason::Expired));
        // nbf and iat are rounded up: 1000.5 - 60 -> valid from 941.
        for (claim, reason) in [
            ("nbf", Reason::NotYetValid),
            ("iat", Reason::IssuedInFuture),
        ] {
            let c = json!({"exp": 5000, claim: 1000.5});
            assert_eq!(at(&iv, c.clone(), 940), Err(reason), "{claim}");
            assert_eq!(
                at(&iv, c, 941),
                Ok(Window {
                    from: 941,
                    until: 5060
                }),
                "{claim}"
            );
        }
        // Maximum age 100 s from iat 1000.5 (rounded down) + leeway: until 1160.
        let aged = issuer_verifier(Some(100), None);
        let c = json!({"exp": 5000, "iat": 1000.5});
        assert_eq!(
            at(&aged, c.clone(), 1159),
            Ok(Window {
                from: 941,
                until: 1160
            })
        );
        assert_eq!(at(&aged, c, 1160), Err(Reason::TooOld));
        // Lifetime cap 3600 s: exp rounded up, iat down, so 1000.5 .. 4600.5 is 3601 s.
        let capped = issuer_verifier(None, Some(3600));
        assert!(at(&capped, json!({"iat": 1000, "exp": 4600}), 1001).is_ok());
        assert_eq!(
            at(&capped, json!({"iat": 1000.5, "exp": 4600.5}), 1001),
            Err(Reason::LifetimeTooLong)
        );
        assert_eq!(
            at(&capped, json!({"iat": 1000, "exp": 4601}), 1001),
            Err(Reason::LifetimeTooLong)
        );
    }

    #[tokio::test]
    async fn a_cache_hit_is_refused_outside_its_window_whatever_the_cache_holds() {
        let set = test_key_set();
        let Lookup::Found(key) = set.find(Some("k"), Algorithm::ES256) else {
            panic!("the key is found");
        };
        let key_id = key.id;
        let store = KeyStore::preloaded(set);
        let v = Verifier::from_inner(VerifierInner {
            issuers: HashMap::new(),
            max_token_bytes: 16 * 1024,
            cache: Some(token_cache(100, 1 << 20)),
        });
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
        let cache = v.inner.cache.as_ref().unwrap();
        let token = "h.p.sig";
        cache.doorkeeper.seen_before(token);
        cache.tokens.insert(token.into(), Arc::new(entry));
        // The entry is in the cache for the whole test; only the window decides.
        assert!(v.verify_cached_at(token, now).is_some());
        assert!(v.verify_cached_at(token, now + 99).is_some(), "last second");
        assert!(
            v.verify_cached_at(token, now + 100).is_none(),
            "until is exclusive"
        );
        assert!(
            v.verify_cached_at(token, now - 10).is_some(),
            "from is inclusive"
        );
        assert!(v.verify_cached_at(token, now - 11).is_none(), "before from");
        assert!(v.verify_cached_at(token, now).is_some(), "still cached");
        assert!(v.verify_cached_at("h.p.other", now).is_none());
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
