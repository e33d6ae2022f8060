# worker/pipeline - a model split by layer ranges over worker processes
# (`kvtier-worker run --layers ...` = rank 0, `kvtier-worker stage` = the others).
#
#   pipe_wire.c              messages and their checks (pure)
#   pipe_transport.c         the transport function table
#   pipe_transport_socket.c  TCP ring between CPU processes (always built)
#   pipe_transport_nccl.c    NCCL ring between GPUs (KVTIER_NCCL and NCCL found)
#   pipe_ncclid.c            the NCCL unique id over kvtier's gRPC (Pipeline/GetNcclId)
#   pipe_conf.c              flags, checks, the stage's model view
#   pipe_driver.c            rank 0: hands each chunk's hidden states around the ring
#   pipe_stage.c, stage_cmd.c  ranks > 0: `kvtier-worker stage`
#
# NCCL is looked for under the CUDA toolkit (CUDAToolkit_ROOT, CUDA_HOME,
# /usr/local/cuda): nccl.h, libnccl and libcudart. Found: KVTIER_HAVE_NCCL.
# Not found (or -DKVTIER_NCCL=OFF): the socket transport only, and
# `--transport nccl` says so.
option(KVTIER_NCCL "Build the NCCL pipeline transport when NCCL is found" ON)

add_library(kvtier_pipeline STATIC
  pipeline/pipe_wire.c pipeline/pipe_transport.c pipeline/pipe_transport_socket.c
  pipeline/pipe_conf.c pipeline/pipe_driver.c pipeline/pipe_stage.c pipeline/stage_cmd.c)
target_include_directories(kvtier_pipeline PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/pipeline)
target_link_libraries(kvtier_pipeline PUBLIC kvtier_engine kvtier_model Threads::Threads)
if(TARGET kvtier_tiering)
  # each stage tiers its own layers with the tiering driver of `serve`
  target_link_libraries(kvtier_pipeline PUBLIC kvtier_tiering)
  target_compile_definitions(kvtier_pipeline PRIVATE KVTIER_PIPE_TIERING=1)
endif()
if(TARGET kvtier_proto)
  target_sources(kvtier_pipeline PRIVATE pipeline/pipe_ncclid.c)
  target_link_libraries(kvtier_pipeline PUBLIC kvtier_proto)
endif()

set(KVTIER_PIPE_NCCL OFF)
if(KVTIER_NCCL AND TARGET kvtier_proto)
  set(_pipe_cuda_hints ${CUDAToolkit_ROOT} $ENV{CUDA_HOME} $ENV{CUDA_PATH} /usr/local/cuda)
  find_path(KVTIER_NCCL_INCLUDE nccl.h HINTS ${_pipe_cuda_hints} PATH_SUFFIXES include)
  find_path(KVTIER_CUDART_INCLUDE cuda_runtime_api.h HINTS ${_pipe_cuda_hints} PATH_SUFFIXES include)
  find_library(KVTIER_NCCL_LIB nccl HINTS ${_pipe_cuda_hints} PATH_SUFFIXES lib64 lib)
  find_library(KVTIER_CUDART_LIB cudart HINTS ${_pipe_cuda_hints} PATH_SUFFIXES lib64 lib)
  if(KVTIER_NCCL_INCLUDE AND KVTIER_CUDART_INCLUDE AND KVTIER_NCCL_LIB AND KVTIER_CUDART_LIB)
    set(KVTIER_PIPE_NCCL ON)
  endif()
endif()
if(KVTIER_PIPE_NCCL)
  target_sources(kvtier_pipeline PRIVATE pipeline/pipe_transport_nccl.c)
  # the CUDA headers are not ours: no warnings from them under -Werror
  target_include_directories(kvtier_pipeline SYSTEM PRIVATE ${KVTIER_NCCL_INCLUDE}
                             ${KVTIER_CUDART_INCLUDE})
  if(TARGET CUDA::cudart) # find_package(CUDAToolkit) ran (the CUDA backend): the same runtime
    target_link_libraries(kvtier_pipeline PUBLIC ${KVTIER_NCCL_LIB} CUDA::cudart)
  else()
    target_link_libraries(kvtier_pipeline PUBLIC ${KVTIER_NCCL_LIB} ${KVTIER_CUDART_LIB})
  endif()
  target_compile_definitions(kvtier_pipeline PUBLIC KVTIER_HAVE_NCCL=1)
  message(STATUS "kvtier pipeline: NCCL transport ON (${KVTIER_NCCL_LIB}, ${KVTIER_CUDART_LIB})")
elseif(NOT KVTIER_NCCL)
  message(STATUS "kvtier pipeline: NCCL transport OFF (-DKVTIER_NCCL=OFF): socket transport only")
else()
  message(STATUS "kvtier pipeline: NCCL not found (nccl.h + libnccl + libcudart under "
                 "CUDAToolkit_ROOT, CUDA_HOME or /usr/local/cuda): socket transport only")
endif()

if(TARGET kvtier_serve) # `serve --layers ...` is rank 0 too
  target_link_libraries(kvtier_serve PUBLIC kvtier_pipeline)
  target_compile_definitions(kvtier_serve PRIVATE KVTIER_HAVE_PIPELINE=1)
endif()
target_link_libraries(kvtier-worker PRIVATE kvtier_pipeline)
target_compile_definitions(kvtier-worker PRIVATE KVTIER_HAVE_PIPELINE=1)
