/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/bundle_stream_writer.c — writes bundle format 5 (codec/bundle_stream.c has the format)
 * record by record into a sink: a file, a socket or a growing buffer. It holds one record and
 * zstd's own buffers (and the first 4 MiB of the stream, so that a small bundle's frame says its
 * size), never the bundle, so a bundle of any size is written in a few MiB.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zstd.h>

#include "codec/codec.h"
#include "codec/compact.h"
#include "bundle_int.h"

/* A stream this short is held until the end and compressed knowing its size: zstd then sizes its
 * tables and the reader its window to the bundle, and the frame says how large it is. */
#define PLEDGE_MAX ((size_t)4 << 20)

struct tsync__bstream_writer {
    tsync__bstream_write_fn wr;
    void *ctx;
    unsigned format;
    ZSTD_CCtx *z; /* NULL: not compressed */
    uint8_t *zbuf;
    size_t zcap;
    bool streaming; /* compressing as it goes; else the stream so far waits in pend */
    uint8_t *pend;
    size_t plen, pcap;
    msgpack_sbuffer sb; /* the record being built */
    msgpack_packer pk;
    tsync__bsite *sites;
    uint32_t nsites, capsites;
    uint64_t nruns, nbatches;
    uint32_t ntrust;
    bool data;   /* a site or run was written: no more trust records or schema */
    bool schema; /* the schema was written */
    int rc;      /* the first failure: a failed writer stays failed */
};

/* Compresses bytes into the sink. */
static int zfeed(tsync__bstream_writer *w, const void *p, size_t n, ZSTD_EndDirective end)
{
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer o = {w->zbuf, w->zcap, 0};
        size_t left = ZSTD_compressStream2(w->z, &o, &in, end);
        if (ZSTD_isError(left)) return TSYNC_ENOMEM; /* with our parameters: only memory */
        if (o.pos) {
            int rc = w->wr(w->ctx, w->zbuf, o.pos);
            if (rc) return rc;
        }
        if (end == ZSTD_e_end ? left == 0 : in.pos == in.size) return 0;
    }
}

/* Hands bytes of the record stream to the sink, through zstd when compressing. */
static int emit(tsync__bstream_writer *w, const void *p, size_t n)
{
    if (!w->z) return n ? w->wr(w->ctx, p, n) : 0;
    if (!w->streaming) {
        if (w->plen + n <= PLEDGE_MAX) {
            if (w->plen + n > w->pcap) {
                size_t cap = w->pcap ? w->pcap : (size_t)64 << 10;
                while (cap < w->plen + n) cap *= 2;
                uint8_t *np = realloc(w->pend, cap);
                if (!np) return TSYNC_ENOMEM;
                w->pend = np;
                w->pcap = cap;
            }
            memcpy(w->pend + w->plen, p, n);
            w->plen += n;
            return 0;
        }
        /* Too long to wait for: stream from here on, in bounded buffers. */
        w->streaming = true;
        int rc = zfeed(w, w->pend, w->plen, ZSTD_e_continue);
        free(w->pend);
        w->pend = NULL;
        w->plen = w->pcap = 0;
        if (rc) return rc;
    }
    return zfeed(w, p, n, ZSTD_e_continue);
}

/* Ends the zstd frame (with the stream's size when it waited whole). */
static int zend(tsync__bstream_writer *w)
{
    if (w->streaming) return zfeed(w, NULL, 0, ZSTD_e_end);
    if (ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(w->z, w->plen))) return TSYNC_ENOMEM;
    return zfeed(w, w->pend, w->plen, ZSTD_e_end);
}

/* Writes the record in w->sb as one bin. */
static int put_record(tsync__bstream_writer *w)
{
    size_t n = w->sb.size;
    uint8_t hdr[5];
    size_t hl;
    int rc;
    if (n > TSYNC__BUNDLE_RECORD_MAX) return TSYNC_EINVAL;
    if (n <= 0xff) {
        hdr[0] = 0xc4, hdr[1] = (uint8_t)n, hl = 2;
    } else if (n <= 0xffff) {
        hdr[0] = 0xc5, hdr[1] = (uint8_t)(n >> 8), hdr[2] = (uint8_t)n, hl = 3;
    } else {
        hdr[0] = 0xc6, hl = 5;
        for (int i = 0; i < 4; i++) hdr[1 + i] = (uint8_t)(n >> (24 - 8 * i));
    }
    if ((rc = emit(w, hdr, hl)) == 0) rc = emit(w, w->sb.data, n);
    w->sb.size = 0;
    return rc;
}

#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

