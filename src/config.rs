//! Configuration: one [`Issuer`] per trusted issuer, gathered by a [`VerifierBuilder`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::cache::TokenCache;
use crate::claims::{AudienceRule, ClaimRules, TokenType};
use crate::clock::Clock;
use crate::error::BuildError;
use crate::fetch::{FetchLimits, Fetcher, parse_url};
use crate::hierarchy::ScopeHierarchy;
use crate::keystore::{KeySource, KeyStore, RefreshPolicy};
use crate::preset::Preset;
use crate::tenant::{PLACEHOLDER, Template, TenantPolicy, TenantStores, entra_tenant_independent};
use crate::token::Algorithm;
use crate::verifier::{IssuerVerifier, Keys, Verifier, VerifierInner};

/// The largest leeway accepted for clock skew.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `value` must lie in `min..=max`, else a [`BuildError::OutOfRange`] naming `setting`.
fn in_range(
    setting: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), BuildError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(BuildError::OutOfRange {
            setting,
            value: format!("{value:?}"),
            allowed: format!("{min:?} ..= {max:?}"),
        })
    }
}

/// Like [`in_range`] for counts and sizes.
fn count_in_range(setting: &'static str, value: u64, min: u64, max: u64) -> Result<(), BuildError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(BuildError::OutOfRange {
            setting,
            value: value.to_string(),
            allowed: format!("{min} ..= {max}"),
        })
    }
}

/// One trusted issuer and the rules its tokens must meet.
///
/// ```
/// use m2m_guard::{Issuer, Preset};
/// use std::time::Duration;
///
/// let kinde = Issuer::new("https://acme.kinde.com")
///     .audience("https://api.acme.com")
///     .preset(Preset::Kinde)
///     .leeway(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct Issuer {
    pub(crate) issuer: String,
    pub(crate) jwks_url: Option<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) preset: Preset,
    pub(crate) leeway: Duration,
    pub(crate) policy: RefreshPolicy,
    pub(crate) algorithms: Option<Vec<Algorithm>>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) token_type: TokenType,
    pub(crate) tenant_claim: Option<Option<String>>,
    pub(crate) scope_claims: Option<Vec<String>>,
    pub(crate) client_id_claims: Option<Vec<String>>,
    pub(crate) allowed_client_ids: Option<Vec<String>>,
    pub(crate) refresh_interval_set: bool,
    pub(crate) accept_user_tokens: bool,
    /// Set by [`Issuer::bind_to_client_ids`]: `aud` may be absent.
    pub(crate) audience_optional: bool,
    /// The tenants an issuer template admits.
    pub(crate) tenants: Option<TenantPolicy>,
    pub(crate) max_tenants: usize,
}

