/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/trust_text.c — shop trust records as files, for the trust commands (tools/cmd_shop.c,
 * tools/cmd_trust.c); see trust_text.h.
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

#include "cmd_trust.h"
#include "trust_text.h"

int tt_usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

/* The message of the last failing library call. */
const char *tt_error(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "unknown error";
}

void tt_hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = d[p[i] >> 4], out[2 * i + 1] = d[p[i] & 15];
    out[2 * n] = '\0';
}

int tt_unhex(const char *s, size_t slen, uint8_t *out, size_t n)
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
int tt_slurp(const char *path, char **out, size_t *len)
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
int tt_read_records(const char *path, tsync_trust_records *r)
{
    char *text;
    size_t len;
    if (tt_slurp(path, &text, &len)) return 1;
    int rc = len ? tsync_trust_records_parse(r, text, len) : 0;
    free(text);
    if (len == 0) {
        fprintf(stderr, "tillsync: %s is empty\n", path);
        return 1;
    }
    if (rc == TSYNC_ENOTFOUND) {
        fprintf(stderr, "tillsync: %s %s\n", path, tt_error());
        return 1;
    }
    if (rc) {
        fprintf(stderr, "tillsync: %s: %s\n", path, tt_error());
        return 1;
    }
    return 0;
}

/* Decodes a record read from path, which must be of kind want (0: any). */
int tt_decode(const char *path, const uint8_t *rec, size_t len, int want, tsync_trust_record *out)
{
    if (tsync_trust_record_decode(out, rec, len) != 0) {
        fprintf(stderr, "tillsync: %s: %s\n", path, tt_error());
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
char *tt_describe(const tsync_trust_record *r)
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
        tt_hex(r->device_key, PK, h);
        fprintf(f, "\ndevice key: %s\nmade:       %s", h, tsync_trust_date(r->issued_ms, d1));
        break;
    case TSYNC_TRUST_CERTIFICATE:
        fprintf(f,
                "tillsync certificate (install it on the till: tillsync enrol DB CERT)\nshop:    "
                "   %s",
                r->shop_name);
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f, " (id %s)\ndevice:     %s", h, r->device_name);
        tt_hex(r->device_key, PK, h);
        fprintf(f, "\ndevice key: %s\nvalid:      %s to %s", h,
                tsync_trust_date(r->not_before_ms, d1), tsync_trust_date(r->expires_ms, d2));
        break;
    case TSYNC_TRUST_REVOCATION:
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync revocation (install it on one till: tillsync revoke DB FILE)\nshop "
                "id:    %s\n",
                h);
        tt_hex(r->device_key, PK, h);
        fprintf(f, "device key: %s\nissued:     %s\n", h, tsync_trust_date(r->issued_ms, d1));
        if (r->ncutoffs == 0)
            fprintf(f, "cutoffs:    none (every batch of this device a till has not merged yet "
                       "is refused)");
        for (size_t i = 0; i < r->ncutoffs; i++) {
            tt_hex(r->cutoffs[i].site_id, TSYNC_SITE_ID_BYTES, h);
            fprintf(f, "%s%s:%" PRIu64, i ? "\n            " : "cutoffs:    ", h,
                    r->cutoffs[i].seq);
        }
        break;
    case TSYNC_TRUST_ROTATION:
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync admin key rotation (install it on one till: tillsync enrol DB "
                "FILE)\nshop id:    %s\n",
                h);
        tt_hex(r->admin_key, PK, h);
        fprintf(f, "old key:    %s\n", h);
        tt_hex(r->new_admin_key, PK, h);
        fprintf(f, "new key:    %s\nissued:     %s", h, tsync_trust_date(r->issued_ms, d1));
        break;
    case TSYNC_TRUST_DATA_KEY:
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync data key (sealed to the shop's devices; install it on one till: "
                "tillsync enrol DB FILE)\nshop id:    %s\nissued:     %s",
                h, tsync_trust_date(r->issued_ms, d1));
        break;
    case TSYNC_TRUST_GRANT:
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync relay grant (install it on one till: tillsync enrol DB FILE; give it to "
                "the relay's operator)\nshop id:    %s\nissued:     %s\nexpires:    %s",
                h, tsync_trust_date(r->issued_ms, d1), tsync_trust_date(r->expires_ms, d2));
        break;
    case TSYNC_TRUST_MIGRATION:
        tt_hex(r->shop_id, TSYNC_SHOP_ID_BYTES, h);
        fprintf(f,
                "tillsync signed migration (install it on one till: tillsync migrate DB FILE; it "
                "replicates to every till of the shop)\nshop id:    %s\nmigration:  %" PRIu64 " "
                "%s",
                h, r->migration_number, r->migration_name);
        tt_hex(r->sql_hash, TSYNC_HASH_BYTES, h);
        fprintf(f, " (%zu bytes, hash %s)\nissued:     %s", r->sql_len, h,
                tsync_trust_date(r->issued_ms, d1));
        break;
    }
    fclose(f);
    return s;
}

/* A record we just made, armoured with its description, in a malloc'd string (NULL after
 * printing why not). */
char *tt_armoured(const uint8_t *rec, size_t len)
{
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    if (tsync_trust_record_decode(&r, rec, len) != 0) {
        fprintf(stderr, "tillsync: internal error: a record we made does not decode: %s\n",
                tt_error());
        return NULL;
    }
    char *comment = tt_describe(&r), *text = NULL;
    tsync_trust_record_clear(&r);
    if (tsync_trust_armour(&text, rec, len, comment) != 0)
        fprintf(stderr, "tillsync: out of memory\n");
    free(comment);
    return text;
}

/* Writes a record we just made, armoured with its description, to stdout. */
int tt_emit(const uint8_t *rec, size_t len)
{
    char *text = tt_armoured(rec, len);
    if (!text) return 1;
    int bad = fputs(text, stdout) < 0 || fflush(stdout) != 0;
    free(text);
    if (bad) {
        fprintf(stderr, "tillsync: cannot write to standard output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

int tt_load_key(const char *path, tsync_shop_key **k)
{
    if (tsync_shop_key_load(k, path) != 0) return cli_fail("admin key");
    return 0;
}

/* --days N: 1..TSYNC_TRUST_MAX_DAYS */
int tt_parse_days(const char *s, unsigned *days)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || s[0] == '-' || v < 1 || v > TSYNC_TRUST_MAX_DAYS) return -1;
    *days = (unsigned)v;
    return 0;
}

int cli_read_signed_migration(const char *path, uint8_t **rec, size_t *len)
{
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    if (tt_read_records(path, &r)) return 1;
    if (r.n != 1) {
        fprintf(stderr, "tillsync: %s holds %zu records, not one signed migration\n", path, r.n);
        tsync_trust_records_clear(&r);
        return 1;
    }
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    int ret = tt_decode(path, r.records[0], r.lens[0], TSYNC_TRUST_MIGRATION, &t);
    tsync_trust_record_clear(&t);
    if (ret == 0) {
        *rec = r.records[0];
        *len = r.lens[0];
        r.records[0] = NULL;
    }
    tsync_trust_records_clear(&r);
    return ret;
}
