//! The errors of building a verifier ([`BuildError`]) and of fetching an
//! issuer's metadata or key set ([`FetchError`]). A rejected token is a
//! [`Rejection`](crate::Rejection), in `rejection.rs`.
//!
//! Each error shows its cause once: in its message (`Display`), or as its
//! [`source`](std::error::Error::source), never both.

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
    #[error("issuer {issuer}: metadata or keys unavailable: {}", error_chain(&**cause))]
    Unavailable {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        cause: Arc<FetchError>,
    },
    /// The HTTP client could not be created (the cause is the source).
    #[error("could not create the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// Why fetching or parsing an issuer's metadata or key set failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request did not complete within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A network-level failure (DNS, connect, TLS, reset); the cause is the
    /// source.
    #[error("request failed")]
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

/// "outer: inner: root": an error and its sources in one line, for logs and
/// for messages that name a cause they do not expose as a source.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
