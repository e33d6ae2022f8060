#!/usr/bin/env bash
# pipeline_cpu.sh - a model split by layer ranges over worker processes on
# loopback (rank 0 = `kvtier-worker run --layers ...`, the others
# `kvtier-worker stage`, socket transport) generates exactly what one
# `kvtier-worker run` process generates: the same token ids and the same
# text, greedy, 72 tokens (--ignore-eos) after each prompt, on both fixtures:
#   tiny-qwen3 (4 layers)        2 stages 0-1 | 2-3; 3 stages 0-0 | 1-2 | 3-3
#   tiny-qwen3-sharp (6 layers)  3 stages 0-1 | 2-3 | 4-5; 2 stages 0-2 | 3-5
#                                with rank 1 tiered (--tier embedded, 6 hot
#                                blocks per layer: it demotes and recalls)
# a long prompt in 64-token prefill chunks among them; every stage exits 0
# after rank 0's BYE. `serve` as rank 0 (tiering its own layers, 6 hot
# blocks) with a tiered stage answers two Generate calls (example_generate)
# with the same tokens as one `run` process. Ranges that leave a gap are
# refused naming the fix.
# Usage: pipeline_cpu.sh KVTIER_WORKER TINY_DIR SHARP_DIR HELDOUT_TXT [EXAMPLE_GENERATE]
set -uo pipefail
worker=$1 tiny=$2 sharp=$3 heldout=$4 gen=${5:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-pipe-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "== $f"; tail -n 8 "$f"; }; done; exit 1; }
ok() { echo "ok   $*"; }
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NEW=72
printf 'The capital of France is' >"$tmp/p1.txt"
printf 'Once upon a time, in a small village by the sea, there lived' >"$tmp/p2.txt"
head -c 1400 "$heldout" >"$tmp/p3.txt"

# single MODEL PROMPT CHUNK OUT: the reference, one process
single() {
  "$worker" run --model "$1" --prompt "$(cat "$2")" --max-new-tokens $NEW --ignore-eos \
    --threads 1 --prefill-chunk "$3" --json >"$4" 2>"$tmp/single.log" || fail "single run on $1"
}

# pipeline MODEL PROMPT CHUNK OUT TIER_RANK RANGES...: rank 0 + stages; the
# stage of rank TIER_RANK (0 = none) tiers its layers in an embedded tier
pipeline() {
  local model=$1 prompt=$2 chunk=$3 out=$4 tier_rank=$5; shift 5
  local ranges=("$@") n=$# ports=() r
  for ((r = 0; r < n; r++)); do ports+=("$(port)"); done
  local stage_pids=()
  for ((r = 1; r < n; r++)); do
    local extra=()
    if [ "$r" = "$tier_rank" ]; then
      extra=(--tier embedded --tier-data-dir "$tmp/tier-$r-$RANDOM" --hot-budget 6)
    fi
    "$worker" stage --model "$model" --layers "${ranges[$r]}" --rank $r --world-size $n \
      --pipe-listen "127.0.0.1:${ports[$r]}" --pipe-next "127.0.0.1:${ports[$(((r + 1) % n))]}" \
      --threads 1 "${extra[@]}" >"$tmp/stage$r.log" 2>&1 &
    stage_pids+=($!)
    pids+=($!)
  done
  "$worker" run --model "$model" --prompt "$(cat "$prompt")" --max-new-tokens $NEW --ignore-eos \
    --threads 1 --prefill-chunk "$chunk" --json --layers "${ranges[0]}" --rank 0 --world-size $n \
    --pipe-listen "127.0.0.1:${ports[0]}" --pipe-next "127.0.0.1:${ports[1]}" >"$out" 2>"$tmp/rank0.log" ||
    fail "pipeline run (${ranges[*]}) on $model"
  for ((r = 1; r < n; r++)); do
    wait "${stage_pids[$((r - 1))]}" || fail "stage $r (${ranges[$r]}) exited non-zero"
  done
}

