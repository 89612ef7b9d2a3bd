//! An in-process issuer for tests and demos (feature `test-util`).
//!
//! [`TestIssuer::start`] serves OIDC discovery, RFC 8414 metadata and a JWKS on
//! `127.0.0.1:0`, mints tokens through a builder, rotates keys and simulates
//! outages. Tokens it mints go through the real verification path: fetched
//! keys, real signatures, no bypass.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use m2m_guard::test_util::TestIssuer;
//! use m2m_guard::Verifier;
//!
//! let issuer = TestIssuer::start().await;
//! let verifier = Verifier::builder().issuer(issuer.config()).build().await?;
//! let token = issuer.token().client_id("billing-sync").org("org_123").scopes(["read:users"]).sign();
//! let principal = verifier.verify(&token).await?;
//! assert_eq!(principal.tenant(), Some("org_123"));
//! # Ok(()) }
//! ```
//!
//! The signing keys are fixed test keys shipped in this crate: never trust
//! this issuer outside tests. No two live issuers in a process share key
//! material (each holds one of the bundled key sets until it is dropped).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Algorithm, Issuer, Preset, Verifier};

mod dpop;
pub use dpop::{DpopKey, ProofBuilder};

/// The audience tokens get unless the builder says otherwise.
pub const DEFAULT_AUDIENCE: &str = "https://api.example.test";

/// Bundled key sets: every live [`TestIssuer`] in a process holds its own
/// (and a second one while a rotation is in progress), so no two issuers
/// ever share key material, whatever order tests run in.
const KEY_SETS: usize = 12;
const RSA: [&str; KEY_SETS] = [
    include_str!("keys/rsa1.pem"),
    include_str!("keys/rsa2.pem"),
    include_str!("keys/rsa3.pem"),
    include_str!("keys/rsa4.pem"),
    include_str!("keys/rsa5.pem"),
    include_str!("keys/rsa6.pem"),
    include_str!("keys/rsa7.pem"),
    include_str!("keys/rsa8.pem"),
    include_str!("keys/rsa9.pem"),
    include_str!("keys/rsa10.pem"),
    include_str!("keys/rsa11.pem"),
    include_str!("keys/rsa12.pem"),
];
const EC: [&str; KEY_SETS] = [
    include_str!("keys/ec1.pem"),
    include_str!("keys/ec2.pem"),
    include_str!("keys/ec3.pem"),
    include_str!("keys/ec4.pem"),
    include_str!("keys/ec5.pem"),
    include_str!("keys/ec6.pem"),
    include_str!("keys/ec7.pem"),
    include_str!("keys/ec8.pem"),
    include_str!("keys/ec9.pem"),
    include_str!("keys/ec10.pem"),
    include_str!("keys/ec11.pem"),
    include_str!("keys/ec12.pem"),
];
const ED: [&str; KEY_SETS] = [
    include_str!("keys/ed1.pem"),
    include_str!("keys/ed2.pem"),
    include_str!("keys/ed3.pem"),
    include_str!("keys/ed4.pem"),
    include_str!("keys/ed5.pem"),
    include_str!("keys/ed6.pem"),
    include_str!("keys/ed7.pem"),
    include_str!("keys/ed8.pem"),
    include_str!("keys/ed9.pem"),
    include_str!("keys/ed10.pem"),
    include_str!("keys/ed11.pem"),
    include_str!("keys/ed12.pem"),
];
const EC384: [&str; KEY_SETS] = [
    include_str!("keys/ec384_1.pem"),
    include_str!("keys/ec384_2.pem"),
    include_str!("keys/ec384_3.pem"),
    include_str!("keys/ec384_4.pem"),
    include_str!("keys/ec384_5.pem"),
    include_str!("keys/ec384_6.pem"),
    include_str!("keys/ec384_7.pem"),
    include_str!("keys/ec384_8.pem"),
    include_str!("keys/ec384_9.pem"),
    include_str!("keys/ec384_10.pem"),
    include_str!("keys/ec384_11.pem"),
    include_str!("keys/ec384_12.pem"),
];

