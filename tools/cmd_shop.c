/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_shop.c — tillsync shop: the shop admin's commands (create a shop, sign an enrolment
 * request, revoke a device with its preview, rotate the admin key, sign a migration, show a trust
 * file or key file). docs/TRUST.md is the walk-through; the work is tillsync/trust.h's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cli.h"
#include "cmd_trust.h"
#include "trust_text.h"

static const struct option NAME_OPTS[] = {{"name", required_argument, NULL, 'n'},
                                          {NULL, 0, NULL, 0}};

/* shop sign's --days N, --name DEVICE and --no-data-key. */
typedef struct {
    const char *name, *days;
    int no_data_key;
} sign_args;

static int on_sign_opt(void *ctx, int c, const char *v)
{
    sign_args *a = ctx;
    if (c == 'n') a->name = v;
    if (c == 'd') a->days = v;
    if (c == 'K') a->no_data_key = 1;
    return 0;
}

/* The key file's version when it was loaded, to tell (once, on stderr) that a command rewrote a
 * version 1 file as version 2. */
static uint32_t file_version(const tsync_shop_key *k)
{
    uint32_t v = 1;
    tsync_shop_key_file_state(k, &v, NULL, NULL, NULL);
    return v;
}

static void note_upgrade(const char *path, uint32_t before, const tsync_shop_key *k)
{
    if (before != 1 || file_version(k) != 2) return;
    fprintf(stderr,
            "tillsync: note: %s is now a version 2 key file: it keeps the shop data key and the "
            "devices it certifies (older tillsync builds cannot read it); tills certified before "
            "get the data key from: tillsync shop data-key %s --from TILL.db\n",
            path, path);
}

/* Prints a DATA KEY record the key k just made (of its latest epoch, sealed to the devices it
 * lists as certified), with its epoch and device count among the comment lines. */
static int emit_dk(const uint8_t *dkey, size_t len, const tsync_shop_key *k)
{
    uint32_t epoch = 0;
    size_t n = 0;
    tsync_shop_key_file_state(k, NULL, &epoch, &n, NULL);
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    if (tsync_trust_record_decode(&r, dkey, len) != 0) return cli_fail("data key");
    char *desc = tt_describe(&r), *text = NULL;
    tsync_trust_record_clear(&r);
    char *comment = desc
                        ? sqlite3_mprintf("%s\nepoch:      %u (sealed to %llu device%s)", desc,
                                          (unsigned)epoch, (unsigned long long)n, n == 1 ? "" : "s")
                        : NULL;
    int ret = comment && tsync_trust_armour(&text, dkey, len, comment) == 0 ? 0 : 1;
    if (ret) fprintf(stderr, "tillsync: out of memory\n");
    if (!ret && (fputs(text, stdout) < 0 || fflush(stdout) != 0)) {
        fprintf(stderr, "tillsync: cannot write to standard output: %s\n", strerror(errno));
        ret = 1;
    }
    free(desc), free(text);
    sqlite3_free(comment);
    return ret;
}

/* Prints a DATA KEY record after the record it goes with, or says why there is none. */
static int emit_data_key(const uint8_t *dkey, size_t len, int asked, const tsync_shop_key *k)
{
    if (!asked) return 0;
    if (!dkey) {
        fprintf(stderr, "tillsync: note: no certified device is left to seal the new data key "
                        "to; no DATA KEY record printed\n");
        return 0;
    }
    return fputs("\n", stdout) < 0 ? 1 : emit_dk(dkey, len, k);
}

/* Drops the DATA KEY records from r (shop sign and shop revoke print one after a certificate
 * or a revocation, so such a file still names one device). */
static void drop_data_keys(tsync_trust_records *r)
{
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (tsync_trust_record_decode(&t, r->records[i], r->lens[i]) == 0 &&
            t.kind == TSYNC_TRUST_DATA_KEY && r->n > 1) {
            free(r->records[i]);
            continue;
        }
        r->records[n] = r->records[i], r->lens[n++] = r->lens[i];
    }
    r->n = n;
    tsync_trust_record_clear(&t);
}

