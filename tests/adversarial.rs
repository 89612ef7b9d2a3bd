//! Adversarial tokens (RFC 7515 / 7519 / 8725): each case states the verdict it
//! must get and why. Every token here is rejected; none costs more than the
//! key-set fetches the rules allow.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use m2m_guard::{Algorithm, Reason, Verifier};
use serde_json::{Value, json};
use std::time::Duration;
use support::ScriptServer;

struct Case {
    name: String,
    token: String,
    expect: Reason,
    why: &'static str,
}

fn case(
    name: impl Into<String>,
    token: impl Into<String>,
    expect: Reason,
    why: &'static str,
) -> Case {
    Case {
        name: name.into(),
        token: token.into(),
        expect,
        why,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(issuer: &TestIssuer) -> Value {
    json!({"iss": issuer.issuer(), "aud": DEFAULT_AUDIENCE, "sub": "c", "azp": "c", "gty": ["client_credentials"], "exp": now() + 600, "iat": now()})
}

fn enc(v: &Value) -> String {
    B64.encode(v.to_string())
}

fn unsigned(header: &Value, payload: &Value, sig: &str) -> String {
    format!("{}.{}.{sig}", enc(header), enc(payload))
}

fn hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", enc(header), enc(payload));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{input}.{sig}")
}

// ----- a minimal DER encoder, to present the RSA public key in every encoding -----

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend_from_slice(body);
    out
}

