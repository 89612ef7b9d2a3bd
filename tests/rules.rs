//! Rules of your own (`Rule`, `Denial`): one line each, answered like the
//! built-in guards (realm, `resource_metadata`, custom rejection handler).

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt as _;
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{
    AuthError, Denial, GrpcRejection, M2mAuthLayer, ProtectedResource, RequireScope, RequireTenant,
    Rule,
};
use tower::ServiceExt as _;

async fn call(app: &Router, uri: &str, token: &str) -> (StatusCode, Option<String>, String) {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let www = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, www, String::from_utf8(body.to_vec()).unwrap())
}

fn routes() -> Router {
    let ok = || async { "ok" };
    Router::new()
        .route("/global", get(ok).route_layer(Rule::global_only()))
        .route("/tenant", get(ok).route_layer(Rule::tenant_only()))
        .route("/ci", get(ok).route_layer(Rule::claim_equals("env", "ci")))
        .route(
            "/flag",
            get(ok).route_layer(Rule::claim_equals("beta", true)),
        )
        .route(
            "/roles",
            get(ok).route_layer(Rule::claim_includes("roles", "auditor")),
        )
        .route(
            "/scope-word",
            get(ok).route_layer(Rule::claim_includes("scope", "read:users")),
        )
        .route(
            "/any",
            get(ok).route_layer(Rule::any([
                RequireScope::all(["reports:read"]).into(),
                Rule::global_only(),
            ])),
        )
        .route(
            "/all",
            get(ok).route_layer(Rule::all([
                Rule::tenant_only(),
                RequireScope::all(["reports:read"]).into(),
            ])),
        )
        .route(
            "/orgs/{org}/partner",
            get(ok).route_layer(Rule::all([
                RequireTenant::path_param("org").into(),
                Rule::new(
                    |p| p.client_id().is_some_and(|c| c.starts_with("partner-")),
                    Denial::forbidden("not_a_partner", "only partner clients may call this"),
                ),
            ])),
        )
        .route(
            "/by-method",
            get(ok).route_layer(Rule::from_fn(|parts, p| {
                if parts.method == "GET" && p.has_scope("read") {
                    Ok(())
                } else {
                    Err(Denial::insufficient_scope(["read"]))
                }
            })),
        )
        .route(
            "/handler",
            get(|req: Request| async move {
                // A handler of your own answering like the guards.
                Denial::insufficient_scope(["admin", "not a scope"])
                    .into_response::<Body>(req.extensions())
            }),
        )
}

const META: &str = "https://api.example.test/.well-known/oauth-protected-resource";

async fn app() -> (TestIssuer, Router) {
    let issuer = TestIssuer::start().await;
    let resource = ProtectedResource::new("https://api.example.test");
    let app = routes().route_layer(
        M2mAuthLayer::new(issuer.verifier().await)
            .realm("acme")
            .protected_resource(&resource),
    );
    (issuer, app)
}

