/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/bundle.c — bundles: a file (or a blob handed over by any other means) carrying runs of
 * signed batches, for syncing through a USB stick, a backup or a relay that cannot be reached
 * live. This file holds the writer and the strict decoder; the store checks the signatures and
 * hash chains, because that needs the chain state it keeps.
 *
 * Design notes
 * - A bundle carries, for each origin it mentions, the public key and incarnation that its site id
 *   is derived from, so a receiver can verify a run's signature without having met the origin.
 *   The decoder refuses a site whose id is not BLAKE2b-128(pk || incarnation).
 * - Compression is one zstd frame with its content checksum, so a flipped bit in a compressed
 *   bundle is caught before the msgpack decoder ever sees the payload. Decompression grows its
 *   buffer as output really arrives and stops at TSYNC__BUNDLE_MAX_BYTES; the size a frame
 *   declares is never trusted.
 * - This writer keeps everything in memory and writes formats 1 to 3: it makes fork proofs, small
 *   and read by peers of every version. Bundles of the log are written in format 4, record by
 *   record (codec/bundle_stream_writer.c); tsync__bundle_decode reads format 4 through the
 *   streaming reader (codec/bundle_stream.c).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>
#include <zstd.h>

#include "codec/codec.h"
#include "bundle_int.h"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* ---------------------------------------------------------------- decoder */

typedef struct {
    tsync__mpr r; /* not canonical: bundle payloads never were held to the smallest form */
    tsync__arena *a;
    char *err;
    int rc;
} dec;

static bool fail(dec *d, const char *fmt, ...) PRINTF_LIKE(2, 3);
static bool fail(dec *d, const char *fmt, ...)
{
    static const char pre[] = "bundle: ";
    memcpy(d->err, pre, sizeof pre);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err + sizeof pre - 1, TSYNC__ERRLEN - (sizeof pre - 1), fmt, ap);
    va_end(ap);
    d->rc = TSYNC_ECORRUPT;
    return false;
}

/* Called after a failed read: says whether the input ended or held something else. */
static bool bad(dec *d, const char *what)
{
    const tsync__mpr *r = &d->r;
    if (r->fault == TSYNC__MPR_END) return fail(d, "%s: truncated", what);
    if (r->fault == TSYNC__MPR_LENGTH)
        return fail(d, "%s: expected %" PRIu64 " bytes, got %" PRIu64, what, r->want, r->got);
    if (r->fault == TSYNC__MPR_ROOM)
        return fail(d, "%s: %" PRIu64 " entries cannot fit in the %" PRIu64 " bytes left", what,
                    r->got, r->want);
    return fail(d, "%s: wrong type or truncated at payload offset %zu (byte 0x%02x)", what,
                tsync__mpr_pos(r), r->p[0]);
}

/* Smallest encodings of the entries we allocate for, so a declared count cannot make the arena
 * much larger than the payload (see the same rule in batch.c). */
#define MIN_SITE 71  /* [bin16, bin32, bin16] */
#define MIN_RUN  107 /* [idx, seq, bin32, [bin1], bin64] */
#define MIN_BODY 3   /* bin8 of one byte */

static bool rd_list(dec *d, const char *what, uint32_t *n, size_t min)
{
    return tsync__mpr_list(&d->r, n, min) || bad(d, what);
}

static bool rd_tuple(dec *d, const char *what, uint32_t want)
{
    uint32_t n;
    if (!tsync__mpr_array(&d->r, &n)) return bad(d, what);
    if (n != want)
        return fail(d, "%s: expected an array of %" PRIu32 ", got %" PRIu32, what, want, n);
    return true;
}

static bool rd_fixed(dec *d, const char *what, uint8_t *out, uint32_t n)
{
    return tsync__mpr_binfix(&d->r, out, n) || bad(d, what);
}

static bool rd_uint(dec *d, const char *what, uint64_t *v)
{
    return tsync__mpr_uint(&d->r, v) || bad(d, what);
}

