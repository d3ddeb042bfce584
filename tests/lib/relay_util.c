/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/relay_util.c — test tills for the relay (relay_util.h).
 */

#include "tests/lib/relay_util.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

/* ---------------------------------------------------------------- the relay process */

char *ru_run_out(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    cr_assert_eq(st, 0, "%s: %s", cmd, buf);
    return buf;
}

pid_t ru_relay_start(const char *dir, const char *log, char *ep)
{
    return ru_relay_start_store(dir, log, ep, NULL);
}

/* relay run dir on store (NULL: relay.db) listening on listen; the bound endpoint into ep. */
static pid_t relay_spawn(const char *dir, const char *log, char *ep, const char *store,
                         const char *listen)
{
    const char *argv[] = {nu_cli(), "relay",   "run", dir, "--listen",
                          listen,   "--store", store, NULL};
    if (!store || !*store) argv[6] = NULL;
    return ru_relay_start_argv(argv, log, ep);
}

pid_t ru_relay_start_argv(const char *const *argv, const char *log, char *ep)
{
    FILE *f = fopen(log, "w");
    fclose(f);
    pid_t pid = nu_spawn(argv, log);
    for (int i = 0; i < 200; i++) {
        nu_sleep_ms(50);
        f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "listening on ");
            if (!p) continue;
            snprintf(ep, NU_EP, "%s", p + 13);
            ep[strcspn(ep, "\n")] = 0;
            fclose(f);
            return pid;
        }
        if (f) fclose(f);
    }
    cr_assert_fail("the relay did not say where it listens (%s)", log);
    return pid;
}

pid_t ru_relay_start_store(const char *dir, const char *log, char *ep, const char *store)
{
    return relay_spawn(dir, log, ep, store, "tcp://127.0.0.1:*");
}

json_t *ru_status(const char *dir)
{
    return ru_status_store(dir, NULL);
}

json_t *ru_status_store(const char *dir, const char *store)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s relay status %s --json%s%s", nu_cli(), dir,
             store ? " --store " : "", store ? store : "");
    json_error_t e;
    json_t *j = json_loads(ru_run_out(cmd), 0, &e);
    cr_assert_not_null(j, "%s", e.text);
    return j;
}

long long ru_refused(json_t *st, const char *reason)
{
    return json_integer_value(json_object_get(json_object_get(st, "refused"), reason));
}

long long ru_shop_field(json_t *st, size_t i, const char *f)
{
    return json_integer_value(json_object_get(json_array_get(json_object_get(st, "shops"), i), f));
}

/* ---------------------------------------------------------------- a test ru_till */

void ru_till_new(ru_till *t, const tsync__shopkey *k, const char *name, uint64_t nb, uint64_t exp)
{
    memset(t, 0, sizeof *t);
    crypto_sign_keypair(t->pk, t->sk);
    t->cert = th_cert_make(k, t->pk, name, nb, exp, &t->cert_len);
    memcpy(t->shop_id, k->shop_id, 16);
    tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
    o.max_msg = TSYNC__RELAY_MSG_MAX;
    cr_assert_eq(tsync__tp_new(&t->tp, t->sk, &o), 0);
}

void ru_till_same_key(ru_till *t, const ru_till *of)
{
    memset(t, 0, sizeof *t);
    memcpy(t->sk, of->sk, sizeof t->sk);
    memcpy(t->pk, of->pk, sizeof t->pk);
    t->cert = malloc(of->cert_len);
    cr_assert_not_null(t->cert);
    memcpy(t->cert, of->cert, of->cert_len);
    t->cert_len = of->cert_len;
    memcpy(t->shop_id, of->shop_id, sizeof t->shop_id);
    tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
    o.max_msg = TSYNC__RELAY_MSG_MAX;
    cr_assert_eq(tsync__tp_new(&t->tp, t->sk, &o), 0);
}

void ru_till_free(ru_till *t)
{
    tsync__tp_free(t->tp);
    free(t->cert);
    free(t->last);
    tsync__arena_free(&t->a);
}

/* Waits for an event of kind; returns 1 when it came, 0 on timeout. */
int ru_wait_ev(ru_till *t, int kind, int ms, tsync__tp_event *ev)
{
    int64_t end = nu_now_ms() + ms;
    while (nu_now_ms() < end) {
        if (tsync__tp_poll(t->tp, 50, ev) == 1 && ev->kind == kind) return 1;
    }
    return 0;
}

