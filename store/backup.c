/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/backup.c — taking a backup of a replicated database as one file (format: backup_format.c,
 * docs/BACKUP.md): a sealed snapshot copied, checked, hashed (and encrypted), with its manifest.
 *
 * Design notes
 * - The snapshot holds nothing unsealed. A change captured but not sealed in the backup would be
 *   sealed again after a restore, under the new site id, while the old site id may already have
 *   sealed and sent it: a counter would count that sale twice. So the backup seals, then opens a
 *   read transaction and checks tsync_pending is empty in it, and seals again and retries when a
 *   write slipped in between (a window of microseconds). The read transaction pins the snapshot,
 *   so the copy never restarts however much the till writes meanwhile, and in WAL mode it blocks
 *   no writer.
 * - Speed (target: within 1.3x of `sqlite3 DB .backup`): the online backup API writes the
 *   snapshot straight into the output file, at the image's offset, through a small VFS that
 *   shifts the main file's offsets (backup_vfs.c; an encrypted backup needs a scratch copy to
 *   encrypt from). The copy's private source connection reads through mmap. Then two things run
 *   at once on two cores: a helper thread runs PRAGMA quick_check on the copy (through mmap) and
 *   counts its rows, while this thread hashes the image (and encrypts it) in 4 MiB blocks. The
 *   manifest, which needs the image's hash and the row counts, follows the image.
 * - quick_check, not integrity_check: it verifies every b-tree page, the record formats and that
 *   each page is used exactly once, which is what a damaged copy or file would break, at a ninth
 *   of integrity_check's cost on a million rows. What it skips (index entries matching table rows)
 *   is a property of the source that a page-for-page copy keeps; the hashes then guard every byte.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup_int.h"

#define SNAP_TRIES   200 /* seal-then-snapshot attempts before giving up */
#define DEFAULT_STEP 512 /* pages per sqlite3_backup_step */

/* True when a and b name the same file. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* ---------------------------------------------------------------- what the copy holds */

typedef struct {
    char *name;
    int64_t rows;
    int replicated;
} table_count;

/* What the helper thread learns from the copy. */
typedef struct {
    sqlite3 *db; /* the copy: only the helper thread uses it until it is joined */
    int rc;      /* a TSYNC_E* code */
    char err[400];
    int64_t hlc, batches;
    table_count *tables;
    int ntables;
    struct {
        uint8_t site[TSYNC__SITE_BYTES];
        int64_t seq;
    } * vec;
    int nvec;
} copy_facts;

static void facts_clear(copy_facts *c)
{
    for (int i = 0; i < c->ntables; i++) free(c->tables[i].name);
    free(c->tables);
    free(c->vec);
    c->tables = NULL;
    c->vec = NULL;
    c->ntables = c->nvec = 0;
}

static void facts_fail(copy_facts *c, const char *what)
{
    c->rc = TSYNC_EIO;
    snprintf(c->err, sizeof c->err, "%s: %s", what, sqlite3_errmsg(c->db));
}

