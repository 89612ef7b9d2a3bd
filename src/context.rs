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

/// Put what guards and extractors further in need into `extensions`, as
/// one value: the challenge and the layer's rejection renderer (built once
/// per layer service, see [`ContextCell`]). Behind two auth layers, the
/// inner one's context is the one guards see.
pub(crate) fn hand_off(extensions: &mut http::Extensions, context: AuthContext) {
    extensions.insert(context);
}

/// The context of the innermost auth layer that handed this request on.
fn context(extensions: &http::Extensions) -> Option<&AuthContext> {
    extensions.get::<AuthContext>()
}

/// The challenge of the auth layer in front, if any.
pub(crate) fn challenge(extensions: &http::Extensions) -> Option<Arc<Challenge>> {
    context(extensions).map(|c| c.challenge().clone())
}

/// Put into request extensions by the auth layer, so guards and extractors
/// further in render the same challenge and the same custom responses. It
/// stays apart from the [`Principal`]: code between the layer and a guard
/// may remove or replace the principal, and the guard still answers as the
/// layer would. One reference count: handing it on touches one counter.
#[derive(Clone)]
pub(crate) struct AuthContext(Arc<Context>);

struct Context {
    challenge: Arc<Challenge>,
    /// A [`Renderer<B>`] for the layer's response body type `B`.
    renderer: Box<dyn Any + Send + Sync>,
}

impl AuthContext {
    fn new<B: 'static, R: OnRejection<B>>(
        challenge: &Arc<Challenge>,
        on_rejection: &Arc<R>,
    ) -> Self {
        AuthContext(Arc::new(Context {
            challenge: challenge.clone(),
            renderer: Box::new(Renderer::<B>(on_rejection.clone())),
        }))
    }

    /// The challenge of the layer that handed this on.
    pub(crate) fn challenge(&self) -> &Arc<Challenge> {
        &self.0.challenge
    }
}

/// A layer service's contexts, built on its first request and shared by
/// every clone of the service (axum clones a route's service per request),
/// so handing one on is a reference count, not an allocation. Two places,
/// taken by the first two (challenge, body type) pairs seen: a layer has a
/// challenge for `Bearer` requests and one for DPoP ones.
#[derive(Clone, Default)]
pub(crate) struct ContextCell(Arc<[OnceLock<AuthContext>; 2]>);

