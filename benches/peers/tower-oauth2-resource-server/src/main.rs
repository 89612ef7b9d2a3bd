#[path = "../../harness.rs"]
mod harness;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use tower_oauth2_resource_server::server::OAuth2ResourceServer;
use tower_oauth2_resource_server::tenant::TenantConfiguration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let f = harness::fixture();
    let server = <OAuth2ResourceServer>::builder()
        .add_tenant(
            TenantConfiguration::builder(&f.issuer)
                .jwks_url(&f.jwks_url)
                .audiences(&[&f.audience])
                .build()
                .await
                .unwrap(),
        )
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(server.into_layer());
    harness::measure::<_, Body, _>("tower-oauth2-resource-server", app, &f.tokens).await;
}
