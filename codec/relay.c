/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/relay.c — encoder and strict decoder of the till <-> relay messages (codec/relay.h,
 * docs/RELAY.md "Protocol"). One set of rules (check) serves both directions, so whatever the
 * encoder writes decodes, and whatever decodes re-encodes to the same bytes.
 */
#include "codec/relay.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

static int efail(char *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int efail(char *err, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TSYNC__ERRLEN, fmt, ap);
    va_end(ap);
    return rc;
}

static const char *const names[] = {NULL,        "version",   "malformed", "unknown_shop",
                                    "bad_cert",  "expired",   "revoked",   "quota",
                                    "protocol",  "internal",  "admission", "shop_id",
                                    "bad_trust", "not_found", "bad_hash"};

const char *tsync__rerr_name(uint32_t code)
{
    return code >= 1 && code <= TSYNC__RERR_MAXCODE ? names[code] : NULL;
}

static const char *tname(uint32_t t)
{
    static const char *const n[] = {"?",        "RHELLO", "RHAVE",    "RPUT",   "RGET",    "RENV",
                                    "RACK",     "RERR",   "RTRUST",   "RVHAVE", "RVHELD",  "RVPUT",
                                    "RVCOMMIT", "RVLIST", "RVLISTED", "RVGET",  "RVCHUNK", "RVDEL"};
    return t <= TSYNC__R_MAXTYPE ? n[t] : "?";
}

/* The item count of each type, the type included. */
static uint32_t nitems(uint32_t t)
{
    switch (t) {
    case TSYNC__R_HELLO:
        return 4;
    case TSYNC__R_HAVE:
        return 2;
    case TSYNC__R_PUT:
        return 3;
    case TSYNC__R_GET:
        return 5;
    case TSYNC__R_ENV:
        return 4;
    case TSYNC__R_ACK:
        return 4;
    case TSYNC__R_ERR:
        return 4;
    case TSYNC__R_TRUST:
        return 3;
    /* ---- the vault */
    case TSYNC__R_VHAVE:
    case TSYNC__R_VHELD:
    case TSYNC__R_VDEL:
        return 3;
    case TSYNC__R_VPUT:
    case TSYNC__R_VCHUNK:
        return 6;
    case TSYNC__R_VCOMMIT:
        return 3;
    case TSYNC__R_VLIST:
        return 2;
    case TSYNC__R_VLISTED:
        return 3;
    case TSYNC__R_VGET:
        return 4;
    default:
        return 0;
    }
}

static bool line_ok(const char *s, uint32_t n)
{
    if (n == 0 || n > TSYNC__RELAY_LINE_MAX) return false;
    for (uint32_t i = 0; i < n;) {
        size_t k = tsync__utf8_char((const uint8_t *)s + i, n - i);
        if (k == 0) return false;
        i += (uint32_t)k;
    }
    return true;
}

static int check_env(const tsync__renv *e, const char *what, uint32_t i, int rc, char *err)
{
    if (e->first_seq == 0 || e->last_seq < e->first_seq)
        return efail(err, rc,
                     "%s: envelope %" PRIu32 ": seq range %" PRIu64 "..%" PRIu64
                     " (first >= 1, last >= first)",
                     what, i, e->first_seq, e->last_seq);
    if (e->len == 0 || e->len > TSYNC__RELAY_ENV_MAX)
        return efail(err, rc, "%s: envelope %" PRIu32 ": %zu bytes (1..%u)", what, i, e->len,
                     TSYNC__RELAY_ENV_MAX);
    return 0;
}

/* ---------------------------------------------------------------- the vault's rules */