static bool rd_bin(dec *d, const char *what, const uint8_t **p, uint32_t *n)
{
    return tsync__mpr_bin(&d->r, p, n) || bad(d, what);
}

static void *alloc_array(dec *d, uint32_t n, size_t sz)
{
    void *p = tsync__arena_array(d->a, n, sz);
    if (n && !p) {
        snprintf(d->err, TSYNC__ERRLEN, "bundle: out of memory");
        d->rc = TSYNC_ENOMEM;
    }
    return p;
}

static bool dec_sites(dec *d, tsync__bundle *b)
{
    uint32_t n;
    char what[48];
    if (!rd_list(d, "sites", &n, MIN_SITE)) return false;
    b->sites = alloc_array(d, n, sizeof *b->sites);
    if (n && !b->sites) return false;
    for (uint32_t i = 0; i < n; i++) {
        tsync__bsite *s = &b->sites[i];
        uint8_t id[TSYNC__SITE_BYTES];
        snprintf(what, sizeof what, "site %" PRIu32, i);
        if (!rd_tuple(d, what, 3) || !rd_fixed(d, what, s->site, TSYNC__SITE_BYTES) ||
            !rd_fixed(d, what, s->pk, TSYNC__PK_BYTES) ||
            !rd_fixed(d, what, s->inc, TSYNC__INC_BYTES))
            return false;
        tsync__site_id(s->pk, s->inc, id);
        if (memcmp(id, s->site, TSYNC__SITE_BYTES) != 0)
            return fail(d, "site %" PRIu32 ": id does not match its public key and incarnation", i);
    }
    b->nsites = n;
    return true;
}

static bool dec_run(dec *d, const tsync__bundle *b, uint32_t i, tsync__brun *run)
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    char what[48];
    uint64_t site;
    uint32_t n;
    run->crun = NULL, run->crun_len = 0;
    snprintf(what, sizeof what, "run %" PRIu32, i);
    if (!rd_tuple(d, what, 5)) return false;
    if (!rd_uint(d, what, &site)) return false;
    if (site >= b->nsites)
        return fail(d, "run %" PRIu32 ": site index %" PRIu64 " out of range (%" PRIu32 " sites)",
                    i, site, b->nsites);
    run->site = (uint32_t)site;
    if (!rd_uint(d, what, &run->first_seq)) return false;
    if (run->first_seq == 0) return fail(d, "run %" PRIu32 ": first seq is 0", i);
    if (!rd_fixed(d, what, run->prev, TSYNC__HASH_BYTES)) return false;
    if (run->first_seq == 1 && memcmp(run->prev, zero, TSYNC__HASH_BYTES) != 0)
        return fail(d, "run %" PRIu32 ": starts at seq 1 with a previous hash", i);
    if (!rd_list(d, what, &n, MIN_BODY)) return false;
    if (n == 0) return fail(d, "run %" PRIu32 ": no batches", i);
    if (run->first_seq - 1 > UINT64_MAX - n)
        return fail(d, "run %" PRIu32 ": sequence numbers overflow", i);
    run->body = alloc_array(d, n, sizeof *run->body);
    run->body_len = alloc_array(d, n, sizeof *run->body_len);
    if (!run->body || !run->body_len) return false;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t len;
        if (!rd_bin(d, what, &run->body[k], &len)) return false;
        if (len == 0 || len > TSYNC__BATCH_MAX_BYTES)
            return fail(d, "run %" PRIu32 ": batch %" PRIu32 " has %" PRIu32 " bytes", i, k, len);
        run->body_len[k] = len;
    }
    run->nbodies = n;
    return rd_fixed(d, what, run->sig, TSYNC__SIG_BYTES);
}

