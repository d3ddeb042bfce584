/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/bundle_stream.c — bundle formats 4 and 5: a bundle written and read one record at a
 * time, so neither side ever holds more than one run piece, whatever the bundle's size. Over 800
 * lines on purpose: the record reader, the checks of each record kind (format 5's compact run
 * included; its blob is codec/compact.c's) and the whole-bundle collector share one reader state.
 *
 * Design notes
 * - The file is "TSYNCBDL" | 4 | flags, then a stream of records (one zstd frame with its content
 *   checksum when flag bit 0 is set). Each record is one msgpack bin whose bytes are a msgpack
 *   array: the bin header says how long the record is before any of it is parsed, so a reader
 *   takes one record into a buffer and decodes it with the strict bounded reader every other
 *   decoder uses. The order is fixed (trust records, the schema, then sites and runs, then the
 *   end record), so a consumer can take trust records before the first batch arrives.
 * - The end record counts what came before it, so a stream cut anywhere, even between two
 *   records, is refused. Alteration is caught as in formats 1 to 3: by zstd's content checksum
 *   when compressed, by the signatures over the hash chains in any case (an uncompressed bundle
 *   can be edited by hand, and then its signature is what says so). zstd checks its checksum when
 *   its frame ends, which is only after the end record was read: a consumer must not commit
 *   anything before tsync__bstream_next says TSYNC__BS_END.
 * - A record's declared length is never trusted: its buffer grows as bytes really arrive.
 * - Formats 1 to 3 (one msgpack array) are read by the old decoder (codec/bundle.c), whole, and
 *   handed out item by item, so a consumer has one reader for every format.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zstd.h>

#include "codec/codec.h"
#include "codec/compact.h"
#include "bundle_int.h"

#define IN_CHUNK ((size_t)64 << 10)

/* Where a stream is: trust records may come only first, the schema once after them, and sites
 * and runs after both. */
enum { AT_TRUST, AT_SCHEMA, AT_DATA, AT_END };

/* Smallest encodings of what a count is checked against, as in codec/bundle.c. */
#define MIN_BODY 3 /* bin8 of one byte */

/* ---------------------------------------------------------------- reader */

struct tsync__bstream {
    tsync__bstream_read_fn rd; /* NULL: reading mem */
    void *rctx;
    const uint8_t *mem;
    size_t mem_len;
    /* Compressed (or raw) input not yet used: all of mem, read in place, or what rd handed into
     * iown. Reading a bundle in memory copies nothing it need not (a merge reads each received
     * bundle, a test reads every cut of one). */
    const uint8_t *ibuf;
    uint8_t *iown;
    size_t ipos, ilen;
    bool ieof;
    ZSTD_DCtx *z;
    bool zdone; /* the zstd frame ended and its checksum matched */
    uint8_t *obuf;
    size_t opos, olen, ocap;
    uint64_t off; /* bytes of the record stream read so far, for messages */

    unsigned format;
    bool compressed;
    int at;
    const uint8_t *recp; /* the current record: in rec, or in place in mem */
    uint8_t *rec;
    size_t rcap;
    uint64_t nrec;
    tsync__bsite *sites;
    uint32_t nsites, capsites;
    uint64_t nruns, nbatches;
    uint32_t ntrust;
    const uint8_t **body;
    size_t *body_len;
    uint32_t capbody;
    tsync__crun_dec *crun; /* format 5: rebuilds a compact run's bodies */
    int rc;                /* the first failure, kept: a failed reader stays failed */
    char err[TSYNC__ERRLEN];

    /* formats 1 to 3 */
    uint8_t *img; /* the whole file when it came through rd */
    size_t img_len;
    bool old_ready; /* old decoded (on the first item, so collect can decode into its arena) */
    tsync__bundle old;
    tsync__arena olda;
    uint32_t oi; /* next item of old */
};

static int rfail(tsync__bstream *r, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rfail(tsync__bstream *r, int rc, const char *fmt, ...)
{
    static const char pre[] = "bundle: ";
    memcpy(r->err, pre, sizeof pre);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + sizeof pre - 1, TSYNC__ERRLEN - (sizeof pre - 1), fmt, ap);
    va_end(ap);
    r->rc = rc;
    return rc;
}

/* Input bytes from rd into dst (mem is all in ibuf from the start). 0 at the end; -1 after a
 * failure. */
static ptrdiff_t in_raw(tsync__bstream *r, uint8_t *dst, size_t n)
{
    size_t k = r->rd(r->rctx, dst, n);
    if (k == (size_t)-1) {
        rfail(r, TSYNC_EIO, "cannot read the bundle");
        return -1;
    }
    return (ptrdiff_t)(k > n ? n : k);
}

/* Makes input available in ibuf; false at its end (or after a failure: r->rc). */
static bool in_fill(tsync__bstream *r)
{
    if (r->ipos < r->ilen) return true;
    if (r->ieof || r->rc) return false;
    ptrdiff_t k = in_raw(r, r->iown, IN_CHUNK);
    if (k <= 0) {
        r->ieof = true;
        return false;
    }
    r->ipos = 0;
    r->ilen = (size_t)k;
    return true;
}

/* Makes at least n (<= IN_CHUNK) input bytes available in ibuf, however few the source hands
 * out a call; false if the input ends first. */
static bool in_peek(tsync__bstream *r, size_t n)
{
    if (r->ilen - r->ipos >= n) return true;
    if (!r->rd) return false; /* all of mem is in ibuf */
    memmove(r->iown, r->ibuf + r->ipos, r->ilen - r->ipos);
    r->ilen -= r->ipos;
    r->ipos = 0;
    while (r->ilen < n && !r->ieof && !r->rc) {
        ptrdiff_t k = in_raw(r, r->iown + r->ilen, IN_CHUNK - r->ilen);
        if (k <= 0)
            r->ieof = true;
        else
            r->ilen += (size_t)k;
    }
    return r->ilen >= n;
}

/* Exactly n input bytes (the file header); false if the input ends first. */
static bool in_exact(tsync__bstream *r, uint8_t *dst, size_t n)
{
    while (n) {
        if (!in_fill(r)) return false;
        size_t k = r->ilen - r->ipos < n ? r->ilen - r->ipos : n;
        memcpy(dst, r->ibuf + r->ipos, k);
        r->ipos += k;
        dst += k;
        n -= k;
    }
    return true;
}

/* Up to n bytes of the record stream into dst: fewer only at its end. -1 after a failure. */
static ptrdiff_t src_read(tsync__bstream *r, uint8_t *dst, size_t n)
{
    size_t got = 0;
    while (got < n && !r->rc) {
        if (!r->compressed) {
            if (!in_fill(r)) break;
            size_t k = r->ilen - r->ipos < n - got ? r->ilen - r->ipos : n - got;
            memcpy(dst + got, r->ibuf + r->ipos, k);
            r->ipos += k;
            got += k;
            continue;
        }
        if (r->opos < r->olen) {
            size_t k = r->olen - r->opos < n - got ? r->olen - r->opos : n - got;
            memcpy(dst + got, r->obuf + r->opos, k);
            r->opos += k;
            got += k;
            continue;
        }
        if (r->zdone) break;
        bool more = in_fill(r);
        if (r->rc) break;
        ZSTD_inBuffer in = {r->ibuf, more ? r->ilen : 0, more ? r->ipos : 0};
        ZSTD_outBuffer o = {r->obuf, r->ocap, 0};
        size_t ret = ZSTD_decompressStream(r->z, &o, &in);
        if (ZSTD_isError(ret)) {
            rfail(r, TSYNC_ECORRUPT, "zstd: %s", ZSTD_getErrorName(ret));
            break;
        }
        if (more) r->ipos = in.pos;
        r->opos = 0;
        r->olen = o.pos;
        if (ret == 0)
            r->zdone = true; /* frame complete, checksum verified */
        else if (!more && o.pos == 0) {
            rfail(r, TSYNC_ECORRUPT, "compressed stream is truncated");
            break;
        }
    }
    if (r->rc) return -1;
    r->off += got;
    return (ptrdiff_t)got;
}

static bool hdr_ok(tsync__bstream *r, const uint8_t hdr[HDR_LEN])
{
    if (memcmp(hdr, MAGIC, MAGIC_LEN) != 0) {
        rfail(r, TSYNC_ECORRUPT, "not a tillsync bundle (bad magic)");
        return false;
    }
    if (hdr[MAGIC_LEN] < TSYNC__BUNDLE_FORMAT || hdr[MAGIC_LEN] > TSYNC__BUNDLE_FORMAT_STREAM) {
        rfail(r, TSYNC_EVERSION, "format %u is not supported (expected %u to %u)", hdr[MAGIC_LEN],
              TSYNC__BUNDLE_FORMAT, TSYNC__BUNDLE_FORMAT_STREAM);
        return false;
    }
    if (hdr[MAGIC_LEN + 1] & ~FLAG_ZSTD) {
        rfail(r, TSYNC_EVERSION, "unknown flags 0x%02x", hdr[MAGIC_LEN + 1]);
        return false;
    }
    r->format = hdr[MAGIC_LEN];
    r->compressed = hdr[MAGIC_LEN + 1] & FLAG_ZSTD;
    return true;
}

/* Formats 1 to 3: the whole image, decoded by codec/bundle.c. */
static int open_old(tsync__bstream *r, const uint8_t hdr[HDR_LEN])
{
    const uint8_t *img = r->mem;
    size_t len = r->mem_len;
    if (r->rd) {
        /* The old formats are one msgpack array: there is no way to read them but whole. */
        size_t cap = IN_CHUNK * 4;
        len = HDR_LEN + (r->ilen - r->ipos);
        r->img = malloc(cap);
        if (!r->img) return rfail(r, TSYNC_ENOMEM, "out of memory");
        memcpy(r->img, hdr, HDR_LEN);
        memcpy(r->img + HDR_LEN, r->ibuf + r->ipos, r->ilen - r->ipos);
        r->ipos = r->ilen;
        for (;;) {
            if (cap - len < IN_CHUNK) {
                if (cap > (size_t)TSYNC__BUNDLE_MAX_BYTES * 2)
                    return rfail(r, TSYNC_ECORRUPT, "file larger than %u bytes",
                                 TSYNC__BUNDLE_MAX_BYTES * 2u);
                uint8_t *nb = realloc(r->img, cap * 2);
                if (!nb) return rfail(r, TSYNC_ENOMEM, "out of memory");
                r->img = nb;
                cap *= 2;
            }
            ptrdiff_t k = in_raw(r, r->img + len, cap - len);
            if (k < 0) return r->rc;
            if (k == 0) break;
            len += (size_t)k;
        }
        img = r->img;
    }
    r->mem = img;
    r->mem_len = len;
    r->img_len = len;
    return 0;
}

static int open_common(tsync__bstream **out, tsync__bstream *r, char err[TSYNC__ERRLEN])
{
    uint8_t hdr[HDR_LEN];
    int rc;
    *out = NULL;
    if (r->rd) {
        r->ibuf = r->iown = malloc(IN_CHUNK);
        if (!r->iown) {
            rfail(r, TSYNC_ENOMEM, "out of memory");
            goto fail;
        }
    } else {
        r->ibuf = r->mem;
        r->ilen = r->mem_len;
        r->ieof = true;
    }
    if (!in_exact(r, hdr, HDR_LEN)) {
        if (!r->rc) rfail(r, TSYNC_ECORRUPT, "not a tillsync bundle (bad magic)");
        goto fail;
    }
    if (!hdr_ok(r, hdr)) goto fail;
    if (r->format < TSYNC__BUNDLE_FORMAT_STREAM4) {
        if (open_old(r, hdr)) goto fail;
        *out = r;
        return 0;
    }
    if (r->compressed) {
        /* The frame magic (RFC 8878) and its Content_Checksum_flag, as codec/bundle.c checks. */
        static const uint8_t zmagic[4] = {0x28, 0xb5, 0x2f, 0xfd};
        if (!in_peek(r, 5) || memcmp(r->ibuf + r->ipos, zmagic, 4) != 0 ||
            !(r->ibuf[r->ipos + 4] & 0x04)) {
            if (!r->rc)
                rfail(r, TSYNC_ECORRUPT, "compressed stream is not a checksummed zstd frame");
            goto fail;
        }
        r->z = ZSTD_createDCtx();
        r->ocap = ZSTD_DStreamOutSize();
        r->obuf = malloc(r->ocap);
        if (!r->z || !r->obuf) {
            rfail(r, TSYNC_ENOMEM, "out of memory");
            goto fail;
        }
        ZSTD_DCtx_setParameter(r->z, ZSTD_d_windowLogMax, ZWINDOWLOG);
    }
    r->at = AT_TRUST;
    *out = r;
    return 0;
fail:
    rc = r->rc;
    memcpy(err, r->err, TSYNC__ERRLEN);
    tsync__bstream_free(r);
    return rc;
}

int tsync__bstream_open_mem(tsync__bstream **out, const uint8_t *buf, size_t len,
                            char err[TSYNC__ERRLEN])
{
    tsync__bstream *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) {
        snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
        return TSYNC_ENOMEM;
    }
    r->mem = buf ? buf : (const uint8_t *)"";
    r->mem_len = buf ? len : 0;
    return open_common(out, r, err);
}

