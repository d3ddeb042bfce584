/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_io.c — the public face of export and import (tillsync/io.h): checks the versions of
 * the options and report, and adapts them to store/io.c, which does the work and which the tests
 * reach directly.
 */
#include "tillsync/io.h"

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
    io_cb c = {o.progress, NULL, o.progress_ctx};
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
        if (opts->version != TSYNC_IMPORT_OPTIONS_VERSION)
            return tsync__err(TSYNC_EVERSION, "import options of version %u (this library has %u)",
                              opts->version, (unsigned)TSYNC_IMPORT_OPTIONS_VERSION);
        o = *opts;
    }
    if (!s || !table || !in)
        return tsync__err(TSYNC_EINVAL, "import needs a store, a table and an input stream");
    io_cb c = {o.progress, o.bad, o.ctx};
    tsync__import_opts io = {0};
    io.name = o.name;
    io.format = o.format ? o.format : TSYNC_IO_CSV;
    io.skip_bad = o.skip_bad;
    io.rejects = o.rejects;
    io.bad = o.bad ? on_bad : NULL;
    io.progress = o.progress ? on_progress : NULL;
    io.ctx = &c;
    io.progress_every = every(o.progress_every);
    int rc = tsync__import(s, table, in, &io);
    if (report) {
        report->rows = io.rows;
        report->imported = io.imported;
        report->rejected = io.rejected;
        report->nbad = io.nbad;
    }
    return rc;
}
