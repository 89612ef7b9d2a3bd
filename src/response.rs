//! HTTP rejections: RFC 6750 §3 challenges, RFC 9728 `resource_metadata`,
//! and a small JSON body. Replaceable through [`OnRejection`].

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::rejection::{Reason, Rejection};

/// What goes into every challenge: the realm and, when configured, the
/// RFC 9728 protected-resource metadata URL.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) resource_metadata: Option<String>,
    /// `scope` of 401 challenges (RFC 6750 §3; the MCP spec asks for it):
    /// the scopes a client should request.
    pub(crate) scope: Option<String>,
    /// `scope` was set explicitly (a resource's `scopes_supported` does
    /// not replace it).
    pub(crate) scope_explicit: bool,
    /// DPoP is accepted: the proof algorithms, for `algs` (RFC 9449 §7.1).
    pub(crate) dpop_algs: Option<String>,
    /// The challenge is a `DPoP` one (the request used DPoP, or the route
    /// requires it), not `Bearer`.
    pub(crate) dpop_scheme: bool,
}

impl Default for Challenge {
    fn default() -> Self {
        Challenge {
            realm: "api".into(),
            resource_metadata: None,
            scope: None,
            scope_explicit: false,
            dpop_algs: None,
            dpop_scheme: false,
        }
    }
}

