//! m2m-guard against a bare `jsonwebtoken::decode` with a prepared key, in
//! one run, on identical tokens and keys.
//!
//! ```text
//! cargo bench --bench verify
//! python3 benches/report.py        # the ratios, as in BENCHMARKS.md
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use jsonwebtoken::{DecodingKey, Validation};
use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use m2m_guard::{Algorithm, M2mAuthLayer, Verifier};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    iss: String,
    sub: Option<String>,
    azp: Option<String>,
    exp: u64,
    org_code: Option<String>,
    scope: Option<String>,
}

fn prepared_key(issuer: &TestIssuer, alg: Algorithm) -> DecodingKey {
    let kid = issuer.current_kid(alg);
    let doc = issuer.jwks_document();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap()
            .clone(),
    )
    .unwrap();
    DecodingKey::from_jwk(&jwk).unwrap()
}

fn baseline_validation(issuer: &TestIssuer, alg: jsonwebtoken::Algorithm) -> Validation {
    // A fair baseline: the same checks m2m-guard makes by default.
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer.issuer()]);
    v.set_audience(&[DEFAULT_AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.validate_nbf = true;
    v.leeway = 60;
    v
}

/// Mark the start of this run, so `report.py` can refuse estimates left
/// over from an earlier run (criterion keeps each benchmark's last result).
fn mark_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    let _ = std::fs::create_dir_all(&dir);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let marker = serde_json::json!({ "commit": commit, "started": started });
    let _ = std::fs::write(dir.join("m2m-run.json"), marker.to_string());
}

