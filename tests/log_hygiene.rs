//! Log hygiene: drive every rejection path (and acceptance) with tracing at
//! TRACE for every target, and check that no part of any token's signature
//! or payload reaches the output.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
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
                .unknown_kid_cooldown(Duration::from_millis(100)),
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
    let mut tokens: Vec<String> = vec![
        issuer.token().org("o").scopes(["s"]).sign(), // accepted
        issuer.token().org("o").scopes(["s"]).expired().sign(), // expired
        issuer
            .token()
            .org("o")
            .scopes(["s"])
            .audience("other")
            .sign(), // audience
        issuer
            .token()
            .org("o")
            .scopes(["s"])
            .not_before_in(3600)
            .sign(), // nbf
        issuer.token().org("o").scopes(["s"]).kid("unknown").sign(), // unknown kid + refetch
        issuer
            .token()
            .org("o")
            .scopes(["s"])
            .typ(Some("dpop+jwt"))
            .sign(),
        issuer
            .token()
            .org("o")
            .scopes(["s"])
            .alg(Algorithm::PS256)
            .sign(), // alg mismatch
        issuer.token().org("o").claim("org_code", 5).sign(), // wrong type
        issuer.token().org("o").sign(),                      // missing scope
        issuer.token().org("elsewhere").scopes(["s"]).sign(), // wrong tenant
        stranger.token().org("o").scopes(["s"]).sign(),      // unknown issuer
        issuer.token().claim("pad", "p".repeat(20_000)).sign(), // too large
    ];
    let good = tokens[0].clone();
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut bad_sig = sig.to_owned();
    bad_sig.replace_range(5..6, if &sig[5..6] == "A" { "B" } else { "A" });
    tokens.push(format!("{head}.{bad_sig}"));

    let send = |value: String| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .uri("/orgs/o/x")
                .header(header::AUTHORIZATION, value)
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    for t in &tokens {
        send(format!("Bearer {t}")).await;
        send(format!("Bearer {t}")).await; // again: the token cache path
    }
    send(format!("Bearer {} extra", tokens[0])).await; // malformed header
    send(format!("Basic {}", tokens[0])).await; // other scheme
    // Keys unavailable: a fresh verifier against an issuer that is down.
    issuer.set_outage(Outage::Status(503));
    let cold = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .build()
        .await
        .unwrap();
    let _ = cold.verify(&tokens[0]).await;
    issuer.set_outage(Outage::None);

    let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("m2m-guard decision"),
        "decisions are logged:\n{out}"
    );
    for code in [
        "expired",
        "invalid_audience",
        "unknown_key",
        "insufficient_scope",
        "wrong_tenant",
        "invalid_signature",
    ] {
        assert!(out.contains(code), "reason code {code} is logged");
    }
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
