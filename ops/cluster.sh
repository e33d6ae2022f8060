#!/usr/bin/env bash
# ops/cluster.sh - a kvtier cluster on loopback: N kvtierd tier shards (each with
#   its own RocksDB directory and metrics port), M kvtier-worker processes, and
#   ONE nginx in front as the load balancer (ops/nginx/kvtier.conf):
#     client port P    Inference.* -> workers (least_conn)
#     tier port   P+1  Tier.*, Admin.* -> the shard owning the sequence
#                      (hash of the x-kvtier-sequence header, consistent)
#     HTTP port   P+2  the workers' OpenAI-compatible HTTP API (least_conn)
#   Workers send their tier traffic to the tier port; each serves its HTTP API
#   and Prometheus metrics (/metrics) on P+100+j. RUNDIR/prometheus.yml scrapes
#   every shard and worker.
# Usage: ops/cluster.sh up|down|status [options]
#        ops/cluster.sh remove-shard I [--dir RUNDIR] [--batch N]
#   --shards N        tier shards (2)
#   --workers M       workers; 0 = tier only (1)
#   --model DIR       Qwen3 checkpoint of the workers (tests/fixtures/tiny-qwen3)
#   --base-port P     client LB P, tier LB P+1, HTTP LB P+2, shard i P+10+i
#                     (metrics P+40+i), worker j P+70+j (HTTP P+100+j) (7100)
#   --dir RUNDIR      pids, logs, data, nginx.conf (/tmp/kvtier-cluster)
#   --build DIR       build folder with the binaries, built if missing (build)
#   --host-budget S   RAM budget per shard (256MiB)
#   --ssd-budget S    RocksDB budget per shard (4GiB)
#   --retain          workers keep finished sequences on the tiers (inspection)
#   --tls             mutual TLS on every hop (certificates from ops/certs.sh in
#                     RUNDIR/tls, made if missing): clients -> nginx -> workers and
#                     shards, workers -> nginx -> shards; HTTPS on the HTTP port
#   --purge           down: also delete RUNDIR (data included)
#   --batch N         remove-shard: blocks per fetch/put call of the migration (256)
# up: starts everything, waits for health, prints the addresses (also written
#     to RUNDIR/cluster.env, sourceable). down: stops workers, nginx, then
#     shards (SIGTERM: shards flush to RocksDB). status: health of each process
#     (kvtierctl health), exit 0 when all are SERVING.
# remove-shard I: takes shard I (RUNDIR/shard-I) out of the cluster without
#     losing its data: re-renders nginx's config without it and reloads nginx
#     (new calls for its sequences go to their new owners), moves every
#     sequence it holds to the tier LB (kvtierctl migrate --include-open: each
#     lands on its new owner, byte for byte, and is deleted on shard I), then
#     stops shard I and updates KVTIER_SHARDS in cluster.env. A generation
#     running on one of its sequences meanwhile goes on degraded (its tier calls
#     reach the new owner before or while the copy lands there; blocks it puts
#     to shard I after they were read are not moved). When a sequence cannot be
#     moved, shard I keeps running (outside the LB) with what was not moved:
#     fix the cause and run remove-shard I again. An auth-on cluster: export
#     KVTIER_TOKEN (an operator token) first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
me="ops/cluster.sh"

die() { echo "$me: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# ---------------------------------------------------------------- options
cmd=""
shards=2
workers=1
model="$root/tests/fixtures/tiny-qwen3"
base=7100
rundir=/tmp/kvtier-cluster
build="$root/build"
host_budget=256MiB
ssd_budget=4GiB
retain=0
purge=0
tls=0
rm_ix=""
batch=""

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
while [ $# -gt 0 ]; do
  case "$1" in
    up|down|status) [ -z "$cmd" ] || die "one command at a time (got $cmd and $1)"; cmd="$1" ;;
    remove-shard) [ -z "$cmd" ] || die "one command at a time (got $cmd and $1)"; cmd="$1"
                  need_arg "$@"; rm_ix="$2"; shift ;;
    --batch) need_arg "$@"; batch="$2"; shift ;;
    --shards) need_arg "$@"; shards="$2"; shift ;;
    --workers) need_arg "$@"; workers="$2"; shift ;;
    --model) need_arg "$@"; model="$2"; shift ;;
    --base-port) need_arg "$@"; base="$2"; shift ;;
    --dir) need_arg "$@"; rundir="$2"; shift ;;
    --build) need_arg "$@"; build="$2"; shift ;;
    --host-budget) need_arg "$@"; host_budget="$2"; shift ;;
    --ssd-budget) need_arg "$@"; ssd_budget="$2"; shift ;;
    --retain) retain=1 ;;
    --tls) tls=1 ;;
    --purge) purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$me: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$cmd" ] || { usage >&2; exit 2; }
