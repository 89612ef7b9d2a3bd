//! The layer in front of a tonic gRPC service (grpc.health.v1), over real
//! HTTP/2 on loopback, with rejections as gRPC statuses.

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{GrpcRejection, M2mAuthLayer, Verifier};
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Serve grpc.health.v1 behind the auth layer on loopback; a channel to it.
async fn serve(
    verifier: Verifier,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Channel {
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
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

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
    let channel = serve(verifier, health).await;

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

    // The issuer goes down before its keys ever loaded: UNAVAILABLE with a
    // retry hint, never UNAUTHENTICATED for our outage.
    let down = TestIssuer::start().await;
    down.set_outage(m2m_guard::test_util::Outage::Status(500));
    let (_, health) = tonic_health::server::health_reporter();
    let verifier = Verifier::builder()
        .issuer(down.config().jwks_url(down.jwks_url()))
        .build()
        .await
        .unwrap();
    let channel = serve(verifier, health).await;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", down.token().sign()).parse().unwrap(),
    );
    let unavailable = HealthClient::new(channel).check(req).await.unwrap_err();
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    let retry: u64 = unavailable
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_core::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
