#!/usr/bin/env bash
# ops/nginx/render.sh - writes kvtier's nginx config (template
#   ops/nginx/kvtier.conf) to stdout. Used by ops/cluster.sh and the netns test.
# Usage: ops/nginx/render.sh [--tls DIR]   with the environment:
#   RUNDIR        nginx's own folder (pid, temp files)
#   CLIENT_LISTEN, TIER_LISTEN, HTTP_LISTEN   host:port of the three ports
#   SHARDS, WORKERS, HTTP_WORKERS   space-separated host:port upstreams (empty
#                 WORKERS: an upstream marked down, as nginx needs one)
#   USER_LINE     a `user ...;` line (when nginx starts as root), or empty
#   --tls DIR     mutual TLS with DIR/{server,client}.{pem,key} and DIR/ca.pem
#                 (ops/certs.sh): on every listen and to every upstream
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tls=""
case "${1:-}" in
  --tls) tls=${2:?"--tls needs a folder"} ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "render.sh: unknown option $1" >&2; exit 2 ;;
esac
lines() { # ADDRS [SUFFIX] [FALLBACK]
  local out="" a
  for a in $1; do out+="        server $a${2:-};"$'\n'; done
  [ -n "$out" ] || out="        server ${3:-127.0.0.1:1} down;"$'\n'
  printf '%s' "$out"
}
tls_lines="" no_verify="" ssl="" grpc=grpc http=http
if [ -n "$tls" ]; then
  tls_lines="    ssl_certificate $tls/server.pem;
    ssl_certificate_key $tls/server.key;
    ssl_client_certificate $tls/ca.pem;
    ssl_verify_client on;
    grpc_ssl_certificate $tls/client.pem;
    grpc_ssl_certificate_key $tls/client.key;
    grpc_ssl_trusted_certificate $tls/ca.pem;
    grpc_ssl_verify on;
    grpc_ssl_name localhost;
    proxy_ssl_certificate $tls/client.pem;
    proxy_ssl_certificate_key $tls/client.key;
    proxy_ssl_trusted_certificate $tls/ca.pem;
    proxy_ssl_verify on;
    proxy_ssl_name localhost;
"
  no_verify="        ssl_verify_client off;   # HTTP clients present the API key instead"$'\n'
  ssl="ssl " grpc=grpcs http=https
fi
SHARD_LINES=$(lines "${SHARDS:-}" " max_fails=0")$'\n' \
WORKER_LINES=$(lines "${WORKERS:-}")$'\n' HTTP_LINES=$(lines "${HTTP_WORKERS:-}")$'\n' \
TLS_LINES="$tls_lines" NO_VERIFY="$no_verify" SSL="$ssl" GRPC="$grpc" HTTP="$http" \
USER_LINE="${USER_LINE:-}" RUNDIR="${RUNDIR:?}" CLIENT_LISTEN="${CLIENT_LISTEN:?}" \
TIER_LISTEN="${TIER_LISTEN:?}" HTTP_LISTEN="${HTTP_LISTEN:?}" \
  awk '{ gsub(/__RUNDIR__/, ENVIRON["RUNDIR"]);
         gsub(/__CLIENT_LISTEN__/, ENVIRON["CLIENT_LISTEN"]);
         gsub(/__TIER_LISTEN__/, ENVIRON["TIER_LISTEN"]);
         gsub(/__HTTP_LISTEN__/, ENVIRON["HTTP_LISTEN"]);
         gsub(/__SSL__/, ENVIRON["SSL"]);
         gsub(/__GRPC__/, ENVIRON["GRPC"]);
         gsub(/__HTTP__/, ENVIRON["HTTP"]);
         if ($0 ~ /^__TLS__$/) { printf "%s", ENVIRON["TLS_LINES"]; next }
         if ($0 ~ /^__NO_VERIFY__$/) { printf "%s", ENVIRON["NO_VERIFY"]; next }
         if ($0 ~ /^__USER__$/) { print ENVIRON["USER_LINE"]; next }
         if ($0 ~ /^__SHARDS__$/) { printf "%s", ENVIRON["SHARD_LINES"]; next }
         if ($0 ~ /^__WORKERS__$/) { printf "%s", ENVIRON["WORKER_LINES"]; next }
         if ($0 ~ /^__HTTP_WORKERS__$/) { printf "%s", ENVIRON["HTTP_LINES"]; next }
         print }' "$here/kvtier.conf"