fn benches(c: &mut Criterion) {
    mark_run();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(TestIssuer::start());
    let (uncached, cached) = rt.block_on(async {
        let uncached = Verifier::builder()
            .issuer(issuer.config())
            .disable_token_cache()
            .build()
            .await
            .unwrap();
        let cached = issuer.verifier().await;
        (uncached, cached)
    });

    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let token = issuer
            .token()
            .alg(alg)
            .org("org_1")
            .scopes(["read:users", "write:flags"])
            .sign();
        let key = prepared_key(&issuer, alg);
        let validation = baseline_validation(&issuer, alg.to_string().parse().unwrap());
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &validation).is_ok());
        assert!(rt.block_on(uncached.verify(&token)).is_ok());

        let mut g = c.benchmark_group(format!("first_seen/{alg}"));
        g.bench_function("jsonwebtoken::decode", |b| {
            b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&token), &key, &validation).unwrap())
        });
        g.bench_function("m2m_guard::verify", |b| {
            b.to_async(&rt)
                .iter(|| async { uncached.verify(black_box(&token)).await.unwrap() })
        });
        g.finish();
    }

    // First-seen tokens with the token cache on: every call is a miss plus an insert.
    let fresh: Vec<String> = (0..200_000)
        .map(|i| {
            issuer
                .token()
                .alg(Algorithm::EdDSA)
                .client_id(format!("c{i}"))
                .sign()
        })
        .collect();
    let mut next = 0usize;
    let mut g = c.benchmark_group("first_seen/EdDSA, cache on");
    g.bench_function("m2m_guard::verify (first sighting, cache on)", |b| {
        b.to_async(&rt).iter(|| {
            next = (next + 1) % fresh.len();
            let t = &fresh[next];
            async { cached.verify(black_box(t)).await.unwrap() }
        })
    });
    g.finish();

    let token = issuer
        .token()
        .org("org_1")
        .scopes(["read:users", "write:flags"])
        .sign();
    assert!(rt.block_on(cached.verify(&token)).is_ok());
    let key = prepared_key(&issuer, Algorithm::RS256);
    let validation = baseline_validation(&issuer, jsonwebtoken::Algorithm::RS256);
    let svc = ServiceBuilder::new()
        .layer(M2mAuthLayer::new(cached.clone()))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let auth = header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();

    let mut g = c.benchmark_group("repeated/RS256");
    g.bench_function("jsonwebtoken::decode", |b| {
        b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&token), &key, &validation).unwrap())
    });
    g.bench_function("m2m_guard::verify (cache hit)", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.verify(black_box(&token)).await.unwrap() })
    });
    g.bench_function("middleware oneshot (cache hit)", |b| {
        b.to_async(&rt)
            .iter(|| call_ok(svc.clone(), request("/", &auth, None)))
    });
    g.finish();

    // DPoP: the same cached token, bound to a key, with a fresh proof per
    // request (made outside the timing), against the plain Bearer request
    // and against one bare ES256 verification of a proof.
    let dpop_key = m2m_guard::test_util::DpopKey::new();
    let bound = issuer.token().org("org_1").dpop_bound(&dpop_key).sign();
    assert!(rt.block_on(cached.verify(&bound)).is_ok());
    let dpop_svc = ServiceBuilder::new()
        .layer(
            M2mAuthLayer::new(cached.clone()).dpop(
                m2m_guard::Dpop::new("http://bench.example")
                    .replay_store(m2m_guard::MemoryReplayStore::new(20_000_000)),
            ),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    let dpop_auth = header::HeaderValue::from_str(&format!("DPoP {bound}")).unwrap();
    let proof = || {
        dpop_key
            .proof("GET", "http://bench.example/orders")
            .for_token(&bound)
            .sign()
    };
    let jwk = dpop_key.jwk();
    let proof_key =
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap();
    let mut proof_validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    proof_validation.required_spec_claims.clear();
    proof_validation.validate_exp = false;
    proof_validation.validate_aud = false;
    let mut g = c.benchmark_group("dpop/ES256 proof, cached token");
    g.bench_function("ES256 proof signature only (jsonwebtoken::decode)", |b| {
        let p = proof();
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&p), &proof_key, &proof_validation)
                .unwrap()
        })
    });
    g.bench_function("middleware oneshot, Bearer (cache hit)", |b| {
        b.to_async(&rt)
            .iter(|| call_ok(svc.clone(), request("/orders", &auth, None)))
    });
    g.bench_function("middleware oneshot, DPoP (cache hit + proof)", |b| {
        b.to_async(&rt).iter_batched(
            || request("/orders", &dpop_auth, Some(proof())),
            |req| call_ok(dpop_svc.clone(), req),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The revocation check on a cache hit: the same token verified from the
/// cache by a verifier without a revocation list, and by one whose list
/// holds 100,000 revocations of the token's own issuer (none matching:
/// every lookup runs and misses).
fn revocation_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(TestIssuer::start());
    let token = issuer
        .token()
        .client_id("svc-bench")
        .org("org_bench")
        .claim("jti", "jti-bench")
        .sign();
    let list = m2m_guard::Revocations::new();
    for i in 0..100_000 {
        let r = match i % 4 {
            0 | 1 => m2m_guard::Revocation::client(issuer.issuer(), format!("client-{i}")),
            2 => m2m_guard::Revocation::tenant(issuer.issuer(), format!("org-{i}")),
            _ => m2m_guard::Revocation::jti(issuer.issuer(), format!("jti-{i}")),
        };
        list.revoke(r).unwrap();
    }
    assert_eq!(list.len(), 100_000);
    let build = |revocations: Option<m2m_guard::Revocations>| {
        let mut b = Verifier::builder().issuer(issuer.config());
        if let Some(r) = revocations {
            b = b.revocations(r);
        }
        let v = rt.block_on(b.build()).unwrap();
        // Twice: cached from the second sighting.
        rt.block_on(v.verify(&token)).unwrap();
        rt.block_on(v.verify(&token)).unwrap();
        v
    };
    let (plain, checked) = (build(None), build(Some(list.clone())));
    let mut g = c.benchmark_group("revocations/cache hit");
    g.bench_function("no revocation list", |b| {
        b.to_async(&rt)
            .iter(|| async { plain.verify(black_box(&token)).await.unwrap() })
    });
    g.bench_function("100,000 revocations of the same issuer", |b| {
        b.to_async(&rt)
            .iter(|| async { checked.verify(black_box(&token)).await.unwrap() })
    });
    // The first check after the list changed: every lookup runs (the
    // change, made outside the timing, is one more revocation).
    let mut n = 0u64;
    g.bench_function(
        "100,000 revocations, first hit after a change (full lookup)",
        |b| {
            b.to_async(&rt).iter_batched(
                || {
                    n += 1;
                    // The same row again, a later `before`: the list changes, not grows.
                    let later = std::time::SystemTime::now() + Duration::from_secs(n);
                    list.revoke(
                        m2m_guard::Revocation::jti(issuer.issuer(), "x").issued_before(later),
                    )
                    .unwrap();
                },
                |()| async { checked.verify(black_box(&token)).await.unwrap() },
                criterion::BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

/// The cost of metrics on the hot path: the whole middleware call on a
/// cache hit with no recorder installed (what "metrics off" costs with the
/// feature on), with a Prometheus recorder, and with the opt-in tenant
/// label. Run with `--features metrics`.
#[cfg(feature = "metrics")]
fn metrics_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(TestIssuer::start());
    let token = issuer.token().org("org_1").scopes(["read:users"]).sign();
    let auth = header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let service = |tenant_label: bool| {
        let v = rt.block_on(
            Verifier::builder()
                .issuer(issuer.config())
                .metrics_tenant_label(tenant_label)
                .build(),
        );
        let v = v.unwrap();
        // Twice: cached from the second sighting.
        rt.block_on(v.verify(&token)).unwrap();
        rt.block_on(v.verify(&token)).unwrap();
        let svc = ServiceBuilder::new()
            .layer(M2mAuthLayer::new(v.clone()))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            });
        (svc, v)
    };
    let ((plain, plain_verifier), (labelled, _)) = (service(false), service(true));
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = prometheus.handle();
    let mut g = c.benchmark_group("metrics/middleware oneshot (cache hit)");
    g.bench_function("no recorder", |b| {
        b.to_async(&rt)
            .iter(|| call_ok(plain.clone(), request("/", &auth, None)))
    });
    metrics::with_local_recorder(&prometheus, || {
        g.bench_function("Prometheus recorder", |b| {
            b.to_async(&rt)
                .iter(|| call_ok(plain.clone(), request("/", &auth, None)))
        });
        g.bench_function("Prometheus recorder, tenant label", |b| {
            b.to_async(&rt)
                .iter(|| call_ok(labelled.clone(), request("/", &auth, None)))
        });
        // The batched counts (accepted decisions) go to the recorder in use
        // when handed over: by the verifier's task once a second, which a
        // bench that never lets its runtime idle may not run, and here.
        plain_verifier.health();
    });
    g.finish();
    paired_overhead(&rt, &plain, &auth, &prometheus);
    // The recorder saw the calls: the comparison is not against a no-op.
    let text = handle.render();
    let accepted = text
        .lines()
        .find(|l| {
            l.starts_with("m2m_guard_decisions_total{")
                && l.contains("outcome=\"accepted\"")
                && !l.contains("tenant=")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("accepted decisions recorded");
    assert!(accepted > 1000.0, "{accepted}");
}

/// The recorder's cost measured in pairs, because this host drifts by
/// ±20 % between two criterion functions run one after the other: 101
/// rounds, each timing 5,000 calls without and 5,000 with the recorder
/// (alternating which goes first); the median of the per-round
/// differences is the recorder's cost per request.
#[cfg(feature = "metrics")]
fn paired_overhead<S>(
    rt: &tokio::runtime::Runtime,
    svc: &S,
    auth: &header::HeaderValue,
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
) where
    S: Service<Request<()>, Response = Response<String>> + Clone,
    S::Error: std::fmt::Debug,
{
    const CALLS: u32 = 5_000;
    let time = |with: bool| {
        let _guard = with.then(|| metrics::set_default_local_recorder(recorder));
        let start = std::time::Instant::now();
        rt.block_on(async {
            for _ in 0..CALLS {
                call_ok(svc.clone(), request("/", auth, None)).await;
            }
        });
        start.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
    };
    let (mut diffs, mut ratios, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..101 {
        let (off, on) = if round % 2 == 0 {
            let off = time(false);
            (off, time(true))
        } else {
            let on = time(true);
            (time(false), on)
        };
        diffs.push(on - off);
        ratios.push(on / off);
        base.push(off);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    let (d1, d, d3) = median(&mut diffs);
    let (r1, r, r3) = median(&mut ratios);
    let (_, b, _) = median(&mut base);
    println!(
        "metrics/paired: no recorder {b:.0} ns/call; Prometheus recorder costs {d:.0} ns/call \
         (quartiles {d1:.0}..{d3:.0}), ratio {r:.3} (quartiles {r1:.3}..{r3:.3}), 101 rounds"
    );
}

#[cfg(not(feature = "metrics"))]
fn metrics_bench(_: &mut Criterion) {}

/// A request to `path` with this `Authorization` (and a DPoP proof).
fn request(path: &str, auth: &header::HeaderValue, proof: Option<String>) -> Request<()> {
    let mut req = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, auth.clone());
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    req.body(()).unwrap()
}

/// Send `req` through `svc`, which must answer 200.
async fn call_ok<S>(mut svc: S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

criterion_group! {
    name = verify;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches, revocation_bench, metrics_bench
}
criterion_main!(verify);
