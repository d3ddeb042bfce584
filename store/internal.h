/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/internal.h — what the files of store/ share: the store object, the cached description of
 * replicated tables, per-row clock metadata, and error helpers. Only store/ includes sqlite3.h.
 */
#ifndef TSYNC_STORE_INTERNAL_H
#define TSYNC_STORE_INTERNAL_H

#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>

#include "crdt/crdt.h"
#include "tillsync/store.h"

/* ---------------------------------------------------------------- errors */

/* Records an SQLite error of db with a prefix and returns the mapped code. */
int tsync__err_sqlite(sqlite3 *db, int rc, const char *what);

/* ---------------------------------------------------------------- tables */

typedef struct {
    int id; /* tsync_tables.id */
    char *name;
    int ncols; /* columns in ordinal order (stable: columns are only ever appended) */
    char **cols;
    int npk;
    int pk[TSYNC__MAX_PK_COLS]; /* ordinals of the key columns, in key order */
    uint8_t is_pk[TSYNC__MAX_COLS];
    uint8_t is_counter[TSYNC__MAX_COLS];
    uint8_t policy[TSYNC__MAX_COLS]; /* TSYNC__POLICY_* of each column (crdt/crdt.h) */
    char *qname;                     /* "name" quoted for SQL */
    char *qclk;                      /* "tsync_clk_name" quoted */
    char *qtomb;                     /* "tsync_tomb_name" quoted */
    char *pk_where;                  /* "k1"=?1 AND "k2"=?2 */
    char *all_cols;                  /* "a","b",... in ordinal order */
    sqlite3_stmt *get_clk, *put_clk, *upd_clk, *get_row, *get_tomb, *del_tomb, *exists_row;
    sqlite3_stmt *seal_scan; /* store/seal_scan.c, prepared on first use */
    sqlite3_stmt *seal_keys; /* its pending keys in capture order (seal_scan.c) */
    sqlite3_stmt *seal_run;  /* the scan without folding, for keys in order (seal_scan.c) */
} tsync__table;

/* ---------------------------------------------------------------- row clock metadata
 *
 * One blob per row in tsync_clk_<table>: the existence OR-set, the LWW clock of each written
 * column, and the PN-counter of each counter column. Sites are indexes in tsync_sites.
 */
typedef struct {
    tsync__hlc hlc;
    uint32_t site;
} tsync__colclk;

/* The PN-counter state of one counter column. */
typedef struct {
    uint32_t col;
    size_t n, cap;
    tsync__pn *v; /* malloc'd */
} tsync__ctrset;

/* Sized by the table's real column count: a merge may hold 100k of these at once. */
typedef struct {
    size_t nexist, existcap;
    tsync__exist *exist; /* malloc'd */
    int ncols;
    tsync__colclk *col; /* ncols entries, malloc'd; hlc 0 = never written */
    size_t nctrs;
    tsync__ctrset *ctrs; /* malloc'd; one per counter column that has state */
} tsync__rowmeta;

/* Allocates the clocks of ncols columns. 0 or TSYNC_ENOMEM. */
int tsync__rowmeta_init(tsync__rowmeta *m, int ncols);
void tsync__rowmeta_clear(tsync__rowmeta *m);
int tsync__rowmeta_decode(tsync__rowmeta *m, const uint8_t *p, size_t n);
/* Encodes into *buf (realloc'd as needed, *cap its capacity). */
int tsync__rowmeta_encode(const tsync__rowmeta *m, uint8_t **buf, size_t *cap, size_t *len);
int tsync__rowmeta_exist_merge(tsync__rowmeta *m, uint32_t site, tsync__hlc add, tsync__hlc rmv);
int tsync__rowmeta_ctr_merge(tsync__rowmeta *m, int col, uint32_t site, uint64_t p, uint64_t n);
int tsync__rowmeta_ctr_add(tsync__rowmeta *m, int col, uint32_t site, int64_t delta);
/* The counter state of a column, or NULL when it has none. */
const tsync__ctrset *tsync__rowmeta_ctr(const tsync__rowmeta *m, int col);
static inline int64_t tsync__rowmeta_ctr_value(const tsync__rowmeta *m, int col)
{
    const tsync__ctrset *c = tsync__rowmeta_ctr(m, col);
    return c ? tsync__pn_value(c->v, c->n) : 0;
}

/* ---------------------------------------------------------------- the store */

