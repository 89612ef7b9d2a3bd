//! A tower layer for outgoing requests: `Authorization: Bearer` (or `DPoP`
//! with a fresh proof) from a [`TokenProvider`], only to the API's own
//! origins, and one retry with a fresh token on 401.

use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use super::token_provider::{AccessToken, ClientError, TokenProvider, valid_nonce};

static DPOP: HeaderName = HeaderName::from_static("dpop");
static DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod sealed {
    pub trait Sealed {}
}

/// A request type [`BearerToken`] can authorize and, for the 401 retry, copy:
/// `reqwest::Request` (when its body can be cloned) and `http::Request<B>`
/// with `B: Clone` (e.g. `Full<Bytes>`, `String`).
pub trait OutgoingRequest: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn set_header(&mut self, name: &HeaderName, value: HeaderValue);
    /// The absolute http(s) URL of the target, if the request names one.
    #[doc(hidden)]
    fn target(&self) -> Option<reqwest::Url>;
    #[doc(hidden)]
    fn method_name(&self) -> &str;
    #[doc(hidden)]
    fn try_copy(&self) -> Option<Self>;
}

/// A response type whose status and headers [`BearerToken`] can read.
pub trait OutgoingResponse: sealed::Sealed {
    #[doc(hidden)]
    fn status_code(&self) -> StatusCode;
    #[doc(hidden)]
    fn header_map(&self) -> &http::HeaderMap;
    /// Where the answer came from, when a redirect may have moved it.
    #[doc(hidden)]
    fn final_url(&self) -> Option<&reqwest::Url>;
}

impl<B: Clone> sealed::Sealed for http::Request<B> {}
impl<B: Clone> OutgoingRequest for http::Request<B> {
    fn set_header(&mut self, name: &HeaderName, value: HeaderValue) {
        self.headers_mut().insert(name.clone(), value);
    }
    fn target(&self) -> Option<reqwest::Url> {
        let uri = self.uri();
        // A relative URI names no host: the token's destination is unknown.
        uri.scheme()?;
        uri.authority()?;
        http_url(&uri.to_string())
    }
    fn method_name(&self) -> &str {
        self.method().as_str()
    }
    fn try_copy(&self) -> Option<Self> {
        let mut b = http::Request::builder()
            .method(self.method().clone())
            .uri(self.uri().clone())
            .version(self.version());
        *b.headers_mut()? = self.headers().clone();
        let mut req = b.body(self.body().clone()).ok()?;
        *req.extensions_mut() = self.extensions().clone();
        Some(req)
    }
}

impl sealed::Sealed for reqwest::Request {}
impl OutgoingRequest for reqwest::Request {
    fn set_header(&mut self, name: &HeaderName, value: HeaderValue) {
        self.headers_mut().insert(name.clone(), value);
    }
    fn target(&self) -> Option<reqwest::Url> {
        matches!(self.url().scheme(), "http" | "https").then(|| self.url().clone())
    }
    fn method_name(&self) -> &str {
        self.method().as_str()
    }
    fn try_copy(&self) -> Option<Self> {
        self.try_clone()
    }
}

