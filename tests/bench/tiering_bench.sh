#!/usr/bin/env bash
# tests/bench/tiering_bench.sh - what tiering costs, side by side in one run:
#   full cache vs tiered-exact at hot budgets 1.0 (nothing to recall) and the
#   given fractions, with the tier embedded in the worker, a kvtierd on
#   loopback, and two kvtierd shards behind the nginx load balancer
#   (ops/cluster.sh), each with staging at the hot budget (the default) and
#   with staging unbounded (every candidate kept between steps).
# Prints a markdown table (the README's) and writes one JSON document.
# Usage: tests/bench/tiering_bench.sh [--build DIR] [--budgets LIST] [--limit N]
#            [--json FILE] [--no-lb] [--model DIR] [--max-new N] [--staging LIST]
#   --build DIR     build folder with quality_bench and kvtierd (build)
#   --budgets LIST  hot budget fractions besides 1.0 (0.1,0.2,0.35)
#   --limit N       recall prompts used (12)
#   --json FILE     where the JSON goes (tests/bench/results/tiering.json)
#   --no-lb         skip the load-balancer rows (no nginx)
#   --model DIR     checkpoint (default: the fixture), e.g. a random Qwen3-0.6B
#                   from tests/fixtures/make_random_qwen3.py
#   --max-new N     tokens generated per prompt (64)
#   --staging LIST  budget,all (default both)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=build budgets=0.1,0.2,0.35 limit=12 json=tests/bench/results/tiering.json lb=1
model="" max_new=64 stagings="budget,all"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift ;;
    --budgets) budgets=$2; shift ;;
    --limit) limit=$2; shift ;;
    --json) json=$2; shift ;;
    --no-lb) lb=0 ;;
    --model) model=$2; shift ;;
    --max-new) max_new=$2; shift ;;
    --staging) stagings=$2; shift ;;
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
for t in "${targets[@]}"; do
  name=${t%%:*} addr=${t#*:}
  for stage in ${stagings//,/ }; do
    args=(--budgets "1.0,$budgets" --limit "$limit" --max-new "$max_new" --policies tiered-exact
          --json "$work/$name-$stage.json")
    [ -n "$model" ] && args+=(--model "$model")
    [ -n "$addr" ] && args+=(--tier "$addr")
    [ $stage = all ] && args+=(--stage-blocks 100000)
    echo "tiering_bench.sh: $name, staging $stage" >&2
    "$qb" "${args[@]}" >"$work/$name-$stage.txt" 2>"$work/$name-$stage.err" ||
      { cat "$work/$name-$stage.err" >&2; exit 1; }
  done
done
mkdir -p "$(dirname "$json")"
/usr/bin/python3 - "$work" "$json" "$stagings" "${targets[@]}" <<'EOF'
import json, sys
work, out, stagings = sys.argv[1], sys.argv[2], sys.argv[3].split(',')
targets = [t.split(':')[0] for t in sys.argv[4:]]
doc = []
print("| tier | staging | budget | agree | tok/s | ratio to full | FetchBlocks/token | PutBlocks/token"
      " | Summarize msgs/token | fetch batch p50 / p99 ms | KiB fetched/token | peak held KiB (full) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in targets:
    for stage in stagings:
        rows = json.load(open(f"{work}/{name}-{stage}.json"))
        full = next(r for r in rows if r["policy"] == "full")
        for r in rows:
            r["tier"], r["staging"] = name, stage
            doc.append(r)
            if r["policy"] == "full":
                continue
            print(f"| {name} | {stage} | {r['budget']:.2f} | {r['agreement']:.4f} | {r['decode_tok_s']:.0f}"
                  f" (full {full['decode_tok_s']:.0f}) | {r['ratio_to_full']:.3f} | {r['fetch_calls_per_token']:.2f}"
                  f" | {r['put_calls_per_token']:.2f} | {r['summary_msgs_per_token']:.4f}"
                  f" | {r['fetch_batch_p50_ms']:.3f} / {r['fetch_batch_p99_ms']:.3f}"
                  f" | {r['fetched_bytes_per_token']/1024:.1f} | {r['peak_held_bytes']/1024:.0f}"
                  f" ({full['peak_hot_bytes']/1024:.0f}) |")
json.dump(doc, open(out, "w"), indent=1)
EOF
echo "tiering_bench.sh: wrote $json" >&2
