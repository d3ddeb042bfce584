/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/io.h — a replicated table (or any read-only query) out to CSV, JSON or NDJSON, and
 * such a file back into a table as upserts on the store's connection: the capture triggers record
 * every imported row, so it replicates like any other write. docs/IO.md describes the formats
 * (how NULL, blobs, reals and rejected rows are written).
 *
 * THREAD SAFETY: as the store's (store.h): one thread at a time per store. Callbacks run on the
 * calling thread, inside the call, never after it returned; a function that takes a callback and
 * returns an error may have called it before the error.
 */
#ifndef TILLSYNC_IO_H
#define TILLSYNC_IO_H

#include <stdio.h>

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The file formats. */
typedef enum {
    TSYNC_IO_CSV = 1,    /* RFC 4180, a header line of column names */
    TSYNC_IO_JSON = 2,   /* one array of objects */
    TSYNC_IO_NDJSON = 3, /* one object per line */
} tsync_io_format;

/* Parses "csv", "json" or "ndjson" (a tsync_io_format); 0 for anything else or NULL. */
TSYNC_API int tsync_io_format_parse(const char *name);

/* The format a file name suggests by its extension (.csv, .json, .ndjson, .jsonl, in any case);
 * 0 when it suggests none. */
TSYNC_API int tsync_io_format_guess(const char *path);

/* Called every progress_every rows with the number of rows written (export) or read (import) so
 * far, on the calling thread. */
typedef void (*tsync_io_progress_cb)(void *ctx, uint64_t rows);

typedef struct {
    uint32_t version;              /* TSYNC_EXPORT_OPTIONS_VERSION */
    int32_t format;                /* a tsync_io_format; 0 means CSV */
    tsync_io_progress_cb progress; /* may be NULL */
    void *progress_ctx;
    uint64_t progress_every; /* rows between two progress calls; 0 means 100000 */
} tsync_export_options;

#define TSYNC_EXPORT_OPTIONS_VERSION 1
#define TSYNC_EXPORT_OPTIONS_INIT                                                                  \
    {                                                                                              \
        TSYNC_EXPORT_OPTIONS_VERSION, 0, NULL, NULL, 0                                             \
    }

/* Sets *out to TSYNC_EXPORT_OPTIONS_INIT as of version (the caller's TSYNC_EXPORT_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_export_options_init(tsync_export_options *out, uint32_t version);

/* Writes the rows of a table (every column, every row) or of a query (exactly one read-only
 * statement) to out, row by row: memory does not grow with the number of rows. Nothing is written
 * to the database, so it works on a store opened read-only.
 * nrows: may be NULL; receives the number of rows written.
 * table, query: exactly one of them is not NULL.
 * out:   an open stdio stream, flushed (not closed) at the end; on an error part of the output
 *        may have been written (write to a temporary file and rename it to keep a whole one).
 * opts:  NULL for defaults (CSV, no progress).
 * Errors: TSYNC_ENOTFOUND (no such table), TSYNC_EINVAL (an SQL error, more than one statement, a
 * statement that writes, text that is not UTF-8: the message names the row and column),
 * TSYNC_EVERSION (opts of an unknown version), TSYNC_EIO (a write error). */
TSYNC_API int tsync_store_export(size_t *nrows, tsync_store *s, const char *table,
                                 const char *query, FILE *out, const tsync_export_options *opts);

/* Called once per bad value or bad row with "NAME:LINE:COLUMN: why" (or "NAME:LINE: why"),
 * NAME being tsync_import_options.name. The string is borrowed for the call. */
typedef void (*tsync_io_bad_cb)(void *ctx, const char *msg);

/* A row an import read, as one JSON object (text: column name -> value, a blob as
 * {"base64": "..."}), borrowed for the call. */
typedef void (*tsync_io_row_cb)(void *ctx, const char *json);

