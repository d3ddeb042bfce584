/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_relay_nats.c — the relay on its NATS JetStream store (`relay run --store
 * nats://...`, store/relay_store_nats.c), with real nats-server processes on loopback:
 * - one server: the protocol scenario of test_relay (put, duplicates stored once, merged ranges,
 *   RGET streamed by max bytes, refusals with their reasons counted, quota, revocation), the relay
 *   killed and started again serving all of it (it keeps no state of its own), and JetStream's
 *   files holding an envelope's bytes as given (a marker is found) but never a product name that
 *   was sealed into an envelope;
 * - a 3-node cluster and two relay processes, tills split between them: what a till stores on one
 *   relay is pushed to a till on the other and served by both; one NATS node and one relay
 *   process are killed mid-traffic: nothing acknowledged is lost and the killed relay's till goes
 *   on through the other;
 * - the store's vtable with two clients standing for two relay processes: test_relay_store's
 *   rules, an envelope put by both stored once, counters summed, a bad URL, no server.
 * - the vault: its ops' rules (ru_vault_rules, shared with test_relay_store), and cloud backup
 *   through a relay process killed and started again between steps: a cut upload resumed, list,
 *   restore --remote latest (content hash equal), backup --remote and delete by the CLI, the
 *   shop's bytes the backups' sizes, no product name in JetStream's files.
 * Skipped (with a message) only when nats-server is not installed.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/envelope.h"
#include "codec/relay.h"
#include "net/transport.h"
#include "store/relay_store.h"
#include "tests/lib/helpers.h"
#include "tests/lib/nats_util.h"
#include "tests/lib/node_util.h"
#include "tests/lib/relay_util.h"

TestSuite(relay_nats, .fini = nu_fini, .timeout = 120);

/* Without nats-server nothing here can run: exit 77 (ctest's SKIP_RETURN_CODE) with a line. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (ns_server_path()) return;
    fprintf(stderr, "test_relay_nats: skipped: nats-server is not installed (apt-get install "
                    "nats-server, or TSYNC_NATS_SERVER=PATH)\n");
    exit(77);
}

static const char MARKER[] = "MARKER-jetstream-blob-5c1e";
static const char PRODUCT[] = "Zebrafruit Espresso Deluxe 4711";

static void need_nats(void)
{
    if (!ns_server_path())
        cr_skip_test("nats-server is not installed (apt-get install nats-server)");
}

/* relay init DIR: its public key. */
static void relay_init(const char *dir, uint8_t pk[32])
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s relay init %s", nu_cli(), dir);
    char *out = strstr(ru_run_out(cmd), "public key: ");
    cr_assert_not_null(out);
    cr_assert_eq(sodium_hex2bin(pk, 32, out + 12, 64, NULL, NULL, NULL), 0);
}

static void admit(const char *dir, const char *store, const tsync__shopkey *k, const char *extra)
{
    char cmd[2048], hex[65];
    sodium_bin2hex(hex, sizeof hex, k->pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1 --store %s %s", nu_cli(), dir, hex,
             store, extra);
    ru_run_out(cmd);
}

