/* run_cmd.h - the `kvtier-worker run` subcommand (generate from a prompt). */
#ifndef KVTIER_RUN_CMD_H
#define KVTIER_RUN_CMD_H

/* Runs the subcommand; argv[0] is "run". Returns the process exit code:
 * 0 ok, 1 runtime failure (model load, generation), 2 usage error (bad flag
 * value, missing model dir, invalid UTF-8 prompt). See --help. */
int run_cmd_main(int argc, char **argv);

#endif
