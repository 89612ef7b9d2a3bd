//! The `serve` example, run as a real process against the test issuer.

mod support;

use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::example_binary;

fn start(args: &[&str]) -> (support::Example, String) {
    support::start_example("serve", args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_example_protects_its_routes() {
    let issuer = TestIssuer::start().await;
    let (_server, base) = start(&[
        "--issuer",
        issuer.issuer(),
        "--audience",
        DEFAULT_AUDIENCE,
        "--preset",
        "kinde",
        "--listen",
        "127.0.0.1:0",
        "--leeway",
        "30",
        "--max-stale",
        "600",
    ]);
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };

    assert_eq!(get("/healthz", None).await.unwrap().status(), 200);
    assert_eq!(get("/whoami", None).await.unwrap().status(), 401);

    let org_token = issuer
        .token()
        .client_id("agent-7")
        .org("org_1")
        .scopes(["read:users"])
        .sign();
    let who: serde_json::Value = get("/whoami", Some(&org_token))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        who,
        serde_json::json!({
            // Kinde's M2M tokens carry no `sub`.
            "issuer": issuer.issuer(), "subject": null, "client_id": "agent-7",
            "org": "org_1", "scopes": ["read:users"], "dpop_jkt": null
        })
    );
    let global = get("/whoami", Some(&issuer.token().sign())).await.unwrap();
    assert_eq!(global.status(), 200);
    let global: serde_json::Value = global.json().await.unwrap();
    assert_eq!(global["org"], serde_json::Value::Null);
    assert_eq!(global["client_id"], "test-client");

    assert_eq!(
        get("/orgs/org_1/users", Some(&org_token))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/orgs/org_2/users", Some(&org_token))
            .await
            .unwrap()
            .status(),
        403
    );
    // A client's undecodable path is the client's 400, never a 500 that pages an operator.
    let bad_path = get("/orgs/%FF/users", Some(&org_token)).await.unwrap();
    assert_eq!(bad_path.status(), 400);
    assert!(
        bad_path.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
    let no_scope = issuer.token().org("org_1").sign();
    let resp = get("/orgs/org_1/users", Some(&no_scope)).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"scope="read:users""#)
    );

    let flags = |t: &str| http.post(format!("{base}/flags")).bearer_auth(t).send();
    assert_eq!(flags(&org_token).await.unwrap().status(), 403);
    assert_eq!(
        flags(&issuer.token().scopes(["write:flags"]).sign())
            .await
            .unwrap()
            .status(),
        201
    );

    let meta = get("/.well-known/oauth-protected-resource", None)
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    let doc: serde_json::Value = meta.json().await.unwrap();
    assert_eq!(
        doc["authorization_servers"],
        serde_json::json!([issuer.issuer()])
    );
    assert_eq!(get("/nope", None).await.unwrap().status(), 404);
}

#[test]
fn serve_example_rejects_bad_arguments() {
    let out = Command::new(example_binary("serve"))
        .args(["--audience", "x"])
        .env_remove("M2M_ISSUER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--issuer is required"));
    let out = Command::new(example_binary("serve"))
        .args(["--issuer", "http://issuer.example.com", "--audience", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https is required"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_absurd_max_stale_naming_the_setting() {
    let issuer = TestIssuer::start().await;
    let mut child = Command::new(example_binary("serve"))
        .args(["--issuer", issuer.issuer(), "--audience", DEFAULT_AUDIENCE])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-stale",
            "18446744073709551615",
        ])
        .env_remove("M2M_ISSUER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself: a server that starts anyway fails the test
    // (and is killed), it does not hang it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with an absurd --max-stale");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Issuer::max_stale"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_while_the_issuer_is_down_answers_503_then_heals() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(m2m_guard::test_util::Outage::Status(500));
    // Discovery (no --jwks-url) while the issuer answers 500: it must start.
    let (_server, base) = start(&[
        "--issuer",
        issuer.issuer(),
        "--audience",
        DEFAULT_AUDIENCE,
        "--preset",
        "kinde",
        "--listen",
        "127.0.0.1:0",
    ]);
    let http = reqwest::Client::new();
    let token = issuer.token().sign();
    let whoami = || {
        http.get(format!("{base}/whoami"))
            .bearer_auth(&token)
            .send()
    };
    let resp = whoami().await.unwrap();
    assert_eq!(resp.status(), 503, "our outage is not the caller's fault");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    issuer.set_outage(m2m_guard::test_util::Outage::None);
    let back = std::time::Instant::now();
    loop {
        let status = whoami().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "accepted within seconds of the issuer coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The issuer rotates its keys and goes down again: a token signed by the
    // new key may be perfectly good, so it gets 503 + Retry-After, not 401.
    issuer.rotate_keys();
    issuer.set_outage(m2m_guard::test_util::Outage::Status(500));
    let rotated = issuer.token().sign();
    let resp = http
        .get(format!("{base}/whoami"))
        .bearer_auth(&rotated)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "never a 401 for our outage");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        whoami().await.unwrap().status(),
        200,
        "known keys still work"
    );
}