impl<B> sealed::Sealed for http::Response<B> {}
impl<B> OutgoingResponse for http::Response<B> {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn header_map(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn final_url(&self) -> Option<&reqwest::Url> {
        None
    }
}

impl sealed::Sealed for reqwest::Response {}
impl OutgoingResponse for reqwest::Response {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
    fn header_map(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn final_url(&self) -> Option<&reqwest::Url> {
        Some(self.url())
    }
}

/// An absolute http(s) URL.
fn http_url(url: &str) -> Option<reqwest::Url> {
    let url = reqwest::Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// `scheme://host[:port]` (default port omitted).
fn origin_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// Adds `Authorization: Bearer <token>` (or `DPoP <token>` and a fresh
/// proof, for DPoP-bound tokens) from a [`TokenProvider`] to requests for
/// the API's own origins; on a 401 it retries once with a fresh token (when
/// the request can be copied).
///
/// The token goes only to allowed origins (`scheme://host[:port]`): by
/// default the origin of the provider's `audience` / `resource` when that is
/// an URL, plus any added with [`BearerTokenLayer::allow_origin`]. A request
/// for any other origin fails with an error and carries no token, so a
/// redirect, a mistyped URL or a shared client never hands it to another host.
///
/// A 401 refreshes the token at most once per token, and at most once per
/// 10 s: an API that refuses every token does not turn each request into a
/// token request.
///
/// With a DPoP provider ([`TokenProviderBuilder::dpop`](super::TokenProviderBuilder::dpop))
/// a request carries `Authorization: DPoP <token>` and a `DPoP` proof made
/// for it (method, URL without query, the token's hash, the API's latest
/// `DPoP-Nonce`). A 401 `use_dpop_nonce` with a new nonce is retried once
/// with the same token and a proof carrying that nonce; a 401
/// `invalid_dpop_proof` is no reason for a new token and is returned as it
/// is. Give it a client that does not follow redirects (as the token
/// endpoint's client never does): an answer from another origin is returned
/// as it is, its nonce and 401 ignored.
#[derive(Debug, Clone)]
pub struct BearerTokenLayer {
    provider: TokenProvider,
    origins: Arc<[String]>,
    nonces: Nonces,
}

/// The latest `DPoP-Nonce` of each allowed origin, shared by the services
/// of one layer (one entry per allowed origin at most).
type Nonces = Arc<Mutex<HashMap<String, String>>>;

impl BearerTokenLayer {
    /// Authorize requests with tokens from `provider`, for the origin of its
    /// audience or resource (when that is an URL).
    pub fn new(provider: TokenProvider) -> Self {
        let origins = provider.audience_origin().into_iter().collect();
        BearerTokenLayer {
            provider,
            origins,
            nonces: Nonces::default(),
        }
    }

    /// Also send the token to `origin` (e.g. `https://api.acme.com`; a path
    /// is ignored). https only, except for loopback hosts.
    ///
    /// # Errors
    /// [`ClientError::Config`] when `origin` is not an https URL (or http to
    /// a loopback host).
    pub fn allow_origin(mut self, origin: &str) -> Result<Self, ClientError> {
        let url = crate::fetch::parse_url("origin", origin)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let origin = url.origin().ascii_serialization();
        if !self.origins.contains(&origin) {
            let mut all = self.origins.to_vec();
            all.push(origin);
            self.origins = all.into();
        }
        Ok(self)
    }
}

impl<S> Layer<S> for BearerTokenLayer {
    type Service = BearerToken<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerToken {
            inner,
            provider: self.provider.clone(),
            origins: self.origins.clone(),
            nonces: self.nonces.clone(),
        }
    }
}

/// The service built by [`BearerTokenLayer`].
#[derive(Debug, Clone)]
pub struct BearerToken<S> {
    inner: S,
    provider: TokenProvider,
    origins: Arc<[String]>,
    nonces: Nonces,
}

impl<S> BearerToken<S> {
    crate::inner_service_accessors!();
}

/// Everything needed to authorize one request and its retries.
struct Authorizer {
    provider: TokenProvider,
    nonces: Nonces,
    origin: String,
    url: reqwest::Url,
}

impl Authorizer {
    fn nonce(&self) -> Option<String> {
        let nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.get(&self.origin).cloned()
    }

    /// `true` when `resp` came from the origin the request was for. A
    /// client that follows redirects may hand back another server's answer:
    /// its nonce and its 401 say nothing about this origin.
    fn same_origin(&self, resp: &impl OutgoingResponse) -> bool {
        resp.final_url().is_none_or(|u| origin_of(u) == self.origin)
    }

    /// Remember the API's `DPoP-Nonce`, if it sent a valid one, and return it.
    fn note_nonce(&self, resp: &impl OutgoingResponse) -> Option<String> {
        let nonce = resp.header_map().get(&DPOP_NONCE).and_then(valid_nonce)?;
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.insert(self.origin.clone(), nonce.clone());
        Some(nonce)
    }

    /// `Authorization` on `req`, and for a DPoP-bound token a fresh `DPoP`
    /// proof carrying `nonce`.
    fn authorize(
        &self,
        req: &mut impl OutgoingRequest,
        token: &AccessToken,
        nonce: Option<&str>,
    ) -> Result<(), BoxError> {
        let mut v = HeaderValue::from_str(&format!("{} {}", token.token_type(), token.secret()))
            .map_err(|_| BoxError::from("the access token is not a valid header value"))?;
        v.set_sensitive(true);
        req.set_header(&AUTHORIZATION, v);
        if let (Some(key), true) = (self.provider.dpop_key(), token.is_dpop_bound()) {
            let proof =
                key.dpop_proof(req.method_name(), &self.url, Some(token.secret()), nonce)?;
            let mut v = HeaderValue::from_str(&proof)
                .map_err(|_| BoxError::from("the DPoP proof is not a valid header value"))?;
            v.set_sensitive(true);
            req.set_header(&DPOP, v);
        }
        Ok(())
    }

