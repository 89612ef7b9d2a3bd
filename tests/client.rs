//! The client-credentials token provider and the outgoing bearer layer,
//! against a token endpoint and an API on loopback.

mod support;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use m2m_guard::client::{
    BearerTokenLayer, ClientAuth, ClientError, ClientSecret, OAuthErrorCode, TokenProvider,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Recorded, Reply, ScriptServer};
use tower::{Service, ServiceBuilder, ServiceExt};

const SECRET: &str = "s3cr3t:with&odd=chars";

#[derive(Clone)]
enum Answer {
    Token {
        expires_in: u64,
    },
    /// The last token issued, again (some issuers hand out the same token until it expires).
    SameToken,
    Status(u16, Option<&'static str>, &'static str),
    Raw(u16, String),
}

/// One token request as the endpoint saw it: form fields, Authorization header, when.
type Call = (HashMap<String, String>, Option<String>, Instant);

/// The state behind the scripted token endpoint and API.
#[derive(Default)]
struct Endpoint {
    script: Mutex<VecDeque<Answer>>,
    default_expires_in: Mutex<u64>,
    delay: Mutex<Duration>,
    issued: Mutex<u64>,
    revoked: Mutex<HashSet<String>>,
}

/// A token endpoint (`/token`, answering from a script, then with fresh
/// tokens `tok-N`), its discovery document and an API (`/api`, refusing
/// revoked tokens), on the shared loopback [`ScriptServer`].
struct Mock {
    server: ScriptServer,
    ep: Arc<Endpoint>,
    base: String,
}

impl Mock {
    async fn start() -> Mock {
        let server = ScriptServer::start().await;
        let base = server.url("");
        let ep = Arc::new(Endpoint::default());
        *ep.default_expires_in.lock().unwrap() = 3600;
        let state = ep.clone();
        server.set("/token", Reply::computed(move |req| token(&state, req)));
        let state = ep.clone();
        server.set("/api", Reply::computed(move |req| api(&state, req)));
        server.json(
            "/.well-known/openid-configuration",
            serde_json::json!({"issuer": base, "token_endpoint": format!("{base}/token")})
                .to_string(),
        );
        Mock { server, ep, base }
    }
    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.ep.script.lock().unwrap().extend(answers);
    }
    fn calls(&self) -> Vec<Call> {
        self.server
            .requests("/token")
            .iter()
            .map(|r| (r.form(), r.header("authorization"), r.at))
            .collect()
    }
    /// Requests the API received.
    fn api_calls(&self) -> u64 {
        self.server.hits("/api")
    }
    fn builder(&self) -> m2m_guard::client::TokenProviderBuilder {
        TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
            .token_url(format!("{}/token", self.base))
            .backoff(Duration::from_millis(50), Duration::from_secs(2))
    }
}

fn token(ep: &Endpoint, req: &Recorded) -> Reply {
    let answer = ep
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Token {
            expires_in: *ep.default_expires_in.lock().unwrap(),
        });
    let reply = match answer {
        Answer::SameToken => {
            let n = *ep.issued.lock().unwrap();
            json_reply(serde_json::json!({
                "access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600
            }))
        }
        Answer::Token { expires_in } => {
            let n = {
                let mut i = ep.issued.lock().unwrap();
                *i += 1;
                *i
            };
            json_reply(serde_json::json!({
                "access_token": format!("tok-{n}"), "token_type": "Bearer",
                "expires_in": expires_in, "scope": req.form().get("scope")
            }))
        }
        Answer::Status(status, retry_after, body) => {
            let mut headers = HeaderMap::new();
            if let Some(ra) = retry_after {
                headers.insert("retry-after", ra.parse().unwrap());
            }
            Reply::Headers(StatusCode::from_u16(status).unwrap(), headers, body.into())
        }
        Answer::Raw(status, body) => Reply::text(status, body),
    };
    match *ep.delay.lock().unwrap() {
        d if d.is_zero() => reply,
        d => Reply::Delay(d, Box::new(reply)),
    }
}

fn json_reply(body: serde_json::Value) -> Reply {
    Reply::Json(StatusCode::OK, body.to_string())
}

fn api(ep: &Endpoint, req: &Recorded) -> Reply {
    let token = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_default();
    if token.is_empty() || ep.revoked.lock().unwrap().contains(&token) {
        return Reply::text(401, "");
    }
    Reply::text(200, token)
}

