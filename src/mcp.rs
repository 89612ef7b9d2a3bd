//! Per-tool scopes for Model Context Protocol servers (feature `mcp`).
//!
//! Every MCP tool is called through the same HTTP route (`POST /mcp`), so a
//! route guard cannot tell `whoami` from `admin-action`. [`McpScopes`]
//! reads the JSON-RPC request (bounded, batch-aware, the strict JSON parser:
//! duplicate members refused) and answers 403 `insufficient_scope` with
//! `scope="…"` naming every scope the call needs that the token lacks,
//! which is what MCP clients step up on. It never trusts the `Mcp-Method` / `Mcp-Name`
//! headers: the body is what the server will execute. Anything it cannot
//! read is refused (400), never let through.
//!
//! Put it inside [`M2mAuthLayer`](crate::M2mAuthLayer) (which verifies the
//! token first) around the MCP service, e.g. rmcp's `StreamableHttpService`:
//!
//! ```ignore
//! let mcp = tower::ServiceBuilder::new()
//!     .layer(M2mAuthLayer::new(verifier).protected_resource(&resource).strip_authorization())
//!     .layer(McpScopes::new().tool("admin-action", ["mcp:admin"]))
//!     .service(rmcp_service);
//! let app = axum::Router::new().nest_service("/mcp", mcp);
//! ```
//!
//! Scopes are checked with [`Scopes::contains`](crate::Scopes::contains),
//! so the verifier's [`ScopeHierarchy`](crate::ScopeHierarchy) holds here too.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::{Denial, assert_scopes};
use crate::json::StrictValue;

/// Default largest MCP request body read (rmcp's own default limit).
const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// The scopes each MCP call needs: per tool (`tools/call` with
/// `params.name`), per JSON-RPC method, and for tools not named. A layer:
/// see the [module docs](self).
///
/// ```
/// use m2m_guard::mcp::McpScopes;
///
/// let scopes = McpScopes::new()
///     .tool("admin-action", ["mcp:admin"])
///     .method("resources/read", ["mcp:read"])
///     .other_tools(["mcp:tools"]);
/// ```
#[derive(Debug, Clone)]
pub struct McpScopes {
    rules: Arc<Rules>,
}

#[derive(Debug, Default, Clone)]
struct Rules {
    tools: HashMap<String, Vec<String>>,
    methods: HashMap<String, Vec<String>>,
    other_tools: Vec<String>,
    all_calls: Vec<String>,
    max_body: usize,
}

impl Default for McpScopes {
    fn default() -> Self {
        McpScopes::new()
    }
}

fn scope_list<I, S>(what: &str, scopes: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
    assert_scopes(&format!("McpScopes::{what}"), &scopes);
    scopes
}

impl McpScopes {
    /// No requirement beyond a valid token, until rules are added.
    pub fn new() -> Self {
        McpScopes {
            rules: Arc::new(Rules {
                max_body: DEFAULT_MAX_BODY,
                ..Rules::default()
            }),
        }
    }

    fn rules(&mut self) -> &mut Rules {
        Arc::make_mut(&mut self.rules)
    }

    /// Calling tool `name` needs every one of `scopes`.
    ///
    /// # Panics
    /// When a scope is not an RFC 6749 scope token (a wiring mistake).
    pub fn tool<I, S>(mut self, name: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scope_list("tool", scopes);
        self.rules().tools.insert(name.into(), scopes);
        self
    }

    /// JSON-RPC method `method` (e.g. `resources/read`, `prompts/get`,
    /// `tools/list`) needs every one of `scopes`. For `tools/call` this
    /// applies to every tool, on top of the tool's own scopes.
    ///
    /// # Panics
    /// When a scope is not an RFC 6749 scope token (a wiring mistake).
    pub fn method<I, S>(mut self, method: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scope_list("method", scopes);
        self.rules().methods.insert(method.into(), scopes);
        self
    }

    /// Every JSON-RPC message with a method (`initialize`, `tools/list`,
    /// every tool call, notifications…) needs every one of `scopes`, on top
    /// of the method's and the tool's own. Methods without a rule of their
    /// own (`resources/*`, `prompts/*`, `tasks/*`, custom ones) need only
    /// these: give the ones your server offers a [`McpScopes::method`] rule.
    ///
    /// # Panics
    /// When a scope is not an RFC 6749 scope token (a wiring mistake).
    pub fn all_calls<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules().all_calls = scope_list("all_calls", scopes);
        self
    }

    /// Calling a tool not named by [`McpScopes::tool`] needs every one of
    /// `scopes` (default: none beyond a valid token).
    ///
    /// # Panics
    /// When a scope is not an RFC 6749 scope token (a wiring mistake).
    pub fn other_tools<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules().other_tools = scope_list("other_tools", scopes);
        self
    }

    /// Largest request body read. Defaults to 4 MiB; a larger body gets 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.rules().max_body = bytes;
        self
    }
}

