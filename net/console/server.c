/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/console/server.c — the console's HTTP server (libmicrohttpd, one thread per connection so
 * that an event stream may wait without holding up other requests) and its guard:
 *   - every request needs the token of "<database>.console-token": `Authorization: Bearer TOKEN`
 *     or `X-Tillsync-Token: TOKEN` (API clients), or the session cookie that GET /?token=TOKEN
 *     sets (the page);
 *   - a POST with a session cookie also needs its session's CSRF token (X-CSRF-Token, which the
 *     page reads from GET /api/session); a Bearer request carries no ambient credential, so it
 *     needs none;
 *   - beyond loopback, also an HTTP Basic password (console_password_file);
 *   - secrets are compared in constant time, bodies are capped (413) and an import's is streamed
 *     to an unlinked temporary file, query parameters are checked against each endpoint's list;
 *   - every reply carries CSP, nosniff, no-referrer, no framing, no-store, and never a CORS header.
 * Parsing is MHD's (request line, headers, query, cookies, Basic credentials): nothing here
 * decodes request bytes by hand.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "console_int.h"
#include "util/util.h"

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- replies */

void tsync__console_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                            "form-action 'self'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Cache-Control", "no-store");
}

enum MHD_Result tsync__console_reply(struct MHD_Connection *c, unsigned status, const char *type,
                                     const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    tsync__console_headers(r);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result tsync__console_json(struct MHD_Connection *c, unsigned status, const char *text)
{
    return tsync__console_reply(c, status, "application/json", text, strlen(text));
}

enum MHD_Result tsync__console_jsonj(struct MHD_Connection *c, unsigned status, void *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text) return tsync__console_json(c, 500, "{\"error\":\"out of memory\"}\n");
    enum MHD_Result ret = tsync__console_reply(c, status, "application/json", text, strlen(text));
    free(text);
    return ret;
}

enum MHD_Result tsync__console_error(struct MHD_Connection *c, unsigned status, const char *fmt,
                                     ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' '; /* one line */
    return tsync__console_jsonj(c, status, json_pack("{s:s}", "error", why));
}

/* ---------------------------------------------------------------- parameters */

typedef struct {
    const char *const *allowed;
    int seen[16];
    char bad[200];
} params_ctx;

static enum MHD_Result param_it(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind, (void)value;
    params_ctx *p = cls;
    for (int i = 0; p->allowed && p->allowed[i] && i < 16; i++) {
        if (strcmp(key, p->allowed[i]) != 0) continue;
        if (p->seen[i]++) {
            snprintf(p->bad, sizeof p->bad, "parameter %.100s given twice", key);
            return MHD_NO;
        }
        return MHD_YES;
    }
    snprintf(p->bad, sizeof p->bad, "unknown parameter '%.100s'", key);
    return MHD_NO;
}

int tsync__console_params_ok(struct MHD_Connection *c, const char *const *allowed,
                             enum MHD_Result *ret)
{
    params_ctx p;
    memset(&p, 0, sizeof p);
    p.allowed = allowed;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, param_it, &p);
    if (!p.bad[0]) return 1;
    *ret = tsync__console_error(c, 400, "%s", p.bad);
    return 0;
}

