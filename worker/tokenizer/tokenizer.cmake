# worker/tokenizer/tokenizer.cmake — the Qwen tokenizer, chat templates and the `tokenize`
# subcommand as one static library, kvtier_tokenizer. Included by
# worker/CMakeLists.txt and, when the worker is not configured, by
# tests/tokenizer and tests/fuzz. Needs libutf8proc (Debian: libutf8proc-dev)
# for NFC; without it the target is not defined (and a warning says so).
include_guard(GLOBAL)

if(NOT TARGET PkgConfig::UTF8PROC)
  pkg_check_modules(UTF8PROC IMPORTED_TARGET GLOBAL libutf8proc)
endif()
if(NOT TARGET PkgConfig::UTF8PROC)
  message(WARNING "libutf8proc not found (apt-get install libutf8proc-dev): kvtier_tokenizer, "
                  "the tokenize command and the tokenizer tests are not built")
  return()
endif()

add_library(kvtier_tokenizer STATIC
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_encode.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_decode.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bpe.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_utf8.c
  ${CMAKE_CURRENT_LIST_DIR}/chat.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenize_cmd.c)
target_include_directories(kvtier_tokenizer PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(kvtier_tokenizer PUBLIC PkgConfig::PCRE2 PkgConfig::CJSON PkgConfig::UTF8PROC
                      Threads::Threads)
