//! The verification path: parse, pick the issuer, check the claim rules,
//! pick the key, verify the signature; the token cache in front of it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::cache::{CachedToken, TokenCache};
use crate::claims::{ClaimRules, check_typ};
use crate::clock::Clock;
use crate::config::VerifierBuilder;
use crate::error::BuildError;
use crate::jwks::{KeySet, Lookup};
use crate::keystore::{KeyStore, KidMiss, SharedFetch, Snapshot};
use crate::principal::Principal;
use crate::rejection::{Reason, Rejection};
use crate::tenant::{Template, TenantPolicy, TenantStores, key_issuer_matches};
use crate::token::{self, Algorithm, Unverified};

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
    /// By configured issuer identifier (a template's included).
    pub(crate) issuers: HashMap<String, IssuerVerifier>,
    /// The issuer templates among them, in order.
    pub(crate) templates: Vec<String>,
    pub(crate) max_token_bytes: usize,
    pub(crate) cache: Option<TokenCache>,
    pub(crate) clock: Clock,
    pub(crate) revocations: Option<crate::revocation::Revocations>,
}

impl VerifierInner {
    /// Gauges up to date, batched counters handed to the recorder in use.
    fn record_metrics(&self) {
        self.flush_counters();
        for iv in self.issuers.values() {
            if let Keys::One(store) = &iv.keys {
                store.set_gauges();
            }
        }
        if let Some(r) = &self.revocations {
            let age = r.synced_at().map(|t| {
                std::time::SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
            });
            crate::metrics::revocations(r.len(), age);
        }
    }

    /// The batched counters (cache hits, accepted decisions) handed to the
    /// recorder in use.
    fn flush_counters(&self) {
        if let Some(cache) = &self.cache {
            cache.flush_metrics();
        }
        for iv in self.issuers.values() {
            iv.rules.metrics.flush();
        }
    }
}

impl Drop for VerifierInner {
    /// The batched counters go to the recorder now, even while principals
    /// (which share an issuer's counter) live on.
    fn drop(&mut self) {
        self.flush_counters();
    }
}

/// One trusted issuer: its algorithms, claim rules and keys.
pub(crate) struct IssuerVerifier {
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) rules: ClaimRules,
    pub(crate) keys: Keys,
    /// An issuer template and the tenants it admits.
    pub(crate) template: Option<(Template, TenantPolicy)>,
}

/// Where an issuer's keys come from.
pub(crate) enum Keys {
    /// One key set for every token (a template's tenants included).
    One(Arc<KeyStore>),
    /// A key set per tenant of an issuer template.
    PerTenant(Box<TenantStores>),
}

impl Keys {
    /// Every key store created so far.
    fn stores(&self) -> Vec<Arc<KeyStore>> {
        match self {
            Keys::One(s) => vec![s.clone()],
            Keys::PerTenant(t) => t.all(),
        }
    }

    /// The store for a token of `tenant` (`Err`: wait this long).
    fn for_tenant(&self, tenant: Option<&str>) -> Result<Arc<KeyStore>, Duration> {
        match (self, tenant) {
            (Keys::One(s), _) => Ok(s.clone()),
            (Keys::PerTenant(t), Some(tenant)) => t.get(tenant),
            // Not reached: a per-tenant issuer is only selected through its template.
            (Keys::PerTenant(_), None) => Err(Duration::from_secs(1)),
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Start configuring a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    pub(crate) fn from_inner(inner: VerifierInner) -> Self {
        let verifier = Verifier {
            inner: Arc::new(inner),
        };
        #[cfg(feature = "metrics")]
        verifier.spawn_metrics_task();
        verifier
    }

    /// Once a second, bring the gauges up to date and hand the batched
    /// counters over (see [`crate::metrics`]), until the verifier is gone.
    /// Only on a tokio runtime; elsewhere `health()` and drop do it.
    #[cfg(feature = "metrics")]
    fn spawn_metrics_task(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        drop(runtime.spawn(async move {
            // The first tick is at once (nothing to hand over yet).
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(inner) => inner.record_metrics(),
                    None => break,
                }
            }
        }));
    }

