/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/bundle_io.c — the state a peer shows (site, clock, version vector with head hashes) and
 * bundles: the batches a peer with a given state lacks, as contiguous signed runs per origin.
 *
 * Design notes
 * - A bundle is written in format 5 (codec/bundle_stream_writer.c) as the log is read: each run
 *   piece of tsync__sync_runs (about 1 MiB) becomes one record and leaves at once, so writing a
 *   bundle of any size holds one piece, into a file or into memory.
 * - Trust records and table definitions go first, so a reader meets them before any batch (a
 *   batch of a till enrolled since the last merge needs its certificate).
 * - A file is written beside its final name and renamed when whole: a failure leaves no half
 *   bundle behind, and an existing file of that name stays as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/identity.h"
#include "internal.h"
#include "store/schema.h"
#include "store/sync.h"
#include "store/trust.h"

static json_t *hexstr(const uint8_t *p, size_t n)
{
    char buf[2 * 64 + 1];
    tsync__hex(p, n, buf);
    return json_string(buf);
}

int tsync_store_state_json(char **out, tsync_store *s)
{
    *out = NULL;
    tsync__hlc hlc;
    int rc = tsync__hlc_load(s, &hlc);
    if (rc) return rc;
    json_t *o = json_object(), *vec = json_array();
    json_object_set_new(o, "format", json_integer(1));
    json_object_set_new(o, "site", hexstr(s->site, TSYNC__SITE_BYTES));
    json_object_set_new(o, "incarnation", hexstr(s->inc, TSYNC__INC_BYTES));
    json_object_set_new(o, "public_key", hexstr(s->pk, TSYNC__PK_BYTES));
    json_object_set_new(o, "hlc", json_integer((json_int_t)hlc));
    sqlite3_stmt *st;
    /* Why local changes cannot leave this till, when some cannot (store/seal.c). */
    char note[512];
    if (tsync__unsealable_note(s, note, sizeof note) == 1)
        json_object_set_new(o, "unsealable", json_string(note));
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT site, seq, hash, frozen_seq FROM tsync_sites WHERE "
                            "seq > 0 ORDER BY site",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        json_decref(o), json_decref(vec);
        return tsync__err_sqlite(s->db, rc, "read vector");
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *e = json_object();
        json_object_set_new(e, "site", hexstr(sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES));
        json_object_set_new(e, "seq", json_integer(sqlite3_column_int64(st, 1)));
        if (sqlite3_column_bytes(st, 2) == TSYNC__HASH_BYTES)
            json_object_set_new(e, "hash", hexstr(sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES));
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            json_object_set_new(e, "frozen_at", json_integer(sqlite3_column_int64(st, 3)));
        json_array_append_new(vec, e);
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "vector", vec);
    {
        /* This till's log went back and it took a new incarnation (store/identity.c). */
        int64_t rb = 0;
        char *last = NULL;
        if (tsync__identity_rollbacks(s, &rb, &last) == 0) {
            json_object_set_new(o, "rollbacks", json_integer(rb));
            json_t *lj = last ? json_loads(last, 0, NULL) : NULL;
            json_object_set_new(o, "last_rollback", lj ? lj : json_null());
        }
        free(last);
    }
    *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* Parses the vector of a state into (site, seq) pairs. */
