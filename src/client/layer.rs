//! A tower layer for outgoing requests: `Authorization: Bearer` from a
//! [`TokenProvider`], only to the API's own origins, and one retry with a
//! fresh token on 401.

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use super::token_provider::{AccessToken, ClientError, TokenProvider};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod sealed {
    pub trait Sealed {}
}

/// A request type [`BearerToken`] can authorize and, for the 401 retry, copy:
/// `reqwest::Request` (when its body can be cloned) and `http::Request<B>`
/// with `B: Clone` (e.g. `Full<Bytes>`, `String`).
pub trait OutgoingRequest: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn set_bearer(&mut self, value: HeaderValue);
    /// `scheme://host[:port]` of the target, if the request names one.
    #[doc(hidden)]
    fn origin(&self) -> Option<String>;
    #[doc(hidden)]
    fn try_copy(&self) -> Option<Self>;
}

/// A response type whose status [`BearerToken`] can read.
pub trait OutgoingResponse: sealed::Sealed {
    #[doc(hidden)]
    fn status_code(&self) -> StatusCode;
}

impl<B: Clone> sealed::Sealed for http::Request<B> {}
impl<B: Clone> OutgoingRequest for http::Request<B> {
    fn set_bearer(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn origin(&self) -> Option<String> {
        let uri = self.uri();
        // A relative URI names no host: the token's destination is unknown.
        uri.scheme()?;
        uri.authority()?;
        origin_of(&uri.to_string())
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
    fn set_bearer(&mut self, value: HeaderValue) {
        self.headers_mut().insert(AUTHORIZATION, value);
    }
    fn origin(&self) -> Option<String> {
        let origin = self.url().origin();
        origin.is_tuple().then(|| origin.ascii_serialization())
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
}

impl sealed::Sealed for reqwest::Response {}
impl OutgoingResponse for reqwest::Response {
    fn status_code(&self) -> StatusCode {
        self.status()
    }
}

/// `scheme://host[:port]` (default port omitted) of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// Adds `Authorization: Bearer <token>` from a [`TokenProvider`] to requests
/// for the API's own origins; on a 401 it retries once with a fresh token
/// (when the request can be copied).
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
#[derive(Debug, Clone)]
pub struct BearerTokenLayer {
    provider: TokenProvider,
    origins: Arc<[String]>,
}

impl BearerTokenLayer {
    /// Authorize requests with tokens from `provider`, for the origin of its
    /// audience or resource (when that is an URL).
    pub fn new(provider: TokenProvider) -> Self {
        let origins = provider.audience_origin().into_iter().collect();
        BearerTokenLayer { provider, origins }
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
        }
    }
}

/// The service built by [`BearerTokenLayer`].
#[derive(Debug, Clone)]
pub struct BearerToken<S> {
    inner: S,
    provider: TokenProvider,
    origins: Arc<[String]>,
}

impl<S> BearerToken<S> {
    crate::inner_service_accessors!();
}

fn bearer(token: &AccessToken) -> Result<HeaderValue, BoxError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.secret()))
        .map_err(|_| BoxError::from("the access token is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
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
        let provider = self.provider.clone();
        let allowed = req.origin().is_some_and(|o| self.origins.contains(&o));
        let target = req.origin();
        Box::pin(async move {
            if !allowed {
                return Err(BoxError::from(format!(
                    "m2m-guard: not sending the access token to {}: not an allowed origin of this BearerTokenLayer (see BearerTokenLayer::allow_origin)",
                    target
                        .as_deref()
                        .unwrap_or("a request without an absolute URL")
                )));
            }
            let token = provider.token().await?;
            req.set_bearer(bearer(&token)?);
            let retry = req.try_copy();
            let resp = inner.call(req).await.map_err(Into::into)?;
            if resp.status_code() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let Some(mut again) = retry else {
                return Ok(resp);
            };
            // The API refused the token (revoked, rotated key, clock skew):
            // one fresh token, one retry; at most one refresh per token. If
            // none can be had, the API's own 401 is the answer.
            let Some(fresh) = provider.token_after_401(&token).await else {
                return Ok(resp);
            };
            tracing::debug!(target: "m2m_guard::client", "401 from the API: retrying once with a fresh token");
            again.set_bearer(bearer(&fresh)?);
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            inner.call(again).await.map_err(Into::into)
        })
    }
}
