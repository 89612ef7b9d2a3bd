//! The hand-off between the auth layer and everything further in (guards,
//! extractors): what the layer puts into request extensions, and how the
//! others read it and render a rejection the same way the layer would.

use http::Response;
use std::any::Any;
use std::sync::{Arc, OnceLock};

use crate::layer::trace_rejection;
use crate::principal::Principal;
use crate::response::{AuthError, AuthErrorKind, Challenge, OnRejection};

pub(crate) const NO_AUTH_LAYER: &str = "m2m-guard: no M2mAuthLayer ran before this guard or extractor: add one around the routes, or move it outside the guards (with axum, the last .route_layer/.layer call is the outermost, so add M2mAuthLayer after the guards)";

/// Put everything further in needs into `extensions`, as one value: the
/// challenge and the layer's rejection renderer for body type `B` (built
/// once per layer and shared, see [`RendererCell`]). Behind two auth
/// layers, the inner one's context is the one guards see.
pub(crate) fn hand_off<B: 'static, R: OnRejection<B>>(
    extensions: &mut http::Extensions,
    challenge: Arc<Challenge>,
    renderer: &RendererCell,
    on_rejection: &Arc<R>,
) {
    extensions.insert(AuthContext {
        challenge,
        renderer: renderer.get::<B, R>(on_rejection),
    });
}

/// Put into request extensions by the auth layer, so guards and extractors
/// further in render the same challenge and the same custom responses.
#[derive(Clone)]
pub(crate) struct AuthContext {
    pub(crate) challenge: Arc<Challenge>,
    /// A [`Renderer<B>`] for the layer's response body type `B`.
    renderer: Arc<dyn Any + Send + Sync>,
}

/// A layer's renderer, built on its first request and shared by every clone
/// of the layer's service (axum clones a route's service per request), so
/// handing it on is a reference count, not an allocation.
#[derive(Clone, Default)]
pub(crate) struct RendererCell(Arc<OnceLock<Arc<dyn Any + Send + Sync>>>);

impl RendererCell {
    fn get<B: 'static, R: OnRejection<B>>(
        &self,
        on_rejection: &Arc<R>,
    ) -> Arc<dyn Any + Send + Sync> {
        let fresh =
            || -> Arc<dyn Any + Send + Sync> { Arc::new(Renderer::<B>(on_rejection.clone())) };
        let shared = self.0.get_or_init(fresh);
        if shared.is::<Renderer<B>>() {
            shared.clone()
        } else {
            // A service answering two body types (rare): the first one
            // keeps the cell, the other gets its own per request.
            fresh()
        }
    }
}

/// The auth layer's rejection renderer for body type `B`, shared with guards.
struct Renderer<B>(Arc<dyn RenderRejection<B>>);

/// [`OnRejection`] made object-safe, so an `Arc<R>` coerces to a renderer.
pub(crate) trait RenderRejection<B>: Send + Sync {
    fn render(&self, error: AuthError) -> Response<B>;
}

impl<B, T: OnRejection<B>> RenderRejection<B> for T {
    fn render(&self, error: AuthError) -> Response<B> {
        self.on_rejection(error)
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
    let renderer = extensions
        .get::<AuthContext>()
        .and_then(|c| c.renderer.downcast_ref::<Renderer<B>>());
    match renderer {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders with a mark, so a test can tell its handler from the bare
    /// fallback and from `DefaultRejection`.
    #[derive(Clone)]
    struct Marked;

    impl<B: From<String>> OnRejection<B> for Marked {
        fn on_rejection(&self, error: AuthError) -> Response<B> {
            Response::new(B::from(format!("marked {}", error.reason_code())))
        }
    }

    /// The extensions a request gets from a layer with `cell`.
    fn handed<B: 'static + From<String>>(cell: &RendererCell) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        hand_off::<B, Marked>(
            &mut extensions,
            Arc::new(Challenge::default()),
            cell,
            &Arc::new(Marked),
        );
        extensions
    }

    fn rendered<B: Default + 'static>(extensions: &http::Extensions) -> Response<B> {
        let error = AuthError::new(AuthErrorKind::InvalidRequest("bad"), Arc::default());
        render::<B>(extensions, error)
    }

    /// One renderer per layer, handed to every request by reference count;
    /// a second body type still gets the layer's handler (not the bare,
    /// empty-bodied fallback).
    #[test]
    fn a_layers_renderer_is_built_once_and_serves_any_body_type() {
        let cell = RendererCell::default();
        let first = handed::<String>(&cell);
        let second = handed::<String>(&cell);
        let shared = cell.0.get().expect("built on first use");
        for request in [&first, &second] {
            let ctx = request.get::<AuthContext>().expect("one context");
            assert!(
                Arc::ptr_eq(&ctx.renderer, shared),
                "the layer's own renderer"
            );
        }
        // The cell and the two requests' contexts: no copy per request.
        assert_eq!(Arc::strong_count(shared), 3);
        assert_eq!(rendered::<String>(&first).body(), "marked invalid_request");
        let other = handed::<Vec<u8>>(&cell);
        assert_eq!(
            rendered::<Vec<u8>>(&other).body(),
            b"marked invalid_request",
            "rendered by the layer's handler"
        );
        assert!(cell.0.get().unwrap().is::<Renderer<String>>());
        // Without a layer: the bare answer, empty-bodied.
        assert_eq!(rendered::<String>(&http::Extensions::new()).body(), "");
    }
}
