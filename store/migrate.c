/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/migrate.c — schema migrations: numbered SQL files run once each, in order, all pending
 * ones in one transaction, recorded in tsync_migrations with their BLAKE2b-256 hashes. The
 * highest number applied is the schema version.
 * Over 800 lines on purpose: the statement loop, the authorizer and the comparison of tables
 * before and after each statement act on one run's state, inside one transaction.
 *
 * Design notes
 * - Statements run one at a time. After each one that changed the schema, the replicated tables
 *   are compared with what they were before it: appended columns are taken into replication at
 *   once (tombstone, tsync_tables.cols, capture triggers), so the migration's next statement,
 *   say an UPDATE of the new column, is captured like any write; anything else (a dropped or
 *   renamed column or table, another key or type, a constraint that cannot hold across tills)
 *   refuses the whole run. Comparing is what catches every path to a change, whatever SQL did it.
 * - An authorizer keeps the migration's SQL away from tillsync's own tables, triggers and
 *   transaction, and names a DROP TABLE of a replicated table before it happens.
 * - tillsync_replicate() and tillsync_counter() are SQL functions registered on the store's
 *   connection for the run only. They only note what was asked; the work is done between
 *   statements, never from inside one, where DDL on the same connection would be unsafe.
 * - As soon as a table, column or counter becomes replicated, local changes are sealed (so they
 *   have their clocks) and parked changes from other tills that now fit are applied, in the same
 *   transaction: a later statement of the migration, e.g. "UPDATE ... WHERE col IS NULL", sees
 *   them as it would have had they arrived after the migration.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec/cert.h"
#include "internal.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tillsync/migrate.h"

#define MAX_FILE_BYTES (64u << 20)
#define MAX_NOTES      100

/* ---------------------------------------------------------------- the report */

void tsync_migrate_report_clear(tsync_migrate_report *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->napplied; i++) free(r->applied[i].name);
    free(r->applied);
    for (size_t i = 0; i < r->nnotes; i++) free(r->notes[i]);
    free(r->notes);
    unsigned int v = r->version;
    memset(r, 0, sizeof *r);
    r->version = v;
}

static void note(tsync_migrate_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(tsync_migrate_report *r, const char *fmt, ...)
{
    if (!r || r->nnotes >= MAX_NOTES) return;
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(r->notes, (r->nnotes + 1) * sizeof *n);
    if (!n) return;
    r->notes = n;
    if (r->nnotes == MAX_NOTES - 1) snprintf(buf, sizeof buf, "(further notes omitted)");
    if ((r->notes[r->nnotes] = strdup(buf))) r->nnotes++;
}

/* ---------------------------------------------------------------- the folder */

typedef struct {
    int64_t number;
    char *name; /* file name */
    char *text; /* its bytes, NUL-terminated */
    size_t len;
    char hash[2 * TSYNC__HASH_BYTES + 1];
} mfile;

static void files_free(mfile *f, size_t n)
{
    for (size_t i = 0; i < n; i++) free(f[i].name), free(f[i].text);
    free(f);
}

static int file_cmp(const void *pa, const void *pb)
{
    const mfile *a = pa, *b = pb;
    if (a->number != b->number) return a->number < b->number ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* NUMBER_NAME.sql with a non-empty NAME: the number, or -1 (not a migration), -2 (too large),
 * -3 (zero). */
static int64_t parse_name(const char *name)
{
    const char *p = name;
    int64_t v = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        if (++digits > 18) return -2;
        v = v * 10 + (*p++ - '0');
    }
    size_t n = strlen(name);
    if (!digits || *p != '_' || n < 5 || strcmp(name + n - 4, ".sql") != 0 ||
        (size_t)(p - name) + 1 >= n - 4)
        return -1;
    return v ? v : -3;
}

static int read_whole(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return tsync__err(TSYNC_EIO, "cannot read migration %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
    while (rc == 0) {
        if (n + 1 >= cap) {
            char *nb = cap >= MAX_FILE_BYTES ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                rc = cap >= MAX_FILE_BYTES
                         ? tsync__err(TSYNC_EINVAL, "migration %s is larger than %u MiB", path,
                                      MAX_FILE_BYTES >> 20)
                         : tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) {
            if (ferror(f)) rc = tsync__err(TSYNC_EIO, "cannot read migration %s", path);
            break;
        }
    }
    fclose(f);
    if (rc == 0 && memchr(buf, 0, n))
        rc = tsync__err(TSYNC_EINVAL, "migration %s contains a NUL byte; it is not SQL text", path);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* The migrations of a folder, in number order, read and hashed. */
static int scan_dir(const char *dir, mfile **out, size_t *nout, tsync_migrate_report *r)
{
    *out = NULL;
    *nout = 0;
    DIR *d = opendir(dir);
    if (!d)
        return tsync__err(errno == ENOENT || errno == ENOTDIR ? TSYNC_ENOTFOUND : TSYNC_EIO,
                          "cannot read the migrations folder %s: %s", dir, strerror(errno));
    mfile *f = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int64_t num = parse_name(e->d_name);
        if (num == -1) {
            note(r, "ignored %s: not a migration (names are like 001_create_products.sql)",
                 e->d_name);
            continue;
        }
        if (num == -2) {
            note(r, "ignored %s: its number has more than 18 digits", e->d_name);
            continue;
        }
        if (num == -3) {
            note(r, "ignored %s: migration numbers start at 1", e->d_name);
            continue;
        }
        size_t plen = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(plen);
        if (!path) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            note(r, "ignored %s: not a regular file", e->d_name);
            free(path);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            mfile *nf = realloc(f, cap * sizeof *nf);
            if (!nf) {
                free(path);
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            f = nf;
        }
        mfile *m = &f[n];
        memset(m, 0, sizeof *m);
        m->number = num;
        m->name = strdup(e->d_name);
        rc = m->name ? read_whole(path, &m->text, &m->len)
                     : tsync__err(TSYNC_ENOMEM, "out of memory");
        free(path);
        n++;
        if (rc) break;
        uint8_t h[TSYNC__HASH_BYTES];
        crypto_generichash(h, sizeof h, (const uint8_t *)m->text, m->len, NULL, 0);
        tsync__hex(h, sizeof h, m->hash);
    }
    closedir(d);
    if (rc == 0 && n > 1) qsort(f, n, sizeof *f, file_cmp);
    for (size_t i = 1; rc == 0 && i < n; i++)
        if (f[i].number == f[i - 1].number)
            rc = tsync__err(TSYNC_EREFUSED,
                            "two migrations are numbered %lld: %s and %s; give each its own number",
                            (long long)f[i].number, f[i - 1].name, f[i].name);
    if (rc) {
        files_free(f, n);
        return rc;
    }
    *out = f;
    *nout = n;
    return 0;
}

/* ---------------------------------------------------------------- what was applied */

typedef struct {
    int64_t number;
    char *name;
    char hash[2 * TSYNC__HASH_BYTES + 1];
    int64_t at_ms;
} applied_rec;

static int has_migrations_table(tsync_store *s, int *yes)
{
    sqlite3_stmt *st = tsync__prep(
        s, "SELECT 1 FROM sqlite_schema WHERE type='table' AND name='tsync_migrations'");
    if (!st) return TSYNC_EIO;
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    if (x != SQLITE_ROW && x != SQLITE_DONE)
        return tsync__err_sqlite(s->db, x, "read the schema version");
    *yes = x == SQLITE_ROW;
    return 0;
}

static void applied_free(applied_rec *a, size_t n)
{
    for (size_t i = 0; i < n; i++) free(a[i].name);
    free(a);
}

static int load_applied(tsync_store *s, applied_rec **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    int yes = 0, rc = has_migrations_table(s, &yes);
    if (rc || !yes) return rc;
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT number, name, hash, applied_ms FROM tsync_migrations ORDER "
                            "BY number",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read applied migrations");
    applied_rec *a = NULL;
    size_t n = 0, cap = 0;
    int x;
    rc = 0;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            applied_rec *na = realloc(a, cap * sizeof *na);
            if (!na) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            a = na;
        }
        applied_rec *e = &a[n++];
        memset(e, 0, sizeof *e);
        e->number = sqlite3_column_int64(st, 0);
        e->name =
            strdup(sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
        snprintf(e->hash, sizeof e->hash, "%s",
                 sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "");
        e->at_ms = sqlite3_column_int64(st, 3);
        if (!e->name) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
    }
    if (rc == 0 && x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "read applied migrations");
    sqlite3_finalize(st);
    if (rc) {
        applied_free(a, n);
        return rc;
    }
    *out = a;
    *nout = n;
    return 0;
}

int tsync_store_schema_version(int64_t *out, tsync_store *s)
{
    *out = 0;
    int yes = 0, rc = has_migrations_table(s, &yes);
    if (rc || !yes) return rc;
    sqlite3_stmt *st = tsync__prep(s, "SELECT max(number) FROM tsync_migrations");
    if (!st) return TSYNC_EIO;
    int x = sqlite3_step(st);
    if (x == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return x == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, x, "read the schema version");
}

int tsync_store_migrations_json(char **out, tsync_store *s)
{
    *out = NULL;
    applied_rec *a;
    size_t n;
    int rc = load_applied(s, &a, &n);
    if (rc) return rc;
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "version", json_integer(n ? a[n - 1].number : 0));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "number", json_integer(a[i].number));
        json_object_set_new(e, "name", json_string(a[i].name));
        json_object_set_new(e, "hash", json_string(a[i].hash));
        json_object_set_new(e, "applied_ms", json_integer(a[i].at_ms));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "applied", arr);
    *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    applied_free(a, n);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* ---------------------------------------------------------------- shapes of replicated tables */

