/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/console/console.h — the shop console the node serves (docs/CONSOLE.md): a REST API and an
 * embedded page over HTTP (libmicrohttpd, on threads of its own), guarded by a token, a session
 * cookie with a CSRF token, and a password beyond loopback. Private to net/: the node starts it
 * from tsync_node_new (tsync_node_options.console) and stops it in tsync_node_free.
 *
 * The console reaches the node only through calls any thread may make (tsync_node_status_json),
 * and the database through a tsync_store of its own, used by one request at a time.
 */
#ifndef TSYNC_NET_CONSOLE_H
#define TSYNC_NET_CONSOLE_H

#include "tillsync/node.h"

typedef struct tsync__console tsync__console;

typedef struct {
    tsync_node *node;
    const char *db_path;
    const char *key_path;      /* NULL: "<db_path>.key" */
    const char *listen;        /* "ADDR:PORT" */
    const char *password_file; /* NULL: none (loopback only) */
    const char *backup_dir;    /* NULL: the node keeps no backups */
} tsync__console_opts;

/* Writes "<db_path>.console-token" (0600) if it does not exist, and starts serving. Errors:
 * TSYNC_EINVAL (a bad address; beyond loopback without a password file; an empty password),
 * TSYNC_ENOTFOUND (no password file), TSYNC_EIO (the address is in use, the token file). */
int tsync__console_start(tsync__console **out, const tsync__console_opts *o);
/* "ADDR:PORT" really bound. */
const char *tsync__console_address(const tsync__console *c);
/* "<db_path>.console-token". */
const char *tsync__console_token_path(const tsync__console *c);
/* Stops serving (open event streams end), waits for a backup the console started, frees. NULL
 * accepted. */
void tsync__console_stop(tsync__console *c);

#endif
