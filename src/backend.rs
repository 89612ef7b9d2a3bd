//! Crypto backend selection for jsonwebtoken.
//!
//! jsonwebtoken picks its provider from its own features and panics on first
//! use when both or neither are on. Cargo unifies features across a build, so
//! "both" happens whenever two crates in a tree choose differently: then we
//! install aws-lc-rs explicitly, before any verification.

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "m2m-guard needs a crypto backend: enable the `aws-lc-rs` (default) or the `rust-crypto` feature"
);

/// Make sure jsonwebtoken has a process-wide crypto provider.
pub(crate) fn ensure_provider() {
    #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means a provider is already installed (by the application): keep it.
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        });
    }
}