/* What a replicated table looks like, as far as replication cares. */
typedef struct {
    char *name;
    int exists;
    int ncols;
    char *cols[TSYNC__MAX_COLS + 1];
    char *types[TSYNC__MAX_COLS + 1]; /* NULL: not known (recorded before this run) */
    uint8_t hidden[TSYNC__MAX_COLS + 1];
    int npk;
    int pk[TSYNC__MAX_PK_COLS + 1]; /* ordinals in key order */
    int has_check, nfk;
    int nuniq;
    char **uniq;   /* unique indexes besides the key */
    int file_cols; /* columns it had when the running migration started */
} shape;

static void shape_clear(shape *h)
{
    free(h->name);
    for (int i = 0; i < h->ncols; i++) free(h->cols[i]), free(h->types[i]);
    for (int i = 0; i < h->nuniq; i++) free(h->uniq[i]);
    free(h->uniq);
    memset(h, 0, sizeof *h);
}

/* Reads the current shape of a table from SQLite. */
static int shape_read(tsync_store *s, const char *table, shape *h)
{
    memset(h, 0, sizeof *h);
    if (!(h->name = strdup(table))) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT sql FROM sqlite_schema WHERE type='table' AND name=?1 COLLATE NOCASE", -1,
        &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read schema");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        h->exists = 1;
        const char *sql = (const char *)sqlite3_column_text(st, 0);
        h->has_check = sql && tsync__sql_has_check(sql);
    }
    sqlite3_finalize(st);
    if (!h->exists) return 0;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY "
                            "cid",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read columns");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (h->ncols > TSYNC__MAX_COLS) continue; /* counted below, refused by the caller */
        int i = h->ncols++;
        h->cols[i] = strdup((const char *)sqlite3_column_text(st, 0));
        h->types[i] =
            strdup(sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
        int pk = sqlite3_column_int(st, 2);
        h->hidden[i] = sqlite3_column_int(st, 3) != 0;
        if (pk > 0 && pk <= TSYNC__MAX_PK_COLS) {
            h->pk[pk - 1] = i;
            if (pk > h->npk) h->npk = pk;
        } else if (pk > TSYNC__MAX_PK_COLS) {
            h->npk = TSYNC__MAX_PK_COLS + 1;
        }
        if (!h->cols[i] || !h->types[i]) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT name FROM pragma_index_list(?1) WHERE \"unique\" AND origin "
                            "!= 'pk' ORDER BY name",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read indexes");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        char **nu = realloc(h->uniq, ((size_t)h->nuniq + 1) * sizeof *nu);
        if (!nu) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        h->uniq = nu;
        if (!(h->uniq[h->nuniq] = strdup((const char *)sqlite3_column_text(st, 0))))
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        else
            h->nuniq++;
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = sqlite3_prepare_v2(s->db, "SELECT count(*) FROM pragma_foreign_key_list(?1)", -1, &st,
                            NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read foreign keys");
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) h->nfk = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* ---------------------------------------------------------------- a run */

enum { I_REPLICATE, I_COUNTER };

/* Something a migration asked for through tillsync_replicate() or tillsync_counter(). */
typedef struct {
    int kind;
    int nargs;
    char **args; /* table, then counter columns (or the one column) */
} intent;

typedef struct {
    tsync_store *s;
    tsync_migrate_report *rep;
    const mfile *file; /* the migration running, NULL before the first */
    int line;          /* line of the statement running */
    shape *shapes;     /* one per replicated table */
    int nshapes;
    intent *intents;
    size_t nintents;
    int added;      /* something became replicated since the last unparking */
    char deny[300]; /* why the authorizer refused the statement */
    int deny_code;
    int active; /* a statement of the migration is being prepared or run */
} run;

static void intents_clear(run *m)
{
    for (size_t i = 0; i < m->nintents; i++) {
        for (int k = 0; k < m->intents[i].nargs; k++) free(m->intents[i].args[k]);
        free(m->intents[i].args);
    }
    free(m->intents);
    m->intents = NULL;
    m->nintents = 0;
}

static void run_free(run *m)
{
    for (int i = 0; i < m->nshapes; i++) shape_clear(&m->shapes[i]);
    free(m->shapes);
    intents_clear(m);
}

static shape *shape_of(run *m, const char *table)
{
    for (int i = 0; i < m->nshapes; i++)
        if (tsync__name_eqz(m->shapes[i].name, table)) return &m->shapes[i];
    return NULL;
}

/* Refuses with the migration and line named first. */
static int refuse(run *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(run *m, int code, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (!m->file)
        return tsync__err(code, "before the migrations: %s (changed outside a migration)", buf);
    return tsync__err(code, "migration %s, line %d: %s", m->file->name, m->line, buf);
}

/* Re-words the last error as coming from the running statement. */
static int refuse_last(run *m, int code)
{
    const tsync_error *e = tsync_error_last();
    char buf[512];
    snprintf(buf, sizeof buf, "%s", e->code ? e->message : "failed");
    return refuse(m, e->code ? e->code : code, "%s", buf);
}

static int is_internal(const char *name)
{
    return name && (strncasecmp(name, "tsync_", 6) == 0);
}

static int is_replicated(run *m, const char *name)
{
    return name && tsync__table_by_name(m->s, name, strlen(name)) != NULL;
}

/* The authorizer during a run (set once: setting it expires every prepared statement). While a
 * statement of a migration is prepared or runs, tillsync's own objects and the transaction are
 * not the migration's to touch. */
static int authorize(void *ud, int action, const char *a1, const char *a2, const char *db,
                     const char *trigger)
{
    run *m = ud;
    /* tillsync's own statements, and our capture triggers' writes, pass. */
    if (!m->active || (trigger && strncmp(trigger, "tsync_", 6) == 0)) return SQLITE_OK;
    const char *obj = NULL;
    switch (action) {
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        m->deny_code = TSYNC_EINVAL;
        snprintf(m->deny, sizeof m->deny,
                 "migrations run inside tillsync's own transaction: leave out BEGIN, COMMIT, "
                 "ROLLBACK and SAVEPOINT");
        return SQLITE_DENY;
    case SQLITE_PRAGMA:
        if (a1 && !strcasecmp(a1, "writable_schema")) {
            m->deny_code = TSYNC_EINVAL;
            snprintf(m->deny, sizeof m->deny,
                     "PRAGMA writable_schema is not allowed in a migration");
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    case SQLITE_DROP_TABLE:
        if (is_replicated(m, a1)) {
            m->deny_code = TSYNC_EUNSUPPORTED;
            snprintf(m->deny, sizeof m->deny,
                     "drops replicated table %s; tills on older versions keep writing it and "
                     "their changes would have nowhere to go: stop using the table instead (to "
                     "change its key or a type, create a new table and replicate it)",
                     a1);
            return SQLITE_DENY;
        }
        obj = a1;
        break;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_TEMP_VIEW:
        obj = a1;
        break;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_TEMP_TRIGGER:
        obj = is_internal(a1) ? a1 : a2;
        break;
    case SQLITE_ALTER_TABLE:
        obj = a2;
        break;
    default:
        return SQLITE_OK;
    }
    if (is_internal(obj)) {
        m->deny_code = TSYNC_EINVAL;
        snprintf(m->deny, sizeof m->deny,
                 "touches %s; tsync_* tables and triggers belong to tillsync and migrations may "
                 "not change them",
                 obj);
        return SQLITE_DENY;
    }
    (void)db;
    return SQLITE_OK;
}

static void fn_intent(sqlite3_context *ctx, int kind, int argc, sqlite3_value **argv)
{
    run *m = sqlite3_user_data(ctx);
    const char *fname = kind == I_REPLICATE ? "tillsync_replicate" : "tillsync_counter";
    char msg[200];
    for (int i = 0; i < argc; i++)
        if (sqlite3_value_type(argv[i]) != SQLITE_TEXT) {
            snprintf(msg, sizeof msg, "%s takes names as text (argument %d is not)", fname, i + 1);
            sqlite3_result_error(ctx, msg, -1);
            return;
        }
    if (argc < 1 || (kind == I_REPLICATE && argc > TSYNC__MAX_COLS + 1)) {
        snprintf(msg, sizeof msg, "%s needs a table name", fname);
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    intent *ni = realloc(m->intents, (m->nintents + 1) * sizeof *ni);
    if (!ni) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    m->intents = ni;
    intent *it = &m->intents[m->nintents];
    it->kind = kind;
    it->nargs = 0;
    it->args = calloc((size_t)argc, sizeof *it->args);
    if (!it->args) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    m->nintents++;
    for (int i = 0; i < argc; i++) {
        if (!(it->args[i] = strdup((const char *)sqlite3_value_text(argv[i])))) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        it->nargs++;
    }
    sqlite3_result_null(ctx);
}

static void fn_replicate(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    fn_intent(ctx, I_REPLICATE, argc, argv);
}

static void fn_counter(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    fn_intent(ctx, I_COUNTER, argc, argv);
}

static void functions_set(run *m, int on)
{
    int f = SQLITE_UTF8 | SQLITE_DIRECTONLY;
    sqlite3_create_function(m->s->db, "tillsync_replicate", -1, f, on ? m : NULL,
                            on ? fn_replicate : NULL, NULL, NULL);
    sqlite3_create_function(m->s->db, "tillsync_counter", 2, f, on ? m : NULL,
                            on ? fn_counter : NULL, NULL, NULL);
}

/* ---------------------------------------------------------------- following the schema */

static int has_name(char *const *v, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (tsync__name_eqz(v[i], name)) return 1;
    return 0;
}

/* The table a replicated table was renamed to (its capture trigger follows it), or NULL. */
static char *renamed_to(tsync_store *s, const char *table)
{
    char trig[512];
    snprintf(trig, sizeof trig, "tsync_ai_%s", table);
    sqlite3_stmt *st;
    char *to = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT tbl_name FROM sqlite_schema WHERE type='trigger' AND name=?1 "
                           "COLLATE NOCASE",
                           -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, trig, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        to = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return to;
}

/* Compares a replicated table with its shape before the statement: refuses what replication
 * cannot follow, takes appended columns into replication, and updates the shape. */
static int follow_table(run *m, shape *was)
{
    tsync_store *s = m->s;
    shape now;
    int rc = shape_read(s, was->name, &now);
    if (rc) {
        shape_clear(&now);
        return rc;
    }
    const char *t = was->name;
    if (!now.exists) {
        char *to = renamed_to(s, t);
        if (to)
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "renames replicated table %s to %s; tills on older versions keep writing "
                        "%s: keep the name (to change its key or a type, create a new table and "
                        "replicate it)",
                        t, to, t);
        else
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "drops replicated table %s; tills on older versions keep writing it: stop "
                        "using the table instead",
                        t);
        free(to);
        shape_clear(&now);
        return rc;
    }
    for (int i = 0; rc == 0 && i < was->ncols; i++) {
        const char *c = was->cols[i];
        if (i < now.ncols && tsync__name_eqz(c, now.cols[i])) {
            if (was->types[i] && strcasecmp(was->types[i], now.types[i]) != 0)
                rc = refuse(m, TSYNC_EUNSUPPORTED,
                            "changes the type of column %s of replicated table %s from '%s' to "
                            "'%s'; tills on older versions keep writing the old type: add a new "
                            "column of the new type and stop using the old one",
                            c, t, was->types[i], now.types[i]);
        } else if (has_name(now.cols, now.ncols, c)) {
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "moves column %s of replicated table %s; columns of a replicated table "
                        "can only be appended",
                        c, t);
        } else if (i < now.ncols && now.ncols >= was->ncols &&
                   !has_name(was->cols, was->ncols, now.cols[i])) {
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "renames column %s of replicated table %s to %s; tills on older versions "
                        "keep writing %s: add a new column, copy the values with an UPDATE and "
                        "stop using the old one",
                        c, t, now.cols[i], c);
        } else {
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "drops column %s of replicated table %s; tills on older versions keep "
                        "writing it: leave the column in place and stop using it",
                        c, t);
        }
    }
    int samepk = now.npk == was->npk;
    for (int i = 0; samepk && i < now.npk; i++) samepk = now.pk[i] == was->pk[i];
    if (rc == 0 && !samepk)
        rc = refuse(m, TSYNC_EUNSUPPORTED,
                    "changes the primary key of replicated table %s; rows are known by their key "
                    "on every till: create a new table with the new key and replicate it",
                    t);
    if (rc == 0 && now.ncols > TSYNC__MAX_COLS)
        rc = refuse(m, TSYNC_EUNSUPPORTED,
                    "gives replicated table %s more than %d columns; put further columns in "
                    "another table",
                    t, TSYNC__MAX_COLS);
    for (int i = was->ncols; rc == 0 && i < now.ncols; i++)
        if (now.hidden[i])
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "adds generated column %s to replicated table %s; replicated tables "
                        "cannot have generated columns: compute the value in a view or the app",
                        now.cols[i], t);
    if (rc == 0 && now.has_check && !was->has_check)
        rc = refuse(m, TSYNC_EUNSUPPORTED,
                    "adds a CHECK constraint to replicated table %s; it cannot hold across tills "
                    "(a merged value could violate it): validate in the app",
                    t);
    if (rc == 0 && now.nfk > was->nfk)
        rc = refuse(m, TSYNC_EUNSUPPORTED,
                    "adds a FOREIGN KEY to replicated table %s; it cannot hold across tills (a "
                    "child may arrive for a parent deleted elsewhere): leave it out",
                    t);
    for (int i = 0; rc == 0 && i < now.nuniq; i++)
        if (!has_name(was->uniq, was->nuniq, now.uniq[i]))
            rc = refuse(m, TSYNC_EUNSUPPORTED,
                        "adds unique index %s on replicated table %s; uniqueness cannot hold "
                        "across tills that write offline: make it a plain index",
                        now.uniq[i], t);
    if (rc == 0 && now.ncols > was->ncols) {
        rc = tsync__table_add_columns(s, t, (const char *const *)now.cols + was->ncols,
                                      now.ncols - was->ncols);
        if (rc) rc = refuse_last(m, TSYNC_EUNSUPPORTED);
        m->added = 1;
    }
    if (rc == 0) {
        now.file_cols = was->file_cols;
        shape_clear(was);
        *was = now;
        return 0;
    }
    shape_clear(&now);
    return rc;
}

