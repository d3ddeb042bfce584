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

/* Another process of till of (the same device key and certificate) with its own transport (not
 * connected yet): a second session of one key. */
void ru_till_same_key(ru_till *t, const ru_till *of);

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

/* ---- tills of real shops on a real relay (`tillsync run` nodes: tests/lib/node_util.h) */

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/trust.h"

/* A test shop: its admin key file, key, data key (epoch 1) and admin key in hex. */
typedef struct {
    char keyfile[NU_PATH];
    tsync__shopkey k;
    tsync_shop_key *key;
    uint8_t dkey[TSYNC_DATA_KEY_BYTES];
    char admin_hex[65];
} ru_shop;

/* A shop made from seed and id (th_shop_make), its key file in tmp as NAME.key. */
void ru_shop_new(ru_shop *s, const char *tmp, uint8_t seed, uint8_t id, const char *name);

/* A till's database in tmp, enrolled in s, and its node (not started); its key is read. */
void ru_till_node(nu_node *t, const char *tmp, const char *name, const ru_shop *s);

/* Signs the data key (epoch 1, sealed to every till given) and a grant naming the relay that
 * expires at grant_exp (Unix ms; 0: in 30 days), and installs both on every till (they need not
 * be online together: nothing replicates them). */
void ru_install(const ru_shop *s, nu_node *const *tills, int n, const char *relay_ep,
                const uint8_t relay_pk[32], uint64_t grant_exp);

/* `tillsync relay init dir` (its public key to pk), then the relay started by argv (NULL:
 * `tillsync relay run dir`), logging to tmp/relay.log; its endpoint to ep. */
pid_t ru_relay_setup(const char *tmp, const char *dir, const char *const *argv, char *ep,
                     uint8_t pk[32]);

/* Starts argv (a relay that logs "listening on EP"), logging to log; the endpoint to ep. */
pid_t ru_relay_start_argv(const char *const *argv, const char *log, char *ep);

/* A relay in TMP/relay, started (the endpoint and public key known). */
typedef struct {
    char dir[NU_PATH], ep[NU_EP];
    uint8_t pk[32];
    pid_t pid;
} ru_relay;

/* Makes and starts r in tmp: `tillsync relay run`, or with exe the program `exe DIR arg` (a
 * relay that logs like it: tests/net/hostile_relay). */
void ru_relay_up(ru_relay *r, const char *tmp, const char *exe, const char *arg);

/* A shop made from seed and id, admitted at r with quota_mb (< 0: not admitted), and n tills of
 * it named names[i] (nodes not started) with its data key and a grant naming r installed. */
void ru_shop_tills(ru_shop *s, const ru_relay *r, const char *tmp, uint8_t seed, uint8_t id,
                   const char *name, int quota_mb, nu_node *const *tills, const char *const *names,
                   int n);

/* RPUT of e (req); asserts RACK with e stored. */
void ru_put(ru_till *t, const tsync__renv *e, uint64_t req);

/* `tillsync relay admit dir ADMIN --quota-mb quota_mb` of s. */
void ru_admit(const char *dir, const ru_shop *s, int quota_mb);

/* Unix ms now. */
uint64_t ru_wall_ms(void);

/* An integer field of a JSON object. */
long long ru_int(json_t *o, const char *f);

/* Sells n sales from first on t's database as till `till` (a seller process), waits for it. */
void ru_sell(const nu_node *t, const char *till, int first, int n);

/* Waits until t's status, written after after_wall (Unix ms), shows the relay in state want;
 * returns its relay object (the caller's). */
json_t *ru_wait_relay_state(const nu_node *t, const char *want, uint64_t after_wall, int ms);

/* Waits until t's status, written after after_wall, shows the relay up and lacking nothing of
 * this till's (every batch it sealed is stored at the relay). */
void ru_wait_relay_has_all(const nu_node *t, uint64_t after_wall, int ms);

/* relay.envelopes_refused.<reason> of t's status (-1 when unavailable). */
long long ru_env_refused(const nu_node *t, const char *reason);

/* ---- cloud backup (tillsync/vault.h) through a relay process */

typedef struct {
    char dir[512], ep[NU_EP], store[256]; /* store: its --store URL ("" for relay.db) */
    uint8_t pk[32];
    pid_t pid;
    int starts; /* relay<N>.log per start */
} ru_vrelay;

typedef struct {
    tsync_shop_key *k;
    uint8_t admin[32], data_key[32];
    uint8_t devs[8][TSYNC_PUBLIC_KEY_BYTES];
    size_t ndevs;
    uint8_t *grant;
    size_t grant_len;
} ru_vshop;

/* `relay init TMP/relay` and `relay run` on store (NULL: relay.db). */
void ru_vrelay_new(ru_vrelay *r, const char *tmp, const char *store);

/* Kills the relay process (SIGKILL: no clean stop) and starts another on the same address, so
 * the tills' grants still name it. */
void ru_vrelay_restart(ru_vrelay *r);

/* A shop with its admin key in TMP/name.key, a data key and a grant for relay r, admitted there
 * with a quota of quota_mb MiB. */
void ru_vshop_make(ru_vshop *s, const char *tmp, const char *name, const ru_vrelay *r,
                   int quota_mb);

void ru_vshop_free(ru_vshop *s);

/* A till of the shop at path (th_open_products): enrolled, with the data key (re-sealed to every
 * till so far) and the grant. */
tsync_store *ru_till_make(ru_vshop *s, const char *path, const char *name);

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