fn der_uint(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The issuer's RSA public key as PKCS#1 DER, SPKI DER, both PEMs, JWK JSON, and raw modulus.
fn rsa_public_encodings(issuer: &TestIssuer) -> Vec<(String, Vec<u8>)> {
    let kid = issuer.current_kid(Algorithm::RS256);
    let jwks = issuer.jwks_document();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    let alg_id = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let spki = der(
        0x30,
        &[alg_id, der(0x03, &[&[0u8][..], &pkcs1].concat())].concat(),
    );
    let spki_pem = pem("PUBLIC KEY", &spki);
    vec![
        ("PKCS#1 DER".into(), pkcs1.clone()),
        ("SPKI DER".into(), spki.clone()),
        ("SPKI PEM".into(), spki_pem.clone().into_bytes()),
        (
            "SPKI PEM, no final newline".into(),
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        (
            "PKCS#1 PEM".into(),
            pem("RSA PUBLIC KEY", &pkcs1).into_bytes(),
        ),
        ("JWK JSON".into(), jwk.to_string().into_bytes()),
        ("modulus bytes".into(), n.clone()),
        (
            "modulus base64url".into(),
            jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        ),
    ]
}

async fn setup() -> (TestIssuer, Verifier) {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::builder()
        .issuer(
            issuer
                .config()
                .unknown_kid_cooldown(Duration::from_secs(3600)),
        )
        .build()
        .await
        .unwrap();
    // Load the keys once, so every case below runs against a warm cache.
    verifier.verify(&issuer.token().sign()).await.unwrap();
    (issuer, verifier)
}

async fn run(verifier: &Verifier, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        match verifier.verify(&c.token).await {
            Ok(_) => failures.push(format!(
                "{}: ACCEPTED, expected {:?} because {}",
                c.name, c.expect, c.why
            )),
            Err(e) if e.reason() != c.expect => failures.push(format!(
                "{}: got {:?}, expected {:?} because {}",
                c.name,
                e.reason(),
                c.expect,
                c.why
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn alg_none_in_every_spelling() {
    let (issuer, v) = setup().await;
    let p = claims(&issuer);
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE", "none ", " none", "NoNe"] {
        let h = json!({"alg": alg, "typ": "at+jwt"});
        cases.push(case(
            format!("alg {alg:?} with a signature"),
            unsigned(&h, &p, "c2ln"),
            Reason::UnsupportedAlgorithm,
            "unsecured JWS is never accepted (RFC 8725 §3.1)",
        ));
        cases.push(case(
            format!("alg {alg:?} without a signature"),
            unsigned(&h, &p, ""),
            Reason::Malformed,
            "a JWS has a non-empty signature",
        ));
    }
    let h = json!({"typ": "at+jwt"});
    cases.push(case(
        "no alg at all",
        unsigned(&h, &p, "c2ln"),
        Reason::Malformed,
        "alg is required (RFC 7515 §4.1.1)",
    ));
    cases.push(case(
        "alg null",
        unsigned(&json!({"alg": null}), &p, "c2ln"),
        Reason::Malformed,
        "alg must be a string",
    ));
    run(&v, cases).await;
    assert_eq!(issuer.jwks_fetches(), 1, "no case triggered a fetch");
}

#[tokio::test]
async fn hmac_keyed_with_the_public_key_in_every_encoding() {
    let (issuer, v) = setup().await;
    let p = claims(&issuer);
    let kid = issuer.current_kid(Algorithm::RS256);
    let mut cases = Vec::new();
    for (enc_name, secret) in rsa_public_encodings(&issuer) {
        for alg in ["HS256", "HS384", "HS512"] {
            let h = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
            // Signed with HS256 whatever the header says: the verdict comes before any crypto.
            cases.push(case(
                format!("{alg} keyed with the {enc_name}"),
                hs256(&h, &p, &secret),
                Reason::UnsupportedAlgorithm,
                "symmetric algorithms are never accepted: an RSA public key is not a secret",
            ));
        }
        let h = json!({"alg": "HS256", "typ": "at+jwt"});
        cases.push(case(
            format!("HS256 without kid, {enc_name}"),
            hs256(&h, &p, &secret),
            Reason::UnsupportedAlgorithm,
            "same, whatever the kid",
        ));
    }
    run(&v, cases).await;
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn key_injection_through_headers_never_selects_or_fetches_a_key() {
    let (issuer, v) = setup().await;
    let attacker = TestIssuer::start().await;
    attacker.rotate_keys(); // keys distinct from the victim's
    let jku_server = ScriptServer::start().await;
    jku_server.json("/jwks", attacker.jwks_document().to_string());
    let attacker_jwk = attacker.jwks_document()["keys"][0].clone();
    let attacker_kid = attacker.current_kid(Algorithm::RS256);
    let victim_kid = issuer.current_kid(Algorithm::RS256);
    let payload = claims(&issuer).to_string();
    let signed = |header: Value| attacker.sign_raw(Algorithm::RS256, &header.to_string(), &payload);
    let cert = STANDARD.encode(b"not really a certificate, and never looked at");
    let cases = vec![
        case(
            "embedded jwk, attacker kid",
            signed(json!({"alg":"RS256","kid":attacker_kid,"jwk":attacker_jwk})),
            Reason::UnknownKey,
            "an embedded jwk is ignored; the kid is not in the issuer's set",
        ),
        case(
            "embedded jwk, victim kid",
            signed(json!({"alg":"RS256","kid":victim_kid,"jwk":attacker_jwk})),
            Reason::InvalidSignature,
            "the issuer's key is used, and the attacker's signature fails it",
        ),
        case(
            "embedded jwk, no kid",
            signed(json!({"alg":"RS256","jwk":attacker_jwk})),
            Reason::InvalidSignature,
            "without kid the issuer's only RS256 key is used",
        ),
        case(
            "jku to the attacker's JWKS",
            signed(json!({"alg":"RS256","kid":attacker_kid,"jku":jku_server.url("/jwks")})),
            Reason::UnknownKey,
            "jku never causes a fetch",
        ),
        case(
            "x5u to the attacker",
            signed(json!({"alg":"RS256","kid":attacker_kid,"x5u":jku_server.url("/cert")})),
            Reason::UnknownKey,
            "x5u never causes a fetch",
        ),
        case(
            "x5c chain",
            signed(json!({"alg":"RS256","x5c":[cert]})),
            Reason::InvalidSignature,
            "x5c never selects a key",
        ),
        case(
            "jku with the victim kid",
            signed(json!({"alg":"RS256","kid":victim_kid,"jku":jku_server.url("/jwks")})),
            Reason::InvalidSignature,
            "the kid still selects from the issuer's set only",
        ),
    ];
    run(&v, cases).await;
    assert_eq!(
        jku_server.hits("/jwks") + jku_server.hits("/cert"),
        0,
        "attacker URLs were never fetched"
    );
    assert!(
        issuer.jwks_fetches() <= 2,
        "at most one refetch for the unknown kid"
    );
}

#[tokio::test]
async fn degenerate_signatures() {
    let (issuer, v) = setup().await;
    let p = claims(&issuer);
    let es = json!({"alg":"ES256","kid":issuer.current_kid(Algorithm::ES256),"typ":"at+jwt"});
    let ed = json!({"alg":"EdDSA","kid":issuer.current_kid(Algorithm::EdDSA),"typ":"at+jwt"});
    let rs = json!({"alg":"RS256","kid":issuer.current_kid(Algorithm::RS256),"typ":"at+jwt"});
    // P-256 group order n.
    let n = hex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
    let cases = vec![
        case(
            "ES256 r=s=0 (CVE-2022-21449)",
            unsigned(&es, &p, &B64.encode([0u8; 64])),
            Reason::InvalidSignature,
            "r and s must be in [1, n-1]",
        ),
        case(
            "ES256 r=s=n",
            unsigned(&es, &p, &B64.encode([n.clone(), n.clone()].concat())),
            Reason::InvalidSignature,
            "r and s must be below n",
        ),
        case(
            "ES256 r=1 s=0",
            unsigned(
                &es,
                &p,
                &B64.encode([vec![0u8; 31], vec![1], vec![0u8; 32]].concat()),
            ),
            Reason::InvalidSignature,
            "s = 0 is invalid",
        ),
        case(
            "ES256 DER-encoded zero signature",
            unsigned(
                &es,
                &p,
                &B64.encode([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]),
            ),
            Reason::InvalidSignature,
            "JWS ECDSA signatures are raw r||s, not DER",
        ),
        case(
            "ES256 short signature",
            unsigned(&es, &p, &B64.encode([1u8; 63])),
            Reason::InvalidSignature,
            "r||s is exactly 64 bytes",
        ),
        case(
            "EdDSA all-zero signature",
            unsigned(&ed, &p, &B64.encode([0u8; 64])),
            Reason::InvalidSignature,
            "not a valid Ed25519 signature",
        ),
        case(
            "RS256 all-zero signature",
            unsigned(&rs, &p, &B64.encode([0u8; 256])),
            Reason::InvalidSignature,
            "0 is no RSA signature",
        ),
        case(
            "RS256 signature = 1",
            unsigned(&rs, &p, &B64.encode([1u8])),
            Reason::InvalidSignature,
            "wrong length",
        ),
        case(
            "RS256 signature = modulus-sized 0xff",
            unsigned(&rs, &p, &B64.encode([0xffu8; 256])),
            Reason::InvalidSignature,
            "above the modulus",
        ),
    ];
    run(&v, cases).await;
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn tampered_truncated_padded_and_reencoded_segments() {
    let (issuer, v) = setup().await;
    // A token whose every segment leaves unused bits in its last base64
    // character, so the non-canonical cases below all run (an ignored header
    // member and a padding claim shift the lengths; the RS256 signature's is
    // fixed at 342).
    let kid = issuer.current_kid(Algorithm::RS256);
    let token = (0..9)
        .map(|n| {
            let header = json!({"alg": "RS256", "kid": kid, "x-pad": "x".repeat(n / 3)});
            let mut payload = claims(&issuer);
            payload["pad"] = json!("x".repeat(n % 3));
            issuer.sign_raw(Algorithm::RS256, &header.to_string(), &payload.to_string())
        })
        .find(|t| t.split('.').all(|seg| seg.len() % 4 != 0))
        .expect("some padding gives every segment unused bits");
    assert!(
        v.verify(&token).await.is_ok(),
        "control: the original verifies"
    );
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let flip = |seg: &str, i: usize| {
        let mut b = seg.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    // Change only the unused low bits of the last base64 character.
    let non_canonical = |seg: &str| {
        let last = seg.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.find(last).unwrap();
        let unused = match seg.len() % 4 {
            2 => 4,
            3 => 2,
            _ => 0,
        };
        assert!(unused > 0, "segment length leaves no unused bits");
        let tweaked = alphabet.chars().nth(idx ^ 1).unwrap();
        format!("{}{tweaked}", &seg[..seg.len() - 1])
    };
    let payload_json: Value = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
    let pretty = B64.encode(serde_json::to_string_pretty(&payload_json).unwrap());
    let mut cases = vec![
        case(
            "bit flip in header",
            format!("{}.{p}.{s}", flip(h, 5)),
            Reason::Malformed,
            "the header no longer decodes to JSON",
        ),
        case(
            "bit flip in payload",
            format!("{h}.{}.{s}", flip(p, 20)),
            Reason::Malformed,
            "the payload no longer decodes to JSON",
        ),
        case(
            "bit flip in signature",
            format!("{h}.{p}.{}", flip(s, 30)),
            Reason::InvalidSignature,
            "the signature no longer matches",
        ),
        case(
            "truncated signature",
            format!("{h}.{p}.{}", &s[..s.len() - 4]),
            Reason::InvalidSignature,
            "a truncated signature does not verify",
        ),
        case(
            "truncated payload",
            format!("{h}.{}.{s}", &p[..p.len() - 4]),
            Reason::Malformed,
            "cut JSON",
        ),
        case(
            "padded header",
            format!("{h}==.{p}.{s}"),
            Reason::Malformed,
            "base64url without padding only (RFC 7515 §2)",
        ),
        case(
            "padded signature",
            format!("{h}.{p}.{s}=="),
            Reason::Malformed,
            "same",
        ),
        case(
            "standard alphabet",
            format!("{}.{p}.{s}", h.replace('-', "+").replace('_', "/") + "+"),
            Reason::Malformed,
            "+ and / are not base64url",
        ),
        case(
            "re-serialised payload JSON",
            format!("{h}.{pretty}.{s}"),
            Reason::InvalidSignature,
            "same claims, different bytes: not what was signed",
        ),
        case(
            "whitespace inside",
            format!("{h}.{p} .{s}"),
            Reason::Malformed,
            "no whitespace in a compact JWS",
        ),
        case(
            "leading dot",
            format!(".{h}.{p}.{s}"),
            Reason::Malformed,
            "four segments",
        ),
        case(
            "two segments",
            format!("{h}.{p}"),
            Reason::Malformed,
            "a JWS has three",
        ),
        case(
            "four segments",
            format!("{h}.{p}.{s}.{s}"),
            Reason::Malformed,
            "a JWS has three",
        ),
        case(
            "five segments (JWE)",
            format!("{h}.{p}.{s}.{s}.{s}"),
            Reason::Encrypted,
            "encrypted tokens are not accepted",
        ),
        case("empty", "", Reason::Malformed, "nothing"),
        case("dots only", "..", Reason::Malformed, "empty segments"),
    ];
    let before = cases.len();
    for (name, seg_idx) in [("header", 0), ("payload", 1), ("signature", 2)] {
        let mut segs = [h.to_owned(), p.to_owned(), s.to_owned()];
        segs[seg_idx] = non_canonical(&segs[seg_idx]);
        let expect = if seg_idx == 2 {
            Reason::InvalidSignature
        } else {
            Reason::Malformed
        };
        cases.push(case(
            format!("non-canonical trailing bits in {name}"),
            segs.join("."),
            expect,
            "one token, one encoding (strict base64url)",
        ));
    }
    assert_eq!(cases.len() - before, 3, "every non-canonical case runs");
    run(&v, cases).await;
}

#[tokio::test]
async fn hostile_kids() {
    let (issuer, v) = setup().await;
    let payload = claims(&issuer).to_string();
    let with_kid = |kid: Value| {
        issuer.sign_raw(
            Algorithm::RS256,
            &json!({"alg":"RS256","kid":kid}).to_string(),
            &payload,
        )
    };
    let cases = vec![
        case(
            "path traversal kid",
            with_kid(json!("../../../../etc/passwd")),
            Reason::UnknownKey,
            "kid is a map key, never a path",
        ),
        case(
            "SQL injection kid",
            with_kid(json!("' OR '1'='1")),
            Reason::UnknownKey,
            "kid is a map key, never a query",
        ),
        case(
            "NUL in kid",
            with_kid(json!("rsa\u{0000}")),
            Reason::UnknownKey,
            "no special meaning",
        ),
        case(
            "URL kid",
            with_kid(json!("https://attacker.example/key")),
            Reason::UnknownKey,
            "kid is never fetched",
        ),
        case(
            "huge kid",
            with_kid(json!("k".repeat(5000))),
            Reason::Malformed,
            "kid length is capped",
        ),
        case(
            "kid number",
            with_kid(json!(7)),
            Reason::Malformed,
            "kid must be a string",
        ),
        case(
            "kid object",
            with_kid(json!({"$ne": null})),
            Reason::Malformed,
            "kid must be a string",
        ),
        case(
            "kid empty",
            with_kid(json!("")),
            Reason::Malformed,
            "an empty kid names nothing",
        ),
    ];
    run(&v, cases).await;
    assert!(
        issuer.jwks_fetches() <= 2,
        "unknown kids cost at most one refetch per cooldown"
    );
}

#[tokio::test]
async fn claims_of_the_wrong_type_and_odd_headers() {
    let (issuer, v) = setup().await;
    let kid = issuer.current_kid(Algorithm::RS256);
    let h = json!({"alg":"RS256","kid":kid,"typ":"at+jwt"}).to_string();
    let with = |k: &str, val: Value| {
        let mut c = claims(&issuer);
        c[k] = val;
        issuer.sign_raw(Algorithm::RS256, &h, &c.to_string())
    };
    let cases = vec![
        case(
            "exp as string",
            with("exp", json!("9999999999")),
            Reason::InvalidClaim,
            "NumericDate is a JSON number",
        ),
        case(
            "exp huge",
            with("exp", json!(1e20)),
            Reason::InvalidClaim,
            "beyond year 9999",
        ),
        case(
            "exp u64::MAX",
            with("exp", json!(u64::MAX)),
            Reason::InvalidClaim,
            "beyond year 9999",
        ),
        case(
            "exp negative",
            with("exp", json!(-1)),
            Reason::InvalidClaim,
            "before the epoch",
        ),
        case(
            "exp bool",
            with("exp", json!(true)),
            Reason::InvalidClaim,
            "not a number",
        ),
        case(
            "nbf as string",
            with("nbf", json!("0")),
            Reason::InvalidClaim,
            "NumericDate",
        ),
        case(
            "iat as array",
            with("iat", json!([1])),
            Reason::InvalidClaim,
            "NumericDate",
        ),
        case(
            "aud as object",
            with("aud", json!({"0": DEFAULT_AUDIENCE})),
            Reason::InvalidClaim,
            "aud is a string or an array of strings",
        ),
        case(
            "aud nested array",
            with("aud", json!([[DEFAULT_AUDIENCE]])),
            Reason::InvalidClaim,
            "array of strings",
        ),
        case(
            "iss as array",
            with("iss", json!([issuer.issuer()])),
            Reason::InvalidClaim,
            "iss is a string",
        ),
        case(
            "iss with trailing slash",
            with("iss", json!(format!("{}/", issuer.issuer()))),
            Reason::UnknownIssuer,
            "iss is compared exactly",
        ),
        case(
            "sub as number",
            with("sub", json!(1)),
            Reason::InvalidClaim,
            "sub is a string",
        ),
        case(
            "org_code null",
            with("org_code", Value::Null),
            Reason::InvalidClaim,
            "null is not absent",
        ),
        case(
            "org_code empty",
            with("org_code", json!("")),
            Reason::InvalidClaim,
            "empty is not an org",
        ),
        case(
            "scope as object",
            with("scope", json!({"a": 1})),
            Reason::InvalidClaim,
            "scope is a string",
        ),
        case(
            "typ dpop+jwt",
            issuer.sign_raw(
                Algorithm::RS256,
                &json!({"alg":"RS256","kid":kid,"typ":"dpop+jwt"}).to_string(),
                &claims(&issuer).to_string(),
            ),
            Reason::InvalidType,
            "a DPoP proof is not an access token",
        ),
        case(
            "typ number",
            issuer.sign_raw(
                Algorithm::RS256,
                &json!({"alg":"RS256","kid":kid,"typ":1}).to_string(),
                &claims(&issuer).to_string(),
            ),
            Reason::InvalidType,
            "typ is a string",
        ),
        case(
            "crit",
            issuer.sign_raw(
                Algorithm::RS256,
                &json!({"alg":"RS256","kid":kid,"crit":["exp"],"exp":1}).to_string(),
                &claims(&issuer).to_string(),
            ),
            Reason::UnsupportedCritical,
            "no extension is understood",
        ),
        case(
            "duplicate iss",
            issuer.sign_raw(
                Algorithm::RS256,
                &h,
                &format!(
                    r#"{{"iss":"https://evil","iss":"{}","aud":"{DEFAULT_AUDIENCE}","exp":{}}}"#,
                    issuer.issuer(),
                    now() + 60
                ),
            ),
            Reason::Malformed,
            "duplicate members are ambiguous (RFC 8725 §3.11)",
        ),
        case(
            "duplicate alg",
            issuer.sign_raw(
                Algorithm::RS256,
                &format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}"}}"#),
                &claims(&issuer).to_string(),
            ),
            Reason::Malformed,
            "same, in the header",
        ),
        case(
            "payload not an object",
            issuer.sign_raw(Algorithm::RS256, &h, "[1,2,3]"),
            Reason::Malformed,
            "claims are a JSON object",
        ),
        case(
            "payload with trailing bytes",
            issuer.sign_raw(Algorithm::RS256, &h, &format!("{} x", claims(&issuer))),
            Reason::Malformed,
            "exactly one JSON value",
        ),
        case(
            "payload not UTF-8",
            format!(
                "{}.{}.{}",
                B64.encode(&h),
                B64.encode([0xff, 0xfe, b'{', b'}']),
                "c2ln"
            ),
            Reason::Malformed,
            "JSON is UTF-8",
        ),
    ];
    run(&v, cases).await;
}

#[tokio::test]
async fn oversized_and_deeply_nested_tokens() {
    let (issuer, v) = setup().await;
    let kid = issuer.current_kid(Algorithm::RS256);
    let h = json!({"alg":"RS256","kid":kid}).to_string();
    let deep = format!(
        r#"{{"iss":"{}","x":{}{}}}"#,
        issuer.issuer(),
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let cases = vec![
        case(
            "20 KiB token",
            issuer.token().claim("pad", "x".repeat(20 * 1024)).sign(),
            Reason::TooLarge,
            "token size is capped before any parsing",
        ),
        case(
            "1 MiB of dots",
            ".".repeat(1 << 20),
            Reason::TooLarge,
            "same",
        ),
        case(
            "5000-deep nesting",
            issuer.sign_raw(Algorithm::RS256, &h, &deep),
            Reason::Malformed,
            "nesting is bounded: an error, not a stack overflow",
        ),
    ];
    run(&v, cases).await;
}

#[tokio::test]
async fn hostile_key_servers_each_keep_the_last_good_keys() {
    use support::Reply;
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    let good = issuer.jwks_document().to_string();
    let verifier = Verifier::builder()
        .issuer(
            issuer
                .config()
                .jwks_url(server.url("/jwks"))
                .unknown_kid_cooldown(Duration::from_millis(100))
                .fetch_backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .fetch_timeout(Duration::from_millis(800))
        .build()
        .await
        .unwrap();
    server.json("/jwks", good.clone());
    let token = issuer.token().sign();
    assert!(verifier.verify(&token).await.is_ok());
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(50 * 1024 * 1024));
    let cases: Vec<(&str, Reply)> = vec![
        (
            "500",
            Reply::Json(http::StatusCode::INTERNAL_SERVER_ERROR, good.clone()),
        ),
        (
            "429",
            Reply::Json(http::StatusCode::TOO_MANY_REQUESTS, good.clone()),
        ),
        (
            "404",
            Reply::Json(http::StatusCode::NOT_FOUND, good.clone()),
        ),
        (
            "slow",
            Reply::Delay(
                Duration::from_secs(5),
                Box::new(Reply::Json(http::StatusCode::OK, good.clone())),
            ),
        ),
        ("trickling", Reply::Trickle(Duration::from_millis(100))),
        (
            "garbage",
            Reply::Json(http::StatusCode::OK, "\u{0}\u{1}garbage".into()),
        ),
        (
            "HTML",
            Reply::Json(
                http::StatusCode::OK,
                "<!doctype html><h1>Sign in</h1>".into(),
            ),
        ),
        (
            "truncated JSON",
            Reply::Json(http::StatusCode::OK, good[..good.len() / 2].to_owned()),
        ),
        (
            "empty key list",
            Reply::Json(http::StatusCode::OK, r#"{"keys":[]}"#.into()),
        ),
        ("50 MB body", Reply::Json(http::StatusCode::OK, big)),
        ("cross-origin redirect", Reply::Redirect(issuer.jwks_url())),
        ("same-origin redirect", Reply::Redirect("/elsewhere".into())),
    ];
    server.json("/elsewhere", good.clone());
    for (name, reply) in cases {
        server.set("/jwks", reply);
        let before = server.hits("/jwks");
        // Past the 10 ms backoff of the previous case's failure.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = std::time::Instant::now();
        let unknown = issuer.token().kid(format!("new-{name}")).sign();
        let e = verifier.verify(&unknown).await.unwrap_err();
        // The refetch failed: our outage, never the caller's fault.
        assert_eq!(e.reason(), Reason::KeysUnavailable, "{name}");
        assert_eq!(
            server.hits("/jwks"),
            before + 1,
            "{name}: the refetch happened"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name}: bounded time"
        );
        assert!(
            verifier.verify(&token).await.is_ok(),
            "{name}: last good keys kept"
        );
        assert!(
            verifier.verify(&issuer.token().sign()).await.is_ok(),
            "{name}: ...for new tokens too"
        );
    }
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "the redirect's target was never contacted"
    );
    assert_eq!(server.hits("/elsewhere"), 0, "nor the same-origin one");
}
