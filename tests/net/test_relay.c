/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_relay.c — a real `tillsync relay run` on loopback and test tills speaking the
 * relay protocol (codec/relay.c) over CURVE with device keys certified by the shop API: an
 * admitted till puts envelopes and another till of the shop gets them back byte-identical
 * (duplicates stored once, ranges merged, RGET streamed by max bytes); a till of an unadmitted
 * shop, an expired certificate, a revoked one (revocation pushed by RTRUST: a served till's
 * session is cut at once, and it is refused at RHELLO after), an expired admission and a quota
 * overflow are each refused with their reason, counted in `relay status --json`, and
 * store nothing; a wrong relay key fails the handshake; the relay restarted still serves what it
 * stored; the relay's files hold each blob as given (the marker is found).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/relay.h"
#include "net/transport.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

TestSuite(relay, .fini = nu_fini, .timeout = 120);

static const char MARKER[] = "MARKER-relay-blob-7f3a";

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
    tsync__rmsg m; /* decoded from last */
} till;

/* ---------------------------------------------------------------- the relay process */

static char *run_out(const char *cmd)
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

static pid_t relay_start(const char *dir, const char *log, char *ep)
{
    const char *argv[] = {nu_cli(), "relay", "run", dir, "--listen", "tcp://127.0.0.1:*", NULL};
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

static json_t *status(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s relay status %s --json", nu_cli(), dir);
    json_error_t e;
    json_t *j = json_loads(run_out(cmd), 0, &e);
    cr_assert_not_null(j, "%s", e.text);
    return j;
}

static long long refused(json_t *st, const char *reason)
{
    return json_integer_value(json_object_get(json_object_get(st, "refused"), reason));
}

static long long shop_field(json_t *st, size_t i, const char *f)
{
    return json_integer_value(json_object_get(json_array_get(json_object_get(st, "shops"), i), f));
}

/* ---------------------------------------------------------------- a test till */

static void till_new(till *t, const tsync__shopkey *k, const char *name, uint64_t nb, uint64_t exp)
{
    memset(t, 0, sizeof *t);
    crypto_sign_keypair(t->pk, t->sk);
    t->cert = th_cert_make(k, t->pk, name, nb, exp, &t->cert_len);
    memcpy(t->shop_id, k->shop_id, 16);
    tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
    o.max_msg = TSYNC__RELAY_MSG_MAX;
    cr_assert_eq(tsync__tp_new(&t->tp, t->sk, &o), 0);
}

static void till_free(till *t)
{
    tsync__tp_free(t->tp);
    free(t->cert);
    free(t->last);
    tsync__arena_free(&t->a);
}

/* Waits for an event of kind; returns 1 when it came, 0 on timeout. */
static int wait_ev(till *t, int kind, int ms, tsync__tp_event *ev)
{
    int64_t end = nu_now_ms() + ms;
    while (nu_now_ms() < end) {
        if (tsync__tp_poll(t->tp, 50, ev) == 1 && ev->kind == kind) return 1;
    }
    return 0;
}

static void send_m(till *t, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__relay_encode(m, &b, &len, err), 0, "%s", err);
    cr_assert_eq(tsync__tp_send(t->tp, t->peer, b, len), 0);
    free(b);
}

/* The next message from the relay, decoded into t->m. */
static const tsync__rmsg *recv_m(till *t)
{
    tsync__tp_event ev;
    cr_assert(wait_ev(t, TSYNC__TP_EV_MESSAGE, 10000, &ev), "no answer from the relay");
    free(t->last);
    t->last = malloc(ev.len);
    memcpy(t->last, ev.data, ev.len);
    t->last_len = ev.len;
    tsync__arena_free(&t->a);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__relay_decode(t->last, t->last_len, &t->m, &t->a, err), 0, "%s", err);
    return &t->m;
}