#[tokio::test]
async fn caches_the_token_in_memory() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .audience("https://api")
        .scopes(["read:users", "write:flags"])
        .build()
        .await
        .unwrap();
    let a = p.token().await.unwrap();
    let b = p.token().await.unwrap();
    assert_eq!(a.secret(), "tok-1");
    assert_eq!(b.secret(), "tok-1");
    assert_eq!(p.requests_sent(), 1);
    let (form, auth, _) = &m.calls()[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["audience"], "https://api");
    assert_eq!(form["scope"], "read:users write:flags");
    assert!(!form.contains_key("client_secret"), "basic auth by default");
    // RFC 6749 §2.3.1: id and secret are form-encoded, then Basic.
    let expected =
        base64::engine::general_purpose::STANDARD.encode("svc-a:s3cr3t%3Awith%26odd%3Dchars");
    assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
}

#[tokio::test]
async fn client_secret_post_and_resource_indicators() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .client_auth(ClientAuth::Post)
        .resource("https://api")
        .build()
        .await
        .unwrap();
    p.token().await.unwrap();
    let (form, auth, _) = &m.calls()[0];
    assert_eq!(form["client_id"], "svc-a");
    assert_eq!(form["client_secret"], SECRET);
    assert_eq!(form["resource"], "https://api");
    assert!(!form.contains_key("audience") && !form.contains_key("scope"));
    assert_eq!(auth, &None);
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let m = Mock::start().await;
    *m.ep.delay.lock().unwrap() = Duration::from_millis(200);
    let p = m.builder().build().await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.token().await.unwrap().secret().to_owned() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "tok-1");
    }
    assert_eq!(p.requests_sent(), 1);
}