/* Decompresses exactly one zstd frame with a checksum into *out (malloc'd). */
static int unzstd(const uint8_t *src, size_t len, uint8_t **out, size_t *outlen, char *err)
{
    /* The frame magic (RFC 8878) and the Content_Checksum_flag (bit 2 of the frame header
     * descriptor), read directly rather than through zstd's experimental header API. Without
     * the checksum a flipped bit in the payload could pass unnoticed. */
    static const uint8_t zmagic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if (len < 5 || memcmp(src, zmagic, 4) != 0 || !(src[4] & 0x04)) {
        snprintf(err, TSYNC__ERRLEN, "bundle: compressed payload is not a checksummed zstd frame");
        return TSYNC_ECORRUPT;
    }
    ZSTD_DCtx *z = ZSTD_createDCtx();
    if (!z) {
        snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
        return TSYNC_ENOMEM;
    }
    /* zstd sizes its internal buffers by the window a frame declares; our level-3 frames use at
     * most 2 MiB, so refusing windows above 16 MiB bounds what a few hostile bytes can make it
     * allocate. */
    ZSTD_DCtx_setParameter(z, ZSTD_d_windowLogMax, ZWINDOWLOG);
    /* Start from a guess based on the input, never on the frame's declared size. */
    size_t cap = len < ((size_t)16 << 10) ? ((size_t)64 << 10) : len * 4;
    if (cap > TSYNC__BUNDLE_MAX_BYTES) cap = TSYNC__BUNDLE_MAX_BYTES;
    uint8_t *buf = malloc(cap);
    int rc = TSYNC_ENOMEM;
    ZSTD_inBuffer in = {src, len, 0};
    ZSTD_outBuffer o = {buf, cap, 0};
    if (!buf) goto fail;
    for (;;) {
        size_t ret = ZSTD_decompressStream(z, &o, &in);
        if (ZSTD_isError(ret)) {
            snprintf(err, TSYNC__ERRLEN, "bundle: zstd: %s", ZSTD_getErrorName(ret));
            rc = TSYNC_ECORRUPT;
            goto fail;
        }
        if (ret == 0) break; /* frame complete, checksum verified, output flushed */
        if (o.pos == o.size) {
            if (o.size == TSYNC__BUNDLE_MAX_BYTES) {
                snprintf(err, TSYNC__ERRLEN, "bundle: payload larger than %u bytes",
                         TSYNC__BUNDLE_MAX_BYTES);
                rc = TSYNC_ECORRUPT;
                goto fail;
            }
            size_t ncap =
                o.size > TSYNC__BUNDLE_MAX_BYTES / 2 ? TSYNC__BUNDLE_MAX_BYTES : o.size * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) goto fail;
            buf = nb;
            o.dst = buf;
            o.size = ncap;
        } else if (in.pos == in.size) {
            /* Output not full and all input consumed: zstd is waiting for more frame. */
            snprintf(err, TSYNC__ERRLEN, "bundle: compressed payload is truncated");
            rc = TSYNC_ECORRUPT;
            goto fail;
        }
    }
    if (in.pos != in.size) {
        snprintf(err, TSYNC__ERRLEN, "bundle: %zu bytes after the zstd frame", in.size - in.pos);
        rc = TSYNC_ECORRUPT;
        goto fail;
    }
    ZSTD_freeDCtx(z);
    *out = buf;
    *outlen = o.pos;
    return 0;
fail:
    if (rc == TSYNC_ENOMEM) snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
    free(buf);
    ZSTD_freeDCtx(z);
    return rc;
}

