//! Memory: a flood of distinct valid tokens keeps resident memory bounded by
//! the configured token-cache size; a flood of distinct DPoP proofs keeps
//! the replay store within its capacity.
//!
//! ```text
//! cargo bench --bench memory                    # 1,000,000 tokens, 3,000,000 proofs
//! M2M_BENCH_TOKENS=100000 cargo bench --bench memory
//! ```

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Algorithm, MemoryReplayStore, ReplayStore, Verifier};
use std::time::{Duration, Instant};

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
        replay_store_flood().await;
    });
}

/// 1,000,000 distinct proofs fill the default replay store; 1,000,000 more
/// within their lifetime are refused (`Full`: 503, never forgotten); once
/// the first ones expire, 1,000,000 more take their place in the same
/// memory.
async fn replay_store_flood() {
    const CAPACITY: usize = 1_000_000;
    let lifetime = Duration::from_secs(20);
    let store = MemoryReplayStore::new(CAPACITY);
    let start_rss = rss_mib();
    println!("\nreplay store: capacity {CAPACITY}, proofs kept {lifetime:?}");
    println!("| phase | accepted | refused (full) | proofs held | resident memory | growth |");
    println!("|---|---|---|---|---|---|");
    let mut next: u64 = 0;
    let mut filled_at = Instant::now();
    let mut rss_full = 0.0_f64;
    let mut first_accepted = 0;
    for phase in 0..3 {
        if phase == 2 {
            // Until every proof of phase 0 has expired.
            tokio::time::sleep(
                (filled_at + lifetime + Duration::from_millis(500))
                    .saturating_duration_since(Instant::now()),
            )
            .await;
        }
        let (mut accepted, mut refused) = (0usize, 0usize);
        for _ in 0..CAPACITY {
            next += 1;
            // Distinct (thumbprint, jti) digests, as the layer derives them.
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&next.to_le_bytes());
            key[8..16].copy_from_slice(&next.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            match store.check_and_insert(key, lifetime).await {
                Ok(true) => accepted += 1,
                Ok(false) => panic!("a distinct proof taken for a replay"),
                Err(_) => refused += 1,
            }
        }
        let rss = rss_mib();
        let name = [
            "1,000,000 new proofs",
            "1,000,000 more, within the lifetime",
            "1,000,000 more, after it",
        ][phase];
        println!(
            "| {name} | {accepted} | {refused} | {} | {rss:.1} MiB | {:+.1} MiB |",
            store.len(),
            rss - start_rss
        );
        let fail = |why: String| {
            eprintln!("FAILED: {why}");
            std::process::exit(1);
        };
        if store.len() > CAPACITY {
            fail(format!(
                "{} proofs held for a capacity of {CAPACITY}",
                store.len()
            ));
        }
        match phase {
            0 => {
                filled_at = Instant::now();
                rss_full = rss;
                first_accepted = accepted;
                if accepted < CAPACITY * 99 / 100 {
                    fail(format!(
                        "only {accepted} of {CAPACITY} accepted into an empty store"
                    ));
                }
            }
            // Nothing has expired yet: only the room the shards had left.
            1 if first_accepted + accepted > CAPACITY || refused < CAPACITY * 99 / 100 => {
                fail(format!("{accepted} accepted while full"));
            }
            2 if accepted < CAPACITY * 99 / 100 || rss > rss_full * 1.05 => fail(format!(
                "after expiry: {accepted} accepted, {rss:.1} MiB against {rss_full:.1} MiB when full"
            )),
            _ => {}
        }
    }
}