impl Rules {
    /// The scopes the JSON-RPC payload `body` needs, in first-seen order;
    /// `Err` when it is not a JSON-RPC request or batch we can read.
    fn required(&self, body: &[u8]) -> Result<Vec<&str>, &'static str> {
        let value = serde_json::from_slice::<StrictValue>(body)
            .map_err(|_| "the MCP request is not valid JSON")?
            .0;
        let messages = match &value {
            Value::Array(batch) if batch.is_empty() => return Err("an empty JSON-RPC batch"),
            Value::Array(batch) => batch.iter().collect(),
            other => vec![other],
        };
        fn add<'a>(out: &mut Vec<&'a str>, scopes: &'a [String]) {
            for s in scopes {
                if !out.contains(&s.as_str()) {
                    out.push(s);
                }
            }
        }
        let mut out: Vec<&str> = Vec::new();
        for m in messages {
            let Value::Object(m) = m else {
                return Err("a JSON-RPC message is not an object");
            };
            let method = match m.get("method") {
                // A response or an error the client sends back: no call.
                None => continue,
                Some(Value::String(method)) => method.as_str(),
                Some(_) => return Err("a JSON-RPC method is not a string"),
            };
            add(&mut out, &self.all_calls);
            if let Some(scopes) = self.methods.get(method) {
                add(&mut out, scopes);
            }
            if method == "tools/call" {
                let name = match m.get("params").and_then(|p| p.get("name")) {
                    Some(Value::String(name)) => name.as_str(),
                    _ => return Err("a tools/call request names no tool"),
                };
                add(&mut out, self.tools.get(name).unwrap_or(&self.other_tools));
            }
        }
        Ok(out)
    }
}

impl<S> Layer<S> for McpScopes {
    type Service = McpGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        McpGuard {
            inner,
            rules: self.rules.clone(),
        }
    }
}

/// The service built by [`McpScopes`].
#[derive(Debug, Clone)]
pub struct McpGuard<S> {
    inner: S,
    rules: Arc<Rules>,
}

impl<S> McpGuard<S> {
    crate::inner_service_accessors!();
}

/// Response future of [`McpGuard`].
pub type McpGuardFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for McpGuard<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Default + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = McpGuardFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rules = self.rules.clone();
        Box::pin(async move {
            // Every request needs a verified caller, whatever its method. No
            // auth layer in front, or an optional one without a token: refuse
            // as the auth layer would (500 or 401).
            let principal = match crate::context::authenticated(req.extensions()) {
                Ok((principal, _)) => principal,
                Err(e) => return Ok(crate::context::render(req.extensions(), e)),
            };
            // GET (a stream) and DELETE (ending a session) carry no call;
            // every other method is read like a POST.
            if req.method() == Method::GET || req.method() == Method::DELETE {
                return inner.call(req).await;
            }
            let encoded = req
                .headers()
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
            if encoded {
                return Ok(
                    Denial::invalid_request("compressed MCP requests are not accepted")
                        .into_response(req.extensions()),
                );
            }
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, rules.max_body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    let mut resp = Response::new(ResBody::default());
                    *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    return Ok(resp);
                }
                Err(_) => {
                    return Ok(
                        Denial::invalid_request("the request body could not be read")
                            .into_response(&parts.extensions),
                    );
                }
            };
            let required = match rules.required(&bytes) {
                Ok(required) => required,
                Err(why) => {
                    return Ok(Denial::invalid_request(why).into_response(&parts.extensions));
                }
            };
            // The 403 names every scope the call needs that the token lacks
            // (the MCP spec: all that is needed, in one challenge; scopes
            // already granted need not be listed).
            let missing: Vec<&str> = required
                .into_iter()
                .filter(|s| !principal.scopes().contains(s))
                .collect();
            if !missing.is_empty() {
                return Ok(Denial::insufficient_scope(&missing).into_response(&parts.extensions));
            }
            inner.call(Request::from_parts(parts, B::from(bytes))).await
        })
    }
}
