/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/install/version_test.c — the version is written once (project(VERSION) in CMakeLists.txt)
 * and everything that states it agrees: the macros of tillsync/version.h with each other, and
 * tsync_version() / tsync_abi_version() of libtillsync.so (this test links it as an app does).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tillsync/tillsync.h"

Test(version, library_agrees_with_header)
{
    cr_assert_str_eq(tsync_version(), TSYNC_VERSION_STRING);
    cr_assert_eq(tsync_abi_version(), TSYNC_VERSION_ABI);
}

Test(version, macros_agree)
{
    char s[64];
    snprintf(s, sizeof s, "%d.%d.%d", TSYNC_VERSION_MAJOR, TSYNC_VERSION_MINOR,
             TSYNC_VERSION_PATCH);
    cr_assert_str_eq(s, TSYNC_VERSION_STRING);
    cr_assert_eq(TSYNC_VERSION_NUMBER,
                 TSYNC_VERSION_MAJOR * 10000 + TSYNC_VERSION_MINOR * 100 + TSYNC_VERSION_PATCH);
#if TSYNC_VERSION_NUMBER !=                                                                        \
    TSYNC_VERSION_MAJOR * 10000 + TSYNC_VERSION_MINOR * 100 + TSYNC_VERSION_PATCH
    cr_fail("TSYNC_VERSION_NUMBER is not usable in #if");
#endif
}

/* The SONAME's number is the ABI generation: libtillsync.so.<TSYNC_VERSION_ABI>. */
Test(version, soname_is_abi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[4096], want[64];
    snprintf(want, sizeof want, "/libtillsync.so.%d", TSYNC_VERSION_ABI);
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, want)) found = 1;
    fclose(f);
    cr_assert(found, "libtillsync.so.%d is not loaded", TSYNC_VERSION_ABI);
}
