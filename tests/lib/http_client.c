/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/http_client.c — see http_client.h. Only what the console tests need: no redirects,
 * no cookies kept (a test sends the Cookie header it means to), no TLS.
 */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_to(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends all of p; 0, or -1 when the peer closed (a refusal may come before the whole body). */
static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k, n -= (size_t)k;
    }
    return 0;
}

/* Reads into *buf until EOF, or until needle appears (needle not NULL), or the deadline. */
static long read_until(int fd, char **buf, size_t *len, size_t *cap, const char *needle,
                       size_t from, long long deadline)
{
    for (;;) {
        if (needle && *buf) {
            char *hit = from < *len ? strstr(*buf + from, needle) : NULL;
            if (hit) return (long)(hit - *buf) + (long)strlen(needle);
        }
        long long left = deadline - now_ms();
        if (left <= 0) return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1;
        if (*len + 4097 > *cap) {
            size_t nc = (*cap + 4097) * 2;
            char *nb = realloc(*buf, nc);
            if (!nb) return -1;
            *buf = nb, *cap = nc;
        }
        ssize_t k = recv(fd, *buf + *len, 4096, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return needle ? -1 : (long)*len; /* EOF (or a reset after the reply) */
        *len += (size_t)k;
        (*buf)[*len] = 0;
    }
}

static void parse(hc_reply *r, char *buf, size_t len)
{
    char *end = buf ? strstr(buf, "\r\n\r\n") : NULL;
    if (!end || sscanf(buf, "HTTP/%*d.%*d %d", &r->status) != 1) {
        r->status = 0;
        free(buf);
        return;
    }
    size_t hl = (size_t)(end - buf);
    r->headers = strndup(buf, hl);
    r->body_len = len - hl - 4;
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, end + 4, r->body_len);
    r->body[r->body_len] = 0;
    free(buf);
}

int hc_request(hc_reply *r, const char *addr, const char *method, const char *path,
               const char *headers, const void *body, size_t len, int how)
{
    memset(r, 0, sizeof *r);
    int fd = connect_to(addr);
    if (fd < 0) return -1;
    char head[8192];
    int hn = snprintf(head, sizeof head, "%s %s HTTP/1.%d\r\nHost: %s\r\n%s", method, path,
                      how == HC_LENGTH ? 0 : 1, addr, headers ? headers : "");
    if (how == HC_CHUNKED)
        hn += snprintf(head + hn, sizeof head - (size_t)hn,
                       "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    else
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "Content-Length: %zu\r\n%s\r\n", len,
                       how == HC_EXPECT ? "Expect: 100-continue\r\nConnection: close\r\n" : "");
    long long deadline = now_ms() + 30000;
    char *buf = NULL;
    size_t blen = 0, cap = 0;
    int sent = send_all(fd, head, (size_t)hn) == 0;
    if (sent && how == HC_EXPECT) {
        /* The body only after "100 Continue"; a final reply instead ends the request. */
        long k = read_until(fd, &buf, &blen, &cap, "\r\n\r\n", 0, deadline);
        if (k > 0 && strncmp(buf + 9, "100", 3) == 0) {
            memmove(buf, buf + k, blen - (size_t)k + 1);
            blen -= (size_t)k;
            send_all(fd, body, len);
        }
    } else if (sent && how == HC_CHUNKED) {
        const char *p = body;
        for (size_t off = 0; off < len && sent;) {
            size_t n = len - off < 65536 ? len - off : 65536;
            char line[32];
            snprintf(line, sizeof line, "%zx\r\n", n);
            sent = send_all(fd, line, strlen(line)) == 0 && send_all(fd, p + off, n) == 0 &&
                   send_all(fd, "\r\n", 2) == 0;
            off += n;
        }
        if (sent) send_all(fd, "0\r\n\r\n", 5);
    } else if (sent && len) {
        send_all(fd, body, len);
    }
    read_until(fd, &buf, &blen, &cap, NULL, 0, deadline);
    close(fd);
    parse(r, buf, blen);
    return r->status ? 0 : -1;
}

void hc_reply_free(hc_reply *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

char *hc_header(const hc_reply *r, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            return strndup(v, ll - (size_t)(v - p));
        }
        p = eol ? eol + 2 : p + ll;
    }
    return NULL;
}

int hc_stream_open(const char *addr, const char *path, const char *headers)
{
    int fd = connect_to(addr);
    if (fd < 0) return -1;
    char head[4096];
    int hn = snprintf(head, sizeof head, "GET %s HTTP/1.0\r\nHost: %s\r\n%s\r\n", path, addr,
                      headers ? headers : "");
    if (send_all(fd, head, (size_t)hn) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

long hc_stream_until(int fd, char **buf, size_t *len, size_t from, const char *needle, int ms)
{
    size_t cap = *buf ? *len + 1 : 0;
    return read_until(fd, buf, len, &cap, needle, from, now_ms() + ms);
}
