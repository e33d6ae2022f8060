#!/bin/sh
# openai_test.sh - a real `kvtier-worker serve --http-listen` (fixture model,
# 2 slots, API key from the environment) driven by the official `openai` npm
# client (openai/openai_client.mjs), then its /metrics checked by promtool.
# usage: openai_test.sh KVTIER_WORKER MODEL_DIR
# Exit 77 (ctest SKIP) only when node or the npm package is missing (CI
# installs both: ops/test.sh runs `npm ci` there and fails when it cannot).
set -u
worker=$1 model=$2
dir=$(cd "$(dirname "$0")/openai" && pwd)
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node not found"; exit 77
fi
if [ ! -d "$dir/node_modules/openai" ]; then
  echo "SKIP: run 'npm ci' in $dir first"; exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier_openai.XXXXXX") || exit 1
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
KVTIER_API_KEY=test-key-123 "$worker" serve --model "$model" --listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --print-port --slots 2 --threads 1 --served-model-name tiny \
  > "$tmp/out" 2> "$tmp/err" &
pid=$!
port=
for _ in $(seq 1 200); do
  port=$(awk '/^http on/ {print $3}' "$tmp/out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: the worker exited"; cat "$tmp/err"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "FAIL: no 'http on PORT' line"; cat "$tmp/err"; exit 1; }
node "$dir/openai_client.mjs" "http://127.0.0.1:$port/v1" test-key-123 tiny "$tmp/metrics.txt" || {
  echo "--- worker stderr"; tail -20 "$tmp/err"; exit 1; }
if command -v promtool >/dev/null 2>&1; then
  promtool check metrics < "$tmp/metrics.txt" || { echo "FAIL: promtool check metrics"; exit 1; }
  echo "ok   promtool check metrics"
fi
grep -q 'kvtier_worker_e2e_request_latency_seconds_bucket{model_name="tiny",le="+Inf"}' "$tmp/metrics.txt" ||
  { echo "FAIL: e2e histogram with model_name label missing"; exit 1; }
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] || { echo "FAIL: worker exit $rc after SIGTERM"; tail -5 "$tmp/err"; exit 1; }
echo "ok   clean shutdown"