int tsync__bstream_open(tsync__bstream **out, tsync__bstream_read_fn rd, void *ctx,
                        char err[TSYNC__ERRLEN])
{
    tsync__bstream *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) {
        snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
        return TSYNC_ENOMEM;
    }
    r->rd = rd;
    r->rctx = ctx;
    return open_common(out, r, err);
}

unsigned tsync__bstream_format(const tsync__bstream *r)
{
    return r->format;
}

const tsync__bsite *tsync__bstream_sites(const tsync__bstream *r, uint32_t *n)
{
    if (r->format < TSYNC__BUNDLE_FORMAT_STREAM4) {
        *n = r->old.nsites;
        return r->old.sites;
    }
    *n = r->nsites;
    return r->sites;
}

void tsync__bstream_free(tsync__bstream *r)
{
    if (!r) return;
    free(r->iown);
    free(r->obuf);
    ZSTD_freeDCtx(r->z);
    free(r->rec);
    free(r->sites);
    free(r->body);
    free(r->body_len);
    tsync__crun_dec_free(r->crun);
    tsync__bundle_free(&r->old);
    tsync__arena_free(&r->olda);
    free(r->img);
    free(r);
}

/* The next item of a format 1 to 3 bundle: trust records, schema, sites, runs. */
static int next_old(tsync__bstream *r, tsync__bs_item *it)
{
    const tsync__bundle *b = &r->old;
    if (!r->old_ready) {
        int rc = tsync__bundle_decode(r->mem, r->mem_len, &r->old, &r->olda, r->err);
        if (rc) return r->rc = rc;
        r->old_ready = true;
    }
    uint32_t i = r->oi++;
    if (i < b->ntrust) {
        it->kind = TSYNC__BS_TRUST;
        it->data = b->trust[i];
        it->len = b->trust_len[i];
        return 0;
    }
    i -= b->ntrust;
    if (b->schema && i-- == 0) {
        it->kind = TSYNC__BS_SCHEMA;
        memcpy(it->schema_site, b->schema_site, TSYNC__SITE_BYTES);
        it->data = b->schema;
        it->len = b->schema_len;
        return 0;
    }
    if (i < b->nsites) {
        it->kind = TSYNC__BS_SITE;
        it->site_idx = i;
        it->site = &b->sites[i];
        return 0;
    }
    i -= b->nsites;
    if (i < b->nruns) {
        it->kind = TSYNC__BS_RUN;
        it->run = b->runs[i];
        it->site_idx = it->run.site;
        it->site = &b->sites[it->run.site];
        return 0;
    }
    r->oi--; /* stays at the end */
    it->kind = TSYNC__BS_END;
    return 0;
}