static int shop_create(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *name = NULL;
    int npos;
    int prc = cli_parse("shop create", argc - 1, argv + 1, NAME_OPTS, NULL, NULL, cli_on_value,
                        &name, pos, 2, &npos);
    if (prc) return prc;
    if (npos > 1) return tt_usage("shop create takes KEYFILE and --name NAME");
    const char *path = pos[0];
    if (!path || !name) return tt_usage("shop create needs KEYFILE and --name NAME");
    tsync_shop_key *k;
    if (tsync_shop_key_create(&k, path, name) != 0) return cli_fail("shop create");
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    uint32_t epoch = 0;
    int rc = tsync_shop_key_info(&info, k);
    if (rc == 0) rc = tsync_shop_key_file_state(k, NULL, &epoch, NULL, NULL);
    tsync_shop_key_free(k);
    if (rc) return cli_fail("shop create");
    char id[2 * TSYNC_SHOP_ID_BYTES + 1], pk[2 * PK + 1];
    tt_hex(info.shop_id, TSYNC_SHOP_ID_BYTES, id);
    tt_hex(info.admin_key, PK, pk);
    printf("shop '%s' created\n"
           "shop id:   %s\n"
           "admin key: %s\n"
           "key file:  %s (mode 0600)\n"
           "data key:  epoch %" PRIu32 " (kept in the key file; shop sign seals it to each till)\n"
           "Keep the key file off the tills and keep a copy in a safe place: without it no new "
           "till can join the shop.\n",
           info.shop_name, id, pk, path, epoch);
    return 0;
}

static int shop_sign(int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"days", required_argument, NULL, 'd'},
                                         {"no-data-key", no_argument, NULL, 'K'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[3] = {NULL, NULL, NULL};
    sign_args a = {NULL, NULL, 0};
    int npos;
    unsigned days = DEFAULT_DAYS;
    int prc = cli_parse("shop sign", argc - 1, argv + 1, opts, NULL, NULL, on_sign_opt, &a, pos, 3,
                        &npos);
    if (prc) return prc;
    if (a.days && tt_parse_days(a.days, &days))
        return tt_usage("--days takes a number from 1 to 36500");
    if (npos > 2)
        return tt_usage("shop sign takes KEYFILE, REQ, --days N, --name NAME and --no-data-key");
    const char *name = a.name;
    if (npos < 2) return tt_usage("shop sign needs KEYFILE and REQ");
    tsync_shop_key *k;
    if (tt_load_key(pos[0], &k)) return 1;
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = tt_read_records(pos[1], &r);
    if (!ret) drop_data_keys(&r);
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one enrolment request\n", pos[1],
                r.n);
        ret = 1;
    }
    tsync_trust_record req = TSYNC_TRUST_RECORD_INIT;
    if (!ret) ret = tt_decode(pos[1], r.records[0], r.lens[0], TSYNC_TRUST_REQUEST, &req);
    tsync_trust_record_clear(&req);
    uint8_t *cert = NULL, *dkey = NULL;
    size_t clen, dlen = 0;
    uint32_t before = file_version(k);
    if (!ret) {
        tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
        o.days = days;
        o.device_name = name;
        /* The certificate, then the data key sealed to every device of the shop: the till
         * installs both from this one output (enrol DB FILE). */
        if (tsync_shop_key_certify(&cert, &clen, a.no_data_key ? NULL : &dkey, &dlen, k,
                                   r.records[0], r.lens[0], &o) != 0) {
            fprintf(stderr, "tillsync: %s: %s\n", pos[0], tt_error());
            ret = 1;
        }
    }
    if (!ret) note_upgrade(pos[0], before, k);
    if (!ret) ret = tt_emit(cert, clen);
    if (!ret) ret = emit_data_key(dkey, dlen, !a.no_data_key, k);
    free(cert);
    free(dkey);
    tsync_trust_records_clear(&r);
    tsync_shop_key_free(k);
    return ret;
}

