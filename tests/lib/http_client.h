/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/http_client.h — a small HTTP/1.0 client over a raw socket for the console tests
 * (tests/net/test_console.c): one request per connection, the reply read to the end (HTTP/1.0:
 * never chunked), and an open stream for server-sent events. Loopback addresses only.
 */
#ifndef TSYNC_TEST_HTTP_CLIENT_H
#define TSYNC_TEST_HTTP_CLIENT_H

#include <stddef.h>

typedef struct {
    int status;    /* 0: no reply (the connection failed or closed first) */
    char *headers; /* the header lines, "\r\n"-separated, NUL-terminated */
    char *body;    /* NUL-terminated (the body may hold NULs: body_len) */
    size_t body_len;
} hc_reply;

/* How a request sends its body. */
enum {
    HC_LENGTH = 0,  /* Content-Length */
    HC_CHUNKED = 1, /* Transfer-Encoding: chunked (the server sees no length ahead) */
    HC_EXPECT = 2,  /* Content-Length with Expect: 100-continue: the body only after 100 */
};

/* Sends METHOD PATH to addr ("127.0.0.1:PORT") with extra header lines (each ending "\r\n", or
 * NULL) and body (len bytes; may be NULL), and reads the reply. Returns 0, or -1 when no reply
 * came (r->status 0). Waits at most 30 s. */
int hc_request(hc_reply *r, const char *addr, const char *method, const char *path,
               const char *headers, const void *body, size_t len, int how);
void hc_reply_free(hc_reply *r);
/* A header's value (first one, name in any case) as a malloc'd string, or NULL. */
char *hc_header(const hc_reply *r, const char *name);

/* An open GET (server-sent events): the socket, or -1. */
int hc_stream_open(const char *addr, const char *path, const char *headers);
/* Reads from the stream into *buf (grown, NUL-terminated) until needle appears after *from or
 * ms passed; returns the offset just past the needle, or -1. */
long hc_stream_until(int fd, char **buf, size_t *len, size_t from, const char *needle, int ms);

#endif
