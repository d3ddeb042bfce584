/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/io.c — CSV, JSON and NDJSON export and import (see store/io.h and docs/IO.md).
 * Over 800 lines on purpose: the three formats share one typing of values by column affinity
 * and one row writer, which keeps what export writes and import reads the same.
 *
 * Design notes
 * - Export streams: one prepared statement, one row at a time, written straight to the FILE.
 *   Text is always quoted in CSV and NULL is an empty unquoted field, so the two stay apart; the
 *   writer refuses text that is not UTF-8 rather than write a file its own importer would refuse.
 * - Import types each value by the column's declared affinity, not by how it looks in the file:
 *   CSV carries no types, and a product id "007" must stay text. Every row is validated even after
 *   the first bad one, so that the user gets every bad value in one run.
 * - Import runs in one BEGIN IMMEDIATE transaction on the store's connection: the capture triggers
 *   record each upsert, and a refused import rolls back, capture included. A row that SQLite itself
 *   refuses (NOT NULL, CHECK) is undone by statement rollback and counted as a bad row.
 * - Line numbers: CSV fields may hold newlines, so the parser is fed one physical line at a time
 *   and a record's line is the line its first field ended on minus the newlines inside it.
 */
#include <csv.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store/io.h"

#define REJECT_KEY  "tillsync_reject"
#define RAW_KEY     "tillsync_raw"
#define B64_PREFIX  "base64:"
#define B64_KEY     "base64"
#define B64_VARIANT sodium_base64_VARIANT_ORIGINAL

enum { AFF_INT = 1, AFF_TEXT, AFF_BLOB, AFF_REAL, AFF_NUM };

int tsync__io_format_parse(const char *name)
{
    if (!name) return 0;
    if (!strcmp(name, "csv")) return TSYNC__IO_CSV;
    if (!strcmp(name, "json")) return TSYNC__IO_JSON;
    if (!strcmp(name, "ndjson")) return TSYNC__IO_NDJSON;
    return 0;
}

int tsync__io_format_guess(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot) return 0;
    if (!strcasecmp(dot, ".csv")) return TSYNC__IO_CSV;
    if (!strcasecmp(dot, ".json")) return TSYNC__IO_JSON;
    if (!strcasecmp(dot, ".ndjson") || !strcasecmp(dot, ".jsonl")) return TSYNC__IO_NDJSON;
    return 0;
}

/* ---------------------------------------------------------------- shared helpers */

/* Offset of the first byte that is not part of valid UTF-8 (overlongs, surrogates and code points
 * above U+10FFFF are invalid), or n when all is valid. */
static size_t utf8_bad_at(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return i;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (p[i + j] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += k + 1;
    }
    return n;
}

/* Shortest of %.15g..%.17g that reads back as the same double, always with a '.' or an exponent
 * so that it reads as a real. Infinities as "Inf"/"-Inf". */
static void fmt_real(double d, char out[40])
{
    if (isinf(d)) {
        strcpy(out, d < 0 ? "-Inf" : "Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break;
    }
    if (!strpbrk(out, ".eEni")) strcat(out, ".0");
}

static char *b64_encode(const void *p, size_t n)
{
    size_t len = sodium_base64_ENCODED_LEN(n, B64_VARIANT);
    char *s = malloc(len);
    if (s) sodium_bin2base64(s, len, p, n, B64_VARIANT);
    return s;
}

/* Decodes strict standard base64 (padding required) into a malloc'd buffer; -1 if malformed. */
static int b64_decode(const char *s, size_t n, unsigned char **out, size_t *len)
{
    unsigned char *b = malloc(n / 4 * 3 + 1);
    const char *end = NULL;
    if (!b) return -1;
    if (sodium_base642bin(b, n / 4 * 3 + 1, s, n, NULL, len, &end, B64_VARIANT) != 0 ||
        end != s + n) {
        free(b);
        return -1;
    }
    *out = b;
    return 0;
}

/* A value shown in a message: at most 32 bytes, quoted, control bytes and broken UTF-8 as '?'. */
static void show(const char *p, size_t n, char out[48])
{
    size_t m = n > 32 ? 32 : n;
    while (m < n && m > 0 && ((unsigned char)p[m] & 0xc0) == 0x80) m--;
    size_t valid = utf8_bad_at((const unsigned char *)p, m);
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)p[i];
        out[o++] = (c < 0x20 || c == 0x7f || (c >= 0x80 && valid < m)) ? '?' : (char)c;
    }
    if (m < n) out[o++] = '.', out[o++] = '.', out[o++] = '.';
    out[o++] = '"';
    out[o] = 0;
}

/* ---------------------------------------------------------------- export */

static int put_json_string(FILE *f, const char *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    return fputc('"', f) == EOF ? -1 : 0;
}

