//! Revoke tokens on every replica of a fleet (servers started with
//! `serve --redis URL`), or list the revocations in force.
//!
//! ```text
//! # A leaked secret, rotated now: the client's tokens issued so far die.
//! cargo run --example revoke -- --redis redis://127.0.0.1:6379 --issuer https://acme.kinde.com --client-id billing-sync
//! # An offboarded tenant, a single token, a rotation an hour ago:
//! cargo run --example revoke -- --redis URL --issuer ISS --tenant org_123
//! cargo run --example revoke -- --redis URL --issuer ISS --jti 3f2a...
//! cargo run --example revoke -- --redis URL --issuer ISS --client-id ID --before 1764540000
//! cargo run --example revoke -- --redis URL --list
//! ```
//!
//! Every flag has an environment variable: M2M_REDIS, M2M_ISSUER.

// (The server helpers in there are not used by this tool.)
#[allow(dead_code)]
mod cli;

use m2m_guard::Revocation;
use m2m_guard::fleet::Fleet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: revoke --redis URL --issuer ISS (--client-id ID | --tenant T | --jti J) [--before UNIX_SECS]
       revoke --redis URL --list
--before: revoke the tokens issued before this moment (default: now); ignored for --jti";

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn revocation(f: &cli::Flags) -> Result<Option<Revocation>, String> {
    if f.get("--list").is_some() {
        return Ok(None);
    }
    let issuer = f.get("--issuer").ok_or("--issuer is required")?;
    let targets = [
        f.get("--client-id").map(|v| Revocation::client(&issuer, v)),
        f.get("--tenant").map(|v| Revocation::tenant(&issuer, v)),
        f.get("--jti").map(|v| Revocation::jti(&issuer, v)),
    ];
    let mut given = targets.into_iter().flatten();
    let (Some(mut r), None) = (given.next(), given.next()) else {
        return Err("exactly one of --client-id, --tenant, --jti is required".into());
    };
    if let Some(before) = f.get("--before") {
        let secs: u64 = before
            .parse()
            .map_err(|_| "--before must be unix seconds".to_owned())?;
        r = r.issued_before(UNIX_EPOCH + Duration::from_secs(secs));
    }
    Ok(Some(r))
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing();
    let flags = cli::Flags::parse(&[
        ("--redis", "M2M_REDIS"),
        ("--issuer", "M2M_ISSUER"),
        ("--client-id", ""),
        ("--tenant", ""),
        ("--jti", ""),
        ("--before", ""),
        ("--list", "!"),
    ]);
    let parsed = flags.and_then(|f| {
        let url = f.get("--redis").ok_or("--redis is required")?;
        Ok((url, revocation(&f)?))
    });
    let (url, revocation) = match parsed {
        Ok(p) => p,
        Err(e) => return cli::usage_error(&e, USAGE),
    };
    let fleet = match Fleet::builder(url).timeout(Duration::from_secs(5)).build() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match revocation {
        None => fleet.list().await.map(|all| {
            all.iter()
                .map(|r| {
                    format!(
                        "{}\t{}\t{}\tbefore={}\texpires={}\n",
                        r.kind(),
                        r.issuer(),
                        r.value(),
                        unix(r.before()),
                        unix(r.expires_at())
                    )
                })
                .collect::<String>()
        }),
        Some(r) => fleet.revoke(r).await.map(|r| {
            format!(
                "revoked {} {} of {} (issued before {}); in force until {}\n",
                r.kind(),
                r.value(),
                r.issuer(),
                unix(r.before()),
                unix(r.expires_at())
            )
        }),
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
