/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/attacker.h — a fake peer for the security tests: a device that speaks the wire
 * protocol itself on the internal transport (net/transport.h) and wire codec (codec/wire.h), so a
 * test can send a live node what no honest `tillsync run` would (garbage, oversize frames,
 * forged or reordered batch runs, a second HELLO) and count what the node sends back.
 *
 * An attacker is a stranger (any key) or a member (the key and certificate of an enrolled
 * database, made with adb_open), so that CURVE and the certificate check let it in and the node's
 * own checks are what is tested. Every call asserts with criterion: a broken harness fails the
 * test at the step that broke, not later as a false "refused".
 */
#ifndef TSYNC_TESTS_ATTACKER_H
#define TSYNC_TESTS_ATTACKER_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/wire.h"
#include "crdt/crdt.h"
#include "net/transport.h"
#include "store/sync.h"
#include "tests/lib/node_util.h"

/* ---------------------------------------------------------------- a connection to the node */

typedef struct {
    tsync__tp *tp;
    uint32_t peer;
    int up, ups, downs, hsfail;
    int got[TSYNC__WIRE_TYPE_MAX + 1]; /* messages by type; [0]: undecodable */
    uint32_t error_code;               /* of the last ERROR */
    uint64_t pong;                     /* echo of the last PONG */
} att;

/* Dials node v (public key v_pk) with secret key sk; max_msg: the largest frame it may send. */
void att_connect(att *a, const uint8_t sk[64], const nu_node *v, const uint8_t v_pk[32],
                 size_t max_msg);
/* Handles transport events for ms milliseconds, counting what the node sends. */
void att_pump(att *a, int ms);
/* Pumps until cond holds, for at most ms; fails the test saying what it waited for. */
#define ATT_UNTIL(a, ms, cond, what)                                                               \
    do {                                                                                           \
        int64_t end_ = nu_now_ms() + (ms);                                                         \
        while (!(cond) && nu_now_ms() < end_) att_pump((a), 20);                                   \
        cr_assert((cond),                                                                          \
                  "attacker: waited %d ms for %s (up %d, ups %d, downs %d, hsfail %d, "            \
                  "HELLO %d, BATCHES %d, ERROR %d code %u)",                                       \
                  (int)(ms), (what), (a)->up, (a)->ups, (a)->downs, (a)->hsfail,                   \
                  (a)->got[TSYNC__WIRE_HELLO], (a)->got[TSYNC__WIRE_BATCHES],                      \
                  (a)->got[TSYNC__WIRE_ERROR], (a)->error_code);                                   \
    } while (0)
/* Sends raw bytes as one message (waiting up to 10 s while the transport is busy). */
void att_send(att *a, const void *buf, size_t len);
void att_send_msg(att *a, const tsync__msg *m);
/* A HELLO with the given shop id and certificate (NULL shop: not enrolled), an empty vector and
 * this machine's wall clock. att_hello_fill only fills m (for a child process that must not
 * assert); att_hello sends it. */
void att_hello_fill(tsync__msg *m, const uint8_t *shop_id, const uint8_t *cert, size_t cert_len);
void att_hello(att *a, const uint8_t *shop_id, const uint8_t *cert, size_t cert_len);
void att_free(att *a);
/* Asserts that the attacker received none of the node's data: no BATCHES, CERTS, ACK or
 * snapshot. */
void att_got_nothing(const att *a, const char *what);

/* ---------------------------------------------------------------- the attacker's batches */

/* An attacker database: its store (key, certificate) and its genuine batches, one sale each. */
typedef struct {
    char db[NU_PATH];
    tsync_store *s;
    tsync__bsite site;
    int n;
    uint8_t *body[8];
    size_t len[8];
    uint8_t hash[8][TSYNC__HASH_BYTES]; /* chain hash of batch i + 1 */
    uint8_t *cert;
    size_t cert_len;
} adb;

/* Makes (or opens) an attacker database in the schema of node_util.h with `sales` sales, each
 * sealed alone: batches 1..sales. keyfile: enrol it in that shop (NULL: not enrolled).
 * future_ms: the clocks of its batches are that far ahead (as a till with a fast clock would
 * write them). */
void adb_open(adb *d, const char *dir, const char *name, const char *keyfile, int sales,
              int64_t future_ms);
const uint8_t *adb_sk(adb *d);
void adb_close(adb *d);

/* A BATCHES message of the attacker's bodies idx[0..k) as a run from first_seq with prev, signed
 * (genuinely, with the attacker's key) as the batch `sign_seq` whose chain hash is `hash`. */
typedef struct {
    tsync__msg m;
    const uint8_t *body[8];
    size_t len[8];
} run_msg;

void run_build(run_msg *r, const adb *d, const tsync__bsite *as, uint64_t first_seq,
               const uint8_t *prev, const int *idx, int k);
/* Signs the run as its sender would: the chain recomputed from prev over the bodies as given. */
void run_sign(run_msg *r, const uint8_t sk[64], const uint8_t origin[TSYNC__SITE_BYTES]);

#endif
