/*
 * store/backup.c — backup, check and restore of a replicated database as one file: a fixed header,
 * then (plain, or as one libsodium secretstream) the SQLite image of a sealed snapshot, its
 * manifest, and a BLAKE2b-256 trailer. Byte layout and guarantees: docs/BACKUP.md.
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
 *   shifts the main file's offsets (an encrypted backup needs a scratch copy to encrypt from).
 *   The copy's private source connection reads through mmap. Then two things run at once on two
 *   cores: a helper thread runs PRAGMA quick_check on the copy (through mmap) and counts its
 *   rows, while this thread hashes the image (and encrypts it) in 4 MiB blocks. The manifest,
 *   which needs the image's hash and the row counts, follows the image.
 * - quick_check, not integrity_check: it verifies every b-tree page, the record formats and that
 *   each page is used exactly once, which is what a damaged copy or file would break, at a ninth
 *   of integrity_check's cost on a million rows. What it skips (index entries matching table rows)
 *   is a property of the source that a page-for-page copy keeps; the hashes then guard every byte.
 * - One hash pass over the image: the manifest carries BLAKE2b-256(image), and the trailer is
 *   BLAKE2b-256 of the header, the image length, that image hash and the manifest. Encrypted
 *   files add authentication (XChaCha20-Poly1305 per 1 MiB chunk, the last tagged FINAL so a cut
 *   at a chunk boundary is seen); a plain file's hashes detect damage, not a forger.
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
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/backup.h"
#include "internal.h"

#define BLOCK        (4u << 20) /* image bytes per read/hash/write step */
#define ABYTES       crypto_secretstream_xchacha20poly1305_ABYTES
#define SNAP_TRIES   200 /* seal-then-snapshot attempts before giving up */
#define DEFAULT_STEP 512 /* pages per sqlite3_backup_step */

/* ---------------------------------------------------------------- small helpers */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* path followed by suffix, malloc'd. */
static char *path_with(const char *path, const char *suffix)
{
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Makes a rename in path's folder durable. */
static int fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Removes a temporary database and whatever SQLite may have put beside it. */
static void unlink_db(const char *path)
{
    static const char *const sfx[] = {"-wal", "-shm", "-journal"};
    if (!path) return;
    unlink(path);
    for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
        char *p = path_with(path, sfx[i]);
        if (p) unlink(p);
        free(p);
    }
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static int exec_err(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) return 0;
    int code = tsync__err_sqlite(db, rc, what);
    if (msg) tsync__err(code, "%s: %s", what, msg);
    sqlite3_free(msg);
    return code;
}

static void progress(tsync_backup_progress_cb cb, void *ctx, tsync_backup_phase phase,
                     uint64_t done, uint64_t total)
{
    if (cb) cb(ctx, phase, done, total);
}

/* ---------------------------------------------------------------- the header */

/* Checks the fixed start of a file (n bytes read into h). Sets *enc. */
static int header_check(const uint8_t *h, size_t n, const char *name, int *enc)
{
    if (n == 0) return tsync__err(TSYNC_ECORRUPT, "%s is empty, not a tillsync backup", name);
    if (n >= 8 && memcmp(h, "SQLite f", 8) == 0)
        return tsync__err(TSYNC_ECORRUPT,
                          "%s is an SQLite database, not a tillsync backup (make one with "
                          "'tillsync backup')",
                          name);
    if (n < 8 || memcmp(h, TSYNC__BAK_MAGIC, 8) != 0)
        return tsync__err(TSYNC_ECORRUPT, "%s is not a tillsync backup (no TSYNCBAK header)", name);
    if (n < TSYNC__BAK_PLAIN_HEADER)
        return tsync__err(TSYNC_ECORRUPT, "%s is truncated: it ends inside its header", name);
    if (h[8] != TSYNC__BAK_FORMAT)
        return tsync__err(TSYNC_EVERSION,
                          "%s is a backup of format %u; this tillsync reads format %u", name, h[8],
                          TSYNC__BAK_FORMAT);
    if (h[9] & ~TSYNC__BAK_ENCRYPTED)
        return tsync__err(TSYNC_EVERSION,
                          "%s uses features this tillsync does not know (flags 0x%02x)", name,
                          h[9]);
    *enc = h[9] & TSYNC__BAK_ENCRYPTED;
    return 0;
}