Test(relay_nats, protocol_on_one_server)
{
    need_nats();
    const char *tmp = nu_tmpdir();
    ns_cluster ns;
    ns_start(&ns, tmp, 1);
    char dir[512], log[512], log2[512], ep[NU_EP];
    snprintf(dir, sizeof dir, "%s/relay", tmp);
    snprintf(log, sizeof log, "%s/relay.log", tmp);
    snprintf(log2, sizeof log2, "%s/relay2.log", tmp);
    uint8_t relay_pk[32];
    relay_init(dir, relay_pk);
    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A"), b = th_shop_make(2, 0xb2, "Shop B"),
                   c = th_shop_make(3, 0xc3, "Shop C");
    /* Before any admission the store holds nothing: status says where to start. */
    char *err = NULL;
    cr_assert_eq(nu_cli_run(NULL, &err, "relay", "status", dir, "--store", ns.url, NULL), 1);
    cr_assert(strstr(err, "no relay data here yet"), "%s", err);
    free(err);
    admit(dir, ns.url, &a, "");
    admit(dir, ns.url, &c, "--expires 2020-01-01");
    cr_assert_eq(
        nu_cli_run(NULL, &err, "relay", "status", dir, "--store", "tcp://127.0.0.1:1", NULL), 1);
    cr_assert(strstr(err, "not nats://HOST:PORT"), "%s", err);
    free(err);
    pid_t pid = ru_relay_start_store(dir, log, ep, ns.url);
    uint64_t now = (uint64_t)time(NULL) * 1000u;

    ru_till a1, a2;
    ru_till_new(&a1, &a, "till-a1", now - TH_DAY, now + 30 * TH_DAY);
    const tsync__rmsg *m = ru_hello(&a1, ep, relay_pk);
    cr_assert_eq(m->type, TSYNC__R_HAVE, "hello answered by %u", m->type);
    cr_assert_eq(m->norigins, 0);
    uint8_t ox[16], oy[16], blob1[4000], blob2[700], blob3[50];
    memset(ox, 0x11, 16);
    memset(oy, 0x22, 16);
    randombytes_buf(blob1, sizeof blob1);
    randombytes_buf(blob2, sizeof blob2);
    randombytes_buf(blob3, sizeof blob3);
    memcpy(blob1 + 100, MARKER, sizeof MARKER - 1);
    tsync__renv envs[3] = {{{0}, 1, 2, blob1, sizeof blob1},
                           {{0}, 3, 5, blob2, sizeof blob2},
                           {{0}, 1, 1, blob3, sizeof blob3}};
    memcpy(envs[0].origin, ox, 16);
    memcpy(envs[1].origin, ox, 16);
    memcpy(envs[2].origin, oy, 16);
    tsync__rmsg put = {.type = TSYNC__R_PUT, .req = 1, .nenvs = 3, .envs = envs};
    ru_send(&a1, &put);
    m = ru_recv(&a1);
    cr_assert_eq(m->type, TSYNC__R_ACK);
    cr_assert(m->req == 1 && m->stored == 3 && m->dup == 0, "stored %llu dup %llu",
              (unsigned long long)m->stored, (unsigned long long)m->dup);
    ru_send(&a1, &put); /* twice: stored once */
    m = ru_recv(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->stored == 0 && m->dup == 3);

    ru_till_new(&a2, &a, "till-a2", now - TH_DAY, now + 30 * TH_DAY);
    m = ru_hello(&a2, ep, relay_pk);
    cr_assert_eq(m->type, TSYNC__R_HAVE);
    cr_assert_eq(m->norigins, 2);
    cr_assert(memcmp(m->origins[0].origin, ox, 16) == 0);
    cr_assert(m->origins[0].nranges == 1 && m->origins[0].ranges[0].first == 1 &&
                  m->origins[0].ranges[0].last == 5,
              "ranges not merged");
    cr_assert(m->origins[1].nranges == 1 && m->origins[1].ranges[0].last == 1);
    m = ru_get(&a2, ox, 1, 1 << 20);
    cr_assert(m->nenvs == 2 && !m->more);
    cr_assert(m->envs[0].len == sizeof blob1 && !memcmp(m->envs[0].bytes, blob1, sizeof blob1));
    cr_assert(m->envs[1].len == sizeof blob2 && !memcmp(m->envs[1].bytes, blob2, sizeof blob2));
    cr_assert(m->envs[1].first_seq == 3 && m->envs[1].last_seq == 5);
    m = ru_get(&a2, ox, 1, 1); /* streamed by max bytes */
    cr_assert(m->nenvs == 1 && m->more && m->envs[0].last_seq == 2);
    m = ru_get(&a2, ox, 3, 1);
    cr_assert(m->nenvs == 1 && !m->more && m->envs[0].first_seq == 3);
    m = ru_get(&a2, oy, 2, 1 << 20);
    cr_assert(m->nenvs == 0 && !m->more);

    /* Quota: 1 MiB; 1.5 MiB more is refused and nothing of it is stored. */
    uint8_t *big = calloc(1, 1536 << 10);
    tsync__renv benv[2] = {{{0}, 6, 6, blob3, sizeof blob3}, {{0}, 7, 7, big, 1536 << 10}};
    memcpy(benv[0].origin, ox, 16);
    memcpy(benv[1].origin, ox, 16);
    tsync__rmsg bput = {.type = TSYNC__R_PUT, .req = 2, .nenvs = 2, .envs = benv};
    ru_send(&a2, &bput);
    ru_expect_err(ru_recv(&a2), TSYNC__RERR_QUOTA);
    free(big);
    m = ru_get(&a2, ox, 6, 1 << 20);
    cr_assert_eq(m->nenvs, 0, "an envelope of a refused put was stored");

    /* Refusals at RHELLO, and a revocation pushed by RTRUST. */
    ru_till tb, texp, tc, ta3;
    ru_till_new(&tb, &b, "till-b", now - TH_DAY, now + 30 * TH_DAY);
    ru_expect_err(ru_hello(&tb, ep, relay_pk), TSYNC__RERR_UNKNOWN_SHOP);
    ru_till_new(&texp, &a, "till-old", now - 30 * TH_DAY, now - TH_DAY);
    ru_expect_err(ru_hello(&texp, ep, relay_pk), TSYNC__RERR_EXPIRED);
    ru_till_new(&tc, &c, "till-c", now - TH_DAY, now + 30 * TH_DAY);
    ru_expect_err(ru_hello(&tc, ep, relay_pk), TSYNC__RERR_ADMISSION);
    ru_till_new(&ta3, &a, "till-a3", now - TH_DAY, now + 30 * TH_DAY);
    cr_assert_eq(ru_hello(&ta3, ep, relay_pk)->type, TSYNC__R_HAVE);
    size_t rl;
    uint8_t *rev = th_rev_make(&a, ta3.pk, NULL, 0, now, &rl);
    tsync__rblob rb = {rev, rl};
    tsync__rmsg tr = {.type = TSYNC__R_TRUST, .req = 8, .nrecs = 1, .recs = &rb};
    ru_send(&a1, &tr);
    m = ru_recv(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->req == 8 && m->stored == 1);
    ru_expect_err(ru_recv(&ta3), TSYNC__RERR_REVOKED);
    ru_send(&a1, &tr); /* again: the first record is kept, counted once */
    cr_assert_eq(ru_recv(&a1)->type, TSYNC__R_ACK);
    free(rev);

    json_t *st = ru_status_store(dir, ns.url);
    cr_assert_str_eq(json_string_value(json_object_get(st, "store")), ns.url);
    cr_assert_eq(ru_refused(st, "unknown_shop"), 1);
    cr_assert_eq(ru_refused(st, "expired"), 1);
    cr_assert_eq(ru_refused(st, "admission"), 1);
    cr_assert_eq(ru_refused(st, "revoked"), 1);
    cr_assert_eq(ru_refused(st, "quota"), 1);
    cr_assert_eq(ru_shop_field(st, 0, "envelopes"), 3, "refused tills stored something");
    cr_assert_eq(ru_shop_field(st, 0, "bytes"),
                 (long long)(sizeof blob1 + sizeof blob2 + sizeof blob3));
    cr_assert_eq(ru_shop_field(st, 0, "revocations"), 1);
    cr_assert_eq(ru_shop_field(st, 1, "envelopes"), 0);
    cr_assert_eq(json_integer_value(json_object_get(st, "sessions")), 3);
    json_decref(st);

    /* An envelope sealed by the real codec from a sale naming a product: stored and served. */
    tsync__env_header h = {.first_seq = 1, .last_seq = 1, .epoch = 1};
    memcpy(h.shop_id, a.shop_id, 16);
    memset(h.origin, 0x33, 16);
    uint8_t key[TSYNC__ENV_KEY_BYTES], *sealed;
    size_t sealed_len;
    char payload[256], serr[TSYNC__ERRLEN];
    randombytes_buf(key, sizeof key);
    int pl = snprintf(payload, sizeof payload, "INSERT sale: product='%s' price=12.34", PRODUCT);
    cr_assert_eq(
        tsync__env_seal(&h, key, (const uint8_t *)payload, (size_t)pl, &sealed, &sealed_len, serr),
        0, "%s", serr);
    cr_assert_null(memmem(sealed, sealed_len, PRODUCT, sizeof PRODUCT - 1),
                   "the sealed envelope shows the product name");
    tsync__renv se = {{0}, 1, 1, sealed, sealed_len};
    memset(se.origin, 0x33, 16);
    tsync__rmsg sput = {.type = TSYNC__R_PUT, .req = 9, .nenvs = 1, .envs = &se};
    ru_send(&a1, &sput);
    m = ru_recv(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->stored == 1);
    ru_till_free(&tb);
    ru_till_free(&texp);
    ru_till_free(&tc);
    ru_till_free(&ta3);
    ru_till_free(&a1);
    ru_till_free(&a2);

    /* The relay killed (no clean stop) and started again: JetStream had everything. */
    cr_assert_geq(nu_kill(pid, SIGKILL, 10000), 0);
    pid = ru_relay_start_store(dir, log2, ep, ns.url);
    ru_till a4;
    ru_till_new(&a4, &a, "till-a4", now - TH_DAY, now + 30 * TH_DAY);
    m = ru_hello(&a4, ep, relay_pk);
    cr_assert(m->type == TSYNC__R_HAVE && m->norigins == 3, "origins %u", m->norigins);
    m = ru_get(&a4, ox, 1, 1 << 20);
    cr_assert(m->nenvs == 2 && !memcmp(m->envs[0].bytes, blob1, sizeof blob1) &&
              !memcmp(m->envs[1].bytes, blob2, sizeof blob2));
    m = ru_get(&a4, se.origin, 1, 1 << 20);
    cr_assert(m->nenvs == 1 && m->envs[0].len == sealed_len &&
              !memcmp(m->envs[0].bytes, sealed, sealed_len));
    ru_till_free(&a4);
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0);
    ns_stop(&ns);

    /* JetStream's files hold the blobs as given (the marker, the sealed envelope's bytes) and
     * never the product name sealed inside one. */
    cr_assert(ru_tree_contains(ns.dir[0], MARKER, sizeof MARKER - 1),
              "the marker is not in JetStream's files");
    cr_assert(ru_tree_contains(ns.dir[0], sealed + 149, sealed_len - 149),
              "the sealed envelope is not in JetStream's files as given");
    cr_assert_not(ru_tree_contains(ns.dir[0], PRODUCT, sizeof PRODUCT - 1),
                  "a product name is in JetStream's files");
    free(sealed);
}