static int check_vb(const tsync__rvbackup *b, const char *w, uint32_t i, int rc, char *err)
{
    if (b->nchunks == 0 || b->nchunks > TSYNC__VAULT_MAX_CHUNKS)
        return efail(err, rc, "%s: backup %" PRIu32 ": %" PRIu64 " chunks (1..%u)", w, i,
                     b->nchunks, TSYNC__VAULT_MAX_CHUNKS);
    if (b->size <= (b->nchunks - 1) * TSYNC__VAULT_CHUNK ||
        b->size > b->nchunks * TSYNC__VAULT_CHUNK)
        return efail(err, rc,
                     "%s: backup %" PRIu32 ": %" PRIu64 " bytes do not make %" PRIu64
                     " chunks of 1 MiB",
                     w, i, b->size, b->nchunks);
    if (b->epoch == 0 || b->epoch > UINT32_MAX)
        return efail(err, rc, "%s: backup %" PRIu32 ": data-key epoch %" PRIu64 " (1..2^32-1)", w,
                     i, b->epoch);
    return 0;
}

static int check_vault(const tsync__rmsg *m, int rc, char *err)
{
    const char *w = tname(m->type);
    switch (m->type) {
    case TSYNC__R_VHELD:
        for (uint32_t i = 0; i < m->nheld; i++) {
            if (m->held[i] >= TSYNC__VAULT_MAX_CHUNKS)
                return efail(err, rc, "RVHELD: chunk index %" PRIu64 " (below %u)", m->held[i],
                             TSYNC__VAULT_MAX_CHUNKS);
            if (i > 0 && m->held[i] <= m->held[i - 1])
                return efail(err, rc, "RVHELD: chunk indexes are not ascending at %" PRIu32, i);
        }
        return 0;
    case TSYNC__R_VPUT:
    case TSYNC__R_VCHUNK:
        if (m->index >= TSYNC__VAULT_MAX_CHUNKS)
            return efail(err, rc, "%s: chunk index %" PRIu64 " (below %u)", w, m->index,
                         TSYNC__VAULT_MAX_CHUNKS);
        if (!m->chunk || m->chunk_len == 0 || m->chunk_len > TSYNC__VAULT_CHUNK)
            return efail(err, rc, "%s: chunk of %zu bytes (1..%u)", w, m->chunk_len,
                         TSYNC__VAULT_CHUNK);
        return 0;
    case TSYNC__R_VGET:
        if (m->index >= TSYNC__VAULT_MAX_CHUNKS)
            return efail(err, rc, "RVGET: chunk index %" PRIu64 " (below %u)", m->index,
                         TSYNC__VAULT_MAX_CHUNKS);
        return 0;
    case TSYNC__R_VCOMMIT:
        return check_vb(&m->vb, w, 0, rc, err);
    case TSYNC__R_VLISTED:
        if (m->nbackups > TSYNC__VAULT_LIST_MAX)
            return efail(err, rc, "RVLISTED: %" PRIu32 " backups (at most %u)", m->nbackups,
                         TSYNC__VAULT_LIST_MAX);
        for (uint32_t i = 0; i < m->nbackups; i++) {
            int r = check_vb(&m->backups[i], w, i, rc, err);
            if (r) return r;
            const tsync__rvbackup *b = &m->backups[i];
            if (i > 0 && (b[-1].created_ms > b->created_ms ||
                          (b[-1].created_ms == b->created_ms &&
                           memcmp(b[-1].id, b->id, TSYNC__VAULT_ID_BYTES) >= 0)))
                return efail(err, rc,
                             "RVLISTED: backup %" PRIu32 " is not after the one before (by time,"
                             " then id)",
                             i);
        }
        return 0;
    default: /* VHAVE, VLIST, VDEL: nothing beyond the types */
        return 0;
    }
}

