/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_relay.c — tillsync relay init|admit|run|status: a blind relay in a directory
 * (docs/RELAY.md), through the public API of tillsync/relay.h only.
 */
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "node_service.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int usage(const char *msg)
{
    return cli_usage("relay", msg);
}

/* YYYY-MM-DD (the start of that day, UTC) as Unix ms; 0 when malformed. */
static uint64_t parse_date(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || *end) return 0;
    time_t t = timegm(&tm);
    return t > 0 ? (uint64_t)t * 1000u : 0;
}

static void log_stderr(void *ctx, int level, const char *line)
{
    (void)ctx;
    (void)level;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(stderr, "%s %s\n", ts, line);
}

static int relay_init(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char *pos[1];
    int npos;
    int prc = cli_parse("relay init", argc, argv, none, NULL, NULL, NULL, NULL, pos, 1, &npos);
    if (prc) return prc;
    if (npos != 1) return usage("relay init needs DIR");
    char pk[65];
    umask(077);
    if (tsync_relay_init(pos[0], pk) != 0) return cli_fail("relay init");
    printf("relay created in %s\npublic key: %s\n(tills pin this key: tcp://HOST:PORT#%s)\n",
           pos[0], pk, pk);
    return 0;
}

typedef struct {
    const char *quota, *expires, *store, *listen;
} admit_args;

static int on_admit_opt(void *ctx, int c, const char *v)
{
    admit_args *a = ctx;
    if (c == 'q') a->quota = v;
    if (c == 'e') a->expires = v;
    if (c == 's') a->store = v;
    if (c == 'l') a->listen = v;
    return 0;
}

static int relay_admit(int argc, char **argv)
{
    static const struct option opts[] = {{"quota-mb", required_argument, NULL, 'q'},
                                         {"expires", required_argument, NULL, 'e'},
                                         {"store", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    admit_args a = {0};
    const char *pos[2];
    int npos;
    int prc =
        cli_parse("relay admit", argc, argv, opts, NULL, NULL, on_admit_opt, &a, pos, 2, &npos);
    if (prc) return prc;
    if (npos != 2) return usage("relay admit needs DIR and SHOP_ADMIN_PUBKEY");
    if (!a.quota) return usage("relay admit needs --quota-mb N");
    char *end;
    unsigned long long q = strtoull(a.quota, &end, 10);
    if (*end || q == 0 || a.quota[0] == '-') return usage("--quota-mb: a whole number >= 1");
    uint64_t exp = 0;
    if (a.expires && !(exp = parse_date(a.expires)))
        return usage("--expires: a date as YYYY-MM-DD");
    uint8_t pk[32];
    size_t n = 0;
    if (sodium_hex2bin(pk, sizeof pk, pos[1], strlen(pos[1]), NULL, &n, NULL) != 0 || n != 32 ||
        strlen(pos[1]) != 64)
        return usage("SHOP_ADMIN_PUBKEY: 64 hex digits (tillsync shop info KEYFILE shows it)");
    if (tsync_relay_admit_store(pos[0], a.store, pk, q, exp) != 0) return cli_fail("relay admit");
    printf("shop %s admitted: quota %llu MiB, %s%s\n", pos[1], q, exp ? "until " : "no expiry",
           exp ? a.expires : "");
    return 0;
}

static int relay_run(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"store", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    admit_args a = {0};
    const char *pos[1];
    int npos;
    int prc = cli_parse("relay run", argc, argv, opts, NULL, NULL, on_admit_opt, &a, pos, 1, &npos);
    if (prc) return prc;
    if (npos != 1) return usage("relay run needs DIR");
    if (!a.listen) return usage("relay run needs --listen tcp://ADDR:PORT");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    svc_journal_detect();
    tsync_relay_options o = TSYNC_RELAY_OPTIONS_INIT;
    o.listen = a.listen;
    o.store = a.store;
    o.log = cli_journal ? svc_log : log_stderr;
    umask(077);
    tsync_relay *r;
    if (tsync_relay_new(&r, pos[0], &o) != 0) return cli_fail("relay run");
    svc_ready(tsync_relay_endpoint(r));
    int rc = tsync_relay_run(r, &g_stop);
    svc_stopping();
    if (rc) cli_fail("relay run");
    tsync_relay_free(r);
    return rc ? 1 : 0;
}

static int relay_status(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"store", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    admit_args a = {0};
    const char *pos[1];
    int npos, as_json = 0;
    int prc = cli_parse("relay status", argc, argv, opts, NULL, &as_json, on_admit_opt, &a, pos, 1,
                        &npos);
    if (prc) return prc;
    if (npos != 1) return usage("relay status needs DIR");
    const char *dir = pos[0];
    char *js;
    if (tsync_relay_status_json_store(dir, a.store, &js) != 0) return cli_fail("relay status");
    if (as_json) {
        printf("%s\n", js);
        tsync_free(js);
        return 0;
    }
    json_t *j = json_loads(js, 0, NULL);
    tsync_free(js);
    if (!j) return cli_fail("relay status");
    printf("relay %s (store: %s)\npublic key: %s\nsessions: %lld open, %lld admitted since "
           "creation\n",
           dir, json_string_value(json_object_get(j, "store")),
           json_string_value(json_object_get(j, "public_key")),
           (long long)json_integer_value(json_object_get(j, "sessions_open")),
           (long long)json_integer_value(json_object_get(j, "sessions")));
    size_t i;
    json_t *s;
    json_t *shops = json_object_get(j, "shops");
    printf("shops: %zu\n", json_array_size(shops));
    json_array_foreach(shops, i, s)
    {
        json_t *id = json_object_get(s, "shop_id");
        printf("  admin key %s  shop %s  %lld envelopes, %lld of %lld bytes, %lld revocations%s\n",
               json_string_value(json_object_get(s, "admin_key")),
               json_is_string(id) ? json_string_value(id) : "(no till yet)",
               (long long)json_integer_value(json_object_get(s, "envelopes")),
               (long long)json_integer_value(json_object_get(s, "bytes")),
               (long long)json_integer_value(json_object_get(s, "quota_bytes")),
               (long long)json_integer_value(json_object_get(s, "revocations")),
               json_integer_value(json_object_get(s, "expires")) ? ", admission expires" : "");
    }
    const char *k;
    json_t *v;
    json_t *ref = json_object_get(j, "refused");
    printf("refused: %s\n", json_object_size(ref) ? "" : "none");
    json_object_foreach(ref, k, v) printf("  %s: %lld\n", k, (long long)json_integer_value(v));
    json_decref(j);
    return 0;
}

int cmd_relay(int argc, char **argv)
{
    if (argc < 3) return usage("relay needs a subcommand: init, admit, run or status");
    const char *c = argv[2];
    if (!strcmp(c, "init")) return relay_init(argc - 1, argv + 1);
    if (!strcmp(c, "admit")) return relay_admit(argc - 1, argv + 1);
    if (!strcmp(c, "run")) return relay_run(argc - 1, argv + 1);
    if (!strcmp(c, "status")) return relay_status(argc - 1, argv + 1);
    return usage("relay: unknown subcommand (init, admit, run, status)");
}
