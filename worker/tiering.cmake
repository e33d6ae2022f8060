# worker/tiering.cmake - the worker side of the tiering loop: tier links
# (embedded tier library / remote kvtierd), the per-sequence driver, and the
# Inference service (`kvtier-worker serve`). Included from worker/CMakeLists.txt.
add_library(kvtier_tiering STATIC
  ${CMAKE_CURRENT_LIST_DIR}/tierlink.c
  ${CMAKE_CURRENT_LIST_DIR}/tierlink_remote.c
  ${CMAKE_CURRENT_LIST_DIR}/tiering.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_gen.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_metrics.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_cmd.c)
target_include_directories(kvtier_tiering PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kvtier_tiering PUBLIC kvtier_engine kvtier_tokenizer kvtier_policy kvtier_size kvtier kvtier_proto
                      kvtier_metrics_http m)
# The tier library's types (tier.h) are used either way; its code (and
# RocksDB) only with the embedded tier.
target_include_directories(kvtier_tiering PUBLIC ${PROJECT_SOURCE_DIR}/service)
if(KVTIER_EMBEDDED_TIER)
  target_sources(kvtier_tiering PRIVATE ${CMAKE_CURRENT_LIST_DIR}/tierlink_embedded.c)
  target_link_libraries(kvtier_tiering PUBLIC kvtier_tier)
  target_compile_definitions(kvtier_tiering PUBLIC KVTIER_HAVE_EMBEDDED_TIER=1)
endif()