int tsync__console_table_ok(const char *t)
{
    if (!t || !t[0] || strlen(t) > 128) return 0;
    for (const char *p = t; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        if (!alpha && !(p > t && *p >= '0' && *p <= '9')) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- the store */

tsync_store *tsync__console_store(tsync__console *co, char *why, size_t len)
{
    if (co->s) return co->s;
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.key_path = co->key_path;
    if (tsync_store_open(&co->s, co->db_path, &so) != 0) {
        const tsync_error *e = tsync_error_last();
        snprintf(why, len, "cannot open %s: %s", co->db_path, e && e->message ? e->message : "?");
        co->s = NULL;
    }
    return co->s;
}

/* ---------------------------------------------------------------- sessions */

static int secret_eq(const char *given, const char *secret)
{
    size_t n = strlen(secret);
    return given && strlen(given) == n && sodium_memcmp(given, secret, n) == 0;
}

/* A new session: its cookie value and CSRF token; the least recently used one makes room. */
static void session_new(tsync__console *co, char sid[CONSOLE_HEX])
{
    uint8_t b[32];
    pthread_mutex_lock(&co->mu);
    console_session *slot = &co->sessions[0];
    for (size_t i = 0; i < CONSOLE_SESSIONS; i++)
        if (co->sessions[i].used_mono < slot->used_mono) slot = &co->sessions[i];
    randombytes_buf(b, sizeof b);
    sodium_bin2hex(slot->sid, sizeof slot->sid, b, sizeof b);
    randombytes_buf(b, sizeof b);
    sodium_bin2hex(slot->csrf, sizeof slot->csrf, b, sizeof b);
    slot->used_mono = mono_ms();
    memcpy(sid, slot->sid, CONSOLE_HEX);
    pthread_mutex_unlock(&co->mu);
}

/* The session of a cookie value: copies its CSRF token. Every slot is compared (constant time). */
static int session_find(tsync__console *co, const char *sid, char csrf[CONSOLE_HEX])
{
    int found = 0;
    pthread_mutex_lock(&co->mu);
    for (size_t i = 0; i < CONSOLE_SESSIONS; i++) {
        console_session *s = &co->sessions[i];
        if (s->used_mono && secret_eq(sid, s->sid) && !found) {
            found = 1;
            s->used_mono = mono_ms();
            memcpy(csrf, s->csrf, CONSOLE_HEX);
        }
    }
    pthread_mutex_unlock(&co->mu);
    return found;
}

/* ---------------------------------------------------------------- the guard */

static enum MHD_Result unauthorized(tsync__console *co, struct MHD_Connection *c, const char *why)
{
    char body[300];
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", why);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    tsync__console_headers(r);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret;
    if (co->password)
        ret = MHD_queue_basic_auth_fail_response(c, "tillsync console", r);
    else
        ret = MHD_queue_response(c, 401, r);
    MHD_destroy_response(r);
    return ret;
}

/* The first call of a request (headers read, body not yet): decides whether it may go on.
 * Returns 1 to go on; 0 when a reply was queued (*ret). */
static int admit(tsync__console *co, struct MHD_Connection *c, const char *url, const char *method,
                 console_req *r, enum MHD_Result *ret)
{
    int post = strcmp(method, "POST") == 0;
    if (!post && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        *ret = tsync__console_error(c, 405, "method %.20s not allowed", method);
        return 0;
    }
    if (co->password) {
        char *pass = NULL;
        char *user = MHD_basic_auth_get_username_password(c, &pass);
        int ok = pass && secret_eq(pass, co->password);
        MHD_free(user);
        MHD_free(pass);
        if (!ok) {
            *ret = unauthorized(co, c, "this console needs its password");
            return 0;
        }
    }
    /* The page's entry: /?token=TOKEN sets the session cookie and sends the browser to /, so the
     * token leaves the address bar (and the history) at once. */
    const char *qtoken = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
    if (qtoken && strcmp(url, "/") == 0 && !post) {
        if (!secret_eq(qtoken, co->token)) {
            *ret = unauthorized(co, c, "wrong token");
            return 0;
        }
        char sid[CONSOLE_HEX], cookie[200];
        session_new(co, sid);
        snprintf(cookie, sizeof cookie, "%s=%s; HttpOnly; SameSite=Strict; Path=/", CONSOLE_COOKIE,
                 sid);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!resp) {
            *ret = MHD_NO;
            return 0;
        }
        tsync__console_headers(resp);
        MHD_add_response_header(resp, "Set-Cookie", cookie);
        MHD_add_response_header(resp, "Location", "/");
        *ret = MHD_queue_response(c, 303, resp);
        MHD_destroy_response(resp);
        return 0;
    }
    const char *authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, CONSOLE_COOKIE);
    /* The token as Bearer, or in X-Tillsync-Token for a client whose Authorization header
     * carries the password (Basic); neither is sent by a browser on its own (no CSRF). */
    const char *tok = authz && strncmp(authz, "Bearer ", 7) == 0
                          ? authz + 7
                          : MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Tillsync-Token");
    if (tok) {
        if (!secret_eq(tok, co->token)) {
            *ret = unauthorized(co, c, "wrong token");
            return 0;
        }
        r->auth = 1;
    } else if (cookie && session_find(co, cookie, r->csrf)) {
        r->auth = 2;
    } else {
        *ret =
            unauthorized(co, c,
                         cookie ? "session expired: open the console's address with ?token= again"
                                : "no token: send Authorization: Bearer TOKEN");
        return 0;
    }
    if (post && r->auth == 2 &&
        !secret_eq(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token"), r->csrf)) {
        *ret = tsync__console_error(c, 403, "missing or wrong X-CSRF-Token (GET /api/session)");
        return 0;
    }
    if (post) {
        int upload = strcmp(url, "/api/import") == 0;
        r->max = upload ? CONSOLE_UPLOAD_MAX : CONSOLE_JSON_MAX;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > r->max) {
            *ret = tsync__console_error(c, 413, "body over %zu bytes", r->max);
            return 0;
        }
        if (upload) {
            const char *tmp = getenv("TMPDIR");
            char path[1024];
            snprintf(path, sizeof path, "%s/tillsync-upload-XXXXXX", tmp && *tmp ? tmp : "/tmp");
            int fd = mkstemp(path);
            if (fd >= 0) unlink(path);
            if (fd < 0 || !(r->upload = fdopen(fd, "w+"))) {
                if (fd >= 0) close(fd);
                *ret = tsync__console_error(c, 500, "cannot store the upload: %s", strerror(errno));
                return 0;
            }
        }
    }
    return 1;
}