/* Reads the next record into r->recp (in place where it lies whole, in mem or in obuf; else
 * copied into rec); *len its length. false: the stream ended cleanly before a record (only after
 * the end record is that not an error: the caller decides). */
static bool read_record(tsync__bstream *r, size_t *len, bool *ended)
{
    uint8_t tag, lb[4];
    *ended = false;
    ptrdiff_t k = src_read(r, &tag, 1);
    if (k < 0) return false;
    if (k == 0) {
        *ended = true;
        return false;
    }
    size_t nl = tag == 0xc4 ? 1 : tag == 0xc5 ? 2 : tag == 0xc6 ? 4 : 0;
    if (nl == 0) {
        rfail(r, TSYNC_ECORRUPT, "record at stream offset %" PRIu64 ": expected a bin, got %s",
              r->off - 1, tsync__mp_kind(tag));
        return false;
    }
    k = src_read(r, lb, nl);
    if (k < 0) return false;
    if ((size_t)k < nl) {
        rfail(r, TSYNC_ECORRUPT, "truncated: the stream ends inside a record header");
        return false;
    }
    size_t n = 0;
    for (size_t i = 0; i < nl; i++) n = n << 8 | lb[i];
    if (n == 0 || n > TSYNC__BUNDLE_RECORD_MAX) {
        rfail(r, TSYNC_ECORRUPT, "record at stream offset %" PRIu64 ": %zu bytes (1..%u allowed)",
              r->off - 1 - nl, n, TSYNC__BUNDLE_RECORD_MAX);
        return false;
    }
    if (!r->rd && !r->compressed) {
        /* In memory and not compressed: the record is read where it is. */
        if (r->ilen - r->ipos < n) {
            rfail(r, TSYNC_ECORRUPT, "truncated: the stream ends inside a record");
            return false;
        }
        r->recp = r->ibuf + r->ipos;
        r->ipos += n;
        r->off += n;
        *len = n;
        return true;
    }
    if (r->compressed && r->olen - r->opos >= n) {
        /* Decompressed whole already: read where it is (obuf holds it until the next record). */
        r->recp = r->obuf + r->opos;
        r->opos += n;
        r->off += n;
        *len = n;
        return true;
    }
    size_t got = 0;
    while (got < n) {
        /* Grow as bytes arrive, never to the declared size up front. */
        if (got == r->rcap) {
            size_t ncap = r->rcap ? r->rcap * 2 : (size_t)64 << 10;
            if (ncap > n) ncap = n;
            uint8_t *nb = realloc(r->rec, ncap);
            if (!nb) {
                rfail(r, TSYNC_ENOMEM, "out of memory");
                return false;
            }
            r->rec = nb;
            r->rcap = ncap;
        }
        size_t want = (r->rcap < n ? r->rcap : n) - got;
        k = src_read(r, r->rec + got, want);
        if (k < 0) return false;
        if ((size_t)k < want) {
            rfail(r, TSYNC_ECORRUPT, "truncated: the stream ends inside a record");
            return false;
        }
        got += want;
    }
    r->recp = r->rec;
    *len = n;
    return true;
}