struct tsync_store {
    sqlite3 *db;
    char *path;
    char *key_path;
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t sk[TSYNC__SK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
    uint8_t site[TSYNC__SITE_BYTES];
    uint32_t local_idx; /* this site's index in tsync_sites */

    int ntables;
    tsync__table *tables;
    int schema_version; /* PRAGMA schema_version the table cache was built at */

    uint64_t skew_bound_ms;
    int64_t clock_offset_ms; /* tests: pretend the wall clock is off by this much */
    /* Tests: the batch budgets sealing cuts at (0: TSYNC__SEAL_BATCH_BYTES / _ROWS). */
    size_t seal_batch_bytes, seal_batch_rows;
    /* Tests: the rows a merge folds before writing them (0: TSYNC__MERGE_FLUSH_ROWS; SIZE_MAX: all,
     * written at the end whatever their size, as the reference the chunked merge must equal). */
    size_t merge_flush_rows;
    int in_txn;           /* inside a transaction begun by the store */
    int64_t data_version; /* PRAGMA data_version at the last tsync__sync_changed */
    int data_version_seen;

    /* Prepared statements of the store's own SQL, keyed by the address of their text: preparing
     * costs more than running most of them, and sealing runs a dozen per batch. */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[128];
    int nstmts;

    /* store/identity.c: opened read-only (no write at open, no seal, no renewal); the marker of
     * the highest own batch handed to a peer or a bundle; incarnations this handle renewed. */
    int read_only;
    int mark_known;
    uint8_t mark_site[TSYNC__SITE_BYTES];
    uint64_t mark_seq;
    unsigned renewals;
    int renewing;  /* merging again after a renewal (merge.c): never renew twice in one merge */
    int immutable; /* read-only on a full disk with no WAL content: opened as immutable */
    /* store/merge_apply.c: the replicated tables whose rows committed merges changed, by name,
     * since tsync__sync_merged_tables_take last took them. */
    char **merged_tables;
    size_t nmerged_tables;
    /* store/log_run.c: tsync_log_body() on this connection. */
    struct tsync__logrun *logrun;
};

/* "file:PATH?immutable=1" (PATH percent-encoded), malloc'd; NULL when out of memory. */
char *tsync__immutable_uri(const char *path);

/* The cached statement for sql (a string literal), reset and with cleared bindings; NULL with the
 * error recorded if it does not prepare. Never finalize it; sqlite3_reset it after use. */
sqlite3_stmt *tsync__prep(tsync_store *s, const char *sql);

/* Wall clock in Unix ms (plus the test offset). */
uint64_t tsync__now_ms(tsync_store *s);

/* The shop's clock (docs/DATA_MODEL.md, "Clocks"). A running node measures its peers' clocks and
 * records the median offset (peers minus ours) in tsync_meta while it is larger than
 * TSYNC__CLOCK_OFF_MS, so every process that seals on this database stamps with the shop's time.
 * Returns 1 and sets *offset_ms when a fresh measurement is recorded, else 0 (*offset_ms = 0). */
/* A measurement older than this (by our wall clock) is not used. */
#define TSYNC__CLOCK_FRESH_MS 60000
int tsync__shop_offset(tsync_store *s, int64_t *offset_ms);
/* The reference "now" of merge's clock bound: max(our wall clock, the shop's median clock). */
uint64_t tsync__ref_now_ms(tsync_store *s);
/* Records (known) or forgets the shop's clock offset; the node calls it through sync.h. */
int tsync__shop_clock_record(tsync_store *s, int known, int64_t offset_ms);
/* Reads tsync_meta's integer k into *get (0 when absent), or, with get NULL, writes set. */
int tsync__meta_int(tsync_store *s, const char *k, int64_t *get, int64_t set);

/* Runs SQL without results. */
int tsync__exec(tsync_store *s, const char *sql);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK around the store's own work. */
int tsync__begin(tsync_store *s);
int tsync__commit(tsync_store *s);
void tsync__rollback(tsync_store *s);

/* Reloads the table cache when the schema changed. */
int tsync__tables_refresh(tsync_store *s);
/* Names compare as SQLite compares identifiers: tsync__name_cmp (util/util.h). */
static inline int tsync__name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && tsync__name_cmp(a, alen, b, blen) == 0;
}
static inline int tsync__name_eqz(const char *a, const char *b)
{
    return tsync__name_eq(a, strlen(a), b, strlen(b));
}
/* Finds a replicated table or column by name, compared as above. */
tsync__table *tsync__table_by_name(tsync_store *s, const char *name, size_t len);
int tsync__col_by_name(const tsync__table *t, const char *name, size_t len);
void tsync__tables_free(tsync_store *s);