static int export_value(FILE *f, sqlite3_stmt *st, int i, int format, size_t row, const char *col)
{
    char num[40];
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        fprintf(f, "%lld", (long long)sqlite3_column_int64(st, i));
        return 0;
    case SQLITE_FLOAT: {
        double d = sqlite3_column_double(st, i);
        if (format != TSYNC__IO_CSV && isinf(d))
            fputs(d < 0 ? "\"-Infinity\"" : "\"Infinity\"", f);
        else
            fmt_real(d, num), fputs(num, f);
        return 0;
    }
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        if (utf8_bad_at((const unsigned char *)t, n) != n)
            return tsync__err(TSYNC_EINVAL, "row %zu, column \"%s\": text is not valid UTF-8", row,
                              col);
        if (format == TSYNC__IO_CSV) return csv_fwrite(f, t, n) == 0 ? 0 : -1;
        return put_json_string(f, t, n);
    }
    case SQLITE_BLOB: {
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        char *b = b64_encode(sqlite3_column_blob(st, i), n);
        if (!b) return tsync__err(TSYNC_ENOMEM, "out of memory");
        if (format == TSYNC__IO_CSV) {
            size_t bl = strlen(b);
            char *v = malloc(bl + sizeof B64_PREFIX);
            if (!v) {
                free(b);
                return tsync__err(TSYNC_ENOMEM, "out of memory");
            }
            memcpy(v, B64_PREFIX, sizeof B64_PREFIX - 1);
            memcpy(v + sizeof B64_PREFIX - 1, b, bl + 1);
            csv_fwrite(f, v, strlen(v));
            free(v);
        } else {
            fprintf(f, "{\"" B64_KEY "\":\"%s\"}", b);
        }
        free(b);
        return 0;
    }
    default:
        if (format != TSYNC__IO_CSV) fputs("null", f);
        return 0;
    }
}

int tsync__export(tsync_store *s, const char *table, const char *query, int format, FILE *out,
                  size_t *nrows)
{
    return tsync__export_progress(s, table, query, format, out, nrows, NULL, NULL, 0);
}

int tsync__export_progress(tsync_store *s, const char *table, const char *query, int format,
                           FILE *out, size_t *nrows, tsync__io_progress_cb progress, void *ctx,
                           size_t every)
{
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    char *sql = NULL;
    size_t row = 0;
    int rc = 0;
    if (nrows) *nrows = 0;
    if ((!table) == (!query) || format < TSYNC__IO_CSV || format > TSYNC__IO_NDJSON)
        return tsync__err(TSYNC_EINVAL, "export needs a table or a query, and a format");
    if (table) {
        sqlite3_stmt *chk = NULL;
        int found = 0;
        if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info(?1)", -1, &chk, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(chk, 1, table, -1, SQLITE_STATIC);
            found = sqlite3_step(chk) == SQLITE_ROW;
        }
        sqlite3_finalize(chk);
        if (!found) return tsync__err(TSYNC_ENOTFOUND, "no table \"%s\"", table);
        sql = sqlite3_mprintf("SELECT * FROM \"%w\"", table);
        if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    if (sqlite3_prepare_v2(db, sql ? sql : query, -1, &st, &tail) != SQLITE_OK) {
        rc = tsync__err(TSYNC_EINVAL, "SQL error: %s", sqlite3_errmsg(db));
        goto done;
    }
    while (tail &&
           (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';'))
        tail++;
    if (!st || (tail && *tail)) {
        rc = tsync__err(TSYNC_EINVAL, "the query must be exactly one statement");
        goto done;
    }
    if (!sqlite3_stmt_readonly(st)) {
        rc = tsync__err(TSYNC_EINVAL, "the query would change the database; export only reads");
        goto done;
    }
    int n = sqlite3_column_count(st);
    if (format == TSYNC__IO_CSV) {
        for (int i = 0; i < n; i++) {
            const char *name = sqlite3_column_name(st, i);
            if (i) fputc(',', out);
            csv_fwrite(out, name, strlen(name));
        }
        fputs("\r\n", out);
    } else if (format == TSYNC__IO_JSON) {
        fputc('[', out);
    }
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        row++;
        if (format == TSYNC__IO_JSON) fputs(row > 1 ? ",\n" : "\n", out);
        if (format != TSYNC__IO_CSV) fputc('{', out);
        for (int i = 0; i < n && rc == 0; i++) {
            const char *name = sqlite3_column_name(st, i);
            if (i) fputc(',', out);
            if (format != TSYNC__IO_CSV) {
                put_json_string(out, name, strlen(name));
                fputc(':', out);
            }
            rc = export_value(out, st, i, format, row, name);
        }
        if (rc) goto done;
        if (format != TSYNC__IO_CSV) fputc('}', out);
        if (format != TSYNC__IO_JSON) fputs(format == TSYNC__IO_CSV ? "\r\n" : "\n", out);
        if (ferror(out)) break;
        if (progress && row % (every ? every : 100000) == 0) progress(ctx, row);
    }
    if (src != SQLITE_DONE && src != SQLITE_ROW) {
        rc = tsync__err_sqlite(db, src, "export");
        goto done;
    }
    if (format == TSYNC__IO_JSON) fputs(row ? "\n]\n" : "]\n", out);
    if (fflush(out) != 0 || ferror(out))
        rc = tsync__err(TSYNC_EIO, "write error: %s", strerror(errno));
    if (nrows) *nrows = row;
done:
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return rc;
}

/* ---------------------------------------------------------------- import */