/* Words the record reader's fault while reading `what` in the current record. */
static int rbad(tsync__bstream *r, const tsync__mpr *m, const char *what)
{
    const char *found = tsync__mpr_found(m);
    if (m->fault == TSYNC__MPR_LENGTH)
        return rfail(r, TSYNC_ECORRUPT,
                     "record %" PRIu64 ": %s: expected %" PRIu64 " bytes, got %" PRIu64, r->nrec,
                     what, m->want, m->got);
    if (m->fault == TSYNC__MPR_ROOM)
        return rfail(r, TSYNC_ECORRUPT,
                     "record %" PRIu64 ": %s: %" PRIu64 " entries cannot fit in the %" PRIu64
                     " bytes left",
                     r->nrec, what, m->got, m->want);
    return rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": %s: expected %s, got %s", r->nrec, what,
                 m->expected ? m->expected : "more", found ? found : "the end of the record");
}

static int rec_fixed(tsync__bstream *r, tsync__mpr *m, const char *what, uint8_t *out, uint32_t n)
{
    return tsync__mpr_binfix(m, out, n) ? 0 : rbad(r, m, what);
}

static int rec_trust(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    const uint8_t *p;
    uint32_t n;
    if (r->at != AT_TRUST)
        return rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": a trust record after the data",
                     r->nrec);
    if (!tsync__mpr_bin(m, &p, &n)) return rbad(r, m, "trust record");
    if (n == 0 || n > TSYNC__BUNDLE_TRUST_MAX_BYTES)
        return rfail(r, TSYNC_ECORRUPT,
                     "trust record %" PRIu32 ": %" PRIu32 " bytes (1..%u allowed)", r->ntrust, n,
                     TSYNC__BUNDLE_TRUST_MAX_BYTES);
    if (r->ntrust >= TSYNC__BUNDLE_TRUST_MAX)
        return rfail(r, TSYNC_ECORRUPT, "trust: more than %u records", TSYNC__BUNDLE_TRUST_MAX);
    r->ntrust++;
    it->kind = TSYNC__BS_TRUST;
    it->data = p;
    it->len = n;
    return 0;
}

