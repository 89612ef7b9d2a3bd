//! m2m-guard in five minutes: an embedded issuer, a protected axum API, and
//! real requests against it. No account anywhere.
//!
//! ```text
//! cargo run --example quickstart            # walk through the scenarios, exit 0 if all pass
//! cargo run --example quickstart -- --serve # keep the API running and print a curl command
//! ```

mod common;

use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{ProtectedResource, Verifier};
use reqwest::StatusCode;
use std::process::ExitCode;
use std::time::Duration;

struct Row {
    step: &'static str,
    request: String,
    expected: StatusCode,
    got: StatusCode,
    detail: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let serve = std::env::args().any(|a| a == "--serve");

    // 1. An issuer shaped like Kinde, on loopback: discovery, JWKS, token minting.
    let issuer = TestIssuer::start().await;

    // Metrics for `--serve` mode's /metrics, recorded from the start.
    let metrics = if serve { common::prometheus() } else { None };

    // 2. A verifier that trusts it. Short refresh and stale windows so the
    //    walkthrough can show rotation and an outage in seconds.
    let verifier = Verifier::builder()
        .issuer(
            issuer
                .config()
                .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
                .refresh_interval(Duration::from_secs(1))
                .max_stale(Duration::from_secs(3))
                .unknown_kid_cooldown(Duration::from_secs(1))
                .fetch_backoff(Duration::from_millis(200), Duration::from_secs(1)),
        )
        .build()
        .await
        .expect("verifier builds");

    // 3. The protected API on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}");
    let resource = ProtectedResource::new(m2m_guard::test_util::DEFAULT_AUDIENCE)
        .authorization_servers(verifier.issuers())
        .scopes_supported(["read:users", "write:flags"]);
    let app = common::demo_router(verifier.clone(), &resource, None)
        .merge(common::ops_router(verifier.clone(), metrics));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });

    if serve {
        let token = issuer
            .token()
            .client_id("quickstart-agent")
            .org("org_123")
            .scopes(["read:users", "write:flags"])
            .sign();
        println!("issuer:    {}", issuer.issuer());
        println!("API:       {base}");
        println!("listening on {base}");
        println!();
        println!("Try it (token valid for 1 hour, org org_123, scopes read:users write:flags):");
        println!();
        println!("  curl -i {base}/orgs/org_123/users -H 'Authorization: Bearer {token}'");
        println!("  curl -i {base}/orgs/org_999/users -H 'Authorization: Bearer {token}'");
        println!("  curl -i {base}/whoami");
        println!("  curl {base}/metrics    # Prometheus text: decisions, key set, cache");
        println!("  curl -i {base}/readyz  # 200 while the keys are usable");
        println!();
        println!("Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
        return ExitCode::SUCCESS;
    }

    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<String>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let mut rows = Vec::new();
    macro_rules! step {
        ($step:expr, $method:ident, $path:expr, $token:expr, $expected:expr) => {{
            let resp = call(reqwest::Method::$method, $path, $token)
                .await
                .expect("request");
            let got = resp.status();
            let detail = describe(resp).await;
            rows.push(Row {
                step: $step,
                request: format!("{} {}", stringify!($method), $path),
                expected: $expected,
                got,
                detail,
            });
        }};
    }

    let org_token = || {
        Some(
            issuer
                .token()
                .client_id("billing-agent")
                .org("org_123")
                .scopes(["read:users"])
                .sign(),
        )
    };
    step!(
        "org-scoped token",
        GET,
        "/whoami",
        org_token(),
        StatusCode::OK
    );
    step!(
        "org-scoped token, own org",
        GET,
        "/orgs/org_123/users",
        org_token(),
        StatusCode::OK
    );
    step!(
        "no token",
        GET,
        "/orgs/org_123/users",
        None,
        StatusCode::UNAUTHORIZED
    );
    step!(
        "missing scope write:flags",
        POST,
        "/flags",
        org_token(),
        StatusCode::FORBIDDEN
    );
    step!(
        "another org's data",
        GET,
        "/orgs/org_999/users",
        org_token(),
        StatusCode::FORBIDDEN
    );
    let expired = issuer
        .token()
        .org("org_123")
        .scopes(["read:users"])
        .expired()
        .sign();
    step!(
        "expired token",
        GET,
        "/orgs/org_123/users",
        Some(expired),
        StatusCode::UNAUTHORIZED
    );

    // Rotation: the issuer signs with a new key; the first request that
    // presents it triggers one key-set refetch and is accepted.
    let fetches_before = issuer.jwks_fetches();
    issuer.rotate_keys();
    step!(
        "keys rotated at the issuer",
        GET,
        "/orgs/org_123/users",
        org_token(),
        StatusCode::OK
    );
    if let Some(row) = rows.last_mut() {
        row.detail = format!(
            "{}; JWKS fetches {} -> {}",
            row.detail,
            fetches_before,
            issuer.jwks_fetches()
        );
    }

    // Outage: the issuer answers 503. Past the refresh time the last good
    // keys still verify new tokens, for max_stale.
    issuer.set_outage(Outage::Status(503));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    step!(
        "issuer down, within stale window",
        GET,
        "/orgs/org_123/users",
        org_token(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    step!(
        "issuer down, past stale window",
        GET,
        "/orgs/org_123/users",
        org_token(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    issuer.set_outage(Outage::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    step!(
        "issuer back",
        GET,
        "/orgs/org_123/users",
        org_token(),
        StatusCode::OK
    );

    print_table(&rows);
    let failed = rows.iter().filter(|r| r.got != r.expected).count();
    if failed == 0 {
        println!("\nall {} outcomes as expected", rows.len());
        println!("next: `cargo run --example quickstart -- --serve` to try it with curl");
        ExitCode::SUCCESS
    } else {
        println!("\n{failed} of {} outcomes NOT as expected", rows.len());
        ExitCode::FAILURE
    }
}

/// A short description of a response: the org and scopes on success, the
/// RFC 6750 error otherwise.
async fn describe(resp: reqwest::Response) -> String {
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        let org = body["org"].as_str().unwrap_or("-");
        let scopes = body["scopes"].as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        });
        match scopes {
            Some(s) => format!("org={org} scopes=[{s}]"),
            None => format!(
                "org={org} users={}",
                body["users"].as_array().map_or(0, Vec::len)
            ),
        }
    } else if let Some(r) = retry {
        format!(
            "{}; Retry-After: {r}",
            body["error"].as_str().unwrap_or("-")
        )
    } else {
        let desc = body["error_description"].as_str().unwrap_or("-");
        match www {
            Some(w) if w.contains("error=") => {
                format!("{} ({desc})", body["error"].as_str().unwrap_or("-"))
            }
            _ => format!("challenge only ({desc})"),
        }
    }
}

fn print_table(rows: &[Row]) {
    let w_step = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    let w_req = rows
        .iter()
        .map(|r| r.request.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<w_step$}  {:<w_req$}  {:>8}  {:>3}  {:<2}  detail",
        "step", "request", "expected", "got", "ok"
    );
    println!("{}", "-".repeat(w_step + w_req + 60));
    for r in rows {
        println!(
            "{:<w_step$}  {:<w_req$}  {:>8}  {:>3}  {:<2}  {}",
            r.step,
            r.request,
            r.expected.as_u16(),
            r.got.as_u16(),
            if r.got == r.expected { "✓" } else { "✗" },
            r.detail
        );
    }
}
