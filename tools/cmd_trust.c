/*
 * tools/cmd_trust.c — the commands of shop trust: the shop admin's (create a shop, sign an
 * enrolment request, revoke a device, rotate the admin key, show a trust file) and the till's
 * (make a request, enrol, install a revocation, show the database's shop). docs/TRUST.md is the
 * walk-through. Everything goes through the public API (tillsync/trust.h); this file parses
 * arguments, reads and writes files and prints.
 *
 * Records travel as armoured text with "# " comment lines above the block that say in plain
 * words what the block is, so an IT person can tell files apart and check them before
 * installing. Readers ignore the comments: only the signed block counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"
#include "tools/cmd_trust.h"

#define DEFAULT_DAYS 365u
#define PK           TSYNC_PUBLIC_KEY_BYTES

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

/* The message of the last failing library call. */
static const char *last_error(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "unknown error";
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *date(uint64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms / 1000 > (uint64_t)253402300799 || !gmtime_r(&t, &tm)) {
        snprintf(out, 32, "%" PRIu64 " ms", ms);
        return out;
    }
    strftime(out, 32, "%Y-%m-%d %H:%M UTC", &tm);
    return out;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = d[p[i] >> 4], out[2 * i + 1] = d[p[i] & 15];
    out[2 * n] = '\0';
}

static int unhex(const char *s, size_t slen, uint8_t *out, size_t n)
{
    if (slen != 2 * n) return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0) return -1;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

/* A whole file (or stdin for "-") into a NUL-terminated buffer. */
static int slurp(const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tillsync: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 4096, n = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            /* No trust file is anywhere near this: refuse rather than read a disk image. */
            if (cap >= (16u << 20)) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int bad = !buf || ferror(f);
    if (f != stdin) fclose(f);
    if (bad) {
        free(buf);
        fprintf(stderr, "tillsync: cannot read %s%s\n", path,
                errno == EFBIG ? ": too large for a trust file" : "");
        return 1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* The records of a file, appended to *r: its armoured blocks, or the whole file when it has none
 * (a record as raw bytes). */
static int read_records(const char *path, tsync_trust_records *r)
{
    char *text;
    size_t len;
    if (slurp(path, &text, &len)) return 1;
    int rc = len ? tsync_trust_records_parse(r, text, len) : 0;
    free(text);
    if (len == 0) {
        fprintf(stderr, "tillsync: %s is empty\n", path);
        return 1;
    }
    if (rc == TSYNC_ENOTFOUND) {
        fprintf(stderr, "tillsync: %s %s\n", path, last_error());
        return 1;
    }
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", path, last_error());
        return 1;
    }
    return 0;
}

/* Decodes a record read from path, which must be of kind want (0: any). */
static int decode(const char *path, const uint8_t *rec, size_t len, int want,
                  tsync_trust_record *out)
{
    if (tsync_trust_record_decode(out, rec, len) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", path, last_error());
        return 1;
    }
    if (want && out->kind != want) {
        fprintf(stderr, "tillsync: %s holds a %s, not a %s\n", path,
                tsync_trust_kind_label(out->kind), tsync_trust_kind_label(want));
        return 1;
    }
    return 0;
}

/* The comment lines above an armoured block, in a malloc'd string. */
static char *describe(const tsync_trust_record *r)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) return NULL;
    char h[2 * PK + 1], d1[32], d2[32];
    switch (r->kind) {
    case TSYNC_TRUST_REQUEST:
        fprintf(f, "tillsync enrolment request (give it to the shop admin: tillsync shop sign)\n");
        fprintf(f, "device:     %s", r->device_name);
        hex(r->device_key, PK, h);
        fprintf(f, "\ndevice key: %s\nmade:       %s", h, date(r->issued_ms, d1));
        break;
    case TSYNC_TRUST_CERTIFICATE:
        fprintf(f,
                "tillsync certificate (install it on the till: tillsync enrol DB CERT)\nshop:    "
                "   %s",
                r->shop_name);
        hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f, " (id %s)\ndevice:     %s", h, r->device_name);
        hex(r->device_key, PK, h);
        fprintf(f, "\ndevice key: %s\nvalid:      %s to %s", h, date(r->not_before_ms, d1),
                date(r->expires_ms, d2));
        break;
    case TSYNC_TRUST_REVOCATION:
        hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync revocation (install it on one till: tillsync revoke DB FILE)\nshop "
                "id:    %s\n",
                h);
        hex(r->device_key, PK, h);
        fprintf(f, "device key: %s\nissued:     %s\n", h, date(r->issued_ms, d1));
        if (r->ncutoffs == 0)
            fprintf(f, "cutoffs:    none (every batch of this device a till has not merged yet "
                       "is refused)");
        for (size_t i = 0; i < r->ncutoffs; i++) {
            hex(r->cutoffs[i].site_id, TSYNC_SITE_ID_BYTES, h);
            fprintf(f, "%s%s:%" PRIu64, i ? "\n            " : "cutoffs:    ", h,
                    r->cutoffs[i].seq);
        }
        break;
    case TSYNC_TRUST_ROTATION:
        hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync admin key rotation (install it on one till: tillsync enrol DB "
                "FILE)\nshop id:    %s\n",
                h);
        hex(r->admin_key, PK, h);
        fprintf(f, "old key:    %s\n", h);
        hex(r->new_admin_key, PK, h);
        fprintf(f, "new key:    %s\nissued:     %s", h, date(r->issued_ms, d1));
        break;
    case TSYNC_TRUST_MIGRATION:
        hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync signed migration (install it on one till: tillsync migrate DB FILE; it "
                "replicates to every till of the shop)\nshop id:    %s\nmigration:  %" PRIu64 " "
                "%s",
                h, r->migration_number, r->migration_name);
        hex(r->sql_hash, TSYNC_HASH_BYTES, h);
        fprintf(f, " (%zu bytes, hash %s)\nissued:     %s", r->sql_len, h, date(r->issued_ms, d1));
        break;
    }
    fclose(f);
    return s;
}

