/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/hint.c — the CLI's hints. The library's messages say what was wrong and what to do in
 * terms of its API (docs/API.md): a library linked into a till app must not tell a cashier to run
 * `tillsync init`. The command knows its own commands, so when it prints a library error it adds
 * the command that helps, picked from the error code and a phrase of the message that states the
 * situation (the part every version of the message keeps, not the advice).
 */
#include <stdio.h>
#include <string.h>

#include "tillsync/common.h"
#include "hint.h"

typedef struct {
    int code;           /* the error code, or 0 for any */
    const char *marker; /* a phrase of the library's message naming the situation */
    const char *hint;   /* the advice; "%s" (at most once) is the database path */
    /* When hint has "%s": the message starts with path_before, and the path runs up to
     * path_after; a message that does not start so is another situation. */
    const char *path_before, *path_after;
} hint_rule;

static const hint_rule RULES[] = {
    /* store: open */
    {TSYNC_ENOTFOUND, " does not exist", "run `tillsync init %s` to create it", "database ",
     " does not exist"},
    {TSYNC_ENOTFOUND, "is missing", "run `tillsync init %s` to make a new device key", "key file ",
     ".key is missing"},
    /* bundle --since */
    {TSYNC_EINVAL, "state has no \"vector\" array", "give the output of `tillsync state DB --json`",
     NULL, NULL},
    {TSYNC_ENOTFOUND, "cannot write a bundle for that state",
     "run `tillsync run` on that till with an enrolled till of the shop: it sends the snapshot",
     NULL, NULL},
    /* node: static peers */
    {TSYNC_EINVAL, "KEY must be 64 hex digits",
     "run `tillsync state DB` on that till: it shows public_key", NULL, NULL},
    {TSYNC_EINVAL, "give its key as", "run `tillsync state DB` on that till: it shows public_key",
     NULL, NULL},
    {0, "no #KEY given",
     "run `tillsync state DB` on that till (it shows public_key), or install its certificate "
     "with `tillsync enrol DB CERT OTHERCERT`",
     NULL, NULL},
    /* backup */
    {TSYNC_ECORRUPT, "is an SQLite database, not a tillsync backup",
     "run `tillsync backup DB FILE` to make one", NULL, NULL},
    /* trust */
    {0, "an enrolment request is not a shop record",
     "run `tillsync shop sign KEYFILE REQ` (the shop admin) to sign it", NULL, NULL},
    {0, "no certificate for this device's key",
     "run `tillsync enrol-request DB` on this database to make the request", NULL, NULL},
    {0, "is an enrolment request, not a certificate",
     "run `tillsync shop sign KEYFILE REQ > CERT` (the shop admin) to sign it", NULL, NULL},
    {0, "is a revocation", "run `tillsync revoke DB FILE` to install it", NULL, NULL},
    {0, "no admin key to check the revocation against", "run `tillsync enrol DB CERT` first", NULL,
     NULL},
};

/* The path between before (at the start of m) and after, or NULL when m is not of that form. */
static const char *path_of(const char *m, const char *before, const char *after, char *out,
                           size_t n)
{
    size_t lb = strlen(before);
    if (strncmp(m, before, lb) != 0) return NULL;
    const char *end = strstr(m + lb, after);
    if (!end || (size_t)(end - m - lb) >= n) return NULL;
    snprintf(out, n, "%.*s", (int)(end - m - lb), m + lb);
    return out;
}

const char *cli_hint(int code, const char *message, char *buf, size_t n)
{
    if (!message || !buf || n == 0) return NULL;
    /* The library's older wording carries its own advice: do not say it twice. */
    if (strstr(message, "'tillsync ") || strstr(message, "`tillsync ") ||
        strstr(message, ": tillsync "))
        return NULL;
    for (size_t i = 0; i < sizeof RULES / sizeof RULES[0]; i++) {
        const hint_rule *r = &RULES[i];
        if ((r->code && r->code != code) || !strstr(message, r->marker)) continue;
        char path[256] = "";
        if (r->path_before && !path_of(message, r->path_before, r->path_after, path, sizeof path)) {
            if (strncmp(message, r->path_before, strlen(r->path_before)) != 0) continue;
            snprintf(path, sizeof path, "DB"); /* a path too long to repeat, or another key file */
        }
        snprintf(buf, n, r->hint, path);
        return buf;
    }
    return NULL;
}
