//! Turning a JWKS document into verification keys, each bound to its algorithms.
//!
//! A key that cannot be used is skipped (RFC 7517 §5), never fatal: unknown
//! `kty`, `use: enc`, `key_ops` without `verify`, symmetric keys, weak RSA
//! moduli, numbers that do not decode to the right size, or JSON the strict
//! parser refuses inside that key alone, such as a duplicate member (RFC 7517
//! §4; the document around the keys is read strictly).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::{Material, Prepared, prepare_all};
use crate::error::FetchError;
use crate::json::parse_object_with_list;
use crate::token::Algorithm;

/// Smallest RSA modulus accepted (RFC 8725 §3.5 / NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds verification cost).
const MAX_RSA_BITS: usize = 8192;

/// One usable verification key.
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    /// The JWK's `issuer` member (Microsoft Entra): this key verifies only
    /// tokens of that issuer; `{tenantid}` in it stands for the token's tenant.
    pub(crate) issuer: Option<String>,
    /// Algorithms this key may verify (the JWK's `alg`, else its family),
    /// each with the key prepared for it.
    prepared: Vec<(Algorithm, Prepared)>,
    /// Process-unique identity of this key instance, for the token cache.
    pub(crate) id: u64,
    /// kid + algorithms + key material: equal fingerprints are the same key.
    fingerprint: Fingerprint,
}

/// What makes a key the same key across refreshes: compared field by field,
/// each key component on its own, so no two different keys can share one
/// (a joined string such as `n|e` could: `n = N|7C|01, e = 010001` and
/// `n = N, e = 01|7C|01|00|01` join to the same bytes).
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    kid: Option<String>,
    issuer: Option<String>,
    algs: Vec<Algorithm>,
    components: Vec<Vec<u8>>,
}

impl VerifyKey {
    /// Whether this key may verify `alg`.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        self.prepared.iter().any(|(a, _)| *a == alg)
    }

    /// Verify `signature` over `message` with `alg`; `false` for an
    /// algorithm this key is not bound to.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.prepared
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, p)| p.verify(alg, message, signature))
    }

    #[cfg(test)]
    fn algs(&self) -> Vec<Algorithm> {
        self.prepared.iter().map(|(a, _)| *a).collect()
    }
}

/// A parsed key set.
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    by_kid: HashMap<String, Vec<usize>>,
    /// How many entries the document held, usable or not.
    pub(crate) skipped: usize,
}

static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

/// How a key lookup went.
pub(crate) enum Lookup<'a> {
    Found(&'a VerifyKey),
    /// A key with this kid exists, but not for this algorithm.
    WrongAlgorithm,
    /// No key with this kid.
    UnknownKid,
    /// No kid in the token and not exactly one key for its alg.
    Ambiguous,
}

impl KeySet {
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let Some(idx) = self.by_kid.get(kid) else {
                    return Lookup::UnknownKid;
                };
                idx.iter()
                    .map(|&i| &self.keys[i])
                    .find(|k| k.allows(alg))
                    .map_or(Lookup::WrongAlgorithm, Lookup::Found)
            }
            None => {
                let mut it = self.keys.iter().filter(|k| k.allows(alg));
                match (it.next(), it.next()) {
                    (Some(k), None) => Lookup::Found(k),
                    _ => Lookup::Ambiguous,
                }
            }
        }
    }

    /// Whether a key instance with this identity is still in the set.
    pub(crate) fn contains_id(&self, id: u64) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Keep the identity of keys that did not change across a refresh, so a
    /// cached verification stays valid while its key is still published.
    pub(crate) fn inherit_ids(&mut self, previous: &KeySet) {
        for k in &mut self.keys {
            if let Some(old) = previous
                .keys
                .iter()
                .find(|o| o.fingerprint == k.fingerprint)
            {
                k.id = old.id;
            }
        }
    }
}

