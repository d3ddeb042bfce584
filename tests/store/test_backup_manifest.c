/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_backup_manifest.c — the manifest check of the backup format
 * (store/backup_format.c) on the source identity, and the refusal of a file that is no backup.
 *
 * What must hold: a manifest whose site, public key and incarnation are hex of exactly their sizes
 * passes; one whose identity field is missing, not a string, of another length or not hex is
 * refused as damaged; an SQLite database handed over as a backup is refused with a message that
 * says what it is and names no CLI command.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backup.h"
#include "tests/lib/helpers.h"
#include "util/util.h"

TestSuite(backup_manifest, .fini = th_cleanup);

static uint8_t image_hash[32];

/* A manifest for a 4096-byte image whose hash is image_hash, with the given identity fields
 * (each a JSON value, or NULL to leave it out). */
static char *manifest(const char *site, const char *pk, const char *inc)
{
    static char buf[2048];
    char hex[65], src[1024] = "";
    tsync__hex(image_hash, 32, hex);
    size_t n = 0;
    if (site) n += (size_t)snprintf(src + n, sizeof src - n, "\"site\":%s,", site);
    if (pk) n += (size_t)snprintf(src + n, sizeof src - n, "\"public_key\":%s,", pk);
    if (inc) n += (size_t)snprintf(src + n, sizeof src - n, "\"incarnation\":%s,", inc);
    if (n) src[n - 1] = 0;
    snprintf(buf, sizeof buf,
             "{\"format\":1,\"created_at\":\"2026-12-07T04:00:00.000Z\",\"source\":{%s},"
             "\"image\":{\"bytes\":4096,\"blake2b_256\":\"%s\"}}",
             src, hex);
    return buf;
}

static int check(const char *json)
{
    return tsync__bak_manifest_check(json, strlen(json), 4096, image_hash, "m.tsb");
}

#define SITE "\"00112233445566778899aabbccddeeff\""
#define PK   "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\""
#define INC  "\"ffeeddccbbaa99887766554433221100\""

Test(backup_manifest, a_whole_identity_passes)
{
    memset(image_hash, 0x5a, sizeof image_hash);
    cr_assert_eq(check(manifest(SITE, PK, INC)), 0, "%s", tsync_error_last()->message);
}

Test(backup_manifest, a_bad_identity_field_is_refused)
{
    memset(image_hash, 0x5a, sizeof image_hash);
    const char *bad[][3] = {
        {NULL, PK, INC},
        {SITE, NULL, INC},
        {SITE, PK, NULL},
        {"17", PK, INC},
        {"\"0011\"", PK, INC},                               /* too short */
        {SITE, "\"00112233445566778899aabbccddeeff\"", INC}, /* a site's length, not a key's */
        {SITE, PK, PK},                                      /* too long */
        {"\"00112233445566778899aabbccddeefg\"", PK, INC},   /* not hex */
        {SITE, PK, "\"ffeeddccbbaa998877665544332211 0\""},  /* a space */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = check(manifest(bad[i][0], bad[i][1], bad[i][2]));
        cr_assert_eq(rc, TSYNC_ECORRUPT, "case %zu: rc %d", i, rc);
        cr_assert(strstr(tsync_error_last()->message, "m.tsb: the manifest lacks its creation time "
                                                      "or source identity"),
                  "case %zu: %s", i, tsync_error_last()->message);
    }
}

Test(backup_manifest, an_sqlite_database_is_no_backup)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "plain.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    int rc = tsync_backup_check(path, NULL, NULL);
    cr_assert_eq(rc, TSYNC_ECORRUPT);
    const char *msg = tsync_error_last()->message;
    cr_assert(strstr(msg, "is an SQLite database, not a tillsync backup"), "%s", msg);
    cr_assert(!strstr(msg, "'tillsync") && !strstr(msg, "`tillsync"), "names a command: %s", msg);
    free(dir);
}
