//! The demo API shared by the `serve` and `quickstart` examples.

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use m2m_guard::{
    Dpop, M2mAuthLayer, Principal, ProtectedResource, RequireScope, RequireTenant, Verifier,
};
use serde_json::{Value, json};

/// `GET /healthz`, `GET /whoami`, `GET /orgs/{org}/users`, `POST /flags` and
/// the RFC 9728 metadata document.
pub(crate) fn demo_router(
    verifier: Verifier,
    resource: &ProtectedResource,
    dpop: Option<Dpop>,
) -> Router {
    let users = Router::new()
        .route("/orgs/{org}/users", get(list_users))
        .route_layer(RequireTenant::path_param("org"))
        .route_layer(RequireScope::all(["read:users"]));
    let flags = Router::new()
        .route("/flags", post(create_flag))
        .route_layer(RequireScope::all(["write:flags"]));
    let protected = Router::new()
        .route("/whoami", get(whoami))
        .merge(users)
        .merge(flags)
        // route_layer, not layer: an unknown path stays 404 instead of 401.
        .route_layer({
            let auth = M2mAuthLayer::new(verifier).protected_resource(resource);
            match dpop {
                Some(d) => auth.dpop(d),
                None => auth,
            }
        });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route_service(&resource.well_known_path(), resource.service())
        .merge(protected)
}

/// `GET /readyz` (200 while [`m2m_guard::Health::is_ready`], else 503; the
/// health as JSON either way) and `GET /metrics` (Prometheus text, when a
/// recorder is installed): for operators, outside the auth layer.
pub(crate) fn ops_router(
    verifier: Verifier,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    let scraped = verifier.clone();
    let readyz = get(move || {
        let verifier = verifier.clone();
        async move {
            let health = verifier.health();
            let status = if health.is_ready() {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            };
            (status, Json(health.to_json()))
        }
    });
    let router = Router::new().route("/readyz", readyz);
    match metrics {
        Some(handle) => router.route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                // Gauges brought up to date, batched counts handed over.
                drop(scraped.health());
                async move {
                    handle.run_upkeep();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        handle.render(),
                    )
                }
            }),
        ),
        None => router,
    }
}

/// Install the Prometheus recorder for m2m-guard's metrics (before the
/// verifier is built); `None` if another recorder is installed already.
pub(crate) fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| eprintln!("warning: no /metrics: {e}"))
        .ok()
}

async fn whoami(p: Principal) -> Json<Value> {
    Json(json!({
        "issuer": p.issuer(),
        "subject": p.subject(),
        "client_id": p.client_id(),
        "org": p.tenant(),
        "scopes": p.scopes(),
        "dpop_jkt": p.dpop_jkt(),
    }))
}

async fn list_users(Path(org): Path<String>, p: Principal) -> Json<Value> {
    Json(json!({
        "org": org,
        "users": [{"id": "u_1", "name": "Ada"}, {"id": "u_2", "name": "Grace"}],
        "requested_by": p.client_id(),
    }))
}

async fn create_flag(p: Principal) -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::CREATED,
        Json(json!({"created": true, "by": p.client_id(), "org": p.tenant()})),
    )
}
