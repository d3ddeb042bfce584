/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/nats_server.h — what the NATS tests (nats_util.h) and bench_relay --nats share to
 * start a nats-server on loopback: where the program is, and a free port. No criterion here, so
 * a benchmark links it too.
 */
#ifndef TSYNC_TESTS_NATS_SERVER_H
#define TSYNC_TESTS_NATS_SERVER_H

/* The path of nats-server ($TSYNC_NATS_SERVER, else Debian's), or NULL when it is not installed. */
const char *ns_server_path(void);

/* A loopback TCP port free right now (the kernel's pick for port 0), or -1 (errno says why). */
int ns_free_port(void);

#endif
