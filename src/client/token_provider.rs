//! The client-credentials token provider.

use futures_util::FutureExt as _;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, instant_after};
use crate::error::{FetchError, error_chain};
use crate::fetch::{FetchLimits, Fetcher, check_named_url, http_client, parse_url, read_bounded};
use crate::flight::{Flight, Lost, SingleFlight};
use crate::json::parse_object;

use super::key::SigningKey;

/// A 401 from the API triggers at most one token refresh per this interval
/// (and per token): an API that refuses every token cannot turn each of its
/// requests into a token request.
const MIN_REFRESH_AFTER_401: Duration = Duration::from_secs(10);

/// The longest `Retry-After` honoured between calls (a longer one is cut to
/// this, so a buggy or hostile answer cannot stop refreshes for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A client secret. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct ClientSecret(Arc<str>);

impl ClientSecret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        ClientSecret(secret.into().into())
    }

    /// Read the secret from environment variable `var`.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the variable is unset, empty or not UTF-8.
    pub fn from_env(var: &str) -> Result<Self, ClientError> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(ClientSecret::new(v)),
            _ => Err(ClientError::Config(format!(
                "environment variable {var} is unset or empty"
            ))),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

/// How the client proves who it is at the token endpoint: a shared
/// secret, or a private key (`private_key_jwt`, RFC 7523) whose public half
/// the issuer holds, so no secret exists to leak.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientCredential {
    /// A client secret, sent as [`ClientAuth`] says.
    Secret(ClientSecret),
    /// A private key signing a short-lived assertion per token request.
    PrivateKey(SigningKey),
}

impl From<ClientSecret> for ClientCredential {
    fn from(secret: ClientSecret) -> Self {
        ClientCredential::Secret(secret)
    }
}

impl From<SigningKey> for ClientCredential {
    fn from(key: SigningKey) -> Self {
        ClientCredential::PrivateKey(key)
    }
}

/// An access token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<str>,
    obtained: Instant,
    expires_at: Instant,
    scope: Option<Arc<str>>,
    dpop: bool,
}

impl AccessToken {
    /// The token, for the `Authorization` header (with the scheme of
    /// [`AccessToken::token_type`]). Do not log it.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// `Bearer`, or `DPoP` for a token bound to the provider's DPoP key
    /// (sent as `Authorization: DPoP <token>` with a proof per request).
    pub fn token_type(&self) -> &'static str {
        if self.dpop { "DPoP" } else { "Bearer" }
    }

    /// `true` for a DPoP-bound token: every request needs a proof.
    pub fn is_dpop_bound(&self) -> bool {
        self.dpop
    }

    /// When it expires, by the issuer's `expires_in`.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The granted scopes, if the issuer said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"***")
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(Instant::now()),
            )
            .field("scope", &self.scope)
            .field("token_type", &self.token_type())
            .finish()
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, RFC 6749 §2.3.1). The default.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// How the target API is named in the token request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudienceParam {
    /// `audience=...` (Kinde, Auth0 style).
    Audience(String),
    /// `resource=...` (RFC 8707 resource indicators).
    Resource(String),
}

/// An OAuth 2.0 token-endpoint error code (RFC 6749 §5.2, RFC 8707 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`: wrong client id or secret.
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`: a scope is unknown or not allowed to this client.
    InvalidScope,
    /// `invalid_target`: the audience / resource is unknown (RFC 8707).
    InvalidTarget,
    /// `invalid_dpop_proof`: the DPoP proof was refused (RFC 9449).
    InvalidDpopProof,
    /// `use_dpop_nonce`: the server wants its nonce in the DPoP proof
    /// (RFC 9449 §8); the provider retries once with it by itself.
    UseDpopNonce,
    /// Any other code.
    Other(String),
}

impl OAuthErrorCode {
    fn parse(s: &str) -> Self {
        match s {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_target" => Self::InvalidTarget,
            "invalid_dpop_proof" => Self::InvalidDpopProof,
            "use_dpop_nonce" => Self::UseDpopNonce,
            // Remote text: escaped and bounded before it can reach a log line.
            other => Self::Other(crate::text::remote(other, 64)),
        }
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why no token could be obtained. Never contains the secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The token endpoint refused with an OAuth error.
    #[error("token endpoint refused: {code} (HTTP {status}){}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// The error code.
        code: OAuthErrorCode,
        /// The issuer's `error_description`, shortened.
        description: Option<String>,
        /// The HTTP status.
        status: u16,
    },
    /// Throttled (429) or a server error (5xx) that outlasted the retries.
    #[error("token endpoint unavailable: HTTP {status}")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// The last `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Another non-success status without an OAuth error body.
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    /// Network failure or timeout (after retries).
    #[error("token request failed: {0}")]
    Network(String),
    /// The response is not a valid token response.
    #[error("invalid token response: {0}")]
    InvalidResponse(&'static str),
    /// The configuration is invalid, or discovery failed.
    #[error("invalid token provider configuration: {0}")]
    Config(String),
    /// The last token request failed and the provider is backing off (with
    /// jitter, honouring `Retry-After`) before it sends another; no request
    /// was sent for this call.
    #[error("token requests backing off for {retry_after:?} after: {last_error}")]
    BackingOff {
        /// When the next token request may be sent.
        retry_after: Duration,
        /// Why the last one failed.
        last_error: Box<ClientError>,
    },
}

