//! The tower layer, guards and extractors, through real axum routers.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use m2m_guard::test_util::{Outage, TestIssuer};
use m2m_guard::{
    AuthError, ClientId, M2mAuthLayer, Principal, ProtectedResource, RequireScope, RequireTenant,
    ScopeSet, Scoped, Scopes, Tenant, Verifier,
};
use std::time::Duration;
use tower::ServiceExt as _;

struct Fixture {
    issuer: TestIssuer,
    verifier: Verifier,
}

async fn fixture() -> Fixture {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    Fixture { issuer, verifier }
}

struct WriteFlags;
impl ScopeSet for WriteFlags {
    const SCOPES: &'static [&'static str] = &["write:flags"];
}

fn app(verifier: Verifier) -> Router {
    let resource = ProtectedResource::new("https://api.example.test/v1")
        .authorization_servers(verifier.issuers())
        .scopes_supported(["read:users", "write:flags"]);
    app_with(
        M2mAuthLayer::new(verifier).protected_resource(&resource),
        &resource,
    )
}

fn app_with<R>(layer: M2mAuthLayer<R>, resource: &ProtectedResource) -> Router
where
    R: m2m_guard::OnRejection<Body> + Clone,
{
    let users = Router::new()
        .route("/orgs/{org}/users", get(|t: Tenant| async move { t.0 }))
        .route_layer(RequireTenant::path_param("org"))
        .route_layer(RequireScope::all(["read:users"]));
    let admin = Router::new()
        .route("/admin/orgs/{org}", get(|| async { "admin view" }))
        .route_layer(RequireTenant::path_param("org").allow_global_with_scope("admin:orgs"));
    let reports = Router::new()
        .route("/reports", get(|| async { "report" }))
        .route_layer(RequireScope::any(["read:reports", "admin"]));
    let header_tenant = Router::new()
        .route("/by-header", get(|| async { "ok" }))
        .route_layer(RequireTenant::header(header::HeaderName::from_static(
            "x-org-id",
        )));
    Router::new()
        .route(
            "/whoami",
            get(|p: Principal| async move { p.client_id().unwrap_or("-").to_owned() }),
        )
        .route("/client", get(|c: ClientId| async move { c.0 }))
        .route(
            "/scopes",
            get(|s: Scopes| async move { s.iter().collect::<Vec<_>>().join(",") }),
        )
        .route(
            "/flags",
            post(|Scoped(p, ..): Scoped<WriteFlags>| async move {
                p.client_id().unwrap_or("-").to_owned()
            }),
        )
        .merge(users)
        .merge(admin)
        .merge(reports)
        .merge(header_tenant)
        // route_layer, not layer: an unknown path stays 404 instead of 401.
        .route_layer(layer)
        .route_service(&resource.well_known_path(), resource.service())
}

fn get_req(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, Option<String>, String, Response<()>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let www = parts
        .headers
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (parts.status, www, body, Response::from_parts(parts, ()))
}

const META: &str = "https://api.example.test/.well-known/oauth-protected-resource/v1";

