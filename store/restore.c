/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/restore.c — checking a backup file and restoring a database from it. Both decode the
 * whole file (backup_format.c) into a staged copy of its database image and check that copy
 * before anything else happens.
 *
 * Design notes
 * - Restore takes SQLite's exclusive lock on the live database without waiting (locking_mode
 *   EXCLUSIVE: in WAL mode every open connection that has read holds a shared lock), verifies the
 *   whole file into a staged copy while holding it, and only then writes: the device key first
 *   (a new incarnation), then the content, through the backup API into the live database, one
 *   atomic transaction. A crash between the two leaves the old content under a new site id, which
 *   is always safe; the reverse order could reuse sequence numbers. Nothing is written to the live
 *   files before the file has been verified, and a refused restore closes its connection without
 *   the checkpoint SQLite would otherwise run on close.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup_int.h"

/* ---------------------------------------------------------------- checking an image */

/* Opens a staged image the way a checker must: nothing in it runs, nothing is waited for. */
int tsync__bak_open_image(const char *path, const char *name, sqlite3 **out)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
        rc = sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot open the database copied from %s: %s", name,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

/* PRAGMA quick_check; msg receives its first complaint. Returns an SQLite code. */
int tsync__bak_quick_check(sqlite3 *db, char *msg, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *t = (const char *)sqlite3_column_text(st, 0);
            snprintf(msg, cap, "%s", t ? t : "?");
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) snprintf(msg, cap, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

/* The staged image passes quick_check and is a tillsync database; site receives its site id. */
static int check_image(const char *path, const char *name, uint8_t site[TSYNC__SITE_BYTES])
{
    sqlite3 *db;
    int rc = tsync__bak_open_image(path, name, &db);
    if (rc) return rc;
    char msg[300];
    int src = tsync__bak_quick_check(db, msg, sizeof msg);
    if (src != SQLITE_OK || strcmp(msg, "ok") != 0) {
        sqlite3_close(db);
        return tsync__err(TSYNC_ECORRUPT, "%s: the database in it fails quick_check: %s", name,
                          msg);
    }
    sqlite3_stmt *st = NULL;
    rc = TSYNC_ECORRUPT;
    if (sqlite3_prepare_v2(db,
                           "SELECT (SELECT v FROM tsync_meta WHERE k='format'), s.site FROM "
                           "tsync_meta m JOIN tsync_sites s ON s.idx = m.v WHERE m.k='local_site'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == 1 &&
        sqlite3_column_bytes(st, 1) == TSYNC__SITE_BYTES) {
        memcpy(site, sqlite3_column_blob(st, 1), TSYNC__SITE_BYTES);
        rc = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc ? tsync__err(rc, "%s: the database in it is not a tillsync database", name) : 0;
}

/* A temporary file "<prefix>XXXXXX"; *path receives its malloc'd name. Returns the fd or -1. */
static int make_temp(const char *prefix, char **path)
{
    *path = tsync__bak_path_with(prefix, "XXXXXX");
    if (!*path) {
        tsync__err(TSYNC_ENOMEM, "out of memory");
        return -1;
    }
    int fd = mkostemp(*path, O_CLOEXEC);
    if (fd < 0) {
        tsync__err(TSYNC_EIO, "cannot create %s: %s", *path, strerror(errno));
        free(*path);
        *path = NULL;
    }
    return fd;
}

/* Decodes backup_path into a staged image made from prefix and checks it. */
static int stage(const char *backup_path, const char *prefix, const tsync__bak_read_opts *base,
                 char **staged, tsync__bak_info *info, uint8_t site[TSYNC__SITE_BYTES])
{
    *staged = NULL;
    FILE *in = fopen(backup_path, "rb");
    if (!in)
        return tsync__err(errno == ENOENT ? TSYNC_ENOTFOUND : TSYNC_EIO, "cannot open %s: %s",
                          backup_path, strerror(errno));
    struct stat sb;
    tsync__bak_read_opts o = *base;
    o.name = backup_path;
    o.file_size = fstat(fileno(in), &sb) == 0 ? (uint64_t)sb.st_size : 0;
    int rc = 0, fd = make_temp(prefix, staged);
    if (fd < 0) {
        rc = tsync_error_last()->code;
    } else {
        o.image_fd = fd;
        rc = tsync__bak_read(in, &o, info);
    }
    fclose(in);
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", *staged, strerror(errno));
    if (rc == 0) rc = check_image(*staged, backup_path, site);
    if (rc) {
        tsync__bak_unlink_db(*staged);
        free(*staged);
        *staged = NULL;
        tsync__bak_info_clear(info);
    }
    return rc;
}

int tsync_backup_check(const char *path, const char *passphrase, char **manifest_json)
{
    if (manifest_json) *manifest_json = NULL;
    if (!path) return tsync__err(TSYNC_EINVAL, "no backup file given");
    const char *tmpdir = getenv("TMPDIR");
    char *prefix = tsync__bak_path_with(tmpdir && *tmpdir ? tmpdir : "/tmp", "/tsync-check-");
    if (!prefix) return tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__bak_read_opts o;
    memset(&o, 0, sizeof o);
    o.passphrase = passphrase;
    o.image_fd = -1;
    tsync__bak_info info;
    uint8_t site[TSYNC__SITE_BYTES];
    char *staged = NULL;
    int rc = stage(path, prefix, &o, &staged, &info, site);
    free(prefix);
    if (rc) return rc;
    tsync__bak_unlink_db(staged);
    free(staged);
    if (manifest_json) {
        *manifest_json = info.manifest;
        info.manifest = NULL;
    }
    tsync__bak_info_clear(&info);
    return 0;
}

/* ---------------------------------------------------------------- restore */

/* The layout of the key file is store/keys.c's: "TSYNCKEY" | version 1 | secret key (64) |
 * incarnation (16) | fingerprint (32) | BLAKE2b-256 of the 121 bytes before. */
#define KEY_LEN    153
#define KEY_INC_AT 73
#define KEY_SUM_AT 121

/* Writes the key file back with a new random incarnation (same key, same fingerprint), atomically:
 * the next open of the database gets a site id never used before. Also taken by a live store whose
 * log went back (store/identity.c). */
int tsync__key_renew(const char *key_path)
{
    uint8_t buf[KEY_LEN + 1], sum[32];
    int fd = open(key_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tsync__err(TSYNC_EIO, "cannot open key file %s: %s", key_path, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n == KEY_LEN) crypto_generichash(sum, 32, buf, KEY_SUM_AT, NULL, 0);
    if (n != KEY_LEN || memcmp(buf, "TSYNCKEY", 8) != 0 || buf[8] != 1 ||
        sodium_memcmp(sum, buf + KEY_SUM_AT, 32) != 0) {
        sodium_memzero(buf, sizeof buf);
        return tsync__err(TSYNC_ECORRUPT,
                          "key file %s is damaged; move it aside to restore as a new device (the "
                          "till then enrols again)",
                          key_path);
    }
    randombytes_buf(buf + KEY_INC_AT, TSYNC__INC_BYTES);
    crypto_generichash(buf + KEY_SUM_AT, 32, buf, KEY_SUM_AT, NULL, 0);
    char *tmp = tsync__bak_path_with(key_path, ".tmp");
    int rc = tmp ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || fchmod(fd, 0600) != 0 || tsync__bak_write_all(fd, buf, KEY_LEN) != 0 ||
            fsync(fd) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write key file %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        if (rc == 0 && rename(tmp, key_path) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot install key file %s: %s", key_path, strerror(errno));
        if (rc == 0) tsync__bak_fsync_dir(key_path);
        if (rc) unlink(tmp);
    }
    sodium_memzero(buf, sizeof buf);
    free(tmp);
    return rc;
}

/* Opens the live database and takes SQLite's exclusive lock on it without waiting. With create,
 * the database does not exist yet and is made (in WAL mode, as a store makes it). */
static int lock_live(const char *path, int create, sqlite3 **out)
{
    *out = NULL;
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot open database %s: %s", path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 0);
    /* Until the restore writes, closing must not checkpoint: the live files stay as they were. */
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    char *msg = NULL;
    rc = sqlite3_exec(db,
                      create ? "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL"
                             : "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; SELECT count(*) "
                               "FROM sqlite_schema; COMMIT",
                      NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int prim = rc & 0xff;
        if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
            rc = tsync__err(TSYNC_EBUSY,
                            "database %s is in use by another process (a running node, the till "
                            "app or a sqlite3 shell); stop it, then restore",
                            path);
        else if (prim == SQLITE_NOTADB || prim == SQLITE_CORRUPT)
            rc = tsync__err(TSYNC_ECORRUPT,
                            "%s is not a readable SQLite database (%s); move it and its -wal "
                            "aside, then restore",
                            path, msg ? msg : sqlite3_errstr(rc));
        else
            rc = tsync__err(TSYNC_EIO, "cannot lock database %s: %s", path,
                            msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

static int pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Replaces the content of the locked live database with the staged image, in one transaction. */
static int copy_into_live(sqlite3 *live, const char *staged, const char *db_path,
                          const tsync_restore_options *o)
{
    sqlite3 *src;
    int rc = tsync__bak_open_image(staged, db_path, &src);
    if (rc) return rc;
    /* In WAL mode the backup API cannot change the page size: leave WAL for the copy. */
    int wal = 0;
    if (pragma_int(live, "PRAGMA page_size") != pragma_int(src, "PRAGMA page_size")) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(live, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            wal = sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (wal) rc = tsync__bak_exec(live, "PRAGMA journal_mode=DELETE", "restore");
    }
    sqlite3_backup *b = rc ? NULL : sqlite3_backup_init(live, "main", src, "main");
    if (rc == 0 && !b) rc = tsync__err_sqlite(live, sqlite3_errcode(live), "restore");
    int step = SQLITE_OK;
    while (b && (step = sqlite3_backup_step(b, 4096)) == SQLITE_OK) {
        int left = sqlite3_backup_remaining(b), count = sqlite3_backup_pagecount(b);
        tsync__bak_progress(o->progress, o->progress_ctx, TSYNC_BACKUP_RESTORE,
                            (uint64_t)(count - left), (uint64_t)count);
    }
    if (b) {
        int frc = sqlite3_backup_finish(b);
        if (step != SQLITE_DONE)
            rc = tsync__err(TSYNC_EIO, "cannot restore into %s: %s", db_path,
                            frc != SQLITE_OK ? sqlite3_errmsg(live) : sqlite3_errstr(step));
    }
    if (wal && rc == 0) rc = tsync__bak_exec(live, "PRAGMA journal_mode=WAL", "restore");
    sqlite3_close(src);
    if (rc == 0) {
        /* Written: now fold the WAL into the database and let close remove it. */
        sqlite3_db_config(live, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
        sqlite3_exec(live, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    }
    return rc;
}

void tsync_restore_report_clear(tsync_restore_report *r)
{
    if (!r) return;
    free(r->manifest_json);
    r->manifest_json = NULL;
}

int tsync_restore(const char *db_path, const char *backup_path, const tsync_restore_options *opts,
                  tsync_restore_report *report)
{
    tsync_restore_options def = TSYNC_RESTORE_OPTIONS_INIT;
    if (!opts) opts = &def;
    if (tsync__check_version("tsync_restore_options", opts->version,
                             TSYNC_RESTORE_OPTIONS_VERSION) ||
        (report && tsync__check_version("tsync_restore_report", report->version,
                                        TSYNC_RESTORE_REPORT_VERSION)))
        return TSYNC_EVERSION;
    if (!db_path || !*db_path || !backup_path)
        return tsync__err(TSYNC_EINVAL, "restore needs a database and a backup file");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    char *key_path =
        opts->key_path ? strdup(opts->key_path) : tsync__bak_path_with(db_path, ".key");
    char *prefix = tsync__bak_path_with(db_path, ".restore-");
    char *wal = tsync__bak_path_with(db_path, "-wal");
    if (!key_path || !prefix || !wal) {
        free(key_path), free(prefix), free(wal);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    struct stat sb;
    int exists = stat(db_path, &sb) == 0, rc = 0;
    int created = 0, had_wal = stat(wal, &sb) == 0;
    sqlite3 *live = NULL;
    char *staged = NULL;
    tsync__bak_info info;
    memset(&info, 0, sizeof info);
    uint8_t backup_site[TSYNC__SITE_BYTES];
    if (exists)
        rc = lock_live(db_path, 0, &live);
    else if (stat(wal, &sb) == 0)
        rc = tsync__err(TSYNC_EINVAL,
                        "%s exists without %s: move it aside first (it would be applied to the "
                        "restored database)",
                        wal, db_path);
    if (rc == 0) {
        tsync__bak_read_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.passphrase = opts->passphrase;
        ro.max_opslimit = opts->max_kdf_opslimit;
        ro.max_memlimit = opts->max_kdf_memlimit;
        ro.progress = opts->progress;
        ro.progress_ctx = opts->progress_ctx;
        rc = stage(backup_path, prefix, &ro, &staged, &info, backup_site);
    }
    /* Verified. From here on the live files change: the key first, then the content. */
    int had_key = stat(key_path, &sb) == 0;
    if (rc == 0 && had_key) rc = tsync__key_renew(key_path);
    if (rc == 0 && !live) {
        rc = lock_live(db_path, 1, &live);
        created = rc == 0;
    }
    if (rc == 0) rc = copy_into_live(live, staged, db_path, opts);
    /* Reading a WAL database made an empty -wal beside it; a refused restore leaves none. We
     * still hold the exclusive lock, so nobody else can be using it. */
    if (rc && live && !had_wal && stat(wal, &sb) == 0 && sb.st_size == 0) unlink(wal);
    sqlite3_close(live);
    if (rc && created) tsync__bak_unlink_db(db_path);
    tsync__bak_unlink_db(staged);
    free(staged);
    tsync_store *s = NULL;
    if (rc == 0) {
        tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
        so.create = !had_key;
        so.key_path = key_path;
        if (tsync_store_open(&s, db_path, &so) != 0)
            rc = tsync__err(tsync_error_last()->code, "restored %s, but cannot open it: %s",
                            db_path, tsync_error_last()->message);
    }
    if (rc == 0 && report) {
        memcpy(report->site_id, tsync_store_site_id(s), TSYNC__SITE_BYTES);
        memcpy(report->backup_site_id, backup_site, TSYNC__SITE_BYTES);
        report->new_key = !had_key;
        report->manifest_json = info.manifest;
        info.manifest = NULL;
    }
    tsync_store_free(s);
    tsync__bak_info_clear(&info);
    free(key_path);
    free(prefix);
    free(wal);
    return rc;
}
