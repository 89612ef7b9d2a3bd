//! axum extractors (feature `axum`).
//!
//! They read what [`M2mAuthLayer`](crate::M2mAuthLayer) inserted. Without
//! the layer they answer a bare 500 and log, at error level, how to fix the wiring.
//! Rejections go through the layer's [`OnRejection`](crate::OnRejection).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::Response;
use http::request::Parts;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::context::{authenticated, render};
use crate::principal::{Principal, Scopes};
use crate::rejection::{Reason, Rejection};
use crate::response::{AuthError, AuthErrorKind, Challenge};

fn principal(parts: &Parts) -> Result<(Principal, Arc<Challenge>), AuthError> {
    authenticated(&parts.extensions)
}

/// `Ok(None)` for an anonymous request in optional mode; 500 without the layer.
fn optional_principal(parts: &Parts) -> Result<Option<(Principal, Arc<Challenge>)>, AuthError> {
    match authenticated(&parts.extensions) {
        Ok(p) => Ok(Some(p)),
        Err(e) if matches!(e.kind(), AuthErrorKind::MissingToken) => Ok(None),
        Err(e) => Err(e),
    }
}

fn reject(parts: &Parts, error: AuthError) -> Response {
    render(&parts.extensions, error)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        principal(parts)
            .map(|(p, _)| p)
            .map_err(|e| reject(parts, e))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        optional_principal(parts)
            .map(|o| o.map(|(p, _)| p))
            .map_err(|e| reject(parts, e))
    }
}

/// The token's organization / tenant. A global token is refused with 403;
/// use `Option<Tenant>` to accept both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (p, challenge) = principal(parts).map_err(|e| reject(parts, e))?;
        match p.tenant() {
            Some(t) => Ok(Tenant(t.to_owned())),
            None => Err(render(
                &parts.extensions,
                AuthError::new(AuthErrorKind::WrongTenant, challenge),
            )),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Tenant {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(optional_principal(parts)
            .map_err(|e| reject(parts, e))?
            .and_then(|(p, _)| p.tenant().map(|t| Tenant(t.to_owned()))))
    }
}

/// The client id of the token. A token without one is refused with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (p, challenge) = principal(parts).map_err(|e| reject(parts, e))?;
        match p.client_id() {
            Some(c) => Ok(ClientId(c.to_owned())),
            None => Err(render(
                &parts.extensions,
                AuthError::new(
                    AuthErrorKind::InvalidToken(Rejection::claim(
                        Reason::MissingClaim,
                        "client_id",
                    )),
                    challenge,
                ),
            )),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ClientId {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(optional_principal(parts)
            .map_err(|e| reject(parts, e))?
            .and_then(|(p, _)| p.client_id().map(|c| ClientId(c.to_owned()))))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Scopes {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        principal(parts)
            .map(|(p, _)| p.scopes().clone())
            .map_err(|e| reject(parts, e))
    }
}

const fn valid_scope_set(scopes: &[&str]) -> bool {
    if scopes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < scopes.len() {
        if !crate::guard::is_scope_token(scopes[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// A set of scopes named at compile time, for the [`Scoped`] extractor.
///
/// ```
/// use m2m_guard::ScopeSet;
///
/// struct WriteFlags;
/// impl ScopeSet for WriteFlags {
///     const SCOPES: &'static [&'static str] = &["write:flags"];
/// }
/// ```
///
/// An empty list, or a scope that is empty or contains whitespace, is a
/// compile error where the extractor is used:
///
/// ```compile_fail
/// use m2m_guard::{Scoped, ScopeSet};
///
/// struct Nothing;
/// impl ScopeSet for Nothing {
///     const SCOPES: &'static [&'static str] = &[];
/// }
///
/// async fn handler(Scoped(principal, ..): Scoped<Nothing>) {}
/// let _ = axum::Router::<()>::new().route("/", axum::routing::get(handler));
/// ```
pub trait ScopeSet: Send + Sync + 'static {
    /// The scopes (at least one).
    const SCOPES: &'static [&'static str];
    /// `true`: any one of them suffices; `false` (default): all are needed.
    const ANY: bool = false;
}

/// Extractor-style scope guard: the [`Principal`], if it has the scopes of
/// `T`; else 403 `insufficient_scope`.
///
/// ```
/// use m2m_guard::{Scoped, ScopeSet};
///
/// struct WriteFlags;
/// impl ScopeSet for WriteFlags {
///     const SCOPES: &'static [&'static str] = &["write:flags"];
/// }
///
/// async fn create_flag(Scoped(principal, ..): Scoped<WriteFlags>) -> String {
///     format!("created by {}", principal.client_id().unwrap_or("?"))
/// }
/// ```
pub struct Scoped<T: ScopeSet>(pub Principal, pub PhantomData<T>);

impl<T: ScopeSet> std::fmt::Debug for Scoped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scoped").field(&self.0).finish()
    }
}

impl<S: Send + Sync, T: ScopeSet> FromRequestParts<S> for Scoped<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        const {
            assert!(
                valid_scope_set(T::SCOPES),
                "m2m-guard: ScopeSet::SCOPES must name at least one scope, each non-empty without whitespace"
            )
        };
        let (p, challenge) = principal(parts).map_err(|e| reject(parts, e))?;
        let wanted = T::SCOPES.iter().copied();
        let ok = if T::ANY {
            p.scopes().contains_any(wanted)
        } else {
            p.scopes().contains_all(wanted)
        };
        if ok {
            Ok(Scoped(p, PhantomData))
        } else {
            Err(render(
                &parts.extensions,
                AuthError::new(
                    AuthErrorKind::InsufficientScope {
                        required: T::SCOPES.join(" ").into(),
                    },
                    challenge,
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::DefaultRejection;

    #[test]
    fn a_scope_set_names_scopes_each_a_scope_token() {
        assert!(valid_scope_set(&["read"]));
        assert!(valid_scope_set(&["read", "write:flags"]));
        assert!(!valid_scope_set(&[]));
        assert!(!valid_scope_set(&["read", "write flags"]));
        assert!(!valid_scope_set(&["read", ""]));
        assert!(!valid_scope_set(&["read flags"]));
    }

    /// `Option<ClientId>`: the client of a verified caller; `None` for an
    /// anonymous one (optional layer).
    #[tokio::test]
    async fn an_optional_client_id_is_the_callers() {
        let parts = |principal: Option<Principal>| {
            let (mut parts, ()) = http::Request::new(()).into_parts();
            crate::context::hand_off(
                &mut parts.extensions,
                crate::context::ContextCell::default().get::<axum::body::Body, _>(
                    &Arc::new(Challenge::default()),
                    &Arc::new(DefaultRejection),
                ),
            );
            if let Some(p) = principal {
                parts.extensions.insert(p);
            }
            parts
        };
        let caller = crate::principal::tests::with_claims(r#"{"sub":"c"}"#);
        let mut verified = parts(Some(caller));
        let got =
            <ClientId as OptionalFromRequestParts<()>>::from_request_parts(&mut verified, &())
                .await
                .unwrap();
        assert_eq!(got, Some(ClientId("c".into())));
        let mut anonymous = parts(None);
        let got =
            <ClientId as OptionalFromRequestParts<()>>::from_request_parts(&mut anonymous, &())
                .await
                .unwrap();
        assert_eq!(got, None);
    }
}