    /// The trusted issuers, as configured (an issuer template with its
    /// `{tenantid}`: not an issuer a client could get tokens from, so leave
    /// it out of [`ProtectedResource::authorization_servers`](crate::ProtectedResource::authorization_servers)).
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.keys().map(String::as_str)
    }

    /// Every issuer's keys and the revocation list, now: for a health
    /// endpoint, and [`Health::is_ready`](crate::Health::is_ready) for a
    /// readiness probe. Cheap (no I/O). With the `metrics` feature it also
    /// brings the key-set and revocation gauges up to date and hands the
    /// batched counters (accepted decisions, token-cache hits) to the
    /// recorder in use: call it before each scrape and the scrape is exact
    /// (the verifier's metrics task does both once a second).
    pub fn health(&self) -> crate::Health {
        self.inner.record_metrics();
        let mut names: Vec<&String> = self.inner.issuers.keys().collect();
        names.sort();
        let mut issuers = Vec::new();
        for name in names {
            match &self.inner.issuers[name].keys {
                Keys::One(store) => {
                    // No usable keys: a replica out of rotation gets no
                    // requests to fetch them, so the probe starts the fetch
                    // (single-flight, within the backoff).
                    if let Snapshot::NeedFetch = store.snapshot() {
                        drop(store.refresh());
                    }
                    issuers.push(crate::health::IssuerHealth::new(name, None, store.health()));
                }
                Keys::PerTenant(stores) => {
                    for (tenant, store) in stores.named() {
                        issuers.push(crate::health::IssuerHealth::new(
                            name,
                            Some(tenant),
                            store.health(),
                        ));
                    }
                }
            }
        }
        crate::Health {
            issuers,
            revocations: self
                .inner
                .revocations
                .as_ref()
                .map(|r| crate::health::RevocationHealth {
                    held: r.len(),
                    synced_at: r.synced_at(),
                    usable: r.usable_now(),
                }),
        }
    }

    /// How many key-set fetches were started for `issuer` so far (for
    /// metrics and tests): a configured issuer (for an issuer template with a
    /// key set per tenant, the sum over its tenants), or one tenant's issuer
    /// identifier. `None` for an issuer that is not configured.
    pub fn key_fetch_count(&self, issuer: &str) -> Option<u64> {
        if let Some(iv) = self.inner.issuers.get(issuer) {
            return Some(iv.keys.stores().iter().map(|s| s.fetch_count()).sum());
        }
        self.tenant_store(issuer).map(|s| s.fetch_count())
    }

    /// The key store of a tenant's issuer, under a per-tenant template.
    fn tenant_store(&self, iss: &str) -> Option<Arc<KeyStore>> {
        self.inner.templates.iter().find_map(|name| {
            let iv = &self.inner.issuers[name];
            let (template, _) = iv.template.as_ref()?;
            match &iv.keys {
                Keys::PerTenant(t) => t.existing(template.tenant_of(iss)?),
                Keys::One(_) => None,
            }
        })
    }

    /// How many verified tokens the token cache holds that are still valid
    /// (expired ones may linger until their room is needed). A token enters
    /// the cache on its second sighting. Reads every entry, one shard's
    /// read lock at a time: for tests and occasional checks, not per request.
    pub fn cached_tokens(&self) -> u64 {
        self.inner
            .cache
            .as_ref()
            .map_or(0, |c| c.len(self.now_secs()))
    }

    /// The key-set URL in use for `issuer`: the configured one, or the one
    /// discovery found (`None` before discovery succeeds, and for an issuer
    /// that is not configured). Under an issuer template with a key set per
    /// tenant, ask with the tenant's issuer identifier.
    pub fn jwks_url(&self, issuer: &str) -> Option<String> {
        let store = match self.inner.issuers.get(issuer).map(|iv| &iv.keys) {
            Some(Keys::One(s)) => s.clone(),
            Some(Keys::PerTenant(_)) => return None,
            None => self.tenant_store(issuer)?,
        };
        store.url().map(String::from)
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
    ///
    /// An issuer template with a key set per tenant loads the keys of each
    /// tenant of its [`Issuer::allowed_tenants`](crate::Issuer::allowed_tenants)
    /// list (with a filter, tenants are only known from their tokens).
    pub async fn preload(&self) -> Result<(), BuildError> {
        for iv in self.inner.issuers.values() {
            if let (Keys::PerTenant(stores), Some((t, TenantPolicy::List(list)))) =
                (&iv.keys, &iv.template)
            {
                let mut tenants: Vec<&String> = list.iter().collect();
                tenants.sort();
                for tenant in tenants {
                    let store = stores.get(tenant).map_err(|_| {
                        BuildError::Config(format!(
                            "issuer template {}: more allowed tenants than Issuer::max_tenants",
                            iv.rules.issuer
                        ))
                    })?;
                    preload_store(&store, &t.issuer_for(tenant)).await?;
                }
                continue;
            }
            for store in iv.keys.stores() {
                preload_store(&store, &iv.rules.issuer).await?;
            }
        }
        Ok(())
    }

    /// Fetch every issuer's key set now, whatever its schedule and backoff,
    /// all issuers at once, and wait for the outcomes. A fetch already under
    /// way is joined rather than repeated (it may have started just before
    /// a rotation; call again to be sure). For
    /// tests, and for an operator's "keys rotated, pick them up now"; it
    /// bypasses the backoff, so rate-limit any endpoint that exposes it.
    /// A failed refresh is recorded like any other (the last good keys stay
    /// in use within `max_stale`).
    ///
    /// # Errors
    /// [`BuildError::Unavailable`] naming the first issuer whose key set
    /// could not be loaded, and why; every issuer is tried.
    pub async fn refresh_now(&self) -> Result<(), BuildError> {
        // Every issuer at once; the error reported is that of the first
        // issuer by name, whatever order the fetches end in.
        // (Per-tenant key sets: every tenant seen so far.)
        let mut issuers: Vec<&IssuerVerifier> = self.inner.issuers.values().collect();
        issuers.sort_by(|a, b| a.rules.issuer.cmp(&b.rules.issuer));
        let stores: Vec<(&IssuerVerifier, Arc<KeyStore>)> = issuers
            .iter()
            .flat_map(|iv| iv.keys.stores().into_iter().map(move |s| (*iv, s)))
            .collect();
        let results = futures_util::future::join_all(stores.iter().map(|(_, s)| s.refresh())).await;
        for ((iv, _), result) in stores.iter().zip(results) {
            if let Err(cause) = result {
                return Err(BuildError::Unavailable {
                    issuer: iv.rules.issuer.to_string(),
                    cause,
                });
            }
        }
        Ok(())
    }

    /// Verify `token` (the bare JWT, without `Bearer `).
    ///
    /// This checks the token, not how it was presented: a key-bound token
    /// (`cnf`, see [`Principal::is_sender_constrained`]) verifies here without
    /// its proof of possession. [`M2mAuthLayer`](crate::M2mAuthLayer) refuses
    /// such a token as `Bearer` and checks DPoP proofs; calling this yourself,
    /// refuse bound tokens unless you check their binding.
    ///
    /// A token verified before is answered from the token cache: every time
    /// rule (`exp`, `nbf`, `iat`, maximum age) is checked again, and the key
    /// that verified it must still be published. Waiting for the issuer's
    /// keys takes at most the [fetch timeout](crate::VerifierBuilder::fetch_timeout)
    /// in all, then [`Reason::KeysUnavailable`].
    ///
    /// # Errors
    /// A [`Rejection`] saying why the token is not accepted; see [`Reason`].
    pub async fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        match self.verify_cached(token.as_bytes()) {
            Some(verdict) => verdict,
            None => self.verify_cache_miss(token).await,
        }
    }

    /// The full verification, for a token [`Verifier::verify_cached`] did
    /// not answer; caches the verdict from the token's second sighting.
    pub(crate) async fn verify_cache_miss(&self, token: &str) -> Result<Principal, Rejection> {
        if self.inner.cache.is_some() {
            crate::metrics::cache("miss");
        }
        let entry = self.verify_uncached(token).await?;
        let principal = entry.principal.clone();
        let now = self.inner.clock.wall_secs();
        self.not_revoked(&principal, now)?;
        if let Some(cache) = &self.inner.cache {
            cache.admit(token, entry, now);
        }
        Ok(principal)
    }

    /// The revocation check every accepted token passes, cached or not.
    fn not_revoked(&self, principal: &Principal, now: u64) -> Result<(), Rejection> {
        match &self.inner.revocations {
            Some(r) => r.check(principal, now),
            None => Ok(()),
        }
    }

    /// Now, in seconds since the epoch, on the verifier's clock.
    pub(crate) fn now_secs(&self) -> u64 {
        self.inner.clock.wall_secs()
    }

    /// The cached verdict for `token`, if it was verified before and is
    /// still valid, then checked against the revocation list (a revoked
    /// token leaves the cache). Never does I/O or signature work.
    ///
    /// Bytes, not `&str`: the layer asks before checking the token's
    /// syntax, since only verified (well-formed) tokens are cached.
    pub(crate) fn verify_cached(&self, token: &[u8]) -> Option<Result<Principal, Rejection>> {
        let cache = self.inner.cache.as_ref()?;
        let now = self.inner.clock.wall_secs();
        let principal = cache.get(token, now)?;
        Some(match self.not_revoked(&principal, now) {
            Ok(()) => Ok(principal),
            Err(r) => {
                if r.reason() == Reason::Revoked {
                    cache.invalidate(token);
                }
                Err(r)
            }
        })
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
        let (iv, tenant) = match self.inner.issuers.get(iss) {
            Some(iv) if iv.template.is_none() => (iv, None),
            _ => self.by_template(iss)?,
        };
        // (`iss` is borrowed from the claims the verification consumes.)
        let tenant = tenant.map(str::to_owned);
        iv.verify(unverified, self.inner.clock.wall_secs(), tenant.as_deref())
            .await
            .map_err(|e| e.with_issuer(iv.rules.issuer.clone()))
    }

    /// The issuer template `iss` matches, and the tenant it names: the first
    /// template (by name) that admits it; `tenant_not_allowed` when some
    /// template has the shape but none admits the tenant.
    fn by_template<'a>(
        &self,
        iss: &'a str,
    ) -> Result<(&IssuerVerifier, Option<&'a str>), Rejection> {
        let mut refused = None;
        for name in &self.inner.templates {
            let iv = &self.inner.issuers[name];
            let Some((template, tenants)) = &iv.template else {
                continue;
            };
            if let Some(tenant) = template.tenant_of(iss) {
                if tenants.allows(tenant) {
                    return Ok((iv, Some(tenant)));
                }
                refused.get_or_insert(iv);
            }
        }
        Err(match refused {
            Some(iv) => {
                Rejection::new(Reason::TenantNotAllowed).with_issuer(iv.rules.issuer.clone())
            }
            None => Rejection::new(Reason::UnknownIssuer),
        })
    }
}

