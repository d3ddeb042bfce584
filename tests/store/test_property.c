/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_property.c — property tests of convergence: random schedules of writes, seals
 * and bundle deliveries between 3 to 5 replicas, checked against each other and against a
 * sequential reference model written here, independently of how the library encodes anything.
 *
 * A schedule writes inserts, field updates, counter changes, recounts and deletes on a few keys
 * (so writes collide), seals at random points, and moves bundles between random pairs: direct
 * syncs, full bundles (all duplicates), bundles made for one replica's state and delivered to
 * another (gaps, so batches are held), bundles made from stale states, bundles kept around and
 * re-merged later, and bundles dropped. It ends with everyone syncing with everyone until nothing
 * more merges. Then every replica must show the same rows (th_hash), every counter must equal the
 * sum of all deltas applied anywhere, and the rows must be what the model says.
 *
 * The model records every operation as an event: its site, the HLC it got when sealed (read back
 * from the batch), what it wrote, and what its replica had observed when it acted (the replica's
 * version vector). Then a field is the value of the write with the highest (hlc, site id
 * bytewise); a row exists iff some add (insert or update) was observed by no delete of the row;
 * a counter is the sum of the deltas; an insert writes every column (defaults for those not
 * given). The same model evaluated on one replica's observed events must match that replica's
 * rows at every step, not only at the end, which pins a failure to the merge that caused it.
 *
 * Sealing folds a replica's writes to one row into one row change with one clock, so the events
 * it folds share that clock; among them the later write wins (the batch carries final values),
 * and each sees the ones before it (an insert and a delete folded together leave no row).
 * Decisions depend only on the seed and on causal facts (whether a row exists, counter values),
 * never on clocks, so a seed replays the same schedule; clocks come from the wall clock, and the
 * model reads the real ones, so the comparisons hold whatever they are.
 *
 * TSYNC_SEED=<n> runs exactly one schedule with seed n; TSYNC_PROP_SCHEDULES=<n> runs n short
 * schedules and 2n/5 long ones (default 2000); TSYNC_PROP_SCALE=<x> scales the defaults;
 * TSYNC_PROP_TRACE=1 prints every step. See docs/TESTING.md.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt/crdt.h"
#include "tests/lib/helpers.h"

#define MAXR   5 /* replicas */
#define MAXK   6 /* keys */
#define POOL   8 /* bundles in flight */
#define STATES 6 /* saved (soon stale) states */

/* Shapes of schedules: steps (writes, deliveries, seals) and keys. */
typedef struct {
    const char *test;
    int min_steps, max_steps, max_keys;
} shape;
static const shape SHORT = {"short_schedules", 6, 24, 4};
static const shape LONG = {"long_schedules", 60, 220, 6};

enum { EV_INS, EV_UPD, EV_DEL };

typedef struct {
    int site; /* replica index */
    int kind;
    int key;
    uint64_t seq; /* the origin's batch holding it; 0 while pending */
    uint64_t lop; /* its replica's operation number: orders the writes a batch folds */
    uint64_t hlc;
    int wname, wprice; /* fields written */
    char name[24];     /* the values written, as SQL literals: NULL, 'text', X'B10B', 12, 1.25 */
    char price[24];
    int64_t delta;      /* counter delta */
    uint64_t obs[MAXR]; /* the replica's version vector when it acted */
    uint64_t floor_hlc; /* highest clock among the events it had observed */
    const char *sql;    /* what ran (static text, for failure dumps) */
} event;

typedef struct {
    tsync_store *s;
    uint8_t site[TSYNC_SITE_ID_BYTES];
    uint64_t seq;      /* own batches resolved so far */
    uint64_t last_hlc; /* highest clock of its own events */
    uint64_t nops;     /* operations done */
    int npending;      /* events not sealed yet */
    int pkeys;         /* bit k: some event on key k is pending */
} replica;

typedef struct {
    uint8_t *b;
    size_t len;
    int from;
} inflight;

typedef struct {
    uint64_t seed, rng;
    const char *test;
    char *dir;
    int nrep, nkeys;
    replica rep[MAXR];
    event *ev;
    size_t nev, evcap;
    inflight pool[POOL];
    int npool;
    char *states[STATES];
    int nstates;
    int valctr;
    void *tmp[4];       /* buffers in use by the current step, freed by sched_free if it fails */
    tsync__arena arena; /* for decoding a batch; likewise */
    /* statistics */
    size_t merges, held, duplicates, batches;
} sched;

typedef struct {
    int exists;
    const event *name, *price; /* winning writes, NULL when never written */
    int64_t stock;
} mrow;

/* The schedule running in this process, so that the .fini hook can name its seed and clean its
 * folder when an assertion (possibly in a helper) stops the test midway. */
static sched *g_cur;

static void pfail_dump(sched *S);

#define PCHECK(S, cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "schedule with seed %llu failed:\n  ", (unsigned long long)(S)->seed); \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            pfail_dump(S);                                                                         \
            cr_assert_fail("property violated (seed %llu), see above",                             \
                           (unsigned long long)(S)->seed);                                         \
        }                                                                                          \
    } while (0)

/* TSYNC_PROP_TRACE=1 prints every step of a schedule (use with TSYNC_SEED). */
static int g_trace;
#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (g_trace) fprintf(stderr, "  . " __VA_ARGS__);                                          \
    } while (0)

static uint64_t rnd(sched *S, uint64_t n)
{
    return th_rand(&S->rng) % n;
}

