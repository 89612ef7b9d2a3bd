#[path = "../../harness.rs"]
mod harness;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use jwt_authorizer::{IntoLayer, JwtAuthorizer, Validation};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let f = harness::fixture();
    let validation = Validation::new()
        .iss(&[f.issuer.as_str()])
        .aud(&[f.audience.as_str()])
        .nbf(true)
        .leeway(60);
    let auth = JwtAuthorizer::<Value>::from_jwks_url(&f.jwks_url)
        .validation(validation)
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(auth.into_layer());
    harness::measure::<_, Body, _>("jwt-authorizer", app, &f.tokens).await;
}