async fn preload_store(store: &Arc<KeyStore>, issuer: &str) -> Result<(), BuildError> {
    if let Snapshot::Ready(_) = store.snapshot() {
        return Ok(());
    }
    store
        .refresh()
        .await
        .map(drop)
        .map_err(|cause| BuildError::Unavailable {
            issuer: issuer.to_owned(),
            cause,
        })
}

/// Keys of `store` usable now, fetching (shared) when there are none.
async fn keys_now(
    store: &Arc<KeyStore>,
    until: &mut Option<tokio::time::Instant>,
) -> Result<Arc<KeySet>, Rejection> {
    match store.snapshot() {
        Snapshot::Ready(keys) => Ok(keys),
        Snapshot::Unavailable(retry) => Err(Rejection::keys_unavailable(retry)),
        Snapshot::NeedFetch => wait_for(store, store.refresh(), until).await,
    }
}

/// The keys `fetch` brings, waited for until `until`: one deadline for all
/// of a request's waits, set by the first ([`KeyStore::wait_limit`] from
/// then). Past it, 503 while the fetch goes on without the request.
async fn wait_for(
    store: &Arc<KeyStore>,
    fetch: SharedFetch,
    until: &mut Option<tokio::time::Instant>,
) -> Result<Arc<KeySet>, Rejection> {
    let deadline = *until.get_or_insert_with(|| {
        let now = tokio::time::Instant::now();
        now.checked_add(store.wait_limit()).unwrap_or(now)
    });
    let unavailable = || Rejection::keys_unavailable(store.retry_after());
    // A timer needs a tokio runtime with timers, as reqwest's timeouts do.
    // Without one (polled outside a runtime, or timers not enabled: tokio
    // tells only by panicking, and the fetch task itself panics there) the
    // request waits for the fetch without a deadline, and is never the one
    // that panics.
    let timer = tokio::runtime::Handle::try_current()
        .ok()
        .and_then(|_| std::panic::catch_unwind(|| tokio::time::sleep_until(deadline)).ok());
    let Some(timer) = timer else {
        return fetch.await.map_err(|_| unavailable());
    };
    let (mut fetch, mut timer) = (std::pin::pin!(fetch), std::pin::pin!(timer));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = fetch.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(|_| unavailable()));
        }
        // Still under way at the deadline: it goes on without this request.
        timer.as_mut().poll(cx).map(|()| Err(unavailable()))
    })
    .await
}

