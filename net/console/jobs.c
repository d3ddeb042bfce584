/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/console/jobs.c — the console's backups (tillsync/backup.h): the list of the node's backup
 * folder (this database's files, sizes, times, and whether each verifies: tsync_backup_check,
 * remembered per file so a listing checks only new files), and "back up now" as a job on a thread
 * of its own with its own store, named as the node names its scheduled backups (so its rotation
 * keeps them too), checked once written; its progress is GET /api/backups/jobs/{id}. One file
 * the list shows can be downloaded (streamed from its descriptor) or checked again on demand;
 * any other name, a path or a link is "no backup" (404).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "console_int.h"
#include "tillsync/backup.h"

enum { JOB_NONE, JOB_RUNNING, JOB_DONE, JOB_FAILED };
#define PHASE_CHECK 5

static const char *errtext(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

/* A file of this database's backups: "<db name>-<time>.tsbak". */
static int is_ours(tsync__console *co, const char *name)
{
    size_t pl = strlen(co->prefix), l = strlen(name);
    return strncmp(name, co->prefix, pl) == 0 && l > pl + 6 && strcmp(name + l - 6, ".tsbak") == 0;
}

static int cmp_desc(const void *a, const void *b)
{
    return strcmp(*(char *const *)b, *(char *const *)a);
}

/* This database's backups in the folder, newest first (names sort by time); caller frees. */
static char **list_ours(tsync__console *co, size_t *n)
{
    *n = 0;
    DIR *d = opendir(co->backup_dir);
    if (!d) return NULL;
    char **names = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_ours(co, e->d_name)) continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) break;
            names = nn, cap = nc;
        }
        if ((names[*n] = strdup(e->d_name))) (*n)++;
    }
    closedir(d);
    if (*n) qsort(names, *n, sizeof *names, cmp_desc);
    return names;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Remembers a check's result for a file as it is (name, size, time). With job_mu held. */
static void remember(tsync__console *co, const char *name, const struct stat *sb, int ok,
                     const char *why)
{
    console_checked *slot = NULL;
    for (size_t i = 0; i < co->nchecked && !slot; i++)
        if (strcmp(co->checked[i].name, name) == 0) slot = &co->checked[i];
    if (!slot) {
        if (co->nchecked == CONSOLE_VERIFIED) { /* forget the oldest */
            memmove(&co->checked[0], &co->checked[1], (CONSOLE_VERIFIED - 1) * sizeof *slot);
            co->nchecked--;
        }
        slot = &co->checked[co->nchecked++];
    }
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->size = sb->st_size;
    slot->mtime = sb->st_mtime;
    slot->ok = ok;
    snprintf(slot->why, sizeof slot->why, "%s", why ? why : "");
}

/* 1 verified, 0 not (why), -1 not known: encrypted (the console has no passphrase). */
static int verified(tsync__console *co, const char *name, const char *path, const struct stat *sb,
                    int encrypted, char *why, size_t len)
{
    why[0] = 0;
    pthread_mutex_lock(&co->job_mu);
    for (size_t i = 0; i < co->nchecked; i++) {
        const console_checked *k = &co->checked[i];
        if (strcmp(k->name, name) == 0 && k->size == sb->st_size && k->mtime == sb->st_mtime) {
            snprintf(why, len, "%s", k->why);
            pthread_mutex_unlock(&co->job_mu);
            return k->ok;
        }
    }
    pthread_mutex_unlock(&co->job_mu);
    if (encrypted) return -1;
    int rc = tsync_backup_check(path, NULL, NULL);
    if (rc) snprintf(why, len, "%s", errtext());
    pthread_mutex_lock(&co->job_mu);
    remember(co, name, sb, rc == 0, why);
    pthread_mutex_unlock(&co->job_mu);
    return rc == 0;
}

static json_t *job_json(tsync__console *co)
{
    static const char *const STATE[] = {"none", "running", "done", "failed"};
    static const char *const PHASE[] = {"", "copy", "write", "read", "restore", "check"};
    console_job *j = &co->job;
    if (!j->id) return json_null();
    int st = atomic_load(&j->state), ph = atomic_load(&j->phase);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)j->id));
    json_object_set_new(o, "state", json_string(STATE[st]));
    json_object_set_new(o, "phase", json_string(ph >= 0 && ph <= 5 ? PHASE[ph] : ""));
    json_object_set_new(o, "done", json_integer((json_int_t)atomic_load(&j->done)));
    json_object_set_new(o, "total", json_integer((json_int_t)atomic_load(&j->total)));
    const char *base = strrchr(j->file, '/');
    json_object_set_new(o, "file", json_string(base ? base + 1 : j->file));
    json_object_set_new(o, "error", st == JOB_FAILED ? json_string(j->err) : json_null());
    return o;
}