is_uint "$shards" && [ "$shards" -ge 1 ] && [ "$shards" -le 30 ] ||
  { echo "$me: --shards must be 1..30, got '$shards'" >&2; exit 2; }
is_uint "$workers" && [ "$workers" -le 30 ] ||
  { echo "$me: --workers must be 0..30, got '$workers'" >&2; exit 2; }
is_uint "$base" && [ "$base" -ge 1024 ] && [ "$base" -le 65435 ] ||
  { echo "$me: --base-port must be 1024..65435, got '$base'" >&2; exit 2; }
case "$rundir" in /*) ;; *) rundir="$PWD/$rundir" ;; esac
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac

kvtierd=${KVTIERD:-$build/service/kvtierd}
worker_bin=${KVTIER_WORKER:-$build/worker/kvtier-worker}
kvtierctl=${KVTIERCTL:-$build/client/kvtierctl}

# ---------------------------------------------------------------- helpers
# port_busy PORT: 0 when something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PIDFILE NAME: 0 when the pid in PIDFILE runs a program called NAME
# (guards against a recycled pid).
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  is_uint "$pid" && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

# wait_health ADDR PIDFILE NAME LOG SECONDS: waits for `kvtierctl health` OK.
wait_health() {
  local i
  for i in $(seq $(($5 * 10))); do
    "$kvtierctl" --server "$1" --timeout 1000 health >/dev/null 2>&1 && return 0
    alive "$2" "$3" || { echo "$me: $3 on $1 exited; its log ($4):" >&2; tail -n 20 "$4" >&2; return 1; }
    sleep 0.1
  done
  echo "$me: $3 on $1 not healthy after $5 s; its log ($4):" >&2
  tail -n 20 "$4" >&2
  return 1
}

# stop PIDFILE NAME SECONDS: SIGTERM, wait, then SIGKILL; removes PIDFILE.
stop() {
  local pid i
  if alive "$1" "$2"; then
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq $(($3 * 10))); do
      alive "$1" "$2" || break
      sleep 0.1
    done
    if alive "$1" "$2"; then
      echo "$me: $2 (pid $pid) still running after $3 s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$1"
}

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

# ---------------------------------------------------------------- down
cluster_down() {
  [ -d "$rundir" ] || { echo "$me: nothing in $rundir"; return 0; }
  local d
  for d in "$rundir"/worker-*; do [ -d "$d" ] && stop "$d/pid" kvtier-worker 15; done
  [ -d "$rundir/nginx" ] && stop "$rundir/nginx/pid" nginx 5
  for d in "$rundir"/shard-*; do [ -d "$d" ] && stop "$d/pid" kvtierd 15; done
  if [ "$purge" = 1 ]; then
    rm -rf "$rundir"
    echo "$me: cluster in $rundir stopped and removed"
  else
    echo "$me: cluster in $rundir stopped (data kept; --purge removes it)"
  fi
}

# ---------------------------------------------------------------- status
cluster_status() {
  [ -f "$rundir/cluster.env" ] || die "no cluster in $rundir (no cluster.env); start one with 'up'"
  # shellcheck disable=SC1091
  . "$rundir/cluster.env"
  local bad=0 i=0 a line
  # check NAME ADDR PIDFILE PROG [EXTRA]: one line; EXTRA: a shard's sequence count
  check() {
    if ! alive "$3" "$4"; then
      printf '%-10s %-21s DOWN (no process)\n' "$1" "$2"; bad=1; return
    fi
    if line=$("$kvtierctl" --server "$2" --timeout 2000 health 2>&1); then
      line=${line#*: }
      if [ "${5:-}" = sequences ]; then
        line+="  $("$kvtierctl" --server "$2" --timeout 2000 --json sequences 2>/dev/null |
                   grep -c '"sequence_id"' || true) sequences"
      fi
      printf '%-10s %-21s pid %-7s %s\n' "$1" "$2" "$(cat "$3")" "$line"
    else
      printf '%-10s %-21s pid %-7s UNHEALTHY: %s\n' "$1" "$2" "$(cat "$3")" "$(tail -n 1 <<<"$line")"; bad=1
    fi
  }
  local base=${KVTIER_CLIENT_LB##*:}
  for a in $KVTIER_SHARDS; do # shard i listens on base+10+i (remove-shard leaves gaps)
    i=$(( ${a##*:} - base - 10 ))
    check "shard-$i" "$a" "$rundir/shard-$i/pid" kvtierd sequences
  done
  i=0
  for a in $KVTIER_WORKERS; do check "worker-$i" "$a" "$rundir/worker-$i/pid" kvtier-worker; i=$((i + 1)); done
  check "tier-lb" "$KVTIER_TIER_LB" "$rundir/nginx/pid" nginx
  if [ -n "$KVTIER_WORKERS" ]; then
    check "client-lb" "$KVTIER_CLIENT_LB" "$rundir/nginx/pid" nginx
  fi
  return $bad
}

# ---------------------------------------------------------------- up
cluster_up() {
  local nginx i j port mport a
  up_ok=0
  nginx=$(find_nginx)
  if [ -z "$nginx" ]; then
    echo "$me: nginx not found; installing the Debian package 'nginx'" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx; } >&2 ||
      die "could not install nginx; install it (apt-get install nginx) and retry"
    nginx=$(find_nginx)
    [ -n "$nginx" ] || die "nginx still not found after installing it"
  fi
  "$nginx" -V 2>&1 | grep -q -- --with-http_v2_module ||
    die "$nginx lacks the HTTP/2 module (needed for gRPC); install Debian's nginx"

  if [ ! -x "$kvtierd" ] || [ ! -x "$kvtierctl" ] || { [ "$workers" -gt 0 ] && [ ! -x "$worker_bin" ]; }; then
    echo "== building into $build (first run only)"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j"$(nproc)" --target kvtierd kvtierctl kvtier-worker example_generate >/dev/null
  fi
  if [ "$workers" -gt 0 ]; then
    [ -f "$model/config.json" ] || die "no model in $model (config.json missing); pass --model DIR or --workers 0"
  fi

  if [ -d "$rundir" ]; then
    for a in "$rundir"/shard-*/pid "$rundir"/worker-*/pid "$rundir"/nginx/pid; do
      [ -f "$a" ] || continue
      alive "$a" "kvtierd\|kvtier-worker\|nginx" &&
        die "a cluster is already running in $rundir (ops/cluster.sh down --dir $rundir)"
    done
  fi
  local ports=("$base" "$((base + 1))" "$((base + 2))")
  for ((i = 0; i < shards; i++)); do ports+=("$((base + 10 + i))" "$((base + 40 + i))"); done
  for ((j = 0; j < workers; j++)); do ports+=("$((base + 70 + j))" "$((base + 100 + j))"); done
  for port in "${ports[@]}"; do
    port_busy "$port" && die "port $port on 127.0.0.1 is in use (pick another --base-port)"
  done

  mkdir -p "$rundir"
  rm -f "$rundir/cluster.env"
  # If anything below fails (die, a failed command), stop what was started.
  # shellcheck disable=SC2154 # rc is set inside the trap
  trap 'rc=$?; if [ "$up_ok" != 1 ]; then echo "$me: start failed, stopping what was started" >&2;
        purge=0; cluster_down >/dev/null 2>&1; fi; exit $rc' EXIT

  # TLS: one test CA per cluster folder; kvtierctl (health waits) and
  # libkvtier clients read the client certificate from the environment
  local sargs=() tlsdir="$rundir/tls" render_tls=()
  if [ "$tls" = 1 ]; then
    [ -f "$tlsdir/ca.pem" ] || "$root/ops/certs.sh" "$tlsdir" >/dev/null ||
      die "could not make certificates in $tlsdir (ops/certs.sh)"
    export KVTIER_TLS_CA="$tlsdir/ca.pem" KVTIER_TLS_CERT="$tlsdir/client.pem" \
      KVTIER_TLS_KEY="$tlsdir/client.key"
    sargs=(--tls-cert "$tlsdir/server.pem" --tls-key "$tlsdir/server.key"
           --tls-client-ca "$tlsdir/ca.pem")
    render_tls=(--tls "$tlsdir")
  fi
  local shard_addrs="" worker_addrs="" http_addrs="" scrape_shards="" scrape_workers=""
  for ((i = 0; i < shards; i++)); do
    port=$((base + 10 + i)); mport=$((base + 40 + i))
    mkdir -p "$rundir/shard-$i"
    "$kvtierd" --listen "127.0.0.1:$port" --data-dir "$rundir/shard-$i/data" \
      --metrics-listen "127.0.0.1:$mport" --host-budget "$host_budget" \
      --ssd-budget "$ssd_budget" --grace-ms 3000 "${sargs[@]}" \
      </dev/null >"$rundir/shard-$i/kvtierd.log" 2>&1 &
    echo $! >"$rundir/shard-$i/pid"
    shard_addrs+="${shard_addrs:+ }127.0.0.1:$port"
    scrape_shards+="${scrape_shards:+, }\"127.0.0.1:$mport\""
  done
  for ((i = 0; i < shards; i++)); do
    wait_health "127.0.0.1:$((base + 10 + i))" "$rundir/shard-$i/pid" kvtierd \
      "$rundir/shard-$i/kvtierd.log" 20 || exit 1
  done

  for ((j = 0; j < workers; j++)); do
    worker_addrs+="${worker_addrs:+ }127.0.0.1:$((base + 70 + j))"
    http_addrs+="${http_addrs:+ }127.0.0.1:$((base + 100 + j))"
    scrape_workers+="${scrape_workers:+, }\"127.0.0.1:$((base + 100 + j))\""
  done

  # nginx: config from the template; runs as this user, in the foreground of
  # its own process. As root its worker process drops to nobody, so the
  # folders it reads must be traversable.
  local ngx="$rundir/nginx" user_line=""
  mkdir -p "$ngx"
  if [ "$(id -u)" -eq 0 ]; then
    user_line="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
    chmod o+x "$rundir" "$ngx"
  fi
  SHARDS="$shard_addrs" WORKERS="$worker_addrs" HTTP_WORKERS="$http_addrs" \
  USER_LINE="$user_line" RUNDIR="$ngx" CLIENT_LISTEN="127.0.0.1:$base" \
  TIER_LISTEN="127.0.0.1:$((base + 1))" HTTP_LISTEN="127.0.0.1:$((base + 2))" \
    "$root/ops/nginx/render.sh" "${render_tls[@]}" >"$ngx/nginx.conf"
  "$nginx" -t -q -e stderr -p "$ngx" -c "$ngx/nginx.conf" >"$ngx/nginx.log" 2>&1 ||
    { cat "$ngx/nginx.log" >&2; die "nginx rejected $ngx/nginx.conf"; }
  "$nginx" -e stderr -p "$ngx" -c "$ngx/nginx.conf" </dev/null >>"$ngx/nginx.log" 2>&1 &
  echo $! >"$ngx/pid"
  wait_health "127.0.0.1:$((base + 1))" "$ngx/pid" nginx "$ngx/nginx.log" 10 || exit 1

  if [ "$workers" -gt 0 ]; then
    local threads=$(( $(nproc) / workers )) wargs=()
    [ "$threads" -ge 1 ] || threads=1
    [ "$retain" = 1 ] && wargs+=(--retain)
    [ "$tls" = 1 ] && wargs+=("${sargs[@]}" --tier-tls-ca "$tlsdir/ca.pem"
                              --tier-tls-cert "$tlsdir/client.pem" --tier-tls-key "$tlsdir/client.key")
    for ((j = 0; j < workers; j++)); do
      mkdir -p "$rundir/worker-$j"
      "$worker_bin" serve --model "$model" --listen "127.0.0.1:$((base + 70 + j))" \
        --tier "127.0.0.1:$((base + 1))" --threads "$threads" "${wargs[@]}" \
        --http-listen "127.0.0.1:$((base + 100 + j))" \
        </dev/null >"$rundir/worker-$j/worker.log" 2>&1 &
      echo $! >"$rundir/worker-$j/pid"
    done
    for ((j = 0; j < workers; j++)); do
      wait_health "127.0.0.1:$((base + 70 + j))" "$rundir/worker-$j/pid" kvtier-worker \
        "$rundir/worker-$j/worker.log" 60 || exit 1
    done
    wait_health "127.0.0.1:$base" "$ngx/pid" nginx "$ngx/nginx.log" 10 || exit 1
  fi
  up_ok=1

  cat >"$rundir/cluster.env" <<EOF
