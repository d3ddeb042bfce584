/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/node.c — the sync node's public API (include/tillsync/node.h): making and freeing a
 * node, its loop (step: one round of events, merges, local commits and timers), running it on its
 * own thread or from the host's event loop, and its log. node_int.h lists what the other files of
 * net/node/ do.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../console/console.h"
#include "node_int.h"

#define PEERS_CHECK_MS 100 /* peer rows rebuilt at least this often */

/* ---------------------------------------------------------------- logging */

static void log_line(tsync_node *n, int level, const char *msg)
{
    if (n->o.log) {
        n->o.log(n->o.log_ctx, level, msg);
        return;
    }
    static const char *const lv[] = {"", "ERROR", "WARN", "INFO", "DEBUG"};
    uint64_t now = tsync__wall_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ %-5s %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(now % 1000),
            lv[level >= 1 && level <= 4 ? level : 0], msg);
}

/* A log or error line from its format, cut at a whole UTF-8 character. */
#define LINE_MAX_BYTES 1024
static void format_line(char msg[LINE_MAX_BYTES], const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void format_line(char msg[LINE_MAX_BYTES], const char *fmt, va_list ap)
{
    vsnprintf(msg, LINE_MAX_BYTES, fmt, ap);
    tsync__utf8_trim(msg);
}

void tsync__node_log(tsync_node *n, int level, const char *fmt, ...)
{
    if (level > n->o.log_level) return;
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, fmt, ap);
    va_end(ap);
    log_line(n, level, msg);
}

/* Keeps msg as the node's last error (the app reads it from any thread). */
static void error_keep(tsync_node *n, int code, const char *msg, int stopped)
{
    pthread_mutex_lock(&n->err_mu);
    n->err.code = code ? code : TSYNC_ERROR;
    n->err.stopped = stopped;
    n->err.count++;
    n->err.at_ms = tsync__wall_ms();
    snprintf(n->err.message, sizeof n->err.message, "%s", msg);
    tsync__utf8_trim(n->err.message);
    pthread_mutex_unlock(&n->err_mu);
}

void tsync__node_error(tsync_node *n, int code, const char *fmt, ...)
{
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, fmt, ap);
    va_end(ap);
    error_keep(n, code, msg, 0);
    if (TSYNC_LOG_ERROR <= n->o.log_level) log_line(n, TSYNC_LOG_ERROR, msg);
}

/* A short name for a peer in log lines: its device name, else its key prefix, else its address. */
const char *tsync__node_peer_label(const npeer *p, char buf[LBL])
{
    char k[17] = "";
    if (p->key_known) tsync__hex(p->pk, 8, k);
    if (p->name[0])
        snprintf(buf, LBL, "%s (%s)", p->name, k);
    else if (k[0])
        snprintf(buf, LBL, "%s at %s", k, p->addr);
    else
        snprintf(buf, LBL, "%s", p->addr[0] ? p->addr : "?");
    return buf;
}

const char *tsync__node_errtext(void)
{
    const tsync_error *e = tsync_error_last();
    return e->code && e->message ? e->message : "unknown error";
}

/* ---------------------------------------------------------------- the loop */

