/*
 * net/node.c — the sync node (include/tillsync/node.h): sessions over the transport, the HELLO
 * handshake with certificate check, push of new batches, merge of received ones, forwarding,
 * anti-entropy, flow control, status. docs/NODE.md describes the protocol rules it follows.
 *
 * How batches move
 * - Each peer has two vectors: `acked`, what it told us it holds (HELLO, then every ACK), and
 *   `sent`, acked plus what we sent since. We push whatever `sent` lacks, as signed run pieces
 *   (store/sync.h) of about 1 MiB, while fewer than window_bytes are unacknowledged; the rest
 *   follows as ACKs come back. So a till a day behind is caught up in bounded chunks, and new sales
 *   (small pieces) are never queued behind more than a window of backlog.
 * - Received BATCHES are queued while events are drained, then merged in one transaction (one per
 *   peer if a combined merge is refused, so one bad peer cannot block the others), and every sender
 *   gets an ACK with our new vector. Merged batches change our vector, so the same push sends them
 *   on to every peer that lacks them: forwarding needs no extra rule.
 * - Every anti_entropy_ms each peer gets our vector (ACK); a peer whose ACKs stopped covering what
 *   we sent for that long gets it again from its last ACK (lost, or held for dependencies).
 * - Local commits by other connections are seen through PRAGMA data_version every tick_ms.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/cert.h"
#include "net/discovery.h"
#include "net/transport.h"
#include "codec/wire.h"
#include "store/identity.h"
#include "store/schema.h"
#include "store/snapshot.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tillsync/backup.h"
#include "tillsync/migrate.h"
#include "tillsync/node.h"
#include "tillsync/store.h"

/* Inputs refused, by reason (status shows them). */
enum {
    R_MALFORMED,  /* a message that does not decode */
    R_UNEXPECTED, /* a message out of order (not HELLO first, HELLO twice, ...) */
    R_VERSION,    /* another protocol version */
    R_SHOP,       /* another shop, or enrolled vs not enrolled */
    R_CERT,       /* certificate missing, invalid, expired, revoked, or not the session's key */
    R_SIGNATURE,  /* batches with a bad signature or broken chain */
    R_FORK,       /* batches that fork an origin */
    R_BATCH,      /* batches refused for another reason (no certificate for their author, ...) */
    R_TRUST,      /* trust records refused */
    R_OVERSIZE,   /* messages over the size limit (transport) */
    R_DENIED,     /* handshakes refused (revoked key) */
    R_HANDSHAKE,  /* handshakes that failed the protocol or the cryptography (not: incomplete) */
    R_SNAPSHOT,   /* snapshots refused (not enrolled, malformed, hash mismatch) */
    R_COUNT
};
static const char *const R_NAME[R_COUNT] = {
    "malformed", "unexpected", "version",  "shop",   "certificate", "signature", "fork",
    "batch",     "trust",      "oversize", "denied", "handshake",   "snapshot",
};

#define MAX_BAD_MESSAGES 16
#define FORWARD_DELAY_MS 3
#define PING_IDLE_MS     1000
#define PEERS_CHECK_MS   100  /* peer rows rebuilt at least this often */
#define MDNS_FALLBACK_MS 3000 /* no session with an advertised till this long: dial it too */
#define MERGE_RETRY_MS   50
#define QUEUE_HARD_MAX                                                                             \
    (64u << 20) /* BATCHES beyond this while the database is busy are                              \
                   dropped: their senders send them again */
#define SNAP_CHUNK_BYTES (1u << 20)
#define SNAP_INTERVAL_MS 30000
#define PUSH_ERR_LOG_MS  60000 /* the same failure to send batches is logged this often */
#define SNAP_MAX_BYTES                                                                             \
    (2ull << 30) /* a snapshot larger than this is refused */ /* a session that sends more         \
                                                                 malformed messages is closed */
#define MERGE_QUEUE_MAX (2u << 20) /* merge once this much is queued (bounds catch-up memory) */
#define LBL             (TSYNC__TP_ADDR_LEN + 96) /* a peer label in log lines */
/* Why a static address without #KEY is not dialled (log and status). */
#define KEYLESS_WAIT                                                                               \
    "no #KEY given and this till knows no other till's certificate yet, so it has no key to "      \
    "expect there; give tcp://HOST:PORT#KEY (the public_key 'tillsync state' shows on that "       \
    "till), or install that till's certificate ('tillsync enrol DB CERT OTHERCERT'); it is "       \
    "dialled as soon as a certificate of another till is known"
#define REFUSAL_KEEP_MS 30000 /* a till refused (or refusing us) shows "refused" this long */
#define REFUSAL_LOG_MS  60000 /* the same refusal is logged at most this often per till */
#define REFUSALS_MAX    16
#define CLOCK_CHECK_MS  1000  /* the shop's clock is worked out this often */
#define CLOCK_PING_MS   10000 /* a peer's clock is measured again this often (PING/PONG) */
#define CLOCK_RECORD_MS 20000 /* and recorded for the sealers this often (while it matters) */
#define CLOCK_LOG_MS    60000 /* a wrong clock is logged this often while it lasts */

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq;
    size_t bytes;
    uint64_t sent_mono; /* pieces are kept in send order */
} inflight;

/* A snapshot being sent or received. */
typedef struct {
    int active;
    uint8_t id[TSYNC__SITE_BYTES];
    uint8_t **chunk;
    size_t *len;
    size_t n, cap, next, bytes;
    tsync__vv vv;
    crypto_generichash_state h;
} snap;

typedef struct {
    int used;
    uint32_t id;
    int up, hello, verified, inbound;
    int static_idx; /* index in n->statics, -1 when inbound */
    int mdns;       /* dialled because mDNS advertised it */
    int key_known;
    uint8_t pk[TSYNC__PK_BYTES];
    char name[TSYNC__TRUST_NAME_MAX + 1]; /* from its certificate: up to 64 bytes of UTF-8 */
    char addr[TSYNC__TP_ADDR_LEN];
    tsync__vv acked, sent;
    int fork_check; /* compare head hashes on the next push (after HELLO) */
    inflight *fl;
    size_t nfl, capfl, fl_bytes;
    uint64_t up_ms, seen_ms, progress_mono;
    uint64_t rx_batches, tx_batches, rx_msgs, tx_msgs;
    uint64_t schema;
    int64_t clock_delta_ms;
    int64_t clock_base_ms;  /* wall - monotonic when it was measured (our clock jumped: stale) */
    uint64_t clock_mono;    /* when it was measured (monotonic); 0: not measured */
    uint64_t verified_mono; /* when its HELLO was admitted */
    int bad;
    int ack_dirty; /* acked changed since it was stored (pruning reads the stored ones) */
    uint64_t last_snap_mono;
    int64_t fork_sent;         /* fork proofs up to this id were sent in this session */
    uint64_t rx_mono, tx_mono; /* last message received / sent (liveness) */
    snap out, in;
    uint64_t close_at_mono; /* close after an ERROR had time to leave; 0: not closing */
    uint64_t born_mono;     /* when this entry was made (dialled, or an inbound session came) */
    /* The last failure to send batches to this peer, logged once per PUSH_ERR_LOG_MS while it
     * repeats (push runs on every acknowledgement and tick). */
    char push_err[160];
    uint64_t push_err_mono;
    unsigned push_err_repeats;
    /* n->snaps_received when the peer last told us its vector (HELLO or ACK): a snapshot we took
     * since may have put our horizon above what we last heard, so that is no proof it is behind. */
    uint64_t vv_snaps;
} npeer;

/* A till of our shop advertised over mDNS (what the UI shows as "discovered"). */
typedef struct {
    uint8_t key[TSYNC__PK_BYTES];
    char endpoint[TSYNC__TP_ADDR_LEN];
    char name[64]; /* its service name, printable ASCII only */
    uint64_t found_ms;
    uint64_t quiet_mono; /* since when no session with it is up (monotonic ms) */
} nfound;

/* One row of the network state the app and `tillsync status` see: a remote till (by key, or by
 * address while its key is unknown) with its state and when it entered it. Rebuilt from the
 * sessions and the mDNS advertisements on every change (step()); a change of state is an event. */
typedef struct {
    char id[2 * TSYNC__PK_BYTES + TSYNC__TP_ADDR_LEN + 4];
    int key_known;
    uint8_t pk[TSYNC__PK_BYTES];
    char addr[TSYNC__TP_ADDR_LEN];
    char name[TSYNC__TRUST_NAME_MAX + 1];
    const char *via;    /* "static", "mdns", "inbound" */
    int state;          /* a tsync_peer_state */
    const char *reason; /* why it is waiting (a static string), or NULL */
    uint64_t since_ms, connected_ms, lost_ms, discovered_ms, seen_ms;
    npeer *p;      /* the session shown (NULL: only advertised); valid until the next rebuild */
    char why[160]; /* TSYNC_PEER_REFUSED: the reason */
} nlink;

/* A till whose certificate we refused, or that refused ours, recently: its row shows "refused"
 * with the reason (on both sides), and the refusal is logged once a minute, not at every dial. */
typedef struct {
    uint8_t pk[TSYNC__PK_BYTES];
    char addr[TSYNC__TP_ADDR_LEN];
    char name[TSYNC__TRUST_NAME_MAX + 1];
    int by_peer; /* it refused us */
    int inbound;
    char why[160];
    uint64_t at_mono, logged_mono;
} nrefusal;

typedef struct {
    char endpoint[TSYNC__TP_ADDR_LEN];
    int has_key;
    uint8_t key[TSYNC__PK_BYTES];
    uint32_t *cands; /* keyless: one dial per candidate key */
    uint8_t *cand_keys;
    size_t ncands;
    int found;
    int waiting; /* keyless and no candidate yet: said so in the log, listed as waiting */
} speer;

typedef struct {
    uint32_t peer;
    uint8_t *frame;
    size_t len;
    tsync__msg m;
    tsync__arena a;
} qmsg;

struct tsync_node {
    tsync_store *s;
    uint8_t schema_digest[TSYNC__HASH_BYTES]; /* of our table definitions, last we told peers */
    int schema_known;
    tsync__tp *tp;
    tsync__disc *disc; /* mDNS (avahi); NULL with no_mdns */
    int disc_down_logged;
    int disc_daemon;    /* mDNS daemon: 0 not known yet, 1 reachable, -1 not reachable */
    uint16_t disc_port; /* the port we publish (0: browse only) */
    tsync__ckpt *ckpt;
    tsync_node_options o;
    char *db_path;
    char *status_path;
    char endpoint[TSYNC__TP_ADDR_LEN];
    int enrolled;
    uint8_t shop[TSYNC__SHOP_ID_BYTES];

    npeer **peers;
    size_t npeers;
    nfound *found;
    size_t nfound_, capfound;
    nlink *links;
    size_t nlinks;
    speer *statics;
    size_t nstatics;

    qmsg *q;
    size_t nq, capq, qbytes;

    tsync__vv ours;
    int ours_valid;

    uint64_t started_ms, last_ae_mono, last_status_mono, last_seal_mono, last_prune_mono;
    uint64_t last_peers_mono; /* peer rows rebuilt (links_update) */
    uint64_t pruned, snaps_sent, snaps_received;
    uint64_t forward_due;      /* monotonic ms when merged batches are forwarded; 0: none */
    uint64_t merge_retry_mono; /* the database was busy: merge again at this time */
    uint64_t backups_done, backups_failed, last_backup_ms;
    uint64_t own_seq0; /* our own head when the node started */
    int seal_retry;    /* the last seal found the database busy */
    char *backup_dir_copy;
    uint8_t trust_digest[TSYNC__HASH_BYTES];
    int trust_digest_valid;

    nrefusal refusals[REFUSALS_MAX];
    size_t nrefusals;
    /* The shop's clock: the median of the connected peers' clocks (docs/DATA_MODEL.md) */
    int clock_known, clock_recorded;
    size_t clock_peers;
    int64_t clock_off_ms, clock_rec_off_ms, clock_resets_seen;
    uint64_t clock_check_mono, clock_rec_mono, clock_warned_mono, clock_diff_logged_mono;
    uint64_t hlc_warned_mono; /* the hybrid clock ahead: logged this often (its own timer) */

    uint64_t refused[R_COUNT];
    uint64_t hs_incomplete; /* inbound handshakes that timed out or were hung up on */
    uint64_t merged, conflicts, held_reported, local_batches, merges;
    int failed; /* the database failed: the node stops */
    /* The disk is full (TSYNC_EFULL): sessions go on, sealing and merging wait and are retried
     * with a backoff (full_retry_mono), and status says so. */
    int disk_full;
    uint64_t full_since_ms, full_retry_mono, full_backoff_ms, full_logged_mono;
    unsigned renewals_seen; /* incarnations the store took that the log has reported */
    int identity_checked;   /* the first check (at start) was done */

    /* Scheduled backups run on a worker thread with its own connection, so sync goes on. */
    pthread_t backup_thread;
    atomic_int backup_state; /* 0 idle, 1 running, 2 finished (result in backup_rc) */
    int backup_rc;
    char backup_err[512], backup_path[1024];
    uint64_t next_backup_mono;

    pthread_t thread;
    int thread_running;
    atomic_int stop;
    pthread_mutex_t status_mu;
    char *status_json;
    int status_dirty;
};

/* ---------------------------------------------------------------- time and logging */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void logf_(tsync_node *n, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(tsync_node *n, int level, const char *fmt, ...)
{
    if (level > n->o.log_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(msg);
    if (n->o.log) {
        n->o.log(n->o.log_ctx, level, msg);
        return;
    }
    static const char *const lv[] = {"", "ERROR", "WARN", "INFO", "DEBUG"};
    uint64_t now = wall_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ %-5s %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(now % 1000),
            lv[level >= 1 && level <= 4 ? level : 0], msg);
}

static void hex(const uint8_t *p, size_t len, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * len] = 0;
}

/* A short name for a peer in log lines: its device name, else its key prefix, else its address. */
static const char *peer_label(const npeer *p, char buf[LBL])
{
    char k[17] = "";
    if (p->key_known) hex(p->pk, 8, k);
    if (p->name[0])
        snprintf(buf, LBL, "%s (%s)", p->name, k);
    else if (k[0])
        snprintf(buf, LBL, "%s at %s", k, p->addr);
    else
        snprintf(buf, LBL, "%s", p->addr[0] ? p->addr : "?");
    return buf;
}

static const char *last_error(void)
{
    const tsync_error *e = tsync_error_last();
    return e->code && e->message ? e->message : "unknown error";
}

/* ---------------------------------------------------------------- a full disk
 *
 * SQLITE_FULL does not stop the node: what it holds stays intact (the failed transaction rolls
 * back), its sessions go on serving what it has, and sealing and merging are tried again after
 * 0.5 s, doubling up to 30 s. Merges queued meanwhile are dropped once the queue is full: the
 * peers still hold those batches and offer them again when our vector shows we lack them. */
#define FULL_BACKOFF_MIN_MS 500
#define FULL_BACKOFF_MAX_MS 30000
#define FULL_LOG_EVERY_MS   60000

static void disk_full_hit(tsync_node *n, const char *what)
{
    uint64_t now = mono_ms();
    if (!n->disk_full) {
        n->disk_full = 1;
        n->full_since_ms = wall_ms();
        n->full_backoff_ms = FULL_BACKOFF_MIN_MS;
        n->full_logged_mono = now;
        n->status_dirty = 1;
        logf_(n, TSYNC_LOG_ERROR,
              "disk full: cannot %s (%s); the node keeps its sessions and retries; free space on "
              "the disk of %s",
              what, last_error(), n->db_path);
    } else {
        n->full_backoff_ms = n->full_backoff_ms * 2 > FULL_BACKOFF_MAX_MS ? FULL_BACKOFF_MAX_MS
                                                                          : n->full_backoff_ms * 2;
        if (now - n->full_logged_mono >= FULL_LOG_EVERY_MS) {
            n->full_logged_mono = now;
            logf_(n, TSYNC_LOG_ERROR, "disk full for %llu s: still cannot %s; retrying",
                  (unsigned long long)((wall_ms() - n->full_since_ms) / 1000), what);
        }
    }
    n->full_retry_mono = now + n->full_backoff_ms;
}

static void disk_full_clear(tsync_node *n)
{
    if (!n->disk_full) return;
    logf_(n, TSYNC_LOG_INFO, "disk space is back after %llu s: sealing and merging resume",
          (unsigned long long)((wall_ms() - n->full_since_ms) / 1000));
    n->disk_full = 0;
    n->full_retry_mono = 0;
    n->status_dirty = 1;
}