int tsync__bundle_decode(const uint8_t *buf, size_t len, tsync__bundle *out, tsync__arena *a,
                         char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    if (!buf || len < HDR_LEN || memcmp(buf, MAGIC, MAGIC_LEN) != 0) {
        snprintf(err, TSYNC__ERRLEN, "bundle: not a tillsync bundle (bad magic)");
        return TSYNC_ECORRUPT;
    }
    uint8_t format = buf[MAGIC_LEN];
    if (format == TSYNC__BUNDLE_FORMAT_STREAM4 || format == TSYNC__BUNDLE_FORMAT_STREAM) {
        /* One decoder for formats 4 and 5: the streaming reader, collecting every item. */
        tsync__bstream *r;
        int rc = tsync__bstream_open_mem(&r, buf, len, err);
        if (rc == 0) rc = tsync__bstream_collect(r, out, a, err);
        tsync__bstream_free(r);
        return rc;
    }
    if (format != TSYNC__BUNDLE_FORMAT && format != TSYNC__BUNDLE_FORMAT_TRUST &&
        format != TSYNC__BUNDLE_FORMAT_SCHEMA) {
        snprintf(err, TSYNC__ERRLEN, "bundle: format %u is not supported (expected %u to %u)",
                 buf[MAGIC_LEN], TSYNC__BUNDLE_FORMAT, TSYNC__BUNDLE_FORMAT_STREAM);
        return TSYNC_EVERSION;
    }
    uint8_t flags = buf[MAGIC_LEN + 1];
    if (flags & ~FLAG_ZSTD) {
        snprintf(err, TSYNC__ERRLEN, "bundle: unknown flags 0x%02x", flags);
        return TSYNC_EVERSION;
    }
    const uint8_t *p = buf + HDR_LEN;
    size_t n = len - HDR_LEN;
    if (flags & FLAG_ZSTD) {
        int rc = unzstd(p, n, &out->payload, &n, err);
        if (rc) return rc;
        p = out->payload;
    } else if (n > TSYNC__BUNDLE_MAX_BYTES) {
        snprintf(err, TSYNC__ERRLEN, "bundle: payload larger than %u bytes",
                 TSYNC__BUNDLE_MAX_BYTES);
        return TSYNC_ECORRUPT;
    }
    if (n == 0) {
        free(out->payload);
        memset(out, 0, sizeof *out);
        snprintf(err, TSYNC__ERRLEN, "bundle: empty payload");
        return TSYNC_ECORRUPT;
    }

    dec d = {.a = a, .err = err, .rc = TSYNC_ECORRUPT};
    tsync__mpr_init(&d.r, p, n);
    uint32_t nruns;
    if (!rd_tuple(&d, "payload", format + 1) || !dec_sites(&d, out)) goto bad;
    if (!rd_list(&d, "runs", &nruns, MIN_RUN)) goto bad;
    out->runs = alloc_array(&d, nruns, sizeof *out->runs);
    if (nruns && !out->runs) goto bad;
    for (uint32_t i = 0; i < nruns; i++)
        if (!dec_run(&d, out, i, &out->runs[i])) goto bad;
    out->nruns = nruns;
    if (format >= TSYNC__BUNDLE_FORMAT_TRUST) {
        uint32_t nt;
        if (!rd_list(&d, "trust", &nt, MIN_BODY)) goto bad;
        if (nt > TSYNC__BUNDLE_TRUST_MAX) {
            fail(&d, "trust: %" PRIu32 " records, at most %u", nt, TSYNC__BUNDLE_TRUST_MAX);
            goto bad;
        }
        out->trust = alloc_array(&d, nt, sizeof *out->trust);
        out->trust_len = alloc_array(&d, nt, sizeof *out->trust_len);
        if (nt && (!out->trust || !out->trust_len)) goto bad;
        for (uint32_t i = 0; i < nt; i++) {
            const uint8_t *bp;
            uint32_t bn;
            if (!rd_bin(&d, "trust record", &bp, &bn)) goto bad;
            if (bn == 0 || bn > TSYNC__BUNDLE_TRUST_MAX_BYTES) {
                fail(&d, "trust record %" PRIu32 ": %" PRIu32 " bytes (1..%u allowed)", i, bn,
                     TSYNC__BUNDLE_TRUST_MAX_BYTES);
                goto bad;
            }
            out->trust[i] = bp;
            out->trust_len[i] = bn;
        }
        out->ntrust = nt;
    }
    if (format >= TSYNC__BUNDLE_FORMAT_SCHEMA) {
        const uint8_t *bp;
        uint32_t bn;
        if (!rd_tuple(&d, "schema", 2)) goto bad;
        if (!rd_fixed(&d, "schema: author site", out->schema_site, TSYNC__SITE_BYTES)) goto bad;
        if (!rd_bin(&d, "schema: table definitions", &bp, &bn)) goto bad;
        if (bn == 0 || bn > TSYNC__BUNDLE_SCHEMA_MAX) {
            fail(&d, "schema: table definitions of %" PRIu32 " bytes (1..%u allowed)", bn,
                 TSYNC__BUNDLE_SCHEMA_MAX);
            goto bad;
        }
        out->schema = bp;
        out->schema_len = bn;
    }
    if (!tsync__mpr_done(&d.r)) {
        fail(&d, "%zu trailing bytes", (size_t)(d.r.end - d.r.p));
        goto bad;
    }
    return 0;
bad:
    free(out->payload);
    memset(out, 0, sizeof *out);
    return d.rc;
}