static int64_t facts_int(copy_facts *c, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
        facts_fail(c, "read the copy");
        return 0;
    }
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The helper thread: quick_check of the copy, then its row counts and version vector. */
static void *check_copy(void *arg)
{
    copy_facts *c = arg;
    char msg[300];
    sqlite3_exec(c->db, "PRAGMA mmap_size=1073741824", NULL, NULL, NULL);
    int qrc = tsync__bak_quick_check(c->db, msg, sizeof msg);
    if (qrc != SQLITE_OK || strcmp(msg, "ok") != 0) {
        c->rc = TSYNC_ECORRUPT;
        snprintf(c->err, sizeof c->err, "the copy fails quick_check (the database is damaged): %s",
                 msg);
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(
            c->db,
            "SELECT name, name IN (SELECT name FROM tsync_tables) FROM sqlite_schema "
            "WHERE type='table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name "
            "NOT LIKE 'tsync\\_%' ESCAPE '\\' ORDER BY name",
            -1, &st, NULL) != SQLITE_OK) {
        facts_fail(c, "list the tables of the copy");
        return NULL;
    }
    while (c->rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        table_count *nt = realloc(c->tables, (size_t)(c->ntables + 1) * sizeof *nt);
        if (!nt) {
            c->rc = TSYNC_ENOMEM;
            snprintf(c->err, sizeof c->err, "out of memory");
            break;
        }
        c->tables = nt;
        table_count *t = &c->tables[c->ntables];
        t->name = strdup((const char *)sqlite3_column_text(st, 0));
        t->replicated = sqlite3_column_int(st, 1);
        t->rows = 0;
        if (!t->name) {
            c->rc = TSYNC_ENOMEM;
            snprintf(c->err, sizeof c->err, "out of memory");
            break;
        }
        c->ntables++;
        char *sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", t->name);
        t->rows = sql ? facts_int(c, sql) : 0;
        sqlite3_free(sql);
    }
    sqlite3_finalize(st);
    if (c->rc) return NULL;
    c->hlc = facts_int(c, "SELECT v FROM tsync_meta WHERE k='hlc'");
    c->batches = facts_int(c, "SELECT count(*) FROM tsync_log");
    if (c->rc) return NULL;
    if (sqlite3_prepare_v2(c->db, "SELECT site, seq FROM tsync_sites WHERE seq > 0 ORDER BY site",
                           -1, &st, NULL) != SQLITE_OK) {
        facts_fail(c, "read the vector of the copy");
        return NULL;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        void *nv = realloc(c->vec, (size_t)(c->nvec + 1) * sizeof *c->vec);
        if (!nv) {
            c->rc = TSYNC_ENOMEM;
            snprintf(c->err, sizeof c->err, "out of memory");
            break;
        }
        c->vec = nv;
        memcpy(c->vec[c->nvec].site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        c->vec[c->nvec++].seq = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return NULL;
}

static char *build_manifest(tsync_store *s, const copy_facts *c, uint64_t image_len, int page_size,
                            const uint8_t image_hash[32])
{
    json_t *m = json_object(), *src = json_object(), *img = json_object(), *tables = json_array(),
           *vec = json_array();
    if (!m || !src || !img || !tables || !vec) {
        json_decref(m), json_decref(src), json_decref(img), json_decref(tables), json_decref(vec);
        return NULL;
    }
    uint64_t now = tsync__wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[64], t[32];
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof when, "%s.%03dZ", t, (int)(now % 1000));
    char site[2 * TSYNC__SITE_BYTES + 1], pk[2 * TSYNC__PK_BYTES + 1],
        inc[2 * TSYNC__INC_BYTES + 1], ihex[2 * 32 + 1];
    tsync__hex(s->site, TSYNC__SITE_BYTES, site);
    tsync__hex(s->pk, TSYNC__PK_BYTES, pk);
    tsync__hex(s->inc, TSYNC__INC_BYTES, inc);
    tsync__hex(image_hash, 32, ihex);
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    char *real = realpath(s->path, NULL);

    json_object_set_new(m, "format", json_integer(1));
    json_object_set_new(m, "created_at", json_string(when));
    json_object_set_new(m, "tillsync_version", json_string(tsync_version()));
    json_object_set_new(m, "sqlite_version", json_string(sqlite3_libversion()));
    json_object_set_new(src, "database", json_string(real ? real : s->path));
    json_object_set_new(src, "host", json_string(host));
    json_object_set_new(src, "site", json_string(site));
    json_object_set_new(src, "public_key", json_string(pk));
    json_object_set_new(src, "incarnation", json_string(inc));
    json_object_set_new(m, "source", src);
    json_object_set_new(img, "bytes", json_integer((json_int_t)image_len));
    json_object_set_new(img, "page_size", json_integer(page_size));
    json_object_set_new(img, "blake2b_256", json_string(ihex));
    json_object_set_new(img, "checked", json_string("PRAGMA quick_check: ok"));
    json_object_set_new(m, "image", img);
    for (int i = 0; i < c->ntables; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(c->tables[i].name));
        json_object_set_new(e, "rows", json_integer(c->tables[i].rows));
        json_object_set_new(e, "replicated", json_boolean(c->tables[i].replicated));
        json_array_append_new(tables, e);
    }
    json_object_set_new(m, "tables", tables);
    json_object_set_new(m, "batches", json_integer(c->batches));
    json_object_set_new(m, "hlc", json_integer(c->hlc));
    for (int i = 0; i < c->nvec; i++) {
        json_t *e = json_object();
        tsync__hex(c->vec[i].site, TSYNC__SITE_BYTES, site);
        json_object_set_new(e, "site", json_string(site));
        json_object_set_new(e, "seq", json_integer(c->vec[i].seq));
        json_array_append_new(vec, e);
    }
    json_object_set_new(m, "vector", vec);
    char *out = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    free(real);
    return out;
}