/* Waiting out the backoff of a full disk. */
static int disk_full_waiting(const tsync_node *n)
{
    return n->disk_full && mono_ms() < n->full_retry_mono;
}

/* ---------------------------------------------------------------- peers */

static npeer *peer_find(tsync_node *n, uint32_t id)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->id == id) return n->peers[i];
    return NULL;
}

static npeer *peer_get(tsync_node *n, uint32_t id)
{
    npeer *p = peer_find(n, id);
    if (p) return p;
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->used) {
            p = n->peers[i];
            break;
        }
    if (!p) {
        /* Peers are allocated one by one, so a pointer to one stays valid while others are
         * added (a handler may dial new peers while it holds one). */
        npeer **np = realloc(n->peers, (n->npeers + 1) * sizeof *np);
        if (!np) return NULL;
        n->peers = np;
        if (!(p = calloc(1, sizeof *p))) return NULL;
        n->peers[n->npeers++] = p;
    }
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->id = id;
    p->static_idx = -1;
    p->born_mono = mono_ms();
    return p;
}

static void snap_clear(snap *z);
static void session_reset(npeer *p)
{
    p->fork_sent = 0;
    snap_clear(&p->out);
    snap_clear(&p->in);
    p->up = p->hello = p->verified = 0;
    p->fork_check = 0;
    tsync__vv_free(&p->acked);
    tsync__vv_free(&p->sent);
    p->nfl = 0;
    p->fl_bytes = 0;
    p->bad = 0;
    p->close_at_mono = 0;
}

static void peer_free(npeer *p)
{
    session_reset(p);
    free(p->fl);
    p->fl = NULL;
    p->capfl = 0;
    p->used = 0;
}

static int online(tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified) return 1;
    return 0;
}

static void notify_peer(tsync_node *n, npeer *p, int up)
{
    n->status_dirty = 1;
    if (!n->o.on_peer) return;
    char k[2 * TSYNC__PK_BYTES + 1] = "";
    if (p->key_known) hex(p->pk, TSYNC__PK_BYTES, k);
    n->o.on_peer(n->o.cb_ctx, k, p->addr, up, online(n));
}

/* ---------------------------------------------------------------- network state */

const char *tsync_peer_state_name(int state)
{
    switch (state) {
    case TSYNC_PEER_DISCOVERED:
        return "discovered";
    case TSYNC_PEER_CONNECTING:
        return "connecting";
    case TSYNC_PEER_CONNECTED:
        return "connected";
    case TSYNC_PEER_UNREACHABLE:
        return "unreachable";
    case TSYNC_PEER_WAITING:
        return "waiting";
    case TSYNC_PEER_REFUSED:
        return "refused";
    default:
        return "gone";
    }
}

/* When two rows name the same till (an old inbound session and a new one, a dial and an
 * advertisement), the one shown is the most alive. */
static int state_rank(int st)
{
    static const int r[] = {
        [TSYNC_PEER_GONE] = 0,       [TSYNC_PEER_DISCOVERED] = 1, [TSYNC_PEER_UNREACHABLE] = 2,
        [TSYNC_PEER_CONNECTING] = 3, [TSYNC_PEER_REFUSED] = 4,    [TSYNC_PEER_CONNECTED] = 5,
        [TSYNC_PEER_WAITING] = 1};
    return st >= 0 && st <= TSYNC_PEER_REFUSED ? r[st] : 0;
}

/* ---------------------------------------------------------------- refusals */

static nrefusal *refusal_find(tsync_node *n, const uint8_t pk[TSYNC__PK_BYTES], uint64_t now)
{
    for (size_t i = 0; i < n->nrefusals; i++) {
        nrefusal *f = &n->refusals[i];
        if (memcmp(f->pk, pk, TSYNC__PK_BYTES)) continue;
        return now - f->at_mono < REFUSAL_KEEP_MS ? f : NULL;
    }
    return NULL;
}

/* Notes that the session with this till was refused (by_peer: it refused us) for why. Returns
 * whether to log it now: the first time, when the reason changes, or REFUSAL_LOG_MS after the
 * last line (a till redials several times a second; its log must not fill with the same line). */
static int refusal_note(tsync_node *n, const npeer *p, const uint8_t pk[TSYNC__PK_BYTES],
                        int by_peer, const char *why)
{
    uint64_t now = mono_ms();
    nrefusal *f = NULL;
    for (size_t i = 0; i < n->nrefusals && !f; i++)
        if (!memcmp(n->refusals[i].pk, pk, TSYNC__PK_BYTES)) f = &n->refusals[i];
    if (!f) {
        size_t at = n->nrefusals;
        if (at == REFUSALS_MAX) { /* forget the oldest */
            at = 0;
            for (size_t i = 1; i < n->nrefusals; i++)
                if (n->refusals[i].at_mono < n->refusals[at].at_mono) at = i;
        } else {
            n->nrefusals++;
        }
        f = &n->refusals[at];
        memset(f, 0, sizeof *f);
        memcpy(f->pk, pk, TSYNC__PK_BYTES);
    }
    int log = !f->logged_mono || now - f->logged_mono >= REFUSAL_LOG_MS || f->by_peer != by_peer ||
              strncmp(f->why, why, sizeof f->why - 1) != 0;
    f->by_peer = by_peer;
    f->inbound = p->inbound;
    snprintf(f->why, sizeof f->why, "%s", why);
    snprintf(f->addr, sizeof f->addr, "%s", p->addr);
    if (p->name[0]) snprintf(f->name, sizeof f->name, "%s", p->name);
    f->at_mono = now;
    if (log) f->logged_mono = now;
    n->status_dirty = 1;
    return log;
}

static nlink *link_find(nlink *v, size_t nv, const char *id)
{
    for (size_t i = 0; i < nv; i++)
        if (!strcmp(v[i].id, id)) return &v[i];
    return NULL;
}

/* Is a till with this key advertised for our shop now (mDNS)? */
static int advertised(const tsync_node *n, const uint8_t key[TSYNC__PK_BYTES])
{
    for (size_t i = 0; i < n->nfound_; i++)
        if (!memcmp(n->found[i].key, key, TSYNC__PK_BYTES)) return 1;
    return 0;
}

static void link_event(tsync_node *n, const nlink *l, int state, int previous, uint64_t since)
{
    char k[2 * TSYNC__PK_BYTES + 1] = "";
    if (l->key_known) hex(l->pk, TSYNC__PK_BYTES, k);
    logf_(n, TSYNC_LOG_DEBUG, "peer %s%s%.16s at %s: %s (was %s)", l->name, l->name[0] ? " " : "",
          k[0] ? k : "(key unknown)", l->addr, tsync_peer_state_name(state),
          tsync_peer_state_name(previous));
    n->status_dirty = 1;
    if (!n->o.on_peer_state) return;
    tsync_peer_event e = {.key_hex = k,
                          .address = l->addr,
                          .name = l->name,
                          .state = state,
                          .previous = previous,
                          .since_ms = since,
                          .online = online(n),
                          .reason = state == TSYNC_PEER_REFUSED ? l->why : ""};
    n->o.on_peer_state(n->o.cb_ctx, &e);
}

/* The state of one session entry. A till that was connected and is not now is unreachable
 * (lost, or restarting) until a session is verified again; a first dial is "connecting" for
 * liveness_ms, then unreachable too (the transport keeps dialling with backoff). */
static int session_state(const tsync_node *n, const npeer *p, const nlink *prev, uint64_t now)
{
    if (p->verified) return TSYNC_PEER_CONNECTED;
    if (prev && (prev->state == TSYNC_PEER_CONNECTED || prev->state == TSYNC_PEER_UNREACHABLE))
        return TSYNC_PEER_UNREACHABLE;
    if (p->inbound && !p->up) return TSYNC_PEER_UNREACHABLE;
    if (!p->up && now - p->born_mono >= (uint64_t)n->o.liveness_ms) return TSYNC_PEER_UNREACHABLE;
    return TSYNC_PEER_CONNECTING;
}

/* Rebuilds the rows from the sessions and advertisements and reports every change. */
static void links_update(tsync_node *n)
{
    uint64_t now = mono_ms(), wall = wall_ms();
    size_t cap = n->npeers + n->nfound_ + n->nstatics + n->nrefusals, nv = 0;
    nlink *v = cap ? calloc(cap, sizeof *v) : NULL;
    if (cap && !v) return; /* keep the old rows; the next round tries again */
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used) continue;
        /* A keyless static address dialled with many candidate keys is one row, by address. */
        const speer *sp = p->static_idx >= 0 ? &n->statics[p->static_idx] : NULL;
        int by_addr = sp && !sp->has_key && !sp->found;
        if (by_addr && !p->up && sp->ncands > 1 && sp->cands[0] != p->id) continue;
        nlink r = {0};
        if (p->key_known && !by_addr) {
            r.key_known = 1;
            memcpy(r.pk, p->pk, TSYNC__PK_BYTES);
            hex(p->pk, TSYNC__PK_BYTES, r.id);
        } else if (by_addr) {
            snprintf(r.id, sizeof r.id, "@%s", p->addr);
        } else { /* a session whose key is unknown (not enrolled): one row per session */
            snprintf(r.id, sizeof r.id, "@%s#%" PRIu32, p->addr, p->id);
        }
        snprintf(r.addr, sizeof r.addr, "%s", p->addr);
        snprintf(r.name, sizeof r.name, "%s", p->name);
        r.via = p->inbound ? "inbound" : p->mdns ? "mdns" : "static";
        r.p = p;
        r.seen_ms = p->seen_ms;
        const nlink *prev = link_find(n->links, n->nlinks, r.id);
        r.state = session_state(n, p, prev, now);
        /* A session just admitted with a till that refused us a moment ago is most likely about
         * to be refused again (it checks our certificate as we check its): not "connected" yet. */
        const nrefusal *rf = r.key_known ? refusal_find(n, r.pk, now) : NULL;
        if (rf && (r.state != TSYNC_PEER_CONNECTED || now - rf->at_mono < 2000 ||
                   now - p->verified_mono < 2000)) {
            r.state = TSYNC_PEER_REFUSED;
            snprintf(r.why, sizeof r.why, "%s%s", rf->by_peer ? "it refused us: " : "", rf->why);
        }
        nlink *same = link_find(v, nv, r.id);
        if (same) {
            if (state_rank(r.state) <= state_rank(same->state)) continue;
            *same = r;
        } else {
            v[nv++] = r;
        }
    }
    /* A refused till whose session is gone (an inbound one is not dialled back) stays listed. */
    for (size_t i = 0; i < n->nrefusals; i++) {
        const nrefusal *f = &n->refusals[i];
        char id[sizeof v[0].id];
        hex(f->pk, TSYNC__PK_BYTES, id);
        if (now - f->at_mono >= REFUSAL_KEEP_MS || link_find(v, nv, id)) continue;
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        r->key_known = 1;
        memcpy(r->pk, f->pk, TSYNC__PK_BYTES);
        snprintf(r->addr, sizeof r->addr, "%s", f->addr);
        snprintf(r->name, sizeof r->name, "%s", f->name);
        r->via = f->inbound ? "inbound" : "static";
        r->state = TSYNC_PEER_REFUSED;
        snprintf(r->why, sizeof r->why, "%s%s", f->by_peer ? "it refused us: " : "", f->why);
    }
    for (size_t i = 0; i < n->nfound_; i++) {
        const nfound *f = &n->found[i];
        char id[sizeof v[0].id];
        hex(f->key, TSYNC__PK_BYTES, id);
        nlink *same = link_find(v, nv, id);
        if (same) {
            same->discovered_ms = f->found_ms;
            if (!same->name[0]) snprintf(same->name, sizeof same->name, "%s", f->name);
            continue;
        }
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        r->key_known = 1;
        memcpy(r->pk, f->key, TSYNC__PK_BYTES);
        snprintf(r->addr, sizeof r->addr, "%s", f->endpoint);
        snprintf(r->name, sizeof r->name, "%s", f->name);
        r->via = "mdns";
        r->state = TSYNC_PEER_DISCOVERED;
        r->discovered_ms = f->found_ms;
    }
    /* A static address nothing was dialled at yet is listed too, with the reason: otherwise a
     * mistyped setup shows "peers: none" and nothing says why. */
    for (size_t i = 0; i < n->nstatics; i++) {
        const speer *sp = &n->statics[i];
        if (sp->has_key || sp->found || sp->ncands) continue;
        char id[sizeof v[0].id];
        snprintf(id, sizeof id, "@%s", sp->endpoint);
        if (link_find(v, nv, id)) continue;
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        snprintf(r->addr, sizeof r->addr, "%s", sp->endpoint);
        r->via = "static";
        r->state = TSYNC_PEER_WAITING;
        r->reason = KEYLESS_WAIT;
    }
    /* Carry the times over, and report what changed. */
    for (size_t i = 0; i < nv; i++) {
        nlink *r = &v[i];
        const nlink *prev = link_find(n->links, n->nlinks, r->id);
        int was = prev ? prev->state : TSYNC_PEER_GONE;
        if (prev) {
            r->since_ms = prev->since_ms;
            r->connected_ms = prev->connected_ms;
            r->lost_ms = prev->lost_ms;
            if (!r->discovered_ms) r->discovered_ms = prev->discovered_ms;
            if (prev->seen_ms > r->seen_ms) r->seen_ms = prev->seen_ms;
            if (!r->name[0]) memcpy(r->name, prev->name, sizeof r->name);
        }
        if (r->state == was) continue;
        r->since_ms = wall;
        if (r->state == TSYNC_PEER_CONNECTED) r->connected_ms = wall;
        if (was == TSYNC_PEER_CONNECTED) r->lost_ms = wall;
    }
    nlink *old = n->links;
    size_t nold = n->nlinks;
    n->links = v;
    n->nlinks = nv;
    for (size_t i = 0; i < nv; i++) {
        const nlink *prev = link_find(old, nold, v[i].id);
        int was = prev ? prev->state : TSYNC_PEER_GONE;
        if (v[i].state != was) link_event(n, &v[i], v[i].state, was, v[i].since_ms);
    }
    for (size_t i = 0; i < nold; i++)
        if (!link_find(v, nv, old[i].id))
            link_event(n, &old[i], TSYNC_PEER_GONE, old[i].state, wall);
    free(old);
}

