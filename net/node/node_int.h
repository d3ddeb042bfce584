/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/node_int.h — what the files of the sync node (include/tillsync/node.h) share: the
 * node's state, its sessions and the functions one file calls in another. Private to net/node/.
 *
 * The node is one object driven by one thread (its own, or the app's through
 * tsync_node_dispatch): nothing here takes a lock except the status and last-error records, which
 * other threads read. The files, by concept:
 *   node.c      the public API, the loop (step) and logging
 *   session.c   one session: HELLO and the certificate check, the messages, table definitions
 *   push.c      pushing batches under the window, anti-entropy, fork proofs
 *   snapshot.c  sending and taking a snapshot (a peer behind the pruned horizon)
 *   mergeq.c    the queue of received batches and its merge, one transaction per round
 *   peers.c     session entries, the network state rows (tsync_peer_state), refusals, static
 *               peers and mDNS discovery
 *   status.c    the status JSON and its file
 *   syncstate.c the one-word sync state (synced, syncing, offline, alone, attention)
 *   lock.c      one node per database (flock on "<db>.node.lock")
 *   duties.c    what runs on timers: seal, prune, trust, clock, liveness, backups, a full disk
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
#ifndef TSYNC_NET_NODE_INT_H
#define TSYNC_NET_NODE_INT_H

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/wire.h"
#include "codec/wire_ext.h"
#include "net/discovery.h"
#include "net/transport.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tillsync/node.h"
#include "tillsync/store.h"
#include "util/util.h"

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

#define LBL             (TSYNC__TP_ADDR_LEN + 96) /* a peer label in log lines */
#define MERGE_QUEUE_MAX (2u << 20) /* merge once this much is queued (bounds catch-up memory) */
#define REFUSALS_MAX    16
#define CLOCK_LOG_MS    60000 /* a wrong clock is logged this often while it lasts */
/* Why a static address without #KEY is not dialled (log and status). */
#define KEYLESS_WAIT                                                                               \
    "no #KEY given and this till knows no other till's certificate yet, so it has no key to "      \
    "expect there; give the address as tcp://HOST:PORT#KEY (KEY: that till's public key, 64 hex "  \
    "digits), or install that till's certificate in this database; it is dialled as soon as a "    \
    "certificate of another till is known"

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq;
    size_t bytes;
    uint64_t sent_mono; /* pieces are kept in send order */
} inflight;

/* A snapshot being sent (out: an export worker makes the chunks, net/node/snapshot.c) or
 * received (in: chunks queued as they arrive, merged one per round). */
typedef struct {
    int active;
    uint8_t id[TSYNC__SITE_BYTES];
    size_t n, bytes; /* chunks sent / received, and their bytes */
    tsync__vv vv;
    crypto_generichash_state h;
    /* out */
    struct snapjob *job; /* the export worker */
    int begun, acks;     /* BEGIN sent; acknowledgements heard (the receiver paces us) */
    int unpaced;         /* none heard in time: sent as the transport allows (logged once) */
    uint64_t begin_mono, acked;
    /* in */
    uint32_t window; /* the sender paces by our acknowledgements (SNAPSHOT_BEGIN field 2) */
    struct snapq {
        uint8_t *p;
        size_t len;
    } * q;
    size_t qhead, qn, qcap, qbytes;
    struct tsync__snap_in *imp;
    int end;           /* SNAPSHOT_END came and matched */
    size_t acked_sent; /* merged chunks we told the sender of, + 1 (0: none told yet) */
    uint64_t last_log_mono;
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
    /* What it said it understands (FEATURES, codec/wire_ext.h); until it said, or until
     * push_wait_mono, nothing is pushed, so that a new peer gets even the first window compact. */
    uint64_t features;
    int features_known;
    uint64_t push_wait_mono;
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
    uint8_t out_done_id[TSYNC__SITE_BYTES]; /* our last finished transfer: late acks for it */
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
    /* The sync state (syncstate.c): the lag each way when last looked at, and since when it has
     * not shrunk (a peer whose lag stays that long is a stuck sync). */
    uint64_t lag_last, lag_mono;
    int stuck_said; /* logged as stuck (once, until its lag shrinks) */
    /* Forwarding (push.c, tsync__node_forward_merged): whether it lacked what we merged when we
     * merged it (judged when the forward delay ends), how many forwards in a row it still lacked
     * after the delay (it gets them only through us: forwarded at once from RELAY_AT_ONCE on),
     * and since when it is forwarded at once (0: delayed). */
    int fwd_pending;
    unsigned relay_need;
    uint64_t relay_mono;
    int relay_said;      /* "forwarding at once" logged (once per switch, not every probe) */
    int relay_elsewhere; /* an ACK showed batches we never sent it: never at once (session) */
    /* ACKs that acknowledged nothing in flight since the last that did: the first's and the
     * last's time (0: none). A peer that sends such ACKs is responsive yet lacks what we sent (it
     * was lost or is held); one that sends none is busy (a long merge), not lacking. */
    uint64_t idle_first, idle_last;
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
    tsync__crun_dec *crun; /* CBATCHES: holds the rebuilt bodies m.batches points to */
    uint8_t *blob;         /* CBATCHES: its compact run, decompressed (the store may keep it) */
    size_t blob_len;
} qmsg;

