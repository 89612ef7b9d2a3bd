//! Issuer presets: where each identity provider puts the tenant, scopes and
//! client id, one row of data per provider ([`PresetRules`]).

/// An identity provider whose token shape m2m-guard knows: a preset of
/// claim names and rules for an [`Issuer`](crate::Issuer).
///
/// | preset | tenant claim | scope claims | client id claims | notes |
/// |---|---|---|---|---|
/// | `Generic` (RFC 9068) | – | `scope`, `scp` | `client_id`, `azp` | |
/// | `Kinde` | `org_code` | `scope`, `scp` | `azp`, `client_id` | |
/// | `Scalekit` | `oid` | `scopes`, `scope` | `client_id`, `sub` | |
/// | `Auth0` | `org_id` | `scope`, `permissions` | `azp`, `client_id` | |
/// | `Okta` | – | `scp`, `scope` | `cid`, `client_id` | |
/// | `Entra` | `tid` | `roles`, `scp` | `azp`, `appid` | `typ: JWT` |
/// | `Keycloak` | – | `scope` | `azp`, `client_id` | |
/// | `Cognito` | – | `scope` | `client_id` | no `aud`: client allow-list, `token_use=access` |
///
/// A scope claim may be a space-separated string or an array of strings;
/// scopes from every listed claim are merged. The claims can be overridden
/// on the [`Issuer`](crate::Issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Preset {
    /// RFC 9068 access tokens from any OAuth 2.0 / OIDC issuer.
    #[default]
    Generic,
    /// Kinde.
    Kinde,
    /// Scalekit.
    Scalekit,
    /// Auth0.
    Auth0,
    /// Okta.
    Okta,
    /// Microsoft Entra ID (Azure AD) app-only tokens.
    Entra,
    /// Keycloak.
    Keycloak,
    /// Amazon Cognito.
    Cognito,
}

impl Preset {
    /// Parse a preset name (`"kinde"`, `"scalekit"`, …), case-insensitive.
    pub fn from_name(name: &str) -> Option<Preset> {
        Some(match name.to_ascii_lowercase().as_str() {
            "generic" | "rfc9068" => Preset::Generic,
            "kinde" => Preset::Kinde,
            "scalekit" => Preset::Scalekit,
            "auth0" => Preset::Auth0,
            "okta" => Preset::Okta,
            "entra" | "azure" | "azuread" => Preset::Entra,
            "keycloak" => Preset::Keycloak,
            "cognito" => Preset::Cognito,
            _ => return None,
        })
    }

    /// This preset's row.
    pub(crate) const fn rules(self) -> &'static PresetRules {
        match self {
            Preset::Generic => &GENERIC,
            Preset::Kinde => &KINDE,
            Preset::Scalekit => &SCALEKIT,
            Preset::Auth0 => &AUTH0,
            Preset::Okta => &OKTA,
            Preset::Entra => &ENTRA,
            Preset::Keycloak => &KEYCLOAK,
            Preset::Cognito => &COGNITO,
        }
    }
}

/// Where one provider's tokens put each fact, and the rules they follow.
/// Adding a provider is adding one of these rows.
#[derive(Debug)]
pub(crate) struct PresetRules {
    /// The organization / tenant claim, if the provider has one.
    pub(crate) tenant_claim: Option<&'static str>,
    /// Claims holding scopes, merged.
    pub(crate) scope_claims: &'static [&'static str],
    /// Claims naming the client, the first present one wins (all are type-checked).
    pub(crate) client_id_claims: &'static [&'static str],
    /// `false` when the access tokens carry no `aud` (then a client
    /// allow-list is required, and a token with `aud` is refused).
    pub(crate) uses_audience: bool,
    /// The `token_use` value an access token must carry, if any.
    pub(crate) token_use: Option<&'static str>,
}

const GENERIC: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope", "scp"],
    client_id_claims: &["client_id", "azp"],
    uses_audience: true,
    token_use: None,
};

const KINDE: PresetRules = PresetRules {
    tenant_claim: Some("org_code"),
    scope_claims: &["scope", "scp"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
};

const SCALEKIT: PresetRules = PresetRules {
    tenant_claim: Some("oid"),
    scope_claims: &["scopes", "scope"],
    client_id_claims: &["client_id", "sub"],
    uses_audience: true,
    token_use: None,
};

const AUTH0: PresetRules = PresetRules {
    tenant_claim: Some("org_id"),
    scope_claims: &["scope", "permissions"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
};

const OKTA: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scp", "scope"],
    client_id_claims: &["cid", "client_id"],
    uses_audience: true,
    token_use: None,
};

const ENTRA: PresetRules = PresetRules {
    tenant_claim: Some("tid"),
    scope_claims: &["roles", "scp"],
    client_id_claims: &["azp", "appid"],
    uses_audience: true,
    token_use: None,
};

const KEYCLOAK: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
};

const COGNITO: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope"],
    client_id_claims: &["client_id"],
    uses_audience: false,
    token_use: Some("access"),
};