impl Issuer {
    /// Trust `issuer` (its `iss` value, compared exactly). Keys are found by
    /// discovery unless [`Issuer::jwks_url`] is set.
    ///
    /// # Multi-tenant issuers
    ///
    /// An issuer whose identifier embeds the tenant is configured once, as a
    /// template with one `{tenantid}` path segment, plus the tenants it
    /// admits ([`Issuer::allowed_tenants`] or [`Issuer::allow_tenants_if`];
    /// one is required, `build` says so otherwise):
    ///
    /// ```
    /// use m2m_guard::{Issuer, Preset};
    ///
    /// // Microsoft Entra multi-tenant apps (v2 tokens; v1: "https://sts.windows.net/{tenantid}/").
    /// let entra = Issuer::new("https://login.microsoftonline.com/{tenantid}/v2.0")
    ///     .preset(Preset::Entra)
    ///     .audience("api://4c3a1d7e-0000-4000-8000-000000000001")
    ///     .allowed_tenants(["9188040d-6c67-4c5b-b112-36a304b66dad"]);
    ///
    /// // One Keycloak realm per customer: each realm has keys of its own.
    /// let realms = Issuer::new("https://sso.example.com/realms/{tenantid}")
    ///     .preset(Preset::Keycloak)
    ///     .audience("orders-api")
    ///     .allow_tenants_if(|realm| realm.starts_with("cust-"));
    /// ```
    ///
    /// A token's `iss` must then equal the template with one admitted
    /// tenant in it (1 to 128 of `A-Z a-z 0-9 - _ .`); a tenant not admitted
    /// gets 401 `tenant_not_allowed`. `iss` is always checked, never skipped.
    /// When the preset has a tenant claim (Entra `tid`), it must name the same
    /// tenant as `iss`; otherwise the tenant from `iss` is the principal's
    /// [`tenant`](crate::Principal::tenant). The principal's
    /// [`issuer`](crate::Principal::issuer) is the token's own `iss`.
    ///
    /// Keys: with [`Issuer::jwks_url`], one key set serves every tenant.
    /// Under [`Preset::Entra`] without it, the tenant-independent metadata is
    /// discovered (`https://login.microsoftonline.com/common/v2.0` for the v2
    /// template, `https://login.microsoftonline.com/common` for the v1
    /// `https://sts.windows.net/{tenantid}/`; other v2 Microsoft clouds: the
    /// template with `common` for the tenant; other v1 clouds: set
    /// [`Issuer::jwks_url`]), whose `issuer` must be the template itself.
    /// Otherwise each tenant's own issuer is discovered when its first token
    /// arrives, a key set per tenant, at most [`Issuer::max_tenants`] at once.
    /// Whatever the source, a key whose JWK has an `issuer` member verifies
    /// only tokens of exactly that issuer (its `{tenantid}` read as the
    /// token's tenant), else `key_issuer_mismatch`.
    ///
    /// Templates of one verifier must not overlap (no `iss` may have the
    /// shape of two), and an exact issuer wins over a template.
    pub fn new(issuer: impl Into<String>) -> Self {
        Issuer {
            issuer: issuer.into(),
            jwks_url: None,
            audiences: Vec::new(),
            preset: Preset::Generic,
            leeway: Duration::from_secs(60),
            policy: RefreshPolicy::default(),
            refresh_interval_set: false,
            accept_user_tokens: false,
            audience_optional: false,
            algorithms: None,
            max_lifetime: None,
            max_age: None,
            token_type: TokenType::Default,
            tenant_claim: None,
            scope_claims: None,
            client_id_claims: None,
            allowed_client_ids: None,
            tenants: None,
            max_tenants: 100,
        }
    }

    /// Fetch keys from this JWKS URL instead of discovering it.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Accept tokens whose `aud` contains `audience`. Call again to accept
    /// several. At least one is required (except for [`Preset::Cognito`]).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Claim names and rules of a known identity provider. Defaults to [`Preset::Generic`].
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Clock-skew allowance for `exp`, `nbf` and `iat`. Defaults to 60 s; at most [`MAX_LEEWAY`].
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long past its TTL (counted from its fetch; refreshes start at
    /// three quarters of it) a key set is still used when the issuer cannot
    /// be reached. Defaults to 12 hours; at most 7 days.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.policy.max_stale = max_stale;
        self
    }