typedef struct {
    uint32_t version;    /* TSYNC_IMPORT_OPTIONS_VERSION */
    int32_t format;      /* a tsync_io_format; 0 means CSV */
    const char *name;    /* the input's name in messages (its path); NULL means "-" */
    int32_t skip_bad;    /* import the good rows, and write the bad ones to rejects */
    FILE *rejects;       /* with skip_bad: where rejected rows go (same format, each with its
                            reason; docs/IO.md); NULL drops them */
    tsync_io_bad_cb bad; /* may be NULL */
    tsync_io_progress_cb progress; /* may be NULL */
    void *ctx;                     /* passed to bad and progress */
    uint64_t progress_every;       /* rows between two progress calls; 0 means 100000 */
    /* Version 2. dry_run: check every value and upsert in a transaction that is rolled back, so
     * nothing is written or sealed; the report and the bad calls are what the import would give
     * (report->imported: the rows it would upsert). */
    int32_t dry_run;
    tsync_io_row_cb row; /* may be NULL: each of the first row_max good rows, before it is
                            upserted (a preview); ctx */
    uint64_t row_max;    /* 0 means 10 */
} tsync_import_options;

#define TSYNC_IMPORT_OPTIONS_VERSION 2
#define TSYNC_IMPORT_OPTIONS_INIT                                                                  \
    {                                                                                              \
        TSYNC_IMPORT_OPTIONS_VERSION, 0, NULL, 0, NULL, NULL, NULL, NULL, 0, 0, NULL, 0            \
    }

/* Sets *out to TSYNC_IMPORT_OPTIONS_INIT as of version (the caller's TSYNC_IMPORT_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_import_options_init(tsync_import_options *out, uint32_t version);

/* What an import did. Filled also when it fails (imported is then 0: nothing was changed). */
typedef struct {
    uint32_t version; /* TSYNC_IMPORT_REPORT_VERSION */
    size_t rows;      /* data rows read */
    size_t imported;  /* rows upserted */
    size_t rejected;  /* rows refused (written to rejects with skip_bad) */
    size_t nbad;      /* bad values reported through bad */
} tsync_import_report;

#define TSYNC_IMPORT_REPORT_VERSION 1
#define TSYNC_IMPORT_REPORT_INIT                                                                   \
    {                                                                                              \
        TSYNC_IMPORT_REPORT_VERSION, 0, 0, 0, 0                                                    \
    }

/* Sets *out to TSYNC_IMPORT_REPORT_INIT as of version (the caller's TSYNC_IMPORT_REPORT_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_import_report_init(tsync_import_report *out, uint32_t version);

/* Upserts the rows of in into table (INSERT ... ON CONFLICT(primary key) DO UPDATE of the columns
 * the file gives) in one transaction, then seals. Every value is typed by its column's declared
 * type, not by how it looks. Without skip_bad, one bad value makes the whole import change
 * nothing, and every bad value is reported through bad; with skip_bad, the good rows are
 * committed and the bad ones written to rejects (the caller removes a rejects file that stayed
 * empty: report->rejected is 0).
 * report: may be NULL; its version is checked like the options'.
 * in:     an open stdio stream, read to its end (not closed).
 * opts:   NULL for defaults (CSV, bad rows refuse the import).
 * Errors: TSYNC_ENOTFOUND (no such table), TSYNC_EREFUSED (bad values without skip_bad; nothing
 * was changed), TSYNC_ECORRUPT (the file's structure is broken: CSV quoting, JSON syntax; nothing
 * was changed), TSYNC_EINVAL (the header names an unknown column or lacks a key column; an
 * unknown format), TSYNC_EVERSION (opts or report of an unknown version), TSYNC_EBUSY,
 * TSYNC_EIO. */
TSYNC_API int tsync_store_import(tsync_import_report *report, tsync_store *s, const char *table,
                                 FILE *in, const tsync_import_options *opts);

#ifdef __cplusplus
}
#endif
#endif