void ru_send(ru_till *t, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__relay_encode(m, &b, &len, err), 0, "%s", err);
    cr_assert_eq(tsync__tp_send(t->tp, t->peer, b, len), 0);
    free(b);
}

/* The next message from the relay, decoded into t->m. */
const tsync__rmsg *ru_recv_any(ru_till *t)
{
    tsync__tp_event ev;
    cr_assert(ru_wait_ev(t, TSYNC__TP_EV_MESSAGE, 10000, &ev), "no message from the relay");
    free(t->last);
    t->last = malloc(ev.len);
    memcpy(t->last, ev.data, ev.len);
    t->last_len = ev.len;
    tsync__arena_free(&t->a);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__relay_decode(t->last, t->last_len, &t->m, &t->a, err), 0, "%s", err);
    return &t->m;
}

const tsync__rmsg *ru_recv(ru_till *t)
{
    for (;;) {
        const tsync__rmsg *m = ru_recv_any(t);
        if (m->type != TSYNC__R_ENV || m->req != 0) return m;
        t->pushes++;
    }
}

const tsync__rmsg *ru_recv_push(ru_till *t)
{
    const tsync__rmsg *m = ru_recv_any(t);
    cr_assert(m->type == TSYNC__R_ENV && m->req == 0, "expected a push, got type %u req %llu",
              m->type, (unsigned long long)m->req);
    t->pushes++;
    return m;
}

/* Says RHELLO on the session that is up; returns the answer (RHAVE or RERR). */
const tsync__rmsg *ru_hello_again(ru_till *t)
{
    tsync__rblob rec;
    tsync__rmsg h;
    tsync__relay_hello(&h, &rec, t->shop_id, t->cert, t->cert_len);
    ru_send(t, &h);
    const tsync__rmsg *m = ru_recv(t);
    /* The relay is who we dialled (its key pinned): what follows its answer is delivered too. */
    if (m->type == TSYNC__R_HAVE) cr_assert_eq(tsync__tp_peer_verified(t->tp, t->peer, NULL), 0);
    return m;
}

/* Connects and says RHELLO; returns the answer (RHAVE or RERR). */
const tsync__rmsg *ru_hello(ru_till *t, const char *ep, const uint8_t relay_pk[32])
{
    cr_assert_eq(tsync__tp_connect(t->tp, ep, relay_pk, &t->peer), 0);
    tsync__tp_event ev;
    cr_assert(ru_wait_ev(t, TSYNC__TP_EV_UP, 10000, &ev), "no session with the relay");
    return ru_hello_again(t);
}

void ru_expect_err(const tsync__rmsg *m, uint32_t code)
{
    cr_assert_eq(m->type, TSYNC__R_ERR, "expected RERR %s, got type %u", tsync__rerr_name(code),
                 m->type);
    cr_assert_eq(m->code, code, "expected %s, got %s: %.*s", tsync__rerr_name(code),
                 tsync__rerr_name(m->code), (int)m->line_len, m->line);
}

const tsync__rmsg *ru_get(ru_till *t, const uint8_t origin[16], uint64_t from, uint64_t max)
{
    tsync__rmsg g = {.type = TSYNC__R_GET, .req = 5, .from_seq = from, .max_bytes = max};
    memcpy(g.origin, origin, 16);
    ru_send(t, &g);
    const tsync__rmsg *m = ru_recv(t);
    cr_assert_eq(m->type, TSYNC__R_ENV, "RGET answered by type %u", m->type);
    cr_assert_eq(m->req, 5);
    return m;
}

/* Whether the bytes of the relay's files (relay.db and its WAL) contain needle. */
int ru_files_contain(const char *dir, const void *needle, size_t n)
{
    static const char *const names[] = {"relay.db", "relay.db-wal"};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *b = malloc((size_t)len + 1);
        size_t got = fread(b, 1, (size_t)len, f);
        fclose(f);
        int found = got >= n && memmem(b, got, needle, n) != NULL;
        free(b);
        if (found) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- any store's files */

static const void *tree_needle;
static size_t tree_n;
static int tree_found;

static int tree_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || sb->st_size == 0) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t *b = malloc((size_t)sb->st_size);
    size_t got = b ? fread(b, 1, (size_t)sb->st_size, f) : 0;
    fclose(f);
    tree_found = got >= tree_n && memmem(b, got, tree_needle, tree_n) != NULL;
    free(b);
    return tree_found;
}

int ru_tree_contains(const char *dir, const void *needle, size_t n)
{
    tree_needle = needle;
    tree_n = n;
    tree_found = 0;
    nftw(dir, tree_one, 16, FTW_PHYS);
    return tree_found;
}

