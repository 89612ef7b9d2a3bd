//! Certificate-bound tokens (RFC 8705 §3): `cnf.x5t#S256` checked against
//! the client certificate of the connection or of a trusted proxy header,
//! and never read from a header that was not configured. With the TLS
//! server here, also: https metadata never names a plaintext endpoint.

mod support;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use m2m_guard::test_util::TestIssuer;
use m2m_guard::{ClientCertificate, M2mAuthLayer, Mtls, Principal};
use serde_json::json;
use sha2::{Digest, Sha256};

const CERT: &[u8] = b"0\x82\x02\x0a the client's certificate (DER)";
const OTHER: &[u8] = b"0\x82\x02\x0a another certificate";

fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

fn hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn escaped_pem(der: &[u8]) -> String {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(der)
    );
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn status(
    app: &Router,
    token: &str,
    headers: &[(&str, String)],
    cert: Option<&[u8]>,
) -> (u16, String) {
    answer(app, format!("Bearer {token}"), headers, cert).await
}

/// Status and challenge of `GET /whoami` with this `Authorization` value,
/// these headers and, if any, this certificate from the connection.
async fn answer(
    app: &Router,
    authorization: String,
    headers: &[(&str, String)],
    cert: Option<&[u8]>,
) -> (u16, String) {
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder()
        .uri("/whoami")
        .header("authorization", authorization);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    if let Some(c) = cert {
        req.extensions_mut().insert(ClientCertificate(c.to_vec()));
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let www = support::challenge(resp.headers());
    (resp.status().as_u16(), www)
}

fn app(layer: M2mAuthLayer) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|p: Principal| async move { p.x5t_s256().unwrap_or("-").to_owned() }),
        )
        .layer(layer)
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let bound = issuer
        .token()
        .claim("cnf", json!({"x5t#S256": x5t(CERT)}))
        .sign();
    let plain = issuer.token().sign();

    for (name, layer, good, bad) in [
        (
            "connection",
            Mtls::from_connection(),
            (vec![], Some(CERT)),
            (vec![], Some(OTHER)),
        ),
        (
            "envoy",
            Mtls::from_envoy_xfcc(),
            (
                vec![(
                    "x-forwarded-client-cert",
                    format!("By=spiffe://api;Hash={}", hex(CERT)),
                )],
                None,
            ),
            (
                vec![("x-forwarded-client-cert", format!("Hash={}", hex(OTHER)))],
                None,
            ),
        ),
        (
            "nginx",
            Mtls::from_pem_header("x-client-cert"),
            (vec![("x-client-cert", escaped_pem(CERT))], None),
            (vec![("x-client-cert", escaped_pem(OTHER))], None),
        ),
    ] {
        let app = app(M2mAuthLayer::new(verifier.clone()).mtls(layer));
        // Twice each: full verification, then the token cache.
        for _ in 0..3 {
            assert_eq!(status(&app, &bound, &good.0, good.1).await.0, 200, "{name}");
            let (s, www) = status(&app, &bound, &bad.0, bad.1).await;
            assert_eq!(s, 401, "{name}");
            assert!(www.contains("another client certificate"), "{name}: {www}");
            let (s, www) = status(&app, &bound, &[], None).await;
            assert_eq!(s, 401, "{name}: no certificate");
            assert!(www.contains("another client certificate"), "{name}: {www}");
            // Unbound tokens do not care.
            assert_eq!(status(&app, &plain, &[], None).await.0, 200, "{name}");
        }
        // Two hops in XFCC, or a duplicated header: not guessed.
        if name == "envoy" {
            let two = format!("Hash={},Hash={}", hex(CERT), hex(CERT));
            let (s, _) = status(&app, &bound, &[("x-forwarded-client-cert", two)], None).await;
            assert_eq!(s, 401);
        }
    }

    // Not configured: the header is never read, the token is refused.
    let bearer_only = app(M2mAuthLayer::new(verifier.clone()));
    let forged = [("x-forwarded-client-cert", format!("Hash={}", hex(CERT)))];
    let (s, www) = status(&bearer_only, &bound, &forged, Some(CERT)).await;
    assert_eq!(s, 401);
    assert!(www.contains("bound to a key"), "{www}");
    // A token bound to a DPoP key is not helped by a certificate.
    let dpop_bound = issuer
        .token()
        .claim("cnf", json!({"jkt": "abc", "x5t#S256": x5t(CERT)}))
        .sign();
    let direct = app(M2mAuthLayer::new(verifier).mtls(Mtls::from_connection()));
    assert_eq!(status(&direct, &dpop_bound, &[], Some(CERT)).await.0, 401);
}

