# kvtierd: gRPC front end of the tier service (included from service/CMakeLists.txt).
# The /metrics HTTP endpoint (libmicrohttpd, page from a callback): also used
# by the worker.
add_library(kvtier_metrics_http STATIC metrics_http.c)
target_include_directories(kvtier_metrics_http PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
# (tier.h types only, through metrics.h: no tier code, no RocksDB)
target_link_libraries(kvtier_metrics_http PUBLIC kvtier_policy kvtier_proto PkgConfig::MHD
                      Threads::Threads)

add_library(kvtierd_front STATIC
  svc_map.c
  svc_opts.c
  svc_tier.c
  svc_admin.c
  metrics.c)
target_include_directories(kvtierd_front PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kvtierd_front PUBLIC kvtier_tier kvtier_proto kvtier_metrics_http
                      PkgConfig::MHD Threads::Threads)

add_executable(kvtierd kvtierd.c)
target_link_libraries(kvtierd PRIVATE kvtierd_front)
