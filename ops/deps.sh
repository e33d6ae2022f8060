#!/usr/bin/env bash
# ops/deps.sh - install the Debian packages kvtier needs to build and test.
# Installs only what is missing (dpkg-query), so a second run is instant.
# Usage: ops/deps.sh [--runtime-only]
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  ""|--runtime-only) ;;
  *) echo "ops/deps.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
esac

BUILD_PKGS=(
  build-essential cmake pkg-config
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  librocksdb-dev libcjson-dev libmicrohttpd-dev libcmocka-dev
  libpcre2-dev libopenblas-dev libisal-dev libutf8proc-dev
)
TEST_PKGS=(
  python3 python3-grpcio python3-grpc-tools python3-crc32c python3-numpy
  prometheus procps gnuplot-nox nginx clang-format openssl iproute2
)

want=("${BUILD_PKGS[@]}")
[ "${1:-}" = "--runtime-only" ] || want+=("${TEST_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm for the tokenizer parity test: some images ship them outside
# dpkg's Debian packages (where Debian's npm would conflict): check commands.
if [ "${1:-}" != "--runtime-only" ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "ops/deps.sh: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