#[tokio::test]
async fn no_token_is_401_with_a_bare_challenge() {
    let f = fixture().await;
    let app = app(f.verifier);
    let (status, www, body, resp) = send(&app, get_req("/whoami", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        www.as_deref(),
        Some(
            format!(
                r#"Bearer realm="api", scope="read:users write:flags", resource_metadata="{META}""#
            )
            .as_str()
        )
    );
    assert_eq!(
        body,
        r#"{"error":"unauthorized","error_description":"a bearer token is required"}"#
    );
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    // Another scheme is no bearer token either.
    let req = Request::builder()
        .uri("/whoami")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwdw==")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_principal() {
    let f = fixture().await;
    let app = app(f.verifier);
    let t = f
        .issuer
        .token()
        .client_id("svc-a")
        .scopes(["read:users", "x"])
        .sign();
    assert_eq!(send(&app, get_req("/whoami", Some(&t))).await.2, "svc-a");
    assert_eq!(send(&app, get_req("/client", Some(&t))).await.2, "svc-a");
    assert_eq!(
        send(&app, get_req("/scopes", Some(&t))).await.2,
        "read:users,x"
    );
    // Scheme is case-insensitive.
    let req = Request::builder()
        .uri("/whoami")
        .header(header::AUTHORIZATION, format!("bEaReR {t}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn invalid_token_is_401_invalid_token_without_token_contents() {
    let f = fixture().await;
    let app = app(f.verifier);
    let t = f.issuer.token().client_id("leaky-client").expired().sign();
    let (status, www, body, _) = send(&app, get_req("/whoami", Some(&t))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        www.as_deref(),
        Some(
            format!(
                r#"Bearer realm="api", error="invalid_token", error_description="the token has expired", scope="read:users write:flags", resource_metadata="{META}""#
            )
            .as_str()
        )
    );
    assert_eq!(
        body,
        r#"{"error":"invalid_token","error_description":"the token has expired"}"#
    );
    assert!(!body.contains("leaky-client"));
    let (status, www, ..) = send(&app, get_req("/whoami", Some("not.a.jwt"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        www.unwrap()
            .contains(r#"error_description="the token is malformed""#)
    );
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request() {
    let f = fixture().await;
    let app = app(f.verifier);
    let t = f.issuer.token().sign();
    let req = Request::builder()
        .uri("/whoami")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let (status, www, body, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        www.as_deref(),
        Some(
            format!(
                r#"Bearer realm="api", error="invalid_request", error_description="more than one authorization header", resource_metadata="{META}""#
            )
            .as_str()
        )
    );
    assert_eq!(
        body,
        r#"{"error":"invalid_request","error_description":"more than one authorization header"}"#
    );
    let (status, ..) = send(
        &app,
        get_req(&format!("/whoami?access_token={t}"), Some(&t)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let req = Request::builder()
        .uri("/whoami")
        .header(header::AUTHORIZATION, "Bearer")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
}

/// A cached token's request skips the token's syntax check (only verified,
/// well-formed tokens are cached): a malformed token, even one that starts
/// with a cached token, is still the client's 400, never a 401 or a pass.
#[tokio::test]
async fn malformed_tokens_are_400_next_to_a_cached_one() {
    let f = fixture().await;
    let app = app(f.verifier.clone());
    let t = f.issuer.token().org("org_1").sign();
    for _ in 0..3 {
        assert_eq!(
            send(&app, get_req("/whoami", Some(&t))).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(f.verifier.cached_tokens(), 1);
    let with = |value: &[u8]| {
        Request::builder()
            .uri("/whoami")
            .header(
                header::AUTHORIZATION,
                header::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(Body::empty())
            .unwrap()
    };
    let malformed_token =
        r#"{"error":"invalid_request","error_description":"malformed bearer token"}"#;
    let malformed_dpop_token =
        r#"{"error":"invalid_request","error_description":"malformed DPoP token"}"#;
    let malformed_header =
        r#"{"error":"invalid_request","error_description":"malformed authorization header"}"#;
    // Same length and same last 16 bytes as the cached token, one byte
    // in the middle changed: found by hash and tag, told apart only by
    // the whole-token comparison.
    let same_shape = |b: u8| {
        let mut v = format!("Bearer {t}").into_bytes();
        let mid = v.len() / 2;
        v[mid] = b;
        v
    };
    for (value, body) in [
        (same_shape(b'!'), malformed_token),
        (same_shape(b'"'), malformed_token),
        (same_shape(0xff), malformed_header),
        (format!("Bearer {t} extra").into_bytes(), malformed_token),
        (format!("Bearer {t}!").into_bytes(), malformed_token),
        (format!("Bearer {t}=x").into_bytes(), malformed_token),
        (format!("Bearer a\"{t}").into_bytes(), malformed_token),
        // DPoP is off here: a DPoP token is no token, a malformed one a 400.
        (format!("DPoP {t}!").into_bytes(), malformed_dpop_token),
        (
            [format!("Bearer {t}").as_bytes(), b"\xff"].concat(),
            malformed_header,
        ),
    ] {
        let (status, _, got, _) = send(&app, with(&value)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&value)
        );
        assert_eq!(got, body, "{}", String::from_utf8_lossy(&value));
    }
    // The cached token itself, with extra spaces after the scheme.
    let (status, ..) = send(&app, with(format!("Bearer   {t}").as_bytes())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn missing_scope_is_403_with_the_scope_attribute() {
    let f = fixture().await;
    let app = app(f.verifier);
    let t = f.issuer.token().org("org_1").scopes(["read:flags"]).sign();
    let expected = format!(
        r#"Bearer realm="api", error="insufficient_scope", error_description="the token lacks a required scope", scope="read:users", resource_metadata="{META}""#
    );
    let (status, www, body, _) = send(&app, get_req("/orgs/org_1/users", Some(&t))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(www.as_deref(), Some(expected.as_str()));
    assert_eq!(
        body,
        r#"{"error":"insufficient_scope","error_description":"the token lacks a required scope"}"#
    );
    // The extractor-style guard answers the same way.
    let req = Request::builder()
        .method("POST")
        .uri("/flags")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let (status, www, ..) = send(&app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.unwrap().contains(r#"scope="write:flags""#));
    let ok = f.issuer.token().scopes(["write:flags"]).sign();
    let req = Request::builder()
        .method("POST")
        .uri("/flags")
        .header(header::AUTHORIZATION, format!("Bearer {ok}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn any_of_scopes() {
    let f = fixture().await;
    let app = app(f.verifier);
    for (scopes, want) in [
        (vec!["read:reports"], StatusCode::OK),
        (vec!["admin"], StatusCode::OK),
        (vec!["read:users"], StatusCode::FORBIDDEN),
    ] {
        let t = f.issuer.token().scopes(scopes.clone()).sign();
        let (status, www, ..) = send(&app, get_req("/reports", Some(&t))).await;
        assert_eq!(status, want, "{scopes:?}");
        if want == StatusCode::FORBIDDEN {
            assert!(www.unwrap().contains(r#"scope="read:reports admin""#));
        }
    }
}

#[tokio::test]
async fn tenant_isolation() {
    let f = fixture().await;
    let app = app(f.verifier);
    let org1 = f.issuer.token().org("org_1").scopes(["read:users"]).sign();
    let (status, _, body, _) = send(&app, get_req("/orgs/org_1/users", Some(&org1))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "org_1"));
    // Another org's data.
    let (status, www, body, _) = send(&app, get_req("/orgs/org_2/users", Some(&org1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.as_deref(),
        Some(
            format!(
                r#"Bearer realm="api", error="insufficient_scope", error_description="the token is not valid for this organization", resource_metadata="{META}""#
            )
            .as_str()
        )
    );
    assert!(!body.contains("org_1"));
    // A global token, even with the scope, is not any org's.
    let global = f.issuer.token().scopes(["read:users"]).sign();
    assert_eq!(
        send(&app, get_req("/orgs/org_1/users", Some(&global)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Unless the route opts in for an admin scope.
    let admin = f.issuer.token().scopes(["admin:orgs"]).sign();
    assert_eq!(
        send(&app, get_req("/admin/orgs/org_9", Some(&admin)))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get_req("/admin/orgs/org_9", Some(&global)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // An org-scoped token stays bound to its org even with the admin scope.
    let org_admin = f.issuer.token().org("org_1").scopes(["admin:orgs"]).sign();
    assert_eq!(
        send(&app, get_req("/admin/orgs/org_9", Some(&org_admin)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, get_req("/admin/orgs/org_1", Some(&org_admin)))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tenant_from_a_header() {
    let f = fixture().await;
    let app = app(f.verifier);
    let t = f.issuer.token().org("org_1").sign();
    let with = |v: Option<&str>| {
        let mut b = Request::builder()
            .uri("/by-header")
            .header(header::AUTHORIZATION, format!("Bearer {t}"));
        if let Some(v) = v {
            b = b.header("x-org-id", v);
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, with(Some("org_1"))).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, with(Some("org_2"))).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, www, ..) = send(&app, with(None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(www.unwrap().contains(r#"error="invalid_request""#));
}

#[tokio::test]
async fn unknown_paths_stay_404_and_public_routes_need_no_token() {
    let f = fixture().await;
    let app = app(f.verifier);
    assert_eq!(
        send(&app, get_req("/nope", None)).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, body, resp) = send(
        &app,
        get_req("/.well-known/oauth-protected-resource/v1", None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["resource"], "https://api.example.test/v1");
    assert_eq!(doc["authorization_servers"][0], f.issuer.issuer());
    assert_eq!(doc["bearer_methods_supported"][0], "header");
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["read:users", "write:flags"])
    );
}

#[tokio::test]
async fn keys_unavailable_is_503_with_retry_after() {
    let issuer = TestIssuer::start().await;
    issuer.set_outage(Outage::Status(500));
    let verifier = Verifier::builder()
        .issuer(issuer.config().jwks_url(issuer.jwks_url()))
        .build()
        .await
        .unwrap();
    let app = app(verifier);
    let (status, www, body, resp) =
        send(&app, get_req("/whoami", Some(&issuer.token().sign()))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(www, None);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry));
    assert_eq!(
        body,
        r#"{"error":"temporarily_unavailable","error_description":"the signing keys are temporarily unavailable"}"#
    );
}

#[tokio::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_tokens() {
    let f = fixture().await;
    let app = Router::new()
        .route(
            "/maybe",
            get(|p: Option<Principal>, t: Option<Tenant>| async move {
                format!(
                    "{}|{}",
                    p.and_then(|p| p.client_id().map(str::to_owned))
                        .unwrap_or("anon".into()),
                    t.map(|t| t.0).unwrap_or("-".into())
                )
            }),
        )
        .route(
            "/must",
            get(|p: Principal| async move { p.issuer().to_owned() }),
        )
        .route("/scoped", get(|| async { "ok" }))
        .route_layer(RequireScope::all(["s"]))
        .layer(M2mAuthLayer::new(f.verifier).optional());
    // route_layer applies to every route above it; use a second router for the unguarded ones.
    let open = Router::new()
        .route(
            "/maybe",
            get(|p: Option<Principal>| async move {
                p.and_then(|p| p.client_id().map(str::to_owned))
                    .unwrap_or("anon".into())
            }),
        )
        .route(
            "/must",
            get(|p: Principal| async move { p.issuer().to_owned() }),
        )
        .layer(
            M2mAuthLayer::new(
                Verifier::builder()
                    .issuer(f.issuer.config())
                    .build()
                    .await
                    .unwrap(),
            )
            .optional(),
        );
    assert_eq!(send(&open, get_req("/maybe", None)).await.2, "anon");
    let t = f
        .issuer
        .token()
        .client_id("c1")
        .org("o1")
        .scopes(["s"])
        .sign();
    assert_eq!(send(&open, get_req("/maybe", Some(&t))).await.2, "c1");
    assert_eq!(
        send(
            &open,
            get_req("/maybe", Some(&f.issuer.token().expired().sign()))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    // A required extractor in optional mode answers 401 for an anonymous request.
    let (status, www, ..) = send(&open, get_req("/must", None)).await;
    assert_eq!(
        (status, www.as_deref()),
        (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="api""#))
    );
    // Guards too.
    assert_eq!(
        send(&app, get_req("/scoped", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&app, get_req("/maybe", Some(&t))).await.2, "c1|o1");
}

#[tokio::test]
async fn extractors_without_the_layer_explain_the_wiring() {
    let app = Router::new()
        .route(
            "/p",
            get(|p: Principal| async move { p.issuer().to_owned() }),
        )
        .route(
            "/o",
            get(|p: Option<Principal>| async move { format!("{}", p.is_some()) }),
        )
        .route(
            "/g",
            get(|| async { "unreachable" }).route_layer(RequireScope::all(["x"])),
        );
    // The wiring mistake is explained in the log (at error level), never to
    // the client: a bare 500.
    let logs = support::capture_logs();
    for path in ["/p", "/o", "/g"] {
        let (status, www, body, _) = send(&app, get_req(path, None)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(www, None);
        assert_eq!(body, "", "{path}: internal text sent to the client");
    }
    let out = logs.text();
    assert_eq!(
        out.matches("ERROR").count(),
        3,
        "one error line per request:\n{out}"
    );
    assert!(
        out.contains("no M2mAuthLayer ran before this guard or extractor"),
        "{out}"
    );
    assert!(out.contains("move it outside the guards"), "{out}");
}

#[tokio::test]
async fn custom_rejections_apply_to_the_layer_and_the_guards() {
    let f = fixture().await;
    let resource = ProtectedResource::new("https://api.example.test/v1");
    let layer = M2mAuthLayer::new(f.verifier)
        .realm("acme")
        .on_rejection(|e: AuthError| {
            let mut r = (e.status(), format!("custom:{}", e.reason_code())).into_response();
            if let Some(v) = e.www_authenticate() {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r.headers_mut()
                .insert("x-custom", HeaderValue::from_static("1"));
            r
        });
    let app = app_with(layer, &resource);
    let (status, www, body, resp) = send(&app, get_req("/whoami", None)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "custom:missing_token")
    );
    assert_eq!(www.as_deref(), Some(r#"Bearer realm="acme""#));
    assert_eq!(resp.headers()["x-custom"], "1");
    let t = f.issuer.token().org("org_1").sign();
    let (status, _, body, _) = send(&app, get_req("/orgs/org_2/users", Some(&t))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "custom:insufficient_scope")
    );
    let t = f.issuer.token().org("org_1").scopes(["read:users"]).sign();
    let (status, _, body, _) = send(&app, get_req("/orgs/org_2/users", Some(&t))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "custom:wrong_tenant")
    );
}

#[tokio::test]
async fn the_authorization_header_is_marked_sensitive_for_inner_layers() {
    let f = fixture().await;
    let t = f.issuer.token().sign();
    // Answers whether the handler sees the header marked sensitive.
    let echo = || {
        Router::new().route(
            "/",
            get(|req: Request<Body>| async move {
                req.headers()[header::AUTHORIZATION]
                    .is_sensitive()
                    .to_string()
            }),
        )
    };
    let app = echo().layer(M2mAuthLayer::new(f.verifier.clone()));
    // Verified, verified again (and cached), then a cache hit: each path.
    for _ in 0..3 {
        assert_eq!(send(&app, get_req("/", Some(&t))).await.2, "true");
    }
    assert_eq!(f.verifier.cached_tokens(), 1);
    // Another scheme's credentials passed on by an optional layer: the same.
    let anonymous = echo().layer(M2mAuthLayer::new(f.verifier.clone()).optional());
    let basic = Request::builder()
        .uri("/")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&anonymous, basic).await.2, "true");
}

/// Only a second `Authorization` makes a request malformed: other headers
/// may repeat (the layer looks for a second value only when one does).
#[tokio::test]
async fn only_a_repeated_authorization_header_is_refused() {
    let f = fixture().await;
    let t = f.issuer.token().sign();
    let app = app(f.verifier.clone());
    let with = |extra: (header::HeaderName, &str)| {
        Request::builder()
            .uri("/whoami")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .header(header::ACCEPT, "text/plain")
            .header(extra.0, extra.1)
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..3 {
        let (status, ..) = send(&app, with((header::ACCEPT, "application/json"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, ..) = send(&app, with((header::AUTHORIZATION, "Bearer x.y.z"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn repeated_tokens_skip_signature_work_but_not_expiry() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::builder()
        .issuer(issuer.config().leeway(Duration::ZERO))
        .clock(issuer.clock())
        .build()
        .await
        .unwrap();
    let app = app(verifier.clone());
    let t = issuer.token().expires_in(Duration::from_secs(2)).sign();
    for _ in 0..3 {
        assert_eq!(
            send(&app, get_req("/whoami", Some(&t))).await.0,
            StatusCode::OK
        );
    }
    // Through the layer too, the token entered the cache on its second sighting.
    assert_eq!(verifier.cached_tokens(), 1);
    // On the test clock, with nothing in between to drop the entry (only an
    // insert that needs room drops expired entries): the recheck on the hit
    // is what refuses it.
    issuer.clock().advance(Duration::from_secs(3));
    let (status, www, ..) = send(&app, get_req("/whoami", Some(&t))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(www.unwrap().contains("expired"));
}

#[tokio::test]
async fn the_layer_works_in_plain_hyper_over_real_http() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    let f = fixture().await;
    let svc = ServiceBuilder::new()
        .layer(M2mAuthLayer::new(f.verifier.clone()))
        .service_fn(|req: Request<hyper::body::Incoming>| async move {
            let who = req
                .extensions()
                .get::<Principal>()
                .and_then(|p| p.tenant().map(str::to_owned));
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                who.unwrap_or_default(),
            ))))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = reqwest::Client::new();
    let t = f.issuer.token().org("org_h").sign();
    let ok = client
        .get(format!("http://{addr}/"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "org_h");
    let denied = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["www-authenticate"],
        r#"Bearer realm="api""#
    );
}

#[test]
fn layer_service_and_futures_are_send() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    type Inner = axum::routing::Route;
    assert_send_sync::<M2mAuthLayer>();
    assert_send_sync::<Verifier>();
    assert_send_sync::<Principal>();
    assert_send::<m2m_guard::service::M2mAuth<Inner>>();
    assert_send::<m2m_guard::future::ResponseFuture<Inner, Body, m2m_guard::DefaultRejection>>();
    assert_send::<m2m_guard::service::Guarded<Inner, RequireScope>>();
    assert_send::<
        m2m_guard::future::GuardFuture<<Inner as tower::Service<Request<Body>>>::Future, Body>,
    >();
}

#[tokio::test]
async fn an_undecodable_path_parameter_is_the_clients_400_not_a_500() {
    let f = fixture().await;
    let app = app(f.verifier);
    let org1 = f.issuer.token().org("org_1").scopes(["read:users"]).sign();
    for path in ["/orgs/%FF/users", "/orgs/%C3%28/users"] {
        let (status, www, _, _) = send(&app, get_req(path, Some(&org1))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            www.as_deref()
                .is_some_and(|w| w.contains(r#"error="invalid_request""#)),
            "{www:?}"
        );
    }
    // A percent-encoded valid org still works.
    let (status, _, body, _) = send(&app, get_req("/orgs/org%5F1/users", Some(&org1))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "org_1"));
}

#[test]
#[should_panic(expected = "RequireScope::all needs at least one scope")]
fn require_scope_all_of_nothing_is_refused() {
    let _ = RequireScope::all(Vec::<String>::new());
}

#[test]
#[should_panic(expected = "RequireScope::any needs at least one scope")]
fn require_scope_any_of_nothing_is_refused() {
    let _ = RequireScope::any(Vec::<String>::new());
}

#[test]
fn require_scope_refuses_what_is_not_a_scope() {
    for bad in [
        "",
        "read users",
        "tab\tscope",
        "quote\"d",
        "back\\slash",
        "é",
    ] {
        let r = std::panic::catch_unwind(|| RequireScope::all(["ok", bad]));
        assert!(r.is_err(), "{bad:?} accepted");
    }
    let _ = RequireScope::all(["read:users", "api://app/.default", "a!#$%&'()*+,-./"]);
}

#[tokio::test]
async fn a_token_in_a_form_body_never_authenticates() {
    // RFC 6750 §2.2: the layer does not read bodies, so a form-body token is
    // no token at all: 401 here, anonymous in optional mode (README).
    let f = fixture().await;
    let t = f.issuer.token().scopes(["write:flags"]).sign();
    let form = |path: &str| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("access_token={t}")))
            .unwrap()
    };
    let app = app(f.verifier.clone());
    let (status, www, _, _) = send(&app, form("/flags")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        www.is_some_and(|w| !w.contains("error=")),
        "a bare challenge"
    );
    // Optional mode: the request goes through as anonymous, never as the token's client.
    let optional = Router::new()
        .route(
            "/whoami",
            post(|p: Option<Principal>| async move {
                p.and_then(|p| p.client_id().map(str::to_owned))
                    .unwrap_or_else(|| "anonymous".into())
            }),
        )
        .route_layer(M2mAuthLayer::new(f.verifier).optional());
    let (status, _, body, _) = send(&optional, form("/whoami")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
}

/// The layer and its service show their settings in `Debug` (the service
/// its inner service too), never a token.
#[tokio::test]
async fn the_layer_and_its_service_show_their_settings() {
    use tower::Layer as _;
    let f = fixture().await;
    let token = f.issuer.token().sign();
    f.verifier.verify(&token).await.unwrap();
    let layer = M2mAuthLayer::new(f.verifier.clone()).optional();
    let shown = format!("{layer:?}");
    assert!(
        shown.starts_with("M2mAuthLayer {") && shown.contains("optional: true"),
        "{shown}"
    );
    let inner = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    });
    let shown = format!("{:?}", layer.layer(inner));
    for part in [
        "M2mAuth {",
        "inner: ServiceFn",
        "verifier: Verifier",
        "optional: true",
        "strip_authorization: false",
        "on_rejection: \"m2m_guard::response::DefaultRejection\"",
    ] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
    assert!(!shown.contains(&token[token.len() - 20..]), "{shown}");
}

/// `challenge_scopes` chooses the `scope` of a 401 challenge, whatever the
/// order of the settings; an empty choice leaves `scope` out.
#[tokio::test]
async fn challenge_scopes_choose_what_a_401_asks_for() {
    let f = fixture().await;
    let resource = ProtectedResource::new("https://api.example.test/v1")
        .authorization_servers(f.verifier.issuers())
        .scopes_supported(["read:users", "write:flags"]);
    let challenge = |layer: M2mAuthLayer| {
        let app = app_with(layer, &resource);
        async move { send(&app, get_req("/whoami", None)).await }
    };
    let chosen = format!(r#"Bearer realm="api", scope="read:users", resource_metadata="{META}""#);
    for layer in [
        M2mAuthLayer::new(f.verifier.clone())
            .challenge_scopes(["read:users"])
            .protected_resource(&resource),
        M2mAuthLayer::new(f.verifier.clone())
            .protected_resource(&resource)
            .challenge_scopes(["read:users"]),
    ] {
        let (status, www, ..) = challenge(layer).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(www.as_deref(), Some(chosen.as_str()));
    }
    let none = format!(r#"Bearer realm="api", resource_metadata="{META}""#);
    let layer = M2mAuthLayer::new(f.verifier.clone())
        .protected_resource(&resource)
        .challenge_scopes(Vec::<String>::new());
    let (status, www, ..) = challenge(layer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some(none.as_str()));
}

/// An inner service that is ready only when told.
#[derive(Clone)]
struct Gate(bool);

impl tower::Service<Request<Body>> for Gate {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        std::future::ready(Ok("inner".into_response()))
    }
}

/// The layer's service is ready when its inner service is, and only then:
/// an inner concurrency limit or buffer keeps its backpressure.
#[tokio::test]
async fn the_service_is_ready_only_when_its_inner_service_is() {
    use tower::{Layer as _, Service as _};
    let f = fixture().await;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let layer = M2mAuthLayer::new(f.verifier.clone());
    assert!(layer.layer(Gate(false)).poll_ready(&mut cx).is_pending());
    assert!(matches!(
        layer.layer(Gate(true)).poll_ready(&mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
}

/// A response future shows its state: rejected at once (no token), calling
/// the inner service at once (a cached token), or verifying (a token not
/// cached yet); never the token.
#[tokio::test]
async fn a_response_future_shows_its_state() {
    use tower::{Layer as _, Service as _};
    let f = fixture().await;
    let mut svc = M2mAuthLayer::new(f.verifier.clone()).layer(Gate(true));
    let token = f.issuer.token().sign();
    let show = |fut: &dyn std::fmt::Debug| format!("{fut:?}");
    // Cached on its second sighting (the admission filter).
    for _ in 0..2 {
        let fut = svc.call(get_req("/", Some(&token)));
        assert_eq!(show(&fut), r#"ResponseFuture { state: "verifying", .. }"#);
        assert_eq!(fut.await.unwrap().status(), StatusCode::OK);
    }
    let fut = svc.call(get_req("/", Some(&token)));
    assert_eq!(show(&fut), r#"ResponseFuture { state: "calling", .. }"#);
    assert_eq!(fut.await.unwrap().status(), StatusCode::OK);
    let fut = svc.call(get_req("/", None));
    assert_eq!(show(&fut), r#"ResponseFuture { state: "rejected", .. }"#);
    assert_eq!(fut.await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
