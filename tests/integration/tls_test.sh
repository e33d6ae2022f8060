#!/usr/bin/env bash
# tls_test.sh - TLS and mutual TLS between real processes, with certificates
# made by ops/certs.sh: a kvtierd that requires client certificates; kvtierctl
# (libkvtier) without a certificate, with another CA's certificate, in plain
# text (all refused) and with the right one (served); a worker that talks to
# that kvtierd over mutual TLS and serves gRPC and its HTTP API over TLS: a
# tiered generation through it demotes blocks to kvtierd and is not degraded;
# with --tls-client-ca the worker's gRPC and HTTPS want a client certificate;
# the same worker without its client certificate runs degraded (the tier
# refuses it) yet completes; HTTPS with the CA works, plain HTTP does not.
# Exit 77 (skipped) only when openssl is missing.
# Usage: tls_test.sh KVTIERD KVTIERCTL KVTIER_WORKER EXAMPLE_GENERATE FIXTURE_DIR
set -uo pipefail
kvtierd=$1 ctl=$2 worker=$3 gen=$4 model=$5
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-tls-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 15 "$f"; done; exit 1; }
ok() { echo "ok   $*"; }
"$root/ops/certs.sh" "$tmp/certs" >/dev/null || fail "ops/certs.sh"
"$root/ops/certs.sh" "$tmp/other" >/dev/null || fail "ops/certs.sh (a second CA)"
c=$tmp/certs
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file pattern
  for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

tp=$(port)
"$kvtierd" --listen "127.0.0.1:$tp" --data-dir "$tmp/data" --tls-cert "$c/server.pem" \
  --tls-key "$c/server.key" --tls-client-ca "$c/ca.pem" >"$tmp/kvtierd.log" 2>&1 &
pids+=($!)
wait_line "$tmp/kvtierd.log" "mutual TLS" || fail "kvtierd did not start with mutual TLS"

"$ctl" --server "127.0.0.1:$tp" health >/dev/null 2>&1 && fail "plaintext client served by a TLS kvtierd"
ok "plaintext client refused"
KVTIER_TLS_CA=$c/ca.pem "$ctl" --server "127.0.0.1:$tp" health >/dev/null 2>&1 &&
  fail "client without a certificate served under mutual TLS"
ok "client without a certificate refused"
KVTIER_TLS_CA=$c/ca.pem KVTIER_TLS_CERT=$tmp/other/client.pem KVTIER_TLS_KEY=$tmp/other/client.key \
  "$ctl" --server "127.0.0.1:$tp" health >/dev/null 2>&1 && fail "client certificate of another CA accepted"
ok "client certificate of another CA refused"
KVTIER_TLS_CA=$tmp/other/ca.pem KVTIER_TLS_CERT=$c/client.pem KVTIER_TLS_KEY=$c/client.key \
  "$ctl" --server "127.0.0.1:$tp" health >/dev/null 2>&1 && fail "server verified against the wrong CA"
ok "server certificate checked against the client's CA"
KVTIER_TLS_CA=$c/ca.pem KVTIER_TLS_CERT=$c/client.pem KVTIER_TLS_KEY=$c/client.key \
  "$ctl" --server "127.0.0.1:$tp" health | grep -q SERVING || fail "mutual TLS client not served"
ok "mutual TLS client served"
KVTIER_TLS_CA=$c/ca.pem KVTIER_TLS_CERT=$tmp/nope.pem KVTIER_TLS_KEY=$c/client.key "$ctl" --server "127.0.0.1:$tp" health \
  2>"$tmp/err.txt" >/dev/null && fail "a missing certificate file was accepted"
grep -q "nope.pem" "$tmp/err.txt" || fail "the missing file is not named: $(cat "$tmp/err.txt")"
ok "a missing certificate file is an error naming it"

