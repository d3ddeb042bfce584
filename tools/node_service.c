/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/node_service.c — `tillsync run` as a service: one node per database (a lock file), the
 * systemd protocol (sd_notify readiness once the node listens, a watchdog fed by the node's own
 * loop), log lines journald files at their priority, and the optional config file. packaging/
 * systemd/tillsync@.service runs it; docs/NODE.md, "Running as a service".
 *
 * Design notes:
 * - The lock is the library's: tsync_node_new takes flock(2) on "<db>.node.lock" and refuses a
 *   second node with TSYNC_EBUSY naming the running one (net/node/lock.c says why flock), so a
 *   node an app embeds is one node per database too. Here only `status` probes it, and `run`
 *   adds its start notes to the text the node wrote there.
 * - Readiness is sent after tsync_node_new, which binds the listening socket: a unit ordered
 *   after tillsync@X can dial it at once.
 * - The watchdog thread does not prove much by itself being alive: it pings only while the
 *   node's loop keeps rebuilding its status (about once a second), so a loop stuck on a lock or
 *   a disk gets the unit restarted.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef TSYNC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif
#ifdef TSYNC_HAVE_INIH
#include <ini.h>
#endif

#include "cli.h"
#include "node_service.h"

int cli_journal;

/* ---------------------------------------------------------------- one node per database */

static char *lock_path(const char *db)
{
    size_t len = strlen(db) + sizeof ".node.lock";
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s.node.lock", db);
    return p;
}

/* The holder's pid and address from the lock file (a JSON object), when it wrote them; its
 * notes into *notes when notes is not NULL. */
static void lock_read(int fd, long long *pid, char *listen, size_t len, json_t **notes)
{
    *pid = 0;
    listen[0] = 0;
    char buf[8192];
    ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
    if (k <= 0) return;
    buf[k] = 0;
    json_t *o = json_loads(buf, 0, NULL);
    if (json_is_integer(json_object_get(o, "pid")))
        *pid = (long long)json_integer_value(json_object_get(o, "pid"));
    const char *l = json_string_value(json_object_get(o, "listen"));
    if (l) snprintf(listen, len, "%s", l);
    if (notes) *notes = json_incref(json_object_get(o, "notes"));
    json_decref(o);
}

void svc_lock_notes(const char *db, const char *endpoint, json_t *notes)
{
    if (!json_array_size(notes)) return;
    char *path = lock_path(db);
    /* Another descriptor of the file the node locked: writing takes no lock, and closing it
     * leaves the node's flock (it belongs to the node's own open file) in place. */
    int fd = path ? open(path, O_WRONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0) return;
    json_t *o = json_pack("{s:I}", "pid", (json_int_t)getpid());
    json_object_set_new(o, "listen",
                        json_string(endpoint && endpoint[0] ? endpoint : "(not listening)"));
    json_object_set(o, "notes", notes);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    /* Best effort, as the node's own text: the lock itself is the flock. */
    if (s && ftruncate(fd, 0) == 0 && pwrite(fd, s, strlen(s), 0) < 0) {
    }
    free(s);
    close(fd);
}

int svc_lock_probe(const char *db, long long *pid, char *listen, size_t len, json_t **notes)
{
    *notes = NULL;
    *pid = 0;
    listen[0] = 0;
    char *path = lock_path(db);
    if (!path) return -1;
    /* Read-only and shared: status works on a read-only file system and never blocks a node. */
    int f = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (f < 0) return -1;
    int held = flock(f, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (held) lock_read(f, pid, listen, len, notes);
    close(f);
    return held;
}

/* ---------------------------------------------------------------- journald */

int svc_journal_detect(void)
{
    /* systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to stderr;
     * a shell started from the unit inherits the variable with another stderr: compare both. */
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0) return 0;
    cli_journal = (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return cli_journal;
}

void svc_log(void *ctx, int level, const char *line)
{
    (void)ctx;
    /* sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG, spelled out for builds without it. */
    static const char pri[] = {'6', '3', '4', '6', '7'};
    fprintf(stderr, "<%c>%s\n", pri[level >= 1 && level <= 4 ? level : 0], line);
}

/* ---------------------------------------------------------------- sd_notify and the watchdog */

void svc_ready(const char *endpoint)
{
#ifdef TSYNC_HAVE_SYSTEMD
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%lu",
               endpoint && endpoint[0] ? endpoint : "nothing (dial only)", (unsigned long)getpid());
#else
    (void)endpoint;
#endif
}

void svc_stopping(void)
{
#ifdef TSYNC_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
}

static struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, stop;
    tsync_node *node;
    uint64_t period_us;
} wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