/// A token bound both to a DPoP key and to a certificate, presented as
/// `DPoP`: the proof proves the key, not the certificate, so the
/// certificate is checked too (and the token refused where no certificate
/// source is set); any other confirmation method is refused.
#[tokio::test]
async fn a_dpop_request_proves_the_key_but_not_the_certificate() {
    use m2m_guard::Dpop;
    use m2m_guard::test_util::DpopKey;
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let key = DpopKey::new();
    let token = |cnf: serde_json::Value| issuer.token().claim("cnf", cnf).sign();
    let send = |app: Router, token: String, cert: Option<&'static [u8]>| {
        let proof = key
            .proof("GET", "http://localhost/whoami")
            .for_token(&token)
            .sign();
        async move { answer(&app, format!("DPoP {token}"), &[("dpop", proof)], cert).await }
    };
    let dpop = || M2mAuthLayer::new(verifier.clone()).dpop(Dpop::new("http://localhost"));
    let with_mtls = app(dpop().mtls(Mtls::from_connection()));
    let dpop_only = app(dpop());

    let both = json!({"jkt": key.jkt(), "x5t#S256": x5t(CERT)});
    let (s, www) = send(with_mtls.clone(), token(both.clone()), Some(CERT)).await;
    assert_eq!(s, 200, "{www}");
    for cert in [Some(OTHER), None] {
        let (s, www) = send(with_mtls.clone(), token(both.clone()), cert).await;
        assert_eq!(s, 401);
        assert!(www.contains("another client certificate"), "{www}");
    }
    let (s, www) = send(dpop_only.clone(), token(both), Some(CERT)).await;
    assert_eq!(s, 401);
    assert!(www.contains("bound to a key"), "{www}");
    // A confirmation method nothing here proves.
    let other = json!({"jkt": key.jkt(), "jwk": {"kty": "oct", "k": "AA"}});
    let (s, www) = send(with_mtls.clone(), token(other), Some(CERT)).await;
    assert_eq!(s, 401);
    assert!(www.contains("bound to a key"), "{www}");
    // The key alone, as ever.
    let (s, www) = send(dpop_only, token(json!({"jkt": key.jkt()})), None).await;
    assert_eq!(s, 200, "{www}");
}

/// A CA, and certificates it signs (server for `localhost`, or clients).
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "m2m-guard test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Pki { ca }
    }

    /// A certificate and its key, as (DER, PEM certificate + key).
    fn issue(&self, name: &str, client: bool) -> (Vec<u8>, String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    }
}

