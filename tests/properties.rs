//! Property tests: arbitrary input is rejected without panicking, for the
//! reason the input deserves (never "keys unavailable": the key server is up
//! all along), and no non-canonical re-encoding of a valid token is accepted.
//! Structured variants are re-signed, so the claim rules are what decides.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use m2m_guard::{Algorithm, Reason, Verifier};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::OnceLock;

struct World {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
    token: String,
    issuer: TestIssuer,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (issuer, verifier, token) = rt.block_on(async {
            let issuer = TestIssuer::start().await;
            // No token cache: every case takes the full path.
            // The generic preset reads `sub`, `client_id`, `azp`, `scope` and
            // `scp`; users' tokens are accepted, so only the claim rules judge.
            let verifier = Verifier::builder()
                .issuer(
                    issuer
                        .config()
                        .preset(m2m_guard::Preset::Generic)
                        .accept_user_tokens(),
                )
                .disable_token_cache()
                .build()
                .await
                .unwrap();
            let token = issuer.token().org("org_1").scopes(["a", "b"]).sign();
            verifier
                .verify(&token)
                .await
                .expect("control token verifies");
            (issuer, verifier, token)
        });
        World {
            rt,
            verifier,
            token,
            issuer,
        }
    })
}

/// The verdict: `Ok` or the rejection's reason and claim.
fn verdict(token: &str) -> Result<(), (Reason, Option<String>)> {
    let w = world();
    match w.rt.block_on(w.verifier.verify(token)) {
        Ok(_) => Ok(()),
        Err(e) => Err((e.reason(), e.claim_name().map(str::to_owned))),
    }
}

fn reason(token: &str) -> Reason {
    match verdict(token) {
        Ok(()) => panic!("accepted: {token}"),
        Err((r, _)) => r,
    }
}

