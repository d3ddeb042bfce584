/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_driver.h — bench_relay's load driver: one thread, one ZeroMQ context, one
 * CURVE DEALER per simulated till speaking the relay protocol (RHELLO, RPUT, RGET; pushes
 * received as RENV req 0) or the baseline server's plain frames; the paced, heavy and saturate
 * phases, what each sale's latency was, the server's RSS each second, and the checks that every
 * envelope reached every other till of its shop. Part of bench_relay (included once, by
 * bench/bench_relay.c).
 */
#ifndef TSYNC_BENCH_BENCH_RELAY_DRIVER_H
#define TSYNC_BENCH_BENCH_RELAY_DRIVER_H

typedef struct {
    double *v;
    size_t n, cap;
} vec;

static void vec_add(vec *x, double v)
{
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 4096;
        x->v = realloc(x->v, x->cap * sizeof *x->v);
        BENCH_CHECK(x->v, "out of memory");
    }
    x->v[x->n++] = v;
}

/* The p-th percentile (0..1) of x, sorted in place; NAN when empty. */
static double pct(vec *x, double p)
{
    if (x->n) qsort(x->v, x->n, sizeof *x->v, bench_dbl_cmp);
    return bench_pct_sorted(x->v, x->n, p);
}

typedef struct {
    double t, cpu;
    long rss, anon;   /* the server's (relay or baseline), KiB */
    long nrss, nanon; /* nats-server's (--nats), KiB */
    int phase, base;  /* base: the server is the baseline */
} rss_sample;

static struct {
    int base; /* 1: talking to the baseline server */
    void *ctx;
    uint8_t server_curve[32];
    char ep[256];
    zmq_pollitem_t *items;
    const payload *pl;
    pid_t srv;  /* the server process (relay or baseline) */
    pid_t nats; /* nats-server (--nats), else 0 */
    /* per run */
    vec lat[PH_N], ack[PH_N];
    uint64_t puts[PH_N], pushes, push_dup, push_foreign, acks;
    rss_sample *rs;
    size_t nrs, caprs;
    double next_rss, t0;
    uint64_t env_bytes, envs; /* envelopes put to the relay, and their bytes */
    uint64_t cuts, resent;    /* sessions the server cut (the till said RHELLO again); RPUTs
                                 sent again after one */
    size_t env1;              /* bytes of a one-sale envelope */
} D;

static int setopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

/* A DEALER to the server with the CURVE key of an Ed25519 key pair; *mon (may be NULL) receives
 * a monitor of its handshakes and disconnects. ZMQ_IMMEDIATE: nothing queues while no session is
 * up, so the first message of a new session is always the RHELLO sent when it comes up. */
static void *dealer(const uint8_t ed_pk[32], const uint8_t ed_sk[64], void **mon)
{
    static unsigned gen;
    uint8_t cpk[32], csk[32];
    BENCH_CHECK(crypto_sign_ed25519_pk_to_curve25519(cpk, ed_pk) == 0 &&
                    crypto_sign_ed25519_sk_to_curve25519(csk, ed_sk) == 0,
                "curve key");
    void *s = zmq_socket(D.ctx, ZMQ_DEALER);
    BENCH_CHECK(s, "zmq_socket: %s (sockets: raise ZMQ_MAX_SOCKETS)", zmq_strerror(errno));
    BENCH_CHECK(!setopt_int(s, ZMQ_LINGER, 0) && !setopt_int(s, ZMQ_SNDHWM, 100000) &&
                    !setopt_int(s, ZMQ_RCVHWM, 100000) && !setopt_int(s, ZMQ_IMMEDIATE, 1) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, D.server_curve, 32) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpk, 32) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csk, 32),
                "dealer setup: %s", zmq_strerror(errno));
    if (mon) {
        char ep[64];
        snprintf(ep, sizeof ep, "inproc://bench-relay-mon-%u", ++gen);
        BENCH_CHECK(zmq_socket_monitor(
                        s, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) == 0 &&
                        (*mon = zmq_socket(D.ctx, ZMQ_PAIR)) && !zmq_connect(*mon, ep),
                    "monitor: %s", zmq_strerror(errno));
    }
    BENCH_CHECK(!zmq_connect(s, D.ep), "connect: %s", zmq_strerror(errno));
    sodium_memzero(csk, sizeof csk);
    return s;
}

/* Sends without blocking; EAGAIN (no session up just now: the relay cut it) is for the caller. */
static int send_bytes(void *s, const void *b, size_t n)
{
    if (zmq_send(s, b, n, ZMQ_DONTWAIT) == (int)n) return 0;
    BENCH_CHECK(errno == EAGAIN, "send: %s", zmq_strerror(errno));
    return -1;
}