/// An HTTPS server that asks for (but does not require) a client
/// certificate and hands the one presented to the app as
/// [`ClientCertificate`] — the wiring `Mtls::from_connection` expects, with
/// axum, tokio-rustls and hyper.
async fn serve_tls(app: Router, pki: &Pki) -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tower::ServiceExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let (_, cert_pem, key_pem) = pki.issue("localhost", false);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The verified certificate of this connection, if any.
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| ClientCertificate(c.to_vec()));
                let app =
                    app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(c) = &cert {
                            req.extensions_mut().insert(c.clone());
                        }
                        req.map(axum::body::Body::new)
                    });
                let service = hyper_util::service::TowerToHyperService::new(app);
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                    .ok();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_over_a_real_tls_connection() {
    let issuer = TestIssuer::start().await;
    let verifier = issuer.verifier().await;
    let pki = Pki::new();
    let (client_der, client_pem, client_key) = pki.issue("billing-sync", true);
    let (_, other_pem, other_key) = pki.issue("someone-else", true);
    let addr = serve_tls(
        app(M2mAuthLayer::new(verifier).mtls(Mtls::from_connection())),
        &pki,
    )
    .await;
    let bound = issuer
        .token()
        .claim("cnf", json!({"x5t#S256": x5t(&client_der)}))
        .sign();
    let call = |identity: Option<(&str, &str)>| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap()])
            .resolve("localhost", addr);
        if let Some((cert, key)) = identity {
            b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        let client = b.build().unwrap();
        let token = bound.clone();
        async move {
            let resp = client
                .get(format!("https://localhost:{}/whoami", addr.port()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let www = support::challenge(resp.headers());
            (resp.status().as_u16(), www, resp.text().await.unwrap())
        }
    };
    // The certificate the token is bound to: accepted, its thumbprint on
    // the principal. Twice: full verification, then the token cache.
    for _ in 0..2 {
        let (status, _, body) = call(Some((&client_pem, &client_key))).await;
        assert_eq!(status, 200);
        assert_eq!(body, x5t(&client_der));
    }
    // A leaked token over another client's connection, or one without a
    // certificate: refused.
    for identity in [Some((other_pem.as_str(), other_key.as_str())), None] {
        let (status, www, _) = call(identity).await;
        assert_eq!(status, 401, "{identity:?}");
        assert!(www.contains("another client certificate"), "{www}");
    }
}

/// Metadata fetched over https may not send keys or a client secret over
/// plaintext, not even to a loopback host: whatever listens on the API's
/// own localhost is not the issuer. (Plaintext loopback endpoints stay for
/// issuers that are themselves plaintext loopback: tests, local setups.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_issuers_metadata_cannot_name_a_plaintext_endpoint() {
    use m2m_guard::client::{ClientError, ClientSecret, TokenProvider};
    let keys = TestIssuer::start().await;
    let (jwks_uri, token_endpoint) = (keys.jwks_url(), keys.token_endpoint());
    let metadata = move |headers: axum::http::HeaderMap| {
        let host = headers["host"].to_str().unwrap().to_owned();
        let doc = json!({
            "issuer": format!("https://{host}"),
            "jwks_uri": jwks_uri.clone(),
            "token_endpoint": token_endpoint.clone(),
        });
        async move { axum::Json(doc) }
    };
    let pki = Pki::new();
    let addr = serve_tls(
        Router::new().route("/.well-known/openid-configuration", get(metadata)),
        &pki,
    )
    .await;
    let issuer = format!("https://localhost:{}", addr.port());
    let trusting = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap()])
            .resolve("localhost", addr)
    };
    let verifier = m2m_guard::Verifier::builder()
        .issuer(
            m2m_guard::Issuer::new(&issuer)
                .preset(m2m_guard::Preset::Kinde)
                .audience(m2m_guard::test_util::DEFAULT_AUDIENCE),
        )
        .http_client(trusting())
        .build()
        .await
        .unwrap();
    let token = keys.token().claim("iss", issuer.clone()).sign();
    let e = verifier.verify(&token).await.unwrap_err();
    assert_eq!(e.reason(), m2m_guard::Reason::KeysUnavailable, "{e:?}");
    assert_eq!(keys.jwks_fetches(), 0, "no plaintext fetch");
    let last_error = verifier.health().issuers()[0].last_error.clone().unwrap();
    assert!(last_error.contains("plaintext"), "{last_error}");

    let provider = TokenProvider::builder("svc-a", ClientSecret::new("s3cr3t-value"))
        .issuer(&issuer)
        .http_client(trusting())
        .max_retries(0)
        .build()
        .await
        .unwrap();
    let e = provider.token().await.unwrap_err();
    assert!(matches!(e, ClientError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("plaintext"), "{e}");
    assert_eq!(provider.requests_sent(), 0, "the secret was not sent");
}