    /// Key-set lifetime when the response has no `Cache-Control: max-age`.
    /// Defaults to 10 minutes (clamped into the bounds). A value you set
    /// must lie within [`Issuer::refresh_bounds`] (1 minute ..= 24 hours by
    /// default; lower them too for a shorter interval), else `build` names
    /// it. A background refresh starts at 3/4 of it.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.policy.default_ttl = interval;
        self.refresh_interval_set = true;
        self
    }

    /// Bounds applied to the issuer's `Cache-Control: max-age`. Defaults to
    /// 1 minute ..= 24 hours; each bound must lie in 100 ms ..= 7 days.
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.policy.min_ttl = min;
        self.policy.max_ttl = max;
        self
    }

    /// Minimum time between two key-set refetches caused by tokens with an
    /// unknown `kid` (or without a `kid`, whose signature fails against the
    /// one key held: the issuer may have replaced it), while fetches
    /// succeed. Defaults to 30 s (100 ms ..= 1 hour).
    ///
    /// Within the cooldown a token with an unknown `kid` gets 401
    /// `invalid_token`: the key set was fetched successfully moments ago
    /// and lacks the key. When the last fetch failed, such a token gets 503
    /// with `Retry-After` instead (the token may be good; we cannot tell),
    /// and the fetch backoff paces the refetches.
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.policy.unknown_kid_cooldown = cooldown;
        self
    }

    /// Backoff between failed metadata / key-set fetches: doubles from `min`
    /// up to `max`, with jitter. Defaults to 1 s ..= 30 s; `min` at least
    /// 10 ms, `max` at most 1 hour. After an outage, keys are back within
    /// about `max` of the issuer's return.
    pub fn fetch_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.policy.backoff = Backoff { min, max };
        self
    }

    /// Accept users' access tokens too, not only machine (client-credentials)
    /// tokens. By default a token the preset's rule does not recognise as a
    /// machine client's is refused (401, reason code `user_token`); see
    /// [`Preset`] for each rule. With this, [`Principal::is_machine`](crate::Principal::is_machine)
    /// tells them apart and [`Rule::machine_only`](crate::Rule::machine_only)
    /// keeps chosen routes machine-only. ID tokens stay refused.
    pub fn accept_user_tokens(mut self) -> Self {
        self.accept_user_tokens = true;
        self
    }

    /// Restrict the accepted algorithms. Defaults to every supported
    /// asymmetric algorithm; a key still verifies only its own algorithm.
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// Reject tokens whose lifetime (`exp - iat`) exceeds `max`; requires
    /// `iat` (without it the lifetime is unknown, and measuring from now
    /// would let an old token pass in its last minutes). Off by default;
    /// 1 s ..= 366 days.
    pub fn max_token_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// Reject tokens issued (`iat`) `max` (plus the leeway) ago or longer;
    /// requires `iat`. A token answered from the token cache is held to it
    /// too. Off by default; 1 s ..= 366 days.
    pub fn max_token_age(mut self, max: Duration) -> Self {
        self.max_age = Some(max);
        self
    }

    /// Require RFC 9068 strictly: `typ` must be `at+jwt`, and `iss`, `exp`,
    /// `aud`, `sub`, `client_id`, `iat`, `jti` must be present. Off by default
    /// (then `typ` may be `at+jwt`, `application/at+jwt`, `JWT` or absent).
    pub fn strict_rfc9068(mut self, strict: bool) -> Self {
        self.token_type = if strict {
            TokenType::Strict
        } else {
            TokenType::Default
        };
        self
    }

    /// Read the tenant / organization from this claim (overrides the preset).
    pub fn tenant_claim(mut self, claim: impl Into<String>) -> Self {
        self.tenant_claim = Some(Some(claim.into()));
        self
    }

    /// Read no tenant claim: every token is global.
    pub fn no_tenant_claim(mut self) -> Self {
        self.tenant_claim = Some(None);
        self
    }

    /// Read scopes from these claims, merged, for every token (overrides the
    /// preset, including Entra's split between app-only `roles` and users' `scp`).
    pub fn scope_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope_claims = Some(claims.into_iter().map(Into::into).collect());
        self
    }

    /// Read the client id from the first present of these claims (overrides the preset).
    pub fn client_id_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_id_claims = Some(claims.into_iter().map(Into::into).collect());
        self
    }

    /// Accept only tokens issued to these clients. Required for
    /// [`Preset::Cognito`], whose access tokens carry no `aud`. An empty
    /// list would refuse every token: `build` refuses it.
    pub fn allowed_client_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_client_ids = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// For issuers whose tokens may carry no `aud` (Scalekit clients
    /// registered without an audience; Cognito never sets one): bind tokens
    /// to these clients instead. Every token must be issued to one of `ids`
    /// (refused otherwise with `client_not_allowed`), and may then come
    /// without `aud`; a token that carries `aud` must still name a
    /// configured [`Issuer::audience`] (with none configured, any `aud` is
    /// refused: it names another API). An explicit opt-in, never a default:
    /// without an audience, any API trusting the same issuer and client
    /// would accept the same token. Implies [`Issuer::allowed_client_ids`].
    pub fn bind_to_client_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audience_optional = true;
        self.allowed_client_ids(ids)
    }

    /// For an issuer template: admit tokens of these tenants only (Entra:
    /// tenant ids; Keycloak: realm names). Replaces an earlier
    /// [`Issuer::allow_tenants_if`]. Each must be a tenant identifier as a
    /// token's `iss` can carry one (1 to 128 of `A-Z a-z 0-9 - _ .`, not
    /// starting with a dot): `build` refuses any other.
    pub fn allowed_tenants<I, S>(mut self, tenants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = tenants.into_iter().map(Into::into).collect();
        self.tenants = Some(TenantPolicy::List(Arc::new(list)));
        self
    }

    /// For an issuer template: admit the tenants for which `allow` returns
    /// `true`. It decides on unauthenticated input (the tenant from the
    /// token's `iss`, before the signature is checked), so keep it cheap, free
    /// of I/O, and as tight as you can: with a key set per tenant, each
    /// admitted tenant may cost a discovery at its issuer (paced, see
    /// [`Issuer::max_tenants`]), and new tenants share that pace with
    /// whatever tokens callers send; an allow-list has no such cost. `|_| true`
    /// admits every tenant, an explicit choice. A verified token is cached:
    /// a filter that changes its mind does not withdraw tokens already
    /// accepted before they expire. Replaces an earlier [`Issuer::allowed_tenants`].
    pub fn allow_tenants_if<F>(mut self, allow: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.tenants = Some(TenantPolicy::Filter(Arc::new(allow)));
        self
    }

    /// For an issuer template with a key set per tenant: the most tenants
    /// whose keys are held at once. Defaults to 100 (1 ..= 10 000); an
    /// allow-list must fit in it. When all are in use, a tenant whose issuer
    /// never answered makes room, else one that has not had a verified token
    /// (a token-cache hit included, from a client it allows) for 15 minutes:
    /// tokens that only name a tenant never keep its place. Otherwise a new
    /// tenant's tokens get 503 with `Retry-After`. Tenants admitted by
    /// [`Issuer::allow_tenants_if`] are also paced (a burst of 10 new ones,
    /// then one per 6 s) so that tokens naming many tenants cannot flood
    /// their issuers with fetches.
    pub fn max_tenants(mut self, max: usize) -> Self {
        self.max_tenants = max;
        self
    }

    /// The configured issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// What `aud` must be: the preset's rule, unless
    /// [`Issuer::bind_to_client_ids`] made it optional.
    pub(crate) fn audience_rule(&self) -> AudienceRule {
        match (self.preset.rules().uses_audience, self.audience_optional) {
            (false, _) => AudienceRule::Absent,
            (true, true) => AudienceRule::Optional,
            (true, false) => AudienceRule::Required,
        }
    }

    fn validate(&self) -> Result<(), BuildError> {
        let cfg = |m: String| Err(BuildError::Config(m));
        let template = Template::parse(&self.issuer)?;
        if template.is_none() {
            parse_url("issuer", &self.issuer)?;
        }
        // Before the tenant list is held against it: a list with
        // `max_tenants(0)` is a setting out of range, not a list too long.
        count_in_range("Issuer::max_tenants", self.max_tenants as u64, 1, 10_000)?;
        match (&template, &self.tenants) {
            (Some(_), None) => {
                return cfg(format!(
                    "issuer template {}: name the tenants it admits (allowed_tenants or allow_tenants_if)",
                    self.issuer
                ));
            }
            (None, Some(_)) => {
                return cfg(format!(
                    "issuer {}: allowed_tenants / allow_tenants_if need an issuer template with {PLACEHOLDER}",
                    self.issuer
                ));
            }
            (Some(_), Some(TenantPolicy::List(list))) if list.is_empty() => {
                return cfg(format!(
                    "issuer template {}: the tenant list is empty",
                    self.issuer
                ));
            }
            // A key set per tenant: every listed tenant must fit.
            (Some(_), Some(TenantPolicy::List(list)))
                if self.jwks_url.is_none()
                    && self.preset != Preset::Entra
                    && list.len() > self.max_tenants =>
            {
                return cfg(format!(
                    "issuer template {}: {} allowed tenants, more than Issuer::max_tenants ({})",
                    self.issuer,
                    list.len(),
                    self.max_tenants
                ));
            }
            _ => {}
        }
        // A name no token's `iss` could carry would only take a place (and
        // paste itself into a discovery URL at preload).
        if let Some(TenantPolicy::List(list)) = &self.tenants
            && let Some(bad) = list.iter().find(|t| !crate::tenant::valid_tenant(t))
        {
            return cfg(format!(
                "issuer template {}: allowed tenant {:?} is not a tenant identifier (1 to 128 of A-Z a-z 0-9 - _ ., not starting with a dot)",
                self.issuer,
                crate::text::remote(bad, 64)
            ));
        }
        in_range("Issuer::leeway", self.leeway, Duration::ZERO, MAX_LEEWAY)?;
        let no_client_ids = self
            .allowed_client_ids
            .as_ref()
            .is_none_or(|v| v.is_empty());
        if self.audience_optional && no_client_ids {
            return cfg(format!(
                "issuer {}: bind_to_client_ids needs at least one client id",
                self.issuer
            ));
        }
        if self.allowed_client_ids.as_ref().is_some_and(Vec::is_empty) {
            return cfg(format!(
                "issuer {}: the allowed client id list is empty (no token could be accepted)",
                self.issuer
            ));
        }
        match self.audience_rule() {
            AudienceRule::Required if self.audiences.is_empty() => {
                return cfg(format!(
                    "issuer {}: at least one audience is required (or bind_to_client_ids for tokens without aud)",
                    self.issuer
                ));
            }
            AudienceRule::Absent if !self.audiences.is_empty() => {
                return cfg(format!(
                    "issuer {}: Cognito access tokens carry no aud; use allowed_client_ids",
                    self.issuer
                ));
            }
            AudienceRule::Absent if no_client_ids => {
                return cfg(format!(
                    "issuer {}: Cognito requires allowed_client_ids",
                    self.issuer
                ));
            }
            _ => {}
        }
        if self.audiences.iter().any(String::is_empty) {
            return cfg("an audience is empty".into());
        }
        if self.algorithms.as_ref().is_some_and(|a| a.is_empty()) {
            return cfg("the algorithm list is empty".into());
        }
        let p = &self.policy;
        in_range("Issuer::max_stale", p.max_stale, Duration::ZERO, 7 * DAY)?;
        in_range("Issuer::refresh_bounds (min)", p.min_ttl, 100 * MS, 7 * DAY)?;
        in_range(
            "Issuer::refresh_bounds (max)",
            p.max_ttl,
            p.min_ttl,
            7 * DAY,
        )?;
        // A chosen interval lies within the bounds (it would be clamped
        // silently otherwise); the default is clamped into them.
        if self.refresh_interval_set {
            in_range(
                "Issuer::refresh_interval",
                p.default_ttl,
                p.min_ttl,
                p.max_ttl,
            )?;
        }
        in_range(
            "Issuer::unknown_kid_cooldown",
            p.unknown_kid_cooldown,
            100 * MS,
            HOUR,
        )?;
        in_range("Issuer::fetch_backoff (min)", p.backoff.min, 10 * MS, HOUR)?;
        in_range(
            "Issuer::fetch_backoff (max)",
            p.backoff.max,
            p.backoff.min,
            HOUR,
        )?;
        if let Some(d) = self.max_lifetime {
            in_range("Issuer::max_token_lifetime", d, SEC, 366 * DAY)?;
        }
        if let Some(d) = self.max_age {
            in_range("Issuer::max_token_age", d, SEC, 366 * DAY)?;
        }
        Ok(())
    }
}

