//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a scripted path answers.
#[derive(Clone)]
pub enum Reply {
    Json(StatusCode, String),
    Headers(StatusCode, HeaderMap, String),
    Redirect(String),
    Delay(Duration, Box<Reply>),
    /// Send headers, then a body that trickles one byte per interval.
    Trickle(Duration),
    /// 200 with this body, streamed in 8 KiB chunks without a Content-Length.
    Chunked(String),
    /// Decided per request, from the request as recorded (e.g. a token
    /// endpoint minting a new token for each call).
    Computed(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>),
}

impl Reply {
    /// A reply computed from each request.
    pub fn computed(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Reply {
        Reply::Computed(Arc::new(f))
    }

    /// A plain-text reply with this status.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::Headers(
            StatusCode::from_u16(status).unwrap(),
            HeaderMap::new(),
            body.into(),
        )
    }
}

/// One request as the server received it (before any scripted delay).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub at: Instant,
}

impl Recorded {
    /// The body as `application/x-www-form-urlencoded` fields.
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    /// A header's value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<HashMap<String, Reply>>,
    hits: Mutex<HashMap<String, u64>>,
    requests: Mutex<Vec<Recorded>>,
    user_agent: Mutex<Option<String>>,
    total: AtomicU64,
}

/// A loopback HTTP server whose every answer the test scripts.
pub struct ScriptServer {
    script: Arc<Script>,
    pub addr: SocketAddr,
}

impl ScriptServer {
    pub async fn start() -> ScriptServer {
        let script = Arc::new(Script::default());
        let app = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        ScriptServer { script, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.script
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    pub fn json(&self, path: &str, body: impl Into<String>) {
        self.set(path, Reply::Json(StatusCode::OK, body.into()));
    }

    pub fn last_user_agent(&self) -> Option<String> {
        self.script.user_agent.lock().unwrap().clone()
    }

    pub fn hits(&self, path: &str) -> u64 {
        *self.script.hits.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Every request to `path` so far, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.script
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// Largest request body recorded.
const MAX_BODY: usize = 1 << 20;

async fn handle(State(script): State<Arc<Script>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
    };
    script.requests.lock().unwrap().push(recorded.clone());
    let req = Request::from_parts(parts, Body::empty());
    let path = req.uri().path().to_owned();
    *script.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    script.total.fetch_add(1, Ordering::SeqCst);
    *script.user_agent.lock().unwrap() = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reply = script.replies.lock().unwrap().get(&path).cloned();
    match reply {
        Some(r) => render(r, recorded).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn render(
    reply: Reply,
    req: Recorded,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Computed(f) => {
                let reply = f(&req);
                render(reply, req).await
            }
            Reply::Json(status, body) => {
                (status, [("content-type", "application/json")], body).into_response()
            }
            Reply::Headers(status, headers, body) => (status, headers, body).into_response(),
            Reply::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                render(*inner, req).await
            }
            Reply::Chunked(body) => {
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
                    .into_bytes()
                    .chunks(8 * 1024)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
            }
            Reply::Trickle(every) => {
                let stream = futures_util::stream::unfold(0u32, move |n| async move {
                    if n > 10_000 {
                        return None;
                    }
                    tokio::time::sleep(every).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")),
                        n + 1,
                    ))
                });
                Response::new(Body::from_stream(stream))
            }
        }
    })
}

/// A loopback TCP server that accepts connections and closes them at once.
pub async fn dropping_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    addr
}

/// Log lines written on this thread while the returned value lives (a
/// thread-local subscriber: tests running in parallel do not mix in).
pub fn capture_logs() -> CapturedLogs {
    let buf = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    CapturedLogs { buf, _guard: guard }
}

pub struct CapturedLogs {
    buf: LogBuffer,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.0.lock().unwrap()).into_owned()
    }
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The `WWW-Authenticate` of an answer, or `""`.
pub fn challenge(headers: &HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The path of example `name`'s binary (`cargo test` builds the examples
/// into `target/<profile>/examples`, next to the test binaries' `deps`).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        bin.display()
    );
    bin
}

/// An example running as a process; killed when dropped.
pub struct Example(std::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start example `name` with `args` (no `M2M_*` variables inherited) and
/// wait for its `listening on URL` line; returns the URL.
pub fn start_example(name: &str, args: &[&str]) -> (Example, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(example_binary(name));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("M2M_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed its address");
    (Example(child), url)
}

/// An axum app served on loopback for the test's lifetime.
pub struct Served {
    pub addr: SocketAddr,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Serve `app` on a loopback port.
pub async fn serve(app: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    Served { addr }
}
pub mod redis_server;

/// A loopback Keycloak with one realm per customer, each realm with its own
/// keys (`realms` pairs a realm name with the test issuer holding its keys).
pub async fn keycloak(realms: &[(&str, &m2m_guard::test_util::TestIssuer)]) -> ScriptServer {
    let s = ScriptServer::start().await;
    for (realm, keys) in realms {
        let issuer = s.url(&format!("/realms/{realm}"));
        s.json(
            &format!("/realms/{realm}/.well-known/openid-configuration"),
            serde_json::json!({
                "issuer": issuer,
                "jwks_uri": s.url(&format!("/realms/{realm}/protocol/openid-connect/certs")),
            })
            .to_string(),
        );
        s.json(
            &format!("/realms/{realm}/protocol/openid-connect/certs"),
            keys.jwks_document().to_string(),
        );
    }
    s
}

/// The realms template of `s`, for a Keycloak preset with the test audience.
pub fn realms(s: &ScriptServer) -> m2m_guard::Issuer {
    m2m_guard::Issuer::new(s.url("/realms/{tenantid}"))
        .preset(m2m_guard::Preset::Keycloak)
        .audience(m2m_guard::test_util::DEFAULT_AUDIENCE)
}

/// A client-credentials token of `realm`, signed by `keys`.
pub fn realm_token(
    keys: &m2m_guard::test_util::TestIssuer,
    s: &ScriptServer,
    realm: &str,
) -> String {
    keys.token()
        .client_id("billing-sync")
        .scopes(["invoices:read"])
        .claim("iss", s.url(&format!("/realms/{realm}")))
        .sign()
}
