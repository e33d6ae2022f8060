#!/usr/bin/env bash
# tests/bench/tiering_bench.sh - what tiering costs, side by side in one run:
#   full cache vs tiered-exact at hot budgets 1.0 (nothing to recall) and the
#   given fractions, with the tier embedded in the worker, a kvtierd on
#   loopback, and two kvtierd shards behind the nginx load balancer
#   (ops/cluster.sh). Three recall paths of this build, each against the full
#   cache of its own quality_bench process:
#     batched    the defaults: each layer fetches its misses in one call before
#                it attends, many blocks per gRPC message (FetchBlockBatches /
#                PutBlockBatches);
#     async      + the speculative step-start fetch and each layer's fetch
#                overlapped with its attention (quality_bench tiered-exact-async,
#                serve --tier-async);
#     per-block  batched with one block per gRPC message (KVTIER_PER_BLOCK_RPCS=1:
#                what the wire did before the batched methods; remote tiers only);
#   staging at the hot budget (the default), and for `batched` also unbounded.
# Prints a markdown table (the README's) and writes one JSON document.
# Usage: tests/bench/tiering_bench.sh [--build DIR] [--budgets LIST] [--limit N]
#            [--json FILE] [--no-lb] [--model DIR] [--max-new N] [--no-all]
#   --build DIR     build folder with quality_bench and kvtierd (build)
#   --budgets LIST  hot budget fractions besides 1.0 (0.1,0.2,0.35)
#   --limit N       recall prompts used (12)
#   --json FILE     where the JSON goes (tests/bench/results/tiering.json)
#   --no-lb         skip the load-balancer rows (no nginx)
#   --model DIR     checkpoint (default: the fixture), e.g. a random Qwen3-0.6B
#                   from tests/fixtures/make_random_qwen3.py
#   --max-new N     tokens generated per prompt (64)
#   --no-all        skip the unbounded-staging rows
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=build budgets=0.1,0.2,0.35 limit=12 json=tests/bench/results/tiering.json lb=1
model="" max_new=64 all=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift ;;
    --budgets) budgets=$2; shift ;;
    --limit) limit=$2; shift ;;
    --json) json=$2; shift ;;
    --no-lb) lb=0 ;;
    --model) model=$2; shift ;;
    --max-new) max_new=$2; shift ;;
    --no-all) all=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "tiering_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
qb="$build/tests/bench/quality_bench"
[ -x "$qb" ] && [ -x "$build/service/kvtierd" ] || { echo "tiering_bench.sh: build first ($qb)" >&2; exit 1; }
work=$(mktemp -d /tmp/kvtier-tb-XXXXXX)
kvd_pid=""
cleanup() {
  [ -n "$kvd_pid" ] && kill "$kvd_pid" 2>/dev/null && wait "$kvd_pid" 2>/dev/null || true
  [ $lb -eq 1 ] && ops/cluster.sh down --dir "$work/cluster" --build "$build" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$build/service/kvtierd" --listen 127.0.0.1:0 --data-dir "$work/kvd" >"$work/kvd.out" 2>"$work/kvd.err" &
kvd_pid=$!
for _ in $(seq 50); do grep -q ':' "$work/kvd.out" 2>/dev/null && break; sleep 0.1; done
remote=$(grep -o '127.0.0.1:[0-9]*' "$work/kvd.out" | head -1)
[ -n "$remote" ] || { echo "tiering_bench.sh: kvtierd did not start" >&2; cat "$work/kvd.err" >&2; exit 1; }
targets=("embedded:" "remote:$remote")
if [ $lb -eq 1 ]; then
  ops/cluster.sh up --shards 2 --workers 0 --base-port 7600 --dir "$work/cluster" --build "$build" >/dev/null
  targets+=("lb:127.0.0.1:7601")
fi
# run NAME ENV POLICIES STAGE-ARGS...: one quality_bench process (its own
# full-cache baseline) -> $work/NAME.json
run() {
  local name=$1 env=$2 pols=$3; shift 3
  local args=(--budgets "1.0,$budgets" --limit "$limit" --max-new "$max_new" --policies "$pols"
              --json "$work/$name.json" "$@")
  [ -n "$model" ] && args+=(--model "$model")
  echo "tiering_bench.sh: $name" >&2
  env $env "$qb" "${args[@]}" >"$work/$name.txt" 2>"$work/$name.err" ||
    { cat "$work/$name.err" >&2; exit 1; }
}
runs=()
for t in "${targets[@]}"; do
  name=${t%%:*} addr=${t#*:}
  tier=()
  [ -n "$addr" ] && tier=(--tier "$addr")
  run "$name-budget" "" tiered-exact,tiered-exact-async "${tier[@]}"
  runs+=("$name-budget")
  if [ -n "$addr" ]; then
    run "$name-perblock" KVTIER_PER_BLOCK_RPCS=1 tiered-exact "${tier[@]}"
    runs+=("$name-perblock")
  fi
  if [ $all -eq 1 ]; then
    run "$name-all" "" tiered-exact --stage-blocks 100000 "${tier[@]}"
    runs+=("$name-all")
  fi
done
mkdir -p "$(dirname "$json")"
/usr/bin/python3 - "$work" "$json" "${runs[@]}" <<'EOF'
import json, sys
work, out, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
doc = []
print("| tier | path | staging | budget | agree | tok/s | ratio to full | FetchBlocks/token | PutBlocks/token"
      " | Summarize msgs/token | fetch batch p50 / p99 ms | KiB fetched/token | peak held KiB (full) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    tier, kind = run.split("-", 1)
    rows = json.load(open(f"{work}/{run}.json"))
    full = next(r for r in rows if r["policy"] == "full")
    staging = "all" if kind == "all" else "budget"
    for r in sorted(rows, key=lambda r: (r["policy"] != "tiered-exact", r["budget"])):
        if r["policy"] == "full":
            continue
        path = "per-block" if kind == "perblock" else ("async" if r["policy"] == "tiered-exact-async" else "batched")
        r["tier"], r["path"], r["staging"] = tier, path, staging
        r["full_decode_tok_s"] = full["decode_tok_s"]
        doc.append(r)
        deg = f" ({r['degraded_runs']} degraded)" if r.get("degraded_runs") else ""
        print(f"| {tier} | {path} | {staging} | {r['budget']:.2f} | {r['agreement']:.4f}{deg}"
              f" | {r['decode_tok_s']:.0f} (full {full['decode_tok_s']:.0f}) | {r['ratio_to_full']:.3f}"
              f" | {r['fetch_calls_per_token']:.2f} | {r['put_calls_per_token']:.2f}"
              f" | {r['summary_msgs_per_token']:.4f}"
              f" | {r['fetch_batch_p50_ms']:.3f} / {r['fetch_batch_p99_ms']:.3f}"
              f" | {r['fetched_bytes_per_token']/1024:.1f} | {r['peak_held_bytes']/1024:.0f}"
              f" ({full['peak_hot_bytes']/1024:.0f}) |")
json.dump(doc, open(out, "w"), indent=1)
EOF
echo "tiering_bench.sh: wrote $json" >&2
