//! DPoP (RFC 9449) on the resource server: bound tokens work only with a
//! fresh proof for the very request, signed by the bound key; every rule of
//! §4.3 refused with its own description; bearer-only, DPoP-allowed and
//! DPoP-required layers; the challenges of §7.1.

mod support;

use axum::Router;
use axum::routing::get;
use m2m_guard::test_util::{DpopKey, TestIssuer};
use m2m_guard::{Dpop, M2mAuthLayer, MemoryReplayStore, Principal, Verifier};
use serde_json::json;
use std::time::Duration;

/// Echoes the verified binding and whether the proof header reached the handler.
fn routes() -> Router {
    let who = |p: Principal, headers: axum::http::HeaderMap| async move {
        format!(
            "jkt={} proof_seen={}",
            p.dpop_jkt().unwrap_or("-"),
            headers.contains_key("dpop")
        )
    };
    Router::new()
        .route("/orders", get(who).post(who))
        .route("/orders/{id}", get(who))
        .merge(
            Router::new()
                .route("/admin", get(who))
                .route_layer(m2m_guard::RequireScope::all(["admin"])),
        )
}

struct Api {
    issuer: TestIssuer,
    verifier: Verifier,
    server: support::Served,
}

async fn api(configure: impl FnOnce(Dpop) -> Option<Dpop>) -> Api {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    // The origin is only known once listening: bind first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut layer = M2mAuthLayer::new(verifier.clone());
    if let Some(d) = configure(Dpop::new(format!("http://{addr}"))) {
        layer = layer.dpop(d);
    }
    let app = routes().layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Api {
        issuer,
        verifier,
        server: support::Served { addr },
    }
}

struct Answer {
    status: u16,
    challenges: Vec<String>,
    body: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<String>,
        proofs: &[String],
    ) -> Answer {
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), self.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        for p in proofs {
            req = req.header("dpop", p);
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status().as_u16(),
            challenges: resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect(),
            body: resp.text().await.unwrap(),
        }
    }

    /// `GET /orders` with `Authorization: DPoP <token>` and `proof`.
    async fn dpop_get(&self, token: &str, proof: String) -> Answer {
        self.send("GET", "/orders", Some(format!("DPoP {token}")), &[proof])
            .await
    }
}

