/* stage_cmd.h - `kvtier-worker stage`: one follower rank of a layer-range
 * pipeline (pipe_stage.h). */
#ifndef KVTIER_STAGE_CMD_H
#define KVTIER_STAGE_CMD_H

/* Entry point (argv[0] = "stage"). Returns the exit code: 0 after BYE, 1 on
 * a failure (message on stderr), 2 on a usage error. */
int stage_cmd_main(int argc, char **argv);

#endif