/* ---------------------------------------------------------------- tills of real shops */

void ru_shop_new(ru_shop *s, const char *tmp, uint8_t seed, uint8_t id, const char *name)
{
    s->k = th_shop_make(seed, id, name);
    snprintf(s->keyfile, sizeof s->keyfile, "%s/%s.key", tmp, name);
    cr_assert_eq(tsync__shopkey_write(s->keyfile, &s->k), 0);
    cr_assert_eq(tsync_shop_key_load(&s->key, s->keyfile), 0, "%s", th_errmsg());
    randombytes_buf(s->dkey, sizeof s->dkey);
    sodium_bin2hex(s->admin_hex, sizeof s->admin_hex, s->k.pk, 32);
}

void ru_till_node(nu_node *t, const char *tmp, const char *name, const ru_shop *s)
{
    char db[NU_PATH];
    snprintf(db, sizeof db, "%s/%s.db", tmp, name);
    nu_make_db(db);
    nu_enrol(db, s->keyfile, name);
    nu_node_init(t, tmp, name, db);
    nu_pubkey(t->db, t->key);
}

void ru_install(const ru_shop *s, nu_node *const *tills, int n, const char *relay_ep,
                const uint8_t relay_pk[32], uint64_t grant_exp)
{
    uint8_t devs[8][TSYNC_PUBLIC_KEY_BYTES];
    cr_assert_leq(n, 8);
    for (int i = 0; i < n; i++)
        cr_assert_eq(sodium_hex2bin(devs[i], 32, tills[i]->key, 64, NULL, NULL, NULL), 0);
    uint8_t *dk, *gr;
    size_t dkl, grl;
    cr_assert_eq(tsync_shop_key_sign_data_key(&dk, &dkl, s->key, 1, s->dkey,
                                              (const uint8_t(*)[32])devs, (size_t)n),
                 0, "%s", th_errmsg());
    const char *addrs[1] = {relay_ep};
    uint64_t exp = grant_exp ? grant_exp : ru_wall_ms() + 30 * TH_DAY;
    cr_assert_eq(tsync_shop_key_sign_grant(&gr, &grl, s->key, addrs, (const uint8_t(*)[32])relay_pk,
                                           1, 100, exp),
                 0, "%s", th_errmsg());
    for (int i = 0; i < n; i++) {
        tsync_store *st = th_open(tills[i]->db);
        const uint8_t *recs[2] = {dk, gr};
        size_t lens[2] = {dkl, grl};
        cr_assert_eq(tsync_trust_enrol(NULL, st, recs, lens, 2), 0, "%s", th_errmsg());
        uint32_t held = 0;
        cr_assert_eq(tsync_store_data_key_epoch(&held, NULL, st), 0);
        cr_assert_eq(held, 1, "%s holds no data key", tills[i]->name);
        tsync_store_free(st);
    }
    tsync_free(dk);
    tsync_free(gr);
}

pid_t ru_relay_setup(const char *tmp, const char *dir, const char *const *argv, char *ep,
                     uint8_t pk[32])
{
    char cmd[2048], log[NU_PATH];
    snprintf(cmd, sizeof cmd, "%s relay init %s", nu_cli(), dir);
    char *out = strstr(ru_run_out(cmd), "public key: ");
    cr_assert_not_null(out);
    cr_assert_eq(sodium_hex2bin(pk, 32, out + 12, 64, NULL, NULL, NULL), 0);
    snprintf(log, sizeof log, "%s/relay.log", tmp);
    return argv ? ru_relay_start_argv(argv, log, ep) : ru_relay_start(dir, log, ep);
}

void ru_relay_up(ru_relay *r, const char *tmp, const char *exe, const char *arg)
{
    snprintf(r->dir, sizeof r->dir, "%s/relay", tmp);
    const char *argv[] = {exe, r->dir, arg, NULL};
    r->pid = ru_relay_setup(tmp, r->dir, exe ? argv : NULL, r->ep, r->pk);
}

void ru_shop_tills(ru_shop *s, const ru_relay *r, const char *tmp, uint8_t seed, uint8_t id,
                   const char *name, int quota_mb, nu_node *const *tills, const char *const *names,
                   int n)
{
    ru_shop_new(s, tmp, seed, id, name);
    if (quota_mb >= 0) ru_admit(r->dir, s, quota_mb);
    for (int i = 0; i < n; i++) ru_till_node(tills[i], tmp, names[i], s);
    ru_install(s, tills, n, r->ep, r->pk, 0);
}

