//! A protected API you can point at your own issuer.
//!
//! ```text
//! cargo run --release --example serve -- --issuer https://acme.kinde.com --audience https://api.acme.com --preset kinde
//! ```
//!
//! Every flag has an environment variable: M2M_ISSUER, M2M_AUDIENCE,
//! M2M_JWKS_URL, M2M_PRESET, M2M_LISTEN, M2M_LEEWAY, M2M_MAX_STALE,
//! M2M_TENANT_CLAIM, M2M_ALLOWED_CLIENT_IDS, M2M_BIND_TO_CLIENT_IDS,
//! M2M_ACCEPT_USER_TOKENS, M2M_ALLOWED_TENANTS.
//!
//! A multi-tenant issuer is a template with `{tenantid}` plus the tenants it
//! admits, e.g. Entra: `--issuer 'https://login.microsoftonline.com/{tenantid}/v2.0'
//! --preset entra --allowed-tenants TID,TID`.

mod common;

use m2m_guard::{Issuer, Preset, ProtectedResource, Verifier};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: serve --issuer URL --audience AUD [--jwks-url URL] [--preset NAME] \
[--listen ADDR] [--leeway SECS] [--max-stale SECS] [--tenant-claim NAME] \
[--allowed-client-ids ID,ID] [--bind-to-client-ids ID,ID] [--accept-user-tokens true|false] \
[--allowed-tenants T,T]
presets: generic kinde scalekit auth0 okta entra keycloak cognito
--bind-to-client-ids: for issuers whose tokens carry no aud (then --audience is optional)
--allowed-tenants: for an issuer template with {tenantid}, e.g.
  https://login.microsoftonline.com/{tenantid}/v2.0";

struct Args {
    issuer: String,
    audience: Option<String>,
    jwks_url: Option<String>,
    preset: Preset,
    listen: String,
    leeway: Option<u64>,
    max_stale: Option<u64>,
    tenant_claim: Option<String>,
    allowed_client_ids: Option<Vec<String>>,
    bind_to_client_ids: Option<Vec<String>>,
    accept_user_tokens: bool,
    allowed_tenants: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut issuer = env("M2M_ISSUER");
    let mut audience = env("M2M_AUDIENCE");
    let mut jwks_url = env("M2M_JWKS_URL");
    let mut preset = env("M2M_PRESET");
    let mut listen = env("M2M_LISTEN");
    let mut leeway = env("M2M_LEEWAY");
    let mut max_stale = env("M2M_MAX_STALE");
    let mut tenant_claim = env("M2M_TENANT_CLAIM");
    let mut allowed = env("M2M_ALLOWED_CLIENT_IDS");
    let mut bind = env("M2M_BIND_TO_CLIENT_IDS");
    let mut accept_users = env("M2M_ACCEPT_USER_TOKENS");
    let mut tenants = env("M2M_ALLOWED_TENANTS");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let slot = match flag.as_str() {
            "--issuer" => &mut issuer,
            "--audience" => &mut audience,
            "--jwks-url" => &mut jwks_url,
            "--preset" => &mut preset,
            "--listen" => &mut listen,
            "--leeway" => &mut leeway,
            "--max-stale" => &mut max_stale,
            "--tenant-claim" => &mut tenant_claim,
            "--allowed-client-ids" => &mut allowed,
            "--bind-to-client-ids" => &mut bind,
            "--accept-user-tokens" => &mut accept_users,
            "--allowed-tenants" => &mut tenants,
            other => return Err(format!("unknown flag {other}")),
        };
        *slot = Some(it.next().ok_or_else(|| format!("{flag} needs a value"))?);
    }
    let secs = |name: &str, v: Option<String>| -> Result<Option<u64>, String> {
        v.map(|s| {
            s.parse::<u64>()
                .map_err(|_| format!("{name} must be a number of seconds"))
        })
        .transpose()
    };
    let preset = match preset {
        Some(p) => Preset::from_name(&p).ok_or_else(|| format!("unknown preset {p}"))?,
        None => Preset::Generic,
    };
    let ids = |v: Option<String>| -> Option<Vec<String>> {
        v.map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    };
    let accept_user_tokens = match accept_users.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "--accept-user-tokens must be true or false, not {other}"
            ));
        }
    };
    Ok(Args {
        tenant_claim,
        allowed_client_ids: ids(allowed),
        bind_to_client_ids: ids(bind),
        accept_user_tokens,
        allowed_tenants: ids(tenants),
        issuer: issuer.ok_or("--issuer is required")?,
        audience,
        jwks_url,
        preset,
        listen: listen.unwrap_or_else(|| "127.0.0.1:8080".into()),
        leeway: secs("--leeway", leeway)?,
        max_stale: secs("--max-stale", max_stale)?,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "m2m_guard=debug,info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut issuer = Issuer::new(&args.issuer).preset(args.preset);
    if let Some(aud) = &args.audience {
        issuer = issuer.audience(aud);
    }
    if let Some(url) = &args.jwks_url {
        issuer = issuer.jwks_url(url);
    }
    if let Some(l) = args.leeway {
        issuer = issuer.leeway(Duration::from_secs(l));
    }
    if let Some(s) = args.max_stale {
        issuer = issuer.max_stale(Duration::from_secs(s));
    }
    if let Some(claim) = &args.tenant_claim {
        issuer = issuer.tenant_claim(claim);
    }
    if let Some(ids) = &args.allowed_client_ids {
        issuer = issuer.allowed_client_ids(ids);
    }
    if let Some(ids) = &args.bind_to_client_ids {
        issuer = issuer.bind_to_client_ids(ids);
    }
    if args.accept_user_tokens {
        issuer = issuer.accept_user_tokens();
    }
    if let Some(tenants) = &args.allowed_tenants {
        issuer = issuer.allowed_tenants(tenants);
    }
    let verifier = match Verifier::builder().issuer(issuer).build().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = verifier.preload().await {
        // Not fatal: keys are fetched again on the first request.
        eprintln!("warning: could not load the issuer's keys yet: {e}");
    }
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("local address");
    let resource = ProtectedResource::new(
        args.audience
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    )
    .authorization_servers(verifier.issuers().filter(|i| !i.contains("{tenantid}")))
    .scopes_supported(["read:users", "write:flags"]);
    let app = common::demo_router(verifier, &resource);
    println!("listening on http://{addr}");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