static int follow_schema(run *m)
{
    for (int i = 0; i < m->nshapes; i++) {
        int rc = follow_table(m, &m->shapes[i]);
        if (rc) return rc;
    }
    return 0;
}

static int add_shape(run *m, const char *table)
{
    shape *ns = realloc(m->shapes, ((size_t)m->nshapes + 1) * sizeof *ns);
    if (!ns) return tsync__err(TSYNC_ENOMEM, "out of memory");
    m->shapes = ns;
    shape *h = &m->shapes[m->nshapes];
    int rc = shape_read(m->s, table, h);
    if (rc) {
        shape_clear(h);
        return rc;
    }
    h->file_cols = h->ncols;
    m->nshapes++;
    return 0;
}

/* The shapes of the replicated tables as tsync_tables records them: names recorded, types as
 * they are now where the names agree. The first follow_schema then catches a table changed
 * outside a migration (and takes columns appended outside one into replication). */
static int shapes_init(run *m)
{
    tsync_store *s = m->s;
    int rc = tsync__tables_refresh(s);
    for (int i = 0; rc == 0 && i < s->ntables; i++) {
        tsync__table *t = &s->tables[i];
        if ((rc = add_shape(m, t->name))) break;
        shape *h = &m->shapes[m->nshapes - 1];
        shape now = *h; /* what SQLite says, to take the types and indexes from */
        shape rec;
        memset(&rec, 0, sizeof rec);
        rec.name = strdup(t->name);
        rec.exists = 1;
        rec.ncols = t->ncols;
        for (int c = 0; c < t->ncols; c++) {
            rec.cols[c] = strdup(t->cols[c]);
            rec.types[c] = c < now.ncols && tsync__name_eqz(now.cols[c], t->cols[c]) && now.types[c]
                               ? strdup(now.types[c])
                               : NULL;
            if (!rec.cols[c]) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        }
        rec.npk = t->npk;
        for (int k = 0; k < t->npk; k++) rec.pk[k] = t->pk[k];
        rec.has_check = now.has_check;
        rec.nfk = now.nfk;
        rec.nuniq = now.nuniq;
        rec.uniq = now.uniq;
        now.uniq = NULL;
        now.nuniq = 0;
        rec.file_cols = rec.ncols;
        shape_clear(&now);
        *h = rec;
        if (!rec.name) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    return rc;
}

/* ---------------------------------------------------------------- what the functions asked */

static int do_replicate(run *m, intent *it)
{
    tsync_store *s = m->s;
    const char *table = it->args[0];
    const char *const *ctr = (const char *const *)it->args + 1;
    size_t nctr = (size_t)it->nargs - 1;
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    tsync__table *t = tsync__table_by_name(s, table, strlen(table));
    if (t) {
        /* Already replicated (say, by hand before migrations were used): fine if the same. */
        int same = 1, n = 0;
        for (int c = 0; c < t->ncols; c++) n += t->is_counter[c];
        for (size_t i = 0; i < nctr && same; i++) {
            int c = tsync__col_by_name(t, ctr[i], strlen(ctr[i]));
            same = c >= 0 && t->is_counter[c];
        }
        if (same && (size_t)n == nctr) return 0;
        return refuse(m, TSYNC_EUNSUPPORTED,
                      "tillsync_replicate('%s'): the table is already replicated with other "
                      "counter columns; a column becomes a counter with tillsync_counter() in the "
                      "migration that adds it",
                      table);
    }
    if ((rc = tsync__replicate_locked(s, table, ctr, nctr))) return refuse_last(m, rc);
    m->added = 1;
    if ((rc = add_shape(m, table))) return rc;
    /* New to replication in this migration: every till that runs it declares the same counters,
     * so any of its columns may still become one. */
    m->shapes[m->nshapes - 1].file_cols = 0;
    return 0;
}

static int do_counter(run *m, intent *it)
{
    tsync_store *s = m->s;
    const char *table = it->args[0], *col = it->args[1];
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    tsync__table *t = tsync__table_by_name(s, table, strlen(table));
    shape *h = shape_of(m, table);
    if (!t || !h)
        return refuse(m, TSYNC_ENOTFOUND,
                      "tillsync_counter('%s', '%s'): %s is not a replicated table (replicate it "
                      "first, or pass the counter to tillsync_replicate)",
                      table, col, table);
    int c = tsync__col_by_name(t, col, strlen(col));
    if (c < 0)
        return refuse(m, TSYNC_ENOTFOUND, "tillsync_counter('%s', '%s'): %s has no column %s",
                      table, col, table, col);
    if (t->is_counter[c]) return 0;
    if (c < h->file_cols)
        return refuse(m, TSYNC_EUNSUPPORTED,
                      "tillsync_counter('%s', '%s'): the column already replicates as a plain "
                      "value, and tills on older versions keep merging it so; only a column "
                      "added by the same migration can become a counter: add a new counter "
                      "column",
                      table, col);
    if (t->is_pk[c])
        return refuse(m, TSYNC_EUNSUPPORTED,
                      "tillsync_counter('%s', '%s'): a key column cannot "
                      "be a counter",
                      table, col);
    if (!h->types[c] || !strcasestr(h->types[c], "INT"))
        return refuse(m, TSYNC_EUNSUPPORTED,
                      "tillsync_counter('%s', '%s'): counter column %s.%s must be declared INTEGER",
                      table, col, table, col);
    /* Every till runs this migration: a starting value in existing rows would be counted once per
     * till. So a new counter starts at 0 everywhere and counts from there. */
    char *qt = sqlite3_mprintf("SELECT count(*) FROM \"%w\" WHERE typeof(\"%w\") != 'integer' OR "
                               "\"%w\" != 0",
                               table, col, col);
    if (!qt) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st;
    int64_t bad = 0;
    rc = sqlite3_prepare_v2(s->db, qt, -1, &st, NULL);
    sqlite3_free(qt);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read counter column");
    if (sqlite3_step(st) == SQLITE_ROW) bad = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (bad)
        return refuse(m, TSYNC_EUNSUPPORTED,
                      "tillsync_counter('%s', '%s'): existing rows hold something other than 0 "
                      "in %s (%lld of them), and every till that runs this migration would count "
                      "it: add the column as INTEGER NOT NULL DEFAULT 0, and set starting values "
                      "on one till after migrating",
                      table, col, col, (long long)bad);
    /* recorded as the table spells the column (copies: adding it reloads the table cache) */
    char *tn = strdup(t->name), *cn = strdup(t->cols[c]);
    rc = tn && cn ? tsync__table_add_counter(s, tn, cn) : tsync__err(TSYNC_ENOMEM, "out of memory");
    free(tn);
    free(cn);
    if (rc) return refuse_last(m, rc);
    m->added = 1;
    return 0;
}

/* Seals local changes (so they have their clocks) and applies the parked changes that fit now. */
static int catch_up(run *m)
{
    if (!m->added) return 0;
    m->added = 0;
    int rc = tsync__seal_locked(m->s, NULL);
    if (rc == 0) rc = tsync__unpark(m->s, NULL);
    return rc;
}

/* ---------------------------------------------------------------- running a file */

/* Skips whitespace and comments. */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
        } else {
            return p;
        }
    }
}

