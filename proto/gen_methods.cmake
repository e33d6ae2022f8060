# Generates a C table {full method name, streaming kind} from .proto files.
# Usage: cmake -DPROTOS=a.proto,b.proto -DOUT=x_methods.c -P gen_methods.cmake
# (comma-separated: a CMake list would be split into separate arguments).
# Kinds match enum rpc_kind in rpc.h: 0 unary, 1 client stream, 2 server stream, 3 bidi.
string(REPLACE "," ";" protos "${PROTOS}")
set(body "")
set(count 0)
foreach(proto ${protos})
  file(READ ${proto} text)
  string(REGEX REPLACE "//[^\n]*" "" text "${text}")
  string(REGEX MATCH "package[ \t]+([A-Za-z0-9_.]+)[ \t]*;" _ "${text}")
  set(pkg ${CMAKE_MATCH_1})
  # CMake lists split on ';': remove them before list-matching.
  string(REPLACE ";" " " text "${text}")
  string(REGEX MATCHALL "service[ \t\n]+[A-Za-z0-9_]+[ \t\n]*{[^}]*}" services "${text}")
  foreach(svc ${services})
    string(REGEX MATCH "service[ \t\n]+([A-Za-z0-9_]+)" _ "${svc}")
    set(sname ${CMAKE_MATCH_1})
    string(REGEX MATCHALL "rpc[ \t\n]+[A-Za-z0-9_]+[ \t\n]*\\([^)]*\\)[ \t\n]*returns[ \t\n]*\\([^)]*\\)" rpcs "${svc}")
    foreach(r ${rpcs})
      string(REGEX MATCH "rpc[ \t\n]+([A-Za-z0-9_]+)[ \t\n]*\\(([^)]*)\\)[ \t\n]*returns[ \t\n]*\\(([^)]*)\\)" _ "${r}")
      set(mname ${CMAKE_MATCH_1})
      set(req "${CMAKE_MATCH_2}")
      set(resp "${CMAKE_MATCH_3}")
      set(kind 0)
      if(req MATCHES "^[ \t\n]*stream[ \t\n]")
        math(EXPR kind "${kind} + 1")
      endif()
      if(resp MATCHES "^[ \t\n]*stream[ \t\n]")
        math(EXPR kind "${kind} + 2")
      endif()
      string(APPEND body "  {\"/${pkg}.${sname}/${mname}\", ${kind}},\n")
      math(EXPR count "${count} + 1")
    endforeach()
  endforeach()
endforeach()
file(WRITE ${OUT}.tmp
"/* Generated from ${PROTOS} by gen_methods.cmake. Do not edit. */
#include <stddef.h>
typedef struct { const char *name; int kind; } rpc_method_kind_entry;
const rpc_method_kind_entry kvtier_method_kinds[] = {
${body}  {NULL, 0}
};
const size_t kvtier_method_kinds_count = ${count};
")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
