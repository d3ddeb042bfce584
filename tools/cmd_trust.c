/*
 * tools/cmd_trust.c — the commands of shop trust: the shop admin's (create a shop, sign an
 * enrolment request, revoke a device, rotate the admin key, show a trust file) and the till's
 * (make a request, enrol, install a revocation, show the database's shop). docs/TRUST.md is the
 * walk-through.
 *
 * Records travel as armoured text (see crdt/cert.h) with "# " comment lines above the block that
 * say in plain words what the block is, so an IT person can tell files apart and check them before
 * installing. Readers ignore the comments: only the signed block counts.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/trust.h"
#include "tools/cli.h"
#include "tools/cmd_trust.h"

#define DEFAULT_DAYS 365u
#define MAX_DAYS     36500u
#define DAY_MS       86400000ull

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
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

/* The records of a file: its armoured blocks, or the whole file when it has none (a record as raw
 * bytes). Appends to *recs / *lens (malloc'd arrays of malloc'd blobs). */
typedef struct {
    uint8_t **rec;
    size_t *len;
    size_t n;
} recs;

static void recs_free(recs *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->rec[i]);
    free(r->rec);
    free(r->len);
    memset(r, 0, sizeof *r);
}

static int recs_add(recs *r, uint8_t *rec, size_t len)
{
    uint8_t **nr = realloc(r->rec, (r->n + 1) * sizeof *nr);
    if (nr) r->rec = nr;
    size_t *nl = realloc(r->len, (r->n + 1) * sizeof *nl);
    if (nl) r->len = nl;
    if (!nr || !nl) {
        free(rec);
        fprintf(stderr, "tillsync: out of memory\n");
        return 1;
    }
    r->rec[r->n] = rec;
    r->len[r->n++] = len;
    return 0;
}

static int read_records(const char *path, recs *r)
{
    char *text;
    size_t len;
    if (slurp(path, &text, &len)) return 1;
    size_t pos = 0, found = 0;
    char err[TSYNC__ERRLEN];
    for (;;) {
        uint32_t kind;
        uint8_t *rec;
        size_t rlen;
        int rc = tsync__dearmour(text, len, &pos, &kind, &rec, &rlen, err);
        if (rc == TSYNC_ENOTFOUND) break;
        if (rc) {
            fprintf(stderr, "tillsync: %s: %s\n", path, err);
            free(text);
            return 1;
        }
        if (rlen >= 2 && rec[0] >= 0x90 && rec[0] <= 0x9f && rec[1] >= 1 && rec[1] <= 5 &&
            rec[1] != kind) {
            /* the record's own kind (its second byte: [array, kind, ...]) must match the label;
             * anything malformed is left for the decoder to explain */
            fprintf(stderr, "tillsync: %s: the block labelled %s holds another kind of record\n",
                    path, tsync__trust_label(kind));
            free(rec);
            free(text);
            return 1;
        }
        if (recs_add(r, rec, rlen)) {
            free(text);
            return 1;
        }
        found++;
    }
    if (found == 0) {
        if (len == 0) {
            fprintf(stderr, "tillsync: %s is empty\n", path);
            free(text);
            return 1;
        }
        /* no armour: the file may be one record as raw bytes (a msgpack array) */
        if ((uint8_t)text[0] < 0x90 || (uint8_t)text[0] > 0x9f) {
            fprintf(stderr,
                    "tillsync: %s holds no tillsync record (no '-----BEGIN TILLSYNC ...' "
                    "block)\n",
                    path);
            free(text);
            return 1;
        }
        return recs_add(r, (uint8_t *)text, len);
    }
    free(text);
    return 0;
}

/* Decodes a record read from path, which must be of kind want (0: any). */
static int decode(const char *path, const uint8_t *rec, size_t len, uint32_t want,
                  tsync__trust_rec *out, tsync__arena *a)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_decode(rec, len, out, a, err);
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", path, err);
        return 1;
    }
    if (want && out->kind != want) {
        const char *l = tsync__trust_label(out->kind);
        fprintf(stderr, "tillsync: %s holds a %s, not a %s\n", path, l, tsync__trust_label(want));
        return 1;
    }
    return 0;
}