/* A piece of the body: into the upload file or the body buffer, up to the cap. */
static void take_body(console_req *r, const char *data, size_t n)
{
    if (r->too_big || r->len + n > r->max) {
        r->too_big = 1;
        return;
    }
    if (r->upload) {
        if (fwrite(data, 1, n, r->upload) != n) r->too_big = 1;
    } else {
        if (r->len + n + 1 > r->cap) {
            size_t cap = (r->len + n + 1) * 2;
            char *b = realloc(r->body, cap);
            if (!b) {
                r->too_big = 1;
                return;
            }
            r->body = b, r->cap = cap;
        }
        memcpy(r->body + r->len, data, n);
        r->body[r->len + n] = 0;
    }
    r->len += n;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_size, void **con_cls)
{
    (void)version;
    tsync__console *co = cls;
    console_req *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        enum MHD_Result ret = MHD_YES;
        if (!admit(co, c, url, method, r, &ret)) r->refused = 1;
        return ret;
    }
    if (r->refused) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        take_body(r, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->too_big) return tsync__console_error(c, 413, "body over %zu bytes", r->max);
    if (r->upload && (fflush(r->upload) != 0 || fseek(r->upload, 0, SEEK_SET) != 0))
        return tsync__console_error(c, 500, "cannot store the upload: %s", strerror(errno));
    return tsync__console_route(co, c, url, method, r);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)c, (void)why;
    console_req *r = *con_cls;
    if (!r) return;
    if (r->upload) fclose(r->upload);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* ---------------------------------------------------------------- start and stop */

/* The first line of a file (without its line end), malloc'd; NULL when it cannot be read. */
static char *first_line(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f) ? strdup(buf) : strdup("");
    fclose(f);
    if (line) line[strcspn(line, "\r\n")] = 0;
    return line;
}

/* Reads the token, or makes one (32 random bytes as hex) in a new 0600 file. */
static int token_load(tsync__console *co)
{
    char *t = first_line(co->token_path);
    if (!t && errno == ENOENT) {
        uint8_t b[32];
        randombytes_buf(b, sizeof b);
        sodium_bin2hex(co->token, sizeof co->token, b, sizeof b);
        int fd = open(co->token_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[CONSOLE_HEX + 1];
            snprintf(line, sizeof line, "%s\n", co->token);
            int ok = write(fd, line, strlen(line)) == (ssize_t)strlen(line) && fsync(fd) == 0;
            close(fd);
            if (ok) return 0;
            unlink(co->token_path);
        }
        if (errno != EEXIST)
            return tsync__err(TSYNC_EIO, "cannot write the console token %s: %s", co->token_path,
                              strerror(errno));
        t = first_line(co->token_path); /* another node made it meanwhile */
    }
    if (!t)
        return tsync__err(TSYNC_EIO, "cannot read the console token %s: %s", co->token_path,
                          strerror(errno));
    uint8_t bin[32];
    size_t blen = 0;
    int ok = strlen(t) == 64 && sodium_hex2bin(bin, sizeof bin, t, 64, NULL, &blen, NULL) == 0 &&
             blen == 32;
    if (ok) memcpy(co->token, t, CONSOLE_HEX);
    free(t);
    if (!ok)
        return tsync__err(TSYNC_EINVAL,
                          "the console token %s is not 64 hex digits: remove it to make a new one",
                          co->token_path);
    return 0;
}