# same REF OUT WHAT: token ids and text equal
same() {
  /usr/bin/python3 - "$1" "$2" <<'PY' || fail "$3: pipeline output differs from one process"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ga, gb = a["generated_ids"], b["generated_ids"]
assert len(ga) >= 64, f"only {len(ga)} tokens"
if ga != gb:
    i = next((i for i, (x, y) in enumerate(zip(ga, gb)) if x != y), min(len(ga), len(gb)))
    sys.exit(f"token ids differ from position {i}: {ga[i:i+5]} vs {gb[i:i+5]}")
assert a["text"] == b["text"], "text differs"
assert a["prompt_ids"] == b["prompt_ids"], "prompt ids differ"
PY
  ok "$3: $(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["prompt_ids"]), "prompt +", len(d["generated_ids"]), "generated tokens identical")' "$2")"
}

# ---- tiny-qwen3, 4 layers
for p in p1 p2; do
  single "$tiny" "$tmp/$p.txt" 256 "$tmp/ref-tiny-$p.json"
  pipeline "$tiny" "$tmp/$p.txt" 256 "$tmp/out.json" 0 0-1 2-3
  same "$tmp/ref-tiny-$p.json" "$tmp/out.json" "tiny-qwen3 $p, 2 stages 0-1|2-3"
done
grep -q "rank 1 (layers 2-3): sequence 0 closed" "$tmp/stage1.log" || fail "stage 1 did not report its sequence"
single "$tiny" "$tmp/p3.txt" 64 "$tmp/ref-tiny-p3.json"
pipeline "$tiny" "$tmp/p3.txt" 64 "$tmp/out.json" 0 0-1 2-3
same "$tmp/ref-tiny-p3.json" "$tmp/out.json" "tiny-qwen3 long prompt (64-token chunks), 2 stages"
pipeline "$tiny" "$tmp/p2.txt" 256 "$tmp/out.json" 0 0-0 1-2 3-3
same "$tmp/ref-tiny-p2.json" "$tmp/out.json" "tiny-qwen3 p2, 3 stages 0-0|1-2|3-3"

# ---- tiny-qwen3-sharp, 6 layers
single "$sharp" "$tmp/p1.txt" 256 "$tmp/ref-sharp-p1.json"
pipeline "$sharp" "$tmp/p1.txt" 256 "$tmp/out.json" 0 0-1 2-3 4-5
same "$tmp/ref-sharp-p1.json" "$tmp/out.json" "tiny-qwen3-sharp p1, 3 stages 0-1|2-3|4-5"
single "$sharp" "$tmp/p3.txt" 64 "$tmp/ref-sharp-p3.json"
pipeline "$sharp" "$tmp/p3.txt" 64 "$tmp/out.json" 0 0-1 2-3 4-5
same "$tmp/ref-sharp-p3.json" "$tmp/out.json" "tiny-qwen3-sharp long prompt, 3 stages"

# ---- a tiered stage: 6 hot blocks per layer of a ~26-block sequence
pipeline "$sharp" "$tmp/p3.txt" 64 "$tmp/out.json" 1 0-2 3-5
same "$tmp/ref-sharp-p3.json" "$tmp/out.json" "tiny-qwen3-sharp long prompt, 2 stages, rank 1 tiered"
line=$(grep "rank 1 (layers 3-5): sequence 0 closed" "$tmp/stage1.log") || fail "no tiering line from rank 1"
demoted=$(sed -n 's/.*demoted \([0-9]*\),.*/\1/p' <<<"$line")
recalled=$(sed -n 's/.*recalled \([0-9]*\),.*/\1/p' <<<"$line")
[ "${demoted:-0}" -gt 0 ] || fail "the tiered stage demoted nothing: $line"
[ "${recalled:-0}" -gt 0 ] || fail "the tiered stage recalled nothing: $line"
grep -q degraded <<<"$line" && fail "the tiered stage ran degraded: $line"
ok "tiered stage: $line"
pipeline "$tiny" "$tmp/p2.txt" 256 "$tmp/out.json" 2 0-0 1-2 3-3
same "$tmp/ref-tiny-p2.json" "$tmp/out.json" "tiny-qwen3 p2, 3 stages, rank 2 tiered"

