//! The tower layer: bearer token in, [`Principal`] into request extensions,
//! or an RFC 6750 response out. Never an `Err`: a rejection is a response.

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

use crate::bearer::{Found, find_token};
use crate::dpop::Dpop;
use crate::metadata::ProtectedResource;
use crate::mtls::Mtls;
use crate::principal::Principal;
use crate::rejection::{Reason, Rejection};
use crate::response::{AuthError, AuthErrorKind, Challenge, DefaultRejection, OnRejection};
use crate::verifier::Verifier;

/// A tower [`Layer`] that requires a valid M2M access token.
///
/// On success the verified [`Principal`] is inserted into the request
/// extensions. On failure the inner service is not called and the response is
/// an RFC 6750 challenge (see [`AuthError`]).
///
/// # Default setup
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use m2m_guard::{Issuer, M2mAuthLayer, Principal, Preset, Verifier};
///
/// let verifier = Verifier::builder()
///     .issuer(Issuer::new("https://acme.kinde.com").audience("https://api.acme.com").preset(Preset::Kinde))
///     .build()
///     .await?;
/// let app: Router = Router::new()
///     .route("/whoami", get(|p: Principal| async move { p.client_id().unwrap_or("?").to_owned() }))
///     .route_layer(M2mAuthLayer::new(verifier));
/// # Ok(()) }
/// ```
///
/// # Customised setup
/// ```no_run
/// # async fn run(verifier: m2m_guard::Verifier) {
/// use axum::{Router, response::IntoResponse, routing::get};
/// use m2m_guard::{AuthError, M2mAuthLayer, ProtectedResource};
///
/// let resource = ProtectedResource::new("https://api.acme.com")
///     .authorization_servers(verifier.issuers())
///     .scopes_supported(["read:users", "write:flags"]);
/// let auth = M2mAuthLayer::new(verifier)
///     .realm("acme-api")
///     .protected_resource(&resource)
///     .on_rejection(|err: AuthError| {
///         // Keep the status and the challenge, use your own body.
///         let mut resp = (err.status(), format!("denied: {}", err.reason_code())).into_response();
///         if let Some(v) = err.www_authenticate() {
///             resp.headers_mut().insert("www-authenticate", v);
///         }
///         resp
///     });
/// let app: Router = Router::new()
///     .route("/flags", get(|| async { "ok" }))
///     .route_layer(auth)
///     .route_service(&resource.well_known_path(), resource.service());
/// # }
/// ```
#[derive(Clone)]
pub struct M2mAuthLayer<R = DefaultRejection> {
    verifier: Verifier,
    challenge: Arc<Challenge>,
    optional: bool,
    strip_authorization: bool,
    dpop: Option<Dpop>,
    mtls: Option<Mtls>,
    on_rejection: R,
}

impl<R> std::fmt::Debug for M2mAuthLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mAuthLayer")
            .field("verifier", &self.verifier)
            .field("challenge", &self.challenge)
            .field("optional", &self.optional)
            .field("strip_authorization", &self.strip_authorization)
            .field("on_rejection", &std::any::type_name::<R>())
            .finish()
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for M2mAuth<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("M2mAuth")
            .field("inner", &self.inner)
            .field("verifier", &self.shared.verifier)
            .field("challenge", &self.shared.challenge)
            .field("optional", &self.shared.optional)
            .field("strip_authorization", &self.shared.strip_authorization)
            .field("on_rejection", &std::any::type_name::<R>())
            .finish()
    }
}

impl M2mAuthLayer {
    /// Require a token verified by `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        M2mAuthLayer {
            verifier,
            challenge: Arc::new(Challenge::default()),
            optional: false,
            strip_authorization: false,
            dpop: None,
            mtls: None,
            on_rejection: DefaultRejection,
        }
    }
}