enum MHD_Result tsync__console_backups_get(tsync__console *co, struct MHD_Connection *c)
{
    json_t *o = json_object();
    json_t *arr = json_array();
    json_object_set_new(o, "dir", co->backup_dir ? json_string(co->backup_dir) : json_null());
    size_t n = 0;
    char **names = co->backup_dir ? list_ours(co, &n) : NULL;
    for (size_t i = 0; i < n; i++) {
        char path[4096], why[256];
        snprintf(path, sizeof path, "%s/%s", co->backup_dir, names[i]);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue; /* no links: see listed() */
        int enc = 0;
        if (tsync_backup_encrypted(&enc, path) != 0) enc = 0;
        int v = verified(co, names[i], path, &sb, enc, why, sizeof why);
        json_t *e = json_object();
        json_object_set_new(e, "file", json_string(names[i]));
        json_object_set_new(e, "bytes", json_integer((json_int_t)sb.st_size));
        json_object_set_new(
            e, "modified_ms",
            json_integer((json_int_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000));
        json_object_set_new(e, "encrypted", json_boolean(enc));
        json_object_set_new(e, "verified", v < 0 ? json_null() : json_boolean(v));
        if (v == 0) json_object_set_new(e, "problem", json_string(why));
        json_array_append_new(arr, e);
    }
    free_list(names, n);
    json_object_set_new(o, "backups", arr);
    pthread_mutex_lock(&co->job_mu);
    json_object_set_new(o, "job", job_json(co));
    pthread_mutex_unlock(&co->job_mu);
    return tsync__console_jsonj(c, 200, o);
}

int64_t tsync__console_last_backup_ms(tsync__console *co)
{
    if (!co->backup_dir) return 0;
    size_t n = 0;
    char **names = list_ours(co, &n);
    int64_t last = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", co->backup_dir, names[i]);
        struct stat sb;
        if (stat(path, &sb) == 0) {
            int64_t t = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
            if (t > last) last = t;
        }
    }
    free_list(names, n);
    return last;
}

static void on_progress(void *ctx, tsync_backup_phase phase, uint64_t done, uint64_t total)
{
    console_job *j = ctx;
    atomic_store(&j->phase, (int)phase);
    atomic_store(&j->done, done);
    atomic_store(&j->total, total);
}

static void *job_main(void *arg)
{
    tsync__console *co = arg;
    console_job *j = &co->job;
    tsync_store *s = NULL;
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.key_path = co->key_path;
    tsync_backup_options bo = TSYNC_BACKUP_OPTIONS_INIT;
    bo.progress = on_progress;
    bo.progress_ctx = j;
    int rc = tsync_store_open(&s, co->db_path, &so);
    if (rc == 0) rc = tsync_backup(s, j->file, &bo, NULL);
    tsync_store_free(s);
    if (rc == 0) {
        atomic_store(&j->phase, PHASE_CHECK);
        rc = tsync_backup_check(j->file, NULL, NULL);
    }
    pthread_mutex_lock(&co->job_mu);
    if (rc) snprintf(j->err, sizeof j->err, "%s", errtext());
    struct stat sb;
    const char *base = strrchr(j->file, '/');
    if (stat(j->file, &sb) == 0) remember(co, base ? base + 1 : j->file, &sb, rc == 0, j->err);
    atomic_store(&j->state, rc ? JOB_FAILED : JOB_DONE);
    pthread_mutex_unlock(&co->job_mu);
    return NULL;
}