impl ClientError {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `true` for failures worth retrying later (throttling, 5xx, network,
    /// backing off).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Network(_)
                | ClientError::BackingOff { .. }
        )
    }
}

type SharedFetch = Flight<AccessToken, ClientError>;

struct Cached {
    token: AccessToken,
    /// From here on, a background refresh starts.
    refresh_at: Instant,
    /// Past this the token is not handed out (a little before `exp`).
    usable_until: Instant,
}

/// The cached token and the failure bookkeeping, under one lock.
struct State {
    cached: Option<Cached>,
    /// Consecutive failed token requests (each after its own retries).
    failures: u32,
    /// No new token request before this.
    next_attempt: Instant,
    last_error: Option<ClientError>,
    /// The last refresh caused by a 401 from the API.
    last_refresh_after_401: Option<Instant>,
}

/// Where tokens are requested.
enum TokenEndpoint {
    /// Configured.
    Url(Url),
    /// The issuer's `token_endpoint`, discovered on the first request (and
    /// again after a request that could not reach it: the issuer may have
    /// moved it), so a client starts while its issuer is down and works as
    /// soon as the issuer is back.
    Discover {
        issuer: String,
        found: Mutex<Option<Url>>,
    },
}

impl TokenEndpoint {
    fn describe(&self) -> String {
        match self {
            TokenEndpoint::Url(u) => u.to_string(),
            TokenEndpoint::Discover { issuer, found } => {
                match &*found.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(u) => u.to_string(),
                    None => format!("discovery of {issuer}"),
                }
            }
        }
    }
}

struct Inner {
    client_id: String,
    credential: ClientCredential,
    /// The `aud` of client assertions, when not the token endpoint.
    assertion_audience: Option<String>,
    /// Request DPoP-bound tokens with this key.
    dpop: Option<SigningKey>,
    /// The token endpoint's last `DPoP-Nonce`, with the origin that gave it
    /// (a moved endpoint gets no other server's nonce).
    dpop_nonce: Mutex<Option<(String, String)>>,
    token_url: TokenEndpoint,
    audience: Option<AudienceParam>,
    scopes: Vec<String>,
    auth: ClientAuth,
    refresh_margin: Duration,
    max_retries: u32,
    backoff: Backoff,
    default_lifetime: Duration,
    http: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
    state: Mutex<State>,
    flight: SingleFlight<AccessToken, ClientError>,
    requests: AtomicU64,
}

/// Gets and caches client-credentials access tokens. Cheap to clone; clones
/// share the cache. Never persists or logs the token or the secret.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("client_id", &self.inner.client_id)
            .field("token_url", &self.inner.token_url.describe())
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

/// Configures a [`TokenProvider`].
#[derive(Debug)]
pub struct TokenProviderBuilder {
    client_id: String,
    credential: ClientCredential,
    assertion_audience: Option<String>,
    dpop: Option<SigningKey>,
    token_url: Option<String>,
    issuer: Option<String>,
    audience: Option<AudienceParam>,
    scopes: Vec<String>,
    auth: Option<ClientAuth>,
    refresh_margin: Duration,
    max_retries: u32,
    backoff: (Duration, Duration),
    default_lifetime: Duration,
    client: Option<reqwest::ClientBuilder>,
    timeout: Duration,
}