/* ---------------------------------------------------------------- two relays, 3 nodes */

/* The bytes of envelope (origin, seq) of the traffic: 200 bytes from the pair. */
static void traffic_blob(uint8_t out[200], uint8_t origin, uint64_t seq)
{
    for (int i = 0; i < 200; i++) out[i] = (uint8_t)(origin * 31 + seq * 7 + (uint64_t)i);
}

/* Puts envelope (origin, seq) and waits up to ms for its answer (pushes are counted and
 * skipped): 1 acknowledged (stored or duplicate), 0 refused (the store failed: try again),
 * -1 no answer (the relay is gone). */
static int try_put(ru_till *t, uint8_t origin, uint64_t seq, int ms)
{
    uint8_t blob[200];
    traffic_blob(blob, origin, seq);
    tsync__renv e = {{0}, seq, seq, blob, sizeof blob};
    memset(e.origin, origin, 16);
    tsync__rmsg put = {.type = TSYNC__R_PUT, .req = seq, .nenvs = 1, .envs = &e};
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__relay_encode(&put, &b, &len, err), 0);
    int sent = tsync__tp_send(t->tp, t->peer, b, len);
    free(b);
    if (sent) return -1;
    int64_t end = nu_now_ms() + ms;
    while (nu_now_ms() < end) {
        tsync__tp_event ev;
        if (tsync__tp_poll(t->tp, 50, &ev) != 1) continue;
        if (ev.kind == TSYNC__TP_EV_DOWN) return -1;
        if (ev.kind != TSYNC__TP_EV_MESSAGE) continue;
        tsync__arena a = {0};
        tsync__rmsg m;
        int rc = -2;
        if (tsync__relay_decode(ev.data, ev.len, &m, &a, err) == 0) {
            if (m.type == TSYNC__R_ENV && m.req == 0)
                t->pushes++;
            else if (m.type == TSYNC__R_ACK && m.req == seq)
                rc = 1;
            else if (m.type == TSYNC__R_ERR && m.req == seq)
                rc = 0;
        }
        tsync__arena_free(&a);
        if (rc >= 0) return rc;
    }
    return -1;
}

