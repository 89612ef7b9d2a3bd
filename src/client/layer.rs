//! A tower layer for outgoing requests: `Authorization: Bearer` from a
//! [`TokenProvider`], and one retry with a fresh token on 401.

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use super::provider::{AccessToken, TokenProvider};

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

/// Adds `Authorization: Bearer <token>` from a [`TokenProvider`] to every
/// request; on a 401 it invalidates the token, gets a fresh one and retries
/// once (when the request can be copied).
#[derive(Debug, Clone)]
pub struct BearerTokenLayer {
    provider: TokenProvider,
}

impl BearerTokenLayer {
    /// Authorize requests with tokens from `provider`.
    pub fn new(provider: TokenProvider) -> Self {
        BearerTokenLayer { provider }
    }
}

impl<S> Layer<S> for BearerTokenLayer {
    type Service = BearerToken<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerToken {
            inner,
            provider: self.provider.clone(),
        }
    }
}

/// The service built by [`BearerTokenLayer`].
#[derive(Debug, Clone)]
pub struct BearerToken<S> {
    inner: S,
    provider: TokenProvider,
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
        Box::pin(async move {
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
            // one fresh token, one retry.
            tracing::debug!(target: "m2m_guard::client", "401 from the API: retrying once with a fresh token");
            provider.invalidate(&token);
            let fresh = provider.token().await?;
            again.set_bearer(bearer(&fresh)?);
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            inner.call(again).await.map_err(Into::into)
        })
    }
}