/* Index of a site in tsync_sites, adding it (pk, inc may be NULL) when missing. */
int tsync__site_index(tsync_store *s, const uint8_t site[TSYNC__SITE_BYTES], const uint8_t *pk,
                      const uint8_t *inc, uint32_t *idx);
/* Site id of an index. */
int tsync__site_of(tsync_store *s, uint32_t idx, uint8_t site[TSYNC__SITE_BYTES]);

/* Reads/writes the last HLC of this database. */
int tsync__hlc_load(tsync_store *s, tsync__hlc *h);
int tsync__hlc_store(tsync_store *s, tsync__hlc h);

/* Seals pending changes inside an open transaction, as as many batches as the budgets below
 * need: a batch is closed before a row change would take it past TSYNC__SEAL_BATCH_BYTES
 * (estimated) or TSYNC__SEAL_BATCH_ROWS row changes. A row change alone may be larger, up to
 * TSYNC_MAX_ROW_BYTES plus its overhead, far below TSYNC__BATCH_MAX_BYTES. */
#define TSYNC__SEAL_BATCH_BYTES (4u << 20)
#define TSYNC__SEAL_BATCH_ROWS  20000u
int tsync__seal_locked(tsync_store *s, size_t *nbatches);
/* Seals a batch without rows (its dependencies name what this database holds), inside the
 * caller's write transaction. */
int tsync__seal_empty_locked(tsync_store *s);
/* When changes over TSYNC_MAX_ROW_BYTES (captured by an older build) are set aside unsealed: 1 and
 * a one-line description in buf; else 0. */
int tsync__unsealable_note(tsync_store *s, char *buf, size_t n);

/* Binds/reads tsync__val to/from statements. */
int tsync__bind_val(sqlite3_stmt *st, int i, const tsync__val *v);
void tsync__col_val(sqlite3_stmt *st, int i, tsync__val *v);

/* Key file (keys.c). */
int tsync__key_load_or_create(tsync_store *s, int create);
/* Writes the key file at key_path back with a new random incarnation (backup.c). */
int tsync__key_renew(const char *key_path);

/* Rollback detection (identity.c). Inside a write transaction: the marker check of an open (the
 * log is behind the highest own batch this till handed out: a new incarnation), and the
 * refresh of a handle whose identity another handle renewed (tsync__begin). */
int tsync__identity_open_locked(tsync_store *s);
int tsync__identity_refresh_locked(tsync_store *s);
/* Outside any transaction: this till's own batches came back from a peer that it lacks or holds
 * differently (its log went back): a new incarnation, recorded. log_seq: our head; seen: theirs. */
int tsync__identity_renew(tsync_store *s, uint64_t log_seq, uint64_t seen);
/* Records that own batches up to seq are about to leave this database (no fsync: see identity.c).
 */
void tsync__mark_sent(tsync_store *s, uint64_t seq);

/* Parked items for a table (re-applied after replicate). */
int tsync__unpark(tsync_store *s, const char *table);

/* ---------------------------------------------------------------- row keys and a map keyed by them
 * (meta.c). A key is its values encoded as type byte + payload; used to fold many changes to the
 * same row in memory before touching SQLite. */
size_t tsync__key_size(const tsync__val *v, int n);
void tsync__key_encode(const tsync__val *v, int n, uint8_t *out);
int tsync__key_decode(const uint8_t *p, size_t len, tsync__val *v, int n);
/* Orders two encoded keys of npk columns as SQLite orders them with BINARY collation. Writing rows
 * in this order makes b-tree inserts near-appends. */
int tsync__key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen, int npk);

typedef struct {
    uint64_t h;
    int tbl;
    uint32_t klen;
    uint8_t *key;
    void *val;
} tsync__rmap_ent;

typedef struct {
    tsync__rmap_ent *e;
    size_t cap, n;
} tsync__rmap;

/* Finds (tbl, key); with create, adds it (copying the key into a) with val NULL. Returns the slot
 * or NULL (not found, or out of memory with create). */
tsync__rmap_ent *tsync__rmap_get(tsync__rmap *m, tsync__arena *a, int tbl, const uint8_t *key,
                                 size_t klen, int create);
void tsync__rmap_free(tsync__rmap *m);

/* Row clocks of one row (seal.c). */
int tsync__load_meta(tsync_store *s, tsync__table *t, const uint8_t *key, uint32_t klen,
                     tsync__rowmeta *m, int *found);
