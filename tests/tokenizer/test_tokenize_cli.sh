#!/bin/sh
# test_tokenize_cli.sh — the `tokenize` command as a process: options, exit
# codes, error messages, encode/decode/chat output.
# usage: test_tokenize_cli.sh KVTIER_TOKENIZE DATA_DIR QWEN3_TOKENIZER_DIR
# The Qwen3 part runs only when QWEN3_TOKENIZER_DIR/tokenizer.json exists.
set -u
tool=$1 data=$2 qdir=$3
tiny=$data/tiny_str.json
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier_cli.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fails=0

# check NAME WANT_RC WANT_STDOUT STDERR_SUBSTRING -- ARGS... (stdin from $tmp/in)
check() {
  name=$1 want_rc=$2 want_out=$3 want_err=$4
  shift 5
  "$tool" "$@" < "$tmp/in" > "$tmp/out" 2> "$tmp/err"
  rc=$?
  out=$(cat "$tmp/out")
  if [ "$rc" != "$want_rc" ]; then
    echo "FAIL $name: exit $rc, want $want_rc; stderr: $(cat "$tmp/err")"; fails=$((fails + 1)); return
  fi
  if [ "$want_out" != "*" ] && [ "$out" != "$want_out" ]; then
    echo "FAIL $name: stdout '$out', want '$want_out'"; fails=$((fails + 1)); return
  fi
  if [ -n "$want_err" ] && ! grep -qF -- "$want_err" "$tmp/err"; then
    echo "FAIL $name: stderr '$(cat "$tmp/err")' lacks '$want_err'"; fails=$((fails + 1)); return
  fi
  echo "ok   $name"
}

: > "$tmp/in"
check help 0 "*" "" -- --help
grep -q "usage: kvtier-worker tokenize" "$tmp/out" || { echo "FAIL help text"; fails=$((fails + 1)); }
check no-source 2 "" "exactly one of --model DIR or --tokenizer FILE" --
check two-sources 2 "" "exactly one of" -- --model /x --tokenizer /y
check unknown-option 2 "" "unknown or incomplete option '--frobnicate'" -- --tokenizer "$tiny" --frobnicate
check stray-arg 2 "" "unexpected argument 'extra'" -- --tokenizer "$tiny" extra
check decode-with-chat 2 "" "--decode does not combine" -- --tokenizer "$tiny" --decode --chat
check missing-file 1 "" "/nonexistent/tokenizer.json: cannot open" -- --tokenizer /nonexistent/tokenizer.json
check missing-model-dir 1 "" "/nonexistent/tokenizer.json: cannot open" -- --model /nonexistent

printf 'hello world\naaa\n\n<|end|>hello\n' > "$tmp/in"
check encode 0 "$(printf '[259,264]\n[265,97]\n[]\n[267,259]')" "" -- --tokenizer "$tiny"

printf 'hello\nbad \377 byte\nnever reached\n' > "$tmp/in"
check invalid-utf8 1 "[259]" "stdin line 2: invalid UTF-8 at byte 4 (0xFF)" -- --tokenizer "$tiny"

printf '"a\\nb"\n"\\r\\n"\n' > "$tmp/in"
check json-input 0 "$(printf '[97,10,98]\n[13,10]')" "" -- --tokenizer "$tiny" --json
printf '"a\\\\u0000"\n"b\\u0000c"\n' > "$tmp/in"
check json-nul 1 "[97,92,117,48,48,48,48]" "stdin line 2: U+0000 in a --json line is not supported" -- --tokenizer "$tiny" --json
printf 'not json\n' > "$tmp/in"
check json-bad 1 "" "stdin line 1: expected a JSON string" -- --tokenizer "$tiny" --json

printf '[259,264]\n[]\n[195,169,10,34]\n[195]\n' > "$tmp/in"
check decode 0 "$(printf '"hello world"\n""\n"\303\251\\n\\""\n"\357\277\275"')" "" -- --tokenizer "$tiny" --decode
printf '[259]\n[271]\n' > "$tmp/in"
check decode-bad-id 1 '"hello"' "stdin line 2: element 0 is not a token id in [0, 271)" -- --tokenizer "$tiny" --decode
printf '[1.5]\n' > "$tmp/in"
check decode-fraction 1 "" "element 0 is not a token id" -- --tokenizer "$tiny" --decode
printf '{"a":1}\n' > "$tmp/in"
check decode-not-array 1 "" "stdin line 1: expected a JSON array of token ids" -- --tokenizer "$tiny" --decode

printf 'hello\n' > "$tmp/in"
check chat-no-config 1 "" "tokenizer_config.json: cannot open" -- --tokenizer "$tiny" --chat
check chat-bad-format 2 "" "--chat-format must be qwen3, thinking or chatml" -- --tokenizer "$tiny" --chat --chat-format x
# tiny vocab: "<|im_start|>" is plain text there, so only check it runs and ends with "\n" (10)
check chat-forced 0 "*" "" -- --tokenizer "$tiny" --chat --chat-format chatml
case $(cat "$tmp/out") in *",10]") echo "ok   chat-forced ends with newline";;
  *) echo "FAIL chat-forced: $(cat "$tmp/out")"; fails=$((fails + 1));; esac

if [ -f "$qdir/tokenizer.json" ]; then
  printf 'Hello\n' > "$tmp/in"
  check qwen3-chat 0 "[151644,872,198,9707,151645,198,151644,77091,198]" "" -- --model "$qdir" --chat
  check qwen3-chat-nothink 0 "[151644,872,198,9707,151645,198,151644,77091,198,151667,271,151668,271]" "" \
    -- --tokenizer "$qdir/tokenizer.json" --chat --no-think
  check qwen3-chat-thinking 0 "[151644,872,198,9707,151645,198,151644,77091,198,151667,198]" "" \
    -- --model "$qdir" --chat --chat-format thinking
  check qwen3-chat-system 0 "[151644,8948,198,2610,525,10950,13,151645,198,151644,872,198,9707,151645,198,151644,77091,198]" "" \
    -- --model "$qdir" --chat --system "You are helpful."
  printf 'Hello world\n Hello world\n' > "$tmp/in"
  check qwen3-encode 0 "$(printf '[9707,1879]\n[21927,1879]')" "" -- --model "$qdir"
  printf '[151644,872,198,9707,151645]\n' > "$tmp/in"
  check qwen3-decode 0 '"<|im_start|>user\nHello<|im_end|>"' "" -- --model "$qdir" --decode
else
  echo "note: $qdir/tokenizer.json absent, Qwen3 CLI checks not run (npm ci in tests/tokenizer/js)"
fi

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all CLI checks passed"
