//! Certificate-bound tokens (RFC 8705 §3): `cnf.x5t#S256` checked against
//! the client certificate of the connection or of a trusted proxy header,
//! and never read from a header that was not configured.

mod support;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{ClientCertificate, M2mAuthLayer, Mtls, Principal};
use serde_json::json;
use sha2::{Digest, Sha256};

const CERT: &[u8] = b"0\x82\x02\x0a the client's certificate (DER)";
const OTHER: &[u8] = b"0\x82\x02\x0a another certificate";

fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

fn hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn escaped_pem(der: &[u8]) -> String {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(der)
    );
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn status(
    app: &Router,
    token: &str,
    headers: &[(&str, String)],
    cert: Option<&[u8]>,
) -> (u16, String) {
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder()
        .uri("/whoami")
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    if let Some(c) = cert {
        req.extensions_mut().insert(ClientCertificate(c.to_vec()));
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), www)
}

fn app(layer: M2mAuthLayer) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|p: Principal| async move { p.x5t_s256().unwrap_or("-").to_owned() }),
        )
        .layer(layer)
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let bound = issuer
        .token()
        .claim("cnf", json!({"x5t#S256": x5t(CERT)}))
        .sign();
    let plain = issuer.token().sign();

    for (name, layer, good, bad) in [
        (
            "connection",
            Mtls::from_connection(),
            (vec![], Some(CERT)),
            (vec![], Some(OTHER)),
        ),
        (
            "envoy",
            Mtls::from_envoy_xfcc(),
            (
                vec![(
                    "x-forwarded-client-cert",
                    format!("By=spiffe://api;Hash={}", hex(CERT)),
                )],
                None,
            ),
            (
                vec![("x-forwarded-client-cert", format!("Hash={}", hex(OTHER)))],
                None,
            ),
        ),
        (
            "nginx",
            Mtls::from_pem_header("x-client-cert"),
            (vec![("x-client-cert", escaped_pem(CERT))], None),
            (vec![("x-client-cert", escaped_pem(OTHER))], None),
        ),
    ] {
        let app = app(M2mAuthLayer::new(verifier.clone()).mtls(layer));
        // Twice each: full verification, then the token cache.
        for _ in 0..3 {
            assert_eq!(status(&app, &bound, &good.0, good.1).await.0, 200, "{name}");
            let (s, www) = status(&app, &bound, &bad.0, bad.1).await;
            assert_eq!(s, 401, "{name}");
            assert!(www.contains("another client certificate"), "{name}: {www}");
            let (s, www) = status(&app, &bound, &[], None).await;
            assert_eq!(s, 401, "{name}: no certificate");
            assert!(www.contains("another client certificate"), "{name}: {www}");
            // Unbound tokens do not care.
            assert_eq!(status(&app, &plain, &[], None).await.0, 200, "{name}");
        }
        // Two hops in XFCC, or a duplicated header: not guessed.
        if name == "envoy" {
            let two = format!("Hash={},Hash={}", hex(CERT), hex(CERT));
            let (s, _) = status(&app, &bound, &[("x-forwarded-client-cert", two)], None).await;
            assert_eq!(s, 401);
        }
    }

    // Not configured: the header is never read, the token is refused.
    let bearer_only = app(M2mAuthLayer::new(verifier.clone()));
    let forged = [("x-forwarded-client-cert", format!("Hash={}", hex(CERT)))];
    let (s, www) = status(&bearer_only, &bound, &forged, Some(CERT)).await;
    assert_eq!(s, 401);
    assert!(www.contains("bound to a key"), "{www}");
    // A token bound to a DPoP key is not helped by a certificate.
    let dpop_bound = issuer
        .token()
        .claim("cnf", json!({"jkt": "abc", "x5t#S256": x5t(CERT)}))
        .sign();
    let direct = app(M2mAuthLayer::new(verifier).mtls(Mtls::from_connection()));
    assert_eq!(status(&direct, &dpop_bound, &[], Some(CERT)).await.0, 401);
}