void tsync__bundle_free(tsync__bundle *b)
{
    if (!b) return;
    free(b->payload);
    b->payload = NULL;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    uint32_t site;
    uint64_t first_seq;
    uint8_t prev[TSYNC__HASH_BYTES];
    uint8_t sig[TSYNC__SIG_BYTES];
    uint8_t **body;
    size_t *len;
    size_t n, cap;
} wrun;

struct tsync__bundle_writer {
    tsync__bsite *sites;
    size_t nsites, capsites;
    wrun *runs;
    size_t nruns, capruns;
    uint8_t **trust;
    size_t *trust_len;
    size_t ntrust, captrust, captrust_len;
    uint8_t schema_site[TSYNC__SITE_BYTES];
    uint8_t *schema;
    size_t schema_len;
    bool in_run;
};

/* Grows *arr (of elem-size sz, capacity *cap) to hold at least need entries. */
static int grow(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    if (ncap < need) ncap = need;
    if (ncap > SIZE_MAX / sz) return TSYNC_ENOMEM;
    void *p = realloc(*arr, ncap * sz);
    if (!p) return TSYNC_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

tsync__bundle_writer *tsync__bundle_writer_new(void)
{
    return calloc(1, sizeof(tsync__bundle_writer));
}

int tsync__bundle_writer_site(tsync__bundle_writer *w, const tsync__bsite *s, uint32_t *idx)
{
    uint8_t id[TSYNC__SITE_BYTES];
    tsync__site_id(s->pk, s->inc, id);
    if (memcmp(id, s->site, TSYNC__SITE_BYTES) != 0) return TSYNC_EINVAL;
    for (size_t i = 0; i < w->nsites; i++) {
        if (memcmp(w->sites[i].site, s->site, TSYNC__SITE_BYTES) == 0) {
            *idx = (uint32_t)i;
            return 0;
        }
    }
    if (w->nsites >= UINT32_MAX) return TSYNC_EINVAL;
    if (grow((void **)&w->sites, &w->capsites, w->nsites + 1, sizeof *w->sites))
        return TSYNC_ENOMEM;
    w->sites[w->nsites] = *s;
    *idx = (uint32_t)w->nsites++;
    return 0;
}

int tsync__bundle_writer_run(tsync__bundle_writer *w, uint32_t site_idx, uint64_t first_seq,
                             const uint8_t prev[TSYNC__HASH_BYTES])
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    if (w->in_run || site_idx >= w->nsites || first_seq == 0 || w->nruns >= UINT32_MAX)
        return TSYNC_EINVAL;
    if (!prev) prev = zero;
    if (first_seq == 1 && memcmp(prev, zero, TSYNC__HASH_BYTES) != 0) return TSYNC_EINVAL;
    if (grow((void **)&w->runs, &w->capruns, w->nruns + 1, sizeof *w->runs)) return TSYNC_ENOMEM;
    wrun *r = &w->runs[w->nruns++];
    memset(r, 0, sizeof *r);
    r->site = site_idx;
    r->first_seq = first_seq;
    memcpy(r->prev, prev, TSYNC__HASH_BYTES);
    w->in_run = true;
    return 0;
}