/* DEVICEKEY: 64 hex digits, or a file holding a certificate or an enrolment request. */
static int device_key(const char *arg, uint8_t pk[PK])
{
    if (tt_unhex(arg, strlen(arg), pk, PK) == 0) return 0;
    if (access(arg, F_OK) != 0) {
        fprintf(stderr,
                "tillsync: DEVICEKEY '%s' is neither 64 hex digits nor a certificate or request "
                "file\n",
                arg);
        return 1;
    }
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = tt_read_records(arg, &r);
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    if (!ret) drop_data_keys(&r);
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one certificate\n", arg, r.n);
        ret = 1;
    }
    if (!ret) ret = tt_decode(arg, r.records[0], r.lens[0], 0, &t);
    if (!ret) {
        if (t.kind == TSYNC_TRUST_CERTIFICATE || t.kind == TSYNC_TRUST_REQUEST) {
            memcpy(pk, t.device_key, PK);
        } else {
            fprintf(stderr, "tillsync: %s holds no device key (give a certificate)\n", arg);
            ret = 1;
        }
    }
    tsync_trust_record_clear(&t);
    tsync_trust_records_clear(&r);
    return ret;
}

/* What the revocation would cut, seen from the database at path (read-only): per site of the
 * device, its cutoff, what the database holds after it and which other devices' batches depend on
 * those (so every till keeps them). */
static int preview(FILE *f, const char *path, const uint8_t pk[PK], const tsync_cutoff *cut,
                   size_t ncut)
{
    tsync_revocation_preview v = TSYNC_REVOCATION_PREVIEW_INIT;
    if (tsync_revocation_preview_get(&v, path, pk, cut, ncut) != 0) return cli_fail(path);
    char hs[2 * TSYNC_SITE_ID_BYTES + 1];
    fprintf(f, "what the revocation cuts, as %s sees it:\n", path);
    if (v.nsites == 0)
        fprintf(f, "  %s knows no site of this device: nothing to cut there\n", path);
    for (size_t i = 0; i < v.nsites; i++) {
        const tsync_revocation_site *e = &v.sites[i];
        tt_hex(e->site_id, TSYNC_SITE_ID_BYTES, hs);
        fprintf(f, "site %s: cutoff %" PRIu64 "\n", hs, e->cutoff);
        if (!e->known)
            fprintf(f, "  %s does not know this site\n", path);
        else if (e->beyond == 0)
            fprintf(f, "  %s holds up to %" PRIu64 ": nothing after the cutoff\n", path, e->have);
        else
            fprintf(f, "  %s holds up to %" PRIu64 ": %" PRIu64 " batch%s after the cutoff\n", path,
                    e->have, e->beyond, e->beyond == 1 ? "" : "es");
        for (size_t k = 0; k < e->ndeps; k++) {
            char ds[2 * TSYNC_SITE_ID_BYTES + 1];
            tt_hex(e->deps[k].site_id, TSYNC_SITE_ID_BYTES, ds);
            fprintf(f,
                    "  depended on by '%s' (site %.12s…): %" PRIu64 " batch%s, up to seq %" PRIu64
                    "\n",
                    e->deps[k].name[0] ? e->deps[k].name : "?", ds, e->deps[k].batches,
                    e->deps[k].batches == 1 ? "" : "es", e->deps[k].max_dep);
        }
        uint64_t keep = e->kept > e->have ? e->kept : e->have;
        if (keep > e->cutoff)
            fprintf(f,
                    "  every till keeps up to %" PRIu64 " (merged here%s), refuses the later "
                    "ones\n",
                    keep, e->ndeps ? " and honest batches depend on them" : "");
        else
            fprintf(f,
                    "  every till keeps up to %" PRIu64 " and refuses the later ones, unless a "
                    "till merged more before the revocation reached it\n",
                    keep);
    }
    tsync_revocation_preview_clear(&v);
    return 0;
}

/* shop revoke's options: --cutoff SITE:SEQ and --check DB repeat. */
typedef struct {
    tsync_cutoff *cut;
    size_t ncut;
    const char **check;
    int ncheck;
    const char *from;
    int dry, no_data_key;
} revoke_args;

