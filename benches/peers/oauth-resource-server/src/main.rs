#[path = "../../harness.rs"]
mod harness;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use oauth_resource_server::axum::AuthLayer;
use oauth_resource_server::{KeyNaming, OAuthConfig, OAuthValidator, static_token_policy};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let f = harness::fixture();
    let config: OAuthConfig = serde_json::from_value(serde_json::json!({
        "enabled": true,
        "issuer": f.issuer,
        "jwks_uri": f.jwks_url,
        "audience": f.audience,
        "resource": f.audience,
        // The fixture tokens are RFC 9068 at+jwt, as m2m-guard checks by default.
        "require_at_jwt": true,
    }))
    .unwrap();
    let resolved = config.resolve(KeyNaming::Dotted("oauth")).unwrap().unwrap();
    let oauth = Arc::new(OAuthValidator::new(&resolved).unwrap());
    oauth.refresh_now().await.unwrap();
    let decision = static_token_policy(None, Some(&resolved), false).unwrap();
    let auth = AuthLayer::from_decision(decision, Some(oauth)).unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(auth);
    harness::measure::<_, Body, _>("oauth-resource-server", app, &f.tokens).await;
}