/* mDNS: remember the shop's advertised tills (FOUND adds or updates, LOST forgets). */
static void found_note(tsync_node *n, const tsync__disc_event *ev)
{
    size_t i;
    for (i = 0; i < n->nfound_; i++)
        if (!memcmp(n->found[i].key, ev->key, TSYNC__PK_BYTES)) break;
    if (ev->kind == TSYNC__DISC_LOST) {
        if (i < n->nfound_) n->found[i] = n->found[--n->nfound_];
        return;
    }
    if (i == n->nfound_) {
        if (n->nfound_ == n->capfound) {
            size_t c = n->capfound ? 2 * n->capfound : 8;
            nfound *nf = realloc(n->found, c * sizeof *nf);
            if (!nf) return;
            n->found = nf;
            n->capfound = c;
        }
        memset(&n->found[i], 0, sizeof n->found[i]);
        memcpy(n->found[i].key, ev->key, TSYNC__PK_BYTES);
        n->found[i].found_ms = wall_ms();
        n->found[i].quiet_mono = mono_ms();
        n->nfound_++;
    }
    nfound *f = &n->found[i];
    snprintf(f->endpoint, sizeof f->endpoint, "%s", ev->endpoint);
    size_t k = 0;
    for (const char *c = ev->name; *c && k + 1 < sizeof f->name; c++)
        f->name[k++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
    f->name[k] = 0;
}

/* ---------------------------------------------------------------- sending */

static int send_msg(tsync_node *n, npeer *p, const tsync__msg *m)
{
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_encode(m, &buf, &len, err);
    if (rc) {
        logf_(n, TSYNC_LOG_ERROR, "cannot encode %s: %s", tsync__wire_type_name(m->type), err);
        return rc;
    }
    rc = tsync__tp_send(n->tp, p->id, buf, len);
    free(buf);
    if (rc == 0) {
        p->tx_msgs++;
        p->tx_mono = mono_ms();
    }
    return rc;
}

/* ERROR without ending the session (the peer learns why something was refused). The text is cut
 * to the wire's limit on a character boundary, UTF-8 kept (names, "…"), control characters and
 * broken UTF-8 replaced: the wire format accepts UTF-8 without control characters. */
static void send_note(tsync_node *n, npeer *p, uint32_t code, const char *text)
{
    char buf[TSYNC__WIRE_TEXT_MAX + 1];
    const uint8_t *t = (const uint8_t *)text;
    size_t tlen = strlen(text), len = 0;
    for (size_t i = 0; i < tlen && len < TSYNC__WIRE_TEXT_MAX;) {
        size_t k = tsync__utf8_char(t + i, tlen - i);
        if (k == 0) {
            buf[len++] = t[i] < 0x20 || t[i] == 0x7f ? ' ' : '?';
            i++;
        } else if (len + k <= TSYNC__WIRE_TEXT_MAX) {
            memcpy(buf + len, t + i, k);
            len += k;
            i += k;
        } else {
            break;
        }
    }
    tsync__msg m = {.type = TSYNC__WIRE_ERROR};
    m.error.code = code;
    m.error.text = buf;
    m.error.len = len;
    send_msg(n, p, &m);
}

static void send_error(tsync_node *n, npeer *p, uint32_t code, const char *text)
{
    send_note(n, p, code, text);
    /* Give the ERROR a moment to leave before the session is cut. */
    p->close_at_mono = mono_ms() + 200;
    p->verified = 0;
}

static int refresh_ours(tsync_node *n)
{
    tsync__vv_free(&n->ours);
    n->ours_valid = 0;
    int rc = tsync__sync_vv(n->s, &n->ours);
    if (rc) {
        logf_(n, TSYNC_LOG_ERROR, "cannot read the version vector: %s", last_error());
        return rc;
    }
    n->ours_valid = 1;
    return 0;
}

static int send_vector(tsync_node *n, npeer *p, int hello)
{
    tsync__msg m;
    memset(&m, 0, sizeof m);
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    if (hello) {
        m.type = TSYNC__WIRE_HELLO;
        m.hello.version = TSYNC_WIRE_VERSION;
        m.hello.schema = tsync__sync_schema(n->s);
        m.hello.clock_ms = wall_ms();
        if (n->enrolled) {
            if (tsync__trust_own_cert(n->s, &cert, &cert_len) != 0) {
                logf_(n, TSYNC_LOG_ERROR, "no certificate of our own to present: %s", last_error());
                return TSYNC_ENOTFOUND;
            }
            m.hello.has_shop = true;
            memcpy(m.hello.shop, n->shop, sizeof m.hello.shop);
            m.hello.cert = cert;
            m.hello.cert_len = cert_len;
        }
        m.hello.vv.e = n->ours.e;
        m.hello.vv.n = n->ours.n;
    } else {
        m.type = TSYNC__WIRE_ACK;
        m.ack.vv.e = n->ours.e;
        m.ack.vv.n = n->ours.n;
    }
    int rc = send_msg(n, p, &m);
    free(cert);
    return rc;
}

static int send_certs(tsync_node *n, npeer *p)
{
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    int rc = tsync__trust_export(n->s, &blobs, &lens, &nb);
    if (rc) return rc;
    for (size_t off = 0; rc == 0 && off < nb;) {
        /* Several messages if the shop ever has more records than one CERTS holds. */
        size_t k = nb - off;
        if (k > 200) k = 200;
        tsync__msg m = {.type = TSYNC__WIRE_CERTS};
        m.certs.n = (uint32_t)k;
        m.certs.blob = (const uint8_t *const *)(blobs + off);
        m.certs.len = lens + off;
        rc = send_msg(n, p, &m);
        off += k;
    }
    tsync__trust_export_free(blobs, lens, nb);
    return rc;
}

typedef struct {
    tsync_node *n;
    npeer *p;
    int busy;
} push_ctx;

#define PUSH_BUSY 1

static int emit_piece(void *ctx, const tsync__run_piece *pc)
{
    push_ctx *c = ctx;
    npeer *p = c->p;
    tsync__msg m = {.type = TSYNC__WIRE_BATCHES};
    memcpy(m.batches.site, pc->site->site, TSYNC__SITE_BYTES);
    memcpy(m.batches.pk, pc->site->pk, TSYNC__PK_BYTES);
    memcpy(m.batches.inc, pc->site->inc, TSYNC__INC_BYTES);
    m.batches.first_seq = pc->first_seq;
    memcpy(m.batches.prev, pc->prev, TSYNC__HASH_BYTES);
    m.batches.nbodies = pc->n;
    m.batches.body = pc->body;
    m.batches.body_len = pc->len;
    memcpy(m.batches.sig, pc->sig, TSYNC__SIG_BYTES);
    int rc = send_msg(c->n, p, &m);
    if (rc == TSYNC_EBUSY) {
        c->busy = 1;
        return PUSH_BUSY;
    }
    if (rc) return rc;
    uint64_t last = pc->first_seq + pc->n - 1;
    if (tsync__vv_set(&p->sent, pc->site->site, last, pc->last)) return TSYNC_ENOMEM;
    if (p->nfl == p->capfl) {
        size_t cap = p->capfl ? p->capfl * 2 : 16;
        inflight *f = realloc(p->fl, cap * sizeof *f);
        if (!f) return TSYNC_ENOMEM;
        p->fl = f;
        p->capfl = cap;
    }
    inflight *f = &p->fl[p->nfl++];
    memcpy(f->site, pc->site->site, TSYNC__SITE_BYTES);
    f->seq = last;
    f->bytes = pc->bytes;
    f->sent_mono = mono_ms();
    p->fl_bytes += pc->bytes;
    p->tx_batches += pc->n;
    return 0;
}

static void push_all(tsync_node *n);
static int refusal_reason(int rc);
static void trust_check(tsync_node *n);

static void snap_clear(snap *z)
{
    for (size_t i = 0; i < z->n; i++) free(z->chunk[i]);
    free(z->chunk);
    free(z->len);
    tsync__vv_free(&z->vv);
    memset(z, 0, sizeof *z);
}

static int snap_add(snap *z, const uint8_t *p, size_t len)
{
    if (z->bytes + len > SNAP_MAX_BYTES) return TSYNC_EINVAL;
    if (z->n == z->cap) {
        size_t cap = z->cap ? z->cap * 2 : 16;
        uint8_t **c = realloc(z->chunk, cap * sizeof *c);
        if (!c) return TSYNC_ENOMEM;
        z->chunk = c;
        size_t *l = realloc(z->len, cap * sizeof *l);
        if (!l) return TSYNC_ENOMEM;
        z->len = l;
        z->cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, p, len);
    z->chunk[z->n] = copy;
    z->len[z->n++] = len;
    z->bytes += len;
    crypto_generichash_update(&z->h, p, len);
    return 0;
}

static int snap_emit(void *ctx, const uint8_t *chunk, size_t len)
{
    return snap_add(ctx, chunk, len) ? TSYNC_ENOMEM : 0;
}

/* Sends what it can of an outgoing snapshot (BEGIN went first); END once every chunk is out. */
static void snap_pump(tsync_node *n, npeer *p)
{
    snap *z = &p->out;
    while (z->active && z->next < z->n) {
        tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_CHUNK};
        memcpy(m.snapshot_chunk.id, z->id, sizeof z->id);
        m.snapshot_chunk.seq = z->next;
        m.snapshot_chunk.rows = z->chunk[z->next];
        m.snapshot_chunk.len = z->len[z->next];
        int rc = send_msg(n, p, &m);
        if (rc == TSYNC_EBUSY) return;
        if (rc) {
            snap_clear(z);
            return;
        }
        free(z->chunk[z->next]);
        z->chunk[z->next++] = NULL;
    }
    if (!z->active) return;
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_END};
    memcpy(m.snapshot_end.id, z->id, sizeof z->id);
    m.snapshot_end.nchunks = z->n;
    crypto_generichash_final(&z->h, m.snapshot_end.hash, TSYNC__HASH_BYTES);
    if (send_msg(n, p, &m) != 0) {
        snap_clear(z);
        return;
    }
    /* The peer now holds what the snapshot covers: batches follow from there. */
    for (size_t i = 0; i < z->vv.n; i++)
        if (tsync__vv_seq(&p->sent, z->vv.e[i].site) < z->vv.e[i].seq)
            tsync__vv_set(&p->sent, z->vv.e[i].site, z->vv.e[i].seq, z->vv.e[i].hash);
    char lb[LBL];
    logf_(n, TSYNC_LOG_INFO, "sent a snapshot to %s (%zu chunks, %zu bytes)", peer_label(p, lb),
          z->n, z->bytes);
    n->snaps_sent++;
    snap_clear(z);
}

/* The peer lacks batches we hold only as stubs: send it our state instead (enrolled only: a
 * snapshot is trusted hop by hop, so only a certified peer may send or receive one). */
static void snap_start(tsync_node *n, npeer *p)
{
    char lb[LBL];
    if (p->out.active) return;
    /* At most one snapshot per peer per SNAP_INTERVAL_MS: one the peer refused (it must migrate
     * first, say) is not rebuilt on every acknowledgement. */
    uint64_t now = mono_ms();
    if (p->last_snap_mono && now - p->last_snap_mono < SNAP_INTERVAL_MS) return;
    /* Two sessions with the same till (one dialled each way) need one snapshot, not two. */
    for (size_t i = 0; p->key_known && i < n->npeers; i++) {
        npeer *o = n->peers[i];
        if (o != p && o->used && o->verified && o->key_known &&
            !memcmp(o->pk, p->pk, TSYNC__PK_BYTES) &&
            (o->out.active || (o->last_snap_mono && now - o->last_snap_mono < SNAP_INTERVAL_MS)))
            return;
    }
    p->last_snap_mono = now;
    if (!n->enrolled || !p->key_known) {
        logf_(n, TSYNC_LOG_WARN,
              "%s lacks batches this till has pruned, and snapshots need an enrolled shop",
              peer_label(p, lb));
        return;
    }
    snap *z = &p->out;
    memset(z, 0, sizeof *z);
    crypto_generichash_init(&z->h, NULL, 0, TSYNC__HASH_BYTES);
    randombytes_buf(z->id, sizeof z->id);
    int rc = tsync__snap_export(n->s, SNAP_CHUNK_BYTES, snap_emit, z, &z->vv);
    if (rc) {
        logf_(n, TSYNC_LOG_ERROR, "cannot make a snapshot for %s: %s", peer_label(p, lb),
              last_error());
        snap_clear(z);
        return;
    }
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_BEGIN};
    memcpy(m.snapshot_begin.id, z->id, sizeof z->id);
    m.snapshot_begin.ntables = 0;
    m.snapshot_begin.vv.e = z->vv.e;
    m.snapshot_begin.vv.n = z->vv.n;
    if (send_msg(n, p, &m) != 0) {
        snap_clear(z);
        return;
    }
    z->active = 1;
    logf_(n, TSYNC_LOG_INFO, "%s is behind the pruned horizon: sending a snapshot",
          peer_label(p, lb));
    snap_pump(n, p);
}

/* Incoming snapshot messages. Only an enrolled till takes a snapshot, and only from a peer whose
 * certificate it checked: unlike batches, a snapshot's rows carry no author signature. */
static void snap_refuse(tsync_node *n, npeer *p, const char *why)
{
    char lb[LBL];
    n->refused[R_SNAPSHOT]++;
    n->status_dirty = 1;
    logf_(n, TSYNC_LOG_WARN, "snapshot from %s refused: %s", peer_label(p, lb), why);
    send_note(n, p, TSYNC__WIRE_ERR_BUSY, why);
    snap_clear(&p->in);
}

static void on_snapshot(tsync_node *n, npeer *p, const tsync__msg *m)
{
    snap *z = &p->in;
    char lb[LBL];
    if (!n->enrolled || !p->key_known) {
        snap_refuse(n, p, "snapshots are taken only from certified peers of an enrolled shop");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_BEGIN) {
        snap_clear(z);
        z->active = 1;
        memcpy(z->id, m->snapshot_begin.id, sizeof z->id);
        crypto_generichash_init(&z->h, NULL, 0, TSYNC__HASH_BYTES);
        for (size_t i = 0; i < m->snapshot_begin.vv.n; i++)
            if (tsync__vv_set(&z->vv, m->snapshot_begin.vv.e[i].site, m->snapshot_begin.vv.e[i].seq,
                              m->snapshot_begin.vv.e[i].hash)) {
                snap_refuse(n, p, "out of memory");
                return;
            }
        return;
    }
    if (!z->active) {
        snap_refuse(n, p, "chunk without SNAPSHOT_BEGIN");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_CHUNK) {
        if (memcmp(m->snapshot_chunk.id, z->id, sizeof z->id) != 0 ||
            m->snapshot_chunk.seq != z->n) {
            snap_refuse(n, p, "chunk of another transfer or out of order");
            return;
        }
        if (snap_add(z, m->snapshot_chunk.rows, m->snapshot_chunk.len) != 0)
            snap_refuse(n, p, "larger than this node takes");
        return;
    }
    uint8_t h[TSYNC__HASH_BYTES];
    crypto_generichash_final(&z->h, h, sizeof h);
    if (memcmp(m->snapshot_end.id, z->id, sizeof z->id) != 0 || m->snapshot_end.nchunks != z->n ||
        memcmp(m->snapshot_end.hash, h, sizeof h) != 0) {
        snap_refuse(n, p, "its chunks do not match SNAPSHOT_END (count or hash)");
        return;
    }
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync__snap_import(n->s, (const uint8_t *const *)z->chunk, z->len, z->n, &z->vv, &r);
    tsync_merge_report_clear(&r);
    if (rc) {
        snap_refuse(n, p, last_error());
        if (rc == TSYNC_EFULL) disk_full_hit(n, "take a snapshot");
        if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
        return;
    }
    logf_(n, TSYNC_LOG_INFO, "took a snapshot from %s (%zu chunks, %zu bytes)", peer_label(p, lb),
          z->n, z->bytes);
    n->snaps_received++;
    snap_clear(z);
    refresh_ours(n);
    send_vector(n, p, 0);
    if (n->o.on_change) {
        tsync_node_change c = {0, 0};
        n->o.on_change(n->o.cb_ctx, &c);
    }
    push_all(n);
}

/* Whether `have` lacks something of ours (with check_hash: or holds another batch at a seq). */
static int lacks(const tsync__vv *have, const tsync__vv *ours, int check_hash)
{
    for (size_t i = 0; i < ours->n; i++) {
        const tsync__vv_entry *e = tsync__vv_get(have, ours->e[i].site);
        if (!e || e->seq < ours->e[i].seq) return 1;
        if (check_hash && e->seq == ours->e[i].seq &&
            memcmp(e->hash, ours->e[i].hash, TSYNC__HASH_BYTES) != 0)
            return 1;
        /* Ahead on an origin: it may hold another branch of it (a fork, a till whose log went
         * back), and then lacks our branch's tail; tsync__sync_runs sends it from the fork. */
        if (check_hash && e->seq > ours->e[i].seq) return 1;
    }
    return 0;
}

/* Logs a failure to send batches to p: a new one at once, the same one again only after
 * PUSH_ERR_LOG_MS, with how often it repeated meanwhile. */
static void push_failed(tsync_node *n, npeer *p)
{
    const char *why = last_error();
    uint64_t now = mono_ms();
    if (strncmp(p->push_err, why, sizeof p->push_err - 1) == 0 &&
        now - p->push_err_mono < PUSH_ERR_LOG_MS) {
        p->push_err_repeats++;
        return;
    }
    char lb[LBL];
    if (p->push_err_repeats && strncmp(p->push_err, why, sizeof p->push_err - 1) == 0)
        logf_(n, TSYNC_LOG_ERROR, "cannot send batches to %s: %s (again, %u times in %llu s)",
              peer_label(p, lb), why, p->push_err_repeats + 1,
              (unsigned long long)((now - p->push_err_mono) / 1000));
    else
        logf_(n, TSYNC_LOG_ERROR, "cannot send batches to %s: %s", peer_label(p, lb), why);
    snprintf(p->push_err, sizeof p->push_err, "%s", why);
    p->push_err_mono = now;
    p->push_err_repeats = 0;
}

static int push(tsync_node *n, npeer *p)
{
    if (!p->verified || p->close_at_mono || !n->ours_valid) return 0;
    if (p->out.active) {
        snap_pump(n, p);
        return 0;
    }
    if (p->fl_bytes >= n->o.window_bytes) return 0;
    if (!lacks(&p->sent, &n->ours, p->fork_check)) {
        p->fork_check = 0;
        return 0;
    }
    push_ctx c = {n, p, 0};
    int more = 0;
    int rc =
        tsync__sync_runs(n->s, &p->sent, n->o.window_bytes - p->fl_bytes, emit_piece, &c, &more);
    p->fork_check = 0;
    if (rc == PUSH_BUSY) return 0;
    if (rc == TSYNC__SYNC_BEHIND) {
        /* Behind by what we last heard from it, but a snapshot we took since then may have left a
         * hole in our log where its head was (it took the same batches meanwhile): wait for its
         * next ACK (every anti-entropy period; it calls push) before sending a whole snapshot. */
        if (p->vv_snaps == n->snaps_received) snap_start(n, p);
        return 0;
    }
    if (rc)
        push_failed(n, p);
    else
        p->push_err[0] = 0;
    return rc;
}