/* The next word or quoted name of SQL text into out (unquoted). */
static const char *next_word(const char *p, char *out, size_t n)
{
    p = skip_space(p);
    size_t o = 0;
    char q = *p == '"' ? '"' : *p == '`' ? '`' : *p == '[' ? ']' : *p == '\'' ? '\'' : 0;
    if (q) {
        for (p++; *p; p++) {
            if (*p == q) {
                if (q != ']' && p[1] == q) {
                    p++;
                } else {
                    p++;
                    break;
                }
            }
            if (o + 1 < n) out[o++] = *p;
        }
    } else if (*p == '.' || *p == ';' || *p == '(') {
        if (o + 1 < n) out[o++] = *p;
        p++;
    } else {
        while (*p && (isalnum((unsigned char)*p) || *p == '_' || *p == '$')) {
            if (o + 1 < n) out[o++] = *p;
            p++;
        }
    }
    out[o] = 0;
    return p;
}

/* "ALTER TABLE t DROP [COLUMN] c" on a replicated table: SQLite refuses it anyway (the capture
 * triggers name every column), with a message about a trigger; say what it means instead. */
static int explain_drop_column(run *m, const char *sql)
{
    char w[4][256], table[256], col[256];
    const char *p = next_word(sql, w[0], sizeof w[0]);
    p = next_word(p, w[1], sizeof w[1]);
    if (strcasecmp(w[0], "ALTER") || strcasecmp(w[1], "TABLE")) return 0;
    p = next_word(p, table, sizeof table);
    const char *q = next_word(p, w[2], sizeof w[2]);
    if (!strcmp(w[2], ".")) {
        p = next_word(q, table, sizeof table);
        q = next_word(p, w[2], sizeof w[2]);
    }
    if (strcasecmp(w[2], "DROP")) return 0;
    q = next_word(q, col, sizeof col);
    if (!strcasecmp(col, "COLUMN")) next_word(q, col, sizeof col);
    if (!is_replicated(m, table)) return 0;
    return refuse(m, TSYNC_EUNSUPPORTED,
                  "drops column %s of replicated table %s; tills on older versions keep writing "
                  "it: leave the column in place and stop using it",
                  col, table);
}

