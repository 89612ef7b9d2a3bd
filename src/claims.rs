//! The claim rules of one issuer: time (`exp`, `nbf`, `iat`, maximum age and
//! lifetime), audience, `typ`, `token_use`, claim types, RFC 9068 required
//! claims and the client allow-list; and the [`Principal`] they read.
//!
//! Every rule runs on the unverified claims, before any key work: each can
//! only reject, so a token that must fail costs no fetch and no unknown-kid
//! cooldown. The principal is built once the signature holds.

use crate::metrics::IssuerMetrics;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Issuer;
use crate::hierarchy::ScopeHierarchy;
use crate::json::Object;
use crate::preset::{MachineRule, NOT_ACCESS_TYP};
use crate::principal::{Principal, PrincipalParts, Scopes, TenantNames};
use crate::rejection::{Reason, Rejection};

/// Which `typ` header values are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenType {
    /// `at+jwt`, `application/at+jwt`, `JWT` or absent.
    Default,
    /// RFC 9068: `at+jwt` / `application/at+jwt` and its required claims.
    Strict,
}

/// What `aud` must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AudienceRule {
    /// Present, naming a configured audience.
    Required,
    /// Absent (Cognito access tokens never carry one).
    Absent,
    /// Absent, or naming a configured audience ([`Issuer::bind_to_client_ids`](crate::Issuer::bind_to_client_ids)).
    Optional,
}

/// What one issuer's tokens must meet (from its [`Issuer`](crate::Issuer)).
pub(crate) struct ClaimRules {
    pub(crate) issuer: Arc<str>,
    pub(crate) audiences: Vec<String>,
    pub(crate) audience: AudienceRule,
    pub(crate) token_use: Option<&'static str>,
    pub(crate) leeway: u64,
    pub(crate) max_lifetime: Option<u64>,
    pub(crate) max_age: Option<u64>,
    pub(crate) token_type: TokenType,
    pub(crate) tenant_claim: Option<String>,
    pub(crate) scope_claims: Vec<String>,
    pub(crate) client_id_claims: Vec<String>,
    pub(crate) allowed_client_ids: Option<HashSet<String>>,
    pub(crate) machine: MachineRule,
    pub(crate) accept_user_tokens: bool,
    /// Scope claims of a user's token, when they differ (Entra: `scp`).
    pub(crate) user_scope_claims: Option<Vec<String>>,
    pub(crate) typ_claim: Option<&'static [&'static str]>,
    pub(crate) id_token_jti_prefix: Option<&'static str>,
    /// The verifier's scope hierarchy, carried by every principal's scopes.
    pub(crate) hierarchy: Option<Arc<ScopeHierarchy>>,
    /// How decisions on this issuer's tokens are counted (with their tenant
    /// as a label or not).
    pub(crate) metrics: Arc<crate::metrics::IssuerMetrics>,
    /// The tenant names of its principals, shared.
    pub(crate) tenant_names: TenantNames,
}

/// The whole seconds during which every time-based rule holds: valid while
/// `from <= now < until`. The intersection of `exp`, `nbf`, `iat` (not in the
/// future) and the maximum age, each with the leeway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) from: u64,
    pub(crate) until: u64,
}