static int send_msg(void *s, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t n;
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_encode(m, &b, &n, err) == 0, "encode: %s", err);
    int rc = send_bytes(s, b, n);
    free(b);
    return rc;
}

static int hello(till_t *t)
{
    if (D.base) {
        uint8_t b[4] = {(uint8_t)(t->idx >> 24), (uint8_t)(t->idx >> 16), (uint8_t)(t->idx >> 8),
                        (uint8_t)t->idx};
        return send_bytes(t->sock, b, 4);
    }
    tsync__rblob rec;
    tsync__rmsg h;
    tsync__relay_hello(&h, &rec, S[t->shop].shop_id, t->cert, t->cert_len);
    return send_msg(t->sock, &h);
}

/* Seals envelopes for the sales first..first+n-1 of till t (one sale each, or one run of
 * `batches` sales each when pl is a run) into one RPUT with request id req. */
static int put(till_t *t, uint64_t first, uint32_t n, const payload *pl, uint64_t req)
{
    tsync__renv env[512];
    BENCH_CHECK(n <= 512, "too many envelopes");
    for (uint32_t i = 0; i < n; i++) {
        tsync__env_header h = {.epoch = 1};
        memcpy(h.shop_id, S[t->shop].shop_id, 16);
        memcpy(h.origin, t->origin, 16);
        h.first_seq = first + i * pl->batches;
        h.last_seq = h.first_seq + pl->batches - 1;
        if (h.first_seq > 1) memcpy(h.prev_hash, t->last_hash, 32);
        randombytes_buf(t->last_hash, 32);
        memcpy(h.last_hash, t->last_hash, 32);
        uint8_t *b;
        size_t bl;
        char err[TSYNC__ERRLEN];
        BENCH_CHECK(tsync__env_seal(&h, S[t->shop].key, pl->p, pl->len, &b, &bl, err) == 0,
                    "seal: %s", err);
        memcpy(env[i].origin, t->origin, 16);
        env[i].first_seq = h.first_seq;
        env[i].last_seq = h.last_seq;
        env[i].bytes = b;
        env[i].len = bl;
    }
    tsync__rmsg m = {.type = TSYNC__R_PUT, .req = req, .nenvs = n, .envs = env};
    int rc = send_msg(t->sock, &m);
    for (uint32_t i = 0; i < n; i++) free((void *)env[i].bytes);
    return rc;
}

/* One sale of till t in phase ph: an RPUT of one envelope (req = its seq). */
static void sale(till_t *t, int ph)
{
    t->seq++;
    till_grow(t);
    size_t i = t->seq - 1;
    t->phase[i] = (uint8_t)ph;
    t->got[i] = t->acked[i] = 0;
    t->inflight++;
    D.puts[ph]++;
    t->sent[i] = bench_now();
    put(t, t->seq, 1, D.pl, t->seq); /* not sent: the session is down, resent after RHELLO */
}

/* Envelopes of another till arrived at till t (by push: timed; by RGET: not). */
static void arrived(till_t *t, const tsync__renv *e, uint32_t n, int by_push)
{
    double now = bench_now();
    for (uint32_t k = 0; k < n; k++) {
        int o = origin_idx(e[k].origin);
        BENCH_CHECK(o >= 0 && o < NT && o != t->idx, "an envelope of unknown origin %d", o);
        till_t *a = &T[o];
        if (a->shop != t->shop) {
            D.push_foreign++;
            bench_fail(__FILE__, __LINE__, "till %d (shop %d) got an envelope of shop %d", t->idx,
                       t->shop, a->shop);
        }
        for (uint64_t q = e[k].first_seq; q <= e[k].last_seq; q++) {
            BENCH_CHECK(q >= 1 && q <= a->seq, "till %d: seq %" PRIu64 " of till %d not put",
                        t->idx, q, o);
            /* got counts the tills holding it; one bit per receiving till of the shop */
            int bit = 1 << (t->idx - t->shop * C.tills);
            if (a->got[q - 1] & bit) {
                if (by_push) D.push_dup++;
                continue;
            }
            a->got[q - 1] |= (uint8_t)bit;
            if (by_push) D.pushes++;
            int have = __builtin_popcount(a->got[q - 1]);
            if (have == C.tills - 1 && by_push)
                vec_add(&D.lat[a->phase[q - 1]], (now - a->sent[q - 1]) * 1e3);
        }
    }
}

static uint64_t get_req = 1ull << 40; /* RGET request ids (above any seq) */

