#!/usr/bin/env bash
# Issue 13's benchmark table: runs exactly the rows it needs, RUNS (3) times each, with short
# criterion settings, and prints per row the median of the runs' medians and the min–max spread.
#
#   benches/run-table.sh            # everything (≈ 10 min on a quiet 2-core machine, plus builds)
#   SECTIONS="core flood" benches/run-table.sh      # only some sections
#   RUNS=5 BLUEZONED_BENCH_SECS=5 benches/run-table.sh
#
# Sections: core (matching core, one core), cores2 (the same rows on two cores, for the
# two-core / one-core ratio), flood (crafted vs random IDs), portable (portable paths against
# the `sha2`/`aes` crates' software backends; rebuilt with those backends forced, so it runs
# last), check (end-to-end rows of benches/check.rs, see the marked section below), daemonday
# (the daemon's simulated day, CPU ms, and the release `check`'s peak RSS).
# Run it on a quiet machine: the figures are wall-clock throughput of criterion.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
export BLUEZONED_BENCH_SECS=${BLUEZONED_BENCH_SECS:-3}
SECTIONS=${SECTIONS:-"core cores2 flood check daemonday portable"}
CRIT=${CARGO_TARGET_DIR:-target}/criterion
RESULTS=$(mktemp)
# The raw per-run figures stay on disk if a later section fails, so finished rows are not lost.
trap 'echo "raw results: $RESULTS" >&2' EXIT

# rows LABEL-PREFIX THREADS BENCH REGEX [cargo args...]
# Runs `cargo bench --bench BENCH` on the criterion rows matching REGEX with RAYON_NUM_THREADS
# set to THREADS, RUNS times, and appends "LABEL-PREFIX row<TAB>elements per second" for each
# row and run to the results (criterion's median time per iteration and the row's throughput).
rows() {
    local label=$1 threads=$2 bench=$3 regex=$4
    shift 4
    for run in $(seq 1 "$RUNS"); do
        echo ">> [$label] run $run/$RUNS: $bench '$regex' (RAYON_NUM_THREADS=$threads)" >&2
        RAYON_NUM_THREADS=$threads cargo bench --locked --bench "$bench" "$@" -- \
            --noplot --warm-up-time 1 "$regex" >&2
        python3 - "$CRIT" "$regex" "$label" >>"$RESULTS" <<'EOF'
import json, os, re, sys
crit, regex, label = sys.argv[1], re.compile(sys.argv[2]), sys.argv[3]
for root, _, files in os.walk(crit):
    if "benchmark.json" not in files or os.path.basename(root) != "new":
        continue
    b = json.load(open(os.path.join(root, "benchmark.json")))
    if not regex.search(b["full_id"]):
        continue
    est = json.load(open(os.path.join(root, "estimates.json")))
    ns = est["median"]["point_estimate"]
    elems = (b.get("throughput") or {}).get("Elements")
    if elems:
        print(f"{label} {b['full_id']}\t{elems / (ns * 1e-9)}")
    else:  # a row timed per iteration (the daemon's day): milliseconds
        print(f"{label} {b['full_id']} (ms)\t{ns / 1e6}")
EOF
    done
}

# Throughput rows of the matching core (issue 13's table).
CORE='^(bluezone/15000x14d/(100000|1000000)|gaen/1000000/(100000|1000000))$'

for section in $SECTIONS; do
    case $section in
    core) rows "1 core" 1 matching "$CORE" ;;
    cores2) rows "2 cores" 2 matching "$CORE" ;;
    flood) rows "1 core" 1 matching '^flood/(match-1000x14d|match-gaen-100000)/(random|crafted)$' ;;
    portable)
        # The portable paths (BLUEZONED_FORCE_PORTABLE=1), with `sha2` and `aes` built on their
        # software backends so their rows are the floor to beat, side by side.
        BLUEZONED_FORCE_PORTABLE=1 RUSTFLAGS="${RUSTFLAGS:-} --cfg aes_force_soft" \
            rows "1 core" 1 matching \
            '^(sha256-portable/.*|rpi-aes-portable/.*|bluezone-portable/1000x14d/100000|gaen-portable/100000/100000)$' \
            --features sha2/force-soft
        ;;
    check)
        # End-to-end `check` rows (benches/check.rs): load, index, match, score, persist. The
        # daemon-day row's CPU seconds and the release binary's peak RSS go to stderr.
        rows "1 core" 1 check '^check/(gaen/1000000|bluezone/15000x14d|load/gaen-1000000)$'
        ;;
    daemonday)
        # The daemon's simulated day (CPU milliseconds a day), and the peak RSS of the release
        # binary's `check`, which each run prints to stderr ("peak RSS").
        cargo build --locked --release -p bluezoned >&2
        BLUEZONED_CHECK_BIN=${CARGO_TARGET_DIR:-target}/release/bluezoned \
            rows "1 core" 1 check '^check/daemon-day$'
        ;;
    *) echo "unknown section: $section" >&2 && exit 2 ;;
    esac
done

python3 - "$RESULTS" "$RUNS" <<'EOF'
import sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    name, v = line.rstrip("\n").split("\t")
    vals[name].append(float(v))
def fmt(x, name=""):
    if name.endswith("(ms)"):
        return f"{x:.0f} ms"
    return f"{x / 1e6:.3f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"
def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
print(f"\n| row (elements/s; median of {sys.argv[2]} runs) | median | min–max |")
print("|---|---|---|")
med = {}
for name in sorted(vals):
    v = vals[name]
    med[name] = median(v)
    print(f"| {name} | {fmt(med[name], name)} | {fmt(min(v), name)}–{fmt(max(v), name)} |")
ratios = []
for name in med:
    if name.startswith("2 cores "):
        one = "1 core " + name[len("2 cores "):]
        if one in med:
            ratios.append((f"two cores / one core, {name[8:]}", med[name] / med[one]))
for row in ("match-1000x14d", "match-gaen-100000"):
    r, c = f"1 core flood/{row}/random", f"1 core flood/{row}/crafted"
    if r in med and c in med:
        ratios.append((f"crafted IDs slower than random by ({row})", med[r] / med[c]))
for name in med:
    if "sha2-compress256" in name:
        ours = name.replace("sha2-compress256-16x96", "subkey-chains-16x96")
        if ours in med:
            ratios.append(("portable SHA-256 chains vs sha2 soft (speed-up)", med[ours] / med[name]))
    if "aes-crate-144" in name:
        ours = name.replace("aes-crate-144", "rpi_blocks-144")
        if ours in med:
            ratios.append(("portable RPI AES vs aes soft (speed-up)", med[ours] / med[name]))
for what, x in ratios:
    print(f"| {what} | {x:.2f}× | |")
EOF