static const struct option REVOKE_OPTS[] = {{"no-data-key", no_argument, NULL, 'K'},
                                            {"cutoff", required_argument, NULL, 'c'},
                                            {"cutoffs-from", required_argument, NULL, 'f'},
                                            {"check", required_argument, NULL, 'k'},
                                            {"dry-run", no_argument, NULL, 'n'},
                                            {NULL, 0, NULL, 0}};

static int on_revoke_opt(void *ctx, int c, const char *v)
{
    revoke_args *a = ctx;
    if (c == 'f') a->from = v;
    if (c == 'k') a->check[a->ncheck++] = v;
    if (c == 'n') a->dry = 1;
    if (c == 'K') a->no_data_key = 1;
    if (c != 'c') return 0;
    const char *colon = strchr(v, ':');
    char *end;
    errno = 0;
    unsigned long long seq = colon ? strtoull(colon + 1, &end, 10) : 0;
    if (!colon || tt_unhex(v, (size_t)(colon - v), a->cut[a->ncut].site_id, TSYNC_SITE_ID_BYTES) ||
        errno || colon[1] == '\0' || colon[1] == '-' || *end)
        return tt_usage("--cutoff takes SITE:SEQ (a 32-hex-digit site id as 'tillsync "
                        "state' shows it, and a sequence number)");
    a->cut[a->ncut++].seq = seq;
    return 0;
}

static int shop_revoke(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *from = NULL;
    const char **check = calloc((size_t)argc, sizeof *check);
    int npos = 0, ncheck = 0, dry = 0;
    tsync_cutoff *cut = calloc((size_t)argc, sizeof *cut);
    size_t ncut = 0;
    if (!cut || !check) {
        free(cut), free(check);
        return 1;
    }
    revoke_args ra = {cut, 0, check, 0, NULL, 0, 0};
    const char *pos3[3] = {NULL, NULL, NULL};
    int prc = cli_parse("shop revoke", argc - 1, argv + 1, REVOKE_OPTS, NULL, NULL, on_revoke_opt,
                        &ra, pos3, 3, &npos);
    if (!prc && npos > 2)
        prc = tt_usage("shop revoke takes KEYFILE, DEVICEKEY, --cutoff SITE:SEQ, "
                       "--cutoffs-from DB, --check DB, --dry-run and --no-data-key");
    if (prc) {
        free(cut), free(check);
        return prc;
    }
    pos[0] = pos3[0], pos[1] = pos3[1];
    ncut = ra.ncut, ncheck = ra.ncheck, from = ra.from, dry = ra.dry;
    if (npos < 2) {
        free(cut), free(check);
        return tt_usage("shop revoke needs KEYFILE and DEVICEKEY");
    }
    uint8_t pk[PK];
    int ret = device_key(pos[1], pk);
    if (ret) {
        free(cut), free(check);
        return ret;
    }
    if (from) {
        /* Cutoffs from a trusted till's database: keep what it holds of the device. An explicit
         * --cutoff for the same site wins. */
        tsync_cutoff *dc;
        size_t nd;
        if (tsync_revocation_cutoffs_from_db(&dc, &nd, from, pk) != 0) {
            free(cut), free(check);
            return cli_fail("--cutoffs-from");
        }
        tsync_cutoff *nc = realloc(cut, (ncut + nd + 1) * sizeof *nc);
        if (!nc) {
            free(dc), free(cut), free(check);
            return 1;
        }
        cut = nc;
        for (size_t i = 0; i < nd; i++) {
            int dup = 0;
            for (size_t j = 0; j < ncut && !dup; j++)
                dup = memcmp(cut[j].site_id, dc[i].site_id, TSYNC_SITE_ID_BYTES) == 0;
            if (!dup) cut[ncut++] = dc[i];
        }
        free(dc);
    }
    /* The preview: a dry run shows it for every database given (and signs nothing); otherwise
     * --check DB shows it on stderr, beside the record on stdout. */
    if (from && dry) check[ncheck++] = from;
    for (int i = 0; i < ncheck && !ret; i++)
        ret = preview(dry ? stdout : stderr, check[i], pk, cut, ncut);
    if (dry && !ret && ncheck == 0)
        printf("no database given (--cutoffs-from DB or --check DB): the cutoffs are %s\n",
               ncut ? "as given" : "0 for every site");
    free(check);
    if (dry || ret) {
        free(cut);
        return ret;
    }
    tsync_shop_key *k;
    if (tt_load_key(pos[0], &k)) {
        free(cut);
        return 1;
    }
    uint8_t *out, *dkey = NULL;
    size_t len, dlen = 0;
    uint32_t before = file_version(k);
    /* The revocation, then a new data-key epoch sealed to the devices that remain. */
    if (tsync_shop_key_revoke_device(&out, &len, ra.no_data_key ? NULL : &dkey, &dlen, k, pk, cut,
                                     ncut) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", pos[0], tt_error());
        ret = 1;
    } else {
        note_upgrade(pos[0], before, k);
        if (ncut == 0)
            fprintf(stderr, "tillsync: note: no cutoff given: a till will refuse every batch of "
                            "this device that it has not merged yet (see --cutoffs-from DB)\n");
        ret = tt_emit(out, len);
        if (!ret) ret = emit_data_key(dkey, dlen, !ra.no_data_key, k);
        free(out);
        free(dkey);
    }
    free(cut);
    tsync_shop_key_free(k);
    return ret;
}

