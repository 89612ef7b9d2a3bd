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
//! use m2m_guard::{Issuer, M2mAuthLayer, Principal, Preset, RequireScope, Verifier};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .issuer(Issuer::new("https://acme.kinde.com").audience("https://api.acme.com").preset(Preset::Kinde))
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
//!   client-credentials side for outgoing calls (secrets or `private_key_jwt`,
//!   DPoP-bound tokens).
//! - `mcp`: [`mcp::McpScopes`], per-tool scopes for MCP servers.
//! - `redis`: [`fleet::Fleet`]: revocations across replicas, a shared DPoP
//!   replay store, warm starts, on Redis or Valkey.
//! - `metrics`: counters and gauges through the `metrics` facade (see
//!   [`metrics`]); [`Verifier::health`] and the readiness rule need no feature.
//! - `test-util`: [`test_util::TestIssuer`], an issuer on loopback for tests and demos, and [`test_util::TestClock`], time under the test's control.
//!
//! # Module map
//! One concern per file (`src/`):
//!
//! | file | holds |
//! |---|---|
//! | `verifier.rs` | [`Verifier`]: parse, pick the issuer, claim rules, key, signature; the cache in front |
//! | `config.rs` | [`Issuer`] and [`VerifierBuilder`]: settings and their bounds |
//! | `preset.rs` | [`Preset`]: one row of claim names and rules per identity provider |
//! | `claims.rs` | the claim rules (time, audience, types, required claims, allow-list) and the principal they read |
//! | `cache.rs` | the verified-token cache and its admission filter |
//! | `clock.rs` | the verifier's clock: real time, or skewed forward by a test's `TestClock` |
//! | `token.rs` | splitting and decoding a compact JWS; [`Algorithm`] |
//! | `json.rs` | the strict JSON parser every remote document goes through |
//! | `jwks.rs` | key sets: parsing, key binding, lookup |
//! | `crypto.rs` | the crypto backends and keys prepared at load |
//! | `keystore.rs` | one issuer's key set: cached, refreshed, refetched, kept when stale |
//! | `fetch.rs` | bounded HTTP for metadata, key sets and token responses; discovery; URL policy |
//! | `flight.rs` | single-flight tasks (key store and client) |
//! | `backoff.rs` | backoff with jitter and saturating time arithmetic |
//! | `text.rs` | remote text made safe for logs and errors |
//! | `error.rs` | [`BuildError`], [`FetchError`] |
//! | `rejection.rs` | [`Rejection`] and [`Reason`], one row per reason |
//! | `response.rs` | [`AuthError`]: rejections as RFC 6750 responses; [`OnRejection`], [`GrpcRejection`] |
//! | `bearer.rs` | finding the bearer token in a request |
//! | `layer.rs` | [`M2mAuthLayer`], the tower layer |
//! | `guard.rs` | [`RequireScope`], [`RequireTenant`], [`Rule`] and its [`Denial`]s |
//! | `context.rs` | the request-extension hand-off from the layer to guards and extractors |
//! | `extract.rs` | axum extractors |
//! | `principal.rs` | [`Principal`], [`Scopes`] |
//! | `metrics.rs`, `health.rs` | the `metrics` feature's counters and gauges; [`Health`] and the readiness rule |
//! | `revocation.rs` | [`Revocations`], [`Revocation`]: the in-memory revocation list every request is checked against |
//! | `fleet.rs` | the `redis` feature: [`fleet::Fleet`] keeps revocations, DPoP replays and key sets shared across replicas |
//! | `dpop.rs`, `mtls.rs` | sender-constrained tokens: [`Dpop`] proofs and replay stores; [`Mtls`] certificate binding |
//! | `metadata.rs` | [`ProtectedResource`]: RFC 9728 metadata |
//! | `client/` | the `client` feature: token provider, outgoing layer |
//! | `test_util/` | the `test-util` feature: [`test_util::TestIssuer`], [`test_util::TestClock`] |
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner: S`
/// (as tower-http does for its own).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, unwrapped.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
pub(crate) use inner_service_accessors;

mod backoff;
mod bearer;
mod cache;
mod claims;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod clock;
mod config;
mod context;
mod crypto;
mod dpop;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod fetch;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
mod flight;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod health;
mod hierarchy;
mod json;
mod jwks;
mod keystore;
mod layer;
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub mod mcp;
mod metadata;
pub mod metrics;
mod mtls;
mod preset;
mod principal;
mod rejection;
mod response;
mod revocation;
mod tenant;
mod text;
mod token;
mod verifier;

pub use config::{Issuer, MAX_LEEWAY, VerifierBuilder};
pub use dpop::{Dpop, MemoryReplayStore, ReplayStore, ReplayStoreError};
pub use error::{BuildError, FetchError};
#[cfg(feature = "axum")]
pub use extract::{ClientId, ScopeSet, Scoped, Tenant};
pub use guard::{Check, Denial, RequireScope, RequireTenant, Rule};
pub use health::{Health, IssuerHealth, RevocationHealth};
pub use hierarchy::ScopeHierarchy;
pub use layer::M2mAuthLayer;
pub use metadata::ProtectedResource;
pub use mtls::{ClientCertificate, Mtls};

/// The services the layers build, to name them in types.
pub mod service {
    pub use crate::guard::Guarded;
    pub use crate::layer::M2mAuth;
    pub use crate::metadata::MetadataService;
}

/// The response futures of those services.
pub mod future {
    pub use crate::guard::GuardFuture;
    pub use crate::layer::ResponseFuture;
}
pub use preset::Preset;
pub use principal::{Principal, Scopes};
pub use rejection::{Reason, Rejection};
pub use response::{AuthError, AuthErrorKind, DefaultRejection, GrpcRejection, OnRejection};
pub use revocation::{Revocation, Revocations, WhenStale};
pub use token::Algorithm;
pub use verifier::Verifier;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