static int schema_cookie(tsync_store *s, int *v)
{
    sqlite3_stmt *st = tsync__prep(s, "PRAGMA schema_version");
    if (!st) return TSYNC_EIO;
    int x = sqlite3_step(st);
    *v = x == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return x == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, x, "read schema version");
}

static int run_file(run *m, const mfile *f)
{
    tsync_store *s = m->s;
    m->file = f;
    for (int i = 0; i < m->nshapes; i++) m->shapes[i].file_cols = m->shapes[i].ncols;
    const char *tail = f->text, *counted = f->text;
    int rc = 0;
    m->line = 1;
    while (rc == 0) {
        const char *start = skip_space(tail);
        if (!*start) break;
        for (; counted < start; counted++) m->line += *counted == '\n';
        int before;
        if ((rc = schema_cookie(s, &before))) break;
        sqlite3_stmt *st = NULL;
        m->deny[0] = 0;
        m->active = 1;
        int x = sqlite3_prepare_v2(s->db, start, -1, &st, &tail);
        if (x == SQLITE_OK && st)
            while ((x = sqlite3_step(st)) == SQLITE_ROW) continue;
        m->active = 0;
        if (x == SQLITE_DONE) x = SQLITE_OK;
        char err[400];
        snprintf(err, sizeof err, "%s", sqlite3_errmsg(s->db));
        if (st) sqlite3_finalize(st);
        if (x != SQLITE_OK) {
            if (m->deny[0])
                rc = refuse(m, m->deny_code, "%s", m->deny);
            else if (!(rc = explain_drop_column(m, start)))
                rc = refuse(m, TSYNC_EINVAL, "%s", err);
            break;
        }
        if (!st) continue; /* an empty statement: ";" */
        int after;
        if ((rc = schema_cookie(s, &after))) break;
        if (after != before && (rc = follow_schema(m))) break;
        for (size_t i = 0; rc == 0 && i < m->nintents; i++)
            rc = m->intents[i].kind == I_REPLICATE ? do_replicate(m, &m->intents[i])
                                                   : do_counter(m, &m->intents[i]);
        intents_clear(m);
        if (rc == 0) rc = catch_up(m);
    }
    intents_clear(m);
    return rc;
}

