/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/client.h — a till's blocking session with a relay of its shop's grant, for work
 * that asks and waits (the vault: net/relay/vault_till.c). The node's live relay session is
 * another module's; this one owns its transport and runs on the caller's thread.
 *
 * THREAD SAFETY: a client belongs to one thread; its store is used only during open.
 */
#ifndef TSYNC_NET_RELAY_CLIENT_H
#define TSYNC_NET_RELAY_CLIENT_H

#include <signal.h>
#include <stdint.h>

#include "codec/relay.h"
#include "tillsync/store.h"

typedef struct tsync__rclient tsync__rclient;

/* Opens a session with the first relay of the store's grant (in the grant's order) that answers:
 * dials it with the device key, pins the relay key the grant names, says RHELLO with this till's
 * certificate and waits for RHAVE. A relay that is unreachable within timeout_ms, fails the
 * handshake or refuses (RERR) is skipped for the next. timeout_ms: per relay and per answer
 * later (0: 10000).
 * Errors (message set): TSYNC_ENOTFOUND (not enrolled, or the shop has no grant), TSYNC_EREFUSED
 * (every relay refused: the message names the last one and its reason, e.g. "quota",
 * "unknown_shop"), TSYNC_EIO (none answered in time, or *stop became non-zero while waiting),
 * TSYNC_ENOMEM. stop (may be NULL) is looked at every 100 ms while this session waits, here and in
 * the calls after. */
int tsync__rclient_open(tsync__rclient **out, tsync_store *s, int timeout_ms,
                        const volatile sig_atomic_t *stop);

/* Sends m (its req is set here) and waits for its answer; pushes and stale answers are skipped.
 * *ans is valid until the next call or free. RERR answers are errors, the message naming the
 * relay, the reason and the relay's line: TSYNC_EFULL (quota), TSYNC_ENOTFOUND (not_found),
 * TSYNC_ECORRUPT (bad_hash), TSYNC_EREFUSED (any other); TSYNC_EIO when no answer comes in time
 * or the session is lost. */
int tsync__rclient_call(tsync__rclient *c, tsync__rmsg *m, const tsync__rmsg **ans);

/* The address of the relay in use ("tcp://host:port"). */
const char *tsync__rclient_addr(const tsync__rclient *c);

/* The shop id of the session. */
const uint8_t *tsync__rclient_shop(const tsync__rclient *c);

void tsync__rclient_free(tsync__rclient *c);

#endif
