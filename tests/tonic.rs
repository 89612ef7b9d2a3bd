//! The layer in front of a tonic gRPC service (grpc.health.v1), over real
//! HTTP/2 on loopback, with rejections as gRPC statuses.

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{GrpcRejection, M2mAuthLayer, Verifier};
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn grpc_requests_need_a_valid_token() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::builder()
        .issuer(issuer.config())
        .build()
        .await
        .unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .layer(M2mAuthLayer::new(verifier).on_rejection(GrpcRejection))
            .add_service(health)
            .serve_with_incoming(tokio_stream_from(listener))
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let call = |token: Option<String>| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            let mut req = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            client.check(req).await
        }
    };

    let ok = call(Some(issuer.token().sign())).await.unwrap();
    assert_eq!(
        ok.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let missing = call(None).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert_eq!(missing.message(), "a bearer token is required");

    let expired = call(Some(issuer.token().expired().sign()))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), tonic::Code::Unauthenticated);
    assert_eq!(expired.message(), "the token has expired");
    let www = expired
        .metadata()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(www.contains(r#"error="invalid_token""#), "{www}");
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_core::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