static void push_all(tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used) push(n, n->peers[i]);
}

/* ---------------------------------------------------------------- receiving */

static void bad_message(tsync_node *n, npeer *p, int reason, const char *what)
{
    char lb[LBL];
    n->refused[reason]++;
    n->status_dirty = 1;
    logf_(n, TSYNC_LOG_WARN, "refused from %s: %s", peer_label(p, lb), what);
    if (++p->bad >= MAX_BAD_MESSAGES && !p->close_at_mono) {
        logf_(n, TSYNC_LOG_WARN, "closing the session with %s: %d bad messages", peer_label(p, lb),
              p->bad);
        send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "too many malformed messages");
    }
}

/* Revoked keys are refused by the transport from now on (ZAP), and their sessions cut. */
static void apply_revocations(tsync_node *n)
{
    if (!n->enrolled) return;
    uint64_t now = wall_ms();
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || !p->key_known) continue;
        char err[TSYNC__ERRLEN];
        if (tsync__trust_session(n->s, p->pk, now, err) == 0) continue;
        char lb[LBL];
        int log = refusal_note(n, p, p->pk, 0, err);
        logf_(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG, "closing the session with %s: %s",
              peer_label(p, lb), err);
        n->refused[R_CERT]++;
        uint8_t *keys = NULL;
        size_t nk = 0, k;
        tsync__sync_device_keys(n->s, &keys, &nk);
        for (k = 0; k < nk; k++)
            if (memcmp(keys + k * TSYNC__PK_BYTES, p->pk, TSYNC__PK_BYTES) == 0) break;
        free(keys);
        uint8_t pk[TSYNC__PK_BYTES];
        memcpy(pk, p->pk, sizeof pk);
        if (k == nk)
            tsync__tp_revoke(n->tp, pk); /* revoked: never again */
        else
            send_error(n, p, TSYNC__WIRE_ERR_CERT, err); /* expired: a renewal may come */
    }
}

/* Signed migrations arrive with the trust records: run those not run here yet. A refusal is
 * logged (once per arrival) and kept for status; the next signed migration runs them again. */
static void run_signed_migrations(tsync_node *n)
{
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    int rc = tsync__migrate_signed_pending(n->s, &r);
    if (rc) logf_(n, TSYNC_LOG_WARN, "signed migrations cannot run here: %s", last_error());
    for (size_t i = 0; i < r.napplied; i++)
        logf_(n, TSYNC_LOG_INFO, "applied signed migration %s (schema version %lld)",
              r.applied[i].name, (long long)r.to_version);
    if (rc || r.napplied) n->status_dirty = 1;
    tsync_migrate_report_clear(&r);
}

static void import_certs(tsync_node *n, npeer *p, const tsync__wire_certs *c)
{
    int changed = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        char err[TSYNC__ERRLEN];
        uint8_t id[TSYNC__HASH_BYTES];
        (void)id;
        int rc = tsync__trust_import(n->s, c->blob[i], c->len[i], err);
        if (rc == 0) {
            changed = 1;
        } else {
            char lb[LBL];
            n->refused[R_TRUST]++;
            logf_(n, TSYNC_LOG_WARN, "trust record from %s not taken: %s", peer_label(p, lb), err);
        }
    }
    if (changed) {
        trust_check(n);
        run_signed_migrations(n);
    }
}

/* ---------------------------------------------------------------- table definitions
 *
 * Each side sends its table definitions (SCHEMA) right after admitting the other's HELLO, and
 * again when they change; the store keeps the latest of each till and says what differs. A
 * difference is logged when it is first seen (or changes), and once at start: never every tick.
 */
static int schema_log_one(void *ctx, const tsync_schema_mismatch *m)
{
    tsync_node *n = ctx;
    logf_(
        n, TSYNC_LOG_WARN,
        "definition of %s differs on till %s%s%.16s: %s (their changes that do not fit stay parked "
        "until the definitions agree: docs/MIGRATIONS.md)",
        m->table, m->till, m->till[0] ? " " : "", m->site_hex, m->what);
    return 0;
}

static void schema_log(tsync_node *n, const uint8_t *site)
{
    if (tsync__schema_mismatches(n->s, site, schema_log_one, n) != 0)
        logf_(n, TSYNC_LOG_WARN, "cannot compare table definitions: %s", last_error());
    n->status_dirty = 1;
}

static void send_schema(tsync_node *n, npeer *p)
{
    tsync__msg m = {.type = TSYNC__WIRE_SCHEMA};
    uint8_t *defs = NULL;
    size_t len = 0;
    if (tsync__schema_message(n->s, m.schema.site, m.schema.inc, &defs, &len) != 0) return;
    m.schema.defs = defs;
    m.schema.len = len;
    send_msg(n, p, &m);
    free(defs);
}

static void on_schema(tsync_node *n, npeer *p, const tsync__wire_schema *sm)
{
    char lb[LBL];
    if (p->key_known) {
        uint8_t id[TSYNC__SITE_BYTES];
        tsync__site_id(p->pk, sm->inc, id);
        if (memcmp(id, sm->site, sizeof id) != 0) {
            bad_message(n, p, R_MALFORMED, "SCHEMA: the site is not the session key's");
            return;
        }
    }
    int changed = 0;
    int rc = tsync__schema_record(n->s, sm->site, p->key_known ? p->pk : NULL, sm->defs, sm->len,
                                  &changed);
    if (rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION) {
        bad_message(n, p, R_MALFORMED, last_error());
        return;
    }
    if (rc) {
        logf_(n, TSYNC_LOG_WARN, "cannot record the table definitions of %s: %s", peer_label(p, lb),
              last_error());
        return;
    }
    if (changed) schema_log(n, sm->site);
}

/* At start, and when our own definitions changed (a migration, `replicate`): peers are told,
 * and what differs now is logged. */
static void schema_tick(tsync_node *n)
{
    uint8_t *defs = NULL, d[TSYNC__HASH_BYTES];
    size_t len = 0;
    if (tsync__schema_encode(n->s, &defs, &len) != 0) return;
    tsync__schema_digest(defs, len, d);
    free(defs);
    if (n->schema_known && memcmp(d, n->schema_digest, sizeof d) == 0) return;
    int first = !n->schema_known;
    memcpy(n->schema_digest, d, sizeof d);
    n->schema_known = 1;
    for (size_t i = 0; !first && i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (p->used && p->up && p->verified && !p->close_at_mono) send_schema(n, p);
    }
    schema_log(n, NULL);
}

static int schema_json_one(void *ctx, const tsync_schema_mismatch *m)
{
    json_t *e = json_object();
    json_object_set_new(e, "table", json_string(m->table));
    json_object_set_new(e, "column", m->column ? json_string(m->column) : json_null());
    json_object_set_new(e, "site", json_string(m->site_hex));
    json_object_set_new(e, "till", json_string(m->till));
    json_object_set_new(e, "what", json_string(m->what));
    json_object_set_new(e, "seen_ms", json_integer((json_int_t)m->seen_ms));
    json_array_append_new(ctx, e);
    return 0;
}

/* Checks the HELLO (the session's first message) and admits the session. */
static void on_hello(tsync_node *n, npeer *p, const tsync__wire_hello *h)
{
    char lb[LBL];
    uint64_t now = wall_ms();
    if (n->enrolled != h->has_shop ||
        (h->has_shop && memcmp(h->shop, n->shop, TSYNC__SHOP_ID_BYTES) != 0)) {
        n->refused[R_SHOP]++;
        const char *why = !n->enrolled   ? "this till is not enrolled in a shop, the peer is"
                          : !h->has_shop ? "the peer is not enrolled in a shop"
                                         : "the peer belongs to another shop";
        logf_(n, TSYNC_LOG_WARN, "refused %s: %s", peer_label(p, lb), why);
        send_error(n, p, TSYNC__WIRE_ERR_SHOP, why);
        return;
    }
    const uint8_t *key = NULL;
    if (h->has_shop) {
        tsync__arena a = {0};
        tsync__trust_rec rec;
        char err[TSYNC__ERRLEN];
        int rc = tsync__trust_decode(h->cert, h->cert_len, &rec, &a, err);
        if (rc == 0 && rec.kind != TSYNC__T_CERT) {
            rc = TSYNC_EREFUSED;
            snprintf(err, sizeof err, "the first message does not carry a certificate");
        }
        if (rc == 0) rc = tsync__trust_import(n->s, h->cert, h->cert_len, err);
        uint8_t pk[TSYNC__PK_BYTES];
        int rec_ok = rc == 0;
        if (rc == 0) {
            memcpy(pk, rec.u.cert.device_pk, sizeof pk);
            snprintf(p->name, sizeof p->name, "%.*s", (int)rec.u.cert.device_name_len,
                     rec.u.cert.device_name);
            if (p->key_known && memcmp(pk, p->pk, sizeof pk) != 0) {
                rc = TSYNC_EREFUSED;
                snprintf(err, sizeof err, "the certificate names another key than the session's");
            }
        }
        if (rc == 0) rc = tsync__trust_session(n->s, pk, now, err);
        if (rc == 0 && tsync__tp_peer_verified(n->tp, p->id, pk) != 0) {
            rc = TSYNC_EREFUSED;
            snprintf(err, sizeof err, "the certificate names another key than the session's");
        }
        tsync__arena_free(&a);
        if (rc) {
            n->refused[R_CERT]++;
            /* A certificate refused for its dates (or a revoked key) names a real till: its
             * row shows "refused" with the reason, and the line comes once a minute. */
            int known = rec_ok && (!p->key_known || !memcmp(pk, p->pk, sizeof pk));
            int log = known ? refusal_note(n, p, pk, 0, err) : 1;
            logf_(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG, "refused %s: %s", peer_label(p, lb),
                  err);
            send_error(n, p, TSYNC__WIRE_ERR_CERT, err);
            return;
        }
        memcpy(p->pk, pk, sizeof pk);
        p->key_known = 1;
        key = pk;
    } else if (tsync__tp_peer_verified(n->tp, p->id, NULL) != 0) {
        n->refused[R_UNEXPECTED]++;
        return;
    }
    (void)key;
    tsync__vv_free(&p->acked);
    tsync__vv_free(&p->sent);
    for (size_t i = 0; i < h->vv.n; i++)
        if (tsync__vv_set(&p->acked, h->vv.e[i].site, h->vv.e[i].seq, h->vv.e[i].hash) ||
            tsync__vv_set(&p->sent, h->vv.e[i].site, h->vv.e[i].seq, h->vv.e[i].hash))
            return;
    p->vv_snaps = n->snaps_received;
    p->hello = p->verified = 1;
    p->fork_check = 1;
    /* Earlier inbound sessions of this till that ended are replaced by this one. */
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *o = n->peers[i];
        if (o != p && o->used && o->inbound && !o->up && o->key_known &&
            !memcmp(o->pk, p->pk, TSYNC__PK_BYTES))
            peer_free(o);
    }
    p->ack_dirty = 1;
    p->schema = h->schema;
    p->clock_delta_ms = (int64_t)h->clock_ms - (int64_t)now;
    p->progress_mono = mono_ms();
    p->clock_mono = p->verified_mono = p->progress_mono;
    p->clock_base_ms = (int64_t)now - (int64_t)p->clock_mono;
    /* A till that is refused and redials logs this once a minute, not at every session. */
    int again = p->key_known && refusal_find(n, p->pk, p->progress_mono);
    if ((p->clock_delta_ms > 60000 || p->clock_delta_ms < -60000) &&
        (!n->clock_diff_logged_mono ||
         p->progress_mono - n->clock_diff_logged_mono >= CLOCK_LOG_MS)) {
        n->clock_diff_logged_mono = p->progress_mono;
        logf_(n, TSYNC_LOG_WARN, "%s: its clock differs from ours by %+" PRId64 " s",
              peer_label(p, lb), p->clock_delta_ms / 1000);
    }
    logf_(n, again ? TSYNC_LOG_DEBUG : TSYNC_LOG_INFO, "connected to %s (%s, schema %" PRIu64 ")",
          peer_label(p, lb), p->inbound ? "inbound" : "outbound", p->schema);
    if (n->enrolled) {
        /* A new certificate (this peer's) goes to every peer now, before any batch of its
         * author is forwarded to them; then this peer gets the shop's whole set. */
        trust_check(n);
        send_certs(n, p);
    }
    send_schema(n, p);
    notify_peer(n, p, 1);
    push(n, p);
}

static void on_ack(tsync_node *n, npeer *p, const tsync__wire_vv *vv)
{
    p->vv_snaps = n->snaps_received;
    tsync__vv_free(&p->acked);
    for (size_t i = 0; i < vv->n; i++) {
        if (tsync__vv_set(&p->acked, vv->e[i].site, vv->e[i].seq, vv->e[i].hash)) return;
        const tsync__vv_entry *s = tsync__vv_get(&p->sent, vv->e[i].site);
        if (!s || s->seq < vv->e[i].seq)
            tsync__vv_set(&p->sent, vv->e[i].site, vv->e[i].seq, vv->e[i].hash);
    }
    /* Pieces the peer now holds are no longer in flight. */
    size_t k = 0;
    int popped = 0;
    for (size_t i = 0; i < p->nfl; i++) {
        if (tsync__vv_seq(&p->acked, p->fl[i].site) >= p->fl[i].seq) {
            p->fl_bytes -= p->fl[i].bytes;
            popped = 1;
        } else {
            p->fl[k++] = p->fl[i];
        }
    }
    p->nfl = k;
    p->ack_dirty = 1;
    if (popped || k == 0) p->progress_mono = mono_ms();
    push(n, p);
}

static int queue_batches(tsync_node *n, npeer *p, const void *data, size_t len)
{
    if (n->qbytes + len > QUEUE_HARD_MAX) return 0; /* sent again after the next ACK */
    if (n->nq == n->capq) {
        size_t cap = n->capq ? n->capq * 2 : 16;
        qmsg *q = realloc(n->q, cap * sizeof *q);
        if (!q) return TSYNC_ENOMEM;
        n->q = q;
        n->capq = cap;
    }
    qmsg *q = &n->q[n->nq];
    memset(q, 0, sizeof *q);
    q->frame = malloc(len);
    if (!q->frame) return TSYNC_ENOMEM;
    memcpy(q->frame, data, len);
    q->len = len;
    q->peer = p->id;
    char err[TSYNC__ERRLEN];
    if (tsync__wire_decode(q->frame, len, &q->m, &q->a, err) != 0) {
        free(q->frame);
        tsync__arena_free(&q->a);
        return TSYNC_ECORRUPT;
    }
    n->nq++;
    n->qbytes += len;
    p->rx_batches += q->m.batches.nbodies;
    return 0;
}