static int rec_schema(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    const uint8_t *p;
    uint32_t n;
    if (r->at > AT_SCHEMA)
        return rfail(r, TSYNC_ECORRUPT,
                     "record %" PRIu64 ": a second schema, or one after the data", r->nrec);
    r->at = AT_DATA;
    if (rec_fixed(r, m, "schema: author site", it->schema_site, TSYNC__SITE_BYTES)) return r->rc;
    if (!tsync__mpr_bin(m, &p, &n)) return rbad(r, m, "schema: table definitions");
    if (n == 0 || n > TSYNC__BUNDLE_SCHEMA_MAX)
        return rfail(r, TSYNC_ECORRUPT,
                     "schema: table definitions of %" PRIu32 " bytes (1..%u allowed)", n,
                     TSYNC__BUNDLE_SCHEMA_MAX);
    it->kind = TSYNC__BS_SCHEMA;
    it->data = p;
    it->len = n;
    return 0;
}

static int rec_site(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    tsync__bsite s;
    uint8_t id[TSYNC__SITE_BYTES];
    r->at = AT_DATA;
    if (rec_fixed(r, m, "site", s.site, TSYNC__SITE_BYTES) ||
        rec_fixed(r, m, "site: public key", s.pk, TSYNC__PK_BYTES) ||
        rec_fixed(r, m, "site: incarnation", s.inc, TSYNC__INC_BYTES))
        return r->rc;
    tsync__site_id(s.pk, s.inc, id);
    if (memcmp(id, s.site, TSYNC__SITE_BYTES) != 0)
        return rfail(r, TSYNC_ECORRUPT,
                     "site %" PRIu32 ": id does not match its public key and incarnation",
                     r->nsites);
    for (uint32_t i = 0; i < r->nsites; i++)
        if (memcmp(r->sites[i].site, s.site, TSYNC__SITE_BYTES) == 0)
            return rfail(r, TSYNC_ECORRUPT, "site %" PRIu32 ": the same as site %" PRIu32,
                         r->nsites, i);
    if (r->nsites == r->capsites) {
        /* One entry per origin the bundle carries: a shop's tills, not its rows. */
        uint32_t ncap = r->capsites ? r->capsites * 2 : 8;
        tsync__bsite *ns = ncap > r->capsites ? realloc(r->sites, ncap * sizeof *ns) : NULL;
        if (!ns) return rfail(r, TSYNC_ENOMEM, "out of memory");
        r->sites = ns;
        r->capsites = ncap;
    }
    r->sites[r->nsites] = s;
    it->kind = TSYNC__BS_SITE;
    it->site_idx = r->nsites;
    it->site = &r->sites[r->nsites++];
    return 0;
}