fn refused(a: &Answer, error: &str, description: &str) {
    assert_eq!(a.status, 401, "{description}: {}", a.body);
    let c = &a.challenges[0];
    assert!(c.starts_with("DPoP "), "{c}");
    assert!(c.contains(&format!("error=\"{error}\"")), "{c}");
    assert!(c.contains(description), "expected {description:?} in {c}");
    assert!(c.contains("algs=\""), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_with_a_fresh_proof_is_accepted_and_the_proof_stays_out() {
    let a = api(Some).await;
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    // Several requests, each with its own proof: the token's verdict is
    // cached, the proofs are checked every time.
    for _ in 0..3 {
        let proof = key.proof("GET", &a.url("/orders")).for_token(&token).sign();
        let ans = a.dpop_get(&token, proof).await;
        assert_eq!(ans.status, 200, "{:?}", ans.challenges);
        assert_eq!(ans.body, format!("jkt={} proof_seen=false", key.jkt()));
    }
    assert_eq!(a.verifier.cached_tokens(), 1);
    // The scheme name is case-insensitive; htu's scheme and host too.
    let proof = key
        .proof(
            "POST",
            &a.url("/orders")
                .to_uppercase()
                .replace("/ORDERS", "/orders"),
        )
        .for_token(&token)
        .sign();
    let ans = a
        .send(
            "POST",
            "/orders?page=2",
            Some(format!("dpop {token}")),
            &[proof],
        )
        .await;
    assert_eq!(ans.status, 200, "{:?}", ans.challenges);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proof_rule_is_checked_with_its_own_answer() {
    let a = api(Some).await;
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    let url = a.url("/orders");
    let proof = || key.proof("GET", &url).for_token(&token);
    // The bound key's JWK with one member more.
    let jwk_with = |member: &str, value: &str| {
        let mut j = key.jwk();
        j[member] = json!(value);
        j
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "for another HTTP method",
            key.proof("POST", &url).for_token(&token).sign(),
        ),
        (
            "for another URL",
            key.proof("GET", &a.url("/orders/1"))
                .for_token(&token)
                .sign(),
        ),
        (
            "for another URL",
            key.proof("GET", &url.replace("127.0.0.1", "localhost"))
                .for_token(&token)
                .sign(),
        ),
        (
            "not the one the token is bound to",
            DpopKey::other().proof("GET", &url).for_token(&token).sign(),
        ),
        (
            "not for this access token",
            proof().claim("ath", "x").sign(),
        ),
        ("not for this access token", key.proof("GET", &url).sign()),
        (
            "expired",
            proof().issued_ago(Duration::from_secs(120)).sign(),
        ),
        (
            "issued in the future",
            proof().issued_in(Duration::from_secs(60)).sign(),
        ),
        ("typ is not dpop+jwt", proof().header("typ", "JWT").sign()),
        (
            "typ is not dpop+jwt",
            proof().header("typ", "at+jwt").sign(),
        ),
        (
            "algorithm is not accepted",
            proof().header("alg", "HS256").sign(),
        ),
        (
            "algorithm is not accepted",
            proof().header("alg", "none").sign(),
        ),
        (
            "key is not usable with its algorithm",
            proof().header("alg", "RS256").sign(),
        ),
        ("no public key", proof().without_jwk().sign()),
        // The same key (the thumbprint leaves `alg` out), for another
        // algorithm.
        (
            "key is not usable with its algorithm",
            proof().header("jwk", jwk_with("alg", "ES384")).sign(),
        ),
        (
            "not a public key",
            proof()
                .header(
                    "jwk",
                    jwk_with("d", "jV6HhPh5Bl70Po2fUTQLDv2LPr2CHfOvnh7926DTYJs"),
                )
                .sign(),
        ),
        (
            "unsupported critical",
            proof().header("crit", json!(["x"])).sign(),
        ),
        ("no valid jti", proof().without_claim("jti").sign()),
        ("no valid jti", proof().claim("jti", 7).sign()),
        ("no valid jti", proof().claim("jti", "").sign()),
        ("no valid jti", proof().claim("jti", "j".repeat(257)).sign()),
        ("no htu", proof().without_claim("htu").sign()),
        ("no iat", proof().without_claim("iat").sign()),
        ("malformed", "a.b".into()),
        ("malformed", "not-base64!.x.y".into()),
    ];
    for (description, p) in cases {
        let ans = a.dpop_get(&token, p).await;
        refused(&ans, "invalid_dpop_proof", description);
    }
    // A tampered signature (a character inside it: the last one also
    // carries padding bits, which the strict decoder refuses as malformed).
    let p = proof().sign();
    let at = p.rfind('.').unwrap() + 5;
    let flipped = if &p[at..=at] == "A" { "B" } else { "A" };
    let p = format!("{}{flipped}{}", &p[..at], &p[at + 1..]);
    refused(
        &a.dpop_get(&token, p).await,
        "invalid_dpop_proof",
        "signature is invalid",
    );
    // No proof, or two.
    let ans = a
        .send("GET", "/orders", Some(format!("DPoP {token}")), &[])
        .await;
    refused(&ans, "invalid_dpop_proof", "exactly one DPoP proof header");
    let two = [proof().sign(), proof().sign()];
    let ans = a
        .send("GET", "/orders", Some(format!("DPoP {token}")), &two)
        .await;
    refused(&ans, "invalid_dpop_proof", "exactly one DPoP proof header");
    // After all these refusals, a good proof still works, with a `jti` up
    // to 256 characters.
    assert_eq!(a.dpop_get(&token, proof().sign()).await.status, 200);
    let longest = proof().claim("jti", "j".repeat(256)).sign();
    assert_eq!(a.dpop_get(&token, longest).await.status, 200);
    // A key naming the proof's own algorithm is fine.
    let named = proof().header("jwk", jwk_with("alg", "ES256")).sign();
    assert_eq!(a.dpop_get(&token, named).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proof_is_refused() {
    let a = api(Some).await;
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    let proof = key.proof("GET", &a.url("/orders")).for_token(&token).sign();
    assert_eq!(a.dpop_get(&token, proof.clone()).await.status, 200);
    refused(
        &a.dpop_get(&token, proof).await,
        "invalid_dpop_proof",
        "used before",
    );
    // The same jti from another key is that key's own: not a replay of ours.
    let other = DpopKey::other();
    let other_token = a.issuer.token().dpop_bound(&other).sign();
    let mine = key
        .proof("GET", &a.url("/orders"))
        .for_token(&token)
        .claim("jti", "shared")
        .sign();
    let theirs = other
        .proof("GET", &a.url("/orders"))
        .for_token(&other_token)
        .claim("jti", "shared")
        .sign();
    assert_eq!(a.dpop_get(&token, mine).await.status, 200);
    assert_eq!(a.dpop_get(&other_token, theirs).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_need_dpop_and_dpop_needs_bound_tokens() {
    let key = DpopKey::new();
    for dpop_on in [false, true] {
        let a = api(|d| dpop_on.then_some(d)).await;
        let bound = a.issuer.token().dpop_bound(&key).sign();
        // A bound token as Bearer: its binding cannot be checked.
        let ans = a
            .send("GET", "/orders", Some(format!("Bearer {bound}")), &[])
            .await;
        assert_eq!(ans.status, 401, "dpop_on={dpop_on}");
        assert!(
            ans.challenges[0].contains("bound to a key"),
            "{:?}",
            ans.challenges
        );
        // Again: the token is cached from its second sighting on (with DPoP
        // on, its verdict is cached), and the cached path refuses it too.
        if dpop_on {
            let proof = key.proof("GET", &a.url("/orders")).for_token(&bound).sign();
            assert_eq!(a.dpop_get(&bound, proof).await.status, 200);
        }
        for _ in 0..3 {
            let again = a
                .send("GET", "/orders", Some(format!("Bearer {bound}")), &[])
                .await;
            assert_eq!(again.status, 401);
            assert!(
                again.challenges[0].contains("bound to a key"),
                "{:?}",
                again.challenges
            );
        }
        assert!(a.verifier.cached_tokens() >= 1, "the cached path was taken");
        // An mTLS-bound token as Bearer: the same.
        let mtls = a
            .issuer
            .token()
            .claim(
                "cnf",
                json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
            )
            .sign();
        let ans = a
            .send("GET", "/orders", Some(format!("Bearer {mtls}")), &[])
            .await;
        assert_eq!(ans.status, 401);
        assert!(
            ans.challenges[0].contains("bound to a key"),
            "{:?}",
            ans.challenges
        );
        // Unbound tokens as Bearer keep working; with DPoP on, a stray DPoP
        // header never reaches the handler.
        let plain = a.issuer.token().sign();
        let ans = a
            .send(
                "GET",
                "/orders",
                Some(format!("Bearer {plain}")),
                &["x.y.z".into()],
            )
            .await;
        assert_eq!(ans.status, 200);
        assert_eq!(
            ans.body.ends_with("proof_seen=false"),
            dpop_on,
            "{}",
            ans.body
        );
        // A malformed binding is never read as "unbound".
        let bad = a.issuer.token().claim("cnf", "jkt").sign();
        let ans = a
            .send("GET", "/orders", Some(format!("Bearer {bad}")), &[])
            .await;
        assert_eq!(ans.status, 401);
        assert!(
            ans.challenges[0].contains("invalid claim"),
            "{:?}",
            ans.challenges
        );
        let proof = key.proof("GET", &a.url("/orders")).for_token(&plain).sign();
        let ans = a.dpop_get(&plain, proof).await;
        assert_eq!(ans.status, 401, "dpop_on={dpop_on}");
        if dpop_on {
            // An unbound token as DPoP: there is no key to hold it to.
            assert!(
                ans.challenges[0].starts_with("DPoP "),
                "{:?}",
                ans.challenges
            );
            assert!(
                ans.challenges[0].contains("not bound to a DPoP key"),
                "{:?}",
                ans.challenges
            );
        } else {
            // Bearer only: a DPoP header is no bearer token at all.
            assert_eq!(ans.challenges, [r#"Bearer realm="api""#]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_offer_dpop_beside_bearer_or_alone_when_required() {
    let allowed = api(Some).await;
    let ans = allowed.send("GET", "/orders", None, &[]).await;
    assert_eq!(ans.status, 401);
    assert_eq!(ans.challenges.len(), 2, "{:?}", ans.challenges);
    assert_eq!(ans.challenges[0], r#"Bearer realm="api""#);
    assert!(
        ans.challenges[1].starts_with(r#"DPoP realm="api", algs="ES256 ES384 PS256"#),
        "{:?}",
        ans.challenges
    );

    let required = api(|d| Some(d.required().algorithms([m2m_guard::Algorithm::ES256]))).await;
    let ans = required.send("GET", "/orders", None, &[]).await;
    assert_eq!(ans.challenges, [r#"DPoP realm="api", algs="ES256""#]);
    // An unbound Bearer token: refused, told to use DPoP.
    let plain = required.issuer.token().sign();
    let ans = required
        .send("GET", "/orders", Some(format!("Bearer {plain}")), &[])
        .await;
    assert_eq!(ans.status, 401);
    assert!(
        ans.challenges[0].starts_with("DPoP "),
        "{:?}",
        ans.challenges
    );
    assert!(
        ans.challenges[0].contains("unbound") || ans.challenges[0].contains("not bound"),
        "{:?}",
        ans.challenges
    );
    // The bound token with its proof works.
    let key = DpopKey::new();
    let bound = required.issuer.token().dpop_bound(&key).sign();
    let proof = key
        .proof("GET", &required.url("/orders"))
        .for_token(&bound)
        .sign();
    assert_eq!(required.dpop_get(&bound, proof).await.status, 200);
}

/// The scheme a request names picks its challenge and its rules, read as
/// the token is read: a Bearer request's stray proof header never reaches
/// the handler, its refusal leads with Bearer, and a DPoP request without a
/// token is answered in DPoP's terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheme_a_request_names_picks_its_challenge_and_its_rules() {
    let a = api(Some).await;
    let plain = a.issuer.token().sign();
    let ans = a
        .send(
            "GET",
            "/orders",
            Some(format!("Bearer {plain}")),
            &["stray".to_owned()],
        )
        .await;
    assert_eq!(
        (ans.status, ans.body.as_str()),
        (200, "jkt=- proof_seen=false")
    );
    let ans = a
        .send("GET", "/orders", Some("Bearer not-a-token".into()), &[])
        .await;
    assert_eq!(ans.status, 401);
    assert!(
        ans.challenges[0].starts_with("Bearer "),
        "{:?}",
        ans.challenges
    );
    for auth in ["DPoP", "dpop"] {
        let ans = a.send("GET", "/orders", Some(auth.into()), &[]).await;
        assert_eq!(ans.status, 400, "{auth:?}: {}", ans.body);
        // Named by its scheme, not as a bearer token.
        assert!(
            ans.body.contains("malformed DPoP token"),
            "{auth:?}: {}",
            ans.body
        );
        assert!(
            ans.challenges[0].starts_with("DPoP "),
            "{auth:?}: {:?}",
            ans.challenges
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_store_answers_503_not_a_pass() {
    let a = api(|d| Some(d.replay_store(MemoryReplayStore::new(16)))).await;
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let proof = key.proof("GET", &a.url("/orders")).for_token(&token).sign();
        statuses.push(a.dpop_get(&token, proof).await.status);
    }
    // 16 proofs fit (one per shard at most, by the key's first byte), then 503s.
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 16,
        "{statuses:?}"
    );
}

/// A replay store that remembers what it was asked to keep, and for how long.
#[derive(Clone, Default)]
struct Recording(std::sync::Arc<std::sync::Mutex<Vec<Asked>>>);

/// A replay key and the time it must be kept.
type Asked = ([u8; 32], Duration);

impl m2m_guard::ReplayStore for Recording {
    fn check_and_insert(
        &self,
        key: [u8; 32],
        ttl: Duration,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<bool, m2m_guard::ReplayStoreError>> + Send + '_>,
    > {
        let mut seen = self.0.lock().unwrap();
        let new = !seen.iter().any(|(k, _)| *k == key);
        seen.push((key, ttl));
        Box::pin(std::future::ready(Ok(new)))
    }
}

/// A proof is remembered for as long as it could be accepted: from the
/// latest `iat` allowed (now + the clock skew) to the end of its lifetime,
/// and the clock is read in whole seconds, so an `iat` is accepted until
/// the second `iat + lifetime` ends: the lifetime, the skew and one second.
/// One key per key and `jti`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_remembered_for_as_long_as_it_can_be_accepted() {
    let store = Recording::default();
    let seen = store.clone();
    let a = api(|d| {
        Some(
            d.proof_lifetime(Duration::from_secs(90))
                .clock_skew(Duration::from_secs(7))
                .replay_store(store),
        )
    })
    .await;
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    let proof = |jti: &str| {
        key.proof("GET", &a.url("/orders"))
            .for_token(&token)
            .claim("jti", jti)
            .sign()
    };
    assert_eq!(a.dpop_get(&token, proof("one")).await.status, 200);
    assert_eq!(a.dpop_get(&token, proof("two")).await.status, 200);
    // The same jti in a new proof (a new iat, a new signature) is a replay.
    refused(
        &a.dpop_get(&token, proof("one")).await,
        "invalid_dpop_proof",
        "used before",
    );
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, ttl)| *ttl == Duration::from_secs(98)));
    assert_ne!(seen[0].0, seen[1].0);
    assert_eq!(seen[0].0, seen[2].0);
}

#[test]
fn a_dpop_config_can_be_cloned_then_changed() {
    let base = Dpop::new("https://api.example.test");
    let strict = base.clone().required();
    assert!(format!("{strict:?}").contains("required: true"));
    assert!(format!("{base:?}").contains("required: false"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_nonces_are_asked_for_given_and_checked() {
    let secret = [7u8; 32];
    let a = api(|d| {
        Some(
            d.require_nonces(Duration::from_secs(60))
                .nonce_secret(secret),
        )
    })
    .await;
    let clock = a.issuer.clock();
    let key = DpopKey::new();
    let token = a.issuer.token().dpop_bound(&key).sign();
    let url = a.url("/orders");
    let send = |token: &str, proof: String| {
        let (token, url) = (token.to_owned(), url.clone());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .send()
                .await
                .unwrap()
        }
    };
    // A proof carrying `nonce`, for `token`.
    let with_nonce = |token: &str, nonce: &str| {
        let proof = key
            .proof("GET", &url)
            .for_token(token)
            .on_clock(clock)
            .claim("nonce", nonce)
            .sign();
        send(token, proof)
    };
    // No nonce: 401 use_dpop_nonce, and one to use.
    let first = send(
        &token,
        key.proof("GET", &url)
            .for_token(&token)
            .on_clock(clock)
            .sign(),
    )
    .await;
    assert_eq!(first.status(), 401);
    let c = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        c.starts_with("DPoP ") && c.contains(r#"error="use_dpop_nonce""#),
        "{c}"
    );
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    // With it: accepted, and the answer carries the current nonce.
    let ok = with_nonce(&token, &nonce).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["dpop-nonce"].to_str().unwrap(), nonce);
    // Refused for another reason (an expired token): the current nonce too.
    let expired = a.issuer.token().dpop_bound(&key).expired().sign();
    let refused = with_nonce(&expired, &nonce).await;
    assert_eq!(refused.status(), 401);
    assert!(support::challenge(refused.headers()).contains("expired"));
    assert_eq!(refused.headers()["dpop-nonce"].to_str().unwrap(), nonce);
    // Refused before the proof is read (a proof that is no JWT, a token
    // that is none): the current nonce too.
    for (token, proof, status) in [(token.as_str(), "not a proof", 401), ("a b", "x", 400)] {
        let early = send(token, proof.to_owned()).await;
        assert_eq!(early.status(), status);
        assert!(support::challenge(early.headers()).starts_with("DPoP "));
        assert_eq!(early.headers()["dpop-nonce"].to_str().unwrap(), nonce);
    }
    // A made-up nonce, or one of another key: asked again.
    for bad in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        nonce.to_lowercase(),
    ] {
        let r = with_nonce(&token, &bad).await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("dpop-nonce"));
    }
    // Another replica with the same secret accepts it; one with another does not.
    let twin = api(|d| {
        Some(
            d.nonce_secret(secret)
                .require_nonces(Duration::from_secs(60)),
        )
    })
    .await;
    let stranger = api(|d| Some(d.require_nonces(Duration::from_secs(60)))).await;
    for (replica, expected) in [(&twin, 200), (&stranger, 401)] {
        let t = replica.issuer.token().dpop_bound(&key).sign();
        let p = key
            .proof("GET", &replica.url("/orders"))
            .for_token(&t)
            .on_clock(replica.issuer.clock())
            .claim("nonce", nonce.clone())
            .sign();
        assert_eq!(replica.dpop_get(&t, p).await.status, expected);
    }
    // Two periods later the nonce is stale: asked again, with a new one.
    clock.advance(Duration::from_secs(150));
    let token = a.issuer.token().dpop_bound(&key).sign();
    let stale = with_nonce(&token, &nonce).await;
    assert_eq!(stale.status(), 401);
    assert_ne!(stale.headers()["dpop-nonce"].to_str().unwrap(), nonce);
}

/// A guard behind the layer answers with the challenge of the scheme the
/// request used: DPoP's for a DPoP request, Bearer's for a Bearer one (the
/// layer hands each its own context), verdicts cached or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_answers_with_the_challenge_of_the_requests_scheme() {
    let a = api(Some).await;
    let key = DpopKey::new();
    let bound = a.issuer.token().scopes(["read"]).dpop_bound(&key).sign();
    let plain = a.issuer.token().scopes(["read"]).sign();
    for round in 0..3 {
        let proof = key.proof("GET", &a.url("/admin")).for_token(&bound).sign();
        let ans = a
            .send("GET", "/admin", Some(format!("DPoP {bound}")), &[proof])
            .await;
        assert_eq!(ans.status, 403, "round {round}: {}", ans.body);
        assert_eq!(ans.challenges.len(), 1, "{:?}", ans.challenges);
        assert!(
            ans.challenges[0].starts_with(r#"DPoP realm="api", error="insufficient_scope""#)
                && ans.challenges[0].contains(" algs="),
            "round {round}: {:?}",
            ans.challenges
        );
        let ans = a
            .send("GET", "/admin", Some(format!("Bearer {plain}")), &[])
            .await;
        assert_eq!(ans.status, 403, "round {round}: {}", ans.body);
        assert_eq!(
            ans.challenges,
            [
                r#"Bearer realm="api", error="insufficient_scope", error_description="the token lacks a required scope", scope="admin""#
            ],
            "round {round}"
        );
    }
}
