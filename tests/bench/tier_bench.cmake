# tier_bench: kvtierd put/fetch throughput and latency (host and SSD tiers) and
# summaries per second, against a running kvtierd or one it spawns.
# Included from tests/bench/CMakeLists.txt; owned by the client work.
if(TARGET kvtier AND TARGET kvtier_itest AND TARGET kvtierd)
  add_executable(tier_bench ${CMAKE_CURRENT_LIST_DIR}/tier_bench.c)
  target_link_libraries(tier_bench PRIVATE kvtier kvtier_itest PkgConfig::CJSON m)
endif()
