/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/relay_int.h — what the relay's files share: the directory layout and the key file.
 *
 * DIR/relay.key: "TSYNCRLY" | version u8 (1) | Ed25519 secret key (64, libsodium layout) |
 * BLAKE2b-256 of everything before (32). 105 bytes, mode 0600.
 */
#ifndef TSYNC_NET_RELAY_INT_H
#define TSYNC_NET_RELAY_INT_H

#include <stddef.h>
#include <stdint.h>

#define TSYNC__RELAY_KEY_FILE  "relay.key"
#define TSYNC__RELAY_KEY_BYTES 105u

/* Reads and checks DIR/relay.key into sk (64 bytes). Errors (message set): TSYNC_ENOTFOUND,
 * TSYNC_ECORRUPT, TSYNC_EIO. */
int tsync__relay_key_load(const char *dir, uint8_t sk[64]);

/* ---------------------------------------------------------------- the vault (net/relay/vault.c) */

#include "store/relay_store.h"

/* What a vault message needs of its session: the store, the shop, and how to answer. */
typedef struct {
    tsync__rstore *st;
    int64_t shop;
    const uint8_t *admin_pk; /* the shop's admin key (its quota is read per put) */
    const char *label;       /* the session, for the log */
    void (*send)(void *ctx, const tsync__rmsg *m);
    void (*refuse)(void *ctx, uint64_t req, uint32_t code, const char *line);
    void (*log)(void *ctx, int level, const char *line);
    void *ctx;
} tsync__vault_sess;

/* Serves one vault message (RVHAVE, RVPUT, RVCOMMIT, RVLIST, RVGET, RVDEL) of a served till:
 * answers it, or refuses it with a reason (the session stays up). */
void tsync__relay_vault(const tsync__vault_sess *v, const tsync__rmsg *m);

/* ---------------------------------------------------------------- the hostile test double */

/* A test-only hook on what the relay serves (tests/net/hostile_relay.c; docs/RELAY.md, "A
 * hostile relay"): called with every RENV about to go to a session of shop, an answer to the
 * RGET get or a push (get NULL). It may rewrite m and its envelopes (what it points them to stays
 * the hook's until its next call). Set by no production code and not reachable from the CLI or
 * the public API: without it (NULL) the relay serves what its store holds. */
typedef void (*tsync__relay_tamper_fn)(void *ctx, tsync__rstore *st, int64_t shop,
                                       const tsync__rmsg *get, tsync__rmsg *m);

struct tsync_relay;
void tsync__relay_set_tamper(struct tsync_relay *r, tsync__relay_tamper_fn fn, void *ctx);

#endif
