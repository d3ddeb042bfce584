/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/relay_util.h — test tills speaking the relay protocol (codec/relay.h) to a real
 * `tillsync relay run` on loopback: a device key certified by a test shop, a CURVE session pinned
 * to the relay's key, RHELLO, RGET, and reading what the relay stores and counts. Criterion
 * asserts inside: for tests only.
 */
#ifndef TSYNC_TESTS_RELAY_UTIL_H
#define TSYNC_TESTS_RELAY_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec/relay.h"
#include "net/transport.h"
#include "store/relay_store.h"
#include "store/trust.h"
#include "tests/lib/node_util.h"
#include "tillsync/tillsync.h"

typedef struct {
    tsync__tp *tp;
    uint32_t peer;
    uint8_t sk[64], pk[32];
    uint8_t *cert;
    size_t cert_len;
    uint8_t shop_id[16];
    uint8_t *last; /* the last message received (malloc'd) */
    size_t last_len;
    tsync__arena a;
    tsync__rmsg m;   /* decoded from last */
    uint64_t pushes; /* pushes (RENV with req 0) received, skipped by ru_recv */
} ru_till;

/* Runs cmd by popen, asserts exit 0; its stdout (static buffer, 8 KiB at most). */
char *ru_run_out(const char *cmd);

/* Starts `tillsync relay run dir --listen tcp://127.0.0.1:*` logging to log; the endpoint it
 * bound goes to ep (NU_EP bytes). */
pid_t ru_relay_start(const char *dir, const char *log, char *ep);

/* `tillsync relay status dir --json`, parsed (the caller's). */
json_t *ru_status(const char *dir);

/* refused.<reason> of a status; field f of its shop number i. */
long long ru_refused(json_t *st, const char *reason);

long long ru_shop_field(json_t *st, size_t i, const char *f);

/* A till of shop k with a new device key, certified as name from nb to exp (Unix ms), and its
 * transport (not connected yet). */
void ru_till_new(ru_till *t, const tsync__shopkey *k, const char *name, uint64_t nb, uint64_t exp);

void ru_till_free(ru_till *t);

/* Waits for an event of kind; returns 1 when it came, 0 on timeout. */
int ru_wait_ev(ru_till *t, int kind, int ms, tsync__tp_event *ev);

void ru_send(ru_till *t, const tsync__rmsg *m);

/* The next message from the relay, decoded into t->m (asserts one comes within 10 s). */
const tsync__rmsg *ru_recv_any(ru_till *t);

/* The next message that is not a push (pushes are counted in t->pushes and skipped). */
const tsync__rmsg *ru_recv(ru_till *t);

/* The next message, which must be a push: an unsolicited RENV (req 0) of what another till of the
 * shop stored. */
const tsync__rmsg *ru_recv_push(ru_till *t);

/* Says RHELLO on the session that is up; returns the answer (RHAVE or RERR). */
const tsync__rmsg *ru_hello_again(ru_till *t);

/* Connects and says RHELLO; returns the answer (RHAVE or RERR). */
const tsync__rmsg *ru_hello(ru_till *t, const char *ep, const uint8_t relay_pk[32]);

/* Asserts m is RERR of code. */
void ru_expect_err(const tsync__rmsg *m, uint32_t code);

/* RGET (req 5) of origin from seq from, at most max bytes; asserts the answer is its RENV. */
const tsync__rmsg *ru_get(ru_till *t, const uint8_t origin[16], uint64_t from, uint64_t max);

/* Whether the bytes of the relay's files (relay.db and its WAL) contain needle. */
int ru_files_contain(const char *dir, const void *needle, size_t n);

/* ---- a relay on another store (NATS JetStream: store is its --store URL; NULL: relay.db) */

/* ru_relay_start with `--store store`. */
pid_t ru_relay_start_store(const char *dir, const char *log, char *ep, const char *store);

/* ru_status with `--store store`. */
json_t *ru_status_store(const char *dir, const char *store);

/* Whether any file under dir (recursively: a JetStream store_dir) contains needle. */
int ru_tree_contains(const char *dir, const void *needle, size_t n);

/* ---- cloud backup (tillsync/vault.h) through a relay process */

typedef struct {
    char dir[512], ep[NU_EP], store[256]; /* store: its --store URL ("" for relay.db) */
    uint8_t pk[32];
    pid_t pid;
    int starts; /* relay<N>.log per start */
} ru_relay;

typedef struct {
    tsync_shop_key *k;
    uint8_t admin[32], data_key[32];
    uint8_t devs[8][TSYNC_PUBLIC_KEY_BYTES];
    size_t ndevs;
    uint8_t *grant;
    size_t grant_len;
} ru_shop;

/* `relay init TMP/relay` and `relay run` on store (NULL: relay.db). */
void ru_relay_new(ru_relay *r, const char *tmp, const char *store);

/* Kills the relay process (SIGKILL: no clean stop) and starts another on the same address, so
 * the tills' grants still name it. */
void ru_relay_restart(ru_relay *r);

/* A shop with its admin key in TMP/name.key, a data key and a grant for relay r, admitted there
 * with a quota of quota_mb MiB. */
void ru_shop_make(ru_shop *s, const char *tmp, const char *name, const ru_relay *r, int quota_mb);

void ru_shop_free(ru_shop *s);

/* A till of the shop at path (th_open_products): enrolled, with the data key (re-sealed to every
 * till so far) and the grant. */
tsync_store *ru_till_make(ru_shop *s, const char *path, const char *name);

/* A product named distinct, and rows of incompressible filler (about 1.2 KiB each), sealed. */
void ru_fill(tsync_store *t, int rows, const char *distinct);

/* ---- the store's vtable (store/relay_store.h), the same rules on every engine */

/* test_relay_store's envelope scenario on st, with st2 standing for a second relay process of
 * the same store (st itself for the SQLite store): admit (quota 1000), bind, put once and again
 * (by st2: duplicates), merged ranges, a put past the quota storing nothing, get from inside an
 * envelope and stopping, a revocation kept once. Returns the shop's id; pk is its admin key. */
int64_t ru_store_rules(tsync__rstore *st, tsync__rstore *st2, const uint8_t pk[32]);

/* The vault ops' rules on st (docs/RELAY.md, "The vault"): a chunk put twice is held once, an
 * uncommitted chunk put again with other bytes replaces it (its bytes counted once), commit
 * refuses a missing chunk and a wrong file hash and is a no-op the second time, a committed
 * chunk cannot change, list and get give what was committed, a put past the quota stores
 * nothing, delete gives the bytes back. A 1 MiB chunk and a short last one. */
void ru_vault_rules(tsync__rstore *st);

#endif