void ru_put(ru_till *t, const tsync__renv *e, uint64_t req)
{
    tsync__rmsg put = {.type = TSYNC__R_PUT, .req = req, .nenvs = 1, .envs = (tsync__renv *)e};
    ru_send(t, &put);
    const tsync__rmsg *m = ru_recv(t);
    cr_assert(m->type == TSYNC__R_ACK && m->req == req && m->stored == 1,
              "put %llu not stored (type %u)", (unsigned long long)req, m->type);
}

void ru_admit(const char *dir, const ru_shop *s, int quota_mb)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb %d", nu_cli(), dir, s->admin_hex,
             quota_mb);
    ru_run_out(cmd);
}

uint64_t ru_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

long long ru_int(json_t *o, const char *f)
{
    return (long long)json_integer_value(json_object_get(o, f));
}

void ru_sell(const nu_node *t, const char *till, int first, int n)
{
    nu_seller s = {.first = first, .n = n, .pause_us = 2000};
    snprintf(s.db, sizeof s.db, "%s", t->db);
    snprintf(s.till, sizeof s.till, "%s", till);
    nu_seller_wait(nu_seller_start(&s), 60000, till);
}

json_t *ru_wait_relay_state(const nu_node *t, const char *want, uint64_t after_wall, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        json_t *st = nu_node_status(t);
        if (st && (uint64_t)json_integer_value(json_object_get(st, "updated_ms")) > after_wall) {
            json_t *r = json_object_get(st, "relay");
            const char *s = json_string_value(json_object_get(r, "state"));
            if (s && !strcmp(s, want)) {
                json_incref(r);
                json_decref(st);
                return r;
            }
        }
        json_decref(st);
        if (nu_now_ms() > end)
            cr_assert_fail("%s: relay not %s after %d ms\n%s", t->name, want, ms,
                           nu_node_describe(t));
        nu_sleep_ms(100);
    }
}

void ru_wait_relay_has_all(const nu_node *t, uint64_t after_wall, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        json_t *st = nu_node_status(t);
        json_t *r = st ? json_object_get(st, "relay") : NULL;
        const char *state = json_string_value(json_object_get(r, "state"));
        int ok =
            st && (uint64_t)json_integer_value(json_object_get(st, "updated_ms")) > after_wall &&
            state && !strcmp(state, "up") && json_is_integer(json_object_get(r, "relay_lacks")) &&
            ru_int(r, "relay_lacks") == 0;
        char *dump = r ? json_dumps(r, JSON_COMPACT) : NULL;
        json_decref(st);
        if (ok) {
            free(dump);
            return;
        }
        if (nu_now_ms() > end)
            cr_assert_fail("%s: the relay does not hold all of it: %s\n%s", t->name,
                           dump ? dump : "(no status)", nu_node_describe(t));
        free(dump);
        nu_sleep_ms(100);
    }
}

long long ru_env_refused(const nu_node *t, const char *reason)
{
    json_t *st = nu_node_status(t);
    json_t *v =
        json_object_get(json_object_get(json_object_get(st, "relay"), "envelopes_refused"), reason);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
    json_decref(st);
    return n;
}

/* ---------------------------------------------------------------- the store's vtable */

typedef struct {
    uint32_t norigins;
    tsync__rrange r[2][8];
    uint32_t n[2];
} ranges_out;

static int collect(void *ctx, const uint8_t origin[16], const tsync__rrange *g, uint32_t n)
{
    (void)origin;
    ranges_out *o = ctx;
    cr_assert(o->norigins < 2 && n <= 8);
    memcpy(o->r[o->norigins], g, n * sizeof *g);
    o->n[o->norigins++] = n;
    return 0;
}

typedef struct {
    uint64_t first[8];
    uint32_t n, stop_after;
} got_out;

static int got(void *ctx, const tsync__renv *e)
{
    got_out *g = ctx;
    g->first[g->n++] = e->first_seq;
    return g->stop_after && g->n == g->stop_after ? 1 : 0;
}

static tsync__renv env(uint8_t origin, uint64_t f, uint64_t l, const uint8_t *b, size_t n)
{
    tsync__renv e = {{0}, f, l, b, n};
    memset(e.origin, origin, 16);
    return e;
}

