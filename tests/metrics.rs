//! Metrics and readiness an on-call engineer can act on: after a scripted
//! run (valid, expired, wrong audience, unknown kid, revoked, no token, an
//! issuer outage) every counter and gauge holds exactly what happened; and
//! `/readyz` follows the readiness rule through an outage.

// (The ops router of the examples is what is tested; the rest is unused.)
#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;
mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{M2mAuthLayer, Preset, Principal, Revocation, Revocations, Verifier};
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

const TTL: Duration = Duration::from_secs(600);
const STALE: Duration = Duration::from_secs(300);

/// Metrics as an exporter would show them: m2m-guard records into a
/// Prometheus recorder (this test's thread only), read back from its text.
struct Recorded {
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

/// One series: its name, its labels (sorted) and its value.
type Series = (String, Vec<(String, String)>, f64);

/// `name{a="1",b="2"} value` lines.
fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<(String, String)> = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect()
        };
        labels.sort();
        out.push((name.to_owned(), labels, value.parse().unwrap()));
    }
    out
}

impl Recorded {
    /// A recorder to install on the test's thread, and its reader.
    fn new() -> (metrics_exporter_prometheus::PrometheusRecorder, Recorded) {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        (recorder, Recorded { handle })
    }

    /// The value of metric `name` with exactly these labels, if recorded
    /// (a histogram: how many observations).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        want.sort();
        let count = format!("{name}_count");
        parse(&self.handle.render())
            .into_iter()
            .find(|(n, l, _)| (n == name || *n == count) && *l == want)
            .map(|(_, _, v)| v)
    }

    /// Every label name recorded (histogram quantiles aside).
    fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = parse(&self.handle.render())
            .into_iter()
            .flat_map(|(_, l, _)| l.into_iter().map(|(k, _)| k))
            .filter(|k| k != "quantile")
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

