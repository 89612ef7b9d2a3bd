//! The client side of sender-constrained tokens and secret-less client
//! authentication: `private_key_jwt` assertions (RFC 7523), DPoP-bound
//! tokens from the token endpoint with its nonce (RFC 9449 §5, §8), and
//! `BearerTokenLayer` sending a fresh proof per request to an API behind
//! m2m-guard's own DPoP layer, answering its `use_dpop_nonce` once.

mod support;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use m2m_guard::client::{BearerTokenLayer, ClientAuth, ClientError, SigningKey, TokenProvider};
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Algorithm, Dpop, M2mAuthLayer, Principal};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Recorded, Reply, ScriptServer};
use tower::{Service, ServiceBuilder, ServiceExt};

/// A compact JWS's header and claims, after checking its signature with
/// `jwk` (the public key the client registered or sent).
fn open_jws(jws: &str, jwk: &Value) -> (Value, Value) {
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let part =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let (header, claims) = (part(parts[0]), part(parts[1]));
    let alg: jsonwebtoken::Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    let key: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&key).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(
        jsonwebtoken::crypto::verify(parts[2], input.as_bytes(), &key, alg).unwrap(),
        "the signature verifies with the public key"
    );
    (header, claims)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_reply(token: &str, token_type: &str) -> Reply {
    Reply::Json(
        StatusCode::OK,
        json!({"access_token": token, "token_type": token_type, "expires_in": 3600}).to_string(),
    )
}

/// A `private_key_jwt` client of `tokens`' `/token` asking for DPoP-bound
/// tokens with a fresh key.
fn dpop_client(tokens: &ScriptServer) -> m2m_guard::client::TokenProviderBuilder {
    TokenProvider::builder("svc-a", client_key())
        .token_url(tokens.url("/token"))
        .dpop(SigningKey::generate().unwrap())
}

fn client_key() -> SigningKey {
    let pem = include_str!("../src/test_util/keys/ec2.pem");
    SigningKey::from_pem(pem.as_bytes(), Algorithm::ES256)
        .unwrap()
        .with_kid("svc-a-2026")
}

#[tokio::test]
async fn private_key_jwt_authenticates_without_a_secret() {
    let server = ScriptServer::start().await;
    let issued = Mutex::new(0);
    server.set(
        "/token",
        Reply::computed(move |_| {
            let mut i = issued.lock().unwrap();
            *i += 1;
            token_reply(&format!("tok-{i}"), "Bearer")
        }),
    );
    let key = client_key();
    let token_url = server.url("/token");
    let provider = TokenProvider::builder("svc-a", key.clone())
        .token_url(&token_url)
        .audience("https://api.example.test")
        .build()
        .await
        .unwrap();
    let first = provider.token().await.unwrap();
    provider.invalidate(&first);
    provider.token().await.unwrap();

    let calls = server.requests("/token");
    assert_eq!(calls.len(), 2);
    let mut jtis = HashSet::new();
    for call in &calls {
        let form = call.form();
        assert_eq!(call.header("authorization"), None, "no Basic credentials");
        assert!(!form.contains_key("client_secret"));
        assert_eq!(form["client_id"], "svc-a");
        assert_eq!(
            form["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        let (header, claims) = open_jws(&form["client_assertion"], &key.public_jwk());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "svc-a-2026");
        assert_eq!(claims["iss"], "svc-a");
        assert_eq!(claims["sub"], "svc-a");
        assert_eq!(
            claims["aud"],
            token_url.as_str(),
            "RFC 7523 §3: the token endpoint"
        );
        let iat = claims["iat"].as_u64().unwrap();
        let exp = claims["exp"].as_u64().unwrap();
        assert!(iat.abs_diff(now()) <= 5, "issued now");
        assert_eq!(exp - iat, 60, "short-lived");
        assert!(
            jtis.insert(claims["jti"].as_str().unwrap().to_owned()),
            "a fresh jti each time"
        );
    }

    // The audience can be the issuer identifier for servers that want it.
    let provider = TokenProvider::builder("svc-a", key.clone())
        .token_url(&token_url)
        .assertion_audience("https://auth.example.test")
        .build()
        .await
        .unwrap();
    provider.token().await.unwrap();
    let last = server.requests("/token").pop().unwrap();
    let (_, claims) = open_jws(&last.form()["client_assertion"], &key.public_jwk());
    assert_eq!(claims["aud"], "https://auth.example.test");
}

#[tokio::test]
async fn signing_keys_are_checked_when_built() {
    // A key is an assertion key: where to put a secret does not apply.
    let err = TokenProvider::builder("svc-a", client_key())
        .token_url("https://auth.example.test/token")
        .client_auth(ClientAuth::Post)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    // A key that does not fit its algorithm, an RSA key too short, a
    // malformed PEM: refused, and the message never shows the key.
    let p384 = include_str!("../src/test_util/keys/ec384_2.pem");
    let err = SigningKey::from_pem(p384.as_bytes(), Algorithm::ES256).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid token provider configuration: the private key does not fit ES256"
    );
    let err = SigningKey::from_pem(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        Algorithm::RS256,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid token provider configuration: the PEM is not a valid RS256 private key"
    );
    // (aws-lc-rs refuses to load it at all; the check of its own catches it
    // on the rust-crypto backend.)
    let short_rsa = include_str!("keys/rsa1024.pem");
    let err = SigningKey::from_pem(short_rsa.as_bytes(), Algorithm::RS256).unwrap_err();
    let err = err.to_string();
    if cfg!(feature = "aws-lc-rs") {
        assert!(err.ends_with("the private key does not fit RS256"), "{err}");
    } else {
        assert!(
            err.ends_with("an RSA key of 1024 bits is too short: at least 2048"),
            "{err}"
        );
    }
    // Debug shows the thumbprint, never private material.
    let key = client_key();
    let debug = format!("{key:?}");
    assert!(debug.contains(key.thumbprint()), "{debug}");
    let pem = include_str!("../src/test_util/keys/ec2.pem");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "{debug}");
    }
    assert!(key.public_jwk().get("d").is_none());
    assert_eq!(key.public_jwk()["kid"], "svc-a-2026");
}