int tsync_backup_encrypted(int *encrypted, const char *path)
{
    *encrypted = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsync__err(errno == ENOENT ? TSYNC_ENOTFOUND : TSYNC_EIO, "cannot open %s: %s", path,
                          strerror(errno));
    uint8_t h[TSYNC__BAK_PLAIN_HEADER];
    size_t n = fread(h, 1, sizeof h, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) return tsync__err(TSYNC_EIO, "cannot read %s", path);
    return header_check(h, n, path, encrypted);
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    int fd;
    const char *name; /* the file written, for messages */
    int enc;
    crypto_secretstream_xchacha20poly1305_state ss;
    uint8_t *pt; /* plaintext waiting for a full chunk */
    size_t npt;
    uint8_t *ct;
    const uint8_t *ad; /* the header: additional data of the first chunk */
    size_t adlen;
} bwriter;

static int w_raw(bwriter *w, const uint8_t *p, size_t n)
{
    if (write_all(w->fd, p, n) != 0)
        return tsync__err(TSYNC_EIO, "cannot write %s: %s", w->name, strerror(errno));
    return 0;
}

static int w_push(bwriter *w, unsigned char tag)
{
    unsigned long long clen = 0;
    crypto_secretstream_xchacha20poly1305_push(&w->ss, w->ct, &clen, w->pt, w->npt, w->ad, w->adlen,
                                               tag);
    w->ad = NULL;
    w->adlen = 0;
    w->npt = 0;
    return w_raw(w, w->ct, (size_t)clen);
}

static int w_put(bwriter *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (!w->enc) return w_raw(w, p, n);
    while (n) {
        size_t k = TSYNC__BAK_CHUNK - w->npt;
        if (k > n) k = n;
        memcpy(w->pt + w->npt, p, k);
        w->npt += k;
        p += k;
        n -= k;
        if (w->npt == TSYNC__BAK_CHUNK) {
            int rc = w_push(w, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
            if (rc) return rc;
        }
    }
    return 0;
}

static int w_finish(bwriter *w)
{
    return w->enc ? w_push(w, crypto_secretstream_xchacha20poly1305_TAG_FINAL) : 0;
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    FILE *f;
    const char *name;
    int enc;
    crypto_secretstream_xchacha20poly1305_state ss;
    uint8_t *pt, *ct;
    size_t npt, pos; /* decrypted bytes in pt, and how many were used */
    int final;
    uint64_t chunk; /* chunks decrypted so far */
    const uint8_t *ad;
    size_t adlen;
    uint64_t offset; /* bytes of the file read */
} breader;

static int truncated(breader *r)
{
    return tsync__err(TSYNC_ECORRUPT,
                      "%s is truncated: it ends at byte %llu, before the end of its content",
                      r->name, (unsigned long long)r->offset);
}

/* Decrypts the next chunk into pt. */
static int r_pull(breader *r)
{
    if (r->final)
        return tsync__err(TSYNC_ECORRUPT, "%s is damaged: its content ends before its structure",
                          r->name);
    size_t want = TSYNC__BAK_CHUNK + ABYTES;
    size_t k = fread(r->ct, 1, want, r->f);
    if (ferror(r->f)) return tsync__err(TSYNC_EIO, "cannot read %s", r->name);
    r->offset += k;
    if (k < ABYTES) return truncated(r);
    unsigned long long plen = 0;
    unsigned char tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&r->ss, r->pt, &plen, &tag, r->ct, k, r->ad,
                                                   r->adlen) != 0) {
        if (r->chunk == 0)
            return tsync__err(TSYNC_EBADSIG,
                              "%s does not decrypt: wrong passphrase, or the file was altered",
                              r->name);
        return tsync__err(TSYNC_ECORRUPT,
                          "%s is damaged or truncated: encrypted chunk %llu does not authenticate",
                          r->name, (unsigned long long)r->chunk);
    }
    r->ad = NULL;
    r->adlen = 0;
    r->chunk++;
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
        r->final = 1;
    else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE || plen != TSYNC__BAK_CHUNK)
        return tsync__err(TSYNC_ECORRUPT, "%s is damaged: chunk %llu is not a full chunk", r->name,
                          (unsigned long long)r->chunk);
    r->npt = (size_t)plen;
    r->pos = 0;
    return 0;
}