impl TokenProvider {
    /// Start configuring a provider for this client, authenticated by a
    /// [`ClientSecret`] or, with `private_key_jwt`, a [`SigningKey`].
    pub fn builder(
        client_id: impl Into<String>,
        credential: impl Into<ClientCredential>,
    ) -> TokenProviderBuilder {
        TokenProviderBuilder {
            client_id: client_id.into(),
            credential: credential.into(),
            assertion_audience: None,
            dpop: None,
            token_url: None,
            issuer: None,
            audience: None,
            scopes: Vec::new(),
            auth: None,
            refresh_margin: Duration::from_secs(60),
            max_retries: 3,
            backoff: (Duration::from_millis(200), Duration::from_secs(10)),
            default_lifetime: Duration::from_secs(300),
            client: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// A valid token: the cached one, or a fresh one when there is none.
    /// When the cached token is due for refresh but still valid, it is
    /// returned at once and the refresh runs in the background.
    ///
    /// After a failed token request the provider backs off (doubling, with
    /// jitter, honouring `Retry-After`): meanwhile a still-valid token keeps
    /// being returned, and without one this fails at once with
    /// [`ClientError::BackingOff`] instead of sending another request.
    ///
    /// # Errors
    /// A [`ClientError`] when no valid token is cached and none can be obtained.
    pub async fn token(&self) -> Result<AccessToken, ClientError> {
        let now = Instant::now();
        let refresh = {
            let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let backing_off = now < st.next_attempt;
            if let Some(c) = &st.cached {
                crate::metrics::client_token_age(
                    &self.inner.client_id,
                    now.saturating_duration_since(c.token.obtained),
                );
            }
            match st.cached.as_ref().filter(|c| now < c.usable_until) {
                Some(c) if now < c.refresh_at || backing_off => return Ok(c.token.clone()),
                Some(c) => Some(c.token.clone()),
                None if backing_off && !self.inner.flight.is_running() => {
                    return Err(ClientError::BackingOff {
                        retry_after: st.next_attempt.saturating_duration_since(now),
                        last_error: Box::new(st.last_error.clone().unwrap_or_else(|| {
                            ClientError::Network("token request failed".into())
                        })),
                    });
                }
                None => None,
            }
        };
        match refresh {
            Some(token) => {
                drop(self.fetch());
                Ok(token)
            }
            None => self.fetch().await,
        }
    }

    /// Drop `token` from the cache (e.g. the API answered 401), so the next
    /// [`TokenProvider::token`] gets a fresh one. A newer cached token is kept.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if st
            .cached
            .as_ref()
            .is_some_and(|c| c.token.value == token.value)
        {
            st.cached = None;
        }
    }

    /// The API answered 401 to `rejected`: the token to retry with, if
    /// any. A newer cached token is returned as it is; otherwise one fresh
    /// token is requested, at most once per token and per
    /// [`MIN_REFRESH_AFTER_401`], and never during a backoff; a 401 that
    /// arrives while that request is under way waits for it. Until the
    /// fresh token arrives the rejected one stays cached: if the refresh
    /// fails, other callers keep a token (the 401 may have been the API's
    /// own mistake).
    pub(crate) async fn token_after_401(&self, rejected: &AccessToken) -> Option<AccessToken> {
        let now = Instant::now();
        let under_way = {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.cached.as_ref() {
                Some(c) if c.token.value != rejected.value && now < c.usable_until => {
                    return Some(c.token.clone());
                }
                // Refreshed for a 401 moments ago: only a refresh still
                // under way (another request's 401, say) has a token to
                // give; none is started.
                Some(c)
                    if c.token.value == rejected.value
                        && st.last_refresh_after_401.is_some_and(|t| {
                            now.saturating_duration_since(t) < MIN_REFRESH_AFTER_401
                        }) =>
                {
                    Some(self.inner.flight.running()?)
                }
                _ => {
                    if now < st.next_attempt && !self.inner.flight.is_running() {
                        return None;
                    }
                    st.last_refresh_after_401 = Some(now);
                    None
                }
            }
        };
        let fresh = match under_way {
            Some(flight) => flight.await.ok()?,
            None => self.fetch().await.ok()?,
        };
        // The same token again (an issuer may hand out the same string until
        // it expires) is no token to retry with.
        (fresh.value != rejected.value).then_some(fresh)
    }

    /// A DPoP proof (RFC 9449) for sending `token` with a `method` request
    /// to `url`, signed by the provider's DPoP key, carrying `nonce` (the
    /// resource server's last `DPoP-Nonce` header, if it sent one): what to
    /// put in the `DPoP` header next to `Authorization: DPoP <token>` when
    /// calling without [`BearerTokenLayer`](super::BearerTokenLayer) (which
    /// does all of it for you). Make one per request: a server refuses a
    /// proof it has seen.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the provider has no DPoP key or `url`
    /// is not an absolute URL.
    pub fn dpop_proof(
        &self,
        method: &http::Method,
        url: &str,
        token: &AccessToken,
        nonce: Option<&str>,
    ) -> Result<String, ClientError> {
        let Some(key) = &self.inner.dpop else {
            return Err(ClientError::Config(
                "this token provider has no DPoP key (TokenProviderBuilder::dpop)".into(),
            ));
        };
        let url = Url::parse(url)
            .map_err(|_| ClientError::Config("the DPoP target is not an absolute URL".into()))?;
        key.dpop_proof(method.as_str(), &url, Some(token.secret()), nonce)
    }

    pub(crate) fn dpop_key(&self) -> Option<&SigningKey> {
        self.inner.dpop.as_ref()
    }

    /// How many token requests were sent (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The origin (`scheme://host[:port]`) of the audience or resource, when
    /// it is an URL: where [`BearerTokenLayer`](super::BearerTokenLayer)
    /// sends tokens by default.
    pub(crate) fn audience_origin(&self) -> Option<String> {
        let aud = match self.inner.audience.as_ref()? {
            AudienceParam::Audience(a) | AudienceParam::Resource(a) => a,
        };
        let url = Url::parse(aud).ok()?;
        crate::fetch::check_url(&url).ok()?;
        Some(url.origin().ascii_serialization())
    }

    /// Join the token request in flight, or start one on its own task.
    fn fetch(&self) -> SharedFetch {
        let inner = self.inner.clone();
        let (flight, _) = self.inner.flight.join_or_start(
            move || async move {
                // A panic is a failed request like any other: it backs off.
                let result = std::panic::AssertUnwindSafe(fetch_with_retries(&inner))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(ClientError::Network("token task panicked".into())));
                record(&inner, &result);
                result
            },
            |lost| {
                ClientError::Network(match lost {
                    Lost::Panicked => "token task panicked".into(),
                    Lost::Cancelled => "token task cancelled".into(),
                })
            },
        );
        flight
    }
}