static int chance(sched *S, int percent)
{
    return (int)rnd(S, 100) < percent;
}

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

/* Keeps p (malloc'd) so that a failing check, which leaves the step midway, frees it too. */
static void *keep(sched *S, void *p)
{
    for (int i = 0; i < 4; i++)
        if (!S->tmp[i]) return S->tmp[i] = p;
    cr_assert_fail("too many temporary buffers");
    return p;
}

/* Hands p back to the caller. */
static void *release(sched *S, void *p)
{
    for (int i = 0; i < 4; i++)
        if (S->tmp[i] == p) S->tmp[i] = NULL;
    return p;
}

static void drop(sched *S, void *p)
{
    free(release(S, p));
}

/* ---------------------------------------------------------------- reading replicas */

static int replica_of_site(const sched *S, const void *site)
{
    for (int i = 0; i < S->nrep; i++)
        if (memcmp(S->rep[i].site, site, TSYNC_SITE_ID_BYTES) == 0) return i;
    return -1;
}

/* The replica's version vector: highest contiguous seq merged (or sealed) per replica. */
static void read_vector(sched *S, int r, uint64_t vec[MAXR])
{
    memset(vec, 0, MAXR * sizeof *vec);
    sqlite3 *db = tsync_store_sqlite(S->rep[r].s);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT site, seq FROM tsync_sites", -1, &st, NULL);
    cr_assert(rc == SQLITE_OK, "read vector: %s", sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 1);
        if (sqlite3_column_bytes(st, 0) != TSYNC_SITE_ID_BYTES) continue;
        int who = replica_of_site(S, sqlite3_column_blob(st, 0));
        if (who < 0 && seq == 0) continue;
        if (who < 0) sqlite3_finalize(st);
        PCHECK(S, who >= 0, "replica %d has batches of a site that is no replica", r);
        vec[who] = (uint64_t)seq;
    }
    sqlite3_finalize(st);
}

static int event_key_of(const sched *S, const tsync__val *v)
{
    for (int k = 0; k < S->nkeys; k++) {
        char kb[16];
        snprintf(kb, sizeof kb, "k%d", k);
        if (v->type == TSYNC__V_TEXT && v->n == strlen(kb) && memcmp(v->p, kb, v->n) == 0) return k;
    }
    return -1;
}

/* After anything that may have sealed replica r: gives its pending events their seq and clock,
 * read from the batch it sealed. Exactly one new batch of r must exist when something was
 * pending, and none otherwise (a merge must not be captured as a local change). */
static void resolve(sched *S, int r)
{
    replica *R = &S->rep[r];
    sqlite3 *db = tsync_store_sqlite(R->s);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT l.seq, l.body FROM tsync_log l JOIN tsync_sites s ON "
                                "s.idx = l.site WHERE s.site = ?1 AND l.seq > ?2 ORDER BY l.seq",
                                -1, &st, NULL);
    cr_assert(rc == SQLITE_OK, "read log: %s", sqlite3_errmsg(db));
    sqlite3_bind_blob(st, 1, R->site, TSYNC_SITE_ID_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)R->seq);
    int nnew = 0;
    uint64_t seq = 0;
    uint8_t *body = NULL;
    size_t blen = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        nnew++;
        seq = (uint64_t)sqlite3_column_int64(st, 0);
        blen = (size_t)sqlite3_column_bytes(st, 1);
        free(body);
        body = malloc(blen + 1);
        cr_assert(body);
        memcpy(body, sqlite3_column_blob(st, 1), blen);
    }
    sqlite3_finalize(st);
    if (R->npending == 0 || nnew == 0) {
        free(body);
        PCHECK(S, R->npending || nnew == 0,
               "replica %d sealed %d batch(es) with nothing written locally", r, nnew);
        return; /* nothing was pending, or it still is */
    }
    keep(S, body);
    PCHECK(S, nnew == 1 && seq == R->seq + 1,
           "replica %d: %d new local batches (last seq %llu) for one group of pending writes", r,
           nnew, (unsigned long long)seq);
    tsync__batch b;
    char err[TSYNC__ERRLEN];
    rc = tsync__batch_decode(body, blen, &b, &S->arena, err);
    PCHECK(S, rc == 0, "replica %d: own batch %llu does not decode: %s", r, (unsigned long long)seq,
           err);
    int nkeys = __builtin_popcount((unsigned)R->pkeys);
    PCHECK(S, b.seq == seq && (int)b.nrows == nkeys,
           "replica %d: batch %llu has %u row changes for writes pending on %d rows", r,
           (unsigned long long)seq, b.nrows, nkeys);
    for (uint32_t i = 0; i < b.nrows; i++) {
        const tsync__brow *row = &b.rows[i];
        const tsync__btable *t = &b.tables[row->table];
        PCHECK(S, t->name_len == 8 && memcmp(t->name, "products", 8) == 0,
               "replica %d: batch %llu has a change of table %.*s", r, (unsigned long long)seq,
               (int)t->name_len, t->name);
        int k = event_key_of(S, &row->pk[0]);
        PCHECK(S, k >= 0 && (R->pkeys & (1 << k)),
               "replica %d: batch %llu changes a row with no pending write", r,
               (unsigned long long)seq);
        R->pkeys &= ~(1 << k);
        for (size_t j = 0; j < S->nev; j++) {
            event *e = &S->ev[j];
            if (e->site != r || e->seq || e->key != k) continue;
            e->seq = seq;
            e->hlc = row->hlc;
            /* A change must be later than everything its replica had seen, or LWW would let
             * an older write beat a newer one that saw it. */
            PCHECK(S, e->hlc > e->floor_hlc && e->hlc > R->last_hlc,
                   "replica %d: %s of k%d got clock %llu, not above what it had seen (%llu) or "
                   "its own last clock (%llu)",
                   r, e->sql, k, (unsigned long long)e->hlc, (unsigned long long)e->floor_hlc,
                   (unsigned long long)R->last_hlc);
            R->npending--;
        }
    }
    PCHECK(S, R->npending == 0, "replica %d: batch %llu left %d writes unsealed", r,
           (unsigned long long)seq, R->npending);
    for (uint32_t i = 0; i < b.nrows; i++)
        if (b.rows[i].hlc > R->last_hlc) R->last_hlc = b.rows[i].hlc;
    R->seq = seq;
    S->batches++;
    tsync__arena_free(&S->arena);
    drop(S, body);
}

