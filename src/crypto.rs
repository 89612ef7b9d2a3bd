//! The crypto backends, in one place: which one verifies signatures, and
//! verification keys prepared once, when a key set is loaded.
//!
//! jsonwebtoken picks its provider from its own features and panics on first
//! use when both or neither are on. Cargo unifies features across a build, so
//! "both" happens whenever two crates in a tree choose differently: then we
//! install aws-lc-rs explicitly, before any verification.
//!
//! With the `aws-lc-rs` backend the public key is parsed into an aws-lc-rs
//! `ParsedPublicKey` per (key, algorithm), so a request pays for the
//! signature check only (jsonwebtoken's own path rebuilds the key from its
//! components on every call). With `rust-crypto` alone, jsonwebtoken's
//! `DecodingKey` is used.

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!(
    "m2m-guard needs a crypto backend: enable the `aws-lc-rs` (default) or the `rust-crypto` feature"
);

/// Make sure jsonwebtoken has a process-wide crypto provider.
pub(crate) fn ensure_backend() {
    #[cfg(all(feature = "aws-lc-rs", feature = "rust-crypto"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means a provider is already installed (by the application): keep it.
            let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        });
    }
}

use crate::token::Algorithm;

/// The public numbers of a key, as decoded from its JWK.
pub(crate) enum Material<'a> {
    Rsa { n: &'a [u8], e: &'a [u8] },
    Ec { x: &'a [u8], y: &'a [u8] },
    Ed { x: &'a [u8] },
}

#[cfg(feature = "aws-lc-rs")]
mod imp {
    use super::Material;
    use crate::token::Algorithm;
    use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};

    pub(crate) struct Prepared(ParsedPublicKey);

    fn der_len(n: usize, out: &mut Vec<u8>) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    fn der_uint(v: &[u8], out: &mut Vec<u8>) {
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push(0x02);
        der_len(v.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }

    /// RFC 8017 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
    fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(n.len() + e.len() + 16);
        der_uint(n, &mut body);
        der_uint(e, &mut body);
        let mut out = vec![0x30];
        der_len(body.len(), &mut out);
        out.extend(body);
        out
    }

    pub(crate) fn prepare(m: &Material<'_>, alg: Algorithm) -> Option<Prepared> {
        let algorithm: &'static dyn VerificationAlgorithm = match alg {
            Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &sig::ED25519,
        };
        let bytes = match m {
            Material::Rsa { n, e } => rsa_public_key_der(n, e),
            Material::Ec { x, y } => [&[0x04][..], x, y].concat(),
            Material::Ed { x } => x.to_vec(),
        };
        ParsedPublicKey::new(algorithm, bytes).ok().map(Prepared)
    }

    impl Prepared {
        pub(crate) fn verify(&self, _alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
            self.0.verify_sig(message, signature).is_ok()
        }
    }
}

#[cfg(not(feature = "aws-lc-rs"))]
mod imp {
    use super::Material;
    use crate::token::Algorithm;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::DecodingKey;

    pub(crate) struct Prepared(DecodingKey);

    pub(crate) fn prepare(m: &Material<'_>, _alg: Algorithm) -> Option<Prepared> {
        let key = match m {
            Material::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            Material::Ec { x, y } => {
                // jsonwebtoken does not check the point here: refuse one off the curve now.
                let sec1 = [&[0x04][..], x, y].concat();
                let on_curve = match x.len() {
                    32 => p256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
                    48 => p384::PublicKey::from_sec1_bytes(&sec1).is_ok(),
                    _ => false,
                };
                if !on_curve {
                    return None;
                }
                DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(x),
                    &URL_SAFE_NO_PAD.encode(y),
                )
                .ok()?
            }
            Material::Ed { x } => {
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x)).ok()?
            }
        };
        Some(Prepared(key))
    }

    impl Prepared {
        pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
            let sig = URL_SAFE_NO_PAD.encode(signature);
            jsonwebtoken::crypto::verify(&sig, message, &self.0, alg.to_jwt()).unwrap_or(false)
        }
    }
}

pub(crate) use imp::Prepared;

/// Prepare `m` for each of `algs`; `None` if any of them rejects the key.
pub(crate) fn prepare_all(
    m: &Material<'_>,
    algs: &[Algorithm],
) -> Option<Vec<(Algorithm, Prepared)>> {
    algs.iter()
        .map(|&a| imp::prepare(m, a).map(|p| (a, p)))
        .collect()
}