typedef struct {
    char *name;
    int aff;
    int pk; /* 1-based position in the primary key, 0 if not part of it */
} icol;

typedef struct {
    int set;
    int type; /* SQLITE_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL */
    int64_t i;
    double d;
    const char *p;
    size_t n;
    unsigned char *own; /* decoded blob */
} ival;

typedef struct {
    tsync_store *s;
    sqlite3 *db;
    tsync__import_opts *o;
    const char *table;
    icol *cols;
    int ncols, npk;
    ival *vals;
    size_t line; /* line of the current row */
    int row_bad;
    int shapeless; /* the row has no values to check (wrong field count, not an object) */
    char *reason;  /* why the current row is bad, "col: why; col: why" */
    size_t rlen, rcap;
    int failed; /* some row was bad */
    int fatal;  /* error code that stops the import */
    /* upsert statement for the set of columns in sig */
    sqlite3_stmt *st;
    char *sig;
    /* rejects */
    size_t nrejects_written;
    /* CSV */
    struct csv_parser csv;
    size_t cur_line, last_end_line;
    int header_done;
    int *map; /* file column -> table column; -1: ignored */
    int nmap;
    char **f; /* raw fields of the current record (NULL: empty unquoted) */
    size_t *flen;
    int nf, capf;
    size_t rec_line;
    json_t *cur_obj; /* JSON: the row being imported, for the rejects file */
} imp;

static int affinity(const char *t)
{
    if (!t || !*t) return AFF_BLOB;
    if (strcasestr(t, "INT")) return AFF_INT;
    if (strcasestr(t, "CHAR") || strcasestr(t, "CLOB") || strcasestr(t, "TEXT")) return AFF_TEXT;
    if (strcasestr(t, "BLOB")) return AFF_BLOB;
    if (strcasestr(t, "REAL") || strcasestr(t, "FLOA") || strcasestr(t, "DOUB")) return AFF_REAL;
    return AFF_NUM;
}

static int load_columns(imp *im)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(im->db, "SELECT name, type, pk FROM pragma_table_info(?1)", -1, &st,
                                NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(im->db, rc, "read the table's columns");
    sqlite3_bind_text(st, 1, im->table, -1, SQLITE_STATIC);
    int cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (im->ncols == cap) {
            cap = cap ? 2 * cap : 16;
            icol *c = realloc(im->cols, (size_t)cap * sizeof *c);
            if (!c) break;
            im->cols = c;
        }
        icol *c = &im->cols[im->ncols];
        c->name = strdup((const char *)sqlite3_column_text(st, 0));
        c->aff = affinity((const char *)sqlite3_column_text(st, 1));
        c->pk = sqlite3_column_int(st, 2);
        if (!c->name) break;
        im->ncols++;
        if (c->pk) im->npk++;
    }
    sqlite3_finalize(st);
    if (im->ncols == 0) return tsync__err(TSYNC_ENOTFOUND, "no table \"%s\"", im->table);
    if (im->npk == 0)
        return tsync__err(TSYNC_EUNSUPPORTED,
                          "table \"%s\" has no primary key: import upserts by primary key",
                          im->table);
    im->vals = calloc((size_t)im->ncols, sizeof *im->vals);
    im->sig = calloc((size_t)im->ncols + 1, 1);
    if (!im->vals || !im->sig) return tsync__err(TSYNC_ENOMEM, "out of memory");
    return 0;
}

static int col_index(imp *im, const char *name, size_t n)
{
    for (int i = 0; i < im->ncols; i++)
        if (tsync__name_eq(im->cols[i].name, strlen(im->cols[i].name), name, n)) return i;
    return -1;
}

/* Reports one bad value (col >= 0: a table column; col == -2: a named unknown column via
 * colname; otherwise the whole row). */
static void bad(imp *im, const char *colname, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad(imp *im, const char *colname, const char *fmt, ...)
{
    char why[256], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (colname)
        snprintf(msg, sizeof msg, "%s:%zu:%s: %s", im->o->name, im->line, colname, why);
    else
        snprintf(msg, sizeof msg, "%s:%zu: %s", im->o->name, im->line, why);
    im->o->nbad++;
    if (im->o->bad) im->o->bad(im->o->ctx, msg);
    im->row_bad = 1;
    char part[600];
    int k = colname ? snprintf(part, sizeof part, "%s%s: %s", im->rlen ? "; " : "", colname, why)
                    : snprintf(part, sizeof part, "%s%s", im->rlen ? "; " : "", why);
    if (k < 0) return;
    if ((size_t)k >= sizeof part) k = sizeof part - 1;
    if (im->rlen + (size_t)k + 1 > im->rcap) {
        size_t cap = (im->rcap + (size_t)k + 1) * 2;
        char *r = realloc(im->reason, cap);
        if (!r) return;
        im->reason = r, im->rcap = cap;
    }
    memcpy(im->reason + im->rlen, part, (size_t)k + 1);
    im->rlen += (size_t)k;
}

static void row_begin(imp *im, size_t line)
{
    im->line = line;
    im->row_bad = 0;
    im->shapeless = 0;
    im->rlen = 0;
    if (im->reason) im->reason[0] = 0;
    for (int i = 0; i < im->ncols; i++) {
        free(im->vals[i].own);
        memset(&im->vals[i], 0, sizeof im->vals[i]);
    }
}

static int parse_int64(const char *p, size_t n, int64_t *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, p, n);
    buf[n] = 0;
    if (!(buf[0] == '-' || buf[0] == '+' || (buf[0] >= '0' && buf[0] <= '9'))) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_real(const char *p, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, p, n);
    buf[n] = 0;
    const char *m = buf + (buf[0] == '-' || buf[0] == '+');
    if (!strcasecmp(m, "inf") || !strcasecmp(m, "infinity")) {
        *out = buf[0] == '-' ? -INFINITY : INFINITY;
        return 0;
    }
    /* decimal only: strtod would also take hex, "nan" and leading spaces */
    if (strspn(buf, "0123456789+-.eE") != n) return -1;
    char *end;
    double d = strtod(buf, &end);
    if (*end || isnan(d)) return -1;
    *out = d;
    return 0;
}