/* ---------------------------------------------------------------- the reference model */

/* Whether replica `viewer` (with vector vec) has event e; -1 means the union of all replicas.
 * A replica always has its own writes, sealed or not. */
static int in_view(const event *e, int viewer, const uint64_t *vec)
{
    return e->site == viewer || (e->seq && vec[e->site] >= e->seq);
}

/* Whether event d had observed event a when it happened. */
static int observed(const event *d, const event *a)
{
    if (a->site == d->site) return a->lop < d->lop;
    return a->seq && d->obs[a->site] >= a->seq;
}

/* a beats b in LWW order: (hlc, site id bytewise); writes folded into one row change share a
 * clock and the later one wins. An unsealed write is the newest its replica has (its clock will
 * be above everything that replica observed). */
static int lww_beats(const sched *S, const event *a, const event *b)
{
    uint64_t ha = a->seq ? a->hlc : UINT64_MAX, hb = b->seq ? b->hlc : UINT64_MAX;
    if (ha != hb) return ha > hb;
    int c = memcmp(S->rep[a->site].site, S->rep[b->site].site, TSYNC_SITE_ID_BYTES);
    if (c) return c > 0;
    return a->lop > b->lop;
}

static void model_row(const sched *S, int key, int viewer, const uint64_t *vec, mrow *m)
{
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < S->nev; i++) {
        const event *e = &S->ev[i];
        if (e->key != key || !in_view(e, viewer, vec)) continue;
        m->stock += e->delta;
        if (e->wname && (!m->name || lww_beats(S, e, m->name))) m->name = e;
        if (e->wprice && (!m->price || lww_beats(S, e, m->price))) m->price = e;
    }
    for (size_t i = 0; i < S->nev && !m->exists; i++) {
        const event *a = &S->ev[i];
        if (a->key != key || a->kind == EV_DEL || !in_view(a, viewer, vec)) continue;
        int removed = 0;
        for (size_t j = 0; j < S->nev && !removed; j++) {
            const event *d = &S->ev[j];
            if (d->key != key || d->kind != EV_DEL || !in_view(d, viewer, vec)) continue;
            if (observed(d, a)) removed = 1;
        }
        if (!removed) m->exists = 1;
    }
}

/* Highest clock among the sealed events a replica has observed. */
static uint64_t view_max_hlc(const sched *S, const uint64_t *vec)
{
    uint64_t h = 0;
    for (size_t i = 0; i < S->nev; i++) {
        const event *e = &S->ev[i];
        if (e->seq && vec[e->site] >= e->seq && e->hlc > h) h = e->hlc;
    }
    return h;
}

/* A column's value as the SQL literal the test writes (so values compare as strings). */
static void fmt_col(sqlite3_stmt *st, int i, char *out, size_t n)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
        snprintf(out, n, "NULL");
        break;
    case SQLITE_INTEGER:
        snprintf(out, n, "%lld", (long long)sqlite3_column_int64(st, i));
        break;
    case SQLITE_FLOAT:
        snprintf(out, n, "%.2f", sqlite3_column_double(st, i));
        break;
    case SQLITE_TEXT:
        snprintf(out, n, "'%s'", (const char *)sqlite3_column_text(st, i));
        break;
    case SQLITE_BLOB: {
        const uint8_t *p = sqlite3_column_blob(st, i);
        int len = sqlite3_column_bytes(st, i);
        size_t o = (size_t)snprintf(out, n, "X'");
        for (int j = 0; j < len && o + 4 < n; j++)
            o += (size_t)snprintf(out + o, n - o, "%02X", p[j]);
        snprintf(out + o, n - o, "'");
        break;
    }
    default:
        snprintf(out, n, "(type %d)", sqlite3_column_type(st, i));
    }
}

static void fmt_write(const event *e, int name, char *out, size_t n)
{
    snprintf(out, n, "%s", !e ? "(never written)" : name ? e->name : e->price);
}

/* Unique values (v is unique in the schedule) of every type SQLite stores. */
static void name_literal(sched *S, int v, char *out, size_t n)
{
    if (chance(S, 20)) {
        char raw[16];
        int len = snprintf(raw, sizeof raw, "b%d", v);
        size_t o = (size_t)snprintf(out, n, "X'");
        for (int j = 0; j < len; j++)
            o += (size_t)snprintf(out + o, n - o, "%02X", (uint8_t)raw[j]);
        snprintf(out + o, n - o, "'");
    } else {
        snprintf(out, n, "'n%d'", v);
    }
}

static void price_literal(sched *S, int v, char *out, size_t n)
{
    if (chance(S, 25))
        snprintf(out, n, "%d.25", 1000 + v);
    else
        snprintf(out, n, "%d", 1000 + v);
}

