#!/usr/bin/env bash
# Run every fuzz target for a while, on the stable toolchain (no sanitizer).
#   bash fuzz/run.sh          # smoke run: 20 s per target (what CI does)
#   bash fuzz/run.sh 3600     # the long run: an hour per target
# Needs cargo-fuzz: cargo install cargo-fuzz --locked
# Fails on a crash, on a build or tool failure, and on a run that executed nothing.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in token jwks authorization_header; do
  mkdir -p "corpus/$target"
  echo "==> fuzz $target for ${secs}s"
  status=0
  cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -max_len=20000 -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|Done|SUMMARY|.*ERROR)" "$log" || true
  # A crash leaves an artifact and a non-zero exit.
  if compgen -G "artifacts/$target/*" > /dev/null; then
    echo "fuzz target $target found a crash:" artifacts/"$target"/*
    exit 1
  fi
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $target failed (exit $status) without a crash artifact: build or tool failure"
    tail -40 "$log"
    exit 1
  fi
  units="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
  if [ -z "$units" ] || [ "$units" -eq 0 ]; then
    echo "fuzz target $target executed no units"
    tail -40 "$log"
    exit 1
  fi
  echo "fuzz target $target: $units units executed"
done