static void on_message(tsync_node *n, const tsync__tp_event *ev)
{
    npeer *p = peer_find(n, ev->peer);
    if (!p || !p->up || p->close_at_mono) return;
    p->rx_msgs++;
    p->seen_ms = ev->at_ms;
    p->rx_mono = mono_ms();
    tsync__arena a = {0};
    tsync__msg m;
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_decode(ev->data, ev->len, &m, &a, err);
    if (rc) {
        if (ev->first && rc == TSYNC_EVERSION) {
            n->refused[R_VERSION]++;
            send_error(n, p, TSYNC__WIRE_ERR_VERSION, "protocol version not spoken here");
        } else {
            bad_message(n, p, R_MALFORMED, err);
            if (ev->first) send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "malformed HELLO");
        }
        tsync__arena_free(&a);
        return;
    }
    if (ev->first != (m.type == TSYNC__WIRE_HELLO)) {
        bad_message(n, p, R_UNEXPECTED,
                    ev->first ? "the first message is not HELLO" : "HELLO in the middle");
        if (ev->first) send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "expected HELLO");
        tsync__arena_free(&a);
        return;
    }
    switch (m.type) {
    case TSYNC__WIRE_HELLO:
        on_hello(n, p, &m.hello);
        break;
    case TSYNC__WIRE_BATCHES:
        if (queue_batches(n, p, ev->data, ev->len) != 0) bad_message(n, p, R_MALFORMED, "BATCHES");
        break;
    case TSYNC__WIRE_ACK:
        on_ack(n, p, &m.ack.vv);
        break;
    case TSYNC__WIRE_CERTS:
        import_certs(n, p, &m.certs);
        break;
    case TSYNC__WIRE_FORK_PROOF: {
        /* A proof is a bundle of both signed branches: merging it records the fork and freezes
         * the origin here too (TSYNC_EFORK is the expected answer). A proof that does not verify
         * is refused like any bad batch. */
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        int mrc = tsync_store_merge(n->s, m.fork_proof.proof, m.fork_proof.len, &r);
        tsync_merge_report_clear(&r);
        if (mrc == TSYNC_EFORK || mrc == 0) {
            char lb[LBL];
            logf_(n, TSYNC_LOG_INFO, "fork proof from %s taken: %s", peer_label(p, lb),
                  mrc ? last_error() : "already known");
            n->status_dirty = 1;
            for (size_t i = 0; mrc == TSYNC_EFORK && i < n->npeers; i++)
                if (n->peers[i]->used) n->peers[i]->fork_check = 1; /* as in flush_merges */
        } else if (mrc != TSYNC_EBUSY) { /* busy: it comes again next session */
            bad_message(n, p, refusal_reason(mrc), last_error());
        }
        break;
    }
    case TSYNC__WIRE_PING: {
        tsync__msg pong = {.type = TSYNC__WIRE_PONG};
        pong.pong.echo_ms = m.ping.ms;
        pong.pong.clock_ms = wall_ms();
        send_msg(n, p, &pong);
        break;
    }
    case TSYNC__WIRE_PONG: {
        /* Its clock, half a round trip ago (the PING carried our monotonic ms). */
        uint64_t mnow = mono_ms(), wnow = wall_ms();
        if (m.pong.echo_ms <= mnow && mnow - m.pong.echo_ms < 10000 &&
            m.pong.clock_ms < INT64_MAX / 2) {
            p->clock_delta_ms =
                (int64_t)(m.pong.clock_ms + (mnow - m.pong.echo_ms) / 2) - (int64_t)wnow;
            p->clock_mono = mnow;
            p->clock_base_ms = (int64_t)wnow - (int64_t)mnow;
        }
        break;
    }
    case TSYNC__WIRE_ERROR: {
        char lb[LBL];
        int log = 1;
        if (m.error.code == TSYNC__WIRE_ERR_CERT && p->key_known) {
            /* It refused our certificate (or its clock says it is not valid): not connected,
             * whatever our side of the handshake said; shown as refused, logged once a minute. */
            char why[160];
            snprintf(why, sizeof why, "%.*s", (int)m.error.len, m.error.text);
            log = refusal_note(n, p, p->pk, 1, why);
            if (p->verified) {
                p->verified = 0;
                notify_peer(n, p, 0);
            }
        }
        logf_(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG, "%s reports error %u: %.*s",
              peer_label(p, lb), m.error.code, (int)m.error.len, m.error.text);
        break;
    }
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
    case TSYNC__WIRE_SNAPSHOT_END:
        on_snapshot(n, p, &m);
        break;
    case TSYNC__WIRE_SCHEMA:
        on_schema(n, p, &m.schema);
        break;
    default:
        bad_message(n, p, R_UNEXPECTED, "message of an unknown type");
        break;
    }
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- merging */

static void q_clear(tsync_node *n)
{
    for (size_t i = 0; i < n->nq; i++) {
        free(n->q[i].frame);
        tsync__arena_free(&n->q[i].a);
    }
    n->nq = 0;
    n->qbytes = 0;
}

/* Merges the queued messages of one peer (peer != 0) or of all (peer == 0) in one transaction.
 * Returns tsync__merge_bundle's code. */
static int merge_some(tsync_node *n, uint32_t peer, tsync_merge_report *r)
{
    size_t k = 0;
    for (size_t i = 0; i < n->nq; i++)
        if (!peer || n->q[i].peer == peer) k++;
    if (!k) return 0;
    tsync__bsite *sites = calloc(k, sizeof *sites);
    tsync__brun *runs = calloc(k, sizeof *runs);
    if (!sites || !runs) {
        free(sites);
        free(runs);
        return TSYNC_ENOMEM;
    }
    size_t j = 0;
    for (size_t i = 0; i < n->nq; i++) {
        if (peer && n->q[i].peer != peer) continue;
        const tsync__wire_batches *b = &n->q[i].m.batches;
        memcpy(sites[j].site, b->site, TSYNC__SITE_BYTES);
        memcpy(sites[j].pk, b->pk, TSYNC__PK_BYTES);
        memcpy(sites[j].inc, b->inc, TSYNC__INC_BYTES);
        runs[j].site = (uint32_t)j;
        runs[j].first_seq = b->first_seq;
        memcpy(runs[j].prev, b->prev, TSYNC__HASH_BYTES);
        runs[j].nbodies = b->nbodies;
        runs[j].body = (const uint8_t **)b->body;
        runs[j].body_len = (size_t *)b->body_len;
        memcpy(runs[j].sig, b->sig, TSYNC__SIG_BYTES);
        j++;
    }
    tsync__bundle bun;
    memset(&bun, 0, sizeof bun);
    bun.nsites = bun.nruns = (uint32_t)k;
    bun.sites = sites;
    bun.runs = runs;
    int rc = tsync__merge_bundle(n->s, &bun, r);
    free(sites);
    free(runs);
    return rc;
}

static int refusal_reason(int rc)
{
    switch (rc) {
    case TSYNC_EBADSIG:
    case TSYNC_ECHAIN:
    case TSYNC_ECORRUPT:
    case TSYNC_EVERSION:
        return R_SIGNATURE;
    case TSYNC_EFORK:
        return R_FORK;
    default:
        return R_BATCH;
    }
}

static int is_db_failure(int rc)
{
    return rc == TSYNC_EIO || rc == TSYNC_ENOMEM || rc == TSYNC_EBUSY || rc == TSYNC_ERROR ||
           rc == TSYNC_EFULL;
}

static void account(tsync_node *n, const tsync_merge_report *r)
{
    n->merged += r->merged;
    n->conflicts += r->conflicts;
    n->held_reported += r->held;
    for (size_t i = 0; i < r->nmessages; i++)
        logf_(n, TSYNC_LOG_DEBUG, "merge: %s", r->messages[i]);
}

static void flush_merges(tsync_node *n)
{
    if (!n->nq) return;
    if (disk_full_waiting(n)) {
        if (n->qbytes >= MERGE_QUEUE_MAX) q_clear(n);
        return;
    }
    if (n->merge_retry_mono && mono_ms() < n->merge_retry_mono) return;
    n->merge_retry_mono = 0;
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = merge_some(n, 0, &r);
    if (rc == TSYNC_EFULL) {
        tsync_merge_report_clear(&r);
        disk_full_hit(n, "merge");
        if (n->qbytes >= MERGE_QUEUE_MAX) q_clear(n);
        return;
    }
    if (rc == 0) disk_full_clear(n);
    if (rc == TSYNC_EBUSY) {
        /* The app holds the write lock: keep the batches and try again shortly (the node keeps
         * reading its peers meanwhile, so they do not take it for dead). */
        tsync_merge_report_clear(&r);
        n->merge_retry_mono = mono_ms() + MERGE_RETRY_MS;
        return;
    }
    size_t merged = r.merged, conflicts = r.conflicts;
    account(n, &r);
    tsync_merge_report_clear(&r);
    n->merges++;
    if (rc && !is_db_failure(rc) && rc != TSYNC_EFORK && rc != TSYNC_EREFUSED) {
        /* Refused whole: merge peer by peer, so only the bad sender's batches are refused. */
        uint32_t *ids = calloc(n->nq, sizeof *ids);
        size_t nid = 0;
        for (size_t i = 0; ids && i < n->nq; i++) {
            size_t k;
            for (k = 0; k < nid && ids[k] != n->q[i].peer; k++)
                ;
            if (k == nid) ids[nid++] = n->q[i].peer;
        }
        for (size_t i = 0; i < nid; i++) {
            tsync_merge_report pr = TSYNC_MERGE_REPORT_INIT;
            int prc = merge_some(n, ids[i], &pr);
            merged += pr.merged;
            conflicts += pr.conflicts;
            account(n, &pr);
            tsync_merge_report_clear(&pr);
            npeer *p = peer_find(n, ids[i]);
            if (prc && p && prc != TSYNC_EFULL) /* a full disk is not the sender's fault */
                bad_message(n, p, refusal_reason(prc), last_error());
            if (prc && is_db_failure(prc)) rc = prc;
        }
        free(ids);
        if (!is_db_failure(rc)) rc = 0;
    } else if (rc == TSYNC_EFORK || rc == TSYNC_EREFUSED) {
        n->refused[refusal_reason(rc)]++;
        /* A fork found now: every peer may hold the other branch, longer than ours; the next
         * push compares heads and sends our branch from the fork (both branches reach all). */
        for (size_t i = 0; rc == TSYNC_EFORK && i < n->npeers; i++)
            if (n->peers[i]->used) n->peers[i]->fork_check = 1;
        logf_(n, TSYNC_LOG_WARN, "some batches refused: %s", last_error());
        rc = 0;
    }
    if (rc == TSYNC_EBUSY) {
        logf_(n, TSYNC_LOG_DEBUG, "database busy: %zu messages will be sent again", n->nq);
    } else if (rc == TSYNC_EFULL) {
        disk_full_hit(n, "merge"); /* the senders offer the batches again */
    } else if (rc) {
        logf_(n, TSYNC_LOG_ERROR, "merge failed: %s", last_error());
        if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
    }
    /* Tell each sender what we hold now (also after a refusal: it learns what we lack); after a
     * merge, tell every peer, so peers that got the same batches from their origin do not forward
     * them to us again. */
    refresh_ours(n);
    /* A sender holds what it sent us: never send those batches back to it (it does not ACK what
     * it merely sent). Only when our head for that origin is the sender's branch. */
    for (size_t i = 0; i < n->nq; i++) {
        npeer *p = peer_find(n, n->q[i].peer);
        const tsync__wire_batches *b = &n->q[i].m.batches;
        if (!p || !p->verified || !b->nbodies) continue;
        uint64_t last = b->first_seq + b->nbodies - 1;
        if (tsync__vv_seq(&p->sent, b->site) >= last || tsync__vv_seq(&n->ours, b->site) < last)
            continue;
        uint8_t h[TSYNC__HASH_BYTES];
        memcpy(h, b->prev, sizeof h);
        for (uint32_t k = 0; k < b->nbodies; k++)
            tsync__batch_hash(h, b->body[k], b->body_len[k], h);
        const tsync__vv_entry *e = tsync__vv_get(&n->ours, b->site);
        if (e->seq == last && memcmp(e->hash, h, sizeof h) != 0) continue;
        tsync__vv_set(&p->sent, b->site, last, h);
    }
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || p->close_at_mono) continue;
        size_t k;
        for (k = 0; k < n->nq && n->q[k].peer != p->id; k++)
            ;
        if (merged || k < n->nq) send_vector(n, p, 0);
    }
    q_clear(n);
    n->status_dirty = 1;
    if (merged) {
        logf_(n, TSYNC_LOG_DEBUG, "merged %zu batches", merged);
        if (n->o.on_change) {
            tsync_node_change c = {merged, conflicts};
            n->o.on_change(n->o.cb_ctx, &c);
        }
        /* Forward to the peers that lack them a moment later: most got them from their origin
         * too, and their ACKs, which arrive meanwhile, keep us from sending duplicates. */
        if (!n->forward_due) n->forward_due = mono_ms() + FORWARD_DELAY_MS;
    }
}

/* ---------------------------------------------------------------- static peers */

static int parse_peer(const char *spec, speer *sp, char *err, size_t errlen)
{
    memset(sp, 0, sizeof *sp);
    const char *hash = strchr(spec, '#');
    size_t elen = hash ? (size_t)(hash - spec) : strlen(spec);
    if (strncmp(spec, "tcp://", 6) != 0 || elen <= 6 || elen >= sizeof sp->endpoint ||
        !memchr(spec + 6, ':', elen - 6)) {
        snprintf(err, errlen, "peer '%s': expected tcp://ADDR:PORT or tcp://ADDR:PORT#KEY", spec);
        return TSYNC_EINVAL;
    }
    memcpy(sp->endpoint, spec, elen);
    sp->endpoint[elen] = 0;
    if (hash) {
        if (strlen(hash + 1) != 2 * TSYNC__PK_BYTES ||
            sodium_hex2bin(sp->key, sizeof sp->key, hash + 1, 2 * TSYNC__PK_BYTES, NULL, NULL,
                           NULL) != 0) {
            snprintf(err, errlen,
                     "peer '%s': KEY must be 64 hex digits (the public_key of "
                     "'tillsync state')",
                     spec);
            return TSYNC_EINVAL;
        }
        sp->has_key = 1;
    }
    return 0;
}

static int dial(tsync_node *n, size_t si, const uint8_t key[TSYNC__PK_BYTES], uint32_t *id)
{
    speer *sp = &n->statics[si];
    int rc = tsync__tp_connect(n->tp, sp->endpoint, key, id);
    if (rc && rc != TSYNC_EEXISTS) return rc;
    npeer *p = peer_get(n, *id);
    if (!p) return TSYNC_ENOMEM;
    p->static_idx = (int)si;
    p->key_known = 1;
    memcpy(p->pk, key, TSYNC__PK_BYTES);
    snprintf(p->addr, sizeof p->addr, "%s", sp->endpoint);
    return 0;
}

/* Keyless static peers of an enrolled till: dial once per certified device key not tried yet. */
static void dial_candidates(tsync_node *n)
{
    uint8_t *keys = NULL;
    size_t nk = 0;
    int need = 0;
    for (size_t i = 0; i < n->nstatics; i++) need |= !n->statics[i].has_key && !n->statics[i].found;
    if (!need || tsync__sync_device_keys(n->s, &keys, &nk) != 0) return;
    for (size_t i = 0; i < n->nstatics; i++) {
        speer *sp = &n->statics[i];
        if (sp->has_key || sp->found) continue;
        for (size_t k = 0; k < nk; k++) {
            const uint8_t *key = keys + k * TSYNC__PK_BYTES;
            size_t c;
            for (c = 0; c < sp->ncands; c++)
                if (memcmp(sp->cand_keys + c * TSYNC__PK_BYTES, key, TSYNC__PK_BYTES) == 0) break;
            if (c < sp->ncands) continue;
            uint32_t *ids = realloc(sp->cands, (sp->ncands + 1) * sizeof *ids);
            if (!ids) break;
            sp->cands = ids;
            uint8_t *ck = realloc(sp->cand_keys, (sp->ncands + 1) * TSYNC__PK_BYTES);
            if (!ck) break;
            sp->cand_keys = ck;
            uint32_t id;
            if (dial(n, i, key, &id) != 0) continue;
            sp->cands[sp->ncands] = id;
            memcpy(sp->cand_keys + sp->ncands * TSYNC__PK_BYTES, key, TSYNC__PK_BYTES);
            sp->ncands++;
        }
        if (sp->waiting && sp->ncands) {
            sp->waiting = 0;
            n->status_dirty = 1;
            logf_(n, TSYNC_LOG_INFO,
                  "peer %s: a certificate of another till is known now: dialling it", sp->endpoint);
        }
    }
    free(keys);
}

/* A candidate came up: the endpoint's key is found, the other dials stop. */
static void candidate_up(tsync_node *n, npeer *p)
{
    if (p->static_idx < 0) return;
    speer *sp = &n->statics[p->static_idx];
    if (sp->has_key || sp->found) return;
    sp->found = 1;
    memcpy(sp->key, p->pk, TSYNC__PK_BYTES);
    for (size_t c = 0; c < sp->ncands; c++) {
        if (sp->cands[c] == p->id) continue;
        tsync__tp_close(n->tp, sp->cands[c]);
        npeer *o = peer_find(n, sp->cands[c]);
        if (o) peer_free(o);
    }
}

/* ---------------------------------------------------------------- transport events */

static int admit(void *ctx, const uint8_t curve_pk[TSYNC__TP_KEY_BYTES], const uint8_t *ed_pk,
                 const char *address)
{
    /* Revoked keys are refused by the transport itself (tsync__tp_revoke at start and whenever a
     * revocation arrives). Every other key is judged by the certificate in its HELLO: judging a
     * key we dial here, before its certificate could arrive, would refuse two tills that have
     * not met yet, each waiting for the other's certificate. */
    (void)ctx;
    (void)curve_pk;
    (void)ed_pk;
    (void)address;
    return 1;
}

