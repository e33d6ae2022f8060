/* tokenize_cmd.h — the `kvtier-worker tokenize` subcommand. */
#ifndef KVTIER_TOKENIZE_CMD_H
#define KVTIER_TOKENIZE_CMD_H

/* Runs the tokenize subcommand; argv[0] is "tokenize" (or the program name).
 * Reads stdin line by line, writes one JSON line per input line to stdout.
 * Returns the process exit code: 0 ok, 1 bad input or load failure (message
 * on stderr), 2 usage error. See --help for the options. */
int tokenize_cmd_main(int argc, char **argv);

#endif
