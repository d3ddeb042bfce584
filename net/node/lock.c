/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/lock.c — one node per database: tsync_node_new takes flock(2) on "<db>.node.lock"
 * before it opens anything, and a second node on the same file (another process, or the same
 * one) is refused with TSYNC_EBUSY and a message naming the running one's pid and address.
 *
 * Design notes:
 * - flock, not the pid in the status file: the kernel drops the lock when the holder closes it or
 *   dies, however it dies (no stale lock after a crash or kill -9), a pid the system gave to
 *   another process holds nothing, and a second node is refused before it writes anything (the
 *   first one's status file stays). flock locks belong to the open file, so two nodes in one
 *   process exclude each other too.
 * - The holder writes {"pid": N} at once and {"pid": N, "listen": ADDR} once it listens, so that
 *   the refusal (and `tillsync status`, which probes the same lock with a shared non-blocking
 *   flock) can name it. The text is best effort: the lock is the flock. `tillsync run` adds its
 *   start notes to the same object (tools/node_service.c).
 * - The file is opened O_CLOEXEC: a program the app execs does not hold the node's lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "node_int.h"

static void lock_write(int fd, const char *listen)
{
    json_t *o = json_pack("{s:I}", "pid", (json_int_t)getpid());
    if (o && listen) json_object_set_new(o, "listen", json_string(listen));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) return;
    if (ftruncate(fd, 0) == 0 && pwrite(fd, s, strlen(s), 0) < 0) {
        /* best effort: the flock is the lock, the text only names its holder */
    }
    free(s);
}

/* "pid 4242, listening on tcp://..." from the holder's text, or "still starting". */
static void lock_holder(int fd, char *who, size_t len)
{
    char buf[8192];
    ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
    buf[k > 0 ? k : 0] = 0;
    json_t *o = k > 0 ? json_loads(buf, 0, NULL) : NULL;
    json_t *pid = json_object_get(o, "pid");
    const char *listen = json_string_value(json_object_get(o, "listen"));
    if (json_is_integer(pid))
        snprintf(who, len, "pid %lld, %s%s", (long long)json_integer_value(pid),
                 listen ? "listening on " : "still starting", listen ? listen : "");
    else
        snprintf(who, len, "still starting");
    json_decref(o);
}

int tsync__node_lock(tsync_node *n)
{
    n->lock_fd = -1;
    size_t len = strlen(n->db_path) + sizeof ".node.lock";
    char *path = malloc(len);
    if (!path) return TSYNC_ENOMEM;
    snprintf(path, len, "%s.node.lock", n->db_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = tsync__err(TSYNC_EIO, "cannot open the lock file %s: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno, rc;
        if (e == EWOULDBLOCK) {
            char who[TSYNC__TP_ADDR_LEN + 64];
            lock_holder(fd, who, sizeof who);
            rc = tsync__err(TSYNC_EBUSY,
                            "a node already runs on %s (%s): one node per database; stop it first",
                            n->db_path, who);
        } else {
            rc = tsync__err(TSYNC_EIO, "cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        free(path);
        return rc;
    }
    free(path);
    lock_write(fd, NULL);
    n->lock_fd = fd;
    return 0;
}

void tsync__node_lock_listening(tsync_node *n)
{
    if (n->lock_fd >= 0) lock_write(n->lock_fd, n->endpoint[0] ? n->endpoint : "(not listening)");
}

void tsync__node_unlock(tsync_node *n)
{
    if (n->lock_fd >= 0) close(n->lock_fd); /* closing drops the flock */
    n->lock_fd = -1;
}
