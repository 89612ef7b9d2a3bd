//! m2m-guard in the peer harness; also `fixture DIR`, which starts the test
//! issuer, writes tokens and its address to DIR, and serves until stdin closes.

#[path = "../../harness.rs"]
mod harness;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use m2m_guard::test_util::{DEFAULT_AUDIENCE, TestIssuer};
use m2m_guard::{Issuer, M2mAuthLayer, Preset, Verifier};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fixture") {
        let dir = &args[2];
        let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5000);
        let issuer = TestIssuer::start().await;
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                // nbf: tower-oauth2-resource-server requires it by default.
                issuer
                    .token()
                    .client_id(format!("client-{i}"))
                    .org("org_1")
                    .scopes(["read:users"])
                    .not_before_in(-5)
                    .sign()
            })
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/tokens.txt"), tokens.join("\n")).unwrap();
        std::fs::write(
            format!("{dir}/env"),
            format!(
                "ISSUER={}\nJWKS_URL={}\nAUDIENCE={DEFAULT_AUDIENCE}\n",
                issuer.issuer(),
                issuer.jwks_url()
            ),
        )
        .unwrap();
        println!("ready");
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        return;
    }
    let f = harness::fixture();
    let verifier = Verifier::builder()
        .issuer(
            // The fixture's tokens are Kinde's shape (machine tokens carry
            // `gty`): the preset that reads them, as a user would configure.
            Issuer::new(&f.issuer)
                .preset(Preset::Kinde)
                .audience(&f.audience)
                .jwks_url(&f.jwks_url),
        )
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route_layer(M2mAuthLayer::new(verifier));
    harness::measure::<_, Body, _>("m2m-guard", app, &f.tokens).await;
}
