/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/node_util.h — helpers for the multi-process node tests (test_node.c,
 * test_node_security.c): real `tillsync run` processes on loopback, their status files, databases
 * with the standard sales schema, seller processes writing like a POS app, and cleanup that kills
 * every process a test started, by PID, even when an assertion failed.
 *
 * TSYNC_NODE_VERBOSE=1 runs every node with -v; a test's node logs are DIR/NAME.log (the folder is
 * removed at the end: set TSYNC_KEEP=1 to keep it and print its path).
 *
 * Every process started here is registered; nu_fini (use `.fini = nu_fini`) SIGKILLs and reaps
 * whatever is still running and removes the test's folders. Children also get PR_SET_PDEATHSIG,
 * so a test process that dies (criterion timeout, crash) takes its nodes with it.
 *
 * Schema of every test database (nu_make_db):
 *   products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL DEFAULT 0), stock a counter;
 *   sales(id TEXT PRIMARY KEY, till TEXT, product TEXT, qty INTEGER NOT NULL DEFAULT 0).
 */
#ifndef TSYNC_TEST_NODE_UTIL_H
#define TSYNC_TEST_NODE_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tillsync/tillsync.h"

#define NU_PATH     1024
#define NU_EP       128
#define NU_MAXPEERS 8

/* Products the sellers sell (p0..p{NU_NPROD-1}), each starting with NU_STOCK. */
#define NU_NPROD 3
#define NU_STOCK 1000000

/* Monotonic milliseconds. */
int64_t nu_now_ms(void);
/* Sleeps ms milliseconds. */
void nu_sleep_ms(int ms);
/* A scale for counts: $TSYNC_PROP_SCALE when it is below 1 (sanitizer runs), else 1. */
double nu_scale(void);
/* n scaled (at least lo). */
int nu_scaled(int n, int lo);

/* The tillsync CLI: $TSYNC_CLI, else the TSYNC_CLI compile definition. */
const char *nu_cli(void);

/* ---------------------------------------------------------------- processes */

/* Forks and execs argv (NULL-terminated) with stdin from /dev/null and stdout+stderr appended to
 * log (NULL: /dev/null). The child is registered for nu_fini. Asserts on failure. */
pid_t nu_spawn(const char *const *argv, const char *log);
/* Forks a child that runs fn(arg) and _exits with its value; registered like nu_spawn. */
pid_t nu_fork(int (*fn)(void *), void *arg);
/* Waits up to ms for pid to exit; returns its wait status, -1 when it is still running, -2 when
 * it is not (or no longer) a child. The pid is unregistered once reaped. */
int nu_wait(pid_t pid, int ms);
/* Sends sig to pid and waits up to ms for it (then SIGKILLs and reaps it). Returns the status. */
int nu_kill(pid_t pid, int sig, int ms);
/* SIGKILLs and reaps every registered process (idempotent). */
void nu_kill_all(void);
/* A temporary folder removed by nu_fini (kept, and its path printed, with TSYNC_KEEP=1). The
 * path is in a static buffer (valid for the next 4 calls). */
const char *nu_tmpdir(void);
/* For criterion: nu_kill_all, then th_cleanup (folders made by th_tmpdir_auto). */
void nu_fini(void);
/* "exit 0", "exit 3", "signal 9 (Killed)" for a wait status, in a static ring. */
const char *nu_status_str(int status);

/* Runs the CLI with the given arguments (NULL-terminated, without argv[0]) and waits up to 60 s.
 * *out (may be NULL) receives stdout as a malloc'd string; stderr goes to *err likewise. Returns
 * the exit code (-1 if it did not exit normally). */
int nu_cli_run(char **out, char **err, const char *arg, ...) __attribute__((sentinel));
/* Like nu_cli_run; asserts exit 0 and returns stdout (malloc'd). */
char *nu_cli_ok(const char *arg, ...) __attribute__((sentinel));

/* The last `lines` lines of a file as a malloc'd string ("" when missing). */
char *nu_tail(const char *path, int lines);
/* The same in a static ring buffer (valid for the next 4 calls), for failure messages. */
const char *nu_tail_s(const char *path, int lines);

/* ---------------------------------------------------------------- databases */

/* Creates a database (library, not CLI) with the schema above, replicated. */
void nu_make_db(const char *path);
/* Inserts the catalogue p0..p{NU_NPROD-1} with NU_STOCK each (one transaction). */
void nu_insert_catalogue(const char *path);
/* n sales 'a-0'..'a-{n-1}' of till 'a' on the database at path, through the library, each its
 * own transaction sealed alone (the live shape); sale i as a seller's: product p{i % NU_NPROD},
 * quantity 1 + i % 3 (nu_sold(0, n, k) is what they take off p{k}). Asserts each sealed as one
 * batch. */
void nu_sell_sealed(const char *path, int n);
/* The same for sales from..to-1. */
void nu_sell_sealed_from(const char *path, int from, int to);
/* `tillsync shop create KEY --name NAME` */
void nu_shop_create(const char *keyfile, const char *name);
/* `tillsync enrol DB --shop-key KEY --name NAME` */
void nu_enrol(const char *db, const char *keyfile, const char *name);
/* The public key of a database's device (64 hex + NUL) via `tillsync state --json`. */
void nu_pubkey(const char *db, char out[65]);
/* The site id (32 hex + NUL). */
void nu_site(const char *db, char out[33]);