impl<R> M2mAuthLayer<R> {
    /// Let requests without any token through, with no [`Principal`]
    /// (`Option<Principal>` is then `None`). A token that is present but
    /// invalid is still rejected.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// The `realm` of the challenge. Defaults to `"api"`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.challenge).realm = realm.into();
        self
    }

    /// Add `resource_metadata="<url>"` (RFC 9728) to every 401 and 403 challenge.
    pub fn resource_metadata(mut self, url: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.challenge).resource_metadata = Some(url.into());
        self
    }

    /// Same as [`M2mAuthLayer::resource_metadata`] with `resource`'s
    /// metadata URL; also puts its `scopes_supported` in the `scope` of 401
    /// challenges, unless [`M2mAuthLayer::challenge_scopes`] chose them.
    pub fn protected_resource(mut self, resource: &ProtectedResource) -> Self {
        let c = Arc::make_mut(&mut self.challenge);
        if !c.scope_explicit {
            // Only scope tokens ever reach a challenge (see
            // `ProtectedResource::validate` for the full check).
            let scopes: Vec<&str> = resource
                .scopes()
                .iter()
                .map(String::as_str)
                .filter(|s| crate::guard::is_scope_token(s))
                .collect();
            c.scope = (!scopes.is_empty()).then(|| scopes.join(" "));
        }
        self.resource_metadata(resource.metadata_url())
    }

    /// The `scope` of 401 challenges: what a client should ask its issuer
    /// for (RFC 6750 §3; MCP clients request exactly these). Defaults to the
    /// [`ProtectedResource`]'s `scopes_supported`, if one is set; an empty
    /// list leaves `scope` out. A 403 `insufficient_scope` always names the
    /// scopes its route requires instead.
    ///
    /// # Panics
    /// When a scope is empty or holds a space, a `"`, a `\` or a control
    /// character (a wiring mistake, found at start).
    pub fn challenge_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        crate::guard::assert_scopes("M2mAuthLayer::challenge_scopes", &scopes);
        let c = Arc::make_mut(&mut self.challenge);
        c.scope = (!scopes.is_empty()).then(|| scopes.join(" "));
        c.scope_explicit = true;
        self
    }

    /// Remove the `Authorization` header once the token is verified, so
    /// nothing further in (a handler, an MCP tool, a proxy) can forward the
    /// caller's token: the verified [`Principal`] stays in the request
    /// extensions. The MCP authorization spec forbids token passthrough;
    /// turn this on for MCP servers and for anything that calls other APIs
    /// on a caller's behalf.
    pub fn strip_authorization(mut self) -> Self {
        self.strip_authorization = true;
        self
    }

    /// Accept DPoP-bound tokens (RFC 9449) with their proofs: "DPoP allowed",
    /// or "DPoP required" with [`Dpop::required`]. Without it the layer is
    /// "bearer only" and refuses a key-bound token presented as `Bearer`
    /// (reason `bound_token`). See [`Dpop`].
    pub fn dpop(mut self, dpop: Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Accept certificate-bound tokens (RFC 8705, `cnf.x5t#S256`) presented
    /// as `Bearer` over a connection with that client certificate, taken
    /// from where `mtls` says. Without it such tokens are refused
    /// (`bound_token`); with it, a missing or other certificate is refused
    /// (`certificate_mismatch`). See [`Mtls`].
    pub fn mtls(mut self, mtls: Mtls) -> Self {
        self.mtls = Some(mtls);
        self
    }

    /// Build rejections with your own handler (a closure
    /// `Fn(AuthError) -> Response<B>` or an [`OnRejection`]). Guards further
    /// in ([`RequireScope`](crate::RequireScope),
    /// [`RequireTenant`](crate::RequireTenant)) use it too.
    pub fn on_rejection<R2>(self, on_rejection: R2) -> M2mAuthLayer<R2> {
        M2mAuthLayer {
            verifier: self.verifier,
            challenge: self.challenge,
            optional: self.optional,
            strip_authorization: self.strip_authorization,
            dpop: self.dpop,
            mtls: self.mtls,
            on_rejection,
        }
    }
}

