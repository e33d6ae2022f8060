#!/usr/bin/env bash
# tests/cluster/cluster_test.sh - brings up a kvtier cluster with ops/cluster.sh
# in a temp dir (2 shards + nginx, + 1 worker when the fixture model exists),
# runs cluster_check and a grpc.health.v1 check against it through the load
# balancer, always tears it down. Exit 77 (skipped) only when nginx is not
# installed.
# With KVTIER_CLUSTER_TLS=1 the cluster runs with mutual TLS on every hop
# (ops/cluster.sh up --tls) and every check goes through it.
# Usage: cluster_test.sh BUILD_DIR CLUSTER_CHECK FIXTURE_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$1 check=$2 model=$3
tls=${KVTIER_CLUSTER_TLS:-0}
tls_arg=()
[ "$tls" = 1 ] && tls_arg=(--tls)

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "nginx is not installed (Debian package nginx): cluster test skipped"
  exit 77
fi
workers=0
[ -f "$model/config.json" ] && workers=1
[ "$workers" = 1 ] || echo "no fixture model in $model: cluster without a worker"

run=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-cluster-test-XXXXXX")
cleanup() {
  "$root/ops/cluster.sh" down --purge --dir "$run/c" --build "$build" >/dev/null 2>&1
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A random block of ports; another one when something holds a port of it.
up=0
for _ in 1 2 3 4 5; do
  base=$(( 20000 + (RANDOM % 127) * 100 )) # below the ephemeral range (32768+)
  if "$root/ops/cluster.sh" up --shards 2 --workers "$workers" --model "$model" --retain "${tls_arg[@]}" \
      --base-port "$base" --dir "$run/c" --build "$build" >"$run/up.log" 2>&1; then
    up=1; break
  fi
  grep -q "is in use" "$run/up.log" || break
done
cat "$run/up.log"
[ "$up" = 1 ] || { echo "FAIL: ops/cluster.sh up failed"; exit 1; }

"$root/ops/cluster.sh" status --dir "$run/c" --build "$build" || { echo "FAIL: status"; exit 1; }
health_rc=0
# grpc.health.v1 through the load balancer (Python grpcio, stubs from
# proto/health.proto; not checked without grpcio): the tier port reaches a
# shard, the client port a worker. Before cluster_check, which kills a shard.
# shellcheck disable=SC1091
. "$run/c/cluster.env"
targets=(--target "$KVTIER_TIER_LB=kvtier.v1.Tier,kvtier.v1.Admin")
[ "$workers" = 1 ] && targets+=(--target "$KVTIER_CLIENT_LB=kvtier.v1.Inference")
if [ "$tls" = 1 ]; then
  # plaintext must not get through; mutual TLS (from cluster.env) must
  env -u KVTIER_TLS_CA -u KVTIER_TLS_CERT -u KVTIER_TLS_KEY "$build/client/kvtierctl" \
    --server "$KVTIER_TIER_LB" --timeout 2000 health >/dev/null 2>&1 &&
    { echo "FAIL: a plaintext client got through the TLS load balancer"; health_rc=1; }
  "$build/client/kvtierctl" --server "$KVTIER_TIER_LB" health ||
    { echo "FAIL: health through the TLS load balancer"; health_rc=1; }
else
  /usr/bin/python3 "$root/tests/interop/health_grpcio.py" --proto "$root/proto/health.proto" \
    "${targets[@]}"
  case $? in
    0) ;;
    77) echo "python3-grpcio missing: grpc.health.v1 through the load balancer not checked" ;;
    *) echo "FAIL: grpc.health.v1 through the load balancer"; health_rc=1 ;;
  esac
fi
# kvtierctl cluster: every shard from cluster.env, SERVING, JSON totals; an
# unreachable address makes it fail and says so.
ctl_rc=0
"$build/client/kvtierctl" cluster "$run/c/cluster.env" >"$run/cluster.txt" || ctl_rc=1
cat "$run/cluster.txt"
[ "$(grep -c '^127.0.0.1:.* SERVING' "$run/cluster.txt")" = 2 ] && grep -q '^total' "$run/cluster.txt" ||
  ctl_rc=1
"$build/client/kvtierctl" --json cluster "$run/c/cluster.env" |
  /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["all_serving"] and len(j["shards"]) == 2, j' ||
  ctl_rc=1
if "$build/client/kvtierctl" --timeout 1000 cluster $KVTIER_SHARDS 127.0.0.1:1 >"$run/cluster2.txt" 2>&1 ||
   ! grep -q "127.0.0.1:1 .*UNREACHABLE" "$run/cluster2.txt"; then
  cat "$run/cluster2.txt"; ctl_rc=1
fi
[ "$ctl_rc" = 0 ] && echo "ok   kvtierctl cluster" || echo "FAIL: kvtierctl cluster"
# The OpenAI HTTP API through the load balancer: a streamed and a plain
# completion, /v1/models, and the written Prometheus config.
http_rc=0
if [ "$workers" = 1 ]; then
  /usr/bin/python3 - "$KVTIER_HTTP_LB" "$run/c/prometheus.yml" "${KVTIER_TLS_CA:-}" <<'PY' || http_rc=1
import json, ssl, sys, urllib.request
lb, prom, ca = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca) if ca else None
base = f"{'https' if ca else 'http'}://{lb}"
def post(path, body):
    rq = urllib.request.Request(base + path, json.dumps(body).encode(),
                                {"Content-Type": "application/json"})
    return urllib.request.urlopen(rq, timeout=60, context=ctx)
models = json.load(urllib.request.urlopen(base + "/v1/models", timeout=30, context=ctx))
mid = models["data"][0]["id"]
full = json.load(post("/v1/completions", {"model": mid, "prompt": "The city", "max_tokens": 12}))
text = full["choices"][0]["text"]
streamed, done = "", False
with post("/v1/completions", {"model": mid, "prompt": "The city", "max_tokens": 12, "stream": True}) as r:
    assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
    for line in r:
        line = line.decode().strip()
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            streamed += json.loads(line[6:])["choices"][0]["text"]
assert done and streamed == text, (streamed, text)
targets = [l for l in open(prom) if "targets" in l]
assert len(targets) == 2, targets
print(f"ok   HTTP API through the LB: model {mid}, {full['usage']['completion_tokens']} tokens, stream == plain")
PY
  [ "$http_rc" = 0 ] || echo "FAIL: the OpenAI HTTP API through the load balancer"
fi
"$check" "$run/c/cluster.env"
rc=$?
[ "$http_rc" = 0 ] || rc=1
[ "$ctl_rc" = 0 ] || rc=1
[ "$health_rc" = 0 ] || rc=1
# Stop (SIGTERM: clean exits) before reading the logs: sanitizer reports and
# leak checks of the servers land there at exit.
"$root/ops/cluster.sh" down --dir "$run/c" --build "$build" || rc=1
if grep -l -E "AddressSanitizer|LeakSanitizer|runtime error:" "$run"/c/*/*.log; then
  echo "FAIL: sanitizer reports in the logs above"
  rc=1
fi
if [ "$rc" != 0 ]; then
  for f in "$run"/c/*/*.log; do echo "== $f"; tail -n 30 "$f"; done
fi
exit "$rc"
