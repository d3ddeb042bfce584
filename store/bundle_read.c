/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/bundle_read.c — merging a bundle from a file (tsync_store_merge_file) without holding it:
 * the file is read twice through the streaming reader (codec/bundle_stream.c), first to check it
 * whole, then to merge it in slices of about one run piece.
 *
 * Design notes
 * - Pass 1 checks everything tsync_store_merge checks before it touches the database: the
 *   format, every batch body, every hash chain and every run's signature, the author's table
 *   definitions, and that the file ends with its end record. It holds one record at a time. A
 *   bundle refused here changes nothing, with the same messages as tsync_store_merge.
 * - Pass 2 hands slices of at least TSYNC__RUN_PIECE_BYTES of bodies to the merge
 *   (tsync__merge_bundle, store/merge.c), each in its own transaction. A bundle that fits one
 *   slice (every bundle under about 1 MiB) merges exactly as tsync_store_merge would. A larger one
 *   merges slice by slice: a batch whose dependencies are in a later slice is held and applied
 *   when they come (the report then counts it held, and merged), and a failure of the disk half
 *   way leaves the slices before it merged; merging the file again finishes the job, the merged
 *   part counting as duplicates.
 * - The slices are what keeps memory bounded whatever the bundle's size; what one slice costs is
 *   the merge's business.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge_int.h"
#include "store/schema.h"
#include "store/sync.h"

size_t tsync__merge_slice_bytes = TSYNC__RUN_PIECE_BYTES;

/* Where the bundle comes from: a file (path), or a buffer the caller keeps (buf, len). */
typedef struct {
    const char *path;
    const uint8_t *buf;
    size_t len;
    FILE *f;
} source;

static size_t file_read(void *ctx, uint8_t *buf, size_t n)
{
    FILE *f = ctx;
    size_t k = fread(buf, 1, n, f);
    return k == 0 && ferror(f) ? (size_t)-1 : k;
}

/* A reader over the source (opening the file); err says why not. */
static int src_open(source *src, tsync__bstream **r, char err[TSYNC__ERRLEN])
{
    *r = NULL;
    if (!src->path) return tsync__bstream_open_mem(r, src->buf, src->len, err);
    src->f = fopen(src->path, "rb");
    if (!src->f) {
        snprintf(err, TSYNC__ERRLEN, "cannot open %s: %s", src->path, strerror(errno));
        return TSYNC_EIO;
    }
    int rc = tsync__bstream_open(r, file_read, src->f, err);
    if (rc) {
        fclose(src->f);
        src->f = NULL;
    }
    return rc;
}

static void src_close(source *src, tsync__bstream *r)
{
    tsync__bstream_free(r);
    if (src->f) fclose(src->f);
    src->f = NULL;
}

static const char *src_name(const source *src)
{
    return src->path ? src->path : "the bundle";
}

static const char *short_site(const uint8_t *id, char out[13])
{
    tsync__hex(id, 6, out);
    return out;
}

/* What tsync__merge_bundle checks before its transaction, for one run: each body decodes, names
 * the run's origin and the next seq, and the signature verifies over the hash chain. */
/* scratch: the decoded batches, freed every few hundred KB of bodies rather than per batch (a
 * live till's bundle is 100k batches of one row each). */
static int check_run(const tsync__bs_item *it, tsync__mskip *skip, tsync__arena *scratch,
                     size_t *scratch_bytes)
{
    const tsync__brun *run = &it->run;
    const tsync__bsite *bs = it->site;
    char err[TSYNC__ERRLEN], sh[13], sh2[13];
    uint8_t prev[TSYNC__HASH_BYTES];
    int rc = 0;
    memcpy(prev, run->prev, sizeof prev);
    for (uint32_t k = 0; rc == 0 && k < run->nbodies; k++) {
        if (*scratch_bytes > TSYNC__MERGE_DECODE_BYTES) {
            tsync__arena_free(scratch);
            *scratch_bytes = 0;
        }
        *scratch_bytes += run->body_len[k];
        tsync__arena *a = scratch;
        tsync__batch b;
        uint64_t seq = run->first_seq + k;
        if ((rc = tsync__batch_decode(run->body[k], run->body_len[k], &b, a, err))) {
            rc = tsync__err(rc, "bundle refused: batch %llu of site %s: %s",
                            (unsigned long long)seq, short_site(bs->site, sh), err);
        } else if (memcmp(b.origin, bs->site, TSYNC__SITE_BYTES) != 0 || b.seq != seq) {
            rc = tsync__err(TSYNC_ECHAIN,
                            "bundle refused: run of site %s: batch %llu is out of place (found "
                            "origin %s batch %llu): hash chain broken",
                            short_site(bs->site, sh), (unsigned long long)seq,
                            short_site(b.origin, sh2), (unsigned long long)b.seq);
        } else if (skip) {
            rc = tsync__mskip_batch(skip, &b, prev, bs->pk);
        }
        tsync__batch_hash(prev, run->body[k], run->body_len[k], prev);
    }
    if (rc) return rc;
    uint64_t last = run->first_seq + run->nbodies - 1;
    if (tsync__batch_verify(bs->pk, bs->site, last, prev, run->sig) != 0)
        return tsync__err(TSYNC_EBADSIG,
                          "bundle refused: batches %llu-%llu of site %s: signature does not "
                          "verify over the hash chain (altered, reordered or forged)",
                          (unsigned long long)run->first_seq, (unsigned long long)last,
                          short_site(bs->site, sh));
    return 0;
}

