/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/clock.c — the one place tillsync reads the time: wall milliseconds for clocks and
 * certificates, monotonic milliseconds for timeouts and rates.
 */
#include <time.h>

#include "util/util.h"

static uint64_t ms_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t tsync__wall_ms(void)
{
    return ms_of(CLOCK_REALTIME);
}

uint64_t tsync__mono_ms(void)
{
    return ms_of(CLOCK_MONOTONIC);
}