/* Compares replica r with the model over what it has observed (viewer -1 and vec of all: the
 * final state). */
static void check_replica_view(sched *S, int r, int viewer, const uint64_t *vec)
{
    sqlite3 *db = tsync_store_sqlite(S->rep[r].s);
    int seen[MAXK] = {0};
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT id, name, price, stock FROM products ORDER BY id", -1,
                                &st, NULL);
    cr_assert(rc == SQLITE_OK, "read rows: %s", sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        int k = id && id[0] == 'k' && id[1] >= '0' && id[1] <= '9' && !id[2] ? id[1] - '0' : -1;
        if (k < 0 || k >= S->nkeys) sqlite3_finalize(st);
        PCHECK(S, k >= 0 && k < S->nkeys, "replica %d shows a row with unexpected key", r);
        seen[k] = 1;
        mrow m;
        model_row(S, k, viewer, vec, &m);
        char gn[40], gp[40], gs[40], wn[40], wp[40];
        fmt_col(st, 1, gn, sizeof gn);
        fmt_col(st, 2, gp, sizeof gp);
        fmt_col(st, 3, gs, sizeof gs);
        fmt_write(m.name, 1, wn, sizeof wn);
        fmt_write(m.price, 0, wp, sizeof wp);
        int ok = m.exists && strcmp(gn, wn) == 0 && strcmp(gp, wp) == 0 &&
                 sqlite3_column_type(st, 3) == SQLITE_INTEGER &&
                 sqlite3_column_int64(st, 3) == m.stock;
        if (!ok) sqlite3_finalize(st);
        PCHECK(S, ok,
               "replica %d, row k%d shows name=%s price=%s stock=%s; the model says %s"
               "name=%s price=%s stock=%lld%s",
               r, k, gn, gp, gs, m.exists ? "" : "there is no such row (hidden values: ", wn, wp,
               (long long)m.stock, m.exists ? "" : ")");
    }
    sqlite3_finalize(st);
    for (int k = 0; k < S->nkeys; k++) {
        if (seen[k]) continue;
        mrow m;
        model_row(S, k, viewer, vec, &m);
        PCHECK(S, !m.exists, "replica %d: row k%d is missing; the model says it exists", r, k);
    }
}

static void check_replica(sched *S, int r)
{
    uint64_t vec[MAXR];
    read_vector(S, r, vec);
    check_replica_view(S, r, r, vec);
}

/* Prints the schedule's history (every event, as the model sees it) and how to replay it. */
static void pfail_dump(sched *S)
{
    fprintf(stderr, "  %d replicas, %d keys; site ids:", S->nrep, S->nkeys);
    for (int r = 0; r < S->nrep; r++) {
        char h[9];
        for (int i = 0; i < 4; i++) snprintf(h + 2 * i, 3, "%02x", S->rep[r].site[i]);
        fprintf(stderr, " r%d=%s..", r, h);
    }
    fprintf(stderr, "\n  events (hlc as ms.logical; obs = the actor's version vector):\n");
    for (size_t i = 0; i < S->nev && i < 400; i++) {
        const event *e = &S->ev[i];
        fprintf(stderr, "  #%zu r%d seq %llu hlc %llu.%llu k%d %s", i, e->site,
                (unsigned long long)e->seq, (unsigned long long)(e->hlc >> 16),
                (unsigned long long)(e->hlc & 0xffff), e->key, e->sql);
        if (e->wname) fprintf(stderr, " name=%s", e->name);
        if (e->wprice) fprintf(stderr, " price=%s", e->price);
        fprintf(stderr, " delta=%lld obs=[", (long long)e->delta);
        for (int r = 0; r < S->nrep; r++)
            fprintf(stderr, "%s%llu", r ? "," : "", (unsigned long long)e->obs[r]);
        fprintf(stderr, "]\n");
    }
    fprintf(stderr, "  replay: TSYNC_SEED=%llu test_property --filter 'property/%s'\n",
            (unsigned long long)S->seed, S->test);
}

/* ---------------------------------------------------------------- operations */

static event *new_event(sched *S)
{
    if (S->nev == S->evcap) {
        S->evcap = S->evcap ? S->evcap * 2 : 64;
        S->ev = realloc(S->ev, S->evcap * sizeof *S->ev);
        cr_assert(S->ev);
    }
    event *e = &S->ev[S->nev++];
    memset(e, 0, sizeof *e);
    return e;
}

static void seal_replica(sched *S, int r)
{
    size_t n = 0;
    TRACE("seal r%d\n", r);
    int rc = tsync_store_seal(S->rep[r].s, &n);
    PCHECK(S, rc == 0, "seal of replica %d: %s", r, errmsg());
    PCHECK(S, n == (S->rep[r].npending ? 1u : 0u),
           "seal of replica %d made %zu batches for %d pending writes", r, n, S->rep[r].npending);
    resolve(S, r);
}

static void run_sql(sched *S, int r, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(tsync_store_sqlite(S->rep[r].s), sql, NULL, NULL, &err);
    PCHECK(S, rc == SQLITE_OK, "replica %d: %s: %s", r, sql, err ? err : "?");
}

static int row_exists(sched *S, int r, int k)
{
    char q[80];
    snprintf(q, sizeof q, "SELECT count(*) FROM products WHERE id='k%d'", k);
    return th_int(S->rep[r].s, q, 0) > 0;
}

