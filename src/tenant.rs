//! Multi-tenant issuers: an issuer template such as
//! `https://login.microsoftonline.com/{tenantid}/v2.0`, the tenants it
//! admits, and the key stores of issuers with one key set per tenant.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::error::BuildError;
use crate::fetch::{Fetcher, parse_url};
use crate::keystore::{KeySource, KeyStore, RefreshPolicy};

/// The placeholder an issuer template names the tenant with (Microsoft's spelling).
pub(crate) const PLACEHOLDER: &str = "{tenantid}";

/// Longest tenant accepted from a token's `iss`.
const MAX_TENANT_LEN: usize = 128;

/// An issuer identifier with one `{tenantid}` path segment.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    /// `None` for an issuer without the placeholder; an error when the
    /// placeholder is not exactly one whole path segment of an URL.
    pub(crate) fn parse(issuer: &str) -> Result<Option<Template>, BuildError> {
        let Some(at) = issuer.find(PLACEHOLDER) else {
            if issuer.contains('{') || issuer.contains('}') {
                return Err(BuildError::Config(format!(
                    "issuer {issuer}: the only placeholder is {PLACEHOLDER}"
                )));
            }
            return Ok(None);
        };
        let prefix = &issuer[..at];
        let suffix = &issuer[at + PLACEHOLDER.len()..];
        let bad = |why: &str| {
            Err(BuildError::Config(format!(
                "issuer template {issuer}: {why}"
            )))
        };
        if suffix.contains('{') || prefix.contains('{') || suffix.contains('}') {
            return bad("one {tenantid} placeholder at most");
        }
        // A whole path segment, after the host: never in the host, the
        // query or the fragment.
        let Some(scheme_end) = prefix.find("://") else {
            return bad("not an URL");
        };
        let after_scheme = &prefix[scheme_end + 3..];
        if !prefix.ends_with('/') || !after_scheme.contains('/') {
            return bad("{tenantid} must be a whole path segment after the host");
        }
        if !(suffix.is_empty() || suffix.starts_with('/')) || issuer.contains(['?', '#']) {
            return bad("{tenantid} must be a whole path segment after the host");
        }
        parse_url("issuer", &issuer.replace(PLACEHOLDER, "tenant"))?;
        Ok(Some(Template {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }))
    }

    /// The tenant `iss` names, when it has this template's shape and the
    /// tenant is a plausible identifier (1..=128 of `A-Z a-z 0-9 - _ .`,
    /// not starting with a dot).
    pub(crate) fn tenant_of<'a>(&self, iss: &'a str) -> Option<&'a str> {
        let tenant = between(iss, &self.prefix, &self.suffix)?;
        valid_tenant(tenant).then_some(tenant)
    }

    /// Whether some `iss` could have both shapes (then which one decides
    /// would depend on order: refused at build). A string of both shapes
    /// starts with both prefixes, ends with both suffixes, and has as many
    /// `/` as each template outside its tenant (a tenant has none).
    pub(crate) fn overlaps(&self, other: &Template) -> bool {
        let related = |a: &str, b: &str, f: fn(&str, &str) -> bool| f(a, b) || f(b, a);
        let slashes = |t: &Template| t.prefix.matches('/').count() + t.suffix.matches('/').count();
        slashes(self) == slashes(other)
            && related(&self.prefix, &other.prefix, |a, b| a.starts_with(b))
            && related(&self.suffix, &other.suffix, |a, b| a.ends_with(b))
    }

    /// The issuer identifier of `tenant`.
    pub(crate) fn issuer_for(&self, tenant: &str) -> String {
        format!("{}{tenant}{}", self.prefix, self.suffix)
    }
}

/// Where an Entra issuer template's tenant-independent metadata lives:
/// the v1 template (`https://sts.windows.net/{tenantid}/`) is served by
/// `https://login.microsoftonline.com/common`; otherwise the template with
/// `common` for the tenant (`…/common/v2.0`).
pub(crate) fn entra_tenant_independent(template: &str) -> String {
    if template == "https://sts.windows.net/{tenantid}/" {
        "https://login.microsoftonline.com/common".to_owned()
    } else {
        template.replace(PLACEHOLDER, "common")
    }
}

/// What `s` holds between `prefix` and `suffix`, if it has both.
fn between<'a>(s: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)?.strip_suffix(suffix)
}