/* One round: events (waiting up to wait_ms for the first), merges, local commits, timers. */
static int step(tsync_node *n, int wait_ms)
{
    tsync__tp_event ev;
    int rc = tsync__tp_poll(n->tp, wait_ms, &ev);
    int count = 0;
    while (rc == 1) {
        tsync__node_on_event(n, &ev);
        if (++count >= 512 || n->mq.bytes >= MERGE_QUEUE_MAX) break;
        rc = tsync__tp_poll(n->tp, 0, &ev);
    }
    if (rc < 0) {
        tsync__node_error(n, rc, "transport failed: %s", tsync__node_errtext());
        return rc;
    }
    tsync__node_relay_tick(n); /* its envelopes join this round's merge */
    tsync__node_flush_merges(n);
    tsync__node_snap_tick(n);
    tsync__node_identity_check(n);
    uint64_t now = tsync__mono_ms();
    if ((rc = tsync__node_local_changes(n, now)) && rc != TSYNC_EBUSY) n->failed = rc;
    tsync__node_relay_push(n); /* what we sealed or merged this round */
    if (now - n->last_ae_mono >= (uint64_t)n->o.anti_entropy_ms) {
        n->last_ae_mono = now;
        tsync__node_anti_entropy(n, now);
        tsync__node_schema_tick(n);
    }
    tsync__node_push_waiting(n, now);
    if (n->forward_due && now >= n->forward_due) {
        n->forward_due = 0;
        tsync__node_forward_due(n);
    }
    tsync__node_discovery(n);
    tsync__node_liveness(n, now);
    tsync__node_clock_tick(n, now);
    tsync__node_close_due(n, now);
    tsync__node_backup_tick(n, now);
    tsync__node_cloud_tick(n, now); /* net/node/cloud.c */
    /* The peer rows (and their events) are rebuilt when something changed, at least every
     * PEERS_CHECK_MS for the timed transitions, and always right before the status reads them
     * (a row points at its session, valid until the next change). Not on every 2 ms tick. */
    int publish =
        n->status_dirty ? now - n->last_status_mono >= 100 : now - n->last_status_mono >= 1000;
    if (publish || n->status_dirty || now - n->last_peers_mono >= PEERS_CHECK_MS) {
        n->last_peers_mono = now;
        tsync__node_mdns_fallback(n, now);
        tsync__node_links_update(n);
        tsync__node_sync_eval(n);
    }
    if (publish) {
        n->last_status_mono = now;
        tsync__node_status_publish(n);
    }
    return n->failed;
}

/* ---------------------------------------------------------------- the threading contract */

/* The node loops running on this thread, innermost first. Callbacks run inside a loop, so a call
 * found here for its own node comes from one of its callbacks: re-entering the loop or freeing
 * the node under it would break it (include/tillsync/node.h, THREAD SAFETY). */
typedef struct loop_frame {
    const tsync_node *n;
    struct loop_frame *up;
} loop_frame;
static _Thread_local loop_frame *tl_loops;

static int in_callback(const tsync_node *n)
{
    for (const loop_frame *f = tl_loops; f; f = f->up)
        if (f->n == n) return 1;
    return 0;
}

static int refused_in_callback(const char *fn)
{
    return tsync__err(TSYNC_EINVAL,
                      "%s called inside a callback of the same node: call it once the callback "
                      "returned (from the app's own thread)",
                      fn);
}

/* ---------------------------------------------------------------- public API */

int tsync__node_store_open(tsync_node *n, tsync_store **out)
{
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.key_path = n->key_path;
    return tsync_store_open(out, n->db_path, &so);
}

