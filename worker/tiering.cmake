# worker/tiering.cmake - the worker side of the tiering loop: tier links
# (embedded tier library / remote kvtierd), the per-sequence driver, and the
# Inference service (`kvtier-worker serve`). Included from worker/CMakeLists.txt.
add_library(kvtier_tiering STATIC
  ${CMAKE_CURRENT_LIST_DIR}/tierlink.c
  ${CMAKE_CURRENT_LIST_DIR}/tierlink_embedded.c
  ${CMAKE_CURRENT_LIST_DIR}/tierlink_remote.c
  ${CMAKE_CURRENT_LIST_DIR}/tiering.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_gen.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_metrics.c
  ${CMAKE_CURRENT_LIST_DIR}/serve_cmd.c)
target_include_directories(kvtier_tiering PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kvtier_tiering PUBLIC kvtier_engine kvtier_tokenizer kvtier_tier kvtier kvtier_proto
                      kvtier_metrics_http m)
