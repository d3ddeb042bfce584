/* SPDX-License-Identifier: Apache-2.0 */
/* tools/node_service.h — what `tillsync run` needs to run as a service (tools/node_service.c): one
 * node per database, readiness and watchdog for systemd, journald priorities, a config file. */
#ifndef TSYNC_TOOLS_NODE_SERVICE_H
#define TSYNC_TOOLS_NODE_SERVICE_H

#include <getopt.h>
#include <jansson.h>

#include "tillsync/tillsync.h"

/* Adds notes (a JSON array of lines; nothing when empty) that `status` shows, what was found
 * wrong at start, to the lock file the node of db wrote (tsync_node_new takes the lock and writes
 * its pid and endpoint there; this process must be that node's). */
void svc_lock_notes(const char *db, const char *endpoint, json_t *notes);
/* Whether a node holds db's lock: 1 (with its pid, address and notes when it wrote them: *pid 0,
 * listen "" and *notes NULL otherwise; *notes is the caller's), 0 (lock free), -1 (no lock
 * file: no node ran here since this version). */
int svc_lock_probe(const char *db, long long *pid, char *listen, size_t len, json_t **notes);

/* Journald reads stderr (JOURNAL_STREAM names it): sets cli_journal, returns 1. */
int svc_journal_detect(void);
/* The node's log callback when cli_journal: "<N>line", no timestamp (journald keeps its own). */
void svc_log(void *ctx, int level, const char *line);

/* sd_notify: READY=1 with the address, once the node listens; STOPPING=1. No-ops without
 * $NOTIFY_SOCKET (or in a build without libsystemd). */
void svc_ready(const char *endpoint);
void svc_stopping(void);
/* When systemd asks for a watchdog ($WATCHDOG_USEC), a thread pings it as long as the node's loop
 * keeps its status fresh: a node stuck in its loop is restarted. 0 (also when not asked), or -1. */
int svc_watchdog_start(tsync_node *n);
void svc_watchdog_stop(void);

/* Reads the config file path (inih): each "name = value" is the long option --name=value of
 * longopts ("no-mdns = true" for a flag; false leaves it out). Appends the options to *args
 * (realloc'd, *nargs grows; the strings are the caller's). 0, or 1 with the error printed
 * ("FILE:LINE: ..."), 2 for a build without inih. */
int svc_config_args(const char *path, const struct option *longopts, char ***args, int *nargs);

#endif
