//! The other half of M2M: getting client-credentials tokens for outgoing
//! calls (feature `client`).
//!
//! [`TokenProvider`] keeps one token in memory per provider, refreshes it
//! before it expires (with jitter, in the background: a caller never waits
//! while the cached token is still valid), shares one token request among
//! concurrent callers, backs off on 429 / 5xx honouring `Retry-After`, and
//! parses OAuth errors into [`OAuthErrorCode`]s. [`BearerTokenLayer`] adds
//! the token to outgoing requests and retries once with a fresh token on 401.
//!
//! Without a shared secret: authenticate with `private_key_jwt` by passing a
//! [`SigningKey`] instead of a [`ClientSecret`]. Sender-constrained tokens:
//! [`TokenProviderBuilder::dpop`] gets DPoP-bound tokens (RFC 9449), and the
//! layer then signs a fresh proof for every request, answering the server's
//! `use_dpop_nonce` once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use m2m_guard::client::{BearerTokenLayer, SigningKey, TokenProvider};
//! use m2m_guard::Algorithm;
//!
//! let client_key = SigningKey::from_pem(&std::fs::read("billing-sync.pem")?, Algorithm::ES256)?
//!     .with_kid("billing-sync-2026");
//! let provider = TokenProvider::builder("billing-sync", client_key)
//!     .issuer("https://auth.acme.com")
//!     .resource("https://api.acme.com")
//!     .dpop(SigningKey::generate()?)
//!     .build()
//!     .await?;
//! let layer = BearerTokenLayer::new(provider);
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use m2m_guard::client::{BearerTokenLayer, ClientSecret, TokenProvider};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let provider = TokenProvider::builder("billing-sync", ClientSecret::from_env("BILLING_SYNC_SECRET")?)
//!     .token_url("https://acme.kinde.com/oauth2/token")
//!     .audience("https://api.acme.com")
//!     .scopes(["read:users"])
//!     .build()
//!     .await?;
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerTokenLayer::new(provider))
//!     .service(reqwest::Client::new());
//! let req = reqwest::Request::new(reqwest::Method::GET, "https://api.acme.com/v1/users".parse()?);
//! let resp = client.ready().await?.call(req).await?;
//! # Ok(()) }
//! ```

mod key;
mod layer;
mod token_provider;

/// The `reqwest` this feature is built with: [`BearerTokenLayer`] wraps its
/// `Client`, and [`TokenProviderBuilder::http_client`] takes its
/// `ClientBuilder`, so use this one (or the same major version).
pub use reqwest;

pub use key::SigningKey;
pub use layer::{BearerToken, BearerTokenLayer, OutgoingRequest, OutgoingResponse};
pub use token_provider::{
    AccessToken, AudienceParam, ClientAuth, ClientCredential, ClientError, ClientSecret,
    OAuthErrorCode, TokenProvider, TokenProviderBuilder,
};