int tsync__bstream_writer_open(tsync__bstream_writer **out, bool compress,
                               tsync__bstream_write_fn wr, void *ctx)
{
    return tsync__bstream_writer_open_format(out, compress, TSYNC__BUNDLE_FORMAT_STREAM, wr, ctx);
}

int tsync__bstream_writer_open_format(tsync__bstream_writer **out, bool compress, unsigned format,
                                      tsync__bstream_write_fn wr, void *ctx)
{
    *out = NULL;
    if (format != TSYNC__BUNDLE_FORMAT_STREAM && format != TSYNC__BUNDLE_FORMAT_STREAM4)
        return TSYNC_EINVAL;
    tsync__bstream_writer *w = calloc(1, sizeof *w);
    if (!w) return TSYNC_ENOMEM;
    w->wr = wr;
    w->ctx = ctx;
    w->format = format;
    msgpack_sbuffer_init(&w->sb);
    msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
    if (compress) {
        w->z = ZSTD_createCCtx();
        w->zcap = ZSTD_CStreamOutSize();
        w->zbuf = malloc(w->zcap);
        if (!w->z || !w->zbuf ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_compressionLevel, ZLEVEL)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_checksumFlag, 1))) {
            tsync__bstream_writer_free(w);
            return TSYNC_ENOMEM;
        }
    }
    uint8_t hdr[MAGIC_LEN + 2];
    memcpy(hdr, MAGIC, MAGIC_LEN);
    hdr[MAGIC_LEN] = (uint8_t)format;
    hdr[MAGIC_LEN + 1] = compress ? FLAG_ZSTD : 0;
    int rc = wr(ctx, hdr, sizeof hdr);
    if (rc) {
        tsync__bstream_writer_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int tsync__bstream_writer_trust(tsync__bstream_writer *w, const uint8_t *rec, size_t len)
{
    if (w->rc) return w->rc;
    if (w->data || w->schema || !rec || len == 0 || len > TSYNC__BUNDLE_TRUST_MAX_BYTES ||
        w->ntrust >= TSYNC__BUNDLE_TRUST_MAX)
        return TSYNC_EINVAL;
    PK(msgpack_pack_array(&w->pk, 2));
    PK(msgpack_pack_uint8(&w->pk, REC_TRUST));
    PK(tsync__mp_pack_bin(&w->pk, rec, len));
    w->ntrust++;
    return w->rc = put_record(w);
nomem:
    return w->rc = TSYNC_ENOMEM;
}

int tsync__bstream_writer_schema(tsync__bstream_writer *w, const uint8_t site[TSYNC__SITE_BYTES],
                                 const uint8_t *defs, size_t len)
{
    if (w->rc) return w->rc;
    if (w->data || w->schema || !defs || len == 0 || len > TSYNC__BUNDLE_SCHEMA_MAX)
        return TSYNC_EINVAL;
    PK(msgpack_pack_array(&w->pk, 3));
    PK(msgpack_pack_uint8(&w->pk, REC_SCHEMA));
    PK(tsync__mp_pack_bin(&w->pk, site, TSYNC__SITE_BYTES));
    PK(tsync__mp_pack_bin(&w->pk, defs, len));
    w->schema = true;
    return w->rc = put_record(w);
nomem:
    return w->rc = TSYNC_ENOMEM;
}

int tsync__bstream_writer_site(tsync__bstream_writer *w, const tsync__bsite *s, uint32_t *idx)
{
    if (w->rc) return w->rc;
    uint8_t id[TSYNC__SITE_BYTES];
    tsync__site_id(s->pk, s->inc, id);
    if (memcmp(id, s->site, TSYNC__SITE_BYTES) != 0) return TSYNC_EINVAL;
    for (uint32_t i = 0; i < w->nsites; i++) {
        if (memcmp(w->sites[i].site, s->site, TSYNC__SITE_BYTES) == 0) {
            *idx = i;
            return 0;
        }
    }
    if (w->nsites == w->capsites) {
        uint32_t ncap = w->capsites ? w->capsites * 2 : 8;
        tsync__bsite *ns = ncap > w->capsites ? realloc(w->sites, ncap * sizeof *ns) : NULL;
        if (!ns) return w->rc = TSYNC_ENOMEM;
        w->sites = ns;
        w->capsites = ncap;
    }
    PK(msgpack_pack_array(&w->pk, 4));
    PK(msgpack_pack_uint8(&w->pk, REC_SITE));
    PK(tsync__mp_pack_bin(&w->pk, s->site, TSYNC__SITE_BYTES));
    PK(tsync__mp_pack_bin(&w->pk, s->pk, TSYNC__PK_BYTES));
    PK(tsync__mp_pack_bin(&w->pk, s->inc, TSYNC__INC_BYTES));
    w->data = true;
    w->sites[w->nsites] = *s;
    *idx = w->nsites++;
    return w->rc = put_record(w);
nomem:
    return w->rc = TSYNC_ENOMEM;
}

int tsync__bstream_writer_run(tsync__bstream_writer *w, uint32_t site_idx, uint64_t first_seq,
                              const uint8_t prev[TSYNC__HASH_BYTES], uint32_t n,
                              const uint8_t *const *body, const size_t *len,
                              const uint8_t sig[TSYNC__SIG_BYTES])
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    if (w->rc) return w->rc;
    if (!prev) prev = zero;
    if (site_idx >= w->nsites || first_seq == 0 || n == 0 || first_seq - 1 > UINT64_MAX - n ||
        (first_seq == 1 && memcmp(prev, zero, TSYNC__HASH_BYTES) != 0))
        return TSYNC_EINVAL;
    for (uint32_t k = 0; k < n; k++)
        if (!body[k] || len[k] == 0 || len[k] > TSYNC__BATCH_MAX_BYTES) return TSYNC_EINVAL;
    if (w->format == TSYNC__BUNDLE_FORMAT_STREAM4) {
        PK(msgpack_pack_array(&w->pk, 6));
        PK(msgpack_pack_uint8(&w->pk, REC_RUN));
        PK(msgpack_pack_uint32(&w->pk, site_idx));
        PK(msgpack_pack_uint64(&w->pk, first_seq));
        PK(tsync__mp_pack_bin(&w->pk, prev, TSYNC__HASH_BYTES));
        PK(msgpack_pack_array(&w->pk, n));
        for (uint32_t k = 0; k < n; k++) PK(tsync__mp_pack_bin(&w->pk, body[k], len[k]));
        PK(tsync__mp_pack_bin(&w->pk, sig, TSYNC__SIG_BYTES));
        goto built;
    }
    /* Format 5: the run in compact form (codec/compact.c), which rebuilds these very bodies. */
    uint8_t *blob;
    size_t blen;
    int rc = tsync__crun_encode(w->sites[site_idx].site, first_seq, n, body, len, &blob, &blen);
    if (rc) return w->rc = rc;
    if (blen > TSYNC__BUNDLE_RECORD_MAX) {
        free(blob);
        return TSYNC_EINVAL;
    }
    bool bad = msgpack_pack_array(&w->pk, 7) || msgpack_pack_uint8(&w->pk, REC_CRUN) ||
               msgpack_pack_uint32(&w->pk, site_idx) || msgpack_pack_uint64(&w->pk, first_seq) ||
               tsync__mp_pack_bin(&w->pk, prev, TSYNC__HASH_BYTES) ||
               msgpack_pack_uint32(&w->pk, n) || tsync__mp_pack_bin(&w->pk, blob, blen) ||
               tsync__mp_pack_bin(&w->pk, sig, TSYNC__SIG_BYTES);
    free(blob);
    if (bad) goto nomem;
built:
    if (w->sb.size > TSYNC__BUNDLE_RECORD_MAX) {
        /* Refused, not written: the stream stays usable. */
        w->sb.size = 0;
        return TSYNC_EINVAL;
    }
    w->nruns++;
    w->nbatches += n;
    return w->rc = put_record(w);
nomem:
    return w->rc = TSYNC_ENOMEM;
}

int tsync__bstream_writer_finish(tsync__bstream_writer *w)
{
    if (w->rc) return w->rc;
    PK(msgpack_pack_array(&w->pk, 5));
    PK(msgpack_pack_uint8(&w->pk, REC_END));
    PK(msgpack_pack_uint32(&w->pk, w->nsites));
    PK(msgpack_pack_uint64(&w->pk, w->nruns));
    PK(msgpack_pack_uint64(&w->pk, w->nbatches));
    PK(msgpack_pack_uint32(&w->pk, w->ntrust));
    int rc = put_record(w);
    if (rc == 0 && w->z) rc = zend(w);
    w->rc = rc ? rc : TSYNC_EINVAL; /* nothing can follow the end record */
    return rc;
nomem:
    return w->rc = TSYNC_ENOMEM;
}

void tsync__bstream_writer_free(tsync__bstream_writer *w)
{
    if (!w) return;
    ZSTD_freeCCtx(w->z);
    free(w->zbuf);
    free(w->pend);
    msgpack_sbuffer_destroy(&w->sb);
    free(w->sites);
    free(w);
}
