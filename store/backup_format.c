/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/backup_format.c — the backup file format (docs/BACKUP.md): a fixed header, then (plain, or
 * as one libsodium secretstream) the SQLite image of a sealed snapshot, its manifest, and a
 * BLAKE2b-256 trailer. The writer backup.c fills, the reader and decoder that tsync_backup_check,
 * tsync_restore and the fuzz target use, and the file helpers backup and restore share.
 *
 * Design notes
 * - One hash pass over the image: the manifest carries BLAKE2b-256(image), and the trailer is
 *   BLAKE2b-256 of the header, the image length, that image hash and the manifest. Encrypted
 *   files add authentication (XChaCha20-Poly1305 per 1 MiB chunk, the last tagged FINAL so a cut
 *   at a chunk boundary is seen); a plain file's hashes detect damage, not a forger.
 * - The decoder trusts nothing it reads: every length is bounded before it is used, the key
 *   derivation's cost is capped by the caller, and nothing may follow the content.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup_int.h"

/* ---------------------------------------------------------------- file helpers */

/* path followed by suffix, malloc'd. */
char *tsync__bak_path_with(const char *path, const char *suffix)
{
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

int tsync__bak_write_all(int fd, const uint8_t *p, size_t n)
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
int tsync__bak_fsync_dir(const char *path)
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
void tsync__bak_unlink_db(const char *path)
{
    static const char *const sfx[] = {"-wal", "-shm", "-journal"};
    if (!path) return;
    unlink(path);
    for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
        char *p = tsync__bak_path_with(path, sfx[i]);
        if (p) unlink(p);
        free(p);
    }
}

int tsync__bak_exec(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) return 0;
    int code = tsync__err_sqlite(db, rc, what);
    if (msg) tsync__err(code, "%s: %s", what, msg);
    sqlite3_free(msg);
    return code;
}

void tsync__bak_progress(tsync_backup_progress_cb cb, void *ctx, tsync_backup_phase phase,
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
                          "%s is an SQLite database, not a tillsync backup (a backup is made "
                          "from a store by tsync_backup)",
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

int tsync__bak_w_raw(tsync__bak_writer *w, const uint8_t *p, size_t n)
{
    if (tsync__bak_write_all(w->fd, p, n) != 0)
        return tsync__err(TSYNC_EIO, "cannot write %s: %s", w->name, strerror(errno));
    return 0;
}

static int w_push(tsync__bak_writer *w, unsigned char tag)
{
    unsigned long long clen = 0;
    crypto_secretstream_xchacha20poly1305_push(&w->ss, w->ct, &clen, w->pt, w->npt, w->ad, w->adlen,
                                               tag);
    w->ad = NULL;
    w->adlen = 0;
    w->npt = 0;
    return tsync__bak_w_raw(w, w->ct, (size_t)clen);
}

int tsync__bak_w_put(tsync__bak_writer *w, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (!w->enc) return tsync__bak_w_raw(w, p, n);
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

int tsync__bak_w_finish(tsync__bak_writer *w)
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
    /* The source identity: hex of exactly its size (a public key is the longest). */
    const char *site = json_string_value(json_object_get(src, "site"));
    const char *pk = json_string_value(json_object_get(src, "public_key"));
    const char *inc = json_string_value(json_object_get(src, "incarnation"));
    uint8_t id[TSYNC__PK_BYTES];
    _Static_assert(TSYNC__SITE_BYTES <= sizeof id && TSYNC__INC_BYTES <= sizeof id, "id buffer");
    int rc = 0;
    if (!json_is_object(m) || !json_is_integer(fmt) || json_integer_value(fmt) != 1)
        rc = tsync__err(TSYNC_ECORRUPT, "%s: the manifest is not a format 1 manifest", name);
    else if (!json_is_integer(bytes) || (uint64_t)json_integer_value(bytes) != image_len || !h ||
             strcmp(h, hex) != 0)
        rc = tsync__err(TSYNC_ECORRUPT,
                        "%s: the manifest does not describe the database image it carries", name);
    else if (!json_is_string(json_object_get(m, "created_at")) || !json_is_object(src) || !site ||
             tsync__unhex(site, id, TSYNC__SITE_BYTES) != 0 || !pk ||
             tsync__unhex(pk, id, TSYNC__PK_BYTES) != 0 || !inc ||
             tsync__unhex(inc, id, TSYNC__INC_BYTES) != 0)
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
        if (o->image_fd >= 0 && tsync__bak_write_all(o->image_fd, buf, k) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write the copy of %s's database: %s", r.name,
                            strerror(errno));
        done += k;
        tsync__bak_progress(o->progress, o->progress_ctx, TSYNC_BACKUP_READ, r.offset,
                            o->file_size);
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