static int shop_rotate(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char *pos[3] = {NULL, NULL, NULL};
    int npos;
    int prc =
        cli_parse("shop rotate", argc - 1, argv + 1, none, NULL, NULL, NULL, NULL, pos, 3, &npos);
    if (prc) return prc;
    if (npos != 2) return tt_usage("shop rotate needs KEYFILE and NEWKEYFILE");
    tsync_shop_key *old;
    if (tt_load_key(pos[0], &old)) return 1;
    uint8_t *out = NULL;
    size_t len;
    int ret = tsync_shop_key_rotate(NULL, &out, &len, old, pos[1]) != 0 ? cli_fail("shop rotate")
                                                                        : tt_emit(out, len);
    free(out);
    tsync_shop_key_free(old);
    return ret;
}

/* 1 when the file at path is an admin key file (its first bytes say so), 0 when not, -1 after
 * printing why it cannot be read. Only the head is read: the secret never enters this program's
 * buffers. */
static int is_key_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tillsync: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char head[8];
    size_t n = fread(head, 1, sizeof head, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "tillsync: cannot read %s\n", path);
        return -1;
    }
    return tsync_shop_key_sniff(head, n);
}

static int shop_show(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char *pos[2] = {NULL, NULL};
    int npos;
    int prc =
        cli_parse("shop show", argc - 1, argv + 1, none, NULL, NULL, NULL, NULL, pos, 2, &npos);
    if (prc) return prc;
    if (npos != 1) return tt_usage("shop show needs FILE");
    const char *path = pos[0];
    /* An admin key file? Shown without its secret. */
    int is_key = strcmp(path, "-") == 0 ? 0 : is_key_file(path);
    if (is_key < 0) return 1;
    if (is_key) {
        tsync_shop_key *k;
        if (tt_load_key(path, &k)) return 1;
        tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
        uint32_t version = 0, epoch = 0;
        size_t live = 0, dead = 0;
        int rc = tsync_shop_key_info(&info, k);
        if (rc == 0) rc = tsync_shop_key_file_state(k, &version, &epoch, &live, &dead);
        tsync_shop_key_free(k);
        if (rc) return cli_fail("admin key");
        char id[2 * TSYNC_SHOP_ID_BYTES + 1], pk[2 * PK + 1], d[32];
        tt_hex(info.shop_id, TSYNC_SHOP_ID_BYTES, id);
        tt_hex(info.admin_key, PK, pk);
        printf("shop admin key file (version %" PRIu32 ")\nshop:       %s (id %s)\n"
               "admin key:  %s\ncreated:    %s\n",
               version, info.shop_name, id, pk, tsync_trust_date(info.created_ms, d));
        if (epoch)
            printf("data key:   epoch %" PRIu32 "\n", epoch);
        else
            printf("data key:   none yet (tillsync shop data-key %s makes epoch 1)\n", path);
        printf("devices:    %zu certified, %zu revoked (as this key file recorded them)\n", live,
               dead);
        return 0;
    }
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = tt_read_records(path, &r);
    for (size_t i = 0; !ret && i < r.n; i++) {
        tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
        ret = tt_decode(path, r.records[i], r.lens[i], 0, &t);
        char *s = ret ? NULL : tt_describe(&t);
        if (s) printf("%s%s\nsignature:  verifies\n", i ? "\n" : "", s);
        free(s);
        tsync_trust_record_clear(&t);
    }
    tsync_trust_records_clear(&r);
    return ret;
}

