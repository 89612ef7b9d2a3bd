//! Per-route guards: required scopes, tenant isolation, and rules of your
//! own ([`Rule`], refusing with a [`Denial`]).
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
/// Implemented by [`RequireScope`], [`RequireTenant`] and [`Rule`]; write
/// your own checks as a [`Rule`].
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
        assert_scopes(name, &scopes);
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

/// Panic (a wiring mistake, found when the routes are built) unless every
/// one of `scopes` is an RFC 6749 scope token; `what` names the setting.
pub(crate) fn assert_scopes(what: &str, scopes: &[String]) {
    for scope in scopes {
        assert!(
            is_scope_token(scope),
            "m2m-guard: {what}: {scope:?} is not a scope (empty, whitespace or a non-printable character)"
        );
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

/// Why a [`Rule`] refuses a request: one of RFC 6750's answers, rendered
/// like the built-in guards' (the layer's realm, `resource_metadata` and
/// [`OnRejection`](crate::OnRejection) handler).
///
/// Reason codes and descriptions are `&'static str`: a bounded set for
/// logs and metrics, never text from the request. A description outside
/// RFC 6750's `error_description` characters (printable ASCII without `"`
/// and `\`; `%` is refused too, for gRPC's `grpc-message`) or a reason code
/// outside `[a-z0-9_]` is replaced by a generic one, never sent as is.
#[derive(Debug, Clone)]
pub struct Denial(AuthErrorKind);

impl Denial {
    /// 403 `insufficient_scope` with `scope="..."` naming the scopes that
    /// would be enough (RFC 6750 §3). Entries that are not RFC 6749 scope
    /// tokens are left out; with none left, the `scope` attribute is too.
    pub fn insufficient_scope<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let scopes: Vec<String> = scopes
            .into_iter()
            .filter(|s| is_scope_token(s.as_ref()))
            .map(|s| s.as_ref().to_owned())
            .collect();
        if scopes.is_empty() {
            return Denial::forbidden("insufficient_scope", "the token lacks a required scope");
        }
        Denial(AuthErrorKind::InsufficientScope {
            required: scopes.join(" ").into(),
        })
    }

    /// 403 `insufficient_scope` without scopes to name: the token is valid
    /// but not allowed here. `reason` is a stable code for logs and your
    /// rejection handler (e.g. `global_only`), `description` is shown to the
    /// client.
    pub fn forbidden(reason: &'static str, description: &'static str) -> Self {
        let reason = if !reason.is_empty()
            && reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            reason
        } else {
            "forbidden"
        };
        Denial(AuthErrorKind::Forbidden {
            reason,
            description: safe_description(description, "the token is not allowed here"),
        })
    }

    /// 403 for a token of another organization (reason code `wrong_tenant`),
    /// as [`RequireTenant`] answers.
    pub fn wrong_tenant() -> Self {
        Denial(AuthErrorKind::WrongTenant)
    }

    /// 400 `invalid_request`: the request, not the token, is at fault.
    pub fn invalid_request(description: &'static str) -> Self {
        Denial(AuthErrorKind::InvalidRequest(safe_description(
            description,
            "the request is malformed",
        )))
    }

    /// The response the auth layer in front of this request would give for
    /// this denial, for a handler or middleware of your own: read from the
    /// request's extensions (its realm, `resource_metadata` and rejection
    /// handler). Without an auth layer in front, the status and headers
    /// with an empty body.
    pub fn into_response<B: Default + 'static>(self, extensions: &http::Extensions) -> Response<B> {
        let challenge = crate::context::challenge(extensions).unwrap_or_default();
        render(extensions, AuthError::new(self.0, challenge))
    }
}

/// `text` if every character may appear in an RFC 6750 `error_description`
/// and a gRPC `grpc-message` as it is; `fallback` otherwise.
fn safe_description(text: &'static str, fallback: &'static str) -> &'static str {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| matches!(b, 0x20..=0x7E) && !matches!(b, b'"' | b'\\' | b'%'));
    if ok { text } else { fallback }
}

