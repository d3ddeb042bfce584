/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cli_clock.c — the one clock of the tillsync command: wall time for "reported 2.1 s ago",
 * monotonic time for how long a step of a demo took (a clock set back must not make it negative).
 */
#include <time.h>

#include "cli.h"

uint64_t cli_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double cli_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
