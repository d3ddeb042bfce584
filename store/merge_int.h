/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/merge_int.h — what the batch merge's files share: the merge context, the batches on their
 * way in, and the row folding both admission (store/merge.c) and unparking (store/unpark.c) use
 * (store/merge_apply.c). The rows are written by the shared row writer (store/rowwrite_int.h).
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TSYNC_STORE_MERGE_INT_H
#define TSYNC_STORE_MERGE_INT_H

#include "internal.h"
#include "rowwrite_int.h"

/* A dependency of a batch: a site id and the seq of it the batch's author had seen. */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq;
} mdep;

/* One batch on its way in. A merge may hold 100k of these at once (a till that sealed every
 * sale): only what admission decides on is kept; the rows are decoded from body when the batch
 * applies (store/merge_apply.c) and freed with the rows they fold into. */
typedef struct {
    uint64_t seq;
    uint32_t site; /* local index of the origin */
    uint32_t ndeps;
    uint8_t from_held;
    uint8_t done;           /* applied, duplicate, refused */
    uint8_t applied;        /* kept batches of a revoked device (store/kept.c): in our log now */
    uint8_t in_run;         /* its body went to tsync_log_runs (store/merge.c, log_flush) */
    const tsync__brun *run; /* the received run it came in (NULL: held, unparked) */
    int8_t honest; /* 0 not known yet, 1 by a key with a certificate and not revoked, -1 not */
    uint8_t prev[TSYNC__HASH_BYTES];
    uint8_t hash[TSYNC__HASH_BYTES];
    const uint8_t *body;
    size_t body_len;
    const uint8_t *sig;       /* NULL unless the batch ended a signed run */
    tsync__hlc hlc_hi;        /* the batch's highest clock */
    const mdep *deps;         /* the author's vector delta (in the merge's arena) */
    const tsync__batch *full; /* already decoded (unparking), else NULL: decoded when applied */
    char *reason;             /* why it waits (malloc'd on first use, NULL: none) */
    /* Kept batches of a revoked device: */
    uint64_t kept;  /* beyond its site's cutoff, kept: the seq an honest batch depends on */
    size_t kept_by; /* that honest batch (index in the list) */
} inbatch;