/* A new event of replica r on key k, observing vec, pending until sealed. */
static event *add_event(sched *S, int r, int k, int kind, const uint64_t *vec, const char *what)
{
    event *e = new_event(S);
    e->site = r;
    e->key = k;
    e->kind = kind;
    e->sql = what;
    memcpy(e->obs, vec, sizeof e->obs);
    e->floor_hlc = view_max_hlc(S, vec);
    e->lop = ++S->rep[r].nops;
    S->rep[r].npending++;
    S->rep[r].pkeys |= 1 << k;
    return e;
}

/* One random write at replica r on a random key (which may have writes pending: sealing folds
 * them). Values written are unique in the schedule, so
 * an update always changes the value and whether a field is written never depends on which
 * earlier write won (which depends on clocks). */
static void do_op(sched *S, int r)
{
    int k = (int)rnd(S, (uint64_t)S->nkeys);
    int k2 = (k + 1 + (int)rnd(S, (uint64_t)S->nkeys - 1)) % S->nkeys; /* for a key change */
    int what = (int)rnd(S, 100);
    uint64_t vec[MAXR];
    read_vector(S, r, vec);
    mrow m, m2;
    model_row(S, k, r, vec, &m);
    model_row(S, k2, r, vec, &m2);
    int exists = row_exists(S, r, k);
    PCHECK(S, exists == m.exists, "replica %d: row k%d %s, the model says it %s", r, k,
           exists ? "exists" : "does not exist", m.exists ? "does" : "does not");
    char sql[300];
    int v = ++S->valctr;
    char name[24], price[24];
    name_literal(S, v, name, sizeof name);
    price_literal(S, v, price, sizeof price);
    event *e;
    if (!exists) {
        int gname = chance(S, 70), gprice = chance(S, 60), gstock = chance(S, 70);
        int64_t stock = gstock ? (int64_t)rnd(S, 30) : 0;
        e = add_event(S, r, k, EV_INS, vec, "insert");
        e->wname = e->wprice = 1; /* an insert writes every column */
        snprintf(e->name, sizeof e->name, "%s", gname ? name : "NULL");
        snprintf(e->price, sizeof e->price, "%s", gprice ? price : "NULL");
        /* The delta is from the value this till saw: 0 for a key it never saw, the hidden
         * counter of a row it saw deleted (a delete does not reset a counter). */
        e->delta = stock - m.stock;
        snprintf(sql, sizeof sql, "INSERT INTO products(id%s%s%s) VALUES('k%d'",
                 gname ? ",name" : "", gprice ? ",price" : "", gstock ? ",stock" : "", k);
        size_t o = strlen(sql);
        if (gname) o += (size_t)snprintf(sql + o, sizeof sql - o, ",%s", name);
        if (gprice) o += (size_t)snprintf(sql + o, sizeof sql - o, ",%s", price);
        if (gstock) o += (size_t)snprintf(sql + o, sizeof sql - o, ",%lld", (long long)stock);
        snprintf(sql + o, sizeof sql - o, ")");
    } else if (what < 18) {
        add_event(S, r, k, EV_DEL, vec, "delete");
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id='k%d'", k);
    } else if (what < 45) {
        int f = 1 + (int)rnd(S, 3); /* name, price or both */
        e = add_event(S, r, k, EV_UPD, vec, "update fields");
        e->wname = f & 1;
        e->wprice = (f & 2) != 0;
        snprintf(e->name, sizeof e->name, "%s", name);
        snprintf(e->price, sizeof e->price, "%s", price);
        snprintf(sql, sizeof sql, "UPDATE products SET %s%s%s%s%s WHERE id='k%d'",
                 e->wname ? "name=" : "", e->wname ? name : "", f == 3 ? ", " : "",
                 e->wprice ? "price=" : "", e->wprice ? price : "", k);
    } else if (what < 68) {
        e = add_event(S, r, k, EV_UPD, vec, "sale or return");
        e->delta = (int64_t)rnd(S, 11) - 5;
        snprintf(sql, sizeof sql, "UPDATE products SET stock=stock%+lld WHERE id='k%d'",
                 (long long)e->delta, k);
    } else if (what < 80) {
        int64_t to = (int64_t)rnd(S, 40);
        e = add_event(S, r, k, EV_UPD, vec, "recount");
        e->delta = to - m.stock;
        snprintf(sql, sizeof sql, "UPDATE products SET stock=%lld WHERE id='k%d'", (long long)to,
                 k);
    } else if (what < 88) {
        e = add_event(S, r, k, EV_UPD, vec, "rename and sell");
        e->delta = (int64_t)rnd(S, 11) - 5;
        e->wname = 1;
        snprintf(e->name, sizeof e->name, "%s", name);
        snprintf(sql, sizeof sql, "UPDATE products SET name=%s, stock=stock%+lld WHERE id='k%d'",
                 name, (long long)e->delta, k);
    } else if (what < 95) {
        /* INSERT OR REPLACE of an existing row: an update of every column, those not given
         * taking their defaults. */
        int gprice = chance(S, 50);
        int64_t stock = (int64_t)rnd(S, 30);
        e = add_event(S, r, k, EV_UPD, vec, "insert or replace");
        e->wname = e->wprice = 1;
        snprintf(e->name, sizeof e->name, "%s", name);
        snprintf(e->price, sizeof e->price, "%s", gprice ? price : "NULL");
        e->delta = stock - m.stock;
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO products(id, name, %sstock) "
                 "VALUES('k%d', %s, %s%s%lld)",
                 gprice ? "price, " : "", k, name, gprice ? price : "", gprice ? ", " : "",
                 (long long)stock);
    } else if (!row_exists(S, r, k2)) {
        /* A key change: a delete of the old key and an insert of the new one carrying the
         * row's values as this replica shows them. */
        PCHECK(S, !m2.exists, "replica %d: row k%d is missing; the model says it exists", r, k2);
        PCHECK(S, m.name && m.price, "replica %d: row k%d exists with fields never written", r, k);
        event wn = *m.name, wp = *m.price; /* copies: adding events may move the array */
        add_event(S, r, k, EV_DEL, vec, "key change (old key)");
        e = add_event(S, r, k2, EV_INS, vec, "key change (new key)");
        e->wname = e->wprice = 1;
        snprintf(e->name, sizeof e->name, "%s", wn.name);
        snprintf(e->price, sizeof e->price, "%s", wp.price);
        e->delta = m.stock - m2.stock;
        snprintf(sql, sizeof sql, "UPDATE products SET id='k%d' WHERE id='k%d'", k2, k);
    } else {
        e = add_event(S, r, k, EV_UPD, vec, "sale or return");
        e->delta = -1;
        snprintf(sql, sizeof sql, "UPDATE products SET stock=stock-1 WHERE id='k%d'", k);
    }
    TRACE("r%d: %s  (event #%zu)\n", r, sql, S->nev - 1);
    run_sql(S, r, sql);
    check_replica(S, r);
    if (chance(S, 40)) seal_replica(S, r);
}