/* The rules on values, for both directions (rc: EINVAL encoding, ECORRUPT decoding). */
static int check(const tsync__rmsg *m, int rc, char *err)
{
    const char *w = tname(m->type);
    switch (m->type) {
    case TSYNC__R_HELLO:
    case TSYNC__R_TRUST: {
        uint32_t max = m->type == TSYNC__R_HELLO ? TSYNC__RELAY_CHAIN_MAX : TSYNC__RELAY_TRUST_MAX;
        if (m->nrecs == 0 || m->nrecs > max)
            return efail(err, rc, "%s: %" PRIu32 " records (1..%" PRIu32 ")", w, m->nrecs, max);
        for (uint32_t i = 0; i < m->nrecs; i++)
            if (m->recs[i].len == 0 || m->recs[i].len > TSYNC__RELAY_REC_MAX)
                return efail(err, rc, "%s: record %" PRIu32 ": %zu bytes (1..%u)", w, i,
                             m->recs[i].len, TSYNC__RELAY_REC_MAX);
        return 0;
    }
    case TSYNC__R_HAVE:
        for (uint32_t i = 0; i < m->norigins; i++) {
            const tsync__rhave_origin *o = &m->origins[i];
            if (i > 0 && memcmp(o[-1].origin, o->origin, TSYNC__SITE_BYTES) >= 0)
                return efail(err, rc, "RHAVE: origin %" PRIu32 " is not after the one before", i);
            if (o->nranges == 0) return efail(err, rc, "RHAVE: origin %" PRIu32 ": no range", i);
            for (uint32_t k = 0; k < o->nranges; k++) {
                const tsync__rrange *g = &o->ranges[k];
                if (g->first == 0 || g->last < g->first)
                    return efail(err, rc,
                                 "RHAVE: origin %" PRIu32 ": range %" PRIu32 ": %" PRIu64
                                 "..%" PRIu64 " (first >= 1, last >= first)",
                                 i, k, g->first, g->last);
                if (k > 0 && (g[-1].last == UINT64_MAX || g->first <= g[-1].last + 1))
                    return efail(err, rc,
                                 "RHAVE: origin %" PRIu32 ": range %" PRIu32
                                 " overlaps or touches the one before (ranges are merged)",
                                 i, k);
            }
        }
        return 0;
    case TSYNC__R_PUT:
    case TSYNC__R_ENV:
        if (m->type == TSYNC__R_PUT && m->nenvs == 0) return efail(err, rc, "RPUT: no envelope");
        for (uint32_t i = 0; i < m->nenvs; i++) {
            int r = check_env(&m->envs[i], w, i, rc, err);
            if (r) return r;
        }
        return 0;
    case TSYNC__R_GET:
        if (m->from_seq == 0) return efail(err, rc, "RGET: from seq is 0");
        if (m->max_bytes == 0) return efail(err, rc, "RGET: max bytes is 0");
        return 0;
    case TSYNC__R_ACK:
        return 0;
    case TSYNC__R_ERR:
        if (m->code == 0 || m->code > 255)
            return efail(err, rc, "RERR: code %" PRIu32 " (1..255)", m->code);
        if (!m->line || !line_ok(m->line, m->line_len))
            return efail(err, rc,
                         "RERR: the line is not 1..%u bytes of UTF-8 without control characters",
                         TSYNC__RELAY_LINE_MAX);
        return 0;
    default:
        if (m->type >= TSYNC__R_VHAVE && m->type <= TSYNC__R_MAXTYPE)
            return check_vault(m, rc, err);
        return efail(err, rc, "unknown relay message type %" PRIu32, m->type);
    }
}

/* ---------------------------------------------------------------- encoding */

void tsync__relay_hello(tsync__rmsg *m, tsync__rblob *chain,
                        const uint8_t shop_id[TSYNC__RELAY_SHOP_BYTES], const uint8_t *cert,
                        size_t cert_len)
{
    *chain = (tsync__rblob){cert, cert_len};
    *m = (tsync__rmsg){
        .type = TSYNC__R_HELLO, .version = TSYNC__RELAY_PROTO, .nrecs = 1, .recs = chain};
    memcpy(m->shop_id, shop_id, TSYNC__RELAY_SHOP_BYTES);
}

static int pack_env(msgpack_packer *pk, const tsync__renv *e)
{
    return msgpack_pack_array(pk, 4) || tsync__mp_pack_bin(pk, e->origin, TSYNC__SITE_BYTES) ||
           msgpack_pack_uint64(pk, e->first_seq) || msgpack_pack_uint64(pk, e->last_seq) ||
           tsync__mp_pack_bin(pk, e->bytes, e->len);
}

static int pack_recs(msgpack_packer *pk, const tsync__rmsg *m)
{
    if (msgpack_pack_array(pk, m->nrecs)) return 1;
    for (uint32_t i = 0; i < m->nrecs; i++)
        if (tsync__mp_pack_bin(pk, m->recs[i].p, m->recs[i].len)) return 1;
    return 0;
}

