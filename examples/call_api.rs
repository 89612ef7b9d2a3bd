//! Get a client-credentials token and call an API with it.
//!
//! ```text
//! cargo run --example call_api -- --token-url URL --client-id ID --client-secret S \
//!     --audience AUD [--scope "a b"] [--resource] [--post] --api URL
//! ```
//!
//! The secret can come from M2M_CLIENT_SECRET instead of the command line
//! (preferable: command lines end up in shell history and process lists).

use m2m_guard::client::{BearerTokenLayer, ClientAuth, ClientSecret, TokenProvider};
use std::process::ExitCode;
use tower::{Service, ServiceBuilder, ServiceExt};

const USAGE: &str = "usage: call_api --token-url URL --client-id ID [--client-secret S | env M2M_CLIENT_SECRET] \
--audience AUD [--scope \"a b\"] [--resource] [--post] --api URL";

#[tokio::main]
async fn main() -> ExitCode {
    let mut token_url = None;
    let mut client_id = None;
    let mut secret = std::env::var("M2M_CLIENT_SECRET").ok();
    let mut audience = None;
    let mut scope = None;
    let mut api = None;
    let mut resource_style = false;
    let mut post = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--token-url" => &mut token_url,
            "--client-id" => &mut client_id,
            "--client-secret" => &mut secret,
            "--audience" => &mut audience,
            "--scope" => &mut scope,
            "--api" => &mut api,
            "--resource" => {
                resource_style = true;
                continue;
            }
            "--post" => {
                post = true;
                continue;
            }
            _ => {
                eprintln!("unknown flag {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        *slot = args.next();
    }
    let (Some(token_url), Some(client_id), Some(secret), Some(api)) =
        (token_url, client_id, secret, api)
    else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut builder = TokenProvider::builder(client_id, ClientSecret::new(secret))
        .token_url(token_url)
        .client_auth(if post {
            ClientAuth::Post
        } else {
            ClientAuth::Basic
        });
    if let Some(aud) = audience {
        builder = if resource_style {
            builder.resource(aud)
        } else {
            builder.audience(aud)
        };
    }
    if let Some(s) = scope {
        builder = builder.scopes(s.split_whitespace().map(str::to_owned));
    }
    let provider = match builder.build().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match provider.token().await {
        Ok(t) => eprintln!(
            "got a token (scope: {}, expires in {:?})",
            t.scope().unwrap_or("-"),
            t.expires_at() - std::time::Instant::now()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let url: reqwest::Url = match api.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: invalid --api URL: {e}");
            return ExitCode::from(2);
        }
    };
    // The token goes to the API's origin and nowhere else.
    let layer = match BearerTokenLayer::new(provider).allow_origin(url.as_str()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --api: {e}");
            return ExitCode::from(2);
        }
    };
    let mut client = ServiceBuilder::new()
        .layer(layer)
        .service(reqwest::Client::new());
    let req = reqwest::Request::new(reqwest::Method::GET, url);
    let resp = match client.ready().await {
        Ok(c) => c.call(req).await,
        Err(e) => Err(e),
    };
    match resp {
        Ok(resp) => {
            let status = resp.status();
            println!("HTTP {status}");
            println!("{}", resp.text().await.unwrap_or_default());
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