/* Pass 1: the whole file checked, nothing touched; skip (may be NULL) summarises it. */
static int check_src(source *src, tsync__mskip *skip)
{
    char err[TSYNC__ERRLEN];
    tsync__bstream *r;
    tsync__arena scratch = {0};
    size_t scratch_bytes = 0;
    int rc = src_open(src, &r, err);
    if (rc == TSYNC_EIO) return tsync__err(rc, "%s", err);
    if (rc) return tsync__err(rc, "bundle refused: %s", err);
    tsync__bs_item it;
    for (;;) {
        if ((rc = tsync__bstream_next(r, &it, err))) {
            if (rc == TSYNC_EIO)
                rc = tsync__err(rc, "cannot read %s: %s", src_name(src),
                                strerror(errno ? errno : EIO));
            else
                rc = tsync__err(rc, "bundle refused: %s", err);
            break;
        }
        if (it.kind == TSYNC__BS_END) break;
        if (it.kind == TSYNC__BS_RUN && (rc = check_run(&it, skip, &scratch, &scratch_bytes)))
            break;
        if (it.kind == TSYNC__BS_TRUST) tsync__mskip_disable(skip); /* may refuse batches */
        if (it.kind == TSYNC__BS_SCHEMA) {
            /* The author's table definitions are checked as strictly as the rest. */
            tsync__arena sa = {0};
            tsync__schema sc;
            rc = tsync__schema_decode(it.data, it.len, &sc, &sa, err);
            tsync__arena_free(&sa);
            if (rc) {
                rc = tsync__err(rc, "bundle refused: %s", err);
                break;
            }
        }
    }
    tsync__arena_free(&scratch);
    src_close(src, r);
    return rc;
}

/* One slice of pass 2: its runs, copied out of the reader, plus the trust records and the table
 * definitions (kept for the whole merge: the first slice takes the trust records, the last call
 * records the definitions). */
typedef struct {
    tsync__arena a; /* the slice's runs */
    tsync__brun *runs;
    size_t nruns, cap, bytes;
    tsync__arena keep; /* trust records and definitions */
    const uint8_t **trust;
    size_t *trust_len;
    size_t ntrust, captrust, captl;
    uint8_t schema_site[TSYNC__SITE_BYTES];
    const uint8_t *schema;
    size_t schema_len;
    int trust_sent;
} slice;

static int grow(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * sz);
    if (!p) return tsync__err(TSYNC_ENOMEM, "out of memory");
    *arr = p;
    *cap = ncap;
    return 0;
}

static int slice_run(slice *sl, const tsync__brun *src)
{
    size_t total = 0;
    for (uint32_t k = 0; k < src->nbodies; k++) total += src->body_len[k];
    if (grow((void **)&sl->runs, &sl->cap, sl->nruns + 1, sizeof *sl->runs)) return TSYNC_ENOMEM;
    uint8_t *blk = tsync__arena_alloc(&sl->a, total);
    const uint8_t **body = tsync__arena_array(&sl->a, src->nbodies, sizeof *body);
    size_t *len = tsync__arena_array(&sl->a, src->nbodies, sizeof *len);
    if (!blk || !body || !len) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t k = 0; k < src->nbodies; k++) {
        memcpy(blk, src->body[k], src->body_len[k]);
        body[k] = blk;
        len[k] = src->body_len[k];
        blk += src->body_len[k];
    }
    uint8_t *crun = NULL;
    if (src->crun && !(crun = tsync__arena_alloc(&sl->a, src->crun_len)))
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    if (crun) memcpy(crun, src->crun, src->crun_len);
    tsync__brun *run = &sl->runs[sl->nruns++];
    *run = *src;
    run->body = body;
    run->body_len = len;
    run->crun = crun;
    sl->bytes += total + (crun ? src->crun_len : 0);
    return 0;
}

static int slice_keep(slice *sl, const tsync__bs_item *it)
{
    uint8_t *c = tsync__arena_alloc(&sl->keep, it->len);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    memcpy(c, it->data, it->len);
    if (it->kind == TSYNC__BS_SCHEMA) {
        memcpy(sl->schema_site, it->schema_site, TSYNC__SITE_BYTES);
        sl->schema = c;
        sl->schema_len = it->len;
        return 0;
    }
    if (grow((void **)&sl->trust, &sl->captrust, sl->ntrust + 1, sizeof *sl->trust) ||
        grow((void **)&sl->trust_len, &sl->captl, sl->ntrust + 1, sizeof *sl->trust_len))
        return TSYNC_ENOMEM;
    sl->trust[sl->ntrust] = c;
    sl->trust_len[sl->ntrust++] = it->len;
    return 0;
}