static int pack_vb(msgpack_packer *pk, const tsync__rvbackup *b)
{
    return msgpack_pack_array(pk, 7) || tsync__mp_pack_bin(pk, b->id, TSYNC__VAULT_ID_BYTES) ||
           msgpack_pack_uint64(pk, b->nchunks) || msgpack_pack_uint64(pk, b->size) ||
           tsync__mp_pack_bin(pk, b->hash, TSYNC__VAULT_HASH_BYTES) ||
           msgpack_pack_uint64(pk, b->created_ms) ||
           tsync__mp_pack_bin(pk, b->origin, TSYNC__SITE_BYTES) ||
           msgpack_pack_uint64(pk, b->epoch);
}

/* The vault's messages, after [type, req]. */
static int pack_vault(msgpack_packer *pk, const tsync__rmsg *m)
{
    switch (m->type) {
    case TSYNC__R_VHAVE:
    case TSYNC__R_VDEL:
        return tsync__mp_pack_bin(pk, m->backup_id, TSYNC__VAULT_ID_BYTES);
    case TSYNC__R_VHELD:
        if (msgpack_pack_array(pk, m->nheld)) return 1;
        for (uint32_t i = 0; i < m->nheld; i++)
            if (msgpack_pack_uint64(pk, m->held[i])) return 1;
        return 0;
    case TSYNC__R_VPUT:
    case TSYNC__R_VCHUNK:
        return tsync__mp_pack_bin(pk, m->backup_id, TSYNC__VAULT_ID_BYTES) ||
               msgpack_pack_uint64(pk, m->index) ||
               tsync__mp_pack_bin(pk, m->hash, TSYNC__VAULT_HASH_BYTES) ||
               tsync__mp_pack_bin(pk, m->chunk, m->chunk_len);
    case TSYNC__R_VCOMMIT:
        return pack_vb(pk, &m->vb);
    case TSYNC__R_VLIST:
        return 0;
    case TSYNC__R_VLISTED:
        if (msgpack_pack_array(pk, m->nbackups)) return 1;
        for (uint32_t i = 0; i < m->nbackups; i++)
            if (pack_vb(pk, &m->backups[i])) return 1;
        return 0;
    case TSYNC__R_VGET:
        return tsync__mp_pack_bin(pk, m->backup_id, TSYNC__VAULT_ID_BYTES) ||
               msgpack_pack_uint64(pk, m->index);
    default:
        return 1;
    }
}

static int pack_body(msgpack_packer *pk, const tsync__rmsg *m)
{
    if (msgpack_pack_array(pk, nitems(m->type)) || msgpack_pack_uint32(pk, m->type)) return 1;
    switch (m->type) {
    case TSYNC__R_HELLO:
        if (msgpack_pack_uint64(pk, m->version) ||
            tsync__mp_pack_bin(pk, m->shop_id, TSYNC__RELAY_SHOP_BYTES))
            return 1;
        return pack_recs(pk, m);
    case TSYNC__R_TRUST:
        if (msgpack_pack_uint64(pk, m->req)) return 1;
        return pack_recs(pk, m);
    case TSYNC__R_HAVE:
        if (msgpack_pack_array(pk, m->norigins)) return 1;
        for (uint32_t i = 0; i < m->norigins; i++) {
            const tsync__rhave_origin *o = &m->origins[i];
            if (msgpack_pack_array(pk, 2) || tsync__mp_pack_bin(pk, o->origin, TSYNC__SITE_BYTES) ||
                msgpack_pack_array(pk, o->nranges))
                return 1;
            for (uint32_t k = 0; k < o->nranges; k++)
                if (msgpack_pack_array(pk, 2) || msgpack_pack_uint64(pk, o->ranges[k].first) ||
                    msgpack_pack_uint64(pk, o->ranges[k].last))
                    return 1;
        }
        return 0;
    case TSYNC__R_PUT:
    case TSYNC__R_ENV:
        if (msgpack_pack_uint64(pk, m->req) || msgpack_pack_array(pk, m->nenvs)) return 1;
        for (uint32_t i = 0; i < m->nenvs; i++)
            if (pack_env(pk, &m->envs[i])) return 1;
        if (m->type == TSYNC__R_ENV)
            return m->more ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        return 0;
    case TSYNC__R_GET:
        return msgpack_pack_uint64(pk, m->req) ||
               tsync__mp_pack_bin(pk, m->origin, TSYNC__SITE_BYTES) ||
               msgpack_pack_uint64(pk, m->from_seq) || msgpack_pack_uint64(pk, m->max_bytes);
    case TSYNC__R_ACK:
        return msgpack_pack_uint64(pk, m->req) || msgpack_pack_uint64(pk, m->stored) ||
               msgpack_pack_uint64(pk, m->dup);
    case TSYNC__R_ERR:
        return msgpack_pack_uint64(pk, m->req) || msgpack_pack_uint32(pk, m->code) ||
               tsync__mp_pack_str(pk, m->line, m->line_len);
    default:
        return msgpack_pack_uint64(pk, m->req) || pack_vault(pk, m);
    }
}