/* What both kinds of run record begin with: the site index, the first seq and the previous hash. */
static int rec_run_head(tsync__bstream *r, tsync__mpr *m, tsync__brun *run)
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    uint64_t site;
    r->at = AT_DATA;
    if (!tsync__mpr_uint(m, &site)) return rbad(r, m, "run: site index");
    if (site >= r->nsites)
        return rfail(r, TSYNC_ECORRUPT,
                     "run %" PRIu64 ": site index %" PRIu64 " out of range (%" PRIu32 " sites)",
                     r->nruns, site, r->nsites);
    run->site = (uint32_t)site;
    if (!tsync__mpr_uint(m, &run->first_seq)) return rbad(r, m, "run: first seq");
    if (run->first_seq == 0)
        return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": first seq is 0", r->nruns);
    if (rec_fixed(r, m, "run: previous hash", run->prev, TSYNC__HASH_BYTES)) return r->rc;
    if (run->first_seq == 1 && memcmp(run->prev, zero, TSYNC__HASH_BYTES) != 0)
        return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": starts at seq 1 with a previous hash",
                     r->nruns);
    return 0;
}

/* A run read whole: counted, and handed out as an item. */
static int rec_run_done(tsync__bstream *r, tsync__bs_item *it)
{
    r->nruns++;
    r->nbatches += it->run.nbodies;
    it->kind = TSYNC__BS_RUN;
    it->site_idx = it->run.site;
    it->site = &r->sites[it->run.site];
    return 0;
}

static int rec_run(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    tsync__brun *run = &it->run;
    uint32_t n;
    if (rec_run_head(r, m, run)) return r->rc;
    if (!tsync__mpr_list(m, &n, MIN_BODY)) return rbad(r, m, "run: bodies");
    if (n == 0) return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": no batches", r->nruns);
    if (run->first_seq - 1 > UINT64_MAX - n)
        return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": sequence numbers overflow", r->nruns);
    if (n > r->capbody) {
        /* Bounded by the record's size (a body takes at least MIN_BODY bytes). */
        const uint8_t **nb = realloc(r->body, n * sizeof *nb);
        if (nb) r->body = nb;
        size_t *nl = nb ? realloc(r->body_len, n * sizeof *nl) : NULL;
        if (!nl) return rfail(r, TSYNC_ENOMEM, "out of memory");
        r->body_len = nl;
        r->capbody = n;
    }
    for (uint32_t k = 0; k < n; k++) {
        uint32_t len;
        if (!tsync__mpr_bin(m, &r->body[k], &len)) return rbad(r, m, "run: body");
        if (len == 0 || len > TSYNC__BATCH_MAX_BYTES)
            return rfail(r, TSYNC_ECORRUPT,
                         "run %" PRIu64 ": batch %" PRIu32 " has %" PRIu32 " bytes", r->nruns, k,
                         len);
        r->body_len[k] = len;
    }
    run->body = r->body;
    run->body_len = r->body_len;
    run->nbodies = n;
    if (rec_fixed(r, m, "run: signature", run->sig, TSYNC__SIG_BYTES)) return r->rc;
    return rec_run_done(r, it);
}

/* Format 5's compact run: as a run, its bodies rebuilt (codec/compact.c), so a consumer sees
 * exactly what format 4 would have given it. */
static int rec_crun(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    tsync__brun *run = &it->run;
    uint64_t n;
    const uint8_t *blob;
    uint32_t blen;
    if (rec_run_head(r, m, run)) return r->rc;
    if (!tsync__mpr_uint(m, &n)) return rbad(r, m, "run: batch count");
    if (!tsync__mpr_bin(m, &blob, &blen)) return rbad(r, m, "run: compact bodies");
    /* Each batch takes at least one byte of the blob. */
    if (n == 0 || n > blen)
        return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": %" PRIu64 " batches in %" PRIu32 " bytes",
                     r->nruns, n, blen);
    if (run->first_seq - 1 > UINT64_MAX - n)
        return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": sequence numbers overflow", r->nruns);
    if (rec_fixed(r, m, "run: signature", run->sig, TSYNC__SIG_BYTES)) return r->rc;
    if (!r->crun && !(r->crun = tsync__crun_dec_new()))
        return rfail(r, TSYNC_ENOMEM, "out of memory");
    const uint8_t *const *body;
    const size_t *len;
    char cerr[TSYNC__ERRLEN];
    int rc = tsync__crun_decode(r->crun, r->sites[run->site].site, run->first_seq, (uint32_t)n,
                                blob, blen, &body, &len, cerr);
    if (rc == TSYNC_ENOMEM) return rfail(r, rc, "out of memory");
    if (rc) return rfail(r, TSYNC_ECORRUPT, "run %" PRIu64 ": %s", r->nruns, cerr);
    run->body = (const uint8_t **)body;
    run->body_len = (size_t *)len;
    run->nbodies = (uint32_t)n;
    run->crun = blob;
    run->crun_len = blen;
    return rec_run_done(r, it);
}

