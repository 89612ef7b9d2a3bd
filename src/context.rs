//! The hand-off between the auth layer and everything further in (guards,
//! extractors): what the layer puts into request extensions, and how the
//! others read it and render a rejection the same way the layer would.

use http::Response;
use std::sync::Arc;

use crate::layer::trace_rejection;
use crate::principal::Principal;
use crate::response::{AuthError, AuthErrorKind, Challenge, OnRejection};

pub(crate) const NO_AUTH_LAYER: &str = "m2m-guard: no M2mAuthLayer ran before this guard or extractor: add one around the routes, or move it outside the guards (with axum, the last .route_layer/.layer call is the outermost, so add M2mAuthLayer after the guards)";

/// Put everything further in needs into `extensions`: the challenge and the
/// layer's rejection handler for body type `B`.
pub(crate) fn hand_off<B: 'static, R: OnRejection<B>>(
    extensions: &mut http::Extensions,
    challenge: Arc<Challenge>,
    on_rejection: Arc<R>,
) {
    extensions.insert(AuthContext { challenge });
    extensions.insert(Renderer::<B>(on_rejection));
}

/// Put into request extensions by the auth layer, so guards and extractors
/// further in render the same challenge and the same custom responses.
#[derive(Clone)]
pub(crate) struct AuthContext {
    pub(crate) challenge: Arc<Challenge>,
}

/// The auth layer's rejection renderer for body type `B`, shared with guards.
pub(crate) struct Renderer<B>(pub(crate) Arc<dyn RenderRejection<B>>);

/// [`OnRejection`] made object-safe, so an `Arc<R>` coerces to a renderer.
pub(crate) trait RenderRejection<B>: Send + Sync {
    fn render(&self, error: AuthError) -> Response<B>;
}

impl<B, T: OnRejection<B>> RenderRejection<B> for T {
    fn render(&self, error: AuthError) -> Response<B> {
        self.on_rejection(error)
    }
}

impl<B> Clone for Renderer<B> {
    fn clone(&self) -> Self {
        Renderer(self.0.clone())
    }
}

/// Render `error` with the auth layer's handler when there is one for this
/// body type. Without one (no auth layer in front, or one for another body
/// type) the answer is the status and headers with an empty body: any
/// body type that has an empty value works (axum's, hyper's, tonic's), and
/// a wiring mistake is explained in the log, not to the client.
pub(crate) fn render<B: Default + 'static>(
    extensions: &http::Extensions,
    error: AuthError,
) -> Response<B> {
    trace_rejection(&error, extensions.get::<crate::Principal>());
    match extensions.get::<Renderer<B>>() {
        Some(r) => r.0.render(error),
        None => {
            if let AuthErrorKind::Misconfigured(how) = error.kind() {
                tracing::error!(target: "m2m_guard", "{how}");
            }
            error.bare_response(B::default())
        }
    }
}

/// Principal and challenge from the auth layer, or the error to answer with.
pub(crate) fn authenticated(
    extensions: &http::Extensions,
) -> Result<(Principal, Arc<Challenge>), AuthError> {
    let Some(ctx) = extensions.get::<AuthContext>() else {
        return Err(AuthError::new(
            AuthErrorKind::Misconfigured(NO_AUTH_LAYER),
            Arc::new(Challenge::default()),
        ));
    };
    match extensions.get::<Principal>() {
        Some(p) => Ok((p.clone(), ctx.challenge.clone())),
        None => Err(AuthError::new(
            AuthErrorKind::MissingToken,
            ctx.challenge.clone(),
        )),
    }
}