/* Connects and says RHELLO; returns the answer (RHAVE or RERR). */
/* Says RHELLO on the session that is up; returns the answer (RHAVE or RERR). */
static const tsync__rmsg *hello_again(till *t)
{
    tsync__rblob rec = {t->cert, t->cert_len};
    tsync__rmsg h = {
        .type = TSYNC__R_HELLO, .version = TSYNC__RELAY_PROTO, .nrecs = 1, .recs = &rec};
    memcpy(h.shop_id, t->shop_id, 16);
    send_m(t, &h);
    const tsync__rmsg *m = recv_m(t);
    /* The relay is who we dialled (its key pinned): what follows its answer is delivered too. */
    if (m->type == TSYNC__R_HAVE) cr_assert_eq(tsync__tp_peer_verified(t->tp, t->peer, NULL), 0);
    return m;
}

/* Connects and says RHELLO; returns the answer (RHAVE or RERR). */
static const tsync__rmsg *till_hello(till *t, const char *ep, const uint8_t relay_pk[32])
{
    cr_assert_eq(tsync__tp_connect(t->tp, ep, relay_pk, &t->peer), 0);
    tsync__tp_event ev;
    cr_assert(wait_ev(t, TSYNC__TP_EV_UP, 10000, &ev), "no session with the relay");
    return hello_again(t);
}

static void expect_err(const tsync__rmsg *m, uint32_t code)
{
    cr_assert_eq(m->type, TSYNC__R_ERR, "expected RERR %s, got type %u", tsync__rerr_name(code),
                 m->type);
    cr_assert_eq(m->code, code, "expected %s, got %s: %.*s", tsync__rerr_name(code),
                 tsync__rerr_name(m->code), (int)m->line_len, m->line);
}

static const tsync__rmsg *get(till *t, const uint8_t origin[16], uint64_t from, uint64_t max)
{
    tsync__rmsg g = {.type = TSYNC__R_GET, .req = 5, .from_seq = from, .max_bytes = max};
    memcpy(g.origin, origin, 16);
    send_m(t, &g);
    const tsync__rmsg *m = recv_m(t);
    cr_assert_eq(m->type, TSYNC__R_ENV, "RGET answered by type %u", m->type);
    cr_assert_eq(m->req, 5);
    return m;
}

/* Whether the bytes of the relay's files (relay.db and its WAL) contain needle. */
static int files_contain(const char *dir, const void *needle, size_t n)
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

