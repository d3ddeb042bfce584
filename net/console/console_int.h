/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/console/console_int.h — what the files of the console share: its state, one request, and
 * the reply helpers. server.c: the daemon, authentication, sessions, routing, uploads. api.c: the
 * endpoints. jobs.c: backups (listing, "back up now" on a thread of its own).
 */
#ifndef TSYNC_NET_CONSOLE_INT_H
#define TSYNC_NET_CONSOLE_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "console.h"
#include "tillsync/store.h"

/* An upload (POST /api/import) larger than this is refused with 413; other POST bodies (JSON)
 * are at most CONSOLE_JSON_MAX. */
#define CONSOLE_UPLOAD_MAX    (32u << 20)
#define CONSOLE_JSON_MAX      (64u << 10)
#define CONSOLE_SESSIONS      16
#define CONSOLE_HEX           65   /* 32 random bytes as hex, NUL included */
#define CONSOLE_BAD_MAX       1000 /* bad values listed in an import's answer (all are counted) */
#define CONSOLE_COOKIE        "tsync_console"
#define CONSOLE_VERIFIED      64    /* backups whose check result is remembered */
#define CONSOLE_CONFLICTS_MAX 10000 /* conflict ids in one dismiss; entries in one page */

typedef struct {
    char sid[CONSOLE_HEX], csrf[CONSOLE_HEX];
    uint64_t used_mono; /* 0: free */
} console_session;

/* A backup started by POST /api/backups. */
typedef struct {
    uint64_t id;      /* 0: none yet */
    atomic_int state; /* 0 none, 1 running, 2 done, 3 failed */
    atomic_int phase; /* a tsync_backup_phase, or 5 while the file is checked */
    atomic_uint_fast64_t done, total;
    char file[512];
    char err[512];
    int joined;
    pthread_t thread;
} console_job;

typedef struct {
    char name[256];
    int64_t size, mtime;
    int ok; /* 1 verified, 0 failed */
    char why[256];
} console_checked;

struct tsync__console {
    tsync_node *node;
    char *db_path, *key_path, *token_path, *backup_dir, *prefix;
    char address[96];
    char token[CONSOLE_HEX];
    char *password; /* NULL: no Basic auth */
    struct MHD_Daemon *d;
    atomic_int stopping;

    pthread_mutex_t mu; /* sessions */
    console_session sessions[CONSOLE_SESSIONS];

    pthread_mutex_t store_mu; /* the console's store: one request at a time */
    tsync_store *s;

    pthread_mutex_t job_mu; /* job and the verified list */
    console_job job;
    console_checked checked[CONSOLE_VERIFIED];
    size_t nchecked;
};

/* One request in progress. */
typedef struct {
    int auth;               /* 1 bearer, 2 cookie session */
    int refused;            /* a reply was queued at the first call: ignore the body */
    int too_big;            /* the body went over its cap */
    FILE *upload;           /* POST /api/import: the body, in an unlinked temporary file */
    char *body;             /* other POST: the body, NUL-terminated */
    size_t len, cap, max;   /* bytes received; body capacity; the cap */
    char csrf[CONSOLE_HEX]; /* a cookie session's CSRF token ("" with bearer auth) */
} console_req;

/* Replies (server.c): every reply carries the security headers; none carries CORS headers. */
enum MHD_Result tsync__console_reply(struct MHD_Connection *c, unsigned status, const char *type,
                                     const char *body, size_t len);
/* A JSON reply from text, or from an object (decref'd). */
enum MHD_Result tsync__console_json(struct MHD_Connection *c, unsigned status, const char *text);
enum MHD_Result tsync__console_jsonj(struct MHD_Connection *c, unsigned status, void *json_t_obj);
/* {"error": "why"} with status (a 4xx or 5xx). */
enum MHD_Result tsync__console_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                     ...) __attribute__((format(printf, 3, 4)));
/* Adds the security headers to a response. */
void tsync__console_headers(struct MHD_Response *r);
/* The console's store, opened on first use; with store_mu held. NULL: failed (the reason is in
 * *why). */
tsync_store *tsync__console_store(tsync__console *co, char *why, size_t len);
/* The query parameters: 400 (queued, and returns 0) when one is not in allowed (NULL-terminated
 * names) or given twice; 1 when they are all allowed. */
int tsync__console_params_ok(struct MHD_Connection *c, const char *const *allowed,
                             enum MHD_Result *ret);
/* A table name as the API accepts it: [A-Za-z_][A-Za-z0-9_]{0,127}. */
int tsync__console_table_ok(const char *t);

/* api.c: the endpoints, called once the request is authenticated and its body complete. */
enum MHD_Result tsync__console_route(tsync__console *co, struct MHD_Connection *c, const char *url,
                                     const char *method, console_req *r);

/* jobs.c */
enum MHD_Result tsync__console_backups_get(tsync__console *co, struct MHD_Connection *c);
enum MHD_Result tsync__console_backups_post(tsync__console *co, struct MHD_Connection *c);
enum MHD_Result tsync__console_job_get(tsync__console *co, struct MHD_Connection *c,
                                       const char *id);
/* GET /api/backups/download?file=NAME: the file, streamed from its descriptor. */
enum MHD_Result tsync__console_backup_download(tsync__console *co, struct MHD_Connection *c);
/* POST /api/backups/verify with body {"file":NAME} (len bytes; NULL: none). */
enum MHD_Result tsync__console_backup_verify(tsync__console *co, struct MHD_Connection *c,
                                             const char *body, size_t len);
/* The newest backup's modification time in ms (0: none), for /metrics. */
int64_t tsync__console_last_backup_ms(tsync__console *co);
void tsync__console_jobs_stop(tsync__console *co);

#endif
