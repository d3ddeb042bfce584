/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/console/api.c — the console's endpoints (docs/CONSOLE.md), each on the public API: the
 * node's status (tsync_node_status_json) and its event stream, the conflict journal (list,
 * resolve, dismiss: tillsync/conflicts.h), schema, export and import (tillsync/io.h) on the
 * console's own store, and /metrics in the Prometheus text format. Backups are in jobs.c.
 */
#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "console_int.h"
#include "tillsync/conflicts.h"
#include "tillsync/io.h"
#include "tillsync/migrate.h"
#include "tillsync/schema.h"
#include "www.h"

static const char *const NO_PARAMS[] = {NULL};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *errtext(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

/* A library error as an HTTP status: what the caller got wrong is a 4xx, the rest a 5xx. */
static unsigned http_status(int rc)
{
    switch (rc) {
    case TSYNC_ENOTFOUND:
        return 404;
    case TSYNC_EINVAL:
    case TSYNC_ECORRUPT:
        return 400;
    case TSYNC_EREFUSED:
        return 422;
    case TSYNC_EBUSY:
        return 503;
    default:
        return 500;
    }
}

/* ---------------------------------------------------------------- status and events */

static enum MHD_Result status_get(tsync__console *co, struct MHD_Connection *c)
{
    char *js = NULL;
    if (tsync_node_status_json(&js, co->node) != 0 || !js)
        return tsync__console_error(c, 503, "the node has no status yet");
    enum MHD_Result ret = tsync__console_json(c, 200, js);
    tsync_free(js);
    return ret;
}

/* The status as one line of compact JSON, and the same without updated_ms (what "changed"
 * compares: the node rewrites that stamp every second even when nothing else moved). */
static char *status_line(tsync__console *co, char **cmp)
{
    char *js = NULL;
    *cmp = NULL;
    if (tsync_node_status_json(&js, co->node) != 0 || !js) return NULL;
    json_t *o = json_loads(js, 0, NULL);
    tsync_free(js);
    if (!o) return NULL;
    char *line = json_dumps(o, JSON_COMPACT);
    json_object_del(o, "updated_ms");
    *cmp = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return line;
}

#define SSE_POLL_MS      200
#define SSE_MIN_GAP_MS   1000
#define SSE_KEEPALIVE_MS 15000

typedef struct {
    tsync__console *co;
    char *last;    /* the status last sent (as compared) */
    char *pending; /* bytes not yet handed to MHD */
    size_t plen, poff;
    uint64_t sent_mono, alive_mono;
} sse;

/* MHD asks for more of the stream on this connection's own thread: waiting here holds up no
 * other request and never the node (which only publishes its status under a short lock). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse *e = cls;
    for (;;) {
        if (e->poff < e->plen) {
            size_t n = e->plen - e->poff < max ? e->plen - e->poff : max;
            memcpy(buf, e->pending + e->poff, n);
            e->poff += n;
            return (ssize_t)n;
        }
        if (atomic_load(&e->co->stopping)) return MHD_CONTENT_READER_END_OF_STREAM;
        uint64_t now = mono_ms();
        free(e->pending);
        e->pending = NULL;
        e->plen = e->poff = 0;
        if (!e->sent_mono || now - e->sent_mono >= SSE_MIN_GAP_MS) {
            char *cmp = NULL;
            char *line = status_line(e->co, &cmp);
            if (line && cmp && (!e->last || strcmp(cmp, e->last) != 0)) {
                size_t len = strlen(line) + 32;
                if ((e->pending = malloc(len))) {
                    e->plen =
                        (size_t)snprintf(e->pending, len, "event: status\ndata: %s\n\n", line);
                    free(e->last);
                    e->last = cmp;
                    cmp = NULL;
                    e->sent_mono = e->alive_mono = now;
                }
            }
            free(line);
            free(cmp);
            if (e->plen) continue;
        }
        if (now - e->alive_mono >= SSE_KEEPALIVE_MS) {
            e->pending = strdup(": keep-alive\n\n");
            e->plen = e->pending ? strlen(e->pending) : 0;
            e->alive_mono = now;
            if (e->plen) continue;
        }
        usleep(SSE_POLL_MS * 1000);
    }
}

static void sse_free(void *cls)
{
    sse *e = cls;
    free(e->last);
    free(e->pending);
    free(e);
}

static enum MHD_Result events_get(tsync__console *co, struct MHD_Connection *c)
{
    sse *e = calloc(1, sizeof *e);
    if (!e) return MHD_NO;
    e->co = co;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, e, sse_free);
    if (!r) {
        sse_free(e);
        return MHD_NO;
    }
    tsync__console_headers(r);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---------------------------------------------------------------- store reads */

/* Runs fn on the console's store (one request at a time) and replies with its JSON. */
static enum MHD_Result store_json(tsync__console *co, struct MHD_Connection *c,
                                  int (*fn)(char **, tsync_store *))
{
    char why[512] = "";
    char *js = NULL;
    int rc = TSYNC_ERROR;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s && (rc = fn(&js, s)) != 0) snprintf(why, sizeof why, "%s", errtext());
    pthread_mutex_unlock(&co->store_mu);
    if (rc) return tsync__console_error(c, s ? http_status(rc) : 503, "%s", why);
    enum MHD_Result ret = tsync__console_json(c, 200, js);
    tsync_free(js);
    return ret;
}