/// A rule of your own over the verified [`Principal`] (and the request),
/// as a layer for `route_layer`; refusals are rendered like the built-in
/// guards'. Rules combine with [`Rule::all`] and [`Rule::any`], and
/// [`RequireScope`] / [`RequireTenant`] convert into rules.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{Router, body::Body, http::Request, routing::get};
/// use m2m_guard::{Denial, M2mAuthLayer, RequireScope, Rule, test_util::TestIssuer};
/// use tower::ServiceExt as _;
///
/// let issuer = TestIssuer::start().await;
/// let app: Router = Router::new()
///     // Only global apps (tokens without an organization).
///     .route("/admin/stats", get(|| async { "stats" }).route_layer(Rule::global_only()))
///     // A claim must have a value.
///     .route("/ci", get(|| async { "ci" }).route_layer(Rule::claim_equals("env", "ci")))
///     // Any of these rules.
///     .route(
///         "/reports",
///         get(|| async { "reports" }).route_layer(Rule::any([
///             Rule::global_only(),
///             RequireScope::all(["reports:read"]).into(),
///         ])),
///     )
///     // Your own predicate, with your own answer.
///     .route(
///         "/partners",
///         get(|| async { "partners" }).route_layer(Rule::new(
///             |p| p.client_id().is_some_and(|c| c.starts_with("partner-")),
///             Denial::forbidden("not_a_partner", "only partner clients may call this"),
///         )),
///     )
///     .route_layer(M2mAuthLayer::new(issuer.verifier().await));
///
/// let status = |path: &'static str, token: String| {
///     let req = Request::get(path)
///         .header("authorization", format!("Bearer {token}"))
///         .body(Body::empty())
///         .unwrap();
///     let app = app.clone();
///     async move { app.oneshot(req).await.unwrap().status().as_u16() }
/// };
/// let global = issuer.token().sign();
/// let org = issuer.token().org("org_1").sign();
/// assert_eq!(status("/admin/stats", global.clone()).await, 200);
/// assert_eq!(status("/admin/stats", org.clone()).await, 403);
/// assert_eq!(status("/ci", issuer.token().claim("env", "ci").sign()).await, 200);
/// assert_eq!(status("/ci", global.clone()).await, 403);
/// assert_eq!(status("/reports", org.clone()).await, 403);
/// assert_eq!(status("/reports", issuer.token().org("org_1").scopes(["reports:read"]).sign()).await, 200);
/// assert_eq!(status("/partners", issuer.token().client_id("partner-7").sign()).await, 200);
/// assert_eq!(status("/partners", global).await, 403);
/// # }
/// ```
#[derive(Clone)]
pub struct Rule(RuleKind);

type RuleFn = dyn Fn(&Parts, &Principal) -> Result<(), Denial> + Send + Sync;

#[derive(Clone)]
enum RuleKind {
    Fn(Arc<RuleFn>),
    Scope(RequireScope),
    Tenant(RequireTenant),
    All(Arc<[Rule]>),
    Any(Arc<[Rule]>),
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            RuleKind::Fn(_) => f.write_str("Rule(fn)"),
            RuleKind::Scope(s) => f.debug_tuple("Rule").field(s).finish(),
            RuleKind::Tenant(t) => f.debug_tuple("Rule").field(t).finish(),
            RuleKind::All(r) => f.debug_tuple("Rule::all").field(r).finish(),
            RuleKind::Any(r) => f.debug_tuple("Rule::any").field(r).finish(),
        }
    }
}

impl Rule {
    /// Let a token through when `predicate` holds; refuse it with `denial`
    /// otherwise.
    pub fn new<F>(predicate: F, denial: Denial) -> Self
    where
        F: Fn(&Principal) -> bool + Send + Sync + 'static,
    {
        Rule::from_fn(move |_, p| {
            if predicate(p) {
                Ok(())
            } else {
                Err(denial.clone())
            }
        })
    }

    /// The most general rule: the request's head and the principal in, a
    /// verdict out. Runs synchronously on every request of the route.
    pub fn from_fn<F>(check: F) -> Self
    where
        F: Fn(&Parts, &Principal) -> Result<(), Denial> + Send + Sync + 'static,
    {
        Rule(RuleKind::Fn(Arc::new(check)))
    }