int tsync__relay_encode(const tsync__rmsg *m, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    *out = NULL;
    *len = 0;
    if (check(m, TSYNC_EINVAL, err)) return TSYNC_EINVAL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack_body(&pk, m)) {
        msgpack_sbuffer_destroy(&sb);
        return efail(err, TSYNC_ENOMEM, "%s: out of memory", tname(m->type));
    }
    if (sb.size > TSYNC__RELAY_MSG_MAX) {
        msgpack_sbuffer_destroy(&sb);
        return efail(err, TSYNC_EINVAL, "%s: %zu bytes, more than the limit of %u", tname(m->type),
                     (size_t)sb.size, TSYNC__RELAY_MSG_MAX);
    }
    *len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}

/* ---------------------------------------------------------------- decoding */

static bool dec_env(tsync__dec *d, tsync__renv *e)
{
    const uint8_t *p;
    uint32_t n;
    if (!tsync__dec_tuple(d, "envelope", 4) ||
        !tsync__dec_binfix(d, "envelope origin", e->origin, TSYNC__SITE_BYTES) ||
        !tsync__dec_uint(d, "envelope first seq", &e->first_seq) ||
        !tsync__dec_uint(d, "envelope last seq", &e->last_seq))
        return false;
    if (!tsync__mpr_bin(&d->r, &p, &n)) return tsync__dec_bad(d, "envelope bytes");
    e->bytes = p;
    e->len = n;
    return true;
}

static bool dec_envs(tsync__dec *d, tsync__rmsg *m)
{
    /* An envelope takes at least 1 + 18 + 1 + 1 + 2 bytes. */
    if (!tsync__dec_list(d, "envelopes", &m->nenvs, 23)) return false;
    m->envs = tsync__dec_alloc(d, m->nenvs, sizeof *m->envs);
    if (m->nenvs && !m->envs) return false;
    d->l1 = "envelope";
    for (uint32_t i = 0; i < m->nenvs; i++) {
        d->i1 = i;
        if (!dec_env(d, &m->envs[i])) return false;
    }
    d->l1 = NULL;
    return true;
}

static bool dec_recs(tsync__dec *d, tsync__rmsg *m)
{
    if (!tsync__dec_list(d, "records", &m->nrecs, 2)) return false;
    m->recs = tsync__dec_alloc(d, m->nrecs, sizeof *m->recs);
    if (m->nrecs && !m->recs) return false;
    d->l1 = "record";
    for (uint32_t i = 0; i < m->nrecs; i++) {
        d->i1 = i;
        uint32_t n;
        if (!tsync__mpr_bin(&d->r, &m->recs[i].p, &n)) return tsync__dec_bad(d, "record");
        m->recs[i].len = n;
    }
    d->l1 = NULL;
    return true;
}