static void on_event(tsync_node *n, const tsync__tp_event *ev)
{
    char lb[LBL];
    switch (ev->kind) {
    case TSYNC__TP_EV_MESSAGE:
        on_message(n, ev);
        break;
    case TSYNC__TP_EV_UP: {
        npeer *p = peer_get(n, ev->peer);
        if (!p) return;
        session_reset(p);
        p->up = 1;
        p->rx_mono = p->tx_mono = mono_ms();
        p->inbound = ev->inbound;
        p->up_ms = p->seen_ms = ev->at_ms;
        if (ev->key_known) {
            p->key_known = 1;
            memcpy(p->pk, ev->ed_pk, TSYNC__PK_BYTES);
        }
        if (!p->addr[0] || ev->inbound) snprintf(p->addr, sizeof p->addr, "%s", ev->address);
        candidate_up(n, p);
        logf_(n, TSYNC_LOG_DEBUG, "session up with %s", peer_label(p, lb));
        if (!n->ours_valid) refresh_ours(n);
        send_vector(n, p, 1);
        break;
    }
    case TSYNC__TP_EV_DOWN: {
        npeer *p = peer_find(n, ev->peer);
        if (!p) return;
        int was = p->verified;
        if (ev->reason == TSYNC__TP_DOWN_OVERSIZE) n->refused[R_OVERSIZE]++;
        session_reset(p);
        if (was) {
            logf_(n, TSYNC_LOG_INFO, "disconnected from %s", peer_label(p, lb));
            notify_peer(n, p, 0);
        }
        n->status_dirty = 1;
        /* A till found over mDNS that closed and withdrew its advertisement has left: stop
         * dialling it (it is dialled again when it is advertised again). */
        if (p->mdns && !p->inbound && p->key_known && !advertised(n, p->pk)) {
            tsync__tp_close(n->tp, p->id);
            peer_free(p);
        }
        break;
    }
    case TSYNC__TP_EV_HSFAIL:
        if (ev->reason == TSYNC__TP_HS_DENIED)
            n->refused[R_DENIED]++;
        else if (ev->inbound && ev->reason == TSYNC__TP_HS_DROPPED)
            n->hs_incomplete++; /* timed out or hung up: a lossy link as much as a scanner */
        else if (ev->inbound)
            n->refused[R_HANDSHAKE]++;
        logf_(n, TSYNC_LOG_DEBUG, "handshake with %s failed (reason %d)", ev->address, ev->reason);
        n->status_dirty = 1;
        break;
    }
}

/* ---------------------------------------------------------------- status */

static json_t *hexj(const uint8_t *p, size_t len)
{
    char buf[2 * 64 + 1];
    hex(p, len, buf);
    return json_string(buf);
}

static void lags(tsync_node *n, const npeer *p, uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    for (size_t i = 0; i < n->ours.n; i++) {
        uint64_t theirs = tsync__vv_seq(&p->acked, n->ours.e[i].site);
        if (n->ours.e[i].seq > theirs) *out += n->ours.e[i].seq - theirs;
    }
    for (size_t i = 0; i < p->acked.n; i++) {
        uint64_t mine = tsync__vv_seq(&n->ours, p->acked.e[i].site);
        if (p->acked.e[i].seq > mine) *in += p->acked.e[i].seq - mine;
    }
}

static char *status_build(tsync_node *n)
{
    json_t *o = json_object();
    uint64_t now = wall_ms();
    json_object_set_new(o, "format", json_integer(1));
    json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(o, "updated_ms", json_integer((json_int_t)now));
    json_object_set_new(o, "started_ms", json_integer((json_int_t)n->started_ms));
    json_object_set_new(o, "database", json_string(n->db_path));
    json_object_set_new(o, "listen", json_string(n->endpoint));
    json_object_set_new(o, "online", json_boolean(online(n)));
    json_object_set_new(o, "site", hexj(tsync_store_site_id(n->s), TSYNC__SITE_BYTES));
    json_object_set_new(o, "public_key", hexj(tsync__sync_public_key(n->s), TSYNC__PK_BYTES));
    json_object_set_new(o, "enrolled", json_boolean(n->enrolled));
    json_object_set_new(o, "schema", json_integer((json_int_t)tsync__sync_schema(n->s)));
    json_t *peers = json_array();
    uint64_t pending = 0;
    const uint8_t *own = tsync_store_site_id(n->s);
    for (size_t i = 0; i < n->nlinks; i++) {
        const nlink *l = &n->links[i];
        const npeer *p = l->p;
        json_t *e = json_object();
        json_object_set_new(e, "address", json_string(l->addr));
        json_object_set_new(e, "key", l->key_known ? hexj(l->pk, TSYNC__PK_BYTES) : json_null());
        if (l->name[0]) json_object_set_new(e, "name", json_string(l->name));
        json_object_set_new(e, "via", json_string(l->via));
        if (l->reason) json_object_set_new(e, "reason", json_string(l->reason));
        if (p)
            json_object_set_new(e, "direction", json_string(p->inbound ? "inbound" : "outbound"));
        json_object_set_new(e, "state", json_string(tsync_peer_state_name(l->state)));
        if (l->state == TSYNC_PEER_REFUSED)
            json_object_set_new(e, "refused_reason", json_string(l->why));
        json_object_set_new(e, "since_ms", json_integer((json_int_t)l->since_ms));
        json_object_set_new(e, "discovered_ms",
                            l->discovered_ms ? json_integer((json_int_t)l->discovered_ms)
                                             : json_null());
        json_object_set_new(e, "connected_ms",
                            l->connected_ms ? json_integer((json_int_t)l->connected_ms)
                                            : json_null());
        json_object_set_new(e, "lost_ms",
                            l->lost_ms ? json_integer((json_int_t)l->lost_ms) : json_null());
        json_object_set_new(e, "last_seen_ms",
                            l->seen_ms ? json_integer((json_int_t)l->seen_ms) : json_null());
        if (p && p->verified) {
            uint64_t lo, li;
            lags(n, p, &lo, &li);
            json_object_set_new(e, "they_lack", json_integer((json_int_t)lo));
            json_object_set_new(e, "we_lack", json_integer((json_int_t)li));
            json_object_set_new(e, "in_flight_bytes", json_integer((json_int_t)p->fl_bytes));
            json_object_set_new(e, "schema", json_integer((json_int_t)p->schema));
            json_object_set_new(e, "clock_delta_ms", json_integer(p->clock_delta_ms));
            uint64_t mine = tsync__vv_seq(&n->ours, own), theirs = tsync__vv_seq(&p->acked, own);
            if (mine > theirs && mine - theirs > pending) pending = mine - theirs;
        }
        json_object_set_new(e, "batches_in", json_integer((json_int_t)(p ? p->rx_batches : 0)));
        json_object_set_new(e, "batches_out", json_integer((json_int_t)(p ? p->tx_batches : 0)));
        json_array_append_new(peers, e);
    }
    json_object_set_new(o, "peers", peers);
    json_object_set_new(o, "pending_out", json_integer((json_int_t)pending));
    tsync__sync_counts c = {0};
    if (tsync__sync_counts_get(n->s, &c) == 0) {
        json_object_set_new(o, "held", json_integer(c.held));
        json_object_set_new(o, "parked", json_integer(c.parked));
        json_object_set_new(o, "conflicts", json_integer(c.conflicts));
        json_object_set_new(o, "forks", json_integer(c.forks));
        json_object_set_new(o, "unsealed", json_integer(c.pending));
    }
    {
        int64_t rb = 0;
        char *last = NULL;
        if (tsync__identity_rollbacks(n->s, &rb, &last) == 0) {
            json_object_set_new(o, "rollbacks", json_integer(rb));
            json_t *lj = last ? json_loads(last, 0, NULL) : NULL;
            json_object_set_new(o, "last_rollback", lj ? lj : json_null());
        }
        free(last);
    }
    json_object_set_new(o, "disk_full", json_boolean(n->disk_full));
    json_object_set_new(o, "disk_full_since_ms",
                        n->disk_full ? json_integer((json_int_t)n->full_since_ms) : json_null());
    /* Other tills whose table definitions differ from ours: a person must act (a migration). */
    json_t *mm = json_array();
    tsync__schema_mismatches(n->s, NULL, schema_json_one, mm);
    char *merr = NULL;
    tsync_store_signed_migration_error(&merr, n->s);
    json_object_set_new(o, "state", json_string(json_array_size(mm) || merr ? "attention" : "ok"));
    json_object_set_new(o, "schema_mismatches", mm);
    json_object_set_new(o, "signed_migration_error", merr ? json_string(merr) : json_null());
    free(merr);
    /* Why batches are held, per origin (a till with a bad clock is named there). */
    tsync__sync_held hr[8];
    int nh = c.held > 0 ? tsync__sync_held_get(n->s, hr, 8) : 0;
    json_t *hj = json_array();
    for (int i = 0; i < nh; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "count", json_integer(hr[i].count));
        json_object_set_new(e, "reason", json_string(hr[i].reason));
        json_array_append_new(hj, e);
    }
    json_object_set_new(o, "held_reasons", hj);
    /* This till's clock against the shop's (docs/DATA_MODEL.md, "Clocks"). */
    json_t *cj = json_object();
    tsync__sync_clock ck;
    int have_ck = tsync__sync_clock_get(n->s, &ck) == 0;
    int64_t off = n->clock_off_ms;
    int big = n->clock_known && (off > TSYNC__CLOCK_OFF_MS || off < -TSYNC__CLOCK_OFF_MS);
    json_object_set_new(cj, "state",
                        json_string(!n->clock_known ? "unknown"
                                    : !big          ? "ok"
                                    : off < 0       ? "ahead"
                                                    : "behind"));
    json_object_set_new(cj, "peers", json_integer((json_int_t)n->clock_peers));
    json_object_set_new(cj, "ahead_ms",
                        n->clock_known ? json_integer(-off) : json_null()); /* ours - median */
    json_object_set_new(cj, "stamped_with_shop_time", json_boolean(big));
    if (have_ck) {
        json_object_set_new(cj, "hlc_ms", json_integer((json_int_t)ck.hlc_ms));
        json_object_set_new(cj, "hlc_ahead_ms",
                            json_integer((json_int_t)ck.hlc_ms - (json_int_t)(now + off)));
        json_object_set_new(cj, "skew_bound_ms", json_integer((json_int_t)ck.skew_bound_ms));
        json_object_set_new(cj, "resets", json_integer(ck.resets));
        json_object_set_new(cj, "reset_from_ms",
                            ck.resets ? json_integer(ck.reset_from_ms) : json_null());
        json_object_set_new(cj, "reset_at_ms",
                            ck.resets ? json_integer(ck.reset_at_ms) : json_null());
    }
    json_object_set_new(o, "clock", cj);
    /* A full disk or a wrong clock needs a person too (schema differences are above). */
    if (n->disk_full || big) json_object_set_new(o, "state", json_string("attention"));
    json_t *ref = json_object();
    tsync__tp_stats ts;
    tsync__tp_stats_get(n->tp, &ts);
    for (int i = 0; i < R_COUNT; i++) {
        uint64_t v = n->refused[i];
        if (i == R_OVERSIZE) v += ts.dropped_oversize > v ? ts.dropped_oversize - v : 0;
        json_object_set_new(ref, R_NAME[i], json_integer((json_int_t)v));
    }
    json_object_set_new(ref, "unverified", json_integer((json_int_t)ts.dropped_unverified));
    json_object_set_new(o, "refused", ref);
    json_object_set_new(o, "handshakes_incomplete", json_integer((json_int_t)n->hs_incomplete));
    json_object_set_new(o, "batches_merged", json_integer((json_int_t)n->merged));
    /* Our own batches since start, whoever sealed them (us, a merge, the app's own seal). */
    uint64_t own_now = tsync__vv_seq(&n->ours, own);
    json_object_set_new(
        o, "batches_sealed",
        json_integer((json_int_t)(own_now > n->own_seq0 ? own_now - n->own_seq0 : 0)));
    json_object_set_new(o, "batches_pruned", json_integer((json_int_t)n->pruned));
    if (n->o.backup_every_ms) {
        json_t *b = json_object();
        json_object_set_new(b, "dir", json_string(n->o.backup_dir));
        json_object_set_new(b, "every_ms", json_integer((json_int_t)n->o.backup_every_ms));
        json_object_set_new(b, "done", json_integer((json_int_t)n->backups_done));
        json_object_set_new(b, "failed", json_integer((json_int_t)n->backups_failed));
        json_object_set_new(b, "last_ms",
                            n->last_backup_ms ? json_integer((json_int_t)n->last_backup_ms)
                                              : json_null());
        json_object_set_new(o, "backups", b);
    }
    json_object_set_new(o, "snapshots_sent", json_integer((json_int_t)n->snaps_sent));
    json_object_set_new(o, "snapshots_received", json_integer((json_int_t)n->snaps_received));
    json_t *md = json_object();
    json_object_set_new(md, "enabled", json_boolean(n->disc != NULL));
    if (n->disc) {
        tsync__disc_stats ds;
        tsync__disc_stats_get(n->disc, &ds);
        json_object_set_new(md, "daemon",
                            json_string(n->disc_daemon > 0   ? "reachable"
                                        : n->disc_daemon < 0 ? "unreachable"
                                                             : "unknown"));
        const char *nm = n->disc_daemon > 0 && n->disc_port ? tsync__disc_self_name(n->disc) : NULL;
        json_t *nj = nm ? json_string(nm) : NULL;
        json_object_set_new(md, "published_as", nj ? nj : json_null());
        /* Only an enrolled till acts on what it finds (its shop's tills). */
        json_object_set_new(md, "shop_tills_found", json_integer((json_int_t)n->nfound_));
        json_object_set_new(md, "found", json_integer((json_int_t)ds.found));
        json_object_set_new(md, "malformed", json_integer((json_int_t)ds.malformed));
        json_object_set_new(md, "collisions", json_integer((json_int_t)ds.collisions));
    }
    json_object_set_new(o, "mdns", md);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

/* A full disk has no block for a new file: the status is written over the old file's blocks. */
static void status_in_place(const char *path, const char *txt)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t len = strlen(txt);
    if (pwrite(fd, txt, len, 0) == (ssize_t)len && pwrite(fd, "\n", 1, (off_t)len) == 1)
        (void)!ftruncate(fd, (off_t)len + 1);
    close(fd);
}

/* Reads the rows links_update made this round (the node's thread). */
static void status_publish(tsync_node *n)
{
    char *s = status_build(n);
    if (!s) return;
    if (n->status_path) {
        size_t len = strlen(n->status_path) + 8;
        char *tmp = malloc(len);
        if (tmp) {
            snprintf(tmp, len, "%s.tmp", n->status_path);
            FILE *f = fopen(tmp, "w");
            int done = 0;
            if (f) {
                int ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF;
                ok = fclose(f) == 0 && ok;
                done = ok && rename(tmp, n->status_path) == 0;
                if (!done) remove(tmp);
            }
            if (!done) status_in_place(n->status_path, s);
            free(tmp);
        }
    }
    pthread_mutex_lock(&n->status_mu);
    free(n->status_json);
    n->status_json = s;
    pthread_mutex_unlock(&n->status_mu);
    n->status_dirty = 0;
}

/* ---------------------------------------------------------------- scheduled backups */

static void *backup_main(void *arg)
{
    tsync_node *n = arg;
    tsync_store *s;
    int rc = tsync_store_open(&s, n->db_path, NULL);
    if (rc == 0) {
        rc = tsync_backup(s, n->backup_path, NULL, NULL);
        tsync_store_free(s);
    }
    if (rc) snprintf(n->backup_err, sizeof n->backup_err, "%s", last_error());
    n->backup_rc = rc;
    atomic_store(&n->backup_state, 2);
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keeps the newest backup_keep backups of this database in backup_dir (names sort by time). */
static void backup_rotate(tsync_node *n, const char *prefix)
{
    DIR *d = opendir(n->o.backup_dir);
    if (!d) return;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, pl) != 0 || l < pl + 7 ||
            strcmp(e->d_name + l - 6, ".tsbak") != 0)
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 16;
            char **nm = realloc(names, cap * sizeof *nm);
            if (!nm) break;
            names = nm;
        }
        if (!(names[nn] = strdup(e->d_name))) break;
        nn++;
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i + (size_t)n->o.backup_keep < nn; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", n->o.backup_dir, names[i]);
        if (remove(path) == 0) logf_(n, TSYNC_LOG_INFO, "removed old backup %s", path);
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