    /// Send `req` after waiting for `inner` to be ready, noting the nonce.
    async fn send<S, Req>(&self, inner: &mut S, req: Req) -> Result<S::Response, BoxError>
    where
        S: Service<Req>,
        S::Response: OutgoingResponse,
        S::Error: Into<BoxError>,
    {
        std::future::poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        let resp = inner.call(req).await.map_err(Into::into)?;
        if self.same_origin(&resp) {
            self.note_nonce(&resp);
        }
        Ok(resp)
    }
}

/// The `error` of the `DPoP` challenge in a 401 (RFC 9449 §7.1, §9), read
/// as RFC 9110 §11.6.1 writes auth-params: quoted or not, among other
/// challenges.
fn dpop_error(resp: &impl OutgoingResponse) -> Option<String> {
    let mut in_dpop = false;
    for value in resp.header_map().get_all(WWW_AUTHENTICATE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in split_outside_quotes(value) {
            let item = item.trim();
            // `Scheme param=value` starts a challenge; `param=value` goes on.
            let param = match item.split_once(' ') {
                Some((scheme, rest)) if !scheme.contains('=') => {
                    in_dpop = scheme.eq_ignore_ascii_case("DPoP");
                    rest.trim()
                }
                _ if !item.contains('=') => {
                    in_dpop = item.eq_ignore_ascii_case("DPoP");
                    continue;
                }
                _ => item,
            };
            if let (true, Some((name, v))) = (in_dpop, param.split_once('='))
                && name.trim().eq_ignore_ascii_case("error")
            {
                return Some(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    None
}

/// `value` split at the commas that are not inside a quoted string.
fn split_outside_quotes(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

impl<S, Req> Service<Req> for BearerToken<S>
where
    Req: OutgoingRequest + Send + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Response: OutgoingResponse + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let url = req.target();
        let origin = url.as_ref().map(origin_of);
        let allowed = origin.as_ref().is_some_and(|o| self.origins.contains(o));
        let auth = match (url, origin) {
            (Some(url), Some(origin)) if allowed => Authorizer {
                provider: self.provider.clone(),
                nonces: self.nonces.clone(),
                origin,
                url,
            },
            (_, origin) => {
                let target = origin.unwrap_or_else(|| "a request without an absolute URL".into());
                return Box::pin(std::future::ready(Err(BoxError::from(format!(
                    "m2m-guard: not sending the access token to {target}: not an allowed origin of this BearerTokenLayer (see BearerTokenLayer::allow_origin)"
                )))));
            }
        };
        Box::pin(async move {
            let token = auth.provider.token().await?;
            let used = auth.nonce();
            auth.authorize(&mut req, &token, used.as_deref())?;
            let mut retry = req.try_copy();
            let mut resp = auth.send(&mut inner, req).await?;
            if resp.status_code() != StatusCode::UNAUTHORIZED || !auth.same_origin(&resp) {
                return Ok(resp);
            }
            let error = token.is_dpop_bound().then(|| dpop_error(&resp)).flatten();
            // RFC 9449 §9: the API wants a nonce this proof did not carry.
            // The same token, a fresh proof with that very nonce, once.
            let given = resp.header_map().get(&DPOP_NONCE).and_then(valid_nonce);
            if error.as_deref() == Some("use_dpop_nonce") && given.is_some() && given != used {
                let Some(mut again) = retry else {
                    return Ok(resp);
                };
                retry = again.try_copy();
                auth.authorize(&mut again, &token, given.as_deref())?;
                resp = auth.send(&mut inner, again).await?;
                if resp.status_code() != StatusCode::UNAUTHORIZED || !auth.same_origin(&resp) {
                    return Ok(resp);
                }
            }
            // A refused proof (or nonce) is not the token's fault: a fresh
            // token would not help.
            let error = token.is_dpop_bound().then(|| dpop_error(&resp)).flatten();
            if matches!(
                error.as_deref(),
                Some("use_dpop_nonce" | "invalid_dpop_proof")
            ) {
                return Ok(resp);
            }
            let Some(mut again) = retry else {
                return Ok(resp);
            };
            // The API refused the token (revoked, rotated key, clock skew):
            // one fresh token, one retry; at most one refresh per token. If
            // none can be had, the API's own 401 is the answer.
            let Some(fresh) = auth.provider.token_after_401(&token).await else {
                return Ok(resp);
            };
            tracing::debug!(target: "m2m_guard::client", "401 from the API: retrying once with a fresh token");
            auth.authorize(&mut again, &fresh, auth.nonce().as_deref())?;
            auth.send(&mut inner, again).await
        })
    }
}
