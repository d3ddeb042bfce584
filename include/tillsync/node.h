/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/node.h — the sync node: keeps one database in sync with the other tills of the shop
 * over ZeroMQ (CURVE), live. It seals and pushes what the POS app commits (from any process)
 * within milliseconds, merges what peers send, forwards it to peers that lack it, and repairs
 * anything missed by periodic anti-entropy. docs/NODE.md explains the design.
 *
 * Two ways to run it:
 *   - on its own thread: tsync_node_start() ... tsync_node_stop();
 *   - from the host's event loop: wait until tsync_node_fd() is readable or tsync_node_timeout_ms()
 *     passed, then call tsync_node_dispatch(); repeat.
 *
 * THREAD SAFETY: a node is driven by one thread at a time, "the node's thread": its own (after
 * tsync_node_start), or the app's thread while it is inside tsync_node_run or
 * tsync_node_dispatch. Every callback (log, on_change, on_peer, on_peer_state) runs on the node's
 * thread, inside its loop, and should return quickly (peers wait meanwhile).
 *   - Any thread, inside callbacks too: tsync_node_stop, tsync_node_status_json,
 *     tsync_node_last_error, tsync_node_endpoint, tsync_peer_state_name. tsync_node_stop inside
 *     a callback only asks: the loop ends after the current round (it cannot wait for itself).
 *   - The app's thread that owns the node, never inside one of the node's callbacks:
 *     tsync_node_start, tsync_node_run, tsync_node_dispatch, tsync_node_free. Inside a callback
 *     they are refused with TSYNC_EINVAL (tsync_node_free, which returns nothing, leaves the node
 *     as it is and says so in tsync_error_last() and the node's last error): they would re-enter
 *     or free the loop that is running. tsync_node_fd and tsync_node_timeout_ms: the thread that
 *     drives the node with tsync_node_dispatch.
 *   - Nothing here is async-signal-safe: a signal handler only sets a `volatile sig_atomic_t`
 *     flag, which tsync_node_run watches (its stop argument), or which a normal thread sees and
 *     then calls tsync_node_stop.
 * A failure on the node's thread (the database, the disk, a backup, the transport) is logged at
 * TSYNC_LOG_ERROR and kept for tsync_node_last_error, which any thread may call.
 *
 * The POS app writes to the database through its own connection (plain SQLite or a tsync_store);
 * the node opens its own.
 */
#ifndef TILLSYNC_NODE_H
#define TILLSYNC_NODE_H

#include <signal.h>
#include <stddef.h>

#include "tillsync/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsync_node tsync_node;

/* The longest message of a tsync_node_error, NUL included. */
#define TSYNC_NODE_ERROR_LEN 1024

typedef enum {
    TSYNC_LOG_ERROR = 1,
    TSYNC_LOG_WARN = 2,
    TSYNC_LOG_INFO = 3,
    TSYNC_LOG_DEBUG = 4,
} tsync_log_level;

/* One log line (no newline). Runs on the node's thread. */
typedef void (*tsync_log_fn)(void *ctx, int level, const char *line);

/* After batches from peers were merged: the app may refresh what it shows. The callback only
 * ever receives it by pointer, so it has no version: fields are appended at the end. */
typedef struct {
    size_t batches;   /* batches applied */
    size_t conflicts; /* concurrent field writes LWW resolved */
    /* The replicated tables whose rows these batches changed, ntables names as this database
     * spells them (each once, in no set order; a row change that lost to a newer value counts;
     * a parked one does not). After a snapshot was taken (batches 0): every replicated table.
     * Borrowed for the call. ntables may be 0 (only parked changes). */
    const char *const *tables;
    size_t ntables;
} tsync_node_change;
typedef void (*tsync_change_fn)(void *ctx, const tsync_node_change *c);

/* A peer's session began (up = 1) or ended (up = 0). key_hex: its public key (64 hex digits, or
 * "" when not known), address: its endpoint or IP. online: at least one peer is connected now. */
typedef void (*tsync_peer_fn)(void *ctx, const char *key_hex, const char *address, int up,
                              int online);

/* What the node knows of another till, for a UI's network view (`tillsync status` shows it). */
typedef enum {
    TSYNC_PEER_GONE = 0,        /* no longer listed: its advertisement was withdrawn, or a dial was
                                   given up (it refused us, or another key answered there) */
    TSYNC_PEER_DISCOVERED = 1,  /* advertised on the LAN over mDNS, no session yet (of each pair,
                                   the till with the smaller key dials) */
    TSYNC_PEER_CONNECTING = 2,  /* first dial or handshake under way (a till new to the list
                                   is always reported connecting before connected) */
    TSYNC_PEER_CONNECTED = 3,   /* session verified: syncing */
    TSYNC_PEER_UNREACHABLE = 4, /* was connected and is not now, or did not answer a first dial
                                   within liveness_ms; dialled again in the background */
    TSYNC_PEER_WAITING = 5,     /* a static peer not dialled yet, for a reason the status names
                                   (an address without #KEY while this till knows no other till's
                                   certificate: dialled as soon as one is known) */
    TSYNC_PEER_REFUSED = 6,     /* its certificate was refused here, or it refused ours (expired,
                                   not yet valid: often a wrong clock); the reason is in the event
                                   and the status; dialled again in the background */
} tsync_peer_state;

/* "discovered", "connecting", "connected", "unreachable", "waiting", "refused" or "gone". */
TSYNC_API const char *tsync_peer_state_name(int state);

/* A till's network state changed. Strings are borrowed for the call. */
typedef struct {
    const char *key_hex; /* its public key (64 hex digits), or "" while not known */
    const char *address; /* tcp://ADDR:PORT it is dialled at or advertised on, or its IP */
    const char *name;    /* its device name from its certificate, else its mDNS name, or "" */
    int32_t state;       /* a tsync_peer_state */
    int32_t previous;    /* the state before (TSYNC_PEER_GONE for a new till) */
    uint64_t since_ms;   /* when it entered state: ms since 1970 (UTC) */
    int32_t online;      /* at least one peer is connected now */
    const char *reason;  /* TSYNC_PEER_REFUSED: why, one line ("" otherwise) */
} tsync_peer_event;
typedef void (*tsync_peer_state_fn)(void *ctx, const tsync_peer_event *e);

typedef struct {
    /* TSYNC_NODE_OPTIONS_VERSION (1: without on_peer_state; 2: without key_path; 3: without
     * console; 4: without no_relay) */
    uint32_t version;
    /* Where to accept peers: "tcp://ADDR:PORT" (port "*": any free one). NULL:
     * "tcp://0.0.0.0:7400". "": do not listen (dial only). */
    const char *listen;
    /* Static peers: "tcp://ADDR:PORT" or "tcp://ADDR:PORT#KEY" (KEY: the peer's public key, 64
     * hex digits). Without KEY, an enrolled database tries the keys of the shop's certified
     * devices it knows. */
    const char *const *peers;
    size_t npeers;
    int32_t log_level; /* a tsync_log_level; 0: INFO */
    tsync_log_fn log;  /* NULL: lines on stderr */
    void *log_ctx;
    tsync_change_fn on_change;
    tsync_peer_fn on_peer;
    void *cb_ctx;
    /* The node writes its status here about once a second, for `tillsync status`. NULL:
     * "<database>.node"; "": not written. */
    const char *status_path;
    int32_t tick_ms;         /* how often to look for commits of other connections; 0: 2 */
    int32_t anti_entropy_ms; /* vector exchange and repair period; 0: 2000 */
    size_t window_bytes; /* batch bytes in flight per peer before waiting for its ACK; 0: 8 MiB */
    uint32_t seal_ms;    /* also seal at least this often; 0: only on commits */
    /* A connected peer silent this long is taken as gone (a cut link) and dialled again; the node
     * pings idle peers every second. 0: 3500. */
    int32_t liveness_ms;
    /* Zero-configuration discovery: an enrolled node publishes _tillsync._tcp over mDNS (avahi)
     * and dials the tills of its shop it finds (their certificate decides). Without an avahi
     * daemon it says so once and keeps working on static peers. 1: off. */
    int32_t no_mdns;
    /* Log pruning (enrolled databases only): batches every member of the shop acknowledged are
     * deleted, except the newest prune_keep of each origin; a till behind gets a snapshot.
     * 0: 10000; negative: never prune. prune_ms: how often; 0: 10000. */
    int64_t prune_keep;
    int32_t prune_ms;
    /* Scheduled backups (tillsync/backup.h) into backup_dir, named DB-<UTC time>.tsbak, written
     * on a worker thread with its own connection while the node syncs; the newest backup_keep are
     * kept. backup_every_ms 0: none. The first comes a minute after start (or sooner when the
     * period is shorter). backup_keep 0: 10. */
    uint64_t backup_every_ms;
    const char *backup_dir;
    int32_t backup_keep;
    /* Every change of a peer's network state (tsync_peer_state), on the node's thread; cb_ctx. */
    tsync_peer_state_fn on_peer_state;
    /* The device key file (version 3). NULL: "<database>.key", as tsync_store_open. */
    const char *key_path;
    /* The shop console (version 4; docs/CONSOLE.md): its web page and REST API served on
     * "ADDR:PORT" (IPv4; port 0: a free one), on a thread of its own. NULL or "": off. Every
     * request needs the token the node keeps in "<database>.console-token" (made at first start,
     * 0600). An address beyond loopback also needs console_password_file: a file whose first line
     * is a password the console asks for (HTTP Basic) besides the token. */
    const char *console;
    const char *console_password_file;
    /* The off-site relay (version 5; docs/RELAY.md, "The till's side"): an enrolled node whose
     * shop has a RELAY GRANT and whose till holds a data key keeps a session with a relay of the
     * grant. 1: never. */
    int32_t no_relay;
    /* Cloud backups (version 5; tillsync/vault.h, docs/BACKUP.md "Cloud backup"): every
     * cloud_backup_every_ms a backup is made, encrypted under the shop's data key and uploaded to
     * the shop's relay vault on a worker thread with its own connection, while the node syncs;
     * then the newest cloud_keep backups this till made stay there and its older ones are deleted
     * (0: all stay). The first comes a minute after start, or sooner when the period is shorter.
     * The last result shows in the status ("cloud_backup"). 0: none. */
    uint64_t cloud_backup_every_ms;
    int32_t cloud_keep;
} tsync_node_options;

#define TSYNC_NODE_OPTIONS_VERSION 5
/* Positional, in field order, so that it is valid C and C++11 alike. */
#define TSYNC_NODE_OPTIONS_INIT                                                                    \
    {                                                                                              \
        TSYNC_NODE_OPTIONS_VERSION, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, \
            0, 0, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL, NULL, 0, 0, 0                             \
    }

/* Sets *out to TSYNC_NODE_OPTIONS_INIT as of version (the caller's TSYNC_NODE_OPTIONS_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_node_options_init(tsync_node_options *out, uint32_t version);

/* Opens the database (which must exist: tsync_store_open makes one) with its own connection, starts
 * listening and dialling. opts: NULL for defaults. Nothing runs until tsync_node_start or
 * tsync_node_dispatch. One node per database: first it takes flock(2) on "<db_path>.node.lock"
 * (0600), held until tsync_node_free, and writes its pid and address there. Errors:
 * TSYNC_ENOTFOUND (no database), TSYNC_EINVAL (bad option: the message names it), TSYNC_EIO (the
 * listen address is in use, or the lock file cannot be made), TSYNC_EBUSY (another node, in this
 * process or another, runs on the database: "a node already runs on DB (pid N, listening on
 * ADDR): ..."; nothing was written). */
TSYNC_API int tsync_node_new(tsync_node **out, const char *db_path, const tsync_node_options *opts);

/* Runs the node on a new thread until tsync_node_stop. Errors: TSYNC_EEXISTS (already running),
 * TSYNC_EINVAL (called inside one of the node's callbacks), TSYNC_ERROR (no thread). */
TSYNC_API int tsync_node_start(tsync_node *n);

/* Asks the node to stop and, when it runs on its own thread, waits for that thread to end
 * (within ~10 ms). Idempotent; any thread (two at once both wait). Inside one of the node's
 * callbacks it only asks: the loop ends after the current round. Not from a signal handler (it
 * may join a thread): let the handler set a `volatile sig_atomic_t` flag, and call this from a
 * normal thread that sees the flag (or give the flag to tsync_node_run). */
TSYNC_API void tsync_node_stop(tsync_node *n);

/* Runs the node on the calling thread until tsync_node_stop, or until *stop becomes non-zero
 * (a flag a SIGINT handler sets; stop may be NULL). Returns 0 after a clean stop, or the error
 * that stopped it (tsync_node_last_error says more). TSYNC_EINVAL inside one of the node's
 * callbacks. */
TSYNC_API int tsync_node_run(tsync_node *n, volatile sig_atomic_t *stop);

/* Host event loop: a descriptor that becomes readable when the node has network work, and the
 * longest to wait (ms) before calling tsync_node_dispatch anyway. */
TSYNC_API int tsync_node_fd(tsync_node *n);
TSYNC_API int tsync_node_timeout_ms(tsync_node *n);
/* Does all the work that is due without blocking. 0, or a negative error when the node cannot go
 * on (the database failed); callbacks run inside. TSYNC_EINVAL inside one of its callbacks. */
TSYNC_API int tsync_node_dispatch(tsync_node *n);

/* The node's status as JSON (docs/NODE.md lists the fields): online, each peer with address,
 * key, state, last seen and lag each way, pending outgoing batches, held and parked items,
 * refused inputs by reason, conflicts. *out is the caller's (tsync_free()). Any thread. */
TSYNC_API int tsync_node_status_json(char **out, tsync_node *n);

/* The endpoint really bound ("" when not listening). Borrowed for the node's lifetime. */
TSYNC_API const char *tsync_node_endpoint(tsync_node *n);

/* The address the console really listens on ("127.0.0.1:7480"; "" when it is off), for
 * "http://ADDRESS/?token=TOKEN" (the token: the first line of "<database>.console-token").
 * Borrowed for the node's lifetime. Any thread. */
TSYNC_API const char *tsync_node_console_address(tsync_node *n);

/* The last failure on the node's thread, as tsync_node_last_error copies it. A node keeps one:
 * each failure replaces the one before and counts. */
typedef struct {
    uint32_t version; /* TSYNC_NODE_ERROR_VERSION: set it before the call */
    int32_t code;     /* a tsync_error_code; 0 while nothing failed */
    int32_t stopped;  /* the node stopped on it (the database failed): free the node */
    uint64_t count;   /* failures since tsync_node_new; a failure that repeats is counted as
                         often as it is logged (at most about once a minute) */
    uint64_t at_ms;   /* when the last one happened: ms since 1970 (UTC); 0: none */
    char message[TSYNC_NODE_ERROR_LEN]; /* it in one line, as logged; "" while none */
} tsync_node_error;

#define TSYNC_NODE_ERROR_VERSION 1
/* clang-format off */
#define TSYNC_NODE_ERROR_INIT {TSYNC_NODE_ERROR_VERSION, 0, 0, 0, 0, {0}}

/* Sets *out to TSYNC_NODE_ERROR_INIT as of version (the caller's TSYNC_NODE_ERROR_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_node_error_init(tsync_node_error *out, uint32_t version);
/* clang-format on */

/* Copies the last failure on the node's thread into *out (out->version set first), with how many
 * there were: the failures the log shows at TSYNC_LOG_ERROR (a merge, seal or snapshot that
 * failed, batches that cannot be sent, a full disk, a scheduled backup, the transport, a call
 * refused inside a callback), and the one that stopped the node. Any thread, callbacks included.
 * Poll it (count grows) or call it when tsync_node_run returned an error. Errors: TSYNC_EINVAL
 * (NULL, or out->version not TSYNC_NODE_ERROR_VERSION). */
TSYNC_API int tsync_node_last_error(tsync_node_error *out, tsync_node *n);

/* Stops the node (tsync_node_stop) and frees it. Accepts NULL. Never inside one of the node's
 * callbacks: there it does nothing but record TSYNC_EINVAL (tsync_error_last() and the node's
 * last error). */
TSYNC_API void tsync_node_free(tsync_node *n);

/* ---------------------------------------------------------------- the sync state
 * One word for a till's sync indicator (docs/NODE.md, "Sync state"), with since when, the last
 * moment every connected till was current, and in words why. The node re-evaluates it on its
 * thread at least every 100 ms. */
typedef enum {
    TSYNC_SYNC_ALONE = 0,     /* no other till known yet (none configured, found or heard of) */
    TSYNC_SYNC_OFFLINE = 1,   /* other tills are known, none is connected */
    TSYNC_SYNC_SYNCING = 2,   /* something is in flight (shown only once it lasted 500 ms while
                                 synced: a sale that reaches every till at once is no flicker) */
    TSYNC_SYNC_SYNCED = 3,    /* every connected till holds what this one holds, and vice versa */
    TSYNC_SYNC_ATTENTION = 4, /* a person should look: held or parked changes, a fork, input
                                 refused in the last 10 minutes, a till that refused us, a sync
                                 stuck for 60 s, a full disk; reason says which */
} tsync_sync_state_kind;

/* "alone", "offline", "syncing", "synced" or "attention" ("unknown" for another value). Any
 * thread. */
TSYNC_API const char *tsync_sync_state_name(int state);

#define TSYNC_SYNC_REASON_LEN 512

typedef struct {
    uint32_t version;           /* TSYNC_SYNC_STATE_VERSION: set it before the call */
    int32_t state;              /* a tsync_sync_state_kind */
    uint64_t since_ms;          /* when it entered state: ms since 1970 (UTC) */
    uint64_t last_synced_at_ms; /* the last moment every connected till was current; 0: never
                                   since the node started */
    char reason[TSYNC_SYNC_REASON_LEN]; /* one line in words, UTF-8: for attention what to look
                                           at; for the other states what they mean now */
} tsync_sync_state;

#define TSYNC_SYNC_STATE_VERSION 1
/* clang-format off */
#define TSYNC_SYNC_STATE_INIT {TSYNC_SYNC_STATE_VERSION, 0, 0, 0, {0}}
/* clang-format on */

/* Sets *out to TSYNC_SYNC_STATE_INIT as of version, for bindings without macros. Errors:
 * TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or newer than this library's). */
TSYNC_API int tsync_sync_state_init(tsync_sync_state *out, uint32_t version);

/* Copies the node's sync state into *out (out->version set first). Any thread, callbacks
 * included. Errors: TSYNC_EINVAL (NULL, or out->version not TSYNC_SYNC_STATE_VERSION). */
TSYNC_API int tsync_node_sync_state(tsync_sync_state *out, tsync_node *n);

/* Called on the node's thread each time the state or its reason changes (not when only
 * last_synced_at_ms moves). s is borrowed for the call. */
typedef void (*tsync_sync_state_fn)(void *ctx, const tsync_sync_state *s);

/* Sets (fn NULL: removes) the callback for sync state changes; best before tsync_node_start,
 * allowed from any thread (the next change calls the new one). Errors: TSYNC_EINVAL (n NULL). */
TSYNC_API int tsync_node_on_sync_state(tsync_node *n, tsync_sync_state_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