static void print_name(FILE *f, const char *s, uint32_t n)
{
    fwrite(s, 1, n, f);
}

/* The comment lines above an armoured block, in a malloc'd string. */
static char *describe(const tsync__trust_rec *r)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) return NULL;
    char h[2 * TSYNC__PK_BYTES + 1], d1[32], d2[32];
    switch (r->kind) {
    case TSYNC__T_REQUEST:
        fprintf(f, "tillsync enrolment request (give it to the shop admin: tillsync shop sign)\n");
        fprintf(f, "device:     ");
        print_name(f, r->u.req.device_name, r->u.req.device_name_len);
        hex(r->u.req.device_pk, TSYNC__PK_BYTES, h);
        fprintf(f, "\ndevice key: %s\nmade:       %s", h, date(r->u.req.created_ms, d1));
        break;
    case TSYNC__T_CERT:
        fprintf(f,
                "tillsync certificate (install it on the till: tillsync enrol DB CERT)\nshop:    "
                "   ");
        print_name(f, r->u.cert.shop_name, r->u.cert.shop_name_len);
        hex(r->u.cert.shop_id, TSYNC__SHOP_ID_BYTES, h);
        fprintf(f, " (id %s)\ndevice:     ", h);
        print_name(f, r->u.cert.device_name, r->u.cert.device_name_len);
        hex(r->u.cert.device_pk, TSYNC__PK_BYTES, h);
        fprintf(f, "\ndevice key: %s\nvalid:      %s to %s", h, date(r->u.cert.not_before_ms, d1),
                date(r->u.cert.expires_ms, d2));
        break;
    case TSYNC__T_REVOCATION:
        hex(r->u.rev.shop_id, TSYNC__SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync revocation (install it on one till: tillsync revoke DB FILE)\nshop "
                "id:    %s\n",
                h);
        hex(r->u.rev.device_pk, TSYNC__PK_BYTES, h);
        fprintf(f, "device key: %s\nissued:     %s\n", h, date(r->u.rev.issued_ms, d1));
        if (r->u.rev.ncutoffs == 0)
            fprintf(f, "cutoffs:    none (every batch of this device a till has not merged yet "
                       "is refused)");
        for (uint32_t i = 0; i < r->u.rev.ncutoffs; i++) {
            hex(r->u.rev.cutoffs[i].site, TSYNC__SITE_BYTES, h);
            fprintf(f, "%s%s:%" PRIu64, i ? "\n            " : "cutoffs:    ", h,
                    r->u.rev.cutoffs[i].seq);
        }
        break;
    case TSYNC__T_ROTATION:
        hex(r->u.rot.shop_id, TSYNC__SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync admin key rotation (install it on one till: tillsync enrol DB "
                "FILE)\nshop id:    %s\n",
                h);
        hex(r->u.rot.old_pk, TSYNC__PK_BYTES, h);
        fprintf(f, "old key:    %s\n", h);
        hex(r->u.rot.new_pk, TSYNC__PK_BYTES, h);
        fprintf(f, "new key:    %s\nissued:     %s", h, date(r->u.rot.issued_ms, d1));
        break;
    case TSYNC__T_MIGRATION: {
        uint8_t sum[TSYNC__HASH_BYTES];
        crypto_generichash(sum, sizeof sum, r->u.mig.sql, r->u.mig.sql_len, NULL, 0);
        hex(r->u.mig.shop_id, TSYNC__SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync signed migration (install it on one till: tillsync migrate DB FILE; it "
                "replicates to every till of the shop)\nshop id:    %s\nmigration:  %" PRIu64 " ",
                h, r->u.mig.number);
        print_name(f, r->u.mig.name, r->u.mig.name_len);
        hex(sum, sizeof sum, h);
        fprintf(f, " (%" PRIu32 " bytes, hash %s)\nissued:     %s", r->u.mig.sql_len, h,
                date(r->u.mig.issued_ms, d1));
        break;
    }
    }
    fclose(f);
    return s;
}

/* Writes a record we just made, armoured with its description, to stdout. */
static int emit(const uint8_t *rec, size_t len)
{
    tsync__arena a = {0};
    tsync__trust_rec r;
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_decode(rec, len, &r, &a, err);
    if (rc) {
        fprintf(stderr, "tillsync: internal error: a record we made does not decode: %s\n", err);
        tsync__arena_free(&a);
        return 1;
    }
    char *comment = describe(&r), *text;
    tsync__arena_free(&a);
    rc = tsync__armour(r.kind, rec, len, comment, &text);
    free(comment);
    if (rc) {
        fprintf(stderr, "tillsync: out of memory\n");
        return 1;
    }
    int bad = fputs(text, stdout) < 0 || fflush(stdout) != 0;
    free(text);
    if (bad) {
        fprintf(stderr, "tillsync: cannot write to standard output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static int load_key(const char *path, tsync__shopkey *k)
{
    if (tsync__shopkey_load(path, k) != 0) return cli_fail("admin key");
    return 0;
}

static int open_db(const char *path, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(s, path, &o) != 0) return cli_fail("open");
    return 0;
}

/* --days N: 1..MAX_DAYS */
static int parse_days(const char *s, unsigned *days)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || s[0] == '-' || v < 1 || v > MAX_DAYS) return -1;
    *days = (unsigned)v;
    return 0;
}

/* Verifies a request and signs a certificate for it. name overrides the requested device name. */
static int sign_request(const tsync__shopkey *k, const char *path, const uint8_t *req, size_t len,
                        const char *name, unsigned days, uint8_t **cert, size_t *clen)
{
    tsync__arena a = {0};
    tsync__trust_rec r;
    if (decode(path, req, len, TSYNC__T_REQUEST, &r, &a)) {
        tsync__arena_free(&a);
        return 1;
    }
    uint64_t now = wall_ms();
    tsync__cert c = {
        .shop_name = k->name,
        .shop_name_len = k->name_len,
        .device_name = name ? name : r.u.req.device_name,
        .device_name_len = name ? (uint32_t)strlen(name) : r.u.req.device_name_len,
        .not_before_ms = now,
        .expires_ms = now + (uint64_t)days * DAY_MS,
    };
    memcpy(c.shop_id, k->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(c.device_pk, r.u.req.device_pk, TSYNC__PK_BYTES);
    memcpy(c.admin_pk, k->pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    int rc = tsync__cert_sign(&c, k->sk, cert, clen, err);
    tsync__arena_free(&a);
    if (rc) {
        fprintf(stderr, "tillsync: %s\n", err);
        return 1;
    }
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
    tsync__shopkey k;
    if (tsync__shopkey_create(path, name, wall_ms(), &k) != 0) return cli_fail("shop create");
    char id[2 * TSYNC__SHOP_ID_BYTES + 1], pk[2 * TSYNC__PK_BYTES + 1];
    hex(k.shop_id, TSYNC__SHOP_ID_BYTES, id);
    hex(k.pk, TSYNC__PK_BYTES, pk);
    printf("shop '%s' created\n"
           "shop id:   %s\n"
           "admin key: %s\n"
           "key file:  %s (mode 0600)\n"
           "Keep the key file off the tills and keep a copy in a safe place: without it no new "
           "till can join the shop.\n",
           k.name, id, pk, path);
    tsync__shopkey_wipe(&k);
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
    tsync__shopkey k;
    if (load_key(pos[0], &k)) return 1;
    recs r = {0};
    int ret = read_records(pos[1], &r);
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one enrolment request\n", pos[1],
                r.n);
        ret = 1;
    }
    uint8_t *cert = NULL;
    size_t clen;
    if (!ret) ret = sign_request(&k, pos[1], r.rec[0], r.len[0], name, days, &cert, &clen);
    if (!ret) ret = emit(cert, clen);
    free(cert);
    recs_free(&r);
    tsync__shopkey_wipe(&k);
    return ret;
}

/* DEVICEKEY: 64 hex digits, or a file holding a certificate or an enrolment request. */
static int device_key(const char *arg, uint8_t pk[TSYNC__PK_BYTES])
{
    if (unhex(arg, strlen(arg), pk, TSYNC__PK_BYTES) == 0) return 0;
    if (access(arg, F_OK) != 0) {
        fprintf(stderr,
                "tillsync: DEVICEKEY '%s' is neither 64 hex digits nor a certificate or request "
                "file\n",
                arg);
        return 1;
    }
    recs r = {0};
    int ret = read_records(arg, &r);
    tsync__arena a = {0};
    tsync__trust_rec t;
    if (!ret && r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records; give one certificate\n", arg, r.n);
        ret = 1;
    }
    if (!ret) ret = decode(arg, r.rec[0], r.len[0], 0, &t, &a);
    if (!ret) {
        if (t.kind == TSYNC__T_CERT) {
            memcpy(pk, t.u.cert.device_pk, TSYNC__PK_BYTES);
        } else if (t.kind == TSYNC__T_REQUEST) {
            memcpy(pk, t.u.req.device_pk, TSYNC__PK_BYTES);
        } else {
            fprintf(stderr, "tillsync: %s holds no device key (give a certificate)\n", arg);
            ret = 1;
        }
    }
    tsync__arena_free(&a);
    recs_free(&r);
    return ret;
}

/* What the revocation would cut, seen from the database at path (read-only): per site of the
 * device, its cutoff, what the database holds after it and which other devices' batches depend on
 * those (so every till keeps them). */
static int preview(FILE *f, const char *path, const uint8_t pk[TSYNC__PK_BYTES],
                   const tsync__cutoff *cut, uint32_t ncut)
{
    tsync__cut_site *v;
    uint32_t n;
    if (tsync__trust_cut_preview(path, pk, cut, ncut, &v, &n) != 0) return cli_fail(path);
    char hs[2 * TSYNC__SITE_BYTES + 1];
    fprintf(f, "what the revocation cuts, as %s sees it:\n", path);
    if (n == 0) fprintf(f, "  %s knows no site of this device: nothing to cut there\n", path);
    for (uint32_t i = 0; i < n; i++) {
        tsync__cut_site *e = &v[i];
        hex(e->site, TSYNC__SITE_BYTES, hs);
        fprintf(f, "site %s: cutoff %" PRIu64 "\n", hs, e->cutoff);
        if (!e->known)
            fprintf(f, "  %s does not know this site\n", path);
        else if (e->beyond == 0)
            fprintf(f, "  %s holds up to %" PRIu64 ": nothing after the cutoff\n", path, e->have);
        else
            fprintf(f, "  %s holds up to %" PRIu64 ": %" PRIu64 " batch%s after the cutoff\n", path,
                    e->have, e->beyond, e->beyond == 1 ? "" : "es");
        for (uint32_t k = 0; k < e->ndeps; k++) {
            char ds[2 * TSYNC__SITE_BYTES + 1];
            hex(e->deps[k].site, TSYNC__SITE_BYTES, ds);
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
    tsync__cut_preview_free(v, n);
    return 0;
}

static int shop_revoke(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *from = NULL;
    const char **check = calloc((size_t)argc, sizeof *check);
    int npos = 0, ncheck = 0, dry = 0;
    tsync__cutoff *cut = calloc((size_t)argc, sizeof *cut);
    uint32_t ncut = 0;
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
            if (!colon || unhex(v, (size_t)(colon - v), cut[ncut].site, TSYNC__SITE_BYTES) ||
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
    tsync__revocation v = {.issued_ms = wall_ms()};
    tsync__shopkey k;
    int ret = device_key(pos[1], v.device_pk);
    if (ret) {
        free(cut), free(check);
        return ret;
    }
    if (from) {
        /* Cutoffs from a trusted till's database: keep what it holds of the device. An explicit
         * --cutoff for the same site wins. */
        tsync__cutoff *dc;
        uint32_t nd;
        if (tsync__trust_cutoffs_from_db(from, v.device_pk, &dc, &nd) != 0) {
            free(cut), free(check);
            return cli_fail("--cutoffs-from");
        }
        tsync__cutoff *nc = realloc(cut, ((size_t)ncut + nd + 1) * sizeof *nc);
        if (!nc) {
            free(dc), free(cut), free(check);
            return 1;
        }
        cut = nc;
        for (uint32_t i = 0; i < nd; i++) {
            int dup = 0;
            for (uint32_t j = 0; j < ncut && !dup; j++)
                dup = memcmp(cut[j].site, dc[i].site, TSYNC__SITE_BYTES) == 0;
            if (!dup) cut[ncut++] = dc[i];
        }
        free(dc);
    }
    /* The preview: a dry run shows it for every database given (and signs nothing); otherwise
     * --check DB shows it on stderr, beside the record on stdout. */
    if (from && dry) check[ncheck++] = from;
    for (int i = 0; i < ncheck && !ret; i++)
        ret = preview(dry ? stdout : stderr, check[i], v.device_pk, cut, ncut);
    if (dry && !ret && ncheck == 0)
        printf("no database given (--cutoffs-from DB or --check DB): the cutoffs are %s\n",
               ncut ? "as given" : "0 for every site");
    free(check);
    if (dry || ret) {
        free(cut);
        return ret;
    }
    if (load_key(pos[0], &k)) {
        free(cut);
        return 1;
    }
    memcpy(v.shop_id, k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(v.admin_pk, k.pk, TSYNC__PK_BYTES);
    v.ncutoffs = ncut;
    v.cutoffs = cut;
    uint8_t *out;
    size_t len;
    char err[TSYNC__ERRLEN];
    if (tsync__revocation_sign(&v, k.sk, &out, &len, err) != 0) {
        fprintf(stderr, "tillsync: %s\n", err);
        ret = 1;
    } else {
        if (ncut == 0)
            fprintf(stderr, "tillsync: note: no cutoff given: a till will refuse every batch of "
                            "this device that it has not merged yet (see --cutoffs-from DB)\n");
        ret = emit(out, len);
        free(out);
    }
    free(cut);
    tsync__shopkey_wipe(&k);
    return ret;
}

static int shop_rotate(int argc, char **argv)
{
    if (argc != 5 || argv[3][0] == '-' || argv[4][0] == '-')
        return usage("shop rotate needs KEYFILE and NEWKEYFILE");
    tsync__shopkey old, nk;
    if (load_key(argv[3], &old)) return 1;
    uint8_t seed[32];
    char err[TSYNC__ERRLEN];
    randombytes_buf(seed, sizeof seed);
    int rc = tsync__shopkey_init(&nk, seed, old.shop_id, old.name, old.name_len, wall_ms(), err);
    sodium_memzero(seed, sizeof seed);
    if (rc) {
        fprintf(stderr, "tillsync: %s\n", err);
        tsync__shopkey_wipe(&old);
        return 1;
    }
    tsync__rotation t = {.issued_ms = nk.created_ms};
    memcpy(t.shop_id, old.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(t.old_pk, old.pk, TSYNC__PK_BYTES);
    memcpy(t.new_pk, nk.pk, TSYNC__PK_BYTES);
    uint8_t *out = NULL;
    size_t len;
    int ret = 0;
    if (tsync__rotation_sign(&t, old.sk, nk.sk, &out, &len, err) != 0) {
        fprintf(stderr, "tillsync: %s\n", err);
        ret = 1;
    } else if (tsync__shopkey_write(argv[4], &nk) != 0) {
        ret = cli_fail("shop rotate");
    } else {
        ret = emit(out, len);
    }
    free(out);
    tsync__shopkey_wipe(&old);
    tsync__shopkey_wipe(&nk);
    return ret;
}

static int shop_show(int argc, char **argv)
{
    if (argc != 4) return usage("shop show needs FILE");
    const char *path = argv[3];
    /* An admin key file? Shown without its secret. */
    char *text;
    size_t len;
    if (slurp(path, &text, &len)) return 1;
    int is_key = len >= 8 && memcmp(text, "TSYNCSHP", 8) == 0;
    sodium_memzero(text, len);
    free(text);
    if (is_key) {
        tsync__shopkey k;
        if (load_key(path, &k)) return 1;
        char id[2 * TSYNC__SHOP_ID_BYTES + 1], pk[2 * TSYNC__PK_BYTES + 1], d[32];
        hex(k.shop_id, TSYNC__SHOP_ID_BYTES, id);
        hex(k.pk, TSYNC__PK_BYTES, pk);
        printf("shop admin key file\nshop:       %s (id %s)\nadmin key:  %s\ncreated:    %s\n",
               k.name, id, pk, date(k.created_ms, d));
        tsync__shopkey_wipe(&k);
        return 0;
    }
    recs r = {0};
    int ret = read_records(path, &r);
    for (size_t i = 0; !ret && i < r.n; i++) {
        tsync__arena a = {0};
        tsync__trust_rec t;
        ret = decode(path, r.rec[i], r.len[i], 0, &t, &a);
        char *s = ret ? NULL : describe(&t);
        if (s) printf("%s%s\nsignature:  verifies\n", i ? "\n" : "", s);
        free(s);
        tsync__arena_free(&a);
    }
    recs_free(&r);
    return ret;
}

/* NNN_NAME.sql -> its number, or -1. */
static int64_t migration_number(const char *base)
{
    int64_t v = 0;
    int digits = 0;
    const char *p = base;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 18) return -1;
        v = v * 10 + (*p++ - '0');
    }
    size_t n = strlen(base);
    if (!digits || v == 0 || *p != '_' || n < 5 || strcmp(base + n - 4, ".sql") != 0 ||
        (size_t)(p - base) + 1 >= n - 4)
        return -1;
    return v;
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
    int64_t number = migration_number(base);
    if (number < 0) {
        fprintf(stderr,
                "tillsync: %s: a migration file is named NUMBER_NAME.sql (001_add_note.sql), "
                "as in a migrations folder\n",
                sqlfile);
        return 1;
    }
    char *sql;
    size_t len;
    if (slurp(sqlfile, &sql, &len)) return 1;
    tsync__shopkey k;
    if (load_key(keyfile, &k)) {
        free(sql);
        return 1;
    }
    tsync__migration_rec m = {.number = (uint64_t)number,
                              .name = base,
                              .name_len = (uint32_t)strlen(base),
                              .sql = (const uint8_t *)sql,
                              .sql_len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len,
                              .issued_ms = wall_ms()};
    memcpy(m.shop_id, k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(m.admin_pk, k.pk, TSYNC__PK_BYTES);
    uint8_t *rec = NULL;
    size_t rlen = 0;
    char err[TSYNC__ERRLEN];
    int rc = tsync__migration_sign(&m, k.sk, &rec, &rlen, err);
    tsync__shopkey_wipe(&k);
    free(sql);
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", sqlfile, err);
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
    tsync__arena a = {0};
    tsync__trust_rec r;
    char *comment = NULL, *text = NULL;
    if (tsync__trust_decode(rec, rlen, &r, &a, err) == 0) comment = describe(&r);
    tsync__arena_free(&a);
    rc = tsync__armour(TSYNC__T_MIGRATION, rec, rlen, comment, &text);
    free(comment);
    free(rec);
    FILE *f = rc ? NULL : fopen(outp, "wx");
    int ret = 0;
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "tillsync: cannot write %s: %s\n", outp,
                rc ? "out of memory" : strerror(errno));
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
    recs r = {0};
    if (read_records(path, &r)) return 1;
    if (r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records, not one signed migration\n", path, r.n);
        recs_free(&r);
        return 1;
    }
    tsync__arena a = {0};
    tsync__trust_rec t;
    int ret = decode(path, r.rec[0], r.len[0], TSYNC__T_MIGRATION, &t, &a);
    tsync__arena_free(&a);
    if (ret == 0) {
        *rec = r.rec[0];
        *len = r.len[0];
        r.rec[0] = NULL;
    }
    recs_free(&r);
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
    int ret = tsync__trust_request(s, name, &req, &len) ? cli_fail("enrol-request") : 0;
    tsync_store_free(s);
    if (!ret) {
        ret = emit(req, len);
        free(req);
    }
    return ret;
}

static void print_enrolled(const char *db, const tsync__enrol_result *r)
{
    char d[32], id[2 * TSYNC__SHOP_ID_BYTES + 1];
    hex(r->shop_id, TSYNC__SHOP_ID_BYTES, id);
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
    tsync__shopkey k;
    if (load_key(keyfile, &k)) return 1;
    tsync_store *s;
    if (open_db(db, &s)) {
        tsync__shopkey_wipe(&k);
        return 1;
    }
    uint8_t *req = NULL, *cert = NULL;
    size_t rlen, clen;
    int ret = tsync__trust_request(s, name, &req, &rlen) ? cli_fail("enrol") : 0;
    if (!ret) ret = sign_request(&k, "request", req, rlen, NULL, days, &cert, &clen);
    tsync__shopkey_wipe(&k);
    tsync__enrol_result r;
    if (!ret) {
        const uint8_t *recs1[1] = {cert};
        ret = tsync__trust_enrol(s, recs1, &clen, 1, &r) ? cli_fail("enrol") : 0;
    }
    if (!ret) print_enrolled(db, &r);
    free(req);
    free(cert);
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
        recs r = {0};
        ret = 0;
        for (int i = 0; i < nfiles && !ret; i++) ret = read_records(files[i], &r);
        tsync_store *s = NULL;
        if (!ret) ret = open_db(db, &s);
        tsync__enrol_result res;
        if (!ret)
            ret = tsync__trust_enrol(s, (const uint8_t *const *)r.rec, r.len, r.n, &res)
                      ? cli_fail("enrol")
                      : 0;
        if (!ret) print_enrolled(db, &res);
        tsync_store_free(s);
        recs_free(&r);
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
    recs r = {0};
    int ret = read_records(argv[3], &r);
    tsync__arena a = {0};
    tsync__trust_rec t;
    for (size_t i = 0; !ret && i < r.n; i++)
        ret = decode(argv[3], r.rec[i], r.len[i], TSYNC__T_REVOCATION, &t, &a);
    tsync_store *s = NULL;
    if (!ret) ret = open_db(argv[2], &s);
    for (size_t i = 0; !ret && i < r.n; i++)
        ret = tsync__trust_revoke(s, r.rec[i], r.len[i]) ? cli_fail("revoke") : 0;
    if (!ret) {
        for (size_t i = 0; i < r.n; i++) {
            tsync__arena b = {0};
            if (tsync__trust_decode(r.rec[i], r.len[i], &t, &b, (char[TSYNC__ERRLEN]){0}) == 0) {
                char h[2 * TSYNC__PK_BYTES + 1];
                hex(t.u.rev.device_pk, TSYNC__PK_BYTES, h);
                printf("revocation of device key %s installed (%" PRIu32 " cutoff%s)\n", h,
                       t.u.rev.ncutoffs, t.u.rev.ncutoffs == 1 ? "" : "s");
            }
            tsync__arena_free(&b);
        }
    }
    tsync_store_free(s);
    tsync__arena_free(&a);
    recs_free(&r);
    return ret;
}

int cmd_trust(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "--json") != 0))
        return usage("trust needs DB and optionally --json");
    tsync_store *s;
    if (cli_open(argv[2], CLI_RO, &s)) return 1;
    char *js;
    int ret = 0;
    if (tsync__trust_json(s, &js) != 0) {
        ret = cli_fail("trust");
    } else if (argc == 4) {
        puts(js);
    } else {
        json_t *o = json_loads(js, 0, NULL);
        if (!json_is_true(json_object_get(o, "enrolled"))) {
            printf("not enrolled in a shop (accepts any validly signed batch)\n");
        } else {
            char d1[32], d2[32];
            printf("shop:       %s (id %s)\n", json_string_value(json_object_get(o, "shop_name")),
                   json_string_value(json_object_get(o, "shop_id")));
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(o, "admin_keys"), i, e)
                printf("%s%s\n", i ? "            " : "admin key:  ", json_string_value(e));
            printf("devices:\n");
            uint64_t now = wall_ms();
            json_array_foreach(json_object_get(o, "certificates"), i, e)
            {
                uint64_t nb = (uint64_t)json_integer_value(json_object_get(e, "not_before"));
                uint64_t ex = (uint64_t)json_integer_value(json_object_get(e, "expires"));
                const char *st = json_is_true(json_object_get(e, "revoked")) ? "REVOKED"
                                 : ex < now                                  ? "EXPIRED"
                                                                             : "valid";
                printf("  %-20s %.16s…  %s to %s  %s%s\n",
                       json_string_value(json_object_get(e, "device_name")),
                       json_string_value(json_object_get(e, "device_key")), date(nb, d1),
                       date(ex, d2), st,
                       json_is_true(json_object_get(e, "this_device")) ? "  (this device)" : "");
            }
        }
        json_decref(o);
    }
    free(js);
    tsync_store_free(s);
    return ret;
}