static int record_applied(tsync_store *s, const mfile *f)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO tsync_migrations(number, name, hash, applied_ms) "
                                "VALUES(?1, ?2, ?3, ?4)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "record migration");
    sqlite3_bind_int64(st, 1, f->number);
    sqlite3_bind_text(st, 2, f->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, f->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)tsync__now_ms(s));
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "record migration");
}

static int count_parked(tsync_store *s, int64_t below, int64_t *n)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT count(*), max(id) FROM tsync_parked WHERE id <= ?1");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_int64(st, 1, below);
    int x = sqlite3_step(st);
    if (x == SQLITE_ROW) n[0] = sqlite3_column_int64(st, 0), n[1] = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    return x == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, x, "read parked changes");
}

/* Applies what files (sorted by number, no number twice; freed here) hold that this database
 * has not run, with every check of a folder run. */
static int migrate_files(tsync_store *s, mfile *files, size_t nfiles, tsync_migrate_report *report)
{
    size_t napplied = 0;
    applied_rec *applied = NULL;
    run m;
    memset(&m, 0, sizeof m);
    m.s = s;
    m.rep = report;
    int rc;
    if ((rc = tsync__begin(s))) {
        files_free(files, nfiles);
        return rc;
    }
    int64_t version = 0;
    if ((rc = load_applied(s, &applied, &napplied))) goto fail;
    if (napplied) version = applied[napplied - 1].number;
    if (report) report->from_version = report->to_version = version;

    /* What the folder says must agree with what this database ran. */
    size_t first = nfiles;
    for (size_t i = 0; i < nfiles; i++) {
        const mfile *f = &files[i];
        const applied_rec *a = NULL;
        for (size_t k = 0; k < napplied && !a; k++)
            if (applied[k].number == f->number) a = &applied[k];
        if (a && strcmp(a->hash, f->hash) != 0) {
            rc = tsync__err(TSYNC_EREFUSED,
                            "migration %s was changed after it was applied here (as %s, hash "
                            "%.16s…; the file now hashes to %.16s…): restore it, and put the "
                            "change in a new migration numbered above %lld",
                            f->name, a->name, a->hash, f->hash, (long long)version);
            goto fail;
        }
        if (!a && f->number < version) {
            rc = tsync__err(TSYNC_EREFUSED,
                            "migration %s is new but numbered below the schema version %lld of "
                            "this database: it would run out of order here and in order on a new "
                            "till; renumber it above %lld",
                            f->name, (long long)version, (long long)version);
            goto fail;
        }
        if (!a && first == nfiles) first = i;
    }
    if (nfiles && files[nfiles - 1].number < version)
        note(report, "this database is at version %lld, above the newest migration here (%lld)",
             (long long)version, (long long)files[nfiles - 1].number);
    if (first == nfiles) {
        tsync__rollback(s);
        goto done;
    }

    int64_t parked0[2] = {0, 0}, parked1[2] = {0, 0};
    if ((rc = count_parked(s, INT64_MAX, parked0))) goto fail;
    if ((rc = tsync__exec(s, "CREATE TABLE IF NOT EXISTS tsync_migrations(number INTEGER PRIMARY "
                             "KEY, name TEXT NOT NULL, hash TEXT NOT NULL, applied_ms INTEGER "
                             "NOT NULL)")))
        goto fail;
    /* Local changes are sealed under the schema they were made in. */
    if ((rc = tsync__seal_locked(s, NULL))) goto fail;
    if ((rc = shapes_init(&m))) goto fail;
    if ((rc = follow_schema(&m)) || (rc = catch_up(&m))) goto fail;
    functions_set(&m, 1);
    sqlite3_set_authorizer(s->db, authorize, &m);
    for (size_t i = first; rc == 0 && i < nfiles; i++) {
        rc = run_file(&m, &files[i]);
        if (rc == 0) rc = record_applied(s, &files[i]);
    }
    sqlite3_set_authorizer(s->db, NULL, NULL);
    functions_set(&m, 0);
    if (rc) goto fail;
    m.file = NULL;
    m.added = 1;
    if ((rc = catch_up(&m))) goto fail;
    if ((rc = count_parked(s, parked0[1], parked1))) goto fail;
    if ((rc = tsync__commit(s))) goto fail_committed;
    if (report) {
        report->to_version = files[nfiles - 1].number;
        report->unparked = (size_t)(parked0[0] - parked1[0]);
        report->applied = calloc(nfiles - first, sizeof *report->applied);
        for (size_t i = first; report->applied && i < nfiles; i++) {
            tsync_migration *a = &report->applied[report->napplied];
            a->number = files[i].number;
            a->name = strdup(files[i].name);
            memcpy(a->hash, files[i].hash, sizeof a->hash);
            if (a->name) report->napplied++;
        }
    }
done:
    files_free(files, nfiles);
    applied_free(applied, napplied);
    run_free(&m);
    return 0;

fail:
    tsync__rollback(s);
fail_committed:
    /* The rolled back transaction may have left a cache of tables that no longer exist. */
    tsync__tables_free(s);
    s->schema_version = -1;
    {
        /* keep the error of the failure, not of the refresh */
        const tsync_error *e = tsync_error_last();
        char msg[512];
        int code = e->code ? e->code : rc;
        snprintf(msg, sizeof msg, "%s", e->code ? e->message : "migration failed");
        tsync__tables_refresh(s);
        tsync__err(code, "%s", msg);
    }
    files_free(files, nfiles);
    applied_free(applied, napplied);
    run_free(&m);
    return rc;
}