/// The settings a real issuer may need, as flags: accepting users' tokens,
/// a client binding for tokens without `aud`, the tenant claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exposes_user_tokens_client_binding_and_tenant_claim() {
    let issuer = TestIssuer::start_with(m2m_guard::Preset::Scalekit).await;
    let status = |base: String, token: String| async move {
        reqwest::Client::new()
            .get(format!("{base}/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let user = issuer.token().user("usr_1").sign();
    let common = [
        "--issuer",
        issuer.issuer(),
        "--preset",
        "scalekit",
        "--listen",
        "127.0.0.1:0",
    ];
    let (_a, machine_only) = start(&[&common[..], &["--audience", DEFAULT_AUDIENCE]].concat());
    assert_eq!(status(machine_only.clone(), user.clone()).await, 401);
    let (_b, both) = start(
        &[
            &common[..],
            &[
                "--audience",
                DEFAULT_AUDIENCE,
                "--accept-user-tokens",
                "true",
            ],
        ]
        .concat(),
    );
    assert_eq!(status(both, user).await, 200);
    // No audience: tokens without `aud`, bound to client ids; the tenant in `org`.
    let (_c, bound) = start(
        &[
            &common[..],
            &[
                "--bind-to-client-ids",
                "test-client",
                "--tenant-claim",
                "org",
            ],
        ]
        .concat(),
    );
    let no_aud = issuer
        .token()
        .without_claim("aud")
        .claim("org", "org_9")
        .sign();
    let who: serde_json::Value = reqwest::Client::new()
        .get(format!("{bound}/whoami"))
        .bearer_auth(&no_aud)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["org"], "org_9");
    let other = issuer.token().client_id("x").without_claim("aud").sign();
    assert_eq!(status(bound, other).await, 401);
}

/// A multi-tenant issuer from the command line: the Entra template plus an
/// allow-list, keys from the tenant-independent metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_an_issuer_template_and_allowed_tenants() {
    let keys = TestIssuer::start_with(m2m_guard::Preset::Entra).await;
    let s = support::ScriptServer::start().await;
    let template = s.url("/{tenantid}/v2.0");
    s.json(
        "/common/v2.0/.well-known/openid-configuration",
        serde_json::json!({ "issuer": template, "jwks_uri": s.url("/keys") }).to_string(),
    );
    s.json("/keys", keys.jwks_document().to_string());
    let (_server, base) = start(&[
        "--issuer",
        &template,
        "--preset",
        "entra",
        "--audience",
        DEFAULT_AUDIENCE,
        "--allowed-tenants",
        "tenant-a, tenant-b",
        "--listen",
        "127.0.0.1:0",
    ]);
    let whoami = |tenant: &str| {
        let token = keys
            .token()
            .claim("iss", s.url(&format!("/{tenant}/v2.0")))
            .claim("tid", tenant)
            .sign();
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{base}/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let ok = whoami("tenant-b").await;
    assert_eq!(ok.status(), 200);
    let who: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(who["org"], "tenant-b");
    let refused = whoami("tenant-c").await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

/// DPoP allowed by default: a bound token works with a proof for the
/// request, not as Bearer; `--dpop required` refuses plain bearer tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_accepts_dpop_bound_tokens_with_proofs() {
    use m2m_guard::test_util::DpopKey;
    let issuer = TestIssuer::start().await;
    let common = [
        "--issuer",
        issuer.issuer(),
        "--audience",
        DEFAULT_AUDIENCE,
        "--preset",
        "kinde",
        "--listen",
        "127.0.0.1:0",
    ];
    let (_a, base) = start(&common);
    let key = DpopKey::new();
    let bound = issuer.token().dpop_bound(&key).sign();
    let client = reqwest::Client::new();
    let proof = key
        .proof("GET", &format!("{base}/whoami"))
        .for_token(&bound)
        .sign();
    let resp = client
        .get(format!("{base}/whoami"))
        .header("authorization", format!("DPoP {bound}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let who: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(who["dpop_jkt"], key.jkt());
    let as_bearer = client
        .get(format!("{base}/whoami"))
        .bearer_auth(&bound)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), 401);
    let plain = issuer.token().sign();
    let ok = client
        .get(format!("{base}/whoami"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let (_b, strict) = start(&[&common[..], &["--dpop", "required"]].concat());
    let refused = client
        .get(format!("{strict}/whoami"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
}
