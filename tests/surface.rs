//! Public settings each doing what their docs say: the token cache bound,
//! claim overrides, build validation, kid-less key selection, and the
//! `resource_metadata` challenge.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{
    Algorithm, BuildError, Issuer, M2mAuthLayer, Preset, Reason, Revocation, Revocations,
    ScopeHierarchy, Verifier,
};
use serde_json::json;
use std::time::Duration;
use tower::ServiceExt as _;

#[tokio::test]
async fn the_token_cache_holds_at_most_its_entry_bound() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config())
        .token_cache(3, 1 << 20)
        .build()
        .await
        .unwrap();
    let tokens: Vec<String> = (0..10)
        .map(|i| {
            issuer
                .token()
                .alg(Algorithm::EdDSA)
                .client_id(format!("c{i}"))
                .sign()
        })
        .collect();
    for t in tokens.iter().chain(&tokens) {
        v.verify(t).await.unwrap();
    }
    let n = v.cached_tokens();
    assert!((1..=3).contains(&n), "{n} cached for a bound of 3");

    // Below the bound, every token seen twice is cached.
    let roomy = Verifier::builder()
        .issuer(issuer.config())
        .token_cache(5, 1 << 20)
        .build()
        .await
        .unwrap();
    for t in tokens[..3].iter().chain(&tokens[..3]) {
        roomy.verify(t).await.unwrap();
    }
    assert_eq!(roomy.cached_tokens(), 3);
}

#[tokio::test]
async fn the_token_cache_holds_at_most_its_byte_bound() {
    let issuer = TestIssuer::start().await;
    // 64 KiB for tokens of about 3 KiB each (with their decoded claims,
    // about 8 KiB an entry): room for 8, never for 30.
    let v = Verifier::builder()
        .issuer(issuer.config())
        .token_cache(1000, 64 * 1024)
        .build()
        .await
        .unwrap();
    let tokens: Vec<String> = (0..30)
        .map(|i| {
            issuer
                .token()
                .alg(Algorithm::EdDSA)
                .client_id(format!("c{i}"))
                .claim("blob", "b".repeat(2500))
                .sign()
        })
        .collect();
    for t in tokens.iter().chain(&tokens) {
        v.verify(t).await.unwrap();
    }
    let n = v.cached_tokens();
    assert!((1..=10).contains(&n), "{n} cached within 64 KiB");
}

#[tokio::test]
async fn claim_overrides_replace_the_preset() {
    let issuer = TestIssuer::start().await; // Kinde-shaped tokens
    let no_tenant = Verifier::builder()
        .issuer(issuer.config().no_tenant_claim())
        .build()
        .await
        .unwrap();
    let t = issuer.token().org("org_1").sign();
    assert_eq!(no_tenant.verify(&t).await.unwrap().tenant(), None);

    let custom = Verifier::builder()
        .issuer(
            issuer
                .config()
                .client_id_claims(["app"])
                .scope_claims(["perms"])
                .tenant_claim("team"),
        )
        .build()
        .await
        .unwrap();
    let t = issuer
        .token()
        .scopes(["ignored"])
        .claim("app", "billing")
        .claim("perms", json!(["x", "y"]))
        .claim("team", "t-9")
        .sign();
    let p = custom.verify(&t).await.unwrap();
    assert_eq!(p.client_id(), Some("billing"));
    assert_eq!(p.tenant(), Some("t-9"));
    assert!(p.has_scope("x") && p.has_scope("y") && !p.has_scope("ignored"));
}

