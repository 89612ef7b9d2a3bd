//! The verified identity behind a token.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hierarchy::ScopeHierarchy;
use crate::metrics::IssuerMetrics;

/// The verified caller: who issued the token, which client and tenant it
/// speaks for, and what it may do.
///
/// Cheap to clone (one `Arc`). The layer inserts it into request extensions;
/// axum handlers take it as an extractor.
#[derive(Clone)]
pub struct Principal {
    inner: Arc<Inner>,
}

/// In declared order (`repr(C)`): first what every accepted request reads,
/// so that it sits with the reference count in the allocation's first 80
/// bytes (one or two cache lines, not five). Among many clients' tokens,
/// each principal is cold in the CPU cache, and a cached request waited
/// for each line it read.
#[repr(C)]
struct Inner {
    /// The configured issuer that verified it (a template for a tenant's
    /// `iss`: the bounded `issuer` label of metrics), and how its decisions
    /// are counted.
    metrics: Arc<IssuerMetrics>,
    /// It carries `cnf` (asked on every request; looked up once).
    bound: bool,
    machine: bool,
    /// Shared by the principals of one tenant ([`TenantNames`]).
    tenant: Option<Arc<str>>,
    expires_at: u64,
    /// The revocation list's generation at which this token was last found
    /// not revoked (`u64::MAX`: never checked).
    not_revoked_at: AtomicU64,
    issuer: Arc<str>,
    subject: Option<String>,
    client_id: Option<String>,
    scopes: Scopes,
    issued_at: Option<u64>,
    jti: Option<String>,
    claims: Map<String, Value>,
}

/// One issuer's tenant names, shared: the principals of one tenant point at
/// one copy of its name. Many clients' tokens name a few tenants, so a
/// cached request of a tenant (its principal is touched on every hit, and
/// handlers and tenant guards read the name) finds the name in the CPU
/// cache, where a copy per token would be one more cold line to wait for.
/// Bounded: names come from verified tokens only, names longer than
/// [`TenantNames::MAX_LEN`] are not kept, and past [`TenantNames::MAX`]
/// names the set starts over (at most about 3 MiB).
#[derive(Default)]
pub(crate) struct TenantNames(Mutex<HashSet<Arc<str>>>);

impl TenantNames {
    /// Names kept at most.
    pub(crate) const MAX: usize = 16_384;
    /// Bytes of a name kept at most (a template's tenant is at most 128).
    pub(crate) const MAX_LEN: usize = 128;

    /// The shared copy of `name` (a copy of its own when too long).
    pub(crate) fn shared(&self, name: String) -> Arc<str> {
        if name.len() > Self::MAX_LEN {
            return name.into();
        }
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = names.get(name.as_str()) {
            return shared.clone();
        }
        if names.len() >= Self::MAX {
            names.clear();
        }
        let shared: Arc<str> = name.into();
        names.insert(shared.clone());
        shared
    }
}

/// The fields of a [`Principal`], in the order the verifier extracts them.
pub(crate) struct PrincipalParts {
    pub(crate) issuer: Arc<str>,
    pub(crate) metrics: Arc<IssuerMetrics>,
    pub(crate) subject: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) tenant: Option<Arc<str>>,
    pub(crate) scopes: Scopes,
    pub(crate) expires_at: u64,
    pub(crate) issued_at: Option<u64>,
    pub(crate) jti: Option<String>,
    pub(crate) machine: bool,
    pub(crate) claims: Map<String, Value>,
}