/* The end record: what came before it, then nothing more. */
static int rec_end(tsync__bstream *r, tsync__mpr *m, tsync__bs_item *it)
{
    uint64_t nsites, nruns, nbatches, ntrust;
    if (!tsync__mpr_uint(m, &nsites) || !tsync__mpr_uint(m, &nruns) ||
        !tsync__mpr_uint(m, &nbatches) || !tsync__mpr_uint(m, &ntrust))
        return rbad(r, m, "end: counts");
    if (nsites != r->nsites || nruns != r->nruns || nbatches != r->nbatches || ntrust != r->ntrust)
        return rfail(r, TSYNC_ECORRUPT,
                     "end record says %" PRIu64 " runs of %" PRIu64 " batches, %" PRIu64
                     " sites, %" PRIu64 " trust records; the stream held %" PRIu64 ", %" PRIu64
                     ", %" PRIu32 ", %" PRIu32 " (records lost or added)",
                     nruns, nbatches, nsites, ntrust, r->nruns, r->nbatches, r->nsites, r->ntrust);
    uint8_t extra;
    ptrdiff_t k = src_read(r, &extra, 1);
    if (k < 0) return r->rc;
    if (k > 0) return rfail(r, TSYNC_ECORRUPT, "bytes after the end record");
    if (r->compressed && (r->ipos < r->ilen || in_fill(r)))
        return rfail(r, TSYNC_ECORRUPT, "bytes after the zstd frame");
    if (r->rc) return r->rc;
    r->at = AT_END;
    it->kind = TSYNC__BS_END;
    return 0;
}

int tsync__bstream_next(tsync__bstream *r, tsync__bs_item *it, char err[TSYNC__ERRLEN])
{
    memset(it, 0, sizeof *it);
    int rc = 0;
    if (r->rc) goto out;
    if (r->format < TSYNC__BUNDLE_FORMAT_STREAM4) {
        next_old(r, it);
        goto out;
    }
    if (r->at == AT_END) {
        it->kind = TSYNC__BS_END;
        return 0;
    }
    size_t n;
    bool ended;
    r->nrec++;
    if (!read_record(r, &n, &ended)) {
        if (ended)
            rfail(r, TSYNC_ECORRUPT,
                  "truncated: the stream ends after %" PRIu64 " runs, without its end record",
                  r->nruns);
        goto out;
    }
    tsync__mpr m;
    uint32_t cnt;
    uint64_t kind;
    tsync__mpr_init(&m, r->recp, n);
    if (!tsync__mpr_array(&m, &cnt) || cnt == 0 || !tsync__mpr_uint(&m, &kind)) {
        rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": not an array starting with its kind",
              r->nrec);
        goto out;
    }
    static const uint32_t items[] = {5, 2, 3, 4, 6, 7};
    if (kind > (r->format == TSYNC__BUNDLE_FORMAT_STREAM4 ? REC_RUN : REC_CRUN)) {
        rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": unknown kind %" PRIu64, r->nrec, kind);
        goto out;
    }
    if (cnt != items[kind]) {
        rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": %" PRIu32 " items, expected %" PRIu32,
              r->nrec, cnt, items[kind]);
        goto out;
    }
    switch (kind) {
    case REC_TRUST:
        rc = rec_trust(r, &m, it);
        break;
    case REC_SCHEMA:
        rc = rec_schema(r, &m, it);
        break;
    case REC_SITE:
        rc = rec_site(r, &m, it);
        break;
    case REC_RUN:
        rc = rec_run(r, &m, it);
        break;
    case REC_CRUN:
        rc = rec_crun(r, &m, it);
        break;
    default:
        rc = rec_end(r, &m, it);
        break;
    }
    if (rc == 0 && !tsync__mpr_done(&m))
        rfail(r, TSYNC_ECORRUPT, "record %" PRIu64 ": %zu trailing bytes", r->nrec,
              (size_t)(m.end - m.p));
out:
    if (r->rc) {
        memset(it, 0, sizeof *it);
        memcpy(err, r->err, TSYNC__ERRLEN);
        return r->rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- whole bundles */

/* Grows a malloc'd array of sz-byte entries to hold need. */
static bool grow(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap < need) ncap = need;
    if (ncap > SIZE_MAX / sz) return false;
    void *p = realloc(*arr, ncap * sz);
    if (!p) return false;
    *arr = p;
    *cap = ncap;
    return true;
}

/* Copies a run's bodies into the arena, one block per run. The bodies of a compact run (format 5)
 * were rebuilt into the decoder's buffer: that buffer moves into the arena instead of being
 * copied (the live shape rebuilds 13 MB of bodies from 0.8 MB; copying them cost a page fault
 * every 4 KB). */