# ---- `serve` as rank 0: rank 0 and rank 1 both tier their layers
if [ -n "$gen" ]; then
  single_chunk_ref="$tmp/ref-sharp-p3.json" # run, 64-token chunks (serve's default chunk)
  s0=$(port) s1=$(port)
  "$worker" stage --model "$sharp" --layers 3-5 --rank 1 --world-size 2 --pipe-listen "127.0.0.1:$s1" \
    --pipe-next "127.0.0.1:$s0" --threads 1 --tier embedded --tier-data-dir "$tmp/serve-stage-tier" \
    --hot-budget 6 >"$tmp/serve-stage.log" 2>&1 &
  sp=$!
  pids+=($sp)
  "$worker" serve --model "$sharp" --listen 127.0.0.1:0 --print-port --threads 1 --hot-budget 6 \
    --prefill-chunk 64 --tier-data-dir "$tmp/serve-tier" --layers 0-2 --rank 0 --world-size 2 \
    --pipe-listen "127.0.0.1:$s0" --pipe-next "127.0.0.1:$s1" >"$tmp/serve.out" 2>"$tmp/serve.log" &
  sv=$!
  pids+=($sv)
  for _ in $(seq 1 300); do grep -q "listening on" "$tmp/serve.out" && break; sleep 0.1; done
  gport=$(sed -n 's/listening on \([0-9]*\)/\1/p' "$tmp/serve.out")
  [ -n "$gport" ] || fail "serve as rank 0 did not start"
  for i in 1 2; do
    "$gen" --server "127.0.0.1:$gport" --json --max-new-tokens $NEW --policy tier "$(cat "$tmp/p3.txt")" \
      >"$tmp/gen$i.json" 2>"$tmp/gen$i.log" || fail "Generate $i through serve as rank 0"
    /usr/bin/python3 - "$single_chunk_ref" "$tmp/gen$i.json" <<'PY' || fail "serve as rank 0: Generate $i differs from one process"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ga, gb = a["generated_ids"][:len(b["token_ids"])], b["token_ids"]
assert len(gb) >= 64 and ga == gb, f"{len(gb)} tokens; first difference at " + str(next((i for i, (x, y) in enumerate(zip(ga, gb)) if x != y), None))
assert b["demoted_host"] > 0 and not b["degraded"], "rank 0 did not tier its layers"
PY
  done
  kill $sv
  wait $sv
  wait $sp || fail "the stage behind serve exited non-zero"
  [ "$(grep -c "tier: demoted [1-9]" "$tmp/serve-stage.log")" = 2 ] || fail "the stage did not tier both sequences"
  ok "serve as rank 0 (tiered) + a tiered stage: 2 Generate calls identical to one process; rank 0 demoted $(sed -n 's/.*"demoted_host":\([0-9]*\).*/\1/p' "$tmp/gen1.json") blocks"
fi

# ---- ranges with a gap are refused before anything runs
p0=$(port) p1=$(port)
"$worker" stage --model "$tiny" --layers 3-3 --rank 1 --world-size 2 --pipe-listen "127.0.0.1:$p1" \
  --pipe-next "127.0.0.1:$p0" --threads 1 >"$tmp/gap-stage.log" 2>&1 &
sp=$!
pids+=($sp)
"$worker" run --model "$tiny" --prompt hi --max-new-tokens 4 --threads 1 --layers 0-1 --rank 0 \
  --world-size 2 --pipe-listen "127.0.0.1:$p0" --pipe-next "127.0.0.1:$p1" >/dev/null 2>"$tmp/gap.log" &&
  fail "a pipeline without layer 2 ran"
wait $sp && fail "the stage after a gap exited 0"
grep -q "rank 1 failed: rank 1 (layers 3-3): the ranks before this one end at layer 1" "$tmp/gap.log" ||
  fail "gap not explained: $(cat "$tmp/gap.log")"
ok "a gap in the layer ranges is refused: $(tail -n 1 "$tmp/gap.log")"
echo "PASS"
