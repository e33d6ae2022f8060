#!/usr/bin/env bash
# tests/cluster/remove_shard_test.sh - ops/cluster.sh remove-shard loses
# nothing: a cluster of 3 shards (no workers), 30 sequences stored through the
# tier LB (2 layers x 3..6 blocks of known bytes each; every fifth left open),
# then remove-shard 1. Checks: every sequence that lived on shard 1 is found
# through the LB on a remaining shard with every block byte-identical; the
# sequences of shards 0 and 2 are still on their shard, byte-identical; shard 1
# was stopped, is gone from cluster.env and nginx, and its data directory holds
# no sequence and no block (a kvtierd started on it lists none); the migration's
# JSON counts match; `status` still passes. Always tears the cluster down.
# Exit 77 (skipped) only when nginx is not installed.
# Usage: remove_shard_test.sh BUILD_DIR CLUSTER_SEQS
# shellcheck disable=SC2046 # $(cat LIST): sequence ids, split on purpose
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$1 seqs_bin=$2
ctl="$build/client/kvtierctl"
N=30

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "nginx is not installed (Debian package nginx): remove-shard test skipped"
  exit 77
fi
run=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-rmshard-test-XXXXXX")
probe_pid=""
cleanup() {
  [ -n "$probe_pid" ] && kill -KILL "$probe_pid" 2>/dev/null
  "$root/ops/cluster.sh" down --purge --dir "$run/c" --build "$build" >/dev/null 2>&1
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "FAIL: $*"; exit 1; }

up=0
for _ in 1 2 3 4 5; do
  base=$(( 20000 + (RANDOM % 127) * 100 ))
  if "$root/ops/cluster.sh" up --shards 3 --workers 0 --base-port "$base" --dir "$run/c" \
      --build "$build" >"$run/up.log" 2>&1; then
    up=1; break
  fi
  grep -q "is in use" "$run/up.log" || break
done
cat "$run/up.log"
[ "$up" = 1 ] || fail "ops/cluster.sh up failed"
# shellcheck disable=SC1091
. "$run/c/cluster.env"
read -r -a shard <<<"$KVTIER_SHARDS"
[ "${#shard[@]}" = 3 ] || fail "3 shards expected in cluster.env, got '$KVTIER_SHARDS'"

"$seqs_bin" put "$KVTIER_TIER_LB" 1 "$N" >"$run/put.log" || { cat "$run/put.log"; fail "storing through the LB"; }

# ids_on ADDR: the sequence ids a shard holds, one a line, sorted
ids_on() {
  "$ctl" --server "$1" --json sequences |
    /usr/bin/python3 -c 'import json,sys; print("\n".join(str(s["sequence_id"]) for s in json.load(sys.stdin)["sequences"]))' |
    sed '/^$/d' | sort # lexical, for comm
}
for i in 0 1 2; do ids_on "${shard[$i]}" >"$run/before-$i" || fail "listing shard $i"; done
echo "before: shard-0 $(wc -l <"$run/before-0"), shard-1 $(wc -l <"$run/before-1"), shard-2 $(wc -l <"$run/before-2") sequences"
[ "$(cat "$run"/before-* | sort -n | uniq | wc -l)" = "$N" ] || fail "the shards do not hold the $N sequences once each"
[ -s "$run/before-1" ] || fail "shard 1 holds no sequence: nothing to test (hashing changed?)"
moved_blocks=0
while read -r s; do moved_blocks=$(( moved_blocks + 2 * (3 + s % 4) )); done <"$run/before-1"

t0=$(date +%s.%N)
"$root/ops/cluster.sh" remove-shard 1 --dir "$run/c" --build "$build" --batch 5 >"$run/rm.log" 2>&1
rc=$?
t1=$(date +%s.%N)
cat "$run/rm.log"
[ "$rc" = 0 ] || fail "remove-shard 1 exited $rc"
echo "remove-shard took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
grep -q "shard-1 (${shard[1]}) removed: $(wc -l <"$run/before-1") sequence(s), $moved_blocks block(s)" "$run/rm.log" ||
  fail "remove-shard did not report $(wc -l <"$run/before-1") sequences, $moved_blocks blocks moved"