# written by ops/cluster.sh up; source it for the addresses
KVTIER_CLIENT_LB=127.0.0.1:$base
KVTIER_TIER_LB=127.0.0.1:$((base + 1))
KVTIER_HTTP_LB=127.0.0.1:$((base + 2))
KVTIER_SHARDS="$shard_addrs"
KVTIER_WORKERS="$worker_addrs"
KVTIER_RUNDIR=$rundir
EOF
  if [ "$tls" = 1 ]; then
    cat >>"$rundir/cluster.env" <<EOF
# mutual TLS: kvtierctl, libkvtier and example_generate read these
export KVTIER_TLS_CA=$tlsdir/ca.pem KVTIER_TLS_CERT=$tlsdir/client.pem KVTIER_TLS_KEY=$tlsdir/client.key
EOF
  fi
  cat >"$rundir/prometheus.yml" <<EOF
# written by ops/cluster.sh up: prometheus --config.file=$rundir/prometheus.yml
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: kvtierd
    static_configs:
      - targets: [$scrape_shards]
  - job_name: kvtier-worker
    static_configs:
      - targets: [$scrape_workers]
EOF
  local scheme_http=http
  [ "$tls" = 1 ] && scheme_http=https
  echo "kvtier cluster up in $rundir"
  if [ "$workers" -gt 0 ]; then
    echo "  clients   127.0.0.1:$base    (nginx -> $workers worker(s), Inference.Generate)"
    echo "  HTTP API  $scheme_http://127.0.0.1:$((base + 2))/v1    (nginx -> workers; OpenAI-compatible)"
  fi
  echo "  tier LB   127.0.0.1:$((base + 1))    (nginx -> shard by x-kvtier-sequence; Tier.*, Admin.*)"
  for ((i = 0; i < shards; i++)); do
    echo "  shard-$i   127.0.0.1:$((base + 10 + i))    metrics http://127.0.0.1:$((base + 40 + i))/metrics  data $rundir/shard-$i/data"
  done
  for ((j = 0; j < workers; j++)); do
    echo "  worker-$j  127.0.0.1:$((base + 70 + j))    model $model, tier 127.0.0.1:$((base + 1)), HTTP + metrics http://127.0.0.1:$((base + 100 + j))"
  done
  echo "  metrics   scrape config $rundir/prometheus.yml"
  echo "  logs      $rundir/*/*.log; stop with: ops/cluster.sh down --dir $rundir"
}

