//! Memory: a flood of distinct valid tokens keeps resident memory bounded by
//! the configured token-cache size.
//!
//! ```text
//! cargo bench --bench memory                    # 1,000,000 tokens
//! M2M_BENCH_TOKENS=100000 cargo bench --bench memory
//! ```

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Algorithm, Verifier};
use std::time::Instant;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let total: usize = std::env::var("M2M_BENCH_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cache_mib = 16;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let issuer = TestIssuer::start().await;
        let verifier = Verifier::builder()
            .issuer(issuer.config())
            .token_cache(100_000, cache_mib * 1024 * 1024)
            .build()
            .await
            .unwrap();
        let start_rss = rss_mib();
        println!(
            "token cache bound: 100000 entries / {cache_mib} MiB; {total} distinct EdDSA tokens, each verified twice (so each is admitted)"
        );
        println!("| tokens verified | resident memory | growth since start |");
        println!("|---|---|---|");
        println!("| 0 | {start_rss:.1} MiB | – |");
        let started = Instant::now();
        let step = (total / 10).max(1);
        let mut peak = start_rss;
        for i in 1..=total {
            let t = issuer.token().alg(Algorithm::EdDSA).client_id(format!("client-{i}")).sign();
            // Twice: a token enters the cache on its second sighting, so
            // every one of them is admitted: the worst case for memory.
            verifier.verify(&t).await.expect("valid");
            verifier.verify(&t).await.expect("valid");
            if i % step == 0 {
                let rss = rss_mib();
                peak = peak.max(rss);
                println!("| {i} | {rss:.1} MiB | {:+.1} MiB |", rss - start_rss);
            }
        }
        let growth = peak - start_rss;
        println!(
            "\npeak growth {growth:.1} MiB for a {cache_mib} MiB cache bound; {} tokens cached at the end; {:.1} s",
            verifier.cached_tokens(),
            started.elapsed().as_secs_f64()
        );
        // The bound this bench checks: resident growth stays within the
        // cache's byte bound plus a quarter for the allocator's slack and
        // the doorkeeper (fixed size), however many tokens pass.
        let allowed = cache_mib as f64 * 1.25;
        if growth > allowed {
            eprintln!("FAILED: growth {growth:.1} MiB exceeds {allowed:.1} MiB");
            std::process::exit(1);
        }
        println!("bound held: {growth:.1} MiB <= {allowed:.1} MiB");
    });
}