impl<S, R: Clone> Layer<S> for M2mAuthLayer<R> {
    type Service = M2mAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut challenge = (*self.challenge).clone();
        if let Some(dpop) = &self.dpop {
            challenge.dpop_algs = Some(dpop.algs());
            // DPoP required: even a Bearer request is told to use DPoP.
            challenge.dpop_scheme = dpop.inner.required;
        }
        let dpop_challenge = Challenge {
            dpop_scheme: true,
            ..challenge.clone()
        };
        M2mAuth {
            inner,
            shared: Arc::new(Shared {
                verifier: self.verifier.clone(),
                challenge: Arc::new(challenge),
                dpop_challenge: Arc::new(dpop_challenge),
                optional: self.optional,
                strip_authorization: self.strip_authorization,
                dpop: self.dpop.clone(),
                mtls: self.mtls.clone(),
                on_rejection: Arc::new(self.on_rejection.clone()),
                contexts: crate::context::ContextCell::default(),
            }),
        }
    }
}

/// The service built by [`M2mAuthLayer`].
pub struct M2mAuth<S, R = DefaultRejection> {
    inner: S,
    shared: Arc<Shared<R>>,
}

impl<S: Clone, R> Clone for M2mAuth<S, R> {
    fn clone(&self) -> Self {
        M2mAuth {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// What every clone of an [`M2mAuth`] shares: axum clones a route's
/// service for each request, so a clone is the inner service's clone and
/// one reference count.
struct Shared<R> {
    verifier: Verifier,
    challenge: Arc<Challenge>,
    /// The challenge for requests that use DPoP.
    dpop_challenge: Arc<Challenge>,
    optional: bool,
    strip_authorization: bool,
    dpop: Option<Dpop>,
    mtls: Option<Mtls>,
    on_rejection: Arc<R>,
    /// The challenges and `on_rejection`, handed to guards and extractors
    /// through request extensions without an allocation per request.
    contexts: crate::context::ContextCell,
}

impl<S, R> M2mAuth<S, R> {
    crate::inner_service_accessors!();

    fn reject<ReqBody>(
        &self,
        kind: AuthErrorKind,
        challenge: &Arc<Challenge>,
    ) -> ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        // A DPoP request's refusal (its challenge is the DPoP one), even
        // one before the proof is read, carries the current server nonce,
        // so the client's next proof can have it (RFC 9449 §8.2).
        let dpop_request = Arc::ptr_eq(challenge, &self.shared.dpop_challenge);
        ResponseFuture {
            kind: Kind::rejected(kind, challenge, &self.shared.on_rejection),
            nonce: if dpop_request {
                self.dpop_nonce()
            } else {
                None
            },
        }
    }

    /// The current DPoP server nonce, when nonces are on.
    fn dpop_nonce(&self) -> Option<http::HeaderValue> {
        self.shared
            .dpop
            .as_ref()?
            .inner
            .nonces
            .as_ref()?
            .current(self.shared.verifier.now_secs())
            .and_then(|n| http::HeaderValue::from_str(&n).ok())
    }

    /// The client certificate's thumbprint, when certificate-bound tokens
    /// are accepted and one is presented.
    fn certificate<B>(&self, req: &Request<B>) -> Option<String> {
        self.shared
            .mtls
            .as_ref()
            .and_then(|m| m.thumbprint(req.headers(), req.extensions()))
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for M2mAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: 'static,
    R: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let dpop_request = self.shared.dpop.is_some() && crate::bearer::is_dpop_scheme(&req);
        // With DPoP on, proofs are the layer's business: never a handler's.
        if self.shared.dpop.is_some() && !dpop_request {
            req.headers_mut().remove(crate::bearer::DPOP);
        }
        let challenge = if dpop_request {
            &self.shared.dpop_challenge
        } else {
            &self.shared.challenge
        };
        // What guards and extractors further in need (built once, shared).
        let context = self
            .shared
            .contexts
            .get::<ResBody, R>(challenge, &self.shared.on_rejection);
        crate::context::hand_off(req.extensions_mut(), context);
        // Also marks the header sensitive: the token stays out of any
        // logging further in.
        let found = match find_token(&mut req) {
            // DPoP is off: a DPoP token is no bearer token (as any other
            // scheme), though a malformed one is still a malformed request.
            Ok(Found::Token { dpop: true, token }) if self.shared.dpop.is_none() => {
                token.check().map(|_| Found::None)
            }
            other => other,
        };
        match found {
            Err(why) => self.reject(AuthErrorKind::InvalidRequest(why), challenge),
            Ok(Found::None) if self.shared.optional => {
                trace_decision("anonymous", None);
                // No bearer token, perhaps another scheme's credentials:
                // never passed on either.
                if self.shared.strip_authorization {
                    req.headers_mut().remove(AUTHORIZATION);
                }
                ResponseFuture::call(&mut self.inner, req)
            }
            Ok(Found::None) => self.reject(AuthErrorKind::MissingToken, challenge),
            Ok(Found::Token { token, dpop: true }) => {
                let token = match token.check() {
                    Ok(t) => t.to_owned(),
                    Err(why) => return self.reject(AuthErrorKind::InvalidRequest(why), challenge),
                };
                // A proof per request: always the full path (the token's
                // verdict may still come from the cache).
                let proof = match crate::bearer::dpop_proof(&req) {
                    Ok(p) => p.to_owned(),
                    Err(why) => {
                        return self.reject(AuthErrorKind::InvalidDpopProof(why), challenge);
                    }
                };
                let method = req.method().as_str().to_owned();
                let path = request_path(&req);
                if self.shared.strip_authorization {
                    req.headers_mut().remove(AUTHORIZATION);
                }
                req.headers_mut().remove(crate::bearer::DPOP);
                let dpop = self
                    .shared
                    .dpop
                    .clone()
                    .expect("DPoP requests only with DPoP on");
                let nonce = self.dpop_nonce();
                let verifier = self.shared.verifier.clone();
                let mtls = self.shared.mtls.is_some();
                let certificate = self.certificate(&req);
                let fut = Box::pin(async move {
                    let principal = verifier.verify(&token).await?;
                    // Before the proof: a refusal that is certain uses up
                    // no place in the replay store. (An unbound token is
                    // refused by the proof check.)
                    binding_proved(mtls, certificate.as_deref(), &principal, true)
                        .map_err(|reason| AuthErrorKind::InvalidToken(Rejection::new(reason)))?;
                    crate::dpop::check_request(
                        &dpop,
                        &principal,
                        &proof,
                        &method,
                        &path,
                        &token,
                        verifier.now_secs(),
                    )
                    .await?;
                    Ok(principal)
                });
                let mut fut =
                    ResponseFuture::verify(&mut self.inner, &self.shared, req, fut, challenge);
                fut.nonce = nonce;
                fut
            }
            // The cache first: a hit skips the token's syntax check.
            Ok(Found::Token { token, dpop: false }) => {
                match self.shared.verifier.verify_cached(token.as_bytes()) {
                    Some(Err(rejection)) => self.reject(rejection.into(), challenge),
                    Some(Ok(principal)) => {
                        // Hashed only for a certificate-bound token.
                        let certificate = principal.x5t_s256().and_then(|_| self.certificate(&req));
                        let binding = Binding {
                            dpop: self.shared.dpop.as_ref(),
                            mtls: self.shared.mtls.is_some(),
                            certificate: certificate.as_deref(),
                        };
                        if let Err(kind) = bearer_allowed(&binding, &principal) {
                            return self.reject(kind, challenge);
                        }
                        trace_decision("accepted", Some(&principal));
                        req.extensions_mut().insert(principal);
                        if self.shared.strip_authorization {
                            req.headers_mut().remove(AUTHORIZATION);
                        }
                        ResponseFuture::call(&mut self.inner, req)
                    }
                    None => {
                        let token = match token.check() {
                            Ok(t) => t.to_owned(),
                            Err(why) => {
                                return self.reject(AuthErrorKind::InvalidRequest(why), challenge);
                            }
                        };
                        // Only a verified token's request reaches the inner service.
                        if self.shared.strip_authorization {
                            req.headers_mut().remove(AUTHORIZATION);
                        }
                        let verifier = self.shared.verifier.clone();
                        let dpop = self.shared.dpop.clone();
                        let mtls = self.shared.mtls.is_some();
                        let certificate = self.certificate(&req);
                        let fut = Box::pin(async move {
                            let principal = verifier.verify_cache_miss(&token).await?;
                            let binding = Binding {
                                dpop: dpop.as_ref(),
                                mtls,
                                certificate: certificate.as_deref(),
                            };
                            bearer_allowed(&binding, &principal)?;
                            Ok(principal)
                        });
                        ResponseFuture::verify(&mut self.inner, &self.shared, req, fut, challenge)
                    }
                }
            }
        }
    }
}

/// What a `Bearer` request can prove about a bound token.
struct Binding<'a> {
    dpop: Option<&'a Dpop>,
    /// Certificate-bound tokens are accepted (a certificate source is set).
    mtls: bool,
    /// The thumbprint of the certificate presented, if any.
    certificate: Option<&'a str>,
}

/// A token presented as `Bearer`: refused when it is bound to a key no
/// `Bearer` request can prove (DPoP's, or a certificate when none is
/// configured or it differs), or when DPoP is required.
fn bearer_allowed(b: &Binding<'_>, principal: &Principal) -> Result<(), AuthErrorKind> {
    let refuse = |reason| Err(AuthErrorKind::InvalidToken(Rejection::new(reason)));
    if let Err(reason) = binding_proved(b.mtls, b.certificate, principal, false) {
        return refuse(reason);
    }
    if b.dpop.is_some_and(|d| d.inner.required) {
        return refuse(Reason::UnboundToken);
    }
    Ok(())
}

/// Whether the request proves every confirmation method (`cnf`) of a
/// bound token: `jkt` when a DPoP proof is checked for it (`dpop_proof`),
/// `x5t#S256` when a certificate source is set and the certificate
/// presented is that one (`certificate_mismatch` otherwise). Any method
/// the request cannot prove, or none at all, is `bound_token`. An unbound
/// token has nothing to prove.
fn binding_proved(
    mtls: bool,
    certificate: Option<&str>,
    principal: &Principal,
    dpop_proof: bool,
) -> Result<(), Reason> {
    let Some(cnf) = principal
        .is_sender_constrained()
        .then(|| principal.claim("cnf"))
        .flatten()
    else {
        return Ok(());
    };
    let provable = |m: &str| (m == "jkt" && dpop_proof) || (m == "x5t#S256" && mtls);
    let Some(methods) = cnf
        .as_object()
        .filter(|o| !o.is_empty() && o.keys().all(|m| provable(m)))
    else {
        return Err(Reason::BoundToken);
    };
    match methods.get("x5t#S256").map(|v| v.as_str()) {
        None => Ok(()),
        Some(Some(want)) if certificate == Some(want) => Ok(()),
        Some(Some(_)) => Err(Reason::CertificateMismatch),
        Some(None) => Err(Reason::BoundToken),
    }
}

/// The request path as the client sent it: axum's `OriginalUri` when a
/// nested router rewrote the URI.
fn request_path<B>(req: &Request<B>) -> String {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) =
        req.extensions().get::<axum::extract::OriginalUri>()
    {
        return uri.path().to_owned();
    }
    req.uri().path().to_owned()
}