#[tokio::test]
async fn refreshes_before_expiry_without_making_callers_wait() {
    let m = Mock::start().await;
    *m.ep.default_expires_in.lock().unwrap() = 4;
    let p = m
        .builder()
        .refresh_before_expiry(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    // 1 s: the refreshed token arrives with 3 s of its 4 left (under half
    // would be "expires on arrival").
    *m.ep.delay.lock().unwrap() = Duration::from_millis(1000);
    // Refresh is due somewhere in [1 s, 2 s] (margin 2 s, jitter up to 1 s).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let started = Instant::now();
    assert_eq!(
        p.token().await.unwrap().secret(),
        "tok-1",
        "still valid: handed out"
    );
    // Waiting for the refresh would take the endpoint's 1 s.
    assert!(
        started.elapsed() < Duration::from_millis(750),
        "the caller did not wait"
    );
    // The background refresh lands (the endpoint takes 1 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.token().await.unwrap().secret() != "tok-2" {
        assert!(Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.requests_sent(), 2, "one background refresh");
}

#[tokio::test]
async fn an_expired_token_is_never_handed_out() {
    let m = Mock::start().await;
    *m.ep.default_expires_in.lock().unwrap() = 1;
    let p = m.builder().build().await.unwrap();
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(p.token().await.unwrap().secret(), "tok-2");
}

/// A token that spent more than half its lifetime on the way (0.7 s of
/// 1 s) is never handed out: it would reach the API dead. The answer is a
/// failure, under the backoff, not a token.
#[tokio::test]
async fn a_token_that_expires_on_arrival_is_a_failure() {
    let m = Mock::start().await;
    *m.ep.default_expires_in.lock().unwrap() = 1;
    *m.ep.delay.lock().unwrap() = Duration::from_millis(700);
    let p = m
        .builder()
        .max_retries(0)
        .backoff(Duration::from_secs(1), Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let e = p.token().await.unwrap_err();
    assert!(e.to_string().contains("expires on arrival"), "{e}");
    assert!(
        matches!(p.token().await, Err(ClientError::BackingOff { .. })),
        "the next call waits out the backoff"
    );
    assert_eq!(p.requests_sent(), 1);
    // A token with time to spare is taken.
    *m.ep.default_expires_in.lock().unwrap() = 3600;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(p.token().await.unwrap().secret().starts_with("tok-"));
}

#[tokio::test]
async fn backs_off_on_5xx_and_429_honouring_retry_after() {
    let m = Mock::start().await;
    m.script([
        Answer::Status(503, None, "busy"),
        Answer::Status(502, None, "bad gateway"),
    ]);
    let p = m.builder().build().await.unwrap();
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    let calls = m.calls();
    assert_eq!(calls.len(), 3);
    let gap1 = calls[1].2 - calls[0].2;
    let gap2 = calls[2].2 - calls[1].2;
    assert!(gap1 >= Duration::from_millis(20), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(45), "exponential: {gap2:?}");

    let m = Mock::start().await;
    m.script([Answer::Status(429, Some("1"), "slow down")]);
    let p = m.builder().build().await.unwrap();
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    let calls = m.calls();
    assert!(
        calls[1].2 - calls[0].2 >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
}

#[tokio::test]
async fn gives_up_after_the_retries() {
    let m = Mock::start().await;
    m.script(std::iter::repeat_n(Answer::Status(503, None, "down"), 10));
    let p = m.builder().max_retries(2).build().await.unwrap();
    let e = p.token().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Unavailable { status: 503, .. }),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_eq!(p.requests_sent(), 3);
}

#[tokio::test]
async fn oauth_errors_are_typed_and_not_retried() {
    for (status, body, code) in [
        (
            401,
            r#"{"error":"invalid_client","error_description":"bad secret"}"#,
            OAuthErrorCode::InvalidClient,
        ),
        (
            400,
            r#"{"error":"invalid_scope"}"#,
            OAuthErrorCode::InvalidScope,
        ),
        (
            400,
            r#"{"error":"unauthorized_client"}"#,
            OAuthErrorCode::UnauthorizedClient,
        ),
        (
            400,
            r#"{"error":"invalid_target"}"#,
            OAuthErrorCode::InvalidTarget,
        ),
        (
            400,
            r#"{"error":"custom_thing"}"#,
            OAuthErrorCode::Other("custom_thing".into()),
        ),
    ] {
        let m = Mock::start().await;
        m.script([Answer::Raw(status, body.into())]);
        let p = m.builder().build().await.unwrap();
        match p.token().await.unwrap_err() {
            ClientError::OAuth {
                code: c, status: s, ..
            } => assert_eq!((c, s), (code, status)),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.requests_sent(), 1, "{body}: not retried");
    }
}

/// A token endpoint (or a proxy in front of it) that echoes the request
/// into its `error_description` (and its `error` code): the secret, in
/// every form it was sent (raw, form-encoded, in the Basic header), is
/// withheld from the error.
#[tokio::test]
async fn an_echoed_secret_is_withheld_from_the_error() {
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let m = Mock::start().await;
        m.server.set(
            "/token",
            Reply::computed(|req| {
                let echo = format!(
                    "rejected: body={} raw={} form={:?} authorization={:?}",
                    String::from_utf8_lossy(&req.body),
                    req.form().get("client_secret").cloned().unwrap_or_default(),
                    req.form(),
                    req.header("authorization"),
                );
                let code = format!(
                    "bad_request_{}",
                    req.form().get("client_secret").cloned().unwrap_or_default()
                );
                Reply::Json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": code, "error_description": echo}).to_string(),
                )
            }),
        );
        let p = m.builder().client_auth(auth).build().await.unwrap();
        let e = p.token().await.unwrap_err();
        let (shown, debug) = (e.to_string(), format!("{e:?}"));
        assert!(shown.contains("rejected"), "{shown}");
        let basic = m.server.requests("/token")[0]
            .header("authorization")
            .map(|h| h.trim_start_matches("Basic ").to_owned());
        assert_eq!(basic.is_some(), matches!(auth, ClientAuth::Basic));
        for text in [&shown, &debug] {
            assert!(!text.contains("s3cr3t"), "{auth:?}: {text}");
            assert!(!text.contains("%26odd"), "{auth:?}: {text}");
            if let Some(b) = &basic {
                assert!(!text.contains(b.as_str()), "{auth:?}: {text}");
            }
        }
        assert!(shown.contains("***"), "{shown}");
    }
}

