/* SPDX-License-Identifier: Apache-2.0 */
/* tests/netlab/netem.c — a userspace netem on NFQUEUE, for the network lab (this kernel has no
 * sch_netem). Every packet the kernel queues to QUEUE is dropped with probability LOSS % or
 * released DELAY_MS + uniform(0..JITTER_MS) ms after it arrived. Held packets sit in a min-heap
 * by release time and get their verdicts (NF_ACCEPT, by packet id, in any order) when due: when
 * two packets' delays cross, the later one leaves first — real IP-level reordering. Counts
 * received, dropped, released and reordered (released after a packet that arrived later), prints
 * them every second while they change and on SIGTERM/SIGINT (which releases what is held first).
 * The PRNG is seeded from SEED (default: time and pid) and the seed printed: a run's random draws
 * can be replayed (the n-th packet gets the n-th draw; which packet is n-th depends on timing).
 *
 * The kernel queue holds up to MAXLEN packets and is fail-open: should it be full, or our socket
 * buffer, packets pass undelayed rather than vanish (the only loss is LOSS). Such packets never
 * reach us; those lost on the socket are counted as unseen (packet ids we never got). passed:
 * accepted at once because our heap was full (cannot happen: it is as large as the queue).
 * Copy mode is metadata only.
 *
 *   cc -O2 -o netem tests/netlab/netem.c -lnetfilter_queue -lnfnetlink
 *   netem QUEUE DELAY_MS JITTER_MS [LOSS_PCT [SEED]]     (prints "netem: queue N ready ...")
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h> /* before the linux/ headers */
#include <errno.h>
#include <inttypes.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXLEN 8192 /* kernel queue length = most packets held at once */

typedef struct {
    int64_t due;  /* release time, µs (CLOCK_MONOTONIC) */
    uint64_t seq; /* arrival order */
    uint32_t id;  /* the kernel's packet id */
} held;

static held heap[MAXLEN];
static unsigned nheld;
static int64_t delay_us, jitter_us;
static double loss;
static uint64_t rng;
static uint64_t received, dropped, released, reordered, passed, last_seq, verdict_errs;
static uint32_t max_id; /* packet ids count up from 1: max_id - received never reached us */
static volatile sig_atomic_t stop;

static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t next_rand(void) /* splitmix64 */
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int before(const held *a, const held *b) /* equal due times keep arrival order */
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void push(held h)
{
    unsigned i = nheld++;
    while (i > 0 && before(&h, &heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = h;
}

static held pop(void)
{
    held top = heap[0], last = heap[--nheld];
    unsigned i = 0;
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= nheld) break;
        if (c + 1 < nheld && before(&heap[c + 1], &heap[c])) c++;
        if (!before(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (nheld > 0) heap[i] = last;
    return top;
}

static void verdict(struct nfq_q_handle *qh, uint32_t id, uint32_t v)
{
    if (nfq_set_verdict(qh, id, v, 0, NULL) < 0) verdict_errs++;
}

static void release(struct nfq_q_handle *qh, const held *h)
{
    if (h->seq < last_seq)
        reordered++;
    else
        last_seq = h->seq;
    released++;
    verdict(qh, h->id, NF_ACCEPT);
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    uint32_t id = ntohl(ph->packet_id);
    received++;
    if (id > max_id) max_id = id;
    if ((double)(next_rand() >> 11) / 9007199254740992.0 < loss / 100) {
        dropped++;
        verdict(qh, id, NF_DROP);
        return 0;
    }
    int64_t d = delay_us + (jitter_us > 0 ? (int64_t)(next_rand() % (uint64_t)(jitter_us + 1)) : 0);
    held h = {now_us() + d, received, id};
    if (nheld == MAXLEN) { /* cannot happen with the kernel's maxlen; pass it, counted */
        passed++;
        release(qh, &h);
        return 0;
    }
    push(h);
    return 0;
}

static void counters(const char *what)
{
    uint64_t unseen = max_id > received ? max_id - received : 0;
    printf("netem: %s received=%" PRIu64 " dropped=%" PRIu64 " released=%" PRIu64
           " reordered=%" PRIu64 " held=%u unseen=%" PRIu64 " passed=%" PRIu64
           " verdict_errors=%" PRIu64 "\n",
           what, received, dropped, released, reordered, nheld, unseen, passed, verdict_errs);
}

static long num(const char *s) /* a decimal number >= 0, else -1 */
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return *s && !*end && !errno ? v : -1;
}

static int fail(const char *what)
{
    fprintf(stderr, "netem: %s: %s\n", what, strerror(errno ? errno : EINVAL));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: netem QUEUE DELAY_MS JITTER_MS [LOSS_PCT [SEED]]\n");
        return 2;
    }
    long q = num(argv[1]), dl = num(argv[2]), jt = num(argv[3]);
    char *end = "";
    loss = argc > 4 ? strtod(argv[4], &end) : 0;
    rng = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    if (argc > 5) rng = (uint64_t)num(argv[5]);
    if (q < 0 || q > 65535 || dl < 0 || jt < 0 || *end || loss < 0 || loss > 100 ||
        (argc > 5 && (long)rng < 0)) {
        fprintf(
            stderr,
            "netem: bad argument (QUEUE 0..65535, DELAY_MS, JITTER_MS >= 0, LOSS_PCT 0..100)\n");
        return 2;
    }
    delay_us = dl * 1000;
    jitter_us = jt * 1000;
    uint64_t seed = rng;
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    errno = 0;
    struct nfq_handle *h = nfq_open();
    if (!h) return fail("cannot open nfnetlink_queue (root? CONFIG_NETFILTER_NETLINK_QUEUE?)");
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)q, on_packet, NULL);
    if (!qh) return fail("cannot bind the queue (another program on it?)");
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) return fail("cannot set copy mode");
    if (nfq_set_queue_maxlen(qh, MAXLEN) < 0) return fail("cannot set the queue length");
    if (nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN) < 0)
        return fail("cannot make the queue fail-open");
    int fd = nfq_fd(h), one = 1;
    nfnl_rcvbufsiz(nfq_nfnlh(h), 8 << 20);
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    printf("netem: queue %ld ready: delay %ld+0..%ld ms, loss %g %%, seed %" PRIu64 "\n", q, dl, jt,
           loss, seed);

    static char buf[65536] __attribute__((aligned));
    int64_t next_report = now_us() + 1000000;
    uint64_t reported = 0;
    while (!stop) {
        int64_t now = now_us(), wait = next_report - now;
        if (nheld > 0 && heap[0].due - now < wait) wait = heap[0].due - now;
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, wait > 0 ? (int)((wait + 999) / 1000) : 0);
        if (n < 0 && errno != EINTR) return fail("poll");
        if (n > 0) {
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (r < 0 && errno == ENOBUFS) continue; /* lost messages: fail-open covers */
                if (r <= 0) return fail("recv");
                nfq_handle_packet(h, buf, (int)r);
            }
        }
        now = now_us();
        while (nheld > 0 && heap[0].due <= now) {
            held x = pop();
            release(qh, &x);
        }
        if (now >= next_report) {
            if (received + released != reported) counters("counters");
            reported = received + released;
            next_report = now + 1000000;
        }
    }
    while (nheld > 0) { /* stopping: let what is held go, in release order */
        held x = pop();
        release(qh, &x);
    }
    counters("stop");
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
