//! Public settings each doing what their docs say: the token cache bound,
//! claim overrides, build validation, kid-less key selection, and the
//! `resource_metadata` challenge.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{Algorithm, BuildError, Issuer, M2mAuthLayer, Provider, Reason, Verifier};
use serde_json::json;
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
    let config_error = |e: BuildError| matches!(e, BuildError::Config(_));
    let no_audience = Verifier::builder()
        .issuer(Issuer::new(issuer.issuer()))
        .build()
        .await
        .unwrap_err();
    assert!(config_error(no_audience), "an audience is required");
    let twice = Verifier::builder()
        .issuer(issuer.config())
        .issuer(issuer.config())
        .build()
        .await
        .unwrap_err();
    assert!(config_error(twice), "the same issuer twice");
    let nothing = Verifier::builder().build().await.unwrap_err();
    assert!(config_error(nothing), "no issuer");
    let cognito_aud = Verifier::builder()
        .issuer(
            Issuer::new(issuer.issuer())
                .provider(Provider::Cognito)
                .audience("a")
                .allowed_client_ids(["c"]),
        )
        .build()
        .await
        .unwrap_err();
    assert!(config_error(cognito_aud), "Cognito tokens carry no aud");
    let no_algs = Verifier::builder()
        .issuer(issuer.config().algorithms([]))
        .build()
        .await
        .unwrap_err();
    assert!(config_error(no_algs), "an empty algorithm list");
}

#[tokio::test]
async fn a_kid_less_token_needs_exactly_one_key_for_its_algorithm() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config())
        .build()
        .await
        .unwrap();
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
    let v = Verifier::builder()
        .issuer(issuer.config())
        .build()
        .await
        .unwrap();
    let e = v.verify(&kidless(&issuer)).await.unwrap_err();
    assert_eq!(e.reason(), Reason::AmbiguousKey);
}

#[tokio::test]
async fn resource_metadata_goes_into_every_challenge() {
    let issuer = TestIssuer::start().await;
    let v = Verifier::builder()
        .issuer(issuer.config())
        .build()
        .await
        .unwrap();
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