static int shop_sign_migration(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[3] = {NULL, NULL, NULL}, *outp = NULL;
    int npos;
    int prc = cli_parse("shop sign-migration", argc - 1, argv + 1, opts, "o:", NULL, cli_on_value,
                        &outp, pos, 3, &npos);
    if (prc) return prc;
    if (npos > 2) return tt_usage("shop sign-migration takes KEYFILE FILE.sql [-o OUT]");
    const char *keyfile = pos[0], *sqlfile = pos[1];
    if (!keyfile || !sqlfile) return tt_usage("shop sign-migration needs KEYFILE and FILE.sql");
    const char *base = strrchr(sqlfile, '/') ? strrchr(sqlfile, '/') + 1 : sqlfile;
    int64_t number;
    if (tsync_migration_number(&number, base) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", sqlfile, tt_error());
        return 1;
    }
    char *sql;
    size_t len;
    if (tt_slurp(sqlfile, &sql, &len)) return 1;
    tsync_shop_key *k;
    if (tt_load_key(keyfile, &k)) {
        free(sql);
        return 1;
    }
    uint8_t *rec = NULL;
    size_t rlen = 0;
    int rc = tsync_shop_key_sign_migration(&rec, &rlen, k, base, sql, len);
    tsync_shop_key_free(k);
    free(sql);
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", sqlfile, tt_error());
        return 1;
    }
    char *def = NULL;
    if (!outp) {
        size_t n = strlen(sqlfile);
        def = malloc(n + 3);
        if (!def) {
            free(rec);
            return 1;
        }
        snprintf(def, n + 3, "%.*s.tsmig", (int)(n - 4), sqlfile);
        outp = def;
    }
    char *text = tt_armoured(rec, rlen);
    free(rec);
    FILE *f = text ? fopen(outp, "wx") : NULL;
    int ret = 0;
    if (!text) {
        ret = 1;
    } else if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "tillsync: cannot write %s: %s\n", outp, strerror(errno));
        ret = 1;
    } else {
        printf("wrote %s: migration %lld %s, signed by the admin of the shop; install it on one "
               "till with 'tillsync migrate DB %s'\n",
               outp, (long long)number, base, outp);
    }
    free(text);
    free(def);
    return ret;
}

/* shop grant's --relay ADDR[#KEY] (repeated), --relay-key HEX (for the --relay before it),
 * --quota-mb N and --days N. */
#define MAX_RELAYS 8
typedef struct {
    char addr[MAX_RELAYS][256];
    uint8_t key[MAX_RELAYS][PK];
    int has_key[MAX_RELAYS];
    size_t n;
    const char *quota, *days;
    int bad; /* a usage error was printed */
} grant_args;