static void backup_tick(tsync_node *n, uint64_t now)
{
    if (!n->o.backup_every_ms || !n->o.backup_dir) return;
    int st = atomic_load(&n->backup_state);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s-", base_name(n->db_path));
    if (st == 2) {
        pthread_join(n->backup_thread, NULL);
        atomic_store(&n->backup_state, 0);
        if (n->backup_rc) {
            logf_(n, TSYNC_LOG_ERROR, "scheduled backup to %s failed: %s", n->backup_path,
                  n->backup_err);
            n->backups_failed++;
        } else {
            logf_(n, TSYNC_LOG_INFO, "backup written: %s", n->backup_path);
            n->backups_done++;
            n->last_backup_ms = wall_ms();
            backup_rotate(n, prefix);
        }
        n->status_dirty = 1;
        return;
    }
    if (st != 0 || now < n->next_backup_mono) return;
    n->next_backup_mono = now + n->o.backup_every_ms;
    uint64_t w = wall_ms();
    time_t t = (time_t)(w / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(n->backup_path, sizeof n->backup_path, "%s/%s%04d%02d%02dT%02d%02d%02d.%03uZ.tsbak",
             n->o.backup_dir, prefix, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (unsigned)(w % 1000));
    atomic_store(&n->backup_state, 1);
    if (pthread_create(&n->backup_thread, NULL, backup_main, n) != 0) {
        atomic_store(&n->backup_state, 0);
        logf_(n, TSYNC_LOG_ERROR, "cannot start the backup thread");
    }
}

static void backup_finish(tsync_node *n)
{
    if (atomic_load(&n->backup_state) != 0) {
        pthread_join(n->backup_thread, NULL); /* a backup in progress completes first */
        atomic_store(&n->backup_state, 2);
        backup_tick(n, mono_ms());
    }
}

/* ---------------------------------------------------------------- mDNS discovery */

/* Dials an advertised till at endpoint (NULL: it withdrew its advertisement). Nothing is done
 * when a session with that key is up or that address is being dialled. A dial without a session
 * stops when the till withdraws its advertisement (a session is judged by liveness, not mDNS: a
 * cut host stays listed for an hour) or moves to another address (dialled there instead). */
static void mdns_dial(tsync_node *n, const uint8_t key[TSYNC__PK_BYTES], const char *endpoint)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->key_known || memcmp(p->pk, key, TSYNC__PK_BYTES) != 0) continue;
        if (p->up) return;
        if (!p->mdns || p->inbound) continue;
        if (endpoint && !strcmp(p->addr, endpoint)) return;
        tsync__tp_close(n->tp, p->id);
        peer_free(p);
    }
    if (!endpoint) return;
    uint32_t id;
    int rc = tsync__tp_connect(n->tp, endpoint, key, &id);
    if (rc && rc != TSYNC_EEXISTS) return;
    npeer *p = peer_get(n, id);
    if (!p) return;
    p->mdns = 1;
    p->key_known = 1;
    memcpy(p->pk, key, TSYNC__PK_BYTES);
    snprintf(p->addr, sizeof p->addr, "%s", endpoint);
    char k[17];
    hex(key, 8, k);
    logf_(n, TSYNC_LOG_DEBUG, "mDNS: found %s at %s: dialling", k, endpoint);
}

/* The till with the larger key of a pair waits to be dialled; when no session with an advertised
 * till of the shop has been up for MDNS_FALLBACK_MS it dials too. That covers a till whose
 * address changed without a goodbye (the others dial its old address until the record expires,
 * up to two minutes) and links that only work one way. Two sessions with one till are harmless. */
static void mdns_fallback(tsync_node *n, uint64_t now)
{
    const uint8_t *own = tsync__sync_public_key(n->s);
    for (size_t i = 0; i < n->nfound_; i++) {
        nfound *f = &n->found[i];
        if (memcmp(f->key, own, TSYNC__PK_BYTES) > 0) continue; /* we dial it anyway */
        int up = 0;
        for (size_t j = 0; j < n->npeers && !up; j++) {
            const npeer *p = n->peers[j];
            up = p->used && p->up && p->key_known && !memcmp(p->pk, f->key, TSYNC__PK_BYTES);
        }
        if (up) {
            f->quiet_mono = now;
            continue;
        }
        /* (now was read before this round's discovery events stamped new entries) */
        if (now < f->quiet_mono || now - f->quiet_mono < MDNS_FALLBACK_MS) continue;
        mdns_dial(n, f->key, f->endpoint);
    }
}

/* A till advertised on the LAN: dial it when it speaks our protocol and, for an enrolled till,
 * belongs to our shop (TXT can be forged: the certificate in its HELLO is what decides). A
 * database never enrolled talks only to its static peers. */
static void on_discovered(tsync_node *n, const tsync__disc_event *ev)
{
    if (ev->kind == TSYNC__DISC_DAEMON_DOWN) {
        if (!n->disc_down_logged)
            logf_(n, TSYNC_LOG_WARN,
                  "mDNS: no avahi daemon reachable; sessions and static peers go on, "
                  "no new tills are found until one appears");
        n->disc_down_logged = 1;
        n->disc_daemon = -1;
        n->status_dirty = 1;
        return;
    }
    if (ev->kind == TSYNC__DISC_DAEMON_UP) {
        logf_(n, TSYNC_LOG_INFO, "mDNS: avahi daemon reachable; publishing and browsing");
        n->disc_down_logged = 0;
        n->disc_daemon = 1;
        n->status_dirty = 1;
        return;
    }
    if (!ev->has_key || !n->enrolled || ev->version != TSYNC_WIRE_VERSION || !ev->has_shop ||
        memcmp(ev->shop, n->shop, TSYNC__SHOP_ID_BYTES) != 0)
        return;
    found_note(n, ev);
    n->status_dirty = 1;
    /* One session per pair: the till with the smaller key dials, the other waits for it (and
     * dials too when no session came for a while: mdns_fallback). */
    int dialer = memcmp(ev->key, tsync__sync_public_key(n->s), TSYNC__PK_BYTES) > 0;
    int dialling = 0; /* a fallback dial of ours follows the till too */
    for (size_t i = 0; i < n->npeers && !dialling; i++) {
        const npeer *p = n->peers[i];
        dialling = p->used && p->mdns && !p->inbound && !memcmp(p->pk, ev->key, TSYNC__PK_BYTES);
    }
    if (dialer || dialling || ev->kind == TSYNC__DISC_LOST)
        mdns_dial(n, ev->key, ev->kind == TSYNC__DISC_FOUND ? ev->endpoint : NULL);
}

static void discovery(tsync_node *n)
{
    if (!n->disc) return;
    tsync__disc_event ev;
    for (int i = 0; i < 64 && tsync__disc_poll(n->disc, &ev) == 1; i++) on_discovered(n, &ev);
}

/* ---------------------------------------------------------------- the shop's clock */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Works out the shop's clock: the median offset of the connected peers' clocks (measured in the
 * HELLO and again by PING/PONG every CLOCK_PING_MS). While our wall clock is more than
 * TSYNC__CLOCK_OFF_MS off it, or our HLC ran more than the skew bound ahead of it, the offset is
 * recorded in the database, where every sealer takes it (store/seal.c: stamp with the shop's time;
 * take the HLC back), and merge judges "too far ahead" against it. Says so in the log once a
 * minute and in the status (docs/DATA_MODEL.md, "Clocks"). */
static void clock_tick(tsync_node *n, uint64_t now)
{
    if (now - n->clock_check_mono < CLOCK_CHECK_MS) return;
    n->clock_check_mono = now;
    uint64_t wall = wall_ms();
    int64_t base = (int64_t)wall - (int64_t)now;
    /* Our own clock counts too (offset 0): with one wrong clock among three tills, each good
     * till sees {0, 0, wrong} and keeps its own; the wrong one sees {wrong, 0, 0}. */
    int64_t d[65] = {0};
    size_t k = 0;
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->up || !p->verified || p->close_at_mono || !p->clock_mono) continue;
        if (now - p->clock_mono >= CLOCK_PING_MS) {
            tsync__msg m = {.type = TSYNC__WIRE_PING};
            m.ping.ms = now;
            send_msg(n, p, &m);
        }
        /* Measured before our own clock jumped: no longer a measure of it. */
        if (p->clock_base_ms - base > 2000 || base - p->clock_base_ms > 2000) continue;
        if (k < sizeof d / sizeof d[0] - 1) d[++k] = p->clock_delta_ms;
    }
    int64_t off = 0;
    if (k) {
        /* Of an even count the middle value nearer ours: two tills cannot tell whose clock is
         * wrong, so neither corrects its own. */
        size_t m = k + 1;
        qsort(d, m, sizeof d[0], cmp_i64);
        int64_t lo = d[(m - 1) / 2], hi = d[m / 2];
        off = (lo < 0 ? -lo : lo) <= (hi < 0 ? -hi : hi) ? lo : hi;
    }
    tsync__sync_clock ck;
    int have = tsync__sync_clock_get(n->s, &ck) == 0;
    int64_t shop_now = (int64_t)wall + off;
    int off_big = k && (off > TSYNC__CLOCK_OFF_MS || off < -TSYNC__CLOCK_OFF_MS);
    int hlc_ahead = k && have && (int64_t)ck.hlc_ms - shop_now > (int64_t)ck.skew_bound_ms;
    if (n->clock_known != (k > 0) || n->clock_peers != k ||
        (off_big && (off - n->clock_off_ms > 1000 || n->clock_off_ms - off > 1000)))
        n->status_dirty = 1;
    n->clock_known = k > 0;
    n->clock_peers = k;
    n->clock_off_ms = off;
    if (off_big || hlc_ahead) {
        if (!n->clock_recorded || now - n->clock_rec_mono >= CLOCK_RECORD_MS ||
            off - n->clock_rec_off_ms > 1000 || n->clock_rec_off_ms - off > 1000) {
            if (tsync__sync_shop_clock(n->s, 1, off) == 0) {
                n->clock_recorded = 1;
                n->clock_rec_mono = now;
                n->clock_rec_off_ms = off;
            }
        }
    } else if (n->clock_recorded && tsync__sync_shop_clock(n->s, 0, 0) == 0) {
        n->clock_recorded = 0;
    }
    if (off_big && (!n->clock_warned_mono || now - n->clock_warned_mono >= CLOCK_LOG_MS)) {
        n->clock_warned_mono = now;
        logf_(n, TSYNC_LOG_WARN,
              "this till's clock is %s the shop's median by %" PRId64 " s (%zu peer(s)): its "
              "changes are stamped with the shop's time; set this machine's clock right",
              off < 0 ? "ahead of" : "behind", (off < 0 ? -off : off) / 1000, k);
    } else if (!off_big && k && n->clock_warned_mono) {
        n->clock_warned_mono = 0;
        logf_(n, TSYNC_LOG_INFO, "this till's clock agrees with the shop's again");
    }
    if (hlc_ahead && (!n->hlc_warned_mono || now - n->hlc_warned_mono >= CLOCK_LOG_MS)) {
        n->hlc_warned_mono = now;
        logf_(n, TSYNC_LOG_WARN,
              "this till's hybrid clock is %" PRId64 " s ahead of the shop's time (written while "
              "its wall clock was wrong); the next change takes it back to the shop's time",
              ((int64_t)ck.hlc_ms - shop_now) / 1000);
    }
    if (have && ck.resets > n->clock_resets_seen) {
        if (n->clock_resets_seen >= 0)
            logf_(n, TSYNC_LOG_WARN,
                  "this till's hybrid clock went back from %" PRId64 " s ahead to the shop's "
                  "time: its sales are no longer held by its peers",
                  (ck.reset_from_ms - ck.reset_at_ms) / 1000);
        n->clock_resets_seen = ck.resets;
        n->status_dirty = 1;
    }
}

/* Liveness is the node's, not ZeroMQ's (see tsync__tp_options.heartbeat_ivl_ms): a peer we have
 * sent nothing to for PING_IDLE_MS gets a PING, so every live session carries a message each way
 * at least that often; a session with no message for liveness_ms is taken as gone (a cut cable
 * sends no FIN) and closed, and a static peer is dialled again. */
static void liveness(tsync_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->up || p->close_at_mono) continue;
        if (p->verified && now >= p->tx_mono && now - p->tx_mono >= PING_IDLE_MS) {
            tsync__msg m = {.type = TSYNC__WIRE_PING};
            m.ping.ms = now;
            send_msg(n, p, &m);
        }
        if (now <= p->rx_mono || now - p->rx_mono < (uint64_t)n->o.liveness_ms) continue;
        /* Bytes still arriving (a large message in transit) keep the session alive. */
        int idle = tsync__tp_peer_rx_idle_ms(n->tp, p->id);
        if (idle >= 0 && idle < n->o.liveness_ms) continue;
        char lb[LBL];
        logf_(n, TSYNC_LOG_INFO, "no word from %s for %.1f s: taking the link as lost",
              peer_label(p, lb), (double)(now - p->rx_mono) / 1000);
        int was = p->verified;
        uint32_t id = p->id;
        int si = p->static_idx;
        if (was) notify_peer(n, p, 0);
        tsync__tp_close(n->tp, id);
        if (p->mdns && !p->inbound && !advertised(n, p->pk)) {
            peer_free(p); /* it withdrew its advertisement: it left */
            n->status_dirty = 1;
            continue;
        }
        if (p->mdns && !p->inbound) {
            /* Dial the advertised address again (a new advertisement may change it). */
            char ep[TSYNC__TP_ADDR_LEN];
            uint8_t key[TSYNC__PK_BYTES];
            snprintf(ep, sizeof ep, "%s", p->addr);
            memcpy(key, p->pk, sizeof key);
            peer_free(p);
            uint32_t nid;
            if (tsync__tp_connect(n->tp, ep, key, &nid) == 0) {
                npeer *q = peer_get(n, nid);
                if (q) {
                    q->mdns = q->key_known = 1;
                    memcpy(q->pk, key, sizeof key);
                    snprintf(q->addr, sizeof q->addr, "%s", ep);
                }
            }
            n->status_dirty = 1;
            continue;
        }
        if (p->inbound || si < 0) {
            session_reset(p);
            p->up = 0;
            continue;
        }
        /* A peer we dial: forget this connection and dial again (reconnects back off). */
        speer *sp = &n->statics[si];
        uint8_t key[TSYNC__PK_BYTES];
        memcpy(key, p->pk, sizeof key);
        peer_free(p);
        uint32_t nid;
        if (dial(n, (size_t)si, key, &nid) == 0)
            for (size_t c = 0; c < sp->ncands; c++)
                if (sp->cands[c] == id) sp->cands[c] = nid;
        n->status_dirty = 1;
    }
}

/* ---------------------------------------------------------------- the loop */

static void trust_check(tsync_node *n)
{
    if (!n->enrolled) return;
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    if (tsync__trust_export(n->s, &blobs, &lens, &nb) != 0) return;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, TSYNC__HASH_BYTES);
    for (size_t i = 0; i < nb; i++) crypto_generichash_update(&st, blobs[i], lens[i]);
    uint8_t d[TSYNC__HASH_BYTES];
    crypto_generichash_final(&st, d, sizeof d);
    tsync__trust_export_free(blobs, lens, nb);
    if (n->trust_digest_valid && memcmp(d, n->trust_digest, sizeof d) == 0) return;
    int first = !n->trust_digest_valid;
    memcpy(n->trust_digest, d, sizeof d);
    n->trust_digest_valid = 1;
    if (first) return;
    /* New certificates or revocations (from a merge or `tillsync revoke`): tell every peer, cut
     * revoked sessions, and dial newly certified keys for keyless static peers. */
    apply_revocations(n);
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified && !n->peers[i]->close_at_mono)
            send_certs(n, n->peers[i]);
    dial_candidates(n);
}

/* Stores the members' acknowledged vectors and prunes what every member holds (enrolled only: the
 * members are the shop's certified devices; a peer behind the horizon then needs a snapshot, which
 * only an enrolled shop can give). */