impl ContextCell {
    /// The context for `challenge` and body type `B`.
    pub(crate) fn get<B: 'static, R: OnRejection<B>>(
        &self,
        challenge: &Arc<Challenge>,
        on_rejection: &Arc<R>,
    ) -> AuthContext {
        let fresh = || AuthContext::new::<B, R>(challenge, on_rejection);
        for place in self.0.iter() {
            let shared = place.get_or_init(fresh);
            if Arc::ptr_eq(&shared.0.challenge, challenge) && shared.0.renderer.is::<Renderer<B>>()
            {
                return shared.clone();
            }
        }
        // A third challenge, or a service answering two body types (rare):
        // the first ones keep the places, the others get their own context
        // per request.
        fresh()
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
    let renderer = context(extensions).and_then(|c| c.0.renderer.downcast_ref::<Renderer<B>>());
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
    let Some(ctx) = context(extensions) else {
        return Err(AuthError::new(
            AuthErrorKind::Misconfigured(NO_AUTH_LAYER),
            Arc::new(Challenge::default()),
        ));
    };
    match extensions.get::<Principal>() {
        Some(p) => Ok((p.clone(), ctx.challenge().clone())),
        None => Err(AuthError::new(
            AuthErrorKind::MissingToken,
            ctx.challenge().clone(),
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

    /// The extensions a request gets from a layer with `cell`, for a
    /// request that gets `challenge`.
    fn handed<B: 'static + From<String>>(
        cell: &ContextCell,
        challenge: &Arc<Challenge>,
    ) -> http::Extensions {
        let mut extensions = http::Extensions::new();
        hand_off(
            &mut extensions,
            cell.get::<B, Marked>(challenge, &Arc::new(Marked)),
        );
        extensions
    }

    fn rendered<B: Default + 'static>(extensions: &http::Extensions) -> Response<B> {
        let error = AuthError::new(AuthErrorKind::InvalidRequest("bad"), Arc::default());
        render::<B>(extensions, error)
    }

    fn context(extensions: &http::Extensions) -> &Arc<Context> {
        &super::context(extensions).expect("one context").0
    }

    /// One context per layer and challenge, handed to every request by
    /// reference count; a second body type and a third challenge still get
    /// the layer's handler and their own challenge (not the bare,
    /// empty-bodied fallback, nor another request's challenge).
    #[test]
    fn a_layers_context_is_built_once_and_serves_any_body_type() {
        let cell = ContextCell::default();
        let bearer = Arc::new(Challenge::default());
        let dpop = Arc::new(Challenge {
            dpop_scheme: true,
            ..Challenge::default()
        });
        let first = handed::<String>(&cell, &bearer);
        let second = handed::<String>(&cell, &bearer);
        let third = handed::<String>(&cell, &dpop);
        let shared = &cell.0[0].get().expect("built on first use").0;
        assert!(
            Arc::ptr_eq(context(&first), shared),
            "the layer's own context"
        );
        assert!(
            Arc::ptr_eq(context(&second), shared),
            "the layer's own context"
        );
        assert!(Arc::ptr_eq(context(&third), &cell.0[1].get().unwrap().0));
        assert!(Arc::ptr_eq(&context(&third).challenge, &dpop));
        // The cell and the two requests' contexts: no copy per request.
        assert_eq!(Arc::strong_count(shared), 3);
        assert_eq!(rendered::<String>(&first).body(), "marked invalid_request");
        let other = handed::<Vec<u8>>(&cell, &bearer);
        assert!(
            !Arc::ptr_eq(context(&other), shared),
            "a context of its own"
        );
        assert!(Arc::ptr_eq(&context(&other).challenge, &bearer));
        assert_eq!(
            rendered::<Vec<u8>>(&other).body(),
            b"marked invalid_request",
            "rendered by the layer's handler"
        );
        let another = Arc::new(Challenge::default());
        let fourth = handed::<String>(&cell, &another);
        assert!(Arc::ptr_eq(&context(&fourth).challenge, &another));
        assert!(cell.0[0].get().unwrap().0.renderer.is::<Renderer<String>>());
        assert_eq!(Arc::strong_count(shared), 3, "places are kept");
        // Without a layer: the bare answer, empty-bodied.
        assert_eq!(rendered::<String>(&http::Extensions::new()).body(), "");
    }

    /// The context stays apart from the principal: code between the layer
    /// and a guard may remove the principal (the guard answers 401 with
    /// the layer's challenge and handler) or replace it with one of its
    /// own verifier's (accepted); a principal without the layer's context
    /// is no proof that a layer ran.
    #[test]
    fn the_context_stays_apart_from_the_principal() {
        let caller = crate::principal::tests::with_claims(r#"{"sub":"c"}"#);
        let cell = ContextCell::default();
        let layers = Arc::new(Challenge::default());

        let mut extensions = handed::<String>(&cell, &layers);
        extensions.insert(caller.clone());
        extensions.remove::<Principal>();
        let refused = authenticated(&extensions).unwrap_err();
        assert!(matches!(refused.kind(), AuthErrorKind::MissingToken));
        assert!(Arc::ptr_eq(refused.challenge(), &layers));
        assert_eq!(
            rendered::<String>(&extensions).body(),
            "marked invalid_request"
        );

        let replaced = crate::principal::tests::with_claims(r#"{"sub":"other"}"#);
        extensions.insert(replaced);
        let (principal, challenge) = authenticated(&extensions).unwrap();
        assert_eq!(
            principal.claim("sub").and_then(|v| v.as_str()),
            Some("other")
        );
        assert!(Arc::ptr_eq(&challenge, &layers));

        let mut without_layer = http::Extensions::new();
        without_layer.insert(caller);
        let refused = authenticated(&without_layer).unwrap_err();
        assert!(matches!(refused.kind(), AuthErrorKind::Misconfigured(_)));
        assert_eq!(
            rendered::<String>(&without_layer).body(),
            "",
            "no layer's handler"
        );
    }
}