/// Builds a [`Verifier`] trusting one or more issuers.
///
/// ```no_run
/// # async fn run() -> Result<(), m2m_guard::BuildError> {
/// use m2m_guard::{Issuer, Preset, Verifier};
///
/// let verifier = Verifier::builder()
///     .issuer(Issuer::new("https://acme.kinde.com").audience("https://api.acme.com").preset(Preset::Kinde))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct VerifierBuilder {
    issuers: Vec<Issuer>,
    client: Option<reqwest::ClientBuilder>,
    limits: FetchLimits,
    max_token_bytes: Option<usize>,
    token_cache: Option<(u64, u64)>,
    clock: Clock,
    hierarchy: Option<Arc<ScopeHierarchy>>,
    revocations: Option<crate::revocation::Revocations>,
    mirror: Option<crate::keystore::Mirror>,
    metrics_tenant: bool,
}

/// Default maximum token size.
const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

impl Default for VerifierBuilder {
    fn default() -> Self {
        VerifierBuilder {
            issuers: Vec::new(),
            client: None,
            limits: FetchLimits::default(),
            max_token_bytes: None,
            token_cache: Some((10_000, 32 * 1024 * 1024)),
            clock: Clock::default(),
            hierarchy: None,
            revocations: None,
            mirror: None,
            metrics_tenant: false,
        }
    }
}

