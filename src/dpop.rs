//! DPoP (RFC 9449): sender-constrained access tokens. A DPoP-bound token
//! (`cnf.jkt`) works only with a fresh proof, signed by the client's private
//! key, for this very request: a leaked token alone is useless.
//!
//! The proof is checked exactly as RFC 9449 §4.3 lists: `typ` `dpop+jwt`,
//! an asymmetric `alg` from the allow-list, a public `jwk` in the header,
//! the signature, `htm` and `htu` against the request, `iat` within the
//! window, `jti` never seen before within it, `ath` = the token's hash, and
//! the token's `cnf.jkt` = the proof key's RFC 7638 thumbprint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::json::{Object, parse_object};
use crate::token::Algorithm;

/// The largest DPoP proof read (an RSA-8192 `jwk` fits with room to spare).
const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;

/// DPoP settings of an [`M2mAuthLayer`](crate::M2mAuthLayer): turn DPoP on
/// with [`M2mAuthLayer::dpop`](crate::M2mAuthLayer::dpop).
///
/// ```
/// use m2m_guard::Dpop;
/// use std::time::Duration;
///
/// // The scheme and host clients use to reach this API (behind a proxy:
/// // the external one). Proofs name it in `htu`.
/// let dpop = Dpop::new("https://api.acme.com").proof_lifetime(Duration::from_secs(60));
/// let strict = Dpop::new("https://api.acme.com").required();
/// ```
///
/// Without it (the default) a layer is **bearer only**: `Authorization: DPoP`
/// is not a bearer token, and a token bound to a key (`cnf`) presented as
/// `Bearer` is refused (its binding cannot be checked). With it, **DPoP
/// allowed**: bound tokens need `Authorization: DPoP` and a valid proof,
/// unbound tokens keep working as `Bearer`. With [`Dpop::required`], **DPoP
/// required**: only bound tokens with proofs.
#[derive(Clone)]
pub struct Dpop {
    pub(crate) inner: Arc<DpopConfig>,
}

