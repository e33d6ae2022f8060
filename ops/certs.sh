#!/usr/bin/env bash
# ops/certs.sh - a test certificate authority and certificates for kvtier's TLS
#   and mutual TLS (openssl): ca.pem/ca.key, server.pem/server.key (for kvtierd,
#   workers and nginx: SAN IP 127.0.0.1, DNS localhost and every --host),
#   client.pem/client.key (workers, kvtierctl, libkvtier, nginx upstreams).
#   Keys are EC P-256, readable by the owner only; certificates valid --days.
#   For tests and private clusters: use your own CA in production.
# Usage: ops/certs.sh DIR [--host NAME|IP]... [--days N]
set -euo pipefail
me="ops/certs.sh"
dir="" days=365 hosts=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --host) [ $# -ge 2 ] || { echo "$me: --host needs a value" >&2; exit 2; }; hosts+=("$2"); shift ;;
    --days) [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || { echo "$me: --days needs a number" >&2; exit 2; }
            days=$2; shift ;;
    -*) echo "$me: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "$me: one DIR only" >&2; exit 2; }; dir=$1 ;;
  esac
  shift
done
[ -n "$dir" ] || { echo "$me: usage: ops/certs.sh DIR [--host NAME|IP]... [--days N]" >&2; exit 2; }
command -v openssl >/dev/null || { echo "$me: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077
cd "$dir"
san="IP:127.0.0.1,IP:::1,DNS:localhost"
for h in "${hosts[@]}"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
done
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=kvtier test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem 2>/dev/null
sign() { # name cn extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
sign server "kvtier server" "subjectAltName=$san
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
sign client "kvtier client" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
rm -f ca.srl
chmod 644 ca.pem server.pem client.pem
echo "$me: CA, server and client certificates in $dir (server SAN: $san)"
