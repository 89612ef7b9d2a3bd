//! # m2m-guard
//!
//! Verify OAuth 2.0 machine-to-machine (client-credentials) JWT access tokens
//! locally, without calling the issuer per request.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod error;
mod fetch;
mod jwks;
mod keystore;
mod principal;
mod provider;
mod token;
mod verifier;

pub use config::{Issuer, MAX_LEEWAY, VerifierBuilder};
pub use error::{BuildError, FetchError, Reason, Rejection};
pub use principal::{Principal, Scopes};
pub use provider::Provider;
pub use token::Algorithm;
pub use verifier::Verifier;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
