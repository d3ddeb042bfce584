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
 * stored; the relay's files hold each blob as given (the marker is found). One device key holds
 * up to 4 sessions at once, each served and pushed to as another till's put comes (not its own
 * till's); a fifth cuts the oldest.
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
#include "tests/lib/relay_util.h"

TestSuite(relay, .fini = nu_fini, .timeout = 120);

static const char MARKER[] = "MARKER-relay-blob-7f3a";

/* `tillsync relay init` in tmp/relay (dir, 512 bytes); log: tmp/relay.log; the relay's key. */
static void relay_init(const char *tmp, char *dir, char *log, uint8_t relay_pk[32])
{
    char cmd[2048];
    snprintf(dir, 512, "%s/relay", tmp);
    snprintf(log, 512, "%s/relay.log", tmp);
    snprintf(cmd, sizeof cmd, "%s relay init %s", nu_cli(), dir);
    char *out = strstr(ru_run_out(cmd), "public key: ");
    cr_assert_not_null(out);
    cr_assert_eq(sodium_hex2bin(relay_pk, 32, out + 12, 64, NULL, NULL, NULL), 0);
}

Test(relay, serve_refuse_restart)
{
    const char *tmp = nu_tmpdir();
    char dir[512], log[512], log2[512], cmd[2048], ep[NU_EP], hex[65];
    uint8_t relay_pk[32];
    relay_init(tmp, dir, log, relay_pk);
    snprintf(log2, sizeof log2, "%s/relay2.log", tmp);

    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A"), b = th_shop_make(2, 0xb2, "Shop B"),
                   c = th_shop_make(3, 0xc3, "Shop C");
    sodium_bin2hex(hex, sizeof hex, a.pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1", nu_cli(), dir, hex);
    ru_run_out(cmd);
    sodium_bin2hex(hex, sizeof hex, c.pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1 --expires 2020-01-01", nu_cli(),
             dir, hex);
    ru_run_out(cmd);
    pid_t pid = ru_relay_start(dir, log, ep);
    uint64_t now = (uint64_t)time(NULL) * 1000u;

    /* Till A1 puts three envelopes of two origins, the blob with a marker. */
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

    /* Till A2 of the same shop sees merged ranges and gets the envelopes byte-identical. */
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
    m = ru_get(&a2, ox, 1, 1); /* streamed by max bytes: one envelope, more follow */
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

    /* Refusals at RHELLO: unknown shop, expired certificate, expired admission. */
    ru_till tb, texp, tc, ta3;
    ru_till_new(&tb, &b, "till-b", now - TH_DAY, now + 30 * TH_DAY);
    ru_expect_err(ru_hello(&tb, ep, relay_pk), TSYNC__RERR_UNKNOWN_SHOP);
    ru_till_new(&texp, &a, "till-old", now - 30 * TH_DAY, now - TH_DAY);
    ru_expect_err(ru_hello(&texp, ep, relay_pk), TSYNC__RERR_EXPIRED);
    ru_till_new(&tc, &c, "till-c", now - TH_DAY, now + 30 * TH_DAY);
    ru_expect_err(ru_hello(&tc, ep, relay_pk), TSYNC__RERR_ADMISSION);

    /* Revocation pushed by A1 (RTRUST): A3, served until then, is refused at once and its
     * session cut; when it comes back, at RHELLO. A record of another shop is refused. */
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
    tsync__tp_event ev;
    cr_assert(ru_wait_ev(&ta3, TSYNC__TP_EV_DOWN, 10000, &ev), "the revoked till's session stayed");
    cr_assert(ru_wait_ev(&ta3, TSYNC__TP_EV_UP, 10000, &ev), "the till did not reconnect");
    ru_expect_err(ru_hello_again(&ta3), TSYNC__RERR_REVOKED);
    size_t rbl;
    uint8_t *revb = th_rev_make(&b, ta3.pk, NULL, 0, now, &rbl);
    tsync__rblob rbb = {revb, rbl};
    tr.recs = &rbb;
    ru_send(&a1, &tr);
    ru_expect_err(ru_recv(&a1), TSYNC__RERR_BAD_TRUST);
    free(rev);
    free(revb);

    /* A wrong relay key: the CURVE handshake fails, no session. */
    ru_till tw;
    ru_till_new(&tw, &a, "till-w", now - TH_DAY, now + 30 * TH_DAY);
    uint8_t wrong_pk[32], wrong_sk[64];
    crypto_sign_keypair(wrong_pk, wrong_sk);
    cr_assert_eq(tsync__tp_connect(tw.tp, ep, wrong_pk, &tw.peer), 0);
    cr_assert_not(ru_wait_ev(&tw, TSYNC__TP_EV_UP, 2000, &ev), "a session with a wrong relay key");

    json_t *st = ru_status(dir);
    cr_assert_eq(ru_refused(st, "unknown_shop"), 1);
    cr_assert_eq(ru_refused(st, "expired"), 1);
    cr_assert_eq(ru_refused(st, "admission"), 1);
    cr_assert_eq(ru_refused(st, "revoked"), 2);
    cr_assert_eq(ru_refused(st, "quota"), 1);
    cr_assert_eq(ru_refused(st, "bad_trust"), 1);
    cr_assert_eq(ru_shop_field(st, 0, "envelopes"), 3, "refused tills stored something");
    cr_assert_eq(ru_shop_field(st, 0, "bytes"),
                 (long long)(sizeof blob1 + sizeof blob2 + sizeof blob3));
    cr_assert_eq(ru_shop_field(st, 0, "revocations"), 1);
    cr_assert_eq(ru_shop_field(st, 1, "envelopes"), 0);
    cr_assert_eq(json_integer_value(json_object_get(st, "sessions")), 3);
    json_decref(st);
    ru_till_free(&tb);
    ru_till_free(&texp);
    ru_till_free(&tc);
    ru_till_free(&ta3);
    ru_till_free(&tw);
    ru_till_free(&a1);
    ru_till_free(&a2);

    /* Restarted, the relay still serves what it stored. */
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0, "the relay did not stop cleanly");
    pid = ru_relay_start(dir, log2, ep);
    ru_till a4;
    ru_till_new(&a4, &a, "till-a4", now - TH_DAY, now + 30 * TH_DAY);
    m = ru_hello(&a4, ep, relay_pk);
    cr_assert(m->type == TSYNC__R_HAVE && m->norigins == 2);
    m = ru_get(&a4, ox, 1, 1 << 20);
    cr_assert(m->nenvs == 2 && !memcmp(m->envs[0].bytes, blob1, sizeof blob1) &&
              !memcmp(m->envs[1].bytes, blob2, sizeof blob2));
    ru_till_free(&a4);
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0);

    /* The relay keeps the blob as given: the marker inside it is in its files. */
    cr_assert(ru_files_contain(dir, MARKER, sizeof MARKER - 1), "the blob was not stored as given");
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

