//! Bounded, origin-pinned HTTP GETs for discovery documents and key sets.

use bytes::BytesMut;
use reqwest::Url;
use reqwest::header::{CACHE_CONTROL, CONTENT_LENGTH, HeaderMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::error::{BuildError, FetchError};
use crate::json::{Object, parse_object};

/// Limits applied to every fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchLimits {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) max_keys: usize,
    pub(crate) user_agent: String,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_bytes: 256 * 1024,
            max_keys: 100,
            user_agent: concat!("m2m-guard/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Performs the GETs.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    pub(crate) limits: FetchLimits,
}

/// A fetched body and the `max-age` the server allowed.
pub(crate) struct Fetched {
    pub(crate) body: BytesMut,
    pub(crate) max_age: Option<Duration>,
}

/// `true` for `localhost`, 127.0.0.0/8 and `::1`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Check that `url` may be fetched: https, or http to a loopback host;
/// no credentials, no fragment.
pub(crate) fn check_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        "http" => return Err("https is required (http is allowed only for loopback hosts)".into()),
        other => return Err(format!("unsupported scheme {other:?}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment is not allowed".into());
    }
    Ok(())
}

/// Check an endpoint that metadata fetched from `from` names (a `jwks_uri`,
/// a `token_endpoint`): as [`check_url`], and plaintext http to a loopback
/// host only when the metadata itself came that way. An https issuer's
/// document cannot send keys or secrets to whatever listens on localhost.
pub(crate) fn check_named_url(url: &Url, from: &Url) -> Result<(), String> {
    check_url(url)?;
    if url.scheme() == "http" && !(from.scheme() == "http" && is_loopback(from)) {
        return Err("an https issuer's metadata names a plaintext (http) endpoint: refused".into());
    }
    Ok(())
}

pub(crate) fn parse_url(what: &'static str, s: &str) -> Result<Url, BuildError> {
    let url = Url::parse(s).map_err(|e| BuildError::Url {
        what,
        reason: e.to_string(),
    })?;
    check_url(&url).map_err(|reason| BuildError::Url { what, reason })?;
    Ok(url)
}

