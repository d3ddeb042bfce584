/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_trust.c — the till's trust commands: make an enrolment request, enrol (with
 * certificates, or in one step with the admin key file), install a revocation, show the shop a
 * database is enrolled in. The shop admin's commands are tools/cmd_shop.c; docs/TRUST.md is the
 * walk-through. Everything goes through the public API (tillsync/trust.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_trust.h"
#include "trust_text.h"

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int open_db(const char *path, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(s, path, &o) != 0) return cli_fail("open");
    return 0;
}

int cmd_enrol_request(int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[2] = {NULL, NULL}, *name = NULL;
    int npos;
    int prc = cli_parse("enrol-request", argc, argv, opts, NULL, NULL, cli_on_value, &name, pos, 2,
                        &npos);
    if (prc) return prc;
    if (npos > 1) return tt_usage("enrol-request takes DB and --name NAME");
    const char *db = pos[0];
    if (!db) return tt_usage("enrol-request needs DB");
    tsync_store *s;
    if (open_db(db, &s)) return 1;
    uint8_t *req;
    size_t len;
    int ret = tsync_trust_request(&req, &len, s, name) ? cli_fail("enrol-request") : 0;
    tsync_store_free(s);
    if (!ret) {
        ret = tt_emit(req, len);
        free(req);
    }
    return ret;
}

static void print_enrolled(const char *db, const tsync_enrol_report *r)
{
    char d[32], id[2 * TSYNC_SHOP_ID_BYTES + 1];
    tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, id);
    if (r->first) {
        printf("%s enrolled in shop '%s' (id %s) as device '%s'; certificate valid until %s\n", db,
               r->shop_name, id, r->device_name, tsync_trust_date(r->expires_ms, d));
    } else if (r->added == 0) {
        printf("%s is enrolled in shop '%s' already and holds every record given\n", db,
               r->shop_name);
        return;
    } else if (r->own) {
        printf("certificate of device '%s' in shop '%s' installed; valid until %s\n",
               r->device_name, r->shop_name, tsync_trust_date(r->expires_ms, d));
    }
    size_t others = r->added - (r->own ? 1 : 0);
    if (others > 0 || (!r->own && !r->first))
        printf("%zu other record%s of shop '%s' installed\n", others, others == 1 ? "" : "s",
               r->shop_name);
}

static int enrol_one_step(const char *db, const char *keyfile, const char *name, unsigned days)
{
    tsync_shop_key *k;
    if (tt_load_key(keyfile, &k)) return 1;
    tsync_store *s;
    if (open_db(db, &s)) {
        tsync_shop_key_free(k);
        return 1;
    }
    tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
    o.days = days;
    o.device_name = name;
    tsync_enrol_report r = TSYNC_ENROL_REPORT_INIT;
    int ret = tsync_trust_enrol_with_key(&r, s, k, &o) ? cli_fail("enrol") : 0;
    tsync_shop_key_free(k);
    if (!ret) print_enrolled(db, &r);
    tsync_store_free(s);
    return ret;
}

/* Says which data-key epoch the till holds after n DATA KEY records were given to it. */
static void print_data_keys(tsync_store *s, size_t n, size_t added)
{
    uint32_t held = 0, latest = 0;
    if (tsync_store_data_key_epoch(&held, &latest, s) != 0) return;
    if (held)
        printf("%zu data key record%s installed (%zu new); this till holds data-key epoch %" PRIu32
               " (the shop's latest is %" PRIu32 ")\n",
               n, n == 1 ? "" : "s", added, held, latest);
    else
        printf("%zu data key record%s installed (%zu new); none is sealed to this till\n", n,
               n == 1 ? "" : "s", added);
}

/* Installs every record of the n files on db with tsync_trust_enrol: certificates, rotations
 * and the like in one transaction, then the DATA KEY records (which need the enrolment), said
 * apart. With revocations set (trust add), revocations are installed last with
 * tsync_trust_revoke, so one file may carry any records. */