/* A CSV field for column c (NULL p: empty unquoted, i.e. SQL NULL). */
static void set_text_value(imp *im, int c, const char *p, size_t n)
{
    ival *v = &im->vals[c];
    const icol *col = &im->cols[c];
    char sh[48];
    v->set = 1;
    if (!p) {
        v->type = SQLITE_NULL;
        return;
    }
    switch (col->aff) {
    case AFF_INT:
    case AFF_REAL:
    case AFF_NUM:
        /* INTEGER takes only integers, REAL only numbers read as doubles, NUMERIC either. */
        if (col->aff != AFF_REAL && parse_int64(p, n, &v->i) == 0) {
            v->type = SQLITE_INTEGER;
            return;
        }
        if (col->aff != AFF_INT && parse_real(p, n, &v->d) == 0) {
            v->type = SQLITE_FLOAT;
            return;
        }
        show(p, n, sh);
        bad(im, col->name, "%s is not %s", sh,
            col->aff == AFF_INT ? "an integer (64-bit)" : "a number");
        return;
    case AFF_BLOB:
        if (n >= sizeof B64_PREFIX - 1 && !memcmp(p, B64_PREFIX, sizeof B64_PREFIX - 1)) {
            const char *b = p + sizeof B64_PREFIX - 1;
            if (b64_decode(b, n - (sizeof B64_PREFIX - 1), &v->own, &v->n) != 0) {
                show(p, n, sh);
                bad(im, col->name, "%s is not valid base64", sh);
                return;
            }
            v->type = SQLITE_BLOB;
            v->p = (const char *)v->own;
            return;
        }
        /* anything else is text */
        __attribute__((fallthrough));
    default: {
        size_t at = utf8_bad_at((const unsigned char *)p, n);
        if (at != n) {
            bad(im, col->name, "text is not valid UTF-8 (byte %zu)", at + 1);
            return;
        }
        v->type = SQLITE_TEXT;
        v->p = p;
        v->n = n;
        return;
    }
    }
}

static const char *json_kind(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static void set_json_value(imp *im, int c, json_t *j)
{
    ival *v = &im->vals[c];
    const icol *col = &im->cols[c];
    v->set = 1;
    if (json_is_null(j)) {
        v->type = SQLITE_NULL;
        return;
    }
    if (json_is_object(j)) {
        json_t *b = json_object_get(j, B64_KEY);
        if (col->aff != AFF_BLOB || json_object_size(j) != 1 || !json_is_string(b)) {
            bad(im, col->name, "%s is not a value for a column of type %s",
                json_object_size(j) == 1 && b ? "a blob" : "an object",
                col->aff == AFF_BLOB ? "BLOB" : "INTEGER, REAL or TEXT");
            return;
        }
        if (b64_decode(json_string_value(b), json_string_length(b), &v->own, &v->n) != 0) {
            bad(im, col->name, "blob is not valid base64");
            return;
        }
        v->type = SQLITE_BLOB;
        v->p = (const char *)v->own;
        return;
    }
    if (json_is_integer(j) && col->aff != AFF_TEXT && col->aff != AFF_REAL) {
        v->type = SQLITE_INTEGER;
        v->i = json_integer_value(j);
        return;
    }
    if (json_is_number(j) && col->aff != AFF_TEXT && col->aff != AFF_INT) {
        v->type = SQLITE_FLOAT;
        v->d = json_number_value(j);
        return;
    }
    if (json_is_string(j) && col->aff != AFF_TEXT && col->aff != AFF_INT) {
        const char *s = json_string_value(j);
        if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
            v->type = SQLITE_FLOAT;
            v->d = s[0] == '-' ? -INFINITY : INFINITY;
            return;
        }
    }
    if (json_is_string(j) && (col->aff == AFF_TEXT || col->aff == AFF_BLOB)) {
        v->type = SQLITE_TEXT;
        v->p = json_string_value(j);
        v->n = json_string_length(j);
        return;
    }
    static const char *want[] = {"", "an integer", "text", "a value", "a number", "a number"};
    if (json_is_string(j)) {
        char sh[48];
        show(json_string_value(j), json_string_length(j), sh);
        bad(im, col->name, "%s is a string, expected %s", sh, want[col->aff]);
    } else if (json_is_real(j) && col->aff == AFF_INT) {
        bad(im, col->name, "%.17g is not an integer", json_real_value(j));
    } else {
        bad(im, col->name, "%s, expected %s", json_kind(j), want[col->aff]);
    }
}

