//! DPoP in the test kit: a client's key pair that binds tokens and signs
//! proofs, so routes behind a DPoP-enabled layer can be tested.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use serde_json::{Map, Value, json};
use std::time::Duration;

use super::TestClock;
use crate::dpop::{sha256_b64, thumbprint};

/// Two fixed EC P-256 key pairs (test material, never secret): their
/// PKCS#8 PEM and public `x`, `y`.
const KEYS: [(&str, &str, &str); 2] = [
    (
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjV6HhPh5Bl70Po2f\nUTQLDv2LPr2CHfOvnh7926DTYJuhRANCAAQnhRaDf4ht30Ib3R5XTHXZZgpmiKGk\n4Kd8CIzYZIGTIzhKh1Z63VwqWfwl1A2O6hghX+9Oky0FWwF9GJOy2xel\n-----END PRIVATE KEY-----\n",
        "J4UWg3-Ibd9CG90eV0x12WYKZoihpOCnfAiM2GSBkyM",
        "OEqHVnrdXCpZ_CXUDY7qGCFf706TLQVbAX0Yk7LbF6U",
    ),
    (
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRfnzEe90iE45SfUd\nVV1Xa3hoTCdItjUpFe+mdfM2ZLKhRANCAASPw45aUpFVPWukvQaZ6cDANh+GyHuo\nxpiAV+yiqYDX8b/FQyQNSiRr5u1HP6cGyYe8GwEE84ZOInLQOya0yjkM\n-----END PRIVATE KEY-----\n",
        "j8OOWlKRVT1rpL0GmenAwDYfhsh7qMaYgFfsoqmA1_E",
        "v8VDJA1KJGvm7Uc_pwbJh7wbAQTzhk4ictA7JrTKOQw",
    ),
];

/// A DPoP client key (EC P-256, ES256): bind tokens to it with
/// [`TokenBuilder::dpop_bound`](super::TokenBuilder::dpop_bound) and sign
/// proofs with [`DpopKey::proof`].
///
/// ```no_run
/// # async fn run() {
/// use m2m_guard::test_util::{DpopKey, TestIssuer};
///
/// let issuer = TestIssuer::start().await;
/// let key = DpopKey::new();
/// let token = issuer.token().dpop_bound(&key).sign();
/// let proof = key.proof("GET", "https://api.example.test/orders").for_token(&token).sign();
/// // GET /orders with `Authorization: DPoP <token>` and `DPoP: <proof>`.
/// # }
/// ```
#[derive(Clone)]
pub struct DpopKey {
    encoding: EncodingKey,
    jwk: Map<String, Value>,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey").field("jkt", &self.jkt()).finish()
    }
}

impl Default for DpopKey {
    fn default() -> Self {
        DpopKey::new()
    }
}

impl DpopKey {
    /// The first test key.
    pub fn new() -> Self {
        Self::nth(0)
    }

    /// Another key (an attacker's, or a second client's).
    pub fn other() -> Self {
        Self::nth(1)
    }

    fn nth(i: usize) -> Self {
        let (pem, x, y) = KEYS[i];
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("a bundled test key");
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
        DpopKey {
            encoding,
            jwk: jwk.as_object().cloned().unwrap_or_default(),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        Value::Object(self.jwk.clone())
    }

    /// The RFC 7638 thumbprint tokens bound to this key carry in `cnf.jkt`.
    pub fn jkt(&self) -> String {
        thumbprint(&self.jwk).unwrap_or_default()
    }

    /// Start a proof for a `method` request to `url` (the full URL the
    /// client calls), issued now on the system clock.
    pub fn proof(&self, method: &str, url: &str) -> ProofBuilder<'_> {
        ProofBuilder {
            key: self,
            claims: json!({
                "htm": method,
                "htu": url,
                "jti": format!("jti-{:032x}", fastrand::u128(..)),
                "iat": crate::claims::now_secs(),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            header: json!({"typ": "dpop+jwt", "alg": "ES256"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            with_jwk: true,
        }
    }
}

/// A DPoP proof being built; see [`DpopKey::proof`].
#[derive(Debug)]
pub struct ProofBuilder<'a> {
    key: &'a DpopKey,
    claims: Map<String, Value>,
    header: Map<String, Value>,
    with_jwk: bool,
}

impl ProofBuilder<'_> {
    /// Bind the proof to `token` (`ath`), as every proof sent with an
    /// access token must be.
    pub fn for_token(mut self, token: &str) -> Self {
        self.claims
            .insert("ath".into(), sha256_b64(token.as_bytes()).into());
        self
    }

    /// Issue it at the time of `clock` (a verifier on that clock).
    pub fn on_clock(self, clock: &TestClock) -> Self {
        self.claim("iat", clock.unix_secs())
    }

    fn shift_iat(self, by: i64) -> Self {
        let iat = self.claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
        self.claim("iat", iat.saturating_add(by))
    }

    /// Issued `ago` before now (an old proof).
    pub fn issued_ago(self, ago: Duration) -> Self {
        self.shift_iat(-i64::try_from(ago.as_secs()).unwrap_or(i64::MAX))
    }

    /// Issued `ahead` after now (a client clock running ahead).
    pub fn issued_in(self, ahead: Duration) -> Self {
        self.shift_iat(i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX))
    }

    /// Set a claim (`jti`, `htm`, `htu`, `ath`, `nonce`, …).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Remove a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Set a header member (`typ`, `alg`, …; `jwk` replaces the key's).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.into(), value.into());
        self
    }

    /// Send no `jwk` in the header.
    pub fn without_jwk(mut self) -> Self {
        self.with_jwk = false;
        self
    }

    /// Sign with the key (ES256, whatever `alg` the header names).
    pub fn sign(self) -> String {
        let mut header = self.header;
        if self.with_jwk && !header.contains_key("jwk") {
            header.insert("jwk".into(), self.key.jwk());
        }
        let claims = self.claims;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &self.key.encoding,
            jsonwebtoken::Algorithm::ES256,
        )
        .expect("signing with a bundled key");
        format!("{input}.{sig}")
    }
}