#[derive(Clone)]
pub(crate) struct DpopConfig {
    /// `scheme://host[:port]`, normalised.
    pub(crate) origin: Result<url::Url, String>,
    pub(crate) required: bool,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) lifetime: Duration,
    pub(crate) skew: Duration,
    pub(crate) store: Arc<dyn ReplayStore>,
    /// Server nonces (RFC 9449 §8), when required.
    pub(crate) nonces: Option<Arc<Nonces>>,
    /// Proof keys prepared for verification, by thumbprint and algorithm.
    pub(crate) keys: moka::sync::Cache<(String, Algorithm), Arc<crate::jwks::VerifyKey>>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.inner;
        f.debug_struct("Dpop")
            .field("origin", &c.origin.as_ref().map(url::Url::as_str))
            .field("required", &c.required)
            .field("algorithms", &c.algorithms)
            .field("proof_lifetime", &c.lifetime)
            .field("clock_skew", &c.skew)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    /// DPoP allowed, for an API that clients reach at `origin` (scheme and
    /// host, e.g. `https://api.acme.com`; behind a proxy, the external one):
    /// a proof's `htu` must be `origin` + the request's path. An `origin`
    /// that is not an absolute `http(s)` URL without a path, query or
    /// fragment makes every DPoP request fail with 500 and an error log
    /// naming it.
    pub fn new(origin: impl AsRef<str>) -> Self {
        Dpop {
            inner: Arc::new(DpopConfig {
                origin: parse_origin(origin.as_ref()),
                required: false,
                algorithms: vec![
                    Algorithm::ES256,
                    Algorithm::ES384,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::EdDSA,
                ],
                lifetime: Duration::from_secs(60),
                skew: Duration::from_secs(5),
                store: Arc::new(MemoryReplayStore::new(1_000_000)),
                nonces: None,
                keys: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_idle(Duration::from_secs(3600))
                    .build(),
            }),
        }
    }

    fn config(&mut self) -> &mut DpopConfig {
        Arc::make_mut(&mut self.inner)
    }

    /// DPoP required: a token must be DPoP-bound and come with a proof;
    /// `Bearer` is refused (401 with a `DPoP` challenge).
    pub fn required(mut self) -> Self {
        self.config().required = true;
        self
    }

    /// The proof algorithms accepted (advertised in `algs` of the
    /// challenge). Defaults to every supported asymmetric algorithm.
    ///
    /// # Panics
    /// With an empty list (a wiring mistake).
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        let algs: Vec<Algorithm> = algs.into_iter().collect();
        assert!(
            !algs.is_empty(),
            "m2m-guard: Dpop::algorithms needs at least one"
        );
        self.config().algorithms = algs;
        self
    }

    /// How long after its `iat` a proof is accepted (and its `jti`
    /// remembered). Defaults to 60 s; clamped to 1 s ..= 10 min.
    pub fn proof_lifetime(mut self, lifetime: Duration) -> Self {
        self.config().lifetime = lifetime.clamp(Duration::from_secs(1), Duration::from_secs(600));
        self
    }

    /// How far in the future a proof's `iat` may be (client clocks run
    /// ahead). Defaults to 5 s; at most 5 min.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.config().skew = skew.min(Duration::from_secs(300));
        self
    }

    /// Require server nonces (RFC 9449 §8): a proof must carry a `nonce`
    /// this server issued within the last two `period`s. A proof without
    /// one (or with a stale one) gets 401 `use_dpop_nonce` with a fresh
    /// nonce in the `DPoP-Nonce` header; every answer to a DPoP request
    /// carries the current one. The nonces are stateless (an HMAC of the
    /// time period under a random key of this process): for a fleet, give
    /// every replica the same [`Dpop::nonce_secret`]. `period` is clamped to
    /// 10 s ..= 1 hour.
    pub fn require_nonces(mut self, period: Duration) -> Self {
        // A secret set before (`nonce_secret`) stays; else a random one.
        let secret = match self.inner.nonces.as_ref() {
            Some(n) => n.secret,
            None => {
                let mut secret = [0u8; 32];
                // Without the OS's random numbers there is no safe nonce key:
                // a zero key would make nonces forgeable, so refuse every proof.
                getrandom::getrandom(&mut secret).ok().map(|()| secret)
            }
        };
        self.config().nonces = Some(Arc::new(Nonces {
            secret,
            period: period.clamp(Duration::from_secs(10), Duration::from_secs(3600)),
        }));
        self
    }

    /// The key nonces are made with, shared by the replicas of a fleet (keep
    /// it secret: it lets its holder mint nonces). Implies
    /// [`Dpop::require_nonces`] (5 minutes, unless set); in either order.
    pub fn nonce_secret(mut self, secret: [u8; 32]) -> Self {
        let period = self
            .inner
            .nonces
            .as_ref()
            .map_or(Duration::from_secs(300), |n| n.period);
        self.config().nonces = Some(Arc::new(Nonces {
            secret: Some(secret),
            period,
        }));
        self
    }

    /// Where proofs' `jti`s are remembered. Defaults to a
    /// [`MemoryReplayStore`] of 1,000,000 proofs (one process; a fleet
    /// shares a store so a proof replayed on another replica is caught).
    pub fn replay_store(mut self, store: impl ReplayStore) -> Self {
        self.config().store = Arc::new(store);
        self
    }

    /// The `algs` of the challenge, space-separated.
    pub(crate) fn algs(&self) -> String {
        self.inner
            .algorithms
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn parse_origin(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("Dpop origin {s:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host().is_none()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(format!(
            "Dpop origin {s:?} must be scheme://host[:port], without a path, query or fragment"
        ));
    }
    Ok(u)
}

/// Remembers DPoP proofs (by key thumbprint and `jti`) for their lifetime,
/// so that a replayed proof is refused. Implement it over a shared store
/// (Redis `SET key 1 NX PX ttl`) for a fleet of replicas.
pub trait ReplayStore: Send + Sync + 'static {
    /// Record `key` for `ttl` (the proof lifetime, the clock skew and one
    /// second: as long as the proof can be accepted). `Ok(true)` if it was
    /// new, `Ok(false)` if it was seen within its `ttl` (a replay). `Err`
    /// when the store cannot answer: the request gets 503, never a pass.
    fn check_and_insert(
        &self,
        key: [u8; 32],
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayStoreError>> + Send + '_>>;
}

/// A [`ReplayStore`] could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayStoreError {
    /// The store holds as many proofs as it may: refusing is safer than
    /// forgetting one still within its lifetime.
    #[error("the replay store is full")]
    Full,
    /// The store is unreachable or failed.
    #[error("the replay store is unavailable: {0}")]
    Unavailable(String),
}

