/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_io.c — the public face of export and import (tillsync/io.h): checks the versions of
 * the options and report, and adapts them to store/io.c, which does the work and which the tests
 * reach directly.
 */
#include "tillsync/io.h"

#include <stddef.h>
#include <string.h>

#include "internal.h"
#include "store/io.h"

_Static_assert((int)TSYNC_IO_CSV == (int)TSYNC__IO_CSV &&
                   (int)TSYNC_IO_JSON == (int)TSYNC__IO_JSON &&
                   (int)TSYNC_IO_NDJSON == (int)TSYNC__IO_NDJSON,
               "the public formats are store/io.c's");

int tsync_io_format_parse(const char *name)
{
    return tsync__io_format_parse(name);
}

int tsync_io_format_guess(const char *path)
{
    return tsync__io_format_guess(path);
}

/* store/io.c counts rows in size_t; the public callback takes uint64_t (same on every platform). */
typedef struct {
    tsync_io_progress_cb fn;
    tsync_io_bad_cb bad;
    void *ctx;
    tsync_io_row_cb row;
} io_cb;

static void on_progress(void *ctx, size_t rows)
{
    io_cb *c = ctx;
    c->fn(c->ctx, (uint64_t)rows);
}

static void on_bad(void *ctx, const char *msg)
{
    io_cb *c = ctx;
    if (c->bad) c->bad(c->ctx, msg);
}

static void on_row(void *ctx, const char *json)
{
    io_cb *c = ctx;
    c->row(c->ctx, json);
}

static size_t every(uint64_t n)
{
    return n > SIZE_MAX ? SIZE_MAX : (size_t)n;
}

int tsync_store_export(size_t *nrows, tsync_store *s, const char *table, const char *query,
                       FILE *out, const tsync_export_options *opts)
{
    if (nrows) *nrows = 0;
    tsync_export_options o = TSYNC_EXPORT_OPTIONS_INIT;
    if (opts) {
        if (opts->version != TSYNC_EXPORT_OPTIONS_VERSION)
            return tsync__err(TSYNC_EVERSION, "export options of version %u (this library has %u)",
                              opts->version, (unsigned)TSYNC_EXPORT_OPTIONS_VERSION);
        o = *opts;
    }
    if (!s || !out) return tsync__err(TSYNC_EINVAL, "export needs a store and an output stream");
    int format = o.format ? o.format : TSYNC_IO_CSV;
    io_cb c = {o.progress, NULL, o.progress_ctx, NULL};
    return tsync__export_progress(s, table, query, format, out, nrows,
                                  o.progress ? on_progress : NULL, &c, every(o.progress_every));
}

int tsync_store_import(tsync_import_report *report, tsync_store *s, const char *table, FILE *in,
                       const tsync_import_options *opts)
{
    if (report && report->version != TSYNC_IMPORT_REPORT_VERSION)
        return tsync__err(TSYNC_EVERSION, "import report of version %u (this library has %u)",
                          report->version, (unsigned)TSYNC_IMPORT_REPORT_VERSION);
    if (report) report->rows = report->imported = report->rejected = report->nbad = 0;
    tsync_import_options o = TSYNC_IMPORT_OPTIONS_INIT;
    if (opts) {
        if (opts->version < 1 || opts->version > TSYNC_IMPORT_OPTIONS_VERSION)
            return tsync__err(TSYNC_EVERSION,
                              "import options of version %u (this library has 1 to %u)",
                              opts->version, (unsigned)TSYNC_IMPORT_OPTIONS_VERSION);
        if (opts->version == 1) /* before dry_run */
            memcpy(&o, opts, offsetof(tsync_import_options, dry_run));
        else
            o = *opts;
    }
    if (!s || !table || !in)
        return tsync__err(TSYNC_EINVAL, "import needs a store, a table and an input stream");
    io_cb c = {o.progress, o.bad, o.ctx, o.row};
    tsync__import_opts io = {0};
    io.name = o.name;
    io.format = o.format ? o.format : TSYNC_IO_CSV;
    io.skip_bad = o.skip_bad;
    io.rejects = o.rejects;
    io.bad = o.bad ? on_bad : NULL;
    io.progress = o.progress ? on_progress : NULL;
    io.ctx = &c;
    io.progress_every = every(o.progress_every);
    io.dry_run = o.dry_run;
    io.row = o.row ? on_row : NULL;
    io.row_max = o.row_max ? every(o.row_max) : 10;
    int rc = tsync__import(s, table, in, &io);
    if (report) {
        report->rows = io.rows;
        report->imported = io.imported;
        report->rejected = io.rejected;
        report->nbad = io.nbad;
    }
    return rc;
}