int tsync__bundle_writer_body(tsync__bundle_writer *w, const uint8_t *body, size_t len)
{
    if (!w->in_run || !body || len == 0 || len > TSYNC__BATCH_MAX_BYTES) return TSYNC_EINVAL;
    wrun *r = &w->runs[w->nruns - 1];
    if (r->n >= UINT32_MAX || r->first_seq - 1 > UINT64_MAX - (r->n + 1)) return TSYNC_EINVAL;
    /* body and len share one capacity: grow body from a copy of it, then len and the capacity.
     * If the second step fails, body is merely larger than needed. */
    size_t ncap = r->cap;
    if (grow((void **)&r->body, &ncap, r->n + 1, sizeof *r->body)) return TSYNC_ENOMEM;
    if (grow((void **)&r->len, &r->cap, r->n + 1, sizeof *r->len)) return TSYNC_ENOMEM;
    uint8_t *copy = malloc(len);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, body, len);
    r->body[r->n] = copy;
    r->len[r->n] = len;
    r->n++;
    return 0;
}

int tsync__bundle_writer_end_run(tsync__bundle_writer *w, const uint8_t sig[TSYNC__SIG_BYTES])
{
    if (!w->in_run || w->runs[w->nruns - 1].n == 0) return TSYNC_EINVAL;
    memcpy(w->runs[w->nruns - 1].sig, sig, TSYNC__SIG_BYTES);
    w->in_run = false;
    return 0;
}

#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

int tsync__bundle_writer_trust(tsync__bundle_writer *w, const uint8_t *rec, size_t len)
{
    if (!rec || len == 0 || len > TSYNC__BUNDLE_TRUST_MAX_BYTES ||
        w->ntrust >= TSYNC__BUNDLE_TRUST_MAX)
        return TSYNC_EINVAL;
    if (grow((void **)&w->trust, &w->captrust, w->ntrust + 1, sizeof *w->trust) ||
        grow((void **)&w->trust_len, &w->captrust_len, w->ntrust + 1, sizeof *w->trust_len))
        return TSYNC_ENOMEM;
    uint8_t *c = malloc(len);
    if (!c) return TSYNC_ENOMEM;
    memcpy(c, rec, len);
    w->trust[w->ntrust] = c;
    w->trust_len[w->ntrust++] = len;
    return 0;
}

int tsync__bundle_writer_schema(tsync__bundle_writer *w, const uint8_t site[TSYNC__SITE_BYTES],
                                const uint8_t *defs, size_t len)
{
    if (len == 0 || len > TSYNC__BUNDLE_SCHEMA_MAX) return TSYNC_EINVAL;
    uint8_t *c = malloc(len);
    if (!c) return TSYNC_ENOMEM;
    memcpy(c, defs, len);
    free(w->schema);
    w->schema = c;
    w->schema_len = len;
    memcpy(w->schema_site, site, TSYNC__SITE_BYTES);
    return 0;
}

static unsigned bundle_format(const tsync__bundle_writer *w)
{
    /* The oldest format that carries what the bundle holds, so older readers read what they can. */
    return w->schema   ? TSYNC__BUNDLE_FORMAT_SCHEMA
           : w->ntrust ? TSYNC__BUNDLE_FORMAT_TRUST
                       : TSYNC__BUNDLE_FORMAT;
}