Test(relay, serve_refuse_restart)
{
    const char *tmp = nu_tmpdir();
    char dir[512], log[512], log2[512], cmd[2048], ep[NU_EP], hex[65];
    snprintf(dir, sizeof dir, "%s/relay", tmp);
    snprintf(log, sizeof log, "%s/relay.log", tmp);
    snprintf(log2, sizeof log2, "%s/relay2.log", tmp);
    snprintf(cmd, sizeof cmd, "%s relay init %s", nu_cli(), dir);
    char *out = strstr(run_out(cmd), "public key: ");
    cr_assert_not_null(out);
    uint8_t relay_pk[32];
    cr_assert_eq(sodium_hex2bin(relay_pk, 32, out + 12, 64, NULL, NULL, NULL), 0);

    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A"), b = th_shop_make(2, 0xb2, "Shop B"),
                   c = th_shop_make(3, 0xc3, "Shop C");
    sodium_bin2hex(hex, sizeof hex, a.pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1", nu_cli(), dir, hex);
    run_out(cmd);
    sodium_bin2hex(hex, sizeof hex, c.pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1 --expires 2020-01-01", nu_cli(),
             dir, hex);
    run_out(cmd);
    pid_t pid = relay_start(dir, log, ep);
    uint64_t now = (uint64_t)time(NULL) * 1000u;

    /* Till A1 puts three envelopes of two origins, the blob with a marker. */
    till a1, a2;
    till_new(&a1, &a, "till-a1", now - TH_DAY, now + 30 * TH_DAY);
    const tsync__rmsg *m = till_hello(&a1, ep, relay_pk);
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
    send_m(&a1, &put);
    m = recv_m(&a1);
    cr_assert_eq(m->type, TSYNC__R_ACK);
    cr_assert(m->req == 1 && m->stored == 3 && m->dup == 0, "stored %llu dup %llu",
              (unsigned long long)m->stored, (unsigned long long)m->dup);
    send_m(&a1, &put); /* twice: stored once */
    m = recv_m(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->stored == 0 && m->dup == 3);

    /* Till A2 of the same shop sees merged ranges and gets the envelopes byte-identical. */
    till_new(&a2, &a, "till-a2", now - TH_DAY, now + 30 * TH_DAY);
    m = till_hello(&a2, ep, relay_pk);
    cr_assert_eq(m->type, TSYNC__R_HAVE);
    cr_assert_eq(m->norigins, 2);
    cr_assert(memcmp(m->origins[0].origin, ox, 16) == 0);
    cr_assert(m->origins[0].nranges == 1 && m->origins[0].ranges[0].first == 1 &&
                  m->origins[0].ranges[0].last == 5,
              "ranges not merged");
    cr_assert(m->origins[1].nranges == 1 && m->origins[1].ranges[0].last == 1);
    m = get(&a2, ox, 1, 1 << 20);
    cr_assert(m->nenvs == 2 && !m->more);
    cr_assert(m->envs[0].len == sizeof blob1 && !memcmp(m->envs[0].bytes, blob1, sizeof blob1));
    cr_assert(m->envs[1].len == sizeof blob2 && !memcmp(m->envs[1].bytes, blob2, sizeof blob2));
    cr_assert(m->envs[1].first_seq == 3 && m->envs[1].last_seq == 5);
    m = get(&a2, ox, 1, 1); /* streamed by max bytes: one envelope, more follow */
    cr_assert(m->nenvs == 1 && m->more && m->envs[0].last_seq == 2);
    m = get(&a2, ox, 3, 1);
    cr_assert(m->nenvs == 1 && !m->more && m->envs[0].first_seq == 3);
    m = get(&a2, oy, 2, 1 << 20);
    cr_assert(m->nenvs == 0 && !m->more);

    /* Quota: 1 MiB; 1.5 MiB more is refused and nothing of it is stored. */
    uint8_t *big = calloc(1, 1536 << 10);
    tsync__renv benv[2] = {{{0}, 6, 6, blob3, sizeof blob3}, {{0}, 7, 7, big, 1536 << 10}};
    memcpy(benv[0].origin, ox, 16);
    memcpy(benv[1].origin, ox, 16);
    tsync__rmsg bput = {.type = TSYNC__R_PUT, .req = 2, .nenvs = 2, .envs = benv};
    send_m(&a2, &bput);
    expect_err(recv_m(&a2), TSYNC__RERR_QUOTA);
    free(big);
    m = get(&a2, ox, 6, 1 << 20);
    cr_assert_eq(m->nenvs, 0, "an envelope of a refused put was stored");

    /* Refusals at RHELLO: unknown shop, expired certificate, expired admission. */
    till tb, texp, tc, ta3;
    till_new(&tb, &b, "till-b", now - TH_DAY, now + 30 * TH_DAY);
    expect_err(till_hello(&tb, ep, relay_pk), TSYNC__RERR_UNKNOWN_SHOP);
    till_new(&texp, &a, "till-old", now - 30 * TH_DAY, now - TH_DAY);
    expect_err(till_hello(&texp, ep, relay_pk), TSYNC__RERR_EXPIRED);
    till_new(&tc, &c, "till-c", now - TH_DAY, now + 30 * TH_DAY);
    expect_err(till_hello(&tc, ep, relay_pk), TSYNC__RERR_ADMISSION);

    /* Revocation pushed by A1 (RTRUST): A3, served until then, is refused at once and its
     * session cut; when it comes back, at RHELLO. A record of another shop is refused. */
    till_new(&ta3, &a, "till-a3", now - TH_DAY, now + 30 * TH_DAY);
    cr_assert_eq(till_hello(&ta3, ep, relay_pk)->type, TSYNC__R_HAVE);
    size_t rl;
    uint8_t *rev = th_rev_make(&a, ta3.pk, NULL, 0, now, &rl);
    tsync__rblob rb = {rev, rl};
    tsync__rmsg tr = {.type = TSYNC__R_TRUST, .req = 8, .nrecs = 1, .recs = &rb};
    send_m(&a1, &tr);
    m = recv_m(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->req == 8 && m->stored == 1);
    expect_err(recv_m(&ta3), TSYNC__RERR_REVOKED);
    tsync__tp_event ev;
    cr_assert(wait_ev(&ta3, TSYNC__TP_EV_DOWN, 10000, &ev), "the revoked till's session stayed");
    cr_assert(wait_ev(&ta3, TSYNC__TP_EV_UP, 10000, &ev), "the till did not reconnect");
    expect_err(hello_again(&ta3), TSYNC__RERR_REVOKED);
    size_t rbl;
    uint8_t *revb = th_rev_make(&b, ta3.pk, NULL, 0, now, &rbl);
    tsync__rblob rbb = {revb, rbl};
    tr.recs = &rbb;
    send_m(&a1, &tr);
    expect_err(recv_m(&a1), TSYNC__RERR_BAD_TRUST);
    free(rev);
    free(revb);

    /* A wrong relay key: the CURVE handshake fails, no session. */
    till tw;
    till_new(&tw, &a, "till-w", now - TH_DAY, now + 30 * TH_DAY);
    uint8_t wrong_pk[32], wrong_sk[64];
    crypto_sign_keypair(wrong_pk, wrong_sk);
    cr_assert_eq(tsync__tp_connect(tw.tp, ep, wrong_pk, &tw.peer), 0);
    cr_assert_not(wait_ev(&tw, TSYNC__TP_EV_UP, 2000, &ev), "a session with a wrong relay key");

    json_t *st = status(dir);
    cr_assert_eq(refused(st, "unknown_shop"), 1);
    cr_assert_eq(refused(st, "expired"), 1);
    cr_assert_eq(refused(st, "admission"), 1);
    cr_assert_eq(refused(st, "revoked"), 2);
    cr_assert_eq(refused(st, "quota"), 1);
    cr_assert_eq(refused(st, "bad_trust"), 1);
    cr_assert_eq(shop_field(st, 0, "envelopes"), 3, "refused tills stored something");
    cr_assert_eq(shop_field(st, 0, "bytes"),
                 (long long)(sizeof blob1 + sizeof blob2 + sizeof blob3));
    cr_assert_eq(shop_field(st, 0, "revocations"), 1);
    cr_assert_eq(shop_field(st, 1, "envelopes"), 0);
    cr_assert_eq(json_integer_value(json_object_get(st, "sessions")), 3);
    json_decref(st);
    till_free(&tb);
    till_free(&texp);
    till_free(&tc);
    till_free(&ta3);
    till_free(&tw);
    till_free(&a1);
    till_free(&a2);

    /* Restarted, the relay still serves what it stored. */
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0, "the relay did not stop cleanly");
    pid = relay_start(dir, log2, ep);
    till a4;
    till_new(&a4, &a, "till-a4", now - TH_DAY, now + 30 * TH_DAY);
    m = till_hello(&a4, ep, relay_pk);
    cr_assert(m->type == TSYNC__R_HAVE && m->norigins == 2);
    m = get(&a4, ox, 1, 1 << 20);
    cr_assert(m->nenvs == 2 && !memcmp(m->envs[0].bytes, blob1, sizeof blob1) &&
              !memcmp(m->envs[1].bytes, blob2, sizeof blob2));
    till_free(&a4);
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0);

    /* The relay keeps the blob as given: the marker inside it is in its files. */
    cr_assert(files_contain(dir, MARKER, sizeof MARKER - 1), "the blob was not stored as given");
    /* One log line per session event: the first run admitted 3 tills and refused 4 at RHELLO
     * (the wrong relay key never reached it), plus the live revocation, the quota and
     * bad_trust refusals. */
    FILE *f = fopen(log, "r");
    char line[1024];
    int admitted = 0, refusals = 0, ups = 0;
    while (fgets(line, sizeof line, f)) {
        admitted += strstr(line, "admitted for shop") != NULL;
        refusals += strstr(line, " refused (") != NULL;
        ups += strstr(line, " up from ") != NULL;
    }
    fclose(f);
    cr_assert_eq(admitted, 3);
    cr_assert_eq(refusals, 7);
    cr_assert_eq(ups, 7);
}