static int r_get(breader *r, void *out, size_t n)
{
    uint8_t *o = out;
    if (!r->enc) {
        size_t k = fread(o, 1, n, r->f);
        r->offset += k;
        if (k == n) return 0;
        return ferror(r->f) ? tsync__err(TSYNC_EIO, "cannot read %s", r->name) : truncated(r);
    }
    while (n) {
        if (r->pos == r->npt) {
            int rc = r_pull(r);
            if (rc) return rc;
            continue;
        }
        size_t k = r->npt - r->pos < n ? r->npt - r->pos : n;
        memcpy(o, r->pt + r->pos, k);
        r->pos += k;
        o += k;
        n -= k;
    }
    return 0;
}

/* The content has been read: nothing may follow it. */
static int r_end(breader *r)
{
    if (r->enc) {
        if (!r->final && r->pos == r->npt) {
            int rc = r_pull(r); /* the content filled its last chunk: an empty FINAL follows */
            if (rc) return rc;
        }
        if (!r->final || r->pos != r->npt)
            return tsync__err(TSYNC_ECORRUPT, "%s is damaged: data follows the end of its content",
                              r->name);
    }
    if (fgetc(r->f) != EOF)
        return tsync__err(TSYNC_ECORRUPT, "%s is damaged: extra bytes after byte %llu", r->name,
                          (unsigned long long)r->offset);
    return 0;
}

/* ---------------------------------------------------------------- the manifest */

static int hex_field(json_t *o, const char *key, size_t nbytes)
{
    const char *s = json_string_value(json_object_get(o, key));
    uint8_t buf[64];
    return s && nbytes <= sizeof buf && tsync__unhex(s, buf, nbytes) == 0;
}

int tsync__bak_manifest_check(const char *json, size_t len, uint64_t image_len,
                              const uint8_t image_hash[32], const char *name)
{
    json_error_t je;
    json_t *m = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!m)
        return tsync__err(TSYNC_ECORRUPT, "%s: the manifest is not valid JSON: %s", name, je.text);
    char hex[65];
    tsync__hex(image_hash, 32, hex);
    json_t *img = json_object_get(m, "image"), *src = json_object_get(m, "source");
    json_t *fmt = json_object_get(m, "format"), *bytes = json_object_get(img, "bytes");
    const char *h = json_string_value(json_object_get(img, "blake2b_256"));
    int rc = 0;
    if (!json_is_object(m) || !json_is_integer(fmt) || json_integer_value(fmt) != 1)
        rc = tsync__err(TSYNC_ECORRUPT, "%s: the manifest is not a format 1 manifest", name);
    else if (!json_is_integer(bytes) || (uint64_t)json_integer_value(bytes) != image_len || !h ||
             strcmp(h, hex) != 0)
        rc = tsync__err(TSYNC_ECORRUPT,
                        "%s: the manifest does not describe the database image it carries", name);
    else if (!json_is_string(json_object_get(m, "created_at")) || !json_is_object(src) ||
             !hex_field(src, "site", TSYNC__SITE_BYTES) ||
             !hex_field(src, "public_key", TSYNC__PK_BYTES) ||
             !hex_field(src, "incarnation", TSYNC__INC_BYTES))
        rc = tsync__err(TSYNC_ECORRUPT,
                        "%s: the manifest lacks its creation time or source identity", name);
    json_decref(m);
    return rc;
}

