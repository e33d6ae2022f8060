/* serve_cmd.h - `kvtier-worker serve` (Inference service). */
#ifndef KVTIER_SERVE_CMD_H
#define KVTIER_SERVE_CMD_H

/* Runs the serve subcommand (argv[0] = "serve"). Returns the exit code:
 * 0 after a clean SIGTERM/SIGINT shutdown, 1 on a startup failure, 2 on a
 * usage error. */
int serve_cmd_main(int argc, char **argv);

#endif