enum MHD_Result tsync__console_backups_post(tsync__console *co, struct MHD_Connection *c)
{
    if (!co->backup_dir)
        return tsync__console_error(c, 409, "the node has no backup folder (--backup-dir)");
    pthread_mutex_lock(&co->job_mu);
    console_job *j = &co->job;
    if (atomic_load(&j->state) == JOB_RUNNING) {
        uint64_t id = j->id;
        pthread_mutex_unlock(&co->job_mu);
        return tsync__console_error(c, 409, "backup job %llu is still running",
                                    (unsigned long long)id);
    }
    if (j->id && !j->joined) pthread_join(j->thread, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(j->file, sizeof j->file, "%s/%s%04d%02d%02dT%02d%02d%02d.%03uZ.tsbak", co->backup_dir,
             co->prefix, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, (unsigned)(ts.tv_nsec / 1000000));
    j->id++;
    j->err[0] = 0;
    j->joined = 0;
    atomic_store(&j->phase, 0);
    atomic_store(&j->done, 0);
    atomic_store(&j->total, 0);
    atomic_store(&j->state, JOB_RUNNING);
    if (pthread_create(&j->thread, NULL, job_main, co) != 0) {
        atomic_store(&j->state, JOB_FAILED);
        snprintf(j->err, sizeof j->err, "cannot start the backup thread");
        j->joined = 1;
        pthread_mutex_unlock(&co->job_mu);
        return tsync__console_error(c, 500, "cannot start the backup thread");
    }
    json_t *o = job_json(co);
    pthread_mutex_unlock(&co->job_mu);
    return tsync__console_jsonj(c, 202, o);
}

enum MHD_Result tsync__console_job_get(tsync__console *co, struct MHD_Connection *c, const char *id)
{
    char *end = NULL;
    errno = 0;
    unsigned long long want = strtoull(id, &end, 10);
    if (!id[0] || *end || errno || id[0] == '-' || id[0] == '+')
        return tsync__console_error(c, 400, "job id: a number");
    pthread_mutex_lock(&co->job_mu);
    json_t *o = co->job.id == want && want ? job_json(co) : NULL;
    pthread_mutex_unlock(&co->job_mu);
    if (!o) return tsync__console_error(c, 404, "no backup job %llu", want);
    return tsync__console_jsonj(c, 200, o);
}

void tsync__console_jobs_stop(tsync__console *co)
{
    pthread_mutex_lock(&co->job_mu);
    int join = co->job.id && !co->job.joined;
    co->job.joined = 1;
    pthread_mutex_unlock(&co->job_mu);
    if (join) pthread_join(co->job.thread, NULL); /* a backup in progress completes first */
}

/* ---------------------------------------------------------------- one backup file */

/* A name the backups list shows: one of this database's files (no separator, no "..": a name
 * in the folder, never a path), a regular file there (not a link). Fills path; 0 when not. */
static int listed(tsync__console *co, const char *name, char *path, size_t len, struct stat *sb)
{
    if (!co->backup_dir || !name || strchr(name, '/') || strchr(name, '\\') || strstr(name, "..") ||
        !is_ours(co, name))
        return 0;
    size_t n = 0;
    char **names = list_ours(co, &n);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) found = strcmp(names[i], name) == 0;
    free_list(names, n);
    if (!found || (size_t)snprintf(path, len, "%s/%s", co->backup_dir, name) >= len) return 0;
    return lstat(path, sb) == 0 && S_ISREG(sb->st_mode);
}

enum MHD_Result tsync__console_backup_download(tsync__console *co, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"file", NULL};
    enum MHD_Result ret;
    if (!tsync__console_params_ok(c, allowed, &ret)) return ret;
    const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "file");
    if (!name || !name[0]) return tsync__console_error(c, 400, "file: give a backup's name");
    char path[4096];
    struct stat sb;
    if (!listed(co, name, path, sizeof path, &sb))
        return tsync__console_error(c, 404, "no backup %.200s", name);
    /* O_NOFOLLOW: the file checked above is the file sent, even if it was swapped for a link. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        if (fd >= 0) close(fd);
        return tsync__console_error(c, 404, "backup %.200s: %s", name, strerror(e));
    }
    struct MHD_Response *r = MHD_create_response_from_fd((size_t)sb.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    char disp[400];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", name);
    tsync__console_headers(r);
    MHD_add_response_header(r, "Content-Type", "application/octet-stream");
    MHD_add_response_header(r, "Content-Disposition", disp);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result tsync__console_backup_verify(tsync__console *co, struct MHD_Connection *c,
                                             const char *body, size_t len)
{
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    const char *name = json_string_value(json_object_get(root, "file"));
    if (json_object_size(root) != 1 || !name || !name[0]) {
        json_decref(root);
        return tsync__console_error(c, 400, "give {\"file\":NAME} (a name GET /api/backups shows)");
    }
    char path[4096];
    struct stat sb;
    if (!listed(co, name, path, sizeof path, &sb)) {
        enum MHD_Result ret = tsync__console_error(c, 404, "no backup %.200s", name);
        json_decref(root);
        return ret;
    }
    /* Checked afresh, and remembered for the listing; an encrypted file cannot be checked here
     * (the console has no passphrase) and stays "not known" in the listing. */
    int enc = 0;
    char why[256] = "";
    int rc = tsync_backup_encrypted(&enc, path);
    if (rc == 0 && enc) {
        rc = TSYNC_EINVAL;
        snprintf(why, sizeof why,
                 "the backup is encrypted: check it with `tillsync backup-check FILE "
                 "--passphrase-file F`");
    } else {
        if (rc == 0) rc = tsync_backup_check(path, NULL, NULL);
        if (rc) snprintf(why, sizeof why, "%s", errtext());
        pthread_mutex_lock(&co->job_mu);
        remember(co, name, &sb, rc == 0, why);
        pthread_mutex_unlock(&co->job_mu);
    }
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(name));
    json_object_set_new(o, "ok", json_boolean(rc == 0));
    if (rc) json_object_set_new(o, "error", json_string(why));
    json_decref(root);
    return tsync__console_jsonj(c, 200, o);
}
