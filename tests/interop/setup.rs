//! The independent servers' dependencies, for the interop and differential
//! tests: installed by the test run itself when missing (pinned by
//! `package-lock.json` and `requirements.txt`), and a loud failure when that
//! is impossible. `M2M_INTEROP=skip` skips these tests, saying so.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub(crate) fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn skipped(what: &str) -> bool {
    let skip = std::env::var("M2M_INTEROP").is_ok_and(|v| v == "skip");
    if skip {
        eprintln!("SKIPPED (M2M_INTEROP=skip): {what}");
    }
    skip
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .output()
        .map_err(|e| format!("{program} could not be started: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ready(result: &Result<(), String>, install: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => panic!(
            "{e}\nthe interop tests need it: {install}\n(or set M2M_INTEROP=skip to skip them, knowingly)"
        ),
    }
}

/// Node with oidc-provider and jose from `package-lock.json`.
pub(crate) fn node_ready() -> bool {
    if skipped("tests that need Node (oidc-provider, jose)") {
        return false;
    }
    static NODE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = NODE.get_or_init(|| {
        let installed = || {
            ["oidc-provider", "jose", "@modelcontextprotocol/client"]
                .iter()
                .all(|m| interop_dir().join("node_modules").join(m).is_dir())
        };
        if !installed() {
            run("npm", &["ci", "--no-audit", "--no-fund"])?;
        }
        run("node", &["--version"])?;
        if installed() {
            Ok(())
        } else {
            Err(
                "npm ci did not install oidc-provider, jose and @modelcontextprotocol/client"
                    .into(),
            )
        }
    });
    ready(result, "Node and npm (npm ci --prefix tests/interop)")
}

/// Python with Authlib and Flask from `requirements.txt`.
#[allow(dead_code)] // the differential test needs only Node
pub(crate) fn python_ready() -> bool {
    if skipped("tests that need Python (Authlib)") {
        return false;
    }
    static PYTHON: OnceLock<Result<(), String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let check = || run("python3", &["-c", "import authlib, flask"]);
        if check().is_err() {
            run(
                "python3",
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ],
            )?;
        }
        check()
    });
    ready(
        result,
        "Python 3 with pip (python3 -m pip install -r tests/interop/requirements.txt)",
    )
}