/* Facts about one database, read with its own connection. ok is 0 when it could not be read
 * (busy: try again). */
typedef struct {
    int ok;
    char hash[65];
    int64_t sales, products, held, parked, forks;
    int64_t stock[NU_NPROD];
} nu_facts;
nu_facts nu_read(const char *db);
/* The first column of the first row of sql as an integer, read with a connection kept open for
 * db (opening one writes to the database); -1 on error or no row. */
int64_t nu_query(const char *db, const char *sql);
/* `tillsync hash DB`, trimmed (64 hex). Asserts success. */
void nu_cli_hash(const char *db, char out[65]);

/* ---------------------------------------------------------------- sellers (POS processes)
 *
 * A seller is a process with its own plain SQLite connection (WAL, synchronous=NORMAL,
 * busy_timeout 10 s, like a POS app) that makes n sales, each one transaction:
 *   INSERT INTO sales VALUES('<till>-<i>', '<till>', 'p<k>', q);
 *   UPDATE products SET stock = stock - q WHERE id = 'p<k>'
 * with k = i % NU_NPROD and q = 1 + i % 3, for i in [first, first + n), pausing pause_us between
 * sales (after waiting delay_ms). It exits 0 when every sale committed and every UPDATE found its
 * product. */
typedef struct {
    char db[NU_PATH];
    char till[32];
    int first, n, pause_us, delay_ms;
} nu_seller;
pid_t nu_seller_start(const nu_seller *s);
/* The decrement of product k made by sales [first, first + n). */
int64_t nu_sold(int first, int n, int k);
/* Waits for a seller process (up to ms) and asserts it exited 0. */
void nu_seller_wait(pid_t pid, int ms, const char *what);

/* ---------------------------------------------------------------- nodes */

typedef struct {
    char name[32];
    char db[NU_PATH];
    char log[NU_PATH];
    char listen[NU_EP];   /* what --listen gets ("" for none); fixed to the bound one on start */
    char endpoint[NU_EP]; /* bound endpoint, from the status file */
    char key[65];         /* its public key */
    char peers[NU_MAXPEERS][NU_EP + 80];
    int npeers;
    int verbose;     /* run with -v (also for every node when TSYNC_NODE_VERBOSE=1) */
    int liveness_ms; /* run with --liveness (0: the node's default, 3.5 s) */
    pid_t pid;
    int starts;
} nu_node;

/* The options of an in-process node (tsync_node_new) as the tests make one: listening on listen
 * ("" none), no mDNS, no status file, warnings only (everything with TSYNC_NODE_VERBOSE=1), and
 * one static peer when peer is not NULL (*peer, an array of one, must outlive tsync_node_new). */
void nu_node_options(tsync_node_options *o, const char *listen, const char *const *peer);
/* "ENDPOINT#KEY": how another node dials endpoint, a node on db (for its peers). */
void nu_peer_addr(char out[NU_EP + 80], const char *endpoint, const char *db);

/* Sets up a node for db (which must exist) listening on a free loopback port. */
void nu_node_init(nu_node *n, const char *dir, const char *name, const char *db);
/* Adds a static peer: to's endpoint, with its key when with_key (else keyless). The peer must
 * have been started (its endpoint is known). */
void nu_node_peer(nu_node *n, const nu_node *to, int with_key);
/* Starts `tillsync run` and waits (up to 30 s) for its status file to name its pid and endpoint.
 * A restart listens on the same endpoint as before. */
void nu_node_start(nu_node *n);
/* SIGKILL and reap. */
void nu_node_kill(nu_node *n);
/* SIGTERM, wait up to 30 s, and assert a clean exit (status 0: no sanitizer report either). */
void nu_node_stop(nu_node *n);
/* The node's status file (DB.node) parsed, or NULL when missing or not written by this run. */
json_t *nu_node_status(const nu_node *n);
/* refused.<reason> from the status file (-1 when unavailable). */
int64_t nu_node_refused(const nu_node *n, const char *reason);
/* Peers of the node in state "connected". */
int nu_node_connected(const nu_node *n);
/* A one-paragraph summary for failure messages: facts, peers, refused, log tail. In a static
 * ring buffer (valid for the next 4 calls of this or nu_tail_s). */
const char *nu_node_describe(const nu_node *n);

/* Polls every 50 ms, up to ms, until every node's database has the same hash and `sales` rows
 * and each stock equals want_stock[k] (NULL: any). Returns the milliseconds it took, or fails the
 * test with what it waited for and the state of every node. */
int64_t nu_wait_converged(nu_node *const *nodes, int nn, int64_t want_sales,
                          const int64_t *want_stock, int ms, const char *what);
/* Polls until every node shows `want` connected peers (up to ms). */
void nu_wait_connected(nu_node *const *nodes, int nn, const int *want, int ms, const char *what);

#endif
