# quality_bench: policies at equal hot budgets vs the full cache (not a test).
if(TARGET kvtier_tiering AND TARGET kvtier_tokenizer AND KVTIER_EMBEDDED_TIER)
  add_executable(quality_bench ${CMAKE_CURRENT_LIST_DIR}/quality_bench.c)
  target_link_libraries(quality_bench PRIVATE kvtier_tiering kvtier_tokenizer PkgConfig::CJSON m)
endif()