#[tokio::test]
async fn the_build_refuses_an_incomplete_or_contradictory_configuration() {
    let issuer = TestIssuer::start().await;
    // Each refusal is a configuration error saying what is wrong.
    let says = |e: BuildError, what: &str| match e {
        BuildError::Config(m) => assert!(m.contains(what), "{m:?} should say {what:?}"),
        other => panic!("{other:?}: expected a configuration error saying {what:?}"),
    };
    let no_audience = Verifier::builder()
        .issuer(Issuer::new(issuer.issuer()))
        .build()
        .await
        .unwrap_err();
    says(no_audience, "at least one audience is required");
    let twice = Verifier::builder()
        .issuer(issuer.config())
        .issuer(issuer.config())
        .build()
        .await
        .unwrap_err();
    says(twice, "configured twice");
    let nothing = Verifier::builder().build().await.unwrap_err();
    says(nothing, "no issuer configured");
    let cognito_aud = Verifier::builder()
        .issuer(
            Issuer::new(issuer.issuer())
                .preset(Preset::Cognito)
                .audience("a")
                .allowed_client_ids(["c"]),
        )
        .build()
        .await
        .unwrap_err();
    says(cognito_aud, "Cognito access tokens carry no aud");
    let cognito_open = Verifier::builder()
        .issuer(Issuer::new(issuer.issuer()).preset(Preset::Cognito))
        .build()
        .await
        .unwrap_err();
    says(cognito_open, "Cognito requires allowed_client_ids");
    let no_algs = Verifier::builder()
        .issuer(issuer.config().algorithms([]))
        .build()
        .await
        .unwrap_err();
    says(no_algs, "the algorithm list is empty");
    let empty_aud = Verifier::builder()
        .issuer(Issuer::new(issuer.issuer()).audience(""))
        .build()
        .await
        .unwrap_err();
    says(empty_aud, "an audience is empty");
    let no_clients = Verifier::builder()
        .issuer(issuer.config().allowed_client_ids(Vec::<String>::new()))
        .build()
        .await
        .unwrap_err();
    says(no_clients, "the allowed client id list is empty");
    let bound_to_none = Verifier::builder()
        .issuer(issuer.config().bind_to_client_ids(Vec::<String>::new()))
        .build()
        .await
        .unwrap_err();
    says(
        bound_to_none,
        "bind_to_client_ids needs at least one client id",
    );
    assert_eq!(
        Issuer::new("https://x.example").issuer(),
        "https://x.example"
    );
}

/// The revocation list must outlast every token it may match: an issuer's
/// maximum lifetime plus its leeway at most the list's retention, to the
/// second; and the list set is the one every verdict is checked against.
#[tokio::test]
async fn a_revocation_list_must_outlast_every_token_it_may_match() {
    let issuer = TestIssuer::start().await;
    let list = Revocations::with_retention(Duration::from_secs(3600));
    let build = |lifetime: u64, leeway: u64| {
        Verifier::builder()
            .issuer(
                issuer
                    .config()
                    .max_token_lifetime(Duration::from_secs(lifetime))
                    .leeway(Duration::from_secs(leeway)),
            )
            .revocations(list.clone())
            .build()
    };
    let v = build(3540, 60).await.unwrap();
    build(3600, 0).await.unwrap();
    for (lifetime, leeway) in [(3541, 60), (3601, 0), (3600, 1)] {
        match build(lifetime, leeway).await {
            Err(BuildError::Config(m)) => assert!(m.contains("retention"), "{m}"),
            other => panic!("{lifetime} s + {leeway} s: {other:?}"),
        }
    }
    let token = issuer.token().expires_in(Duration::from_secs(600)).sign();
    v.verify(&token).await.unwrap();
    list.revoke(Revocation::client(issuer.issuer(), "test-client"))
        .unwrap();
    assert_eq!(
        v.verify(&token).await.unwrap_err().reason(),
        Reason::Revoked
    );
}

/// A scope hierarchy set before the issuers applies to them all.
#[tokio::test]
async fn a_scope_hierarchy_applies_whatever_the_order_of_the_settings() {
    let issuer = TestIssuer::start().await;
    let token = issuer.token().scopes(["admin"]).sign();
    let v = Verifier::builder()
        .scope_hierarchy(ScopeHierarchy::new().implies("admin", ["read"]))
        .issuer(issuer.config())
        .build()
        .await
        .unwrap();
    assert!(v.verify(&token).await.unwrap().has_scope("read"));
    let flat = issuer.verifier().await;
    assert!(!flat.verify(&token).await.unwrap().has_scope("read"));
}

