//! Interop with a real, independent authorization server: panva's
//! `oidc-provider` (tests/interop/server.mjs), started by each test on loopback.
//!
//! Needs Node.js and Python 3: the pinned servers are installed by the run
//! when missing (tests/interop/setup.rs); `M2M_INTEROP=skip` skips these tests.

// (Only the demo router is used here.)
#[path = "../examples/common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "interop/setup.rs"]
mod setup;
mod support;

use setup::interop_dir;

use axum::Router;
use m2m_guard::client::{
    BearerTokenLayer, ClientAuth, ClientError, ClientSecret, OAuthErrorCode, SigningKey,
    TokenProvider,
};
use m2m_guard::test_util::DpopKey;
use m2m_guard::{Algorithm, Dpop, Issuer, ProtectedResource, Verifier};
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const API: &str = "https://api.example.test";
const OTHER_API: &str = "https://other.example.test";

struct OidcProvider {
    issuer: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Start `program script` in tests/interop and wait for its `ready <issuer>` line.
async fn spawn_ready(
    program: &str,
    script: &str,
) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = tokio::process::Command::new(program)
        .arg(script)
        .current_dir(interop_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} {script}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} starts within 30 s"))
            .unwrap()
            .expect("a ready line");
        if let Some(issuer) = line.strip_prefix("ready ") {
            break issuer.to_owned();
        }
    };
    (child, stdout, issuer)
}

/// A token exactly as an M2M client gets one, with m2m-guard's own client
/// side: discovery of the token endpoint, a form POST with `grant_type`,
/// `scope` (and `resource`), `client_secret_basic` for the global app and
/// `client_secret_post` for the others.
async fn client_token(
    issuer: &str,
    client: &str,
    resource: Option<&str>,
    scope: &str,
) -> Result<String, ClientError> {
    let secret = format!("{}-secret", client.trim_end_matches("-app"));
    let auth = if client == "global-app" {
        ClientAuth::Basic
    } else {
        ClientAuth::Post
    };
    let mut builder = TokenProvider::builder(client, ClientSecret::new(secret))
        .issuer(issuer)
        .scopes(scope.split_whitespace().map(str::to_owned))
        .client_auth(auth);
    if let Some(r) = resource {
        builder = builder.resource(r);
    }
    builder
        .build()
        .await?
        .token()
        .await
        .map(|t| t.secret().to_owned())
}

impl OidcProvider {
    /// Start the server, or `None` (with a message) when it is not installed
    /// and not required.
    async fn start() -> Option<OidcProvider> {
        if !setup::node_ready() {
            return None;
        }
        let (mut child, stdout, issuer) = spawn_ready("node", "server.mjs").await;
        let stdin = child.stdin.take().unwrap();
        Some(OidcProvider {
            issuer,
            child,
            stdin,
            stdout,
        })
    }

