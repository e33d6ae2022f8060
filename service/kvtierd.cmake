# kvtierd: gRPC front end of the tier service (included from service/CMakeLists.txt).
add_library(kvtierd_front STATIC
  svc_map.c
  svc_opts.c
  svc_tier.c
  svc_admin.c
  metrics.c
  metrics_http.c)
target_include_directories(kvtierd_front PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(kvtierd_front PUBLIC kvtier_tier kvtier_proto PkgConfig::MHD Threads::Threads)

add_executable(kvtierd kvtierd.c)
target_link_libraries(kvtierd PRIVATE kvtierd_front)