/// Parse a JWKS document. Fails only when the document itself is unusable:
/// not JSON, no `keys` array, too many keys, or no usable key at all.
pub(crate) fn parse_jwks(body: &[u8], max_keys: usize) -> Result<KeySet, FetchError> {
    // A key with a duplicate member is one unusable key (`None`), skipped
    // below like the others; the document around it is read strictly.
    let (_, entries) = parse_object_with_list(body, "keys")
        .ok_or_else(|| FetchError::Parse("key set is not a JSON object".into()))?;
    let Some(entries) = entries else {
        return Err(FetchError::Parse("key set has no \"keys\" array".into()));
    };
    if entries.len() > max_keys {
        return Err(FetchError::TooManyKeys {
            count: entries.len(),
            limit: max_keys,
        });
    }
    let mut keys = Vec::new();
    let mut by_kid: HashMap<String, Vec<usize>> = HashMap::new();
    let mut skipped = 0;
    for entry in entries {
        match entry.and_then(|jwk| parse_jwk(&Value::Object(jwk))) {
            Some(key) => {
                if let Some(kid) = &key.kid {
                    by_kid.entry(kid.clone()).or_default().push(keys.len());
                }
                keys.push(key);
            }
            None => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys);
    }
    Ok(KeySet {
        keys,
        by_kid,
        skipped,
    })
}

fn str_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ()> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