/usr/bin/python3 - "$run/c/shard-1/migrate.json" "$(wc -l <"$run/before-1")" "$moved_blocks" <<'EOF' || fail "migrate.json"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["moved"] == int(sys.argv[2]) and j["failed"] == 0 and j["skipped_open"] == 0, j
assert j["blocks"] == int(sys.argv[3]) and j["bytes"] == 4096 * j["blocks"], j
EOF

# shard 1 is out: process stopped, not in cluster.env nor in nginx's upstreams
[ -f "$run/c/shard-1/pid" ] && fail "shard-1's pid file is still there"
grep -q "^KVTIER_SHARDS=\"${shard[0]} ${shard[2]}\"$" "$run/c/cluster.env" || fail "cluster.env: $(grep SHARDS "$run/c/cluster.env")"
grep -q "server ${shard[1]} " "$run/c/nginx/nginx.conf" && fail "nginx.conf still lists shard 1"
"$root/ops/cluster.sh" status --dir "$run/c" --build "$build" || fail "status after remove-shard"

# every moved sequence: through the LB, byte-identical, on shard 0 or 2
"$seqs_bin" check "$KVTIER_TIER_LB" $(cat "$run/before-1") >"$run/check-moved.log" ||
  { cat "$run/check-moved.log"; fail "a moved sequence is missing or differs through the LB"; }
echo "moved: $(grep -c '^ok' "$run/check-moved.log") sequences byte-identical through the LB"
for i in 0 2; do ids_on "${shard[$i]}" >"$run/after-$i" || fail "listing shard $i"; done
[ "$(cat "$run/after-0" "$run/after-2" | sort -n | uniq | wc -l)" = "$N" ] || fail "shards 0 and 2 do not hold all $N sequences"
# the others: untouched, still on their shard (asked directly) and through the LB
for i in 0 2; do
  [ -z "$(comm -23 "$run/before-$i" "$run/after-$i")" ] || fail "shard $i lost sequences: $(comm -23 "$run/before-$i" "$run/after-$i" | tr '\n' ' ')"
  "$seqs_bin" check "${shard[$i]}" $(cat "$run/before-$i") >"$run/check-$i.log" ||
    { cat "$run/check-$i.log"; fail "a sequence of shard $i changed"; }
done
"$seqs_bin" check "$KVTIER_TIER_LB" $(seq "$N") >"$run/check-all.log" ||
  { cat "$run/check-all.log"; fail "not every sequence reachable through the LB"; }
# open ones stay open on their new owner, retained ones retained (every fifth open)
{ "$ctl" --server "${shard[0]}" --json sequences; "$ctl" --server "${shard[2]}" --json sequences; } |
  /usr/bin/python3 -c '
import json, sys
dec, text, seen = json.JSONDecoder(), sys.stdin.read(), 0
i = 0
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i == len(text): break
    j, i = dec.raw_decode(text, i)
    for s in j["sequences"]:
        assert s["open"] == (s["sequence_id"] % 5 == 0), s
        seen += 1
assert seen == int(sys.argv[1]), seen' "$N" || fail "open/retained state not kept"

# shard 1's data directory: a kvtierd on it holds no sequence and no block
port=$(( base + 11 ))
"$build/service/kvtierd" --listen "127.0.0.1:$port" --data-dir "$run/c/shard-1/data" \
  >"$run/probe.log" 2>&1 &
probe_pid=$!
for _ in $(seq 100); do "$ctl" --server "127.0.0.1:$port" --timeout 500 health >/dev/null 2>&1 && break; sleep 0.1; done
left=$(ids_on "127.0.0.1:$port" | wc -l)
stats=$("$ctl" --server "127.0.0.1:$port" --json stats)
kill -TERM "$probe_pid"; wait "$probe_pid" 2>/dev/null; probe_pid=""
[ "$left" = 0 ] || fail "shard 1's data still holds $left sequences"
/usr/bin/python3 -c 'import json,sys; t=json.loads(sys.argv[1])["tiers"]; assert t["HOST"]["blocks"] == 0 and t["SSD"]["blocks"] == 0, t' "$stats" ||
  fail "shard 1's data still holds blocks: $stats"
echo "PASS: $(wc -l <"$run/before-1") sequences ($moved_blocks blocks) moved off shard 1, $N sequences intact"