static int install_files(const char *what, const char *db, const char *const *files, int n,
                         int revocations)
{
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = 0;
    for (int i = 0; i < n && !ret; i++) ret = tt_read_records(files[i], &r);
    tsync_store *s = NULL;
    if (!ret) ret = open_db(db, &s);
    /* 0: the rest, 1: data keys, 2: revocations */
    const uint8_t **recs = calloc(3 * (r.n + 1), sizeof *recs);
    size_t *lens = calloc(3 * (r.n + 1), sizeof *lens), cnt[3] = {0, 0, 0};
    if (!recs || !lens) ret = 1;
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    for (size_t i = 0; !ret && i < r.n; i++) {
        int g = 0;
        if (tsync_trust_record_decode(&t, r.records[i], r.lens[i]) == 0)
            g = t.kind == TSYNC_TRUST_DATA_KEY                    ? 1
                : revocations && t.kind == TSYNC_TRUST_REVOCATION ? 2
                                                                  : 0;
        recs[g * (r.n + 1) + cnt[g]] = r.records[i];
        lens[g * (r.n + 1) + cnt[g]++] = r.lens[i];
    }
    tsync_trust_record_clear(&t);
    for (int g = 0; g < 2 && !ret; g++) {
        if (!cnt[g]) continue;
        tsync_enrol_report res = TSYNC_ENROL_REPORT_INIT;
        ret = tsync_trust_enrol(&res, s, recs + g * (r.n + 1), lens + g * (r.n + 1), cnt[g])
                  ? cli_fail(what)
                  : 0;
        if (!ret && g == 0) print_enrolled(db, &res);
        if (!ret && g == 1) print_data_keys(s, cnt[1], res.added);
    }
    for (size_t i = 0; !ret && i < cnt[2]; i++)
        ret = tsync_trust_revoke(s, recs[2 * (r.n + 1) + i], lens[2 * (r.n + 1) + i])
                  ? cli_fail(what)
                  : 0;
    if (!ret && cnt[2]) printf("%zu revocation%s installed\n", cnt[2], cnt[2] == 1 ? "" : "s");
    free(recs), free(lens);
    tsync_store_free(s);
    tsync_trust_records_clear(&r);
    return ret;
}

typedef struct {
    const char *keyfile, *name, *days;
} enrol_args;

static int on_enrol_opt(void *ctx, int c, const char *v)
{
    enrol_args *a = ctx;
    if (c == 'k') a->keyfile = v;
    if (c == 'n') a->name = v;
    if (c == 'd') a->days = v;
    return 0;
}