/// Why a request was refused by the layer or a guard.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No bearer token (401, challenge without an error code).
    MissingToken,
    /// The request is malformed, e.g. two `Authorization` headers (400 `invalid_request`).
    InvalidRequest(&'static str),
    /// The token was rejected (401 `invalid_token`).
    InvalidToken(Rejection),
    /// The token lacks required scopes (403 `insufficient_scope`).
    InsufficientScope {
        /// The scopes the route requires, space-separated.
        required: Arc<str>,
    },
    /// The token belongs to another organization / tenant, or is global on a
    /// tenant route (403 `insufficient_scope`).
    WrongTenant,
    /// Something the decision needs is unavailable on our side: the
    /// issuer's keys, the revocation list, the DPoP replay check (503 with
    /// `Retry-After`; never the caller's fault).
    #[non_exhaustive]
    Unavailable {
        /// When to retry.
        retry_after: Duration,
        /// The configured issuer whose keys are unavailable, when known.
        issuer: Option<String>,
        /// What is unavailable: [`Reason::KeysUnavailable`],
        /// [`Reason::RevocationsUnavailable`] or
        /// [`Reason::ReplayCheckUnavailable`].
        reason: Reason,
    },
    /// A [`Rule`](crate::Rule) of yours refused the token (403
    /// `insufficient_scope`, without a `scope` attribute).
    Forbidden {
        /// A stable reason code (`[a-z0-9_]`, e.g. `global_only`).
        reason: &'static str,
        /// A description safe to show the client.
        description: &'static str,
    },
    /// The DPoP proof is missing or does not hold (401 `invalid_dpop_proof`,
    /// RFC 9449 §7.1); the text says which rule failed.
    InvalidDpopProof(&'static str),
    /// The DPoP proof lacks a current server nonce (401 `use_dpop_nonce`,
    /// RFC 9449 §8); the answer carries one in `DPoP-Nonce`.
    UseDpopNonce {
        /// The nonce to use (`None` when the server cannot make nonces).
        nonce: Option<String>,
    },
    /// The layers are wired wrongly (500); the message says how to fix it.
    Misconfigured(&'static str),
}

impl From<Rejection> for AuthErrorKind {
    /// `Unavailable` for keys we cannot load (503), `InvalidToken` otherwise.
    fn from(rejection: Rejection) -> Self {
        match rejection.retry_after() {
            Some(retry_after) if rejection.is_unavailable() => AuthErrorKind::Unavailable {
                retry_after,
                issuer: rejection.issuer().map(str::to_owned),
                reason: rejection.reason(),
            },
            _ => AuthErrorKind::InvalidToken(rejection),
        }
    }
}

/// What an [`AuthError`] amounts to.
struct Facts {
    status: StatusCode,
    error: Option<&'static str>,
    reason: &'static str,
    description: &'static str,
}

/// A refusal, ready to become a response with [`AuthError::into_response`],
/// or to be turned into your own through [`OnRejection`].
#[derive(Debug, Clone)]
pub struct AuthError {
    kind: AuthErrorKind,
    challenge: Arc<Challenge>,
}

impl AuthError {
    pub(crate) fn new(kind: AuthErrorKind, challenge: Arc<Challenge>) -> Self {
        AuthError { kind, challenge }
    }

    /// The challenge it answers with.
    #[cfg(test)]
    pub(crate) fn challenge(&self) -> &Arc<Challenge> {
        &self.challenge
    }

    /// What went wrong.
    pub fn kind(&self) -> &AuthErrorKind {
        &self.kind
    }

    /// Every fact about this refusal, stated once per kind: the status, the
    /// RFC 6750 error code, the stable reason code and the description.
    fn facts(&self) -> Facts {
        use AuthErrorKind as K;
        let (status, error, reason, description) = match &self.kind {
            K::MissingToken => (401, None, "missing_token", "a bearer token is required"),
            K::InvalidRequest(d) => (400, Some("invalid_request"), "invalid_request", *d),
            K::InvalidToken(r) => (
                401,
                Some("invalid_token"),
                r.reason().code(),
                r.reason().description(),
            ),
            K::InsufficientScope { .. } => (
                403,
                Some("insufficient_scope"),
                "insufficient_scope",
                "the token lacks a required scope",
            ),
            K::WrongTenant => (
                403,
                Some("insufficient_scope"),
                "wrong_tenant",
                "the token is not valid for this organization",
            ),
            K::Unavailable { reason, .. } => (
                503,
                Some("temporarily_unavailable"),
                reason.code(),
                reason.description(),
            ),
            K::Forbidden {
                reason,
                description,
            } => (403, Some("insufficient_scope"), *reason, *description),
            K::InvalidDpopProof(d) => (401, Some("invalid_dpop_proof"), "invalid_dpop_proof", *d),
            K::UseDpopNonce { .. } => (
                401,
                Some("use_dpop_nonce"),
                "use_dpop_nonce",
                "the DPoP proof needs a current nonce from this server",
            ),
            K::Misconfigured(d) => (500, Some("server_error"), "misconfigured", *d),
        };
        Facts {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error,
            reason,
            description,
        }
    }

    /// The HTTP status this refusal maps to.
    pub fn status(&self) -> StatusCode {
        self.facts().status
    }

    /// The RFC 6750 error code, if any.
    pub fn error_code(&self) -> Option<&'static str> {
        self.facts().error
    }

    /// A short description, safe to show the client: never token contents.
    pub fn description(&self) -> &'static str {
        self.facts().description
    }

    /// A stable code for logs and metrics, e.g. `expired` or `missing_token`.
    pub fn reason_code(&self) -> &'static str {
        self.facts().reason
    }

    /// The `WWW-Authenticate` value (for 400, 401 and 403).
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        if !matches!(self.status().as_u16(), 400 | 401 | 403) {
            return None;
        }
        let scheme = if self.challenge.dpop_scheme {
            "DPoP"
        } else {
            "Bearer"
        };
        let mut v = format!("{scheme} realm=\"{}\"", quote(&self.challenge.realm));
        if let Some(code) = self.error_code() {
            v.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ));
        }
        if let AuthErrorKind::InsufficientScope { required } = &self.kind {
            v.push_str(&format!(", scope=\"{}\"", quote(required)));
        } else if self.status() == StatusCode::UNAUTHORIZED
            && let Some(scope) = &self.challenge.scope
        {
            v.push_str(&format!(", scope=\"{}\"", quote(scope)));
        }
        if let Some(url) = &self.challenge.resource_metadata {
            v.push_str(&format!(", resource_metadata=\"{}\"", quote(url)));
        }
        if self.challenge.dpop_scheme
            && let Some(algs) = &self.challenge.dpop_algs
        {
            v.push_str(&format!(", algs=\"{}\"", quote(algs)));
        }
        HeaderValue::from_str(&v).ok()
    }

    /// With DPoP accepted beside `Bearer`, a 401's second challenge: the
    /// client may use either scheme (RFC 9449 §7.1).
    fn dpop_alternative(&self) -> Option<HeaderValue> {
        let algs = self.challenge.dpop_algs.as_ref()?;
        if self.challenge.dpop_scheme || self.status() != StatusCode::UNAUTHORIZED {
            return None;
        }
        HeaderValue::from_str(&format!(
            "DPoP realm=\"{}\", algs=\"{}\"",
            quote(&self.challenge.realm),
            quote(algs)
        ))
        .ok()
    }

    /// The default response: status, `WWW-Authenticate`, `Retry-After` for
    /// 503, `Cache-Control: no-store` and a JSON body `{error, error_description}`.
    pub fn into_response<B: From<String>>(self) -> Response<B> {
        let body = serde_json::json!({
            "error": self.error_code().unwrap_or("unauthorized"),
            "error_description": self.description(),
        })
        .to_string();
        let mut resp = self.bare_response(B::from(body));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    /// Status and headers of [`AuthError::into_response`] around `body`.
    pub(crate) fn bare_response<B>(&self, body: B) -> Response<B> {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self.www_authenticate() {
            h.insert(WWW_AUTHENTICATE, v);
        }
        if let Some(v) = self.dpop_alternative() {
            h.append(WWW_AUTHENTICATE, v);
        }
        if let AuthErrorKind::UseDpopNonce { nonce: Some(n) } = &self.kind
            && let Ok(v) = HeaderValue::from_str(n)
        {
            h.insert(crate::bearer::DPOP_NONCE, v);
        }
        if let AuthErrorKind::Unavailable { retry_after, .. } = self.kind {
            h.insert(RETRY_AFTER, retry_after_header(retry_after));
        }
        resp
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.reason_code())
    }
}