/// Cache a new token, or start (or extend) the backoff after a failure.
fn record(inner: &Inner, result: &Result<AccessToken, ClientError>) {
    let now = Instant::now();
    crate::metrics::client_token_request(
        &inner.client_id,
        match result {
            Ok(_) => "ok",
            Err(ClientError::OAuth { .. }) => "oauth_error",
            Err(e) if e.is_transient() => "unavailable",
            Err(_) => "error",
        },
    );
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(token) => {
            let (refresh_at, usable_until) =
                schedule(now, token.expires_at, inner.refresh_margin, fastrand::f64());
            st.cached = Some(Cached {
                token: token.clone(),
                refresh_at,
                usable_until,
            });
            st.failures = 0;
            st.next_attempt = now;
            st.last_error = None;
        }
        Err(e) => {
            st.failures = st.failures.saturating_add(1);
            let wait = inner
                .backoff
                .delay(st.failures)
                .max(e.retry_after().unwrap_or_default().min(MAX_RETRY_AFTER));
            st.next_attempt = instant_after(now, wait);
            st.last_error = Some(e.clone());
        }
    }
}

/// When to start refreshing a token and when to stop handing it out.
/// Refresh `margin` before expiry (at least twice the gap kept before
/// `exp`, at most half the lifetime), minus up to a quarter of the lifetime
/// more of jitter (`r` in 0..1) so a fleet started together does not
/// refresh together; stop using it shortly before `exp` (a tenth of the
/// lifetime, at most 5 s). The refresh is always due while the token is
/// still handed out, so callers do not wait for it.
fn schedule(now: Instant, expires_at: Instant, margin: Duration, r: f64) -> (Instant, Instant) {
    let lifetime = expires_at.saturating_duration_since(now);
    let skew = (lifetime / 10).min(Duration::from_secs(5));
    // 2 × skew ≤ lifetime / 5: the bounds cannot cross.
    let margin = margin.max(2 * skew).min(lifetime / 2);
    let jitter = (lifetime / 4).min(margin).mul_f64(r.clamp(0.0, 1.0));
    (expires_at - margin - jitter, expires_at - skew)
}

