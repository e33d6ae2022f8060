# tests/engine/kvcache.cmake - paged KV cache, attention, summaries, local
# policies (worker/kvcache, library kvtier_kvcache). Included by
# tests/engine/CMakeLists.txt.
if(TARGET kvtier_kvcache)
  foreach(t test_kvcache test_kvcache_policy)
    add_executable(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.c)
    target_link_libraries(${t} PRIVATE PkgConfig::CMOCKA kvtier_kvcache m)
  endforeach()
  add_test(NAME engine_kvcache_attention COMMAND test_kvcache)
  add_test(NAME engine_kvcache_policy COMMAND test_kvcache_policy)

  # Benchmark program (prints a table, --json PATH writes JSON); ctest only
  # runs its --quick smoke mode.
  add_executable(bench_kvcache ${CMAKE_CURRENT_LIST_DIR}/test_kvcache_bench.c)
  target_link_libraries(bench_kvcache PRIVATE kvtier_kvcache m)
  add_test(NAME engine_kvcache_bench_smoke COMMAND bench_kvcache --quick --threads 2)
endif()
