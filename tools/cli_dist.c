/* cli_dist.c - the distributed commands' start and end: MPI_COMM_WORLD,
 * rank 0 speaks for the run, a failure on any rank ends the job. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

int cli_dist_start(const char *cmd, double timeout_s, dm_comm **out)
{
    *out = NULL;
    if (!dm_dist_built()) {
        fprintf(stderr, "deepmoe %s: this deepmoe was built without MPI: install libopenmpi-dev openmpi-bin "
                        "(scripts/deps.sh) and rebuild (make MPI=1)\n", cmd);
        return 1;
    }
    dm_error err;
    if (dm_comm_world(timeout_s, out, &err)) return cli_error(cmd, &err);
    if (dm_comm_rank(*out) != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "deepmoe %s: rank %d: cannot silence stdout\n", cmd, dm_comm_rank(*out));
    }
    return 0;
}

int cli_dist_end(dm_comm *c, int rc)
{
    if (!c) return rc;
    fflush(stdout);
    fflush(stderr);
    if (rc && dm_comm_size(c) > 1) {
        fprintf(stderr, "deepmoe: rank %d of %d failed: ending every rank\n", dm_comm_rank(c), dm_comm_size(c));
        dm_comm_abort(c, rc);
    }
    dm_comm_free(c);
    return rc;
}

int cli_dist_timeout(const char *s, double *out)
{
    float f;
    if (cli_float(s, &f) || !(f > 0) || f > 1e6) return -1;
    *out = f;
    return 0;
}
