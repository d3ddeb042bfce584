/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/snapshot.h — the snapshot chunk: the byte format in which a replica's state (every
 * replicated row with its clock metadata) travels, as self-contained chunks. The format and its
 * limits are in docs/SNAPSHOT.md; exporting and merging a state are in store/snapshot.h.
 *
 * THREAD SAFETY: every function is reentrant; a reader is used by one thread at a time.
 */
#ifndef TSYNC_CODEC_SNAPSHOT_H
#define TSYNC_CODEC_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

#define TSYNC__SNAP_FORMAT 1u /* item 0 of every chunk */
/* A first chunk that carries the exporter's collection frontier (docs/SNAPSHOT.md): format 1's
 * fields plus the frontier before the rows. Written only when the frontier is not empty, so a
 * replica that never collected exports exactly what older builds read, and an older build refuses
 * the other as a format it does not read. 2 stays unused: it is what tests and fuzz corpora use
 * as "the next format", refused. */
#define TSYNC__SNAP_FORMAT_FRONT 3u
/* Formats 1 and 3 with column policies in the table definitions (codec.h, batch format 2):
 * written only when a table of the chunk has a policy, so older builds refuse exactly the chunks
 * they would merge wrongly, as a format they do not read. */
#define TSYNC__SNAP_FORMAT_POLICIES       4u
#define TSYNC__SNAP_FORMAT_FRONT_POLICIES 5u
/* The size a node asks for when it has no reason to ask for another: one wire message. */
#define TSYNC__SNAP_CHUNK_BYTES (1u << 20)
/* Hard limit of one chunk. A chunk holds at least one row, and a row can be as large as a batch
 * can carry it; a larger row cannot be exported (TSYNC_EUNSUPPORTED names it). */
#define TSYNC__SNAP_CHUNK_MAX_BYTES TSYNC__BATCH_MAX_BYTES

/* ---------------------------------------------------------------- the chunk, decoded */

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    int has_key; /* pk and inc present (site == BLAKE2b-128(pk || inc), checked) */
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
} tsync__snap_site;

/* One site's entry of a row's existence set (the OR-set rule is crdt/'s). */
typedef struct {
    uint32_t site; /* index in the chunk's sites */
    tsync__hlc add, rmv;
} tsync__snap_exist;

/* One site's P and N of a counter (the PN-counter rule is crdt/'s). */
typedef struct {
    uint32_t site; /* index in the chunk's sites */
    uint64_t p, n;
} tsync__snap_pn;

typedef struct {
    uint32_t col; /* index in the chunk table's columns; never a key or counter column */
    tsync__hlc hlc;
    uint32_t site; /* index in the chunk's sites */
    tsync__val val;
} tsync__snap_col;

typedef struct {
    uint32_t col; /* a counter column of the chunk table */
    uint32_t n;
    tsync__snap_pn *v;
} tsync__snap_ctr;

typedef struct {
    uint32_t table; /* index in the chunk's tables */
    tsync__val pk[TSYNC__MAX_PK_COLS];
    uint32_t nexist;
    tsync__snap_exist *exist;
    uint32_t ncols;
    tsync__snap_col *cols; /* ascending col */
    uint32_t nctrs;
    tsync__snap_ctr *ctrs; /* ascending col */
} tsync__snap_row;

/* One site's entry of the collection frontier: the highest add clock of that site in any row the
 * exporter collected (store/collect.c). */
typedef struct {
    uint32_t site; /* index in the chunk's sites */
    tsync__hlc hlc;
} tsync__snap_front;

typedef struct {
    uint32_t nsites;
    tsync__snap_site *sites;
    uint32_t nfront; /* 0 unless format 3 (the first chunk of an export that collected) */
    tsync__snap_front *front;
    uint32_t ntables;
    tsync__btable *tables; /* as in a batch: the first npk columns are the key, in key order */
    uint32_t nrows;
    tsync__snap_row *rows;
} tsync__snap_chunk;

/* Strictly decodes one chunk (docs/SNAPSHOT.md). Arrays are allocated in a; values point into buf.
 * Wrong types, non-canonical encodings, indexes out of range, repeated entries, trailing bytes or
 * more than TSYNC__SNAP_CHUNK_MAX_BYTES: TSYNC_ECORRUPT (TSYNC_EVERSION for another format) with a
 * one-line message in err naming the field. */
TSYNC_WARN_UNUSED int tsync__snap_decode(const uint8_t *buf, size_t len, tsync__snap_chunk *out,
                                         tsync__arena *a, char err[TSYNC__ERRLEN]);

/* Encodes c as written (no checks: what it is given must be valid to decode) into a malloc'd
 * buffer (*out, *len; the caller frees). A decoded chunk re-encodes to the very bytes it came from.
 * 0 or TSYNC_ENOMEM. */
int tsync__snap_encode(const tsync__snap_chunk *c, uint8_t **out, size_t *len);

/* BLAKE2b-256 of the chunks concatenated in order: the hash SNAPSHOT_END carries. */
void tsync__snap_hash(const uint8_t *const *chunks, const size_t *lens, size_t n,
                      uint8_t out[TSYNC__HASH_BYTES]);

/* ---------------------------------------------------------------- reading a row at a time
 *
 * The same strict decoding as tsync__snap_decode, with memory of one row plus the chunk's
 * dictionaries: open decodes the sites and tables into hdr (in the arena), next decodes one row
 * into buffers reused from row to row (valid until the next call), close checks that every row
 * was read and no byte trails. Each returns 0 or the error with its message in err. free
 * releases the buffers (after any of them, also after an error). The fields are the reader's. */

typedef struct {
    tsync__dec d;               /* codec/codec.h: position and message of a failure */
    tsync__snap_chunk hdr;      /* sites and tables (in the arena); rows are not kept */
    uint64_t *ctrmask;          /* per table: its counter columns */
    uint32_t nrows, next;       /* rows declared, rows read */
    uint32_t *stamp, stamp_gen; /* per site: the last entry list it appeared in (repeats) */
    tsync__snap_exist *exist;
    size_t excap;
    tsync__snap_col *cols;
    size_t colcap;
    tsync__snap_ctr *ctrs;
    size_t ctrcap;
    tsync__snap_pn *pn;
    size_t pncap;
} tsync__snap_reader;

int tsync__snap_open(tsync__snap_reader *it, const uint8_t *buf, size_t len, tsync__arena *a,
                     char err[TSYNC__ERRLEN]);
int tsync__snap_next(tsync__snap_reader *it, tsync__snap_row *row);
int tsync__snap_close(tsync__snap_reader *it);
void tsync__snap_reader_free(tsync__snap_reader *it);

/* ---------------------------------------------------------------- sizes
 *
 * Encoded sizes, as tsync__snap_encode writes them, so an exporter can cut a chunk before it
 * grows past the size asked for. A chunk is head + its sites, tables and rows. */

size_t tsync__snap_head_size(uint32_t nsites, uint32_t ntables, uint32_t nrows);
size_t tsync__snap_site_size(const tsync__snap_site *s);
size_t tsync__snap_table_size(const tsync__btable *t);
size_t tsync__snap_row_size(const tsync__snap_row *r, uint32_t npk);
/* The frontier's bytes (0 when it has no entry: then the chunk is format 1). */
size_t tsync__snap_front_size(const tsync__snap_front *f, uint32_t n);

#endif
