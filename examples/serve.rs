//! A protected API you can point at your own issuer.
//!
//! ```text
//! cargo run --release --example serve -- --issuer https://acme.kinde.com --audience https://api.acme.com --preset kinde
//! ```
//!
//! Every flag has an environment variable: M2M_ISSUER, M2M_AUDIENCE,
//! M2M_JWKS_URL, M2M_PRESET, M2M_LISTEN, M2M_LEEWAY, M2M_MAX_STALE,
//! M2M_TENANT_CLAIM, M2M_ALLOWED_CLIENT_IDS, M2M_BIND_TO_CLIENT_IDS,
//! M2M_ACCEPT_USER_TOKENS, M2M_ALLOWED_TENANTS, M2M_DPOP, M2M_PUBLIC_URL,
//! M2M_REDIS (and M2M_FLEET_SECRET for warm starts).
//!
//! `--redis redis://HOST:6379` joins a fleet: revocations made with the
//! `revoke` example reach this server within a second, DPoP proofs are
//! checked for replays across every server on that Redis, and a server
//! started while the issuer is down uses the keys a sibling published.
//!
//! DPoP is allowed by default (`--dpop allowed`): a DPoP-bound token works
//! only as `Authorization: DPoP` with a proof for the request; plain bearer
//! tokens work as before. `--dpop required` refuses bearer tokens, `--dpop
//! off` accepts bearer tokens only (and refuses bound ones).
//!
//! `GET /readyz` answers 200 while the keys (and a fleet's revocation list)
//! are usable, 503 otherwise; `GET /metrics` serves Prometheus text.
//!
//! A multi-tenant issuer is a template with `{tenantid}` plus the tenants it
//! admits, e.g. Entra: `--issuer 'https://login.microsoftonline.com/{tenantid}/v2.0'
//! --preset entra --allowed-tenants TID,TID`.

mod cli;
mod common;

use m2m_guard::fleet::Fleet;
use m2m_guard::{Dpop, Issuer, Preset, ProtectedResource, Verifier};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: serve --issuer URL --audience AUD [--jwks-url URL] [--preset NAME] \
[--listen ADDR] [--leeway SECS] [--max-stale SECS] [--tenant-claim NAME] \
[--allowed-client-ids ID,ID] [--bind-to-client-ids ID,ID] [--accept-user-tokens true|false] \
[--allowed-tenants T,T] [--dpop off|allowed|required] [--public-url URL] [--redis URL]
presets: generic kinde scalekit auth0 okta entra keycloak cognito
--bind-to-client-ids: for issuers whose tokens carry no aud (then --audience is optional)
--dpop: DPoP-bound tokens (RFC 9449); default allowed: bound tokens need a proof, others work as Bearer
--public-url: the scheme and host clients call (DPoP proofs name it); default http://LISTEN-ADDR
--redis: join a fleet on this Redis: shared revocations, DPoP replay checks, warm starts
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
    dpop: DpopMode,
    public_url: Option<String>,
    redis: Option<String>,
}

/// RFC 9449 on every route: off (bearer only), allowed, or required.
#[derive(Clone, Copy)]
enum DpopMode {
    Off,
    Allowed,
    Required,
}

fn parse_args() -> Result<Args, String> {
    let f = cli::Flags::parse(&[
        ("--issuer", "M2M_ISSUER"),
        ("--audience", "M2M_AUDIENCE"),
        ("--jwks-url", "M2M_JWKS_URL"),
        ("--preset", "M2M_PRESET"),
        ("--listen", "M2M_LISTEN"),
        ("--leeway", "M2M_LEEWAY"),
        ("--max-stale", "M2M_MAX_STALE"),
        ("--tenant-claim", "M2M_TENANT_CLAIM"),
        ("--allowed-client-ids", "M2M_ALLOWED_CLIENT_IDS"),
        ("--bind-to-client-ids", "M2M_BIND_TO_CLIENT_IDS"),
        ("--accept-user-tokens", "M2M_ACCEPT_USER_TOKENS"),
        ("--allowed-tenants", "M2M_ALLOWED_TENANTS"),
        ("--dpop", "M2M_DPOP"),
        ("--public-url", "M2M_PUBLIC_URL"),
        ("--redis", "M2M_REDIS"),
    ])?;
    let (issuer, audience, jwks_url, preset, listen) = (
        f.get("--issuer"),
        f.get("--audience"),
        f.get("--jwks-url"),
        f.get("--preset"),
        f.get("--listen"),
    );
    let (leeway, max_stale, tenant_claim) = (
        f.get("--leeway"),
        f.get("--max-stale"),
        f.get("--tenant-claim"),
    );
    let dpop = match f.get("--dpop").as_deref() {
        None | Some("allowed") => DpopMode::Allowed,
        Some("required") => DpopMode::Required,
        Some("off") => DpopMode::Off,
        Some(other) => {
            return Err(format!(
                "--dpop must be off, allowed or required, not {other}"
            ));
        }
    };
    let public_url = f.get("--public-url");
    let (allowed, bind, accept_users, tenants) = (
        f.get("--allowed-client-ids"),
        f.get("--bind-to-client-ids"),
        f.get("--accept-user-tokens"),
        f.get("--allowed-tenants"),
    );
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
        dpop,
        public_url,
        redis: f.get("--redis"),
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
    cli::init_tracing();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => return cli::usage_error(&e, USAGE),
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
    // Warm starts only with a secret every server shares (from the environment).
    let fleet_secret = std::env::var("M2M_FLEET_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    let fleet = match args.redis.as_deref().map(|url| {
        let b = Fleet::builder(url);
        match &fleet_secret {
            Some(secret) => b.warm_start(secret).build(),
            None => b.build(),
        }
    }) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the verifier: metrics recorded from the first fetch on.
    let metrics = common::prometheus();
    let mut builder = Verifier::builder().issuer(issuer);
    if let Some(f) = &fleet {
        builder = builder.fleet(f);
    }
    let Some(verifier) = cli::verifier(builder).await else {
        return ExitCode::FAILURE;
    };
    let Some(listener) = cli::listen(&args.listen).await else {
        return ExitCode::FAILURE;
    };
    let addr = listener.local_addr().expect("local address");
    let resource = ProtectedResource::new(
        args.audience
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    )
    .authorization_servers(verifier.issuers().filter(|i| !i.contains("{tenantid}")))
    .scopes_supported(["read:users", "write:flags"]);
    // DPoP proofs name the URL the client called: this server's, or the
    // public one in front of it.
    let origin = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let dpop = match args.dpop {
        DpopMode::Off => None,
        DpopMode::Allowed => Some(Dpop::new(&origin)),
        DpopMode::Required => Some(Dpop::new(&origin).required()),
    };
    let dpop = match (dpop, &fleet) {
        (Some(d), Some(f)) => Some(d.replay_store(f.replay_store())),
        (d, _) => d,
    };
    let app = common::demo_router(verifier.clone(), &resource, dpop)
        .merge(common::ops_router(verifier, metrics));
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