    async fn command(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
                .await
                .expect("command answered")
                .unwrap()
                .expect("server still running");
            // oidc-provider prints its own notices on stdout: skip them.
            if line.starts_with("ok ") || line.starts_with("error ") {
                assert_eq!(line, format!("ok {cmd}"));
                return;
            }
        }
    }

    async fn token(&self, client: &str, resource: &str, scope: &str) -> Result<String, String> {
        match client_token(&self.issuer, client, Some(resource), scope).await {
            Ok(t) => Ok(t),
            Err(ClientError::OAuth { code, .. }) => Err(code.as_str().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The demo API (the `serve` example's router) on loopback, trusting `op` by discovery.
async fn api(op: &OidcProvider, configure: impl FnOnce(Issuer) -> Issuer) -> String {
    let issuer = Issuer::new(&op.issuer)
        .audience(API)
        .tenant_claim("org_code")
        .strict_rfc9068(true);
    let verifier = Verifier::builder()
        .issuer(configure(issuer))
        .build()
        .await
        .unwrap();
    let resource = ProtectedResource::new(API).authorization_servers(verifier.issuers());
    let app: Router = common::demo_router(verifier, &resource, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn call(base: &str, method: &str, path: &str, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An org-scoped token with `read:users` only: its own org's users, not
/// another org's, and no writes.
async fn assert_org_app_boundaries(base: &str, token: &str) {
    assert_eq!(
        call(base, "GET", "/orgs/org_acme/users", token).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(base, "GET", "/orgs/org_other/users", token).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(base, "POST", "/flags", token).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tokens_are_accepted_and_refused_like_a_real_api() {
    let Some(op) = OidcProvider::start().await else {
        return;
    };
    let base = api(&op, |i| i).await;

    // A global app.
    let global = op
        .token("global-app", API, "read:users write:flags")
        .await
        .unwrap();
    let (status, who) = call(&base, "GET", "/whoami", &global).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["issuer"], op.issuer.as_str());
    assert_eq!(who["client_id"], "global-app");
    assert_eq!(who["subject"], "global-app");
    assert_eq!(who["org"], Value::Null);
    assert_eq!(
        who["scopes"],
        serde_json::json!(["read:users", "write:flags"])
    );
    assert_eq!(
        call(&base, "POST", "/flags", &global).await.0,
        StatusCode::CREATED
    );
    // A global token is no org's token.
    assert_eq!(
        call(&base, "GET", "/orgs/org_acme/users", &global).await.0,
        StatusCode::FORBIDDEN
    );

    // An org-scoped app.
    let org = op.token("org-app", API, "read:users").await.unwrap();
    let (status, who) = call(&base, "GET", "/whoami", &org).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(who["org"], "org_acme");
    assert_eq!(who["client_id"], "org-app");
    // It was not granted write:flags.
    assert_org_app_boundaries(&base, &org).await;

    // A read-only app: the issuer refuses it write:flags outright...
    assert_eq!(
        op.token("readonly-app", API, "read:users write:flags")
            .await
            .unwrap_err(),
        "invalid_scope"
    );
    // ...and its read token does not write.
    let ro = op.token("readonly-app", API, "read:users").await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{base}/flags"))
        .bearer_auth(&ro)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        www.contains(r#"error="insufficient_scope""#) && www.contains(r#"scope="write:flags""#),
        "{www}"
    );

    // A genuinely signed token for the other API.
    let other = op
        .token("global-app", OTHER_API, "read:users")
        .await
        .unwrap();
    let (status, body) = call(&base, "GET", "/whoami", &other).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error_description"],
        "the token is not intended for this API"
    );

    // A token with one signature bit flipped.
    let mut forged = global.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let (status, body) = call(&base, "GET", "/whoami", &String::from_utf8(forged).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_description"], "the token signature is invalid");
}

/// The demo API with DPoP allowed (the `serve` default), trusting `op`.
async fn dpop_api(op: &OidcProvider) -> String {
    let verifier = Verifier::builder()
        .issuer(Issuer::new(&op.issuer).audience(API).strict_rfc9068(true))
        .build()
        .await
        .unwrap();
    let resource = ProtectedResource::new(API).authorization_servers(verifier.issuers());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app: Router = common::demo_router(verifier, &resource, Some(Dpop::new(&base)));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_tokens_from_a_real_server_with_private_key_jwt() {
    let Some(op) = OidcProvider::start().await else {
        return;
    };
    let base = dpop_api(&op).await;
    // No secret: the client proves itself with a private key whose public
    // half the server holds; the server requires DPoP for it, with nonces.
    let client_key = SigningKey::from_pem(
        include_bytes!("../src/test_util/keys/ec3.pem"),
        Algorithm::ES256,
    )
    .unwrap()
    .with_kid("dpop-agent-1");
    let dpop = SigningKey::generate().unwrap();
    let provider = TokenProvider::builder("dpop-agent", client_key)
        .issuer(&op.issuer)
        .resource(API)
        .scopes(["read:users"])
        .dpop(dpop.clone())
        .build()
        .await
        .unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(token.token_type(), "DPoP");
    assert_eq!(
        provider.requests_sent(),
        2,
        "one token request answered use_dpop_nonce, then one with the nonce"
    );
    // A secret-less client without DPoP is refused by the server.
    let no_dpop = TokenProvider::builder(
        "dpop-agent",
        SigningKey::from_pem(
            include_bytes!("../src/test_util/keys/ec3.pem"),
            Algorithm::ES256,
        )
        .unwrap(),
    )
    .issuer(&op.issuer)
    .resource(API)
    .build()
    .await
    .unwrap();
    // (oidc-provider's InvalidGrant "DPoP proof JWT not provided",
    // described on the wire only as "grant request is invalid"; the same
    // client with a proof gets its token above.)
    let refused = no_dpop.token().await.unwrap_err();
    assert!(
        matches!(
            &refused,
            ClientError::OAuth {
                code: OAuthErrorCode::InvalidGrant,
                ..
            }
        ),
        "dpop_bound_access_tokens: a Bearer token request is refused: {refused}"
    );

    // Through the layer: a fresh proof per request.
    let mut client = tower::ServiceBuilder::new()
        .layer(
            BearerTokenLayer::new(provider.clone())
                .allow_origin(&base)
                .unwrap(),
        )
        .service(reqwest::Client::new());
    for _ in 0..2 {
        use tower::{Service as _, ServiceExt as _};
        let req = reqwest::Request::new(
            reqwest::Method::GET,
            format!("{base}/whoami").parse().unwrap(),
        );
        let resp = client.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let who: Value = resp.json().await.unwrap();
        assert_eq!(who["client_id"], "dpop-agent");
        assert_eq!(who["dpop_jkt"], dpop.thumbprint());
    }

    // Each way a stolen token or proof could be used is refused.
    let send = |method: &str, path: &str, scheme: &str, proof: Option<String>| {
        let mut req = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("authorization", format!("{scheme} {}", token.secret()));
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        req.send()
    };
    let whoami = format!("{base}/whoami");
    let proof = provider
        .dpop_proof(&reqwest::Method::GET, &whoami, &token, None)
        .unwrap();
    assert_eq!(
        send("GET", "/whoami", "DPoP", Some(proof.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    let proof_for = |method: reqwest::Method, url: &str| {
        provider.dpop_proof(&method, url, &token, None).unwrap()
    };
    let dpop_get = |proof: String| send("GET", "/whoami", "DPoP", Some(proof));
    let stranger = DpopKey::other()
        .proof("GET", &whoami)
        .for_token(token.secret())
        .sign();
    let refusals = [
        ("the DPoP proof was used before", dpop_get(proof).await),
        (
            "the DPoP proof is for another URL",
            dpop_get(proof_for(reqwest::Method::GET, &format!("{base}/healthz"))).await,
        ),
        (
            "the DPoP proof is for another HTTP method",
            dpop_get(proof_for(reqwest::Method::POST, &whoami)).await,
        ),
        (
            "the DPoP proof key is not the one the token is bound to",
            dpop_get(stranger).await,
        ),
        (
            "the token is bound to a key: present it with a DPoP proof",
            send("GET", "/whoami", "Bearer", None).await,
        ),
    ];
    for (what, resp) in refusals {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let www = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let error = if what.starts_with("the token") {
            "invalid_token"
        } else {
            "invalid_dpop_proof"
        };
        assert!(
            www.contains(&format!("error=\"{error}\", error_description=\"{what}\"")),
            "{www}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_the_issuer_signs_with_is_verified() {
    let Some(mut op) = OidcProvider::start().await else {
        return;
    };
    let base = api(&op, |i| i).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        op.command(&format!("alg {alg}")).await;
        let token = op.token("org-app", API, "read:users").await.unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                token.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(
            call(&base, "GET", "/orgs/org_acme/users", &token).await.0,
            StatusCode::OK,
            "{alg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_key_rotation_is_picked_up_and_withdrawn_keys_stop_verifying() {
    let Some(mut op) = OidcProvider::start().await else {
        return;
    };
    let base = api(&op, |i| {
        i.refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
            .refresh_interval(Duration::from_secs(1))
            .unknown_kid_cooldown(Duration::from_millis(100))
    })
    .await;
    let old = op.token("org-app", API, "read:users").await.unwrap();
    assert_eq!(call(&base, "GET", "/whoami", &old).await.0, StatusCode::OK);

    // New signing key first in the JWKS, old one still published.
    op.command("rotate").await;
    let new = op.token("org-app", API, "read:users").await.unwrap();
    assert_ne!(new.split('.').next(), old.split('.').next(), "a new kid");
    assert_eq!(
        call(&base, "GET", "/whoami", &new).await.0,
        StatusCode::OK,
        "first sight of the new kid"
    );
    assert_eq!(
        call(&base, "GET", "/whoami", &old).await.0,
        StatusCode::OK,
        "old key still published"
    );

    // The old key is withdrawn: once the key set refreshes, its tokens fail
    // (cached verdicts included), without restarting anything.
    op.command("retire").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call(&base, "GET", "/whoami", &old).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                body["error_description"],
                "the token signing key is unknown"
            );
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "withdrawn key still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call(&base, "GET", "/whoami", &new).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_stopped_serves_from_the_stale_window_then_503() {
    let Some(mut op) = OidcProvider::start().await else {
        return;
    };
    let base = api(&op, |i| {
        i.refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
            .refresh_interval(Duration::from_millis(500))
            .max_stale(Duration::from_secs(2))
            .fetch_backoff(Duration::from_millis(100), Duration::from_millis(300))
    })
    .await;
    let t1 = op.token("global-app", API, "read:users").await.unwrap();
    let t2 = op.token("org-app", API, "read:users").await.unwrap();
    assert_eq!(call(&base, "GET", "/whoami", &t1).await.0, StatusCode::OK);

    op.command("stop").await;
    // Past the refresh time, refreshes fail: the last good keys still verify a new token.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(call(&base, "GET", "/whoami", &t2).await.0, StatusCode::OK);
    // Past refresh + max_stale: 503 with Retry-After, not 401.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let resp = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .bearer_auth(&t1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));

    op.command("start").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(&base, "GET", "/whoami", &t1).await.0 != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_api_example_gets_a_token_and_calls_the_api() {
    let Some(op) = OidcProvider::start().await else {
        return;
    };
    let base = api(&op, |i| i).await;
    let mut bin = std::env::current_exe().unwrap();
    bin.pop();
    if bin.ends_with("deps") {
        bin.pop();
    }
    let bin = bin.join("examples").join("call_api");
    assert!(
        bin.exists(),
        "{} missing: cargo test builds the examples",
        bin.display()
    );
    let out = tokio::process::Command::new(bin)
        .args([
            "--token-url",
            &format!("{}/token", op.issuer),
            "--client-id",
            "org-app",
        ])
        .args([
            "--audience",
            API,
            "--resource",
            "--post",
            "--scope",
            "read:users",
        ])
        .args(["--api", &format!("{base}/orgs/org_acme/users")])
        .env("M2M_CLIENT_SECRET", "org-secret")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("HTTP 200"), "{stdout}");
    assert!(stdout.contains("org_acme"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("org-secret"),
        "the secret is never printed"
    );
}

/// Authlib (Python) as a second independent issuer: RFC 9068 tokens signed
/// with a single key and no `kid`, discovery only through RFC 8414.
struct AuthlibServer {
    issuer: String,
    _child: Child,
}

impl AuthlibServer {
    async fn start() -> Option<AuthlibServer> {
        if !setup::python_ready() {
            return None;
        }
        let (child, _, issuer) = spawn_ready("python3", "authlib_server.py").await;
        Some(AuthlibServer {
            issuer,
            _child: child,
        })
    }

    async fn token(&self, client: &str, scope: &str) -> String {
        client_token(&self.issuer, client, None, scope)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_tokens_without_kid_are_verified() {
    let Some(al) = AuthlibServer::start().await else {
        return;
    };
    let verifier = Verifier::builder()
        .issuer(
            Issuer::new(&al.issuer)
                .audience(API)
                .tenant_claim("org_code")
                .strict_rfc9068(true),
        )
        .build()
        .await
        .unwrap();
    verifier
        .preload()
        .await
        .expect("RFC 8414 discovery (Authlib serves no OIDC document)");
    assert_eq!(
        verifier.jwks_url(&al.issuer),
        Some(format!("{}/jwks", al.issuer))
    );
    let resource = ProtectedResource::new(API).authorization_servers(verifier.issuers());
    let app: Router = common::demo_router(verifier, &resource, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let org = al.token("org-app", "read:users write:flags").await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            org.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert!(
        header.get("kid").is_none(),
        "Authlib's single-key tokens carry no kid: {header}"
    );

    let (status, who) = call(&base, "GET", "/whoami", &org).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["client_id"], "org-app");
    assert_eq!(who["org"], "org_acme");
    // Authlib dropped the scope the client may not have, silently.
    assert_eq!(who["scopes"], serde_json::json!(["read:users"]));
    assert_org_app_boundaries(&base, &org).await;

    let global = al.token("global-app", "read:users write:flags").await;
    assert_eq!(
        call(&base, "POST", "/flags", &global).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(&base, "GET", "/orgs/org_acme/users", &global).await.0,
        StatusCode::FORBIDDEN
    );
}

/// The official TypeScript MCP client (`@modelcontextprotocol/client`,
/// pinned) against the `mcp` example, with tokens from oidc-provider: the
/// 401 leads it to the RFC 9728 metadata and the authorization server, it
/// gets a client-credentials token for `resource` = the server URL, lists
/// the tools and calls `whoami`; on `admin-action` it steps up after the 403
/// and succeeds where its client may have `mcp:admin`, and fails cleanly
/// (no tool run) where it may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_mcp_client_discovers_gets_a_token_and_steps_up() {
    let Some(op) = OidcProvider::start().await else {
        return;
    };
    let (_server, url) =
        support::start_example("mcp", &["--issuer", &op.issuer, "--listen", "127.0.0.1:0"]);
    let run = |client: &'static str, secret: &'static str| {
        let (url, issuer) = (url.clone(), op.issuer.clone());
        async move {
            let out = tokio::process::Command::new("node")
                .args(["mcp_client.mjs", &url, client, secret, &issuer])
                .current_dir(interop_dir())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().last().unwrap_or_default();
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| {
                panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
            })
        }
    };

    let admin = run("mcp-admin-agent", "mcp-admin-secret").await;
    assert!(admin.get("fatal").is_none(), "{admin}");
    assert_eq!(
        admin["tools"],
        serde_json::json!(["admin-action", "whoami"]),
        "{admin}"
    );
    assert_eq!(admin["whoami"]["client_id"], "mcp-admin-agent", "{admin}");
    // The first token asked for what the 401 named: mcp:read.
    assert_eq!(
        admin["whoami"]["scopes"],
        serde_json::json!(["mcp:read"]),
        "{admin}"
    );
    assert_eq!(admin["whoami"]["authorization_header_seen"], false);
    assert_eq!(admin["admin"]["ok"], true, "{admin}");
    assert_eq!(
        admin["admin"]["text"],
        "admin action done for mcp-admin-agent"
    );
    let mut after: Vec<String> =
        serde_json::from_value(admin["whoami_after"]["scopes"].clone()).unwrap();
    after.sort();
    assert_eq!(after, ["mcp:admin", "mcp:read"], "stepped up: {admin}");

    let reader = run("mcp-reader-agent", "mcp-reader-secret").await;
    assert!(reader.get("fatal").is_none(), "{reader}");
    assert_eq!(
        reader["whoami"]["client_id"], "mcp-reader-agent",
        "{reader}"
    );
    assert_eq!(reader["admin"]["ok"], false, "{reader}");
    assert!(
        reader["admin"].get("text").is_none(),
        "the tool never ran: {reader}"
    );
    // Still the reader, still working.
    assert_eq!(
        reader["whoami_after"]["scopes"],
        serde_json::json!(["mcp:read"]),
        "{reader}"
    );
}
