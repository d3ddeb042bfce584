/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/wire_ext.h — the extension messages of protocol version 1 (docs/WIRE.md, "Extension
 * messages"): FEATURES (13), what a node understands beyond the base messages, and CBATCHES
 * (14), a run of one origin's batches in bundle format 5's compact form, zstd-compressed. Kept
 * apart from codec/wire.c's table, which stays exactly the base protocol that every node of
 * version 1 decodes: a node that predates these types counts them as unknown and syncs on, and a
 * node sends CBATCHES only to a peer that said FEATURES.
 */
#ifndef TSYNC_CODEC_WIRE_EXT_H
#define TSYNC_CODEC_WIRE_EXT_H

#include "codec/compact.h"
#include "codec/wire.h"

#define TSYNC__WIRE_FEATURES 13
#define TSYNC__WIRE_CBATCHES 14

#define TSYNC__FEAT_CBATCHES 1u /* FEATURES bit: CBATCHES understood */
#define TSYNC__FEAT_ALL      TSYNC__FEAT_CBATCHES

#define TSYNC__WIRE_MAX_FEATURES 64u
#define TSYNC__WIRE_MAX_CBATCHES TSYNC__WIRE_MAX_BATCHES
/* What one CBATCHES may decompress to: a bundle record's limit. */
#define TSYNC__WIRE_CBATCHES_RAW_MAX TSYNC__BUNDLE_RECORD_MAX

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES]; /* = BLAKE2b-128(pk || inc) */
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
    uint64_t first_seq;              /* >= 1 */
    uint8_t prev[TSYNC__HASH_BYTES]; /* zero when first_seq is 1 */
    uint32_t count;                  /* batches: 1..TSYNC__WIRE_BODIES_MAX */
    const uint8_t *runs;             /* one zstd frame of the compact run (codec/compact.h) */
    size_t runs_len;
    uint8_t sig[TSYNC__SIG_BYTES]; /* signature of the last batch */
} tsync__wire_cbatches;

/* The type of a frame (item 0), or 0 when it does not start like a message. */
int tsync__wire_ext_type(const uint8_t *buf, size_t len);

/* Encodes (malloc'd *out). TSYNC_EINVAL (a field out of its rules) or TSYNC_ENOMEM. */
int tsync__wire_features_encode(uint64_t bits, uint8_t **out, size_t *len);
int tsync__wire_cbatches_encode(const tsync__wire_cbatches *m, uint8_t **out, size_t *len,
                                char err[TSYNC__ERRLEN]);
/* Builds and encodes a CBATCHES from n bodies: compact form, then zstd. */
int tsync__wire_cbatches_build(const tsync__bsite *site, uint64_t first_seq,
                               const uint8_t prev[TSYNC__HASH_BYTES], uint32_t n,
                               const uint8_t *const *body, const size_t *len,
                               const uint8_t sig[TSYNC__SIG_BYTES], uint8_t **out, size_t *out_len,
                               char err[TSYNC__ERRLEN]);

/* Strict decoders, as tsync__wire_decode (canonical forms, exact item counts, limits, no trailing
 * bytes, the site id). Fields point into buf. TSYNC_ECORRUPT and a one-line message. Unknown
 * FEATURES bits are kept (a later version's), not refused. */
TSYNC_WARN_UNUSED int tsync__wire_features_decode(const uint8_t *buf, size_t len, uint64_t *bits,
                                                  char err[TSYNC__ERRLEN]);
TSYNC_WARN_UNUSED int tsync__wire_cbatches_decode(const uint8_t *buf, size_t len,
                                                  tsync__wire_cbatches *out,
                                                  char err[TSYNC__ERRLEN]);
/* Decompresses (at most TSYNC__WIRE_CBATCHES_RAW_MAX bytes, the frame must say its size) and
 * rebuilds the bodies into d, then fills b (a BATCHES: bodies point into d). */
TSYNC_WARN_UNUSED int tsync__wire_cbatches_unpack(const tsync__wire_cbatches *m, tsync__crun_dec *d,
                                                  tsync__wire_batches *b, char err[TSYNC__ERRLEN]);
/* As tsync__wire_cbatches_unpack, and hands over the decompressed compact run (malloc'd *raw, what
 * a tsync__brun's crun is: the store keeps a run applied whole in that form, store/log_run.c).
 * *raw is NULL unless it returns 0. */
TSYNC_WARN_UNUSED int tsync__wire_cbatches_unpack_raw(const tsync__wire_cbatches *m,
                                                      tsync__crun_dec *d, tsync__wire_batches *b,
                                                      uint8_t **raw, size_t *raw_len,
                                                      char err[TSYNC__ERRLEN]);

#endif
