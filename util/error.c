/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/error.c — the thread-local last error, error names and small formatting helpers.
 * Every failure path in the library ends here so that a caller gets one line naming the problem.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"
#include "tillsync/version.h"

static _Thread_local tsync_error last_error;
/* Room for a message that quotes another (a refusal quoting a trust refusal). */
static _Thread_local char last_message[2 * TSYNC__ERRLEN];

/* What tsync_error_last() returns while nothing failed, so a caller may always dereference it
 * (libgit2's git_error_last() does the same). */
static const tsync_error no_error = {0, "no error"};

const tsync_error *tsync_error_last(void)
{
    return last_error.code ? &last_error : &no_error;
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

int tsync__check_version(const char *what, unsigned int version, unsigned int newest)
{
    if (version >= 1 && version <= newest) return 0;
    /* 0 is a struct nobody initialised; above newest, one from a newer tillsync.h than the
     * library's: its fields would be read at the wrong places. */
    return tsync__err(TSYNC_EVERSION,
                      "%s version %u is not one this library knows (1 to %u): initialise it with "
                      "its _INIT macro and build against this library's headers",
                      what, version, newest);
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
    return TSYNC_VERSION_STRING;
}
