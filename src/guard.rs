//! Per-route guards: required scopes and tenant isolation.
//!
//! Guards run after [`M2mAuthLayer`](crate::M2mAuthLayer) and read the
//! [`Principal`] it inserted. Put them on `Router::route_layer` so an
//! unknown path stays 404. They answer synchronously: no boxing, no await.

use http::header::HeaderName;
use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use crate::context::{authenticated, render};
use crate::principal::Principal;
use crate::response::{AuthError, AuthErrorKind};

mod sealed {
    pub trait Sealed {}
}

/// A synchronous check of the verified principal against the request.
/// Implemented by [`RequireScope`] and [`RequireTenant`].
pub trait Check: sealed::Sealed + Clone + Send + Sync + 'static {
    #[doc(hidden)]
    fn check(&self, parts: &mut Parts, principal: &Principal) -> Result<(), AuthErrorKind>;
}

/// Require scopes: all of a list, or any of it. A layer for `route_layer`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{Router, body::Body, http::Request, routing::{get, post}};
/// use m2m_guard::{M2mAuthLayer, RequireScope, test_util::TestIssuer};
/// use tower::ServiceExt as _;
///
/// let issuer = TestIssuer::start().await;
/// let app: Router = Router::new()
///     // `MethodRouter::route_layer`: each guard wraps its own handler only
///     // (`Router::route_layer` would wrap every route added before it).
///     .route("/flags", post(|| async { "created" }).route_layer(RequireScope::all(["write:flags"])))
///     .route(
///         "/reports",
///         get(|| async { "report" }).route_layer(RequireScope::any(["read:reports", "admin"])),
///     )
///     .route_layer(M2mAuthLayer::new(issuer.verifier().await));
///
/// let status = |method: &str, path: &str, token: String| {
///     let req = Request::builder()
///         .method(method)
///         .uri(path)
///         .header("authorization", format!("Bearer {token}"))
///         .body(Body::empty())
///         .unwrap();
///     let app = app.clone();
///     async move { app.oneshot(req).await.unwrap().status().as_u16() }
/// };
/// let writer = issuer.token().scopes(["write:flags"]).sign();
/// assert_eq!(status("POST", "/flags", writer.clone()).await, 200);
/// assert_eq!(status("GET", "/reports", writer).await, 403);
/// assert_eq!(status("GET", "/reports", issuer.token().scopes(["admin"]).sign()).await, 200);
/// # }
/// ```
///
/// A token without them gets 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`.
#[derive(Debug, Clone)]
pub struct RequireScope {
    scopes: Arc<[String]>,
    any: bool,
    required: Arc<str>,
}

impl RequireScope {
    /// Require every one of `scopes`.
    ///
    /// # Panics
    /// If `scopes` is empty (that would let every token through), or a
    /// scope is empty or contains whitespace: a route definition mistake,
    /// caught when the router is built.
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(scopes, false)
    }

    /// Require at least one of `scopes`.
    ///
    /// # Panics
    /// If `scopes` is empty (that would refuse every token), or a scope is
    /// empty or contains whitespace.
    pub fn any<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(scopes, true)
    }

    fn new<I, S>(scopes: I, any: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        let name = if any {
            "RequireScope::any"
        } else {
            "RequireScope::all"
        };
        assert!(
            !scopes.is_empty(),
            "m2m-guard: {name} needs at least one scope"
        );
        for scope in &scopes {
            assert!(
                is_scope_token(scope),
                "m2m-guard: {name}: {scope:?} is not a scope (empty, whitespace or a non-printable character)"
            );
        }
        let required = scopes.join(" ").into();
        RequireScope {
            scopes: scopes.into(),
            any,
            required,
        }
    }

    /// `true` if `principal` meets the requirement.
    pub fn is_met_by(&self, principal: &Principal) -> bool {
        let mut wanted = self.scopes.iter().map(String::as_str);
        if self.any {
            principal.scopes().contains_any(wanted)
        } else {
            principal.scopes().contains_all(&mut wanted)
        }
    }
}

impl sealed::Sealed for RequireScope {}

impl Check for RequireScope {
    fn check(&self, _parts: &mut Parts, principal: &Principal) -> Result<(), AuthErrorKind> {
        if self.is_met_by(principal) {
            Ok(())
        } else {
            Err(AuthErrorKind::InsufficientScope {
                required: self.required.clone(),
            })
        }
    }
}

/// RFC 6749 §3.3 scope-token: one or more of %x21 / %x23-5B / %x5D-7E.
pub(crate) const fn is_scope_token(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !matches!(b[i], 0x21 | 0x23..=0x5B | 0x5D..=0x7E) {
            return false;
        }
        i += 1;
    }
    true
}

#[derive(Debug, Clone)]
enum TenantSource {
    #[cfg(feature = "axum")]
    PathParam(Arc<str>),
    Header(HeaderName),
}

/// Tenant isolation: the organization named by the request (a path
/// parameter or a header) must be the token's organization.
///
/// A token of another organization gets 403. A global (unscoped) app's token
/// gets 403 too, unless the guard opts in with
/// [`RequireTenant::allow_global_with_scope`].
///
/// ```
/// use axum::{Router, routing::get};
/// use m2m_guard::{RequireScope, RequireTenant};
///
/// let app: Router = Router::new()
///     .route("/orgs/{org}/users", get(|| async { "users" }))
///     .route_layer(RequireTenant::path_param("org").allow_global_with_scope("admin:orgs"))
///     .route_layer(RequireScope::all(["read:users"]));
/// ```
#[derive(Debug, Clone)]
pub struct RequireTenant {
    source: TenantSource,
    global_scope: Option<Arc<str>>,
}

