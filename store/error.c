/*
 * store/error.c — the thread-local last error, error names and small formatting helpers.
 * Every failure path in the library ends here so that a caller gets one line naming the problem.
 */
#include <stdio.h>
#include <string.h>

#include "store/internal.h"

static _Thread_local tsync_error last_error;
/* Room for a message that quotes another (a refusal quoting a trust refusal). */
static _Thread_local char last_message[2 * TSYNC__ERRLEN];

const tsync_error *tsync_error_last(void)
{
    return last_error.code ? &last_error : NULL;
}

void tsync_error_clear(void)
{
    last_error.code = 0;
    last_message[0] = 0;
}

int tsync__err(int code, const char *fmt, ...)
{
    va_list ap;
    char tmp[sizeof last_message];
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(tmp);
    /* Keep it one line: a message may quote SQL or a file name. */
    for (char *c = tmp; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    memcpy(last_message, tmp, sizeof tmp);
    last_error.code = code;
    last_error.message = last_message;
    return code;
}

int tsync__err_sqlite(sqlite3 *db, int rc, const char *what)
{
    int code = TSYNC_EIO;
    int prim = rc & 0xff;
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        code = TSYNC_EBUSY;
    else if (prim == SQLITE_NOMEM)
        code = TSYNC_ENOMEM;
    else if (prim == SQLITE_ERROR || prim == SQLITE_CONSTRAINT || prim == SQLITE_MISMATCH)
        code = TSYNC_EINVAL;
    else if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
        code = TSYNC_ECORRUPT;
    /* Callers that pass a generic rc still name a full disk: the connection knows it. */
    if (prim == SQLITE_FULL || (db && (sqlite3_errcode(db) & 0xff) == SQLITE_FULL))
        code = TSYNC_EFULL;
    return tsync__err(code, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

const char *tsync_strerror(int code)
{
    switch (code) {
    case TSYNC_OK:
        return "success";
    case TSYNC_ERROR:
        return "error";
    case TSYNC_EINVAL:
        return "invalid argument or input";
    case TSYNC_ENOMEM:
        return "out of memory";
    case TSYNC_ENOTFOUND:
        return "not found";
    case TSYNC_EEXISTS:
        return "already exists";
    case TSYNC_EIO:
        return "I/O error";
    case TSYNC_EBADSIG:
        return "signature does not verify";
    case TSYNC_ECORRUPT:
        return "malformed or corrupt data";
    case TSYNC_EVERSION:
        return "unsupported version";
    case TSYNC_ECLOCKSKEW:
        return "clock too far ahead";
    case TSYNC_EFORK:
        return "fork: two batches with the same origin and sequence number";
    case TSYNC_ECHAIN:
        return "broken hash chain";
    case TSYNC_EUNSUPPORTED:
        return "unsupported";
    case TSYNC_EBUSY:
        return "database busy";
    case TSYNC_EFULL:
        return "the disk is full";
    case TSYNC_EREFUSED:
        return "input refused";
    default:
        return "unknown error";
    }
}

const char *tsync_version(void)
{
    return "0.1.0";
}

void tsync__hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tsync__unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
        if (h < 0 || l < 0) return -1;
        out[i] = (uint8_t)(h << 4 | l);
    }
    return 0;
}