static char *dup_or_null(const char *s, int *rc)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *rc = TSYNC_ENOMEM;
    return d;
}

int tsync__console_start(tsync__console **out, const tsync__console_opts *o)
{
    *out = NULL;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    char host[64];
    const char *colon = strrchr(o->listen, ':');
    char *end = NULL;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (!colon || colon == o->listen || (size_t)(colon - o->listen) >= sizeof host || !colon[1] ||
        *end || port > 65535)
        return tsync__err(TSYNC_EINVAL, "console address %s: give it as ADDR:PORT (IPv4)",
                          o->listen);
    memcpy(host, o->listen, (size_t)(colon - o->listen));
    host[colon - o->listen] = 0;
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return tsync__err(TSYNC_EINVAL, "console address %s: %s is not an IPv4 address", o->listen,
                          host);
    sa.sin_port = htons((uint16_t)port);
    int loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    if (!loopback && !o->password_file)
        return tsync__err(TSYNC_EINVAL,
                          "console address %s is beyond loopback: give a password file too "
                          "(--console-password-file)",
                          o->listen);
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium does not start");

    tsync__console *co = calloc(1, sizeof *co);
    if (!co) return TSYNC_ENOMEM;
    pthread_mutex_init(&co->mu, NULL);
    pthread_mutex_init(&co->store_mu, NULL);
    pthread_mutex_init(&co->job_mu, NULL);
    co->node = o->node;
    int rc = 0;
    co->db_path = dup_or_null(o->db_path, &rc);
    co->key_path = dup_or_null(o->key_path, &rc);
    co->backup_dir = dup_or_null(o->backup_dir, &rc);
    if (rc == 0) {
        size_t len = strlen(o->db_path) + 32;
        co->token_path = malloc(len);
        if (co->token_path) snprintf(co->token_path, len, "%s.console-token", o->db_path);
        const char *base = strrchr(o->db_path, '/');
        base = base ? base + 1 : o->db_path;
        co->prefix = malloc(strlen(base) + 2);
        if (co->prefix) snprintf(co->prefix, strlen(base) + 2, "%s-", base);
        if (!co->token_path || !co->prefix) rc = TSYNC_ENOMEM;
    }
    if (rc == 0 && o->password_file) {
        co->password = first_line(o->password_file);
        if (!co->password)
            rc = tsync__err(errno == ENOENT ? TSYNC_ENOTFOUND : TSYNC_EIO,
                            "console password file %s: %s", o->password_file, strerror(errno));
        else if (!co->password[0])
            rc = tsync__err(TSYNC_EINVAL, "console password file %s: its first line is empty",
                            o->password_file);
    }
    if (rc == 0) rc = token_load(co);
    if (rc == 0) {
        co->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                                 NULL, NULL, handler, co, MHD_OPTION_SOCK_ADDR, &sa,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                                 MHD_OPTION_NOTIFY_COMPLETED, completed, co, MHD_OPTION_END);
        if (!co->d) rc = tsync__err(TSYNC_EIO, "console cannot listen on %s (in use?)", o->listen);
    }
    if (rc == 0) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(co->d, MHD_DAEMON_INFO_BIND_PORT);
        snprintf(co->address, sizeof co->address, "%s:%u", host,
                 di ? (unsigned)di->port : (unsigned)port);
        *out = co;
        return 0;
    }
    tsync__console_stop(co);
    return rc;
}

const char *tsync__console_address(const tsync__console *c)
{
    return c ? c->address : "";
}

const char *tsync__console_token_path(const tsync__console *c)
{
    return c->token_path;
}

void tsync__console_stop(tsync__console *co)
{
    if (!co) return;
    atomic_store(&co->stopping, 1); /* event streams end within their next poll */
    if (co->d) MHD_stop_daemon(co->d);
    tsync__console_jobs_stop(co);
    tsync_store_free(co->s);
    if (co->password) sodium_memzero(co->password, strlen(co->password));
    free(co->password);
    free(co->db_path);
    free(co->key_path);
    free(co->token_path);
    free(co->backup_dir);
    free(co->prefix);
    pthread_mutex_destroy(&co->mu);
    pthread_mutex_destroy(&co->store_mu);
    pthread_mutex_destroy(&co->job_mu);
    sodium_memzero(co->token, sizeof co->token);
    free(co);
}