Test(relay_nats, two_relays_on_a_cluster)
{
    need_nats();
    const char *tmp = nu_tmpdir();
    ns_cluster ns;
    ns_start(&ns, tmp, 3);
    char dir[512], log1[512], log2[512], ep1[NU_EP], ep2[NU_EP];
    snprintf(dir, sizeof dir, "%s/relay", tmp);
    snprintf(log1, sizeof log1, "%s/relay1.log", tmp);
    snprintf(log2, sizeof log2, "%s/relay2.log", tmp);
    uint8_t relay_pk[32];
    relay_init(dir, relay_pk);
    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A");
    admit(dir, ns.url, &a, "");
    /* Two relay processes of the same key and store: a till may use either. */
    pid_t r1 = ru_relay_start_store(dir, log1, ep1, ns.url);
    pid_t r2 = ru_relay_start_store(dir, log2, ep2, ns.url);
    uint64_t now = (uint64_t)time(NULL) * 1000u;
    ru_till t1, t2;
    ru_till_new(&t1, &a, "till-1", now - TH_DAY, now + 30 * TH_DAY);
    ru_till_new(&t2, &a, "till-2", now - TH_DAY, now + 30 * TH_DAY);
    cr_assert_eq(ru_hello(&t1, ep1, relay_pk)->type, TSYNC__R_HAVE);
    cr_assert_eq(ru_hello(&t2, ep2, relay_pk)->type, TSYNC__R_HAVE);

    /* What t1 stores on relay 1 is pushed to t2 on relay 2, and the other way round. */
    cr_assert_eq(try_put(&t1, 0x41, 1, 10000), 1);
    const tsync__rmsg *m = ru_recv_push(&t2);
    uint8_t want[200];
    traffic_blob(want, 0x41, 1);
    cr_assert(m->nenvs == 1 && m->envs[0].first_seq == 1 && m->envs[0].len == 200 &&
                  !memcmp(m->envs[0].bytes, want, 200),
              "the push across relays is not the envelope stored");
    cr_assert_eq(try_put(&t2, 0x42, 1, 10000), 1);
    m = ru_recv_push(&t1);
    cr_assert(m->nenvs == 1 && m->envs[0].origin[0] == 0x42);
    uint8_t o41[16];
    memset(o41, 0x41, 16);
    m = ru_get(&t2, o41, 1, 1 << 20); /* served by relay 2 from what relay 1 stored */
    cr_assert(m->nenvs == 1 && !memcmp(m->envs[0].bytes, want, 200));

    /* Traffic from both tills; half way, one NATS node and relay 2 are killed. t2 moves to
     * relay 1. Every put is retried until acknowledged. */
    const uint64_t N = 40;
    for (uint64_t seq = 2; seq <= N; seq++) {
        if (seq == N / 2) {
            ns_kill(&ns, 0);
            cr_assert_geq(nu_kill(r2, SIGKILL, 10000), 0);
        }
        ru_till *ts[2] = {&t1, &t2};
        for (int k = 0; k < 2; k++) {
            int64_t end = nu_now_ms() + 30000;
            int rc;
            while ((rc = try_put(ts[k], (uint8_t)(0x41 + k), seq, 3000)) != 1) {
                cr_assert_lt(nu_now_ms(), end, "till %d: seq %llu never acknowledged", k + 1,
                             (unsigned long long)seq);
                if (rc == -1 && k == 1) {
                    /* Relay 2 is gone: the till goes to relay 1. */
                    tsync__tp_close(t2.tp, t2.peer);
                    m = ru_hello(&t2, ep1, relay_pk);
                    cr_assert_eq(m->type, TSYNC__R_HAVE, "relay 1 refused the moved till");
                } else if (rc == 0) {
                    nu_sleep_ms(200); /* the store failed (a leader election): again */
                }
            }
        }
    }

    /* Nothing acknowledged is lost: a new till sees both origins 1..N, byte for byte. */
    ru_till t3;
    ru_till_new(&t3, &a, "till-3", now - TH_DAY, now + 30 * TH_DAY);
    m = ru_hello(&t3, ep1, relay_pk);
    cr_assert(m->type == TSYNC__R_HAVE && m->norigins == 2);
    for (int k = 0; k < 2; k++)
        cr_assert(m->origins[k].nranges == 1 && m->origins[k].ranges[0].first == 1 &&
                      m->origins[k].ranges[0].last == N,
                  "origin %d: %u ranges, last %llu", k, m->origins[k].nranges,
                  (unsigned long long)m->origins[k].ranges[0].last);
    for (int k = 0; k < 2; k++) {
        uint8_t o[16];
        memset(o, 0x41 + k, 16);
        uint64_t next = 1;
        while (next <= N) {
            m = ru_get(&t3, o, next, 1 << 20);
            cr_assert_gt(m->nenvs, 0);
            for (uint32_t i = 0; i < m->nenvs; i++) {
                traffic_blob(want, (uint8_t)(0x41 + k), next);
                cr_assert(m->envs[i].first_seq == next && m->envs[i].len == 200 &&
                              !memcmp(m->envs[i].bytes, want, 200),
                          "origin %d seq %llu differs", k, (unsigned long long)next);
                next++;
            }
        }
    }
    json_t *st = ru_status_store(dir, ns.url);
    cr_assert_eq(ru_shop_field(st, 0, "envelopes"), (long long)(2 * N));
    cr_assert_eq(ru_shop_field(st, 0, "bytes"), (long long)(2 * N * 200));
    json_decref(st);
    cr_assert_gt(t1.pushes, 0);
    ru_till_free(&t1);
    ru_till_free(&t2);
    ru_till_free(&t3);
    cr_assert_eq(nu_kill(r1, SIGTERM, 10000), 0);
    ns_stop(&ns);
}