/// Which key sets are held by a live issuer.
static KEY_SETS_IN_USE: Mutex<[bool; KEY_SETS]> = Mutex::new([false; KEY_SETS]);

/// Take a key set no live issuer holds; waits for one when all are held.
fn take_key_set() -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        {
            let mut in_use = KEY_SETS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = in_use.iter().position(|used| !used) {
                in_use[i] = true;
                return i;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "more than {KEY_SETS} TestIssuer key sets held at once in this process for 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn release_key_sets(sets: &[usize]) {
    let mut in_use = KEY_SETS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    for &i in sets {
        in_use[i] = false;
    }
}

/// A failure the issuer simulates on every endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outage {
    /// Serve normally.
    None,
    /// Answer every request with this status.
    Status(u16),
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Answer 200 with this body instead of the real document.
    Body(String),
}

struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

struct Keys {
    /// Published in the JWKS (current signing keys first).
    published: Vec<Arc<TestKey>>,
    /// The current signing key per algorithm.
    current: Vec<Arc<TestKey>>,
    generation: usize,
    /// The key sets held: the current one first, then the previous one
    /// while it is still published.
    sets: Vec<usize>,
}

struct Shared {
    issuer: String,
    keys: Mutex<Keys>,
    outage: Mutex<Outage>,
    cache_control: Mutex<Option<String>>,
    jwks_fetches: AtomicU64,
    provider: Preset,
    clients: Mutex<std::collections::HashMap<String, TestClient>>,
    clock: TestClock,
}

/// A clock for tests: real time plus an offset that only moves forward.
/// A verifier built with it ([`VerifierBuilder::clock`](crate::VerifierBuilder::clock),
/// or [`TestIssuer::verifier`]) reads key-set TTLs, `max_stale`, backoff and
/// cooldowns, and `exp` / `nbf` / `iat`, from it; a [`TestIssuer`] mints its
/// tokens at its time. So an outage of an hour is a call to
/// [`TestClock::advance`], not a sleep.
///
/// Fetches still take real time (they are real HTTP); advancing the clock
/// only makes them due. After advancing past a TTL, the next request
/// starts the refresh in the background and goes on with the current keys;
/// [`Verifier::refresh_now`](crate::Verifier::refresh_now) waits for one.
#[derive(Debug, Clone, Default)]
pub struct TestClock {
    skew: Arc<AtomicU64>,
}

impl TestClock {
    /// A clock at real time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `by` (saturating, far beyond any test).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .skew
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(by))
            });
    }

    /// How far the clock was moved ahead of real time.
    pub fn offset(&self) -> Duration {
        Duration::from_nanos(self.skew.load(Ordering::Relaxed))
    }

    /// The wall-clock time it shows, in seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.clock().wall_secs()
    }

    pub(crate) fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::skewed(self.skew.clone())
    }
}

/// An OAuth issuer on loopback, for tests and demos.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.shared.issuer)
            .field("preset", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("client_id", &self.client_id)
            .field("org", &self.org)
            .field("scopes", &self.scopes)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn load_key(pem: &str, alg: Algorithm, kid: String) -> Arc<TestKey> {
    crate::crypto::ensure_backend();
    let encoding = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("bundled test key parses");
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg.to_jwt())
        .expect("public JWK from test key");
    let mut jwk = serde_json::to_value(jwk).expect("JWK serializes");
    jwk["kid"] = Value::String(kid.clone());
    jwk["use"] = Value::String("sig".into());
    Arc::new(TestKey {
        kid,
        alg,
        encoding,
        jwk,
    })
}

