#!/usr/bin/env bash
# tests/cluster/netns_test.sh - the cluster across hosts: three network
# namespaces joined by veth pairs, every hop mutual TLS (ops/certs.sh):
#   <id>-s  two kvtierd shards            10.77.1.2
#   <id>-l  nginx (ops/nginx/render.sh)   10.77.1.1 | 10.77.2.1
#   <id>-w  a worker and the clients      10.77.2.2
# The worker reaches the shards only through nginx's tier port; clients reach
# the worker only through nginx's client port.
#   1. 8 concurrent generations (the worker retains their sequences): all
#      complete, not degraded, blocks demoted to the shards;
#   2. 8 more, and kill -9 of one shard while they run: all complete; those
#      whose tier was the dead shard say degraded;
#   3. the shard restarts on its data: every retained sequence of phase 1 has
#      all its blocks again, and reading its SSD blocks back (evict --to host,
#      checksums checked) finds none corrupt.
# Needs root, `ip netns`, nginx, openssl and the fixture model; otherwise exit
# 77 (skipped).
# Usage: netns_test.sh BUILD_DIR FIXTURE_DIR
set -uo pipefail
build=$1 model=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || skip "nginx not installed"
command -v openssl >/dev/null || skip "openssl not installed"
[ -f "$model/config.json" ] || skip "no fixture model in $model"
id=kvt$$
ip netns add "$id-probe" 2>/dev/null || skip "cannot create network namespaces here"
ip netns del "$id-probe"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-netns-XXXXXX")
chmod 755 "$tmp"
S="ip netns exec $id-s" L="ip netns exec $id-l" W="ip netns exec $id-w"
cleanup() {
  for f in "$tmp"/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
  sleep 0.2
  # every process left in a namespace (nginx's workers outlive a killed master)
  for n in s l w; do ip netns pids "$id-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null; done
  for n in s l w; do ip netns del "$id-$n" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log "$tmp"/*.err; do [ -s "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  for f in "$tmp"/*.json; do echo "== $f"; tail -c 300 "$f"; echo; done
  exit 1
}
ok() { echo "ok   $*"; }

# ---- network: s <-> l <-> w
for n in s l w; do ip netns add "$id-$n" || fail "netns $id-$n"; done
ip link add "$id-sl" type veth peer name "$id-ls" || fail "veth"
ip link add "$id-wl" type veth peer name "$id-lw" || fail "veth"
ip link set "$id-sl" netns "$id-s"; ip link set "$id-ls" netns "$id-l"
ip link set "$id-wl" netns "$id-w"; ip link set "$id-lw" netns "$id-l"
$S ip addr add 10.77.1.2/24 dev "$id-sl"; $L ip addr add 10.77.1.1/24 dev "$id-ls"
$W ip addr add 10.77.2.2/24 dev "$id-wl"; $L ip addr add 10.77.2.1/24 dev "$id-lw"
for pair in "s $id-sl" "l $id-ls" "l $id-lw" "w $id-wl"; do
  set -- $pair
  ip netns exec "$id-$1" ip link set "$2" up
  ip netns exec "$id-$1" ip link set lo up
done

# ---- certificates, shards, nginx, worker
"$root/ops/certs.sh" "$tmp/tls" --host 10.77.1.2 --host 10.77.1.1 --host 10.77.2.1 \
  --host 10.77.2.2 >/dev/null || fail "ops/certs.sh"
t=$tmp/tls
export KVTIER_TLS_CA=$t/ca.pem KVTIER_TLS_CERT=$t/client.pem KVTIER_TLS_KEY=$t/client.key
kvtierd=$build/service/kvtierd ctl=$build/client/kvtierctl gen=$build/client/example_generate
start_shard() { # i
  $S "$kvtierd" --listen "10.77.1.2:$((7110 + $1))" --data-dir "$tmp/shard$1" \
    --tls-cert "$t/server.pem" --tls-key "$t/server.key" --tls-client-ca "$t/ca.pem" \
    --host-budget 64MiB >>"$tmp/shard$1.log" 2>&1 &
  echo $! >"$tmp/shard$1.pid"
}
wait_health() { # netns-prefix addr
  for _ in $(seq 1 100); do $1 "$ctl" --server "$2" --timeout 1000 health >/dev/null 2>&1 && return 0
    sleep 0.1; done; return 1; }
start_shard 0; start_shard 1
wait_health "$S" 10.77.1.2:7110 && wait_health "$S" 10.77.1.2:7111 || fail "shards not healthy"
$W "$ctl" --server 10.77.1.2:7110 --timeout 1000 health >/dev/null 2>&1 &&
  fail "the worker namespace reaches a shard directly"
ok "3 namespaces: shards 10.77.1.2, nginx 10.77.1.1 | 10.77.2.1, worker 10.77.2.2 (no route to the shards)"
mkdir -p "$tmp/nginx"; chmod 755 "$tmp/nginx"
SHARDS="10.77.1.2:7110 10.77.1.2:7111" WORKERS="10.77.2.2:7170" HTTP_WORKERS="10.77.2.2:7171" \
  USER_LINE="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);" RUNDIR="$tmp/nginx" \
  CLIENT_LISTEN="10.77.2.1:7100" TIER_LISTEN="10.77.2.1:7101" HTTP_LISTEN="10.77.2.1:7102" \
  "$root/ops/nginx/render.sh" --tls "$t" >"$tmp/nginx/nginx.conf" || fail "render nginx.conf"
chmod 644 "$t"/*.key # nginx's worker process runs as nobody
$L "$nginx" -e stderr -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx.log" 2>&1 &
echo $! >"$tmp/nginx.pid"
wait_health "$W" 10.77.2.1:7101 || fail "nginx tier port not healthy from the worker namespace"
$W "$build/worker/kvtier-worker" serve --model "$model" --listen 10.77.2.2:7170 \
  --http-listen 10.77.2.2:7171 --tls-cert "$t/server.pem" --tls-key "$t/server.key" \
  --tls-client-ca "$t/ca.pem" --tier 10.77.2.1:7101 --tier-tls-ca "$t/ca.pem" \
  --tier-tls-cert "$t/client.pem" --tier-tls-key "$t/client.key" --slots 8 --threads 1 \
  --tier-timeout-ms 1000 --retain >"$tmp/worker.log" 2>&1 &
echo $! >"$tmp/worker.pid"
wait_health "$W" 10.77.2.1:7100 || fail "worker not healthy through nginx"
env -u KVTIER_TLS_CERT -u KVTIER_TLS_KEY $W "$ctl" --server 10.77.2.1:7101 --timeout 2000 health \
  >/dev/null 2>&1 && fail "a client without a certificate got through nginx"
ok "kvtierd x2, nginx, worker up; mutual TLS on every hop (no certificate: refused)"

prompt=$(printf 'The history of the city begins with a small market by the river. %.0s' $(seq 1 24))
run8() { # phase max_new
  local i pids=()
  for i in $(seq 1 8); do
    $W timeout 120 "$gen" --server 10.77.2.1:7100 --json --hot-budget 0.2 --max-new-tokens "$2" \
      "$prompt $i" >"$tmp/$1-$i.json" 2>"$tmp/$1-$i.err" &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
summary() { # phase -> "n degraded demoted seqs..."
  /usr/bin/python3 - "$tmp" "$1" <<'PY'
import json, sys, glob
rows = [json.loads(open(f).read().strip().splitlines()[-1])
        for f in sorted(glob.glob(f"{sys.argv[1]}/{sys.argv[2]}-*.json"))]
print(len(rows), sum(r["degraded"] for r in rows),
      sum(r["demoted_host"] + r["demoted_ssd"] for r in rows), *[r["sequence_id"] for r in rows])
PY
}
# ---- 1: 8 concurrent generations
run8 a 64 || fail "phase 1: a generation failed"
read -r n deg dem seqs_a <<<"$(summary a)"
[ "$n" = 8 ] && [ "$deg" = 0 ] && [ "$dem" -gt 0 ] || fail "phase 1: $n done, $deg degraded, $dem demoted"
ok "8 concurrent generations through nginx: $dem blocks demoted, none degraded"
declare -A before
for s in $seqs_a; do
  before[$s]=$($W "$ctl" --server 10.77.2.1:7101 --json map "$s" |
    /usr/bin/python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["HOST"] + c["SSD"])' 2>/dev/null)
  [ -n "${before[$s]}" ] && [ "${before[$s]}" -gt 0 ] || fail "sequence $s: no stored blocks on its shard"
done

# ---- 2: 8 more, one shard killed while they run
( sleep 1.0; kill -9 "$(cat "$tmp/shard0.pid")" ) &
killer=$!
run8 b 200 || fail "phase 2: a generation failed after kill -9 of a shard"
wait "$killer"
read -r n deg dem _ <<<"$(summary b)"
[ "$n" = 8 ] || fail "phase 2: $n of 8 completed"
[ "$deg" -ge 1 ] || fail "phase 2: no generation says degraded although a shard died under them"
ok "kill -9 of shard 0 during 8 generations: all 8 complete, $deg marked degraded"

# ---- 3: restart on its data: phase-1 blocks all back, none corrupt
start_shard 0
wait_health "$S" 10.77.1.2:7110 || fail "shard 0 did not restart"
total=0
for s in $seqs_a; do
  now=$($W "$ctl" --server 10.77.2.1:7101 --json map "$s" |
    /usr/bin/python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["HOST"] + c["SSD"])')
  [ "$now" = "${before[$s]}" ] || fail "sequence $s: ${before[$s]} blocks stored before, $now after the restart"
  $W "$ctl" --server 10.77.2.1:7101 evict "$s" --to host >/dev/null ||
    fail "sequence $s: reading its blocks back failed"
  total=$((total + now))
done
bad=0
for p in 7110 7111; do
  c=$($S "$ctl" --server "10.77.1.2:$p" --json stats |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["checksum_failures"])')
  bad=$((bad + c))
done
[ "$bad" = 0 ] || fail "$bad checksum failures after the restart"
ok "shard 0 restarted: all $total acknowledged blocks of the 8 retained sequences back, 0 corrupt"
exit 0