async fn fetch_with_retries(inner: &Inner) -> Result<AccessToken, ClientError> {
    let mut attempt = 0;
    loop {
        let result = request_token(inner).await;
        match result {
            // A `Retry-After` past the backoff's maximum ends the retries:
            // the server asked for longer than a caller waits, and the
            // backoff between calls honours it.
            Err(e)
                if e.is_transient()
                    && attempt < inner.max_retries
                    && e.retry_after().is_none_or(|ra| ra <= inner.backoff.max) =>
            {
                // Never sooner than the backoff: `Retry-After: 0` is no
                // licence for back-to-back requests.
                let backoff = inner.backoff.delay(attempt + 1);
                let wait = e.retry_after().map_or(backoff, |ra| ra.max(backoff));
                tracing::warn!(
                    target: "m2m_guard::client",
                    client_id = %inner.client_id,
                    error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "token request failed, retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::warn!(target: "m2m_guard::client", client_id = %inner.client_id, error = %e, "token request failed");
                return Err(e);
            }
            Ok(t) => {
                tracing::debug!(target: "m2m_guard::client", client_id = %inner.client_id, "token obtained");
                return Ok(t);
            }
        }
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().copied())
        .finish()
}

/// The token endpoint, discovering it first when needed. A discovery that
/// fails (issuer down) is transient like a failed token request: it is
/// retried and backs off the same way.
async fn token_url(inner: &Inner) -> Result<Url, ClientError> {
    let (issuer, found) = match &inner.token_url {
        TokenEndpoint::Url(u) => return Ok(u.clone()),
        TokenEndpoint::Discover { issuer, found } => (issuer, found),
    };
    if let Some(u) = &*found.lock().unwrap_or_else(|e| e.into_inner()) {
        return Ok(u.clone());
    }
    let fetcher = Fetcher::with_client(inner.http.clone(), FetchLimits::default());
    let meta = fetcher.discover_metadata(issuer).await.map_err(|e| {
        let message = format!("discovery for {issuer} failed: {}", error_chain(&e));
        match e {
            // The issuer is down or unreachable: transient, retried with backoff.
            FetchError::Timeout(_) | FetchError::Network(_) => ClientError::Network(message),
            FetchError::Status(s) if s == 429 || s >= 500 => ClientError::Network(message),
            _ => ClientError::Config(message),
        }
    })?;
    let Some(url) = meta.get("token_endpoint").and_then(Value::as_str) else {
        return Err(ClientError::Config(format!(
            "the discovery document of {issuer} has no token_endpoint"
        )));
    };
    let named = |reason: String| {
        ClientError::Config(format!(
            "the discovery document of {issuer}: token_endpoint: {reason}"
        ))
    };
    let url = Url::parse(url).map_err(|e| named(e.to_string()))?;
    // Checked at build: the issuer is a valid URL.
    let from = Url::parse(issuer).map_err(|e| named(e.to_string()))?;
    check_named_url(&url, &from).map_err(named)?;
    *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
    Ok(url)
}

async fn request_token(inner: &Inner) -> Result<AccessToken, ClientError> {
    let token_url = tokio::time::timeout(inner.timeout, token_url(inner))
        .await
        .map_err(|_| {
            ClientError::Network(format!("discovery timed out after {:?}", inner.timeout))
        })??;
    let result = request_token_at(inner, token_url).await;
    if let (
        Err(ClientError::Network(_) | ClientError::Status(404)),
        TokenEndpoint::Discover { found, .. },
    ) = (&result, &inner.token_url)
    {
        // Discover again next time: the issuer may have moved its endpoint.
        *found.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    result
}

/// The DPoP nonce last given by the token endpoint at `url`'s origin.
fn token_endpoint_nonce(inner: &Inner, url: &Url) -> Option<String> {
    let origin = url.origin().ascii_serialization();
    match &*inner.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((o, nonce)) if *o == origin => Some(nonce.clone()),
        _ => None,
    }
}

/// One token request, and with DPoP one more at once when the token
/// endpoint answers `use_dpop_nonce` with a new nonce (RFC 9449 §8): that
/// answer is the protocol, not a failure to back off from.
async fn request_token_at(inner: &Inner, token_url: Url) -> Result<AccessToken, ClientError> {
    let nonce = token_endpoint_nonce(inner, &token_url);
    match exchange(inner, &token_url, nonce.as_deref()).await {
        Err(ClientError::OAuth {
            code: OAuthErrorCode::UseDpopNonce,
            ..
        }) if inner.dpop.is_some()
            && token_endpoint_nonce(inner, &token_url)
                .is_some_and(|n| Some(&n) != nonce.as_ref()) =>
        {
            let nonce = token_endpoint_nonce(inner, &token_url);
            exchange(inner, &token_url, nonce.as_deref()).await
        }
        other => other,
    }
}

/// A `DPoP-Nonce` value as RFC 9449 §8.1 allows it (`1*NQCHAR`), bounded.
pub(crate) fn valid_nonce(value: &http::HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 512
        && bytes
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

async fn exchange(
    inner: &Inner,
    token_url: &Url,
    nonce: Option<&str>,
) -> Result<AccessToken, ClientError> {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    let scope = inner.scopes.join(" ");
    let mut pairs: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    match &inner.audience {
        Some(AudienceParam::Audience(a)) => pairs.push(("audience", a)),
        Some(AudienceParam::Resource(r)) => pairs.push(("resource", r)),
        None => {}
    }
    let mut req = inner
        .http
        .post(token_url.clone())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    let assertion;
    // The credentials as they go out, to withhold from error descriptions.
    let mut sent_credentials: Vec<String> = Vec::new();
    match &inner.credential {
        ClientCredential::Secret(secret) => {
            let encoded = form_component(secret.expose());
            sent_credentials.push(secret.expose().to_owned());
            sent_credentials.push(encoded.clone());
            match inner.auth {
                ClientAuth::Basic => {
                    // RFC 6749 §2.3.1: form-encode id and secret before Basic.
                    let id = form_component(&inner.client_id);
                    let secret = encoded;
                    use base64::Engine as _;
                    sent_credentials.push(
                        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")),
                    );
                    req = req.basic_auth(id, Some(secret));
                }
                ClientAuth::Post => {
                    pairs.push(("client_id", &inner.client_id));
                    pairs.push(("client_secret", secret.expose()));
                }
            }
        }
        ClientCredential::PrivateKey(key) => {
            let aud = inner
                .assertion_audience
                .clone()
                .unwrap_or_else(|| token_url.to_string());
            assertion = key.client_assertion(&inner.client_id, &aud)?;
            sent_credentials.push(assertion.clone());
            pairs.push(("client_id", &inner.client_id));
            pairs.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
            pairs.push(("client_assertion", &assertion));
        }
    }
    if let Some(key) = &inner.dpop {
        let proof = key.dpop_proof("POST", token_url, None, nonce)?;
        req = req.header("dpop", proof);
    }
    let sent = Instant::now();
    let send = async {
        let mut resp = req.body(form(&pairs)).send().await.map_err(network)?;
        let status = resp.status().as_u16();
        if let Some(nonce) = resp.headers().get("dpop-nonce").and_then(valid_nonce)
            && inner.dpop.is_some()
        {
            let origin = token_url.origin().ascii_serialization();
            *inner.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()) = Some((origin, nonce));
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_bounded(&mut resp, inner.max_bytes)
            .await
            .map_err(network)?
            .ok_or(ClientError::InvalidResponse("response too large"))?;
        Ok((status, retry_after, body))
    };
    let (status, retry_after, body) = tokio::time::timeout(inner.timeout, send)
        .await
        .map_err(|_| ClientError::Network(format!("timed out after {:?}", inner.timeout)))??;
    let doc = parse_object(&body);
    if !(200..300).contains(&status) {
        if status == 429 || status >= 500 {
            return Err(ClientError::Unavailable {
                status,
                retry_after,
            });
        }
        if let Some(Value::String(code)) = doc.as_ref().and_then(|d| d.get("error")) {
            let description = doc
                .as_ref()
                .and_then(|d| d.get("error_description"))
                .and_then(Value::as_str)
                .map(|s| crate::text::remote(&withhold(s, &sent_credentials), 200));
            return Err(ClientError::OAuth {
                code: OAuthErrorCode::parse(&withhold(code, &sent_credentials)),
                description,
                status,
            });
        }
        return Err(ClientError::Status(status));
    }
    let doc = doc.ok_or(ClientError::InvalidResponse("not a JSON object"))?;
    let value = match doc.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => {
            t.as_str()
        }
        _ => return Err(ClientError::InvalidResponse("no valid access_token")),
    };
    // With a DPoP key the token must come back bound to it: a Bearer token
    // would silently lose the protection the client was configured for.
    let dpop = inner.dpop.is_some();
    match (doc.get("token_type"), dpop) {
        (Some(Value::String(t)), false) if t.eq_ignore_ascii_case("bearer") => {}
        (None, false) => {}
        (Some(Value::String(t)), true) if t.eq_ignore_ascii_case("dpop") => {}
        (_, false) => return Err(ClientError::InvalidResponse("token_type is not Bearer")),
        (_, true) => {
            return Err(ClientError::InvalidResponse(
                "token_type is not DPoP: the token endpoint did not bind the token to the DPoP key",
            ));
        }
    }
    let lifetime = match doc.get("expires_in") {
        None => inner.default_lifetime,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if s > 0 => Duration::from_secs(s.min(366 * 24 * 3600)),
            _ => {
                return Err(ClientError::InvalidResponse(
                    "expires_in is not a positive integer",
                ));
            }
        },
        // Some servers send it as a string.
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(s) if s > 0 => Duration::from_secs(s.min(366 * 24 * 3600)),
            _ => {
                return Err(ClientError::InvalidResponse(
                    "expires_in is not a positive integer",
                ));
            }
        },
        Some(_) => return Err(ClientError::InvalidResponse("expires_in is not a number")),
    };
    let scope = match doc.get("scope") {
        Some(Value::String(s)) => Some(s.as_str().into()),
        _ => None,
    };
    let expires_at = sent + lifetime;
    // A token that spent more than half its life on the way: handing it out
    // would send a dead (or nearly dead) token, and fetching the next one at
    // once would repeat it. A failure instead, under the backoff.
    if expires_at.saturating_duration_since(Instant::now()) < lifetime / 2 {
        return Err(ClientError::InvalidResponse(
            "the token expires on arrival (expires_in too short for the round trip)",
        ));
    }
    Ok(AccessToken {
        value: value.into(),
        obtained: sent,
        // Counted from when the request was sent: never later than the issuer's clock.
        expires_at,
        scope,
        dpop,
    })
}

