/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/relay.h — a blind relay: stores and forwards the shops' encrypted envelopes for tills
 * that are never online together, without being able to read them. docs/RELAY.md explains what
 * it stores, the protocol, admission and quota, and what the relay operator can and cannot learn.
 *
 * A relay lives in a directory: relay.key (its long-term Ed25519 key; tills pin its public key)
 * and relay.db (SQLite, WAL: admitted shops, envelopes, the shops' revocations, counters).
 *   tsync_relay_init   makes the directory's key and store, gives the public key;
 *   tsync_relay_admit  lets the relay serve a shop (by the shop's admin public key), with a quota;
 *   tsync_relay_new / run / stop / free  serve tills over ZeroMQ CURVE;
 *   tsync_relay_status_json  what the relay holds and refused, from its directory (any process).
 *
 * THREAD SAFETY: a relay is driven by the thread inside tsync_relay_run; tsync_relay_stop may be
 * called from any thread (and its flag from a signal handler through the stop argument of run).
 * The log callback runs on the relay's thread.
 */
#ifndef TILLSYNC_RELAY_H
#define TILLSYNC_RELAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "tillsync/common.h"
#include "tillsync/node.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsync_relay tsync_relay;

/* Makes dir (when missing) with a new relay key and an empty store, and writes the relay's public
 * key as 64 hex digits and a NUL into pk_hex (may be NULL). Errors: TSYNC_EEXISTS (dir holds a
 * relay already), TSYNC_EIO. */
TSYNC_API int tsync_relay_init(const char *dir, char pk_hex[65]);

/* The relay's public key (64 hex digits and a NUL). Errors: TSYNC_ENOTFOUND (no relay in dir),
 * TSYNC_ECORRUPT (a damaged key file), TSYNC_EIO. */
TSYNC_API int tsync_relay_public_key(const char *dir, char pk_hex[65]);

/* Admits the shop whose admin public key is admin_pk (32 bytes) with a quota of quota_mb MiB
 * (>= 1) until expires_ms (Unix ms; 0: no expiry). Admitting it again replaces quota and expiry.
 * Works while the relay runs. Errors: TSYNC_EINVAL (not a valid key, quota 0),
 * TSYNC_ENOTFOUND (no relay in dir), TSYNC_EIO. */
TSYNC_API int tsync_relay_admit(const char *dir, const uint8_t admin_pk[32], uint64_t quota_mb,
                                uint64_t expires_ms);

/* The relay's state as JSON (*out is the caller's, tsync_free()): {"public_key", "shops":
 * [{"admin_key", "shop_id" (or null before the first till), "quota_bytes", "expires" (Unix ms,
 * 0: never), "bytes", "envelopes", "revocations"}], "sessions": total, "sessions_open",
 * "refused": {"<reason>": n, ...}}. Reads the store read-only, while the relay runs or not.
 * Errors: TSYNC_ENOTFOUND (no relay in dir), TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_relay_status_json(const char *dir, char **out);

typedef struct {
    uint32_t version;   /* TSYNC_RELAY_OPTIONS_VERSION */
    const char *listen; /* endpoint to bind: "tcp://127.0.0.1:7500" (port * picks one) */
    tsync_log_fn log;   /* one line per session event (NULL: none) */
    void *log_ctx;
    int32_t log_level;          /* most verbose level logged; 0: TSYNC_LOG_INFO */
    uint32_t refused_linger_ms; /* a refused session is cut this long after its RERR; 0: 2000 */
    uint64_t max_get_bytes;     /* envelope bytes in one RENV at most; 0: 8 MiB */
    /* version 2 */
    /* The store: NULL or "" for DIR/relay.db (SQLite); "nats://HOST:PORT[,HOST:PORT...]" for NATS
     * JetStream, shared by any number of relay processes (the directory then holds only the
     * key). */
    const char *store;
} tsync_relay_options;

#define TSYNC_RELAY_OPTIONS_VERSION 2
#define TSYNC_RELAY_OPTIONS_INIT                                                                   \
    {                                                                                              \
        TSYNC_RELAY_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0, 0, NULL                               \
    }

/* Sets *out to TSYNC_RELAY_OPTIONS_INIT as of version (the caller's TSYNC_RELAY_OPTIONS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_relay_options_init(tsync_relay_options *out, uint32_t version);

/* Opens the relay of dir and binds opts->listen. Errors: TSYNC_ENOTFOUND (no relay in dir),
 * TSYNC_EINVAL (no listen endpoint, a malformed one, a store URL that is not nats://),
 * TSYNC_EVERSION (opts->version unknown), TSYNC_EIO (address in use, the store, no NATS server
 * reachable), TSYNC_EUNSUPPORTED (libzmq without CURVE). */
TSYNC_API int tsync_relay_new(tsync_relay **out, const char *dir, const tsync_relay_options *opts);

/* The endpoint really bound (the port chosen for "*"), borrowed until tsync_relay_free. */
TSYNC_API const char *tsync_relay_endpoint(tsync_relay *r);

/* Serves tills until tsync_relay_stop or until *stop becomes non-zero (stop may be NULL).
 * Errors: TSYNC_ERROR (ZeroMQ failed), TSYNC_EIO (the store failed). */
TSYNC_API int tsync_relay_run(tsync_relay *r, volatile sig_atomic_t *stop);

/* Asks tsync_relay_run to return (any thread). Accepts NULL. */
TSYNC_API void tsync_relay_stop(tsync_relay *r);

/* Closes the sockets and the store. Accepts NULL. Not while tsync_relay_run runs. */
TSYNC_API void tsync_relay_free(tsync_relay *r);

/* ---- the store on NATS JetStream (docs/RELAY.md, "Storage on NATS JetStream") */

/* tsync_relay_admit and tsync_relay_status_json on the store at store_url ("nats://HOST:PORT[,
 * HOST:PORT...]"; NULL or "": dir's relay.db, as the calls above). dir must hold the relay's key.
 * Errors: those above, TSYNC_EINVAL (not a nats:// URL), TSYNC_ENOTFOUND (status: nothing
 * admitted in that store yet), TSYNC_EIO (no NATS server reachable, JetStream off). */
TSYNC_API int tsync_relay_admit_store(const char *dir, const char *store_url,
                                      const uint8_t admin_pk[32], uint64_t quota_mb,
                                      uint64_t expires_ms);
TSYNC_API int tsync_relay_status_json_store(const char *dir, const char *store_url, char **out);

#ifdef __cplusplus
}
#endif
#endif
