# tests/engine/kvcache.cmake - paged KV cache, attention, summaries, local
# policies (KV helper). Included by tests/engine/CMakeLists.txt. The four
# sources are compiled into the tests directly so they do not depend on the
# rest of the engine being buildable.
set(_kv_dir ${PROJECT_SOURCE_DIR}/worker)
set(_kv_src ${_kv_dir}/kvcache.c ${_kv_dir}/ksketch.c ${_kv_dir}/attention.c ${_kv_dir}/attention_decode.c ${_kv_dir}/summary.c ${_kv_dir}/local_policy.c)
if(TARGET kvtier_threadpool AND EXISTS ${_kv_dir}/kvcache.c)
  foreach(t test_kvcache test_kvcache_policy)
    add_executable(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.c ${_kv_src})
    target_include_directories(${t} PRIVATE ${_kv_dir})
    target_link_libraries(${t} PRIVATE PkgConfig::CMOCKA kvtier_threadpool kvtier_policy m)
  endforeach()
  add_test(NAME engine_kvcache_attention COMMAND test_kvcache)
  add_test(NAME engine_kvcache_policy COMMAND test_kvcache_policy)
endif()

# Benchmark program (prints a table, --json PATH writes JSON); ctest only
# runs its --quick smoke mode.
if(TARGET kvtier_threadpool AND EXISTS ${_kv_dir}/kvcache.c)
  add_executable(bench_kvcache ${CMAKE_CURRENT_LIST_DIR}/test_kvcache_bench.c ${_kv_src})
  target_include_directories(bench_kvcache PRIVATE ${_kv_dir})
  target_link_libraries(bench_kvcache PRIVATE kvtier_threadpool kvtier_policy m)
  add_test(NAME engine_kvcache_bench_smoke COMMAND bench_kvcache --quick --threads 2)
endif()