/// Take the inner service that was driven to readiness, leaving a fresh
/// clone behind (see tower-service's docs, "Be careful when cloning inner
/// services").
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

fn trace_decision(outcome: &'static str, p: Option<&Principal>) {
    if let ("accepted", Some(p)) = (outcome, p) {
        p.count_accepted();
    }
    tracing::debug!(
        target: "m2m_guard",
        outcome,
        reason = "ok",
        issuer = p.map(Principal::issuer),
        client_id = p.and_then(Principal::client_id),
        tenant = p.and_then(Principal::tenant),
        "m2m-guard decision"
    );
}

/// Log and count a refusal; `principal` is the verified caller a guard
/// refused, if any.
pub(crate) fn trace_rejection(error: &AuthError, principal: Option<&Principal>) {
    let configured = principal.map(Principal::configured_issuer);
    let unavailable;
    let issuer = match error.kind() {
        AuthErrorKind::InvalidToken(r) => r.shared_issuer().or(configured),
        AuthErrorKind::Unavailable {
            issuer: Some(i), ..
        } => {
            unavailable = Arc::from(i.as_str());
            Some(&unavailable)
        }
        _ => configured,
    };
    crate::metrics::decision(
        "rejected",
        error.reason_code(),
        issuer,
        principal.and_then(Principal::metrics_tenant),
    );
    let issuer = issuer.map(|i| &**i);
    tracing::debug!(
        target: "m2m_guard",
        outcome = "rejected",
        reason = error.reason_code(),
        status = error.status().as_u16(),
        issuer,
        "m2m-guard decision"
    );
}

