/* SPDX-License-Identifier: Apache-2.0 */
/* tests/netlab/delayproxy.c — a TCP proxy that delays what it forwards, for the network lab
 * (netem is not available here). Every chunk read from one side is written to the other side
 * DELAY_MS (+ a random 0..JITTER_MS) later; order within a connection is kept (a TCP stream
 * cannot be reordered), so jitter shows as bursts. Single-threaded, poll(2), up to 64
 * connections, stops on SIGTERM/SIGINT.
 *
 *   cc -O2 -o delayproxy tests/netlab/delayproxy.c
 *   delayproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS [JITTER_MS]     (IPv4 addresses)
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAXC  64
#define CHUNK 65536
#define MAXQ  (4 << 20) /* bytes queued per direction before we stop reading */

typedef struct chunk {
    struct chunk *next;
    int64_t due;
    size_t len, off;
    char data[];
} chunk;

typedef struct {
    int from, to;       /* read from, write to */
    chunk *head, *tail; /* FIFO, due times non-decreasing */
    size_t queued;
    int eof, shut; /* read side saw EOF; write side shut down */
} dir;

typedef struct {
    int used;
    dir d[2]; /* 0: client -> target, 1: target -> client */
} conn;

static conn conns[MAXC];
static int delay_ms, jitter_ms;
static volatile sig_atomic_t stop;

static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *c = strrchr(s, ':');
    if (!c || (size_t)(c - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(c + 1));
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void conn_close(conn *c)
{
    for (int i = 0; i < 2; i++) {
        chunk *k = c->d[i].head;
        while (k) {
            chunk *n = k->next;
            free(k);
            k = n;
        }
    }
    close(c->d[0].from);
    close(c->d[0].to);
    memset(c, 0, sizeof *c);
}

/* reads what is there into the queue; -1 on error */
static int pull(dir *d)
{
    chunk *k = malloc(sizeof *k + CHUNK);
    if (!k) return -1;
    ssize_t n = read(d->from, k->data, CHUNK);
    if (n <= 0) {
        free(k);
        if (n == 0) {
            d->eof = 1;
            return 0;
        }
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    int64_t due = now_ms() + delay_ms + (jitter_ms ? rand() % (jitter_ms + 1) : 0);
    if (d->tail && due < d->tail->due) due = d->tail->due; /* keep the stream in order */
    k->next = NULL;
    k->due = due;
    k->len = (size_t)n;
    k->off = 0;
    if (d->tail)
        d->tail->next = k;
    else
        d->head = k;
    d->tail = k;
    d->queued += (size_t)n;
    return 0;
}

/* writes the chunks that are due; -1 on error */
static int push(dir *d, int64_t now)
{
    while (d->head && d->head->due <= now) {
        chunk *k = d->head;
        ssize_t n = write(d->to, k->data + k->off, k->len - k->off);
        if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        k->off += (size_t)n;
        d->queued -= (size_t)n;
        if (k->off < k->len) return 0;
        d->head = k->next;
        if (!d->head) d->tail = NULL;
        free(k);
    }
    if (d->eof && !d->head && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in la, ta;
    if (argc < 4 || argc > 5 || parse(argv[1], &la) || parse(argv[2], &ta)) {
        fprintf(stderr,
                "usage: delayproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS [JITTER_MS]\n");
        return 2;
    }
    delay_ms = atoi(argv[3]);
    jitter_ms = argc == 5 ? atoi(argv[4]) : 0;
    srand((unsigned)getpid());
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 16)) {
        fprintf(stderr, "delayproxy: cannot listen on %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fcntl(ls, F_SETFL, O_NONBLOCK);
    fprintf(stderr, "delayproxy: %s -> %s, delay %d ms + 0..%d ms\n", argv[1], argv[2], delay_ms,
            jitter_ms);

    while (!stop) {
        struct pollfd p[1 + 2 * MAXC];
        int idx[1 + 2 * MAXC], np = 0;
        int64_t now = now_ms(), next = -1;
        p[np].fd = ls;
        p[np].events = POLLIN;
        idx[np++] = -1;
        for (int i = 0; i < MAXC; i++) {
            if (!conns[i].used) continue;
            for (int j = 0; j < 2; j++) {
                dir *d = &conns[i].d[j];
                short ev = 0;
                if (!d->eof && d->queued < MAXQ) ev |= POLLIN;
                if (d->head && d->head->due <= now) ev |= POLLOUT;
                if (d->head && d->head->due > now && (next < 0 || d->head->due < next))
                    next = d->head->due;
                p[np].fd = d->from;
                p[np].events = POLLIN & ev;
                idx[np++] = i * 2 + j;
                if (ev & POLLOUT) { /* writability of the other socket */
                    p[np].fd = d->to;
                    p[np].events = POLLOUT;
                    idx[np++] = i * 2 + j;
                }
            }
        }
        int timeout = next < 0 ? 1000 : (int)(next - now);
        if (poll(p, (nfds_t)np, timeout < 0 ? 0 : timeout) < 0 && errno != EINTR) break;
        if (stop) break;
        if (p[0].revents & POLLIN) {
            int c = accept(ls, NULL, NULL);
            if (c >= 0) {
                int slot = -1;
                for (int i = 0; i < MAXC && slot < 0; i++)
                    if (!conns[i].used) slot = i;
                int t = socket(AF_INET, SOCK_STREAM, 0);
                struct timeval tv = {2, 0}; /* a blocking connect, bounded */
                if (t >= 0) setsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                if (slot < 0 || t < 0 || connect(t, (struct sockaddr *)&ta, sizeof ta)) {
                    close(c);
                    if (t >= 0) close(t);
                } else {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    fcntl(c, F_SETFL, O_NONBLOCK);
                    fcntl(t, F_SETFL, O_NONBLOCK);
                    conn *k = &conns[slot];
                    memset(k, 0, sizeof *k);
                    k->used = 1;
                    k->d[0].from = c;
                    k->d[0].to = t;
                    k->d[1].from = t;
                    k->d[1].to = c;
                }
            }
        }
        for (int q = 1; q < np; q++) {
            if (!p[q].revents) continue;
            conn *c = &conns[idx[q] / 2];
            if (!c->used) continue;
            dir *d = &c->d[idx[q] % 2];
            if (p[q].fd == d->from && (p[q].revents & (POLLIN | POLLHUP | POLLERR)) && pull(d))
                conn_close(c);
        }
        now = now_ms();
        for (int i = 0; i < MAXC; i++) {
            conn *c = &conns[i];
            if (!c->used) continue;
            if (push(&c->d[0], now) || push(&c->d[1], now) || (c->d[0].shut && c->d[1].shut))
                conn_close(c);
        }
    }
    for (int i = 0; i < MAXC; i++)
        if (conns[i].used) conn_close(&conns[i]);
    close(ls);
    return 0;
}