static bool dec_have(tsync__dec *d, tsync__rmsg *m)
{
    /* An origin takes at least 1 + 18 + 1 + 3 bytes, a range 3. */
    if (!tsync__dec_list(d, "origins", &m->norigins, 23)) return false;
    m->origins = tsync__dec_alloc(d, m->norigins, sizeof *m->origins);
    if (m->norigins && !m->origins) return false;
    d->l1 = "origin";
    for (uint32_t i = 0; i < m->norigins; i++) {
        tsync__rhave_origin *o = &m->origins[i];
        d->i1 = i;
        if (!tsync__dec_tuple(d, "origin", 2) ||
            !tsync__dec_binfix(d, "origin id", o->origin, TSYNC__SITE_BYTES) ||
            !tsync__dec_list(d, "ranges", &o->nranges, 3))
            return false;
        o->ranges = tsync__dec_alloc(d, o->nranges, sizeof *o->ranges);
        if (o->nranges && !o->ranges) return false;
        d->l2 = "range";
        for (uint32_t k = 0; k < o->nranges; k++) {
            d->i2 = k;
            if (!tsync__dec_tuple(d, "range", 2) ||
                !tsync__dec_uint(d, "range first", &o->ranges[k].first) ||
                !tsync__dec_uint(d, "range last", &o->ranges[k].last))
                return false;
        }
        d->l2 = NULL;
    }
    d->l1 = NULL;
    return true;
}

static bool dec_vb(tsync__dec *d, tsync__rvbackup *b)
{
    return tsync__dec_tuple(d, "backup", 7) &&
           tsync__dec_binfix(d, "backup id", b->id, TSYNC__VAULT_ID_BYTES) &&
           tsync__dec_uint(d, "chunk count", &b->nchunks) && tsync__dec_uint(d, "size", &b->size) &&
           tsync__dec_binfix(d, "file hash", b->hash, TSYNC__VAULT_HASH_BYTES) &&
           tsync__dec_uint(d, "created", &b->created_ms) &&
           tsync__dec_binfix(d, "origin", b->origin, TSYNC__SITE_BYTES) &&
           tsync__dec_uint(d, "epoch", &b->epoch);
}

/* The vault's messages, after [type, req]. */
static bool dec_vault(tsync__dec *d, tsync__rmsg *m)
{
    const uint8_t *p;
    uint32_t n;
    switch (m->type) {
    case TSYNC__R_VHAVE:
    case TSYNC__R_VDEL:
        return tsync__dec_binfix(d, "backup id", m->backup_id, TSYNC__VAULT_ID_BYTES);
    case TSYNC__R_VHELD:
        if (!tsync__dec_list(d, "chunks", &m->nheld, 1)) return false;
        m->held = tsync__dec_alloc(d, m->nheld, sizeof *m->held);
        if (m->nheld && !m->held) return false;
        for (uint32_t i = 0; i < m->nheld; i++)
            if (!tsync__dec_uint(d, "chunk index", &m->held[i])) return false;
        return true;
    case TSYNC__R_VPUT:
    case TSYNC__R_VCHUNK:
        if (!tsync__dec_binfix(d, "backup id", m->backup_id, TSYNC__VAULT_ID_BYTES) ||
            !tsync__dec_uint(d, "chunk index", &m->index) ||
            !tsync__dec_binfix(d, "chunk hash", m->hash, TSYNC__VAULT_HASH_BYTES))
            return false;
        if (!tsync__mpr_bin(&d->r, &p, &n)) return tsync__dec_bad(d, "chunk");
        m->chunk = p;
        m->chunk_len = n;
        return true;
    case TSYNC__R_VCOMMIT:
        return dec_vb(d, &m->vb);
    case TSYNC__R_VLIST:
        return true;
    case TSYNC__R_VLISTED:
        /* A backup takes at least 1 + 18 + 1 + 1 + 34 + 1 + 18 + 1 bytes. */
        if (!tsync__dec_list(d, "backups", &m->nbackups, 75)) return false;
        m->backups = tsync__dec_alloc(d, m->nbackups, sizeof *m->backups);
        if (m->nbackups && !m->backups) return false;
        for (uint32_t i = 0; i < m->nbackups; i++)
            if (!dec_vb(d, &m->backups[i])) return false;
        return true;
    case TSYNC__R_VGET:
        return tsync__dec_binfix(d, "backup id", m->backup_id, TSYNC__VAULT_ID_BYTES) &&
               tsync__dec_uint(d, "chunk index", &m->index);
    default:
        return false;
    }
}

