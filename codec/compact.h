/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/compact.h — a run of one origin's batch bodies in a compact, columnar form (bundle format
 * 5's run record, and the wire's compressed BATCHES): what each body repeats (origin, seq, site
 * dictionary, table definitions) is left out, clocks are delta-coded, and each kind of field gets
 * its own stream so that zstd sees alike bytes together. The reader rebuilds every body byte for
 * byte (the batch encoding is canonical), so hash chains and signatures are checked over the very
 * bytes the author signed: nothing is trusted that was not before.
 *
 * The format is in docs/PROTOCOL.md, "Bundle format 5: compact runs".
 */
#ifndef TSYNC_CODEC_COMPACT_H
#define TSYNC_CODEC_COMPACT_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

/* Encodes n bodies of the origin `origin`, seq first_seq.. into *out (malloc'd; caller frees). A
 * body that is not a canonical batch of that origin and seq travels whole, so any run encodes.
 * 0 or TSYNC_ENOMEM. */
int tsync__crun_encode(const uint8_t origin[TSYNC__SITE_BYTES], uint64_t first_seq, uint32_t n,
                       const uint8_t *const *body, const size_t *len, uint8_t **out,
                       size_t *out_len);

/* Rebuilds the bodies. Holds them until the next call or tsync__crun_dec_free. */
typedef struct tsync__crun_dec tsync__crun_dec;
tsync__crun_dec *tsync__crun_dec_new(void);
/* n bodies from blob; *body and *len point into d. Anything malformed: TSYNC_ECORRUPT and a
 * one-line message in err (no prefix); TSYNC_ENOMEM. */
TSYNC_WARN_UNUSED int tsync__crun_decode(tsync__crun_dec *d,
                                         const uint8_t origin[TSYNC__SITE_BYTES],
                                         uint64_t first_seq, uint32_t n, const uint8_t *blob,
                                         size_t blen, const uint8_t *const **body,
                                         const size_t **len, char err[TSYNC__ERRLEN]);
void tsync__crun_dec_free(tsync__crun_dec *d);
/* When body is the array the last tsync__crun_decode gave: hands over the buffer its bodies point
 * into (malloc'd; the caller frees it) and starts a new one for the next call. Else NULL. */
uint8_t *tsync__crun_dec_take(tsync__crun_dec *d, const uint8_t *const *body);

#endif
