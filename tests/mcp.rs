//! An MCP server (rmcp 3.11, streamable HTTP) protected by m2m-guard: the
//! `mcp` example run as a real process against the test issuer, checked over
//! raw HTTP the way the MCP authorization spec (2026-07-28) states its
//! server rules; and the per-tool scopes and scope hierarchy in process.

mod support;

use m2m_guard::mcp::McpScopes;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{M2mAuthLayer, RequireScope, ScopeHierarchy, Scoped, Verifier};
use serde_json::{Value, json};

struct Mcp {
    _process: support::Example,
    /// `http://ADDR/mcp`
    url: String,
    issuer: TestIssuer,
}

async fn start() -> Mcp {
    // Kinde-shaped tokens (the test issuer's default), with org and scopes.
    let issuer = TestIssuer::start().await;
    let (process, url) = support::start_example(
        "mcp",
        &[
            "--issuer",
            issuer.issuer(),
            "--listen",
            "127.0.0.1:0",
            "--preset",
            "kinde",
        ],
    );
    Mcp {
        _process: process,
        url,
        issuer,
    }
}

impl Mcp {
    fn origin(&self) -> &str {
        self.url.strip_suffix("/mcp").unwrap()
    }

    /// A token for this server (audience = its URL) with `scopes`.
    fn token(&self, scopes: &[&str]) -> String {
        self.issuer
            .token()
            .audience(self.url.clone())
            .scopes(scopes.iter().copied())
            .sign()
    }

    async fn post(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        self.post_raw(&self.url, token, body.to_string()).await
    }