#ifdef TSYNC_HAVE_SYSTEMD
/* The node's status timestamp: it changes each time the node's loop rebuilds its status. */
static long long status_stamp(tsync_node *n)
{
    char *js = NULL;
    if (tsync_node_status_json(&js, n) != 0 || !js) return -1;
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    long long t = (long long)json_integer_value(json_object_get(o, "updated_ms"));
    json_decref(o);
    return t;
}

static void *wd_main(void *arg)
{
    (void)arg;
    long long last = -1;
    int stale = 0;
    pthread_mutex_lock(&wd.mu);
    while (!wd.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + wd.period_us * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&wd.cv, &wd.mu, &ts);
        if (wd.stop) break;
        long long t = status_stamp(wd.node);
        /* One check without a new status is allowed (the node rebuilds it about once a second,
         * the period may be shorter); two in a row and systemd gets no ping. */
        stale = t == last ? stale + 1 : 0;
        last = t;
        if (stale < 2) sd_notify(0, "WATCHDOG=1");
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}
#endif

int svc_watchdog_start(tsync_node *n)
{
#ifdef TSYNC_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return 0;
    wd.node = n;
    wd.stop = 0;
    wd.period_us = usec / 4 > 500000 ? usec / 4 : 500000;
    if (pthread_create(&wd.thread, NULL, wd_main, NULL) != 0) return -1;
    wd.running = 1;
#else
    (void)n;
#endif
    return 0;
}

void svc_watchdog_stop(void)
{
    if (!wd.running) return;
    pthread_mutex_lock(&wd.mu);
    wd.stop = 1;
    pthread_cond_signal(&wd.cv);
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd.thread, NULL);
    wd.running = 0;
}

/* ---------------------------------------------------------------- the config file */

#ifdef TSYNC_HAVE_INIH
typedef struct {
    const char *path;
    const struct option *longopts;
    char ***args;
    int *nargs;
    char err[512];
} cfg_ctx;

static int cfg_push(cfg_ctx *c, char *a)
{
    char **na = a ? realloc(*c->args, (size_t)(*c->nargs + 2) * sizeof *na) : NULL;
    if (!na) {
        free(a);
        snprintf(c->err, sizeof c->err, "out of memory");
        return 0;
    }
    na[(*c->nargs)++] = a;
    na[*c->nargs] = NULL;
    *c->args = na;
    return 1;
}

static int cfg_entry(void *user, const char *section, const char *name, const char *value)
{
    cfg_ctx *c = user;
    if (section[0] && strcmp(section, "run") != 0) {
        snprintf(c->err, sizeof c->err, "section [%.100s]: the settings go at the top or in [run]",
                 section);
        return 0;
    }
    const struct option *o = c->longopts;
    while (o->name && strcmp(o->name, name) != 0) o++;
    if (!o->name || !strcmp(name, "config") || !strcmp(name, "help")) {
        snprintf(c->err, sizeof c->err,
                 "unknown setting '%.100s' (the settings are the long options of 'tillsync run "
                 "--help', without the dashes)",
                 name);
        return 0;
    }
    if (o->has_arg == no_argument) {
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1") ||
            !strcmp(value, "on")) {
            size_t len = strlen(name) + 3;
            char *a = malloc(len);
            if (a) snprintf(a, len, "--%s", name);
            return cfg_push(c, a);
        }
        if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "0") ||
            !strcmp(value, "off"))
            return 1;
        snprintf(c->err, sizeof c->err, "%.100s is true or false, not '%.100s'", name, value);
        return 0;
    }
    /* inih keeps quotes: "" is the empty value (listen = "" for dial only), "x" is x. */
    size_t vl = strlen(value);
    int quoted = vl >= 2 && value[0] == '"' && value[vl - 1] == '"';
    size_t len = strlen(name) + vl + 4;
    char *a = malloc(len);
    if (a)
        snprintf(a, len, "--%s=%.*s", name, (int)(quoted ? vl - 2 : vl), value + (quoted ? 1 : 0));
    return cfg_push(c, a);
}
#endif

int svc_config_args(const char *path, const struct option *longopts, char ***args, int *nargs)
{
#ifdef TSYNC_HAVE_INIH
    cfg_ctx c = {path, longopts, args, nargs, ""};
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "tillsync: run: cannot open the config file %s: %s\n", path,
                strerror(errno));
        return 1;
    }
    int line = ini_parse_file(f, cfg_entry, &c);
    fclose(f);
    if (line != 0) {
        fprintf(stderr, "tillsync: run: %s:%d: %s\n", path, line,
                c.err[0] ? c.err : "not a 'name = value' line");
        return 1;
    }
    return 0;
#else
    (void)longopts, (void)args, (void)nargs;
    fprintf(stderr, "tillsync: run: --config %s: this tillsync was built without inih\n", path);
    return 2;
#endif
}