/// A token endpoint that wants DPoP nonces: a proof without `n-1` gets 400
/// `use_dpop_nonce` with `DPoP-Nonce: n-1`; with it, a DPoP token.
fn nonce_demanding_endpoint(token: String, token_type: &'static str) -> Reply {
    Reply::computed(move |req: &Recorded| {
        let proof = req.header("dpop").unwrap_or_default();
        let claims: Value = proof
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if claims["nonce"] != "n-1" {
            let mut headers = HeaderMap::new();
            headers.insert("dpop-nonce", "n-1".parse().unwrap());
            return Reply::Headers(
                StatusCode::BAD_REQUEST,
                headers,
                json!({"error": "use_dpop_nonce", "error_description": "nonce required"})
                    .to_string(),
            );
        }
        token_reply(&token, token_type)
    })
}

#[tokio::test]
async fn dpop_tokens_are_requested_with_a_proof_and_the_endpoints_nonce() {
    let server = ScriptServer::start().await;
    server.set("/token", nonce_demanding_endpoint("bound-1".into(), "DPoP"));
    let dpop = SigningKey::generate().unwrap();
    let token_url = server.url("/token");
    let provider = TokenProvider::builder("svc-a", client_key())
        .token_url(format!("{token_url}?tenant=acme"))
        .dpop(dpop.clone())
        .build()
        .await
        .unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(token.secret(), "bound-1");
    assert_eq!(token.token_type(), "DPoP");
    // The nonce answer is the protocol, not a failure: one retry at once.
    assert_eq!(provider.requests_sent(), 2);
    let calls = server.requests("/token");
    let mut jtis = HashSet::new();
    for (i, call) in calls.iter().enumerate() {
        let proof = call
            .header("dpop")
            .expect("a proof with every token request");
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(proof.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["typ"], "dpop+jwt");
        assert!(header["jwk"].get("d").is_none(), "only the public key");
        let (_, claims) = open_jws(&proof, &header["jwk"]);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], token_url.as_str(), "no query in htu");
        assert!(claims.get("ath").is_none(), "no access token yet");
        assert_eq!(
            claims["nonce"],
            if i == 0 { Value::Null } else { "n-1".into() }
        );
        assert!(jtis.insert(claims["jti"].to_string()));
        // The key the token is bound to is the one configured.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        assert_eq!(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
            dpop.thumbprint()
        );
    }
    // The next token request carries the nonce from the start.
    provider.invalidate(&token);
    provider.token().await.unwrap();
    assert_eq!(provider.requests_sent(), 3);

    // A manual proof for calls made without the layer.
    let proof = provider
        .dpop_proof(
            &reqwest::Method::GET,
            "https://user:pw@api.example.test/v1/orders?page=2",
            &token,
            Some("rs-nonce"),
        )
        .unwrap();
    let (_, claims) = open_jws(&proof, &dpop.public_jwk());
    assert_eq!(
        claims["htu"], "https://api.example.test/v1/orders",
        "no query, no userinfo"
    );
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["nonce"], "rs-nonce");
    let ath = URL_SAFE_NO_PAD.encode(sha256(b"bound-1"));
    assert_eq!(claims["ath"], ath);
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_request_is_refused() {
    let server = ScriptServer::start().await;
    server.set(
        "/token",
        nonce_demanding_endpoint("unbound".into(), "Bearer"),
    );
    let provider = dpop_client(&server).max_retries(0).build().await.unwrap();
    let err = provider.token().await.unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidResponse(m) if m.contains("not DPoP")),
        "{err}"
    );
    // Without a DPoP key, no proof is sent and no manual proof can be made.
    let server = ScriptServer::start().await;
    server.set(
        "/token",
        Reply::computed(|_| token_reply("plain", "Bearer")),
    );
    let provider = TokenProvider::builder("svc-a", client_key())
        .token_url(server.url("/token"))
        .build()
        .await
        .unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(server.requests("/token")[0].header("dpop"), None);
    assert!(
        provider
            .dpop_proof(
                &reqwest::Method::GET,
                "https://api.example.test/",
                &token,
                None
            )
            .is_err()
    );
}