/// A valid payload (the generic preset) with `claim` set to `value`, re-signed.
fn signed_with(claim: &str, value: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let w = world();
    let mut payload = json!({
        "iss": w.issuer.issuer(), "aud": DEFAULT_AUDIENCE, "iat": now - 5, "exp": now + 600,
        "sub": "c_1", "client_id": "c_1", "jti": "j", "scope": "a b",
    });
    payload[claim] = value;
    let kid = w.issuer.current_kid(Algorithm::ES256);
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
    w.issuer
        .sign_raw(Algorithm::ES256, &header.to_string(), &payload.to_string())
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What m2m-guard's documented rules say of `claim` = `value` (README,
/// "Validation rules"): string claims must be non-empty strings, scope
/// claims a string or an array of non-empty strings without spaces.
fn expected(claim: &str, value: &Value) -> Result<(), (Reason, Option<String>)> {
    let invalid = Err((Reason::InvalidClaim, Some(claim.to_owned())));
    match (claim, value) {
        ("sub" | "jti" | "client_id" | "azp", Value::String(s)) if !s.is_empty() => Ok(()),
        ("sub" | "jti" | "client_id" | "azp", _) => invalid,
        ("scope" | "scp", Value::String(_)) => Ok(()),
        ("scope" | "scp", Value::Array(a))
            if a.iter().all(|v| {
                v.as_str()
                    .is_some_and(|s| !s.is_empty() && !s.contains(' '))
            }) =>
        {
            Ok(())
        }
        ("scope" | "scp", _) => invalid,
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_malformed(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let r = reason(&String::from_utf8_lossy(&bytes));
        prop_assert!(matches!(r, Reason::Malformed | Reason::Encrypted), "{r:?}");
    }

    #[test]
    fn arbitrary_jws_shaped_strings_are_malformed(
        h in "[A-Za-z0-9_-]{0,64}", p in "[A-Za-z0-9_-]{0,256}", s in "[A-Za-z0-9_-]{0,400}"
    ) {
        let token = format!("{h}.{p}.{s}");
        prop_assert_eq!(reason(&token), Reason::Malformed);
    }

    /// Text under the real header and signature: not JSON is malformed; a
    /// JSON object fails a claim rule or the signature, never anything else.
    #[test]
    fn arbitrary_text_under_the_real_header_is_rejected_for_what_it_is(payload in "\\PC{0,300}") {
        let h = world().token.split('.').next().unwrap().to_owned();
        let s = world().token.rsplit('.').next().unwrap().to_owned();
        let token = format!("{h}.{}.{s}", B64.encode(&payload));
        let r = reason(&token);
        match serde_json::from_str::<Value>(&payload) {
            Ok(Value::Object(_)) => prop_assert!(
                matches!(r, Reason::MissingClaim | Reason::InvalidClaim | Reason::UnknownIssuer
                    | Reason::Malformed),
                "{r:?}"
            ),
            _ => prop_assert_eq!(r, Reason::Malformed),
        }
    }

    /// Re-signed tokens whose string or scope claim holds any JSON value:
    /// accepted exactly when the documented rule says so, else refused as
    /// an invalid claim naming it.
    #[test]
    fn structured_claims_are_judged_by_their_documented_rule(
        claim in prop::sample::select(vec!["sub", "jti", "client_id", "azp", "scope", "scp"]),
        value in any_json(),
    ) {
        let token = signed_with(claim, value.clone());
        prop_assert_eq!(verdict(&token), expected(claim, &value), "{} = {}", claim, value);
    }

    /// Any one-character change, insertion or deletion anywhere in a valid
    /// token makes it invalid: one token, one encoding. In the signature,
    /// the reason is the signature (or, off the alphabet, the form).
    #[test]
    fn every_single_character_edit_is_rejected(pos in any::<prop::sample::Index>(), c in prop::sample::select(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".chars().collect::<Vec<_>>()
    ), op in 0..3u8) {
        let t = &world().token;
        let i = pos.index(t.len());
        let mut edited: Vec<char> = t.chars().collect();
        match op {
            0 => { if edited[i] == c { return Ok(()); } edited[i] = c; }
            1 => edited.insert(i, c),
            _ => { edited.remove(i); }
        }
        let edited: String = edited.into_iter().collect();
        let r = reason(&edited);
        prop_assert_ne!(r, Reason::KeysUnavailable);
        let sig_start = t.rfind('.').unwrap() + 1;
        if i >= sig_start && c != '.' {
            prop_assert!(
                matches!(r, Reason::InvalidSignature | Reason::Malformed),
                "edit at {} (op {}, {:?}): {:?}", i, op, c, r
            );
        }
    }

    /// Non-zero unused trailing bits in the last character of a segment
    /// (still inside the alphabet): the header or payload is malformed, the
    /// signature invalid.
    #[test]
    fn non_zero_trailing_bits_are_refused(seg in 0..3usize, bits in 1..16usize) {
        let t = &world().token;
        let mut segs: Vec<String> = t.split('.').map(str::to_owned).collect();
        let unused = match segs[seg].len() % 4 {
            2 => 0b1111,
            3 => 0b11,
            _ => return Ok(()), // no unused bits in this segment
        };
        prop_assume!(bits & unused != 0);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = segs[seg].pop().unwrap();
        let idx = alphabet.iter().position(|&b| b == last as u8).unwrap();
        segs[seg].push(alphabet[(idx & !unused) | (bits & unused)] as char);
        let expected = if seg == 2 { Reason::InvalidSignature } else { Reason::Malformed };
        prop_assert_eq!(reason(&segs.join(".")), expected);
    }

    /// Re-encoding a segment non-canonically (padding, standard alphabet,
    /// line breaks, percent-encoding) is rejected.
    #[test]
    fn non_canonical_reencodings_are_rejected(seg in 0..3usize, how in 0..4u8) {
        let t = &world().token;
        let mut segs: Vec<String> = t.split('.').map(str::to_owned).collect();
        let raw = B64.decode(&segs[seg]).unwrap();
        segs[seg] = match how {
            0 => base64::engine::general_purpose::URL_SAFE.encode(&raw),
            1 => base64::engine::general_purpose::STANDARD.encode(&raw),
            2 => { let s = B64.encode(&raw); format!("{}\n{}", &s[..s.len() / 2], &s[s.len() / 2..]) }
            _ => B64.encode(&raw).replace('-', "%2D").replace('_', "%5F") + "%3D",
        };
        let reencoded = segs.join(".");
        prop_assume!(reencoded != *t);
        let r = reason(&reencoded);
        prop_assert!(matches!(r, Reason::Malformed | Reason::InvalidSignature), "{r:?}");
    }
}

/// The trailing-bit property needs segments with unused bits: the control
/// token has them (else the property would pass by skipping every case).
#[test]
fn the_control_token_has_segments_with_unused_bits() {
    let t = &world().token;
    assert!(t.split('.').any(|s| s.len() % 4 != 0), "{t}");
}
