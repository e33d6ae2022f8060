#!/usr/bin/env bash
# pipeline_fault.sh - failures of a pipeline of real processes end the
# generation with a message naming the rank, within a bound, never a hang:
#   a stage killed (-9) mid-generation: 2 stages (rank 1 = the last) and 3
#     stages (rank 1 in the middle: rank 2 reports that rank 1 went away);
#   a stage that hangs (SIGSTOP): rank 0 gives up after --pipe-timeout-ms;
#   a peer that sends garbage instead of a message: refused (bad header);
#   a peer that sends NaN hidden states in well-formed messages: refused;
#   a stage failing prompt chunks that rank 0 keeps in flight: the first
#     error is reported, every reply read, the ring still ends with BYE;
#   rank 0 killed: the stage exits 1 saying rank 0 went away.
# Usage: pipeline_fault.sh KVTIER_WORKER TINY_DIR SHARP_DIR
set -uo pipefail
worker=$1 tiny=$2 long=$3 # long: 4096 positions, long generations to break
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-pipefault-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "== $f"; tail -n 8 "$f"; }; done; exit 1; }
ok() { echo "ok   $*"; }
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# the bound on noticing a failure: generous under sanitizers (slow steps)
BOUND_MS=10000
[ -n "${KVTIER_SANITIZE:-}" ] && BOUND_MS=60000