impl IssuerVerifier {
    /// Verify `t` at wall-clock time `now` (seconds since the epoch);
    /// `tenant`: the one its `iss` names, for an issuer template.
    async fn verify(
        &self,
        t: Unverified<'_>,
        now: u64,
        tenant: Option<&str>,
    ) -> Result<CachedToken, Rejection> {
        let alg = t.header.alg;
        if !self.algorithms.contains(&alg) {
            return Err(Rejection::new(Reason::UnsupportedAlgorithm));
        }
        check_typ(t.header.typ.as_deref(), self.rules.token_type)?;
        // Every claim rule runs first (expired, wrong audience, a claim of the
        // wrong type, a client not allowed...): a token that can only fail
        // never costs a fetch or the unknown-kid cooldown. (The allow-list's
        // verdict is only told once the signature holds.)
        let checked = self.rules.check(&t.claims, now, tenant)?;

        let store = self
            .keys
            .for_tenant(tenant)
            .map_err(Rejection::keys_unavailable)?;
        // Every wait for a fetch below ends by one deadline.
        let mut until = None;
        let mut keys = keys_now(&store, &mut until).await?;
        let kid = t.header.kid.as_deref();
        let mut looked_again = false;
        // A bounded number of looks: a newer snapshot or two and a refetch.
        // After a refetch lands the key store answers "fresh" for a kid it
        // still lacks, so one refetch per token is the most it costs.
        for _ in 0..4 {
            match keys.find(kid, alg) {
                Lookup::Found(key) => {
                    // A key scoped to an issuer signs only that issuer's
                    // tokens (one tenant's key cannot vouch for another's).
                    if let Some(key_issuer) = &key.issuer {
                        let iss = t.claims.get("iss").and_then(Value::as_str).unwrap_or("");
                        if !key_issuer_matches(key_issuer, iss, tenant.or(checked.tenant())) {
                            return Err(Rejection::new(Reason::KeyIssuerMismatch));
                        }
                    }
                    // Strict base64url: one signature, one encoding.
                    let valid = URL_SAFE_NO_PAD
                        .decode(t.signature)
                        .is_ok_and(|sig| key.verify(alg, t.signing_input.as_bytes(), &sig));
                    if !valid {
                        // A token without a kid names no key: the one held
                        // may be the issuer's previous one (a rotation
                        // without kids). One look at newer keys, paced as
                        // for an unknown kid.
                        if kid.is_some() || !checked.client_allowed || looked_again {
                            return Err(Rejection::new(Reason::InvalidSignature));
                        }
                        looked_again = true;
                        keys =
                            look_again(&store, &keys, Reason::InvalidSignature, &mut until).await?;
                        continue;
                    }
                    if !checked.client_allowed {
                        return Err(Rejection::new(Reason::ClientNotAllowed));
                    }
                    // A tenant is in use by its verified tokens only (a
                    // client the allow-list refuses does not keep it).
                    store.mark_used();
                    let window = checked.window;
                    return Ok(CachedToken {
                        principal: self.rules.principal(t.claims, checked),
                        store: store.clone(),
                        key_id: key.id,
                        window,
                    });
                }
                Lookup::WrongAlgorithm => return Err(Rejection::new(Reason::AlgorithmMismatch)),
                Lookup::Ambiguous => return Err(Rejection::new(Reason::AmbiguousKey)),
                // A client the allow-list refuses: doomed whatever the key,
                // so no fetch; and unverified, so not told why.
                Lookup::UnknownKid if !checked.client_allowed => {
                    return Err(Rejection::new(Reason::UnknownKey));
                }
                Lookup::UnknownKid => {
                    keys = look_again(&store, &keys, Reason::UnknownKey, &mut until).await?;
                }
            }
        }
        Err(Rejection::new(Reason::UnknownKey))
    }
}

/// Newer keys than `seen` for a token they could not verify (its kid is
/// missing, or a kid-less token's signature failed), paced by the key
/// store: at most one refetch per cooldown while fetches succeed. `reason`
/// when the keys are fresh and still cannot verify it.
async fn look_again(
    store: &Arc<KeyStore>,
    seen: &Arc<KeySet>,
    reason: Reason,
    until: &mut Option<tokio::time::Instant>,
) -> Result<Arc<KeySet>, Rejection> {
    match store.on_unknown_kid(seen) {
        KidMiss::Newer(newer) => Ok(newer),
        // A key set fetched since the refetch began cannot verify it.
        KidMiss::Fresh => Err(Rejection::new(reason)),
        // Our outage is never the caller's fault: the token may be signed
        // by a key we cannot fetch yet.
        KidMiss::Unavailable(retry) => Err(Rejection::keys_unavailable(retry)),
        KidMiss::Refetch(fetch) => wait_for(store, fetch, until).await,
    }
}