/* Closes and reopens a replica: clocks, vector and pending changes must survive. */
static void reopen(sched *S, int r)
{
    char name[16];
    snprintf(name, sizeof name, "r%d.db", r);
    TRACE("reopen r%d\n", r);
    tsync_store_free(S->rep[r].s);
    S->rep[r].s = NULL;
    S->rep[r].s = th_open_products(th_path(S->dir, name));
    PCHECK(S, memcmp(tsync_store_site_id(S->rep[r].s), S->rep[r].site, TSYNC_SITE_ID_BYTES) == 0,
           "replica %d has a new site id after reopening", r);
    check_replica(S, r);
}

static char *state_of(sched *S, int r)
{
    char *st = NULL;
    int rc = tsync_store_state_json(&st, S->rep[r].s);
    PCHECK(S, rc == 0, "state of replica %d: %s", r, errmsg());
    return st;
}

/* A bundle from replica `from` of what a peer with state `since` lacks (all with NULL). */
static uint8_t *bundle_of(sched *S, int from, const char *since, size_t *len)
{
    uint8_t *b = NULL;
    int rc = tsync_store_bundle(&b, len, S->rep[from].s, since, NULL);
    PCHECK(S, rc == 0, "bundle of replica %d: %s", from, errmsg());
    keep(S, b);
    resolve(S, from); /* bundling seals first */
    return release(S, b);
}

static size_t merge_into(sched *S, int to, const uint8_t *b, size_t len)
{
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(S->rep[to].s, b, len, &rep);
    TRACE("merge into r%d: %zu merged, %zu held, %zu duplicates\n", to, rep.merged, rep.held,
          rep.duplicates);
    int ok = rc == 0 && rep.refused == 0 && rep.parked == 0;
    char why[600] = "";
    if (!ok) {
        snprintf(why, sizeof why, "merge into replica %d: rc %d (%s), %zu refused, %zu parked; %s",
                 to, rc, rc ? errmsg() : "ok", rep.refused, rep.parked,
                 rep.nmessages ? rep.messages[0] : "no message");
        tsync_merge_report_clear(&rep);
    }
    PCHECK(S, ok, "%s", why);
    size_t merged = rep.merged;
    S->merges++;
    S->held += rep.held;
    S->duplicates += rep.duplicates;
    tsync_merge_report_clear(&rep);
    resolve(S, to); /* merging seals local changes first */
    check_replica(S, to);
    return merged;
}

static size_t sync_pair(sched *S, int from, int to)
{
    char *st = keep(S, state_of(S, to));
    size_t len;
    TRACE("sync r%d -> r%d\n", from, to);
    uint8_t *b = keep(S, bundle_of(S, from, st, &len));
    size_t n = merge_into(S, to, b, len);
    drop(S, b);
    drop(S, st);
    return n;
}

static void pool_remove(sched *S, int i)
{
    free(S->pool[i].b);
    S->pool[i] = S->pool[--S->npool];
}

/* Makes a bundle and keeps it in flight: for some replica's current state, for a saved (by now
 * perhaps stale) state, or everything. */
static void stash(sched *S)
{
    int from = (int)rnd(S, (uint64_t)S->nrep);
    int how = (int)rnd(S, 3);
    char *since = NULL;
    if (how == 0)
        since = keep(S, state_of(S, (int)rnd(S, (uint64_t)S->nrep)));
    else if (how == 1 && S->nstates)
        since = keep(S, strdup(S->states[rnd(S, (uint64_t)S->nstates)]));
    if (S->npool == POOL) pool_remove(S, (int)rnd(S, POOL)); /* lost in transit */
    TRACE("stash a bundle of r%d (%s)\n", from,
          how == 0 ? "for a current state"
          : since  ? "for a saved state"
                   : "everything");
    size_t len;
    uint8_t *b = bundle_of(S, from, since, &len);
    S->pool[S->npool++] = (inflight){b, len, from};
    drop(S, since);
}

/* Delivers a bundle in flight to a random replica (not necessarily the one it was made for),
 * sometimes keeping it for a later duplicate delivery. */