/* A record we just made, armoured with its description, in a malloc'd string (NULL after
 * printing why not). */
static char *armoured(const uint8_t *rec, size_t len)
{
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    if (tsync_trust_record_decode(&r, rec, len) != 0) {
        fprintf(stderr, "tillsync: internal error: a record we made does not decode: %s\n",
                last_error());
        return NULL;
    }
    char *comment = describe(&r), *text = NULL;
    tsync_trust_record_clear(&r);
    if (tsync_trust_armour(&text, rec, len, comment) != 0)
        fprintf(stderr, "tillsync: out of memory\n");
    free(comment);
    return text;
}

/* Writes a record we just made, armoured with its description, to stdout. */
static int emit(const uint8_t *rec, size_t len)
{
    char *text = armoured(rec, len);
    if (!text) return 1;
    int bad = fputs(text, stdout) < 0 || fflush(stdout) != 0;
    free(text);
    if (bad) {
        fprintf(stderr, "tillsync: cannot write to standard output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static int load_key(const char *path, tsync_shop_key **k)
{
    if (tsync_shop_key_load(k, path) != 0) return cli_fail("admin key");
    return 0;
}

static int open_db(const char *path, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(s, path, &o) != 0) return cli_fail("open");
    return 0;
}

/* --days N: 1..TSYNC_TRUST_MAX_DAYS */
static int parse_days(const char *s, unsigned *days)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || s[0] == '-' || v < 1 || v > TSYNC_TRUST_MAX_DAYS) return -1;
    *days = (unsigned)v;
    return 0;
}

/* ---------------------------------------------------------------- tillsync shop ... */

