/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/helpers.h — small helpers shared by the criterion tests: temporary folders, opening
 * replicas with the standard products table, running SQL, reading single values, moving
 * bundles between replicas, and shop trust records (shops from fixed seeds, certificates,
 * revocations, enrolment).
 */
#ifndef TSYNC_TEST_HELPERS_H
#define TSYNC_TEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "crdt/crdt.h"
#include "store/trust.h"
#include "tillsync/tillsync.h"

/* A fresh temporary folder (mkdtemp under $TMPDIR or /tmp); caller frees the string. */
char *th_tmpdir(void);
/* Like th_tmpdir, and also removed by th_cleanup: use `TestSuite(name, .fini = th_cleanup)`,
 * which criterion runs even after a failed assertion. */
char *th_tmpdir_auto(void);
void th_cleanup(void);
/* Removes a folder made by th_tmpdir and everything in it. */
void th_rmdir(const char *dir);
/* "<dir>/<name>" in a static ring of buffers (valid for the next 16 calls). */
const char *th_path(const char *dir, const char *name);

/* Opens (creating) a replica; aborts the test on failure. */
tsync_store *th_open(const char *path);
/* Opens a replica with the standard table
 *   products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, stock INTEGER NOT NULL DEFAULT 0)
 * replicated, with stock a counter. */
tsync_store *th_open_products(const char *path);

/* Runs SQL on the store's connection (no sealing); aborts the test on error. */
void th_exec(tsync_store *s, const char *sql);
/* Runs SQL and returns the first column of the first row as int64 (or dflt when no row). */
int64_t th_int(tsync_store *s, const char *sql, int64_t dflt);
/* First column of the first row as a malloc'd string (NULL when no row or NULL). */
char *th_text(tsync_store *s, const char *sql);
/* Seals; aborts on error. Returns the number of batches sealed. */
size_t th_seal(tsync_store *s);

/* Bundle of everything from (all batches), as malloc'd bytes. */
uint8_t *th_bundle(tsync_store *from, size_t *len);
/* Bundle of what `to` lacks, merged into `to`. Returns tsync_store_merge's result. */
int th_sync(tsync_store *from, tsync_store *to);
/* Hash of all replicated tables as 64 hex chars in a static ring buffer. */
const char *th_hash(tsync_store *s);

/* Checks the log of one origin in s: seqs 1..N without gaps, each body decodes and names its
 * origin and seq, the hash chain recomputes, every stored signature verifies over it, the vector
 * agrees, and for the store's own log (own) clocks strictly increase and the stored clock never
 * went back. With keys, adds the text keys of the row changes of keys_table to *keys as one
 * string "k1\nk2\n...". Returns N; a failed check fails the test. */
int64_t th_check_log(tsync_store *s, const uint8_t *site, const char *who, int own,
                     const char *keys_table, char **keys);

/* ---- shop trust (store/trust.h) */

#define TH_DAY 86400000ull
#define TH_T0  1760000000000ull /* 2025-10-09: creation time of the shops th_shop_make builds */

/* A shop from a one-byte seed; shop id from another byte (two shops may share an id to model a
 * forger who copies a real shop's id). */
tsync__shopkey th_shop_make(uint8_t seed_byte, uint8_t id_byte, const char *name);
/* A certificate of device key pk signed by shop k; *len receives its size; caller frees. */
uint8_t *th_cert_make(const tsync__shopkey *k, const uint8_t pk[TSYNC__PK_BYTES], const char *name,
                      uint64_t nb, uint64_t exp, size_t *len);
/* A revocation of pk with n cutoffs signed by shop k; caller frees. */
uint8_t *th_rev_make(const tsync__shopkey *k, const uint8_t pk[TSYNC__PK_BYTES],
                     const tsync__cutoff *cuts, uint32_t n, uint64_t issued, size_t *len);
/* Enrols s in shop k with a certificate valid from now - 1 day for `days` days (res may be NULL).
 */
int th_enrol(tsync_store *s, const tsync__shopkey *k, const char *name, uint64_t days,
             tsync__enrol_result *res);
/* th_enrol for 365 days; fails the test on error. */
void th_must_enrol(tsync_store *s, const tsync__shopkey *k, const char *name);

/* Seed for property tests: $TSYNC_SEED if set, else from the clock; printed to stderr. */
uint64_t th_seed(const char *test_name);
/* A small, fast PRNG (splitmix64). */
uint64_t th_rand(uint64_t *state);

/* The last error's message, or "?" when there is none (for assertion messages). */
const char *th_errmsg(void);
/* Frees *p: `TH_AUTO_FREE char *x = ...;` is freed when x goes out of scope. */
void th_free_ptr(void *p);
#define TH_AUTO_FREE __attribute__((cleanup(th_free_ptr)))
/* n sales into the standard products table ('p%06d' from `from` on), each sealed as one batch. */
void th_sell(tsync_store *s, int from, int n);
/* Everything a products replica shows or keeps that a merge writes (rows, clocks, tombstones,
 * held batches, the log, conflicts, parked changes) as one string; caller frees. */
char *th_products_state(tsync_store *s);
/* A growing byte buffer, and a writer callback (ctx: a th_buf) that appends to it. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} th_buf;
int th_buf_write(void *ctx, const void *p, size_t n);
/* th_open_products plus two replicated tables, lines(shop, n, ...) WITHOUT ROWID with a
 * two-column key and moves(id INT PRIMARY KEY, ...). */
tsync_store *th_open_shop(const char *path);
/* What a session tells each side: from's certificates and table definitions, into to. */
void th_tell(tsync_store *from, tsync_store *to);

/* A snapshot's chunks as tsync__snap_export hands them out, each copied: th_chunks_collect is the
 * emit callback (ctx: a th_chunks, zeroed to start), vv the export's vector for the caller to
 * pass. stop_at: the callback returns 42 at that chunk (1-based; 0: never). */
typedef struct {
    uint8_t **c;
    size_t *len;
    size_t n, cap;
    tsync__vv vv;
    int stop_at;
} th_chunks;
int th_chunks_collect(void *ctx, const uint8_t *chunk, size_t len);
/* Frees the chunks and vv, and zeroes k. */
void th_chunks_free(th_chunks *k);

#endif