static void on_msg(till_t *t, const uint8_t *d, size_t n)
{
    if (D.base) {
        if (n == 2 && !memcmp(d, "HI", 2)) {
            t->served = 1;
            return;
        }
        if (n == 3 && !memcmp(d, "ACK", 3)) { /* in order: the oldest put not acknowledged */
            BENCH_CHECK(t->inflight > 0, "baseline: an ACK for nothing");
            t->inflight--, t->stored++, D.acks++;
            for (uint64_t q = 0; q < t->seq; q++)
                if (!t->acked[q]) {
                    t->acked[q] = 1;
                    break;
                }
            return;
        }
    }
    tsync__arena a = {0};
    tsync__rmsg m;
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_decode(d, n, &m, &a, err) == 0, "till %d: decode: %s", t->idx, err);
    switch (m.type) {
    case TSYNC__R_HAVE:
        BENCH_CHECK(!t->served, "till %d: RHAVE twice", t->idx);
        t->served = 1;
        for (uint64_t q = 1; q <= t->seq; q++) /* what the cut session left unacknowledged */
            if (!t->acked[q - 1]) put(t, q, 1, D.pl, q), t->inflight++, D.resent++;
        break;
    case TSYNC__R_ERR:
        bench_fail(__FILE__, __LINE__, "till %d: the relay refused (%s): %.*s", t->idx,
                   tsync__rerr_name(m.code), (int)m.line_len, m.line);
    case TSYNC__R_ACK:
        /* a duplicate only for an RPUT sent again after a cut session (it may have been stored) */
        BENCH_CHECK(m.req >= 1 && m.req <= t->seq && m.stored + m.dup == 1 &&
                        (m.dup == 0 || t->sessions > 1),
                    "till %d: RACK %" PRIu64 " stored %" PRIu64 " dup %" PRIu64, t->idx, m.req,
                    m.stored, m.dup);
        BENCH_CHECK(!t->acked[m.req - 1] || m.dup, "till %d: seq %" PRIu64 " stored twice", t->idx,
                    m.req);
        if (t->inflight) t->inflight--;
        D.acks++;
        if (!t->acked[m.req - 1]) {
            t->acked[m.req - 1] = 1, t->stored++;
            D.env_bytes += D.env1, D.envs++;
            vec_add(&D.ack[t->phase[m.req - 1]], (bench_now() - t->sent[m.req - 1]) * 1e3);
        }
        break;
    case TSYNC__R_PUT: /* the baseline forwards the put itself */
        BENCH_CHECK(D.base, "till %d: an RPUT from the relay", t->idx);
        arrived(t, m.envs, m.nenvs, 1);
        break;
    case TSYNC__R_ENV:
        arrived(t, m.envs, m.nenvs, m.req == 0);
        if (m.req != 0 && m.more) { /* a gap fill: ask for the rest */
            tsync__rmsg g = {.type = TSYNC__R_GET,
                             .req = get_req++,
                             .from_seq = m.envs[m.nenvs - 1].last_seq + 1,
                             .max_bytes = 8u << 20};
            memcpy(g.origin, m.envs[0].origin, 16);
            send_msg(t->sock, &g);
        }
        break;
    default:
        bench_fail(__FILE__, __LINE__, "till %d: message type %u", t->idx, m.type);
    }
    tsync__arena_free(&a);
}

static void sample_rss(int ph)
{
    double now = bench_now();
    if (now < D.next_rss) return;
    D.next_rss = now + 1.0;
    if (D.nrs == D.caprs) {
        D.caprs = D.caprs ? D.caprs * 2 : 256;
        D.rs = realloc(D.rs, D.caprs * sizeof *D.rs);
        BENCH_CHECK(D.rs, "out of memory");
    }
    rss_sample *r = &D.rs[D.nrs++];
    r->t = now - D.t0;
    r->phase = ph;
    r->base = D.base;
    proc_sample(D.srv, &r->rss, &r->anon, &r->cpu);
    r->nrss = r->nanon = 0;
    if (D.nats > 0) bench_proc_mem(D.nats, &r->nrss, &r->nanon);
}

/* The next event of a monitor (0: none now). */
static int mon_event(void *mon)
{
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return 0;
    }
    uint16_t ev = 0;
    if (zmq_msg_size(&a) >= 2) memcpy(&ev, zmq_msg_data(&a), 2);
    zmq_msg_init(&b);
    if (zmq_msg_more(&a)) zmq_msg_recv(&b, mon, 0);
    zmq_msg_close(&a);
    zmq_msg_close(&b);
    return ev;
}