static int prepare_upsert(imp *im)
{
    int same = im->st != NULL;
    for (int i = 0; i < im->ncols && same; i++) same = im->sig[i] == (im->vals[i].set ? 1 : 2);
    if (same) return 0;
    sqlite3_finalize(im->st);
    im->st = NULL;
    sqlite3_str *q = sqlite3_str_new(im->db);
    sqlite3_str_appendf(q, "INSERT INTO \"%w\"(", im->table);
    int k = 0, nset = 0;
    for (int i = 0; i < im->ncols; i++) {
        im->sig[i] = im->vals[i].set ? 1 : 2;
        if (im->vals[i].set) sqlite3_str_appendf(q, "%s\"%w\"", k++ ? "," : "", im->cols[i].name);
    }
    sqlite3_str_appendall(q, ") VALUES(");
    for (int i = 0; i < k; i++) sqlite3_str_appendf(q, "%s?%d", i ? "," : "", i + 1);
    sqlite3_str_appendall(q, ") ON CONFLICT(");
    for (int p = 1, n = 0; p <= im->npk; p++)
        for (int i = 0; i < im->ncols; i++)
            if (im->cols[i].pk == p)
                sqlite3_str_appendf(q, "%s\"%w\"", n++ ? "," : "", im->cols[i].name);
    sqlite3_str_appendall(q, ") DO ");
    for (int i = 0; i < im->ncols; i++) {
        if (!im->vals[i].set || im->cols[i].pk) continue;
        sqlite3_str_appendf(q, "%s\"%w\"=excluded.\"%w\"", nset++ ? "," : "UPDATE SET ",
                            im->cols[i].name, im->cols[i].name);
    }
    if (!nset) sqlite3_str_appendall(q, "NOTHING");
    char *sql = sqlite3_str_finish(q);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = sqlite3_prepare_v2(im->db, sql, -1, &im->st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(im->db, rc, "prepare the upsert");
    return 0;
}

/* Checks the primary key and upserts the current row unless it is bad (or the import is already
 * refused). Returns 0, or an error code that stops the import. */
/* The row as a JSON object for a preview (o->row): blobs as {"base64": ...}, as exported. */
static void row_preview(imp *im)
{
    json_t *obj = json_object();
    for (int i = 0; i < im->ncols && obj; i++) {
        const ival *v = &im->vals[i];
        if (!v->set) continue;
        json_t *j = NULL;
        switch (v->type) {
        case SQLITE_INTEGER:
            j = json_integer((json_int_t)v->i);
            break;
        case SQLITE_FLOAT:
            j = json_real(v->d);
            break;
        case SQLITE_TEXT:
            j = json_stringn(v->p, v->n);
            break;
        case SQLITE_BLOB: {
            char *b = b64_encode(v->p ? v->p : "", v->n);
            j = b ? json_pack("{s:s}", B64_KEY, b) : NULL;
            free(b);
            break;
        }
        default:
            j = json_null();
        }
        json_object_set_new(obj, im->cols[i].name, j ? j : json_null());
    }
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (text) im->o->row(im->o->ctx, text);
    free(text);
    json_decref(obj);
}

static int row_end(imp *im, void (*write_reject)(imp *))
{
    tsync__import_opts *o = im->o;
    o->rows++;
    for (int i = 0; i < im->ncols && !im->shapeless; i++) {
        if (!im->cols[i].pk) continue;
        if (!im->vals[i].set)
            bad(im, im->cols[i].name, "primary key column missing");
        else if (im->vals[i].type == SQLITE_NULL && !im->row_bad)
            bad(im, im->cols[i].name, "primary key is NULL");
    }
    if (!im->row_bad && o->row && o->rows <= o->row_max) row_preview(im);
    if (!im->row_bad && !(im->failed && !o->skip_bad)) {
        int rc = prepare_upsert(im);
        if (rc) return rc;
        sqlite3_stmt *st = im->st;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        for (int i = 0, k = 1; i < im->ncols; i++) {
            const ival *v = &im->vals[i];
            if (!v->set) continue;
            switch (v->type) {
            case SQLITE_INTEGER:
                sqlite3_bind_int64(st, k, v->i);
                break;
            case SQLITE_FLOAT:
                sqlite3_bind_double(st, k, v->d);
                break;
            case SQLITE_TEXT:
                sqlite3_bind_text(st, k, v->p, (int)v->n, SQLITE_STATIC);
                break;
            case SQLITE_BLOB:
                sqlite3_bind_blob(st, k, v->p ? v->p : "", (int)v->n, SQLITE_STATIC);
                break;
            default:
                sqlite3_bind_null(st, k);
            }
            k++;
        }
        int src = sqlite3_step(st);
        sqlite3_reset(st);
        if (src == SQLITE_DONE) {
            o->imported++;
        } else if ((src & 0xff) == SQLITE_CONSTRAINT || (src & 0xff) == SQLITE_MISMATCH ||
                   (src & 0xff) == SQLITE_TOOBIG) {
            bad(im, NULL, "%s", sqlite3_errmsg(im->db));
        } else {
            return tsync__err_sqlite(im->db, src, "import");
        }
    }
    if (im->row_bad) {
        im->failed = 1;
        o->rejected++;
        if (o->skip_bad && o->rejects) {
            write_reject(im);
            im->nrejects_written++;
        }
    }
    if (o->progress && o->rows % (o->progress_every ? o->progress_every : 100000) == 0)
        o->progress(o->ctx, o->rows);
    return 0;
}

/* ---------------------------------------------------------------- import: CSV */

static void csv_put_field(FILE *f, const char *p, size_t n)
{
    if (p) csv_fwrite(f, p, n);
}

static void csv_reject(imp *im)
{
    FILE *f = im->o->rejects;
    csv_fwrite(f, im->reason ? im->reason : "", im->rlen);
    for (int i = 0; i < im->nf; i++) {
        fputc(',', f);
        csv_put_field(f, im->f[i], im->flen[i]);
    }
    fputs("\r\n", f);
}

static void csv_field(void *p, size_t len, void *ctx)
{
    imp *im = ctx;
    if (im->nf == im->capf) {
        int cap = im->capf ? 2 * im->capf : 16;
        char **f = realloc(im->f, (size_t)cap * sizeof *f);
        size_t *l = f ? realloc(im->flen, (size_t)cap * sizeof *l) : NULL;
        if (f) im->f = f;
        if (!f || !l) {
            im->fatal = tsync__err(TSYNC_ENOMEM, "out of memory");
            return;
        }
        im->flen = l;
        im->capf = cap;
    }
    char *copy = NULL;
    if (p) {
        copy = malloc(len + 1);
        if (!copy) {
            im->fatal = tsync__err(TSYNC_ENOMEM, "out of memory");
            return;
        }
        memcpy(copy, p, len);
        copy[len] = 0;
    }
    if (im->nf == 0) {
        size_t nl = 0;
        for (size_t i = 0; p && i < len; i++) nl += ((char *)p)[i] == '\n';
        im->rec_line = im->cur_line - nl;
    }
    im->f[im->nf] = copy;
    im->flen[im->nf] = len;
    im->nf++;
}

static int csv_header(imp *im)
{
    im->map = malloc((size_t)im->nf * sizeof *im->map);
    if (!im->map) return tsync__err(TSYNC_ENOMEM, "out of memory");
    im->nmap = im->nf;
    im->line = im->rec_line;
    for (int i = 0; i < im->nf; i++) {
        const char *h = im->f[i] ? im->f[i] : "";
        if (!strcmp(h, REJECT_KEY)) {
            im->map[i] = -1;
            continue;
        }
        int c = col_index(im, h, im->flen[i]);
        for (int j = 0; c >= 0 && j < i; j++)
            if (im->map[j] == c)
                return tsync__err(TSYNC_EINVAL, "%s:%zu:%s: column named twice in the header",
                                  im->o->name, im->line, h);
        if (c < 0)
            return tsync__err(TSYNC_EINVAL, "%s:%zu:%s: unknown column \"%s\" (table %s)",
                              im->o->name, im->line, h, h, im->table);
        im->map[i] = c;
    }
    for (int c = 0; c < im->ncols; c++) {
        int found = 0;
        for (int i = 0; i < im->nmap; i++) found |= im->map[i] == c;
        if (im->cols[c].pk && !found)
            return tsync__err(TSYNC_EINVAL, "%s:%zu: no column for the primary key \"%s\"",
                              im->o->name, im->line, im->cols[c].name);
    }
    if (im->o->skip_bad && im->o->rejects) {
        FILE *f = im->o->rejects;
        csv_fwrite(f, REJECT_KEY, strlen(REJECT_KEY));
        for (int i = 0; i < im->nf; i++) {
            if (im->map[i] < 0) continue;
            fputc(',', f);
            csv_put_field(f, im->f[i], im->flen[i]);
        }
        fputs("\r\n", f);
    }
    return 0;
}

static void csv_record(int c, void *ctx)
{
    imp *im = ctx;
    if (im->fatal) goto reset;
    im->last_end_line = im->cur_line;
    if (!im->header_done) {
        im->header_done = 1;
        im->fatal = csv_header(im);
        goto reset;
    }
    row_begin(im, im->rec_line);
    if (im->nf != im->nmap) {
        bad(im, NULL, "%d fields, the header has %d", im->nf, im->nmap);
        im->shapeless = 1;
    } else {
        for (int i = 0; i < im->nf; i++)
            if (im->map[i] >= 0) set_text_value(im, im->map[i], im->f[i], im->flen[i]);
    }
    /* A rejected row keeps the fields that are not the old reason column. */
    if (im->nf == im->nmap) {
        int k = 0;
        for (int i = 0; i < im->nf; i++) {
            if (im->map[i] < 0) {
                free(im->f[i]);
                continue;
            }
            im->f[k] = im->f[i], im->flen[k] = im->flen[i], k++;
        }
        im->nf = k;
    }
    im->fatal = row_end(im, csv_reject);
reset:
    for (int i = 0; i < im->nf; i++) free(im->f[i]);
    im->nf = 0;
}

static int no_space(unsigned char c)
{
    return 0;
}

/* Feeds one line to libcsv; nonzero when it did not take all of it (broken quoting). libcsv
 * grows a field's buffer by a fixed block (128 bytes), so one huge field would cost a realloc
 * and a copy per block: quadratic wherever realloc cannot grow in place (sanitizers, other
 * allocators). Fed in pieces with the block set to the buffer's size, it doubles instead. */
static int csv_feed(imp *im, const char *p, size_t n)
{
    while (n > 0 && !im->fatal) {
        size_t piece = n < 65536 ? n : 65536, have = csv_get_buffer_size(&im->csv);
        csv_set_blk_size(&im->csv, have > 128 ? have : 128);
        if (csv_parse(&im->csv, p, piece, csv_field, csv_record, im) != piece) return 1;
        p += piece;
        n -= piece;
    }
    return 0;
}

static int import_csv(imp *im, FILE *in)
{
    if (csv_init(&im->csv, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL))
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    csv_set_space_func(&im->csv, no_space);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (!im->fatal && (n = getline(&line, &cap, in)) > 0) {
        im->cur_line++;
        /* Excel's "CSV UTF-8" starts with a byte-order mark: not part of the first column's
         * name. */
        size_t skip = im->cur_line == 1 && n >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3) ? 3 : 0;
        if (csv_feed(im, line + skip, (size_t)n - skip) && !im->fatal) {
            rc = tsync__err(TSYNC_ECORRUPT,
                            "%s:%zu: broken CSV quoting: a quote inside an unquoted field, or text "
                            "after a closing quote",
                            im->o->name, im->cur_line);
            break;
        }
    }
    if (!rc && !im->fatal && ferror(in))
        rc = tsync__err(TSYNC_EIO, "%s: read error: %s", im->o->name, strerror(errno));
    if (!rc && !im->fatal && csv_fini(&im->csv, csv_field, csv_record, im) != 0)
        rc =
            tsync__err(TSYNC_ECORRUPT, "%s:%zu: quoted field not closed before the end of the file",
                       im->o->name, im->last_end_line + 1);
    if (!rc && !im->fatal && !im->header_done)
        rc = tsync__err(TSYNC_EINVAL, "%s: empty file: a CSV import needs a header row",
                        im->o->name);
    csv_free(&im->csv);
    for (int i = 0; i < im->nf; i++) free(im->f[i]);
    im->nf = 0;
    free(line);
    return rc ? rc : im->fatal;
}