/* Merges the slice's runs (and, the first time, the trust records) in one transaction. */
static int slice_merge(tsync_store *s, slice *sl, const tsync__bstream *r,
                       tsync_merge_report *report, tsync__mskip *skip)
{
    tsync__bundle b = {0};
    b.sites = (tsync__bsite *)tsync__bstream_sites(r, &b.nsites);
    b.runs = sl->runs;
    b.nruns = (uint32_t)sl->nruns;
    if (!sl->trust_sent) {
        b.trust = sl->trust;
        b.trust_len = sl->trust_len;
        b.ntrust = (uint32_t)sl->ntrust;
        sl->trust_sent = 1;
    }
    int rc = tsync__merge_bundle_skip(s, &b, report, skip);
    /* A batch refused or kept out: what the summary counted on may not apply. */
    if (rc) tsync__mskip_disable(skip);
    tsync__arena_free(&sl->a);
    sl->nruns = 0;
    sl->bytes = 0;
    return rc;
}

/* Whether a merge's failure stops the merge of the later slices (the database or the machine
 * failed), rather than refusing some batches and merging the rest. */
static int fatal(int rc)
{
    return rc == TSYNC_EIO || rc == TSYNC_ENOMEM || rc == TSYNC_EBUSY;
}

/* Both passes over src. */
static int merge_src(tsync_store *s, source *src, tsync_merge_report *report)
{
    const char *path = src_name(src);
    tsync__mskip *skip = NULL;
    int rc = tsync__mskip_new(&skip, s);
    if (rc == 0) rc = check_src(src, skip);
    if (rc == 0) rc = tsync__mskip_end(skip);
    if (rc == 0) rc = tsync__mskip_recheck(skip);
    if (rc) {
        tsync__mskip_free(skip);
        if (report && rc != TSYNC_EIO && rc != TSYNC_ENOMEM) report->refused++;
        return rc;
    }

    char err[TSYNC__ERRLEN];
    tsync__bstream *r;
    if ((rc = src_open(src, &r, err))) {
        tsync__mskip_free(skip);
        return tsync__err(rc == TSYNC_EIO ? rc : TSYNC_EIO, "%s changed while merging: %s", path,
                          err);
    }
    slice sl = {0};
    int first = 0; /* the first refusal, returned once everything else merged */
    tsync__bs_item it;
    for (;;) {
        if ((rc = tsync__bstream_next(r, &it, err))) {
            /* Pass 1 read it whole: the file changed since, or the disk failed. */
            rc = tsync__err(rc == TSYNC_ENOMEM ? rc : TSYNC_EIO, "cannot merge %s: %s", path, err);
            break;
        }
        if (it.kind == TSYNC__BS_TRUST || it.kind == TSYNC__BS_SCHEMA) {
            if ((rc = slice_keep(&sl, &it))) break;
        } else if (it.kind == TSYNC__BS_RUN) {
            if ((rc = slice_run(&sl, &it.run))) break;
        }
        int end = it.kind == TSYNC__BS_END;
        /* At the end, a slice with nothing left to merge needs no transaction. */
        if ((end && (sl.nruns || !sl.trust_sent)) || sl.bytes >= tsync__merge_slice_bytes) {
            int mrc = slice_merge(s, &sl, r, report, skip);
            if (fatal(mrc)) {
                rc = mrc;
                break;
            }
            if (mrc && !first) first = mrc;
        }
        if (end) break;
    }
    if (rc == 0) {
        /* Migrations the trust records brought, and the author's table definitions. */
        tsync__bundle b = {0};
        b.sites = (tsync__bsite *)tsync__bstream_sites(r, &b.nsites);
        b.trust = sl.trust;
        b.trust_len = sl.trust_len;
        b.ntrust = (uint32_t)sl.ntrust;
        memcpy(b.schema_site, sl.schema_site, TSYNC__SITE_BYTES);
        b.schema = sl.schema;
        b.schema_len = sl.schema_len;
        rc = tsync__schema_from_bundle(s, &b, report);
        if (first) rc = first;
    }
    tsync__arena_free(&sl.a);
    tsync__arena_free(&sl.keep);
    free(sl.runs);
    free(sl.trust);
    free(sl.trust_len);
    tsync__mskip_free(skip);
    src_close(src, r);
    return rc;
}

int tsync_store_merge_file(tsync_store *s, const char *path, tsync_merge_report *report)
{
    if (report &&
        tsync__check_version("tsync_merge_report", report->version, TSYNC_MERGE_REPORT_VERSION))
        return TSYNC_EVERSION;
    if (!path) return tsync__err(TSYNC_EINVAL, "bundle: no file name");
    source src = {.path = path};
    return merge_src(s, &src, report);
}

int tsync__merge_stream_mem(tsync_store *s, const uint8_t *buf, size_t len,
                            tsync_merge_report *report)
{
    source src = {.buf = buf, .len = len};
    return merge_src(s, &src, report);
}