static int shop_create(int argc, char **argv)
{
    const char *path = NULL, *name = NULL;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            return usage("shop create takes KEYFILE and --name NAME");
    }
    if (!path || !name) return usage("shop create needs KEYFILE and --name NAME");
    tsync_shop_key *k;
    if (tsync_shop_key_create(&k, path, name) != 0) return cli_fail("shop create");
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    int rc = tsync_shop_key_info(&info, k);
    tsync_shop_key_free(k);
    if (rc) return cli_fail("shop create");
    char id[2 * TSYNC_SHOP_ID_BYTES + 1], pk[2 * PK + 1];
    hex(info.shop_id, TSYNC_SHOP_ID_BYTES, id);
    hex(info.admin_key, PK, pk);
    printf("shop '%s' created\n"
           "shop id:   %s\n"
           "admin key: %s\n"
           "key file:  %s (mode 0600)\n"
           "Keep the key file off the tills and keep a copy in a safe place: without it no new "
           "till can join the shop.\n",
           info.shop_name, id, pk, path);
    return 0;
}

static int shop_sign(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *name = NULL;
    int npos = 0;
    unsigned days = DEFAULT_DAYS;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            if (parse_days(argv[++i], &days)) return usage("--days takes a number from 1 to 36500");
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return usage("shop sign takes KEYFILE, REQ, --days N and --name NAME");
        }
    }
    if (npos < 2) return usage("shop sign needs KEYFILE and REQ");
    tsync_shop_key *k;
    if (load_key(pos[0], &k)) return 1;
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = read_records(pos[1], &r);
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one enrolment request\n", pos[1],
                r.n);
        ret = 1;
    }
    tsync_trust_record req = TSYNC_TRUST_RECORD_INIT;
    if (!ret) ret = decode(pos[1], r.records[0], r.lens[0], TSYNC_TRUST_REQUEST, &req);
    tsync_trust_record_clear(&req);
    uint8_t *cert = NULL;
    size_t clen;
    if (!ret) {
        tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
        o.days = days;
        o.device_name = name;
        if (tsync_shop_key_sign_request(&cert, &clen, k, r.records[0], r.lens[0], &o) != 0) {
            fprintf(stderr, "tillsync: %s\n", last_error());
            ret = 1;
        }
    }
    if (!ret) ret = emit(cert, clen);
    free(cert);
    tsync_trust_records_clear(&r);
    tsync_shop_key_free(k);
    return ret;
}

/* DEVICEKEY: 64 hex digits, or a file holding a certificate or an enrolment request. */
static int device_key(const char *arg, uint8_t pk[PK])
{
    if (unhex(arg, strlen(arg), pk, PK) == 0) return 0;
    if (access(arg, F_OK) != 0) {
        fprintf(stderr,
                "tillsync: DEVICEKEY '%s' is neither 64 hex digits nor a certificate or request "
                "file\n",
                arg);
        return 1;
    }
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = read_records(arg, &r);
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one certificate\n", arg, r.n);
        ret = 1;
    }
    if (!ret) ret = decode(arg, r.records[0], r.lens[0], 0, &t);
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
        hex(e->site_id, TSYNC_SITE_ID_BYTES, hs);
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
            hex(e->deps[k].site_id, TSYNC_SITE_ID_BYTES, ds);
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
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--cutoff") == 0 && i + 1 < argc) {
            const char *v = argv[++i], *colon = strchr(v, ':');
            char *end;
            errno = 0;
            unsigned long long seq = colon ? strtoull(colon + 1, &end, 10) : 0;
            if (!colon || unhex(v, (size_t)(colon - v), cut[ncut].site_id, TSYNC_SITE_ID_BYTES) ||
                errno || colon[1] == '\0' || colon[1] == '-' || *end) {
                free(cut), free(check);
                return usage("--cutoff takes SITE:SEQ (a 32-hex-digit site id as 'tillsync "
                             "state' shows it, and a sequence number)");
            }
            cut[ncut++].seq = seq;
        } else if (strcmp(argv[i], "--cutoffs-from") == 0 && i + 1 < argc) {
            from = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0 && i + 1 < argc) {
            check[ncheck++] = argv[++i];
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            dry = 1;
        } else if (argv[i][0] != '-' && npos < 2) {
            pos[npos++] = argv[i];
        } else {
            free(cut), free(check);
            return usage("shop revoke takes KEYFILE, DEVICEKEY, --cutoff SITE:SEQ, "
                         "--cutoffs-from DB, --check DB and --dry-run");
        }
    }
    if (npos < 2) {
        free(cut), free(check);
        return usage("shop revoke needs KEYFILE and DEVICEKEY");
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
    if (load_key(pos[0], &k)) {
        free(cut);
        return 1;
    }
    uint8_t *out;
    size_t len;
    if (tsync_shop_key_revoke(&out, &len, k, pk, cut, ncut) != 0) {
        fprintf(stderr, "tillsync: %s\n", last_error());
        ret = 1;
    } else {
        if (ncut == 0)
            fprintf(stderr, "tillsync: note: no cutoff given: a till will refuse every batch of "
                            "this device that it has not merged yet (see --cutoffs-from DB)\n");
        ret = emit(out, len);
        free(out);
    }
    free(cut);
    tsync_shop_key_free(k);
    return ret;
}

