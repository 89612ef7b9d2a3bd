//! Error types, one per moment: building a verifier ([`BuildError`]), fetching a
//! key set ([`FetchError`]) and rejecting a token ([`Rejection`]).
//!
//! None of them ever carries token contents: descriptions are static strings
//! and claim names come from the configuration, never from the token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a [`VerifierBuilder`](crate::VerifierBuilder) could not build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is inconsistent or out of bounds.
    #[error("invalid m2m-guard configuration: {0}")]
    Config(String),
    /// A URL is not valid or not allowed (https is required except for loopback hosts).
    #[error("invalid URL for {what}: {reason}")]
    Url {
        /// Which setting the URL belongs to.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A setting is outside the range m2m-guard accepts (an absurd value
    /// would overflow time arithmetic or disable a protection).
    #[error("invalid m2m-guard setting {setting} = {value}: allowed {allowed}")]
    OutOfRange {
        /// The setting, e.g. `Issuer::max_stale`.
        setting: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        allowed: String,
    },
    /// [`Verifier::preload`](crate::Verifier::preload): an issuer's metadata
    /// or keys could not be loaded.
    #[error("issuer {issuer}: metadata or keys unavailable: {cause}")]
    Unavailable {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        cause: Arc<FetchError>,
    },
    /// The HTTP client could not be created.
    #[error("could not create the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Why fetching or parsing an issuer's metadata or key set failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request did not complete within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A network-level failure (DNS, connect, TLS, reset).
    #[error("request failed: {}", error_chain(.0))]
    Network(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// The body exceeded the configured size limit.
    #[error("response larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The server answered with a redirect. Metadata and key sets are read
    /// only from the URL configured or discovered, never from where a
    /// redirect points (whoever controls another path could publish keys).
    #[error("redirect refused (HTTP {0}): keys and metadata are read only from their own URL")]
    Redirect(u16),
    /// A URL in the response is not valid or not allowed.
    #[error("invalid URL in response: {0}")]
    InvalidUrl(String),
    /// The body is not valid JSON of the expected shape.
    #[error("invalid document: {0}")]
    Parse(String),
    /// The key set holds more keys than allowed.
    #[error("key set holds {count} keys, more than the limit of {limit}")]
    TooManyKeys {
        /// How many keys the document holds.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The key set holds no key that can verify signatures.
    #[error("key set holds no usable signing key")]
    NoUsableKeys,
    /// The discovery document names another issuer.
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The issuer in the document.
        found: String,
    },
    /// The background fetch task ended without an answer (runtime shutting down).
    #[error("fetch task was cancelled")]
    Cancelled,
    /// The background fetch task panicked (a bug: please report it). The
    /// next request starts a new fetch.
    #[error("fetch task panicked")]
    Panicked,
}

/// "outer: inner: root", since reqwest's own message hides the cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

impl FetchError {
    /// `true` when the failure was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FetchError::Timeout(_))
    }
}

/// The stable reason a token was rejected.
///
/// [`Reason::code`] gives a short, stable identifier for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not a compact JWS: wrong segment count, bad base64url, bad JSON.
    Malformed,
    /// Larger than the configured maximum token size.
    TooLarge,
    /// A JWE (encrypted token); only signed tokens are accepted.
    Encrypted,
    /// `alg` is `none`, symmetric (HS*), unknown, or not allowed by configuration.
    UnsupportedAlgorithm,
    /// The selected key is bound to another algorithm than the header's `alg`.
    AlgorithmMismatch,
    /// No key in the issuer's key set matches the token's `kid`.
    UnknownKey,
    /// The token has no `kid` and the key set does not name one key for its `alg`.
    AmbiguousKey,
    /// The signature does not verify.
    InvalidSignature,
    /// The header has a `crit` parameter (no extension is understood).
    UnsupportedCritical,
    /// The `typ` header is not an access-token type.
    InvalidType,
    /// `iss` is missing or not a trusted issuer.
    UnknownIssuer,
    /// `aud` does not contain a configured audience.
    InvalidAudience,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `iat` is older than the configured maximum age.
    TooOld,
    /// `exp - iat` exceeds the configured maximum lifetime.
    LifetimeTooLong,
    /// A required claim is absent.
    MissingClaim,
    /// A claim has the wrong JSON type or an invalid value.
    InvalidClaim,
    /// The client is not in the issuer's client allow-list.
    ClientNotAllowed,
    /// No usable keys: the issuer's key set could not be loaded, or is stale past `max_stale`.
    KeysUnavailable,
}

impl Reason {
    /// A short, stable identifier, e.g. `"expired"`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::Encrypted => "encrypted",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::AlgorithmMismatch => "algorithm_mismatch",
            Reason::UnknownKey => "unknown_key",
            Reason::AmbiguousKey => "ambiguous_key",
            Reason::InvalidSignature => "invalid_signature",
            Reason::UnsupportedCritical => "unsupported_critical",
            Reason::InvalidType => "invalid_type",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::InvalidAudience => "invalid_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::TooOld => "too_old",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::MissingClaim => "missing_claim",
            Reason::InvalidClaim => "invalid_claim",
            Reason::ClientNotAllowed => "client_not_allowed",
            Reason::KeysUnavailable => "keys_unavailable",
        }
    }

    /// A short human description, safe to send to the client (RFC 6750 charset).
    pub fn description(self) -> &'static str {
        match self {
            Reason::Malformed => "the token is malformed",
            Reason::TooLarge => "the token is too large",
            Reason::Encrypted => "encrypted tokens are not accepted",
            Reason::UnsupportedAlgorithm => "the token algorithm is not accepted",
            Reason::AlgorithmMismatch => "the token algorithm does not match the signing key",
            Reason::UnknownKey => "the token signing key is unknown",
            Reason::AmbiguousKey => "the token does not identify its signing key",
            Reason::InvalidSignature => "the token signature is invalid",
            Reason::UnsupportedCritical => "the token has unsupported critical header parameters",
            Reason::InvalidType => "the token is not an access token",
            Reason::UnknownIssuer => "the token issuer is not trusted",
            Reason::InvalidAudience => "the token is not intended for this API",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not yet valid",
            Reason::IssuedInFuture => "the token was issued in the future",
            Reason::TooOld => "the token is too old",
            Reason::LifetimeTooLong => "the token lifetime is too long",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::InvalidClaim => "the token has an invalid claim",
            Reason::ClientNotAllowed => "the token client is not allowed",
            Reason::KeysUnavailable => "the signing keys are temporarily unavailable",
        }
    }
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

    pub(crate) fn with_issuer(mut self, issuer: Arc<str>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// The trusted issuer whose rules rejected the token, once the token's
    /// `iss` matched one (not set for malformed tokens or unknown issuers).
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Why the token was rejected.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The claim concerned, for [`Reason::MissingClaim`] and [`Reason::InvalidClaim`].
    pub fn claim_name(&self) -> Option<&str> {
        self.claim.as_deref()
    }

    /// For [`Reason::KeysUnavailable`]: a hint for when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `true` when the fault is on the server side (keys unavailable): the
    /// client should retry later rather than get a new token.
    pub fn is_unavailable(&self) -> bool {
        self.reason == Reason::KeysUnavailable
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
