#!/usr/bin/env bash
# Run every fuzz target for a while, on the stable toolchain (no sanitizer).
#   bash fuzz/run.sh          # smoke run: 20 s per target (what CI does)
#   bash fuzz/run.sh 3600     # the long run: an hour per target
# Needs cargo-fuzz: cargo install cargo-fuzz --locked
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
for target in token jwks authorization_header; do
  mkdir -p "corpus/$target"
  echo "==> fuzz $target for ${secs}s"
  cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -max_len=20000 -timeout=5 -rss_limit_mb=1024 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|Done|SUMMARY|.*ERROR)" || true
  # A crash leaves an artifact and a non-zero exit; make it fail the run.
  if compgen -G "artifacts/$target/*" > /dev/null; then
    echo "fuzz target $target found a crash:" artifacts/"$target"/*
    exit 1
  fi
done