static int shop_rotate(int argc, char **argv)
{
    if (argc != 5 || argv[3][0] == '-' || argv[4][0] == '-')
        return usage("shop rotate needs KEYFILE and NEWKEYFILE");
    tsync_shop_key *old;
    if (load_key(argv[3], &old)) return 1;
    uint8_t *out = NULL;
    size_t len;
    int ret = tsync_shop_key_rotate(NULL, &out, &len, old, argv[4]) != 0 ? cli_fail("shop rotate")
                                                                         : emit(out, len);
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
    if (argc != 4) return usage("shop show needs FILE");
    const char *path = argv[3];
    /* An admin key file? Shown without its secret. */
    int is_key = strcmp(path, "-") == 0 ? 0 : is_key_file(path);
    if (is_key < 0) return 1;
    if (is_key) {
        tsync_shop_key *k;
        if (load_key(path, &k)) return 1;
        tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
        int rc = tsync_shop_key_info(&info, k);
        tsync_shop_key_free(k);
        if (rc) return cli_fail("admin key");
        char id[2 * TSYNC_SHOP_ID_BYTES + 1], pk[2 * PK + 1], d[32];
        hex(info.shop_id, TSYNC_SHOP_ID_BYTES, id);
        hex(info.admin_key, PK, pk);
        printf("shop admin key file\nshop:       %s (id %s)\nadmin key:  %s\ncreated:    %s\n",
               info.shop_name, id, pk, date(info.created_ms, d));
        return 0;
    }
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = read_records(path, &r);
    for (size_t i = 0; !ret && i < r.n; i++) {
        tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
        ret = decode(path, r.records[i], r.lens[i], 0, &t);
        char *s = ret ? NULL : describe(&t);
        if (s) printf("%s%s\nsignature:  verifies\n", i ? "\n" : "", s);
        free(s);
        tsync_trust_record_clear(&t);
    }
    tsync_trust_records_clear(&r);
    return ret;
}

static int shop_sign_migration(int argc, char **argv)
{
    const char *keyfile = NULL, *sqlfile = NULL, *outp = NULL;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc)
            outp = argv[++i];
        else if (argv[i][0] == '-')
            return usage("shop sign-migration takes KEYFILE FILE.sql [-o OUT]");
        else if (!keyfile)
            keyfile = argv[i];
        else if (!sqlfile)
            sqlfile = argv[i];
        else
            return usage("shop sign-migration takes KEYFILE FILE.sql [-o OUT]");
    }
    if (!keyfile || !sqlfile) return usage("shop sign-migration needs KEYFILE and FILE.sql");
    const char *base = strrchr(sqlfile, '/') ? strrchr(sqlfile, '/') + 1 : sqlfile;
    int64_t number;
    if (tsync_migration_number(&number, base) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", sqlfile, last_error());
        return 1;
    }
    char *sql;
    size_t len;
    if (slurp(sqlfile, &sql, &len)) return 1;
    tsync_shop_key *k;
    if (load_key(keyfile, &k)) {
        free(sql);
        return 1;
    }
    uint8_t *rec = NULL;
    size_t rlen = 0;
    int rc = tsync_shop_key_sign_migration(&rec, &rlen, k, base, sql, len);
    tsync_shop_key_free(k);
    free(sql);
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", sqlfile, last_error());
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
    char *text = armoured(rec, rlen);
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

