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

pid_t ru_relay_start_store(const char *dir, const char *log, char *ep, const char *store)
{
    const char *argv[] = {nu_cli(),  "relay", "run", dir, "--listen", "tcp://127.0.0.1:*",
                          "--store", store,   NULL};
    if (!store) argv[6] = NULL;
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
