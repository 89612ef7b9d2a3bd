//! # m2m-guard
//!
//! Verify OAuth 2.0 machine-to-machine (client-credentials) JWT access tokens
//! locally, without calling the issuer per request, as a tower [`Layer`](tower_layer::Layer).
//!
//! - [`Verifier`]: trusted issuers ([`Issuer`]), their cached key sets, and
//!   [`Verifier::verify`] returning a [`Principal`] or a [`Rejection`].
//! - [`M2mAuthLayer`]: the tower layer; the principal goes into request
//!   extensions, failures become RFC 6750 responses ([`AuthError`]).
//! - [`RequireScope`], [`RequireTenant`]: per-route guards for `route_layer`.
//! - [`ProtectedResource`]: RFC 9728 metadata for the `resource_metadata` challenge.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use m2m_guard::{Issuer, M2mAuthLayer, Principal, Provider, RequireScope, Verifier};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .issuer(Issuer::new("https://acme.kinde.com").audience("https://api.acme.com").provider(Provider::Kinde))
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/flags", get(|p: Principal| async move { format!("{:?}", p.tenant()) }))
//!     .route_layer(RequireScope::all(["read:flags"]))
//!     .route_layer(M2mAuthLayer::new(verifier));
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! - `aws-lc-rs` (default): signature verification with aws-lc-rs.
//! - `rust-crypto`: signature verification with the RustCrypto crates.
//!   With neither, the build fails with a clear message; with both, aws-lc-rs is used.
//! - `axum` (default): axum extractors ([`Principal`], [`Tenant`], [`ClientId`],
//!   [`Scopes`], [`Scoped`]) and [`RequireTenant::path_param`].
//! - `client`: [`client::TokenProvider`] and [`client::BearerTokenLayer`], the
//!   client-credentials side for outgoing calls.
//! - `test-util`: [`test_util::TestIssuer`], an issuer on loopback for tests and demos.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod backoff;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod config;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod fetch;
mod flight;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod jwks;
mod keystore;
mod layer;
mod metadata;
mod prepared;
mod principal;
mod provider;
mod rejection;
mod text;
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
pub use rejection::{AuthError, AuthErrorKind, DefaultRejection, GrpcRejection, OnRejection};
pub use token::Algorithm;
pub use verifier::Verifier;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
