/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/cloud.c — scheduled cloud backups of a running node (tsync_node_options
 * cloud_backup_every_ms, cloud_keep; tillsync/vault.h): when one is due, a worker thread makes
 * the backup with its own connection, uploads it to the shop's relay vault and keeps the newest
 * cloud_keep of this till's there, while the node's loop goes on syncing; the loop only starts
 * the thread and, once it finished, takes its result (joined then: it is already over). The
 * last attempt's time, result and error are in the status ("cloud_backup"), and a failure is a
 * node error as for a local scheduled backup. A stop ends an upload between chunks: it stays
 * pending, and the next backup (this run or the next) finishes it first.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "node_int.h"
#include "tillsync/vault.h"

static void *cloud_main(void *arg)
{
    tsync_node *n = arg;
    tsync_vault_options o = TSYNC_VAULT_OPTIONS_INIT;
    o.key_path = n->key_path;
    o.stop = &n->cloud.stop;
    tsync_vault_report r = TSYNC_VAULT_REPORT_INIT;
    int rc = tsync_vault_backup(n->db_path, &o, &r);
    uint32_t deleted = 0;
    if (!rc && r.complete && n->o.cloud_keep > 0 && !n->cloud.stop)
        rc = tsync_vault_keep(n->db_path, (uint32_t)n->o.cloud_keep, &o, &deleted);
    n->cloud.w.err[0] = 0;
    if (rc) snprintf(n->cloud.w.err, sizeof n->cloud.w.err, "%s", tsync__node_errtext());
    snprintf(n->cloud.w.id, sizeof n->cloud.w.id, "%s", r.backup.id);
    snprintf(n->cloud.w.relay, sizeof n->cloud.w.relay, "%s", r.relay);
    n->cloud.w.complete = r.complete;
    n->cloud.w.deleted = deleted;
    n->cloud.w.rc = rc;
    atomic_store(&n->cloud.state, 2);
    return NULL;
}

void tsync__node_cloud_tick(tsync_node *n, uint64_t now)
{
    if (!n->o.cloud_backup_every_ms) return;
    int st = atomic_load(&n->cloud.state);
    if (st == 2) {
        pthread_join(n->cloud.thread, NULL);
        atomic_store(&n->cloud.state, 0);
        n->cloud.rc = n->cloud.w.rc;
        n->cloud.complete = n->cloud.w.complete;
        n->cloud.deleted += n->cloud.w.deleted;
        memcpy(n->cloud.err, n->cloud.w.err, sizeof n->cloud.err);
        memcpy(n->cloud.id, n->cloud.w.id, sizeof n->cloud.id);
        memcpy(n->cloud.relay, n->cloud.w.relay, sizeof n->cloud.relay);
        n->cloud.last_ms = tsync__wall_ms();
        if (n->cloud.rc) {
            tsync__node_error(n, n->cloud.rc, "cloud backup failed: %s", n->cloud.err);
            n->cloud.failed++;
        } else if (n->cloud.complete) {
            tsync__node_log(n, TSYNC_LOG_INFO, "cloud backup %s stored at %s", n->cloud.id,
                            n->cloud.relay);
            n->cloud.done++;
            n->cloud.last_ok_ms = n->cloud.last_ms;
        } else {
            tsync__node_log(n, TSYNC_LOG_INFO, "cloud backup %s stopped, pending", n->cloud.id);
        }
        n->status_dirty = 1;
        return;
    }
    if (st != 0) return;
    if (!n->cloud.next_mono) {
        /* The first a minute after start (sooner for a shorter period), then every period. */
        uint64_t every = n->o.cloud_backup_every_ms;
        n->cloud.next_mono = now + (every < 60000 ? every : 60000);
        return;
    }
    if (now < n->cloud.next_mono) return;
    n->cloud.next_mono = now + n->o.cloud_backup_every_ms;
    atomic_store(&n->cloud.state, 1);
    n->status_dirty = 1;
    if (pthread_create(&n->cloud.thread, NULL, cloud_main, n) != 0) {
        atomic_store(&n->cloud.state, 0);
        tsync__node_error(n, TSYNC_ERROR, "cannot start the cloud backup thread");
    }
}

void tsync__node_cloud_finish(tsync_node *n)
{
    if (atomic_load(&n->cloud.state) == 0) return;
    n->cloud.stop = 1;
    pthread_join(n->cloud.thread, NULL);
    atomic_store(&n->cloud.state, 2);
    tsync__node_cloud_tick(n, tsync__mono_ms());
}

static json_t *ms_or_null(uint64_t ms)
{
    return ms ? json_integer((json_int_t)ms) : json_null();
}

void tsync__node_cloud_status(tsync_node *n, json_t *o)
{
    if (!n->o.cloud_backup_every_ms) return;
    json_t *c = json_object();
    int running = atomic_load(&n->cloud.state) == 1;
    const char *last = !n->cloud.last_ms   ? NULL
                       : n->cloud.rc       ? "failed"
                       : n->cloud.complete ? "ok"
                                           : "pending";
    json_object_set_new(c, "every_ms", json_integer((json_int_t)n->o.cloud_backup_every_ms));
    json_object_set_new(c, "keep", json_integer(n->o.cloud_keep));
    json_object_set_new(c, "running", json_boolean(running));
    json_object_set_new(c, "done", json_integer((json_int_t)n->cloud.done));
    json_object_set_new(c, "failed", json_integer((json_int_t)n->cloud.failed));
    json_object_set_new(c, "deleted", json_integer((json_int_t)n->cloud.deleted));
    json_object_set_new(c, "last_ms", ms_or_null(n->cloud.last_ms));
    json_object_set_new(c, "last_ok_ms", ms_or_null(n->cloud.last_ok_ms));
    json_object_set_new(c, "last_result", last ? json_string(last) : json_null());
    json_object_set_new(c, "last_error",
                        n->cloud.rc && n->cloud.err[0] ? json_string(n->cloud.err) : json_null());
    json_object_set_new(c, "last_id", n->cloud.id[0] ? json_string(n->cloud.id) : json_null());
    json_object_set_new(c, "relay", n->cloud.relay[0] ? json_string(n->cloud.relay) : json_null());
    json_object_set_new(o, "cloud_backup", c);
}
