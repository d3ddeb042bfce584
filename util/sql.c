/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/sql.c — SQL text built on sqlite3_str: identifiers quoted one way everywhere, and
 * compared one way (as SQLite compares them).
 */
#include <sqlite3.h>

#include "util/util.h"

void tsync__sql_ident(sqlite3_str *b, const char *prefix, const char *name)
{
    /* %w doubles the double quotes inside; the prefix is ours (tsync_clk_, tsync_tomb_). */
    sqlite3_str_appendf(b, "\"%w%w\"", prefix ? prefix : "", name);
}

char *tsync__sql_quote_ident(const char *prefix, const char *name)
{
    sqlite3_str *b = sqlite3_str_new(NULL);
    tsync__sql_ident(b, prefix, name);
    return tsync__sql_finish(b);
}

char *tsync__sql_finish(sqlite3_str *b)
{
    if (sqlite3_str_errcode(b) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(b));
        return NULL;
    }
    char *s = sqlite3_str_finish(b);
    /* An empty builder finishes as NULL: give the caller "" it can free like any other. */
    return s ? s : sqlite3_mprintf("%s", "");
}

int tsync__name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    for (size_t i = 0; i < alen && i < blen; i++) {
        int x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x += 'a' - 'A';
        if (y >= 'A' && y <= 'Z') y += 'a' - 'A';
        if (x != y) return x - y;
    }
    return alen < blen ? -1 : alen > blen;
}
