/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/nats_util.c — NATS JetStream servers for tests (nats_util.h).
 */
#include "tests/lib/nats_util.h"

#include <criterion/criterion.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/nats_server.h"
#include "tests/lib/node_util.h"

/* A loopback TCP port free right now. */
static int free_port(void)
{
    int port = ns_free_port();
    cr_assert_gt(port, 0, "no free port");
    return port;
}

static int log_has(const char *log, const char *what)
{
    FILE *f = fopen(log, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, what) != NULL;
    if (f) fclose(f);
    return found;
}

/* Whether JetStream on the server at port can place a stream of n replicas now (it makes one and
 * deletes it). The log line of a metadata leader's election can come before the leader knows
 * every peer: a 3-replica create then fails (insufficient resources), as the relay's first admit
 * would. */
static int places(int port, int n)
{
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    int ok = 0;
    if (natsConnection_ConnectTo(&nc, url) == NATS_OK &&
        natsConnection_JetStream(&js, nc, NULL) == NATS_OK) {
        const char *subj[1] = {"tsync_test_ready"};
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = "TSYNC_TEST_READY";
        sc.Subjects = subj;
        sc.SubjectsLen = 1;
        sc.Storage = js_MemoryStorage;
        sc.Replicas = n;
        jsErrCode je = 0;
        ok = js_AddStream(NULL, js, &sc, NULL, &je) == NATS_OK;
        if (ok) js_DeleteStream(js, sc.Name, NULL, &je);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return ok;
}

void ns_start(ns_cluster *c, const char *base, int n)
{
    cr_assert(n >= 1 && n <= NS_MAX);
    const char *server = ns_server_path();
    cr_assert_not_null(server, "nats-server is not installed");
    memset(c, 0, sizeof *c);
    c->n = n;
    size_t off = (size_t)snprintf(c->url, sizeof c->url, "nats://");
    for (int i = 0; i < n; i++) {
        c->port[i] = free_port();
        c->route[i] = free_port();
        off += (size_t)snprintf(c->url + off, sizeof c->url - off, "%s127.0.0.1:%d", i ? "," : "",
                                c->port[i]);
    }
    for (int i = 0; i < n; i++) {
        snprintf(c->dir[i], sizeof c->dir[i], "%s/nats%d", base, i + 1);
        char path[600], log[600];
        snprintf(path, sizeof path, "mkdir -p %s/store", c->dir[i]);
        cr_assert_eq(system(path), 0);
        snprintf(path, sizeof path, "%s/nats.conf", c->dir[i]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fprintf(f,
                "server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: \"%s/store\" }\n",
                i + 1, c->port[i], c->dir[i]);
        if (n > 1) {
            fprintf(f, "cluster {\n  name: tsync\n  listen: 127.0.0.1:%d\n  routes: [",
                    c->route[i]);
            for (int k = 0; k < n; k++)
                fprintf(f, "%snats-route://127.0.0.1:%d", k ? ", " : "", c->route[k]);
            fprintf(f, "]\n}\n");
        }
        fclose(f);
        snprintf(log, sizeof log, "%s/nats.log", c->dir[i]);
        const char *argv[] = {server, "-c", path, NULL};
        c->pid[i] = nu_spawn(argv, log);
    }
    /* Ready: every server listens; a cluster has a JetStream metadata leader (any node says) that
     * can place a stream on every node. */
    int64_t end = nu_now_ms() + 20000;
    for (;;) {
        int ready = 0, leader = n == 1;
        for (int i = 0; i < n; i++) {
            char log[600];
            snprintf(log, sizeof log, "%s/nats.log", c->dir[i]);
            ready += log_has(log, "Server is ready");
            leader = leader || log_has(log, "JetStream cluster new metadata leader") ||
                     log_has(log, "Self is new JetStream cluster metadata leader");
        }
        if (ready == n && leader && (n == 1 || places(c->port[0], n))) return;
        cr_assert_lt(nu_now_ms(), end, "nats-server not ready in 20 s (%s/nats.log)", c->dir[0]);
        nu_sleep_ms(100);
    }
}

void ns_kill(ns_cluster *c, int i)
{
    if (c->pid[i] > 0) nu_kill(c->pid[i], SIGKILL, 10000);
    c->pid[i] = 0;
}

void ns_stop(ns_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->pid[i] > 0) {
            nu_kill(c->pid[i], SIGTERM, 10000);
            c->pid[i] = 0;
        }
}