impl Window {
    pub(crate) fn contains(&self, now: u64) -> bool {
        self.from <= now && now < self.until
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn check_typ(typ: Option<&str>, mode: TokenType) -> Result<(), Rejection> {
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
pub(crate) struct Checked {
    pub(crate) window: Window,
    /// The client allow-list (if any) names the token's client. Answered
    /// only once the signature holds.
    pub(crate) client_allowed: bool,
    exp: Date,
    iat: Option<Date>,
    subject: Option<String>,
    jti: Option<String>,
    client_id: Option<String>,
    tenant: Option<String>,
    scopes: Scopes,
    machine: bool,
    /// A template issuer's token: its own `iss` (the configured issuer otherwise).
    issuer: Option<Arc<str>>,
}

impl Checked {
    /// The token's tenant, as the principal will carry it.
    pub(crate) fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

impl ClaimRules {
    /// The rules of `issuer`: its settings over its preset's row.
    pub(crate) fn new(issuer: &Issuer) -> Self {
        let preset = issuer.preset.rules();
        let owned = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
        let configured: Arc<str> = issuer.issuer.as_str().into();
        ClaimRules {
            metrics: Arc::new(IssuerMetrics::new(&configured, false)),
            issuer: configured,
            audiences: issuer.audiences.clone(),
            audience: issuer.audience_rule(),
            token_use: preset.token_use,
            leeway: issuer.leeway.as_secs(),
            max_lifetime: issuer.max_lifetime.map(|d| d.as_secs()),
            max_age: issuer.max_age.map(|d| d.as_secs()),
            token_type: issuer.token_type,
            tenant_claim: issuer
                .tenant_claim
                .clone()
                .unwrap_or_else(|| preset.tenant_claim.map(str::to_owned)),
            scope_claims: issuer
                .scope_claims
                .clone()
                .unwrap_or_else(|| owned(preset.scope_claims)),
            client_id_claims: issuer
                .client_id_claims
                .clone()
                .unwrap_or_else(|| owned(preset.client_id_claims)),
            allowed_client_ids: issuer
                .allowed_client_ids
                .as_ref()
                .map(|v| v.iter().cloned().collect()),
            machine: preset.machine,
            accept_user_tokens: issuer.accept_user_tokens,
            // Scope claims set on the issuer apply to every token.
            user_scope_claims: match &issuer.scope_claims {
                Some(_) => None,
                None => preset.user_scope_claims.map(owned),
            },
            typ_claim: preset.typ_claim,
            id_token_jti_prefix: preset.id_token_jti_prefix,
            hierarchy: None,
            tenant_names: TenantNames::default(),
        }
    }

    /// Every claim rule, on the unverified claims: time rules, audience,
    /// `token_use`, claim types, RFC 9068 required claims, the client allow-list.
    /// `iss_tenant`: the tenant the token's `iss` names, for an issuer
    /// template (the `iss` matched it when this verifier was selected).
    pub(crate) fn check(
        &self,
        claims: &Object,
        now: u64,
        iss_tenant: Option<&str>,
    ) -> Result<Checked, Rejection> {
        let leeway = self.leeway;
        // iss was matched exactly (or to the template) when this verifier was selected.
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

        // An ID token is told as such, before the audience (theirs is a
        // client id) or `token_use` could give a vaguer reason.
        self.refuse_id_tokens(claims)?;
        match (self.audience, claims.contains_key("aud")) {
            (AudienceRule::Required, _) | (AudienceRule::Optional, true) => {
                self.check_audience(claims)?
            }
            (AudienceRule::Optional | AudienceRule::Absent, false) => {}
            // Cognito access tokens never carry `aud`: one that does is an ID token.
            (AudienceRule::Absent, true) => {
                return Err(Rejection::claim(Reason::InvalidClaim, "aud"));
            }
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
        // RFC 7800 / 9449 / 8705: `cnf` is an object; the members we check
        // are strings. A malformed binding is never read as "unbound".
        match claims.get("cnf") {
            None => {}
            Some(Value::Object(cnf)) => {
                for member in ["jkt", "x5t#S256"] {
                    if cnf.get(member).is_some_and(|v| !v.is_string()) {
                        return Err(Rejection::claim(Reason::InvalidClaim, "cnf"));
                    }
                }
            }
            Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, "cnf")),
        }
        // Every client-id claim is type-checked, not only up to the first
        // present one: a claim of the wrong type is never read as absent.
        // The client as the machine rules compare it with `sub` is never
        // read from `sub` itself (Scalekit's fallback, or an override), which
        // would make `sub` = client hold for every token.
        let mut client_id = None;
        let mut rule_client = None;
        for name in &self.client_id_claims {
            let value = opt_string(claims, name)?;
            if rule_client.is_none() && name != "sub" {
                rule_client.clone_from(&value);
            }
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
        // Decided here, answered after the signature: an unsigned token
        // must not learn which clients are allowed.
        let client_allowed = match (&self.allowed_client_ids, &client_id) {
            (None, _) => true,
            (Some(allowed), Some(c)) => allowed.contains(c),
            (Some(_), None) => false,
        };
        let machine = is_machine(
            self.machine,
            claims,
            subject.as_deref(),
            rule_client.as_deref(),
        );
        let tenant = match (&self.tenant_claim, iss_tenant) {
            (Some(name), None) => opt_string(claims, name)?,
            // A template issuer's `iss` must be the template with the
            // token's own tenant claim (Entra `tid`) in it.
            (Some(name), Some(from_iss)) => match opt_string(claims, name)? {
                Some(t) if t == from_iss => Some(t),
                Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, name)),
                None => return Err(Rejection::claim(Reason::MissingClaim, name)),
            },
            (None, from_iss) => from_iss.map(str::to_owned),
        };
        let scope_claims = match (&self.user_scope_claims, machine) {
            (Some(user), false) => user,
            _ => &self.scope_claims,
        };
        let scopes = scopes(claims, scope_claims)?.with_hierarchy(self.hierarchy.clone());
        // After every type check, so a malformed claim is named as such.
        if !machine && !self.accept_user_tokens {
            return Err(Rejection::new(Reason::UserToken));
        }
        Ok(Checked {
            window,
            client_allowed,
            exp,
            iat,
            subject,
            jti,
            client_id,
            tenant,
            scopes,
            machine,
            issuer: iss_tenant
                .and_then(|_| claims.get("iss"))
                .and_then(Value::as_str)
                .map(Arc::from),
        })
    }

    /// ID tokens are never access tokens, under every preset: OIDC's
    /// ID-token-only claims, Keycloak's payload `typ` of other token kinds,
    /// a `token_use` other than `access` (Cognito), and the preset's own
    /// marks (Okta's `ID.` token ids).
    fn refuse_id_tokens(&self, claims: &Object) -> Result<(), Rejection> {
        for name in ["nonce", "at_hash", "c_hash"] {
            // Keycloak puts `nonce` into users' access tokens too; its
            // required payload `typ` tells the token kinds apart instead.
            if name == "nonce" && self.typ_claim.is_some() {
                continue;
            }
            if claims.contains_key(name) {
                return Err(Rejection::claim(Reason::IdToken, name));
            }
        }
        match (claims.get("typ"), self.typ_claim) {
            (Some(Value::String(t)), _) if NOT_ACCESS_TYP.contains(&t.as_str()) => {
                return Err(Rejection::claim(Reason::IdToken, "typ"));
            }
            (Some(Value::String(t)), Some(allowed)) if !allowed.contains(&t.as_str()) => {
                return Err(Rejection::claim(Reason::InvalidClaim, "typ"));
            }
            (Some(Value::String(_)), _) | (None, None) => {}
            (None, Some(_)) => return Err(Rejection::claim(Reason::MissingClaim, "typ")),
            (Some(_), _) => return Err(Rejection::claim(Reason::InvalidClaim, "typ")),
        }
        match claims.get("token_use") {
            None => {}
            Some(Value::String(u)) if u == "access" => {}
            Some(Value::String(_)) => return Err(Rejection::claim(Reason::IdToken, "token_use")),
            Some(_) => return Err(Rejection::claim(Reason::InvalidClaim, "token_use")),
        }
        if let (Some(prefix), Some(Value::String(jti))) =
            (self.id_token_jti_prefix, claims.get("jti"))
            && jti.starts_with(prefix)
        {
            return Err(Rejection::claim(Reason::IdToken, "jti"));
        }
        Ok(())
    }

    /// The verified principal, once the signature holds.
    pub(crate) fn principal(&self, claims: Object, pre: Checked) -> Principal {
        Principal::from_parts(PrincipalParts {
            issuer: pre.issuer.unwrap_or_else(|| self.issuer.clone()),
            metrics: self.metrics.clone(),
            subject: pre.subject,
            client_id: pre.client_id,
            tenant: pre.tenant.map(|t| self.tenant_names.shared(t)),
            scopes: pre.scopes,
            expires_at: pre.exp.floor,
            issued_at: pre.iat.map(|d| d.floor),
            jti: pre.jti,
            machine: pre.machine,
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
}

/// The scopes in `names`, merged: space-separated strings or arrays of strings.
fn scopes(claims: &Object, names: &[String]) -> Result<Scopes, Rejection> {
    let mut out = Vec::new();
    for name in names {
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

/// `value` is `s`, or an array with `s` in it.
fn has_value(value: Option<&Value>, s: &str) -> bool {
    match value {
        Some(Value::String(v)) => v == s,
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(s)),
        _ => false,
    }
}

/// Whether the token is a machine client's, by the preset's rule (see
/// [`MachineRule`]). `client` is the client id from a claim other than
/// `sub`. A token the rule cannot place is a user's.
fn is_machine(rule: MachineRule, claims: &Object, sub: Option<&str>, client: Option<&str>) -> bool {
    let sub_is_client = sub.is_some() && sub == client;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    match rule {
        MachineRule::SubIsClient => sub_is_client,
        MachineRule::Kinde => has_value(claims.get("gty"), "client_credentials"),
        // Auth0 always writes both on M2M tokens; `sub` alone cannot be a
        // custom claim's doing.
        MachineRule::Auth0 => client.is_some_and(|c| sub == Some(&format!("{c}@clients"))),
        MachineRule::Okta => sub_is_client && !claims.contains_key("uid"),
        MachineRule::Entra => match claims.get("idtyp") {
            Some(t) => t.as_str() == Some("app"),
            None => {
                !claims.contains_key("scp") && str_claim("oid").is_some() && str_claim("oid") == sub
            }
        },
        // The service account's own `client_id` (`clientId` before Keycloak
        // 22) claim, which users' tokens lack, names the client; and its
        // username, when the token carries one (lightweight tokens do not),
        // is the service account's (Keycloak lower-cases usernames).
        MachineRule::Keycloak => client.is_some_and(|c| {
            str_claim("client_id").or_else(|| str_claim("clientId")) == Some(c)
                && str_claim("preferred_username")
                    .is_none_or(|u| u == format!("service-account-{}", c.to_lowercase()))
        }),
        MachineRule::Scalekit => {
            client.is_some()
                && !claims.contains_key("uid")
                && !claims.contains_key("sid")
                && (sub.is_none() || sub_is_client)
        }
        MachineRule::Cognito => sub_is_client && !claims.contains_key("username"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max_age: Option<u64>, max_lifetime: Option<u64>) -> ClaimRules {
        ClaimRules {
            issuer: "https://issuer.example".into(),
            audiences: vec!["api".into()],
            audience: AudienceRule::Required,
            token_use: None,
            leeway: 60,
            max_lifetime,
            max_age,
            token_type: TokenType::Default,
            tenant_claim: None,
            scope_claims: vec!["scope".into()],
            client_id_claims: vec!["client_id".into()],
            allowed_client_ids: None,
            machine: MachineRule::SubIsClient,
            // These tests are about the other rules.
            accept_user_tokens: true,
            user_scope_claims: None,
            typ_claim: None,
            id_token_jti_prefix: None,
            hierarchy: None,
            metrics: Arc::new(IssuerMetrics::new(&"https://issuer.example".into(), false)),
            tenant_names: TenantNames::default(),
        }
    }

    #[test]
    fn each_presets_machine_rule_on_its_providers_shapes() {
        use serde_json::json;
        let m = |rule, claims: Value, sub: Option<&str>, client: Option<&str>| {
            let Value::Object(c) = claims else {
                unreachable!()
            };
            is_machine(rule, &c, sub, client)
        };
        use MachineRule as R;
        // RFC 9068: sub identifies the client.
        assert!(m(R::SubIsClient, json!({}), Some("c"), Some("c")));
        assert!(!m(R::SubIsClient, json!({}), Some("alice"), Some("c")));
        assert!(
            !m(R::SubIsClient, json!({}), None, Some("c")),
            "cannot tell: a user's"
        );
        assert!(!m(R::SubIsClient, json!({}), None, None));
        // Kinde: gty.
        assert!(m(
            R::Kinde,
            json!({"gty": ["client_credentials"]}),
            None,
            Some("c")
        ));
        assert!(m(
            R::Kinde,
            json!({"gty": "client_credentials"}),
            None,
            Some("c")
        ));
        assert!(!m(
            R::Kinde,
            json!({"gty": ["authorization_code"]}),
            Some("u"),
            Some("c")
        ));
        assert!(
            !m(R::Kinde, json!({}), Some("c"), Some("c")),
            "no gty: a user's"
        );
        // Auth0: sub = <client>@clients (gty alone is not enough).
        let gty_only = json!({"gty": "client-credentials"});
        assert!(!m(R::Auth0, gty_only, Some("x"), Some("c")));
        assert!(m(R::Auth0, json!({}), Some("c@clients"), Some("c")));
        assert!(!m(R::Auth0, json!({}), Some("d@clients"), Some("c")));
        assert!(!m(R::Auth0, json!({}), Some("auth0|42"), Some("c")));
        // Okta: sub = cid, no uid.
        assert!(m(R::Okta, json!({}), Some("c"), Some("c")));
        assert!(!m(R::Okta, json!({"uid": "00u1"}), Some("c"), Some("c")));
        assert!(!m(R::Okta, json!({}), Some("a@b"), Some("c")));
        // Entra: idtyp, else no scp and oid = sub.
        assert!(m(
            R::Entra,
            json!({"idtyp": "app", "oid": "x"}),
            Some("y"),
            Some("c")
        ));
        assert!(!m(
            R::Entra,
            json!({"idtyp": "user", "oid": "s"}),
            Some("s"),
            Some("c")
        ));
        assert!(!m(
            R::Entra,
            json!({"idtyp": ["app"]}),
            Some("s"),
            Some("c")
        ));
        assert!(m(R::Entra, json!({"oid": "s"}), Some("s"), Some("c")));
        assert!(!m(
            R::Entra,
            json!({"oid": "s", "scp": "read"}),
            Some("s"),
            Some("c")
        ));
        assert!(!m(R::Entra, json!({"oid": "o"}), Some("s"), Some("c")));
        assert!(!m(R::Entra, json!({}), None, Some("c")));
        // Keycloak: the service account's client_id claim, and its username
        // when present (Keycloak lower-cases usernames).
        let sa = json!({"preferred_username": "service-account-billing", "client_id": "Billing"});
        assert!(m(R::Keycloak, sa.clone(), Some("uuid"), Some("Billing")));
        assert!(!m(R::Keycloak, sa, Some("uuid"), Some("other")));
        let old = json!({"preferred_username": "service-account-c", "clientId": "c"});
        assert!(
            m(R::Keycloak, old, Some("u"), Some("c")),
            "before Keycloak 22"
        );
        let light = json!({"client_id": "c"});
        assert!(m(R::Keycloak, light, Some("u"), Some("c")), "lightweight");
        let squatter = json!({"preferred_username": "service-account-c"});
        assert!(
            !m(R::Keycloak, squatter, Some("u"), Some("c")),
            "a user named like one"
        );
        let other_name = json!({"preferred_username": "alice", "client_id": "c"});
        assert!(!m(R::Keycloak, other_name, Some("u"), Some("c")));
        assert!(!m(R::Keycloak, json!({}), Some("u"), Some("c")));
        let unicode = json!({"preferred_username": "service-account-ärger", "client_id": "Ärger"});
        assert!(m(R::Keycloak, unicode, Some("u"), Some("Ärger")));
        // Scalekit: no uid, no sid, sub (if any) = client.
        assert!(m(R::Scalekit, json!({}), Some("c"), Some("c")));
        assert!(m(R::Scalekit, json!({}), None, Some("c")));
        assert!(
            !m(R::Scalekit, json!({}), Some("c"), None),
            "no client_id claim: cannot tell"
        );
        assert!(!m(R::Scalekit, json!({}), None, None));
        assert!(!m(
            R::Scalekit,
            json!({"uid": "usr_1"}),
            Some("c"),
            Some("c")
        ));
        assert!(!m(
            R::Scalekit,
            json!({"sid": "ses_1"}),
            Some("c"),
            Some("c")
        ));
        assert!(!m(R::Scalekit, json!({}), Some("usr_1"), Some("c")));
        // Cognito: sub = client_id, no username.
        assert!(m(R::Cognito, json!({}), Some("c"), Some("c")));
        assert!(!m(
            R::Cognito,
            json!({"username": "alice"}),
            Some("c"),
            Some("c")
        ));
        assert!(!m(R::Cognito, json!({}), Some("uuid"), Some("c")));
    }

    #[test]
    fn the_machine_rules_never_take_the_client_from_sub() {
        use serde_json::json;
        let mut iv = rules(None, None);
        iv.accept_user_tokens = false;
        // Scalekit reads the client id from `client_id`, else from `sub`.
        iv.machine = MachineRule::Scalekit;
        iv.client_id_claims = vec!["client_id".into(), "sub".into()];
        let check = |iv: &ClaimRules, c: Value| {
            let Value::Object(c) = c else { unreachable!() };
            iv.check(&c, 1000, None).map(|_| ()).map_err(|e| e.reason())
        };
        let only_sub = json!({"exp": 2000, "aud": "api", "sub": "usr_1"});
        assert_eq!(check(&iv, only_sub), Err(Reason::UserToken));
        let both = json!({"exp": 2000, "aud": "api", "sub": "m2m_1", "client_id": "m2m_1"});
        assert_eq!(check(&iv, both), Ok(()));
        // An override listing `sub` first cannot make sub = client hold.
        iv.machine = MachineRule::SubIsClient;
        iv.client_id_claims = vec!["sub".into(), "client_id".into()];
        let user = json!({"exp": 2000, "aud": "api", "sub": "alice"});
        assert_eq!(check(&iv, user), Err(Reason::UserToken));
    }

    #[test]
    fn id_tokens_are_refused_under_every_preset() {
        use serde_json::json;
        let mut iv = rules(None, None);
        let check = |iv: &ClaimRules, extra: Value| {
            let mut c = json!({"exp": 2000, "sub": "c", "client_id": "c", "aud": "api"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            let Value::Object(c) = c else { unreachable!() };
            iv.check(&c, 1000, None)
                .map(|_| ())
                .map_err(|e| (e.reason(), e.claim_name().map(str::to_owned)))
        };
        let id = |claim: &str| Err((Reason::IdToken, Some(claim.to_owned())));
        assert_eq!(check(&iv, json!({})), Ok(()));
        assert_eq!(check(&iv, json!({"nonce": "n"})), id("nonce"));
        assert_eq!(check(&iv, json!({"at_hash": "h"})), id("at_hash"));
        assert_eq!(check(&iv, json!({"c_hash": "h"})), id("c_hash"));
        assert_eq!(check(&iv, json!({"typ": "ID"})), id("typ"));
        assert_eq!(check(&iv, json!({"typ": "Refresh"})), id("typ"));
        assert_eq!(check(&iv, json!({"typ": "Bearer"})), Ok(()));
        assert_eq!(check(&iv, json!({"token_use": "id"})), id("token_use"));
        assert_eq!(check(&iv, json!({"token_use": "access"})), Ok(()));
        assert_eq!(
            check(&iv, json!({"token_use": 1})),
            Err((Reason::InvalidClaim, Some("token_use".into())))
        );
        assert_eq!(
            check(&iv, json!({"jti": "ID.abc"})),
            Ok(()),
            "only Okta's mark"
        );
        // Keycloak: typ required, Bearer or DPoP; its users' access tokens
        // may carry a nonce.
        iv.typ_claim = Some(&["Bearer", "DPoP"]);
        assert_eq!(check(&iv, json!({"typ": "Bearer", "nonce": "n"})), Ok(()));
        assert_eq!(
            check(&iv, json!({"typ": "Bearer", "at_hash": "h"})),
            id("at_hash")
        );
        assert_eq!(
            check(&iv, json!({})),
            Err((Reason::MissingClaim, Some("typ".into())))
        );
        assert_eq!(check(&iv, json!({"typ": "Bearer"})), Ok(()));
        assert_eq!(check(&iv, json!({"typ": "DPoP"})), Ok(()));
        assert_eq!(check(&iv, json!({"typ": "ID"})), id("typ"));
        assert_eq!(
            check(&iv, json!({"typ": "bearer"})),
            Err((Reason::InvalidClaim, Some("typ".into())))
        );
        iv.typ_claim = None;
        // Okta: ID. token ids.
        iv.id_token_jti_prefix = Some("ID.");
        assert_eq!(check(&iv, json!({"jti": "ID.abc"})), id("jti"));
        assert_eq!(check(&iv, json!({"jti": "AT.abc"})), Ok(()));
        // Machine only unless users are accepted.
        iv.accept_user_tokens = false;
        assert_eq!(check(&iv, json!({})), Ok(()));
        assert_eq!(
            check(&iv, json!({"sub": "alice"})),
            Err((Reason::UserToken, None))
        );
        assert_eq!(
            check(&iv, json!({"sub": "alice", "nonce": "n"})),
            id("nonce"),
            "ID first"
        );
    }

    /// The verdict of the claim rules at `now` for these claims (plus `aud`).
    fn at(iv: &ClaimRules, claims: serde_json::Value, now: u64) -> Result<Window, Reason> {
        let mut claims = match claims {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        claims.insert("aud".into(), "api".into());
        iv.check(&claims, now, None)
            .map(|p| p.window)
            .map_err(|e| e.reason())
    }

    #[test]
    fn every_time_rule_is_exact_at_its_boundary_and_rounds_against_the_token() {
        use serde_json::json;
        let iv = rules(None, None);
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
        let aged = rules(Some(100), None);
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
        let capped = rules(None, Some(3600));
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
}
