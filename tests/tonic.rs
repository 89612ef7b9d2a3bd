//! The layer in front of a tonic gRPC service (grpc.health.v1), over real
//! HTTP/2 on loopback, with rejections as gRPC statuses.

use m2m_guard::test_util::TestIssuer;
use m2m_guard::{GrpcRejection, M2mAuthLayer, Principal, RequireScope, Verifier};
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckResponse, health_server};

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
    let verifier = issuer.verifier().await;
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

/// A gRPC handler that reads the verified principal: `check(service)` is
/// SERVING when `service` names the caller's client id, NOT_SERVING otherwise.
struct Whoami;

#[tonic::async_trait]
impl health_server::Health for Whoami {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| tonic::Status::internal("no principal"))?;
        let status = if principal.client_id() == Some(request.get_ref().service.as_str()) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

#[tokio::test]
async fn a_guard_and_a_handler_reading_the_principal_behind_the_layer() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .layer(M2mAuthLayer::new(verifier).on_rejection(GrpcRejection))
            .layer(RequireScope::all(["health:read"]))
            .add_service(health_server::HealthServer::new(Whoami))
            .serve_with_incoming(tokio_stream_from(listener))
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = |token: String, service: &str| {
        let mut client = HealthClient::new(channel.clone());
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        async move { client.check(req).await }
    };
    let reader = || {
        issuer
            .token()
            .client_id("svc-a")
            .scopes(["health:read"])
            .sign()
    };
    // The handler sees who called.
    let me = check(reader(), "svc-a").await.unwrap().into_inner();
    assert_eq!(me.status, ServingStatus::Serving as i32);
    let other = check(reader(), "svc-b").await.unwrap().into_inner();
    assert_eq!(other.status, ServingStatus::NotServing as i32);
    // The guard: a token without the scope is PERMISSION_DENIED, with the
    // scope it needs in the challenge.
    let denied = check(issuer.token().client_id("svc-a").sign(), "svc-a")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.message(), "the token lacks a required scope");
    let www = denied
        .metadata()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(www.contains(r#"scope="health:read""#), "{www}");
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_core::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
