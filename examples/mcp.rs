//! An MCP server (rmcp, streamable HTTP) protected end to end, per tool.
//!
//! ```text
//! cargo run --example mcp -- --issuer https://acme.kinde.com --listen 127.0.0.1:8080 --preset kinde
//! ```
//!
//! Serves `POST /mcp` (and GET / DELETE, which need a token too) with two
//! tools: `whoami` (the verified client id, tenant and scopes as JSON text)
//! and `admin-action` (scope `mcp:admin`); every call needs `mcp:read`. The audience
//! is the server's canonical URL `http://ADDR/mcp` unless `--audience` is
//! given. Its RFC 9728 metadata is at `/.well-known/oauth-protected-resource/mcp`
//! (and at the bare `/.well-known/oauth-protected-resource`, which several
//! clients probe); 401 challenges carry `resource_metadata` and
//! `scope="mcp:read"`, 403s `scope="mcp:admin"`. `mcp:admin` implies
//! `mcp:read`. The caller's token never reaches the tools.
//!
//! Every flag has an environment variable: M2M_ISSUER, M2M_JWKS_URL,
//! M2M_LISTEN, M2M_PRESET, M2M_AUDIENCE.

mod cli;

use m2m_guard::mcp::McpScopes;
use m2m_guard::{
    Issuer, M2mAuthLayer, Preset, Principal, ProtectedResource, ScopeHierarchy, Verifier,
};
use rmcp::handler::server::tool::Extension;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, tool, tool_router};
use std::process::ExitCode;

const USAGE: &str =
    "usage: mcp --issuer URL --listen ADDR [--jwks-url URL] [--preset NAME] [--audience AUD]
presets: generic kinde scalekit auth0 okta entra keycloak cognito";

/// The MCP server: two tools reading the verified caller.
#[derive(Debug, Clone, Default)]
struct Tools;

/// The principal the auth layer verified, from the HTTP request parts rmcp
/// hands to tools.
fn caller(parts: &http::request::Parts) -> Result<&Principal, ErrorData> {
    parts
        .extensions
        .get::<Principal>()
        .ok_or_else(|| ErrorData::internal_error("no verified caller", None))
}

#[tool_router(server_handler)]
impl Tools {
    #[tool(description = "The verified caller: client id, tenant and scopes")]
    async fn whoami(
        &self,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = caller(&parts)?;
        let who = serde_json::json!({
            "client_id": p.client_id(),
            "tenant": p.tenant(),
            "scopes": p.scopes(),
            // The token itself never reaches a tool (no passthrough).
            "authorization_header_seen": parts.headers.contains_key(http::header::AUTHORIZATION),
        });
        Ok(CallToolResult::success(vec![ContentBlock::text(
            who.to_string(),
        )]))
    }

    #[tool(
        name = "admin-action",
        description = "An administrative action (scope mcp:admin)"
    )]
    async fn admin_action(
        &self,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let p = caller(&parts)?;
        let by = p.client_id().unwrap_or("unknown client");
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "admin action done for {by}"
        ))]))
    }
}

struct Args {
    issuer: String,
    jwks_url: Option<String>,
    listen: String,
    preset: Preset,
    audience: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let f = cli::Flags::parse(&[
        ("--issuer", "M2M_ISSUER"),
        ("--jwks-url", "M2M_JWKS_URL"),
        ("--listen", "M2M_LISTEN"),
        ("--preset", "M2M_PRESET"),
        ("--audience", "M2M_AUDIENCE"),
    ])?;
    let (issuer, jwks_url, listen, preset, audience) = (
        f.get("--issuer"),
        f.get("--jwks-url"),
        f.get("--listen"),
        f.get("--preset"),
        f.get("--audience"),
    );
    let preset = match preset {
        Some(p) => Preset::from_name(&p).ok_or_else(|| format!("unknown preset {p}"))?,
        None => Preset::Generic,
    };
    Ok(Args {
        issuer: issuer.ok_or("--issuer is required")?,
        jwks_url,
        listen: listen.ok_or("--listen is required")?,
        preset,
        audience,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => return cli::usage_error(&e, USAGE),
    };
    let Some(listener) = cli::listen(&args.listen).await else {
        return ExitCode::FAILURE;
    };
    let addr = listener.local_addr().expect("local address");
    // The canonical URL of this MCP server: the RFC 8707 resource, and the
    // audience unless another one is given.
    let server_url = format!("http://{addr}/mcp");
    let audience = args.audience.clone().unwrap_or_else(|| server_url.clone());

    let mut issuer = Issuer::new(&args.issuer)
        .preset(args.preset)
        .audience(&audience);
    if let Some(url) = &args.jwks_url {
        issuer = issuer.jwks_url(url);
    }
    let builder = Verifier::builder()
        .issuer(issuer)
        .scope_hierarchy(ScopeHierarchy::new().implies("mcp:admin", ["mcp:read"]));
    let Some(verifier) = cli::verifier(builder).await else {
        return ExitCode::FAILURE;
    };
    let resource = ProtectedResource::new(&server_url)
        .authorization_servers([args.issuer.clone()])
        .scopes_supported(["mcp:read", "mcp:admin"])
        .resource_name("m2m-guard MCP example");
    if let Err(e) = resource.validate() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }

    let mcp = StreamableHttpService::new(
        || Ok(Tools),
        NeverSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    // With axum's route layers the rejections are axum responses: the
    // outermost layer (added last) verifies the token, the per-tool scopes
    // run inside it, then rmcp.
    let app = axum::Router::new()
        .route_service("/mcp", mcp)
        .route_layer(
            McpScopes::new()
                .all_calls(["mcp:read"])
                .tool("admin-action", ["mcp:admin"]),
        )
        .route_layer(
            M2mAuthLayer::new(verifier)
                .protected_resource(&resource)
                // Ask for the everyday scope first; admin-action's 403 says
                // what to step up to.
                .challenge_scopes(["mcp:read"])
                .strip_authorization(),
        )
        .route_service(&resource.well_known_path(), resource.service())
        .route_service("/.well-known/oauth-protected-resource", resource.service());

    println!("listening on {server_url}");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