/// `text` with every copy of a credential the request carried replaced by
/// `***`: a token endpoint, or a proxy in front of it, may echo the request
/// into its error description, which errors and logs show.
/// The longest first: a credential may contain another (the secret is in
/// its form encoding).
fn withhold(text: &str, sent: &[String]) -> String {
    let mut sent: Vec<&String> = sent.iter().filter(|c| !c.is_empty()).collect();
    sent.sort_by_key(|c| std::cmp::Reverse(c.len()));
    sent.into_iter()
        .fold(text.to_owned(), |t, c| t.replace(c.as_str(), "***"))
}

fn form_component(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn network(e: reqwest::Error) -> ClientError {
    ClientError::Network(error_chain(&e.without_url()))
}

impl TokenProviderBuilder {
    /// The token endpoint.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// Find the token endpoint by discovery (OIDC, then RFC 8414) from this
    /// issuer, on the first token request: the provider builds while the
    /// issuer is down, and [`TokenProvider::token`] fails (and backs off)
    /// until it is back.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Ask for a token for this API with the `audience` parameter (Kinde, Auth0).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(AudienceParam::Audience(audience.into()));
        self
    }

    /// Ask for a token for this API with the RFC 8707 `resource` parameter.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.audience = Some(AudienceParam::Resource(resource.into()));
        self
    }

    /// Scopes to request.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Where the client secret goes. Defaults to [`ClientAuth::Basic`].
    /// Not for a [`SigningKey`] credential (it always signs an assertion).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Request DPoP-bound tokens (RFC 9449): every token request carries a
    /// proof signed by `key` (answering the server's `use_dpop_nonce` by
    /// itself), the token endpoint must answer `token_type` `DPoP`, and
    /// [`BearerTokenLayer`](super::BearerTokenLayer) sends each API request
    /// as `Authorization: DPoP` with a fresh proof. A token that leaks is
    /// useless without the key. Usually a [`SigningKey::generate`] key,
    /// one per process.
    pub fn dpop(mut self, key: SigningKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// The `aud` of `private_key_jwt` assertions. Defaults to the token
    /// endpoint URL (RFC 7523 §3; what Okta, Entra, Keycloak and
    /// oidc-provider accept); some servers want their issuer identifier.
    pub fn assertion_audience(mut self, aud: impl Into<String>) -> Self {
        self.assertion_audience = Some(aud.into());
        self
    }

    /// Refresh this long before expiry (at least twice the gap kept before
    /// expiry, a tenth of the lifetime up to 5 s; at most half the
    /// lifetime), plus jitter. Defaults to 60 s.
    pub fn refresh_before_expiry(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Retries after 429 / 5xx / network failures. Defaults to 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Backoff between retries, and between failed refreshes: doubling from
    /// `min`, with jitter, at most `max`. A `Retry-After` is honoured: up to
    /// `max` it is the wait before a retry the caller waits for; a longer
    /// one ends that call's retries, and no request is sent before it (up to
    /// 10 minutes).
    /// Defaults to 200 ms ..= 10 s; `min` at least 1 ms, `max` at most 1 hour.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// Lifetime assumed when the response has no `expires_in`. Defaults to 5 min.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// Time limit of one token request. Defaults to 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Start from your own HTTP client settings (custom CA, proxy). m2m-guard
    /// still sets on it what keeps the secret safe: redirects are never
    /// followed (a redirected token request would carry the secret to
    /// another URL), and the timeout and user agent are its own.
    pub fn http_client(mut self, client: reqwest::ClientBuilder) -> Self {
        self.client = Some(client);
        self
    }

    /// Check the configuration. Nothing is fetched yet: with an issuer, its
    /// token endpoint is discovered on the first token request (so a client
    /// starts while its issuer is down), and again after a token request
    /// that could not reach it.
    ///
    /// # Errors
    /// [`ClientError::Config`] for an invalid configuration.
    pub async fn build(self) -> Result<TokenProvider, ClientError> {
        let auth = match (&self.credential, self.auth) {
            (_, _) if self.client_id.is_empty() => {
                return Err(ClientError::Config("a client id is required".into()));
            }
            (ClientCredential::Secret(s), _) if s.expose().is_empty() => {
                return Err(ClientError::Config(
                    "client id and secret are required".into(),
                ));
            }
            (ClientCredential::Secret(_), _) if self.assertion_audience.is_some() => {
                return Err(ClientError::Config(
                    "assertion_audience is for a signing key (private_key_jwt), not a client secret".into(),
                ));
            }
            (ClientCredential::Secret(_), auth) => auth.unwrap_or_default(),
            (ClientCredential::PrivateKey(_), None) => ClientAuth::default(),
            (ClientCredential::PrivateKey(_), Some(_)) => {
                return Err(ClientError::Config(
                    "client_auth is for a client secret: a signing key always authenticates with private_key_jwt".into(),
                ));
            }
        };
        if self
            .assertion_audience
            .as_deref()
            .is_some_and(|a| a.is_empty() || a.len() > 2048)
        {
            return Err(ClientError::Config(
                "assertion_audience must be 1 to 2048 bytes".into(),
            ));
        }
        let (min, max) = self.backoff;
        if min < Duration::from_millis(1) || min > max || max > Duration::from_secs(3600) {
            return Err(ClientError::Config(format!(
                "backoff {min:?} ..= {max:?} is out of range (min at least 1ms, max at most 1h, min <= max)"
            )));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            return Err(ClientError::Config(format!(
                "timeout {:?} is out of range (1ns ..= 5min)",
                self.timeout
            )));
        }
        if self.max_retries > 10 {
            return Err(ClientError::Config(format!(
                "max_retries {} is out of range (0 ..= 10)",
                self.max_retries
            )));
        }
        if self.default_lifetime.is_zero() || self.default_lifetime > Duration::from_secs(86_400) {
            return Err(ClientError::Config(format!(
                "default_lifetime {:?} is out of range (1ns ..= 24h)",
                self.default_lifetime
            )));
        }
        if self.refresh_margin > Duration::from_secs(86_400) {
            return Err(ClientError::Config(format!(
                "refresh_before_expiry {:?} is out of range (at most 24h)",
                self.refresh_margin
            )));
        }
        let connect_timeout = self.timeout.min(Duration::from_secs(5));
        let http = http_client(self.client, connect_timeout, self.timeout)
            .map_err(|e| ClientError::Config(format!("could not create the HTTP client: {e}")))?;
        // Nothing is fetched here: with an issuer, its token endpoint is
        // discovered on the first token request.
        let token_url = match (self.token_url, self.issuer) {
            (Some(u), _) => TokenEndpoint::Url(
                parse_url("token_url", &u).map_err(|e| ClientError::Config(e.to_string()))?,
            ),
            (None, Some(iss)) => {
                parse_url("issuer", &iss).map_err(|e| ClientError::Config(e.to_string()))?;
                TokenEndpoint::Discover {
                    issuer: iss,
                    found: Mutex::new(None),
                }
            }
            (None, None) => {
                return Err(ClientError::Config(
                    "a token_url or an issuer is required".into(),
                ));
            }
        };
        Ok(TokenProvider {
            inner: Arc::new(Inner {
                client_id: self.client_id,
                credential: self.credential,
                assertion_audience: self.assertion_audience,
                dpop: self.dpop,
                dpop_nonce: Mutex::new(None),
                token_url,
                audience: self.audience,
                scopes: self.scopes,
                auth,
                refresh_margin: self.refresh_margin,
                max_retries: self.max_retries,
                backoff: Backoff { min, max },
                default_lifetime: self.default_lifetime,
                http,
                timeout: self.timeout,
                max_bytes: 64 * 1024,
                state: Mutex::new(State {
                    cached: None,
                    failures: 0,
                    next_attempt: Instant::now(),
                    last_error: None,
                    last_refresh_after_401: None,
                }),
                flight: SingleFlight::default(),
                requests: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_schedule_is_before_expiry_and_jittered() {
        let now = Instant::now();
        let exp = now + Duration::from_secs(3600);
        let margin = Duration::from_secs(60);
        let (early, usable) = schedule(now, exp, margin, 1.0);
        let (late, _) = schedule(now, exp, margin, 0.0);
        assert_eq!(late, exp - margin);
        assert_eq!(
            early,
            exp - margin - margin,
            "jitter is capped by the margin"
        );
        assert_eq!(usable, exp - Duration::from_secs(5));
        let (mid, _) = schedule(now, exp, margin, 0.5);
        assert!(early < mid && mid < late);
        // A short-lived token: the margin shrinks to half its lifetime.
        let exp = now + Duration::from_secs(10);
        let (r, u) = schedule(now, exp, margin, 0.0);
        assert_eq!(r, exp - Duration::from_secs(5));
        assert_eq!(u, exp - Duration::from_secs(1));
    }

    /// A margin shorter than the gap kept before `exp` (0 s, or 4 s for an
    /// hour's token with no jitter) still refreshes while the token is
    /// handed out: the margin is at least twice that gap.
    #[test]
    fn a_short_margin_still_refreshes_before_the_token_is_withdrawn() {
        let now = Instant::now();
        for (lifetime, margin, gap) in [(3600, 0, 5), (3600, 4, 5), (20, 0, 2), (20, 1, 2)] {
            let exp = now + Duration::from_secs(lifetime);
            for r in [0.0, 0.5, 1.0] {
                let (refresh, usable) = schedule(now, exp, Duration::from_secs(margin), r);
                assert_eq!(usable, exp - Duration::from_secs(gap));
                assert!(
                    refresh <= exp - Duration::from_secs(2 * gap),
                    "{lifetime} s, margin {margin} s, r {r}"
                );
                assert!(refresh > now);
            }
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = ClientSecret::new("hunter2");
        assert_eq!(format!("{s:?}"), "ClientSecret(***)");
    }
}
