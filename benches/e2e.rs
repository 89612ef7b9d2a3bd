//! End to end over loopback with `wrk`: the same axum handler behind m2m-guard and without
//! auth, in one run, for one repeated token and for many clients each reusing its own token.
//!
//! ```text
//! apt-get install wrk
//! cargo bench --bench e2e      # M2M_E2E_SECS (default 2) per run, M2M_E2E_PAIRS (default 7)
//! ```
//!
//! Two comparisons, each between runs that differ only in the thing measured:
//! - `GET /open` (no auth) vs `GET /protected` with one repeated token, both with a static
//!   request (wrk's fast path) carrying the same `Authorization` header, so the difference is
//!   m2m-guard's work alone; `/open` without the header is shown too (the header's wire cost:
//!   ~1 KB more for wrk to send and hyper to parse);
//! - one repeated token vs 2,000 and 20,000 distinct valid tokens cycled by a wrk Lua script;
//!   the one-token baseline goes through the same script, so the script's cost is on both sides.
//!
//! Then the same comparisons in 101 short paired rounds by a minimal client in this process,
//! with the servers' CPU per request to the nanosecond (see [`rounds`]), and two controls.
//! `M2M_E2E_ONLY=rounds` runs only those; `M2M_E2E_ONLY=metrics` only metrics on vs off;
//! `M2M_E2E_SOLO=open|protected|2k|20k` (with `M2M_E2E_ONLY=rounds`) sends only that route (`2k`, `20k`: `/protected` with the cycled tokens), for a
//! profiler.

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{M2mAuthLayer, Principal};
use std::io::Write;
use std::process::Command;

/// The handler of both routes: it reads the principal when there is one (the protected route
/// pays for reading it, as a real handler would) and runs the same code on both routes.
/// (The `Principal` extractor itself refuses to run without an auth layer in front.)
async fn handler(req: Request) -> String {
    match req.extensions().get::<Principal>() {
        Some(p) => p.tenant().unwrap_or("-").to_owned(),
        None => "-".to_owned(),
    }
}