/// One key per supported algorithm, each JWK bound to its `alg`: RS256
/// (`rsa-N`), ES256 (`ec-N`), EdDSA (`ed-N`), ES384 (`ec384-N`), and the
/// other RSA algorithms on the same RSA key (`rsa-N-ps256`, ...). The RS256,
/// ES256 and EdDSA keys come first.
fn keys_for_generation(generation: usize, set: usize) -> Vec<Arc<TestKey>> {
    let i = set;
    let mut keys = vec![
        load_key(RSA[i], Algorithm::RS256, format!("rsa-{generation}")),
        load_key(EC[i], Algorithm::ES256, format!("ec-{generation}")),
        load_key(ED[i], Algorithm::EdDSA, format!("ed-{generation}")),
        load_key(EC384[i], Algorithm::ES384, format!("ec384-{generation}")),
    ];
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let kid = format!("rsa-{generation}-{}", alg.as_str().to_ascii_lowercase());
        keys.push(load_key(RSA[i], alg, kid));
    }
    keys
}

impl Shared {
    fn token(&self) -> TokenBuilder<'_> {
        TokenBuilder {
            issuer: self,
            provider: self.provider,
            client_id: "test-client".into(),
            org: None,
            scopes: Vec::new(),
            audience: Some(Value::String(DEFAULT_AUDIENCE.into())),
            alg: Algorithm::RS256,
            lifetime: Duration::from_secs(3600),
            issued_ago: Duration::ZERO,
            not_before: None,
            extra: Map::new(),
            removed: Vec::new(),
            typ: None,
            kid: None,
            user: None,
        }
    }

    fn current_key(&self, alg: Algorithm) -> Arc<TestKey> {
        let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.current
            .iter()
            .find(|key| key.alg == alg)
            .cloned()
            .expect("a test key for every supported algorithm")
    }
}

/// A client registered with [`TestIssuer::register_client`].
#[derive(Debug, Clone)]
pub struct TestClient {
    id: String,
    secret: String,
    org: Option<String>,
    scopes: Vec<String>,
}

