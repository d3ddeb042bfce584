/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_io.c — tillsync export and import: a table or query out to CSV, JSON or NDJSON, and
 * such a file back in as upserts that replicate. The work is the library's (tillsync/io.h); this
 * file parses the arguments, handles files (temporary file and rename for -o, the .rejects file)
 * and prints.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_io.h"

#define MAX_SHOWN 100

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

static int open_store(const char *path, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(s, path, &o) != 0) return cli_fail("open");
    return 0;
}

typedef struct {
    const char *query, *fmt, *outpath;
    int skip_bad;
} io_args;

static int on_io_opt(void *ctx, int c, const char *v)
{
    io_args *a = ctx;
    if (c == 'q') a->query = v;
    if (c == 'f') a->fmt = v;
    if (c == 'o') a->outpath = v;
    if (c == 's') a->skip_bad = 1;
    return 0;
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {{"query", required_argument, NULL, 'q'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    io_args a = {0};
    const char *pos[2] = {NULL, NULL};
    int npos, json = 0;
    int prc = cli_parse("export", argc, argv, opts, "o:", &json, on_io_opt, &a, pos, 2, &npos);
    if (prc) return prc;
    const char *db = pos[0], *table = pos[1], *query = a.query, *fmt = a.fmt, *outpath = a.outpath;
    if (!db) return usage("export needs DB and TABLE or --query SQL");
    if (!table == !query) return usage("export needs either TABLE or --query SQL, not both");
    if (json && !outpath)
        return usage("export: --json reports on the file of -o FILE (the rows as JSON are "
                     "--format json)");
    int format = fmt ? tsync_io_format_parse(fmt) : outpath ? tsync_io_format_guess(outpath) : 0;
    if (!fmt && !format) format = TSYNC_IO_CSV;
    if (!format) return usage("export: --format is csv, json or ndjson");

    tsync_store *s;
    if (cli_open(db, CLI_RO, &s)) return 1;
    FILE *out = stdout;
    char *tmp = NULL;
    if (outpath) {
        size_t n = strlen(outpath) + 8;
        tmp = malloc(n);
        if (!tmp) {
            tsync_store_free(s);
            fprintf(stderr, "tillsync: export: out of memory\n");
            return 1;
        }
        snprintf(tmp, n, "%s.tmp", outpath);
        out = fopen(tmp, "wb");
        if (!out) {
            fprintf(stderr, "tillsync: export: cannot write %s: %s\n", tmp, strerror(errno));
            free(tmp);
            tsync_store_free(s);
            return 1;
        }
    }
    size_t rows = 0;
    tsync_export_options eo = TSYNC_EXPORT_OPTIONS_INIT;
    eo.format = format;
    int rc = tsync_store_export(&rows, s, table, query, out, &eo);
    int ret = rc ? cli_fail("export") : 0;
    if (outpath) {
        int bad = fclose(out) != 0;
        if (!ret && (bad || rename(tmp, outpath) != 0)) {
            fprintf(stderr, "tillsync: export: cannot write %s: %s\n", outpath, strerror(errno));
            ret = 1;
        }
        if (ret) {
            remove(tmp);
        } else if (json) {
            json_t *o = json_pack("{s:I,s:s}", "rows", (json_int_t)rows, "file", outpath);
            char *txt = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            json_decref(o);
            puts(txt ? txt : "{}");
            free(txt);
        } else {
            fprintf(stderr, "exported %zu rows to %s\n", rows, outpath);
        }
        free(tmp);
    }
    tsync_store_free(s);
    return ret;
}

typedef struct {
    size_t shown;
    int tty;
} import_ui;

static void on_bad(void *ctx, const char *msg)
{
    import_ui *ui = ctx;
    if (ui->shown++ < MAX_SHOWN) {
        if (ui->tty) fputs("\r\033[K", stderr);
        fprintf(stderr, "%s\n", msg);
    }
}

static void on_progress(void *ctx, uint64_t rows)
{
    fprintf(stderr, "\r\033[Kimport: %llu rows read", (unsigned long long)rows);
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'},
                                         {"skip-bad", no_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    io_args a = {0};
    const char *pos[3] = {NULL, NULL, NULL};
    int npos, json = 0;
    int prc = cli_parse("import", argc, argv, opts, NULL, &json, on_io_opt, &a, pos, 3, &npos);
    if (prc) return prc;
    if (npos < 3) return usage("import needs DB TABLE FILE");
    const char *fmt = a.fmt;
    int skip_bad = a.skip_bad;
    const char *db = pos[0], *table = pos[1], *path = pos[2];
    int format = fmt ? tsync_io_format_parse(fmt) : tsync_io_format_guess(path);
    if (!format)
        return usage(fmt ? "import: --format is csv, json or ndjson"
                         : "import: cannot tell the format from the file name; give --format");

    FILE *in = fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "tillsync: import: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    tsync_store *s;
    if (open_store(db, &s)) {
        fclose(in);
        return 1;
    }
    size_t n = strlen(path) + 16;
    char *rej = malloc(n), *rejtmp = malloc(n);
    FILE *rf = NULL;
    int ret = 0;
    if (!rej || !rejtmp) {
        fprintf(stderr, "tillsync: import: out of memory\n");
        ret = 1;
        goto done;
    }
    snprintf(rej, n, "%s.rejects", path);
    snprintf(rejtmp, n, "%s.rejects.tmp", path);
    if (skip_bad && !(rf = fopen(rejtmp, "wb"))) {
        fprintf(stderr, "tillsync: import: cannot write %s: %s\n", rejtmp, strerror(errno));
        ret = 1;
        goto done;
    }
    import_ui ui = {0, isatty(2)};
    tsync_import_options o = TSYNC_IMPORT_OPTIONS_INIT;
    tsync_import_report r = TSYNC_IMPORT_REPORT_INIT;
    o.name = path;
    o.format = format;
    o.skip_bad = skip_bad;
    o.rejects = rf;
    o.bad = on_bad;
    o.progress = ui.tty ? on_progress : NULL;
    o.ctx = &ui;
    int rc = tsync_store_import(&r, s, table, in, &o);
    if (ui.tty && r.rows >= 100000) fputs("\r\033[K", stderr);
    if (ui.shown > MAX_SHOWN)
        fprintf(stderr, "tillsync: import: %zu more bad values not shown\n", ui.shown - MAX_SHOWN);
    if (rf) {
        int bad = fclose(rf) != 0;
        rf = NULL;
        if (rc == 0 && r.rejected && (bad || rename(rejtmp, rej) != 0)) {
            fprintf(stderr, "tillsync: import: cannot write %s: %s\n", rej, strerror(errno));
            ret = 1;
        }
        remove(rejtmp);
        if (rc == 0 && !r.rejected) remove(rej); /* a stale one would mislead */
    }
    if (rc) {
        ret = cli_fail("import");
    } else if (json) {
        json_t *jo = json_pack("{s:s,s:I,s:I}", "table", table, "imported", (json_int_t)r.imported,
                               "rejected", (json_int_t)r.rejected);
        json_object_set_new(jo, "rejects", r.rejected ? json_string(rej) : json_null());
        char *txt = json_dumps(jo, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(jo);
        puts(txt ? txt : "{}");
        free(txt);
    } else if (r.rejected) {
        printf("imported %zu rows into %s; %zu rejected, see %s\n", r.imported, table, r.rejected,
               rej);
    } else {
        printf("imported %zu rows into %s\n", r.imported, table);
    }
done:
    if (rf) fclose(rf);
    fclose(in);
    free(rej);
    free(rejtmp);
    tsync_store_free(s);
    return ret;
}