/* What a till stores is pushed at once (RENV, req 0) to the other served tills of its shop, not
 * back to the till that put it, never to another shop's till, and not again for a duplicate. */
Test(relay, push_to_the_shops_other_tills)
{
    const char *tmp = nu_tmpdir();
    char dir[512], log[512], cmd[2048], ep[NU_EP], hex[65];
    uint8_t relay_pk[32];
    relay_init(tmp, dir, log, relay_pk);
    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A"), b = th_shop_make(2, 0xb2, "Shop B");
    const tsync__shopkey *shops[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        sodium_bin2hex(hex, sizeof hex, shops[i]->pk, 32);
        snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1", nu_cli(), dir, hex);
        ru_run_out(cmd);
    }
    pid_t pid = ru_relay_start(dir, log, ep);
    uint64_t now = (uint64_t)time(NULL) * 1000u;
    ru_till a1, a2, b1;
    ru_till_new(&a1, &a, "till-a1", now - TH_DAY, now + 30 * TH_DAY);
    ru_till_new(&a2, &a, "till-a2", now - TH_DAY, now + 30 * TH_DAY);
    ru_till_new(&b1, &b, "till-b1", now - TH_DAY, now + 30 * TH_DAY);
    cr_assert_eq(ru_hello(&a1, ep, relay_pk)->type, TSYNC__R_HAVE);
    cr_assert_eq(ru_hello(&a2, ep, relay_pk)->type, TSYNC__R_HAVE);
    cr_assert_eq(ru_hello(&b1, ep, relay_pk)->type, TSYNC__R_HAVE);

    uint8_t blob[300];
    randombytes_buf(blob, sizeof blob);
    tsync__renv e = {{0}, 1, 3, blob, sizeof blob};
    memset(e.origin, 0x33, 16);
    tsync__rmsg put = {.type = TSYNC__R_PUT, .req = 7, .nenvs = 1, .envs = &e};
    ru_send(&a1, &put);
    const tsync__rmsg *m = ru_recv_any(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->stored == 1, "the put was not stored");
    m = ru_recv_push(&a2);
    cr_assert(m->nenvs == 1 && m->envs[0].first_seq == 1 && m->envs[0].last_seq == 3 &&
                  m->envs[0].len == sizeof blob && memcmp(m->envs[0].bytes, blob, sizeof blob) == 0,
              "the push is not the envelope put");
    cr_assert(memcmp(m->envs[0].origin, e.origin, 16) == 0);

    /* A duplicate is acknowledged and not pushed; the next new envelope is. */
    ru_send(&a1, &put);
    m = ru_recv_any(&a1);
    cr_assert(m->type == TSYNC__R_ACK && m->stored == 0 && m->dup == 1);
    tsync__renv e2 = {{0}, 4, 4, blob, 10};
    memcpy(e2.origin, e.origin, 16);
    tsync__rmsg put2 = {.type = TSYNC__R_PUT, .req = 8, .nenvs = 1, .envs = &e2};
    ru_send(&a1, &put2);
    m = ru_recv_any(&a1); /* its own put comes back as the ACK only, never as a push */
    cr_assert(m->type == TSYNC__R_ACK && m->req == 8 && m->stored == 1);
    m = ru_recv_push(&a2);
    cr_assert(m->nenvs == 1 && m->envs[0].first_seq == 4, "the duplicate was pushed");

    /* Shop B's till got nothing: its next message is the answer to its own RGET. */
    m = ru_get(&b1, e.origin, 1, 1 << 20);
    cr_assert_eq(m->nenvs, 0);
    cr_assert_eq(b1.pushes, 0, "a till of another shop received a push");

    ru_till_free(&a1);
    ru_till_free(&a2);
    ru_till_free(&b1);
    cr_assert_eq(nu_kill(pid, SIGTERM, 10000), 0);
}