static int schema_fn(char **out, tsync_store *s)
{
    char *tables = NULL, *migr = NULL;
    int rc = tsync_store_schema_json(&tables, s, NULL);
    if (rc == 0) rc = tsync_store_migrations_json(&migr, s);
    if (rc == 0) {
        json_t *o = json_object();
        json_t *t = json_loads(tables, 0, NULL);
        json_object_set_new(o, "tables", json_incref(json_object_get(t, "tables")));
        json_object_set_new(o, "digest", json_incref(json_object_get(t, "digest")));
        json_object_set_new(o, "migrations", json_loads(migr, 0, NULL));
        json_decref(t);
        *out = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!*out) rc = TSYNC_ENOMEM;
    }
    tsync_free(tables);
    tsync_free(migr);
    return rc;
}

/* ---------------------------------------------------------------- export */

static enum MHD_Result export_get(tsync__console *co, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"table", "format", NULL};
    enum MHD_Result ret;
    if (!tsync__console_params_ok(c, allowed, &ret)) return ret;
    const char *table = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "table");
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    if (!tsync__console_table_ok(table))
        return tsync__console_error(c, 400, "table: give a table name ([A-Za-z_][A-Za-z0-9_]*)");
    int format = fmt ? tsync_io_format_parse(fmt) : TSYNC_IO_CSV;
    if (!format) return tsync__console_error(c, 400, "format: csv, json or ndjson");
    /* Written to an unlinked temporary file, then sent from it: memory does not grow with the
     * table, and the store is held only while the file is written. */
    const char *tmp = getenv("TMPDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tillsync-export-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return tsync__console_error(c, 500, "cannot export: %s", strerror(errno));
    unlink(path);
    int wfd = dup(fd);
    FILE *f = wfd >= 0 ? fdopen(wfd, "w") : NULL;
    if (!f) {
        if (wfd >= 0) close(wfd);
        close(fd);
        return tsync__console_error(c, 500, "cannot export: %s", strerror(errno));
    }
    char why[512] = "";
    tsync_export_options eo = TSYNC_EXPORT_OPTIONS_INIT;
    eo.format = format;
    int rc = TSYNC_ERROR;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s && (rc = tsync_store_export(NULL, s, table, NULL, f, &eo)) != 0)
        snprintf(why, sizeof why, "%s", errtext());
    pthread_mutex_unlock(&co->store_mu);
    if (fclose(f) != 0 && rc == 0) {
        rc = TSYNC_EIO;
        snprintf(why, sizeof why, "cannot export: %s", strerror(errno));
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (rc || size < 0) {
        close(fd);
        return tsync__console_error(c, s ? http_status(rc) : 503, "%s", why);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((size_t)size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    static const char *const TYPE[] = {"", "text/csv; charset=utf-8", "application/json",
                                       "application/x-ndjson"};
    static const char *const EXT[] = {"", "csv", "json", "ndjson"};
    char disp[300];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s.%s\"", table, EXT[format]);
    tsync__console_headers(r);
    MHD_add_response_header(r, "Content-Type", TYPE[format]);
    MHD_add_response_header(r, "Content-Disposition", disp);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---------------------------------------------------------------- import */

typedef struct {
    json_t *bad, *preview;
    size_t nbad;
} import_ctx;

/* "upload:LINE:COLUMN: why" or "upload:LINE: why" (tsync_io_bad_cb) as {line, column, reason}. */
static void on_bad(void *ctx, const char *msg)
{
    import_ctx *ic = ctx;
    if (ic->nbad++ >= CONSOLE_BAD_MAX) return;
    json_t *e = json_object();
    const char *p = strncmp(msg, "upload:", 7) == 0 ? msg + 7 : NULL;
    char *end = NULL;
    unsigned long line = p ? strtoul(p, &end, 10) : 0;
    if (p && end != p && *end == ':') {
        json_object_set_new(e, "line", json_integer((json_int_t)line));
        p = end + 1;
        const char *sep = strstr(p, ": ");
        if (*p != ' ' && sep) {
            json_object_set_new(e, "column", json_stringn(p, (size_t)(sep - p)));
            p = sep + 2;
        } else {
            p += *p == ' ';
        }
        json_object_set_new(e, "reason", json_string(p));
    } else {
        json_object_set_new(e, "reason", json_string(msg));
    }
    json_array_append_new(ic->bad, e);
}

static void on_row(void *ctx, const char *js)
{
    import_ctx *ic = ctx;
    json_t *row = json_loads(js, 0, NULL);
    if (row) json_array_append_new(ic->preview, row);
}

static enum MHD_Result import_post(tsync__console *co, struct MHD_Connection *c, console_req *r)
{
    static const char *const allowed[] = {"table", "format", "dry_run", NULL};
    enum MHD_Result ret;
    if (!tsync__console_params_ok(c, allowed, &ret)) return ret;
    const char *table = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "table");
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    const char *dry = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "dry_run");
    if (!tsync__console_table_ok(table))
        return tsync__console_error(c, 400, "table: give a table name ([A-Za-z_][A-Za-z0-9_]*)");
    int format = fmt ? tsync_io_format_parse(fmt) : TSYNC_IO_CSV;
    if (!format) return tsync__console_error(c, 400, "format: csv, json or ndjson");
    if (dry && strcmp(dry, "0") != 0 && strcmp(dry, "1") != 0)
        return tsync__console_error(c, 400, "dry_run: 0 or 1");
    if (!r->upload || r->len == 0) return tsync__console_error(c, 400, "no file in the body");
    import_ctx ic = {json_array(), json_array(), 0};
    tsync_import_options io = TSYNC_IMPORT_OPTIONS_INIT;
    io.format = format;
    io.name = "upload";
    io.bad = on_bad;
    io.row = on_row;
    io.ctx = &ic;
    io.dry_run = dry && dry[0] == '1';
    tsync_import_report rep = TSYNC_IMPORT_REPORT_INIT;
    char why[512] = "";
    int rc = TSYNC_ERROR;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s && (rc = tsync_store_import(&rep, s, table, r->upload, &io)) != 0)
        snprintf(why, sizeof why, "%s", errtext());
    pthread_mutex_unlock(&co->store_mu);
    if (!s) {
        json_decref(ic.bad);
        json_decref(ic.preview);
        return tsync__console_error(c, 503, "%s", why);
    }
    json_t *o = json_object();
    json_object_set_new(o, "table", json_string(table));
    json_object_set_new(o, "dry_run", json_boolean(io.dry_run));
    json_object_set_new(o, "ok", json_boolean(rc == 0));
    json_object_set_new(o, "rows", json_integer((json_int_t)rep.rows));
    json_object_set_new(o, "imported", json_integer((json_int_t)rep.imported));
    json_object_set_new(o, "rejected", json_integer((json_int_t)rep.rejected));
    json_object_set_new(o, "bad_count", json_integer((json_int_t)ic.nbad));
    json_object_set_new(o, "bad", ic.bad);
    json_object_set_new(o, "preview", ic.preview);
    if (rc) json_object_set_new(o, "error", json_string(why));
    /* A preview that found bad values is still an answer to what was asked: 200, ok false. */
    unsigned status = rc == 0 || (io.dry_run && rc == TSYNC_EREFUSED) ? 200 : http_status(rc);
    return tsync__console_jsonj(c, status, o);
}

