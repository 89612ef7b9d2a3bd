//! Revocation propagation across a fleet: three replicas on one local
//! `redis-server` (started here), 200 revocations made by one of them, and
//! for each the time until all three hold it.
//!
//! ```text
//! cargo bench --bench fleet        # needs redis-server on the PATH
//! ```

#[path = "../tests/support/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

use m2m_guard::Revocation;
use m2m_guard::fleet::Fleet;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let redis = redis_server::RedisServer::start().await;
        let fleets: Vec<Fleet> = (0..3)
            .map(|_| Fleet::builder(redis.url()).prefix("bench").build().unwrap())
            .collect();
        for f in &fleets {
            while f.revocations().synced_at().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut took = Vec::new();
        for i in 0..200 {
            let started = Instant::now();
            fleets[i % 3]
                .revoke(Revocation::client("https://issuer.example", format!("client-{i}")))
                .await
                .unwrap();
            // Until every replica holds it (the writer applies it at once).
            while fleets.iter().any(|f| f.revocations().len() <= i) {
                tokio::task::yield_now().await;
                assert!(started.elapsed() < Duration::from_secs(10), "propagated within 10 s");
            }
            took.push(started.elapsed());
            // One revocation at a time, as an operator makes them.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.sort();
        let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
        println!(
            "revocation reaches all 3 replicas: p50 {:?}, p99 {:?}, max {:?} (n = {}, including the write)",
            pct(50),
            pct(99),
            took[took.len() - 1],
            took.len()
        );
        if pct(99) > Duration::from_secs(1) {
            eprintln!("FAILED: p99 over 1 s");
            std::process::exit(1);
        }
    });
}
