/* trace_cmd.h - the `kvtier-worker trace` subcommand (attention statistics). */
#ifndef KVTIER_TRACE_CMD_H
#define KVTIER_TRACE_CMD_H

/* Runs the subcommand; argv[0] is "trace". Returns the process exit code:
 * 0 ok, 1 runtime failure, 2 usage error. See --help. */
int trace_cmd_main(int argc, char **argv);

#endif