/* ---------------------------------------------------------------- conflicts */

/* A decimal id or count as the API takes it: digits only, at most 18 of them (no sign, no
 * spaces). -1 when it is not one. */
static int64_t decimal(const char *p, size_t n)
{
    if (!p || n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* The journal as compact JSON (the library indents it), or NULL with *rc set. */
static json_t *journal(tsync_store *s, int64_t since, size_t limit, int open_only, int *rc)
{
    char *js = NULL;
    if ((*rc = tsync_store_conflicts_list_json(&js, s, since, limit, open_only)) != 0) return NULL;
    json_t *a = json_loads(js, 0, NULL);
    tsync_free(js);
    if (!a) *rc = TSYNC_ENOMEM;
    return a;
}

/* Journal entry id (a new reference), or NULL when there is none (*rc 0) or on an error. */
static json_t *journal_entry(tsync_store *s, int64_t id, int *rc)
{
    json_t *a = journal(s, id - 1, 1, 0, rc);
    json_t *e = json_array_get(a, 0);
    e = json_integer_value(json_object_get(e, "id")) == id ? json_incref(e) : NULL;
    json_decref(a);
    return e;
}

static enum MHD_Result conflicts_get(tsync__console *co, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"since", "open", "limit", NULL};
    enum MHD_Result ret;
    if (!tsync__console_params_ok(c, allowed, &ret)) return ret;
    const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    const char *open = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "open");
    const char *limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    int64_t since_id = since ? decimal(since, strlen(since)) : 0;
    int64_t lim = limit ? decimal(limit, strlen(limit)) : 0;
    if (since_id < 0) return tsync__console_error(c, 400, "since: an entry id (0 or more)");
    if (open && strcmp(open, "0") != 0 && strcmp(open, "1") != 0)
        return tsync__console_error(c, 400, "open: 0 or 1");
    if (lim < 0 || lim > CONSOLE_CONFLICTS_MAX)
        return tsync__console_error(c, 400, "limit: 1 to %d (0 or none: all)",
                                    CONSOLE_CONFLICTS_MAX);
    char why[512] = "";
    int rc = TSYNC_ERROR;
    json_t *a = NULL;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s && !(a = journal(s, since_id, (size_t)lim, open && open[0] == '1', &rc)))
        snprintf(why, sizeof why, "%s", errtext());
    pthread_mutex_unlock(&co->store_mu);
    if (!a) return tsync__console_error(c, s ? http_status(rc) : 503, "%s", why);
    return tsync__console_jsonj(c, 200, a);
}