pin_project! {
    /// Response future of [`M2mAuth`].
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody, R>,
        // A DPoP server nonce for the answer (RFC 9449 §8.2).
        nonce: Option<http::HeaderValue>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        // The full check runs; then the request goes to the inner service.
        Verifying {
            fut: BoxFuture<'static, Result<Principal, AuthErrorKind>>,
            then: Option<(Request<ReqBody>, S)>,
            challenge: Arc<Challenge>,
            on_rejection: Arc<R>,
        },
        // Only the inner service's future: a cached verdict's request
        // touches no shared reference count of the layer's.
        Calling {
            #[pin]
            fut: S::Future,
        },
        Rejected {
            error: Option<AuthError>,
            on_rejection: Arc<R>,
        },
    }
}

impl<S, ReqBody, R> Kind<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    /// Refused for `kind`: answered with `challenge` by `on_rejection`.
    fn rejected(kind: AuthErrorKind, challenge: &Arc<Challenge>, on_rejection: &Arc<R>) -> Self {
        Kind::Rejected {
            error: Some(AuthError::new(kind, challenge.clone())),
            on_rejection: on_rejection.clone(),
        }
    }
}

impl<S, ReqBody, R> std::fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Verifying { .. } => "verifying",
            Kind::Calling { .. } => "calling",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    /// Call the inner service with `req` now: `inner` was polled ready,
    /// and is called at once (no clone, unlike [`Self::verify`]).
    fn call(inner: &mut S, req: Request<ReqBody>) -> Self {
        ResponseFuture {
            kind: Kind::Calling {
                fut: inner.call(req),
            },
            nonce: None,
        }
    }

    /// Run `check` (the full verification), then call the inner service:
    /// the one polled ready goes with the future, a clone stays.
    fn verify(
        inner: &mut S,
        shared: &Shared<R>,
        req: Request<ReqBody>,
        check: BoxFuture<'static, Result<Principal, AuthErrorKind>>,
        challenge: &Arc<Challenge>,
    ) -> Self
    where
        S: Clone,
    {
        ResponseFuture {
            kind: Kind::Verifying {
                fut: check,
                then: Some((req, take_ready(inner))),
                challenge: challenge.clone(),
                on_rejection: shared.on_rejection.clone(),
            },
            nonce: None,
        }
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Verifying {
                    fut,
                    then,
                    challenge,
                    on_rejection,
                } => {
                    let result = ready!(fut.as_mut().poll(cx));
                    let (mut req, mut inner) =
                        then.take().expect("ResponseFuture polled after completion");
                    match result {
                        Ok(principal) => {
                            trace_decision("accepted", Some(&principal));
                            req.extensions_mut().insert(principal);
                            let fut = inner.call(req);
                            this.kind.set(Kind::Calling { fut });
                        }
                        Err(kind) => {
                            let rejected = Kind::rejected(kind, challenge, on_rejection);
                            this.kind.set(rejected);
                        }
                    }
                }
                KindProj::Calling { fut } => {
                    let mut resp = ready!(fut.poll(cx))?;
                    if let Some(nonce) = this.nonce.take() {
                        resp.headers_mut().insert(crate::bearer::DPOP_NONCE, nonce);
                    }
                    return Poll::Ready(Ok(resp));
                }
                KindProj::Rejected {
                    error,
                    on_rejection,
                } => {
                    let error = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    trace_rejection(&error, None);
                    let mut resp = on_rejection.on_rejection(error);
                    // Every answer to a DPoP request carries the current
                    // nonce (a `use_dpop_nonce` answer has it already).
                    if let Some(nonce) = this.nonce.take()
                        && !resp.headers().contains_key(crate::bearer::DPOP_NONCE)
                    {
                        resp.headers_mut().insert(crate::bearer::DPOP_NONCE, nonce);
                    }
                    return Poll::Ready(Ok(resp));
                }
            }
        }
    }
}