struct tsync_node {
    tsync_store *s;
    uint8_t schema_digest[TSYNC__HASH_BYTES]; /* of our table definitions, last we told peers */
    int schema_known;
    tsync__tp *tp;
    tsync__ckpt *ckpt;
    tsync_node_options o;
    char *db_path;
    char *key_path; /* NULL: "<db_path>.key" */
    char *status_path;
    char endpoint[TSYNC__TP_ADDR_LEN];
    int enrolled;
    uint8_t shop[TSYNC__SHOP_ID_BYTES];

    npeer **peers;
    size_t npeers;
    nlink *links;
    size_t nlinks;
    speer *statics;
    size_t nstatics;

    /* Received BATCHES waiting for this round's merge (mergeq.c). */
    struct {
        qmsg *q;
        size_t n, cap, bytes;
        uint64_t retry_mono; /* the database was busy: merge again at this time */
    } mq;

    /* mDNS (peers.c): the discovery backend and the tills of our shop it advertises. */
    struct {
        tsync__disc *disc; /* avahi; NULL with no_mdns */
        int down_logged;
        int daemon;    /* 0 not known yet, 1 reachable, -1 not reachable */
        uint16_t port; /* the port we publish (0: browse only) */
        nfound *found;
        size_t nfound, capfound;
    } mdns;

    tsync__vv ours;
    int ours_valid;

    uint64_t started_ms, last_ae_mono, last_status_mono, last_seal_mono, last_prune_mono;
    uint64_t last_peers_mono; /* peer rows rebuilt (links_update) */
    uint64_t pruned, snaps_sent, snaps_received;
    uint64_t forward_due; /* monotonic ms when merged batches are forwarded; 0: none */
    uint64_t own_seq0;    /* our own head when the node started */
    int seal_retry;       /* the last seal found the database busy */
    uint8_t trust_digest[TSYNC__HASH_BYTES];
    int trust_digest_valid;
    uint64_t trust_gen; /* +1 whenever trust_digest changes (the relay re-reads its grant then) */

    nrefusal refusals[REFUSALS_MAX];
    size_t nrefusals;
    /* The shop's clock: the median of the connected peers' clocks (docs/DATA_MODEL.md) */
    struct {
        int known, recorded;
        size_t peers;
        int64_t off_ms, rec_off_ms, resets_seen;
        uint64_t check_mono, rec_mono, warned_mono, diff_logged_mono;
        uint64_t hlc_warned_mono; /* the hybrid clock ahead: logged this often (its own timer) */
    } clock;