impl TestClient {
    /// A client with this id and secret, no organization and no scopes.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        TestClient {
            id: id.into(),
            secret: secret.into(),
            org: None,
            scopes: Vec::new(),
        }
    }

    /// Its tokens carry this organization (the preset's tenant claim).
    pub fn org(mut self, org: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// The scopes it may be granted (all of them when a request names none).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

impl TestIssuer {
    /// Start an issuer shaped like Kinde (M2M tokens: `gty`, `azp`, `org_code`, `scope` + `scp`, no `sub`).
    pub async fn start() -> TestIssuer {
        Self::start_with(Preset::Kinde).await
    }

    /// Start an issuer whose tokens have `provider`'s claim shape.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_with(provider: Preset) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        // Kids are unique in the process; key material is unique among live issuers.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let generation = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
        let set = take_key_set();
        let current = keys_for_generation(generation, set);
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            keys: Mutex::new(Keys {
                published: current.clone(),
                current,
                generation,
                sets: vec![set],
            }),
            outage: Mutex::new(Outage::None),
            cache_control: Mutex::new(None),
            jwks_fetches: AtomicU64::new(0),
            provider,
            clients: Mutex::new(std::collections::HashMap::new()),
            clock: TestClock::new(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(metadata))
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks", get(jwks))
            .route("/token", axum::routing::post(token_endpoint))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestIssuer {
            shared,
            addr,
            shutdown: Some(tx),
        }
    }

    /// The issuer identifier (`iss`), e.g. `http://127.0.0.1:41234`.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// An [`Issuer`] configuration that trusts this issuer: discovery,
    /// [`DEFAULT_AUDIENCE`], and the provider preset it mints for.
    pub fn config(&self) -> Issuer {
        let cfg = Issuer::new(self.issuer()).preset(self.shared.provider);
        if self.shared.provider == Preset::Cognito {
            cfg
        } else {
            cfg.audience(DEFAULT_AUDIENCE)
        }
    }

    /// A [`Verifier`] trusting this issuer with [`TestIssuer::config`] (for
    /// the Cognito preset, which binds tokens to client ids instead of an
    /// audience, with `test-client` allowed), on this issuer's
    /// [`TestIssuer::clock`]. For other settings, build one from
    /// [`TestIssuer::config`] (with `.clock(issuer.clock())` when the test
    /// advances the clock).
    ///
    /// # Panics
    /// Never for these settings; a panic would be a bug in the test kit.
    pub async fn verifier(&self) -> Verifier {
        let mut cfg = self.config();
        if self.shared.provider == Preset::Cognito {
            cfg = cfg.allowed_client_ids(["test-client"]);
        }
        Verifier::builder()
            .issuer(cfg)
            .clock(&self.shared.clock)
            .build()
            .await
            .expect("the test issuer's own configuration builds")
    }

    /// The clock this issuer mints tokens by, and [`TestIssuer::verifier`]
    /// verifies them by: advance it to test expiry, outages and rotation
    /// without sleeping.
    pub fn clock(&self) -> &TestClock {
        &self.shared.clock
    }

    /// Start a token for client `test-client`, [`DEFAULT_AUDIENCE`], valid 1 hour, RS256.
    pub fn token(&self) -> TokenBuilder<'_> {
        self.shared.token()
    }

    /// Register a client of the token endpoint ([`TestIssuer::token_endpoint`],
    /// also advertised by discovery): it gets client-credentials tokens for
    /// its id, organization and scopes. Registering an id again replaces it.
    pub fn register_client(&self, client: TestClient) {
        self.shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client.id.clone(), client);
    }

    /// The client-credentials token endpoint, `{issuer}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// Rotate: new signing keys for every algorithm; the previous keys stay
    /// published until [`TestIssuer::retire_old_keys`].
    pub fn rotate_keys(&self) {
        let mut k = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.generation += 1;
        let set = take_key_set();
        // Only the current and the previous generation stay published.
        let dropped: Vec<usize> = k.sets.drain(1..).collect();
        release_key_sets(&dropped);
        k.sets.insert(0, set);
        let current = keys_for_generation(k.generation, set);
        let per_generation = current.len();
        let mut published = current.clone();
        published.append(&mut k.published);
        // Keep at most the current and the previous generation.
        published.truncate(2 * per_generation);
        k.published = published;
        k.current = current;
    }

    /// Stop publishing every key but the current signing keys.
    pub fn retire_old_keys(&self) {
        let mut k = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        let per_generation = k.current.len();
        k.published.truncate(per_generation);
        let retired: Vec<usize> = k.sets.drain(1..).collect();
        release_key_sets(&retired);
    }

    /// The key ids currently published.
    pub fn published_kids(&self) -> Vec<String> {
        let k = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        k.published.iter().map(|k| k.kid.clone()).collect()
    }

    /// Sign exactly these header and payload bytes with the current key for
    /// `alg` (any supported algorithm): for adversarial tests that need
    /// duplicate members, odd types or unusual headers.
    pub fn sign_raw(&self, alg: Algorithm, header_json: &str, payload_json: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = self.current_key(alg);
        let input = format!("{}.{}", b64.encode(header_json), b64.encode(payload_json));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, key.alg.to_jwt())
            .expect("signing with a bundled key");
        format!("{input}.{sig}")
    }

    /// The `kid` of the current signing key for `alg`.
    pub fn current_kid(&self, alg: Algorithm) -> String {
        self.current_key(alg).kid.clone()
    }

    fn current_key(&self, alg: Algorithm) -> Arc<TestKey> {
        self.shared.current_key(alg)
    }

    /// Simulate a failure (or end it with [`Outage::None`]).
    pub fn set_outage(&self, outage: Outage) {
        *self.shared.outage.lock().unwrap_or_else(|e| e.into_inner()) = outage;
    }

    /// Send this `Cache-Control` header with the JWKS.
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self
            .shared
            .cache_control
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = value.map(str::to_owned);
    }

    /// How many times the JWKS was requested.
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// A public JWKS document for the current keys.
    pub fn jwks_document(&self) -> Value {
        let k = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        json!({ "keys": k.published.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut k = self.shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        let sets: Vec<usize> = k.sets.drain(..).collect();
        release_key_sets(&sets);
    }
}

async fn apply_outage(shared: &Shared) -> Option<Response> {
    let outage = shared
        .outage
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match outage {
        Outage::None => None,
        Outage::Status(code) => Some(
            StatusCode::from_u16(code)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response(),
        ),
        Outage::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Outage::Body(body) => {
            Some(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
    }
}

async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = apply_outage(&shared).await {
        return r;
    }
    let iss = &shared.issuer;
    axum::Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "token_endpoint": format!("{iss}/token"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
    .into_response()
}

/// An RFC 6749 error response.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"test-issuer\""),
        );
    }
    resp
}

