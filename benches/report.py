#!/usr/bin/env python3
"""Print the ratios of the last `cargo bench --bench verify` run (criterion's estimates).

Refuses to mix runs: every estimate must have been written after the start of
the last run (`target/criterion/m2m-run.json`, written by the bench), so a
benchmark left out of that run (a filter, an interrupted run) cannot lend a
stale figure to a ratio."""
import json, os, sys

root = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")
try:
    with open(os.path.join(root, "m2m-run.json")) as f:
        run = json.load(f)
except FileNotFoundError:
    sys.exit("no run marker: run `cargo bench --bench verify` first")

def est(group, fn):
    path = os.path.join(root, group.replace("/", "_"), fn.replace("/", "_").replace(":", "_"), "new", "estimates.json")
    if not os.path.exists(path):
        # criterion keeps the names it was given, with some characters replaced
        for d in os.listdir(os.path.join(root, group.replace("/", "_"))):
            if d.replace("_", "") == fn.replace("/", "").replace(":", "").replace(" ", "").replace("(", "").replace(")", "").replace("_", ""):
                path = os.path.join(root, group.replace("/", "_"), d, "new", "estimates.json")
    if os.path.getmtime(path) < run["started"]:
        sys.exit(f"{group} / {fn}: estimate older than the last run (commit {run['commit']}); "
                 "re-run the whole bench, unfiltered")
    with open(path) as f:
        e = json.load(f)
    return e["median"]["point_estimate"]

def fmt(ns):
    return f"{ns/1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"

rows = []
print(f"run of commit {run['commit']}\n")
print("| case | jsonwebtoken::decode | m2m-guard | ratio (m2m-guard / decode) |")
print("|---|---|---|---|")
for alg in ["RS256", "ES256", "EdDSA"]:
    g = f"first_seen/{alg}"
    base = est(g, "jsonwebtoken::decode")
    ours = est(g, "m2m_guard::verify")
    print(f"| first-seen {alg} | {fmt(base)} | {fmt(ours)} | {ours/base:.3f}× |")
try:
    on = est("first_seen/EdDSA, cache on", "m2m_guard::verify (first sighting, cache on)")
    off = est("first_seen/EdDSA", "m2m_guard::verify")
    print(f"| first-seen EdDSA, token cache on vs off | {fmt(off)} (off) | {fmt(on)} (on) | {on/off:.3f}× |")
except (FileNotFoundError, KeyError):
    pass
g = "repeated/RS256"
base = est(g, "jsonwebtoken::decode")
hit = est(g, "m2m_guard::verify (cache hit)")
mw = est(g, "middleware oneshot (cache hit)")
print(f"| repeated RS256, verify (cache hit) | {fmt(base)} | {fmt(hit)} | {hit/base:.4f}× ({base/hit:.0f}× faster) |")
print(f"| repeated RS256, whole middleware call | {fmt(base)} | {fmt(mw)} | {mw/base:.4f}× ({base/mw:.0f}× faster) |")
