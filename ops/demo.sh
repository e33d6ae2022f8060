#!/usr/bin/env bash
# ops/demo.sh - the main job of kvtier on one machine, end to end:
#   builds if needed, starts a kvtierd (host RAM + RocksDB tiers) and a
#   kvtier-worker on loopback with the bundled Qwen3 fixture model, runs one
#   long greedy generation with a 20% hot KV budget, and shows the text, the
#   tiering statistics and the tier map of the sequence (kvtierctl map).
# Usage: ops/demo.sh [--model DIR] [--budget FRACTION] [--max-new N] [--prompt TEXT]
set -euo pipefail
cd "$(dirname "$0")/.."

model=tests/fixtures/tiny-qwen3
budget=0.2
max_new=320
prompt=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --max-new) max_new="$2"; shift ;;
    --prompt) prompt="$2"; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ops/demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ops/deps.sh --runtime-only
if [ ! -x build/worker/kvtier-worker ] || [ ! -x build/service/kvtierd ] || \
   [ ! -x build/client/example_generate ]; then
  echo "== building (first run only)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" --target kvtierd kvtierctl kvtier-worker example_generate >/dev/null
fi
if [ -z "$prompt" ]; then
  # a recall task: a key-value list, distractor text, then the question
  prompt=$(head -n 1 tests/fixtures/recall_prompts.jsonl | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt"])')
fi

run=$(mktemp -d /tmp/kvtier-demo-XXXXXX)
cleanup() {
  [ -n "${wpid:-}" ] && kill "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null
  [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tport=$(free_port)
build/service/kvtierd --listen 127.0.0.1:$tport --data-dir "$run/tier" \
  --host-budget 64MiB --ssd-budget 1GiB >"$run/kvtierd.log" 2>&1 &
dpid=$!
for _ in $(seq 100); do
  build/client/kvtierctl --server 127.0.0.1:$tport health >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== kvtierd on 127.0.0.1:$tport (data in $run/tier)"

build/worker/kvtier-worker serve --model "$model" --listen 127.0.0.1:0 --print-port \
  --tier 127.0.0.1:$tport --retain >"$run/worker.out" 2>"$run/worker.log" &
wpid=$!
for _ in $(seq 100); do grep -q "listening on" "$run/worker.out" 2>/dev/null && break; sleep 0.1; done
wport=$(awk '/listening on/{print $3}' "$run/worker.out")
[ -n "$wport" ] || { echo "worker did not start:"; cat "$run/worker.log"; exit 1; }
echo "== kvtier-worker on 127.0.0.1:$wport (model $model, tier 127.0.0.1:$tport)"
echo "== prompt ($(printf %s "$prompt" | wc -c) bytes):"
printf '%s\n' "$prompt" | fold -w 100 | head -n 6; echo "   ..."
echo
echo "== generation (greedy, $max_new new tokens, hot budget $budget of the KV):"
build/client/example_generate --server 127.0.0.1:$wport --max-new-tokens "$max_new" \
  --policy tier --hot-budget "$budget" --json "$prompt" >"$run/gen.json"
/usr/bin/python3 - "$run/gen.json" <<'PY'
import json, sys, textwrap
d = json.load(open(sys.argv[1]))
print(textwrap.fill(d["text"], 100))
print()
print("== statistics")
for k in ["sequence_id", "finish_reason", "prompt_tokens", "generated_tokens", "decode_tok_s",
          "peak_hot_bytes", "demoted_host", "demoted_ssd", "recalled", "dropped",
          "recall_p50_ms", "recall_p99_ms", "degraded"]:
    print(f"  {k:16} {d[k]}")
open(sys.argv[1] + ".seq", "w").write(str(d["sequence_id"]))
PY
seq=$(cat "$run/gen.json.seq")
echo
echo "== kvtierctl stats"
build/client/kvtierctl --server 127.0.0.1:$tport stats
echo
echo "== kvtierctl map $seq   (layer x block: where each KV block of the sequence ended up)"
build/client/kvtierctl --server 127.0.0.1:$tport map "$seq"