static int on_grant_opt(void *ctx, int c, const char *v)
{
    grant_args *a = ctx;
    if (c == 'q') a->quota = v;
    if (c == 'd') a->days = v;
    if (c == 'r') {
        if (a->n == MAX_RELAYS) return a->bad = tt_usage("shop grant takes at most 8 relays");
        const char *hash = strchr(v, '#');
        size_t alen = hash ? (size_t)(hash - v) : strlen(v);
        if (alen >= sizeof a->addr[0]) return a->bad = tt_usage("--relay: address too long");
        memcpy(a->addr[a->n], v, alen);
        a->addr[a->n][alen] = '\0';
        if (hash) {
            if (tt_unhex(hash + 1, strlen(hash + 1), a->key[a->n], PK))
                return a->bad = tt_usage("--relay ADDR#KEY: KEY is 64 hex digits");
            a->has_key[a->n] = 1;
        }
        a->n++;
    }
    if (c == 'k') {
        if (a->n == 0 || a->has_key[a->n - 1])
            return a->bad = tt_usage("--relay-key HEX follows the --relay it belongs to");
        if (tt_unhex(v, strlen(v), a->key[a->n - 1], PK))
            return a->bad = tt_usage("--relay-key takes 64 hex digits");
        a->has_key[a->n - 1] = 1;
    }
    return 0;
}