fn b64_field(obj: &serde_json::Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    let s = str_field(obj, name).ok()??;
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// One JWK as a verification key (a DPoP proof's `jwk`): the same checks
/// as a key-set entry.
pub(crate) fn key_from_jwk(jwk: &Value) -> Option<VerifyKey> {
    parse_jwk(jwk)
}

fn parse_jwk(entry: &Value) -> Option<VerifyKey> {
    let obj = entry.as_object()?;
    let kty = str_field(obj, "kty").ok()??;
    let kid = str_field(obj, "kid").ok()?.map(str::to_owned);
    // A key scoped to an issuer is bound to it; a scope we cannot read
    // makes the key unusable rather than unscoped.
    let issuer = str_field(obj, "issuer").ok()?.map(str::to_owned);
    if let Some(u) = str_field(obj, "use").ok()?
        && u != "sig"
    {
        return None;
    }
    // `key_ops`, when present, must name `verify` (RFC 7517 §4.3).
    match obj.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => return None,
    }
    // A private key published by mistake is still usable as a public key, but
    // it signals a badly broken issuer: refuse it rather than normalise it.
    if obj.contains_key("d") {
        return None;
    }
    let declared = match str_field(obj, "alg").ok()? {
        None => None,
        Some(name) => Some(Algorithm::from_name(name)?),
    };

    type Parsed = (Vec<Algorithm>, Vec<(Algorithm, Prepared)>, Vec<Vec<u8>>);
    let (algs, prepared, components): Parsed = match kty {
        "RSA" => {
            let n = b64_field(obj, "n")?;
            let e = b64_field(obj, "e")?;
            let n_s = strip_leading_zeros(&n);
            let e_s = strip_leading_zeros(&e);
            // An empty modulus has no bits (found by the `jwks` fuzz target).
            let bits = match n_s.first() {
                Some(b) => n_s.len() * 8 - b.leading_zeros() as usize,
                None => 0,
            };
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return None;
            }
            // Public exponent: odd, at least 3, at most 2^64-1 in practice.
            if e_s.is_empty() || e_s.len() > 8 || e_s[e_s.len() - 1] & 1 == 0 || e_s == [1] {
                return None;
            }
            let algs: Vec<Algorithm> = match declared {
                Some(a) if a.is_rsa() => vec![a],
                Some(_) => return None,
                None => Algorithm::ALL.into_iter().filter(|a| a.is_rsa()).collect(),
            };
            let prepared = prepare_all(&Material::Rsa { n: n_s, e: e_s }, &algs)?;
            (algs, prepared, vec![n_s.to_vec(), e_s.to_vec()])
        }
        "EC" => {
            let crv = str_field(obj, "crv").ok()??;
            let (alg, len) = match crv {
                "P-256" => (Algorithm::ES256, 32),
                "P-384" => (Algorithm::ES384, 48),
                _ => return None,
            };
            if declared.is_some_and(|a| a != alg) {
                return None;
            }
            let x = b64_field(obj, "x")?;
            let y = b64_field(obj, "y")?;
            if x.len() != len || y.len() != len {
                return None;
            }
            // Also rejects a point that is not on the curve.
            let prepared = prepare_all(&Material::Ec { x: &x, y: &y }, &[alg])?;
            (vec![alg], prepared, vec![x, y])
        }
        "OKP" => {
            if str_field(obj, "crv").ok()?? != "Ed25519" {
                return None;
            }
            if declared.is_some_and(|a| a != Algorithm::EdDSA) {
                return None;
            }
            let x = b64_field(obj, "x")?;
            if x.len() != 32 {
                return None;
            }
            let prepared = prepare_all(&Material::Ed { x: &x }, &[Algorithm::EdDSA])?;
            (vec![Algorithm::EdDSA], prepared, vec![x])
        }
        _ => return None,
    };
    Some(VerifyKey {
        fingerprint: Fingerprint {
            kid: kid.clone(),
            issuer: issuer.clone(),
            algs,
            components,
        },
        kid,
        issuer,
        prepared,
        id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_n(bits: usize) -> String {
        let mut n = vec![0xC5u8; bits / 8];
        n[0] = 0xC5;
        URL_SAFE_NO_PAD.encode(n)
    }

    /// A real P-256 public point (the test kit's ec1 key).
    fn ec_xy() -> (String, String) {
        (
            "F1WulCUBEGfuO6Nr1HCYD2LGvhGvA0czde3owaUAAWo".into(),
            "_gg99BuscvD_dcq71U2n3BYKBrji3JnaD-vuH5lkMKo".into(),
        )
    }

    fn one(jwk: serde_json::Value) -> Option<VerifyKey> {
        let doc = serde_json::json!({ "keys": [jwk] }).to_string();
        parse_jwks(doc.as_bytes(), 10)
            .ok()
            .map(|mut s| s.keys.remove(0))
    }

    fn set(jwk: serde_json::Value) -> KeySet {
        let doc = serde_json::json!({ "keys": [jwk] }).to_string();
        parse_jwks(doc.as_bytes(), 10).unwrap()
    }

    #[test]
    fn a_key_keeps_its_identity_across_refreshes_only_if_unchanged() {
        let jwk = serde_json::json!({"kty":"RSA","kid":"k","n":rsa_n(2048),"e":"AQAB"});
        let first = set(jwk.clone());
        let mut same = set(jwk);
        same.inherit_ids(&first);
        assert_eq!(same.keys[0].id, first.keys[0].id);
        // Other key material under the same kid is another key, even when
        // the components joined with a separator give the same bytes.
        let mut n = vec![0xC5u8; 256];
        n[255] = 0xC7; // odd
        let e1 = [0x01, 0x7C, 0x01, 0x00, 0x01];
        let mut n2 = n.clone();
        n2.extend_from_slice(&[0x7C, 0x01]);
        let e2 = [0x01, 0x00, 0x01];
        let a = set(serde_json::json!({"kty":"RSA","kid":"k","alg":"RS256",
            "n":URL_SAFE_NO_PAD.encode(&n),"e":URL_SAFE_NO_PAD.encode(e1)}));
        let mut b = set(serde_json::json!({"kty":"RSA","kid":"k","alg":"RS256",
            "n":URL_SAFE_NO_PAD.encode(&n2),"e":URL_SAFE_NO_PAD.encode(e2)}));
        assert_eq!(a.len(), 1, "both keys load");
        assert_eq!(b.len(), 1, "both keys load");
        b.inherit_ids(&a);
        assert_ne!(
            b.keys[0].id, a.keys[0].id,
            "a different key is a different key"
        );
        // A kid that differs only around a separator is another key too.
        let (x, y) = ec_xy();
        let c = set(serde_json::json!({"kty":"EC","crv":"P-256","kid":"a|b","x":x,"y":y}));
        let mut d = set(serde_json::json!({"kty":"EC","crv":"P-256","kid":"a","x":x,"y":y}));
        d.inherit_ids(&c);
        assert_ne!(d.keys[0].id, c.keys[0].id);
    }

    #[test]
    fn rsa_without_alg_is_bound_to_the_rsa_family() {
        let k = one(serde_json::json!({"kty":"RSA","kid":"a","n":rsa_n(2048),"e":"AQAB"})).unwrap();
        assert!(k.algs().contains(&Algorithm::RS256) && k.algs().contains(&Algorithm::PS512));
        assert!(!k.algs().contains(&Algorithm::ES256));
    }

    #[test]
    fn declared_alg_pins_the_key() {
        let k =
            one(serde_json::json!({"kty":"RSA","alg":"PS256","n":rsa_n(2048),"e":"AQAB"})).unwrap();
        assert_eq!(k.algs(), vec![Algorithm::PS256]);
        let (x, y) = ec_xy();
        let k = one(serde_json::json!({"kty":"EC","crv":"P-256","x":x,"y":y})).unwrap();
        assert_eq!(k.algs(), vec![Algorithm::ES256]);
    }

    /// The bounds of a key's shape, each from both sides: `key_ops` naming
    /// `verify`, the modulus' exact bit count, the public exponent.
    #[test]
    fn key_shape_bounds_are_exact() {
        let rsa = |n: Vec<u8>, e: &[u8]| {
            one(serde_json::json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(n),
                "e": URL_SAFE_NO_PAD.encode(e),
            }))
        };
        let modulus = |bits: usize| {
            let mut n = vec![0xC5u8; bits.div_ceil(8)];
            // The top byte holds the remaining bits, its highest one set.
            let top = bits % 8;
            if top != 0 {
                n[0] = (0xC5 >> (8 - top)) | (1 << (top - 1));
            }
            n
        };
        let f4 = [1u8, 0, 1];
        assert!(rsa(modulus(2048), &f4).is_some());
        assert!(rsa(modulus(2047), &f4).is_none(), "2047 bits");
        assert!(rsa(modulus(8192), &f4).is_some());
        assert!(rsa(modulus(8193), &f4).is_none(), "8193 bits");
        // A leading zero byte is not a bit.
        let mut padded = vec![0u8];
        padded.extend(modulus(2047));
        assert!(rsa(padded, &f4).is_none(), "2047 bits after a zero byte");
        // The exponent: odd, more than 1, at most 8 bytes.
        assert!(rsa(modulus(2048), &[3]).is_some());
        assert!(rsa(modulus(2048), &[1]).is_none(), "e = 1");
        assert!(rsa(modulus(2048), &[1, 0, 0]).is_none(), "even e");
        // (aws-lc refuses exponents past 2^33 itself: the 8-byte bound
        // only matters on the RustCrypto backend.)
        assert!(
            rsa(modulus(2048), &[1, 0, 0, 0, 0, 0, 0, 0, 1]).is_none(),
            "9-byte e"
        );
        // `key_ops` must name `verify`, alone or among others.
        for ops in [
            serde_json::json!(["verify"]),
            serde_json::json!(["sign", "verify"]),
        ] {
            let jwk = serde_json::json!({"kty":"RSA","key_ops":ops,"n":rsa_n(2048),"e":"AQAB"});
            assert!(one(jwk.clone()).is_some(), "{jwk}");
        }
        for ops in [
            serde_json::json!([]),
            serde_json::json!(["sign"]),
            serde_json::json!("verify"),
        ] {
            let jwk = serde_json::json!({"kty":"RSA","key_ops":ops,"n":rsa_n(2048),"e":"AQAB"});
            assert!(one(jwk.clone()).is_none(), "{jwk}");
        }
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let (x, y) = ec_xy();
        let bad = [
            serde_json::json!({"kty":"oct","k":"c2VjcmV0"}),
            serde_json::json!({"kty":"RSA","use":"enc","n":rsa_n(2048),"e":"AQAB"}),
            serde_json::json!({"kty":"RSA","key_ops":["encrypt"],"n":rsa_n(2048),"e":"AQAB"}),
            serde_json::json!({"kty":"RSA","n":rsa_n(1024),"e":"AQAB"}),
            serde_json::json!({"kty":"RSA","n":rsa_n(2048),"e":"AAAA"}),
            serde_json::json!({"kty":"RSA","n":"!!!","e":"AQAB"}),
            serde_json::json!({"kty":"RSA","n":"","e":"AQAB"}),
            serde_json::json!({"kty":"RSA","n":"AAAA","e":"AQAB"}),
            serde_json::json!({"kty":"RSA","n":rsa_n(2048),"e":""}),
            serde_json::json!({"kty":"RSA","n":12,"e":"AQAB"}),
            serde_json::json!({"kty":"RSA","alg":"HS256","n":rsa_n(2048),"e":"AQAB"}),
            serde_json::json!({"kty":"RSA","alg":"ES256","n":rsa_n(2048),"e":"AQAB"}),
            serde_json::json!({"kty":"EC","crv":"P-256","alg":"ES384","x":x,"y":y}),
            serde_json::json!({"kty":"EC","crv":"P-521","x":x,"y":y}),
            serde_json::json!({"kty":"EC","crv":"P-256","x":x,"y":"AAAA"}),
            // Right sizes, but not a point on the curve.
            serde_json::json!({"kty":"EC","crv":"P-256","x":URL_SAFE_NO_PAD.encode([7u8; 32]),"y":URL_SAFE_NO_PAD.encode([9u8; 32])}),
            serde_json::json!({"kty":"OKP","crv":"X25519","x":x}),
            serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"}),
            serde_json::json!({"kty":"RSA","n":rsa_n(2048),"e":"AQAB","d":"AQAB"}),
            serde_json::json!("not an object"),
        ];
        for jwk in bad {
            assert!(one(jwk.clone()).is_none(), "{jwk}");
        }
        // ...without failing the whole set.
        let doc = serde_json::json!({"keys":[
            {"kty":"oct","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"good","n":rsa_n(2048),"e":"AQAB"}
        ]})
        .to_string();
        let parsed = parse_jwks(doc.as_bytes(), 10).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed.skipped, 1);
    }

    /// RFC 7517 §4: a JWK with a duplicate member is rejected, that key
    /// alone: the issuer's other keys stay usable (a whole set refused for
    /// one bad key is an outage once the last good keys go stale).
    #[test]
    fn a_key_with_a_duplicate_member_is_skipped_not_the_set() {
        let good = format!(
            r#"{{"kty":"RSA","kid":"good","n":"{}","e":"AQAB"}}"#,
            rsa_n(2048)
        );
        let twice = format!(
            r#"{{"kty":"RSA","kid":"twice","n":"{}","n":"{}","e":"AQAB"}}"#,
            rsa_n(2048),
            rsa_n(4096)
        );
        let nested = r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA","ext":{"a":1,"a":2}}"#;
        let doc = format!(r#"{{"keys":[{twice},{good},{nested}]}}"#);
        let set = parse_jwks(doc.as_bytes(), 10).unwrap();
        assert_eq!((set.len(), set.skipped), (1, 2));
        assert!(matches!(
            set.find(Some("good"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("twice"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
        // The document itself is still read strictly.
        for doc in [
            format!(r#"{{"keys":[{good}],"keys":[{good}]}}"#),
            format!(r#"{{"keys":[{good}],"other":{{"a":1,"a":2}}}}"#),
            format!(r#"{{"keys":[{good}]}} trailing"#),
            format!(r#"{{"keys":[{good}],"x":"\ud800"}}"#),
        ] {
            assert!(
                matches!(parse_jwks(doc.as_bytes(), 10), Err(FetchError::Parse(_))),
                "{doc}"
            );
        }
        // Only duplicates: no usable key.
        assert!(matches!(
            parse_jwks(format!(r#"{{"keys":[{twice}]}}"#).as_bytes(), 10),
            Err(FetchError::NoUsableKeys)
        ));
    }

    #[test]
    fn document_level_failures() {
        assert!(matches!(
            parse_jwks(b"<html>", 10),
            Err(FetchError::Parse(_))
        ));
        assert!(matches!(
            parse_jwks(br#"{"keys":{}}"#, 10),
            Err(FetchError::Parse(_))
        ));
        assert!(matches!(
            parse_jwks(br#"{"keys":[]}"#, 10),
            Err(FetchError::NoUsableKeys)
        ));
        let many = serde_json::json!({"keys": vec![serde_json::json!({}); 11]}).to_string();
        assert!(matches!(
            parse_jwks(many.as_bytes(), 10),
            Err(FetchError::TooManyKeys {
                count: 11,
                limit: 10
            })
        ));
    }

    #[test]
    fn lookup_by_kid_and_alg() {
        let (x, y) = ec_xy();
        let doc = serde_json::json!({"keys":[
            {"kty":"RSA","kid":"r","n":rsa_n(2048),"e":"AQAB"},
            {"kty":"EC","kid":"e","crv":"P-256","x":x,"y":y}
        ]})
        .to_string();
        let set = parse_jwks(doc.as_bytes(), 10).unwrap();
        assert_eq!(set.len(), 2);
        assert!(matches!(
            set.find(Some("r"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("r"), Algorithm::ES256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("zz"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Found(_)));
        assert!(matches!(
            set.find(None, Algorithm::EdDSA),
            Lookup::Ambiguous
        ));
    }
}