static bool keep_run(tsync__brun *dst, const tsync__brun *src, tsync__arena *a,
                     tsync__crun_dec *crun)
{
    *dst = *src;
    const uint8_t **body = tsync__arena_array(a, src->nbodies, sizeof *body);
    size_t *len = tsync__arena_array(a, src->nbodies, sizeof *len);
    if (!body || !len) return false;
    uint8_t *own = tsync__crun_dec_take(crun, src->body);
    if (own && !tsync__arena_adopt(a, own)) {
        free(own);
        return false;
    }
    if (own) {
        memcpy(body, src->body, src->nbodies * sizeof *body);
    } else {
        size_t total = 0;
        for (uint32_t k = 0; k < src->nbodies; k++) total += src->body_len[k];
        uint8_t *blk = tsync__arena_alloc(a, total);
        if (!blk) return false;
        for (uint32_t k = 0; k < src->nbodies; k++) {
            memcpy(blk, src->body[k], src->body_len[k]);
            body[k] = blk;
            blk += src->body_len[k];
        }
    }
    memcpy(len, src->body_len, src->nbodies * sizeof *len);
    dst->body = body;
    dst->body_len = len;
    if (src->crun) {
        uint8_t *c = tsync__arena_alloc(a, src->crun_len);
        if (!c) return false;
        memcpy(c, src->crun, src->crun_len);
        dst->crun = c;
    }
    return true;
}

int tsync__bstream_collect(tsync__bstream *r, tsync__bundle *out, tsync__arena *a,
                           char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    if (r->format < TSYNC__BUNDLE_FORMAT_STREAM4 && !r->old_ready && !r->rc) {
        /* Decoded straight into the caller's arena; an uncompressed image read through rd is
         * what the bodies point into, so it moves into the bundle. */
        int rc = tsync__bundle_decode(r->mem, r->mem_len, out, a, err);
        if (rc == 0 && !out->payload && r->img) {
            out->payload = r->img;
            r->img = NULL;
        }
        if (rc) r->rc = rc;
        r->old_ready = true; /* r->old stays empty: the next item is the end */
        return rc;
    }
    tsync__brun *runs = NULL;
    const uint8_t **trust = NULL;
    size_t *trust_len = NULL;
    size_t caprun = 0, captrust = 0, captl = 0, nruns = 0, ntrust = 0;
    tsync__bs_item it;
    int rc;
    while ((rc = tsync__bstream_next(r, &it, err)) == 0 && it.kind != TSYNC__BS_END) {
        bool ok = true;
        if (it.kind == TSYNC__BS_TRUST) {
            uint8_t *c = tsync__arena_alloc(a, it.len);
            ok = c && grow((void **)&trust, &captrust, ntrust + 1, sizeof *trust) &&
                 grow((void **)&trust_len, &captl, ntrust + 1, sizeof *trust_len);
            if (ok) {
                memcpy(c, it.data, it.len);
                trust[ntrust] = c;
                trust_len[ntrust++] = it.len;
            }
        } else if (it.kind == TSYNC__BS_SCHEMA) {
            uint8_t *c = tsync__arena_alloc(a, it.len);
            ok = c != NULL;
            if (ok) {
                memcpy(c, it.data, it.len);
                memcpy(out->schema_site, it.schema_site, TSYNC__SITE_BYTES);
                out->schema = c;
                out->schema_len = it.len;
            }
        } else if (it.kind == TSYNC__BS_RUN) {
            ok = nruns < UINT32_MAX && grow((void **)&runs, &caprun, nruns + 1, sizeof *runs) &&
                 keep_run(&runs[nruns], &it.run, a, r->crun);
            if (ok) nruns++;
        }
        if (!ok) {
            snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
            rc = TSYNC_ENOMEM;
            break;
        }
    }
    uint32_t nsites = 0;
    const tsync__bsite *sites = tsync__bstream_sites(r, &nsites);
    if (rc == 0) {
        out->sites = tsync__arena_array(a, nsites, sizeof *out->sites);
        out->runs = tsync__arena_array(a, nruns, sizeof *out->runs);
        out->trust = tsync__arena_array(a, ntrust, sizeof *out->trust);
        out->trust_len = tsync__arena_array(a, ntrust, sizeof *out->trust_len);
        if ((nsites && !out->sites) || (nruns && !out->runs) ||
            (ntrust && (!out->trust || !out->trust_len))) {
            snprintf(err, TSYNC__ERRLEN, "bundle: out of memory");
            rc = TSYNC_ENOMEM;
        }
    }
    if (rc == 0) {
        if (nsites) memcpy(out->sites, sites, nsites * sizeof *sites);
        if (nruns) memcpy(out->runs, runs, nruns * sizeof *runs);
        if (ntrust) {
            memcpy(out->trust, trust, ntrust * sizeof *trust);
            memcpy(out->trust_len, trust_len, ntrust * sizeof *trust_len);
        }
        out->nsites = nsites;
        out->nruns = (uint32_t)nruns;
        out->ntrust = (uint32_t)ntrust;
    } else {
        memset(out, 0, sizeof *out);
    }
    free(runs);
    free(trust);
    free(trust_len);
    return rc;
}