    /// Only global apps: tokens without an organization / tenant claim.
    /// Others get 403 with reason code `global_only`.
    pub fn global_only() -> Self {
        Rule::new(
            |p| p.tenant().is_none(),
            Denial::forbidden(
                "global_only",
                "only a token without an organization may call this",
            ),
        )
    }

    /// Only tokens of an organization / tenant (any one; to match the
    /// organization named by the request, use [`RequireTenant`]). Global
    /// tokens get 403 with reason code `tenant_only`.
    pub fn tenant_only() -> Self {
        Rule::new(
            |p| p.tenant().is_some(),
            Denial::forbidden(
                "tenant_only",
                "only a token of an organization may call this",
            ),
        )
    }

    /// Only machine clients' tokens, on an issuer that also accepts users'
    /// ([`Issuer::accept_user_tokens`](crate::Issuer::accept_user_tokens)).
    /// A user's token gets 403 with reason code `machine_only`.
    pub fn machine_only() -> Self {
        Rule::new(
            Principal::is_machine,
            Denial::forbidden(
                "machine_only",
                "only a machine client's token may call this",
            ),
        )
    }

    /// The top-level claim `name` equals `value` (as JSON: `"ci"`, `true`,
    /// `42`; numbers compare as serde_json does, so `42` is not `42.0`).
    /// Otherwise, or when the claim is absent, 403 with reason code
    /// `claim_mismatch`.
    pub fn claim_equals(name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        let (name, value) = (name.into(), value.into());
        Rule::new(move |p| p.claim(&name) == Some(&value), claim_mismatch())
    }

    /// The claim `name` includes `value`: an array with that string in it,
    /// or a space-separated string with that word (the shape of `scope`).
    /// Otherwise, or when the claim is absent, 403 with reason code
    /// `claim_mismatch`.
    ///
    /// # Panics
    /// If `value` is empty or contains a space: it could never be one word
    /// of a space-separated claim (a route definition mistake).
    pub fn claim_includes(name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        assert!(
            !value.is_empty() && !value.contains(' '),
            "m2m-guard: Rule::claim_includes: {value:?} is empty or contains a space"
        );
        Rule::new(
            move |p| match p.claim(&name) {
                Some(serde_json::Value::Array(items)) => {
                    items.iter().any(|v| v.as_str() == Some(value.as_str()))
                }
                Some(serde_json::Value::String(s)) => s.split(' ').any(|w| w == value),
                _ => false,
            },
            claim_mismatch(),
        )
    }

    /// Every one of `rules`, in order; the first refusal answers.
    ///
    /// # Panics
    /// If `rules` is empty: a route definition mistake, caught when the
    /// router is built.
    pub fn all(rules: impl IntoIterator<Item = Rule>) -> Self {
        Rule(RuleKind::All(non_empty(rules, "Rule::all")))
    }

    /// At least one of `rules`, tried in order; when none holds, the first
    /// one's refusal answers (so put the rule whose answer helps the caller
    /// most, e.g. a scope requirement, first).
    ///
    /// # Panics
    /// If `rules` is empty.
    pub fn any(rules: impl IntoIterator<Item = Rule>) -> Self {
        Rule(RuleKind::Any(non_empty(rules, "Rule::any")))
    }