int cli_read_signed_migration(const char *path, uint8_t **rec, size_t *len)
{
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    if (read_records(path, &r)) return 1;
    if (r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records, not one signed migration\n", path, r.n);
        tsync_trust_records_clear(&r);
        return 1;
    }
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    int ret = decode(path, r.records[0], r.lens[0], TSYNC_TRUST_MIGRATION, &t);
    tsync_trust_record_clear(&t);
    if (ret == 0) {
        *rec = r.records[0];
        *len = r.lens[0];
        r.records[0] = NULL;
    }
    tsync_trust_records_clear(&r);
    return ret;
}

int cmd_shop(int argc, char **argv)
{
    if (argc < 3) return usage("shop needs create, sign, revoke, rotate or show");
    const char *c = argv[2];
    if (!strcmp(c, "create")) return shop_create(argc, argv);
    if (!strcmp(c, "sign")) return shop_sign(argc, argv);
    if (!strcmp(c, "revoke")) return shop_revoke(argc, argv);
    if (!strcmp(c, "rotate")) return shop_rotate(argc, argv);
    if (!strcmp(c, "show")) return shop_show(argc, argv);
    if (!strcmp(c, "sign-migration")) return shop_sign_migration(argc, argv);
    return usage("shop: unknown subcommand (create, sign, revoke, rotate, sign-migration, show)");
}

/* ---------------------------------------------------------------- till side */

int cmd_enrol_request(int argc, char **argv)
{
    const char *db = NULL, *name = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (argv[i][0] != '-' && !db)
            db = argv[i];
        else
            return usage("enrol-request takes DB and --name NAME");
    }
    if (!db) return usage("enrol-request needs DB");
    tsync_store *s;
    if (open_db(db, &s)) return 1;
    uint8_t *req;
    size_t len;
    int ret = tsync_trust_request(&req, &len, s, name) ? cli_fail("enrol-request") : 0;
    tsync_store_free(s);
    if (!ret) {
        ret = emit(req, len);
        free(req);
    }
    return ret;
}

static void print_enrolled(const char *db, const tsync_enrol_report *r)
{
    char d[32], id[2 * TSYNC_SHOP_ID_BYTES + 1];
    hex(r->shop_id, TSYNC_SHOP_ID_BYTES, id);
    if (r->first) {
        printf("%s enrolled in shop '%s' (id %s) as device '%s'; certificate valid until %s\n", db,
               r->shop_name, id, r->device_name, date(r->expires_ms, d));
    } else if (r->added == 0) {
        printf("%s is enrolled in shop '%s' already and holds every record given\n", db,
               r->shop_name);
        return;
    } else if (r->own) {
        printf("certificate of device '%s' in shop '%s' installed; valid until %s\n",
               r->device_name, r->shop_name, date(r->expires_ms, d));
    }
    size_t others = r->added - (r->own ? 1 : 0);
    if (others > 0 || (!r->own && !r->first))
        printf("%zu other record%s of shop '%s' installed\n", others, others == 1 ? "" : "s",
               r->shop_name);
}

