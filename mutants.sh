#!/usr/bin/env bash
# Mutation testing of the security core (cargo-mutants; scope and test
# suites in .cargo/mutants.toml).
#   bash mutants.sh                 # every mutant of the security core (hours on 2 cores)
#   bash mutants.sh --file src/token.rs   # one module
#   bash mutants.sh --in-diff BASE  # only code changed since git revision BASE
# Results: mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
# A fixed differential seed: the same mutant meets the same variants every run.
export M2M_DIFF_CASES="${M2M_DIFF_CASES:-1000}"
export M2M_DIFF_SEED="${M2M_DIFF_SEED:-20261130}"
if [ "${1:-}" = "--in-diff" ]; then
  base="${2:?usage: mutants.sh --in-diff BASE}"
  shift 2
  diff="$(mktemp)"
  trap 'rm -f "$diff"' EXIT
  git diff "$base" -- src > "$diff"
  if [ ! -s "$diff" ]; then
    echo "no change to src/ since $base: nothing to mutate"
    exit 0
  fi
  exec cargo mutants --profile mutants --in-diff "$diff" "$@"
fi
exec cargo mutants --profile mutants "$@"