/// The in-process [`ReplayStore`]: at most `capacity` proofs, each kept for
/// its lifetime and then forgotten; when full, new proofs are refused (503)
/// rather than an unexpired one forgotten. 16 shards, each a set and a
/// queue in insertion order (every proof of a store has the same lifetime,
/// so the oldest expires first). About 120 bytes per proof (112 MiB for
/// 1,000,000 in `benches/memory.rs`). Each shard holds `capacity / 16`, so
/// refusals start a little before the whole store is full (at 99.8 % in
/// that bench).
#[derive(Debug)]
pub struct MemoryReplayStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    clock: crate::clock::Clock,
    /// Picks the shard with a per-process random key: a client choosing
    /// its `jti`s cannot aim them all at one shard.
    shard_of: std::collections::hash_map::RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<(std::time::Instant, [u8; 32])>,
}

const SHARDS: usize = 16;

impl MemoryReplayStore {
    /// A store for at most `capacity` proofs at once (at least 16).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.max(SHARDS).div_ceil(SHARDS);
        MemoryReplayStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            clock: crate::clock::Clock::default(),
            shard_of: std::collections::hash_map::RandomState::new(),
        }
    }

    /// How many proofs it holds now (expired ones may still be counted
    /// until the next insertion into their shard).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).seen.len())
            .sum()
    }

    /// `true` when it holds no proof.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, key: [u8; 32], ttl: Duration) -> Result<bool, ReplayStoreError> {
        let now = self.clock.now();
        use std::hash::BuildHasher as _;
        let index = (self.shard_of.hash_one(key) % SHARDS as u64) as usize;
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        while let Some((expires, k)) = shard.order.front().copied() {
            if expires > now {
                break;
            }
            shard.order.pop_front();
            shard.seen.remove(&k);
        }
        if shard.seen.contains(&key) {
            return Ok(false);
        }
        if shard.seen.len() >= self.per_shard {
            return Err(ReplayStoreError::Full);
        }
        let expires = crate::backoff::instant_after(now, ttl);
        shard.seen.insert(key);
        shard.order.push_back((expires, key));
        Ok(true)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn check_and_insert(
        &self,
        key: [u8; 32],
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayStoreError>> + Send + '_>> {
        let result = self.insert(key, ttl);
        Box::pin(std::future::ready(result))
    }
}

/// Stateless server nonces: `base64url(period number ‖ HMAC-SHA-256(key,
/// period number)[..16])`, accepted for the current and the previous period.
pub(crate) struct Nonces {
    /// `None`: no random key could be had; every nonce is refused.
    secret: Option<[u8; 32]>,
    period: Duration,
}

impl Nonces {
    fn slot(&self, now: u64) -> u64 {
        now / self.period.as_secs().max(1)
    }

    fn make(&self, slot: u64) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let mac = hmac_sha256(secret, &slot.to_be_bytes());
        let mut raw = slot.to_be_bytes().to_vec();
        raw.extend_from_slice(&mac[..16]);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The nonce to hand out now.
    pub(crate) fn current(&self, now: u64) -> Option<String> {
        self.make(self.slot(now))
    }

    fn accepts(&self, nonce: &str, now: u64) -> bool {
        let slot = self.slot(now);
        [slot, slot.saturating_sub(1)].iter().any(|&s| {
            self.make(s)
                .is_some_and(|n| n.as_bytes() == nonce.as_bytes())
        })
    }
}

/// HMAC-SHA-256 (RFC 2104) of `message` under a 32-byte key.
pub(crate) fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// SHA-256(`bytes`).
// Used by the fleet.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// base64url(SHA-256(`bytes`)).
pub(crate) fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The RFC 7638 JWK SHA-256 thumbprint: the required members only, in
/// lexicographic order, no whitespace. `None` for a key type we do not use.
pub(crate) fn thumbprint(jwk: &Object) -> Option<String> {
    let s = |name: &str| match jwk.get(name) {
        Some(Value::String(v)) => Some(v.as_str()),
        _ => None,
    };
    // serde_json escapes strings exactly as RFC 7638 §3.3 asks (no
    // unnecessary escapes); the members are written in order by hand.
    let q = |v: &str| serde_json::to_string(v).ok();
    let canonical = match s("kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            q(s("crv")?)?,
            q(s("x")?)?,
            q(s("y")?)?
        ),
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(s("e")?)?, q(s("n")?)?),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            q(s("crv")?)?,
            q(s("x")?)?
        ),
        _ => return None,
    };
    Some(sha256_b64(canonical.as_bytes()))
}

