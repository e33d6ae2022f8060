# loader.cmake - checkpoint loader library (config.json, safetensors, tensor
# views, dtype conversions). Included from worker/CMakeLists.txt.
add_library(kvtier_model STATIC
  ${CMAKE_CURRENT_LIST_DIR}/model_config.c
  ${CMAKE_CURRENT_LIST_DIR}/safetensors.c
  ${CMAKE_CURRENT_LIST_DIR}/model_load.c
  ${CMAKE_CURRENT_LIST_DIR}/tensor.c)
target_include_directories(kvtier_model PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kvtier_model PUBLIC PkgConfig::CJSON)
