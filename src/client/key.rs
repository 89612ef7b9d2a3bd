//! The client's private key: it signs DPoP proofs (RFC 9449) and
//! `private_key_jwt` client assertions (RFC 7523).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};
use std::fmt;
use std::sync::Arc;

use super::token_provider::ClientError;
use crate::Algorithm;
use crate::dpop::{sha256_b64, thumbprint};

/// How long a client assertion is valid: RFC 7523 asks for a short life,
/// and one is made per token request.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// A private key that signs DPoP proofs
/// ([`TokenProviderBuilder::dpop`](super::TokenProviderBuilder::dpop)) or
/// authenticates the client at the token endpoint with `private_key_jwt`
/// (pass it to [`TokenProvider::builder`](super::TokenProvider::builder)
/// instead of a secret).
///
/// Cheap to clone. Its `Debug` shows the algorithm, the `kid` and the
/// public key's thumbprint, never the private key.
///
/// ```no_run
/// # fn run() -> Result<(), m2m_guard::client::ClientError> {
/// use m2m_guard::client::SigningKey;
/// use m2m_guard::Algorithm;
///
/// // A DPoP key: fresh for each process, never stored.
/// let dpop = SigningKey::generate()?;
/// // A private_key_jwt key: its public half is registered with the issuer.
/// let pem = std::fs::read("client-key.pem").expect("the key file");
/// let auth = SigningKey::from_pem(&pem, Algorithm::ES256)?.with_kid("2026-11");
/// println!("register: {}", auth.public_jwk());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    encoding: EncodingKey,
    alg: Algorithm,
    /// The public key's members only (`kty`, `crv`, `x`, `y`, `n`, `e`).
    jwk: Map<String, Value>,
    jkt: String,
    kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.inner.alg)
            .field("kid", &self.inner.kid)
            .field("jkt", &self.inner.jkt)
            .finish_non_exhaustive()
    }
}

fn config(message: impl Into<String>) -> ClientError {
    ClientError::Config(message.into())
}

impl SigningKey {
    /// A fresh EC P-256 key (ES256), held in memory only: the usual DPoP
    /// key, made when the process starts. Tokens bound to it die with it.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the system's random source fails.
    pub fn generate() -> Result<Self, ClientError> {
        Self::from_encoding_key(
            EncodingKey::from_ec_der(&generate_p256_pkcs8()?),
            Algorithm::ES256,
        )
    }