int cmd_enrol(int argc, char **argv)
{
    static const struct option opts[] = {{"shop-key", required_argument, NULL, 'k'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    enrol_args a = {NULL, NULL, NULL};
    const char *db = NULL;
    unsigned days = DEFAULT_DAYS;
    int nfiles = 0;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) return 1;
    int prc =
        cli_parse("enrol", argc, argv, opts, NULL, NULL, on_enrol_opt, &a, files, argc, &nfiles);
    if (!prc && a.days && tt_parse_days(a.days, &days))
        prc = tt_usage("--days takes a number from 1 to 36500");
    if (prc) {
        free(files);
        return prc;
    }
    if (nfiles) db = files[0];
    nfiles = nfiles ? nfiles - 1 : 0;
    memmove(files, files + 1, (size_t)nfiles * sizeof *files);
    const char *keyfile = a.keyfile, *name = a.name;
    int named = a.name != NULL, dayed = a.days != NULL;
    int ret;
    if (!db || (!keyfile && nfiles == 0)) {
        ret = tt_usage("enrol needs DB and CERT (or --shop-key KEYFILE)");
    } else if (keyfile && nfiles) {
        ret = tt_usage("enrol takes CERT files or --shop-key KEYFILE, not both");
    } else if (!keyfile && (named || dayed)) {
        ret = tt_usage("--name and --days go with --shop-key");
    } else if (keyfile) {
        ret = enrol_one_step(db, keyfile, name, days);
    } else {
        ret = install_files("enrol", db, files, nfiles, 0);
    }
    free(files);
    return ret;
}

/* tillsync trust add DB FILE...: every record of the files (a file may hold several blocks, as
 * shop sign and shop revoke print them): revocations as revoke installs them, the others as
 * enrol does. */
static int cmd_trust_add(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return 1;
    int npos;
    int ret =
        cli_parse("trust add", argc - 1, argv + 1, none, NULL, NULL, NULL, NULL, pos, argc, &npos);
    if (!ret && npos < 2) ret = tt_usage("trust add needs DB and FILE...");
    if (!ret) ret = install_files("trust add", pos[0], pos + 1, npos - 1, 1);
    free(pos);
    return ret;
}

int cmd_revoke(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char *pos[3] = {NULL, NULL, NULL};
    int npos;
    int prc = cli_parse("revoke", argc, argv, none, NULL, NULL, NULL, NULL, pos, 3, &npos);
    if (prc) return prc;
    if (npos != 2)
        return tt_usage(npos < 2 ? "revoke needs DB and REVOCATION"
                                 : "revoke takes only "
                                   "DB and REVOCATION");
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = tt_read_records(pos[1], &r);
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    /* Revocations, and the DATA KEY records shop revoke prints after them (the new epoch). */
    size_t nrev = 0, ndk = 0;
    const uint8_t **dk = calloc(r.n + 1, sizeof *dk);
    size_t *dkl = calloc(r.n + 1, sizeof *dkl);
    if (!dk || !dkl) ret = 1;
    for (size_t i = 0; !ret && i < r.n; i++) {
        if (tsync_trust_record_decode(&t, r.records[i], r.lens[i]) == 0 &&
            t.kind == TSYNC_TRUST_DATA_KEY) {
            dk[ndk] = r.records[i], dkl[ndk++] = r.lens[i];
            continue;
        }
        ret = tt_decode(pos[1], r.records[i], r.lens[i], TSYNC_TRUST_REVOCATION, &t);
        nrev++;
    }
    if (!ret && nrev == 0) {
        fprintf(stderr, "tillsync: %s holds no REVOCATION\n", pos[1]);
        ret = 1;
    }
    tsync_store *s = NULL;
    if (!ret) ret = open_db(pos[0], &s);
    for (size_t i = 0; !ret && i < r.n; i++)
        if (tsync_trust_record_decode(&t, r.records[i], r.lens[i]) == 0 &&
            t.kind == TSYNC_TRUST_REVOCATION)
            ret = tsync_trust_revoke(s, r.records[i], r.lens[i]) ? cli_fail("revoke") : 0;
    tsync_enrol_report res = TSYNC_ENROL_REPORT_INIT;
    if (!ret && ndk && tsync_trust_enrol(&res, s, dk, dkl, ndk) != 0) ret = cli_fail("revoke");
    free(dk);
    free(dkl);
    if (!ret) {
        if (ndk) print_data_keys(s, ndk, res.added);
        for (size_t i = 0; i < r.n; i++) {
            if (tsync_trust_record_decode(&t, r.records[i], r.lens[i]) == 0 &&
                t.kind == TSYNC_TRUST_REVOCATION) {
                char h[2 * PK + 1];
                tt_hex(t.device_key, PK, h);
                printf("revocation of device key %s installed (%zu cutoff%s)\n", h, t.ncutoffs,
                       t.ncutoffs == 1 ? "" : "s");
            }
        }
    }
    tsync_store_free(s);
    tsync_trust_record_clear(&t);
    tsync_trust_records_clear(&r);
    return ret;
}

/* The trust set, for a person. */
static void print_trust(const tsync_trust_set *t)
{
    if (!t->enrolled) {
        printf("not enrolled in a shop (accepts any validly signed batch)\n");
        return;
    }
    char h[2 * PK + 1], d1[32], d2[32];
    tt_hex(t->shop_id, TSYNC_SHOP_ID_BYTES, h);
    printf("shop:       %s (id %s)\n", t->shop_name, h);
    for (size_t i = 0; i < t->nadmin_keys; i++) {
        tt_hex(t->admin_keys[i], PK, h);
        printf("%s%s\n", i ? "            " : "admin key:  ", h);
    }
    printf("devices:\n");
    uint64_t now = wall_ms();
    for (size_t i = 0; i < t->ndevices; i++) {
        const tsync_trust_device *e = &t->devices[i];
        const char *st = e->revoked ? "REVOKED" : e->expires_ms < now ? "EXPIRED" : "valid";
        tt_hex(e->key, PK, h);
        printf("  %-20s %.16s…  %s to %s  %s%s\n", e->name, h,
               tsync_trust_date(e->not_before_ms, d1), tsync_trust_date(e->expires_ms, d2), st,
               e->this_device ? "  (this device)" : "");
    }
}

int cmd_trust(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[2], "add") == 0 && argv[3][0] != '-')
        return cmd_trust_add(argc, argv);
    const char *pos[2] = {NULL, NULL};
    int npos, json = 0;
    int prc = cli_parse("trust", argc, argv, CLI_JSON_OPTS, NULL, &json, NULL, NULL, pos, 2, &npos);
    if (prc) return prc;
    if (npos != 1) return tt_usage("trust needs DB and optionally --json");
    tsync_store *s;
    if (cli_open(pos[0], CLI_RO, &s)) return 1;
    int ret = 0;
    if (json) {
        char *js;
        if (tsync_trust_json(&js, s) != 0) {
            ret = cli_fail("trust");
        } else {
            puts(js);
            free(js);
        }
    } else {
        tsync_trust_set t = TSYNC_TRUST_SET_INIT;
        if (tsync_trust_set_get(&t, s) != 0)
            ret = cli_fail("trust");
        else
            print_trust(&t);
        tsync_trust_set_clear(&t);
    }
    tsync_store_free(s);
    return ret;
}