/// How long a proof is remembered: as long as it can be accepted. Its
/// `iat` may be up to the skew ahead of the clock when first used, and the
/// proof is accepted until the whole second `iat + lifetime` ends (the clock
/// is read in whole seconds): the lifetime, the skew and one second.
fn replay_ttl(cfg: &DpopConfig) -> Duration {
    cfg.lifetime
        .saturating_add(cfg.skew)
        .saturating_add(Duration::from_secs(1))
}

/// The DPoP part of a request whose token verified: the token must be
/// DPoP-bound, the proof must hold, and its `jti` must be new.
pub(crate) async fn check_request(
    dpop: &Dpop,
    principal: &crate::Principal,
    proof: &str,
    method: &str,
    path: &str,
    token: &str,
    now: u64,
) -> Result<(), crate::AuthErrorKind> {
    use crate::AuthErrorKind as K;
    use crate::rejection::{Reason, Rejection};
    let cfg = &dpop.inner;
    let Some(jkt) = principal.dpop_jkt() else {
        return Err(K::InvalidToken(Rejection::new(Reason::UnboundToken)));
    };
    if let Err(why) = &cfg.origin {
        tracing::error!(target: "m2m_guard", "m2m-guard: {why}");
        return Err(K::Misconfigured(
            "the DPoP origin is not a valid scheme://host[:port]",
        ));
    }
    let expected = Expected {
        method,
        path,
        token,
        jkt,
        now,
    };
    let key = match check_proof(cfg, proof, &expected) {
        Ok(key) => key,
        Err(ProofError::Invalid(why)) => return Err(K::InvalidDpopProof(why)),
        Err(ProofError::UseNonce) => {
            let nonce = cfg.nonces.as_ref().and_then(|n| n.current(now));
            return Err(K::UseDpopNonce { nonce });
        }
    };
    match cfg.store.check_and_insert(key, replay_ttl(cfg)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(K::InvalidDpopProof("the DPoP proof was used before")),
        Err(e) => {
            tracing::warn!(target: "m2m_guard", "m2m-guard: DPoP replay store: {e}");
            Err(K::Unavailable {
                retry_after: Duration::from_secs(1),
                issuer: None,
                reason: crate::Reason::ReplayCheckUnavailable,
            })
        }
    }
}

/// What a proof must match: the request as this API sees it.
pub(crate) struct Expected<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) token: &'a str,
    pub(crate) jkt: &'a str,
    pub(crate) now: u64,
}

/// Members a public JWK must not carry (private or symmetric key material).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why a proof is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProofError {
    /// It breaks a rule: a client-safe description.
    Invalid(&'static str),
    /// It lacks a current server nonce.
    UseNonce,
}

/// Check `proof` (the `DPoP` header) against `expected`; the replay key to
/// record when it holds, else why not.
pub(crate) fn check_proof(
    cfg: &DpopConfig,
    proof: &str,
    expected: &Expected<'_>,
) -> Result<[u8; 32], ProofError> {
    let (key, nonce) = check_rules(cfg, proof, expected).map_err(ProofError::Invalid)?;
    if let Some(nonces) = &cfg.nonces
        && !nonce.is_some_and(|n| nonces.accepts(&n, expected.now))
    {
        return Err(ProofError::UseNonce);
    }
    Ok(key)
}