int tsync_store_migrate(tsync_store *s, const char *dir, tsync_migrate_report *report)
{
    if (report &&
        tsync__check_version("tsync_migrate_report", report->version, TSYNC_MIGRATE_REPORT_VERSION))
        return TSYNC_EVERSION;
    if (report) tsync_migrate_report_clear(report);
    if (!dir || !*dir) return tsync__err(TSYNC_EINVAL, "no migrations folder given");
    mfile *files = NULL;
    size_t nfiles = 0;
    int rc = scan_dir(dir, &files, &nfiles, report);
    if (rc) return rc;
    return migrate_files(s, files, nfiles, report);
}

/* ---------------------------------------------------------------- signed migrations
 *
 * A migration signed by the shop admin is a trust record (crdt/cert.h): it is stored with the
 * certificates (store/trust.c checks the shop and the admin key), travels with them in the
 * handshake and in bundles, and every till of the shop runs the ones it has not run, in number
 * order, exactly as if they were the files of a migrations folder: the same checks (a number
 * applied here with other content, a new one below the version) and the same transaction, parked
 * changes that now fit applied in it. Of two signed with one number, the later-issued counts: the
 * admin's fix of one that failed on some till. A migration that cannot run here leaves everything
 * as it was; why is kept in tsync_meta for status, and the next signed migration to arrive runs
 * them again.
 */