    /// A PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`; RSA also as
    /// `BEGIN RSA PRIVATE KEY`) for `alg`: ES256 (P-256), ES384 (P-384),
    /// RS256/384/512 or PS256/384/512 (RSA, at least 2048 bits), EdDSA
    /// (Ed25519). A key that does not fit `alg` is refused here, by signing
    /// and verifying a probe, not at the first token request.
    ///
    /// # Errors
    /// [`ClientError::Config`] for an unsupported algorithm, a malformed key,
    /// or a key that does not fit `alg` (the message never shows the key).
    pub fn from_pem(pem: &[u8], alg: Algorithm) -> Result<Self, ClientError> {
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        };
        let key =
            parsed.map_err(|_| config(format!("the PEM is not a valid {alg} private key")))?;
        Self::from_encoding_key(key, alg)
    }

    fn from_encoding_key(encoding: EncodingKey, alg: Algorithm) -> Result<Self, ClientError> {
        let unfit = || config(format!("the private key does not fit {alg}"));
        let public = Jwk::from_encoding_key(&encoding, alg.to_jwt()).map_err(|_| unfit())?;
        let Ok(Value::Object(all)) = serde_json::to_value(&public) else {
            return Err(unfit());
        };
        let jwk: Map<String, Value> = all
            .into_iter()
            .filter(|(k, _)| matches!(k.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"))
            .collect();
        if let Some(Value::String(n)) = jwk.get("n") {
            let bits = URL_SAFE_NO_PAD
                .decode(n)
                .ok()
                .and_then(|n| modulus_bits(&n))
                .ok_or_else(unfit)?;
            if bits < 2048 {
                return Err(config(format!(
                    "an RSA key of {bits} bits is too short: at least 2048"
                )));
            }
        }
        let jkt = thumbprint(&jwk).ok_or_else(unfit)?;
        let key = SigningKey {
            inner: Arc::new(KeyInner {
                encoding,
                alg,
                jwk,
                jkt,
                kid: None,
            }),
        };
        key.self_test().map_err(|()| unfit())?;
        Ok(key)
    }

    /// Sign a probe and verify it with the public half: a key that does not
    /// fit its algorithm (a P-384 key for ES256) fails here, not at the
    /// issuer.
    fn self_test(&self) -> Result<(), ()> {
        let jwk: Jwk =
            serde_json::from_value(Value::Object(self.inner.jwk.clone())).map_err(drop)?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(drop)?;
        let probe = b"m2m-guard signing key probe";
        let sig = jsonwebtoken::crypto::sign(probe, &self.inner.encoding, self.inner.alg.to_jwt())
            .map_err(drop)?;
        match jsonwebtoken::crypto::verify(&sig, probe, &decoding, self.inner.alg.to_jwt()) {
            Ok(true) => Ok(()),
            _ => Err(()),
        }
    }

    /// The same key with a `kid`, sent in the header of client assertions
    /// so the issuer finds the key among those registered for the client.
    #[must_use]
    pub fn with_kid(self, kid: impl Into<String>) -> Self {
        let inner = &self.inner;
        SigningKey {
            inner: Arc::new(KeyInner {
                encoding: inner.encoding.clone(),
                alg: inner.alg,
                jwk: inner.jwk.clone(),
                jkt: inner.jkt.clone(),
                kid: Some(kid.into()),
            }),
        }
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The public key as a JWK with `alg`, `use` `sig` and the `kid` (if
    /// any): what to register with the issuer for `private_key_jwt`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.inner.jwk.clone();
        jwk.insert("alg".into(), self.inner.alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        if let Some(kid) = &self.inner.kid {
            jwk.insert("kid".into(), kid.clone().into());
        }
        Value::Object(jwk)
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key: the `cnf.jkt` of
    /// tokens bound to it.
    pub fn thumbprint(&self) -> &str {
        &self.inner.jkt
    }

    /// A compact JWS of `claims` with these header members (plus `alg`).
    fn sign(&self, mut header: Map<String, Value>, claims: &Value) -> Result<String, ClientError> {
        header.insert("alg".into(), self.inner.alg.as_str().into());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &self.inner.encoding,
            self.inner.alg.to_jwt(),
        )
        .map_err(|_| config("signing failed"))?;
        Ok(format!("{input}.{sig}"))
    }

    /// A DPoP proof (RFC 9449 §4.2) for a `method` request to `url` (its
    /// query and fragment are left out of `htu`), bound to `access_token`
    /// (`ath`) when one is sent, carrying the server's `nonce` when it gave
    /// one.
    pub(crate) fn dpop_proof(
        &self,
        method: &str,
        url: &reqwest::Url,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, ClientError> {
        // RFC 9449 §4.2: the URI without query and fragment; no userinfo
        // either (it is no part of what the server sees).
        let mut htu = url.clone();
        htu.set_query(None);
        htu.set_fragment(None);
        let _ = htu.set_username("");
        let _ = htu.set_password(None);
        let mut claims = json!({
            "jti": random_id()?,
            "htm": method,
            "htu": htu.as_str(),
            "iat": crate::claims::now_secs(),
        });
        if let Some(token) = access_token {
            claims["ath"] = sha256_b64(token.as_bytes()).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let mut header = Map::new();
        header.insert("typ".into(), "dpop+jwt".into());
        header.insert("jwk".into(), Value::Object(self.inner.jwk.clone()));
        self.sign(header, &claims)
    }

    /// A `private_key_jwt` client assertion (RFC 7523 §3): `iss` and `sub`
    /// the client id, `aud` the authorization server, a fresh `jti`, valid
    /// for 60 s.
    pub(crate) fn client_assertion(
        &self,
        client_id: &str,
        aud: &str,
    ) -> Result<String, ClientError> {
        let now = crate::claims::now_secs();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "jti": random_id()?,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        if let Some(kid) = &self.inner.kid {
            header.insert("kid".into(), kid.clone().into());
        }
        self.sign(header, &claims)
    }
}

/// The exact bit length of a big-endian RSA modulus; `None` for zero.
fn modulus_bits(n: &[u8]) -> Option<usize> {
    let n = &n[n.iter().position(|&b| b != 0)?..];
    Some((n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize))
}

/// 128 random bits, base64url: a `jti` nobody can guess or repeat.
fn random_id() -> Result<String, ClientError> {
    let mut id = [0u8; 16];
    getrandom::getrandom(&mut id).map_err(|_| config("the system's random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(id))
}

#[cfg(feature = "aws-lc-rs")]
fn generate_p256_pkcs8() -> Result<Vec<u8>, ClientError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map(|doc| doc.as_ref().to_vec())
    .map_err(|_| config("could not generate a P-256 key"))
}

#[cfg(not(feature = "aws-lc-rs"))]
fn generate_p256_pkcs8() -> Result<Vec<u8>, ClientError> {
    use p256::pkcs8::EncodePrivateKey as _;
    // A random scalar; the rare value outside the group order is drawn again.
    for _ in 0..8 {
        let mut bytes = zeroizing_bytes();
        getrandom::getrandom(&mut bytes[..])
            .map_err(|_| config("the system's random source failed"))?;
        if let Ok(secret) = p256::SecretKey::from_slice(&bytes[..]) {
            return secret
                .to_pkcs8_der()
                .map(|der| der.as_bytes().to_vec())
                .map_err(|_| config("could not encode a P-256 key"));
        }
    }
    Err(config("could not generate a P-256 key"))
}

#[cfg(not(feature = "aws-lc-rs"))]
fn zeroizing_bytes() -> p256::elliptic_curve::zeroize::Zeroizing<[u8; 32]> {
    p256::elliptic_curve::zeroize::Zeroizing::new([0u8; 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_sign() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert_ne!(a.thumbprint(), b.thumbprint());
        assert_eq!(a.public_jwk()["crv"], "P-256");
        assert!(a.public_jwk().get("d").is_none(), "no private member");
        assert!(format!("{a:?}").contains(a.thumbprint()));
    }

    #[test]
    fn rsa_modulus_bits_are_exact() {
        assert_eq!(modulus_bits(&[]), None);
        assert_eq!(modulus_bits(&[0, 0]), None);
        assert_eq!(modulus_bits(&[1]), Some(1));
        assert_eq!(modulus_bits(&[0, 0x80, 0]), Some(16));
        let mut n = vec![0xff; 256];
        assert_eq!(modulus_bits(&n), Some(2048));
        n[0] = 0x7f;
        assert_eq!(
            modulus_bits(&n),
            Some(2047),
            "not rounded up to whole bytes"
        );
        n[0] = 0x01;
        assert_eq!(modulus_bits(&n), Some(2041));
    }

    #[test]
    fn htu_has_no_query_fragment_or_userinfo() {
        let key = SigningKey::generate().unwrap();
        let url = reqwest::Url::parse("https://user:pw@API.example.test:443/a/b?q=1#f").unwrap();
        let proof = key.dpop_proof("GET", &url, None, None).unwrap();
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(proof.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["htu"], "https://api.example.test/a/b");
    }

    #[test]
    fn a_key_that_does_not_fit_its_algorithm_is_refused() {
        let p384 = include_str!("../test_util/keys/ec384_1.pem");
        let err = SigningKey::from_pem(p384.as_bytes(), Algorithm::ES256).unwrap_err();
        assert!(err.to_string().contains("does not fit ES256"), "{err}");
        assert!(SigningKey::from_pem(p384.as_bytes(), Algorithm::ES384).is_ok());
        let rsa = include_str!("../test_util/keys/rsa1.pem");
        for alg in [Algorithm::RS256, Algorithm::PS512] {
            SigningKey::from_pem(rsa.as_bytes(), alg).unwrap();
        }
        let err = SigningKey::from_pem(rsa.as_bytes(), Algorithm::ES256).unwrap_err();
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
        let ed = include_str!("../test_util/keys/ed1.pem");
        SigningKey::from_pem(ed.as_bytes(), Algorithm::EdDSA).unwrap();
    }
}