static int pack_bundle(msgpack_packer *pk, const tsync__bundle_writer *w)
{
    unsigned format = bundle_format(w);
    PK(msgpack_pack_array(pk, format + 1));
    PK(msgpack_pack_array(pk, w->nsites));
    for (size_t i = 0; i < w->nsites; i++) {
        PK(msgpack_pack_array(pk, 3));
        PK(tsync__mp_pack_bin(pk, w->sites[i].site, TSYNC__SITE_BYTES));
        PK(tsync__mp_pack_bin(pk, w->sites[i].pk, TSYNC__PK_BYTES));
        PK(tsync__mp_pack_bin(pk, w->sites[i].inc, TSYNC__INC_BYTES));
    }
    PK(msgpack_pack_array(pk, w->nruns));
    for (size_t i = 0; i < w->nruns; i++) {
        const wrun *r = &w->runs[i];
        PK(msgpack_pack_array(pk, 5));
        PK(msgpack_pack_uint32(pk, r->site));
        PK(msgpack_pack_uint64(pk, r->first_seq));
        PK(tsync__mp_pack_bin(pk, r->prev, TSYNC__HASH_BYTES));
        PK(msgpack_pack_array(pk, r->n));
        for (size_t k = 0; k < r->n; k++) PK(tsync__mp_pack_bin(pk, r->body[k], r->len[k]));
        PK(tsync__mp_pack_bin(pk, r->sig, TSYNC__SIG_BYTES));
    }
    if (format >= TSYNC__BUNDLE_FORMAT_TRUST) {
        PK(msgpack_pack_array(pk, w->ntrust));
        for (size_t i = 0; i < w->ntrust; i++)
            PK(tsync__mp_pack_bin(pk, w->trust[i], w->trust_len[i]));
    }
    if (format >= TSYNC__BUNDLE_FORMAT_SCHEMA) {
        PK(msgpack_pack_array(pk, 2));
        PK(tsync__mp_pack_bin(pk, w->schema_site, TSYNC__SITE_BYTES));
        PK(tsync__mp_pack_bin(pk, w->schema, w->schema_len));
    }
    return 0;
nomem:
    return -1;
}

int tsync__bundle_writer_finish(tsync__bundle_writer *w, bool compress, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (w->in_run) return TSYNC_EINVAL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* The 10-byte file header is written first so the uncompressed image needs no copy. */
    if (msgpack_sbuffer_write(&sb, MAGIC, MAGIC_LEN) != 0) goto nomem;
    char hdr[2] = {(char)bundle_format(w), (char)(compress ? FLAG_ZSTD : 0)};
    if (msgpack_sbuffer_write(&sb, hdr, 2) != 0 || pack_bundle(&pk, w) != 0) goto nomem;
    size_t plen = sb.size - HDR_LEN;
    if (plen > TSYNC__BUNDLE_MAX_BYTES) {
        msgpack_sbuffer_destroy(&sb);
        return TSYNC_EINVAL;
    }
    if (!compress) {
        *len = sb.size;
        *out = (uint8_t *)msgpack_sbuffer_release(&sb);
        return 0;
    }

    size_t bound = ZSTD_compressBound(plen);
    uint8_t *img = malloc(HDR_LEN + bound);
    ZSTD_CCtx *z = ZSTD_createCCtx();
    if (!img || !z) {
        free(img);
        ZSTD_freeCCtx(z);
        goto nomem;
    }
    memcpy(img, sb.data, HDR_LEN);
    size_t zr = ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, ZLEVEL);
    if (!ZSTD_isError(zr)) zr = ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(zr))
        zr = ZSTD_compress2(z, img + HDR_LEN, bound, (const uint8_t *)sb.data + HDR_LEN, plen);
    ZSTD_freeCCtx(z);
    msgpack_sbuffer_destroy(&sb);
    if (ZSTD_isError(zr)) {
        /* With a buffer of compressBound bytes the only failure left is memory. */
        free(img);
        return TSYNC_ENOMEM;
    }
    *out = img;
    *len = HDR_LEN + zr;
    return 0;
nomem:
    msgpack_sbuffer_destroy(&sb);
    return TSYNC_ENOMEM;
}

void tsync__bundle_writer_free(tsync__bundle_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->nruns; i++) {
        for (size_t k = 0; k < w->runs[i].n; k++) free(w->runs[i].body[k]);
        free(w->runs[i].body);
        free(w->runs[i].len);
    }
    free(w->runs);
    free(w->sites);
    for (size_t i = 0; i < w->ntrust; i++) free(w->trust[i]);
    free(w->trust);
    free(w->trust_len);
    free(w->schema);
    free(w);
}