/* ---------------------------------------------------------------- the store's vtable */

typedef struct {
    int shops;
    int64_t quota_refused, open;
} stats_out;

static int st_shop(void *ctx, const tsync__rshop *s)
{
    (void)s;
    ((stats_out *)ctx)->shops++;
    return 0;
}

static int st_ctr(void *ctx, const char *name, int64_t n)
{
    stats_out *o = ctx;
    if (!strcmp(name, "refused.quota")) o->quota_refused = n;
    if (!strcmp(name, "sessions_open")) o->open = n;
    return 0;
}

/* The rules of store/relay_store.h on JetStream, with two clients of one server standing for two
 * relay processes: test_relay_store's scenario; one envelope put by both is stored and counted
 * once; a counter set by each is their sum; a shop admitted by one is the other's. */
Test(relay_nats, store_rules_two_clients)
{
    need_nats();
    ns_cluster ns;
    ns_start(&ns, nu_tmpdir(), 1);
    tsync__rstore *st, *st2;
    cr_assert_eq(tsync__rstore_nats_open(&st, "tcp://127.0.0.1:1", 1), TSYNC_EINVAL);
    cr_assert_eq(tsync__rstore_nats_open(&st, "nats://127.0.0.1:1", 1), TSYNC_EIO);
    cr_assert_eq(tsync__rstore_nats_open(&st, ns.url, 0), TSYNC_ENOTFOUND);
    cr_assert_eq(tsync__rstore_nats_open(&st, ns.url, 1), 0);
    cr_assert_eq(tsync__rstore_nats_open(&st2, ns.url, 0), 0);
    uint8_t pk[32];
    memset(pk, 7, 32);
    ru_store_rules(st, st2, pk);
    cr_assert_eq(st->ops->count(st, "refused.quota", 2, 0), 0);
    cr_assert_eq(st2->ops->count(st2, "refused.quota", 1, 0), 0);
    cr_assert_eq(st->ops->count(st, "sessions_open", 3, 1), 0);
    cr_assert_eq(st2->ops->count(st2, "sessions_open", 2, 1), 0);
    cr_assert_eq(st->ops->count(st, "sessions_open", 1, 1), 0);
    stats_out so = {0};
    cr_assert_eq(st2->ops->stats(st2, st_shop, &so, st_ctr), 0);
    cr_assert(so.shops == 1 && so.quota_refused == 3 && so.open == 3,
              "shops %d quota %lld open %lld", so.shops, (long long)so.quota_refused,
              (long long)so.open);
    st->ops->close(st);
    st2->ops->close(st2);
    ns_stop(&ns);
}