pub(crate) fn valid_tenant(t: &str) -> bool {
    (1..=MAX_TENANT_LEN).contains(&t.len())
        && !t.starts_with('.')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether a key whose JWK names `key_issuer` may verify a token from
/// `iss` of `tenant`. Microsoft: a key with an `issuer` member is used only
/// with an exact match; its `{tenantid}` stands for the token's tenant.
pub(crate) fn key_issuer_matches(key_issuer: &str, iss: &str, tenant: Option<&str>) -> bool {
    if key_issuer == iss {
        return true;
    }
    let Some(at) = key_issuer.find(PLACEHOLDER) else {
        return false;
    };
    let (prefix, suffix) = (&key_issuer[..at], &key_issuer[at + PLACEHOLDER.len()..]);
    let Some(in_iss) = between(iss, prefix, suffix) else {
        return false;
    };
    match tenant {
        // The token's tenant (from a template's `iss`, or its tenant claim).
        Some(tenant) => in_iss == tenant,
        // No tenant known (an exact issuer, a preset without a tenant
        // claim): `iss` already matched the configuration exactly; the key
        // serves every tenant of its template, this one included.
        None => valid_tenant(in_iss),
    }
}

/// Which tenants a template issuer admits.
#[derive(Clone)]
pub(crate) enum TenantPolicy {
    List(Arc<HashSet<String>>),
    Filter(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl TenantPolicy {
    pub(crate) fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantPolicy::List(list) => list.contains(tenant),
            TenantPolicy::Filter(f) => f(tenant),
        }
    }
}

impl std::fmt::Debug for TenantPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantPolicy::List(list) => f.debug_tuple("List").field(&list.len()).finish(),
            TenantPolicy::Filter(_) => f.write_str("Filter(..)"),
        }
    }
}

/// The key stores of an issuer with one key set per tenant (discovered at
/// the tenant's own issuer), created on a tenant's first token, at most
/// `max` at once.
///
/// Tenants of an allow-list are the operator's: created on demand, never
/// paced (the list fits in `max`, checked at build). Tenants admitted by a
/// filter come from unverified tokens, so their creations draw from one
/// budget (a burst of [`CREATE_BURST`], then one per [`CREATE_EVERY`]): tokens
/// naming many tenants never turn into a flood of fetches. When full, a
/// store that never loaded keys makes room, else one unused for [`IDLE`];
/// otherwise the new tenant waits (503).
pub(crate) struct TenantStores {
    template: Template,
    stores: RwLock<HashMap<String, Arc<KeyStore>>>,
    max: usize,
    /// Creations draw from `budget` (tenants admitted by a filter).
    paced: bool,
    budget: Mutex<Budget>,
    /// At most one "full" warning per [`CREATE_EVERY`].
    last_warning: Mutex<Option<Instant>>,
    fetcher: Arc<Fetcher>,
    policy: RefreshPolicy,
    clock: Clock,
}

/// New tenant stores a burst may create at once.
pub(crate) const CREATE_BURST: u32 = 10;
/// One more new tenant store per this, after the burst.
pub(crate) const CREATE_EVERY: Duration = Duration::from_secs(6);
/// A tenant store unused this long may make room for a new tenant.
pub(crate) const IDLE: Duration = Duration::from_secs(15 * 60);

struct Budget {
    tokens: u32,
    refilled: Instant,
}

impl TenantStores {
    pub(crate) fn new(
        template: Template,
        max: usize,
        paced: bool,
        fetcher: Arc<Fetcher>,
        policy: RefreshPolicy,
        clock: Clock,
    ) -> Self {
        TenantStores {
            template,
            stores: RwLock::new(HashMap::new()),
            max,
            paced,
            budget: Mutex::new(Budget {
                tokens: CREATE_BURST,
                refilled: clock.now(),
            }),
            last_warning: Mutex::new(None),
            fetcher,
            policy,
            clock,
        }
    }