static int parse_since(const char *json, tsync__vv *vv)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    if (!o) return tsync__err(TSYNC_EINVAL, "state is not JSON: %s (line %d)", je.text, je.line);
    json_t *vec = json_object_get(o, "vector");
    int rc = 0;
    if (!json_is_array(vec)) {
        rc = tsync__err(TSYNC_EINVAL, "state has no \"vector\" array (use the state JSON of the "
                                      "other till's database, tsync_store_state_json)");
    }
    size_t i;
    json_t *e;
    json_array_foreach(vec, i, e)
    {
        if (rc) break;
        const char *site = json_string_value(json_object_get(e, "site"));
        json_t *seq = json_object_get(e, "seq");
        uint8_t id[TSYNC__SITE_BYTES];
        if (!site || tsync__unhex(site, id, sizeof id) != 0 || !json_is_integer(seq) ||
            json_integer_value(seq) < 0) {
            rc = tsync__err(TSYNC_EINVAL, "state: vector entry %zu is malformed", i);
            break;
        }
        const char *hs = json_string_value(json_object_get(e, "hash"));
        uint8_t hash[TSYNC__HASH_BYTES];
        if (hs && tsync__unhex(hs, hash, sizeof hash) != 0) {
            rc = tsync__err(TSYNC_EINVAL, "state: vector entry %zu has a malformed hash", i);
            break;
        }
        if (tsync__vv_set(vv, id, (uint64_t)json_integer_value(seq), hs ? hash : NULL))
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    json_decref(o);
    return rc;
}

typedef struct {
    tsync__bstream_writer *w;
    size_t *nbatches;
} bundle_ctx;

/* A writer's failure: the sink's own message when the file failed (it names the file and why),
 * else what could not be written. */
static int werr(int rc, const char *what)
{
    return rc == TSYNC_EIO ? rc : tsync__err(rc, "%s", what);
}

static int add_piece(void *ctx, const tsync__run_piece *p)
{
    bundle_ctx *b = ctx;
    uint32_t si;
    int rc = tsync__bstream_writer_site(b->w, p->site, &si);
    if (rc == 0)
        rc = tsync__bstream_writer_run(b->w, si, p->first_seq, p->prev, p->n, p->body, p->len,
                                       p->sig);
    if (rc) return werr(rc, "cannot write bundle");
    if (b->nbatches) *b->nbatches += p->n;
    return 0;
}

/* Writes the bundle for since_json into wr (format 5, compressed). */
static int write_bundle(tsync_store *s, const char *since_json, size_t *nbatches,
                        tsync__bstream_write_fn wr, void *wctx)
{
    if (nbatches) *nbatches = 0;
    tsync__vv since = {0};
    int rc = since_json ? parse_since(since_json, &since) : 0;
    if (rc) return rc;
    if (!s->read_only && (rc = tsync_store_seal(s, NULL))) {
        tsync__vv_free(&since);
        return rc;
    }
    /* A read transaction gives one consistent snapshot of the log and the trust records. */
    if ((rc = tsync__exec(s, "BEGIN"))) {
        tsync__vv_free(&since);
        return rc;
    }
    tsync__bstream_writer *w = NULL;
    if ((rc = tsync__bstream_writer_open(&w, true, wr, wctx))) {
        rc = werr(rc, "cannot write bundle");
        goto out;
    }
    {
        /* The shop's certificates, revocations and rotations travel with every bundle, so they
         * replicate like data (the receiver verifies each). */
        uint8_t **blobs = NULL;
        size_t *lens = NULL, nb = 0;
        rc = tsync__trust_export(s, &blobs, &lens, &nb);
        for (size_t i = 0; rc == 0 && i < nb; i++)
            if ((rc = tsync__bstream_writer_trust(w, blobs[i], lens[i])))
                rc = werr(rc, "cannot add a trust record to the bundle");
        tsync__trust_export_free(blobs, lens, nb);
    }
    if (rc == 0) {
        /* The definitions of our replicated tables, so the receiver can tell when its own
         * differ (store/schema.c). One that cannot be described is left out, not fatal. */
        uint8_t *defs = NULL;
        size_t dlen = 0;
        if (tsync__schema_encode(s, &defs, &dlen) == 0 &&
            (rc = tsync__bstream_writer_schema(w, s->site, defs, dlen)))
            rc = werr(rc, "cannot add the table definitions to the bundle");
        free(defs);
    }
    if (rc == 0) {
        /* Runs are cut into pieces of about 1 MiB (each with its own signature), so every run of
         * a bundle can later be forwarded over the network as one message. */
        bundle_ctx bc = {w, nbatches};
        rc = tsync__sync_runs(s, since_json ? &since : NULL, SIZE_MAX, add_piece, &bc, NULL);
    }
    if (rc == TSYNC__SYNC_BEHIND) {
        /* No bundle can catch that state up (the batches are gone here); say what does. */
        char why[400];
        snprintf(why, sizeof why, "%s", tsync_error_last()->message);
        rc = tsync__err(TSYNC_ENOTFOUND,
                        "cannot write a bundle for that state: %s; no bundle can give it, so "
                        "sync that till live with an enrolled till of the shop (a running node "
                        "sends it the snapshot), or restore a newer backup on it",
                        why);
    }
    if (rc == 0 && (rc = tsync__bstream_writer_finish(w))) rc = werr(rc, "cannot write bundle");
out:
    tsync__bstream_writer_free(w);
    tsync__vv_free(&since);
    tsync__exec(s, "COMMIT");
    return rc;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} membuf;