#[tokio::test]
async fn an_http_client_that_cannot_be_built_is_a_build_error() {
    let issuer = TestIssuer::start().await;
    // A header value reqwest refuses: the builder's error, not a panic.
    let bad = reqwest::Client::builder().user_agent("bad\nagent");
    let e = Verifier::builder()
        .issuer(issuer.config())
        .http_client(bad)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, BuildError::HttpClient(_)), "{e:?}");
    assert!(
        e.to_string().contains("could not create the HTTP client"),
        "{e}"
    );
    // The cause once: as the source, not also in the message.
    let source = std::error::Error::source(&e).expect("the cause is the source");
    assert!(!e.to_string().contains(&source.to_string()), "{e}");
}

#[tokio::test]
async fn a_callers_http_client_settings_are_applied() {
    let issuer = TestIssuer::start().await;
    // A key server that records the headers it is sent, then serves the issuer's keys.
    let keys = support::ScriptServer::start().await;
    keys.json("/jwks", issuer.jwks_document().to_string());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-tenant-proxy", "corp".parse().unwrap());
    let v = Verifier::builder()
        .issuer(issuer.config().jwks_url(keys.url("/jwks")))
        .http_client(reqwest::Client::builder().default_headers(headers))
        .build()
        .await
        .unwrap();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    let seen: Vec<_> = keys
        .requests("/jwks")
        .iter()
        .map(|r| r.header("x-tenant-proxy"))
        .collect();
    assert_eq!(seen, vec![Some("corp".to_owned())]);
}

#[tokio::test]
async fn a_kid_less_token_needs_exactly_one_key_for_its_algorithm() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let payload = issuer.token().claims();
    let kidless = |issuer: &TestIssuer| {
        issuer.sign_raw(
            Algorithm::RS256,
            r#"{"alg":"RS256"}"#,
            &serde_json::Value::Object(payload.clone()).to_string(),
        )
    };
    // One RSA key published: it is the one.
    assert!(v.verify(&kidless(&issuer)).await.is_ok());
    // Two (a rotation in progress): which one is not for the token to say.
    issuer.rotate_keys();
    let v = issuer.verifier().await;
    let e = v.verify(&kidless(&issuer)).await.unwrap_err();
    assert_eq!(e.reason(), Reason::AmbiguousKey);
}

/// An issuer without kids that replaces its key (Authlib's tokens carry
/// none): a token signed by the new key fails against the key held, and is
/// verified after one refetch, not refused until the routine refresh. The
/// refetch is paced as for an unknown kid: a forged kid-less token right
/// after it costs no fetch.
#[tokio::test]
async fn a_kid_less_issuer_that_replaces_its_key_is_followed() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let payload = serde_json::Value::Object(issuer.token().claims()).to_string();
    let kidless =
        |issuer: &TestIssuer| issuer.sign_raw(Algorithm::RS256, r#"{"alg":"RS256"}"#, &payload);
    assert!(v.verify(&kidless(&issuer)).await.is_ok());
    let fetched = v.key_fetch_count(issuer.issuer()).unwrap();
    issuer.rotate_keys();
    issuer.retire_old_keys();
    let fresh = kidless(&issuer);
    assert!(v.verify(&fresh).await.is_ok());
    assert_eq!(v.key_fetch_count(issuer.issuer()), Some(fetched + 1));
    // The signature of another payload: refused, and no second fetch.
    let (head, _) = fresh.rsplit_once('.').unwrap();
    let other = issuer.sign_raw(Algorithm::RS256, r#"{"alg":"RS256"}"#, "{}");
    let forged = format!("{head}.{}", other.rsplit_once('.').unwrap().1);
    let e = v.verify(&forged).await.unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidSignature);
    assert_eq!(v.key_fetch_count(issuer.issuer()), Some(fetched + 1));
}

