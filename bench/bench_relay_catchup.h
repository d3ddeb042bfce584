/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_catchup.h — bench_relay's catch-up: a till stores --batches sales as
 * envelopes, a new till of its shop reads them all with RGET following `more` (the relay's share
 * of a catch-up), and the same reads replayed against the baseline server. Part of bench_relay
 * (included once, by bench/bench_relay.c).
 */
#ifndef TSYNC_BENCH_BENCH_RELAY_CATCHUP_H
#define TSYNC_BENCH_BENCH_RELAY_CATCHUP_H

/* The next message on s within 30 s (m initialised by the caller, closed by the caller). */
static void recv_one(void *s, zmq_msg_t *m, const char *what)
{
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    double dl = bench_now() + 30;
    while (zmq_msg_recv(m, s, ZMQ_DONTWAIT) < 0) {
        BENCH_CHECK(bench_now() < dl, "%s: nothing from the relay in 30 s", what);
        zmq_poll(&it, 1, 100);
    }
}

static const tsync__rmsg *recv_rmsg(till_t *t, zmq_msg_t *m, tsync__arena *a, tsync__rmsg *out,
                                    const char *what)
{
    recv_one(t->sock, m, what);
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_decode(zmq_msg_data(m), zmq_msg_size(m), out, a, err) == 0,
                "%s: decode: %s", what, err);
    if (out->type == TSYNC__R_ERR)
        bench_fail(__FILE__, __LINE__, "%s: the relay refused (%s): %.*s", what,
                   tsync__rerr_name(out->code), (int)out->line_len, out->line);
    return out;
}

/* A DEALER for t whose session is up (its monitor said so). */
static void dealer_up(till_t *t)
{
    t->sock = dealer(t->pk, t->sk, &t->mon);
    zmq_pollitem_t it = {.socket = t->mon, .events = ZMQ_POLLIN};
    double dl = bench_now() + 30;
    while (mon_event(t->mon) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        BENCH_CHECK(bench_now() < dl, "no session with the server in 30 s");
        zmq_poll(&it, 1, 100);
    }
}

static void dealer_close(till_t *t)
{
    zmq_socket_monitor(t->sock, NULL, 0);
    zmq_close(t->mon);
    zmq_close(t->sock);
}

static void say_hello(till_t *t)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    tsync__arena a = {0};
    tsync__rmsg r;
    hello(t);
    recv_rmsg(t, &m, &a, &r, "catch-up hello");
    BENCH_CHECK(r.type == TSYNC__R_HAVE, "catch-up: RHELLO answered by type %u", r.type);
    tsync__arena_free(&a);
    zmq_msg_close(&m);
}

typedef struct {
    double load_s, secs, base_s;
    uint64_t envs, bytes, msgs, env_bytes;
} cu_res;

/* A till of shop sh stores C.batches sales as envelopes of pl (pl->batches sales each); a new
 * till of the shop then reads them all with RGET following `more`. sizes: the RENV sizes. */
