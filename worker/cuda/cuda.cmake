# worker/cuda - the CUDA backend, built when the top CMakeLists found nvcc and
# the toolkit (KVTIER_HAVE_CUDA). The kernels are one CUDA library; the host
# code (C11) goes into kvtier_engine, which then links cudart and cuBLAS.
if(KVTIER_HAVE_CUDA)
  add_library(kvtier_cuda_kernels STATIC ${CMAKE_CURRENT_LIST_DIR}/cuda_kernels.cu)
  target_include_directories(kvtier_cuda_kernels PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  set_target_properties(kvtier_cuda_kernels PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                        POSITION_INDEPENDENT_CODE ON)
  # host-compiler warnings as for C; nvcc's own warnings are errors too under KVTIER_WERROR
  target_compile_options(kvtier_cuda_kernels PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${KVTIER_WERROR}>>:-Werror=all-warnings -Xcompiler=-Werror>)
  target_link_libraries(kvtier_cuda_kernels PUBLIC CUDA::cudart)

  target_sources(kvtier_engine PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/cuda_probe.c ${CMAKE_CURRENT_LIST_DIR}/cuda_util.c
    ${CMAKE_CURRENT_LIST_DIR}/cuda_blas.c ${CMAKE_CURRENT_LIST_DIR}/cuda_kv.c
    ${CMAKE_CURRENT_LIST_DIR}/cuda_forward.c)
  target_include_directories(kvtier_engine PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(kvtier_engine PUBLIC KVTIER_HAVE_CUDA=1)
  # cuBLAS is dlopen'ed by cuda_blas.c (linking it costs every process ~0.5 s
  # and 200 MB at start); its headers only here
  target_link_libraries(kvtier_engine PUBLIC kvtier_cuda_kernels CUDA::cudart ${CMAKE_DL_LIBS})
  get_target_property(KVTIER_CUBLAS_LIB CUDA::cublas IMPORTED_LOCATION)
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cuda_blas.c PROPERTIES COMPILE_DEFINITIONS
    "KVTIER_CUBLAS_SONAME=\"libcublas.so.${CUDAToolkit_VERSION_MAJOR}\";KVTIER_CUBLAS_PATH=\"${KVTIER_CUBLAS_LIB}\"")
endif()