int tsync_node_new(tsync_node **out, const char *db_path, const tsync_node_options *opts)
{
    *out = NULL;
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    if (opts && opts->version == 1) /* before on_peer_state */
        memcpy(&o, opts, offsetof(tsync_node_options, on_peer_state));
    else if (opts && opts->version == 2) /* before key_path */
        memcpy(&o, opts, offsetof(tsync_node_options, key_path));
    else if (opts && opts->version == 3) /* before console */
        memcpy(&o, opts, offsetof(tsync_node_options, console));
    else if (opts && opts->version == 4) /* before no_relay */
        memcpy(&o, opts, offsetof(tsync_node_options, no_relay));
    else if (opts)
        o = *opts;
    if (o.version < 1 || o.version > TSYNC_NODE_OPTIONS_VERSION) {
        /* TSYNC_EINVAL, not TSYNC_EVERSION: the code this call has always returned (docs/API.md).
         */
        return tsync__err(TSYNC_EINVAL,
                          "tsync_node_options version %u is not one this library knows (1 to %u): "
                          "initialise it with TSYNC_NODE_OPTIONS_INIT",
                          o.version, (unsigned)TSYNC_NODE_OPTIONS_VERSION);
    }
    if (!o.log_level) o.log_level = TSYNC_LOG_INFO;
    if (o.tick_ms <= 0) o.tick_ms = 2;
    if (o.anti_entropy_ms <= 0) o.anti_entropy_ms = 2000;
    if (!o.window_bytes) o.window_bytes = 8u << 20;
    if (!o.prune_keep) o.prune_keep = 10000;
    if (o.prune_ms <= 0) o.prune_ms = 10000;
    if (o.liveness_ms <= 0) o.liveness_ms = 3500;
    if (o.backup_every_ms && !o.backup_dir)
        return tsync__err(TSYNC_EINVAL, "a backup schedule needs a backup folder");
    if (!o.backup_keep) o.backup_keep = 10;
    tsync_node *n = calloc(1, sizeof *n);
    if (!n) return TSYNC_ENOMEM;
    n->o = o;
    n->lock_fd = -1;
    pthread_mutex_init(&n->status_mu, NULL);
    pthread_mutex_init(&n->err_mu, NULL);
    pthread_mutex_init(&n->join_mu, NULL);
    tsync__node_sync_init(n);
    n->started_ms = tsync__wall_ms();
    n->clock.resets_seen = -1;
    n->db_path = strdup(db_path);
    int rc = n->db_path ? 0 : TSYNC_ENOMEM;
    if (rc == 0) {
        const char *sp = o.status_path;
        if (!sp) {
            size_t len = strlen(db_path) + 6;
            n->status_path = malloc(len);
            if (n->status_path) snprintf(n->status_path, len, "%s.node", db_path);
        } else if (sp[0]) {
            n->status_path = strdup(sp);
        }
    }
    if (rc == 0 && o.key_path && !(n->key_path = strdup(o.key_path))) rc = TSYNC_ENOMEM;
    n->o.key_path = NULL;
    n->o.status_path = NULL;
    n->o.peers = NULL;
    n->o.backup_dir = NULL;
    if (rc == 0 && o.backup_dir) {
        struct stat sb;
        if (stat(o.backup_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            rc = tsync__err(TSYNC_ENOTFOUND, "backup folder %s does not exist", o.backup_dir);
        else if (!(n->backup.dir = strdup(o.backup_dir)))
            rc = TSYNC_ENOMEM;
        n->o.backup_dir = n->backup.dir;
    }
    /* One node per database, decided before anything is opened or written (a missing database
     * is left to the open below, which says so). */
    struct stat dbst;
    if (rc == 0 && stat(db_path, &dbst) == 0) rc = tsync__node_lock(n);
    if (rc == 0) {
        /* Opening may write (an upgrade of the internal tables), and a POS selling without a
         * pause holds the write lock often: the open waits as long as any command does. Once
         * open, the node's thread must never wait long for the app's write lock: while it waits
         * it reads no messages (peers would see it as dead). A merge or seal that finds the
         * database busy is retried; batches are sent again by their sender. */
        rc = tsync__node_store_open(n, &n->s);
        if (rc == 0) tsync__sync_busy_timeout(n->s, 250);
    }
    if (rc == 0) rc = tsync__sync_ckpt_start(n->s, 100, &n->ckpt);
    if (rc == 0) {
        int en = tsync__trust_enrolled(n->s, n->shop);
        if (en < 0)
            rc = en;
        else
            n->enrolled = en;
    }
    if (rc == 0 && o.npeers) {
        n->statics = calloc(o.npeers, sizeof *n->statics);
        if (!n->statics) rc = TSYNC_ENOMEM;
        for (size_t i = 0; rc == 0 && i < o.npeers; i++) {
            char err[TSYNC__ERRLEN];
            if ((rc = tsync__node_parse_peer(o.peers[i], &n->statics[i], err, sizeof err))) {
                tsync__err(rc, "%s", err);
                break;
            }
            n->nstatics++;
            if (!n->statics[i].has_key && !n->enrolled)
                rc = tsync__err(TSYNC_EINVAL,
                                "peer %s: give its key as %s#KEY (KEY: that till's public key, 64 "
                                "hex digits): this database is not enrolled in a shop, so it has "
                                "no certificates to learn the key from",
                                o.peers[i], o.peers[i]);
        }
    }
    if (rc == 0) {
        tsync__tp_options to = TSYNC__TP_OPTIONS_INIT;
        to.admit = tsync__node_admit;
        /* One batch may be up to 64 MiB (older builds sealed a transaction whole; ours cut at
         * about 4 MiB). The receive queue holds up to 16 messages of that size per peer. */
        to.max_msg = TSYNC__WIRE_MAX_FRAME;
        to.heartbeat_ivl_ms = -1; /* tsync__node_liveness() instead */
        to.rcv_queue_bytes = (size_t)16 * TSYNC__WIRE_MAX_FRAME;
        to.admit_ctx = n;
        rc = tsync__tp_new(&n->tp, tsync__sync_secret_key(n->s), &to);
        if (rc) tsync__err(rc, "cannot start the transport: %s", tsync__node_errtext());
    }
    if (rc == 0 && n->enrolled) {
        /* Revoked keys are refused at the handshake from the start. */
        uint8_t **blobs = NULL;
        size_t *lens = NULL, nb = 0;
        if (tsync__trust_export(n->s, &blobs, &lens, &nb) == 0) {
            for (size_t i = 0; i < nb; i++) {
                tsync__arena a = {0};
                tsync__trust_rec rec;
                char err[TSYNC__ERRLEN];
                if (tsync__trust_decode(blobs[i], lens[i], &rec, &a, err) == 0 &&
                    rec.kind == TSYNC__T_REVOCATION)
                    tsync__tp_revoke(n->tp, rec.u.rev.device_pk);
                tsync__arena_free(&a);
            }
            tsync__trust_export_free(blobs, lens, nb);
        }
    }
    if (rc == 0) {
        const char *listen = o.listen ? o.listen : "tcp://0.0.0.0:7400";
        if (listen[0]) {
            rc = tsync__tp_bind(n->tp, listen, n->endpoint, sizeof n->endpoint);
            if (rc) tsync__err(rc, "cannot listen on %s: %s", listen, tsync__node_errtext());
        }
    }
    if (rc == 0 && o.console && o.console[0]) {
        tsync__console_opts co = {
            n, db_path, n->key_path, o.console, o.console_password_file, n->backup.dir};
        rc = tsync__console_start(&n->console, &co);
        if (rc == 0)
            tsync__node_log(n, TSYNC_LOG_INFO, "console on http://%s/ (token in %s)",
                            tsync__console_address(n->console),
                            tsync__console_token_path(n->console));
    }
    n->o.console = n->o.console_password_file = NULL;
    if (rc == 0) tsync__node_lock_listening(n);
    if (rc == 0 && !o.no_mdns) {
        /* Publish and browse _tillsync._tcp; without a daemon this only says so (DAEMON_DOWN)
         * and keeps trying in the background. */
        tsync__disc_self self;
        memset(&self, 0, sizeof self);
        self.version = TSYNC_WIRE_VERSION;
        self.has_shop = n->enrolled;
        memcpy(self.shop, n->shop, sizeof self.shop);
        memcpy(self.key, tsync__sync_public_key(n->s), sizeof self.key);
        const char *colon = strrchr(n->endpoint, ':');
        self.port = colon ? (uint16_t)atoi(colon + 1) : 0;
        n->mdns.port = self.port;
        if (tsync__disc_avahi_new(&n->mdns.disc, &self) != 0) {
            tsync__node_log(n, TSYNC_LOG_WARN, "mDNS off: %s", tsync__node_errtext());
            n->mdns.disc = NULL;
        }
    }
    if (rc == 0) rc = tsync__node_relay_new(n);
    if (rc == 0) rc = tsync__node_refresh_ours(n);
    if (rc == 0) n->own_seq0 = tsync__vv_seq(&n->ours, tsync_store_site_id(n->s));
    for (size_t i = 0; rc == 0 && i < n->nstatics; i++) {
        uint32_t id;
        if (n->statics[i].has_key && (rc = tsync__node_dial(n, i, n->statics[i].key, &id)))
            tsync__err(rc, "cannot dial %s: %s", n->statics[i].endpoint, tsync__node_errtext());
    }
    if (rc == 0) {
        tsync__node_dial_candidates(n);
        for (size_t i = 0; i < n->nstatics; i++) {
            speer *sp = &n->statics[i];
            if (sp->has_key || sp->ncands) continue;
            sp->waiting = 1; /* said once; the status lists it until it is dialled */
            tsync__node_log(n, TSYNC_LOG_WARN, "peer %s not dialled: %s", sp->endpoint,
                            KEYLESS_WAIT);
        }
        tsync__sync_changed(n->s); /* the first call only sets the baseline */
        tsync__node_trust_check(n);
        size_t nb = 0;
        if (tsync_store_seal(n->s, &nb) == 0) n->local_batches += nb;
        tsync__node_refresh_ours(n);
        char site[33];
        tsync__hex(tsync_store_site_id(n->s), TSYNC__SITE_BYTES, site);
        char key[65];
        tsync__hex(tsync__sync_public_key(n->s), TSYNC__PK_BYTES, key);
        tsync__node_log(n, TSYNC_LOG_INFO, "node for %s: site %s, key %s%s%s", db_path, site, key,
                        n->endpoint[0] ? ", listening on " : "", n->endpoint);
        tsync__node_schema_tick(n); /* differences already known are said once, at start */
        n->last_ae_mono = tsync__mono_ms();
        /* The first scheduled backup a minute after start, then every backup_every_ms. */
        n->backup.next_mono =
            n->last_ae_mono + (n->o.backup_every_ms < 60000 ? n->o.backup_every_ms : 60000);
        tsync__node_status_publish(n);
        *out = n;
        return 0;
    }
    tsync_node_free(n);
    return rc;
}

int tsync_node_fd(tsync_node *n)
{
    return tsync__tp_fd(n->tp);
}

int tsync_node_timeout_ms(tsync_node *n)
{
    int t = tsync__tp_timeout_ms(n->tp);
    if (tsync__node_snap_busy(n)) return 0; /* snapshot chunks to merge */
    if (n->mq.n) {
        uint64_t now = tsync__mono_ms();
        if (!n->mq.retry_mono || now >= n->mq.retry_mono) return 0;
        int r = (int)(n->mq.retry_mono - now);
        if (t < 0 || r < t) t = r;
    }
    if (n->forward_due) {
        uint64_t now = tsync__mono_ms();
        int f = now >= n->forward_due ? 0 : (int)(n->forward_due - now);
        if (t < 0 || f < t) t = f;
    }
    return t >= 0 && t < n->o.tick_ms ? t : n->o.tick_ms;
}

int tsync_node_dispatch(tsync_node *n)
{
    if (in_callback(n)) return refused_in_callback("tsync_node_dispatch");
    loop_frame fr = {n, tl_loops};
    tl_loops = &fr;
    int rc = step(n, 0);
    tl_loops = fr.up;
    return rc;
}

int tsync_node_run(tsync_node *n, volatile sig_atomic_t *stop)
{
    if (in_callback(n)) return refused_in_callback("tsync_node_run");
    loop_frame fr = {n, tl_loops};
    tl_loops = &fr;
    int rc = 0;
    while (!atomic_load(&n->stop) && !(stop && *stop)) {
        int t = tsync_node_timeout_ms(n);
        if ((rc = step(n, t))) break;
    }
    /* The failure that stops the node, in words, before the goodbye below can overwrite it. */
    char why[TSYNC_NODE_ERROR_LEN] = "";
    if (rc) snprintf(why, sizeof why, "the node stopped after an error: %s", tsync__node_errtext());
    /* Say goodbye so peers mark us offline at once rather than after heartbeats. */
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified) {
            tsync__msg m = {.type = TSYNC__WIRE_ERROR};
            m.error.code = TSYNC__WIRE_ERR_SHUTDOWN;
            m.error.text = "node stopping";
            m.error.len = strlen(m.error.text);
            tsync__node_send_msg(n, n->peers[i], &m);
        }
    size_t nb = 0;
    if (n->s && tsync_store_seal(n->s, &nb) == 0) n->local_batches += nb;
    tsync__node_backup_finish(n);
    tsync__node_cloud_finish(n);
    if (n->status_path) remove(n->status_path);
    if (rc) error_keep(n, rc, why, 1);
    tsync__node_log(n, rc ? TSYNC_LOG_ERROR : TSYNC_LOG_INFO, "node stopped%s",
                    rc ? " after an error" : "");
    tl_loops = fr.up;
    return rc;
}

static void *thread_main(void *arg)
{
    tsync_node_run(arg, NULL);
    return NULL;
}

int tsync_node_start(tsync_node *n)
{
    /* Before the lock: a stop on another thread may hold it while it joins this one. */
    if (in_callback(n)) return refused_in_callback("tsync_node_start");
    pthread_mutex_lock(&n->join_mu);
    int rc = n->thread_running ? TSYNC_EEXISTS : 0;
    if (rc == 0) {
        atomic_store(&n->stop, 0);
        if (pthread_create(&n->thread, NULL, thread_main, n) != 0)
            rc = TSYNC_ERROR;
        else
            n->thread_running = 1;
    }
    pthread_mutex_unlock(&n->join_mu);
    return rc;
}

void tsync_node_stop(tsync_node *n)
{
    if (!n) return;
    atomic_store(&n->stop, 1);
    /* Inside a callback (on the node's own thread, or the app's inside tsync_node_run): only
     * asked; the loop ends after this round. Joining here would wait for ourselves. */
    if (in_callback(n)) return;
    pthread_mutex_lock(&n->join_mu);
    if (n->thread_running && !pthread_equal(pthread_self(), n->thread)) {
        pthread_join(n->thread, NULL);
        n->thread_running = 0;
    }
    pthread_mutex_unlock(&n->join_mu);
}

int tsync_node_last_error(tsync_node_error *out, tsync_node *n)
{
    if (!out || !n) return tsync__err(TSYNC_EINVAL, "tsync_node_last_error: no node or no output");
    if (out->version != TSYNC_NODE_ERROR_VERSION)
        return tsync__err(TSYNC_EINVAL,
                          "node error record of an unknown version %u (this library: %u)",
                          out->version, TSYNC_NODE_ERROR_VERSION);
    pthread_mutex_lock(&n->err_mu);
    *out = n->err;
    pthread_mutex_unlock(&n->err_mu);
    out->version = TSYNC_NODE_ERROR_VERSION;
    return 0;
}

int tsync_node_status_json(char **out, tsync_node *n)
{
    pthread_mutex_lock(&n->status_mu);
    *out = n->status_json ? strdup(n->status_json) : NULL;
    pthread_mutex_unlock(&n->status_mu);
    return *out ? 0 : TSYNC_ENOMEM;
}

const char *tsync_node_endpoint(tsync_node *n)
{
    return n->endpoint;
}

const char *tsync_node_console_address(tsync_node *n)
{
    return n->console ? tsync__console_address(n->console) : "";
}

void tsync_node_free(tsync_node *n)
{
    if (!n) return;
    if (in_callback(n)) {
        /* Freeing the node under its own loop would crash it: refused, and said. */
        refused_in_callback("tsync_node_free");
        tsync__node_error(n, TSYNC_EINVAL, "%s", tsync__node_errtext());
        return;
    }
    tsync_node_stop(n);
    tsync__console_stop(n->console); /* before the node: its requests read the node's status */
    tsync__node_q_clear(n);
    free(n->mq.q);
    for (size_t i = 0; i < n->npeers; i++) {
        if (n->peers[i]->used) tsync__node_peer_free(n->peers[i]);
        free(n->peers[i]);
    }
    free(n->peers);
    free(n->links);
    free(n->mdns.found);
    for (size_t i = 0; i < n->nstatics; i++) {
        free(n->statics[i].cands);
        free(n->statics[i].cand_keys);
    }
    free(n->statics);
    tsync__vv_free(&n->ours);
    tsync__disc_free(n->mdns.disc);
    tsync__tp_free(n->tp);
    tsync__node_relay_free(n);
    tsync__sync_ckpt_stop(n->s, n->ckpt);
    tsync_store_free(n->s);
    free(n->status_json);
    free(n->status_path);
    free(n->backup.dir);
    free(n->db_path);
    free(n->key_path);
    tsync__node_unlock(n);
    pthread_mutex_destroy(&n->status_mu);
    pthread_mutex_destroy(&n->err_mu);
    pthread_mutex_destroy(&n->join_mu);
    tsync__node_sync_free(n);
    free(n);
}