/* A site known to this merge. */
typedef struct {
    uint8_t id[TSYNC__SITE_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    int has_pk;
    uint64_t seq;
    uint8_t hash[TSYNC__HASH_BYTES];
    int64_t frozen; /* -1: not frozen */
    int dirty;
    int known;       /* loaded from or added to tsync_sites */
    int revoked;     /* 0 not looked up yet, 1 its key is not revoked, 2 revoked */
    uint64_t cutoff; /* revoked: the cutoff its revocation names for this site */
} msite;

/* The folded state of one row (its vals in the arena). */
typedef tsync__wrow mrow;

/* What a merge of a bundle file may leave out (store/merge_skip.c). */
typedef struct tsync__mskip tsync__mskip;

typedef struct {
    tsync_store *s;
    tsync_merge_report *rep;
    tsync__mskip *skip; /* NULL: every change is folded */
    tsync__arena a;     /* what lives as long as the merge: held bodies, batch headers */
    tsync__arena ra;    /* the rows being folded: freed at each flush */
    tsync__arena ba;    /* the batches being applied, decoded: freed every few hundred KB of bodies
                         * (a folded value points into the body, never into its decoded batch) */
    size_t ba_bytes;    /* body bytes decoded into ba */
    /* Tables without clocks when first met (a new till): a row of theirs not folded before in
     * this merge is new, and needs no look-up. seen: a Bloom filter of the rows folded. */
    struct mtable {
        int id, fresh;
    } * tables;
    size_t ntables;
    uint8_t *seen;
    msite *sites; /* by local index (sparse: idx up to nsites) */
    uint32_t nsites;
    tsync__rmap rows;
    mrow **rowlist;
    size_t nrowlist, rowcap;
    tsync__rowwriter w; /* writes the folded rows (store/rowwrite.c) */
    tsync__hlc max_hlc;
    uint64_t now_ms;
    int refuse_code;
    char refuse_msg[TSYNC__ERRLEN + 64]; /* the first refusal, for tsync_error_last() */
    int unpark_blocked;                  /* unparking: the table still cannot take the rows */
    /* Applying a forked branch's rows: its counters count under a site derived from the branch
     * (minus what the common prefix already counted), so both branches' sales add up. */
    uint32_t fork_origin, fork_site;
    uint64_t fork_frozen;
    int keep_publish; /* kept a revoked device's batch on the word of a batch that did not apply */
    int enrolled; /* in a shop (looked up once the bundle's trust records are in): 0 admits all */
    /* Applied batches not yet in tsync_log, always appended before anything reads the log
     * (store/merge.c, log_flush): each stretch of one origin's consecutive batches as one run row
     * (store/logrun_int.h), their tsync_log rows TSYNC__MERGE_LOGQ at a time by one statement. */
    inbatch *logq[4096];
    size_t nlogq;
} mctx;
#define TSYNC__MERGE_LOGQ     32u
#define TSYNC__MERGE_LOGQ_RUN 4096u

/* Sets why ib waits (printf-style; kept in a buffer allocated on first use). */
void tsync_merge__reason(inbatch *ib, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees a list of n batches and their reasons. */
void tsync_merge__list_free(inbatch *list, size_t n);
/* Checks ib's body (all of it: tsync__batch_check), decodes its header into scratch as *b, and
 * keeps in ib what admission needs (the clock, the dependencies by site id, in c->a): the rows are
 * decoded again when the batch applies. scratch is freed every few hundred KB of bodies
 * (*scratch_bytes counts them). */
TSYNC_WARN_UNUSED int tsync_merge__head(mctx *c, inbatch *ib, tsync__batch *b,
                                        tsync__arena *scratch, size_t *scratch_bytes,
                                        char err[TSYNC__ERRLEN]);

/* Zeroes c and sets the store, the report (may be NULL) and the reference time. */
void tsync_merge__init(mctx *c, tsync_store *s, tsync_merge_report *rep);
/* Frees what c holds (finalizes the row writer's statements); c can be initialised again. */
void tsync_merge__free(mctx *c);

/* Adds a line to the report; the first line starting with "refused" is kept for
 * tsync_error_last(). */
void tsync_merge__report(mctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first 6 bytes of a site id in hex, for messages. */
const char *tsync_merge__short_site(const uint8_t *id, char out[13]);

/* Loads tsync_sites into c->sites. */
TSYNC_WARN_UNUSED int tsync_merge__load_sites(mctx *c);
/* Local index of a site id, registering it in tsync_sites when new. */
TSYNC_WARN_UNUSED int tsync_merge__site_local(mctx *c, const uint8_t id[TSYNC__SITE_BYTES],
                                              const uint8_t *pk, const uint8_t *inc, uint32_t *out);
/* Parks a change of batch ib's row (store/rowwrite_int.h's tsync__rw_park). */
TSYNC_WARN_UNUSED int tsync_merge__park(mctx *c, uint32_t site, uint64_t seq, uint32_t row,
                                        const char *tbl, size_t tlen, const char *col, size_t clen,
                                        const char *reason);
/* Applies batch rows to the folded row state. only_table: when not NULL, apply only rows of that
 * table and only the row indexes listed (unparking); parking is then not recorded again. */
TSYNC_WARN_UNUSED int tsync_merge__apply_batch(mctx *c, inbatch *ib, const char *only_table,
                                               const int64_t *only_rows, size_t nonly);
/* After the merge's commit: adds the tables whose rows c folded to the store's set
 * (tsync__sync_merged_tables_take). */
void tsync_merge__tables_note(const mctx *c);
/* Writes every folded row (in key order) with the row writer, and forgets them. */
TSYNC_WARN_UNUSED int tsync_merge__flush_rows(mctx *c);
/* Between two batches: flushes the folded rows when they reach the merge's budget, so memory
 * stays bounded. Later batches read the flushed rows back from the database, inside the same
 * transaction: the result is the same as one flush at the end. */
TSYNC_WARN_UNUSED int tsync_merge__maybe_flush(mctx *c);
/* The budget: rows folded (s->merge_flush_rows overrides it; ~300 bytes each), and the body bytes
 * decoded before the decoded batches are freed (a decoded batch takes ~5 times its body). */
#define TSYNC__MERGE_FLUSH_ROWS 20000u
/* While a skip summary keeps more than TSYNC__MERGE_SKIP_BIG bytes, the fold flushes at this many
 * rows (~450 bytes each): the two share the memory of a large file merge. */
#define TSYNC__MERGE_FLUSH_ROWS_SKIP 8000u
#define TSYNC__MERGE_SKIP_BIG        ((size_t)8 << 20)
/* The memory the skip summary keeps for pass 2 (slots and keys): ~14 bytes a row plus its key
 * (pass 1 takes 8 more a row, and growing doubles the slots). With the rest of a merge (~38 MB)
 * 20 MB peaked at 64.4 MB on a 1M-row format-5 bundle, 14 MB at 54 MB, and the 10-round merge
 * of 1M rows took as little CPU with 14 as with 20 (41 s).
 * Tests may lower tsync__merge_skip_bytes (rows beyond it are not tracked). */
#define TSYNC__MERGE_SKIP_BYTES (14u << 20)
extern size_t tsync__merge_skip_bytes;
/* Tests: the changes file merges left out so far (all merges of the process). */
extern size_t tsync__merge_skipped_total;
/* The bodies a file merge hands to one transaction (TSYNC__RUN_PIECE_BYTES; tests lower it). */
extern size_t tsync__merge_slice_bytes;
#define TSYNC__MERGE_DECODE_BYTES (256u << 10)

/* ---------------------------------------------------------------- the skip summary
 * (store/merge_skip.c: what may be left out, and why that is exact) */

/* A summary for a merge into s; off at once when s is enrolled or holds batches. */
TSYNC_WARN_UNUSED int tsync__mskip_new(tsync__mskip **out, tsync_store *s);
void tsync__mskip_free(tsync__mskip *k);
/* Pass 1: one batch of the file, in file order (prev: the hash the chain gives its predecessor). */
TSYNC_WARN_UNUSED int tsync__mskip_batch(tsync__mskip *k, const tsync__batch *b,
                                         const uint8_t prev[TSYNC__HASH_BYTES],
                                         const uint8_t pk[TSYNC__PK_BYTES]);
/* After pass 1: off when a dependency is missing or a site is revoked. */
TSYNC_WARN_UNUSED int tsync__mskip_end(tsync__mskip *k);
/* Before pass 2: off when another merge moved a head since pass 1. */
TSYNC_WARN_UNUSED int tsync__mskip_recheck(tsync__mskip *k);
void tsync__mskip_disable(tsync__mskip *k);
int tsync__mskip_active(const tsync__mskip *k);
size_t tsync__mskip_skipped(const tsync__mskip *k);
/* The memory the summary keeps for pass 2 (0 when off). */
size_t tsync__mskip_kept_bytes(const tsync__mskip *k);
/* Pass 2: the summary's number of an origin whose batches the file brings (-1: none, or off). */
int tsync__mskip_site(const tsync__mskip *k, const uint8_t id[TSYNC__SITE_BYTES]);
/* Pass 2: batch seq of site id was here already; off when pass 1 counted it. */
void tsync__mskip_dup(tsync__mskip *k, const uint8_t id[TSYNC__SITE_BYTES], uint64_t seq);
/* Pass 2, for every change of a local table's row, in apply order: 1 when it is superseded and
 * must be left out. *start is set when it is a chain start: once applied, if it won every column
 * of tsync__mskip_mask(k, *start), the caller calls tsync__mskip_won. */
int tsync__mskip_row(tsync__mskip *k, int site, const tsync__table *t, const tsync__btable *bt,
                     const tsync__brow *br, void **start);
void tsync__mskip_won(tsync__mskip *k, void *start);
uint64_t tsync__mskip_mask(const tsync__mskip *k, void *start);

/* tsync_store_merge_file's two passes over a buffer the caller keeps (store/bundle_read.c):
 * tsync_store_merge takes this way for format 4, in bounded memory. */
TSYNC_WARN_UNUSED int tsync__merge_stream_mem(tsync_store *s, const uint8_t *buf, size_t len,
                                              tsync_merge_report *report);

/* tsync__merge_bundle with a skip summary (NULL: none). */
TSYNC_WARN_UNUSED int tsync__merge_bundle_skip(tsync_store *s, const tsync__bundle *bun,
                                               tsync_merge_report *report, tsync__mskip *skip);

#endif
