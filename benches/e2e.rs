//! End to end over loopback with `wrk`: an axum route behind m2m-guard with a
//! valid repeated token, against the same route without auth, in one run.
//!
//! ```text
//! apt-get install wrk
//! cargo bench --bench e2e              # M2M_E2E_SECS (default 5) per round, 3 rounds each
//! ```

use axum::Router;
use axum::routing::get;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{M2mAuthLayer, Principal};
use std::process::Command;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo bench --no-run` / `cargo test --benches` discovery
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install wrk");
        std::process::exit(1);
    }
    let secs: u64 = std::env::var("M2M_E2E_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // One worker thread for the server, one wrk thread: the machine has two cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (issuer, addr) = rt.block_on(async {
        let issuer = TestIssuer::start().await;
        let verifier = issuer.verifier().await;
        let protected = Router::new()
            .route(
                "/protected",
                get(|p: Principal| async move { p.tenant().unwrap_or("-").to_owned() }),
            )
            .route_layer(M2mAuthLayer::new(verifier));
        let app = Router::new()
            .route("/open", get(|| async { "org_1" }))
            .merge(protected);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (issuer, addr)
    });
    let token = issuer.token().org("org_1").scopes(["read:users"]).sign();
    let base = format!("http://{addr}");
    // Sanity: the protected route answers 200 with the token, 401 without.
    let check = |path: &str, auth: bool| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}{path}"),
        ]);
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    assert_eq!(check("/protected", true), "200");
    assert_eq!(check("/protected", false), "401");

    let run = |path: &str, auth: bool| -> (f64, f64) {
        let mut c = Command::new("wrk");
        c.args(["-t1", "-c32", &format!("-d{secs}s"), "--latency"]);
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        c.arg(format!("{base}{path}"));
        let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
        let rps = out
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .expect("wrk printed Requests/sec");
        let p99 = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("99%"))
            .map(|v| parse_latency(v.trim()))
            .expect("wrk printed a 99% latency");
        assert!(
            !out.contains("Non-2xx"),
            "every response must be 2xx:\n{out}"
        );
        (rps, p99)
    };
    let mut open = Vec::new();
    let mut prot = Vec::new();
    // Interleaved rounds, so drift on a shared machine hits both alike.
    for _ in 0..3 {
        open.push(run("/open", false));
        prot.push(run("/protected", true));
    }
    let med = |v: &mut Vec<(f64, f64)>, i: usize| {
        let mut xs: Vec<f64> = v.iter().map(|x| if i == 0 { x.0 } else { x.1 }).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[xs.len() / 2]
    };
    let (o_rps, o_p99) = (med(&mut open, 0), med(&mut open, 1));
    let (p_rps, p_p99) = (med(&mut prot, 0), med(&mut prot, 1));
    println!("| route | requests/s (median of 3) | p99 latency |");
    println!("|---|---|---|");
    println!("| GET /open (no auth) | {o_rps:.0} | {o_p99:.2} ms |");
    println!("| GET /protected (m2m-guard, repeated token) | {p_rps:.0} | {p_p99:.2} ms |");
    println!("| ratio | {:.3}× | {:.2}× |", p_rps / o_rps, p_p99 / o_p99);
    println!("raw rounds (rps, p99 ms): open {open:?} protected {prot:?}");
}

fn parse_latency(s: &str) -> f64 {
    // wrk prints e.g. "1.23ms", "812.00us", "1.01s"
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap() / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse::<f64>().unwrap()
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("unexpected latency {s}")
    }
}