    uint64_t refused[R_COUNT];
    uint64_t hs_incomplete; /* inbound handshakes that timed out or were hung up on */
    uint64_t merged, conflicts, held_reported, local_batches, merges;
    int failed; /* the database failed: the node stops */
    /* The disk is full (TSYNC_EFULL): sessions go on, sealing and merging wait and are retried
     * with a backoff (retry_mono), and status says so. */
    struct {
        int on;
        uint64_t since_ms, retry_mono, backoff_ms, logged_mono;
    } full;
    unsigned renewals_seen; /* incarnations the store took that the log has reported */
    int identity_checked;   /* the first check (at start) was done */

    /* Scheduled backups run on a worker thread with its own connection, so sync goes on. */
    struct {
        pthread_t thread;
        atomic_int state; /* 0 idle, 1 running, 2 finished (result in rc) */
        int rc;
        char err[512], path[1024];
        uint64_t next_mono;
        uint64_t done, failed, last_ms;
        char *dir; /* the node's copy of o.backup_dir */
    } backup;

    /* Scheduled cloud backups (net/node/cloud.c): a worker thread uploads to the relay's vault. */
    struct {
        pthread_t thread;
        atomic_int state;           /* 0 idle, 1 running, 2 finished (result in rc) */
        volatile sig_atomic_t stop; /* set at stop: the upload ends between chunks, pending */
        /* The worker's result (its own until state 2), then copied below by the loop. */
        struct {
            int rc, complete;
            uint32_t deleted;
            char err[512], id[33], relay[128];
        } w;
        int rc, complete; /* the last attempt's, shown in the status */
        char err[512], id[33], relay[128];
        uint64_t next_mono;
        uint64_t done, failed, last_ms, last_ok_ms, deleted;
    } cloud;

    pthread_t thread;
    int thread_running;
    pthread_mutex_t join_mu; /* thread and thread_running: a stop from any thread joins once */
    atomic_int stop;
    /* The last error on the node's thread, for tsync_node_last_error (any thread). */
    pthread_mutex_t err_mu;
    tsync_node_error err;
    pthread_mutex_t status_mu;
    char *status_json;
    int status_dirty;
    /* The relay client (relay.c): the session with a relay of the shop's grant. */
    struct tsync__nrelay *relay;
    /* The shop console (net/console/, o.console); NULL when off. */
    struct tsync__console *console;

    int lock_fd; /* "<db>.node.lock", held while the node lives (lock.c); -1: none */

    /* The sync state (syncstate.c), evaluated on the node's thread; cur is read by any thread. */
    struct {
        pthread_mutex_t mu; /* cur, fn, ctx */
        tsync_sync_state cur;
        tsync_sync_state_fn fn;
        void *ctx;
        uint64_t busy_mono; /* since when something has been in flight; 0: nothing now */
        int ever_connected;
        /* From the last status build (counting runs SQL: not on every evaluation). */
        int counts_known;
        int64_t held, parked, forks;
        char held_why[160];
        /* When each refusal counter last grew (monotonic ms; 0: not since start). */
        uint64_t refused_seen[R_COUNT], refused_mono[R_COUNT];
    } sync;
};

/* ---------------------------------------------------------------- across the files
 * Each function is described at its definition; by file: */

/* node.c */
/* Opens the node's database with its key file (o.key_path), for a worker's own connection. */
int tsync__node_store_open(tsync_node *n, tsync_store **out);

/* Scheduled cloud backups (net/node/cloud.c): start one when due, take a finished one's result;
 * finish: stop an upload in progress (it stays pending) and wait for its thread; status: the
 * "cloud_backup" object of the status when a schedule is set. */