const CYCLE: &str = r#"
local tokens = {}
for line in io.lines(os.getenv("M2M_E2E_TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local n = #tokens
local i = 0
request = function()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", "/protected", { ["Authorization"] = tokens[i] })
end
"#;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo bench --no-run` / `cargo test --benches` discovery
    }
    let rounds_only = std::env::var("M2M_E2E_ONLY").is_ok_and(|o| o == "rounds");
    if !rounds_only && Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: apt-get install wrk");
        std::process::exit(1);
    }
    let secs: u64 = std::env::var("M2M_E2E_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // One worker thread for the server, one wrk thread: the machine has two cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (issuer, addr) = rt.block_on(async {
        let issuer = TestIssuer::start().await;
        let app = Router::new()
            .route("/open", get(handler))
            .merge(protected(&issuer).await)
            .merge(controls(&issuer).await);
        (issuer, serve(app).await)
    });
    // The same protected route on a second server whose one worker thread
    // records m2m-guard's metrics into a Prometheus recorder (thread-local:
    // the first server records nothing): metrics on vs off in one run.
    let recorder: &'static metrics_exporter_prometheus::PrometheusRecorder = Box::leak(Box::new(
        metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
    ));
    let rt_metrics = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || std::mem::forget(metrics::set_default_local_recorder(recorder)))
        .enable_all()
        .build()
        .unwrap();
    let addr_metrics = rt_metrics.block_on(async { serve(protected(&issuer).await).await });
    let metrics_url = format!("http://{addr_metrics}/protected");
    let mint = |i: usize| {
        issuer
            .token()
            .org(format!("org_{}", i % 97))
            .client_id(format!("client_{i}"))
            .scopes(["read:users"])
            .sign()
    };
    let token = mint(0);
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

    let dir = std::env::temp_dir().join(format!("m2m-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("cycle.lua");
    std::fs::write(&script, CYCLE).unwrap();
    let token_file = |n: usize| {
        let path = dir.join(format!("tokens-{n}.txt"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..n {
            let t = if i == 0 { token.clone() } else { mint(i) };
            writeln!(f, "{t}").unwrap();
        }
        f.flush().unwrap();
        path
    };
    let files = [
        (1, token_file(1)),
        (2_000, token_file(2_000)),
        (20_000, token_file(20_000)),
    ];

    // `tokens`: None = static request (with the token when `auth`), Some(file) = the
    // cycling script.
    // (requests/s, p99 ms, server CPU µs per request)
    let run = |path: &str, auth: bool, tokens: Option<&std::path::Path>| -> (f64, f64, f64) {
        let mut c = Command::new("wrk");
        c.args(["-t1", "-c32", &format!("-d{secs}s"), "--latency"]);
        match tokens {
            Some(file) => {
                c.env("M2M_E2E_TOKENS", file);
                c.arg("-s").arg(&script);
            }
            None if auth => {
                c.args(["-H", &format!("Authorization: Bearer {token}")]);
            }
            None => {}
        }
        // A full URL names the other server.
        if path.starts_with("http") {
            c.arg(path);
        } else {
            c.arg(format!("{base}{path}"));
        }
        let cpu_before = server_cpu_secs();
        let out = String::from_utf8(c.output().unwrap().stdout).unwrap();
        let cpu = server_cpu_secs() - cpu_before;
        let requests = out
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .map(|(n, _)| n.trim().parse::<f64>().unwrap())
            .expect("wrk printed the request count");
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
        (rps, p99, cpu * 1e6 / requests)
    };
    // Warm the token cache: every cycled token seen twice, so the wrk runs measure the cache
    // path (a token enters the cache on its second sighting). The paired rounds warm it
    // themselves, without wrk.
    if !rounds_only {
        for (_, file) in &files[1..] {
            run("/protected", true, Some(file));
        }
    }

    if std::env::var_os("M2M_E2E_SERVE").is_some() {
        // Profiling aid: keep serving, print what a manual `wrk` run needs.
        println!(
            "{base}/protected\n{token}\n{}\n{}",
            script.display(),
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    // Paired short runs, alternating which of the two goes first: the host's
    // speed drifts by ±20 % within a minute, so each pair's ratio is taken
    // between neighbours in time, and the median of those ratios is reported.
    let pairs: usize = std::env::var("M2M_E2E_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    type Case<'a> = (&'a str, &'a str, bool, Option<&'a std::path::Path>);
    let compare = |a: Case, b: Case| {
        let mut ra = Vec::new();
        let mut rb = Vec::new();
        let mut ratios = Vec::new();
        let mut cpu_ratios = Vec::new();
        for i in 0..pairs {
            let (x, y) = if i % 2 == 0 {
                let x = run(a.1, a.2, a.3);
                (x, run(b.1, b.2, b.3))
            } else {
                let y = run(b.1, b.2, b.3);
                (run(a.1, a.2, a.3), y)
            };
            ratios.push(y.0 / x.0);
            cpu_ratios.push(y.2 / x.2);
            ra.push(x);
            rb.push(y);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|p, q| p.partial_cmp(q).unwrap());
            v[v.len() / 2]
        };
        let col = |v: &[(f64, f64, f64)], i: usize| -> Vec<f64> {
            v.iter().map(|x| [x.0, x.1, x.2][i]).collect()
        };
        println!(
            "| {} | {:.0} | {:.2} ms | {:.1} µs | {} | {:.0} | {:.2} ms | {:.1} µs | **{:.3}×** | {:.3}× |",
            a.0,
            med(&mut col(&ra, 0)),
            med(&mut col(&ra, 1)),
            med(&mut col(&ra, 2)),
            b.0,
            med(&mut col(&rb, 0)),
            med(&mut col(&rb, 1)),
            med(&mut col(&rb, 2)),
            med(&mut ratios.clone()),
            med(&mut cpu_ratios.clone()),
        );
        eprintln!(
            "{} vs {}: rps ratios {ratios:.3?}, CPU ratios {cpu_ratios:.3?}",
            a.0, b.0
        );
    };
    println!(
        "| baseline | requests/s | p99 | server CPU/request | measured | requests/s | p99 | server CPU/request | throughput ratio (median of {pairs} pairs) | CPU/request ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let open_bare: Case = ("`/open`, no auth, no header", "/open", false, None);
    let open: Case = ("`/open`, no auth, same header", "/open", true, None);
    let one: Case = ("`/protected`, one repeated token", "/protected", true, None);
    let script1: Case = (
        "one token via the script",
        "/protected",
        true,
        Some(&files[0].1),
    );
    let c2k: Case = ("2,000 cycled tokens", "/protected", true, Some(&files[1].1));
    let c20k: Case = (
        "20,000 cycled tokens",
        "/protected",
        true,
        Some(&files[2].1),
    );
    let with_metrics: Case = (
        "`/protected`, one repeated token, metrics recorded",
        &metrics_url,
        true,
        None,
    );
    let only = std::env::var("M2M_E2E_ONLY").ok();
    if only.as_deref() == Some("metrics") {
        run(&metrics_url, true, None);
        compare(one, with_metrics);
    } else if only.as_deref() == Some("rounds") {
        // Only the paired rounds below.
    } else {
        compare(open_bare, open);
        compare(open, one);
        compare(script1, c2k);
        compare(script1, c20k);
        compare(one, with_metrics);
    }
    // The same comparisons in many short rounds over loopback (see `rounds`).
    let tokens: Vec<String> = std::fs::read_to_string(&files[2].1)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    rounds(addr, addr_metrics, &tokens);

    let rendered = recorder.handle().render();
    assert!(
        only.as_deref() == Some("rounds") || rendered.contains("m2m_guard_decisions_total"),
        "the metrics server recorded its decisions"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many rounds [`rounds`] runs per comparison, and requests per side of a round.
const ROUNDS: usize = 101;
const ROUND_REQUESTS: usize = 2_000;
/// Connections the round client keeps open (each sends its next request when
/// the last is answered).
const CONNECTIONS: usize = 16;

/// The comparisons of the wrk runs, measured in 101 short paired rounds by a
/// minimal HTTP/1.1 client in this process (its own thread, keep-alive
/// connections): each round times 2,000 requests of one case and 2,000 of
/// the other (about 50 ms each, alternating which goes first), and the
/// median of the per-round throughput ratios is reported with its
/// quartiles. Rounds this short see the same host speed on both sides,
/// which 2-second wrk runs on this noisy host do not.
fn rounds(addr: std::net::SocketAddr, addr_metrics: std::net::SocketAddr, tokens: &[String]) {
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = |path: &str, token: &str| -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n")
            .into_bytes()
    };
    let open = Cycle::new(vec![request("/open", &tokens[0])]);
    let one = Cycle::new(vec![request("/protected", &tokens[0])]);
    let cycled =
        |path: &str, n: usize| Cycle::new(tokens[..n].iter().map(|t| request(path, t)).collect());
    let (c2k, c20k) = (cycled("/protected", 2_000), cycled("/protected", 20_000));
    // The same requests to `/open`: what cycling costs the client and
    // hyper (reading 2,000 distinct requests), without auth.
    let (open2k, open20k) = (cycled("/open", 2_000), cycled("/open", 20_000));
    client.block_on(async {
        let connect = |addr| async move {
            let mut conns = Vec::new();
            for _ in 0..CONNECTIONS {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                conns.push(tokio::io::BufStream::new(stream));
            }
            conns
        };
        // The server, and the one whose worker records metrics.
        let mut pools = [connect(addr).await, connect(addr_metrics).await];
        send(&mut pools[1], &one, 100).await;
        let conns = &mut pools[0];
        // Every cycled token seen twice: the rounds measure the cache path.
        for _ in 0..2 {
            send(conns, &c20k, c20k.requests.len()).await;
        }
        if let Ok(solo) = std::env::var("M2M_E2E_SOLO") {
            // `2k` / `20k`: the cycled tokens; else a path with one token.
            let single;
            let req = match solo.as_str() {
                "2k" => &c2k,
                "20k" => &c20k,
                path => {
                    single = Cycle::new(vec![request(&format!("/{path}"), &tokens[0])]);
                    &single
                }
            };
            for _ in 0..5 {
                let mut t = (0.0, 0.0);
                for _ in 0..50 {
                    let x = timed(conns, req).await;
                    t = (t.0 + x.0, t.1 + x.1);
                }
                println!("solo {solo}: {:.0} rps, {:.2} µs server CPU/request", 50.0 * ROUND_REQUESTS as f64 / t.0, t.1 * 1e6 / (50.0 * ROUND_REQUESTS as f64));
            }
            return;
        }
        println!(
            "| paired rounds ({ROUNDS} × {ROUND_REQUESTS} requests a side, {CONNECTIONS} connections) | throughput ratio (median) | quartiles | server CPU/request ratio (baseline's over measured's, median) | quartiles | baseline requests/s | baseline server CPU/request |"
        );
        println!("|---|---|---|---|---|---|---|");
        let pass = Cycle::new(vec![request("/passthrough", &tokens[0])]);
        let princ = Cycle::new(vec![request("/principal", &tokens[0])]);
        let spin = Cycle::new(vec![request("/spin", &tokens[0])]);
        // (name, baseline, measured), each as (server, requests).
        for (name, a, b) in [
            ("control: a layer that does nothing vs `/open`", (0, &open), (0, &pass)),
            ("control: a layer that inserts a `Principal` vs `/open`", (0, &open), (0, &princ)),
            ("control: a layer that busy-waits 1.4 µs vs `/open`", (0, &open), (0, &spin)),
            ("`/protected`, one repeated token vs `/open`, no auth, same header", (0, &open), (0, &one)),
            ("control: 2,000 cycled tokens vs one, to `/open` (no auth)", (0, &open), (0, &open2k)),
            ("control: 20,000 cycled tokens vs one, to `/open` (no auth)", (0, &open), (0, &open20k)),
            ("2,000 cycled tokens vs one repeated token", (0, &one), (0, &c2k)),
            ("20,000 cycled tokens vs one repeated token", (0, &one), (0, &c20k)),
            ("one repeated token, metrics recorded (Prometheus) vs not", (0, &one), (1, &one)),
        ] {
            let (mut ratios, mut cpu_ratios, mut base, mut base_cpu) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let (ta, tb) = if round % 2 == 0 {
                    let ta = timed(&mut pools[a.0], a.1).await;
                    (ta, timed(&mut pools[b.0], b.1).await)
                } else {
                    let tb = timed(&mut pools[b.0], b.1).await;
                    (timed(&mut pools[a.0], a.1).await, tb)
                };
                // Throughput of b over a's; server CPU per request of a over b's.
                ratios.push(ta.0 / tb.0);
                cpu_ratios.push(ta.1 / tb.1);
                base.push(ROUND_REQUESTS as f64 / ta.0);
                base_cpu.push(ta.1 * 1e6 / ROUND_REQUESTS as f64);
            }
            for v in [&mut ratios, &mut cpu_ratios, &mut base, &mut base_cpu] {
                v.sort_by(f64::total_cmp);
            }
            let q = |v: &[f64]| (v[ROUNDS / 2], v[ROUNDS / 4], v[ROUNDS * 3 / 4]);
            let ((r, r1, r3), (c, c1, c3)) = (q(&ratios), q(&cpu_ratios));
            println!(
                "| {name} | **{r:.3}×** | {r1:.3}–{r3:.3} | **{c:.3}×** | {c1:.3}–{c3:.3} | {:.0} | {:.1} µs |",
                base[ROUNDS / 2],
                base_cpu[ROUNDS / 2],
            );
        }
    });
}

/// Requests sent in turn; each call of [`send`] goes on where the last
/// one stopped, so over the rounds every token of a set is used alike.
struct Cycle {
    requests: Vec<Vec<u8>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Cycle {
    fn new(requests: Vec<Vec<u8>>) -> Cycle {
        Cycle {
            requests,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// [`send`] a round's requests: (seconds, server CPU seconds).
async fn timed(
    conns: &mut [tokio::io::BufStream<tokio::net::TcpStream>],
    requests: &Cycle,
) -> (f64, f64) {
    let cpu = server_thread_cpu();
    let secs = send(conns, requests, ROUND_REQUESTS).await;
    (secs, server_thread_cpu() - cpu)
}

/// On-CPU time of the servers' worker threads (tokio's, named
/// `tokio-rt-worker`), in seconds, to the nanosecond (`schedstat`): the
/// client runs on this thread, not on theirs.
fn server_thread_cpu() -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "tokio-rt-worker")
            && let Ok(stat) = std::fs::read_to_string(path.join("schedstat"))
        {
            ns += stat
                .split(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

/// Send the next `n` requests of `cycle` over the connections, each
/// answered with 200 before the connection's next; the seconds it took.
async fn send(
    conns: &mut [tokio::io::BufStream<tokio::net::TcpStream>],
    cycle: &Cycle,
    n: usize,
) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (requests, next) = (&cycle.requests, &cycle.next);
    let left = AtomicUsize::new(n);
    let start = std::time::Instant::now();
    futures_util::future::join_all(conns.iter_mut().map(|conn| {
        let (next, left) = (&next, &left);
        async move {
            let mut line = String::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                let i = next.fetch_add(1, Ordering::Relaxed) % requests.len();
                conn.write_all(&requests[i]).await.unwrap();
                conn.flush().await.unwrap();
                // Status line, headers (for the length), body.
                line.clear();
                conn.read_line(&mut line).await.unwrap();
                assert!(line.starts_with("HTTP/1.1 200"), "{line}");
                let mut length = 0;
                loop {
                    line.clear();
                    conn.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                conn.read_exact(&mut body).await.unwrap();
            }
        }
    }))
    .await;
    start.elapsed().as_secs_f64()
}

/// Controls for the paired rounds: `/passthrough` behind a layer that does
/// nothing (what any route layer costs) and `/principal` behind one that
/// only inserts an already verified `Principal` (what handing the caller
/// to the handler costs), and `/spin` behind one that busy-waits 1.4 µs
/// (about the middleware's own work on a cache hit in criterion: what any
/// work of that size costs here), with the handler of the other routes.
async fn controls(issuer: &TestIssuer) -> Router {
    let verifier = issuer.verifier().await;
    let token = issuer.token().org("org_0").scopes(["read:users"]).sign();
    let principal = verifier.verify(&token).await.unwrap();
    let insert = move |mut r: Request| {
        r.extensions_mut().insert(principal.clone());
        r
    };
    Router::new()
        .route("/passthrough", get(handler))
        .route_layer(tower::util::MapRequestLayer::new(|r: Request| r))
        .merge(
            Router::new()
                .route("/principal", get(handler))
                .route_layer(tower::util::MapRequestLayer::new(insert)),
        )
        .merge(Router::new().route("/spin", get(handler)).route_layer(
            tower::util::MapRequestLayer::new(|r: Request| {
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_nanos(1_400) {
                    std::hint::spin_loop();
                }
                r
            }),
        ))
}

/// `GET /protected` behind m2m-guard, trusting `issuer`.
async fn protected(issuer: &TestIssuer) -> Router {
    // Sized for the largest working set (20,000 tokens of ~4 KiB each);
    // the default (10,000 tokens, 32 MiB) holds the 2,000-token case.
    let verifier = m2m_guard::Verifier::builder()
        .issuer(issuer.config())
        .token_cache(25_000, 128 * 1024 * 1024)
        .build()
        .await
        .unwrap();
    Router::new()
        .route("/protected", get(handler))
        .route_layer(M2mAuthLayer::new(verifier))
}

/// Serve `app` on a loopback port, on the current runtime.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// CPU time (user + system) this process, the server, has used so far:
/// steadier than throughput on a shared machine, and free of wrk's own cost.
fn server_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
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
