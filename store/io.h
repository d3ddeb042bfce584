/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/io.h — export of a table or query to CSV, JSON or NDJSON, and import of such files into a
 * table as upserts on the store's connection, so the capture triggers record every imported row
 * and it replicates like any other write. The formats (how NULL, blobs, reals and rejects are
 * written) are described in docs/IO.md. Internal API, used by the tillsync command and the tests.
 *
 * THREAD SAFETY: as the store's: one thread at a time per store.
 */
#ifndef TSYNC_STORE_IO_H
#define TSYNC_STORE_IO_H

#include <stdio.h>

#include "tillsync/store.h"

typedef enum {
    TSYNC__IO_CSV = 1,
    TSYNC__IO_JSON = 2,   /* one array of objects */
    TSYNC__IO_NDJSON = 3, /* one object per line */
} tsync__io_format;

/* Parses "csv", "json" or "ndjson"; 0 for anything else. */
int tsync__io_format_parse(const char *name);
/* The format a file name suggests by its extension (.csv, .json, .ndjson, .jsonl); 0 if none. */
int tsync__io_format_guess(const char *path);

/* Writes the rows of table (all columns, every row) or of query (one read-only statement) to out,
 * row by row: memory does not grow with the number of rows. Exactly one of table and query is
 * non-NULL. nrows (may be NULL) receives the number of rows written.
 * Errors: TSYNC_ENOTFOUND (no such table), TSYNC_EINVAL (SQL error, more than one statement, a
 * statement that writes, text that is not UTF-8), TSYNC_EIO (write error). */
int tsync__export(tsync_store *s, const char *table, const char *query, int format, FILE *out,
                  size_t *nrows);

/* Called every progress_every rows with the number of rows read (import) or written (export). */
typedef void (*tsync__io_progress_cb)(void *ctx, size_t rows);

/* tsync__export, calling progress(ctx, rows) every `every` rows (0: 100000) when not NULL. */
int tsync__export_progress(tsync_store *s, const char *table, const char *query, int format,
                           FILE *out, size_t *nrows, tsync__io_progress_cb progress, void *ctx,
                           size_t every);

/* Called once per bad value or bad row with "NAME:LINE:COLUMN: why" (or "NAME:LINE: why"). */
typedef void (*tsync__io_bad_cb)(void *ctx, const char *msg);
typedef struct {
    const char *name;     /* the file name used in messages (the input's path) */
    int format;           /* a tsync__io_format */
    int skip_bad;         /* import the good rows; write the bad ones to rejects */
    FILE *rejects;        /* with skip_bad: where rejected rows go (same format, with reasons);
                             may be NULL to drop them */
    tsync__io_bad_cb bad; /* may be NULL */
    tsync__io_progress_cb progress; /* may be NULL */
    void *ctx;
    size_t progress_every; /* 0 means 100000 */
    int dry_run;           /* check and upsert in a transaction that is rolled back, no seal */
    /* Each of the first row_max good rows as a JSON object (text), before it is upserted. */
    void (*row)(void *ctx, const char *json);
    size_t row_max;
    /* results */
    size_t rows;     /* data rows read */
    size_t imported; /* rows upserted */
    size_t rejected; /* rows refused */
    size_t nbad;     /* bad values reported */
} tsync__import_opts;

/* Upserts the rows of in into table (INSERT ... ON CONFLICT(primary key) DO UPDATE of the columns
 * the file gives) in one transaction, then seals. Without skip_bad, any bad value makes the whole
 * import change nothing; every bad value is reported through bad. With skip_bad, the good rows are
 * committed and the bad ones written to rejects.
 * Errors: TSYNC_ENOTFOUND (no such table), TSYNC_EREFUSED (bad values without skip_bad; nothing was
 * changed), TSYNC_ECORRUPT (the file's structure is broken: CSV quoting, JSON array syntax; nothing
 * was changed), TSYNC_EINVAL (header problems: unknown column, no primary key column), TSYNC_EBUSY,
 * TSYNC_EIO. */
int tsync__import(tsync_store *s, const char *table, FILE *in, tsync__import_opts *o);

#endif