/* exists: the row has clocks already (an UPDATE in place is cheaper than a replace). */
int tsync__put_meta(tsync_store *s, tsync__table *t, const uint8_t *key, uint32_t klen,
                    const tsync__rowmeta *m, uint8_t **buf, size_t *cap, int exists);
char *tsync__key_json(const uint8_t *key, uint32_t klen, int npk);
/* A total order on values: type, then number or bytes (meta.c). */
int tsync__val_cmp(const tsync__val *a, const tsync__val *b);
/* Capture triggers off (on = 1) or back on (0) for the store's own connection only (meta.c). */
int tsync__capture_off(tsync_store *s, int on);

/* ---------------------------------------------------------------- schema changes (replicate.c,
 * migrate.c). Each runs inside a transaction the caller opened and leaves the table cache fresh. */

/* At open: re-creates the capture triggers of tables replicated by an older build (tsync_meta
 * 'capture' below this build's version), in its own transaction; writes nothing otherwise. */
int tsync__capture_upgrade(tsync_store *s);
/* tsync_store_replicate without its transaction, unparking and sealing. */
int tsync__replicate_locked(tsync_store *s, const char *table, const char *const *counters,
                            size_t ncounters);
/* The same for the library's own replicated tables, whose tsync_ names the above refuses. */
int tsync__replicate_internal_locked(tsync_store *s, const char *table);
/* The same with column policies (max, min, review; docs/DATA_MODEL.md "Column policies"). */
int tsync__replicate_policies_locked(tsync_store *s, const char *table, const char *const *counters,
                                     size_t ncounters, const tsync_column_policy *policies,
                                     size_t npolicies);
/* The name of a policy as tsync_tables and the schema JSON spell it ("max", "min", "review"),
 * or NULL for LWW. */
const char *tsync__policy_name(int policy);
/* store/policy.c: reads tsync_tables.policies into t->policy (t's columns, key and counters set).
 * TSYNC_ECORRUPT when it names no column, a key or counter column, or an unknown policy. */
int tsync__policies_parse(tsync__table *t, const char *text);
/* Appends the triggers that keep t's max and min columns registers (nothing when it has none):
 * qt, qtomb the quoted table and tombstone, qc the quoted columns, kcols/newk/same/allc the
 * key, NEW key, "key unchanged" and all-columns SQL of capture_sql (replicate.c). */
void tsync__register_sql(sqlite3_str *sql, const char *table, const char *qt, const char *qtomb,
                         char *const *qc, int ncols, const uint8_t *is_pk, const uint8_t *policy,
                         const char *kcols, const char *newk, const char *same, const char *allc);
/* Appends DROP TRIGGER IF EXISTS for each trigger tsync__register_sql makes. */
void tsync__register_drop_sql(sqlite3_str *sql, const char *table);
/* Records columns appended to a replicated table (already added to the table itself): its
 * tombstone table gets them, tsync_tables.cols lists them, the capture triggers cover them. */
int tsync__table_add_columns(tsync_store *s, const char *table, const char *const *cols, int n);
/* Makes a recorded column of a replicated table a PN-counter (tsync_tables.counters, triggers). */
int tsync__table_add_counter(tsync_store *s, const char *table, const char *col);
/* True when CREATE TABLE text has a CHECK constraint (outside quotes and comments). */
int tsync__sql_has_check(const char *sql);
/* tsync__unpark also takes table NULL: the parked changes of every table, rows and columns alike,
 * that can apply now; the others stay parked. */

/* ---------------------------------------------------------------- shared with the SQL functions
 * (store/sqlite_fn.c, store/sqlite_vtab.c) */

/* uuid7(): a time-ordered UUID (RFC 9562) as text (store.c). */
void tsync__sql_uuid7(sqlite3_context *ctx, int argc, sqlite3_value **argv);
/* Registers tsync_fold(op, mask), the aggregate the seal's scan folds a row's pending changes with
 * (seal_scan.c), on the store's own connection. */
int tsync__seal_fold_register(sqlite3 *db);
/* The recorded conflicts, oldest first (conflicts.c, the journal's own query): columns id, at_ms,
 * tbl, pk (the key as JSON text), col, win_val, win_hlc, win_site, lose_val, lose_hlc, lose_site,
 * cid, then the resolution (how, value, site, at_ms; NULLs while open) and kind (0 LWW, 1
 * review). The caller finalizes. */
int tsync__conflicts_prepare(tsync_store *s, sqlite3_stmt **out);

#endif