int tsync__relay_decode(const uint8_t *buf, size_t len, tsync__rmsg *out, tsync__arena *a,
                        char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    tsync__dec d;
    if (!tsync__dec_open(&d, buf, len, TSYNC__RELAY_MSG_MAX, a, err, "relay message: "))
        return TSYNC_ECORRUPT;
    uint32_t n;
    uint64_t type;
    if (!tsync__dec_array(&d, "message", &n) || !tsync__dec_uint(&d, "type", &type)) return d.rc;
    if (type == 0 || type > TSYNC__R_MAXTYPE)
        return efail(err, TSYNC_ECORRUPT, "relay message: unknown type %" PRIu64, type);
    out->type = (uint32_t)type;
    if (n != nitems(out->type))
        return efail(err, TSYNC_ECORRUPT, "%s: %" PRIu32 " items, expected %" PRIu32,
                     tname(out->type), n, nitems(out->type));
    d.prefix = out->type == TSYNC__R_HELLO ? "RHELLO: " : NULL;
    bool ok = true;
    uint64_t code;
    const char *s;
    switch (out->type) {
    case TSYNC__R_HELLO:
        ok = tsync__dec_uint(&d, "version", &out->version) &&
             tsync__dec_binfix(&d, "shop id", out->shop_id, TSYNC__RELAY_SHOP_BYTES) &&
             dec_recs(&d, out);
        break;
    case TSYNC__R_TRUST:
        ok = tsync__dec_uint(&d, "request id", &out->req) && dec_recs(&d, out);
        break;
    case TSYNC__R_HAVE:
        ok = dec_have(&d, out);
        break;
    case TSYNC__R_PUT:
    case TSYNC__R_ENV:
        ok = tsync__dec_uint(&d, "request id", &out->req) && dec_envs(&d, out);
        if (ok && out->type == TSYNC__R_ENV && !tsync__mpr_bool(&d.r, &out->more))
            ok = tsync__dec_bad(&d, "more");
        break;
    case TSYNC__R_GET:
        ok = tsync__dec_uint(&d, "request id", &out->req) &&
             tsync__dec_binfix(&d, "origin", out->origin, TSYNC__SITE_BYTES) &&
             tsync__dec_uint(&d, "from seq", &out->from_seq) &&
             tsync__dec_uint(&d, "max bytes", &out->max_bytes);
        break;
    case TSYNC__R_ACK:
        ok = tsync__dec_uint(&d, "request id", &out->req) &&
             tsync__dec_uint(&d, "stored", &out->stored) && tsync__dec_uint(&d, "dup", &out->dup);
        break;
    case TSYNC__R_ERR:
        ok = tsync__dec_uint(&d, "request id", &out->req) && tsync__dec_uint(&d, "code", &code) &&
             tsync__dec_str(&d, "line", &s, &out->line_len);
        if (ok) {
            if (code > 255)
                return efail(err, TSYNC_ECORRUPT, "RERR: code %" PRIu64 " (1..255)", code);
            out->code = (uint32_t)code;
            out->line = s;
        }
        break;
    default:
        ok = tsync__dec_uint(&d, "request id", &out->req) && dec_vault(&d, out);
        break;
    }
    if (!ok) {
        /* dec's messages lack the type when it had no prefix: put it in front. */
        if (!d.prefix && d.rc == TSYNC_ECORRUPT) {
            char tmp[TSYNC__ERRLEN];
            snprintf(tmp, sizeof tmp, "%s: %s", tname(out->type), err);
            tsync__utf8_trim(tmp);
            memcpy(err, tmp, TSYNC__ERRLEN);
        }
        return d.rc;
    }
    if (!tsync__mpr_done(&d.r))
        return efail(err, TSYNC_ECORRUPT, "%s: trailing bytes at offset %zu", tname(out->type),
                     tsync__mpr_pos(&d.r));
    int rc = check(out, TSYNC_ECORRUPT, err);
    return rc;
}
