//! Splitting and decoding a compact JWS without trusting any of it; its
//! JSON is read with the strict parser of [`crate::json`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::fmt;

use crate::json::{Object, parse_object};
use crate::rejection::{Reason, Rejection};

/// The algorithms m2m-guard verifies: asymmetric only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA on Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name, e.g. `"RS256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parse a JOSE name exactly (case-sensitive, as RFC 7515 requires).
    /// Returns `None` for `none`, HS*, and anything unsupported.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    // Used by the rust-crypto backend and by test-util.
    #[allow(dead_code)]
    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }

    pub(crate) fn is_rsa(self) -> bool {
        matches!(
            self,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protected header fields m2m-guard looks at.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) typ: Option<String>,
}

/// A compact JWS split and decoded, signature not yet verified.
#[derive(Debug)]
pub(crate) struct Unverified<'a> {
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    pub(crate) signing_input: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) header: Header,
    pub(crate) claims: Object,
}

/// The longest `kid` accepted; real issuers use well under 100 bytes.
const MAX_KID_LEN: usize = 256;

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Split, decode and parse `token`. Does no cryptography.
pub(crate) fn parse(token: &str, max_len: usize) -> Result<Unverified<'_>, Rejection> {
    if token.len() > max_len {
        return Err(Rejection::new(Reason::TooLarge));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Rejection::new(Reason::Malformed));
    };
    match parts.count() {
        0 => {}
        // Five segments is the JWE compact form (RFC 7516 §7.1).
        2 => return Err(Rejection::new(Reason::Encrypted)),
        _ => return Err(Rejection::new(Reason::Malformed)),
    }
    // An empty header or payload fails to decode to a JSON object below; an
    // empty signature must not get as far as a signature check.
    if s.is_empty() || !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(Rejection::new(Reason::Malformed));
    }
    let header = parse_header(&decode_object(h)?)?;
    let claims = decode_object(p)?;
    Ok(Unverified {
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
        header,
        claims,
    })
}

fn decode_object(segment: &str) -> Result<Object, Rejection> {
    // The strict engine rejects padding and non-canonical trailing bits, so a
    // token has exactly one accepted encoding.
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::new(Reason::Malformed))?;
    parse_object(&bytes).ok_or_else(|| Rejection::new(Reason::Malformed))
}

fn parse_header(obj: &Object) -> Result<Header, Rejection> {
    if obj.contains_key("crit") {
        // RFC 7515 §4.1.11: we understand no extension, so any `crit` is fatal.
        return Err(Rejection::new(Reason::UnsupportedCritical));
    }
    let alg = match obj.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| Rejection::new(Reason::UnsupportedAlgorithm))?,
        Some(_) => return Err(Rejection::new(Reason::Malformed)),
        None => return Err(Rejection::new(Reason::Malformed)),
    };
    if obj.get("enc").is_some() {
        return Err(Rejection::new(Reason::Encrypted));
    }
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KID_LEN => Some(k.clone()),
        Some(_) => return Err(Rejection::new(Reason::Malformed)),
    };
    let typ = match obj.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(Rejection::new(Reason::InvalidType)),
    };
    // `b64: false` (RFC 7797) changes what is signed: refuse it outright.
    if obj.contains_key("b64") {
        return Err(Rejection::new(Reason::UnsupportedCritical));
    }
    Ok(Header { alg, kid, typ })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(h: &str, p: &str) -> String {
        format!("{}.{}.c2ln", b64(h), b64(p))
    }

    #[test]
    fn algorithms_print_their_jose_names() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string(), alg.as_str());
            assert_eq!(Algorithm::from_name(&alg.to_string()), Some(alg));
        }
        assert_eq!(Algorithm::PS384.to_string(), "PS384");
    }

    #[test]
    fn segment_counts() {
        let h = r#"{"alg":"RS256"}"#;
        let good = tok(h, "{}");
        assert!(parse(&good, 10_000).is_ok());
        assert_eq!(parse("a.b", 100).unwrap_err().reason(), Reason::Malformed);
        assert_eq!(
            parse("a.b.c.d", 100).unwrap_err().reason(),
            Reason::Malformed
        );
        assert_eq!(
            parse("a.b.c.d.e", 100).unwrap_err().reason(),
            Reason::Encrypted
        );
        assert_eq!(
            parse(&format!("{good}."), 10_000).unwrap_err().reason(),
            Reason::Malformed
        );
    }

    #[test]
    fn padding_and_non_canonical_base64_are_rejected() {
        let h = b64(r#"{"alg":"RS256"}"#);
        assert!(parse(&format!("{h}=.e30.c2ln"), 100).is_err());
        // "e30" is "{}"; "e31" has non-zero trailing bits and decodes to the same bytes.
        assert!(parse(&format!("{h}.e30.c2ln"), 100).is_ok());
        assert!(parse(&format!("{h}.e31.c2ln"), 100).is_err());
        assert!(parse(&format!("{h}.e3+.c2ln"), 100).is_err());
    }

    #[test]
    fn algorithms_are_exact_and_asymmetric() {
        for bad in [
            "none", "None", "NONE", "nOnE", "HS256", "HS384", "HS512", "rs256", "ES512", "",
        ] {
            let t = tok(&format!(r#"{{"alg":"{bad}"}}"#), "{}");
            assert_eq!(
                parse(&t, 10_000).unwrap_err().reason(),
                Reason::UnsupportedAlgorithm,
                "{bad}"
            );
        }
        let t = tok(r#"{"alg":["RS256"]}"#, "{}");
        assert_eq!(parse(&t, 10_000).unwrap_err().reason(), Reason::Malformed);
    }

    #[test]
    fn crit_and_b64_are_rejected() {
        let t = tok(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}");
        assert_eq!(
            parse(&t, 10_000).unwrap_err().reason(),
            Reason::UnsupportedCritical
        );
        let t = tok(r#"{"alg":"RS256","b64":false}"#, "{}");
        assert_eq!(
            parse(&t, 10_000).unwrap_err().reason(),
            Reason::UnsupportedCritical
        );
    }

    #[test]
    fn kid_must_be_a_short_string() {
        let long = "k".repeat(MAX_KID_LEN + 1);
        for kid in [
            format!("\"{long}\""),
            "1".into(),
            "null".into(),
            "\"\"".into(),
        ] {
            let t = tok(&format!(r#"{{"alg":"RS256","kid":{kid}}}"#), "{}");
            assert_eq!(parse(&t, 100_000).unwrap_err().reason(), Reason::Malformed);
        }
    }

    #[test]
    fn size_limit_is_checked_first() {
        let t = tok(r#"{"alg":"RS256"}"#, "{}");
        assert_eq!(
            parse(&t, t.len() - 1).unwrap_err().reason(),
            Reason::TooLarge
        );
    }
}
