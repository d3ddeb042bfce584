/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/envelope.h — the envelope: what a blind relay stores for a shop. A run piece of one
 * origin (the caller's bytes: a compact run of batches) encrypted with the shop's data key, under
 * a header the relay can read to index and deduplicate (shop, origin, sequence range, the chain
 * hashes at both ends, the data-key epoch) and cannot change without the tills noticing.
 *
 * Design notes
 * - Fixed-layout header, no msgpack: every field has one place and one width, so the decoder has
 *   nothing to be lenient about and the relay (which never decrypts) can read it with a struct.
 * - Body: XChaCha20-Poly1305-IETF (libsodium) with a random 192-bit nonce carried in the header,
 *   and the whole header (nonce included) as associated data. Flipping any header or body byte,
 *   or opening with another epoch's key, fails authentication; the tag cannot tell a wrong key
 *   from a tampered envelope, and the message says both.
 * - The relay's lies the envelope cannot catch (withholding, replaying an old envelope, serving
 *   a run that does not match its header's range) are caught after opening, by the batch chain
 *   and signatures, as for any batch (docs/RELAY_KEYS.md).
 *
 * Layout (docs/RELAY_KEYS.md, integers big-endian):
 *   0   magic "TSEV" (4)       4   format u8 (=1)          5   shop_id (16)
 *   21  origin site (16)       37  first_seq u64 (>= 1)     45  last_seq u64 (>= first_seq)
 *   53  prev_hash (32): hash of batch first_seq-1 of origin (all zero when first_seq is 1)
 *   85  last_hash (32): hash of batch last_seq             117 epoch u32 (>= 1)
 *   121 nonce (24)             145 payload_len u32 (<= TSYNC__ENV_PAYLOAD_MAX)
 *   149 ciphertext: payload_len bytes + 16-byte tag; nothing after it.
 *
 * THREAD SAFETY: every function is reentrant.
 */
#ifndef TSYNC_CODEC_ENVELOPE_H
#define TSYNC_CODEC_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

#define TSYNC__ENV_FORMAT       1u
#define TSYNC__ENV_SHOP_BYTES   16u
#define TSYNC__ENV_KEY_BYTES    32u /* a shop data key */
#define TSYNC__ENV_NONCE_BYTES  24u
#define TSYNC__ENV_TAG_BYTES    16u
#define TSYNC__ENV_HEADER_BYTES 149u
#define TSYNC__ENV_PAYLOAD_MAX  TSYNC__BATCH_MAX_BYTES /* hard limit of one envelope's payload */

typedef struct {
    uint8_t shop_id[TSYNC__ENV_SHOP_BYTES];
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t first_seq;
    uint64_t last_seq;
    uint8_t prev_hash[TSYNC__HASH_BYTES];
    uint8_t last_hash[TSYNC__HASH_BYTES];
    uint32_t epoch;
    uint8_t nonce[TSYNC__ENV_NONCE_BYTES];
    uint32_t payload_len;
} tsync__env_header;

/* Encrypts payload (len bytes) under key, the data key of epoch h->epoch, into a new envelope
 * (*out malloc'd, the caller frees; *out_len). The nonce is drawn at random (h->nonce and
 * h->payload_len are ignored). TSYNC_EINVAL (with err): a header field out of range (seq 0,
 * last_seq < first_seq, epoch 0, first_seq 1 with a non-zero prev_hash) or a payload over
 * TSYNC__ENV_PAYLOAD_MAX; TSYNC_ENOMEM. */
int tsync__env_seal(const tsync__env_header *h, const uint8_t key[TSYNC__ENV_KEY_BYTES],
                    const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len,
                    char err[TSYNC__ERRLEN]);

/* Strictly decodes an envelope's header without a key (what a relay may do): magic, format,
 * every field's range, and the total length (header + payload_len + tag, no trailing byte).
 * TSYNC_ECORRUPT (malformed, truncated, trailing bytes) or TSYNC_EVERSION (another format), with
 * a one-line message in err. */
TSYNC_WARN_UNUSED int tsync__env_decode(const uint8_t *buf, size_t len, tsync__env_header *h,
                                        char err[TSYNC__ERRLEN]);

/* The header bytes of h (nonce and payload_len as given): the exact inverse of the decoder. */
void tsync__env_header_encode(const tsync__env_header *h, uint8_t out[TSYNC__ENV_HEADER_BYTES]);

/* Decodes and opens an envelope of shop shop_id with key, the data key of epoch. *payload is a
 * new malloc'd buffer of *payload_len bytes (the caller frees; not allocated on error); h (may be
 * NULL) receives the header. Errors with a one-line message in err: what tsync__env_decode
 * returns; TSYNC_EINVAL when the envelope is another shop's or of another epoch than the key
 * given; TSYNC_EBADSIG when authentication fails (a tampered header or body, or the wrong key);
 * TSYNC_ENOMEM. */
TSYNC_WARN_UNUSED int tsync__env_open(const uint8_t *buf, size_t len,
                                      const uint8_t shop_id[TSYNC__ENV_SHOP_BYTES], uint32_t epoch,
                                      const uint8_t key[TSYNC__ENV_KEY_BYTES], uint8_t **payload,
                                      size_t *payload_len, tsync__env_header *h,
                                      char err[TSYNC__ERRLEN]);

#endif