static int enrol_one_step(const char *db, const char *keyfile, const char *name, unsigned days)
{
    tsync_shop_key *k;
    if (load_key(keyfile, &k)) return 1;
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

int cmd_enrol(int argc, char **argv)
{
    const char *db = NULL, *keyfile = NULL, *name = NULL;
    unsigned days = DEFAULT_DAYS;
    int nfiles = 0, named = 0, dayed = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return 1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--shop-key") == 0 && i + 1 < argc) {
            keyfile = argv[++i];
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i], named = 1;
        } else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            dayed = 1;
            if (parse_days(argv[++i], &days)) {
                free(files);
                return usage("--days takes a number from 1 to 36500");
            }
        } else if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            if (!db)
                db = argv[i];
            else
                files[nfiles++] = argv[i];
        } else {
            free(files);
            return usage("enrol: unknown argument");
        }
    }
    int ret;
    if (!db || (!keyfile && nfiles == 0)) {
        ret = usage("enrol needs DB and CERT (or --shop-key KEYFILE)");
    } else if (keyfile && nfiles) {
        ret = usage("enrol takes CERT files or --shop-key KEYFILE, not both");
    } else if (!keyfile && (named || dayed)) {
        ret = usage("--name and --days go with --shop-key");
    } else if (keyfile) {
        ret = enrol_one_step(db, keyfile, name, days);
    } else {
        tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
        ret = 0;
        for (int i = 0; i < nfiles && !ret; i++) ret = read_records(files[i], &r);
        tsync_store *s = NULL;
        if (!ret) ret = open_db(db, &s);
        tsync_enrol_report res = TSYNC_ENROL_REPORT_INIT;
        if (!ret)
            ret = tsync_trust_enrol(&res, s, (const uint8_t *const *)r.records, r.lens, r.n)
                      ? cli_fail("enrol")
                      : 0;
        if (!ret) print_enrolled(db, &res);
        tsync_store_free(s);
        tsync_trust_records_clear(&r);
    }
    free(files);
    return ret;
}

int cmd_revoke(int argc, char **argv)
{
    if (argc != 4)
        return usage(argc < 4 ? "revoke needs DB and REVOCATION"
                              : "revoke takes only "
                                "DB and REVOCATION");
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    int ret = read_records(argv[3], &r);
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    for (size_t i = 0; !ret && i < r.n; i++)
        ret = decode(argv[3], r.records[i], r.lens[i], TSYNC_TRUST_REVOCATION, &t);
    tsync_store *s = NULL;
    if (!ret) ret = open_db(argv[2], &s);
    for (size_t i = 0; !ret && i < r.n; i++)
        ret = tsync_trust_revoke(s, r.records[i], r.lens[i]) ? cli_fail("revoke") : 0;
    if (!ret) {
        for (size_t i = 0; i < r.n; i++) {
            if (tsync_trust_record_decode(&t, r.records[i], r.lens[i]) == 0) {
                char h[2 * PK + 1];
                hex(t.device_key, PK, h);
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
    hex(t->shop_id, TSYNC_SHOP_ID_BYTES, h);
    printf("shop:       %s (id %s)\n", t->shop_name, h);
    for (size_t i = 0; i < t->nadmin_keys; i++) {
        hex(t->admin_keys[i], PK, h);
        printf("%s%s\n", i ? "            " : "admin key:  ", h);
    }
    printf("devices:\n");
    uint64_t now = wall_ms();
    for (size_t i = 0; i < t->ndevices; i++) {
        const tsync_trust_device *e = &t->devices[i];
        const char *st = e->revoked ? "REVOKED" : e->expires_ms < now ? "EXPIRED" : "valid";
        hex(e->key, PK, h);
        printf("  %-20s %.16s…  %s to %s  %s%s\n", e->name, h, date(e->not_before_ms, d1),
               date(e->expires_ms, d2), st, e->this_device ? "  (this device)" : "");
    }
}

int cmd_trust(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--json") != 0))
        return usage("trust needs DB and optionally --json");
    tsync_store *s;
    if (cli_open(argv[2], CLI_RO, &s)) return 1;
    int ret = 0;
    if (argc == 4) {
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