    /// The store of a tenant already seen. Looking it up is not a use:
    /// its store notes a use when its keys verify a token
    /// ([`KeyStore::mark_used`]).
    pub(crate) fn existing(&self, tenant: &str) -> Option<Arc<KeyStore>> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores.get(tenant).cloned()
    }

    /// Every store with its tenant, for health.
    pub(crate) fn named(&self) -> Vec<(String, Arc<KeyStore>)> {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = stores.iter().map(|(t, s)| (t.clone(), s.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every store, for refreshes and metrics.
    pub(crate) fn all(&self) -> Vec<Arc<KeyStore>> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The store of `tenant` (an admitted one), created if new. `Err` with
    /// how long to wait when no store can be made now.
    pub(crate) fn get(&self, tenant: &str) -> Result<Arc<KeyStore>, Duration> {
        if let Some(store) = self.existing(tenant) {
            return Ok(store);
        }
        // The budget first: a flood of new tenants never reaches the write
        // lock (nor the scan for room below) faster than the budget allows.
        if self.paced {
            self.take_budget()?;
        }
        let created = self.create(tenant);
        if created.is_err() && self.paced {
            self.refund();
        }
        created
    }

    fn create(&self, tenant: &str) -> Result<Arc<KeyStore>, Duration> {
        let now = self.clock.now();
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(tenant) {
            return Ok(store.clone());
        }
        if stores.len() >= self.max {
            // Room: a tenant whose issuer never answered, else the least
            // recently used tenant, if idle long enough. Used means a token
            // its keys verified was presented, a cache hit included: a
            // tenant whose tokens all come from the token cache is busy,
            // and forged tokens naming a tenant do not keep it.
            let dead = stores.iter().find(|(_, s)| s.never_loaded());
            let victim = dead
                .or_else(|| {
                    stores
                        .iter()
                        .map(|(t, s)| (t, s.last_used()))
                        .filter(|(_, used)| now.saturating_duration_since(*used) >= IDLE)
                        .min_by_key(|(_, used)| *used)
                        .and_then(|(t, _)| stores.get_key_value(t.as_str()))
                })
                .map(|(t, _)| t.clone());
            match victim {
                Some(t) => {
                    stores.remove(&t);
                }
                None => {
                    drop(stores);
                    self.warn_full();
                    return Err(CREATE_EVERY);
                }
            }
        }
        let issuer = self.template.issuer_for(tenant);
        let store = Arc::new(KeyStore::for_tenant(
            KeySource::Discovery {
                base: issuer.clone(),
                issuer,
            },
            self.fetcher.clone(),
            self.policy.clone(),
            self.clock.clone(),
        ));
        stores.insert(tenant.to_owned(), store.clone());
        Ok(store)
    }

    fn warn_full(&self) {
        let now = self.clock.now();
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < CREATE_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            issuer = %crate::text::remote(&self.template.issuer_for(PLACEHOLDER), 200),
            max = self.max,
            "m2m-guard: every tenant key store is in use; new tenants wait (raise Issuer::max_tenants)"
        );
    }

    fn take_budget(&self) -> Result<(), Duration> {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let elapsed = now.saturating_duration_since(b.refilled);
        let earned = (elapsed.as_millis() / CREATE_EVERY.as_millis()).min(u128::from(CREATE_BURST));
        if earned > 0 {
            let earned = earned as u32;
            b.tokens = (b.tokens + earned).min(CREATE_BURST);
            // The part of a period not yet earned carries over (a budget
            // that is now full restarts its period below, when used).
            b.refilled = crate::backoff::instant_after(b.refilled, CREATE_EVERY * earned);
        }
        if b.tokens == 0 {
            return Err(CREATE_EVERY
                .saturating_sub(now.saturating_duration_since(b.refilled))
                .max(Duration::from_secs(1)));
        }
        if b.tokens == CREATE_BURST {
            // A full budget earns nothing: its period starts with its first use.
            b.refilled = now;
        }
        b.tokens -= 1;
        Ok(())
    }

    /// Give back a budget token drawn for a creation that did not happen.
    fn refund(&self) {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens = (b.tokens + 1).min(CREATE_BURST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn templates_are_one_whole_path_segment() {
        for ok in [
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "https://sts.windows.net/{tenantid}/",
            "https://kc.example.com/realms/{tenantid}",
        ] {
            assert!(Template::parse(ok).unwrap().is_some(), "{ok}");
        }
        assert!(Template::parse("https://acme.kinde.com").unwrap().is_none());
        for bad in [
            "https://{tenantid}.example.com/",
            "https://example.com/t-{tenantid}/",
            "https://example.com/{tenantid}x",
            "https://example.com/{tenantid}/{tenantid}",
            "https://example.com/{tenant}/",
            "https://example.com/?t={tenantid}",
            "https://example.com/{tenantid}?x",
            "{tenantid}",
            "https://example.com/p?x=/{tenantid}",
            "https://example.com/p#/{tenantid}/",
            "https://example.com/{tenantid/v2.0",
            "https://example.com/tenantid}/v2.0",
            "https://h/{x}/{tenantid}",
            "https://h/{tenantid}/{",
            "https://{tenantid}/v2.0",
            "https://{tenantid}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    fn stores(max: usize, paced: bool) -> TenantStores {
        stores_on(max, paced, Clock::default())
    }

    fn stores_on(max: usize, paced: bool, clock: Clock) -> TenantStores {
        TenantStores::new(
            Template::parse("https://kc.example.com/realms/{tenantid}")
                .unwrap()
                .unwrap(),
            max,
            paced,
            Arc::new(Fetcher::new(None, crate::fetch::FetchLimits::default()).unwrap()),
            RefreshPolicy::default(),
            clock,
        )
    }

    /// Move the budget's period start `by` into the past.
    fn age_budget(s: &TenantStores, tokens: u32, by: Duration) {
        let mut b = s.budget.lock().unwrap();
        b.tokens = tokens;
        b.refilled = s.clock.now().checked_sub(by).unwrap();
    }

    #[test]
    fn the_budget_earns_one_creation_a_period_however_often_it_is_asked() {
        let s = stores(100, true);
        for _ in 0..CREATE_BURST {
            s.take_budget().unwrap();
        }
        // 3 s into a period: about 3 s to wait, and asking again does not
        // restart the period.
        age_budget(&s, 0, Duration::from_secs(3));
        let wait = s.take_budget().unwrap_err();
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        s.budget.lock().unwrap().refilled -= Duration::from_secs(3);
        s.take_budget().unwrap();
        assert!(s.take_budget().is_err());
        // What is not yet earned carries over: 11 s earn one creation, and
        // the next is 1 s away, not 6.
        age_budget(&s, 0, Duration::from_secs(11));
        s.take_budget().unwrap();
        let wait = s.take_budget().unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Two periods and a second earn two, and the next is 5 s away.
        age_budget(&s, 0, Duration::from_secs(13));
        s.take_budget().unwrap();
        s.take_budget().unwrap();
        let wait = s.take_budget().unwrap_err();
        assert!(
            wait > Duration::from_secs(4) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
        // A full budget does not bank time: 10 periods idle, or full for
        // 5 s, then a burst, then a wait of a whole period.
        for (tokens, idle) in [(CREATE_BURST - 1, 600), (CREATE_BURST, 5)] {
            age_budget(&s, tokens, Duration::from_secs(idle));
            for _ in 0..CREATE_BURST {
                s.take_budget().unwrap();
            }
            let wait = s.take_budget().unwrap_err();
            assert!(wait > Duration::from_secs(5), "{idle} s: {wait:?}");
        }
    }

    #[test]
    fn a_creation_refused_for_room_gives_its_budget_back() {
        let s = stores(1, true);
        s.get("a").unwrap();
        assert_eq!(s.budget.lock().unwrap().tokens, CREATE_BURST - 1);
        // "a" is in use (not dead, not idle): "b" waits, however often asked.
        for _ in 0..20 {
            assert_eq!(s.get("b").err().unwrap(), CREATE_EVERY);
        }
        assert_eq!(s.budget.lock().unwrap().tokens, CREATE_BURST - 1);
    }

    #[test]
    fn a_tenant_unused_for_15_minutes_makes_room() {
        let skew = Arc::new(AtomicU64::new(0));
        let at_minute = |m: u64| skew.store(m * 60_000_000_000, Ordering::Relaxed);
        let s = stores_on(1, false, Clock::skewed(skew.clone()));
        let a = s.get("a").unwrap();
        at_minute(14);
        assert_eq!(s.get("b").err().unwrap(), CREATE_EVERY);
        // A token its keys verified (as `Verifier` notes it): in use.
        a.mark_used();
        at_minute(28);
        assert_eq!(s.get("b").err().unwrap(), CREATE_EVERY, "used at minute 14");
        // Looked up (for a token not yet verified), inspected, asked for
        // keys it does not hold: none of it is a use.
        s.get("a").unwrap();
        s.existing("a").unwrap();
        assert!(!a.holds(0));
        at_minute(29);
        s.get("b").unwrap();
        assert_eq!(
            s.named().into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn a_full_table_warns_at_most_once_a_period() {
        let s = stores(1, false);
        s.get("a").unwrap();
        let warned = || *s.last_warning.lock().unwrap();
        assert_eq!(warned(), None);
        s.get("b").err().unwrap();
        let first = warned().expect("warned");
        s.get("b").err().unwrap();
        s.get("c").err().unwrap();
        assert_eq!(warned(), Some(first), "once a period");
        let earlier = first
            .checked_sub(CREATE_EVERY + Duration::from_secs(1))
            .unwrap();
        *s.last_warning.lock().unwrap() = Some(earlier);
        s.get("b").err().unwrap();
        assert!(warned().unwrap() > first, "again after a period");
    }

    #[test]
    fn policies_show_their_kind_not_their_content() {
        let list = TenantPolicy::List(Arc::new(["a".to_owned(), "b".to_owned()].into()));
        assert_eq!(format!("{list:?}"), "List(2)");
        let filter = TenantPolicy::Filter(Arc::new(|t: &str| t == "a"));
        assert_eq!(format!("{filter:?}"), "Filter(..)");
    }

    #[test]
    fn entras_tenant_independent_metadata_per_template() {
        assert_eq!(
            entra_tenant_independent("https://login.microsoftonline.com/{tenantid}/v2.0"),
            "https://login.microsoftonline.com/common/v2.0"
        );
        assert_eq!(
            entra_tenant_independent("https://sts.windows.net/{tenantid}/"),
            "https://login.microsoftonline.com/common"
        );
        assert_eq!(
            entra_tenant_independent("https://login.microsoftonline.us/{tenantid}/v2.0"),
            "https://login.microsoftonline.us/common/v2.0"
        );
    }

    #[test]
    fn overlapping_templates_are_told() {
        let t = |s: &str| Template::parse(s).unwrap().unwrap();
        // "https://h/realms/x" has both shapes (tenants "x" and "realms").
        let realms = t("https://h/realms/{tenantid}");
        assert!(realms.overlaps(&t("https://h/{tenantid}/x")));
        assert!(t("https://h/a/{tenantid}/v2.0").overlaps(&t("https://h/{tenantid}/b/v2.0")));
        assert!(realms.overlaps(&realms));
        // Different depths never meet: a tenant is one segment.
        assert!(!t("https://h/{tenantid}").overlaps(&realms));
        assert!(!t("https://h/{tenantid}/v2.0").overlaps(&t("https://h/a/{tenantid}/v2.0")));
        assert!(!t("https://h/{tenantid}/v2.0").overlaps(&t("https://h/{tenantid}/")));
        assert!(!t("https://a/{tenantid}").overlaps(&t("https://b/{tenantid}")));
    }

    #[test]
    fn the_tenant_is_read_from_a_matching_iss_only() {
        let t = Template::parse("https://login.microsoftonline.com/{tenantid}/v2.0")
            .unwrap()
            .unwrap();
        let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let iss = format!("https://login.microsoftonline.com/{tid}/v2.0");
        assert_eq!(t.tenant_of(&iss), Some(tid));
        assert_eq!(t.issuer_for(tid), iss);
        for bad in [
            "https://login.microsoftonline.com//v2.0",
            "https://login.microsoftonline.com/a/b/v2.0",
            "https://login.microsoftonline.com/../v2.0",
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "https://login.microsoftonline.com/a%2Fb/v2.0",
            "https://login.microsoftonline.com/a b/v2.0",
            "https://login.microsoftonline.com/tid/v2.0/",
            "https://evil.example/tid/v2.0",
        ] {
            assert_eq!(t.tenant_of(bad), None, "{bad}");
        }
        let long = format!("https://login.microsoftonline.com/{}/v2.0", "a".repeat(129));
        assert_eq!(t.tenant_of(&long), None);
        let max = format!("https://login.microsoftonline.com/{}/v2.0", "a".repeat(128));
        assert!(t.tenant_of(&max).is_some());
    }

    #[test]
    fn a_key_issuer_matches_exactly_or_through_the_tokens_tenant() {
        let tpl = "https://login.microsoftonline.com/{tenantid}/v2.0";
        let a = "https://login.microsoftonline.com/aaa/v2.0";
        assert!(key_issuer_matches(a, a, None));
        assert!(key_issuer_matches(tpl, a, Some("aaa")));
        assert!(!key_issuer_matches(tpl, a, Some("bbb")));
        // No tenant known: the key's template covers this `iss`.
        assert!(key_issuer_matches(tpl, a, None));
        assert!(!key_issuer_matches(
            tpl,
            "https://login.microsoftonline.com/a/b/v2.0",
            None
        ));
        assert!(!key_issuer_matches(
            tpl,
            "https://other.example/aaa/v2.0",
            None
        ));
        // Non-ASCII never panics, never matches.
        assert!(!key_issuer_matches(
            tpl,
            "https://login.microsoftonline.com/é/v2.0",
            Some("aaa")
        ));
        assert!(!key_issuer_matches(tpl, a, Some("ééé")));
        assert!(!key_issuer_matches(
            "https://login.microsoftonline.com/bbb/v2.0",
            a,
            Some("aaa")
        ));
        assert!(!key_issuer_matches(
            "https://sts.windows.net/{tenantid}/",
            a,
            Some("aaa")
        ));
    }
}
