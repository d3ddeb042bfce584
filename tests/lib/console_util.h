/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/console_util.h — helpers for the console's API tests (tests/net/test_console*.c):
 * an in-process till (a database with the standard products table and a node serving its
 * console on 127.0.0.1 at a free port), requests with its token, a cookie session with its CSRF
 * token, "back up now" waited for, and two tills that collided while apart (the conflict setup
 * the resolve tests share).
 */
#ifndef TSYNC_TEST_CONSOLE_UTIL_H
#define TSYNC_TEST_CONSOLE_UTIL_H

#include <jansson.h>

#include "tests/lib/http_client.h"
#include "tillsync/node.h"

typedef struct {
    tsync_node *n;
    char db[1024];
    char addr[96];
    char token[65];
    char bearer[128]; /* "Authorization: Bearer TOKEN\r\n" */
} cu_till;

/* A till: a database with the products table (th_open_products; kept if it exists), a node with
 * its console on 127.0.0.1 at a free port (peers: NULL-terminated static peers or NULL). */
void cu_start(cu_till *t, const char *dir, const char *name, const char *backup_dir,
              const char *const *peers, const char *password_file);
void cu_stop(cu_till *t);
/* A request; asserts a reply came. */
hc_reply cu_req(const cu_till *t, const char *method, const char *path, const char *headers,
                const void *body, size_t len);
/* A request with the token; the reply's body as JSON (asserting the status). */
json_t *cu_api(const cu_till *t, const char *method, const char *path, const char *body, int want);
/* Asserts the error reply is one line of JSON with an "error". */
void cu_one_line_error(const hc_reply *r);
/* The public key in /api/status (malloc'd). */
char *cu_pubkey(const cu_till *t);
/* "Back up now" (POST /api/backups), waited for until done (30 s); the file's name (malloc'd). */
char *cu_backup_now(const cu_till *t);
/* A cookie session (GET /?token=): cookie is "Cookie: ...\r\n", csrf_hdr the same followed by
 * "X-CSRF-Token: ...\r\n". */
void cu_session(const cu_till *t, char cookie[256], char csrf_hdr[512]);

/* Two tills that collided while apart: a.db and b.db in dir share rows p1..pn (price 100*i),
 * then each writes price of every row (a: 100*i+1, b: 100*i+2) without the other; then A starts
 * and B starts with A as its peer. Returns once both consoles list n open conflicts (30 s). */
void cu_pair_collided(cu_till *a, cu_till *b, const char *dir, int n);
/* Polls GET path on t (up to ms) until the JSON array it returns has want entries; returns it. */
json_t *cu_wait_count(const cu_till *t, const char *path, size_t want, int ms);

#endif