impl RequireTenant {
    /// The organization is the axum path parameter `name` (e.g. `org` in
    /// `/orgs/{org}/users`). Use with `route_layer`.
    #[cfg(feature = "axum")]
    pub fn path_param(name: impl Into<String>) -> Self {
        RequireTenant {
            source: TenantSource::PathParam(name.into().into()),
            global_scope: None,
        }
    }

    /// The organization is the value of header `name`; a request without
    /// it (or with two) gets 400.
    pub fn header(name: HeaderName) -> Self {
        RequireTenant {
            source: TenantSource::Header(name),
            global_scope: None,
        }
    }

    /// Let a global token (no tenant claim) through when it has `scope`,
    /// e.g. an admin automation. Org-scoped tokens stay bound to their org.
    pub fn allow_global_with_scope(mut self, scope: impl Into<String>) -> Self {
        self.global_scope = Some(scope.into().into());
        self
    }

    fn requested(&self, parts: &mut Parts) -> Result<String, AuthErrorKind> {
        match &self.source {
            #[cfg(feature = "axum")]
            TenantSource::PathParam(name) => {
                use axum::extract::rejection::RawPathParamsRejection;
                use axum::extract::{FromRequestParts, RawPathParams};
                use futures_util::FutureExt as _;
                // RawPathParams reads an extension the router set: it is ready at once.
                let params = match RawPathParams::from_request_parts(parts, &()).now_or_never() {
                    Some(Ok(params)) => params,
                    // The client's path does not decode (e.g. `%FF`): its
                    // mistake, a 400, never a 500 that pages an operator.
                    Some(Err(RawPathParamsRejection::InvalidUtf8InPathParam(_))) => {
                        return Err(AuthErrorKind::InvalidRequest(
                            "a path parameter is not valid percent-encoded UTF-8",
                        ));
                    }
                    _ => {
                        return Err(AuthErrorKind::Misconfigured(
                            "m2m-guard: RequireTenant::path_param needs an axum route with path parameters; use route_layer",
                        ));
                    }
                };
                params
                    .iter()
                    .find(|(k, _)| *k == &**name)
                    .map(|(_, v)| v.to_owned())
                    .ok_or(AuthErrorKind::Misconfigured(
                        "m2m-guard: RequireTenant::path_param names a parameter the route does not have",
                    ))
            }
            TenantSource::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => v
                        .to_str()
                        .ok()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .ok_or(AuthErrorKind::InvalidRequest("invalid organization header")),
                    (None, _) => Err(AuthErrorKind::InvalidRequest("missing organization header")),
                    (Some(_), Some(_)) => Err(AuthErrorKind::InvalidRequest(
                        "more than one organization header",
                    )),
                }
            }
        }
    }

    /// The tenant check proper, on an already-known requested organization.
    pub(crate) fn allows(&self, principal: &Principal, requested: &str) -> bool {
        match principal.tenant() {
            Some(t) => t == requested,
            None => self
                .global_scope
                .as_deref()
                .is_some_and(|s| principal.has_scope(s)),
        }
    }
}

impl sealed::Sealed for RequireTenant {}

impl Check for RequireTenant {
    fn check(&self, parts: &mut Parts, principal: &Principal) -> Result<(), AuthErrorKind> {
        let requested = self.requested(parts)?;
        if self.allows(principal, &requested) {
            Ok(())
        } else {
            Err(AuthErrorKind::WrongTenant)
        }
    }
}

impl<S> Layer<S> for RequireScope {
    type Service = Guarded<S, RequireScope>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            check: self.clone(),
        }
    }
}

impl<S> Layer<S> for RequireTenant {
    type Service = Guarded<S, RequireTenant>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            check: self.clone(),
        }
    }
}

/// The service built by [`RequireScope`] and [`RequireTenant`].
#[derive(Debug, Clone)]
pub struct Guarded<S, C> {
    inner: S,
    check: C,
}

impl<S, C> Guarded<S, C> {
    crate::inner_service_accessors!();
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Check,
    ResBody: Default + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let outcome = authenticated(&parts.extensions).and_then(|(principal, challenge)| {
            self.check
                .check(&mut parts, &principal)
                .map_err(|kind| AuthError::new(kind, challenge))
        });
        let kind = match outcome {
            Ok(()) => GuardKind::Inner {
                fut: self.inner.call(Request::from_parts(parts, body)),
            },
            Err(error) => GuardKind::Ready {
                resp: Some(render(&parts.extensions, error)),
            },
        };
        GuardFuture { kind }
    }
}

pin_project! {
    /// Response future of [`Guarded`].
    pub struct GuardFuture<F, B> {
        #[pin]
        kind: GuardKind<F, B>,
    }
}

pin_project! {
    #[project = GuardProj]
    enum GuardKind<F, B> {
        Inner { #[pin] fut: F },
        Ready { resp: Option<Response<B>> },
    }
}

impl<F, B> std::fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            GuardKind::Inner { .. } => "calling",
            GuardKind::Ready { .. } => "rejected",
        };
        f.debug_struct("GuardFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            GuardProj::Inner { fut } => fut.poll(cx),
            GuardProj::Ready { resp } => Poll::Ready(Ok(resp
                .take()
                .expect("GuardFuture polled after completion"))),
        }
    }
}