/* ---------------------------------------------------------------- import: JSON */

static void json_put_reject(imp *im, json_t *obj)
{
    FILE *f = im->o->rejects;
    if (im->o->format == TSYNC__IO_JSON) fputs(im->nrejects_written ? ",\n" : "[\n", f);
    json_dumpf(obj, f, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (im->o->format == TSYNC__IO_NDJSON) fputc('\n', f);
}

static void json_reject(imp *im)
{
    json_t *o = json_object();
    json_object_set_new(o, REJECT_KEY, json_stringn(im->reason ? im->reason : "", im->rlen));
    if (json_is_object(im->cur_obj)) {
        const char *k;
        json_t *v;
        json_object_foreach(im->cur_obj, k, v)
        {
            if (strcmp(k, REJECT_KEY)) json_object_set(o, k, v);
        }
    } else if (im->cur_obj) {
        /* not an object, or a line that is not JSON: kept whole under RAW_KEY */
        json_object_set(o, RAW_KEY, im->cur_obj);
    }
    json_put_reject(im, o);
    json_decref(o);
}

static int json_row(imp *im, json_t *obj, size_t line)
{
    row_begin(im, line);
    if (!json_is_object(obj)) {
        bad(im, NULL, "%s, expected an object", json_kind(obj));
        im->shapeless = 1;
    } else {
        const char *k;
        json_t *v;
        json_object_foreach(obj, k, v)
        {
            if (!strcmp(k, REJECT_KEY)) continue;
            int c = col_index(im, k, strlen(k));
            if (c < 0)
                bad(im, k, "unknown column \"%s\" (table %s)", k, im->table);
            else
                set_json_value(im, c, v);
        }
    }
    im->cur_obj = obj;
    int rc = row_end(im, json_reject);
    im->cur_obj = NULL;
    return rc;
}

static int import_ndjson(imp *im, FILE *in)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, in)) > 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)n && strchr(" \t\r\n", line[i])) i++;
        if (i == (size_t)n) continue;
        json_error_t e;
        json_t *obj = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
        if (obj) {
            rc = json_row(im, obj, lineno);
            json_decref(obj);
            continue;
        }
        /* A line that is not JSON is a bad row; the next line starts afresh. */
        row_begin(im, lineno);
        bad(im, NULL, "invalid JSON at column %d: %s", e.column, e.text);
        im->shapeless = 1;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        json_t *raw = json_stringn(line, (size_t)n);
        if (!raw) { /* not UTF-8: kept as a blob so the reject file stays valid JSON */
            char *b = b64_encode(line, (size_t)n);
            raw = json_pack("{s:s}", B64_KEY, b ? b : "");
            free(b);
        }
        json_t *wrap = json_object();
        json_object_set_new(wrap, RAW_KEY, raw);
        raw = wrap;
        im->cur_obj = raw;
        rc = row_end(im, json_reject);
        im->cur_obj = NULL;
        json_decref(raw);
    }
    if (!rc && ferror(in))
        rc = tsync__err(TSYNC_EIO, "%s: read error: %s", im->o->name, strerror(errno));
    free(line);
    return rc;
}