static void deliver(sched *S)
{
    if (!S->npool) return;
    int i = (int)rnd(S, (uint64_t)S->npool);
    int to = (int)rnd(S, (uint64_t)S->nrep);
    TRACE("deliver a bundle of r%d to r%d\n", S->pool[i].from, to);
    merge_into(S, to, S->pool[i].b, S->pool[i].len);
    if (!chance(S, 35)) pool_remove(S, i);
}

static void save_state(sched *S)
{
    int r = (int)rnd(S, (uint64_t)S->nrep);
    if (S->nstates == STATES) {
        int i = (int)rnd(S, STATES);
        free(S->states[i]);
        S->states[i] = S->states[--S->nstates];
    }
    S->states[S->nstates++] = state_of(S, r);
}

/* ---------------------------------------------------------------- a schedule */

static void sched_free(sched *S)
{
    for (int r = 0; r < S->nrep; r++) tsync_store_free(S->rep[r].s);
    for (int i = 0; i < S->npool; i++) free(S->pool[i].b);
    for (int i = 0; i < S->nstates; i++) free(S->states[i]);
    for (int i = 0; i < 4; i++) free(S->tmp[i]);
    tsync__arena_free(&S->arena);
    free(S->ev);
    if (S->dir) th_rmdir(S->dir);
    free(S->dir);
    memset(S, 0, sizeof *S);
}

static void final_checks(sched *S)
{
    /* Everyone syncs with everyone until a whole round merges nothing. */
    for (int r = 0; r < S->nrep; r++) seal_replica(S, r);
    int rounds = 0;
    for (;;) {
        size_t merged = 0;
        for (int i = 0; i < S->nrep; i++)
            for (int j = 0; j < S->nrep; j++)
                if (i != j) merged += sync_pair(S, i, j);
        rounds++;
        if (merged == 0) break;
        PCHECK(S, rounds < 6, "still merging after %d rounds of full exchange", rounds);
    }
    uint64_t all[MAXR];
    for (int r = 0; r < S->nrep; r++) all[r] = S->rep[r].seq;
    const char *h0 = NULL;
    char h0buf[65];
    for (int r = 0; r < S->nrep; r++) {
        replica *R = &S->rep[r];
        PCHECK(S, R->npending == 0, "replica %d still has unsealed writes", r);
        uint64_t vec[MAXR];
        read_vector(S, r, vec);
        for (int x = 0; x < S->nrep; x++)
            PCHECK(S, vec[x] == all[x],
                   "after full exchange replica %d has %llu batches of replica %d, which "
                   "sealed %llu",
                   r, (unsigned long long)vec[x], x, (unsigned long long)all[x]);
        int64_t held = th_int(R->s, "SELECT count(*) FROM tsync_held", -1);
        int64_t parked = th_int(R->s, "SELECT count(*) FROM tsync_parked", -1);
        int64_t forks = th_int(R->s, "SELECT count(*) FROM tsync_forks", -1);
        PCHECK(S, held == 0 && parked == 0 && forks == 0,
               "after full exchange replica %d still has %lld held batches, %lld parked "
               "changes, %lld forks",
               r, (long long)held, (long long)parked, (long long)forks);
        const char *h = th_hash(R->s);
        if (!h0) {
            memcpy(h0buf, h, 65);
            h0 = h0buf;
        }
        PCHECK(S, strcmp(h, h0) == 0, "replica %d hash %s differs from replica 0's %s", r, h, h0);
        /* Every counter is the sum of every delta applied anywhere. */
        for (int k = 0; k < S->nkeys; k++) {
            int64_t sum = 0;
            for (size_t i = 0; i < S->nev; i++)
                if (S->ev[i].key == k) sum += S->ev[i].delta;
            char q[120];
            snprintf(q, sizeof q, "SELECT stock FROM products WHERE id='k%d'", k);
            int64_t got = th_int(R->s, q, INT64_MIN);
            PCHECK(S, got == INT64_MIN || got == sum,
                   "replica %d: stock of k%d is %lld, the sum of all deltas is %lld", r, k,
                   (long long)got, (long long)sum);
        }
        check_replica_view(S, r, -1, all);
    }
    /* A replica joining late gets everything from one bundle of one replica, batches of other
     * origins forwarded verbatim. */
    int from = (int)rnd(S, (uint64_t)S->nrep);
    tsync_store *late = th_open_products(th_path(S->dir, "late.db"));
    size_t len;
    uint8_t *b = bundle_of(S, from, NULL, &len);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(late, b, len, &rep);
    free(b);
    int64_t held = th_int(late, "SELECT count(*) FROM tsync_held", -1);
    const char *h = th_hash(late);
    int same = strcmp(h, h0) == 0;
    tsync_store_free(late);
    char why[600];
    snprintf(why, sizeof why,
             "a late joiner that merged a full bundle of replica %d: rc %d, %zu refused, "
             "%lld held, hash %s (replicas: %s); %s",
             from, rc, rep.refused, (long long)held, same ? "equal" : "different", h0,
             rep.nmessages ? rep.messages[0] : "");
    int ok = rc == 0 && rep.refused == 0 && held == 0 && same;
    tsync_merge_report_clear(&rep);
    PCHECK(S, ok, "%s", why);
}

