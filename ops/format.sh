#!/usr/bin/env bash
# ops/format.sh - format kvtier's C sources with the .clang-format at the top.
# Usage: ops/format.sh [--check]
#   --check   change nothing; list the files that differ and exit 1 if any (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  --check) check=1 ;;
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "ops/format.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null || { echo "ops/format.sh: clang-format not found (ops/deps.sh)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu')
if [ $check -eq 0 ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "ops/format.sh: $f is not formatted (run ops/format.sh)" >&2
    bad=1
  fi
done
exit $bad
