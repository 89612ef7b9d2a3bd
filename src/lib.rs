//! # m2m-guard
//!
//! Verify OAuth 2.0 machine-to-machine (client-credentials) JWT access tokens
//! locally, without calling the issuer per request.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod fetch;
mod guard;
mod jwks;
mod keystore;
mod layer;
mod metadata;
mod principal;
mod provider;
mod rejection;
mod token;
mod verifier;

pub use config::{Issuer, MAX_LEEWAY, VerifierBuilder};
pub use error::{BuildError, FetchError, Reason, Rejection};
#[cfg(feature = "axum")]
pub use extract::{ClientId, ScopeSet, Scoped, Tenant};
pub use guard::{Check, GuardFuture, Guarded, RequireScope, RequireTenant};
pub use layer::{M2mAuth, M2mAuthLayer, ResponseFuture};
pub use metadata::{MetadataService, ProtectedResource};
pub use principal::{Principal, Scopes};
pub use provider::Provider;
pub use rejection::{AuthError, AuthErrorKind, DefaultRejection, OnRejection};
pub use token::Algorithm;
pub use verifier::Verifier;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
