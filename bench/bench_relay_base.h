/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_base.h — bench_relay's baseline server: a plain ZeroMQ CURVE ROUTER in its own
 * process that does what the relay does with the same bytes on the same number of connections,
 * minus everything the relay is for: no certificate check, no decoding, no store. It is what the
 * relay's figures are divided by (docs/BENCHMARKS.md, "bench_relay").
 *
 * Messages from the load driver (its own framing, not the relay protocol):
 *   4 bytes          hello: the till's global index (big-endian); answered "HI"
 *   'G' + 4 bytes    a read of N bytes (big-endian): answered by N bytes (the catch-up baseline)
 *   "QUIT"+0         stop (from the driver, when it is done)
 *   anything else    a put: answered "ACK" (what RACK is to the relay) and forwarded as it is to
 *                    the other tills of the sender's shop (index / tills), as the relay pushes
 * Sockets get the relay's options (CURVE server, ROUTER_MANDATORY, heartbeats 500 / 1500 /
 * 3000 ms, high-water mark 1000); a forward that does not fit the queue is dropped and counted,
 * like a push the relay cannot queue.
 */
#ifndef TSYNC_BENCH_RELAY_BASE_H
#define TSYNC_BENCH_RELAY_BASE_H

#include <zmq.h>

#define BASE_MAX_TILLS 8192
#define BASE_RID_MAX   16

typedef struct {
    uint8_t rid[BASE_RID_MAX];
    size_t len;
    int used;
} base_peer;

static int base_setopt(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

/* The baseline server's loop (runs in a forked child, which made no ZeroMQ context before). */
static void base_serve(const char *endpoint_file, const uint8_t pk[32], const uint8_t sk[32],
                       int tills_per_shop)
{
    void *ctx = zmq_ctx_new();
    void *r = zmq_socket(ctx, ZMQ_ROUTER);
    BENCH_CHECK(r, "baseline: zmq_socket: %s", zmq_strerror(errno));
    BENCH_CHECK(!base_setopt(r, ZMQ_LINGER, 0) && !base_setopt(r, ZMQ_ROUTER_MANDATORY, 1) &&
                    !base_setopt(r, ZMQ_CURVE_SERVER, 1) &&
                    !zmq_setsockopt(r, ZMQ_CURVE_PUBLICKEY, pk, 32) &&
                    !zmq_setsockopt(r, ZMQ_CURVE_SECRETKEY, sk, 32) &&
                    !base_setopt(r, ZMQ_HEARTBEAT_IVL, 500) &&
                    !base_setopt(r, ZMQ_HEARTBEAT_TIMEOUT, 1500) &&
                    !base_setopt(r, ZMQ_HEARTBEAT_TTL, 3000) && !base_setopt(r, ZMQ_SNDHWM, 1000) &&
                    !base_setopt(r, ZMQ_RCVHWM, 1000) && zmq_bind(r, "tcp://127.0.0.1:*") == 0,
                "baseline: socket setup: %s", zmq_strerror(errno));
    char ep[256];
    size_t epl = sizeof ep;
    BENCH_CHECK(zmq_getsockopt(r, ZMQ_LAST_ENDPOINT, ep, &epl) == 0, "baseline: endpoint");
    bench_write_file(endpoint_file, ep, strlen(ep));
    base_peer *peers = calloc(BASE_MAX_TILLS, sizeof *peers);
    uint8_t *big = calloc(1, TSYNC__RELAY_MSG_MAX);
    BENCH_CHECK(peers && big, "baseline: out of memory");
    int last = -1; /* the sender of the previous put: most puts come in runs from one till */
    for (;;) {
        zmq_msg_t rid, m;
        zmq_msg_init(&rid);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&rid, r, 0) < 0 || zmq_msg_recv(&m, r, 0) < 0) {
            BENCH_CHECK(errno == EINTR, "baseline: recv: %s", zmq_strerror(errno));
            zmq_msg_close(&rid);
            zmq_msg_close(&m);
            continue;
        }
        const uint8_t *d = zmq_msg_data(&m), *rd = zmq_msg_data(&rid);
        size_t n = zmq_msg_size(&m), rl = zmq_msg_size(&rid);
        BENCH_CHECK(rl <= BASE_RID_MAX, "baseline: routing id of %zu bytes", rl);
        if (n == 5 && !memcmp(d, "QUIT", 5)) {
            zmq_msg_close(&rid);
            zmq_msg_close(&m);
            break;
        }
        if (n == 4) { /* hello */
            uint32_t idx = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
            BENCH_CHECK(idx < BASE_MAX_TILLS, "baseline: till %u", idx);
            memcpy(peers[idx].rid, rd, rl);
            peers[idx].len = rl;
            peers[idx].used = 1;
            zmq_send(r, rd, rl, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(r, "HI", 2, ZMQ_DONTWAIT);
        } else if (n == 5 && d[0] == 'G') {
            size_t want = (size_t)d[1] << 24 | (size_t)d[2] << 16 | (size_t)d[3] << 8 | d[4];
            if (want > TSYNC__RELAY_MSG_MAX) want = TSYNC__RELAY_MSG_MAX;
            zmq_send(r, rd, rl, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(r, big, want, ZMQ_DONTWAIT);
        } else {
            int from = -1;
            if (last >= 0 && peers[last].len == rl && !memcmp(peers[last].rid, rd, rl)) from = last;
            for (int i = 0; i < BASE_MAX_TILLS && from < 0; i++)
                if (peers[i].used && peers[i].len == rl && !memcmp(peers[i].rid, rd, rl)) from = i;
            BENCH_CHECK(from >= 0, "baseline: a put from a till that said no hello");
            last = from;
            zmq_send(r, rd, rl, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(r, "ACK", 3, ZMQ_DONTWAIT);
            int shop = from / tills_per_shop;
            for (int k = 0; k < tills_per_shop; k++) {
                base_peer *p = &peers[shop * tills_per_shop + k];
                if (shop * tills_per_shop + k == from || !p->used) continue;
                if (zmq_send(r, p->rid, p->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                    zmq_send(r, d, n, ZMQ_DONTWAIT);
            }
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&m);
    }
    free(peers);
    free(big);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

#endif