/// The HTTP client for everything m2m-guard requests itself (metadata, key
/// sets, tokens): the caller's builder (custom CA, proxy) or a default one,
/// always with redirects off — a key set must come from its own URL, and a
/// token request must never carry its secret to where a redirect points —
/// and with our timeouts and user agent.
pub(crate) fn http_client(
    builder: Option<reqwest::ClientBuilder>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    builder
        .unwrap_or_default()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("m2m-guard/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl Fetcher {
    pub(crate) fn new(
        builder: Option<reqwest::ClientBuilder>,
        limits: FetchLimits,
    ) -> Result<Self, BuildError> {
        let client = http_client(builder, limits.connect_timeout, limits.timeout)
            .map_err(BuildError::HttpClient)?;
        Ok(Fetcher { client, limits })
    }

    /// With a client made by [`http_client`].
    #[cfg(feature = "client")]
    pub(crate) fn with_client(client: reqwest::Client, limits: FetchLimits) -> Self {
        Fetcher { client, limits }
    }

    /// GET `url`, bounded in time and size; a redirect is a failure.
    pub(crate) async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        // Applied even to a caller-supplied client, whose own settings we cannot see.
        match tokio::time::timeout(self.limits.timeout, self.get_inner(url)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout(self.limits.timeout)),
        }
    }

    async fn get_inner(&self, url: &Url) -> Result<Fetched, FetchError> {
        check_url(url).map_err(FetchError::InvalidUrl)?;
        let mut resp = self
            .client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .header(reqwest::header::USER_AGENT, &self.limits.user_agent)
            .send()
            .await
            .map_err(network)?;
        if resp.status().is_redirection() || resp.url() != url {
            return Err(FetchError::Redirect(resp.status().as_u16()));
        }
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let limit = self.limits.max_bytes;
        let max_age = max_age(resp.headers());
        let body = read_bounded(&mut resp, limit)
            .await
            .map_err(network)?
            .ok_or(FetchError::TooLarge { limit })?;
        Ok(Fetched { body, max_age })
    }

    /// Resolve an issuer's `jwks_uri` by discovery of the metadata at
    /// `base`, whose `issuer` must equal `issuer`.
    pub(crate) async fn discover(&self, base: &str, issuer: &str) -> Result<Url, FetchError> {
        let doc = self.discover_metadata_at(base, issuer).await?;
        let jwks = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FetchError::Parse("discovery document has no jwks_uri".into()))?;
        let jwks = Url::parse(jwks).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        let from = Url::parse(base).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        check_named_url(&jwks, &from).map_err(FetchError::InvalidUrl)?;
        Ok(jwks)
    }

    /// An issuer's metadata: OpenID Connect discovery first, then RFC 8414.
    /// The document's `issuer` must equal `issuer` exactly.
    #[cfg(feature = "client")]
    pub(crate) async fn discover_metadata(&self, issuer: &str) -> Result<Object, FetchError> {
        self.discover_metadata_at(issuer, issuer).await
    }

    /// The metadata at `at` (an issuer identifier, or a multi-tenant
    /// issuer's tenant-independent one), whose `issuer` must equal `issuer`.
    async fn discover_metadata_at(&self, at: &str, issuer: &str) -> Result<Object, FetchError> {
        let base = Url::parse(at).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        let oidc = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            at.trim_end_matches('/')
        ))
        .map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
        // RFC 8414 §3.1: the well-known segment goes between host and path.
        let mut rfc8414 = base.clone();
        let path = base.path().trim_end_matches('/');
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        rfc8414.set_query(None);

        match self.metadata_doc(&oidc, issuer).await {
            Ok(doc) => Ok(doc),
            // A mismatch is a definite answer; do not paper over it with the other document.
            Err(e @ FetchError::IssuerMismatch { .. }) => Err(e),
            Err(first_err) => {
                self.metadata_doc(&rfc8414, issuer)
                    .await
                    .map_err(|second| match second {
                        FetchError::Status(404) => first_err,
                        other => other,
                    })
            }
        }
    }

    async fn metadata_doc(&self, url: &Url, issuer: &str) -> Result<Object, FetchError> {
        let fetched = self.get(url).await?;
        let doc = parse_object(&fetched.body)
            .ok_or_else(|| FetchError::Parse("discovery document is not a JSON object".into()))?;
        let found = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FetchError::Parse("discovery document has no issuer".into()))?;
        if found != issuer {
            return Err(FetchError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: crate::text::remote(found, 200),
            });
        }
        Ok(doc)
    }
}

/// The body of `resp`, at most `limit` bytes (`None` past it: declared by
/// `Content-Length` or found while reading). Every response m2m-guard reads
/// (metadata, key sets, token responses) goes through here.
pub(crate) async fn read_bounded(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<BytesMut>, reqwest::Error> {
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize).min(limit));
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn network(e: reqwest::Error) -> FetchError {
    FetchError::Network(e.without_url())
}

/// `Cache-Control: max-age=N`, or zero for `no-cache` / `no-store`.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut out = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(v) = value.to_str() else { continue };
        for directive in v.split(',') {
            let d = directive.trim();
            if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if let Some((name, val)) = d.split_once('=')
                && name.trim().eq_ignore_ascii_case("max-age")
                && let Ok(secs) = val.trim().trim_matches('"').parse::<u64>()
            {
                out = Some(Duration::from_secs(secs));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_policy() {
        for ok in [
            "https://issuer.example.com/",
            "http://localhost:8080/jwks",
            "http://127.0.0.1:1/x",
            "http://127.3.2.1/x",
            "http://[::1]:9/x",
        ] {
            assert!(check_url(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example.com/",
            "http://10.0.0.1/",
            "ftp://localhost/",
            "https://user:pw@issuer.example.com/",
            "https://issuer.example.com/#frag",
            "http://localhost.evil.com/",
        ] {
            assert!(check_url(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
        // A user name alone, or a password alone, is a credential too.
        for credentials in [
            "https://user:pw@issuer.example.com/",
            "https://user@issuer.example.com/",
            "https://:pw@issuer.example.com/",
        ] {
            assert_eq!(
                check_url(&Url::parse(credentials).unwrap()),
                Err("credentials in the URL are not allowed".to_owned()),
                "{credentials}"
            );
        }
    }

    #[test]
    fn cache_control_max_age() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            CACHE_CONTROL,
            "public, max-age=300, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(CACHE_CONTROL, "max-age=banana".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
