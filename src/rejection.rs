//! A rejected token: the stable [`Reason`] (one row per reason, from which
//! its code and description follow) and the [`Rejection`] carrying it.
//!
//! A rejection never carries token contents: descriptions are static strings
//! and claim names come from the configuration, never from the token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Declares [`Reason`] from one row per reason: its doc, its stable code and
/// the description sent to clients.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $code:literal, $description:literal;)*) => {
        /// The stable reason a token was rejected.
        ///
        /// [`Reason::code`] gives a short, stable identifier for logs and metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// A short, stable identifier, e.g. `"expired"`.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// A short human description, safe to send to the client (RFC 6750 charset).
            pub fn description(self) -> &'static str {
                match self {
                    $(Reason::$variant => $description,)*
                }
            }
        }
    };
}

reasons! {
    /// Not a compact JWS: wrong segment count, bad base64url, bad JSON.
    Malformed => "malformed", "the token is malformed";
    /// Larger than the configured maximum token size.
    TooLarge => "too_large", "the token is too large";
    /// A JWE (encrypted token); only signed tokens are accepted.
    Encrypted => "encrypted", "encrypted tokens are not accepted";
    /// `alg` is `none`, symmetric (HS*), unknown, or not allowed by configuration.
    UnsupportedAlgorithm => "unsupported_algorithm", "the token algorithm is not accepted";
    /// The selected key is bound to another algorithm than the header's `alg`.
    AlgorithmMismatch => "algorithm_mismatch", "the token algorithm does not match the signing key";
    /// No key in the issuer's key set matches the token's `kid`.
    UnknownKey => "unknown_key", "the token signing key is unknown";
    /// The token has no `kid` and the key set does not name one key for its `alg`.
    AmbiguousKey => "ambiguous_key", "the token does not identify its signing key";
    /// The key named by `kid` carries an `issuer` member (Microsoft Entra)
    /// that is not the token's `iss`: it may sign only its own issuer's tokens.
    KeyIssuerMismatch => "key_issuer_mismatch", "the token signing key belongs to another issuer";
    /// The signature does not verify.
    InvalidSignature => "invalid_signature", "the token signature is invalid";
    /// The header has a `crit` parameter (no extension is understood).
    UnsupportedCritical => "unsupported_critical", "the token has unsupported critical header parameters";
    /// The `typ` header is not an access-token type.
    InvalidType => "invalid_type", "the token is not an access token";
    /// `iss` is missing or not a trusted issuer.
    UnknownIssuer => "unknown_issuer", "the token issuer is not trusted";
    /// `iss` has the shape of a multi-tenant issuer template, but names a
    /// tenant the issuer does not admit.
    TenantNotAllowed => "tenant_not_allowed", "the token tenant is not allowed";
    /// `aud` does not contain a configured audience.
    InvalidAudience => "invalid_audience", "the token is not intended for this API";
    /// `exp` is in the past (beyond the leeway).
    Expired => "expired", "the token has expired";
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid => "not_yet_valid", "the token is not yet valid";
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture => "issued_in_future", "the token was issued in the future";
    /// `iat` is older than the configured maximum age.
    TooOld => "too_old", "the token is too old";
    /// `exp - iat` exceeds the configured maximum lifetime.
    LifetimeTooLong => "lifetime_too_long", "the token lifetime is too long";
    /// A required claim is absent.
    MissingClaim => "missing_claim", "the token lacks a required claim";
    /// A claim has the wrong JSON type or an invalid value.
    InvalidClaim => "invalid_claim", "the token has an invalid claim";
    /// An ID token (OIDC `nonce` / `at_hash` / `c_hash`, a Keycloak `typ` of
    /// another token kind, a Cognito `token_use` other than `access`, …).
    IdToken => "id_token", "an ID token is not an access token";
    /// A user's token, where the issuer accepts machine tokens only.
    UserToken => "user_token", "the token is not a machine client's";
    /// The client is not in the issuer's client allow-list.
    ClientNotAllowed => "client_not_allowed", "the token client is not allowed";
    /// The token is bound to a key (`cnf`) but was presented as `Bearer`,
    /// without proof of possession.
    BoundToken => "bound_token", "the token is bound to a key: present it with a DPoP proof";
    /// The token is not DPoP-bound (`cnf.jkt`) but was presented as `DPoP`,
    /// or a route requires DPoP.
    UnboundToken => "unbound_token", "the token is not bound to a DPoP key";
    /// The token is bound to a client certificate (`cnf.x5t#S256`) other
    /// than the one presented, or none was presented.
    CertificateMismatch => "certificate_mismatch", "the token is bound to another client certificate";
    /// The token was revoked before its expiry: its client or tenant (for
    /// tokens issued before a moment) or its `jti` is on the revocation list.
    Revoked => "revoked", "the token has been revoked";
    /// No usable keys: the issuer's key set could not be loaded, or is stale past `max_stale`.
    KeysUnavailable => "keys_unavailable", "the signing keys are temporarily unavailable";
    /// The revocation list is not known yet (never synced from its shared
    /// store), or is stale past its bound under `WhenStale::Refuse`.
    RevocationsUnavailable => "revocations_unavailable", "the revocation list is temporarily unavailable";
    /// The DPoP replay store could not answer (full, or unreachable): a
    /// proof is refused rather than let through unchecked.
    ReplayCheckUnavailable => "replay_check_unavailable", "the DPoP replay check is temporarily unavailable";
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A token was not accepted.
///
/// Holds the [`Reason`], the claim concerned (its configured name, never its
/// value) and, for [`Reason::KeysUnavailable`], when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    claim: Option<Arc<str>>,
    retry_after: Option<Duration>,
    issuer: Option<Arc<str>>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason) -> Self {
        Rejection {
            reason,
            claim: None,
            retry_after: None,
            issuer: None,
        }
    }

    pub(crate) fn claim(reason: Reason, claim: &str) -> Self {
        Rejection {
            reason,
            claim: Some(claim.into()),
            retry_after: None,
            issuer: None,
        }
    }

    pub(crate) fn keys_unavailable(retry_after: Duration) -> Self {
        Rejection {
            reason: Reason::KeysUnavailable,
            claim: None,
            // Retry-After speaks in whole seconds: never tell a client "now".
            retry_after: Some(retry_after.max(Duration::from_secs(1))),
            issuer: None,
        }
    }

    /// A fault on our side (503): `reason` is an unavailable one.
    pub(crate) fn unavailable(reason: Reason, retry_after: Duration) -> Self {
        Rejection {
            reason,
            claim: None,
            retry_after: Some(retry_after.max(Duration::from_secs(1))),
            issuer: None,
        }
    }

    pub(crate) fn with_issuer(mut self, issuer: Arc<str>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// The trusted issuer whose rules rejected the token, once the token's
    /// `iss` matched one (not set for malformed tokens or unknown issuers).
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// [`issuer`](Self::issuer), shared.
    pub(crate) fn shared_issuer(&self) -> Option<&Arc<str>> {
        self.issuer.as_ref()
    }

    /// Why the token was rejected.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The claim concerned, for [`Reason::MissingClaim`] and [`Reason::InvalidClaim`].
    pub fn claim_name(&self) -> Option<&str> {
        self.claim.as_deref()
    }

    /// For the unavailable reasons: a hint for when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `true` when the fault is on the server side (keys or the revocation
    /// list unavailable): the client should retry later rather than get a
    /// new token.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.reason,
            Reason::KeysUnavailable | Reason::RevocationsUnavailable
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.description())?;
        if let Some(claim) = &self.claim {
            write!(f, " ({claim})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_code_and_a_client_safe_description() {
        let mut codes = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(codes.insert(r.code()), "{r:?}: code used twice");
            assert!(
                r.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{r:?}"
            );
            // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
            assert!(
                r.description()
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\' && b != b'%'),
                "{r:?}"
            );
            assert_eq!(r.to_string(), r.code());
        }
        assert_eq!(Reason::ALL.len(), 31);
    }
}
