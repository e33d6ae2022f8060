/* tokenize_main.c — standalone `tokenize` program for tests and scripts; the
 * same code runs as `kvtier-worker tokenize`. */
#include "tokenize_cmd.h"

int main(int argc, char **argv) {
    return tokenize_cmd_main(argc, argv);
}