/* ---------------------------------------------------------------- the vault on JetStream */

/* The vault ops' rules (test_relay_store's vault_rules) on JetStream: a 1 MiB chunk goes as two
 * parts on a server of the default max_payload, and comes back whole. */
Test(relay_nats, vault_rules)
{
    need_nats();
    ns_cluster ns;
    ns_start(&ns, nu_tmpdir(), 1);
    tsync__rstore *st;
    cr_assert_eq(tsync__rstore_nats_open(&st, ns.url, 1), 0);
    ru_vault_rules(st);
    st->ops->close(st);
    ns_stop(&ns);
}

static const char VAULT_NAME[] = "Nordlicht Kaffeebohnen Vault 8c3e";

/* The backups listed for db, by the CLI (`backup list --remote --json`): their count, the id
 * of the newest into id (TSYNC_VAULT_ID_HEX) and their sizes added up into *size. */
static size_t listed(const char *db, char *id, long long *size)
{
    char *out = nu_cli_ok("backup", "list", db, "--remote", "--json", NULL);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    json_t *arr = json_object_get(j, "backups"), *e;
    size_t i, n = json_array_size(arr);
    *size = 0;
    json_array_foreach(arr, i, e)
    {
        *size += json_integer_value(json_object_get(e, "size"));
        snprintf(id, TSYNC_VAULT_ID_HEX, "%s", json_string_value(json_object_get(e, "id")));
    }
    json_decref(j);
    free(out);
    return n;
}