impl VerifierBuilder {
    /// Read time from `clock` instead of the system's: key-set TTLs,
    /// `max_stale`, backoff and cooldowns, and `exp` / `nbf` / `iat`, all
    /// move when the test advances it. For tests of outages and rotation
    /// without sleeping; [`TestIssuer::verifier`](crate::test_util::TestIssuer::verifier)
    /// uses its issuer's clock.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn clock(mut self, clock: &crate::test_util::TestClock) -> Self {
        self.clock = clock.clock();
        self
    }

    /// Bound the verified-token cache: at most `max_entries` tokens (one or
    /// more) and about `max_bytes` of memory (at least 1 KiB). Defaults to
    /// 10 000 tokens and 32 MiB. To turn it off, use
    /// [`VerifierBuilder::disable_token_cache`].
    ///
    /// A cached token skips signature work, never a time rule: `exp`, `nbf`,
    /// `iat` and [`Issuer::max_token_age`] are checked again on every hit, and
    /// a hit is refused once the key that verified it is withdrawn by a
    /// key-set refresh.
    ///
    /// A token enters on its second verified sighting (first sightings are
    /// remembered in a fixed filter of 16 to 32 bytes per token that can be
    /// cached, at least 8 KiB and at most 64 MiB, on top of `max_bytes`);
    /// when the cache is full, expired tokens go first, then those not used since the
    /// eviction sweep last passed them (second chance). The bounds are
    /// split evenly over shards (one per 256 entries and per 256 KiB,
    /// rounded down to a power of two, at most 1,024), so a working set
    /// close to `max_entries` may see a few evictions before the bound, and
    /// a token whose entry outweighs its shard's part is not cached (with
    /// the defaults, tokens over about 400 KB).
    pub fn token_cache(mut self, max_entries: u64, max_bytes: u64) -> Self {
        self.token_cache = Some((max_entries, max_bytes));
        self
    }

    /// Let broader scopes imply narrower ones, for every issuer: checks of
    /// [`Scopes::contains`](crate::Scopes::contains), [`RequireScope`](crate::RequireScope),
    /// [`Scoped`](crate::Scoped) and per-tool MCP scopes honour it.
    pub fn scope_hierarchy(mut self, hierarchy: ScopeHierarchy) -> Self {
        hierarchy.prepare();
        self.hierarchy = Some(Arc::new(hierarchy));
        self
    }

    /// Refuse revoked tokens: every accepted token (token-cache hits
    /// included) is checked against `revocations`, in memory, and a revoked
    /// one gets 401 with reason [`Reason::Revoked`](crate::Reason::Revoked).
    /// A list of this process ([`Revocations::new`](crate::Revocations::new))
    /// or one kept in step across replicas by a
    /// [`Fleet`](crate::fleet::Fleet) (feature `redis`).
    ///
    /// `build` refuses an issuer whose
    /// [`Issuer::max_token_lifetime`] is longer than the list's retention: a
    /// revocation would be dropped while tokens it matches are still valid.
    pub fn revocations(mut self, revocations: crate::revocation::Revocations) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Join a [`Fleet`](crate::fleet::Fleet): its revocation list (see
    /// [`VerifierBuilder::revocations`]) and, unless the fleet turned them
    /// off, warm starts: key sets this replica fetches are published, and
    /// an issuer that cannot be reached when no keys were ever loaded is
    /// served from the key set a sibling published, within the same fresh +
    /// `max_stale` window from when the sibling fetched it.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet(mut self, fleet: &crate::fleet::Fleet) -> Self {
        self.revocations = Some(fleet.revocations());
        self.mirror = fleet.key_mirror().map(crate::keystore::Mirror);
        self
    }

    /// Label `m2m_guard_decisions_total` with the token's tenant too (feature
    /// `metrics`). Off by default: every tenant is a time series of its
    /// own, so turn it on only when your tenants are few (see the
    /// [`metrics`](crate::metrics) module).
    pub fn metrics_tenant_label(mut self, on: bool) -> Self {
        self.metrics_tenant = on;
        self
    }

    /// Verify every token in full, every time.
    pub fn disable_token_cache(mut self) -> Self {
        self.token_cache = None;
        self
    }

    /// Trust this issuer. Call again for several; each has its own audience,
    /// rules and key cache. The token's `iss` selects which one verifies it.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Start from your own HTTP client settings (custom CA, proxy). m2m-guard
    /// still sets on it what keeps fetches safe: no redirects (keys come only
    /// from their own URL), the timeouts and the user agent below; the size
    /// cap applies too.
    pub fn http_client(mut self, client: reqwest::ClientBuilder) -> Self {
        self.client = Some(client);
        self
    }

    /// Total time for one metadata or key-set fetch, and the longest a
    /// request waits for key fetches in all (one fetch may be discovery
    /// then the key set; past it the request gets 503 `keys_unavailable`
    /// and the fetch goes on). Defaults to 5 s (at most 5 min).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// Connect timeout for metadata and key-set fetches. Defaults to 3 s (at most 5 min).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.limits.connect_timeout = timeout;
        self
    }

    /// Largest metadata or key-set response accepted. Defaults to 256 KiB (at most 16 MiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// Most keys a key set may hold. Defaults to 100 (at most 10 000).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.limits.max_keys = keys;
        self
    }

    /// `User-Agent` of the built-in client. Defaults to `m2m-guard/<version>`.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.limits.user_agent = ua.into();
        self
    }

    /// Largest token accepted, in bytes. Defaults to 16 KiB (1 KiB ..= 1 MiB).
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = Some(bytes);
        self
    }

    /// Check the configuration. Nothing is fetched here: discovery (when no
    /// JWKS URL is given) and keys happen on first use, once, however many
    /// requests arrive together, so a service starts even while its issuer
    /// is down and answers 503 with `Retry-After` until the issuer is back.
    /// To fail fast at start instead, call [`Verifier::preload`] after `build`.
    ///
    /// # Errors
    /// A [`BuildError`] when the configuration is invalid or out of range,
    /// or an URL is not allowed.
    pub async fn build(mut self) -> Result<Verifier, BuildError> {
        crate::crypto::ensure_backend();
        for i in &mut self.issuers {
            i.policy.mirror.clone_from(&self.mirror);
            i.policy.label = i.issuer.as_str().into();
        }
        if self.issuers.is_empty() {
            return Err(BuildError::Config("no issuer configured".into()));
        }
        let l = &self.limits;
        in_range("VerifierBuilder::fetch_timeout", l.timeout, MS, 300 * SEC)?;
        in_range(
            "VerifierBuilder::connect_timeout",
            l.connect_timeout,
            MS,
            300 * SEC,
        )?;
        count_in_range(
            "VerifierBuilder::max_response_bytes",
            l.max_bytes as u64,
            1,
            16 << 20,
        )?;
        count_in_range("VerifierBuilder::max_keys", l.max_keys as u64, 1, 10_000)?;
        if let Some(n) = self.max_token_bytes {
            count_in_range("VerifierBuilder::max_token_bytes", n as u64, 1024, 1 << 20)?;
        }
        if let Some((entries, bytes)) = self.token_cache {
            count_in_range(
                "VerifierBuilder::token_cache (entries)",
                entries,
                1,
                100_000_000,
            )?;
            count_in_range("VerifierBuilder::token_cache (bytes)", bytes, 1024, 1 << 40)?;
        }
        let mut seen = HashSet::new();
        let mut templates: Vec<(&str, Template)> = Vec::new();
        for i in &self.issuers {
            i.validate()?;
            if let Some(t) = Template::parse(&i.issuer)? {
                if let Some((other, _)) = templates.iter().find(|(_, o)| o.overlaps(&t)) {
                    return Err(BuildError::Config(format!(
                        "issuer templates {other} and {} overlap: some iss would match both",
                        i.issuer
                    )));
                }
                templates.push((&i.issuer, t));
            }
            if !seen.insert(i.issuer.clone()) {
                return Err(BuildError::Config(format!(
                    "issuer {} configured twice",
                    i.issuer
                )));
            }
        }
        if let Some(r) = &self.revocations {
            for i in &self.issuers {
                // A token stays acceptable until `exp` + leeway.
                if let Some(max) = i.max_lifetime.filter(|m| *m + i.leeway > r.retention()) {
                    return Err(BuildError::Config(format!(
                        "issuer {}: max_token_lifetime {max:?} plus leeway {:?} is longer than the revocation list's retention {:?}",
                        i.issuer,
                        i.leeway,
                        r.retention()
                    )));
                }
            }
        }
        let fetcher = Arc::new(Fetcher::new(self.client, self.limits)?);
        let mut issuers = HashMap::new();
        let mut templates = Vec::new();
        for i in self.issuers {
            let template = Template::parse(&i.issuer)?;
            let one = |source| {
                Keys::One(Arc::new(KeyStore::new(
                    source,
                    fetcher.clone(),
                    i.policy.clone(),
                    self.clock.clone(),
                )))
            };
            let keys = match (&template, &i.jwks_url) {
                (_, Some(u)) => one(KeySource::Jwks(parse_url("jwks_url", u)?)),
                (None, None) => one(KeySource::Discovery {
                    base: i.issuer.clone(),
                    issuer: i.issuer.clone(),
                }),
                (Some(_), None) if i.preset == Preset::Entra => {
                    let base = entra_tenant_independent(&i.issuer);
                    parse_url("issuer", &base)?;
                    one(KeySource::Discovery {
                        base,
                        issuer: i.issuer.clone(),
                    })
                }
                (Some(t), None) => Keys::PerTenant(Box::new(TenantStores::new(
                    t.clone(),
                    i.max_tenants,
                    matches!(i.tenants, Some(TenantPolicy::Filter(_))),
                    fetcher.clone(),
                    RefreshPolicy {
                        gauges: false,
                        ..i.policy.clone()
                    },
                    self.clock.clone(),
                ))),
            };
            let template = template.zip(i.tenants.clone());
            if template.is_some() {
                templates.push(i.issuer.clone());
            }
            let verifier = IssuerVerifier {
                algorithms: i
                    .algorithms
                    .clone()
                    .unwrap_or_else(|| Algorithm::ALL.to_vec()),
                rules: {
                    let mut rules = ClaimRules::new(&i);
                    rules.hierarchy = self.hierarchy.clone();
                    rules.metrics = Arc::new(crate::metrics::IssuerMetrics::new(
                        &rules.issuer,
                        self.metrics_tenant,
                    ));
                    rules
                },
                keys,
                template,
            };
            issuers.insert(i.issuer, verifier);
        }
        templates.sort();
        Ok(Verifier::from_inner(VerifierInner {
            issuers,
            templates,
            max_token_bytes: self.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES),
            cache: self
                .token_cache
                .map(|(entries, bytes)| TokenCache::new(entries, bytes)),
            clock: self.clock,
            revocations: self.revocations,
        }))
    }
}