    async fn post_raw(&self, url: &str, token: Option<&str>, body: String) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "m2m-guard-tests", "version": "1"}}})
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
           "params": {"name": tool, "arguments": {}}})
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The text of a tool result (JSON response mode).
async fn tool_text(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_request_gets_401_with_resource_metadata_and_scope() {
    let m = start().await;
    let resp = m.post(None, &initialize()).await;
    assert_eq!(resp.status(), 401);
    let c = challenge(&resp);
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp", m.origin());
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(
        c.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{c}"
    );
    assert!(c.contains("scope=\"mcp:read\""), "{c}");
    // The challenge's metadata URL serves the document.
    let doc: Value = reqwest::get(&metadata).await.unwrap().json().await.unwrap();
    assert_eq!(doc["resource"], m.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_names_the_server_and_its_authorization_server() {
    let m = start().await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = reqwest::get(format!("{}{path}", m.origin())).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["resource"], m.url, "{path}");
        assert_eq!(
            doc["authorization_servers"],
            json!([m.issuer.issuer()]),
            "{path}"
        );
        assert_eq!(
            doc["scopes_supported"],
            json!(["mcp:read", "mcp:admin"]),
            "{path}"
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_this_server_works_and_whoami_reports_the_caller_without_the_token() {
    let m = start().await;
    let token = m.token(&["mcp:read"]);
    let resp = m.post(Some(&token), &initialize()).await;
    assert_eq!(resp.status(), 200);
    let init: Value = resp.json().await.unwrap();
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );

    let list = m
        .post(
            Some(&token),
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
        )
        .await;
    let list: Value = list.json().await.unwrap();
    let mut names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["admin-action", "whoami"]);

    // A fresh token (full verification) and the same one again (the cache):
    // neither path lets the header through.
    let fresh = m.token(&["mcp:read"]);
    let who: Value =
        serde_json::from_str(&tool_text(m.post(Some(&fresh), &call("whoami")).await).await)
            .unwrap();
    assert_eq!(who["authorization_header_seen"], false);
    let who: Value =
        serde_json::from_str(&tool_text(m.post(Some(&token), &call("whoami")).await).await)
            .unwrap();
    assert_eq!(who["client_id"], "test-client");
    assert_eq!(who["scopes"], json!(["mcp:read"]));
    // No token passthrough: the tool never sees the Authorization header.
    assert_eq!(who["authorization_header_seen"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_audience_expired_and_untrusted_key_tokens_each_get_exactly_401() {
    let m = start().await;
    let stranger = TestIssuer::start().await;
    let cases = [
        (
            "wrong audience",
            m.issuer
                .token()
                .audience("https://other.example/mcp")
                .sign(),
        ),
        (
            "another server's path",
            m.issuer
                .token()
                .audience(format!("{}/other", m.origin()))
                .sign(),
        ),
        ("no audience", m.issuer.token().without_claim("aud").sign()),
        (
            "expired",
            m.issuer.token().audience(m.url.clone()).expired().sign(),
        ),
        (
            "untrusted key",
            stranger
                .token()
                .audience(m.url.clone())
                .claim("iss", m.issuer.issuer())
                .sign(),
        ),
    ];
    for (what, token) in cases {
        let resp = m.post(Some(&token), &call("whoami")).await;
        assert_eq!(resp.status(), 401, "{what}");
        let c = challenge(&resp);
        assert!(c.contains("error=\"invalid_token\""), "{what}: {c}");
        assert!(c.contains("resource_metadata="), "{what}: {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_action_needs_mcp_admin_and_says_so_in_a_403() {
    let m = start().await;
    let reader = m.token(&["mcp:read"]);
    let resp = m.post(Some(&reader), &call("admin-action")).await;
    assert_eq!(resp.status(), 403);
    let c = challenge(&resp);
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    assert!(c.contains("scope=\"mcp:admin\""), "{c}");
    assert!(c.contains("resource_metadata="), "{c}");
    // Every call needs mcp:read (the 401's scope); mcp:admin implies it.
    let nothing = m.token(&[]);
    let resp = m.post(Some(&nothing), &initialize()).await;
    assert_eq!(resp.status(), 403);
    assert!(challenge(&resp).contains("scope=\"mcp:read\""));
    // A tool call without mcp:read names everything the call needs.
    let resp = m.post(Some(&nothing), &call("admin-action")).await;
    assert!(
        challenge(&resp).contains("scope=\"mcp:read mcp:admin\""),
        "{}",
        challenge(&resp)
    );
    // Hidden in a batch, it is still seen.
    let batch = json!([call("whoami"), call("admin-action")]);
    assert_eq!(m.post(Some(&reader), &batch).await.status(), 403);
    // The reader's other tools work.
    assert!(
        tool_text(m.post(Some(&reader), &call("whoami")).await)
            .await
            .contains("test-client")
    );

    let admin = m.token(&["mcp:admin"]);
    let text = tool_text(m.post(Some(&admin), &call("admin-action")).await).await;
    assert_eq!(text, "admin action done for test-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_delete_need_a_token_too() {
    let m = start().await;
    let client = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = client
            .request(method.clone(), &m.url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method}");
        assert!(challenge(&resp).contains("resource_metadata="), "{method}");
        // With a token, rmcp itself answers (no session streams here: 405).
        let resp = client
            .request(method.clone(), &m.url)
            .header("accept", "text/event-stream")
            .bearer_auth(m.token(&[]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_query_string_is_refused() {
    let m = start().await;
    let token = m.token(&["mcp:admin"]);
    let url = format!("{}?access_token={token}", m.url);
    let resp = m.post_raw(&url, None, initialize().to_string()).await;
    assert_eq!(resp.status(), 400);
    assert!(challenge(&resp).contains("invalid_request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_guard_cannot_read_is_refused_not_let_through() {
    let m = start().await;
    let token = m.token(&["mcp:read"]);
    // An escaped tool name is the same name: still admin-action's scope.
    let escaped = r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"admin\u002daction","arguments":{}}}"#;
    let resp = m.post_raw(&m.url, Some(&token), escaped.to_owned()).await;
    assert_eq!(resp.status(), 403);
    assert!(challenge(&resp).contains("scope=\"mcp:admin\""));
    for (what, body) in [
        ("not JSON", "{".to_owned()),
        (
            "a duplicate tool name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","name":"admin-action"}}"#
                .to_owned(),
        ),
        (
            "a duplicate method",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"admin-action"}}"#
                .to_owned(),
        ),
        (
            "a tool call without a name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.to_owned(),
        ),
        ("an empty batch", "[]".to_owned()),
        ("a batch of numbers", "[1,2]".to_owned()),
        (
            "a method that is not a string",
            r#"{"jsonrpc":"2.0","id":1,"method":1}"#.to_owned(),
        ),
        (
            "params as an array",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["admin-action"]}"#.to_owned(),
        ),
        (
            "a byte-order mark",
            format!("\u{feff}{}", call("whoami")),
        ),
    ] {
        let resp = m.post_raw(&m.url, Some(&token), body).await;
        assert_eq!(resp.status(), 400, "{what}");
        assert!(challenge(&resp).contains("invalid_request"), "{what}");
    }
}

/// An inner service that answers 200 "reached" (in process, no rmcp).
fn reached() -> axum::Router {
    axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { "reached" }).get(|| async { "reached" }),
    )
}

#[tokio::test]
async fn a_scope_hierarchy_holds_for_tools_routes_and_extractors() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::builder()
        .issuer(issuer.config())
        .scope_hierarchy(
            ScopeHierarchy::new()
                .implies("mcp:admin", ["mcp:write"])
                .implies("mcp:write", ["mcp:read"])
                .prefix(':'),
        )
        .build()
        .await
        .unwrap();
    let app = reached()
        .route_layer(
            McpScopes::new()
                .tool("read-tool", ["mcp:read"])
                .tool("deep-tool", ["files:read:all"])
                .other_tools(["mcp:tools"]),
        )
        .route(
            "/route",
            axum::routing::get(|| async { "route" }).route_layer(RequireScope::all(["mcp:read"])),
        )
        .route(
            "/extract",
            axum::routing::get(|_: Scoped<ReadScope>| async { "extract" }),
        )
        .layer(M2mAuthLayer::new(verifier));
    let server = support::serve(app).await;
    let client = reqwest::Client::new();
    let status = |method: reqwest::Method, path: &str, scopes: &[&str], body: Option<Value>| {
        let token = issuer.token().scopes(scopes.iter().copied()).sign();
        let mut req = client.request(method, server.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    // Transitive: admin → write → read.
    assert_eq!(
        status(
            post.clone(),
            "/mcp",
            &["mcp:admin"],
            Some(call("read-tool"))
        )
        .await,
        200
    );
    assert_eq!(
        status(
            post.clone(),
            "/mcp",
            &["mcp:write"],
            Some(call("read-tool"))
        )
        .await,
        200
    );
    assert_eq!(
        status(post.clone(), "/mcp", &["other"], Some(call("read-tool"))).await,
        403
    );
    // Prefix: "files" implies "files:read:all"; "files:read" does too; "file" does not.
    assert_eq!(
        status(post.clone(), "/mcp", &["files"], Some(call("deep-tool"))).await,
        200
    );
    assert_eq!(
        status(
            post.clone(),
            "/mcp",
            &["files:read"],
            Some(call("deep-tool"))
        )
        .await,
        200
    );
    assert_eq!(
        status(post.clone(), "/mcp", &["file"], Some(call("deep-tool"))).await,
        403
    );
    // Tools not named need `mcp:tools`, which `mcp` implies by prefix.
    assert_eq!(
        status(post.clone(), "/mcp", &["mcp"], Some(call("anything"))).await,
        200
    );
    assert_eq!(
        status(post.clone(), "/mcp", &["mcp:read"], Some(call("anything"))).await,
        403
    );
    // Route guards and extractors honour the same hierarchy.
    assert_eq!(
        status(get.clone(), "/route", &["mcp:admin"], None).await,
        200
    );
    assert_eq!(
        status(get.clone(), "/route", &["mcp:readers"], None).await,
        403
    );
    assert_eq!(
        status(get.clone(), "/extract", &["mcp:admin"], None).await,
        200
    );
    assert_eq!(status(get.clone(), "/extract", &["other"], None).await, 403);
    // Non-POST requests carry no call: the token alone decides.
    assert_eq!(status(get, "/mcp", &[], None).await, 200);
}

struct ReadScope;
impl m2m_guard::ScopeSet for ReadScope {
    const SCOPES: &'static [&'static str] = &["mcp:read"];
}

#[tokio::test]
async fn the_guard_bounds_the_body_and_needs_an_auth_layer_in_front() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let app = reached()
        .route_layer(McpScopes::new().max_body_bytes(64))
        .layer(M2mAuthLayer::new(verifier));
    let server = support::serve(app).await;
    let token = issuer.token().sign();
    let resp = reqwest::Client::new()
        .post(server.url("/mcp"))
        .bearer_auth(&token)
        .body(format!("{{\"padding\":\"{}\"}}", "x".repeat(100)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = reqwest::Client::new()
        .post(server.url("/mcp"))
        .bearer_auth(&token)
        .header("content-encoding", "gzip")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // A method other than GET and DELETE is read like a POST.
    let guarded = support::serve(
        axum::Router::new()
            .route("/mcp", axum::routing::put(|| async { "reached" }))
            .route_layer(McpScopes::new().tool("admin-action", ["mcp:admin"]))
            .layer(M2mAuthLayer::new(issuer.verifier().await)),
    )
    .await;
    let resp = reqwest::Client::new()
        .put(guarded.url("/mcp"))
        .bearer_auth(&token)
        .json(&call("admin-action"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Without an auth layer in front: a wiring mistake, 500, never a pass.
    let bare = support::serve(reached().route_layer(McpScopes::new())).await;
    let resp = reqwest::Client::new()
        .post(bare.url("/mcp"))
        .json(&call("whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
}

#[test]
fn protected_resource_metadata_is_checked_at_start() {
    use m2m_guard::ProtectedResource;
    let ok = ProtectedResource::new("https://mcp.example.com/mcp")
        .authorization_servers(["https://acme.kinde.com"]);
    assert!(ok.validate().is_ok());
    assert!(
        ProtectedResource::new("http://127.0.0.1:8080/mcp")
            .authorization_servers(["http://localhost:9000"])
            .validate()
            .is_ok()
    );
    for (resource, servers, expect) in [
        (
            "https://mcp.example.com/mcp",
            vec![],
            "at least one authorization server",
        ),
        ("/mcp", vec!["https://a.example"], "not an absolute URL"),
        (
            "https://mcp.example.com/mcp#x",
            vec!["https://a.example"],
            "fragment",
        ),
        (
            "http://mcp.example.com/mcp",
            vec!["https://a.example"],
            "https",
        ),
        (
            "https://mcp.example.com/mcp",
            vec!["http://a.example"],
            "https",
        ),
        (
            "https://mcp.example.com/mcp",
            vec!["https://a.example/?t=1"],
            "query",
        ),
    ] {
        let e = ProtectedResource::new(resource)
            .authorization_servers(servers)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{resource}: {e}");
    }
    let e = ok
        .clone()
        .scopes_supported(["a b"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a scope"), "{e}");
}

#[tokio::test]
async fn the_401_scope_comes_from_the_resource_unless_chosen() {
    use m2m_guard::ProtectedResource;
    let issuer = TestIssuer::start().await;
    let resource = ProtectedResource::new("http://127.0.0.1/mcp")
        .authorization_servers([issuer.issuer()])
        .scopes_supported(["mcp:read", "mcp:admin"]);
    let challenge_of = |layer: M2mAuthLayer| async {
        let server = support::serve(reached().layer(layer)).await;
        let resp = reqwest::Client::new()
            .post(server.url("/mcp"))
            .send()
            .await
            .unwrap();
        challenge(&resp)
    };
    let v = issuer.verifier().await;
    let c = challenge_of(M2mAuthLayer::new(v.clone()).protected_resource(&resource)).await;
    assert!(c.contains("scope=\"mcp:read mcp:admin\""), "{c}");
    // Chosen before or after the resource, the choice wins.
    let c = challenge_of(
        M2mAuthLayer::new(v.clone())
            .challenge_scopes(["mcp:read"])
            .protected_resource(&resource),
    )
    .await;
    assert!(c.contains("scope=\"mcp:read\""), "{c}");
    let c = challenge_of(
        M2mAuthLayer::new(v.clone())
            .protected_resource(&resource)
            .challenge_scopes(Vec::<String>::new()),
    )
    .await;
    assert!(!c.contains("scope="), "{c}");
    // No resource, no scope: as before.
    let c = challenge_of(M2mAuthLayer::new(v)).await;
    assert!(!c.contains("scope="), "{c}");
}

/// Echoes whether the request still carried an `Authorization` header.
fn header_echo() -> axum::Router {
    axum::Router::new().route(
        "/mcp",
        axum::routing::any(|headers: axum::http::HeaderMap| async move {
            format!("authorization={}", headers.contains_key("authorization"))
        }),
    )
}

#[tokio::test]
async fn behind_an_optional_layer_every_mcp_request_still_needs_a_token_and_no_header_passes() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let optional = || {
        M2mAuthLayer::new(verifier.clone())
            .optional()
            .strip_authorization()
    };
    let guarded = support::serve(
        header_echo()
            .route_layer(McpScopes::new())
            .layer(optional()),
    )
    .await;
    let client = reqwest::Client::new();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::POST,
    ] {
        let resp = client
            .request(method.clone(), guarded.url("/mcp"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method}: anonymous");
    }
    // Without the MCP guard, an optional layer lets anonymous requests in,
    // but never another scheme's credentials.
    let open = support::serve(header_echo().layer(optional())).await;
    let resp = client
        .get(open.url("/mcp"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "authorization=false");
    let token = issuer.token().sign();
    for _ in 0..3 {
        // Full verification, then the cache: stripped on both paths.
        let resp = client
            .get(open.url("/mcp"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "authorization=false");
    }
    // Without strip_authorization the header goes on, as before.
    let keep = support::serve(header_echo().layer(M2mAuthLayer::new(verifier.clone()))).await;
    let resp = client
        .get(keep.url("/mcp"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "authorization=true");
}