#[tokio::test]
async fn global_and_tenant_only_rules() {
    let (issuer, app) = app().await;
    let global = issuer.token().sign();
    let org = issuer.token().org("org_1").sign();
    assert_eq!(call(&app, "/global", &global).await.0, StatusCode::OK);
    let (status, www, body) = call(&app, "/global", &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.as_deref(),
        Some(&*format!(
            r#"Bearer realm="acme", error="insufficient_scope", error_description="only a token without an organization may call this", resource_metadata="{META}""#
        ))
    );
    assert!(body.contains("insufficient_scope"), "{body}");
    assert_eq!(call(&app, "/tenant", &org).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "/tenant", &global).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn claim_equals_and_includes() {
    let (issuer, app) = app().await;
    let t = |k: &str, v: serde_json::Value| issuer.token().claim(k, v).sign();
    use serde_json::json;
    assert_eq!(
        call(&app, "/ci", &t("env", json!("ci"))).await.0,
        StatusCode::OK
    );
    for bad in [json!("prod"), json!(["ci"]), json!(null), json!("CI")] {
        assert_eq!(
            call(&app, "/ci", &t("env", bad.clone())).await.0,
            StatusCode::FORBIDDEN,
            "{bad}"
        );
    }
    assert_eq!(
        call(&app, "/ci", &issuer.token().sign()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "/flag", &t("beta", json!(true))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "/flag", &t("beta", json!("true"))).await.0,
        StatusCode::FORBIDDEN
    );
    let roles = |v| t("roles", v);
    assert_eq!(
        call(&app, "/roles", &roles(json!(["x", "auditor"])))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "/roles", &roles(json!("x auditor"))).await.0,
        StatusCode::OK
    );
    for bad in [
        json!(["auditors"]),
        json!("x auditor2"),
        json!({"auditor": true}),
        json!([["auditor"]]),
    ] {
        assert_eq!(
            call(&app, "/roles", &roles(bad.clone())).await.0,
            StatusCode::FORBIDDEN,
            "{bad}"
        );
    }
    // The Kinde-shaped `scope` string claim.
    let reader = issuer.token().scopes(["a", "read:users"]).sign();
    assert_eq!(call(&app, "/scope-word", &reader).await.0, StatusCode::OK);
    let (status, www, _) = call(
        &app,
        "/scope-word",
        &issuer.token().scopes(["read:user"]).sign(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        www.unwrap()
            .contains(r#"error_description="the token does not have a claim this route requires""#)
    );
}

#[tokio::test]
async fn any_and_all_answer_with_the_first_refusal() {
    let (issuer, app) = app().await;
    let org = issuer.token().org("org_1").sign();
    let org_reader = issuer.token().org("org_1").scopes(["reports:read"]).sign();
    let global = issuer.token().sign();
    // any: a scope or a global token.
    assert_eq!(call(&app, "/any", &org_reader).await.0, StatusCode::OK);
    assert_eq!(call(&app, "/any", &global).await.0, StatusCode::OK);
    let (status, www, _) = call(&app, "/any", &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        www.unwrap().contains(r#"scope="reports:read""#),
        "the first rule's answer"
    );
    // all: a tenant token with the scope.
    assert_eq!(call(&app, "/all", &org_reader).await.0, StatusCode::OK);
    let (status, www, _) = call(
        &app,
        "/all",
        &issuer.token().scopes(["reports:read"]).sign(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        www.unwrap().contains("only a token of an organization"),
        "tenant_only answered first"
    );
    let (status, www, _) = call(&app, "/all", &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.unwrap().contains(r#"scope="reports:read""#));
    // RequireTenant inside a rule, then a predicate.
    let partner = issuer.token().org("org_1").client_id("partner-9").sign();
    assert_eq!(
        call(&app, "/orgs/org_1/partner", &partner).await.0,
        StatusCode::OK
    );
    let (status, _, body) = call(&app, "/orgs/org_2/partner", &partner).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("not valid for this organization"), "{body}");
    let (status, www, _) = call(&app, "/orgs/org_1/partner", &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.unwrap().contains("only partner clients may call this"));
}

#[tokio::test]
async fn from_fn_sees_the_request_and_denials_render_in_handlers() {
    let (issuer, app) = app().await;
    let reader = issuer.token().scopes(["read"]).sign();
    assert_eq!(call(&app, "/by-method", &reader).await.0, StatusCode::OK);
    let (status, www, _) = call(&app, "/by-method", &issuer.token().sign()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.unwrap().contains(r#"scope="read""#));
    // In a handler: the layer's realm and resource metadata, invalid scope names left out.
    let (status, www, _) = call(&app, "/handler", &reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.as_deref(),
        Some(&*format!(
            r#"Bearer realm="acme", error="insufficient_scope", error_description="the token lacks a required scope", scope="admin", resource_metadata="{META}""#
        ))
    );
}

#[tokio::test]
async fn rules_go_through_the_custom_rejection_handler() {
    let issuer = TestIssuer::start().await;
    let layer = M2mAuthLayer::new(issuer.verifier().await).on_rejection(|e: AuthError| {
        (
            e.status(),
            format!("custom:{}:{}", e.reason_code(), e.description()),
        )
            .into_response()
    });
    let app = routes().route_layer(layer);
    let org = issuer.token().org("org_1").sign();
    let (status, _, body) = call(&app, "/global", &org).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "custom:global_only:only a token without an organization may call this"
    );
    let (_, _, body) = call(&app, "/roles", &org).await;
    assert_eq!(
        body,
        "custom:claim_mismatch:the token does not have a claim this route requires"
    );
    let (_, _, body) = call(&app, "/handler", &org).await;
    assert_eq!(
        body,
        "custom:insufficient_scope:the token lacks a required scope"
    );
}

#[tokio::test]
async fn unsafe_reason_codes_and_descriptions_are_never_sent() {
    let issuer = TestIssuer::start().await;
    let deny = |reason: &'static str, description: &'static str| {
        Rule::new(|_| false, Denial::forbidden(reason, description))
    };
    let ok = || async { "ok" };
    let routes = Router::new()
        .route(
            "/quote",
            get(ok).route_layer(deny("bad_quote", "say \"no\"")),
        )
        .route(
            "/newline",
            get(ok).route_layer(deny("Bad Code", "line\r\nx-injected: 1")),
        )
        .route("/percent", get(ok).route_layer(deny("pct", "100% sure")))
        .route(
            "/request",
            get(ok).route_layer(Rule::new(|_| false, Denial::invalid_request("é"))),
        );
    let http = routes
        .clone()
        .route_layer(M2mAuthLayer::new(issuer.verifier().await));
    let t = issuer.token().sign();
    let (status, www, _) = call(&http, "/quote", &t).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        www.unwrap()
            .contains(r#"error_description="the token is not allowed here""#)
    );
    let layer = M2mAuthLayer::new(issuer.verifier().await)
        .on_rejection(|e: AuthError| (e.status(), e.reason_code().to_owned()).into_response());
    let custom = routes.clone().route_layer(layer);
    assert_eq!(call(&custom, "/newline", &t).await.2, "forbidden");
    let (status, www, _) = call(&http, "/request", &t).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        www.unwrap()
            .contains(r#"error_description="the request is malformed""#)
    );
    // gRPC: the description goes into grpc-message as it is; nothing unsafe reaches it.
    let grpc =
        routes.route_layer(M2mAuthLayer::new(issuer.verifier().await).on_rejection(GrpcRejection));
    for path in ["/quote", "/newline", "/percent", "/request"] {
        let req = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap();
        let resp: Response = grpc.clone().oneshot(req).await.unwrap();
        let msg = resp.headers()["grpc-message"].to_str().unwrap().to_owned();
        assert!(!msg.contains(['"', '%', '\r', '\n']), "{path}: {msg}");
    }
}

#[test]
#[should_panic(expected = "Rule::any needs at least one rule")]
fn an_empty_any_is_a_route_definition_mistake() {
    let _ = Rule::any([]);
}

#[test]
#[should_panic(expected = "Rule::all needs at least one rule")]
fn an_empty_all_is_a_route_definition_mistake() {
    let _ = Rule::all(Vec::new());
}

#[tokio::test]
async fn a_wiring_mistake_inside_any_is_never_hidden_by_another_rule() {
    let issuer = TestIssuer::start().await;
    let app = Router::new()
        .route(
            "/x",
            get(|| async { "ok" }).route_layer(Rule::any([
                Rule::global_only(),
                // The route has no `{org}`: a wiring mistake.
                RequireTenant::path_param("org").into(),
            ])),
        )
        .route_layer(M2mAuthLayer::new(issuer.verifier().await));
    // The global token passes the first rule before the mistake is reached.
    assert_eq!(
        call(&app, "/x", &issuer.token().sign()).await.0,
        StatusCode::OK
    );
    let org = issuer.token().org("org_1").sign();
    assert_eq!(
        call(&app, "/x", &org).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
#[should_panic(expected = "is empty or contains a space")]
fn claim_includes_needs_one_word() {
    let _ = Rule::claim_includes("roles", "a b");
}

#[tokio::test]
async fn machine_only_on_an_issuer_that_accepts_users_too() {
    let issuer = TestIssuer::start().await;
    let verifier = m2m_guard::Verifier::builder()
        .issuer(issuer.config().accept_user_tokens())
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/agents",
            get(|| async { "ok" }).route_layer(Rule::machine_only()),
        )
        .route("/any", get(|| async { "ok" }))
        .route_layer(M2mAuthLayer::new(verifier));
    let user = issuer.token().user("alice").sign();
    let machine = issuer.token().sign();
    assert_eq!(call(&app, "/any", &user).await.0, StatusCode::OK);
    assert_eq!(call(&app, "/agents", &machine).await.0, StatusCode::OK);
    let (status, www, _) = call(&app, "/agents", &user).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.unwrap().contains("only a machine client"));
}
