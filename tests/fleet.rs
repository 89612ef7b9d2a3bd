//! The fleet on a real `redis-server` (started here; `.ci/run` installs
//! it): revocations reaching three replicas within a second, on the cache
//! path too; Redis killed and restarted; a replica cut off and back; the
//! shared DPoP replay store; warm starts from a sibling's keys.

mod support;

use m2m_guard::fleet::Fleet;
use m2m_guard::test_util::{Outage, TestClock, TestIssuer};
use m2m_guard::{Reason, Rejection, Revocation, Verifier, WhenStale};
use std::time::{Duration, Instant, SystemTime};
use support::redis_server::{Proxy, RedisServer, redis_available};

/// The warm-start secret the replicas of these tests share.
const SECRET: &[u8] = b"a secret every replica shares, 32+ bytes";

fn prefix() -> String {
    format!("t{:x}", fastrand::u64(..))
}

async fn replica(issuer: &TestIssuer, fleet: &Fleet) -> Verifier {
    Verifier::builder()
        .issuer(issuer.config())
        .fleet(fleet)
        .build()
        .await
        .unwrap()
}

/// Wait until `fleet` has loaded the list.
async fn synced(fleet: &Fleet) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.revocations().synced_at().is_none() {
        assert!(Instant::now() < deadline, "the list loads within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reason(r: Result<m2m_guard::Principal, Rejection>) -> Option<Reason> {
    r.err().map(|e| e.reason())
}

/// How long until `verifier` refuses `token` as revoked (polling).
async fn until_revoked(verifier: &Verifier, token: &str, since: Instant) -> Duration {
    loop {
        if reason(verifier.verify(token).await) == Some(Reason::Revoked) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "revoked within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_three_replicas_within_a_second() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let p = prefix();
    let fleets: Vec<Fleet> = (0..3)
        .map(|_| Fleet::builder(redis.url()).prefix(&p).build().unwrap())
        .collect();
    let mut replicas = Vec::new();
    for f in &fleets {
        synced(f).await;
        replicas.push(replica(&issuer, f).await);
    }
    let old = Duration::from_secs(120);
    let leaked = issuer.token().client_id("svc-a").issued_ago(old).sign();
    let other = issuer.token().client_id("svc-b").issued_ago(old).sign();
    let org_token = issuer
        .token()
        .client_id("svc-c")
        .org("org_gone")
        .issued_ago(old)
        .sign();
    let one = issuer
        .token()
        .client_id("svc-d")
        .claim("jti", "jti-1")
        .issued_ago(old)
        .sign();
    // Twice each: the second sighting is cached.
    for v in &replicas {
        for t in [&leaked, &other, &org_token, &one] {
            v.verify(t).await.unwrap();
            v.verify(t).await.unwrap();
        }
    }
    assert!(replicas[0].cached_tokens() > 0);

    // A secret rotated a minute ago: what was issued before it is dead.
    let rotated = SystemTime::now() - Duration::from_secs(60);
    let started = Instant::now();
    fleets[1]
        .revoke(Revocation::client(issuer.issuer(), "svc-a").issued_before(rotated))
        .await
        .unwrap();
    let mut took = Vec::new();
    for v in &replicas {
        took.push(until_revoked(v, &leaked, started).await);
    }
    let slowest = *took.iter().max().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "every replica within 1 s: {took:?}"
    );
    for v in &replicas {
        v.verify(&other).await.expect("other clients unaffected");
        // Issued after the rotation: accepted.
        let fresh = issuer.token().client_id("svc-a").sign();
        v.verify(&fresh)
            .await
            .expect("a token issued after `before`");
    }

    // By tenant and by jti, likewise.
    let started = Instant::now();
    fleets[0]
        .revoke(Revocation::tenant(issuer.issuer(), "org_gone"))
        .await
        .unwrap();
    fleets[2]
        .revoke(Revocation::jti(issuer.issuer(), "jti-1"))
        .await
        .unwrap();
    for v in &replicas {
        until_revoked(v, &org_token, started).await;
        until_revoked(v, &one, started).await;
        let same_client = issuer
            .token()
            .client_id("svc-d")
            .claim("jti", "jti-2")
            .issued_ago(old)
            .sign();
        v.verify(&same_client).await.expect("another jti");
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    // The operator's view, from Redis itself.
    let listed = fleets[0].list().await.unwrap();
    let kinds: Vec<(&str, &str)> = listed.iter().map(|r| (r.kind(), r.value())).collect();
    assert_eq!(
        kinds,
        [
            ("client", "svc-a"),
            ("jti", "jti-1"),
            ("tenant", "org_gone")
        ]
    );
    assert!(listed[0].expires_at() > SystemTime::now() + Duration::from_secs(23 * 3600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_costs_no_latency_and_nothing_is_lost() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let p = prefix();
    // Replica C reaches Redis through a proxy that can cut it off alone.
    let proxy = Proxy::start(redis.addr()).await;
    let a = Fleet::builder(redis.url()).prefix(&p).build().unwrap();
    let c = Fleet::builder(proxy.url()).prefix(&p).build().unwrap();
    synced(&a).await;
    synced(&c).await;
    let (va, vc) = (replica(&issuer, &a).await, replica(&issuer, &c).await);
    let old = Duration::from_secs(120);
    let x = issuer.token().client_id("svc-x").issued_ago(old).sign();
    let y = issuer.token().client_id("svc-y").issued_ago(old).sign();
    let z = issuer.token().client_id("svc-z").issued_ago(old).sign();

    // C cut off: a revocation made meanwhile arrives once it is back.
    proxy.cut();
    a.revoke(Revocation::client(issuer.issuer(), "svc-x"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(vc.verify(&x).await.is_ok(), "C cannot know yet");
    proxy.restore();
    until_revoked(&vc, &x, Instant::now()).await;

    // Redis killed: requests do not wait on it, and keep their latency.
    let latency = |v: Verifier, t: String| async move {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let at = Instant::now();
            let _ = v.verify(&t).await;
            samples.push(at.elapsed());
        }
        samples.sort();
        (samples[100], samples[198])
    };
    va.verify(&y).await.unwrap();
    let (p50_up, p99_up) = latency(va.clone(), y.clone()).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (p50_down, p99_down) = latency(va.clone(), y.clone()).await;
    eprintln!(
        "verify latency with Redis up p50 {p50_up:?} p99 {p99_up:?}; killed p50 {p50_down:?} p99 {p99_down:?}"
    );
    assert!(
        p99_down < Duration::from_millis(20),
        "no request waits on Redis: p99 {p99_down:?}"
    );
    assert_eq!(
        reason(va.verify(&x).await),
        Some(Reason::Revoked),
        "known revocations still hold"
    );
    va.verify(&y).await.expect("the default keeps serving");
    assert!(matches!(
        a.revoke(Revocation::client(issuer.issuer(), "svc-y")).await,
        Err(m2m_guard::fleet::FleetError::Unavailable(_))
    ));

    // Restarted from its append-only file: nothing lost, followed again.
    redis.restart().await;
    let restarted = Instant::now();
    loop {
        match a.revoke(Revocation::client(issuer.issuer(), "svc-z")).await {
            Ok(_) => break,
            Err(_) if restarted.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("Redis back within 10 s: {e}"),
        }
    }
    until_revoked(&vc, &z, Instant::now()).await;
    // A replica started now loads both, one from before the restart.
    let fresh = Fleet::builder(redis.url()).prefix(&p).build().unwrap();
    synced(&fresh).await;
    let vf = replica(&issuer, &fresh).await;
    assert_eq!(reason(vf.verify(&x).await), Some(Reason::Revoked));
    assert_eq!(reason(vf.verify(&z).await), Some(Reason::Revoked));
    vf.verify(&y).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_first_sync_or_past_the_bound_under_refuse_it_is_503() {
    if !redis_available() {
        return;
    }
    let issuer = TestIssuer::start().await;
    let token = issuer.token().sign();
    // Nothing listens there: never synced, so never a pass.
    let nowhere = Fleet::builder("redis://127.0.0.1:1")
        .prefix(prefix())
        .build()
        .unwrap();
    let v = replica(&issuer, &nowhere).await;
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(err.reason(), Reason::RevocationsUnavailable);
    assert!(err.is_unavailable() && err.retry_after().is_some());
    // Its keys loaded, its list did not: not ready, and health says why.
    assert_eq!(nowhere.revocations().synced_at(), None);
    let health = v.health();
    let list = health.revocations().unwrap();
    assert!(health.issuers()[0].keys_loaded);
    assert!(!list.usable && list.synced_at.is_none());
    assert!(!health.is_ready());

    let mut redis = RedisServer::start().await;
    let before_sync = SystemTime::now();
    let strict = Fleet::builder(redis.url())
        .prefix(prefix())
        .when_stale(Duration::from_secs(1), WhenStale::Refuse)
        .build()
        .unwrap();
    synced(&strict).await;
    let synced_at = strict.revocations().synced_at().unwrap();
    assert!(
        before_sync - Duration::from_millis(1) <= synced_at && synced_at <= SystemTime::now(),
        "synced between the build and now"
    );
    let v = replica(&issuer, &strict).await;
    v.verify(&token).await.unwrap();
    assert!(v.health().is_ready());
    assert!(v.health().revocations().unwrap().usable);
    redis.kill();
    let killed = Instant::now();
    loop {
        match v.verify(&token).await {
            Ok(_) => assert!(
                killed.elapsed() < Duration::from_secs(4),
                "refused once stale past 1 s"
            ),
            Err(e) => {
                assert_eq!(e.reason(), Reason::RevocationsUnavailable);
                let synced = strict.revocations().synced_at().unwrap();
                assert!(
                    SystemTime::now().duration_since(synced).unwrap() > Duration::from_secs(1),
                    "refused only past the 1 s bound"
                );
                assert!(!v.health().is_ready(), "a stale list under Refuse");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_on_another_replica_is_refused() {
    use axum::routing::get;
    use m2m_guard::test_util::DpopKey;
    use m2m_guard::{Dpop, M2mAuthLayer};
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let p = prefix();
    // Two replicas behind one public origin.
    let origin = "https://api.example.test";
    let mut apps = Vec::new();
    for _ in 0..2 {
        let fleet = Fleet::builder(redis.url()).prefix(&p).build().unwrap();
        synced(&fleet).await;
        let v = replica(&issuer, &fleet).await;
        let app = axum::Router::new()
            .route("/orders", get(|| async { "ok" }))
            .layer(M2mAuthLayer::new(v).dpop(Dpop::new(origin).replay_store(fleet.replay_store())));
        apps.push((app, fleet));
    }
    let key = DpopKey::new();
    let token = issuer.token().dpop_bound(&key).sign();
    let call = |app: axum::Router, proof: String| {
        let token = token.clone();
        async move {
            use tower::ServiceExt as _;
            let req = axum::http::Request::builder()
                .uri("/orders")
                .header("host", "api.example.test")
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let www = support::challenge(resp.headers());
            (resp.status().as_u16(), www)
        }
    };
    let proof = key
        .proof("GET", &format!("{origin}/orders"))
        .for_token(&token)
        .sign();
    assert_eq!(call(apps[0].0.clone(), proof.clone()).await.0, 200);
    let (status, www) = call(apps[1].0.clone(), proof).await;
    assert_eq!(status, 401, "replayed on the other replica");
    assert!(www.contains("the DPoP proof was used before"), "{www}");

    // Redis gone: a proof cannot be checked, so it is not let through.
    redis.kill();
    let proof = key
        .proof("GET", &format!("{origin}/orders"))
        .for_token(&token)
        .sign();
    let started = Instant::now();
    let (status, _) = call(apps[0].0.clone(), proof).await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_during_an_issuer_outage_uses_a_siblings_keys() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let p = prefix();
    let token = issuer.token().sign();
    let first = Fleet::builder(redis.url())
        .prefix(&p)
        .warm_start(SECRET)
        .build()
        .unwrap();
    synced(&first).await;
    replica(&issuer, &first).await.verify(&token).await.unwrap();

    issuer.set_outage(Outage::Status(503));
    // The sibling's publication is asynchronous: wait for it to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = Fleet::builder(redis.url())
        .prefix(&p)
        .warm_start(SECRET)
        .build()
        .unwrap();
    synced(&second).await;
    loop {
        let v = replica(&issuer, &second).await;
        match v.verify(&token).await {
            Ok(p) => {
                assert_eq!(p.issuer(), issuer.issuer());
                break;
            }
            Err(e) => {
                assert_eq!(e.reason(), Reason::KeysUnavailable);
                assert!(Instant::now() < deadline, "warm start within 5 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // No sibling ever published (another prefix): 503 as without a fleet.
    let alone = Fleet::builder(redis.url())
        .prefix(prefix())
        .warm_start(SECRET)
        .build()
        .unwrap();
    synced(&alone).await;
    let v = replica(&issuer, &alone).await;
    assert_eq!(
        reason(v.verify(&token).await),
        Some(Reason::KeysUnavailable)
    );

    // Another secret: what the sibling published does not authenticate.
    let stranger = Fleet::builder(redis.url())
        .prefix(&p)
        .warm_start([7u8; 32])
        .build()
        .unwrap();
    synced(&stranger).await;
    let v = replica(&issuer, &stranger).await;
    assert_eq!(
        reason(v.verify(&token).await),
        Some(Reason::KeysUnavailable),
        "a key set whose HMAC fails is not used"
    );
}

/// A sibling's key set is for a replica that never loaded keys: a replica
/// with keys of its own keeps them through an outage, even when a sibling
/// published a newer set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_keys_of_its_own_keeps_them_through_an_outage() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let fleet = synced_fleet(&redis).await;
    let builder = Verifier::builder().fleet(&fleet);
    assert!(
        format!("{builder:?}").contains("mirror: Some(Mirror)"),
        "{builder:?}"
    );
    let old = replica(&issuer, &fleet).await;
    old.verify(&issuer.token().sign()).await.unwrap();
    // Its publication is asynchronous and the last one wins: let it land
    // before the newer set is published.
    until_published(&issuer, &fleet, None).await;
    issuer.rotate_keys();
    let rotated = issuer.token().sign();
    replica(&issuer, &fleet)
        .await
        .verify(&rotated)
        .await
        .unwrap();
    until_published(&issuer, &fleet, None).await;
    issuer.set_outage(Outage::Status(503));
    // The first replica's refetch fails: it keeps its own keys, and the
    // new key stays out of reach until its issuer answers.
    assert_eq!(
        reason(old.verify(&rotated).await),
        Some(Reason::KeysUnavailable)
    );
    issuer.set_outage(Outage::None);
}

/// A sibling's key set is used only when it could have been this
/// replica's own: the same issuer's (never another issuer's on the same
/// fleet), no larger than this replica accepts from its issuer (to the
/// byte), and not from the future (a sibling's clock far ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siblings_key_set_is_used_only_if_it_could_be_ours() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let (a, b) = (TestIssuer::start().await, TestIssuer::start().await);

    // Two issuers, one fleet: B's replica never takes A's keys.
    let shared = synced_fleet(&redis).await;
    replica(&a, &shared)
        .await
        .verify(&a.token().sign())
        .await
        .unwrap();
    until_published(&a, &shared, None).await;
    assert_eq!(
        in_outage(&b, &shared, None, None).await,
        Some(Reason::KeysUnavailable),
        "another issuer's key set is not ours"
    );
    // Had it taken them, a token naming B but signed with A's key would pass.
    let forged = a.token().claim("iss", b.issuer()).sign();
    b.set_outage(Outage::Status(503));
    let v = replica(&b, &shared).await;
    assert_eq!(
        reason(v.verify(&forged).await),
        Some(Reason::KeysUnavailable),
        "A's keys never verify B's tokens"
    );
    b.set_outage(Outage::None);

    // The size bound: exactly this replica's limit is accepted, a byte less refuses it.
    let jwks_len = reqwest::get(a.jwks_url())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    assert_eq!(in_outage(&a, &shared, None, Some(jwks_len)).await, None);
    assert_eq!(
        in_outage(&a, &shared, None, Some(jwks_len - 1)).await,
        Some(Reason::KeysUnavailable),
        "larger than this replica accepts from its issuer"
    );

    // From the future: published by a sibling whose clock runs two minutes
    // ahead. A replica as far ahead uses it; one on time does not.
    let ahead = TestClock::new();
    ahead.advance(Duration::from_secs(120));
    let future = synced_fleet(&redis).await;
    Verifier::builder()
        .issuer(a.config())
        .fleet(&future)
        .clock(&ahead)
        .build()
        .await
        .unwrap()
        .verify(&a.token().sign())
        .await
        .unwrap();
    until_published(&a, &future, Some(&ahead)).await;
    assert_eq!(
        in_outage(&a, &future, None, None).await,
        Some(Reason::KeysUnavailable),
        "a key set fetched in the future is not used"
    );
}

/// A fleet of its own (a fresh prefix) on `redis`, its list loaded.
async fn synced_fleet(redis: &RedisServer) -> Fleet {
    let fleet = Fleet::builder(redis.url())
        .prefix(prefix())
        .warm_start(SECRET)
        .build()
        .unwrap();
    synced(&fleet).await;
    fleet
}

/// What a replica of `issuer` started while its issuer is down answers a
/// token of it (`None`: accepted, with a sibling's key set), on `clock`,
/// accepting responses up to `max_bytes`.
async fn in_outage(
    issuer: &TestIssuer,
    fleet: &Fleet,
    clock: Option<&TestClock>,
    max_bytes: Option<usize>,
) -> Option<Reason> {
    issuer.set_outage(Outage::Status(503));
    let mut builder = Verifier::builder().issuer(issuer.config()).fleet(fleet);
    if let Some(c) = clock {
        builder = builder.clock(c);
    }
    if let Some(bytes) = max_bytes {
        builder = builder.max_response_bytes(bytes);
    }
    let verifier = builder.build().await.unwrap();
    let answer = reason(verifier.verify(&issuer.token().sign()).await);
    issuer.set_outage(Outage::None);
    answer
}

/// Wait until a replica of `issuer` on `clock` warm-starts from `fleet`:
/// the sibling's (asynchronous) publication has landed.
async fn until_published(issuer: &TestIssuer, fleet: &Fleet, clock: Option<&TestClock>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(waiting) = in_outage(issuer, fleet, clock, None).await {
        assert_eq!(waiting, Reason::KeysUnavailable);
        assert!(Instant::now() < deadline, "published within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoke_tool_reaches_three_serve_processes() {
    use m2m_guard::test_util::DEFAULT_AUDIENCE;
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let issuer = TestIssuer::start().await;
    let url = redis.url();
    let servers: Vec<_> = (0..3)
        .map(|_| {
            support::start_example(
                "serve",
                &[
                    "--issuer",
                    issuer.issuer(),
                    "--audience",
                    DEFAULT_AUDIENCE,
                    "--preset",
                    "kinde",
                    "--listen",
                    "127.0.0.1:0",
                    "--redis",
                    &url,
                ],
            )
        })
        .collect();
    let old = Duration::from_secs(120);
    let leaked = issuer.token().client_id("svc-a").issued_ago(old).sign();
    let other = issuer.token().client_id("svc-b").issued_ago(old).sign();
    let http = reqwest::Client::new();
    let status =
        |base: &str, token: &str| http.get(format!("{base}/whoami")).bearer_auth(token).send();
    // Each server loads the list, then accepts.
    for (_, base) in &servers {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = status(base, &leaked).await.unwrap();
            if resp.status() == 200 {
                break;
            }
            let www = format!("{:?}", resp.headers().get("www-authenticate"));
            assert!(
                Instant::now() < deadline,
                "{base} ready within 10 s: {} {www}",
                resp.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(support::example_binary("revoke"))
            .args(args)
            .env_remove("M2M_REDIS")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let started = Instant::now();
    let (ok, said) = tool(&[
        "--redis",
        &url,
        "--issuer",
        issuer.issuer(),
        "--client-id",
        "svc-a",
    ]);
    assert!(ok, "{said}");
    assert!(said.starts_with("revoked client svc-a of "), "{said}");
    for (_, base) in &servers {
        loop {
            let resp = status(base, &leaked).await.unwrap();
            if resp.status() == 401 {
                let www = resp.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(www.contains("the token has been revoked"), "{www}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{base} refuses it"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status(base, &other).await.unwrap().status(), 200);
    }
    let (ok, listed) = tool(&["--redis", &url, "--list"]);
    assert!(ok);
    assert!(
        listed.starts_with(&format!("client\t{}\tsvc-a\tbefore=", issuer.issuer())),
        "{listed}"
    );
    let (ok, _) = tool(&["--redis", &url, "--issuer", issuer.issuer()]);
    assert!(!ok, "a target is required");
}

#[tokio::test]
async fn a_local_list_revokes_at_the_edges_and_on_the_cache_path() {
    use m2m_guard::Revocations;
    let issuer = TestIssuer::start().await;
    let list = Revocations::new();
    let v = Verifier::builder()
        .issuer(issuer.config())
        .revocations(list.clone())
        .build()
        .await
        .unwrap();
    let a = issuer
        .token()
        .client_id("svc-a")
        .issued_ago(Duration::from_secs(60))
        .sign();
    let no_iat = issuer
        .token()
        .client_id("svc-b")
        .without_claim("iat")
        .sign();
    let edge = issuer.token().client_id("svc-c").sign();
    let edge_iat = v.verify(&edge).await.unwrap().issued_at().unwrap();
    for t in [&a, &no_iat, &edge] {
        v.verify(t).await.unwrap();
        v.verify(t).await.unwrap();
    }
    let cached = v.cached_tokens();
    assert!(cached >= 3, "all cached");
    list.revoke(Revocation::client(issuer.issuer(), "svc-a"))
        .unwrap();
    assert_eq!(
        reason(v.verify(&a).await),
        Some(Reason::Revoked),
        "from the cache"
    );
    assert_eq!(
        v.cached_tokens(),
        cached - 1,
        "a revoked verdict leaves the cache"
    );
    // No `iat`: it cannot show it was issued after.
    list.revoke(
        Revocation::client(issuer.issuer(), "svc-b")
            .issued_before(SystemTime::now() - Duration::from_secs(3600)),
    )
    .unwrap();
    assert_eq!(reason(v.verify(&no_iat).await), Some(Reason::Revoked));
    // Issued in the very second named: revoked.
    list.revoke(Revocation::client(issuer.issuer(), "svc-c").issued_before(edge_iat))
        .unwrap();
    assert_eq!(reason(v.verify(&edge).await), Some(Reason::Revoked));
    // A second later: accepted.
    let later = issuer
        .token()
        .client_id("svc-c")
        .claim(
            "iat",
            edge_iat
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1,
        )
        .sign();
    v.verify(&later).await.expect("issued after `before`");
    let held: Vec<String> = list.list().iter().map(|r| r.value().to_owned()).collect();
    assert_eq!(held, ["svc-a", "svc-b", "svc-c"]);

    // A token lifetime (plus leeway) longer than the retention: refused at build.
    let too_long = Verifier::builder()
        .issuer(
            issuer
                .config()
                .max_token_lifetime(Duration::from_secs(24 * 3600)),
        )
        .revocations(Revocations::new())
        .build()
        .await;
    assert!(
        matches!(&too_long, Err(m2m_guard::BuildError::Config(m)) if m.contains("retention")),
        "{:?}",
        too_long.err()
    );
    Verifier::builder()
        .issuer(
            issuer
                .config()
                .max_token_lifetime(Duration::from_secs(24 * 3600)),
        )
        .revocations(Revocations::with_retention(Duration::from_secs(25 * 3600)))
        .build()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fleet_stops_following_and_its_list_is_not_revoked_locally() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start().await;
    let url = redis.url();
    let clients = || {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut c)
                .await
                .unwrap();
            // Not counting this connection itself.
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
                - 1
        }
    };
    let before = clients().await;
    let fleet = Fleet::builder(redis.url())
        .prefix(prefix())
        .build()
        .unwrap();
    synced(&fleet).await;
    assert!(clients().await > before, "the follower is connected");
    let err = fleet
        .revocations()
        .revoke(Revocation::client("https://issuer.example", "x"))
        .unwrap_err();
    assert!(err.to_string().contains("Fleet::revoke"), "{err}");
    drop(fleet);
    let deadline = Instant::now() + Duration::from_secs(5);
    while clients().await > before {
        assert!(
            Instant::now() < deadline,
            "the follower's connection closes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The builder never prints the password; a short warm-start secret is refused.
    let b = Fleet::builder("redis://:hunter2@127.0.0.1:6379");
    assert!(!format!("{b:?}").contains("hunter2"));
    assert!(
        Fleet::builder("redis://127.0.0.1:1")
            .warm_start(b"short")
            .build()
            .is_err()
    );
}
