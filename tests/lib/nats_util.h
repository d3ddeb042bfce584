/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/nats_util.h — NATS JetStream servers for tests: one server, or a 3-node cluster, on
 * loopback ports, each with its own config and store_dir in the test's temp folder, started with
 * nu_spawn (so nu_fini stops what a failing test left) and stopped by PID. For tests only
 * (criterion asserts inside).
 */
#ifndef TSYNC_TESTS_NATS_UTIL_H
#define TSYNC_TESTS_NATS_UTIL_H

#include <sys/types.h>

#define NS_MAX 3

typedef struct {
    int n;
    pid_t pid[NS_MAX];
    int port[NS_MAX], route[NS_MAX];
    char dir[NS_MAX][512]; /* the node's folder: its config, log and store_dir (store/) */
    char url[256];         /* nats://127.0.0.1:P1,127.0.0.1:P2,... (the --store URL) */
} ns_cluster;

#include "tests/lib/nats_server.h" /* ns_server_path */

/* Starts n servers (1: a single JetStream server; 3: a cluster) under base and waits until
 * each is ready and, for a cluster, JetStream has elected its metadata leader. */
void ns_start(ns_cluster *c, const char *base, int n);

/* Kills node i with SIGKILL (a crash) and waits for it. */
void ns_kill(ns_cluster *c, int i);

/* Stops every node still running (SIGTERM, by PID). */
void ns_stop(ns_cluster *c);

#endif