# wait_bytes FILE N: until FILE holds N bytes (the generation is under way)
wait_bytes() {
  for _ in $(seq 1 600); do
    [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}

# start_ring N RANGES...: stages 1..N-1 in the background (STAGE_PIDS), the
# addresses in PORTS; rank 0 is started by the caller with rank0_args
start_ring() {
  local n=$1; shift
  RANGES=("$@") PORTS=() STAGE_PIDS=()
  local r
  for ((r = 0; r < n; r++)); do PORTS+=("$(port)"); done
  for ((r = 1; r < n; r++)); do
    "$worker" stage --model "$long" --layers "${RANGES[$r]}" --rank $r --world-size $n \
      --pipe-listen "127.0.0.1:${PORTS[$r]}" --pipe-next "127.0.0.1:${PORTS[$(((r + 1) % n))]}" \
      --threads 1 "${STAGE_EXTRA[@]}" >"$tmp/stage$r.log" 2>&1 &
    STAGE_PIDS+=($!)
    pids+=($!)
  done
}
STAGE_EXTRA=()
rank0() { # N OUT ERR extra...: a long generation streamed to OUT
  local n=$1 out=$2 err=$3; shift 3
  "$worker" run --model "$long" --prompt "The history of the city begins with" \
    --max-new-tokens 4000 --ignore-eos --threads 1 --layers "${RANGES[0]}" --rank 0 --world-size "$n" \
    --pipe-listen "127.0.0.1:${PORTS[0]}" --pipe-next "127.0.0.1:${PORTS[1]}" "$@" >"$out" 2>"$err" &
  R0=$!
  pids+=($R0)
}
# expect_fail PID ERRFILE PATTERN WHAT T0: PID exits non-zero within the bound, ERRFILE matches
expect_fail() {
  local pid=$1 errf=$2 pat=$3 what=$4 t0=$5 rc
  wait "$pid"
  rc=$?
  local took=$(($(now_ms) - t0))
  [ $rc -ne 0 ] || fail "$what: rank 0 exited 0"
  [ $took -lt $BOUND_MS ] || fail "$what: took $took ms (bound $BOUND_MS)"
  grep -q -- "$pat" "$errf" || fail "$what: message does not say '$pat': $(tail -n 2 "$errf")"
  ok "$what: exit $rc after $took ms: $(grep -o 'pipeline:.*' "$errf" | head -n 1)"
}

# kill_mid STAGE_PID OUT: once rank 0 streams text, a stage is killed while
# rank 0 is held (SIGSTOP), so the generation cannot end first; T0 = resume
kill_mid() {
  wait_bytes "$2" 200 || fail "no text from the pipeline"
  kill -STOP $R0
  kill -9 "$1"
  sleep 0.2
  T0=$(now_ms)
  kill -CONT $R0
}

# ---- 1. the last stage killed mid-generation (2 stages)
start_ring 2 0-2 3-5
rank0 2 "$tmp/out1.txt" "$tmp/r0-1.log"
kill_mid "${STAGE_PIDS[0]}" "$tmp/out1.txt"
t0=$T0
expect_fail $R0 "$tmp/r0-1.log" "rank 1" "2 stages, rank 1 killed" "$t0"

# ---- 2. the middle stage killed (3 stages): rank 2 reports rank 1 gone
start_ring 3 0-1 2-3 4-5
rank0 3 "$tmp/out2.txt" "$tmp/r0-2.log"
kill_mid "${STAGE_PIDS[0]}" "$tmp/out2.txt"
t0=$T0
# rank 2 reports that rank 1 went away, or rank 0 finds out itself when its
# next chunk cannot be sent to rank 1 (whichever comes first): both name rank 1
expect_fail $R0 "$tmp/r0-2.log" \
  "rank 2 failed: rank 2 (layers 4-5): receiving from rank 1 failed\|sending FWD to rank 1 failed" \
  "3 stages, rank 1 (middle) killed" "$t0"
wait "${STAGE_PIDS[1]}" && fail "rank 2 exited 0 after its previous rank died"
ok "rank 2 exited non-zero: $(tail -n 1 "$tmp/stage2.log")"

# ---- 3. a stage that hangs: rank 0 gives up after --pipe-timeout-ms
start_ring 2 0-2 3-5
rank0 2 "$tmp/out3.txt" "$tmp/r0-3.log" --pipe-timeout-ms 1500
wait_bytes "$tmp/out3.txt" 200 || fail "no text before the hang"
kill -STOP $R0 # (the generation cannot end before the stage hangs)
kill -STOP "${STAGE_PIDS[0]}"
t0=$(now_ms)
kill -CONT $R0
expect_fail $R0 "$tmp/r0-3.log" "no answer from rank 1 within 1500 ms" "2 stages, rank 1 stopped" "$t0"
kill -CONT "${STAGE_PIDS[0]}"
wait "${STAGE_PIDS[0]}"
ok "the stopped stage, resumed, exited (rank 0 gone): rc $?"

# ---- 4. garbage instead of a message: a fake rank 1 answers HELLO with junk
PORTS=("$(port)" "$(port)") RANGES=(0-1 2-3)
/usr/bin/python3 - "${PORTS[1]}" "${PORTS[0]}" >"$tmp/fake.log" 2>&1 <<'PY' &
import socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(1)
for _ in range(200):
    try:
        out = socket.create_connection(("127.0.0.1", int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.05)
inc, _ = ls.accept()
hello = inc.recv(48)                      # rank 0's HELLO header
out.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 21)   # 48 bytes, not a header
time.sleep(5)
PY
pids+=($!)
t0=$(now_ms)
"$worker" run --model "$tiny" --prompt hi --max-new-tokens 8 --threads 1 --layers 0-1 --rank 0 \
  --world-size 2 --pipe-listen "127.0.0.1:${PORTS[0]}" --pipe-next "127.0.0.1:${PORTS[1]}" \
  >/dev/null 2>"$tmp/r0-4.log" &
R0=$!
pids+=($R0)
expect_fail $R0 "$tmp/r0-4.log" "bad message header: magic" "garbage from rank 1" "$t0"

# ---- 4b. well-formed messages with garbage inside: a fake last rank passes
# HELLO on as a real one would, then answers a chunk with NaN hidden states
PORTS=("$(port)" "$(port)")
/usr/bin/python3 - "${PORTS[1]}" "${PORTS[0]}" >"$tmp/fake2.log" 2>&1 <<'PY' &
import socket, struct, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(1)
for _ in range(200):
    try:
        out = socket.create_connection(("127.0.0.1", int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.05)
inc, _ = ls.accept()
def read(n):
    b = b""
    while len(b) < n:
        c = inc.recv(n - len(b))
        if not c: sys.exit("closed")
        b += c
    return b
HDR = "<IHHIIiIIIIIQ"
while True:
    magic, ver, op, rank, seq, pos0, n, want, flags, width, res, plen = struct.unpack(HDR, read(48))
    body = read(plen)
    if op == 1:   # HELLO: cover the remaining layers, as rank 1 of 2 would
        v = list(struct.unpack("<12I", body)); v[9] = v[2]; v[10] = 2
        out.sendall(struct.pack(HDR, magic, ver, op, 1, seq, pos0, n, want, flags, width, 0, 48) + struct.pack("<12I", *v))
    elif op == 2: # FWD: answer with NaNs
        out.sendall(struct.pack(HDR, magic, ver, 3, 1, seq, pos0, want, 0, flags, width, 0, want * width * 4) + struct.pack("<f", float("nan")) * (want * width))
    else:
        out.sendall(struct.pack(HDR, magic, ver, op, 1, seq, pos0, 0, 0, 0, width, 0, 0))
        if op == 5: break
PY
pids+=($!)
t0=$(now_ms)
"$worker" run --model "$tiny" --prompt hi --max-new-tokens 8 --threads 1 --layers 0-1 --rank 0 \
  --world-size 2 --pipe-listen "127.0.0.1:${PORTS[0]}" --pipe-next "127.0.0.1:${PORTS[1]}" \
  >/dev/null 2>"$tmp/r0-4b.log" &
R0=$!
pids+=($R0)
expect_fail $R0 "$tmp/r0-4b.log" "rank 1 sent a non-finite hidden state" "NaN hidden states from rank 1" "$t0"

# ---- 4c. a stage that fails a prompt chunk while rank 0 keeps chunks in
# flight: every chunk gets its ERROR, rank 0 reads them all and reports the first
PORTS=("$(port)" "$(port)")
/usr/bin/python3 - "${PORTS[1]}" "${PORTS[0]}" >"$tmp/fake3.log" 2>&1 <<'PY' &
import socket, struct, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(1)
for _ in range(200):
    try:
        out = socket.create_connection(("127.0.0.1", int(sys.argv[2]))); break
    except OSError:
        time.sleep(0.05)
inc, _ = ls.accept()
def read(n):
    b = b""
    while len(b) < n:
        c = inc.recv(n - len(b))
        if not c: sys.exit("closed")
        b += c
    return b
HDR = "<IHHIIiIIIIIQ"
fwds = 0
while True:
    magic, ver, op, rank, seq, pos0, n, want, flags, width, res, plen = struct.unpack(HDR, read(48))
    body = read(plen)
    if op == 1:
        v = list(struct.unpack("<12I", body)); v[9] = v[2]; v[10] = 2
        out.sendall(struct.pack(HDR, magic, ver, op, 1, seq, pos0, n, want, flags, width, 0, 48) + struct.pack("<12I", *v))
    elif op == 2:
        fwds += 1
        text = b"fake failure at position %d" % pos0
        out.sendall(struct.pack(HDR, magic, ver, 6, 1, seq, 0, 0, 0, 0, 0, 0, len(text)) + text)
    else:
        out.sendall(struct.pack(HDR, magic, ver, op, 1, seq, pos0, 0, 0, 0, width, 0, 0))
        if op == 5: break
print("FWD messages:", fwds)
PY
fk=$!
pids+=($fk)
t0=$(now_ms)
"$worker" run --model "$tiny" --prompt "$(printf 'The history of the city begins with a river. %.0s' $(seq 1 20))" \
  --max-new-tokens 8 --threads 1 --prefill-chunk 16 --layers 0-1 --rank 0 --world-size 2 \
  --pipe-listen "127.0.0.1:${PORTS[0]}" --pipe-next "127.0.0.1:${PORTS[1]}" >/dev/null 2>"$tmp/r0-4c.log" &
R0=$!
pids+=($R0)
expect_fail $R0 "$tmp/r0-4c.log" "rank 1 failed: fake failure at position 0$" "a stage failing prompt chunks in flight" "$t0"
wait $fk || fail "the fake stage did not get BYE after the failure (ring out of step): $(cat "$tmp/fake3.log")"
n_fwd=$(sed -n 's/FWD messages: //p' "$tmp/fake3.log")
[ "${n_fwd:-0}" -ge 2 ] || fail "only ${n_fwd:-0} chunk(s) were in flight"
ok "rank 0 had $n_fwd chunks in flight, read every ERROR, reported the first and said BYE"

# ---- 5. rank 0 killed: the stage exits 1, naming rank 0
start_ring 2 0-2 3-5
rank0 2 "$tmp/out5.txt" "$tmp/r0-5.log"
wait_bytes "$tmp/out5.txt" 200 || fail "no text before killing rank 0"
kill -9 $R0
t0=$(now_ms)
wait "${STAGE_PIDS[0]}" && fail "the stage exited 0 after rank 0 was killed"
took=$(($(now_ms) - t0))
[ $took -lt $BOUND_MS ] || fail "the stage took $took ms to notice rank 0 died"
# the stage was either waiting for rank 0 or sending it a result
grep -Eq "(receiving from|to) rank 0 failed" "$tmp/stage1.log" || fail "stage message: $(tail -n 1 "$tmp/stage1.log")"
ok "rank 0 killed: the stage exited 1 after $took ms: $(tail -n 1 "$tmp/stage1.log")"
echo "PASS"