/// An API behind m2m-guard requiring DPoP with server nonces, a token
/// endpoint handing out a token bound to `dpop`, and a client through
/// `BearerTokenLayer`.
struct Setup {
    _issuer: TestIssuer,
    api: support::Served,
    hits: Arc<Mutex<Vec<String>>>,
    tokens: ScriptServer,
    provider: TokenProvider,
}

async fn setup(dpop: &SigningKey) -> Setup {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = hits.clone();
    let app = Router::new()
        .route(
            "/orders",
            get(|p: Principal| async move { format!("jkt={}", p.dpop_jkt().unwrap_or("-")) }),
        )
        .layer(
            M2mAuthLayer::new(verifier).dpop(
                Dpop::new(format!("http://{addr}"))
                    .required()
                    .require_nonces(Duration::from_secs(60)),
            ),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push(auth);
                    next.run(req).await
                }
            },
        ));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let token = issuer
        .token()
        .claim("cnf", json!({"jkt": dpop.thumbprint()}))
        .sign();
    let tokens = ScriptServer::start().await;
    tokens.set(
        "/token",
        Reply::computed(move |_| token_reply(&token, "DPoP")),
    );
    let provider = TokenProvider::builder("svc-a", client_key())
        .token_url(tokens.url("/token"))
        .dpop(dpop.clone())
        .build()
        .await
        .unwrap();
    Setup {
        _issuer: issuer,
        api: support::Served { addr },
        hits,
        tokens,
        provider,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_sends_a_fresh_proof_per_request_and_answers_the_apis_nonce() {
    let dpop = SigningKey::generate().unwrap();
    let s = setup(&dpop).await;
    let mut client = ServiceBuilder::new()
        .layer(
            BearerTokenLayer::new(s.provider.clone())
                .allow_origin(&s.api.url(""))
                .unwrap(),
        )
        .service(reqwest::Client::new());
    let get = |url: String| reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());

    // First call: no nonce yet, 401 use_dpop_nonce, one retry with it.
    let resp = client
        .ready()
        .await
        .unwrap()
        .call(get(s.api.url("/orders?page=1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        format!("jkt={}", dpop.thumbprint())
    );
    assert_eq!(*s.hits.lock().unwrap(), ["DPoP", "DPoP"]);
    // Later calls carry the nonce from the start, each with its own proof
    // (a repeated proof would be refused as a replay).
    for _ in 0..3 {
        let resp = client
            .ready()
            .await
            .unwrap()
            .call(get(s.api.url("/orders")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(s.hits.lock().unwrap().len(), 5);
    // One token for all of it: the nonce retry is no token refresh.
    assert_eq!(s.tokens.hits("/token"), 1);

    // By hand with TokenProvider::dpop_proof: without the nonce, 401
    // use_dpop_nonce; with it, 200; the same proof again is a replay.
    let token = s.provider.token().await.unwrap();
    let send = |proof: String| {
        reqwest::Client::new()
            .get(s.api.url("/orders"))
            .header("authorization", format!("DPoP {}", token.secret()))
            .header("dpop", proof)
            .send()
    };
    let url = s.api.url("/orders");
    let first = send(
        s.provider
            .dpop_proof(&reqwest::Method::GET, &url, &token, None)
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(first.status(), 401);
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = s
        .provider
        .dpop_proof(&reqwest::Method::GET, &url, &token, Some(&nonce))
        .unwrap();
    assert_eq!(send(proof.clone()).await.unwrap().status(), 200);
    let again = send(proof).await.unwrap();
    assert_eq!(again.status(), 401);
    let challenge = again.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_dpop_proof"), "{challenge}");
}

/// The claims of the DPoP proof a recorded request carried.
fn proof_claims(req: &Recorded) -> Value {
    let proof = req.header("dpop").expect("a DPoP proof");
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(proof.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// An API answering every request with `status`, this `WWW-Authenticate`
/// and a new `DPoP-Nonce` (`n-1`, `n-2`, ...).
fn api_answering(status: u16, challenge: &'static str) -> Reply {
    let count = Mutex::new(0);
    Reply::computed(move |_| {
        let mut n = count.lock().unwrap();
        *n += 1;
        let mut headers = HeaderMap::new();
        headers.insert("dpop-nonce", format!("n-{n}").parse().unwrap());
        if !challenge.is_empty() {
            headers.insert("www-authenticate", challenge.parse().unwrap());
        }
        Reply::Headers(
            StatusCode::from_u16(status).unwrap(),
            headers,
            String::new(),
        )
    })
}

async fn dpop_provider(tokens: &ScriptServer) -> TokenProvider {
    let issued = Mutex::new(0);
    tokens.set(
        "/token",
        Reply::computed(move |_| {
            let mut n = issued.lock().unwrap();
            *n += 1;
            token_reply(&format!("bound-{n}"), "DPoP")
        }),
    );
    dpop_client(tokens).build().await.unwrap()
}

async fn get_through(
    layer: &BearerTokenLayer,
    client: reqwest::Client,
    url: String,
) -> reqwest::Response {
    let mut svc = ServiceBuilder::new().layer(layer.clone()).service(client);
    let req = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
    svc.ready().await.unwrap().call(req).await.unwrap()
}

#[tokio::test]
async fn a_hostile_api_cannot_make_the_client_loop_or_refresh() {
    let tokens = ScriptServer::start().await;
    let provider = dpop_provider(&tokens).await;
    let api = ScriptServer::start().await;
    // A new nonce demanded every time, quoted or not, among other
    // challenges: one retry with the nonce of the answer, then the API's
    // 401 as it is; no token refresh.
    api.set(
        "/quoted",
        api_answering(401, r#"DPoP error="use_dpop_nonce", algs="ES256""#),
    );
    api.set(
        "/bare",
        api_answering(
            401,
            r#"Bearer realm="x, y", error_description="a, b", DPoP algs="ES256", error=use_dpop_nonce"#,
        ),
    );
    let layer = BearerTokenLayer::new(provider.clone())
        .allow_origin(&api.url(""))
        .unwrap();
    for path in ["/quoted", "/bare"] {
        let resp = get_through(&layer, reqwest::Client::new(), api.url(path)).await;
        assert_eq!(resp.status(), 401, "{path}");
        let seen = api.requests(path);
        assert_eq!(seen.len(), 2, "{path}: the request and one nonce retry");
        let (first, retry) = (proof_claims(&seen[0]), proof_claims(&seen[1]));
        assert_ne!(first["jti"], retry["jti"], "a fresh proof for the retry");
        assert_eq!(retry["nonce"], "n-1", "{path}: the nonce the 401 gave");
    }
    // A Bearer challenge's error is not the DPoP one.
    api.set(
        "/bearer-only",
        api_answering(401, r#"Bearer error="use_dpop_nonce""#),
    );
    get_through(&layer, reqwest::Client::new(), api.url("/bearer-only")).await;
    assert_eq!(
        proof_claims(&api.requests("/bearer-only")[1])["ath"],
        URL_SAFE_NO_PAD.encode(sha256(b"bound-2")),
        "not a nonce retry: the token refresh, with the new token"
    );
    assert_eq!(tokens.hits("/token"), 2);
    // A refused proof is no reason for a new token.
    api.set(
        "/proof",
        api_answering(401, r#"DPoP error="invalid_dpop_proof""#),
    );
    let resp = get_through(&layer, reqwest::Client::new(), api.url("/proof")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(api.requests("/proof").len(), 1);
    assert_eq!(tokens.hits("/token"), 2, "no token refresh for it");
}

#[tokio::test]
async fn the_token_endpoint_nonce_is_retried_once() {
    let tokens = ScriptServer::start().await;
    let count = Mutex::new(0);
    tokens.set(
        "/token",
        Reply::computed(move |_| {
            let mut n = count.lock().unwrap();
            *n += 1;
            let mut headers = HeaderMap::new();
            headers.insert("dpop-nonce", format!("t-{n}").parse().unwrap());
            Reply::Headers(
                StatusCode::BAD_REQUEST,
                headers,
                json!({"error": "use_dpop_nonce"}).to_string(),
            )
        }),
    );
    let provider = dpop_client(&tokens).max_retries(3).build().await.unwrap();
    let err = provider.token().await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::OAuth {
                code: m2m_guard::client::OAuthErrorCode::UseDpopNonce,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        tokens.hits("/token"),
        2,
        "one retry with the nonce, no more"
    );
}

#[tokio::test]
async fn nonces_stay_with_their_origin_and_redirects_do_not_carry_them() {
    let tokens = ScriptServer::start().await;
    let provider = dpop_provider(&tokens).await;
    let (a, b) = (ScriptServer::start().await, ScriptServer::start().await);
    a.set("/api", api_answering(200, ""));
    b.set("/api", api_answering(200, ""));
    let layer = BearerTokenLayer::new(provider)
        .allow_origin(&a.url(""))
        .unwrap()
        .allow_origin(&b.url(""))
        .unwrap();
    get_through(&layer, reqwest::Client::new(), a.url("/api")).await;
    get_through(&layer, reqwest::Client::new(), b.url("/api")).await;
    get_through(&layer, reqwest::Client::new(), a.url("/api")).await;
    let (on_a, on_b) = (a.requests("/api"), b.requests("/api"));
    assert_eq!(
        proof_claims(&on_b[0])["nonce"],
        Value::Null,
        "A's nonce never goes to B"
    );
    assert_eq!(
        proof_claims(&on_a[1])["nonce"],
        "n-1",
        "A's own nonce goes back to A"
    );

    // A nonce that is not 1*NQCHAR, or too long, is ignored.
    let c = ScriptServer::start().await;
    for (path, nonce) in [
        ("/spaces", "bad nonce".to_owned()),
        ("/long", "x".repeat(600)),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("dpop-nonce", nonce.parse().unwrap());
        c.set(path, Reply::Headers(StatusCode::OK, headers, String::new()));
    }
    let layer = layer.allow_origin(&c.url("")).unwrap();
    for path in ["/spaces", "/long", "/spaces"] {
        get_through(&layer, reqwest::Client::new(), c.url(path)).await;
    }
    assert_eq!(
        proof_claims(&c.requests("/spaces")[1])["nonce"],
        Value::Null
    );

    // A redirect to another server: its nonce and its 401 are not A's.
    let other = ScriptServer::start().await;
    other.set(
        "/trap",
        api_answering(401, r#"DPoP error="use_dpop_nonce""#),
    );
    a.set("/moved", Reply::Redirect(other.url("/trap")));
    let resp = get_through(&layer, reqwest::Client::new(), a.url("/moved")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        other.requests("/trap").len(),
        1,
        "no retry prompted by another origin"
    );
    get_through(&layer, reqwest::Client::new(), a.url("/api")).await;
    let last = a.requests("/api").pop().unwrap();
    assert_eq!(
        proof_claims(&last)["nonce"],
        "n-2",
        "A's nonce, never the other server's"
    );
}
