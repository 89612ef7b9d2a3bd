//! Resilience under load:
//! 1. a flood of 10,000 requests with made-up `kid`s costs at most one JWKS
//!    fetch per cooldown;
//! 2. while a JWKS fetch hangs, requests with known keys keep their p99.
//!
//! ```text
//! cargo bench --bench resilience
//! ```

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, header};
use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{Algorithm, M2mAuthLayer, Principal, Verifier};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(flood());
    rt.block_on(hanging_fetch());
}

fn app(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/",
            get(|p: Principal| async move { p.client_id().unwrap_or("-").to_owned() }),
        )
        .route_layer(M2mAuthLayer::new(verifier))
}

async fn send(app: &Router, token: &str) -> u16 {
    let req = Request::builder()
        .uri("/")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

async fn flood() {
    println!("## 1. unknown-kid flood");
    println!(
        "| cooldown | requests | duration | JWKS fetches (after warm-up) | allowed (1 per cooldown, +1) |"
    );
    println!("|---|---|---|---|---|");
    for cooldown in [Duration::from_secs(30), Duration::from_millis(500)] {
        let issuer = TestIssuer::start().await;
        let verifier = Verifier::builder()
            .issuer(issuer.config().unknown_kid_cooldown(cooldown))
            .build()
            .await
            .unwrap();
        let app = app(verifier);
        assert_eq!(send(&app, &issuer.token().sign()).await, 200);
        let warm = issuer.jwks_fetches();
        let tokens: Vec<String> = (0..10_000)
            .map(|i| {
                issuer
                    .token()
                    .alg(Algorithm::EdDSA)
                    .kid(format!("made-up-{i}"))
                    .sign()
            })
            .collect();
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for chunk in tokens.chunks(100) {
            let chunk = chunk.to_vec();
            let app = app.clone();
            set.spawn(async move {
                for t in chunk {
                    assert_eq!(send(&app, &t).await, 401);
                }
            });
            // Spread the flood over time so the cooldown is exercised.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let elapsed = started.elapsed();
        let fetches = issuer.jwks_fetches() - warm;
        let allowed = (elapsed.as_secs_f64() / cooldown.as_secs_f64()).floor() as u64 + 1;
        println!(
            "| {:?} | 10000 | {:.2} s | {fetches} | ≤ {allowed} |",
            cooldown,
            elapsed.as_secs_f64()
        );
        assert!(fetches <= allowed, "{fetches} fetches > {allowed}");
    }
}

async fn p99(app: &Router, tokens: &[String], concurrency: usize) -> (f64, f64) {
    let mut set = tokio::task::JoinSet::new();
    for chunk in tokens.chunks(tokens.len().div_ceil(concurrency)) {
        let chunk = chunk.to_vec();
        let app = app.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(chunk.len());
            for t in chunk {
                let s = Instant::now();
                assert_eq!(send(&app, &t).await, 200);
                lat.push(s.elapsed().as_secs_f64() * 1e3);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (all[all.len() / 2], all[all.len() * 99 / 100])
}

async fn hanging_fetch() {
    println!("\n## 2. a hanging JWKS fetch does not slow requests with known keys");
    let issuer = TestIssuer::start().await;
    // A fresh verifier per round: a hanging fetch stays in flight (single-flight)
    // until its own timeout, so a new round needs its own key store.
    let new_app = || async {
        let verifier = Verifier::builder()
            .issuer(issuer.config().unknown_kid_cooldown(Duration::from_secs(1)))
            .fetch_timeout(Duration::from_secs(30))
            .disable_token_cache() // every request does the full signature check
            .build()
            .await
            .unwrap();
        app(verifier)
    };
    let mint = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| issuer.token().alg(Algorithm::ES256).sign())
            .collect()
    };
    let n: usize = std::env::var("M2M_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rounds = Vec::new();
    for round in 0..3 {
        let app = new_app().await;
        assert_eq!(send(&app, &mint(1)[0]).await, 200);
        let calm_tokens = mint(n);
        let hang_tokens = mint(n);
        let calm = p99(&app, &calm_tokens, 16).await;
        // A token with a new kid starts a refetch that hangs for the whole measurement.
        issuer.set_outage(Outage::Delay(Duration::from_secs(60)));
        let fetches = issuer.jwks_fetches();
        let app2 = app.clone();
        let stray = issuer.token().kid(format!("rotated-{round}")).sign();
        let pending = tokio::spawn(async move { send(&app2, &stray).await });
        while issuer.jwks_fetches() == fetches {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let hanging = p99(&app, &hang_tokens, 16).await;
        assert!(
            !pending.is_finished(),
            "the fetch was still hanging during the measurement"
        );
        pending.abort();
        issuer.set_outage(Outage::None);
        rounds.push((calm, hanging));
    }
    println!("| round | calm p50 / p99 | during hanging fetch p50 / p99 | p99 ratio |");
    println!("|---|---|---|---|");
    for (i, (c, h)) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.2}× |",
            i + 1,
            c.0,
            c.1,
            h.0,
            h.1,
            h.1 / c.1
        );
    }
}