int64_t ru_store_rules(tsync__rstore *st, tsync__rstore *st2, const uint8_t pk[32])
{
    tsync__rshop shop;
    cr_assert_eq(st->ops->shop(st, pk, &shop), TSYNC_ENOTFOUND);
    cr_assert_eq(st->ops->admit(st, pk, 1000, 0, 1), 0);
    cr_assert_eq(st2->ops->shop(st2, pk, &shop), 0);
    cr_assert(shop.quota_bytes == 1000 && !shop.has_shop_id);
    uint8_t sid[16];
    memset(sid, 0x5a, 16);
    cr_assert_eq(st2->ops->bind_shop_id(st2, shop.id, sid), 0);
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert(shop.has_shop_id && !memcmp(shop.shop_id, sid, 16));
    uint8_t b[600];
    memset(b, 'x', sizeof b);
    tsync__renv e[4] = {env(1, 1, 2, b, 100), env(1, 3, 4, b, 100), env(1, 8, 9, b, 100),
                        env(2, 5, 5, b, 100)};
    uint64_t stored, dup;
    cr_assert_eq(st->ops->put(st, shop.id, 1000, e, 4, &stored, &dup), 0);
    cr_assert(stored == 4 && dup == 0);
    cr_assert_eq(st2->ops->put(st2, shop.id, 1000, e, 2, &stored, &dup), 0);
    cr_assert(stored == 0 && dup == 2, "a put twice was stored again");
    tsync__renv over = env(1, 2, 7, b, 100); /* overlaps 1..4, touches 8..9 */
    cr_assert_eq(st2->ops->put(st2, shop.id, 1000, &over, 1, &stored, &dup), 0);
    ranges_out ro = {0};
    cr_assert_eq(st->ops->ranges(st, shop.id, collect, &ro), 0);
    cr_assert_eq(ro.norigins, 2);
    cr_assert(ro.n[0] == 1 && ro.r[0][0].first == 1 && ro.r[0][0].last == 9, "not merged");
    cr_assert(ro.n[1] == 1 && ro.r[1][0].first == 5 && ro.r[1][0].last == 5);
    /* 500 held; 100 fits but 600 does not: nothing of the put is stored. */
    tsync__renv q[2] = {env(2, 6, 6, b, 100), env(2, 7, 7, b, 600)};
    cr_assert_eq(st->ops->put(st, shop.id, 1000, q, 2, &stored, &dup), TSYNC_EFULL);
    cr_assert_eq(stored, 0);
    cr_assert_eq(st2->ops->shop(st2, pk, &shop), 0);
    cr_assert(shop.bytes == 500 && shop.envelopes == 5, "bytes %llu envelopes %llu",
              (unsigned long long)shop.bytes, (unsigned long long)shop.envelopes);
    uint8_t o1[16], o2[16];
    memset(o1, 1, 16);
    memset(o2, 2, 16);
    got_out g = {0};
    cr_assert_eq(st->ops->get(st, shop.id, o2, 6, got, &g), 0);
    cr_assert_eq(g.n, 0, "an envelope of the refused put was stored");
    g = (got_out){0};
    cr_assert_eq(st->ops->get(st, shop.id, o1, 4, got, &g), 0); /* 3..4 holds seq 4 */
    cr_assert(g.n == 3 && g.first[0] == 2 && g.first[1] == 3 && g.first[2] == 8);
    g = (got_out){.stop_after = 1};
    cr_assert_eq(st2->ops->get(st2, shop.id, o1, 1, got, &g), 0);
    cr_assert_eq(g.n, 1);
    /* One put of old and new envelopes of two origins, one of them twice: the new ones are
     * stored and counted once, through the client whose last view of the shop record is stale
     * (the other wrote it since). */
    tsync__renv mix[5] = {env(1, 20, 20, b, 50), env(1, 1, 2, b, 100), env(3, 1, 1, b, 30),
                          env(1, 20, 20, b, 50), env(1, 8, 9, b, 100)};
    cr_assert_eq(st->ops->put(st, shop.id, 1000, mix, 5, &stored, &dup), 0);
    cr_assert(stored == 2 && dup == 3, "stored %llu dup %llu", (unsigned long long)stored,
              (unsigned long long)dup);
    cr_assert_eq(st2->ops->shop(st2, pk, &shop), 0);
    cr_assert(shop.bytes == 580 && shop.envelopes == 7, "bytes %llu envelopes %llu",
              (unsigned long long)shop.bytes, (unsigned long long)shop.envelopes);
    g = (got_out){0};
    cr_assert_eq(st->ops->get(st, shop.id, o1, 10, got, &g), 0);
    cr_assert(g.n == 1 && g.first[0] == 20);
    uint8_t dev[32];
    memset(dev, 9, 32);
    cr_assert_eq(st->ops->revoked(st, shop.id, dev), 0);
    cr_assert_eq(st->ops->revoke(st, shop.id, dev, (const uint8_t *)"rec", 3), 0);
    cr_assert_eq(st2->ops->revoke(st2, shop.id, dev, (const uint8_t *)"rec", 3), 0);
    cr_assert_eq(st2->ops->revoked(st2, shop.id, dev), 1);
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert_eq(shop.revocations, 1, "a revocation stored twice was counted twice");
    return shop.id;
}