static void prune(tsync_node *n, uint64_t now)
{
    if (!n->enrolled || n->o.prune_keep < 0) return;
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (p->used && p->verified && p->key_known && p->ack_dirty &&
            tsync__sync_ack_put(n->s, p->pk, &p->acked) == 0)
            p->ack_dirty = 0;
    }
    if (now - n->last_prune_mono < (uint64_t)n->o.prune_ms) return;
    n->last_prune_mono = now;
    uint8_t *keys = NULL;
    size_t nk = 0, pruned = 0;
    if (tsync__sync_device_keys(n->s, &keys, &nk) != 0) return;
    int rc = tsync__sync_prune(n->s, keys, nk, (uint64_t)n->o.prune_keep, &pruned);
    free(keys);
    if (rc == TSYNC_EFULL)
        disk_full_hit(n, "prune the log");
    else if (rc && rc != TSYNC_EBUSY)
        logf_(n, TSYNC_LOG_WARN, "cannot prune the log: %s", last_error());
    if (pruned) {
        n->pruned += pruned;
        logf_(n, TSYNC_LOG_DEBUG, "pruned %zu batches every member holds", pruned);
    }
}

typedef struct {
    tsync_node *n;
    npeer *p;
} proof_ctx;

static int send_proof(void *ctx, int64_t id, const uint8_t *proof, size_t len)
{
    proof_ctx *c = ctx;
    tsync__msg m = {.type = TSYNC__WIRE_FORK_PROOF};
    m.fork_proof.proof = proof;
    m.fork_proof.len = len;
    int rc = send_msg(c->n, c->p, &m);
    if (rc == TSYNC_EBUSY) return 1; /* the rest next round */
    c->p->fork_sent = id;            /* a proof too large to send is skipped, not retried */
    return 0;
}

/* Fork proofs replicate like revocations: every peer gets each proof once per session, and
 * merging one freezes the forked origin there too. */
static void spread_forks(tsync_node *n, npeer *p)
{
    proof_ctx c = {n, p};
    tsync__sync_fork_proofs(n->s, p->fork_sent, send_proof, &c);
}

static void anti_entropy(tsync_node *n, uint64_t now)
{
    trust_check(n);
    prune(n, now);
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || p->close_at_mono) continue;
        send_vector(n, p, 0);
        spread_forks(n, p);
        if (p->nfl && now - p->fl[0].sent_mono >= (uint64_t)n->o.anti_entropy_ms) {
            /* The oldest piece in flight was not acknowledged within a whole period (lost in a
             * reconnect, or held for a missing dependency): send again from the peer's ACK. */
            char lb[LBL];
            logf_(n, TSYNC_LOG_DEBUG, "resending to %s from its last acknowledged vector",
                  peer_label(p, lb));
            tsync__vv_free(&p->sent);
            for (size_t k = 0; k < p->acked.n; k++)
                tsync__vv_set(&p->sent, p->acked.e[k].site, p->acked.e[k].seq, p->acked.e[k].hash);
            p->nfl = 0;
            p->fl_bytes = 0;
            p->progress_mono = now;
        }
        push(n, p);
    }
}

static int local_changes(tsync_node *n, uint64_t now)
{
    int ch = tsync__sync_changed(n->s);
    if (ch < 0) return ch;
    int due = n->o.seal_ms && now - n->last_seal_mono >= n->o.seal_ms;
    if (!ch && !due && !n->seal_retry) return 0;
    if (disk_full_waiting(n)) {
        n->seal_retry = 1;
        return 0;
    }
    n->last_seal_mono = now;
    size_t nb = 0;
    int rc = tsync_store_seal(n->s, &nb);
    if (rc == TSYNC_EFULL) {
        disk_full_hit(n, "seal");
        n->seal_retry = 1;
        return 0;
    }
    if (rc == 0 && nb > 0) disk_full_clear(n);
    if (rc == TSYNC_EBUSY) {
        /* The app holds the write lock: try again next round (the commit that changed the data
         * version was already counted). */
        n->seal_retry = 1;
        return 0;
    }
    n->seal_retry = 0;
    if (rc) {
        logf_(n, TSYNC_LOG_ERROR, "cannot seal: %s", last_error());
        return rc;
    }
    ch = ch || nb > 0;
    n->local_batches += nb;
    if (ch) {
        if ((rc = refresh_ours(n))) return rc;
        push_all(n);
        n->status_dirty = 1;
    }
    return 0;
}

static void close_due(tsync_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->close_at_mono || now < p->close_at_mono) continue;
        int was = p->hello;
        if (p->inbound) {
            tsync__tp_close(n->tp, p->id);
            session_reset(p);
        } else {
            /* A dialled peer that refused us or that we refused: stop dialling it. */
            tsync__tp_close(n->tp, p->id);
            peer_free(p);
            continue;
        }
        if (was) notify_peer(n, p, 0);
    }
}

/* The store took a new incarnation (its log went back: store/identity.c), at open or in a merge:
 * say so once, loudly, and show the new head to the peers. */
static void identity_check(tsync_node *n)
{
    unsigned r = tsync__identity_renewals(n->s);
    int first = !n->identity_checked;
    if (r == n->renewals_seen && !first) return;
    n->renewals_seen = r;
    n->identity_checked = 1;
    int64_t count = 0;
    char *last = NULL;
    tsync__identity_rollbacks(n->s, &count, &last);
    json_t *o = last ? json_loads(last, 0, NULL) : NULL;
    free(last);
    char own[2 * TSYNC__SITE_BYTES + 1];
    hex(tsync_store_site_id(n->s), TSYNC__SITE_BYTES, own);
    const char *ns = json_string_value(json_object_get(o, "new_site"));
    if (!ns || strcmp(ns, own) != 0) {
        /* At start: the current incarnation was not taken after a rollback. */
        json_decref(o);
        return;
    }
    logf_(n, TSYNC_LOG_WARN,
          "the log of this till went back (an old copy of the database was written over it: "
          "batch %lld here, %lld already %s): new incarnation, site %.12s -> %.12s; its lost "
          "batches are taken back from peers",
          (long long)json_integer_value(json_object_get(o, "log_seq")),
          (long long)json_integer_value(json_object_get(o, "seen_seq")),
          json_is_string(json_object_get(o, "detected_by")) &&
                  !strcmp(json_string_value(json_object_get(o, "detected_by")), "peer")
              ? "at a peer"
              : "sent out",
          json_string_value(json_object_get(o, "old_site"))
              ? json_string_value(json_object_get(o, "old_site"))
              : "?",
          json_string_value(json_object_get(o, "new_site"))
              ? json_string_value(json_object_get(o, "new_site"))
              : "?");
    json_decref(o);
    refresh_ours(n);
    n->status_dirty = 1;
}

/* One round: events (waiting up to wait_ms for the first), merges, local commits, timers. */
static int step(tsync_node *n, int wait_ms)
{
    tsync__tp_event ev;
    int rc = tsync__tp_poll(n->tp, wait_ms, &ev);
    int count = 0;
    while (rc == 1) {
        on_event(n, &ev);
        if (++count >= 512 || n->qbytes >= MERGE_QUEUE_MAX) break;
        rc = tsync__tp_poll(n->tp, 0, &ev);
    }
    if (rc < 0) {
        logf_(n, TSYNC_LOG_ERROR, "transport failed: %s", last_error());
        return rc;
    }
    flush_merges(n);
    identity_check(n);
    uint64_t now = mono_ms();
    if ((rc = local_changes(n, now)) && rc != TSYNC_EBUSY) n->failed = rc;
    if (now - n->last_ae_mono >= (uint64_t)n->o.anti_entropy_ms) {
        n->last_ae_mono = now;
        anti_entropy(n, now);
        schema_tick(n);
    }
    if (n->forward_due && now >= n->forward_due) {
        n->forward_due = 0;
        push_all(n);
    }
    discovery(n);
    liveness(n, now);
    clock_tick(n, now);
    close_due(n, now);
    backup_tick(n, now);
    /* The peer rows (and their events) are rebuilt when something changed, at least every
     * PEERS_CHECK_MS for the timed transitions, and always right before the status reads them
     * (a row points at its session, valid until the next change). Not on every 2 ms tick. */
    int publish =
        n->status_dirty ? now - n->last_status_mono >= 100 : now - n->last_status_mono >= 1000;
    if (publish || n->status_dirty || now - n->last_peers_mono >= PEERS_CHECK_MS) {
        n->last_peers_mono = now;
        mdns_fallback(n, now);
        links_update(n);
    }
    if (publish) {
        n->last_status_mono = now;
        status_publish(n);
    }
    return n->failed;
}

/* ---------------------------------------------------------------- public API */

int tsync_node_new(tsync_node **out, const char *db_path, const tsync_node_options *opts)
{
    *out = NULL;
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    if (opts && opts->version == 1) /* before on_peer_state */
        memcpy(&o, opts, offsetof(tsync_node_options, on_peer_state));
    else if (opts)
        o = *opts;
    if (o.version != 1 && o.version != TSYNC_NODE_OPTIONS_VERSION) {
        return tsync__err(TSYNC_EINVAL, "node options of an unknown version");
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
    pthread_mutex_init(&n->status_mu, NULL);
    n->started_ms = wall_ms();
    n->clock_resets_seen = -1;
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
    n->o.status_path = NULL;
    n->o.peers = NULL;
    n->o.backup_dir = NULL;
    if (rc == 0 && o.backup_dir) {
        struct stat sb;
        if (stat(o.backup_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            rc = tsync__err(TSYNC_ENOTFOUND, "backup folder %s does not exist", o.backup_dir);
        else if (!(n->backup_dir_copy = strdup(o.backup_dir)))
            rc = TSYNC_ENOMEM;
        n->o.backup_dir = n->backup_dir_copy;
    }
    if (rc == 0) {
        /* Opening may write (an upgrade of the internal tables), and a POS selling without a
         * pause holds the write lock often: the open waits as long as any command does. Once
         * open, the node's thread must never wait long for the app's write lock: while it waits
         * it reads no messages (peers would see it as dead). A merge or seal that finds the
         * database busy is retried; batches are sent again by their sender. */
        rc = tsync_store_open(&n->s, db_path, NULL);
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
            if ((rc = parse_peer(o.peers[i], &n->statics[i], err, sizeof err))) {
                tsync__err(rc, "%s", err);
                break;
            }
            n->nstatics++;
            if (!n->statics[i].has_key && !n->enrolled)
                rc = tsync__err(TSYNC_EINVAL,
                                "peer %s: give its key as %s#KEY ('tillsync state' on that till "
                                "shows public_key): this database is not enrolled in a shop, so "
                                "it has no certificates to learn the key from",
                                o.peers[i], o.peers[i]);
        }
    }
    if (rc == 0) {
        tsync__tp_options to = TSYNC__TP_OPTIONS_INIT;
        to.admit = admit;
        /* One batch may be up to 64 MiB (older builds sealed a transaction whole; ours cut at
         * about 4 MiB). The receive queue holds up to 16 messages of that size per peer. */
        to.max_msg = TSYNC__WIRE_MAX_FRAME;
        to.heartbeat_ivl_ms = -1; /* liveness() instead */
        to.rcv_queue_bytes = (size_t)16 * TSYNC__WIRE_MAX_FRAME;
        to.admit_ctx = n;
        rc = tsync__tp_new(&n->tp, tsync__sync_secret_key(n->s), &to);
        if (rc) tsync__err(rc, "cannot start the transport: %s", last_error());
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
            if (rc) tsync__err(rc, "cannot listen on %s: %s", listen, last_error());
        }
    }
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
        n->disc_port = self.port;
        if (tsync__disc_avahi_new(&n->disc, &self) != 0) {
            logf_(n, TSYNC_LOG_WARN, "mDNS off: %s", last_error());
            n->disc = NULL;
        }
    }
    if (rc == 0) rc = refresh_ours(n);
    if (rc == 0) n->own_seq0 = tsync__vv_seq(&n->ours, tsync_store_site_id(n->s));
    for (size_t i = 0; rc == 0 && i < n->nstatics; i++) {
        uint32_t id;
        if (n->statics[i].has_key && (rc = dial(n, i, n->statics[i].key, &id)))
            tsync__err(rc, "cannot dial %s: %s", n->statics[i].endpoint, last_error());
    }
    if (rc == 0) {
        dial_candidates(n);
        for (size_t i = 0; i < n->nstatics; i++) {
            speer *sp = &n->statics[i];
            if (sp->has_key || sp->ncands) continue;
            sp->waiting = 1; /* said once; the status lists it until it is dialled */
            logf_(n, TSYNC_LOG_WARN, "peer %s not dialled: %s", sp->endpoint, KEYLESS_WAIT);
        }
        tsync__sync_changed(n->s); /* the first call only sets the baseline */
        trust_check(n);
        size_t nb = 0;
        if (tsync_store_seal(n->s, &nb) == 0) n->local_batches += nb;
        refresh_ours(n);
        char site[33];
        hex(tsync_store_site_id(n->s), TSYNC__SITE_BYTES, site);
        char key[65];
        hex(tsync__sync_public_key(n->s), TSYNC__PK_BYTES, key);
        logf_(n, TSYNC_LOG_INFO, "node for %s: site %s, key %s%s%s", db_path, site, key,
              n->endpoint[0] ? ", listening on " : "", n->endpoint);
        schema_tick(n); /* differences already known are said once, at start */
        n->last_ae_mono = mono_ms();
        /* The first scheduled backup a minute after start, then every backup_every_ms. */
        n->next_backup_mono =
            n->last_ae_mono + (n->o.backup_every_ms < 60000 ? n->o.backup_every_ms : 60000);
        status_publish(n);
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
    if (n->nq) {
        uint64_t now = mono_ms();
        if (!n->merge_retry_mono || now >= n->merge_retry_mono) return 0;
        int r = (int)(n->merge_retry_mono - now);
        if (t < 0 || r < t) t = r;
    }
    if (n->forward_due) {
        uint64_t now = mono_ms();
        int f = now >= n->forward_due ? 0 : (int)(n->forward_due - now);
        if (t < 0 || f < t) t = f;
    }
    return t >= 0 && t < n->o.tick_ms ? t : n->o.tick_ms;
}

int tsync_node_dispatch(tsync_node *n)
{
    return step(n, 0);
}

int tsync_node_run(tsync_node *n, volatile int *stop)
{
    int rc = 0;
    while (!atomic_load(&n->stop) && !(stop && *stop)) {
        int t = tsync_node_timeout_ms(n);
        if ((rc = step(n, t))) break;
    }
    /* Say goodbye so peers mark us offline at once rather than after heartbeats. */
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified) {
            tsync__msg m = {.type = TSYNC__WIRE_ERROR};
            m.error.code = TSYNC__WIRE_ERR_SHUTDOWN;
            m.error.text = "node stopping";
            m.error.len = strlen(m.error.text);
            send_msg(n, n->peers[i], &m);
        }
    size_t nb = 0;
    if (n->s && tsync_store_seal(n->s, &nb) == 0) n->local_batches += nb;
    backup_finish(n);
    if (n->status_path) remove(n->status_path);
    logf_(n, rc ? TSYNC_LOG_ERROR : TSYNC_LOG_INFO, "node stopped%s", rc ? " after an error" : "");
    return rc;
}

static void *thread_main(void *arg)
{
    tsync_node_run(arg, NULL);
    return NULL;
}

int tsync_node_start(tsync_node *n)
{
    if (n->thread_running) return TSYNC_EEXISTS;
    atomic_store(&n->stop, 0);
    if (pthread_create(&n->thread, NULL, thread_main, n) != 0) return TSYNC_ERROR;
    n->thread_running = 1;
    return 0;
}

void tsync_node_stop(tsync_node *n)
{
    if (!n) return;
    atomic_store(&n->stop, 1);
    if (n->thread_running && !pthread_equal(pthread_self(), n->thread)) {
        pthread_join(n->thread, NULL);
        n->thread_running = 0;
    }
}

int tsync_node_status_json(tsync_node *n, char **out)
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

void tsync_node_free(tsync_node *n)
{
    if (!n) return;
    tsync_node_stop(n);
    q_clear(n);
    free(n->q);
    for (size_t i = 0; i < n->npeers; i++) {
        if (n->peers[i]->used) peer_free(n->peers[i]);
        free(n->peers[i]);
    }
    free(n->peers);
    free(n->links);
    free(n->found);
    for (size_t i = 0; i < n->nstatics; i++) {
        free(n->statics[i].cands);
        free(n->statics[i].cand_keys);
    }
    free(n->statics);
    tsync__vv_free(&n->ours);
    tsync__disc_free(n->disc);
    tsync__tp_free(n->tp);
    tsync__sync_ckpt_stop(n->s, n->ckpt);
    tsync_store_free(n->s);
    free(n->status_json);
    free(n->status_path);
    free(n->backup_dir_copy);
    free(n->db_path);
    pthread_mutex_destroy(&n->status_mu);
    free(n);
}