static void run_schedule(const shape *sh, uint64_t seed, sched *S)
{
    memset(S, 0, sizeof *S);
    g_cur = S;
    S->seed = seed;
    S->rng = seed;
    S->test = sh->test;
    S->nrep = 3 + (int)rnd(S, 3);
    S->nkeys = 2 + (int)rnd(S, (uint64_t)(sh->max_keys - 1));
    int steps = sh->min_steps + (int)rnd(S, (uint64_t)(sh->max_steps - sh->min_steps + 1));
    S->dir = th_tmpdir();
    for (int r = 0; r < S->nrep; r++) {
        char name[16];
        snprintf(name, sizeof name, "r%d.db", r);
        S->rep[r].s = th_open_products(th_path(S->dir, name));
        memcpy(S->rep[r].site, tsync_store_site_id(S->rep[r].s), TSYNC_SITE_ID_BYTES);
        resolve(S, r); /* replicate sealed an empty table: no batch */
    }
    for (int i = 0; i < steps; i++) {
        int x = (int)rnd(S, 100);
        if (x < 40) {
            do_op(S, (int)rnd(S, (uint64_t)S->nrep));
        } else if (x < 52) {
            int a = (int)rnd(S, (uint64_t)S->nrep), b = (int)rnd(S, (uint64_t)S->nrep - 1);
            sync_pair(S, a, b >= a ? b + 1 : b);
        } else if (x < 66) {
            stash(S);
        } else if (x < 84) {
            deliver(S);
        } else if (x < 87) {
            if (S->npool) pool_remove(S, (int)rnd(S, (uint64_t)S->npool)); /* dropped */
        } else if (x < 91) {
            save_state(S);
        } else if (x < 93) {
            reopen(S, (int)rnd(S, (uint64_t)S->nrep));
        } else {
            seal_replica(S, (int)rnd(S, (uint64_t)S->nrep));
        }
    }
    final_checks(S);
}

/* ---------------------------------------------------------------- the tests */

static void prop_fini(void)
{
    if (!g_cur) return;
    fprintf(stderr,
            "property: schedule with seed %llu did not finish; replay with "
            "TSYNC_SEED=%llu test_property --filter 'property/%s'\n",
            (unsigned long long)g_cur->seed, (unsigned long long)g_cur->seed, g_cur->test);
    sched_free(g_cur);
    g_cur = NULL;
}

static double scale(void)
{
    const char *e = getenv("TSYNC_PROP_SCALE");
    double x = e && *e ? strtod(e, NULL) : 1.0;
    return x > 0 ? x : 1.0;
}

/* Runs n schedules (one when TSYNC_SEED is set) and prints what they covered. */
static void run_many(const shape *sh, int n)
{
    const char *e = getenv("TSYNC_SEED");
    const char *tr = getenv("TSYNC_PROP_TRACE");
    g_trace = tr && *tr && *tr != '0';
    uint64_t base;
    if (e && *e) {
        base = strtoull(e, NULL, 0);
        n = 1;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
        base = th_rand(&x);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t events = 0, merges = 0, held = 0, dups = 0, batches = 0;
    static sched S;
    for (int i = 0; i < n; i++) {
        uint64_t seed = n == 1 ? base : base + (uint64_t)i;
        run_schedule(sh, seed, &S);
        events += S.nev, merges += S.merges, held += S.held, dups += S.duplicates;
        batches += S.batches;
        sched_free(&S);
        g_cur = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr,
            "property/%s: %d schedules (seeds %llu..%llu) in %.1f s: %zu writes, %zu batches, "
            "%zu merges, %zu batches held, %zu duplicates\n",
            sh->test, n, (unsigned long long)base, (unsigned long long)(base + (uint64_t)n - 1),
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, events,
            batches, merges, held, dups);
}

/* Schedules to run: per_mille/1000 of TSYNC_PROP_SCHEDULES, or of 2000 scaled. The defaults
 * (2000 short, 800 long) take about as long each, so the two tests end together under --jobs=2. */
static int count_of(int per_mille)
{
    const char *e = getenv("TSYNC_PROP_SCHEDULES");
    double n = e && *e ? atof(e) : 2000 * scale();
    int k = (int)(n * per_mille / 1000);
    return k > 0 ? k : 1;
}

/* Every test here has the same .timeout: with different ones, criterion 2.4.1's runner leaks 48
 * bytes under LeakSanitizer (--jobs=2) and the ASan run fails after every test passed. */

/* Many short schedules: most bugs show with a handful of writes and deliveries. */
Test(property, short_schedules, .fini = prop_fini, .timeout = 900)
{
    run_many(&SHORT, count_of(1000));
}

/* Fewer long ones: deep histories, many resurrections, long held chains. */
Test(property, long_schedules, .fini = prop_fini, .timeout = 900)
{
    run_many(&LONG, count_of(400));
}

/* Schedules that once found a bug, replayed on every run. A seed gives the same schedule only
 * with this generator: after changing it, find the failure again and renew the seed.
 *   short 2099027198423201336 and long 2548790356923031847: a replica merges an insert (stock left
 * at its default 0, so no counter entry) and its delete in one merge, then a concurrent add with
 * stock: resurrecting the row copied the tombstone's NULL stock into the NOT NULL column
 * (store/merge.c, flush_row), so the row was parked and the replica never showed it. */
Test(property, regression_seeds, .fini = prop_fini, .timeout = 900)
{
    static const struct {
        const shape *sh;
        uint64_t seed;
    } seeds[] = {
        {&SHORT, 2099027198423201336ULL},
        {&LONG, 2548790356923031847ULL},
    };
    static sched S;
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        run_schedule(seeds[i].sh, seeds[i].seed, &S);
        sched_free(&S);
        g_cur = NULL;
    }
}
