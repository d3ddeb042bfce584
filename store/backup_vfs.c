/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/backup_vfs.c — the SQLite VFS that writes a plain backup's image straight into the backup
 * file, at its place after the header.
 *
 * A plain backup's image lies right after the fixed header and the image length, so the backup
 * API writes it there directly, through this VFS: it shifts every offset of the main database file
 * by IMAGE_AT and hands every other file (the copy's journal, if any) to the default VFS as it is.
 * Writing the image once, instead of into a scratch file and then into the backup, halves what a
 * plain backup writes: on a million rows that was the largest cost after the copy itself.
 */
#include <pthread.h>

#include "backup_int.h"

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, in the same allocation */
} shift_file;

static sqlite3_vfs *shift_root;
#define REAL(f) (((shift_file *)(f))->real)

static int sh_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int sh_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off + IMAGE_AT);
}
static int sh_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off + IMAGE_AT);
}
static int sh_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size + IMAGE_AT);
}
static int sh_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int sh_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_int64 n = 0;
    int rc = REAL(f)->pMethods->xFileSize(REAL(f), &n);
    *size = n > IMAGE_AT ? n - IMAGE_AT : 0;
    return rc;
}
static int sh_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int sh_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int sh_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int sh_fcntl(sqlite3_file *f, int op, void *arg)
{
    if (op == SQLITE_FCNTL_SIZE_HINT) {
        sqlite3_int64 n = *(sqlite3_int64 *)arg + IMAGE_AT;
        return REAL(f)->pMethods->xFileControl(REAL(f), op, &n);
    }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int sh_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int sh_caps(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int sh_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    *pp = NULL;
    if (REAL(f)->pMethods->iVersion < 3) return SQLITE_OK;
    return REAL(f)->pMethods->xFetch(REAL(f), off + IMAGE_AT, n, pp);
}
static int sh_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    if (REAL(f)->pMethods->iVersion < 3) return SQLITE_OK;
    return REAL(f)->pMethods->xUnfetch(REAL(f), off + IMAGE_AT, p);
}

/* No shared memory (the copy is opened with locking_mode=EXCLUSIVE, so SQLite keeps a WAL index
 * on the heap). The memory map lets the check read the copy without a system call per page. */
static const sqlite3_io_methods shift_methods = {
    .iVersion = 3,
    .xClose = sh_close,
    .xRead = sh_read,
    .xWrite = sh_write,
    .xTruncate = sh_truncate,
    .xSync = sh_sync,
    .xFileSize = sh_size,
    .xLock = sh_lock,
    .xUnlock = sh_unlock,
    .xCheckReservedLock = sh_reserved,
    .xFileControl = sh_fcntl,
    .xSectorSize = sh_sector,
    .xDeviceCharacteristics = sh_caps,
    .xFetch = sh_fetch,
    .xUnfetch = sh_unfetch,
};

static int sh_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out)
{
    if (!(flags & SQLITE_OPEN_MAIN_DB)) return shift_root->xOpen(shift_root, name, f, flags, out);
    shift_file *s = (shift_file *)f;
    s->base.pMethods = NULL;
    s->real = (sqlite3_file *)(s + 1);
    int rc = shift_root->xOpen(shift_root, name, s->real, flags, out);
    if (rc == SQLITE_OK)
        s->base.pMethods = &shift_methods;
    else if (s->real->pMethods)
        s->real->pMethods->xClose(s->real);
    return rc;
}
static int sh_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    return shift_root->xDelete(shift_root, name, sync_dir);
}
static int sh_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return shift_root->xAccess(shift_root, name, flags, out);
}
static int sh_fullpath(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return shift_root->xFullPathname(shift_root, name, n, out);
}
static int sh_random(sqlite3_vfs *v, int n, char *out)
{
    return shift_root->xRandomness(shift_root, n, out);
}
static int sh_sleep(sqlite3_vfs *v, int us)
{
    return shift_root->xSleep(shift_root, us);
}
static int sh_time(sqlite3_vfs *v, double *t)
{
    return shift_root->xCurrentTime(shift_root, t);
}
static int sh_lasterr(sqlite3_vfs *v, int n, char *out)
{
    return shift_root->xGetLastError ? shift_root->xGetLastError(shift_root, n, out) : 0;
}
static int sh_time64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    if (shift_root->iVersion >= 2 && shift_root->xCurrentTimeInt64)
        return shift_root->xCurrentTimeInt64(shift_root, t);
    double d = 0;
    int rc = shift_root->xCurrentTime(shift_root, &d);
    *t = (sqlite3_int64)(d * 86400000.0);
    return rc;
}

static sqlite3_vfs shift_vfs;
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;
static int shift_ready;

static void shift_register(void)
{
    shift_root = sqlite3_vfs_find(NULL);
    if (!shift_root) return;
    shift_vfs.iVersion = 2;
    shift_vfs.szOsFile = (int)sizeof(shift_file) + shift_root->szOsFile;
    shift_vfs.mxPathname = shift_root->mxPathname;
    shift_vfs.zName = TSYNC__BAK_VFS;
    shift_vfs.xOpen = sh_open;
    shift_vfs.xDelete = sh_delete;
    shift_vfs.xAccess = sh_access;
    shift_vfs.xFullPathname = sh_fullpath;
    shift_vfs.xRandomness = sh_random;
    shift_vfs.xSleep = sh_sleep;
    shift_vfs.xCurrentTime = sh_time;
    shift_vfs.xGetLastError = sh_lasterr;
    shift_vfs.xCurrentTimeInt64 = sh_time64;
    shift_ready = sqlite3_vfs_register(&shift_vfs, 0) == SQLITE_OK;
}

bool tsync__bak_vfs_ready(void)
{
    pthread_once(&shift_once, shift_register);
    return shift_ready;
}