static int import_json(imp *im, FILE *in)
{
    /* The array is read whole: jansson parses one element at a time from the buffer, which is
     * what gives each row its line number. */
    size_t cap = 1 << 16, len = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + len, 1, cap - len, in)) > 0) {
        len += k;
        if (len == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    if (!buf) return tsync__err(TSYNC_ENOMEM, "out of memory");
    if (ferror(in)) {
        free(buf);
        return tsync__err(TSYNC_EIO, "%s: read error: %s", im->o->name, strerror(errno));
    }
    size_t pos = 0, line = 1;
    int rc = 0;
#define SKIP_WS                                                                                    \
    while (pos < len && strchr(" \t\r\n", buf[pos]) && buf[pos]) line += buf[pos++] == '\n'
    SKIP_WS;
    if (pos >= len || buf[pos] != '[') {
        rc = tsync__err(TSYNC_ECORRUPT, "%s:%zu: expected a JSON array of objects", im->o->name,
                        line);
        goto done;
    }
    pos++;
    SKIP_WS;
    if (pos < len && buf[pos] == ']') {
        pos++;
    } else {
        for (;;) {
            json_error_t e;
            json_t *obj = json_loadb(buf + pos, len - pos,
                                     JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY |
                                         JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                                     &e);
            if (!obj) {
                rc = tsync__err(TSYNC_ECORRUPT, "%s:%zu: invalid JSON: %s", im->o->name,
                                line + (size_t)(e.line > 0 ? e.line - 1 : 0), e.text);
                goto done;
            }
            rc = json_row(im, obj, line);
            json_decref(obj);
            if (rc) goto done;
            for (size_t end = pos + (size_t)e.position; pos < end; pos++) line += buf[pos] == '\n';
            SKIP_WS;
            if (pos < len && buf[pos] == ',') {
                pos++;
                SKIP_WS;
                continue;
            }
            if (pos < len && buf[pos] == ']') {
                pos++;
                break;
            }
            rc = tsync__err(TSYNC_ECORRUPT, "%s:%zu: expected ',' or ']' in the JSON array",
                            im->o->name, line);
            goto done;
        }
    }
    SKIP_WS;
    if (pos < len)
        rc = tsync__err(TSYNC_ECORRUPT, "%s:%zu: text after the JSON array", im->o->name, line);
#undef SKIP_WS
done:
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- import: driver */

int tsync__import(tsync_store *s, const char *table, FILE *in, tsync__import_opts *o)
{
    imp im;
    memset(&im, 0, sizeof im);
    im.s = s;
    im.db = tsync_store_sqlite(s);
    im.o = o;
    im.table = table;
    o->rows = o->imported = o->rejected = o->nbad = 0;
    if (!o->name) o->name = "-";
    int rc = load_columns(&im);
    if (rc == 0) rc = tsync__begin(s);
    if (rc == 0) {
        if (o->format == TSYNC__IO_CSV)
            rc = import_csv(&im, in);
        else if (o->format == TSYNC__IO_JSON)
            rc = import_json(&im, in);
        else if (o->format == TSYNC__IO_NDJSON)
            rc = import_ndjson(&im, in);
        else
            rc = tsync__err(TSYNC_EINVAL, "unknown import format");
        if (rc == 0 && im.failed && !o->skip_bad)
            rc = tsync__err(TSYNC_EREFUSED,
                            "%s: %zu bad value%s in %zu of %zu rows; nothing imported", o->name,
                            o->nbad, o->nbad == 1 ? "" : "s", o->rejected, o->rows);
        sqlite3_finalize(im.st);
        im.st = NULL;
        if (rc == 0 && !o->dry_run)
            rc = tsync__commit(s);
        else
            tsync__rollback(s);
        if (rc == 0 && !o->dry_run) rc = tsync_store_seal(s, NULL);
        if (o->skip_bad && o->rejects && o->format == TSYNC__IO_JSON && im.nrejects_written)
            fputs("\n]\n", o->rejects);
        if (rc != 0) o->imported = 0;
    }
    sqlite3_finalize(im.st);
    if (im.vals) row_begin(&im, 0);
    for (int i = 0; i < im.ncols; i++) free(im.cols[i].name);
    free(im.cols);
    free(im.vals);
    free(im.sig);
    free(im.reason);
    free(im.map);
    free(im.f);
    free(im.flen);
    return rc;
}