/* The body of a resolve: exactly one of {"keep":true}, {"take":"other"}, {"value":V} with V a
 * string, a number or null. Returns the TSYNC_RESOLVE_* (and *v), or 0 with the reason. */
static int resolve_body(const console_req *r, json_t **root, tsync_value *v, const char **why)
{
    *root = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    memset(v, 0, sizeof *v);
    *why = "give exactly one of {\"keep\":true}, {\"take\":\"other\"}, {\"value\":V}";
    if (json_object_size(*root) != 1) return 0;
    json_t *x;
    if ((x = json_object_get(*root, "keep"))) return json_is_true(x) ? TSYNC_RESOLVE_KEEP : 0;
    if ((x = json_object_get(*root, "take"))) {
        const char *t = json_string_value(x);
        if (t && strcmp(t, "other") == 0) return TSYNC_RESOLVE_TAKE_OTHER;
        *why = "take: only \"other\" (the value last-writer-wins overwrote)";
        return 0;
    }
    if (!(x = json_object_get(*root, "value"))) return 0;
    if (json_is_string(x)) {
        v->type = TSYNC_VALUE_TEXT;
        v->data = json_string_value(x);
        v->len = json_string_length(x);
    } else if (json_is_integer(x)) {
        v->type = TSYNC_VALUE_INTEGER;
        v->i = (int64_t)json_integer_value(x);
    } else if (json_is_real(x)) {
        v->type = TSYNC_VALUE_REAL;
        v->r = json_real_value(x);
    } else if (json_is_null(x)) {
        v->type = TSYNC_VALUE_NULL;
    } else {
        *why = "value: a string, a number or null";
        return 0;
    }
    return TSYNC_RESOLVE_VALUE;
}

/* POST /api/conflicts/{id}/resolve: the entry is checked first (404 unknown, 409 resolved), so
 * only what the library refuses of a good request is left to its error (400: a key column). */