static cu_res catchup(int sh, int idx, const payload *pl, vec *sizes)
{
    cu_res out = {0};
    till_t a, b;
    till_make(&a, idx, sh);
    till_make(&b, idx + 1, sh);
    dealer_up(&a);
    dealer_up(&b);
    say_hello(&a);
    BENCH_CHECK(C.batches % (long)pl->batches == 0, "--batches must be a multiple of --run %zu",
                pl->batches);
    uint64_t E = (uint64_t)C.batches / pl->batches, sent = 0, stored = 0, inflight = 0;
    uint32_t per = (uint32_t)((4u << 20) / (pl->len + 256));
    per = per > 256 ? 256 : per < 1 ? 1 : per;
    double t0 = bench_now();
    while (stored < E) {
        while (sent < E && inflight < 4) {
            uint32_t n = (uint32_t)(E - sent < per ? E - sent : per);
            BENCH_CHECK(put(&a, sent * pl->batches + 1, n, pl, sent + 1) == 0,
                        "catch-up: the relay cut the session");
            for (uint32_t k = 0; k < n; k++) D.env_bytes += TSYNC__ENV_HEADER_BYTES + pl->len + 16;
            D.envs += n;
            sent += n, inflight++;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        tsync__arena ar = {0};
        tsync__rmsg r;
        recv_rmsg(&a, &m, &ar, &r, "catch-up load");
        BENCH_CHECK(r.type == TSYNC__R_ACK && r.dup == 0, "catch-up load: type %u dup %" PRIu64,
                    r.type, r.dup);
        stored += r.stored, inflight--;
        tsync__arena_free(&ar);
        zmq_msg_close(&m);
    }
    out.load_s = bench_now() - t0;
    out.envs = E;
    /* the new till: RHELLO (its RHAVE must show 1..batches), then RGET ... following more */
    zmq_msg_t m;
    zmq_msg_init(&m);
    tsync__arena ar = {0};
    tsync__rmsg r;
    hello(&b);
    recv_rmsg(&b, &m, &ar, &r, "catch-up hello");
    BENCH_CHECK(r.type == TSYNC__R_HAVE && r.norigins == 1 && r.origins[0].nranges == 1 &&
                    r.origins[0].ranges[0].first == 1 &&
                    r.origins[0].ranges[0].last == (uint64_t)C.batches,
                "catch-up: RHAVE does not show 1..%ld", C.batches);
    tsync__arena_free(&ar);
    zmq_msg_close(&m);
    uint64_t next = 1;
    t0 = bench_now();
    for (;;) {
        tsync__rmsg g = {
            .type = TSYNC__R_GET, .req = next, .from_seq = next, .max_bytes = 8u << 20};
        memcpy(g.origin, a.origin, 16);
        BENCH_CHECK(send_msg(b.sock, &g) == 0, "catch-up: the relay cut the session");
        zmq_msg_init(&m);
        recv_rmsg(&b, &m, &ar, &r, "catch-up");
        BENCH_CHECK(r.type == TSYNC__R_ENV && r.req == next && r.nenvs > 0,
                    "catch-up: RGET from %" PRIu64 " answered by type %u", next, r.type);
        out.bytes += zmq_msg_size(&m);
        out.msgs++;
        vec_add(sizes, (double)zmq_msg_size(&m));
        for (uint32_t k = 0; k < r.nenvs; k++) {
            BENCH_CHECK(r.envs[k].first_seq == next,
                        "catch-up: expected seq %" PRIu64 ", got %" PRIu64, next,
                        r.envs[k].first_seq);
            next = r.envs[k].last_seq + 1;
            out.env_bytes += r.envs[k].len;
        }
        int more = r.more;
        tsync__arena_free(&ar);
        zmq_msg_close(&m);
        if (!more) break;
    }
    out.secs = bench_now() - t0;
    BENCH_CHECK(next == (uint64_t)C.batches + 1, "catch-up ended at seq %" PRIu64 " of %ld",
                next - 1, C.batches);
    dealer_close(&a);
    dealer_close(&b);
    free(a.cert);
    free(b.cert);
    return out;
}

/* The catch-up's reads replayed against the baseline server: the same sizes, one request each. */
static double catchup_base(const vec *sizes)
{
    till_t t = {.idx = BASE_MAX_TILLS - 1};
    crypto_sign_keypair(t.pk, t.sk);
    dealer_up(&t);
    BENCH_CHECK(hello(&t) == 0, "baseline: no session");
    zmq_msg_t m;
    zmq_msg_init(&m);
    recv_one(t.sock, &m, "baseline hello");
    zmq_msg_close(&m);
    double t0 = bench_now();
    for (size_t i = 0; i < sizes->n; i++) {
        size_t want = (size_t)sizes->v[i];
        uint8_t g[5] = {'G', (uint8_t)(want >> 24), (uint8_t)(want >> 16), (uint8_t)(want >> 8),
                        (uint8_t)want};
        BENCH_CHECK(send_bytes(t.sock, g, 5) == 0, "baseline: session cut");
        zmq_msg_init(&m);
        recv_one(t.sock, &m, "baseline read");
        BENCH_CHECK(zmq_msg_size(&m) == want, "baseline read of %zu bytes got %zu", want,
                    zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
    double s = bench_now() - t0;
    dealer_close(&t);
    return s;
}

#endif