/// Every rule of RFC 9449 §4.3 but the nonce and the replay check: the
/// replay key (SHA-256 of the key's thumbprint and the `jti`: a client
/// cannot burn another's `jti`) and the proof's `nonce`, if any.
fn check_rules(
    cfg: &DpopConfig,
    proof: &str,
    expected: &Expected<'_>,
) -> Result<([u8; 32], Option<String>), &'static str> {
    const BAD: &str = "the DPoP proof is malformed";
    if proof.len() > MAX_PROOF_BYTES {
        return Err("the DPoP proof is too large");
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let decode = |seg: &str| -> Result<Object, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(seg).map_err(|_| BAD)?;
        parse_object(&bytes).ok_or(BAD)
    };
    let header = decode(h)?;
    let claims = decode(p)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| BAD)?;

    if header.get("typ") != Some(&Value::String("dpop+jwt".into())) {
        return Err("the DPoP proof's typ is not dpop+jwt");
    }
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err("the DPoP proof has unsupported critical header parameters");
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name),
        _ => None,
    }
    .filter(|a| cfg.algorithms.contains(a))
    .ok_or("the DPoP proof algorithm is not accepted")?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err("the DPoP proof has no public key (jwk)");
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("the DPoP proof key is not a public key");
    }
    // The cheap comparison first: a key other than the bound one costs no
    // key parsing and no signature check.
    let thumbprint =
        thumbprint(jwk).ok_or("the DPoP proof key is not usable with its algorithm")?;
    if thumbprint != expected.jkt {
        return Err("the DPoP proof key is not the one the token is bound to");
    }
    // Prepared for the header's algorithm only (a JWK without `alg` would
    // otherwise be prepared for its whole family); a JWK naming another
    // algorithm is refused.
    match jwk.get("alg") {
        None => {}
        Some(Value::String(a)) if a == alg.as_str() => {}
        Some(_) => return Err("the DPoP proof key is not usable with its algorithm"),
    }
    // A client signs every proof with the same key: prepared once (per
    // thumbprint, which names the key material, and algorithm).
    let cache_key = (thumbprint.clone(), alg);
    let key = match cfg.keys.get(&cache_key) {
        Some(key) => key,
        None => {
            let mut jwk = jwk.clone();
            jwk.insert("alg".into(), alg.as_str().into());
            let key = crate::jwks::key_from_jwk(&Value::Object(jwk))
                .filter(|k| k.allows(alg))
                .map(Arc::new)
                .ok_or("the DPoP proof key is not usable with its algorithm")?;
            cfg.keys.insert(cache_key, key.clone());
            key
        }
    };
    if !key.verify(alg, &proof.as_bytes()[..h.len() + 1 + p.len()], &sig) {
        return Err("the DPoP proof signature is invalid");
    }

    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_LEN => j,
        _ => return Err("the DPoP proof has no valid jti"),
    };
    match claims.get("htm") {
        Some(Value::String(m)) if m == expected.method => {}
        _ => return Err("the DPoP proof is for another HTTP method"),
    }
    let htu = match claims.get("htu") {
        Some(Value::String(u)) => u,
        _ => return Err("the DPoP proof has no htu"),
    };
    let origin = cfg.origin.as_ref().map_err(|_| BAD)?;
    if !same_target(htu, origin, expected.path) {
        return Err("the DPoP proof is for another URL");
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n.as_f64().ok_or(BAD)?,
        _ => return Err("the DPoP proof has no iat"),
    };
    let now = expected.now as f64;
    if iat > now + cfg.skew.as_secs_f64() {
        return Err("the DPoP proof is issued in the future");
    }
    if iat < now - cfg.lifetime.as_secs_f64() {
        return Err("the DPoP proof has expired");
    }
    match claims.get("ath") {
        Some(Value::String(a)) if *a == sha256_b64(expected.token.as_bytes()) => {}
        _ => return Err("the DPoP proof is not for this access token (ath)"),
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err("the DPoP proof's nonce is not a string"),
    };
    let mut h = Sha256::new();
    h.update(thumbprint.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    Ok((h.finalize().into(), nonce))
}