# ---------------------------------------------------------------- remove-shard
# nginx_children PID: the pids of nginx's worker processes (children of the master).
nginx_children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | sort; }

cluster_remove_shard() {
  [ -f "$rundir/cluster.env" ] || die "no cluster in $rundir (no cluster.env)"
  # shellcheck disable=SC1091
  . "$rundir/cluster.env"
  is_uint "$rm_ix" || die "remove-shard wants a shard number, got '$rm_ix'"
  local base=${KVTIER_CLIENT_LB##*:} ngx="$rundir/nginx" nginx keep="" found=0 a
  local addr="127.0.0.1:$((base + 10 + rm_ix))" sdir="$rundir/shard-$rm_ix"
  for a in $KVTIER_SHARDS; do
    if [ "$a" = "$addr" ]; then found=1; else keep+="${keep:+ }$a"; fi
  done
  [ "$found" = 1 ] || die "shard $rm_ix ($addr) is not in this cluster's KVTIER_SHARDS ($KVTIER_SHARDS)"
  [ -n "$keep" ] || die "shard $rm_ix is the last shard: there is nowhere to move its sequences"
  alive "$sdir/pid" kvtierd || die "shard $rm_ix ($addr) is not running: its sequences cannot be read; start it first"
  alive "$ngx/pid" nginx || die "nginx (the load balancer) is not running in $ngx"
  nginx=$(find_nginx)
  [ -n "$nginx" ] || die "nginx not found"
  [ -z "$batch" ] || is_uint "$batch" || die "--batch wants a number, got '$batch'"

  # 1. nginx without shard I: the same render as 'up', minus its server line
  local http_addrs="" user_line="" render_tls=()
  for a in $KVTIER_WORKERS; do http_addrs+="${http_addrs:+ }127.0.0.1:$(( ${a##*:} + 30 ))"; done
  [ "$(id -u)" -eq 0 ] && user_line="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
  grep -q '^export KVTIER_TLS_CA=' "$rundir/cluster.env" && render_tls=(--tls "$rundir/tls")
  SHARDS="$keep" WORKERS="$KVTIER_WORKERS" HTTP_WORKERS="$http_addrs" \
  USER_LINE="$user_line" RUNDIR="$ngx" CLIENT_LISTEN="127.0.0.1:$base" \
  TIER_LISTEN="127.0.0.1:$((base + 1))" HTTP_LISTEN="127.0.0.1:$((base + 2))" \
    "$root/ops/nginx/render.sh" "${render_tls[@]}" >"$ngx/nginx.conf.new"
  "$nginx" -t -q -e stderr -p "$ngx" -c "$ngx/nginx.conf.new" >>"$ngx/nginx.log" 2>&1 ||
    { tail -n 5 "$ngx/nginx.log" >&2; die "nginx rejected $ngx/nginx.conf.new"; }
  mv "$ngx/nginx.conf.new" "$ngx/nginx.conf"
  local master old new i
  master=$(cat "$ngx/pid")
  old=$(nginx_children "$master")
  "$nginx" -s reload -e stderr -p "$ngx" -c "$ngx/nginx.conf" >>"$ngx/nginx.log" 2>&1 ||
    die "nginx -s reload failed (its log: $ngx/nginx.log)"
  # the new configuration serves once a worker process started after the reload runs
  for i in $(seq 50); do
    new=$(comm -13 <(echo "$old") <(nginx_children "$master"))
    [ -n "$new" ] && break
    sleep 0.1
  done
  [ -n "$new" ] || die "nginx did not start workers with the new configuration within 5 s ($ngx/nginx.log)"
  echo "== nginx reloaded: tier LB $KVTIER_TIER_LB routes to $keep"

  # 2. every sequence of shard I to its new owner, through the tier LB
  local margs=(--from "$addr" --to "$KVTIER_TIER_LB" --include-open --json)
  [ -n "$batch" ] && margs+=(--batch "$batch")
  echo "== moving the sequences of shard-$rm_ix ($addr) through $KVTIER_TIER_LB"
  # An old nginx worker may still take a new connection for a moment after the
  # reload (it stops accepting on its own time): a sequence it routes back to
  # shard I is refused by migrate's probe, and migrate is idempotent: retry.
  local try ok=0
  for try in 1 2 3 4 5; do
    if "$kvtierctl" migrate "${margs[@]}" >"$sdir/migrate.json"; then
      ok=1
      break
    fi
    grep -q "routes this sequence to the source" "$sdir/migrate.json" || break
    sleep 1
  done
  if [ "$ok" != 1 ]; then
    cat "$sdir/migrate.json" >&2
    echo "$me: shard-$rm_ix still holds what could not be moved; it keeps running outside the" \
         "load balancer (pid $(cat "$sdir/pid")): fix the cause and run 'remove-shard $rm_ix' again" >&2
    exit 1
  fi

  # 3. stop it, and the cluster no longer has it
  stop "$sdir/pid" kvtierd 15
  sed -i "s|^KVTIER_SHARDS=.*|KVTIER_SHARDS=\"$keep\"|" "$rundir/cluster.env"
  local moved blocks bytes secs
  moved=$(sed -n 's/^[[:space:]]*"moved":[[:space:]]*\([0-9]*\).*/\1/p' "$sdir/migrate.json")
  blocks=$(sed -n 's/^[[:space:]]*"blocks":[[:space:]]*\([0-9]*\).*/\1/p' "$sdir/migrate.json")
  bytes=$(sed -n 's/^[[:space:]]*"bytes":[[:space:]]*\([0-9]*\).*/\1/p' "$sdir/migrate.json")
  secs=$(sed -n 's/^[[:space:]]*"seconds":[[:space:]]*\([0-9.]*\).*/\1/p' "$sdir/migrate.json" |
         awk '{ printf "%.2f", $1 }')
  echo "shard-$rm_ix ($addr) removed: ${moved:-0} sequence(s), ${blocks:-0} block(s)," \
       "${bytes:-0} bytes moved to their new owners in ${secs:-?} s; shard-$rm_ix stopped" \
       "(its data directory $sdir/data is kept); shards now: $keep"
}

case "$cmd" in
  up) cluster_up ;;
  remove-shard) cluster_remove_shard ;;
  down) cluster_down ;;
  status) cluster_status ;;
esac