/* Cloud backup through a relay on JetStream, the relay process killed and started again between
 * every step (so each step finds only what JetStream holds): an upload cut after two chunks,
 * resumed sending only the rest; listed by the CLI on another till; `restore --remote latest`
 * on a fresh till gives the source's content hash; `backup --remote` by the CLI, then delete;
 * the shop's bytes are the backups' sizes; JetStream's files hold no product name. */
Test(relay_nats, vault_through_a_restarted_relay)
{
    need_nats();
    const char *tmp = nu_tmpdir();
    ns_cluster ns;
    ns_start(&ns, tmp, 1);
    ru_vrelay r;
    ru_vrelay_new(&r, tmp, ns.url);
    /* The relay folder's relay.db (made by relay init) is not the store: nothing writes it. */
    char db[700];
    snprintf(db, sizeof db, "%s/relay.db", r.dir);
    struct stat db0 = {0};
    stat(db, &db0);
    ru_vshop a;
    ru_vshop_make(&a, tmp, "NatsShop", &r, 200);
    char p1[600], p2[600], p3[600];
    snprintf(p1, sizeof p1, "%s/n1.db", tmp);
    snprintf(p2, sizeof p2, "%s/n2.db", tmp);
    snprintf(p3, sizeof p3, "%s/n3.db", tmp);
    tsync_store *t1 = ru_till_make(&a, p1, "till-n1");
    tsync_store_free(ru_till_make(&a, p2, "till-n2"));
    ru_fill(t1, 2500, VAULT_NAME);
    char src_hash[65];
    snprintf(src_hash, sizeof src_hash, "%s", th_hash(t1));
    tsync_store_free(t1);

    tsync_vault_options o = TSYNC_VAULT_OPTIONS_INIT;
    o.max_chunks = 2;
    tsync_vault_report rep = TSYNC_VAULT_REPORT_INIT;
    cr_assert_eq(tsync_vault_backup(p1, &o, &rep), 0, "%s", th_errmsg());
    cr_assert(rep.complete == 0 && rep.chunks_sent == 2);
    uint32_t nchunks = rep.backup.chunks;
    cr_assert(nchunks >= 4, "the backup is %u chunks: the filler should make more", nchunks);
    ru_vrelay_restart(&r);
    o.max_chunks = 0;
    tsync_vault_report rep2 = TSYNC_VAULT_REPORT_INIT;
    cr_assert_eq(tsync_vault_backup(p1, &o, &rep2), 0, "%s", th_errmsg());
    cr_assert(rep2.resumed == 1 && rep2.complete == 1 && rep2.chunks_held == 2);
    cr_assert_eq(rep2.chunks_sent, nchunks - 2, "sent %u of %u", rep2.chunks_sent, nchunks);
    cr_assert_str_eq(rep2.backup.id, rep.backup.id);

    ru_vrelay_restart(&r);
    char id[TSYNC_VAULT_ID_HEX];
    long long size;
    cr_assert_eq(listed(p2, id, &size), 1);
    cr_assert_str_eq(id, rep.backup.id);
    json_t *st = ru_status_store(r.dir, ns.url);
    cr_assert_eq(ru_shop_field(st, 0, "bytes"), size, "the shop's bytes are not the backup's");
    json_decref(st);

    ru_vrelay_restart(&r);
    tsync_store_free(ru_till_make(&a, p3, "till-n3"));
    char *out = nu_cli_ok("restore", p3, "--remote", "latest", NULL);
    cr_assert(strstr(out, "restored"), "%s", out);
    free(out);
    tsync_store *t3 = th_open_products(p3);
    cr_assert_str_eq(th_hash(t3), src_hash, "the restored content differs");
    tsync_store_free(t3);

    ru_vrelay_restart(&r);
    out = nu_cli_ok("backup", p2, "--remote", NULL);
    free(out);
    char newest[TSYNC_VAULT_ID_HEX];
    cr_assert_eq(listed(p1, newest, &size), 2);
    cr_assert_str_neq(newest, id);
    ru_vrelay_restart(&r);
    out = nu_cli_ok("backup", "delete", p1, "--remote", id, NULL);
    free(out);
    cr_assert_eq(listed(p2, newest, &size), 1, "the deleted backup is still listed");
    st = ru_status_store(r.dir, ns.url);
    cr_assert_eq(ru_shop_field(st, 0, "bytes"), size, "a deleted backup's bytes still count");
    json_decref(st);
    char *err = NULL;
    cr_assert_eq(nu_cli_run(NULL, &err, "restore", p3, "--remote", id, NULL), 1);
    free(err);

    cr_assert_eq(nu_kill(r.pid, SIGTERM, 10000), 0);
    struct stat db1;
    cr_assert(stat(db, &db1) != 0 ||
                  (db1.st_size == db0.st_size && db1.st_mtim.tv_sec == db0.st_mtim.tv_sec &&
                   db1.st_mtim.tv_nsec == db0.st_mtim.tv_nsec),
              "the relay wrote state of its own (%s)", db);
    ns_stop(&ns);
    cr_assert_not(ru_tree_contains(ns.dir[0], VAULT_NAME, sizeof VAULT_NAME - 1),
                  "a product name is in JetStream's files");
    cr_assert_not(ru_tree_contains(ns.dir[0], "till-n1", 7),
                  "a device name is in JetStream's files");
    ru_vshop_free(&a);
}