/* A device key holds up to 4 sessions (a till's live session beside its cloud backup); pushes go
 * to every session of the shop's other tills and to none of the putting till's; a fifth session
 * of the key cuts the oldest, so a leaked key cannot take more. */
Test(relay, sessions_per_key)
{
    const char *tmp = nu_tmpdir();
    char dir[512], log[512], cmd[2048], ep[NU_EP], hex[65];
    uint8_t relay_pk[32];
    relay_init(tmp, dir, log, relay_pk);
    tsync__shopkey a = th_shop_make(1, 0xa1, "Shop A");
    sodium_bin2hex(hex, sizeof hex, a.pk, 32);
    snprintf(cmd, sizeof cmd, "%s relay admit %s %s --quota-mb 1", nu_cli(), dir, hex);
    ru_run_out(cmd);
    pid_t pid = ru_relay_start(dir, log, ep);
    uint64_t now = (uint64_t)time(NULL) * 1000u;

    ru_till k[5], other;
    ru_till_new(&k[0], &a, "till-k", now - TH_DAY, now + 30 * TH_DAY);
    for (int i = 1; i < 5; i++) ru_till_same_key(&k[i], &k[0]);
    ru_till_new(&other, &a, "till-other", now - TH_DAY, now + 30 * TH_DAY);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ru_hello(&k[i], ep, relay_pk)->type, TSYNC__R_HAVE, "session %d", i);
    cr_assert_eq(ru_hello(&other, ep, relay_pk)->type, TSYNC__R_HAVE);

    /* Another till's put is pushed to all four sessions of the key. */
    uint8_t o1[16], blob[100];
    memset(o1, 0x31, 16);
    randombytes_buf(blob, sizeof blob);
    tsync__renv e = {{0}, 1, 1, blob, sizeof blob};
    memcpy(e.origin, o1, 16);
    tsync__rmsg put = {.type = TSYNC__R_PUT, .req = 1, .nenvs = 1, .envs = &e};
    ru_send(&other, &put);
    cr_assert_eq(ru_recv(&other)->type, TSYNC__R_ACK);
    for (int i = 0; i < 4; i++) {
        const tsync__rmsg *m = ru_recv_push(&k[i]);
        cr_assert(m->nenvs == 1 && m->envs[0].len == sizeof blob, "session %d", i);
    }
    /* The key's own put goes to the other till, not to the key's other sessions: each asks
     * afterwards (the relay answers in order) and has seen no push but the first. */
    e.first_seq = e.last_seq = 2;
    ru_send(&k[0], &put);
    cr_assert_eq(ru_recv(&k[0])->type, TSYNC__R_ACK);
    cr_assert_eq(ru_recv_push(&other)->envs[0].last_seq, 2);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(ru_get(&k[i], o1, 1, 1 << 20)->nenvs, 2, "session %d", i);
        cr_assert_eq(k[i].pushes, 1, "session %d got its own till's put pushed", i);
    }

    /* A fifth session of the key: served, and the oldest (k[0]) is cut. */
    cr_assert_eq(ru_hello(&k[4], ep, relay_pk)->type, TSYNC__R_HAVE);
    tsync__tp_event ev;
    cr_assert(ru_wait_ev(&k[0], TSYNC__TP_EV_DOWN, 10000, &ev), "the oldest session was kept");
    for (int i = 1; i < 5; i++)
        cr_assert_eq(ru_get(&k[i], o1, 1, 1 << 20)->nenvs, 2, "session %d", i);
    size_t n = 0;
    FILE *f = fopen(log, "rb");
    cr_assert_not_null(f);
    char *text = calloc(1, 1 << 20);
    n = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    cr_assert(n > 0 && strstr(text, "down (superseded)"), "the relay's log lacks the cut");
    free(text);
    for (int i = 0; i < 5; i++) ru_till_free(&k[i]);
    ru_till_free(&other);
    nu_kill(pid, SIGTERM, 5000);
}
