//! Shared by every peer binary: the same requests, timed the same way.
//! Included with `#[path = "../../harness.rs"] mod harness;`.

use std::time::Instant;
use tower::{Service, ServiceExt};

pub struct Fixture {
    pub issuer: String,
    pub jwks_url: String,
    pub audience: String,
    pub tokens: Vec<String>,
}

/// Read what `m2m-guard-peer fixture DIR` wrote.
pub fn fixture() -> Fixture {
    let dir = std::env::var("PEER_FIXTURE").expect("PEER_FIXTURE=dir written by the fixture");
    let env = std::fs::read_to_string(format!("{dir}/env")).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    let tokens = std::fs::read_to_string(format!("{dir}/tokens.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    Fixture {
        issuer: get("ISSUER"),
        jwks_url: get("JWKS_URL"),
        audience: get("AUDIENCE"),
        tokens,
    }
}

/// Time the whole middleware call: first-seen (every token once) and
/// repeated (the first token again and again). Prints one JSON line.
pub async fn measure<S, B, RB>(peer: &str, svc: S, tokens: &[String])
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone,
    S::Error: std::fmt::Debug,
    B: Default,
{
    let request = |t: &str| {
        http::Request::builder()
            .uri("/")
            .header("authorization", format!("Bearer {t}"))
            .body(B::default())
            .unwrap()
    };
    // Warm-up: some peers load their keys in the background after building.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = svc
            .clone()
            .oneshot(request(&tokens[0]))
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{peer} must accept the fixture tokens (got {status})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let denied = svc
        .clone()
        .oneshot(request("not-a-token"))
        .await
        .unwrap()
        .status();
    assert_eq!(denied, 401, "{peer} must refuse garbage");

    let fresh = &tokens[1..];
    let t = Instant::now();
    for tok in fresh {
        let s = svc.clone().oneshot(request(tok)).await.unwrap().status();
        assert_eq!(s, 200);
    }
    let first_seen = t.elapsed().as_nanos() as f64 / fresh.len() as f64;

    let reps = 20_000;
    let t = Instant::now();
    for _ in 0..reps {
        let s = svc
            .clone()
            .oneshot(request(&tokens[0]))
            .await
            .unwrap()
            .status();
        assert_eq!(s, 200);
    }
    let repeated = t.elapsed().as_nanos() as f64 / reps as f64;
    println!(
        r#"{{"peer":"{peer}","first_seen_ns":{first_seen:.0},"repeated_ns":{repeated:.0},"first_seen_tokens":{},"repeated_requests":{reps}}}"#,
        fresh.len()
    );
}
