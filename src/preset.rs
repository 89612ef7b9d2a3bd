//! Issuer presets: where each identity provider puts the tenant, scopes and
//! client id, one row of data per provider ([`PresetRules`]).

/// An identity provider whose token shape m2m-guard knows: a preset of
/// claim names and rules for an [`Issuer`](crate::Issuer).
///
/// | preset | tenant claim | granted scopes | client id claims | machine token when | also refused |
/// |---|---|---|---|---|---|
/// | `Generic` (RFC 9068) | – | `scope`, `scp` | `client_id`, `azp` | `sub` = client id (RFC 9068 §2.2) | |
/// | `Kinde` | `org_code` | `scope` (`scp` = requested, not read) | `azp`, `client_id` | `gty` contains `client_credentials` | |
/// | `Scalekit` | `oid` | `scopes`, `scope` | `client_id`, `sub` | a `client_id` claim, no `uid`, no `sid`, `sub` (if any) = `client_id` | |
/// | `Auth0` | `org_id` | `scope`, `permissions` | `azp`, `client_id` | `sub` = `<client>@clients` | |
/// | `Okta` | – | `scp`, `scope` | `cid`, `client_id` | `sub` = `cid`, no `uid` | `jti` `ID.…` (`id_token`) |
/// | `Entra` | `tid` | app: `roles`; user: `scp` | `azp`, `appid` | `idtyp` = `app`, else no `scp` and `oid` = `sub` | |
/// | `Keycloak` | – | `scope` | `azp`, `client_id` | `client_id` (or `clientId`) = `azp`, and `preferred_username`, if any, = `service-account-<client>` | payload `typ` absent or not `Bearer`/`DPoP` (`missing_claim` / `invalid_claim`; `id_token` for `ID`, `Refresh`, …); `nonce` allowed |
/// | `Cognito` | – | `scope` | `client_id` | `sub` = `client_id`, no `username` | `token_use` missing (`missing_claim`); any `aud` (`invalid_claim`) |
///
/// The client id a machine rule compares with `sub` never comes from `sub`
/// itself. Under every preset, tokens with `nonce` (except Keycloak's),
/// `at_hash` or `c_hash`, a
/// Keycloak payload `typ` of another token kind, or a `token_use` other
/// than `access` are ID tokens, refused. Users' tokens are refused unless
/// the issuer opts in with [`Issuer::accept_user_tokens`](crate::Issuer::accept_user_tokens).
/// Sources and the full table: the README, "Providers".
///
/// A scope claim may be a space-separated string or an array of strings;
/// scopes from every listed claim are merged (Entra: from `roles` for
/// app-only tokens, from `scp` for users'). The claims can be overridden
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
    /// How a machine (client-credentials) token is told from a user's.
    pub(crate) machine: MachineRule,
    /// Where a user's token (accepted only on opt-in) carries its scopes,
    /// when not in `scope_claims`.
    pub(crate) user_scope_claims: Option<&'static [&'static str]>,
    /// The payload `typ` claim (Keycloak) must be present and one of these.
    pub(crate) typ_claim: Option<&'static [&'static str]>,
    /// A `jti` with this prefix marks an ID token (Okta: `ID.`).
    pub(crate) id_token_jti_prefix: Option<&'static str>,
}

/// How one provider's machine tokens are told from its users' tokens.
/// Each rule errs on the safe side: a token it cannot place is a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MachineRule {
    /// RFC 9068 §2.2: with no resource owner, `sub` identifies the client.
    SubIsClient,
    /// Kinde: the `gty` claim contains `client_credentials`.
    Kinde,
    /// Auth0: `sub` is `<client id>@clients`.
    Auth0,
    /// Okta: `sub` is the client (`cid`) and there is no user (`uid`).
    Okta,
    /// Entra: `idtyp` is `app`; without `idtyp`, no `scp` and `oid` = `sub`.
    Entra,
    /// Keycloak: the service account's `client_id` (`clientId` before
    /// Keycloak 22) claim names the client, and `preferred_username`, when
    /// present, is `service-account-<client id>`.
    Keycloak,
    /// Scalekit: a `client_id` claim, no user (`uid`) and no session
    /// (`sid`), and `sub`, when present, is that client.
    Scalekit,
    /// Cognito: `sub` is the client and there is no `username`.
    Cognito,
}

/// The payload `typ` values Keycloak gives tokens that are not access
/// tokens; refused under every preset.
pub(crate) const NOT_ACCESS_TYP: &[&str] = &["ID", "Refresh", "Offline", "Logout", "Serialized-ID"];

const GENERIC: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope", "scp"],
    client_id_claims: &["client_id", "azp"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::SubIsClient,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: None,
};

const KINDE: PresetRules = PresetRules {
    tenant_claim: Some("org_code"),
    // `scp` holds the scopes initially *requested*; `scope` those granted.
    scope_claims: &["scope"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Kinde,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: None,
};

const SCALEKIT: PresetRules = PresetRules {
    tenant_claim: Some("oid"),
    scope_claims: &["scopes", "scope"],
    client_id_claims: &["client_id", "sub"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Scalekit,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: None,
};

const AUTH0: PresetRules = PresetRules {
    tenant_claim: Some("org_id"),
    scope_claims: &["scope", "permissions"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Auth0,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: None,
};

const OKTA: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scp", "scope"],
    client_id_claims: &["cid", "client_id"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Okta,
    typ_claim: None,
    id_token_jti_prefix: Some("ID."),
    user_scope_claims: None,
};

const ENTRA: PresetRules = PresetRules {
    tenant_claim: Some("tid"),
    // App-only tokens carry application permissions in `roles`; a user's
    // delegated `scp` is never merged with them (see `user_scope_claims`).
    scope_claims: &["roles"],
    client_id_claims: &["azp", "appid"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Entra,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: Some(&["scp"]),
};

const KEYCLOAK: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope"],
    client_id_claims: &["azp", "client_id"],
    uses_audience: true,
    token_use: None,
    machine: MachineRule::Keycloak,
    typ_claim: Some(&["Bearer", "DPoP"]),
    id_token_jti_prefix: None,
    user_scope_claims: None,
};

const COGNITO: PresetRules = PresetRules {
    tenant_claim: None,
    scope_claims: &["scope"],
    client_id_claims: &["client_id"],
    uses_audience: false,
    token_use: Some("access"),
    machine: MachineRule::Cognito,
    typ_claim: None,
    id_token_jti_prefix: None,
    user_scope_claims: None,
};