#[tokio::test]
async fn resource_metadata_goes_into_every_challenge() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    let url = "https://api.example.test/.well-known/oauth-protected-resource";
    let app: Router = Router::new()
        .route("/x", get(|| async { "ok" }))
        .route_layer(M2mAuthLayer::new(v).resource_metadata(url));
    for token in [None, Some(issuer.token().expired().sign())] {
        let mut req = Request::builder().uri("/x");
        if let Some(t) = &token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let www = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            www.contains(&format!(r#"resource_metadata="{url}""#)),
            "{www}"
        );
    }
}

#[test]
fn every_public_type_is_debug() {
    use axum::body::Body;
    use m2m_guard::client::{BearerToken, BearerTokenLayer, TokenProvider, TokenProviderBuilder};
    use m2m_guard::future::{GuardFuture, ResponseFuture};
    use m2m_guard::service::{Guarded, M2mAuth, MetadataService};
    use std::fmt::Debug;
    type Inner = axum::routing::Router;
    type InnerFuture = <Inner as tower::Service<Request<Body>>>::Future;
    fn debug<T: Debug>() {}
    debug::<Verifier>();
    debug::<m2m_guard::VerifierBuilder>();
    debug::<Issuer>();
    debug::<Preset>();
    debug::<M2mAuthLayer>();
    debug::<M2mAuth<Inner>>();
    debug::<ResponseFuture<Inner, Body, m2m_guard::DefaultRejection>>();
    debug::<m2m_guard::RequireScope>();
    debug::<m2m_guard::RequireTenant>();
    debug::<m2m_guard::Rule>();
    debug::<m2m_guard::Denial>();
    debug::<Guarded<Inner, m2m_guard::Rule>>();
    debug::<Guarded<Inner, m2m_guard::RequireScope>>();
    debug::<GuardFuture<InnerFuture, Body>>();
    debug::<m2m_guard::ProtectedResource>();
    debug::<MetadataService>();
    debug::<m2m_guard::Principal>();
    debug::<m2m_guard::Scopes>();
    debug::<m2m_guard::AuthError>();
    debug::<m2m_guard::GrpcRejection>();
    debug::<m2m_guard::Rejection>();
    debug::<BuildError>();
    debug::<m2m_guard::FetchError>();
    debug::<TokenProvider>();
    debug::<TokenProviderBuilder>();
    debug::<BearerTokenLayer>();
    debug::<BearerToken<reqwest::Client>>();
}

#[tokio::test]
async fn services_give_access_to_their_inner_service() {
    use tower::Layer as _;
    let issuer = TestIssuer::start().await;
    let mut auth = M2mAuthLayer::new(issuer.verifier().await).layer(7u8);
    *auth.get_mut() += 1;
    assert_eq!(*auth.get_ref(), 8);
    assert_eq!(auth.into_inner(), 8);
    let mut guarded = m2m_guard::RequireScope::all(["x"]).layer(1u8);
    *guarded.get_mut() += 1;
    assert_eq!(*guarded.get_ref(), 2);
    assert_eq!(guarded.into_inner(), 2);
}

#[tokio::test]
async fn the_verifier_reports_its_fetches_and_shows_its_issuers() {
    let issuer = TestIssuer::start().await;
    let v = issuer.verifier().await;
    assert_eq!(
        v.key_fetch_count(issuer.issuer()),
        Some(0),
        "nothing fetched at build"
    );
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(v.key_fetch_count(issuer.issuer()), Some(1));
    issuer.rotate_keys();
    assert!(v.verify(&issuer.token().sign()).await.is_ok());
    assert_eq!(
        v.key_fetch_count(issuer.issuer()),
        Some(2),
        "one refetch for the new kid"
    );
    assert_eq!(v.key_fetch_count("https://elsewhere.example"), None);
    let shown = format!("{v:?}");
    assert!(
        shown.contains("Verifier") && shown.contains(issuer.issuer()),
        "{shown}"
    );
}