static int shop_grant(int argc, char **argv)
{
    static const struct option opts[] = {{"relay", required_argument, NULL, 'r'},
                                         {"relay-key", required_argument, NULL, 'k'},
                                         {"quota-mb", required_argument, NULL, 'q'},
                                         {"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[2] = {NULL, NULL};
    grant_args a;
    memset(&a, 0, sizeof a);
    int npos;
    int prc = cli_parse("shop grant", argc - 1, argv + 1, opts, NULL, NULL, on_grant_opt, &a, pos,
                        2, &npos);
    if (prc || a.bad) return prc ? prc : a.bad;
    if (npos != 1)
        return tt_usage("shop grant takes KEYFILE --relay tcp://HOST:PORT#RELAYKEY... "
                        "[--quota-mb N] [--days N]");
    if (a.n == 0) return tt_usage("shop grant needs at least one --relay tcp://HOST:PORT#KEY");
    for (size_t i = 0; i < a.n; i++)
        if (!a.has_key[i])
            return tt_usage("every --relay needs the relay's key: ADDR#KEY or --relay-key HEX");
    unsigned days = 365;
    if (a.days && tt_parse_days(a.days, &days))
        return tt_usage("--days takes a number from 1 to 36500");
    uint64_t quota = 0;
    if (a.quota) {
        char *end;
        errno = 0;
        unsigned long long q = strtoull(a.quota, &end, 10);
        if (errno || end == a.quota || *end || a.quota[0] == '-')
            return tt_usage("--quota-mb takes a whole number of megabytes (0: no quota)");
        quota = q;
    }
    tsync_shop_key *k;
    if (tt_load_key(pos[0], &k)) return 1;
    const char *addrs[MAX_RELAYS];
    for (size_t i = 0; i < a.n; i++) addrs[i] = a.addr[i];
    uint64_t expires = (uint64_t)time(NULL) * 1000u + (uint64_t)days * 86400000u;
    uint8_t *rec = NULL;
    size_t len = 0;
    int ret = 0;
    if (tsync_shop_key_sign_grant(&rec, &len, k, addrs, (const uint8_t(*)[PK])a.key, a.n, quota,
                                  expires) != 0) {
        fprintf(stderr, "tillsync: %s\n", tt_error());
        ret = 1;
    }
    tsync_shop_key_free(k);
    if (!ret) ret = tt_emit(rec, len);
    free(rec);
    return ret;
}

/* shop data-key's --device PUBKEY (repeats) and --from DB. */
typedef struct {
    uint8_t (*dev)[PK];
    size_t ndev;
    const char *from;
    int bad;
} dk_args;

static int on_dk_opt(void *ctx, int c, const char *v)
{
    dk_args *a = ctx;
    if (c == 'f') a->from = v;
    if (c == 'D' && device_key(v, a->dev[a->ndev++])) a->bad = 1;
    return 0;
}

/* The certified devices of DB's trust set that are not revoked, appended to a->dev. */
static int devices_from(const char *db, const uint8_t shop_id[TSYNC_SHOP_ID_BYTES], dk_args *a,
                        size_t cap)
{
    tsync_store *s;
    if (cli_open(db, CLI_RO, &s)) return 1;
    tsync_trust_set t = TSYNC_TRUST_SET_INIT;
    int ret = 0;
    if (tsync_trust_set_get(&t, s) != 0) {
        ret = cli_fail("--from");
    } else if (!t.enrolled) {
        fprintf(stderr, "tillsync: --from %s: the database is not enrolled in a shop\n", db);
        ret = 1;
    } else if (memcmp(t.shop_id, shop_id, TSYNC_SHOP_ID_BYTES) != 0) {
        fprintf(stderr,
                "tillsync: --from %s: the database is enrolled in shop '%s', not the shop "
                "of this key file\n",
                db, t.shop_name);
        ret = 1;
    } else {
        uint8_t(*v)[PK] = realloc(a->dev, (cap + t.ndevices + 1) * sizeof *v);
        if (!v) {
            fprintf(stderr, "tillsync: out of memory\n");
            ret = 1;
        } else {
            a->dev = v;
            for (size_t i = 0; i < t.ndevices; i++)
                if (!t.devices[i].revoked) memcpy(a->dev[a->ndev++], t.devices[i].key, PK);
        }
    }
    tsync_trust_set_clear(&t);
    tsync_store_free(s);
    return ret;
}

static int shop_data_key(int argc, char **argv)
{
    static const struct option opts[] = {{"device", required_argument, NULL, 'D'},
                                         {"from", required_argument, NULL, 'f'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[2] = {NULL, NULL};
    dk_args a = {calloc((size_t)argc + 1, PK), 0, NULL, 0};
    if (!a.dev) return 1;
    int npos;
    int ret = cli_parse("shop data-key", argc - 1, argv + 1, opts, NULL, NULL, on_dk_opt, &a, pos,
                        2, &npos);
    if (!ret && a.bad) ret = 1;
    if (!ret && npos != 1)
        ret = tt_usage("shop data-key needs KEYFILE (and takes --device PUBKEY..., --from DB)");
    tsync_shop_key *k = NULL;
    if (!ret && tt_load_key(pos[0], &k)) ret = 1;
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    if (!ret && tsync_shop_key_info(&info, k) != 0) ret = cli_fail("admin key");
    if (!ret && a.from) ret = devices_from(a.from, info.shop_id, &a, a.ndev);
    uint8_t *rec = NULL;
    size_t len = 0;
    uint32_t before = k ? file_version(k) : 0;
    /* A key given twice (by --device and --from) counts once. */
    size_t n = 0;
    for (size_t i = 0; i < a.ndev; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = memcmp(a.dev[j], a.dev[i], PK) == 0;
        if (!dup) memmove(a.dev[n++], a.dev[i], PK);
    }
    if (!ret && tsync_shop_key_data_key(&rec, &len, k, (const uint8_t(*)[PK])a.dev, n) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", pos[0], tt_error());
        ret = 1;
    }
    if (!ret) note_upgrade(pos[0], before, k);
    if (!ret) ret = emit_dk(rec, len, k);
    free(rec);
    free(a.dev);
    tsync_shop_key_free(k);
    return ret;
}

int cmd_shop(int argc, char **argv)
{
    if (argc < 3) return tt_usage("shop needs create, sign, revoke, rotate or show");
    const char *c = argv[2];
    if (!strcmp(c, "create")) return shop_create(argc, argv);
    if (!strcmp(c, "sign")) return shop_sign(argc, argv);
    if (!strcmp(c, "revoke")) return shop_revoke(argc, argv);
    if (!strcmp(c, "rotate")) return shop_rotate(argc, argv);
    if (!strcmp(c, "show")) return shop_show(argc, argv);
    if (!strcmp(c, "sign-migration")) return shop_sign_migration(argc, argv);
    if (!strcmp(c, "grant")) return shop_grant(argc, argv);
    if (!strcmp(c, "data-key")) return shop_data_key(argc, argv);
    return tt_usage("shop: unknown subcommand (create, sign, revoke, rotate, sign-migration, "
                    "grant, data-key, show)");
}