async fn call(app: &Router, token: Option<&str>) -> StatusCode {
    let mut req = Request::builder().uri("/whoami");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_scripted_run_leaves_exactly_the_expected_counters_and_gauges() {
    let (recorder, snap) = Recorded::new();
    // This test's thread only: the runtime is single-threaded, so every
    // task (fetches included) records here.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let issuer = TestIssuer::start().await;
    let iss = issuer.issuer().to_owned();
    let revocations = Revocations::new();
    let verifier = Verifier::builder()
        .issuer(issuer.config().refresh_interval(TTL).max_stale(STALE))
        .clock(issuer.clock())
        .revocations(revocations.clone())
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/whoami",
            get(|p: Principal| async move { p.client_id().unwrap_or("-").to_owned() }),
        )
        .layer(M2mAuthLayer::new(verifier.clone()));

    let valid = issuer.token().sign();
    for _ in 0..3 {
        assert_eq!(call(&app, Some(&valid)).await, StatusCode::OK);
    }
    let expired = issuer.token().expired().sign();
    assert_eq!(call(&app, Some(&expired)).await, StatusCode::UNAUTHORIZED);
    let other_api = issuer.token().audience("https://other.example.test").sign();
    assert_eq!(call(&app, Some(&other_api)).await, StatusCode::UNAUTHORIZED);
    let unknown_kid = issuer.token().kid("no-such-key").sign();
    assert_eq!(
        call(&app, Some(&unknown_kid)).await,
        StatusCode::UNAUTHORIZED
    );
    revocations
        .revoke(Revocation::client(&iss, "leaked-client"))
        .unwrap();
    let revoked = issuer
        .token()
        .client_id("leaked-client")
        .issued_ago(Duration::from_secs(60))
        .sign();
    assert_eq!(call(&app, Some(&revoked)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, None).await, StatusCode::UNAUTHORIZED);
    // Malformed: refused before any verification, so no cache miss.
    assert_eq!(
        call(&app, Some("not!a-token")).await,
        StatusCode::BAD_REQUEST
    );

    let fetches = |outcome: &str| {
        snap.value(
            "m2m_guard_key_set_fetches_total",
            &[("issuer", &iss), ("outcome", outcome)],
        )
    };
    assert_eq!(
        fetches("ok"),
        Some(2.0),
        "the first load and the unknown-kid refetch"
    );
    assert_eq!(
        snap.value(
            "m2m_guard_unknown_kid_total",
            &[("issuer", &iss), ("action", "refetch")]
        ),
        Some(1.0)
    );
    assert_eq!(
        snap.value(
            "m2m_guard_key_set_fetch_duration_seconds",
            &[("issuer", &iss)]
        ),
        Some(2.0),
        "one duration per fetch"
    );

    // The issuer goes down; 610 s later the keys are past their TTL, used
    // within max_stale: a request is served, and a refresh fails.
    issuer.set_outage(Outage::Status(503));
    issuer.clock().advance(TTL + Duration::from_secs(10));
    let later = issuer.token().sign();
    assert_eq!(call(&app, Some(&later)).await, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetches("error").is_none() {
        assert!(Instant::now() < deadline, "the background refresh fails");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gauge = |name: &str| snap.value(name, &[("issuer", &iss)]).unwrap();
    assert_eq!(gauge("m2m_guard_key_set_stale"), 1.0);
    let age = gauge("m2m_guard_key_set_age_seconds");
    assert!((610.0..615.0).contains(&age), "age {age}");
    let usable = gauge("m2m_guard_key_set_usable_seconds");
    assert!((285.0..=290.0).contains(&usable), "usable for {usable}");

    // Past max_stale: no keys, 503, and the gauges say so.
    issuer.clock().advance(STALE);
    let last = issuer.token().sign();
    assert_eq!(
        call(&app, Some(&last)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(fetches("error"), Some(2.0));
    assert_eq!(gauge("m2m_guard_key_set_usable_seconds"), 0.0);
    assert_eq!(gauge("m2m_guard_key_set_stale"), 0.0);

    // The batched counters (accepted decisions, cache hits) are exact
    // once `health()` hands them over, as before a scrape.
    drop(verifier.health());
    let decisions = |outcome: &str, reason: &str, issuer: &str| {
        snap.value(
            "m2m_guard_decisions_total",
            &[("outcome", outcome), ("reason", reason), ("issuer", issuer)],
        )
    };
    assert_eq!(decisions("accepted", "ok", &iss), Some(4.0));
    for reason in [
        "expired",
        "invalid_audience",
        "unknown_key",
        "revoked",
        "keys_unavailable",
    ] {
        assert_eq!(decisions("rejected", reason, &iss), Some(1.0), "{reason}");
    }
    assert_eq!(decisions("rejected", "missing_token", ""), Some(1.0));
    assert_eq!(decisions("rejected", "invalid_request", ""), Some(1.0));
    // Hits, misses and admissions of the token cache: the valid token
    // missed twice (admitted on its second sighting) and hit once; every
    // other token missed once (the malformed one was never looked up as
    // a token).
    assert_eq!(
        snap.value("m2m_guard_token_cache_hits_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        snap.value("m2m_guard_token_cache_misses_total", &[]),
        Some(8.0)
    );
    assert_eq!(
        snap.value("m2m_guard_token_cache_admissions_total", &[]),
        Some(1.0)
    );
    assert_eq!(snap.value("m2m_guard_revocations", &[]), Some(1.0));
    // No label carries a token, a tenant or a client id.
    assert_eq!(
        snap.label_names(),
        ["action", "issuer", "outcome", "reason"]
    );
}

#[tokio::test]
async fn the_tenant_label_is_opt_in() {
    let (recorder, snap) = Recorded::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let issuer = TestIssuer::start().await;
    let iss = issuer.issuer().to_owned();
    let token = issuer.token().org("org_acme").sign();
    for with_tenant in [false, true] {
        let verifier = Verifier::builder()
            .issuer(issuer.config())
            .metrics_tenant_label(with_tenant)
            .build()
            .await
            .unwrap();
        let app = Router::new()
            .route("/whoami", get(|| async { "ok" }))
            .layer(M2mAuthLayer::new(verifier));
        assert_eq!(call(&app, Some(&token)).await, StatusCode::OK);
    }
    let base = [
        ("outcome", "accepted"),
        ("reason", "ok"),
        ("issuer", iss.as_str()),
    ];
    assert_eq!(snap.value("m2m_guard_decisions_total", &base), Some(1.0));
    let mut with_tenant = base.to_vec();
    with_tenant.push(("tenant", "org_acme"));
    assert_eq!(
        snap.value("m2m_guard_decisions_total", &with_tenant),
        Some(1.0)
    );
}

#[tokio::test]
async fn readyz_follows_the_readiness_rule_through_an_outage() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Status(503));
    let verifier = Verifier::builder()
        .issuer(issuer.config().refresh_interval(TTL).max_stale(STALE))
        .clock(issuer.clock())
        .build()
        .await
        .unwrap();
    let ops = common::ops_router(verifier.clone(), None);
    let readyz = || async {
        let resp = ops
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    };
    // Before the keys ever load (the issuer is down): not ready.
    assert!(verifier.preload().await.is_err());
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["issuers"][0]["keys_loaded"], false);
    assert!(
        body["issuers"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{body}"
    );
    // The issuer is back: the probe alone (no request reaches a replica
    // out of rotation) fetches the keys, and the replica turns ready.
    issuer.set_outage(Outage::None);
    issuer.clock().advance(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = readyz().await;
        if status == StatusCode::OK {
            break body;
        }
        assert!(Instant::now() < deadline, "ready within 10 s: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["issuers"][0]["stale"], false);
    assert_eq!(body["issuers"][0]["last_error"], serde_json::Value::Null);
    // An outage within the stale window: still ready (it still verifies).
    issuer.set_outage(Outage::Status(503));
    issuer.clock().advance(TTL + Duration::from_secs(10));
    let _ = verifier.refresh_now().await;
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issuers"][0]["stale"], true);
    assert!(verifier.health().is_ready());
    // Past it: not ready.
    issuer.clock().advance(STALE);
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!verifier.health().is_ready());
}

/// Accepted decisions and cache hits are counted in batches, handed to
/// the recorder in use by `health()` (and by the verifier's task once a
/// second): each batch goes to the recorder in use at its hand-over, none
/// is lost or counted twice. (Counts handed over while no recorder is
/// installed go nowhere, as any metric recorded then.)
#[tokio::test]
async fn counts_go_to_the_recorder_in_use() {
    let issuer = TestIssuer::start().await;
    let iss = issuer.issuer().to_owned();
    let token = issuer.token().sign();
    let verifier = issuer.verifier().await;
    let app = Router::new()
        .route("/whoami", get(|| async { "ok" }))
        .layer(M2mAuthLayer::new(verifier.clone()));
    let accepted = [
        ("outcome", "accepted"),
        ("reason", "ok"),
        ("issuer", iss.as_str()),
    ];
    let calls = |n: usize| {
        let (app, token) = (app.clone(), token.clone());
        async move {
            for _ in 0..n {
                assert_eq!(call(&app, Some(&token)).await, StatusCode::OK);
            }
        }
    };
    // No recorder: verified, verified and admitted, then a cache hit.
    calls(3).await;
    drop(verifier.health());
    let (a, snap_a) = Recorded::new();
    let (b, snap_b) = Recorded::new();
    {
        let _guard = metrics::set_default_local_recorder(&a);
        calls(2).await;
        drop(verifier.health());
    }
    {
        let _guard = metrics::set_default_local_recorder(&b);
        calls(1).await;
        drop(verifier.health());
    }
    {
        let _guard = metrics::set_default_local_recorder(&a);
        calls(1).await;
        drop(verifier.health());
    }
    assert_eq!(
        snap_a.value("m2m_guard_decisions_total", &accepted),
        Some(3.0)
    );
    assert_eq!(
        snap_a.value("m2m_guard_token_cache_hits_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        snap_b.value("m2m_guard_decisions_total", &accepted),
        Some(1.0)
    );
    assert_eq!(
        snap_b.value("m2m_guard_token_cache_hits_total", &[]),
        Some(1.0)
    );
}

/// Without `health()`, batched counts reach the recorder once a second
/// (the verifier's task), and what is left when the verifier is dropped,
/// even while a `Principal` it verified lives on.
#[tokio::test]
async fn batched_counts_are_handed_over_each_second_and_when_dropped() {
    let (recorder, snap) = Recorded::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let issuer = TestIssuer::start().await;
    let iss = issuer.issuer().to_owned();
    let token = issuer.token().sign();
    // The handler keeps the last principal it was handed.
    let last = std::sync::Arc::new(std::sync::Mutex::new(None::<Principal>));
    let slot = last.clone();
    let app = Router::new()
        .route(
            "/whoami",
            get(move |p: Principal| async move {
                *slot.lock().unwrap() = Some(p);
                "ok"
            }),
        )
        .layer(M2mAuthLayer::new(issuer.verifier().await));
    let accepted = || {
        snap.value(
            "m2m_guard_decisions_total",
            &[("outcome", "accepted"), ("reason", "ok"), ("issuer", &iss)],
        )
        .unwrap_or(0.0)
    };
    let hits = || {
        snap.value("m2m_guard_token_cache_hits_total", &[])
            .unwrap_or(0.0)
    };
    // Two calls verify the token (the second admits it); then cache hits,
    // a few a second, until both counts are current without `health()`
    // (the task ran while the test slept).
    let mut calls = 0.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(call(&app, Some(&token)).await, StatusCode::OK);
        calls += 1.0;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if calls > 3.0 && accepted() == calls && hits() == calls - 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {calls} calls: {} accepted, {} hits",
            accepted(),
            hits()
        );
    }
    // A burst within a second is (mostly) held back; dropping the last
    // holder of the verifier hands it over, though a principal lives on.
    for _ in 0..20 {
        assert_eq!(call(&app, Some(&token)).await, StatusCode::OK);
    }
    let kept = last.lock().unwrap().take().expect("a principal");
    drop(app);
    assert_eq!(accepted(), calls + 20.0);
    assert_eq!(hits(), calls + 18.0);
    drop(kept);
}

/// An issuer with a key set per tenant (a Keycloak realm per customer):
/// decisions are labelled with the configured template, never a tenant's
/// `iss`; one tenant's key outage is reported but keeps the replica ready.
#[tokio::test]
async fn a_tenants_outage_is_reported_under_the_template_and_keeps_the_replica_ready() {
    let (recorder, snap) = Recorded::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let acme = TestIssuer::start_with(Preset::Keycloak).await;
    let globex = TestIssuer::start_with(Preset::Keycloak).await;
    let s = support::keycloak(&[("acme", &acme), ("globex", &globex)]).await;
    s.set(
        "/realms/globex/protocol/openid-connect/certs",
        support::Reply::text(503, "down"),
    );
    let template = s.url("/realms/{tenantid}");
    let verifier = Verifier::builder()
        .issuer(support::realms(&s).allowed_tenants(["acme", "globex"]))
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route("/whoami", get(|| async { "ok" }))
        .layer(M2mAuthLayer::new(verifier.clone()));
    let acme_token = support::realm_token(&acme, &s, "acme");
    assert_eq!(call(&app, Some(&acme_token)).await, StatusCode::OK);
    let globex_token = support::realm_token(&globex, &s, "globex");
    assert_eq!(
        call(&app, Some(&globex_token)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let health = verifier.health();
    let tenant = |t: &str| {
        health
            .issuers()
            .iter()
            .find(|i| i.tenant.as_deref() == Some(t))
            .unwrap_or_else(|| panic!("{t} reported: {}", health.to_json()))
    };
    assert!(tenant("acme").keys_loaded);
    assert!(!tenant("globex").keys_loaded);
    assert!(
        tenant("globex")
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{}",
        health.to_json()
    );
    assert_eq!(health.issuers().len(), 2);
    assert!(health.issuers().iter().all(|i| i.issuer == template));
    assert!(health.is_ready(), "{}", health.to_json());

    for (outcome, reason) in [("accepted", "ok"), ("rejected", "keys_unavailable")] {
        let labels = [
            ("outcome", outcome),
            ("reason", reason),
            ("issuer", template.as_str()),
        ];
        assert_eq!(
            snap.value("m2m_guard_decisions_total", &labels),
            Some(1.0),
            "{outcome}"
        );
    }
    let text = snap.handle.render();
    assert!(
        !text.contains("/realms/acme") && !text.contains("/realms/globex"),
        "{text}"
    );
    // One gauge per issuer cannot tell its tenants' key sets apart: the
    // template has none (the health endpoint has them, per tenant).
    for gauge in [
        "m2m_guard_key_set_age_seconds",
        "m2m_guard_key_set_stale",
        "m2m_guard_key_set_usable_seconds",
    ] {
        assert_eq!(
            snap.value(gauge, &[("issuer", template.as_str())]),
            None,
            "{gauge}: {text}"
        );
    }
    for gauge in ["_age_seconds", "_stale", "_usable_seconds"] {
        assert!(
            !text.contains(&format!("m2m_guard_key_set{gauge}")),
            "{text}"
        );
    }
}