impl Principal {
    pub(crate) fn from_parts(p: PrincipalParts) -> Self {
        Principal {
            inner: Arc::new(Inner {
                issuer: p.issuer,
                metrics: p.metrics,
                subject: p.subject,
                client_id: p.client_id,
                tenant: p.tenant,
                scopes: p.scopes,
                expires_at: p.expires_at,
                issued_at: p.issued_at,
                jti: p.jti,
                machine: p.machine,
                bound: p.claims.contains_key("cnf"),
                claims: p.claims,
                not_revoked_at: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// The issuer (`iss`) that verified this token.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The subject (`sub`), for M2M tokens usually the client id.
    pub fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The client the token was issued to (`client_id`, `azp`, `cid` or
    /// `appid`, per the provider preset).
    pub fn client_id(&self) -> Option<&str> {
        self.inner.client_id.as_deref()
    }

    /// The organization / tenant the token is scoped to (Kinde `org_code`,
    /// Scalekit `oid`, Auth0 `org_id`, Entra `tid`, or the configured claim).
    /// `None` for a global (unscoped) app's token.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.inner.scopes
    }

    /// `true` if the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.contains(scope)
    }

    /// `true` for a machine client's token (client credentials), `false`
    /// for a user's, by the issuer's preset rule (see [`Preset`](crate::Preset)).
    /// Users' tokens are accepted only with
    /// [`Issuer::accept_user_tokens`](crate::Issuer::accept_user_tokens).
    pub fn is_machine(&self) -> bool {
        self.inner.machine
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.inner.expires_at)
    }

    /// When the token was issued (`iat`), if stated.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.inner
            .issued_at
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    /// Found not revoked at the list's `generation`.
    pub(crate) fn set_not_revoked_at(&self, generation: u64) {
        self.inner
            .not_revoked_at
            .store(generation, Ordering::Relaxed);
    }

    /// Was it found not revoked at this `generation` of the list?
    pub(crate) fn not_revoked_at(&self, generation: u64) -> bool {
        self.inner.not_revoked_at.load(Ordering::Relaxed) == generation
    }

    pub(crate) fn issued_at_secs(&self) -> Option<u64> {
        self.inner.issued_at
    }

    /// The configured issuer that verified it.
    pub(crate) fn configured_issuer(&self) -> &Arc<str> {
        &self.inner.metrics.issuer
    }

    /// The tenant, when metrics may be labelled with it.
    pub(crate) fn metrics_tenant(&self) -> Option<&str> {
        self.inner
            .metrics
            .tenant_label
            .then(|| self.tenant())
            .flatten()
    }

    /// Read what an accepted request reads of it first (its first line and
    /// the tenant's text), so a cold principal starts loading early.
    pub(crate) fn touch(&self) {
        let tenant = self.inner.tenant.as_deref().and_then(|t| t.bytes().next());
        std::hint::black_box((self.inner.bound, tenant));
    }

    /// Count this principal's acceptance.
    pub(crate) fn count_accepted(&self) {
        crate::metrics::accepted(&self.inner.metrics, self.metrics_tenant());
    }

    /// The token identifier (`jti`), if stated.
    pub fn jti(&self) -> Option<&str> {
        self.inner.jti.as_deref()
    }

    /// The RFC 9449 `cnf.jkt`: the thumbprint of the DPoP key this token
    /// is bound to. When the token was accepted with a DPoP proof, the proof
    /// was signed by that key.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.inner.claims.get("cnf")?.get("jkt")?.as_str()
    }

    /// The RFC 8705 `cnf.x5t#S256`: the thumbprint of the client
    /// certificate this token is bound to.
    pub fn x5t_s256(&self) -> Option<&str> {
        if !self.inner.bound {
            return None;
        }
        self.inner.claims.get("cnf")?.get("x5t#S256")?.as_str()
    }

    /// Whether the token is bound to a key (it carries `cnf`: DPoP's `jkt`,
    /// mTLS's `x5t#S256`, or another confirmation method). A bound token is
    /// accepted only with its proof of possession.
    pub fn is_sender_constrained(&self) -> bool {
        self.inner.bound
    }

    /// One claim, raw.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.inner.claims.get(name)
    }

    /// Every claim of the verified token, raw.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// The claims deserialized into your own type.
    ///
    /// # Errors
    /// When the claims do not fit `T`.
    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(serde::de::value::MapDeserializer::new(
            self.inner.claims.iter().map(|(k, v)| (k.as_str(), v)),
        ))
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims are left out: they may hold data the owner did not mean to log.
        f.debug_struct("Principal")
            .field("issuer", &self.issuer())
            .field("subject", &self.subject())
            .field("client_id", &self.client_id())
            .field("tenant", &self.tenant())
            .field("scopes", &self.scopes())
            .field("machine", &self.is_machine())
            .field("expires_at", &self.inner.expires_at)
            .finish_non_exhaustive()
    }
}

/// A set of scopes, kept sorted and without duplicates, and the verifier's
/// [`ScopeHierarchy`], if any.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    granted: Vec<String>,
    hierarchy: Option<Arc<ScopeHierarchy>>,
}

impl Scopes {
    pub(crate) fn from_vec(mut v: Vec<String>) -> Self {
        v.sort_unstable();
        v.dedup();
        Scopes {
            granted: v,
            hierarchy: None,
        }
    }

