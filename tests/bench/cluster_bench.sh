#!/usr/bin/env bash
# tests/bench/cluster_bench.sh - the cluster under load, 1 vs 3 tier shards side
#   by side: for each, ops/cluster.sh brings up the shards, --workers workers
#   and nginx, then cluster_bench runs K clients generating through the load
#   balancer for a fixed time. Prints a markdown table, writes one JSON.
# Usage: tests/bench/cluster_bench.sh [--build DIR] [--clients K] [--seconds S]
#            [--workers M] [--max-new N] [--model DIR] [--json FILE] [--tls]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=build clients=4 seconds=20 workers=2 max_new=64 model=tests/fixtures/tiny-qwen3
json=tests/bench/results/cluster_bench.json tls=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift ;;
    --clients) clients=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --workers) workers=$2; shift ;;
    --max-new) max_new=$2; shift ;;
    --model) model=$2; shift ;;
    --json) json=$2; shift ;;
    --tls) tls=(--tls) ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "cluster_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bench="$build/tests/bench/cluster_bench"
[ -x "$bench" ] || cmake --build "$build" --target cluster_bench >/dev/null
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-cbench-XXXXXX")
trap 'ops/cluster.sh down --purge --dir "$tmp/c" --build "$build" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
echo "| shards | clients | s | generations/s | tokens/s | token p50 ms | token p99 ms | recall p99 ms | degraded | errors | blocks put per shard |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
parts=()
for shards in 1 3; do
  base=$(( 20000 + (RANDOM % 120) * 100 ))
  ops/cluster.sh up --shards "$shards" --workers "$workers" --model "$model" --base-port "$base" \
    --dir "$tmp/c" --build "$build" "${tls[@]}" >"$tmp/up.log" 2>&1 ||
    { cat "$tmp/up.log"; exit 1; }
  # shellcheck disable=SC1091
  . "$tmp/c/cluster.env"
  "$bench" --env "$tmp/c/cluster.env" --clients "$clients" --seconds "$seconds" \
    --max-new "$max_new" --label "$shards" --json "$tmp/s$shards.json"
  parts+=("$tmp/s$shards.json")
  ops/cluster.sh down --purge --dir "$tmp/c" --build "$build" >/dev/null
done
mkdir -p "$(dirname "$json")"
/usr/bin/python3 - "$json" "$workers" "${parts[@]}" <<'PY'
import json, sys
out, workers, parts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
json.dump({"workers": workers, "runs": [json.load(open(p)) for p in parts]}, open(out, "w"), indent=1)
PY
echo "JSON: $json"
