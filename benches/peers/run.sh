#!/usr/bin/env bash
# m2m-guard against its peers on identical tokens and keys, each in its own
# binary (their jsonwebtoken crypto backends would collide in one process).
#   bash benches/peers/run.sh            # 5000 first-seen tokens, 3 interleaved rounds
set -euo pipefail
cd "$(dirname "$0")"
n="${1:-5000}"
rounds="${ROUNDS:-3}"
peers=(m2m-guard jwt-authorizer oauth-resource-server tower-oauth2-resource-server)
export CARGO_TARGET_DIR="$PWD/target"
for p in "${peers[@]}"; do
  echo "==> build $p" >&2
  cargo build --release --quiet --manifest-path "$p/Cargo.toml"
done
fixture="$(mktemp -d)"
export PEER_FIXTURE="$fixture"
# The fixture issuer lives as long as this pipe stays open.
exec 3> >("$CARGO_TARGET_DIR/release/m2m-guard-peer" fixture "$fixture" "$n" > "$fixture/fixture.log")
for _ in $(seq 100); do [ -s "$fixture/env" ] && break; sleep 0.2; done
[ -s "$fixture/env" ] || { echo "fixture did not start" >&2; exit 1; }
results="$fixture/results.jsonl"
for r in $(seq "$rounds"); do
  for p in "${peers[@]}"; do
    echo "==> round $r: $p" >&2
    "$CARGO_TARGET_DIR/release/${p}-peer" | tee -a "$results"
  done
done
exec 3>&-
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peers = []
for r in rows:
    if r["peer"] not in peers:
        peers.append(r["peer"])
med = {p: (statistics.median(r["first_seen_ns"] for r in rows if r["peer"] == p),
           statistics.median(r["repeated_ns"] for r in rows if r["peer"] == p)) for p in peers}
ours = med["m2m-guard"]
print("| peer (whole middleware call) | first-seen | repeated | m2m-guard speed-up, first-seen | m2m-guard speed-up, repeated |")
print("|---|---|---|---|---|")
for p in peers:
    fs, rep = med[p]
    print(f"| {p} | {fs/1000:.2f} µs | {rep/1000:.2f} µs | {fs/ours[0]:.2f}× | {rep/ours[1]:.1f}× |")
PY