    pub(crate) fn with_hierarchy(mut self, hierarchy: Option<Arc<ScopeHierarchy>>) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// `true` if `scope` is granted, or implied by a granted scope through
    /// the verifier's [`ScopeHierarchy`].
    pub fn contains(&self, scope: &str) -> bool {
        self.granted
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
            || self
                .hierarchy
                .as_ref()
                .is_some_and(|h| self.granted.iter().any(|g| h.grants(g, scope)))
    }

    /// `true` if every one of `scopes` is granted.
    pub fn contains_all<'a>(&self, scopes: impl IntoIterator<Item = &'a str>) -> bool {
        scopes.into_iter().all(|s| self.contains(s))
    }

    /// `true` if at least one of `scopes` is granted.
    pub fn contains_any<'a>(&self, scopes: impl IntoIterator<Item = &'a str>) -> bool {
        scopes.into_iter().any(|s| self.contains(s))
    }

    /// The scopes the token was granted, sorted (not those a hierarchy implies).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.granted.iter().map(String::as_str)
    }

    /// How many scopes were granted.
    pub fn len(&self) -> usize {
        self.granted.len()
    }

    /// `true` when no scope is granted.
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()?;
        // Equality compares the hierarchy too: show that there is one.
        if self.hierarchy.is_some() {
            f.write_str(" (with a scope hierarchy)")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a str;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, String>, fn(&String) -> &str>;
    fn into_iter(self) -> Self::IntoIter {
        self.granted.iter().map(String::as_str)
    }
}

impl serde::Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.granted.serialize(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A principal of client `c` with `claims`.
    pub(crate) fn with_claims(claims: &str) -> Principal {
        let issuer: Arc<str> = "https://issuer.example".into();
        Principal::from_parts(PrincipalParts {
            metrics: Arc::new(IssuerMetrics::new(&issuer, false)),
            issuer,
            subject: None,
            client_id: Some("c".into()),
            tenant: None,
            scopes: Scopes::from_vec(Vec::new()),
            expires_at: 0,
            issued_at: None,
            jti: None,
            machine: true,
            claims: serde_json::from_str(claims).unwrap(),
        })
    }

    #[test]
    fn a_tenant_name_is_shared_and_the_set_is_bounded() {
        let names = TenantNames::default();
        let a = names.shared("org_a".to_owned());
        assert!(Arc::ptr_eq(&a, &names.shared("org_a".to_owned())));
        let b = names.shared("org_b".to_owned());
        assert_eq!(&*b, "org_b");
        assert!(!Arc::ptr_eq(&a, &b));
        let held = || names.0.lock().unwrap().len();
        assert_eq!(held(), 2);
        for i in 2..TenantNames::MAX {
            names.shared(format!("org_{i}"));
        }
        assert_eq!(held(), TenantNames::MAX);
        // Full: the set starts over with the new name, and names handed out
        // before stay what they were.
        let c = names.shared("org_c".to_owned());
        assert_eq!(held(), 1);
        assert_eq!((&*a, &*c), ("org_a", "org_c"));
        assert!(!Arc::ptr_eq(&a, &names.shared("org_a".to_owned())));
        // A name longer than MAX_LEN is not kept.
        let long = "x".repeat(TenantNames::MAX_LEN + 1);
        let held_before = held();
        let l = names.shared(long.clone());
        assert_eq!(&*l, long);
        assert_eq!(held(), held_before);
        assert!(!Arc::ptr_eq(&l, &names.shared(long)));
        let longest = "y".repeat(TenantNames::MAX_LEN);
        let m = names.shared(longest.clone());
        assert!(Arc::ptr_eq(&m, &names.shared(longest)));
    }

    /// `cnf` is looked up once, when the principal is built; what it
    /// answers is what the claims say.
    #[test]
    fn the_confirmation_claim_is_read_once_and_right() {
        let unbound = with_claims(r#"{"sub":"c"}"#);
        assert!(!unbound.is_sender_constrained());
        assert_eq!(unbound.x5t_s256(), None);
        let mtls = with_claims(r#"{"cnf":{"x5t#S256":"abc"}}"#);
        assert!(mtls.is_sender_constrained());
        assert_eq!(mtls.x5t_s256(), Some("abc"));
        let dpop = with_claims(r#"{"cnf":{"jkt":"xyz"}}"#);
        assert!(dpop.is_sender_constrained());
        assert_eq!(dpop.x5t_s256(), None);
    }
}