void tsync__node_cloud_tick(tsync_node *n, uint64_t now);
void tsync__node_cloud_finish(tsync_node *n);
struct json_t;
void tsync__node_cloud_status(tsync_node *n, struct json_t *o);
/* A log line at level (tsync_node_options.log, or stderr). */
void tsync__node_log(tsync_node *n, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A failure on the node's thread: logged at TSYNC_LOG_ERROR like tsync__node_log, and kept as the
 * node's last error with code (tsync_node_last_error). */
void tsync__node_error(tsync_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A peer's name for log lines, written into buf. */
const char *tsync__node_peer_label(const npeer *p, char buf[LBL]);
/* The message of this thread's last error (tsync_error_last), never NULL. */
const char *tsync__node_errtext(void);

/* session.c */
int tsync__node_send_msg(tsync_node *n, npeer *p, const tsync__msg *m);
void tsync__node_send_note(tsync_node *n, npeer *p, uint32_t code, const char *text);
int tsync__node_refresh_ours(tsync_node *n);
int tsync__node_send_vector(tsync_node *n, npeer *p, int hello);
int tsync__node_send_certs(tsync_node *n, npeer *p);
void tsync__node_bad_message(tsync_node *n, npeer *p, int reason, const char *what);
void tsync__node_apply_revocations(tsync_node *n);
void tsync__node_schema_tick(tsync_node *n);
int tsync__node_admit(void *ctx, const uint8_t curve_pk[TSYNC__TP_KEY_BYTES], const uint8_t *ed_pk,
                      const char *address);
void tsync__node_on_event(tsync_node *n, const tsync__tp_event *ev);

/* push.c */
int tsync__node_push(tsync_node *n, npeer *p);
/* Pushes to the peers whose wait for FEATURES (session.c) ended without one. */
void tsync__node_push_waiting(tsync_node *n, uint64_t now);
void tsync__node_push_all(tsync_node *n);
/* After a merge: forwards what we merged to the peers that lack it, at once to a peer that gets
 * such batches only through us, FORWARD_DELAY_MS later to the others (their ACKs, arriving
 * meanwhile, say they got them from the origin too). tsync__node_forward_due runs the delayed
 * forwards; tsync__node_relay_elsewhere: p's ACK showed batches we never sent it. */
void tsync__node_forward_merged(tsync_node *n);
void tsync__node_forward_due(tsync_node *n);
void tsync__node_relay_elsewhere(tsync_node *n, npeer *p);
void tsync__node_anti_entropy(tsync_node *n, uint64_t now);

/* snapshot.c */
void tsync__node_snap_clear(snap *z);
void tsync__node_snap_pump(tsync_node *n, npeer *p);
void tsync__node_snap_start(tsync_node *n, npeer *p);
void tsync__node_on_snapshot(tsync_node *n, npeer *p, const tsync__msg *m);
void tsync__node_snap_tick(tsync_node *n);
int tsync__node_snap_busy(const tsync_node *n);

/* mergeq.c */
int tsync__node_queue_batches(tsync_node *n, npeer *p, const void *data, size_t len);
/* Queues a BATCHES or CBATCHES frame under the queue id peer (from: who sent it, for the log);
 * *out (may be NULL) receives the decoded batches, valid until the merge, or NULL when the queue
 * is full and nothing was taken (the sender offers them again). 0, TSYNC_ECORRUPT, TSYNC_ENOMEM.
 * tsync__node_queue_drop_last takes the last queued message out again. */
int tsync__node_queue_frame(tsync_node *n, uint32_t peer, const char *from, const void *data,
                            size_t len, const tsync__wire_batches **out);
void tsync__node_queue_drop_last(tsync_node *n);
void tsync__node_q_clear(tsync_node *n);
int tsync__node_refusal_reason(int rc);
void tsync__node_flush_merges(tsync_node *n);

/* peers.c */
npeer *tsync__node_peer_find(tsync_node *n, uint32_t id);
npeer *tsync__node_peer_get(tsync_node *n, uint32_t id);
void tsync__node_session_reset(npeer *p);
void tsync__node_peer_free(npeer *p);
int tsync__node_online(tsync_node *n);
void tsync__node_notify_peer(tsync_node *n, npeer *p, int up);
nrefusal *tsync__node_refusal_find(tsync_node *n, const uint8_t pk[TSYNC__PK_BYTES], uint64_t now);
int tsync__node_refusal_note(tsync_node *n, const npeer *p, const uint8_t pk[TSYNC__PK_BYTES],
                             int by_peer, const char *why);
int tsync__node_advertised(const tsync_node *n, const uint8_t key[TSYNC__PK_BYTES]);
void tsync__node_links_update(tsync_node *n);
int tsync__node_parse_peer(const char *spec, speer *sp, char *err, size_t errlen);
int tsync__node_dial(tsync_node *n, size_t si, const uint8_t key[TSYNC__PK_BYTES], uint32_t *id);
void tsync__node_dial_candidates(tsync_node *n);
void tsync__node_candidate_up(tsync_node *n, npeer *p);
void tsync__node_mdns_fallback(tsync_node *n, uint64_t now);
void tsync__node_discovery(tsync_node *n);

/* status.c */
void tsync__node_status_publish(tsync_node *n);
/* The names of the refusal reasons, as status shows them. */
extern const char *const tsync__node_refused_name[R_COUNT];
/* What n lacks of p and p of n, in batches (from p's acknowledged vector). */
void tsync__node_lags(tsync_node *n, const npeer *p, uint64_t *out, uint64_t *in);

/* relay.c: the relay client (docs/RELAY.md, "The till's side"). Batches from the relay are
 * queued for merge under this id, which no transport peer has. */
#define TSYNC__NODE_RELAY_QID 0xFFFFFFFFu
int tsync__node_relay_new(tsync_node *n);
void tsync__node_relay_free(tsync_node *n);
/* Looks at the grant and keys, dials, and handles what the relay sent (never waits). */
void tsync__node_relay_tick(tsync_node *n);
/* Puts what the relay lacks (after a seal, an acknowledgement, a merge). */
void tsync__node_relay_push(tsync_node *n);
/* A merge refused batches the relay served (rc: the merge's code). */
void tsync__node_relay_refused(tsync_node *n, int rc);
/* The "relay" object of the node status (a new reference). */
struct json_t *tsync__node_relay_json(tsync_node *n);

/* lock.c */
/* Takes the database's node lock (n->db_path): 0, or TSYNC_EBUSY naming the node that holds it,
 * or TSYNC_EIO. */
int tsync__node_lock(tsync_node *n);
/* Writes the address the node listens on into the lock file, for a refusal to name it. */
void tsync__node_lock_listening(tsync_node *n);
void tsync__node_unlock(tsync_node *n);

/* syncstate.c */
/* Refused input counts for the sync state this long; a peer whose lag has not shrunk this long
 * is a stuck sync (docs/NODE.md, "Sync state"). Tests lower them before starting nodes. */
extern uint64_t tsync__node_refused_window_ms, tsync__node_stuck_ms;
void tsync__node_sync_init(tsync_node *n);
void tsync__node_sync_free(tsync_node *n);
/* Re-evaluates the sync state (the node's thread); calls the callback when it changed. */
void tsync__node_sync_eval(tsync_node *n);

/* duties.c */
void tsync__node_disk_full_hit(tsync_node *n, const char *what);
void tsync__node_disk_full_clear(tsync_node *n);
int tsync__node_disk_full_waiting(const tsync_node *n);
void tsync__node_backup_tick(tsync_node *n, uint64_t now);
void tsync__node_backup_finish(tsync_node *n);
void tsync__node_clock_tick(tsync_node *n, uint64_t now);
void tsync__node_liveness(tsync_node *n, uint64_t now);
void tsync__node_trust_check(tsync_node *n);
void tsync__node_prune(tsync_node *n, uint64_t now);
int tsync__node_local_changes(tsync_node *n, uint64_t now);
void tsync__node_close_due(tsync_node *n, uint64_t now);
void tsync__node_identity_check(tsync_node *n);

#endif
