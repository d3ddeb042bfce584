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
#include "tools/hint.h"

typedef struct {
    int code;           /* the error code, or 0 for any */
    const char *marker; /* a phrase of the library's message naming the situation */
    const char *hint;   /* the advice; "%s" (at most once) is the database path when known */
} hint_rule;

static const hint_rule RULES[] = {
    /* store: open */
    {TSYNC_ENOTFOUND, " does not exist", "run `tillsync init %s` to create it"},
    {TSYNC_ENOTFOUND, "is missing", "run `tillsync init %s` to make a new device key"},
    /* bundle --since */
    {TSYNC_EINVAL, "state has no \"vector\" array",
     "give the output of `tillsync state DB --json`"},
    {TSYNC_ENOTFOUND, "cannot write a bundle for that state",
     "run `tillsync run` on that till with an enrolled till of the shop: it sends the snapshot"},
    /* node: static peers */
    {TSYNC_EINVAL, "KEY must be 64 hex digits",
     "run `tillsync state DB` on that till: it shows "
     "public_key"},
    {TSYNC_EINVAL, "give its key as", "run `tillsync state DB` on that till: it shows public_key"},
    {0, "no #KEY given",
     "run `tillsync state DB` on that till (it shows public_key), or install its certificate "
     "with `tillsync enrol DB CERT OTHERCERT`"},
    /* backup */
    {TSYNC_ECORRUPT, "is an SQLite database, not a tillsync backup",
     "run `tillsync backup DB FILE` to make one"},
    /* trust */
    {0, "an enrolment request is not a shop record",
     "run `tillsync shop sign KEYFILE REQ` (the shop admin) to sign it"},
    {0, "no certificate for this device's key",
     "run `tillsync enrol-request DB` on this database to make the request"},
    {0, "is an enrolment request, not a certificate",
     "run `tillsync shop sign KEYFILE REQ > CERT` (the shop admin) to sign it"},
    {0, "is a revocation", "run `tillsync revoke DB FILE` to install it"},
    {0, "no admin key to check the revocation against", "run `tillsync enrol DB CERT` first"},
};

/* The path in "database PATH does not exist" / "key file PATH is missing", else "DB". */
static void path_of(const char *m, const char *before, const char *after, char *out, size_t n)
{
    const char *a = strstr(m, before), *b = a ? strstr(a + strlen(before), after) : NULL;
    if (!a || !b || (size_t)(b - a - strlen(before)) >= n) {
        snprintf(out, n, "DB");
        return;
    }
    a += strlen(before);
    snprintf(out, n, "%.*s", (int)(b - a), a);
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
        char path[256] = "DB";
        if (i == 0) {
            if (strncmp(message, "database ", 9) != 0) continue; /* a file, not the database */
            path_of(message, "database ", " does not exist", path, sizeof path);
        } else if (i == 1) {
            if (strncmp(message, "key file ", 9) != 0) continue;
            path_of(message, "key file ", ".key is missing", path, sizeof path);
        }
        snprintf(buf, n, r->hint, path);
        return buf;
    }
    return NULL;
}
