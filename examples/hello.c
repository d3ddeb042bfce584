/* SPDX-License-Identifier: Apache-2.0 */
/*
 * examples/hello.c — the smallest app on tillsync, and the one the install test builds against an
 * installed prefix (through pkg-config: examples/Makefile; through CMake: examples/CMakeLists.txt;
 * shared and static).
 *
 *   hello DB
 *
 * It checks that the headers it was compiled with match the library it runs with, creates DB if
 * needed with a products table, replicates it, records one product, seals, and prints the
 * version and the content hash. Exit status 0 on success, 1 with a one-line message otherwise.
 */
#include <stdio.h>
#include <string.h>

#include "tillsync/tillsync.h"

static int fail(const char *what)
{
    fprintf(stderr, "hello: %s: %s\n", what, tsync_error_last()->message);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hello DB\n");
        return 2;
    }
    /* An app built against other headers than the library it loads would misread its structs. */
    if (strcmp(tsync_version(), TSYNC_VERSION_STRING) != 0) {
        fprintf(stderr, "hello: built with tillsync %s headers, running with library %s\n",
                TSYNC_VERSION_STRING, tsync_version());
        return 1;
    }
    tsync_store_options opts = TSYNC_STORE_OPTIONS_INIT;
    opts.create = 1;
    tsync_store *s = NULL;
    if (tsync_store_open(&s, argv[1], &opts) != 0) return fail(argv[1]);
    int rc = tsync_store_exec(s,
                              "CREATE TABLE IF NOT EXISTS products(id TEXT PRIMARY KEY, "
                              "name TEXT, stock INTEGER)",
                              NULL, NULL);
    if (rc == 0) {
        const char *counters[] = {"stock"};
        rc = tsync_store_replicate(s, "products", counters, 1);
        if (rc == TSYNC_EEXISTS) rc = 0; /* a second run */
    }
    if (rc == 0)
        rc = tsync_store_exec(s, "INSERT OR REPLACE INTO products VALUES('p1', 'coffee', 10)", NULL,
                              NULL);
    size_t nbatches = 0;
    if (rc == 0) rc = tsync_store_seal(s, &nbatches);
    uint8_t hash[TSYNC_HASH_BYTES];
    if (rc == 0) rc = tsync_store_hash(hash, s, NULL);
    char *state = NULL;
    if (rc == 0) rc = tsync_store_state_json(&state, s);
    if (rc != 0) {
        int code = fail(argv[1]);
        tsync_store_free(s);
        return code;
    }
    printf("tillsync %s (ABI %d): %s holds %zu bytes of state; content hash ", tsync_version(),
           tsync_abi_version(), argv[1], strlen(state));
    for (size_t i = 0; i < sizeof hash; i++) printf("%02x", hash[i]);
    printf("\n");
    tsync_free(state); /* memory the library returned: its own free, whatever the app links */
    tsync_store_free(s);
    return 0;
}