    fn evaluate(&self, parts: &mut Parts, principal: &Principal) -> Result<(), AuthErrorKind> {
        match &self.0 {
            RuleKind::Fn(f) => f(parts, principal).map_err(|d| d.0),
            RuleKind::Scope(s) => s.check(parts, principal),
            RuleKind::Tenant(t) => t.check(parts, principal),
            RuleKind::All(rules) => rules.iter().try_for_each(|r| r.evaluate(parts, principal)),
            RuleKind::Any(rules) => {
                let mut first = None;
                for r in rules.iter() {
                    match r.evaluate(parts, principal) {
                        Ok(()) => return Ok(()),
                        // A wiring mistake is never hidden by another rule
                        // that happens to hold.
                        Err(e @ AuthErrorKind::Misconfigured(_)) => return Err(e),
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(first.expect("Rule::any has at least one rule"))
            }
        }
    }
}

fn claim_mismatch() -> Denial {
    Denial::forbidden(
        "claim_mismatch",
        "the token does not have a claim this route requires",
    )
}

fn non_empty(rules: impl IntoIterator<Item = Rule>, name: &str) -> Arc<[Rule]> {
    let rules: Arc<[Rule]> = rules.into_iter().collect();
    assert!(
        !rules.is_empty(),
        "m2m-guard: {name} needs at least one rule"
    );
    rules
}

impl From<RequireScope> for Rule {
    fn from(r: RequireScope) -> Self {
        Rule(RuleKind::Scope(r))
    }
}

impl From<RequireTenant> for Rule {
    fn from(r: RequireTenant) -> Self {
        Rule(RuleKind::Tenant(r))
    }
}

impl sealed::Sealed for Rule {}

impl Check for Rule {
    fn check(&self, parts: &mut Parts, principal: &Principal) -> Result<(), AuthErrorKind> {
        self.evaluate(parts, principal)
    }
}

/// Each guard is a layer wrapping its route in [`Guarded`].
macro_rules! guard_layers {
    ($($guard:ty),+) => {$(
        impl<S> Layer<S> for $guard {
            type Service = Guarded<S, $guard>;
            fn layer(&self, inner: S) -> Self::Service {
                Guarded {
                    inner,
                    check: self.clone(),
                }
            }
        }
    )+};
}

guard_layers!(RequireScope, RequireTenant, Rule);

/// The service built by [`RequireScope`], [`RequireTenant`] and [`Rule`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn rules_show_what_they_check() {
        let scope = Rule::from(RequireScope::all(["invoices:read"]));
        let shown = format!("{scope:?}");
        assert!(
            shown.starts_with("Rule(") && shown.contains("invoices:read"),
            "{shown}"
        );
        let tenant = format!("{:?}", Rule::from(RequireTenant::path_param("org")));
        assert!(
            tenant.starts_with("Rule(") && tenant.contains("org"),
            "{tenant}"
        );
        assert_eq!(format!("{:?}", Rule::machine_only()), "Rule(fn)");
        let all = format!("{:?}", Rule::all([Rule::machine_only(), scope.clone()]));
        assert!(
            all.starts_with("Rule::all(") && all.contains("invoices:read"),
            "{all}"
        );
        let any = format!("{:?}", Rule::any([scope]));
        assert!(
            any.starts_with("Rule::any(") && any.contains("invoices:read"),
            "{any}"
        );
    }

    /// A route that is ready only when told.
    #[derive(Clone)]
    struct Gate(bool);

    impl Service<Request<()>> for Gate {
        type Response = Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response<String>, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new("handler".into())))
        }
    }

    #[test]
    fn a_guard_is_ready_when_its_route_is_and_shows_its_state() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut busy = RequireScope::all(["a"]).layer(Gate(false));
        assert!(
            busy.poll_ready(&mut cx).is_pending(),
            "backpressure passes through"
        );
        let mut ready = RequireScope::all(["a"]).layer(Gate(true));
        assert!(ready.poll_ready(&mut cx).is_ready());
        // No auth layer in front: refused without calling the route.
        let fut = ready.call(Request::new(()));
        assert_eq!(
            format!("{fut:?}"),
            "GuardFuture { state: \"rejected\", .. }"
        );
        let mut fut = std::pin::pin!(fut);
        let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
            panic!("a refusal is ready at once");
        };
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        // With a machine principal handed off, a machine-only route is called.
        let mut machine = Rule::machine_only().layer(Gate(true));
        let mut req = Request::new(());
        crate::context::hand_off(
            req.extensions_mut(),
            crate::context::ContextCell::default().get::<String, _>(
                &Arc::default(),
                &Arc::new(crate::response::DefaultRejection),
            ),
        );
        req.extensions_mut()
            .insert(crate::principal::tests::with_claims(r#"{"sub":"c"}"#));
        let fut = machine.call(req);
        assert_eq!(format!("{fut:?}"), "GuardFuture { state: \"calling\", .. }");
        let mut fut = std::pin::pin!(fut);
        let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
            panic!("the route answers at once");
        };
        assert_eq!(resp.into_body(), "handler");
    }
}