static enum MHD_Result conflict_resolve(tsync__console *co, struct MHD_Connection *c,
                                        const char *idtext, size_t idlen, console_req *r)
{
    int64_t id = decimal(idtext, idlen);
    if (id <= 0) return tsync__console_error(c, 400, "conflict id: a number (1 or more)");
    json_t *root;
    tsync_value v;
    const char *bad;
    int how = resolve_body(r, &root, &v, &bad);
    if (!how) {
        json_decref(root);
        return tsync__console_error(c, 400, "%s", bad);
    }
    char why[512] = "";
    int rc = TSYNC_ERROR;
    unsigned status = 503;
    json_t *e = NULL;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s) {
        e = journal_entry(s, id, &rc);
        if (rc) {
            status = http_status(rc);
            snprintf(why, sizeof why, "%s", errtext());
        } else if (!e) {
            status = 404;
            snprintf(why, sizeof why, "conflict %lld does not exist", (long long)id);
        } else if (!json_is_true(json_object_get(e, "open"))) {
            status = 409;
            snprintf(why, sizeof why, "conflict %lld is already resolved (%s)", (long long)id,
                     json_string_value(json_object_get(json_object_get(e, "resolved"), "how")));
        } else if ((rc = tsync_store_conflict_resolve(s, id, how, &v)) != 0) {
            status = http_status(rc);
            snprintf(why, sizeof why, "%s", errtext());
        } else {
            status = 200;
            json_decref(e);
            if (!(e = journal_entry(s, id, &rc)))
                snprintf(why, sizeof why, "conflict %lld resolved, but cannot be read back: %s",
                         (long long)id, rc ? errtext() : "it is gone");
        }
    }
    pthread_mutex_unlock(&co->store_mu);
    json_decref(root);
    if (status != 200 || !e) {
        json_decref(e);
        return tsync__console_error(c, status == 200 ? 500 : status, "%s", why);
    }
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)id));
    json_object_set(o, "resolved", json_object_get(e, "resolved"));
    json_object_set_new(o, "entry", e);
    return tsync__console_jsonj(c, 200, o);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* POST /api/conflicts/dismiss: {"ids":[ID,...]} or {"all":true}; all or nothing (the library's
 * transaction): 404 when an id does not exist, 409 when one is already resolved. */
static enum MHD_Result conflicts_dismiss(tsync__console *co, struct MHD_Connection *c,
                                         console_req *r)
{
    json_t *root = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    json_t *ids = json_object_get(root, "ids"), *all = json_object_get(root, "all");
    int64_t *list = NULL;
    size_t n = json_array_size(ids);
    const char *bad = NULL;
    if (json_object_size(root) != 1 || (!ids && !all))
        bad = "give {\"ids\":[ID,...]} or {\"all\":true}";
    else if (all && !json_is_true(all))
        bad = "all: true (or give ids)";
    else if (ids && (!json_is_array(ids) || n == 0 || n > CONSOLE_CONFLICTS_MAX))
        bad = "ids: an array of 1 to 10000 conflict ids";
    else if (ids && !(list = malloc(n * sizeof *list)))
        bad = "out of memory";
    for (size_t i = 0; !bad && i < n; i++) {
        json_t *x = json_array_get(ids, i);
        if (!json_is_integer(x) || json_integer_value(x) <= 0)
            bad = "ids: conflict ids are numbers (1 or more)";
        else
            list[i] = (int64_t)json_integer_value(x);
    }
    json_decref(root);
    if (bad) {
        free(list);
        return tsync__console_error(c, 400, "%s", bad);
    }
    /* An id given twice is one entry: counted once in "dismissed" (the library counts calls). */
    if (n > 1) {
        qsort(list, n, sizeof *list, cmp_id);
        size_t k = 1;
        for (size_t i = 1; i < n; i++)
            if (list[i] != list[k - 1]) list[k++] = list[i];
        n = k;
    }
    char why[512] = "";
    int rc = TSYNC_ERROR;
    size_t done = 0;
    pthread_mutex_lock(&co->store_mu);
    tsync_store *s = tsync__console_store(co, why, sizeof why);
    if (s && (rc = tsync_store_conflicts_dismiss(s, list, n, &done)) != 0)
        snprintf(why, sizeof why, "%s", errtext());
    pthread_mutex_unlock(&co->store_mu);
    free(list);
    /* The library says EINVAL for an id already resolved: a conflict with the state, 409. */
    if (rc)
        return tsync__console_error(c,
                                    !s                   ? 503
                                    : rc == TSYNC_EINVAL ? 409
                                                         : http_status(rc),
                                    "%s", why);
    return tsync__console_jsonj(c, 200, json_pack("{s:I}", "dismissed", (json_int_t)done));
}