static int idx_one(void *ctx, uint64_t index)
{
    uint64_t *v = ctx;
    cr_assert_lt(v[0], 7);
    v[1 + v[0]++] = index;
    return 0;
}

static int vb_one(void *ctx, const tsync__rvbackup *b)
{
    tsync__rvbackup *v = ctx;
    v[0].nchunks++; /* v[0] counts; the backups from v[1] */
    cr_assert_lt(v[0].nchunks, 4);
    v[v[0].nchunks] = *b;
    return 0;
}

typedef struct {
    uint8_t hash[TSYNC__VAULT_HASH_BYTES];
    uint8_t *bytes;
    size_t len;
} chunk_out;

static int chunk_one(void *ctx, const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes,
                     size_t len)
{
    chunk_out *c = ctx;
    memcpy(c->hash, hash, sizeof c->hash);
    c->bytes = malloc(len ? len : 1);
    memcpy(c->bytes, bytes, len);
    c->len = len;
    return 0;
}

static uint64_t shop_bytes(tsync__rstore *st, const uint8_t pk[32])
{
    tsync__rshop s;
    cr_assert_eq(st->ops->shop(st, pk, &s), 0);
    return s.bytes;
}

void ru_vault_rules(tsync__rstore *st)
{
    cr_assert_not_null(st->ops->vault_put, "this store has no vault");
    uint8_t pk[32];
    memset(pk, 0x77, 32);
    cr_assert_eq(st->ops->admit(st, pk, 8u << 20, 0, 1), 0);
    tsync__rshop shop;
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    const int64_t sh = shop.id;
    const size_t L0 = TSYNC__VAULT_CHUNK, L1 = 1000;
    uint8_t *c0 = malloc(L0), *other = malloc(L0), c1[1000];
    randombytes_buf(c0, L0);
    randombytes_buf(other, L0);
    randombytes_buf(c1, L1);
    uint8_t h0[32], h1[32], hother[32];
    crypto_generichash(h0, 32, c0, L0, NULL, 0);
    crypto_generichash(h1, 32, c1, L1, NULL, 0);
    crypto_generichash(hother, 32, other, L0, NULL, 0);
    tsync__rvbackup v = {.nchunks = 2, .size = L0 + L1, .created_ms = 1234, .epoch = 1};
    memset(v.id, 0x0b, sizeof v.id);
    memset(v.origin, 0x0c, sizeof v.origin);
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, 32);
    crypto_generichash_update(&hs, c0, L0);
    crypto_generichash_update(&hs, c1, L1);
    crypto_generichash_final(&hs, v.hash, 32);

    uint64_t have[8] = {0};
    cr_assert_eq(st->ops->vault_have(st, sh, v.id, idx_one, have), 0);
    cr_assert_eq(have[0], 0);
    int dup = -1;
    const uint64_t q = 8u << 20;
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 1, h1, c1, L1, &dup), 0, "%s", th_errmsg());
    cr_assert_eq(dup, 0);
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 1, h1, c1, L1, &dup), 0);
    cr_assert_eq(dup, 1, "a chunk put twice was stored again");
    cr_assert_eq(st->ops->vault_commit(st, sh, &v), TSYNC_ENOTFOUND, "chunk 0 is missing");
    /* Chunk 0 put with other bytes first, then the right ones: replaced, counted once. */
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 0, hother, other, L0, &dup), 0, "%s",
                 th_errmsg());
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 0, h0, c0, L0, &dup), 0, "%s", th_errmsg());
    cr_assert_eq(dup, 0);
    cr_assert_eq(shop_bytes(st, pk), L0 + L1, "a replaced chunk is still counted");
    have[0] = 0;
    cr_assert_eq(st->ops->vault_have(st, sh, v.id, idx_one, have), 0);
    cr_assert(have[0] == 2 && have[1] == 0 && have[2] == 1, "have %llu",
              (unsigned long long)have[0]);
    tsync__rvbackup bad = v;
    bad.hash[0] ^= 1;
    cr_assert_eq(st->ops->vault_commit(st, sh, &bad), TSYNC_ECORRUPT);
    bad = v;
    bad.nchunks = 1;
    cr_assert_eq(st->ops->vault_commit(st, sh, &bad), TSYNC_ECORRUPT, "chunk 1 is beyond");
    tsync__rvbackup none[4];
    memset(none, 0, sizeof none);
    cr_assert_eq(st->ops->vault_list(st, sh, vb_one, none), 0);
    cr_assert_eq(none[0].nchunks, 0, "an uncommitted backup is listed");
    cr_assert_eq(st->ops->vault_get(st, sh, v.id, 0, chunk_one, &(chunk_out){0}), TSYNC_ENOTFOUND);
    cr_assert_eq(st->ops->vault_commit(st, sh, &v), 0, "%s", th_errmsg());
    cr_assert_eq(st->ops->vault_commit(st, sh, &v), 0, "committing again is a no-op");
    bad = v;
    bad.size--;
    cr_assert_eq(st->ops->vault_commit(st, sh, &bad), TSYNC_EEXISTS);
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 0, hother, other, L0, &dup), TSYNC_EEXISTS,
                 "a committed chunk changed");
    cr_assert_eq(st->ops->vault_put(st, sh, q, v.id, 0, h0, c0, L0, &dup), 0);
    cr_assert_eq(dup, 1);

    tsync__rvbackup l[4];
    memset(l, 0, sizeof l);
    cr_assert_eq(st->ops->vault_list(st, sh, vb_one, l), 0);
    cr_assert_eq(l[0].nchunks, 1);
    cr_assert(!memcmp(l[1].id, v.id, sizeof v.id) && l[1].nchunks == 2 && l[1].size == L0 + L1 &&
              !memcmp(l[1].hash, v.hash, 32) && l[1].created_ms == 1234 &&
              !memcmp(l[1].origin, v.origin, sizeof v.origin) && l[1].epoch == 1);
    chunk_out co = {0};
    cr_assert_eq(st->ops->vault_get(st, sh, v.id, 0, chunk_one, &co), 0, "%s", th_errmsg());
    cr_assert(co.len == L0 && !memcmp(co.bytes, c0, L0) && !memcmp(co.hash, h0, 32),
              "chunk 0 came back otherwise (%zu bytes)", co.len);
    free(co.bytes);
    co = (chunk_out){0};
    cr_assert_eq(st->ops->vault_get(st, sh, v.id, 1, chunk_one, &co), 0);
    cr_assert(co.len == L1 && !memcmp(co.bytes, c1, L1));
    free(co.bytes);
    cr_assert_eq(st->ops->vault_get(st, sh, v.id, 2, chunk_one, &co), TSYNC_ENOTFOUND);

    /* Quota: what is held plus the new chunk must fit; a refused put stores nothing. */
    uint8_t id2[TSYNC__VAULT_ID_BYTES];
    memset(id2, 0x0d, sizeof id2);
    cr_assert_eq(st->ops->vault_put(st, sh, L0 + L1 + 500, id2, 0, h1, c1, L1, &dup), TSYNC_EFULL);
    cr_assert_eq(shop_bytes(st, pk), L0 + L1);
    have[0] = 0;
    cr_assert_eq(st->ops->vault_have(st, sh, id2, idx_one, have), 0);
    cr_assert_eq(have[0], 0, "a chunk refused for quota was stored");
    /* An unfinished upload counts, and its delete gives its bytes back. */
    cr_assert_eq(st->ops->vault_put(st, sh, q, id2, 0, h1, c1, L1, &dup), 0);
    cr_assert_eq(shop_bytes(st, pk), L0 + L1 + L1);
    uint64_t n = 9;
    cr_assert_eq(st->ops->vault_del(st, sh, id2, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(st->ops->vault_del(st, sh, v.id, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 2);
    cr_assert_eq(shop_bytes(st, pk), 0, "a deleted backup's bytes are still counted");
    cr_assert_eq(st->ops->vault_del(st, sh, v.id, &n), TSYNC_ENOTFOUND);
    tsync__rvbackup after[4];
    memset(after, 0, sizeof after);
    cr_assert_eq(st->ops->vault_list(st, sh, vb_one, after), 0);
    cr_assert_eq(after[0].nchunks, 0);
    cr_assert_eq(st->ops->vault_get(st, sh, v.id, 0, chunk_one, &co), TSYNC_ENOTFOUND);
    free(c0);
    free(other);
}

/* ---------------------------------------------------------------- cloud backup */

void ru_vrelay_new(ru_vrelay *r, const char *tmp, const char *store)
{
    memset(r, 0, sizeof *r);
    char cmd[1024], log[600];
    snprintf(r->dir, sizeof r->dir, "%s/relay", tmp);
    snprintf(r->store, sizeof r->store, "%s", store ? store : "");
    snprintf(log, sizeof log, "%s/relay.log", tmp);
    snprintf(cmd, sizeof cmd, "%s relay init %s", nu_cli(), r->dir);
    char *out = strstr(ru_run_out(cmd), "public key: ");
    cr_assert_not_null(out);
    cr_assert_eq(sodium_hex2bin(r->pk, 32, out + 12, 64, NULL, NULL, NULL), 0);
    r->pid = ru_relay_start_store(r->dir, log, r->ep, r->store);
}

void ru_vrelay_restart(ru_vrelay *r)
{
    cr_assert_geq(nu_kill(r->pid, SIGKILL, 10000), 0);
    char log[600], listen[NU_EP];
    snprintf(log, sizeof log, "%s/../relay%d.log", r->dir, ++r->starts + 1);
    snprintf(listen, sizeof listen, "%s", r->ep);
    r->pid = relay_spawn(r->dir, log, r->ep, r->store, listen);
    cr_assert_str_eq(r->ep, listen);
}

void ru_vshop_make(ru_vshop *s, const char *tmp, const char *name, const ru_vrelay *r, int quota_mb)
{
    memset(s, 0, sizeof *s);
    char path[600], hex[65], cmd[1400];
    snprintf(path, sizeof path, "%s/%s.key", tmp, name);
    cr_assert_eq(tsync_shop_key_create(&s->k, path, name), 0, "%s", th_errmsg());
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    cr_assert_eq(tsync_shop_key_info(&info, s->k), 0);
    memcpy(s->admin, info.admin_key, 32);
    randombytes_buf(s->data_key, sizeof s->data_key);
    const char *addrs[1] = {r->ep};
    uint8_t rk[1][TSYNC_PUBLIC_KEY_BYTES];
    memcpy(rk[0], r->pk, 32);
    cr_assert_eq(tsync_shop_key_sign_grant(&s->grant, &s->grant_len, s->k, addrs, rk, 1, 0,
                                           tsync__wall_ms() + 30 * TH_DAY),
                 0, "%s", th_errmsg());
    sodium_bin2hex(hex, sizeof hex, s->admin, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb %d%s%s", nu_cli(), r->dir, hex,
             quota_mb, *r->store ? " --store " : "", r->store);
    ru_run_out(cmd);
}

tsync_store *ru_till_make(ru_vshop *s, const char *path, const char *name)
{
    tsync_store *t = th_open_products(path);
    tsync_sign_options so = TSYNC_SIGN_OPTIONS_INIT;
    so.device_name = name;
    cr_assert_eq(tsync_trust_enrol_with_key(NULL, t, s->k, &so), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_public_key(s->devs[s->ndevs++], t), 0);
    uint8_t *dk;
    size_t dk_len;
    cr_assert_eq(
        tsync_shop_key_sign_data_key(&dk, &dk_len, s->k, 1, s->data_key, s->devs, s->ndevs), 0,
        "%s", th_errmsg());
    const uint8_t *recs[2] = {dk, s->grant};
    size_t lens[2] = {dk_len, s->grant_len};
    cr_assert_eq(tsync_trust_enrol(NULL, t, recs, lens, 2), 0, "%s", th_errmsg());
    uint32_t held = 0;
    cr_assert_eq(tsync_store_data_key_epoch(&held, NULL, t), 0);
    cr_assert_eq(held, 1);
    free(dk);
    return t;
}

void ru_vshop_free(ru_vshop *s)
{
    tsync_shop_key_free(s->k);
    free(s->grant);
}

void ru_fill(tsync_store *t, int rows, const char *distinct)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO products(id, name, price, stock) VALUES ('espresso', '%s', 123457, 40)",
             distinct);
    th_exec(t, sql);
    th_exec(t, "BEGIN");
    for (int i = 0; i < rows; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO products(id, name, price, stock) VALUES ('f%05d',"
                 " hex(randomblob(600)), %d, 1)",
                 i, i);
        th_exec(t, sql);
    }
    th_exec(t, "COMMIT");
    th_seal(t);
}