/* A session of till t came up (RHELLO now) or went down (what it had in flight is lost with the
 * connection's queues: resent once the next session is served). */
static void on_mon(till_t *t)
{
    for (int ev; (ev = mon_event(t->mon)) != 0;) {
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            t->up = 1;
            if (++t->sessions > 1) D.cuts++;
            hello(t);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            t->up = t->served = 0;
            t->inflight = 0;
            if (D.base) /* the baseline's ACKs carry no id: forget what was in flight */
                for (uint64_t q = 0; q < t->seq; q++) t->acked[q] = 1;
        }
    }
}

/* Polls every till's socket and monitor once (waiting up to ms) and handles what came. */
static void pump(int ms)
{
    int rc = zmq_poll(D.items, 2 * NT, ms);
    BENCH_CHECK(rc >= 0 || errno == EINTR, "zmq_poll: %s", zmq_strerror(errno));
    for (int i = 0; i < NT && rc > 0; i++) {
        if (D.items[2 * i + 1].revents & ZMQ_POLLIN) on_mon(&T[i]);
        if (!(D.items[2 * i].revents & ZMQ_POLLIN)) continue;
        for (int k = 0; k < 64; k++) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, T[i].sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            on_msg(&T[i], zmq_msg_data(&m), zmq_msg_size(&m));
            zmq_msg_close(&m);
        }
    }
}

/* Connects every till and waits for each to be served. */
static double connect_all(void)
{
    double t0 = bench_now();
    for (int i = 0; i < NT; i++) {
        T[i].sock = dealer(T[i].pk, T[i].sk, &T[i].mon);
        T[i].served = T[i].up = 0;
        T[i].sessions = 0;
        D.items[2 * i] = (zmq_pollitem_t){.socket = T[i].sock, .events = ZMQ_POLLIN};
        D.items[2 * i + 1] = (zmq_pollitem_t){.socket = T[i].mon, .events = ZMQ_POLLIN};
    }
    for (;;) {
        int n = 0;
        for (int i = 0; i < NT; i++) n += T[i].served;
        if (n == NT) break;
        BENCH_CHECK(bench_now() - t0 < 120, "%d of %d tills served after 120 s", n, NT);
        pump(20);
    }
    return bench_now() - t0;
}

static void close_all(void)
{
    for (int i = 0; i < NT; i++) {
        zmq_socket_monitor(T[i].sock, NULL, 0);
        zmq_close(T[i].mon);
        zmq_close(T[i].sock);
        T[i].sock = T[i].mon = NULL;
    }
}

/* Runs phase ph for secs seconds, then waits (up to 90 s) for what it put to be acknowledged and
 * pushed. Returns the seconds the load ran. */
static double run_phase(int ph, double secs, bench_rng *r)
{
    double t0 = bench_now(), end = t0 + secs;
    double lo = ph == PH_PACED ? C.lo : C.hlo, hi = ph == PH_PACED ? C.hi : C.hhi;
    for (int i = 0; i < NT; i++) T[i].next_at = t0 + urand(r, 0, hi) / 1e3;
    for (double now = t0; now < end; now = bench_now()) {
        double wake = end;
        for (int i = 0; i < NT; i++) {
            till_t *t = &T[i];
            if (ph == PH_SAT) {
                while (t->served && t->inflight < (uint64_t)C.window) sale(t, ph);
                continue;
            }
            if (t->next_at <= now) {
                if (t->served) sale(t, ph); /* a till whose session is down sells offline */
                t->next_at += urand(r, lo, hi) / 1e3;
            }
            if (t->next_at < wake) wake = t->next_at;
        }
        sample_rss(ph);
        double w = (wake - bench_now()) * 1e3;
        pump(ph == PH_SAT ? 5 : w < 0 ? 0 : w > 10 ? 10 : (int)w);
    }
    double ran = bench_now() - t0;
    /* drain: every put acknowledged, and (outside saturation) pushed to both other tills */
    double dl = bench_now() + 90; /* an overloaded relay catches up slowly */
    for (;;) {
        uint64_t open = 0, missing = 0;
        for (int i = 0; i < NT; i++)
            for (uint64_t q = 0; q < T[i].seq; q++) {
                open += !T[i].acked[q];
                /* a push is lost only with a cut session: then RGET fetches it (fill_gaps) */
                if (ph != PH_SAT && !D.cuts && T[i].phase[q] == ph &&
                    __builtin_popcount(T[i].got[q]) < C.tills - 1)
                    missing++;
            }
        if (!open && !missing) break;
        if (bench_now() > dl) {
            BENCH_CHECK(!open, "%s: %" PRIu64 " RPUTs never acknowledged", PH_NAME[ph], open);
            bench_fail(__FILE__, __LINE__,
                       "%s: %" PRIu64 " envelopes never pushed to every other till of their shop",
                       PH_NAME[ph], missing);
        }
        sample_rss(ph);
        pump(10);
    }
    return ran;
}