#[tokio::test]
async fn malformed_token_responses_are_errors() {
    for body in [
        "<html>login</html>".to_owned(),
        r#"{"token_type":"Bearer"}"#.to_owned(),
        r#"{"access_token":"","token_type":"Bearer"}"#.to_owned(),
        r#"{"access_token":"a b","token_type":"Bearer"}"#.to_owned(),
        r#"{"access_token":"x","token_type":"mac"}"#.to_owned(),
        r#"{"access_token":"x","expires_in":-5}"#.to_owned(),
        r#"{"access_token":"x","expires_in":[1]}"#.to_owned(),
        format!(r#"{{"access_token":"x","pad":"{}"}}"#, "p".repeat(100_000)),
    ] {
        let m = Mock::start().await;
        m.script([Answer::Raw(200, body.clone())]);
        let p = m.builder().build().await.unwrap();
        let e = p.token().await.unwrap_err();
        assert!(
            matches!(e, ClientError::InvalidResponse(_)),
            "{body:.60}: {e:?}"
        );
    }
}

#[tokio::test]
async fn the_secret_and_tokens_never_show_in_debug_or_errors() {
    let m = Mock::start().await;
    let b = m.builder();
    assert!(!format!("{b:?}").contains(SECRET));
    let p = b.build().await.unwrap();
    let t = p.token().await.unwrap();
    for shown in [
        format!("{p:?}"),
        format!("{t:?}"),
        format!("{:?}", ClientSecret::new(SECRET)),
    ] {
        assert!(
            !shown.contains(SECRET) && !shown.contains("tok-1"),
            "{shown}"
        );
    }
    m.script([Answer::Raw(401, r#"{"error":"invalid_client"}"#.into())]);
    p.invalidate(&t);
    let e = p.token().await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains(SECRET));
}

#[tokio::test]
async fn discovery_finds_the_token_endpoint() {
    let m = Mock::start().await;
    let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .issuer(&m.base)
        .build()
        .await
        .unwrap();
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    // Another issuer's document: a configuration error naming the issuer,
    // on the first token request (nothing is fetched at build).
    let elsewhere = format!("{}/elsewhere", m.base);
    let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .issuer(&elsewhere)
        .max_retries(0)
        .build()
        .await
        .unwrap();
    let e = p.token().await.unwrap_err();
    assert!(matches!(e, ClientError::Config(_)), "{e:?}");
    assert!(e.to_string().contains(&elsewhere), "{e}");
    let e = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .token_url("http://token.example.com/token")
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("https is required"), "{e}");
}

#[tokio::test]
async fn a_client_starts_while_its_issuer_is_down_and_works_once_it_is_back() {
    // An issuer whose discovery answers 503 until told otherwise.
    let m = Mock::start().await;
    let token_endpoint = format!("{}/token", m.base);
    let discovery = ScriptServer::start().await;
    let issuer = discovery.url("");
    discovery.set("/.well-known/openid-configuration", Reply::text(503, ""));
    let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .issuer(&issuer)
        .max_retries(0)
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .build()
        .await
        .expect("builds while the issuer is down");
    let e = p.token().await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(p.requests_sent(), 0, "no token request without an endpoint");
    discovery.json(
        "/.well-known/openid-configuration",
        serde_json::json!({"issuer": issuer, "token_endpoint": token_endpoint}).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.token().await {
            Ok(t) => {
                assert_eq!(t.secret(), "tok-1");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "still failing: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_discovered_token_endpoint_must_pass_the_url_policy() {
    // Metadata pointing the secret at plain http off loopback, or at an URL
    // with credentials: refused before any token request.
    for endpoint in [
        "http://evil.example/token",
        "https://u:p@issuer.example/token",
    ] {
        let discovery = ScriptServer::start().await;
        let issuer = discovery.url("");
        discovery.json(
            "/.well-known/openid-configuration",
            serde_json::json!({"issuer": issuer, "token_endpoint": endpoint}).to_string(),
        );
        let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
            .issuer(&issuer)
            .max_retries(0)
            .build()
            .await
            .unwrap();
        let e = p.token().await.unwrap_err();
        assert!(matches!(e, ClientError::Config(_)), "{endpoint}: {e:?}");
        assert_eq!(p.requests_sent(), 0, "{endpoint}: no token request");
        assert!(!format!("{e} {e:?}").contains(SECRET));
    }
}

/// Both halves end to end with the test kit alone: the test issuer's token
/// endpoint (found by discovery) hands a registered client its tokens, and
/// the issuer's verifier accepts them with the client's org and scopes.
#[tokio::test]
async fn the_test_issuer_serves_the_token_endpoint_it_advertises() {
    use m2m_guard::test_util::{TestClient, TestIssuer};
    let issuer = TestIssuer::start().await;
    issuer.register_client(
        TestClient::new("billing", "s3cret")
            .org("org_7")
            .scopes(["read:users", "write:flags"]),
    );
    let verifier = issuer.verifier().await;
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let p = TokenProvider::builder("billing", ClientSecret::new("s3cret"))
            .issuer(issuer.issuer())
            .client_auth(auth)
            .scopes(["read:users"])
            .audience(m2m_guard::test_util::DEFAULT_AUDIENCE)
            .build()
            .await
            .unwrap();
        let token = p.token().await.unwrap();
        assert_eq!(token.scope(), Some("read:users"));
        let who = verifier.verify(token.secret()).await.unwrap();
        assert_eq!(who.client_id(), Some("billing"));
        assert_eq!(who.tenant(), Some("org_7"));
        assert!(who.has_scope("read:users") && !who.has_scope("write:flags"));
    }
    let builder = || {
        TokenProvider::builder("billing", ClientSecret::new("s3cret"))
            .token_url(issuer.token_endpoint())
            .max_retries(0)
    };
    // No scope asked: every allowed scope.
    let all = builder().build().await.unwrap().token().await.unwrap();
    assert_eq!(all.scope(), Some("read:users write:flags"));
    // `resource` (RFC 8707) becomes the audience.
    let other = builder()
        .resource("https://other.example/api")
        .build()
        .await
        .unwrap()
        .token()
        .await
        .unwrap();
    let e = verifier.verify(other.secret()).await.unwrap_err();
    assert_eq!(e.reason(), m2m_guard::Reason::InvalidAudience);
    // A scope the client may not have: invalid_scope; a wrong secret: invalid_client.
    let e = builder()
        .scopes(["admin"])
        .build()
        .await
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::OAuth {
                code: OAuthErrorCode::InvalidScope,
                status: 400,
                ..
            }
        ),
        "{e:?}"
    );
    let e = TokenProvider::builder("billing", ClientSecret::new("wrong"))
        .token_url(issuer.token_endpoint())
        .build()
        .await
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::OAuth {
                code: OAuthErrorCode::InvalidClient,
                status: 401,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn secret_from_the_environment() {
    // set_var is unsafe in edition 2024 and this crate forbids unsafe: use
    // variables the test harness always has, and one it never has.
    assert!(ClientSecret::from_env("PATH").is_ok());
    assert!(matches!(
        ClientSecret::from_env("M2M_GUARD_TEST_SECRET_NEVER_SET"),
        Err(ClientError::Config(_))
    ));
}

async fn api_client(
    m: &Mock,
    p: TokenProvider,
) -> impl Service<reqwest::Request, Response = reqwest::Response, Error = tower::BoxError> + Clone {
    ServiceBuilder::new()
        .layer(BearerTokenLayer::new(p).allow_origin(&m.base).unwrap())
        .service(reqwest::Client::new())
}

#[tokio::test]
async fn the_layer_adds_the_token_and_retries_once_on_401() {
    let m = Mock::start().await;
    let p = m.builder().build().await.unwrap();
    let mut client = api_client(&m, p.clone()).await;
    let url: reqwest::Url = format!("{}/api", m.base).parse().unwrap();
    let req = || reqwest::Request::new(reqwest::Method::GET, url.clone());

    let resp = client.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "tok-1");

    // The API stops accepting tok-1: the layer gets tok-2 and retries once.
    m.ep.revoked.lock().unwrap().insert("tok-1".into());
    let before = m.api_calls();
    let resp = client.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "tok-2");
    assert_eq!(m.api_calls() - before, 2);
    assert_eq!(p.requests_sent(), 2);
}

#[tokio::test]
async fn a_401_refreshes_at_most_once_per_token_and_never_in_a_storm() {
    let m = Mock::start().await;
    let p = m.builder().build().await.unwrap();
    let mut client = api_client(&m, p.clone()).await;
    let url: reqwest::Url = format!("{}/api", m.base).parse().unwrap();
    let req = || reqwest::Request::new(reqwest::Method::GET, url.clone());
    // The API refuses every token (say, a misconfigured audience).
    for t in ["tok-1", "tok-2", "tok-3", "tok-4"] {
        m.ep.revoked.lock().unwrap().insert(t.into());
    }
    // One retry with a fresh token, then the 401 is returned.
    let resp = client.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(m.api_calls(), 2);
    assert_eq!(p.requests_sent(), 2);
    // Every later request: one call, its 401, and no token request each.
    for _ in 0..20 {
        let resp = client.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(m.api_calls(), 22);
    assert_eq!(
        p.requests_sent(),
        2,
        "401s never cause a token request each"
    );
}

/// Requests in flight when the API stops taking the token all get their
/// one retry: a 401 that arrives while another request's refresh is under
/// way waits for that refresh, instead of being handed back. One token
/// request for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_wait_for_the_refresh_under_way() {
    let m = Mock::start().await;
    let p = m.builder().build().await.unwrap();
    let client = api_client(&m, p.clone()).await;
    let url: reqwest::Url = format!("{}/api", m.base).parse().unwrap();
    let get = || {
        let mut client = client.clone();
        let req = reqwest::Request::new(reqwest::Method::GET, url.clone());
        async move {
            let resp = client.ready().await.unwrap().call(req).await;
            resp.unwrap().status()
        }
    };
    assert_eq!(get().await, 200);
    m.ep.revoked.lock().unwrap().insert("tok-1".into());
    *m.ep.delay.lock().unwrap() = Duration::from_millis(500);
    let statuses = futures_util::future::join_all((0..20).map(|_| get())).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(p.requests_sent(), 2, "one refresh for all");
    assert_eq!(m.api_calls(), 41);
}

#[tokio::test]
async fn a_401_is_not_retried_with_the_very_same_token_string() {
    let m = Mock::start().await;
    let p = m.builder().build().await.unwrap();
    let mut client = api_client(&m, p.clone()).await;
    let url: reqwest::Url = format!("{}/api", m.base).parse().unwrap();
    let req = || reqwest::Request::new(reqwest::Method::GET, url.clone());
    assert_eq!(
        client
            .ready()
            .await
            .unwrap()
            .call(req())
            .await
            .unwrap()
            .status(),
        200
    );
    // The API now refuses tok-1, and the issuer hands out tok-1 again.
    m.ep.revoked.lock().unwrap().insert("tok-1".into());
    m.script([Answer::SameToken]);
    let resp = client.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(p.requests_sent(), 2, "one refresh");
    assert_eq!(
        m.api_calls(),
        2,
        "no second call with the same token it was refused"
    );
}

#[tokio::test]
async fn the_token_goes_only_to_the_api_origins() {
    let m = Mock::start().await;
    // The audience is the API's URL: its origin is allowed by default.
    let p = m
        .builder()
        .audience(format!("{}/api", m.base))
        .build()
        .await
        .unwrap();
    let mut client = ServiceBuilder::new()
        .layer(BearerTokenLayer::new(p.clone()))
        .service(reqwest::Client::new());
    let call = |url: String| reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
    let resp = client
        .ready()
        .await
        .unwrap()
        .call(call(format!("{}/api", m.base)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Another origin (another port on the same host, here) gets no token.
    let other = Mock::start().await;
    let err = client
        .ready()
        .await
        .unwrap()
        .call(call(format!("{}/api", other.base)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an allowed origin"), "{err}");
    assert_eq!(other.api_calls(), 0, "never contacted");
    assert!(!err.to_string().contains("tok-"), "{err}");
    // An audience that is not an URL allows nothing until an origin is added.
    let p = m.builder().audience("billing-api").build().await.unwrap();
    let mut client = ServiceBuilder::new()
        .layer(BearerTokenLayer::new(p.clone()))
        .service(reqwest::Client::new());
    let err = client
        .ready()
        .await
        .unwrap()
        .call(call(format!("{}/api", m.base)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an allowed origin"), "{err}");
    assert_eq!(p.requests_sent(), 0, "no token is even requested");
    // Origins must be https, or http to loopback.
    let err = BearerTokenLayer::new(p.clone())
        .allow_origin("http://api.example.com")
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    let err = BearerTokenLayer::new(p)
        .allow_origin("not a url")
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn failed_refreshes_back_off_and_callers_get_a_fast_typed_error() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .max_retries(0)
        .backoff(Duration::from_secs(3), Duration::from_secs(6))
        .build()
        .await
        .unwrap();
    m.script([Answer::Status(401, None, r#"{"error":"invalid_client"}"#)]);
    assert!(matches!(
        p.token().await.unwrap_err(),
        ClientError::OAuth { .. }
    ));
    assert_eq!(p.requests_sent(), 1);
    // During the backoff: no request, a fast error saying why.
    let started = Instant::now();
    for _ in 0..50 {
        match p.token().await.unwrap_err() {
            ClientError::BackingOff {
                retry_after,
                last_error,
            } => {
                assert!(retry_after <= Duration::from_secs(3));
                assert!(matches!(*last_error, ClientError::OAuth { .. }));
            }
            other => panic!("{other:?}"),
        }
    }
    // The backoff (1.5 to 3 s) outlasts the 50 calls with a wide margin: every one
    // was answered without a request.
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(p.requests_sent(), 1, "no request storm");
    // After the backoff, the next call tries again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    assert_eq!(p.requests_sent(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured_across_calls() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .max_retries(0)
        .backoff(Duration::from_millis(10), Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    m.script([Answer::Status(429, Some("6"), "slow down")]);
    assert!(matches!(
        p.token().await.unwrap_err(),
        ClientError::Unavailable { status: 429, .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    match p.token().await.unwrap_err() {
        // Far more than the 10 ms backoff: the server's Retry-After (6 s) holds.
        ClientError::BackingOff { retry_after, .. } => {
            assert!(retry_after > Duration::from_secs(3), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.requests_sent(), 1);
}

/// `Retry-After: 0` (or any wait shorter than the backoff) is no licence
/// for back-to-back requests: the backoff still spaces the retries.
#[tokio::test]
async fn a_zero_retry_after_still_backs_off() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .max_retries(2)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    m.script([
        Answer::Status(503, Some("0"), "busy"),
        Answer::Status(429, Some("0"), "busy"),
    ]);
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
    let calls = m.calls();
    assert_eq!(calls.len(), 3);
    // The first retry after 50..100 ms, the second after 100..200 ms.
    assert!(calls[1].2 - calls[0].2 >= Duration::from_millis(45));
    assert!(calls[2].2 - calls[1].2 >= Duration::from_millis(95));
}

/// A `Retry-After` longer than the backoff's maximum ends the retries of
/// that call (not cut to the maximum: the server asked for longer); the
/// wait is honoured across calls instead.
#[tokio::test]
async fn a_retry_after_longer_than_the_backoff_ends_the_retries() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .max_retries(3)
        .backoff(Duration::from_millis(10), Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    m.script([Answer::Status(503, Some("30"), "maintenance")]);
    let started = std::time::Instant::now();
    let e = p.token().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Unavailable { status: 503, .. }),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(m.calls().len(), 1, "no retry before the server's 30 s");
    match p.token().await.unwrap_err() {
        ClientError::BackingOff { retry_after, .. } => {
            assert!(retry_after > Duration::from_secs(25), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.calls().len(), 1);
}

#[tokio::test]
async fn a_still_valid_token_is_served_while_refreshes_back_off() {
    let m = Mock::start().await;
    let p = m
        .builder()
        .max_retries(0)
        .backoff(Duration::from_secs(2), Duration::from_secs(4))
        .build()
        .await
        .unwrap();
    // A 4 s token: a refresh is due after 1 to 2 s, it stays usable until 3.6 s.
    *m.ep.default_expires_in.lock().unwrap() = 4;
    let t1 = p.token().await.unwrap();
    m.script(std::iter::repeat_n(Answer::Status(503, None, "down"), 50));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The refresh is due: one background request, which fails...
    assert_eq!(p.token().await.unwrap().secret(), t1.secret());
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.requests_sent() < 2 {
        assert!(Instant::now() < deadline, "the refresh was never attempted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...then the valid token keeps being served, and the backoff (at least
    // 1 s) holds: no request per call.
    for _ in 0..40 {
        assert_eq!(p.token().await.unwrap().secret(), t1.secret());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.requests_sent(), 2, "no refresh storm");
}

#[tokio::test]
async fn a_401_whose_refresh_fails_returns_the_apis_401_and_keeps_the_token() {
    let m = Mock::start().await;
    let p = m.builder().max_retries(0).build().await.unwrap();
    let mut client = api_client(&m, p.clone()).await;
    let url: reqwest::Url = format!("{}/api", m.base).parse().unwrap();
    let req = || reqwest::Request::new(reqwest::Method::GET, url.clone());
    assert_eq!(
        client
            .ready()
            .await
            .unwrap()
            .call(req())
            .await
            .unwrap()
            .status(),
        200
    );
    m.ep.revoked.lock().unwrap().insert("tok-1".into());
    m.script([Answer::Status(503, None, "down")]);
    let resp = client.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(resp.status(), 401, "the API's answer, not a token error");
    assert_eq!(p.requests_sent(), 2);
    // The token is still there for other callers (the 401 may be the API's mistake).
    assert_eq!(p.token().await.unwrap().secret(), "tok-1");
}

#[tokio::test]
async fn a_caller_client_cannot_carry_the_secret_across_a_redirect() {
    // A token endpoint that redirects (307 keeps the method and the body).
    let target = ScriptServer::start().await;
    target.json("/steal", "{}");
    let redirecting = ScriptServer::start().await;
    let mut location = HeaderMap::new();
    location.insert("location", target.url("/steal").parse().unwrap());
    redirecting.set(
        "/token",
        Reply::Headers(StatusCode::TEMPORARY_REDIRECT, location, String::new()),
    );
    let token_url = redirecting.url("/token");

    let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .token_url(&token_url)
        .client_auth(ClientAuth::Post)
        .max_retries(0)
        // The caller's client follows redirects; m2m-guard turns that off.
        .http_client(reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(5)))
        .build()
        .await
        .unwrap();
    let e = p.token().await.unwrap_err();
    assert!(matches!(e, ClientError::Status(307)), "{e:?}");
    assert_eq!(redirecting.hits("/token"), 1);
    assert!(
        target.requests("/steal").is_empty(),
        "the secret never left"
    );
}

#[tokio::test]
async fn remote_error_codes_cannot_forge_log_lines() {
    let m = Mock::start().await;
    let p = m.builder().max_retries(0).build().await.unwrap();
    m.script([Answer::Raw(
        400,
        r#"{"error":"bad\nINFO forged line\u001b[31m","error_description":"x\r\ny"}"#.into(),
    )]);
    let e = p.token().await.unwrap_err();
    let text = e.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains("forged line"), "kept, escaped: {text}");
}

#[tokio::test]
async fn the_layer_works_with_plain_http_requests() {
    use http_body_util::{BodyExt, Full};
    let m = Mock::start().await;
    let p = m.builder().build().await.unwrap();
    // (authorization, body) of every request the service saw.
    let seen = Arc::new(Mutex::new(Vec::<(String, bytes::Bytes)>::new()));
    let revoked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let (seen2, revoked2) = (seen.clone(), revoked.clone());
    let svc = ServiceBuilder::new()
        .layer(
            BearerTokenLayer::new(p.clone())
                .allow_origin("http://localhost:1")
                .unwrap(),
        )
        .service_fn(move |req: http::Request<Full<bytes::Bytes>>| {
            let (seen, revoked) = (seen2.clone(), revoked2.clone());
            async move {
                let auth = req.headers()["authorization"].clone();
                assert!(auth.is_sensitive());
                let auth = auth.to_str().unwrap().to_owned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock().unwrap().push((auth.clone(), body.clone()));
                let refused = revoked.lock().unwrap().contains(&auth);
                let mut resp = http::Response::new(Full::new(body));
                if refused {
                    *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
    let post = || {
        http::Request::post("http://localhost:1/x")
            .body(Full::new(bytes::Bytes::from_static(b"payload")))
            .unwrap()
    };
    let resp = svc.clone().oneshot(post()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.lock().unwrap()[0].0, "Bearer tok-1");
    // A 401: one retry with a fresh token, the body sent again.
    revoked.lock().unwrap().insert("Bearer tok-1".into());
    let resp = svc.clone().oneshot(post()).await.unwrap();
    assert_eq!(resp.status(), 200);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].0, "Bearer tok-1");
        assert_eq!(
            (seen[2].0.as_str(), &seen[2].1[..]),
            ("Bearer tok-2", &b"payload"[..])
        );
    }
    // A relative URI names no origin: refused, no token attached.
    let req = http::Request::post("/x")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.to_string().contains("not an allowed origin"), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn network_failures_are_retried_then_reported() {
    // Nothing listens on port 1 of loopback: every connect is refused.
    let p = TokenProvider::builder("svc-a", ClientSecret::new(SECRET))
        .token_url("http://127.0.0.1:1/token")
        .max_retries(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let e = p.token().await.unwrap_err();
    assert!(matches!(e, ClientError::Network(_)), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(p.requests_sent(), 3, "the first try and two retries");
}

#[tokio::test]
async fn a_slow_token_endpoint_is_cut_off_by_the_timeout() {
    let m = Mock::start().await;
    *m.ep.delay.lock().unwrap() = Duration::from_secs(5);
    let p = m
        .builder()
        .max_retries(0)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let e = p.token().await.unwrap_err();
    assert!(matches!(e, ClientError::Network(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
