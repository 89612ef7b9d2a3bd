//! RFC 9728 OAuth 2.0 Protected Resource Metadata.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What this API tells clients (and AI agents, e.g. MCP clients) about how to
/// get a token for it: RFC 9728 `/.well-known/oauth-protected-resource`.
///
/// ```
/// use m2m_guard::ProtectedResource;
///
/// let resource = ProtectedResource::new("https://api.acme.com")
///     .authorization_servers(["https://acme.kinde.com"])
///     .scopes_supported(["read:users", "write:flags"]);
/// assert_eq!(resource.metadata_url(), "https://api.acme.com/.well-known/oauth-protected-resource");
/// assert_eq!(resource.well_known_path(), "/.well-known/oauth-protected-resource");
/// ```
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
}

impl ProtectedResource {
    /// Describe the resource identified by `resource` (its URL, usually the
    /// audience tokens are issued for).
    pub fn new(resource: impl Into<String>) -> Self {
        ProtectedResource {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            resource_name: None,
            resource_documentation: None,
        }
    }

    /// The issuers clients get tokens from (e.g. `verifier.issuers()`).
    pub fn authorization_servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.authorization_servers = servers.into_iter().map(Into::into).collect();
        self.authorization_servers.sort();
        self
    }

    /// The scopes this API understands.
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// A human-readable name.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// A URL of documentation for developers.
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// The scopes this API understands, as configured.
    pub(crate) fn scopes(&self) -> &[String] {
        &self.scopes_supported
    }

    /// Check what RFC 9728 and the MCP authorization spec require, so a
    /// mistake shows at start rather than in a client's failed discovery:
    /// `resource` is an absolute `https` URL (`http` on loopback) without a
    /// fragment, at least one authorization server is named, and each is an
    /// issuer identifier (absolute `https` URL, `http` on loopback, without
    /// query or fragment).
    ///
    /// # Errors
    /// [`BuildError::Config`](crate::BuildError::Config) naming what is wrong.
    pub fn validate(&self) -> Result<(), crate::BuildError> {
        let bad = |m: String| {
            Err(crate::BuildError::Config(format!(
                "protected resource: {m}"
            )))
        };
        let url = |what: &str, s: &str| -> Result<url::Url, crate::BuildError> {
            let u = url::Url::parse(s).map_err(|e| {
                crate::BuildError::Config(format!(
                    "protected resource: {what} {s:?} is not an absolute URL ({e})"
                ))
            })?;
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !(u.scheme() == "https" || (u.scheme() == "http" && loopback)) {
                return Err(crate::BuildError::Config(format!(
                    "protected resource: {what} {s:?} must be https (http only on loopback)"
                )));
            }
            if u.fragment().is_some() || s.contains('#') {
                return Err(crate::BuildError::Config(format!(
                    "protected resource: {what} {s:?} must not have a fragment"
                )));
            }
            Ok(u)
        };
        url("resource", &self.resource)?;
        if self.authorization_servers.is_empty() {
            return bad("at least one authorization server is required (RFC 9728 for MCP)".into());
        }
        for server in &self.authorization_servers {
            if url("authorization server", server)?.query().is_some() {
                return bad(format!(
                    "authorization server {server:?} must not have a query"
                ));
            }
        }
        for scope in &self.scopes_supported {
            if !crate::guard::is_scope_token(scope) {
                return bad(format!("{scope:?} is not a scope"));
            }
        }
        Ok(())
    }

    /// The path to serve the document at (RFC 9728 §3.1: the well-known
    /// segment goes before the resource's own path).
    pub fn well_known_path(&self) -> String {
        let path = url::Url::parse(&self.resource)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{WELL_KNOWN}{path}")
    }

    /// The absolute URL of the document, for `resource_metadata` in challenges.
    pub fn metadata_url(&self) -> String {
        match url::Url::parse(&self.resource) {
            Ok(u) => format!(
                "{}{}",
                u.origin().ascii_serialization(),
                self.well_known_path()
            ),
            Err(_) => format!("{}{WELL_KNOWN}", self.resource.trim_end_matches('/')),
        }
    }

    /// The metadata document.
    pub fn document(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
        });
        if !self.scopes_supported.is_empty() {
            doc["scopes_supported"] = self.scopes_supported.clone().into();
        }
        if let Some(n) = &self.resource_name {
            doc["resource_name"] = n.clone().into();
        }
        if let Some(d) = &self.resource_documentation {
            doc["resource_documentation"] = d.clone().into();
        }
        doc
    }

    /// A tower service answering `GET` (and `HEAD`) with the document. Mount
    /// it outside the auth layer: with axum,
    /// `.route_service(&resource.well_known_path(), resource.service())`
    /// after `.layer(M2mAuthLayer::new(..))`.
    pub fn service(&self) -> MetadataService {
        MetadataService {
            body: self.document().to_string().into(),
        }
    }
}

/// Serves a [`ProtectedResource`] document.
#[derive(Debug, Clone)]
pub struct MetadataService {
    body: Arc<str>,
}

impl<B> Service<Request<B>> for MetadataService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut resp = if req.method() == Method::GET || req.method() == Method::HEAD {
            let mut r = Response::new(self.body.to_string());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            r
        } else {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        };
        if req.method() == Method::HEAD {
            resp.body_mut().clear();
        }
        ready(Ok(resp))
    }
}