/* Every till fetches by RGET what it lacks of its shop's other tills (pushes are best effort: the
 * relay drops one it cannot queue, and none reaches a till while its session is down), asking
 * again every 2 s while anything is missing; then every envelope must be at every other till. */
static uint64_t fill_gaps(void)
{
    uint64_t asked = 0;
    double dl = bench_now() + 60, next = 0;
    for (;;) {
        uint64_t missing = 0;
        for (int i = 0; i < NT; i++)
            for (uint64_t q = 0; q < T[i].seq; q++)
                missing += __builtin_popcount(T[i].got[q]) < C.tills - 1;
        if (!missing) break;
        BENCH_CHECK(bench_now() < dl, "%" PRIu64 " envelopes missing at a till after RGET",
                    missing);
        if (bench_now() >= next) {
            next = bench_now() + 2;
            for (int i = 0; i < NT; i++) {
                till_t *t = &T[i];
                int bit = 1 << (t->idx - t->shop * C.tills);
                for (int k = 0; k < C.tills && t->served; k++) {
                    till_t *a = &T[t->shop * C.tills + k];
                    uint64_t q = 0;
                    while (q < a->seq && (a->got[q] & bit)) q++;
                    if (a == t || q == a->seq) continue;
                    tsync__rmsg g = {.type = TSYNC__R_GET,
                                     .req = get_req++,
                                     .from_seq = q + 1,
                                     .max_bytes = 8u << 20};
                    memcpy(g.origin, a->origin, 16);
                    if (send_msg(t->sock, &g) == 0) asked++;
                }
            }
        }
        pump(10);
    }
    return asked;
}

/* ---------------------------------------------------------------- a run of the three phases */

typedef struct {
    double ran[PH_N], p50[PH_N], p99[PH_N], max[PH_N], ack50[PH_N], ack99[PH_N];
    double cpu[PH_N]; /* server CPU seconds in the phase */
    uint64_t puts[PH_N];
    double connect_s;
    uint64_t gaps, pushes, push_dup, cuts, resent;
} run_res;

static void reset_tills(void)
{
    for (int i = 0; i < NT; i++) {
        till_t *t = &T[i];
        t->seq = t->inflight = t->stored = 0;
        if (t->got) memset(t->got, 0, t->cap);
    }
    for (int p = 0; p < PH_N; p++) D.lat[p].n = D.ack[p].n = 0, D.puts[p] = 0;
    D.pushes = D.push_dup = D.push_foreign = D.acks = D.cuts = D.resent = 0;
}

static run_res run_all(const double secs[PH_N], uint64_t seed)
{
    run_res o = {0};
    bench_rng r = {seed};
    reset_tills();
    o.connect_s = connect_all();
    D.t0 = bench_now();
    D.next_rss = 0;
    for (int p = 0; p < PH_N; p++) {
        long rss, anon;
        double c0, c1;
        proc_sample(D.srv, &rss, &anon, &c0);
        fprintf(stderr, "[relay %s] %s, %.0f s\n", D.base ? "baseline" : "relay", PH_NAME[p],
                secs[p]);
        o.ran[p] = run_phase(p, secs[p], &r);
        proc_sample(D.srv, &rss, &anon, &c1);
        o.cpu[p] = c1 - c0;
        o.puts[p] = D.puts[p];
        o.p50[p] = pct(&D.lat[p], 0.50), o.p99[p] = pct(&D.lat[p], 0.99);
        o.max[p] = pct(&D.lat[p], 1.0);
        o.ack50[p] = pct(&D.ack[p], 0.50), o.ack99[p] = pct(&D.ack[p], 0.99);
    }
    uint64_t puts = 0, stored = 0;
    for (int i = 0; i < NT; i++) puts += T[i].seq, stored += T[i].stored;
    BENCH_CHECK(puts == stored || (D.base && D.cuts),
                "%" PRIu64 " envelopes put, %" PRIu64 " acknowledged", puts, stored);
    o.pushes = D.pushes, o.push_dup = D.push_dup, o.cuts = D.cuts, o.resent = D.resent;
    if (!D.base) o.gaps = fill_gaps();
    BENCH_CHECK(D.push_dup == 0 || D.base, "%" PRIu64 " envelopes pushed twice to a till",
                D.push_dup);
    close_all();
    return o;
}

#endif
