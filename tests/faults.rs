//! Trust under faults: our outage is never the caller's fault, keys come only
//! from the URL we trust, nothing wedges the key cache, and no setting makes
//! the verifier misbehave. Each test here backs a promise in the README.

mod support;

use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{BuildError, FetchError, Issuer, Reason, Verifier};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Reply, ScriptServer};

async fn verifier(issuer: Issuer) -> Verifier {
    Verifier::builder().issuer(issuer).build().await.unwrap()
}

async fn reason(v: &Verifier, token: &str) -> Reason {
    v.verify(token)
        .await
        .expect_err("token must be rejected")
        .reason()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ===== never a 401 for our outage =====

#[tokio::test]
async fn never_a_401_for_our_outage_unknown_kid_while_the_issuer_is_down() {
    let issuer = TestIssuer::start().await;
    let v = verifier(issuer.config()).await;
    let old = issuer.token().sign();
    assert!(v.verify(&old).await.is_ok());
    // The issuer rotates its keys and goes down: a token signed by the new
    // key may be perfectly good, we just cannot fetch it.
    issuer.rotate_keys();
    issuer.set_outage(Outage::Status(500));
    let rotated = issuer.token().sign();
    let e = v.verify(&rotated).await.unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable, "{e:?}");
    assert!(e.is_unavailable());
    assert!(e.retry_after().unwrap() >= Duration::from_secs(1));
    // While fetches back off: still 503, and no fetch per request.
    let fetches = v.key_fetch_count(issuer.issuer()).unwrap();
    for _ in 0..20 {
        assert_eq!(reason(&v, &rotated).await, Reason::KeysUnavailable);
    }
    assert!(
        v.key_fetch_count(issuer.issuer()).unwrap() <= fetches + 1,
        "the backoff holds"
    );
    // Tokens of the keys we still have keep working meanwhile.
    assert!(v.verify(&old).await.is_ok());
    // The issuer comes back: the rotated token is accepted.
    issuer.set_outage(Outage::None);
    eventually("rotated token accepted after recovery", async || {
        v.verify(&rotated).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_fresh_key_set_that_lacks_the_kid_is_a_401() {
    let issuer = TestIssuer::start().await;
    let v = verifier(
        issuer
            .config()
            .unknown_kid_cooldown(Duration::from_secs(60)),
    )
    .await;
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    // Refetched successfully just now: the key really is not published.
    let made_up = issuer.token().kid("made-up").sign();
    assert_eq!(reason(&v, &made_up).await, Reason::UnknownKey);
    assert_eq!(issuer.jwks_fetches(), 2);
    // Within the cooldown, after a successful fetch: still 401, no fetch.
    assert_eq!(
        reason(&v, &issuer.token().kid("other").sign()).await,
        Reason::UnknownKey
    );
    assert_eq!(issuer.jwks_fetches(), 2);
}

// ===== cheap checks before any fetch =====

#[tokio::test]
async fn doomed_tokens_with_unknown_kids_cost_no_fetch_and_no_cooldown() {
    let issuer = TestIssuer::start().await;
    let v = verifier(
        issuer
            .config()
            .unknown_kid_cooldown(Duration::from_secs(3600)),
    )
    .await;
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 1);
    let kid = || issuer.token().kid("rotated-soon");
    let doomed = [
        (kid().expired().sign(), Reason::Expired),
        (kid().not_before_in(3600).sign(), Reason::NotYetValid),
        (
            kid().audience("https://other.example").sign(),
            Reason::InvalidAudience,
        ),
        (kid().typ(Some("JWS")).sign(), Reason::InvalidType),
        (kid().without_claim("exp").sign(), Reason::MissingClaim),
        (
            kid().claim("iat", now_secs() + 3600).sign(),
            Reason::IssuedInFuture,
        ),
    ];
    for (token, expected) in &doomed {
        assert_eq!(reason(&v, token).await, *expected);
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "no fetch for a token that can only fail"
    );
    // The cooldown is untouched: a genuine rotated-key token is accepted at once.
    issuer.rotate_keys();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn claim_rules_that_can_only_reject_run_before_any_key_work() {
    let issuer = TestIssuer::start().await;
    let strict = verifier(
        issuer
            .config()
            .strict_rfc9068(true)
            .allowed_client_ids(["test-client"])
            .unknown_kid_cooldown(Duration::from_secs(3600)),
    )
    .await;
    // RFC 9068 shape: typ at+jwt and a client_id claim.
    let rfc9068 = || {
        issuer
            .token()
            .typ(Some("at+jwt"))
            .claim("client_id", "test-client")
            .claim("sub", "test-client")
    };
    assert!(strict.verify(&rfc9068().sign()).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 1);
    let kid = || rfc9068().kid("rotated-soon");
    let doomed = [
        (
            // Not told "client not allowed" before the signature holds.
            kid().client_id("intruder").sign(),
            Reason::UnknownKey,
            None,
        ),
        (
            kid().claim("client_id", 1).sign(),
            Reason::InvalidClaim,
            Some("client_id"),
        ),
        (
            kid().without_claim("jti").sign(),
            Reason::MissingClaim,
            Some("jti"),
        ),
        (
            kid().claim("sub", json!([])).sign(),
            Reason::InvalidClaim,
            Some("sub"),
        ),
        (
            kid().claim("scope", 7).sign(),
            Reason::InvalidClaim,
            Some("scope"),
        ),
    ];
    for (token, expected, claim) in &doomed {
        let e = strict.verify(token).await.unwrap_err();
        assert_eq!((e.reason(), e.claim_name()), (*expected, *claim));
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "no fetch for a token that can only fail"
    );
    // A known key: the signature first, then the allow-list.
    let intruder = rfc9068().client_id("intruder").sign();
    let (head, _) = intruder.rsplit_once('.').unwrap();
    let good = rfc9068().sign();
    let (_, other_sig) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{other_sig}");
    let reason_of = async |t: &str| strict.verify(t).await.unwrap_err().reason();
    assert_eq!(reason_of(&forged).await, Reason::InvalidSignature);
    assert_eq!(reason_of(&intruder).await, Reason::ClientNotAllowed);
    issuer.rotate_keys();
    assert!(strict.verify(&rfc9068().sign()).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 2, "the cooldown was not used up");
}

/// An unknown-kid refetch whose task is dropped (its runtime shut down)
/// counts as a failed fetch: the cooldown it started must not answer 401
/// "a fresh key set lacks this key" when no key set was fetched.
#[test]
fn a_refetch_lost_with_its_runtime_is_a_failed_fetch_not_a_fresh_key_set() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (issuer, v) = main.block_on(async {
        let issuer = TestIssuer::start().await;
        let v = Verifier::builder()
            .issuer(
                issuer
                    .config()
                    .unknown_kid_cooldown(Duration::from_secs(3600))
                    .fetch_backoff(Duration::from_millis(10), Duration::from_millis(20)),
            )
            .build()
            .await
            .unwrap();
        assert!(v.verify(&issuer.token().sign()).await.is_ok());
        (issuer, v)
    });
    // The issuer rotates; its key-set endpoint hangs. A request on another
    // runtime starts the unknown-kid refetch, then that runtime goes away.
    issuer.rotate_keys();
    issuer.set_outage(Outage::Delay(Duration::from_secs(30)));
    let rotated = main.block_on(async { issuer.token().sign() });
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (v2, t2) = (v.clone(), rotated.clone());
    let pending = other.spawn(async move { v2.verify(&t2).await });
    other.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while issuer.jwks_fetches() < 2 {
            assert!(Instant::now() < deadline, "the refetch started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    drop(pending);
    drop(other); // drops the refetch task, unfinished
    // Recorded as a failed fetch, with why: what a health endpoint shows.
    let health = main.block_on(async { v.health() });
    assert_eq!(
        health.issuers()[0].last_error.as_deref(),
        Some("fetch task was cancelled")
    );
    issuer.set_outage(Outage::None);
    main.block_on(async {
        // Never "unknown key" for a key we never got to fetch.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match v.verify(&rotated).await {
                Ok(_) => break,
                Err(e) => {
                    assert_ne!(
                        e.reason(),
                        Reason::UnknownKey,
                        "a lost fetch is not a fresh key set"
                    );
                    assert_eq!(e.reason(), Reason::KeysUnavailable, "{e:?}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "accepted once the issuer answers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A refetch that never ran (the request was polled outside any tokio
/// runtime, so nothing could run the fetch) proves nothing about the kid:
/// the cooldown it would have started must not answer 401 afterwards.
#[test]
fn a_refetch_that_never_ran_does_not_use_up_the_cooldown() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (issuer, v) = rt.block_on(async {
        let issuer = TestIssuer::start().await;
        let v = verifier(
            issuer
                .config()
                .unknown_kid_cooldown(Duration::from_secs(3600)),
        )
        .await;
        assert!(v.verify(&issuer.token().sign()).await.is_ok());
        (issuer, v)
    });
    issuer.rotate_keys();
    let rotated = issuer.token().sign();
    // Outside any runtime: no fetch can be started, so our outage, a 503.
    let outside = futures_util::FutureExt::now_or_never(v.verify(&rotated))
        .expect("answers at once without a runtime");
    assert_eq!(outside.unwrap_err().reason(), Reason::KeysUnavailable);
    assert_eq!(issuer.jwks_fetches(), 1, "nothing was fetched");
    // Back on the runtime: the rotated key is fetched and the token accepted.
    rt.block_on(async {
        assert!(
            v.verify(&rotated).await.is_ok(),
            "not a 401 from a cooldown"
        );
        assert_eq!(issuer.jwks_fetches(), 2);
    });
}

/// A token with a new kid that arrives while a routine refresh is in flight
/// joins that fetch; if the fetch was sent before the rotation, its key set
/// lacks the kid, and that proves nothing: the token gets a refetch of its own.
#[tokio::test]
async fn joining_an_older_refresh_is_not_the_refetch_a_new_kid_deserves() {
    let issuer = TestIssuer::start().await;
    let keys = ScriptServer::start().await;
    let old_doc = issuer.jwks_document().to_string();
    keys.json("/jwks", old_doc.clone());
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .jwks_url(keys.url("/jwks"))
                .refresh_bounds(Duration::from_millis(100), Duration::from_secs(3600))
                .refresh_interval(Duration::from_millis(200))
                .unknown_kid_cooldown(Duration::from_secs(3600)),
        )
        .disable_token_cache()
        .build()
        .await
        .unwrap();
    let old = issuer.token().sign();
    assert!(v.verify(&old).await.is_ok());
    // The routine refresh is due; it is sent now and answered (with the
    // key set as it was) only after the rotation below.
    keys.set(
        "/jwks",
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Json(axum::http::StatusCode::OK, old_doc)),
        ),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        v.verify(&old).await.is_ok(),
        "starts the background refresh"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    issuer.rotate_keys();
    keys.json("/jwks", issuer.jwks_document().to_string());
    let rotated = issuer.token().sign();
    let started = Instant::now();
    let verdict = v.verify(&rotated).await;
    assert!(verdict.is_ok(), "{verdict:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it joined the older refresh first"
    );
}

// ===== start-up during an issuer outage =====

#[tokio::test]
async fn starts_while_the_issuer_is_down_then_heals_without_a_restart() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Status(500));
    // Discovery is lazy: build succeeds although the issuer answers 500.
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .fetch_backoff(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .build()
        .await
        .expect("a verifier builds while its issuer is down");
    assert_eq!(v.jwks_url(issuer.issuer()), None);
    let token = issuer.token().sign();
    let e = v.verify(&token).await.unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable);
    assert!(e.retry_after().is_some());
    // The fail-fast path says why.
    match v.preload().await.unwrap_err() {
        BuildError::Unavailable { issuer: i, cause } => {
            assert_eq!(i, issuer.issuer());
            assert!(matches!(*cause, FetchError::Status(500)), "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
    issuer.set_outage(Outage::None);
    eventually("keys load once the issuer is back", async || {
        v.verify(&token).await.is_ok()
    })
    .await;
    assert_eq!(v.jwks_url(issuer.issuer()), Some(issuer.jwks_url()));
}

#[tokio::test]
async fn discovery_runs_again_when_the_key_set_url_stops_working() {
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    let iss = server.url("");
    let meta = |path: &str| json!({"issuer": iss, "jwks_uri": server.url(path)}).to_string();
    server.json("/.well-known/openid-configuration", meta("/keys-a"));
    server.json("/keys-a", issuer.jwks_document().to_string());
    let v = verifier(
        Issuer::new(&iss)
            .preset(m2m_guard::Preset::Kinde)
            .audience(m2m_guard::test_util::DEFAULT_AUDIENCE)
            .refresh_bounds(Duration::from_millis(100), Duration::from_secs(60))
            .refresh_interval(Duration::from_millis(200))
            .fetch_backoff(Duration::from_millis(20), Duration::from_millis(50)),
    )
    .await;
    let token = issuer.token().claim("iss", iss.clone()).sign();
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.jwks_url(&iss), Some(server.url("/keys-a")));
    // The issuer moves its keys.
    server.json("/.well-known/openid-configuration", meta("/keys-b"));
    server.json("/keys-b", issuer.jwks_document().to_string());
    server.set(
        "/keys-a",
        Reply::Json(http::StatusCode::NOT_FOUND, "{}".into()),
    );
    eventually("the new jwks_uri is discovered", async || {
        assert!(v.verify(&token).await.is_ok(), "last good keys meanwhile");
        server.hits("/keys-b") > 0
    })
    .await;
    assert_eq!(v.jwks_url(&iss), Some(server.url("/keys-b")));
}

/// The README's fetch timeout is what a request waits in all: discovery and
/// the key set, each just under the timeout, together over it. The request
/// gets 503 at the deadline, the fetch goes on and lands, and the next
/// request is accepted from it (no second fetch).
#[tokio::test]
async fn a_request_waits_for_key_fetches_one_timeout_in_all() {
    let issuer = TestIssuer::start().await;
    let server = ScriptServer::start().await;
    let iss = server.url("");
    let slow = |body: String| {
        Reply::Delay(
            Duration::from_millis(700),
            Box::new(Reply::Json(http::StatusCode::OK, body)),
        )
    };
    let meta = json!({"issuer": iss, "jwks_uri": server.url("/keys")}).to_string();
    server.set("/.well-known/openid-configuration", slow(meta));
    server.set("/keys", slow(issuer.jwks_document().to_string()));
    let v = Verifier::builder()
        .issuer(
            Issuer::new(&iss)
                .preset(m2m_guard::Preset::Kinde)
                .audience(m2m_guard::test_util::DEFAULT_AUDIENCE),
        )
        .fetch_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let token = issuer.token().claim("iss", iss.clone()).sign();
    let started = Instant::now();
    let e = v.verify(&token).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(e.reason(), Reason::KeysUnavailable, "{e:?}");
    assert!(e.retry_after().is_some());
    assert!(
        (Duration::from_millis(950)..Duration::from_millis(1390)).contains(&waited),
        "one timeout in all, not one per step: {waited:?}"
    );
    eventually("the fetch lands without the request", async || {
        server.hits("/keys") == 1 && v.verify(&token).await.is_ok()
    })
    .await;
    assert_eq!(v.key_fetch_count(&iss), Some(1));
}

/// On a tokio runtime without timers no fetch can run (reqwest's timeouts
/// need them), and the deadline on waiting cannot be set: the request gets
/// 503, never a panic.
#[test]
fn a_runtime_without_timers_gets_503_not_a_panic() {
    let full = tokio::runtime::Runtime::new().unwrap();
    let (issuer, v) = full.block_on(async {
        let issuer = TestIssuer::start().await;
        let v = verifier(issuer.config()).await;
        (issuer, v)
    });
    let token = issuer.token().sign();
    let timerless = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let e = timerless.block_on(v.verify(&token)).unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable, "{e:?}");
    // The same verifier on a runtime with timers: fetched and accepted.
    full.block_on(async {
        eventually("accepted with timers", async || {
            v.verify(&token).await.is_ok()
        })
        .await;
    });
}

// ===== keys only from the configured URL =====

#[tokio::test]
async fn keys_only_from_the_configured_url_a_same_origin_redirect_is_refused() {
    let victim = TestIssuer::start().await;
    let attacker = TestIssuer::start().await;
    assert_ne!(
        victim.jwks_document()["keys"][0]["n"],
        attacker.jwks_document()["keys"][0]["n"],
        "distinct key material"
    );
    let server = ScriptServer::start().await;
    // Whoever controls another path on the issuer's host publishes keys there...
    server.json("/uploads/jwks.json", attacker.jwks_document().to_string());
    // ...and gets the key-set URL to redirect to it.
    server.set("/jwks", Reply::Redirect("/uploads/jwks.json".into()));
    let forged = attacker.token().claim("iss", victim.issuer()).sign();
    for client in [None, Some(reqwest::Client::builder())] {
        let mut b = Verifier::builder().issuer(victim.config().jwks_url(server.url("/jwks")));
        if let Some(c) = client {
            // A caller's client settings cannot turn redirects back on.
            b = b.http_client(c.redirect(reqwest::redirect::Policy::limited(5)));
        }
        let v = b.build().await.unwrap();
        let e = v.verify(&forged).await.unwrap_err();
        assert_eq!(e.reason(), Reason::KeysUnavailable);
        match v.preload().await.unwrap_err() {
            BuildError::Unavailable { cause, .. } => {
                assert!(matches!(*cause, FetchError::Redirect(302)), "{cause:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.hits("/uploads/jwks.json"), 0, "never followed");
}

// ===== nothing wedges the key cache; no setting makes it misbehave =====

#[tokio::test]
async fn absurd_settings_are_refused_with_the_setting_named() {
    let issuer = TestIssuer::start().await;
    let huge = Duration::from_secs(u64::MAX);
    let cases: Vec<(Issuer, &str)> = vec![
        (issuer.config().max_stale(huge), "Issuer::max_stale"),
        (
            issuer.config().refresh_bounds(Duration::ZERO, huge),
            "Issuer::refresh_bounds (min)",
        ),
        (
            issuer.config().refresh_bounds(Duration::from_secs(1), huge),
            "Issuer::refresh_bounds (max)",
        ),
        (
            issuer.config().refresh_interval(huge),
            "Issuer::refresh_interval",
        ),
        // Below the default 1 minute lower bound: refused, not clamped silently.
        (
            issuer.config().refresh_interval(Duration::from_secs(5)),
            "Issuer::refresh_interval",
        ),
        (
            issuer.config().unknown_kid_cooldown(Duration::ZERO),
            "Issuer::unknown_kid_cooldown",
        ),
        (
            issuer
                .config()
                .fetch_backoff(Duration::ZERO, Duration::from_secs(1)),
            "Issuer::fetch_backoff (min)",
        ),
        (
            issuer.config().fetch_backoff(Duration::from_secs(1), huge),
            "Issuer::fetch_backoff (max)",
        ),
        (
            issuer.config().max_token_age(Duration::ZERO),
            "Issuer::max_token_age",
        ),
        (
            issuer.config().max_token_lifetime(huge),
            "Issuer::max_token_lifetime",
        ),
        (
            issuer.config().leeway(Duration::from_secs(301)),
            "Issuer::leeway",
        ),
    ];
    for (cfg, setting) in cases {
        let err = Verifier::builder().issuer(cfg).build().await.unwrap_err();
        match &err {
            BuildError::OutOfRange { setting: s, .. } => assert_eq!(*s, setting),
            other => panic!("{setting}: {other:?}"),
        }
        assert!(err.to_string().contains(setting), "{err}");
    }
    for (b, setting) in [
        (
            Verifier::builder().fetch_timeout(huge),
            "VerifierBuilder::fetch_timeout",
        ),
        (
            Verifier::builder().connect_timeout(Duration::ZERO),
            "VerifierBuilder::connect_timeout",
        ),
        (
            Verifier::builder().token_cache(0, 1 << 20),
            "VerifierBuilder::token_cache (entries)",
        ),
        (
            Verifier::builder().max_token_bytes(usize::MAX),
            "VerifierBuilder::max_token_bytes",
        ),
    ] {
        let err = b.issuer(issuer.config()).build().await.unwrap_err();
        assert!(
            matches!(&err, BuildError::OutOfRange { setting: s, .. } if *s == setting),
            "{setting}: {err:?}"
        );
    }
    // The largest accepted values work end to end (no overflow anywhere).
    let v = verifier(
        issuer
            .config()
            .max_stale(Duration::from_secs(7 * 86_400))
            .refresh_bounds(
                Duration::from_secs(7 * 86_400),
                Duration::from_secs(7 * 86_400),
            )
            .fetch_backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
    )
    .await;
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
}

// ===== the token cache honours every time rule =====

#[tokio::test]
async fn a_cached_token_is_held_to_the_maximum_age() {
    let issuer = TestIssuer::start().await;
    let v = verifier(
        issuer
            .config()
            .leeway(Duration::ZERO)
            .max_token_age(Duration::from_secs(2)),
    )
    .await;
    let token = issuer.token().sign(); // iat = now, exp = now + 1 h
    assert!(v.verify(&token).await.is_ok());
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cached_tokens(), 1, "cached on its second sighting");
    let issued = now_secs();
    while now_secs() < issued + 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason(&v, &token).await, Reason::TooOld);
    // And the entry itself expired with its window (not only refused).
    assert_eq!(v.cached_tokens(), 0, "the entry expired with its window");
}

#[tokio::test]
async fn a_lifetime_cap_requires_iat() {
    let issuer = TestIssuer::start().await;
    let v = verifier(
        issuer
            .config()
            .max_token_lifetime(Duration::from_secs(3600)),
    )
    .await;
    // Issued 10 days ago with a 10-day lifetime, no iat: its lifetime is
    // unknown; measured from now it would look like a few minutes.
    let token = issuer
        .token()
        .without_claim("iat")
        .claim("exp", now_secs() + 120)
        .sign();
    let e = v.verify(&token).await.unwrap_err();
    assert_eq!(e.reason(), Reason::MissingClaim);
    assert_eq!(e.claim_name(), Some("iat"));
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
}

#[tokio::test]
async fn invalid_tokens_do_not_mark_the_cache_admission_filter() {
    let issuer = TestIssuer::start().await;
    let v = verifier(issuer.config()).await;
    let token = issuer.token().sign();
    // A forgery carrying the real token's signature over other claims.
    let (_, sig) = token.rsplit_once('.').unwrap();
    let other = issuer.token().client_id("intruder").sign();
    let (signing_input, _) = other.rsplit_once('.').unwrap();
    let forged = format!("{signing_input}.{sig}");
    assert_eq!(reason(&v, &forged).await, Reason::InvalidSignature);
    assert_eq!(reason(&v, &forged).await, Reason::InvalidSignature);
    // The real token's first sighting is a first sighting: not cached yet.
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cached_tokens(), 0);
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cached_tokens(), 1);
}

// ===== exact time boundaries (RFC 7519 §4.1.4, §4.1.5) =====

/// Wait until early in a second, so a test's "now" cannot tick over.
async fn early_in_a_second() -> u64 {
    loop {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if d.subsec_millis() < 500 {
            return d.as_secs();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn expiry_is_exclusive_and_fractions_never_favour_the_token() {
    let issuer = TestIssuer::start().await;
    let leeway = 60;
    let v = Verifier::builder()
        .issuer(issuer.config().leeway(Duration::from_secs(leeway)))
        .disable_token_cache()
        .build()
        .await
        .unwrap();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    let now = early_in_a_second().await;
    // now == exp + leeway: the current time is not before exp (+ leeway).
    let at_boundary = issuer.token().claim("exp", now - leeway).sign();
    assert_eq!(reason(&v, &at_boundary).await, Reason::Expired);
    let inside = issuer.token().claim("exp", now - leeway + 2).sign();
    assert!(v.verify(&inside).await.is_ok());
    // nbf a fraction of a second beyond the leeway: not yet valid.
    let now = early_in_a_second().await;
    let nbf = now as f64 + leeway as f64 + 0.9;
    let early = issuer.token().claim("nbf", nbf).sign();
    assert_eq!(reason(&v, &early).await, Reason::NotYetValid);
    let iat = issuer.token().claim("iat", nbf).sign();
    assert_eq!(reason(&v, &iat).await, Reason::IssuedInFuture);
    // A fractional exp is rounded down, never up: exp + leeway is half a
    // second after "now" here, and the token is still refused (rounded up,
    // it would pass until the next second).
    let now = early_in_a_second().await;
    let frac = issuer
        .token()
        .claim("exp", (now - leeway) as f64 + 0.5)
        .sign();
    assert_eq!(reason(&v, &frac).await, Reason::Expired);
}

// ===== time under the test's control =====

/// An hour-long outage, past `max_stale` and back, and a token's expiry,
/// on the test issuer's clock: no sleeping (the whole test takes well
/// under a second of real time).
#[tokio::test]
async fn an_outage_past_max_stale_runs_on_the_test_clock_without_sleeping() {
    let started = Instant::now();
    let issuer = TestIssuer::start().await;
    let clock = issuer.clock().clone();
    let v = Verifier::builder()
        .issuer(
            issuer
                .config()
                .refresh_interval(Duration::from_secs(600))
                .max_stale(Duration::from_secs(3600)),
        )
        .clock(&clock)
        .build()
        .await
        .unwrap();
    let token = issuer
        .token()
        .expires_in(Duration::from_secs(4 * 3600))
        .sign();
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(issuer.jwks_fetches(), 1);

    issuer.set_outage(Outage::Status(503));
    clock.advance(Duration::from_secs(601)); // past the TTL
    match v.refresh_now().await.unwrap_err() {
        BuildError::Unavailable { cause, .. } => {
            assert!(matches!(*cause, FetchError::Status(503)), "{cause:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        v.verify(&token).await.is_ok(),
        "stale keys, within max_stale"
    );
    assert!(
        v.verify(&issuer.token().sign()).await.is_ok(),
        "a new token too"
    );

    clock.advance(Duration::from_secs(3600)); // past TTL + max_stale
    let e = v.verify(&token).await.unwrap_err();
    assert_eq!(e.reason(), Reason::KeysUnavailable, "503, never a 401");

    issuer.set_outage(Outage::None);
    clock.advance(Duration::from_secs(60)); // past the backoff
    assert!(v.verify(&token).await.is_ok(), "keys load again");

    clock.advance(Duration::from_secs(4 * 3600)); // the token's own end
    assert_eq!(
        v.verify(&token).await.unwrap_err().reason(),
        Reason::Expired
    );
    assert!(
        v.verify(&issuer.token().sign()).await.is_ok(),
        "tokens minted now are fine"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}: no sleeping",
        started.elapsed()
    );
}

/// `refresh_now` picks up a rotated key at once, ignoring the TTL and the
/// unknown-kid cooldown.
#[tokio::test]
async fn refresh_now_picks_up_rotated_keys_at_once() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    issuer.rotate_keys();
    let fetches = issuer.jwks_fetches();
    v.refresh_now().await.unwrap();
    assert_eq!(issuer.jwks_fetches(), fetches + 1);
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "the new key was already there"
    );
}
