//! Log hygiene: drive every rejection path (and acceptance) with tracing at
//! TRACE for every target, and check that no part of any token's signature
//! or payload reaches the output.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use base64::Engine as _;
use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{Algorithm, M2mAuthLayer, Principal, RequireScope, RequireTenant, Verifier};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt as _;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_material_in_trace_logs() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let issuer = TestIssuer::start().await;
    let stranger = TestIssuer::start().await;
    let verifier = Verifier::builder()
        .issuer(
            issuer
                .config()
                .unknown_kid_cooldown(Duration::from_millis(100))
                .max_token_age(Duration::from_secs(3 * 3600))
                .max_token_lifetime(Duration::from_secs(5 * 3600))
                .allowed_client_ids(["test-client"]),
        )
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/orgs/{org}/x",
            get(|p: Principal| async move { p.issuer().to_owned() }),
        )
        .route_layer(RequireTenant::path_param("org"))
        .route_layer(RequireScope::all(["s"]))
        .route_layer(M2mAuthLayer::new(verifier.clone()));

    let payload = |t: &str| t.split('.').nth(1).unwrap_or("").to_owned();
    let t = || issuer.token().org("o").scopes(["s"]);
    // Every rejection path through the layer and the guards: the token, the
    // status it must get, and the reason code its decision must log.
    let mut cases: Vec<(String, u16, &str)> = vec![
        (t().sign(), 200, "accepted"),
        (t().expired().sign(), 401, "expired"),
        (t().audience("other").sign(), 401, "invalid_audience"),
        (t().not_before_in(3600).sign(), 401, "not_yet_valid"),
        (t().kid("unknown").sign(), 401, "unknown_key"),
        (t().typ(Some("dpop+jwt")).sign(), 401, "invalid_type"),
        (
            t().alg(Algorithm::PS256)
                .kid(issuer.current_kid(Algorithm::RS256))
                .sign(),
            401,
            "algorithm_mismatch",
        ),
        (t().claim("org_code", 5).sign(), 401, "invalid_claim"),
        (t().without_claim("exp").sign(), 401, "missing_claim"),
        (
            t().claim("iat", 4_000_000_000u64).sign(),
            401,
            "issued_in_future",
        ),
        (issuer.token().org("o").sign(), 403, "insufficient_scope"),
        (
            issuer.token().org("elsewhere").scopes(["s"]).sign(),
            403,
            "wrong_tenant",
        ),
        (
            stranger.token().org("o").scopes(["s"]).sign(),
            401,
            "unknown_issuer",
        ),
        (
            t().claim("pad", "p".repeat(20_000)).sign(),
            401,
            "too_large",
        ),
        ("a.b".into(), 401, "malformed"),
        ("a.b.c.d.e".into(), 401, "encrypted"),
        (
            t().issued_ago(Duration::from_secs(4 * 3600))
                .expires_in(Duration::from_secs(5 * 3600))
                .sign(),
            401,
            "too_old",
        ),
        (
            t().expires_in(Duration::from_secs(6 * 3600)).sign(),
            401,
            "lifetime_too_long",
        ),
        (t().client_id("intruder").sign(), 401, "client_not_allowed"),
    ];
    // Hand-made headers: `alg` none of ours, a `crit` parameter.
    let claims = serde_json::Value::Object(t().claims()).to_string();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    cases.push((
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(&claims)
        ),
        401,
        "unsupported_algorithm",
    ));
    let kid = issuer.current_kid(Algorithm::ES256);
    cases.push((
        issuer.sign_raw(
            Algorithm::ES256,
            &format!(r#"{{"alg":"ES256","kid":"{kid}","crit":["exp"]}}"#),
            &claims,
        ),
        401,
        "unsupported_critical",
    ));
    let good = cases[0].0.clone();
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut bad_sig = sig.to_owned();
    bad_sig.replace_range(5..6, if &sig[5..6] == "A" { "B" } else { "A" });
    cases.push((format!("{head}.{bad_sig}"), 401, "invalid_signature"));
    let tokens: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();

    let send = |app: Router, value: String| async move {
        let req = Request::builder()
            .uri("/orgs/o/x")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        app.oneshot(req).await.unwrap().status().as_u16()
    };
    for (token, status, code) in &cases {
        let bearer = format!("Bearer {token}");
        assert_eq!(send(app.clone(), bearer.clone()).await, *status, "{code}");
        // Again: the token cache path.
        assert_eq!(send(app.clone(), bearer).await, *status, "{code} again");
    }
    let header_cases = [
        (
            format!("Bearer {} extra", tokens[0]),
            400,
            "invalid_request",
        ),
        (format!("Basic {}", tokens[0]), 401, "missing_token"),
    ];
    for (value, status, code) in &header_cases {
        assert_eq!(send(app.clone(), value.clone()).await, *status, "{code}");
    }
    // Keys unavailable: a fresh verifier against an issuer that is down.
    issuer.set_outage(Outage::Status(503));
    let cold = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .build()
        .await
        .unwrap();
    let cold_app = Router::new()
        .route("/orgs/{org}/x", get(|| async { "ok" }))
        .route_layer(M2mAuthLayer::new(cold));
    assert_eq!(
        send(cold_app, format!("Bearer {}", tokens[0])).await,
        503,
        "keys_unavailable"
    );
    issuer.set_outage(Outage::None);

    let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("m2m-guard decision"),
        "decisions are logged:\n{out}"
    );
    let rejected = cases
        .iter()
        .skip(1)
        .map(|c| c.2)
        .chain(header_cases.iter().map(|c| c.2))
        .chain(["keys_unavailable"]);
    for code in rejected {
        assert!(
            out.contains(&format!("reason=\"{code}\"")) || out.contains(&format!("reason={code}")),
            "reason code {code} is logged"
        );
    }
    // A failed key-set fetch names where the keys come from.
    assert!(
        out.contains(&format!("source={}", issuer.jwks_url())),
        "the key source is logged:\n{out}"
    );
    assert!(
        out.contains(&format!("source=discovery of {}", issuer.issuer())),
        "a discovered key source is logged as such:\n{out}"
    );
    for t in &tokens {
        let sig = t.rsplit('.').next().unwrap();
        // Any 16-character window of the signature or payload would be a leak.
        for part in [sig.to_owned(), payload(t)] {
            for start in (0..part.len().saturating_sub(16)).step_by(8) {
                let window = &part[start..start + 16];
                assert!(
                    !out.contains(window),
                    "token material {window:?} found in the logs"
                );
            }
        }
    }
    assert!(
        !out.contains("Bearer ey"),
        "no bearer header value in the logs"
    );
}