/// RFC 9449 §4.3: `htu` without query and fragment, compared after
/// normalising scheme and host case and the default port, equals the
/// origin plus the request path.
fn same_target(htu: &str, origin: &url::Url, path: &str) -> bool {
    let Ok(mut got) = url::Url::parse(htu) else {
        return false;
    };
    got.set_query(None);
    got.set_fragment(None);
    let mut want = origin.clone();
    want.set_path(path);
    want.set_query(None);
    got.as_str() == want.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = parse_object(br#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn htu_is_compared_without_query_fragment_or_case_differences() {
        let origin = parse_origin("https://API.Example.com").unwrap();
        assert!(same_target(
            "https://api.example.com/orders",
            &origin,
            "/orders"
        ));
        assert!(same_target(
            "HTTPS://api.EXAMPLE.com:443/orders?x=1#f",
            &origin,
            "/orders"
        ));
        assert!(!same_target(
            "https://api.example.com/orders/1",
            &origin,
            "/orders"
        ));
        assert!(!same_target(
            "http://api.example.com/orders",
            &origin,
            "/orders"
        ));
        assert!(!same_target(
            "https://api.example.com:8443/orders",
            &origin,
            "/orders"
        ));
        assert!(!same_target(
            "https://evil.example/orders",
            &origin,
            "/orders"
        ));
        assert!(!same_target("/orders", &origin, "/orders"));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digests_match_the_published_vectors() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_b64(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        // RFC 4231 test case 1 (a 20-byte key: HMAC pads it with zeros).
        let mut key = [0u8; 32];
        key[..20].fill(0x0b);
        assert_eq!(
            hex(&hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn a_nonce_holds_for_its_period_and_the_next() {
        let nonces = Nonces {
            secret: Some([7; 32]),
            period: Duration::from_secs(60),
        };
        let n = nonces.current(120).unwrap();
        assert_eq!(nonces.current(179).as_deref(), Some(n.as_str()));
        assert_ne!(nonces.current(180).as_deref(), Some(n.as_str()));
        for now in [120, 179, 180, 239] {
            assert!(nonces.accepts(&n, now), "{now}");
        }
        for now in [0, 119, 240, 100_000] {
            assert!(!nonces.accepts(&n, now), "{now}");
        }
        // Without a secret, none is made and none is accepted.
        let keyless = Nonces {
            secret: None,
            period: Duration::from_secs(60),
        };
        assert_eq!(keyless.current(120), None);
        assert!(!keyless.accepts(&n, 120));
    }

    #[test]
    fn an_origin_is_a_scheme_and_a_host_and_nothing_else() {
        for bad in [
            "https://a.example/x",
            "ftp://a.example",
            "https://a.example?q",
            "https://a.example/?",
            "https://a.example#f",
            "https://u@a.example",
            "https://:p@a.example",
            "https://u:p@a.example",
            "nope",
            "/orders",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        for good in [
            "https://a.example",
            "https://a.example/",
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
    }

    /// `iat` may be up to the skew ahead and up to the lifetime behind,
    /// to the second.
    #[cfg(feature = "test-util")]
    #[test]
    fn a_proof_holds_from_the_skew_ahead_to_the_lifetime_behind() {
        let key = crate::test_util::DpopKey::new();
        let cfg = Dpop::new("https://a.example").inner;
        let now = 1_000_000;
        let jkt = key.jkt();
        let expected = Expected {
            method: "GET",
            path: "/orders",
            token: "t",
            jkt: &jkt,
            now,
        };
        let at = |iat: u64| {
            let proof = key
                .proof("GET", "https://a.example/orders")
                .for_token("t")
                .claim("iat", iat)
                .sign();
            check_rules(&cfg, &proof, &expected).map(|_| ())
        };
        assert_eq!(at(now + 5), Ok(()));
        assert_eq!(at(now + 6), Err("the DPoP proof is issued in the future"));
        assert_eq!(at(now - 60), Ok(()));
        assert_eq!(at(now - 61), Err("the DPoP proof has expired"));
    }

    #[test]
    fn a_proof_is_read_up_to_8_kib() {
        let cfg = Dpop::new("https://a.example").inner;
        let expected = Expected {
            method: "GET",
            path: "/",
            token: "t",
            jkt: "k",
            now: 0,
        };
        let at_limit = "a".repeat(8 * 1024);
        assert_eq!(
            check_rules(&cfg, &at_limit, &expected),
            Err("the DPoP proof is malformed")
        );
        assert_eq!(
            check_rules(&cfg, &format!("{at_limit}a"), &expected),
            Err("the DPoP proof is too large")
        );
    }

    #[test]
    fn the_memory_store_remembers_for_the_lifetime_and_refuses_when_full() {
        let key = |i: u8| [i; 32];
        // Room for 4 a shard: two keys always fit.
        let counted = MemoryReplayStore::new(64);
        assert!(counted.is_empty());
        assert_eq!(counted.len(), 0);
        assert!(counted.insert(key(1), Duration::from_secs(60)).unwrap());
        assert!(!counted.is_empty() && counted.len() == 1);
        assert!(counted.insert(key(2), Duration::from_secs(60)).unwrap());
        assert_eq!(counted.len(), 2);
        let store = MemoryReplayStore::new(16);
        assert!(store.insert(key(1), Duration::from_secs(60)).unwrap());
        assert!(!store.insert(key(1), Duration::from_secs(60)).unwrap());
        // One per shard here (16 / 16): 17 keys cannot all fit, and a
        // refused key is not remembered.
        let results: Vec<_> = (2..=17u8)
            .map(|i| store.insert(key(i), Duration::from_secs(60)))
            .collect();
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(ReplayStoreError::Full)))
        );
        assert!(store.len() <= 16);
        // An expired proof is forgotten and makes room.
        let short = MemoryReplayStore::new(16);
        assert!(short.insert(key(2), Duration::ZERO).unwrap());
        assert!(
            short.insert(key(2), Duration::ZERO).unwrap(),
            "expired: new again"
        );
        assert!(short.insert(key(2), Duration::from_secs(60)).unwrap());
        assert!(!short.insert(key(2), Duration::from_secs(60)).unwrap());
    }
}