/* ---------------------------------------------------------------- metrics */

static void metric(sqlite3_str *m, const char *name, const char *help, const char *type)
{
    sqlite3_str_appendf(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static json_int_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static enum MHD_Result metrics_get(tsync__console *co, struct MHD_Connection *c)
{
    char *js = NULL;
    if (tsync_node_status_json(&js, co->node) != 0 || !js)
        return tsync__console_error(c, 503, "the node has no status yet");
    json_t *st = json_loads(js, 0, NULL);
    tsync_free(js);
    if (!st) return tsync__console_error(c, 500, "the node's status does not parse");
    sqlite3_str *m = sqlite3_str_new(NULL);
    static const char *const STATES[] = {"discovered",  "connecting", "connected",
                                         "unreachable", "waiting",    "refused"};
    json_t *peers = json_object_get(st, "peers");
    metric(m, "tillsync_peers", "Other tills known, by network state.", "gauge");
    for (size_t k = 0; k < sizeof STATES / sizeof *STATES; k++) {
        size_t i, n = 0;
        json_t *p;
        json_array_foreach(peers, i, p)
        {
            const char *state = json_string_value(json_object_get(p, "state"));
            n += state && strcmp(state, STATES[k]) == 0;
        }
        sqlite3_str_appendf(m, "tillsync_peers{state=\"%s\"} %lld\n", STATES[k], (long long)n);
    }
    metric(m, "tillsync_peer_lag_batches",
           "Batches a connected till lacks of ours (out) and we lack of its (in).", "gauge");
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p)
    {
        json_t *key = json_object_get(p, "key");
        if (!json_is_string(key) || !json_object_get(p, "they_lack")) continue;
        sqlite3_str_appendf(m, "tillsync_peer_lag_batches{peer=\"%s\",direction=\"out\"} %lld\n",
                            json_string_value(key), (long long)jint(p, "they_lack"));
        sqlite3_str_appendf(m, "tillsync_peer_lag_batches{peer=\"%s\",direction=\"in\"} %lld\n",
                            json_string_value(key), (long long)jint(p, "we_lack"));
    }
    static const struct {
        const char *key, *name, *help;
    } G[] = {
        {"pending_out", "tillsync_pending_out", "Outgoing batches not yet acknowledged."},
        {"held", "tillsync_held", "Batches held for missing dependencies."},
        {"parked", "tillsync_parked", "Changes parked (a table or column not known here)."},
        {"conflicts", "tillsync_conflicts", "Conflicts recorded."},
        {"conflicts_open", "tillsync_conflicts_open",
         "Conflicts no person has resolved or dismissed yet."},
        {"unsealed", "tillsync_unsealed", "Local changes not yet sealed into a batch."},
    };
    for (size_t k = 0; k < sizeof G / sizeof *G; k++) {
        metric(m, G[k].name, G[k].help, "gauge");
        sqlite3_str_appendf(m, "%s %lld\n", G[k].name, (long long)jint(st, G[k].key));
    }
    metric(m, "tillsync_refused_total", "Inputs refused, by reason.", "counter");
    const char *reason;
    json_t *v;
    json_object_foreach(json_object_get(st, "refused"), reason, v)
        sqlite3_str_appendf(m, "tillsync_refused_total{reason=\"%s\"} %lld\n", reason,
                            (long long)json_integer_value(v));
    metric(m, "tillsync_online", "1 while at least one other till is connected.", "gauge");
    sqlite3_str_appendf(m, "tillsync_online %d\n", json_is_true(json_object_get(st, "online")));
    int64_t last = tsync__console_last_backup_ms(co);
    metric(m, "tillsync_last_backup_age_seconds",
           "Seconds since the newest backup in the backup folder (-1: none).", "gauge");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    sqlite3_str_appendf(m, "tillsync_last_backup_age_seconds %lld\n",
                        last ? (long long)((now - last) / 1000) : -1LL);
    json_decref(st);
    int len = sqlite3_str_length(m);
    char *text = sqlite3_str_finish(m);
    if (!text) return tsync__console_error(c, 500, "out of memory");
    enum MHD_Result ret =
        tsync__console_reply(c, 200, "text/plain; version=0.0.4", text, (size_t)len);
    sqlite3_free(text);
    return ret;
}

/* ---------------------------------------------------------------- routing */

static enum MHD_Result session_get(struct MHD_Connection *c, console_req *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "csrf", r->auth == 2 ? json_string(r->csrf) : json_null());
    json_object_set_new(o, "auth", json_string(r->auth == 2 ? "cookie" : "bearer"));
    return tsync__console_jsonj(c, 200, o);
}

