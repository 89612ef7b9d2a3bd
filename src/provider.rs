//! Provider presets: where each issuer puts the tenant, scopes and client id.

/// An identity provider whose token shape m2m-guard knows.
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
pub enum Provider {
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

impl Provider {
    /// Parse a preset name (`"kinde"`, `"scalekit"`, …), case-insensitive.
    pub fn from_name(name: &str) -> Option<Provider> {
        Some(match name.to_ascii_lowercase().as_str() {
            "generic" | "rfc9068" => Provider::Generic,
            "kinde" => Provider::Kinde,
            "scalekit" => Provider::Scalekit,
            "auth0" => Provider::Auth0,
            "okta" => Provider::Okta,
            "entra" | "azure" | "azuread" => Provider::Entra,
            "keycloak" => Provider::Keycloak,
            "cognito" => Provider::Cognito,
            _ => return None,
        })
    }

    pub(crate) fn tenant_claim(self) -> Option<&'static str> {
        match self {
            Provider::Kinde => Some("org_code"),
            Provider::Scalekit => Some("oid"),
            Provider::Auth0 => Some("org_id"),
            Provider::Entra => Some("tid"),
            _ => None,
        }
    }

    pub(crate) fn scope_claims(self) -> &'static [&'static str] {
        match self {
            Provider::Generic | Provider::Kinde => &["scope", "scp"],
            Provider::Scalekit => &["scopes", "scope"],
            Provider::Auth0 => &["scope", "permissions"],
            Provider::Okta => &["scp", "scope"],
            Provider::Entra => &["roles", "scp"],
            Provider::Keycloak | Provider::Cognito => &["scope"],
        }
    }

    pub(crate) fn client_id_claims(self) -> &'static [&'static str] {
        match self {
            Provider::Generic => &["client_id", "azp"],
            Provider::Kinde | Provider::Auth0 | Provider::Keycloak => &["azp", "client_id"],
            Provider::Scalekit => &["client_id", "sub"],
            Provider::Okta => &["cid", "client_id"],
            Provider::Entra => &["azp", "appid"],
            Provider::Cognito => &["client_id"],
        }
    }

    /// Cognito access tokens carry no `aud`.
    pub(crate) fn uses_audience(self) -> bool {
        self != Provider::Cognito
    }
}