[ -f "$model/config.json" ] || { echo "no fixture model: worker part skipped"; exit 0; }
prompt=$(printf 'The history of the city begins with a small market by the river. %.0s' $(seq 1 20))
run_worker() { # name, extra args... -> "grpc-port http-port pid" (it runs in a
  local name=$1; shift    # subshell: the caller records the pid for cleanup)
  local wp hp
  wp=$(port); hp=$(port)
  "$worker" serve --model "$model" --listen "127.0.0.1:$wp" --http-listen "127.0.0.1:$hp" \
    --tier "127.0.0.1:$tp" --tier-tls-ca "$c/ca.pem" --tls-cert "$c/server.pem" \
    --tls-key "$c/server.key" --threads 1 --print-port "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  local pid=$!
  wait_line "$tmp/$name.out" "^http on" || { kill "$pid"; fail "worker $name did not start"; }
  echo "$wp $hp $pid"
}
read -r wp hp wpid < <(run_worker w1 --tier-tls-cert "$c/client.pem" --tier-tls-key "$c/client.key" \
  --tls-client-ca "$c/ca.pem")
pids+=("$wpid")
KVTIER_TLS_CA=$c/ca.pem "$gen" --server "127.0.0.1:$wp" --max-new-tokens 4 "hello" >/dev/null 2>&1 &&
  fail "a gRPC client without a certificate served by a mutual-TLS worker"
ok "worker gRPC with --tls-client-ca: a client without a certificate refused"
KVTIER_TLS_CA=$c/ca.pem KVTIER_TLS_CERT=$c/client.pem KVTIER_TLS_KEY=$c/client.key \
  "$gen" --server "127.0.0.1:$wp" --json --hot-budget 0.2 \
  --max-new-tokens 48 "$prompt" >"$tmp/gen1.json" 2>"$tmp/gen1.log" || fail "generation over TLS"
/usr/bin/python3 - "$tmp/gen1.json" <<'PY' || fail "tiered generation over mutual TLS"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert r["demoted_host"] + r["demoted_ssd"] > 0 and not r["degraded"], r
print(f"ok   worker -> kvtierd over mutual TLS: {r['demoted_host'] + r['demoted_ssd']} blocks demoted, {r['recalled']} recalled, not degraded")
PY
"$gen" --server "127.0.0.1:$wp" --max-new-tokens 4 "hello" >/dev/null 2>&1 &&
  fail "plaintext client served by a TLS worker"
ok "plaintext client refused by the worker"
/usr/bin/python3 - "$hp" "$c" <<'PY' || fail "HTTPS API"
import json, ssl, sys, urllib.error, urllib.request
port, c = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=f"{c}/ca.pem")
def rq():
    return urllib.request.Request(f"https://127.0.0.1:{port}/v1/completions",
                                  json.dumps({"prompt": "The city", "max_tokens": 8}).encode(),
                                  {"Content-Type": "application/json"})
try:  # mutual TLS: no client certificate -> 403 (health stays open)
    urllib.request.urlopen(rq(), context=ctx, timeout=60)
    sys.exit("HTTPS without a client certificate was served")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
assert urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=ctx, timeout=10).status == 200
ctx.load_cert_chain(f"{c}/client.pem", f"{c}/client.key")
r = json.load(urllib.request.urlopen(rq(), context=ctx, timeout=60))
assert r["usage"]["completion_tokens"] == 8, r
try:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
    sys.exit("plain HTTP answered on the HTTPS port")
except Exception:
    pass
print("ok   HTTPS with mutual TLS: no client certificate 403, with one served; plain HTTP refused")
PY
# Without its client certificate the worker cannot place blocks: degraded, complete.
read -r wp2 _ wpid2 < <(run_worker w2)
pids+=("$wpid2")
KVTIER_TLS_CA=$c/ca.pem "$gen" --server "127.0.0.1:$wp2" --json --hot-budget 0.2 \
  --max-new-tokens 48 "$prompt" >"$tmp/gen2.json" 2>"$tmp/gen2.log" || fail "generation, worker without a tier certificate"
/usr/bin/python3 - "$tmp/gen2.json" "$tmp/gen1.json" <<'PY' || fail "worker without a client certificate"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ref = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
assert r["degraded"] and r["demoted_host"] + r["demoted_ssd"] == 0, r
assert r["token_ids"] == ref["token_ids"], "degraded output differs from the tiered one"
print("ok   worker without its client certificate: degraded, same tokens, nothing placed")
PY
exit 0