/* A file of the page (www.h, generated from net/console/www/ at build time). */
static enum MHD_Result page_get(struct MHD_Connection *c, const char *url)
{
    const char *name = strcmp(url, "/") == 0 ? "index.html" : url + 1;
    for (size_t i = 0; i < TSYNC_WWW_COUNT; i++)
        if (strcmp(tsync_www[i].name, name) == 0)
            return tsync__console_reply(c, 200, tsync_www[i].type, tsync_www[i].data,
                                        tsync_www[i].len);
    return tsync__console_error(c, 404, "no such page");
}

enum MHD_Result tsync__console_route(tsync__console *co, struct MHD_Connection *c, const char *url,
                                     const char *method, console_req *r)
{
    int post = strcmp(method, "POST") == 0;
    enum MHD_Result ret;
    /* A POST body other than an upload is JSON (an object), or nothing. */
    if (post && !r->upload && r->len) {
        json_error_t je;
        json_t *b = json_loadb(r->body, r->len, 0, &je);
        int obj = json_is_object(b);
        json_decref(b);
        if (!obj)
            return tsync__console_error(c, 400, "the body is not a JSON object: %s",
                                        b ? "another JSON value" : je.text);
    }
    if (strcmp(url, "/api/import") == 0) {
        if (!post) return tsync__console_error(c, 405, "POST a file to /api/import");
        return import_post(co, c, r);
    }
    if (strcmp(url, "/api/backups") == 0) {
        if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
        return post ? tsync__console_backups_post(co, c) : tsync__console_backups_get(co, c);
    }
    if (strncmp(url, "/api/backups/jobs/", 18) == 0) {
        if (post) return tsync__console_error(c, 405, "GET a backup job");
        if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
        return tsync__console_job_get(co, c, url + 18);
    }
    if (strcmp(url, "/api/conflicts/dismiss") == 0) {
        if (!post) return tsync__console_error(c, 405, "POST {\"ids\":[...]} or {\"all\":true}");
        if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
        return conflicts_dismiss(co, c, r);
    }
    size_t rl = strlen(url);
    if (strncmp(url, "/api/conflicts/", 15) == 0 && rl > 23 &&
        strcmp(url + rl - 8, "/resolve") == 0) {
        if (!post) return tsync__console_error(c, 405, "POST a resolution");
        if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
        return conflict_resolve(co, c, url + 15, rl - 23, r);
    }
    if (strcmp(url, "/api/backups/verify") == 0) {
        if (!post) return tsync__console_error(c, 405, "POST {\"file\":NAME}");
        if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
        return tsync__console_backup_verify(co, c, r->len ? r->body : NULL, r->len);
    }
    if (post) return tsync__console_error(c, strncmp(url, "/api/", 5) ? 404 : 405, "no POST here");
    if (strcmp(url, "/api/backups/download") == 0) return tsync__console_backup_download(co, c);
    if (strcmp(url, "/api/conflicts") == 0) return conflicts_get(co, c);
    if (strcmp(url, "/api/export") == 0) return export_get(co, c);
    if (!tsync__console_params_ok(c, NO_PARAMS, &ret)) return ret;
    if (strcmp(url, "/api/status") == 0) return status_get(co, c);
    if (strcmp(url, "/api/events") == 0) return events_get(co, c);
    if (strcmp(url, "/api/session") == 0) return session_get(c, r);
    if (strcmp(url, "/api/schema") == 0) return store_json(co, c, schema_fn);
    if (strcmp(url, "/metrics") == 0) return metrics_get(co, c);
    if (strncmp(url, "/api/", 5) == 0) return tsync__console_error(c, 404, "no such endpoint");
    return page_get(c, url);
}