static int mem_write(void *ctx, const void *p, size_t n)
{
    membuf *m = ctx;
    if (n > m->cap - m->len) {
        size_t cap = m->cap ? m->cap : (size_t)64 << 10;
        while (cap - m->len < n) {
            if (cap > SIZE_MAX / 2) return tsync__err(TSYNC_ENOMEM, "out of memory");
            cap *= 2;
        }
        uint8_t *np = realloc(m->p, cap);
        if (!np) return tsync__err(TSYNC_ENOMEM, "out of memory");
        m->p = np;
        m->cap = cap;
    }
    memcpy(m->p + m->len, p, n);
    m->len += n;
    return 0;
}

int tsync_store_bundle(uint8_t **out, size_t *len, tsync_store *s, const char *since_json,
                       size_t *nbatches)
{
    *out = NULL;
    *len = 0;
    membuf m = {0};
    int rc = write_bundle(s, since_json, nbatches, mem_write, &m);
    if (rc) {
        free(m.p);
        return rc;
    }
    *out = m.p;
    *len = m.len;
    return 0;
}

typedef struct {
    FILE *f;
    const char *path;
} filesink;

static int file_write(void *ctx, const void *p, size_t n)
{
    filesink *f = ctx;
    if (fwrite(p, 1, n, f->f) != n)
        return tsync__err(TSYNC_EIO, "cannot write bundle %s: %s", f->path, strerror(errno));
    return 0;
}

int tsync_store_bundle_file(tsync_store *s, const char *path, const char *since_json,
                            size_t *nbatches)
{
    if (nbatches) *nbatches = 0;
    if (!path || !*path) return tsync__err(TSYNC_EINVAL, "bundle: no file name");
    /* Written beside the final name, then renamed (same directory, same file system). Created
     * 0666 less the umask, as any file the CLI writes; the random part keeps two writers apart. */
    uint8_t rnd[8];
    char rhex[2 * sizeof rnd + 1];
    randombytes_buf(rnd, sizeof rnd);
    tsync__hex(rnd, sizeof rnd, rhex);
    char *tpath = sqlite3_mprintf("%s.part-%s", path, rhex);
    if (!tpath) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int fd = open(tpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int rc = tsync__err(TSYNC_EIO, "cannot write bundle %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tpath);
        }
        sqlite3_free(tpath);
        return rc;
    }
    filesink fs = {f, path};
    int rc = write_bundle(s, since_json, nbatches, file_write, &fs);
    /* A bundle is worth keeping only once it is on disk whole. */
    if (rc == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        rc = tsync__err(TSYNC_EIO, "cannot write bundle %s: %s", path, strerror(errno));
    if (fclose(f) != 0 && rc == 0)
        rc = tsync__err(TSYNC_EIO, "cannot write bundle %s: %s", path, strerror(errno));
    if (rc == 0 && rename(tpath, path) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot write bundle %s: %s", path, strerror(errno));
    if (rc) unlink(tpath);
    sqlite3_free(tpath);
    return rc;
}
