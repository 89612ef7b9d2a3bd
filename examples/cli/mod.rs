//! Command-line plumbing shared by the `serve` and `mcp` examples: flags
//! that each have an environment variable, tracing to stderr, usage errors.

use std::collections::HashMap;
use std::process::ExitCode;

/// Flag values: `--name value` on the command line, else the flag's
/// environment variable (empty counts as unset).
pub(crate) struct Flags(HashMap<&'static str, String>);

impl Flags {
    /// Parse the command line against `spec` (flag, environment variable;
    /// no variable: `""`; a switch without a value: `"!"`).
    /// `Err("")` for `--help`, else the error to show with the usage.
    pub(crate) fn parse(spec: &[(&'static str, &'static str)]) -> Result<Flags, String> {
        let mut values = HashMap::new();
        for (flag, var) in spec {
            if var.is_empty() || *var == "!" {
                continue;
            }
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                values.insert(*flag, v);
            }
        }
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                return Err(String::new());
            }
            let Some((flag, var)) = spec.iter().find(|(f, _)| *f == arg) else {
                return Err(format!("unknown flag {arg}"));
            };
            if *var == "!" {
                values.insert(*flag, "true".into());
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            values.insert(*flag, value);
        }
        Ok(Flags(values))
    }

    /// The value of `flag`, if given.
    pub(crate) fn get(&self, flag: &str) -> Option<String> {
        self.0.get(flag).cloned()
    }
}

/// Log m2m-guard's decisions (debug) and everything else at info, to stderr.
pub(crate) fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "m2m_guard=debug,info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Print `error` (if any) and the usage; exit status 2.
pub(crate) fn usage_error(error: &str, usage: &str) -> ExitCode {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!("{usage}");
    ExitCode::from(2)
}

/// Build the verifier and try to load its keys now (not fatal: keys are
/// fetched again on the first request). `None` after printing why it
/// could not be built.
pub(crate) async fn verifier(builder: m2m_guard::VerifierBuilder) -> Option<m2m_guard::Verifier> {
    let verifier = match builder.build().await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    if let Err(e) = verifier.preload().await {
        eprintln!("warning: could not load the issuer's keys yet: {e}");
    }
    Some(verifier)
}

/// Listen on `addr`; `None` after printing why not.
pub(crate) async fn listen(addr: &str) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            None
        }
    }
}