/// `id:secret` from `Authorization: Basic`, each form-decoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<Option<(String, String)>> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok();
    let decoded = value
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let pair = decoded
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .map(|(id, secret)| {
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (dec(id), dec(secret))
        });
    Some(pair)
}

/// RFC 6749 §4.4 client-credentials grant, `client_secret_basic` or
/// `client_secret_post`, for the registered clients.
async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = apply_outage(&shared).await {
        return r;
    }
    let mut form = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a parameter is repeated",
            );
        }
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let posted = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    let credentials = match (basic_credentials(&headers), posted) {
        (Some(_), Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            );
        }
        (Some(basic), None) => basic,
        (None, posted) => posted,
    };
    let client = credentials.and_then(|(id, secret)| {
        let clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.get(&id).filter(|c| c.secret == secret).cloned()
    });
    let Some(client) = client else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let requested: Vec<String> = form
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if requested.iter().any(|s| !client.scopes.contains(s)) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a requested scope is not allowed for this client",
        );
    }
    let granted = if requested.is_empty() {
        client.scopes.clone()
    } else {
        requested
    };
    let mut token = shared
        .token()
        .client_id(client.id.clone())
        .scopes(granted.clone());
    if let Some(aud) = form.get("resource").or_else(|| form.get("audience")) {
        token = token.audience(aud.clone());
    }
    if let Some(org) = &client.org {
        token = token.org(org.clone());
    }
    let mut resp = axum::Json(json!({
        "access_token": token.sign(),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": granted.join(" "),
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = apply_outage(&shared).await {
        return r;
    }
    let doc = {
        let k = shared.keys.lock().unwrap_or_else(|e| e.into_inner());
        json!({ "keys": k.published.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    };
    let mut resp = axum::Json(doc).into_response();
    if let Some(cc) = shared
        .cache_control
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_deref()
        && let Ok(v) = HeaderValue::from_str(cc)
    {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}

/// Builds and signs one token. Start it with [`TestIssuer::token`].
#[must_use = "call .sign() to get the token"]
pub struct TokenBuilder<'a> {
    issuer: &'a Shared,
    provider: Preset,
    client_id: String,
    org: Option<String>,
    scopes: Vec<String>,
    audience: Option<Value>,
    alg: Algorithm,
    lifetime: Duration,
    issued_ago: Duration,
    not_before: Option<i64>,
    extra: Map<String, Value>,
    removed: Vec<String>,
    typ: Option<Option<String>>,
    kid: Option<String>,
    user: Option<String>,
}

impl TokenBuilder<'_> {
    /// Make it a user's access token (delegated, e.g. authorization code)
    /// for `subject`, shaped as the preset's provider shapes users' tokens:
    /// refused unless the issuer is configured with
    /// [`Issuer::accept_user_tokens`](crate::Issuer::accept_user_tokens).
    pub fn user(mut self, subject: impl Into<String>) -> Self {
        self.user = Some(subject.into());
        self
    }

    /// The client the token is issued to.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Scope the token to an organization (the provider's tenant claim).
    pub fn org(mut self, org: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// Granted scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// `aud` as one string.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(Value::String(aud.into()));
        self
    }

    /// `aud` as an array.
    pub fn audiences<I, S>(mut self, auds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audience = Some(Value::Array(
            auds.into_iter().map(|a| Value::String(a.into())).collect(),
        ));
        self
    }

    /// Signing algorithm: any supported one, each with its own published key.
    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// Lifetime from `iat` to `exp`. Defaults to 1 hour.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Issue the token this long ago (`iat` and `exp` move back together).
    pub fn issued_ago(mut self, ago: Duration) -> Self {
        self.issued_ago = ago;
        self
    }

    /// An expired token: issued 2 hours ago, valid for 1 hour.
    pub fn expired(self) -> Self {
        self.issued_ago(Duration::from_secs(7200))
            .expires_in(Duration::from_secs(3600))
    }

    /// `nbf` this many seconds from now (negative for the past).
    pub fn not_before_in(mut self, secs: i64) -> Self {
        self.not_before = Some(secs);
        self
    }

    /// Set any claim (overrides what the builder would write).
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Leave a claim out.
    pub fn without_claim(mut self, name: impl Into<String>) -> Self {
        self.removed.push(name.into());
        self
    }

    /// Header `typ` (`None` leaves it out). Defaults to the provider's usual value.
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = Some(typ.map(str::to_owned));
        self
    }

    /// Bind the token to `key` (RFC 9449 `cnf.jkt`): it then works only as
    /// `Authorization: DPoP` with a proof signed by that key.
    pub fn dpop_bound(self, key: &DpopKey) -> Self {
        self.claim("cnf", json!({ "jkt": key.jkt() }))
    }

    /// Header `kid` override (e.g. an unknown one).
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The claims this builder would sign.
    pub fn claims(&self) -> Map<String, Value> {
        let now = self
            .issuer
            .clock
            .unix_secs()
            .saturating_sub(self.issued_ago.as_secs());
        let mut c = Map::new();
        c.insert("iss".into(), self.issuer.issuer.as_str().into());
        if let Some(aud) = &self.audience
            && self.provider != Preset::Cognito
        {
            c.insert("aud".into(), aud.clone());
        }
        c.insert("iat".into(), now.into());
        c.insert("exp".into(), (now + self.lifetime.as_secs()).into());
        c.insert(
            "jti".into(),
            format!("jti-{:016x}", fastrand::u64(..)).into(),
        );
        if let Some(nbf) = self.not_before {
            let base = i64::try_from(self.issuer.clock.unix_secs()).unwrap_or(i64::MAX);
            c.insert("nbf".into(), (base + nbf).into());
        }
        let id = self.client_id.clone();
        let scope_str = self.scopes.join(" ");
        let scope_arr = Value::from(self.scopes.clone());
        let has_scopes = !self.scopes.is_empty();
        // Each provider's machine (client-credentials) token shape, as its
        // docs publish it; `user` switches to that provider's user token.
        let user = self.user.clone();
        match self.provider {
            Preset::Kinde => {
                // Kinde M2M tokens carry no `sub`; `gty` names the grant.
                c.insert("azp".into(), id.into());
                match &user {
                    None => c.insert("gty".into(), Value::from(vec!["client_credentials"])),
                    Some(u) => c.insert("sub".into(), u.clone().into()),
                };
                if has_scopes {
                    c.insert("scope".into(), scope_str.into());
                    c.insert("scp".into(), scope_arr);
                }
            }
            Preset::Scalekit => {
                c.insert("client_id".into(), id.clone().into());
                match &user {
                    None => c.insert("sub".into(), id.into()),
                    Some(u) => {
                        c.insert("uid".into(), u.clone().into());
                        c.insert("sid".into(), "ses_1".into());
                        c.insert("sub".into(), u.clone().into())
                    }
                };
                if has_scopes {
                    c.insert("scopes".into(), scope_arr);
                }
            }
            Preset::Auth0 => {
                c.insert("azp".into(), id.clone().into());
                match &user {
                    None => {
                        c.insert("gty".into(), "client-credentials".into());
                        c.insert("sub".into(), format!("{id}@clients").into())
                    }
                    Some(u) => c.insert("sub".into(), u.clone().into()),
                };
                if has_scopes {
                    c.insert("scope".into(), scope_str.into());
                    c.insert("permissions".into(), scope_arr);
                }
            }
            Preset::Okta => {
                c.insert("cid".into(), id.clone().into());
                match &user {
                    None => c.insert("sub".into(), id.into()),
                    Some(u) => {
                        c.insert("uid".into(), format!("00u-{u}").into());
                        c.insert("sub".into(), u.clone().into())
                    }
                };
                if has_scopes {
                    c.insert("scp".into(), scope_arr);
                }
            }
            Preset::Entra => {
                c.insert("azp".into(), id.clone().into());
                c.insert("appid".into(), id.clone().into());
                match &user {
                    None => {
                        c.insert("idtyp".into(), "app".into());
                        c.insert("oid".into(), format!("sp-{id}").into());
                        c.insert("sub".into(), format!("sp-{id}").into());
                        if has_scopes {
                            c.insert("roles".into(), scope_arr);
                        }
                    }
                    Some(u) => {
                        c.insert("idtyp".into(), "user".into());
                        c.insert("oid".into(), format!("oid-{u}").into());
                        c.insert("sub".into(), format!("pairwise-{u}").into());
                        if has_scopes {
                            c.insert("scp".into(), scope_str.into());
                        }
                    }
                }
            }
            Preset::Cognito => {
                c.insert("client_id".into(), id.clone().into());
                c.insert("token_use".into(), "access".into());
                match &user {
                    None => c.insert("sub".into(), id.into()),
                    Some(u) => {
                        c.insert("username".into(), u.clone().into());
                        c.insert("sub".into(), format!("uuid-{u}").into())
                    }
                };
                if has_scopes {
                    c.insert("scope".into(), scope_str.into());
                }
            }
            Preset::Keycloak => {
                c.insert("azp".into(), id.clone().into());
                c.insert("typ".into(), "Bearer".into());
                match &user {
                    None => {
                        c.insert("client_id".into(), id.clone().into());
                        c.insert(
                            "preferred_username".into(),
                            format!("service-account-{}", id.to_ascii_lowercase()).into(),
                        );
                        c.insert("sub".into(), format!("uuid-sa-{id}").into())
                    }
                    Some(u) => {
                        c.insert("preferred_username".into(), u.clone().into());
                        c.insert("sub".into(), format!("uuid-{u}").into())
                    }
                };
                if has_scopes {
                    c.insert("scope".into(), scope_str.into());
                }
            }
            _ => {
                c.insert("client_id".into(), id.clone().into());
                c.insert("sub".into(), user.clone().unwrap_or(id).into());
                if has_scopes {
                    c.insert("scope".into(), scope_str.into());
                }
            }
        }
        if let Some(org) = &self.org {
            // Spelled out as each provider's docs spell it, not read from the
            // preset table, so a wrong claim name there cannot hide.
            let claim = match self.provider {
                Preset::Kinde => "org_code",
                Preset::Scalekit => "oid",
                Preset::Entra => "tid",
                _ => "org_id",
            };
            c.insert(claim.into(), org.clone().into());
        }
        for (k, v) in &self.extra {
            c.insert(k.clone(), v.clone());
        }
        for k in &self.removed {
            c.remove(k);
        }
        c
    }

    /// Sign and return the compact token.
    ///
    /// # Panics
    /// Never for the bundled keys.
    pub fn sign(self) -> String {
        let claims = self.claims();
        let key = self.issuer.current_key(self.alg);
        let mut header = Header::new(key.alg.to_jwt());
        header.kid = Some(self.kid.unwrap_or_else(|| key.kid.clone()));
        header.typ = match self.typ {
            Some(t) => t,
            None if self.provider == Preset::Entra => Some("JWT".into()),
            None => Some("at+jwt".into()),
        };
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("signing with a bundled key")
    }
}