impl std::error::Error for AuthError {}

/// Escape for an RFC 9110 quoted-string; drop anything not visible ASCII.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

/// Turns an [`AuthError`] into a response. Implemented by [`DefaultRejection`]
/// and by any `Fn(AuthError) -> Response<B>` closure.
pub trait OnRejection<B>: Clone + Send + Sync + 'static {
    /// Build the response for `error`.
    fn on_rejection(&self, error: AuthError) -> Response<B>;
}

/// The default: [`AuthError::into_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejection;

impl<B: From<String>> OnRejection<B> for DefaultRejection {
    fn on_rejection(&self, error: AuthError) -> Response<B> {
        error.into_response()
    }
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(AuthError) -> Response<B> + Clone + Send + Sync + 'static,
{
    fn on_rejection(&self, error: AuthError) -> Response<B> {
        self(error)
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up (a client retrying
/// on time never comes back a moment early), at least one.
fn retry_after_header(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// Rejections as gRPC statuses, for tonic services: a headers-only response
/// with `grpc-status` (400 → `INVALID_ARGUMENT`, 401 → `UNAUTHENTICATED`,
/// 403 → `PERMISSION_DENIED`, 503 → `UNAVAILABLE`, else `INTERNAL`),
/// `grpc-message`, and the same `WWW-Authenticate` challenge.
///
/// ```no_run
/// # fn run(verifier: m2m_guard::Verifier) {
/// use m2m_guard::{GrpcRejection, M2mAuthLayer};
/// let layer = M2mAuthLayer::new(verifier).on_rejection(GrpcRejection);
/// // tonic::transport::Server::builder().layer(layer).add_service(...)
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRejection;

impl<B: Default> OnRejection<B> for GrpcRejection {
    fn on_rejection(&self, error: AuthError) -> Response<B> {
        let code: u16 = match error.status().as_u16() {
            400 => 3,
            401 => 16,
            403 => 7,
            503 => 14,
            _ => 13,
        };
        let mut resp = Response::new(B::default());
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(code));
        // Descriptions are plain ASCII without '%' (checked for every reason
        // and every `Denial`): valid as grpc-message as they are. Should one
        // ever not be, the status alone goes out, never a panic.
        if let Ok(v) = HeaderValue::from_str(error.description())
            && !error.description().contains('%')
        {
            h.insert("grpc-message", v);
        }
        if let Some(v) = error.www_authenticate() {
            h.insert(WWW_AUTHENTICATE, v);
        }
        if let AuthErrorKind::Unavailable { retry_after, .. } = error.kind {
            h.insert(RETRY_AFTER, retry_after_header(retry_after));
        }
        resp
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for AuthError {
    fn into_response(self) -> axum::response::Response {
        AuthError::into_response(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_escape_quotes_and_backslashes_and_drop_the_invisible() {
        assert_eq!(quote(r#"a "b" \c"#), r#"a \"b\" \\c"#);
        assert_eq!(quote("tab\there\u{1b}[2J caf\u{e9}"), "tabhere[2J caf");
    }

    #[test]
    fn an_auth_error_says_what_and_why_and_is_an_axum_response() {
        let e = AuthError::new(AuthErrorKind::WrongTenant, Arc::new(Challenge::default()));
        assert_eq!(
            e.to_string(),
            format!("{} ({})", e.description(), e.reason_code())
        );
        assert_eq!(e.reason_code(), "wrong_tenant");
        #[cfg(feature = "axum")]
        {
            let resp = axum::response::IntoResponse::into_response(e);
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            assert!(resp.headers().contains_key(WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn retry_after_is_the_wait_rounded_up_to_whole_seconds() {
        let challenge = Arc::new(Challenge::default());
        for (wait, header) in [
            (Duration::ZERO, "1"),
            (Duration::from_millis(200), "1"),
            (Duration::from_secs(1), "1"),
            (Duration::from_secs(2), "2"),
            (Duration::from_millis(2001), "3"),
            (Duration::from_millis(2999), "3"),
            (Duration::from_secs(30), "30"),
        ] {
            let kind = AuthErrorKind::Unavailable {
                retry_after: wait,
                issuer: None,
                reason: Reason::KeysUnavailable,
            };
            let resp = AuthError::new(kind.clone(), challenge.clone()).bare_response(());
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[RETRY_AFTER], header, "{wait:?}");
            // The same over gRPC.
            let grpc: Response<String> =
                GrpcRejection.on_rejection(AuthError::new(kind, challenge.clone()));
            assert_eq!(grpc.headers()[RETRY_AFTER], header, "gRPC: {wait:?}");
        }
    }

    #[test]
    fn grpc_statuses_for_every_kind() {
        let challenge = Arc::new(Challenge::default());
        let cases = [
            (AuthErrorKind::MissingToken, "16"),
            (AuthErrorKind::InvalidRequest("bad"), "3"),
            (
                AuthErrorKind::InvalidToken(Rejection::new(Reason::Expired)),
                "16",
            ),
            (
                AuthErrorKind::InsufficientScope {
                    required: "a b".into(),
                },
                "7",
            ),
            (AuthErrorKind::WrongTenant, "7"),
            (
                AuthErrorKind::Unavailable {
                    retry_after: Duration::from_millis(200),
                    issuer: None,
                    reason: Reason::KeysUnavailable,
                },
                "14",
            ),
            (AuthErrorKind::Misconfigured("wiring"), "13"),
        ];
        for (kind, code) in cases {
            let name = format!("{kind:?}");
            let resp: Response<String> =
                GrpcRejection.on_rejection(AuthError::new(kind, challenge.clone()));
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{name}: gRPC errors ride on 200"
            );
            assert_eq!(resp.headers()["grpc-status"], code, "{name}");
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
            assert!(!resp.headers()["grpc-message"].is_empty(), "{name}");
            if code == "14" {
                assert_eq!(resp.headers()[RETRY_AFTER], "1", "at least one second");
            } else {
                assert!(resp.headers().get(RETRY_AFTER).is_none(), "{name}");
            }
        }
    }
}