/* ---------------------------------------------------------------- decoding a file */

void tsync__bak_info_clear(tsync__bak_info *info)
{
    if (!info) return;
    free(info->manifest);
    memset(info, 0, sizeof *info);
}

/* Reads the encrypted header's key derivation and opens the stream. h holds the plain header. */
static int open_stream(breader *r, uint8_t *h, const tsync__bak_read_opts *o, tsync__bak_info *info)
{
    size_t rest = TSYNC__BAK_ENC_HEADER - TSYNC__BAK_PLAIN_HEADER;
    size_t k = fread(h + TSYNC__BAK_PLAIN_HEADER, 1, rest, r->f);
    r->offset += k;
    if (k < rest)
        return ferror(r->f) ? tsync__err(TSYNC_EIO, "cannot read %s", r->name) : truncated(r);
    const uint8_t *p = h + TSYNC__BAK_PLAIN_HEADER;
    unsigned long long ops = get_le(p + 1, 4);
    uint64_t mem = get_le(p + 5, 8);
    unsigned long long max_ops =
        o->max_opslimit ? o->max_opslimit : crypto_pwhash_OPSLIMIT_SENSITIVE;
    uint64_t max_mem = o->max_memlimit ? o->max_memlimit : crypto_pwhash_MEMLIMIT_SENSITIVE;
    if (p[0] != crypto_pwhash_ALG_ARGON2ID13)
        return tsync__err(TSYNC_EVERSION, "%s: unknown key derivation %u", r->name, p[0]);
    if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > max_ops || mem < crypto_pwhash_MEMLIMIT_MIN ||
        mem > max_mem)
        return tsync__err(TSYNC_ECORRUPT,
                          "%s: key derivation parameters out of range (%llu passes, %llu KiB)",
                          r->name, ops, (unsigned long long)(mem >> 10));
    info->opslimit = ops;
    info->memlimit = (size_t)mem;
    if (!o->passphrase)
        return tsync__err(TSYNC_EINVAL, "%s is encrypted: a passphrase is needed", r->name);
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    if (crypto_pwhash(key, sizeof key, o->passphrase, strlen(o->passphrase), p + 13, ops,
                      (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return tsync__err(TSYNC_ENOMEM,
                          "%s: cannot derive the key (out of memory: it asks for %llu MiB)",
                          r->name, (unsigned long long)(mem >> 20));
    int bad = crypto_secretstream_xchacha20poly1305_init_pull(&r->ss, p + 29, key) != 0;
    sodium_memzero(key, sizeof key);
    if (bad) return tsync__err(TSYNC_ECORRUPT, "%s: bad encryption header", r->name);
    r->ad = h;
    r->adlen = TSYNC__BAK_ENC_HEADER;
    return 0;
}

int tsync__bak_read(FILE *in, const tsync__bak_read_opts *o, tsync__bak_info *info)
{
    memset(info, 0, sizeof *info);
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    breader r;
    memset(&r, 0, sizeof r);
    r.f = in;
    r.name = o->name ? o->name : "backup";
    uint8_t h[TSYNC__BAK_ENC_HEADER];
    size_t n = fread(h, 1, TSYNC__BAK_PLAIN_HEADER, in);
    r.offset = n;
    if (ferror(in)) return tsync__err(TSYNC_EIO, "cannot read %s", r.name);
    int rc = header_check(h, n, r.name, &r.enc);
    if (rc) return rc;
    info->encrypted = r.enc;
    uint8_t *buf = malloc(BLOCK);
    char *manifest = NULL;
    if (!buf) return tsync__err(TSYNC_ENOMEM, "out of memory");
    if (r.enc) {
        r.pt = malloc(TSYNC__BAK_CHUNK);
        r.ct = malloc(TSYNC__BAK_CHUNK + ABYTES);
        rc = r.pt && r.ct ? open_stream(&r, h, o, info) : tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    size_t hlen = r.enc ? TSYNC__BAK_ENC_HEADER : TSYNC__BAK_PLAIN_HEADER;
    crypto_generichash_state th, ih;
    crypto_generichash_init(&th, NULL, 0, 32);
    crypto_generichash_init(&ih, NULL, 0, 32);
    if (rc == 0) crypto_generichash_update(&th, h, hlen);

    uint8_t num[8];
    uint64_t len = 0;
    if (rc == 0 && (rc = r_get(&r, num, 8)) == 0) {
        len = get_le(num, 8);
        crypto_generichash_update(&th, num, 8);
        if (len < TSYNC__BAK_MIN_IMAGE || len > TSYNC__BAK_MAX_IMAGE || len % 512)
            rc = tsync__err(TSYNC_ECORRUPT, "%s is damaged: a database image of %llu bytes", r.name,
                            (unsigned long long)len);
        else if (!r.enc && o->file_size &&
                 o->file_size < TSYNC__BAK_IMAGE_AT + len + 4 + TSYNC__HASH_BYTES)
            rc = tsync__err(TSYNC_ECORRUPT,
                            "%s is truncated: %llu bytes, but its image alone is %llu bytes",
                            r.name, (unsigned long long)o->file_size, (unsigned long long)len);
    }
    /* A plain file's image starts at a page boundary: zeros until then. */
    size_t pad = TSYNC__BAK_IMAGE_AT - TSYNC__BAK_PLAIN_HEADER - 8;
    if (rc == 0 && !r.enc && (rc = r_get(&r, buf, pad)) == 0 && !sodium_is_zero(buf, pad))
        rc = tsync__err(TSYNC_ECORRUPT, "%s is damaged: its header padding is not zero", r.name);
    for (uint64_t done = 0; rc == 0 && done < len;) {
        size_t k = len - done < BLOCK ? (size_t)(len - done) : BLOCK;
        if ((rc = r_get(&r, buf, k))) break;
        crypto_generichash_update(&ih, buf, k);
        if (o->image_fd >= 0 && write_all(o->image_fd, buf, k) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write the copy of %s's database: %s", r.name,
                            strerror(errno));
        done += k;
        progress(o->progress, o->progress_ctx, TSYNC_BACKUP_READ, r.offset, o->file_size);
    }
    info->image_len = len;
    uint32_t mlen = 0;
    if (rc == 0) {
        crypto_generichash_final(&ih, info->image_hash, 32);
        crypto_generichash_update(&th, info->image_hash, 32);
        if ((rc = r_get(&r, num, 4)) == 0) {
            mlen = (uint32_t)get_le(num, 4);
            crypto_generichash_update(&th, num, 4);
            if (mlen < 2 || mlen > TSYNC__BAK_MANIFEST_MAX)
                rc = tsync__err(TSYNC_ECORRUPT, "%s is damaged: a manifest of %u bytes", r.name,
                                mlen);
        }
    }
    if (rc == 0 && !(manifest = malloc((size_t)mlen + 1)))
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0 && (rc = r_get(&r, manifest, mlen)) == 0) {
        manifest[mlen] = 0;
        crypto_generichash_update(&th, (const uint8_t *)manifest, mlen);
        crypto_generichash_final(&th, buf, 32);
        rc = r_get(&r, info->file_hash, 32);
        if (rc == 0 && sodium_memcmp(buf, info->file_hash, 32) != 0)
            rc = tsync__err(TSYNC_ECORRUPT,
                            "%s is damaged: its content hash does not match (changed after it "
                            "was written)",
                            r.name);
    }
    if (rc == 0) rc = r_end(&r);
    if (rc == 0) rc = tsync__bak_manifest_check(manifest, mlen, len, info->image_hash, r.name);
    if (rc == 0)
        info->manifest = manifest;
    else
        free(manifest);
    if (r.pt) sodium_memzero(r.pt, TSYNC__BAK_CHUNK);
    free(r.pt);
    free(r.ct);
    free(buf);
    sodium_memzero(&r.ss, sizeof r.ss);
    if (rc) {
        int keep = rc;
        tsync__bak_info_clear(info);
        return keep;
    }
    return 0;
}

/* ---------------------------------------------------------------- checking an image */

/* Opens a staged image the way a checker must: nothing in it runs, nothing is waited for. */
static int open_image(const char *path, const char *name, sqlite3 **out)
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
static int quick_check(sqlite3 *db, char *msg, size_t cap)
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
    int rc = open_image(path, name, &db);
    if (rc) return rc;
    char msg[300];
    int src = quick_check(db, msg, sizeof msg);
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
    *path = path_with(prefix, "XXXXXX");
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
        unlink_db(*staged);
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
    char *prefix = path_with(tmpdir && *tmpdir ? tmpdir : "/tmp", "/tsync-check-");
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
    unlink_db(staged);
    free(staged);
    if (manifest_json) {
        *manifest_json = info.manifest;
        info.manifest = NULL;
    }
    tsync__bak_info_clear(&info);
    return 0;
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
    int qrc = quick_check(c->db, msg, sizeof msg);
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

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char h[2 * 64 + 1];
    tsync__hex(p, n, h);
    return json_string(h);
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64], t[32];
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof when, "%s.%03dZ", t, (int)(ts.tv_nsec / 1000000));
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    char *real = realpath(s->path, NULL);

    json_object_set_new(m, "format", json_integer(1));
    json_object_set_new(m, "created_at", json_string(when));
    json_object_set_new(m, "tillsync_version", json_string(tsync_version()));
    json_object_set_new(m, "sqlite_version", json_string(sqlite3_libversion()));
    json_object_set_new(src, "database", json_string(real ? real : s->path));
    json_object_set_new(src, "host", json_string(host));
    json_object_set_new(src, "site", hex_json(s->site, TSYNC__SITE_BYTES));
    json_object_set_new(src, "public_key", hex_json(s->pk, TSYNC__PK_BYTES));
    json_object_set_new(src, "incarnation", hex_json(s->inc, TSYNC__INC_BYTES));
    json_object_set_new(m, "source", src);
    json_object_set_new(img, "bytes", json_integer((json_int_t)image_len));
    json_object_set_new(img, "page_size", json_integer(page_size));
    json_object_set_new(img, "blake2b_256", hex_json(image_hash, 32));
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
        json_object_set_new(e, "site", hex_json(c->vec[i].site, TSYNC__SITE_BYTES));
        json_object_set_new(e, "seq", json_integer(c->vec[i].seq));
        json_array_append_new(vec, e);
    }
    json_object_set_new(m, "vector", vec);
    char *out = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    free(real);
    return out;
}

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
    rc = exec_err(db, "PRAGMA mmap_size=1073741824", "set up the snapshot");
    for (int tries = 0; rc == 0; tries++) {
        if (tries == SNAP_TRIES) {
            rc = tsync__err(TSYNC_EBUSY,
                            "cannot back up %s: writes kept arriving between sealing and the "
                            "snapshot (%d attempts); try again",
                            s->path, SNAP_TRIES);
            break;
        }
        if (!s->read_only && (rc = tsync_store_seal(s, NULL))) break;
        if ((rc = exec_err(db, "BEGIN", "begin the snapshot"))) break;
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

/* ---------------------------------------------------------------- the image inside the file
 *
 * A plain backup's image lies right after the fixed header and the image length, so the backup
 * API writes it there directly, through this VFS: it shifts every offset of the main database file
 * by IMAGE_AT and hands every other file (the copy's journal, if any) to the default VFS as it is.
 * Writing the image once, instead of into a scratch file and then into the backup, halves what a
 * plain backup writes: on a million rows that was the largest cost after the copy itself. */

#define IMAGE_AT  TSYNC__BAK_IMAGE_AT
#define SHIFT_VFS "tsync-backup-shift"

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
    shift_vfs.zName = SHIFT_VFS;
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
    rc = exec_err(dst,
                  "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE",
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
        progress(opts->progress, opts->progress_ctx, TSYNC_BACKUP_COPY, (uint64_t)(count - left),
                 (uint64_t)(count ? count : total));
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
    if (rc == 0) rc = exec_err(dst, "PRAGMA journal_mode=DELETE", "finish the copy");
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
    bwriter w;
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
        rc = w_raw(&w, h, hlen);
        if (rc == 0) rc = w_put(&w, num, 8);
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
        if (w.enc) rc = w_put(&w, buf, (size_t)k);
        done += (uint64_t)k;
        progress(o->progress, o->progress_ctx, TSYNC_BACKUP_WRITE, done, len);
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
        rc = w_put(&w, num, 4);
        if (rc == 0) rc = w_put(&w, j->manifest, mlen);
        if (rc == 0) rc = w_put(&w, buf, 32);
        if (rc == 0) rc = w_finish(&w);
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
    pthread_once(&shift_once, shift_register);
    if (!shift_ready) return tsync__err(TSYNC_ERROR, "cannot register the backup's SQLite VFS");
    backup_job j;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.opts = opts;
    j.enc = opts->passphrase != NULL;
    j.fd = j.img_fd = -1;
    char *tmp = path_with(out_path, ".tmp"), *img = path_with(out_path, ".image.tmp");
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
        rc = copy_snapshot(snap, j.enc ? img : tmp, j.enc ? NULL : SHIFT_VFS, s->path,
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
    if (rc == 0 && fsync_dir(out_path) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot sync the folder of %s: %s", out_path, strerror(errno));
    if (rc) unlink_db(tmp);
    if (j.enc) unlink_db(img);
    if (rc == 0 && manifest_json)
        *manifest_json = j.manifest;
    else
        free(j.manifest);
    free(tmp);
    free(img);
    return rc;
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
    char *tmp = path_with(key_path, ".tmp");
    int rc = tmp ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || fchmod(fd, 0600) != 0 || write_all(fd, buf, KEY_LEN) != 0 || fsync(fd) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write key file %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        if (rc == 0 && rename(tmp, key_path) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot install key file %s: %s", key_path, strerror(errno));
        if (rc == 0) fsync_dir(key_path);
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
    int rc = open_image(staged, db_path, &src);
    if (rc) return rc;
    /* In WAL mode the backup API cannot change the page size: leave WAL for the copy. */
    int wal = 0;
    if (pragma_int(live, "PRAGMA page_size") != pragma_int(src, "PRAGMA page_size")) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(live, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            wal = sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (wal) rc = exec_err(live, "PRAGMA journal_mode=DELETE", "restore");
    }
    sqlite3_backup *b = rc ? NULL : sqlite3_backup_init(live, "main", src, "main");
    if (rc == 0 && !b) rc = tsync__err_sqlite(live, sqlite3_errcode(live), "restore");
    int step = SQLITE_OK;
    while (b && (step = sqlite3_backup_step(b, 4096)) == SQLITE_OK) {
        int left = sqlite3_backup_remaining(b), count = sqlite3_backup_pagecount(b);
        progress(o->progress, o->progress_ctx, TSYNC_BACKUP_RESTORE, (uint64_t)(count - left),
                 (uint64_t)count);
    }
    if (b) {
        int frc = sqlite3_backup_finish(b);
        if (step != SQLITE_DONE)
            rc = tsync__err(TSYNC_EIO, "cannot restore into %s: %s", db_path,
                            frc != SQLITE_OK ? sqlite3_errmsg(live) : sqlite3_errstr(step));
    }
    if (wal && rc == 0) rc = exec_err(live, "PRAGMA journal_mode=WAL", "restore");
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
    char *key_path = opts->key_path ? strdup(opts->key_path) : path_with(db_path, ".key");
    char *prefix = path_with(db_path, ".restore-");
    char *wal = path_with(db_path, "-wal");
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
    if (rc && created) unlink_db(db_path);
    unlink_db(staged);
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