/* ---------------------------------------------------------------- the snapshot */

/* Seals, then opens a read transaction on a private connection in which nothing is pending. */
static int open_snapshot(tsync_store *s, sqlite3 **out)
{
    *out = NULL;
    sqlite3 *db = NULL;
    /* A store opened read-only (a full disk) seals nothing: the backup then also carries the
     * unsealed rows, which the restored database seals under its new incarnation. */
    char *uri = s->immutable ? tsync__immutable_uri(s->path) : NULL;
    int rc = sqlite3_open_v2(uri ? uri : s->path, &db,
                             (s->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                                 SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0),
                             NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot open database %s: %s", s->path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 10000);
    /* The copy reads every page once: straight from the page cache is about a fifth faster. */
    rc = tsync__bak_exec(db, "PRAGMA mmap_size=1073741824", "set up the snapshot");
    for (int tries = 0; rc == 0; tries++) {
        if (tries == SNAP_TRIES) {
            rc = tsync__err(TSYNC_EBUSY,
                            "cannot back up %s: writes kept arriving between sealing and the "
                            "snapshot (%d attempts); try again",
                            s->path, SNAP_TRIES);
            break;
        }
        if (!s->read_only && (rc = tsync_store_seal(s, NULL))) break;
        if ((rc = tsync__bak_exec(db, "BEGIN", "begin the snapshot"))) break;
        sqlite3_stmt *st = NULL;
        int src =
            sqlite3_prepare_v2(db, "SELECT EXISTS(SELECT 1 FROM tsync_pending)", -1, &st, NULL);
        int pending = -1;
        if (src == SQLITE_OK && (src = sqlite3_step(st)) == SQLITE_ROW)
            pending = sqlite3_column_int(st, 0);
        if (pending < 0) rc = tsync__err_sqlite(db, src, "read the snapshot");
        sqlite3_finalize(st);
        if (pending == 0 || (pending > 0 && s->read_only)) {
            *out = db;
            return 0;
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

/* ---------------------------------------------------------------- backup */

/* Copies the snapshot of src into the database at path (through vfs; NULL for the default), in
 * steps of step pages. The file exists already (made 0600 by the caller). */
static int copy_snapshot(sqlite3 *src, const char *path, const char *vfs, const char *name,
                         unsigned step, const tsync_backup_options *opts, sqlite3 **out,
                         int *page_size)
{
    *out = NULL;
    sqlite3 *dst = NULL;
    int rc = sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot create %s: %s", path,
                        dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        sqlite3_close(dst);
        return rc;
    }
    sqlite3_extended_result_codes(dst, 1);
    /* A scratch copy until the file is complete: no journal, no fsync; the file is synced once
     * at the end instead. */
    rc = tsync__bak_exec(
        dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE",
        "set up the copy");
    sqlite3_stmt *st = NULL;
    int64_t total = 0;
    if (rc == 0 && sqlite3_prepare_v2(src, "PRAGMA page_count", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_backup *b = rc ? NULL : sqlite3_backup_init(dst, "main", src, "main");
    if (rc == 0 && !b) rc = tsync__err_sqlite(dst, sqlite3_errcode(dst), "start the backup copy");
    int step_rc = SQLITE_OK;
    for (int busy = 0; b;) {
        step_rc = sqlite3_backup_step(b, (int)step);
        int left = sqlite3_backup_remaining(b), count = sqlite3_backup_pagecount(b);
        tsync__bak_progress(opts->progress, opts->progress_ctx, TSYNC_BACKUP_COPY,
                            (uint64_t)(count - left), (uint64_t)(count ? count : total));
        if (step_rc == SQLITE_OK) continue;
        if ((step_rc == SQLITE_BUSY || step_rc == SQLITE_LOCKED) && busy++ < 100) {
            sqlite3_sleep(10);
            continue;
        }
        break;
    }
    if (b) {
        int frc = sqlite3_backup_finish(b);
        if (step_rc != SQLITE_DONE)
            rc = tsync__err(step_rc == SQLITE_BUSY ? TSYNC_EBUSY : TSYNC_EIO,
                            "backup copy of %s failed: %s", name,
                            frc != SQLITE_OK ? sqlite3_errmsg(dst) : sqlite3_errstr(step_rc));
    }
    /* The copy says WAL, as its source did; a rollback-journal image opens anywhere, read-only
     * and from memory too. */
    if (rc == 0) rc = tsync__bak_exec(dst, "PRAGMA journal_mode=DELETE", "finish the copy");
    if (rc == 0 && sqlite3_prepare_v2(dst, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        *page_size = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc) {
        sqlite3_close(dst);
        return rc;
    }
    *out = dst;
    return 0;
}

typedef struct {
    tsync_store *s;
    const tsync_backup_options *opts;
    int enc;
    int fd; /* the .tmp file, which becomes the backup */
    const char *tmp_path;
    int img_fd;           /* where the image is: fd itself (plain) or the scratch copy */
    const char *img_path; /* the scratch copy of an encrypted backup */
    sqlite3 *copy;        /* the copy, open until it has been checked */
    int page_size;
    char *manifest;
} backup_job;

/* The header (with the key derivation), the image hashed (and encrypted) while the helper thread
 * checks the copy, then the manifest and the trailer. */
static int write_file(backup_job *j)
{
    const tsync_backup_options *o = j->opts;
    tsync__bak_writer w;
    memset(&w, 0, sizeof w);
    w.fd = j->fd;
    w.name = j->tmp_path;
    w.enc = j->enc;
    uint8_t h[TSYNC__BAK_ENC_HEADER];
    memcpy(h, TSYNC__BAK_MAGIC, 8);
    h[8] = TSYNC__BAK_FORMAT;
    h[9] = w.enc ? TSYNC__BAK_ENCRYPTED : 0;
    size_t hlen = TSYNC__BAK_PLAIN_HEADER;
    int rc = 0;
    uint8_t *buf = malloc(BLOCK);
    if (!buf) return tsync__err(TSYNC_ENOMEM, "out of memory");
    if (w.enc) {
        unsigned long long ops =
            o->kdf_opslimit ? o->kdf_opslimit : crypto_pwhash_OPSLIMIT_MODERATE;
        size_t mem = o->kdf_memlimit ? o->kdf_memlimit : crypto_pwhash_MEMLIMIT_MODERATE;
        uint8_t *p = h + TSYNC__BAK_PLAIN_HEADER;
        p[0] = crypto_pwhash_ALG_ARGON2ID13;
        put_le(p + 1, ops, 4);
        put_le(p + 5, mem, 8);
        randombytes_buf(p + 13, crypto_pwhash_SALTBYTES);
        uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
        w.pt = malloc(TSYNC__BAK_CHUNK);
        w.ct = malloc(TSYNC__BAK_CHUNK + ABYTES);
        if (!w.pt || !w.ct)
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        else if (crypto_pwhash(key, sizeof key, o->passphrase, strlen(o->passphrase), p + 13, ops,
                               mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
            rc = tsync__err(TSYNC_ENOMEM, "cannot derive the key: out of memory");
        else
            crypto_secretstream_xchacha20poly1305_init_push(&w.ss, p + 29, key);
        sodium_memzero(key, sizeof key);
        hlen = TSYNC__BAK_ENC_HEADER;
        w.ad = h;
        w.adlen = hlen;
    }
    crypto_generichash_state th, ih;
    crypto_generichash_init(&th, NULL, 0, 32);
    crypto_generichash_init(&ih, NULL, 0, 32);
    crypto_generichash_update(&th, h, hlen);

    struct stat sb;
    uint64_t len = 0, at = w.enc ? 0 : IMAGE_AT;
    if (rc == 0 && fstat(j->img_fd, &sb) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot read the copy of %s: %s", j->s->path, strerror(errno));
    if (rc == 0) len = (uint64_t)sb.st_size - at;
    uint8_t num[8];
    put_le(num, len, 8);
    crypto_generichash_update(&th, num, 8);
    if (rc == 0 && w.enc) {
        rc = tsync__bak_w_raw(&w, h, hlen);
        if (rc == 0) rc = tsync__bak_w_put(&w, num, 8);
    } else if (rc == 0) {
        /* The image is in place already, behind the room left for these bytes. */
        memset(buf, 0, IMAGE_AT);
        memcpy(buf, h, hlen);
        memcpy(buf + hlen, num, 8);
        if (pwrite(j->fd, buf, IMAGE_AT, 0) != (ssize_t)IMAGE_AT)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", j->tmp_path, strerror(errno));
    }

    copy_facts c;
    memset(&c, 0, sizeof c);
    c.db = j->copy;
    pthread_t tid;
    int threaded = rc == 0 && pthread_create(&tid, NULL, check_copy, &c) == 0;
    for (uint64_t done = 0; rc == 0 && done < len;) {
        size_t want = len - done < BLOCK ? (size_t)(len - done) : BLOCK;
        ssize_t k = pread(j->img_fd, buf, want, (off_t)(at + done));
        if (k <= 0) {
            rc = tsync__err(TSYNC_EIO, "cannot read the copy of %s: %s", j->s->path,
                            k < 0 ? strerror(errno) : "it shrank");
            break;
        }
        crypto_generichash_update(&ih, buf, (size_t)k);
        if (w.enc) rc = tsync__bak_w_put(&w, buf, (size_t)k);
        done += (uint64_t)k;
        tsync__bak_progress(o->progress, o->progress_ctx, TSYNC_BACKUP_WRITE, done, len);
    }
    if (threaded)
        pthread_join(tid, NULL);
    else if (rc == 0)
        check_copy(&c);
    if (rc == 0 && c.rc) rc = tsync__err(c.rc, "cannot back up %s: %s", j->s->path, c.err);
    /* Checked: SQLite has no more business with the file. */
    sqlite3_close(j->copy);
    j->copy = NULL;

    uint8_t ihash[32];
    crypto_generichash_final(&ih, ihash, 32);
    if (rc == 0) {
        crypto_generichash_update(&th, ihash, 32);
        j->manifest = build_manifest(j->s, &c, len, j->page_size, ihash);
        if (!j->manifest) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    if (rc == 0 && !w.enc && lseek(j->fd, (off_t)(IMAGE_AT + len), SEEK_SET) < 0)
        rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", j->tmp_path, strerror(errno));
    if (rc == 0) {
        size_t mlen = strlen(j->manifest);
        put_le(num, mlen, 4);
        crypto_generichash_update(&th, num, 4);
        crypto_generichash_update(&th, (const uint8_t *)j->manifest, mlen);
        crypto_generichash_final(&th, buf, 32);
        rc = tsync__bak_w_put(&w, num, 4);
        if (rc == 0) rc = tsync__bak_w_put(&w, j->manifest, mlen);
        if (rc == 0) rc = tsync__bak_w_put(&w, buf, 32);
        if (rc == 0) rc = tsync__bak_w_finish(&w);
    }
    facts_clear(&c);
    if (w.pt) sodium_memzero(w.pt, TSYNC__BAK_CHUNK);
    free(w.pt);
    free(w.ct);
    sodium_memzero(&w.ss, sizeof w.ss);
    free(buf);
    return rc;
}

/* Creates (or empties) a file only its owner can read: it will hold the shop's data. */
static int create_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && fchmod(fd, 0600) != 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) tsync__err(TSYNC_EIO, "cannot write %s: %s", path, strerror(errno));
    return fd;
}

int tsync_backup(tsync_store *s, const char *out_path, const tsync_backup_options *opts,
                 char **manifest_json)
{
    tsync_backup_options def = TSYNC_BACKUP_OPTIONS_INIT;
    if (!opts) opts = &def;
    if (tsync__check_version("tsync_backup_options", opts->version, TSYNC_BACKUP_OPTIONS_VERSION))
        return TSYNC_EVERSION;
    if (manifest_json) *manifest_json = NULL;
    if (!s || !out_path || !*out_path) return tsync__err(TSYNC_EINVAL, "no backup file given");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    if (!sqlite3_get_autocommit(s->db))
        return tsync__err(TSYNC_EINVAL, "cannot back up inside an open transaction; commit first");
    if (same_file(out_path, s->path) || same_file(out_path, s->key_path))
        return tsync__err(TSYNC_EINVAL, "%s is the database or its key file, not a backup file",
                          out_path);
    if (opts->passphrase) {
        unsigned long long ops = opts->kdf_opslimit;
        size_t mem = opts->kdf_memlimit;
        if (!*opts->passphrase) return tsync__err(TSYNC_EINVAL, "the passphrase is empty");
        if ((ops && (ops < crypto_pwhash_OPSLIMIT_MIN || ops > crypto_pwhash_OPSLIMIT_SENSITIVE)) ||
            (mem && (mem < crypto_pwhash_MEMLIMIT_MIN || mem > crypto_pwhash_MEMLIMIT_SENSITIVE)))
            return tsync__err(TSYNC_EINVAL, "key derivation limits out of range");
    }
    if (!tsync__bak_vfs_ready())
        return tsync__err(TSYNC_ERROR, "cannot register the backup's SQLite VFS");
    backup_job j;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.opts = opts;
    j.enc = opts->passphrase != NULL;
    j.fd = j.img_fd = -1;
    char *tmp = tsync__bak_path_with(out_path, ".tmp"),
         *img = tsync__bak_path_with(out_path, ".image.tmp");
    if (!tmp || !img) {
        free(tmp), free(img);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    j.tmp_path = tmp;
    j.img_path = img;
    sqlite3 *snap = NULL;
    int rc = open_snapshot(s, &snap);
    if (rc == 0 && (j.fd = create_private(tmp)) < 0) rc = tsync_error_last()->code;
    if (rc == 0 && j.enc && (j.img_fd = create_private(img)) < 0) rc = tsync_error_last()->code;
    if (rc == 0) {
        if (!j.enc) j.img_fd = j.fd;
        rc = copy_snapshot(snap, j.enc ? img : tmp, j.enc ? NULL : TSYNC__BAK_VFS, s->path,
                           opts->step_pages ? opts->step_pages : DEFAULT_STEP, opts, &j.copy,
                           &j.page_size);
    }
    if (snap) {
        sqlite3_exec(snap, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(snap);
    }
    if (rc == 0) rc = write_file(&j);
    if (j.copy) sqlite3_close(j.copy);
    if (j.enc && j.img_fd >= 0) close(j.img_fd);
    if (j.fd >= 0) {
        if (rc == 0 && fdatasync(j.fd) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", tmp, strerror(errno));
        if (close(j.fd) != 0 && rc == 0)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (rc == 0 && rename(tmp, out_path) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot install %s: %s", out_path, strerror(errno));
    if (rc == 0 && tsync__bak_fsync_dir(out_path) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot sync the folder of %s: %s", out_path, strerror(errno));
    if (rc) tsync__bak_unlink_db(tmp);
    if (j.enc) tsync__bak_unlink_db(img);
    if (rc == 0 && manifest_json)
        *manifest_json = j.manifest;
    else
        free(j.manifest);
    free(tmp);
    free(img);
    return rc;
}