static int meta_error_set(tsync_store *s, const char *msg)
{
    sqlite3_stmt *st;
    const char *sql =
        msg ? "INSERT OR REPLACE INTO tsync_meta(k, v) VALUES('signed_migration_error', ?1)"
            : "DELETE FROM tsync_meta WHERE k = 'signed_migration_error'";
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "record the signed migration state");
    if (msg) sqlite3_bind_text(st, 1, msg, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0
                             : tsync__err_sqlite(s->db, rc, "record the signed migration state");
}

/* The signed migrations this database holds for its shop, as files. */
static int signed_files(tsync_store *s, mfile **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    int rc = tsync__trust_enrolled(s, shop_id);
    if (rc <= 0) return rc;
    sqlite3_stmt *st;
    /* No table: the trust tables predate signed migrations, so there are none. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT body FROM tsync_signed_migrations WHERE shop_id = ?1 ORDER BY "
                           "number, id",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_blob(st, 1, shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    mfile *f = NULL;
    size_t n = 0, cap = 0;
    uint64_t last_issued = 0;
    rc = 0;
    int x;
    while (rc == 0 && (x = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__arena a = {0};
        tsync__trust_rec r;
        char err[TSYNC__ERRLEN];
        if (tsync__trust_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &r,
                                &a, err) != 0 ||
            r.kind != TSYNC__T_MIGRATION) {
            tsync__arena_free(&a);
            rc = tsync__err(TSYNC_ECORRUPT, "a stored signed migration is damaged: %s", err);
            break;
        }
        /* Two with one number: the later-issued replaces the other (the admin's fix of one that
         * failed somewhere). A till that ran the other sees a changed migration and says so. */
        if (n && f[n - 1].number == (int64_t)r.u.mig.number) {
            if (r.u.mig.issued_ms <= last_issued) {
                tsync__arena_free(&a);
                continue;
            }
            n--;
            free(f[n].name), free(f[n].text);
        }
        last_issued = r.u.mig.issued_ms;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            mfile *nf = realloc(f, cap * sizeof *nf);
            if (!nf) {
                tsync__arena_free(&a);
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            f = nf;
        }
        mfile *m = &f[n++];
        memset(m, 0, sizeof *m);
        m->number = (int64_t)r.u.mig.number;
        m->name = strndup(r.u.mig.name, r.u.mig.name_len);
        m->text = strndup((const char *)r.u.mig.sql, r.u.mig.sql_len);
        m->len = r.u.mig.sql_len;
        uint8_t h[TSYNC__HASH_BYTES];
        crypto_generichash(h, sizeof h, r.u.mig.sql, r.u.mig.sql_len, NULL, 0);
        tsync__hex(h, sizeof h, m->hash);
        tsync__arena_free(&a);
        if (!m->name || !m->text) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    sqlite3_finalize(st);
    if (rc) {
        files_free(f, n);
        return rc;
    }
    *out = f;
    *nout = n;
    return 0;
}

int tsync__migrate_signed_pending(tsync_store *s, tsync_migrate_report *report)
{
    if (report) tsync_migrate_report_clear(report);
    mfile *files = NULL;
    size_t nfiles = 0;
    int rc = signed_files(s, &files, &nfiles);
    if (rc == 0 && nfiles == 0) return 0;
    if (rc == 0) rc = migrate_files(s, files, nfiles, report);
    if (rc == TSYNC_EBUSY || rc == TSYNC_EIO || rc == TSYNC_ENOMEM) return rc;
    /* Applied (or refused): status says which, until the next run. */
    char msg[600];
    if (rc)
        snprintf(msg, sizeof msg, "%s",
                 tsync_error_last()->code ? tsync_error_last()->message : "?");
    int mrc = meta_error_set(s, rc ? msg : NULL);
    if (rc) tsync__err(rc, "%s", msg);
    return rc ? rc : mrc;
}

int tsync_store_migrate_signed(tsync_store *s, const uint8_t *rec, size_t len,
                               tsync_migrate_report *report)
{
    if (report &&
        tsync__check_version("tsync_migrate_report", report->version, TSYNC_MIGRATE_REPORT_VERSION))
        return TSYNC_EVERSION;
    if (report) tsync_migrate_report_clear(report);
    if (rec) {
        tsync__arena a = {0};
        tsync__trust_rec r;
        char err[TSYNC__ERRLEN];
        int rc = tsync__trust_decode(rec, len, &r, &a, err);
        tsync__arena_free(&a);
        if (rc) return tsync__err(rc, "%s", err);
        if (r.kind != TSYNC__T_MIGRATION)
            return tsync__err(TSYNC_EINVAL, "this is a %s, not a signed migration",
                              tsync__trust_label(r.kind));
        if ((rc = tsync__trust_import(s, rec, len, err))) return tsync__err(rc, "%s", err);
    }
    return tsync__migrate_signed_pending(s, report);
}

int tsync_store_signed_migration_error(char **out, tsync_store *s)
{
    *out = NULL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM tsync_meta WHERE k = 'signed_migration_error'", -1,
                           &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "read the signed migration state");
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        *out = strdup((const char *)sqlite3_column_text(st, 0));
        if (!*out) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    sqlite3_finalize(st);
    return rc;
}
