/*
 * store/bundle_io.c — the state a peer shows (site, clock, version vector with head hashes) and
 * bundles: the batches a peer with a given state lacks, as contiguous signed runs per origin.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/trust.h"

static json_t *hexstr(const uint8_t *p, size_t n)
{
    char buf[2 * 64 + 1];
    tsync__hex(p, n, buf);
    return json_string(buf);
}

int tsync_store_state_json(tsync_store *s, char **out)
{
    *out = NULL;
    tsync__hlc hlc;
    int rc = tsync__hlc_load(s, &hlc);
    if (rc) return rc;
    json_t *o = json_object(), *vec = json_array();
    json_object_set_new(o, "format", json_integer(1));
    json_object_set_new(o, "site", hexstr(s->site, TSYNC__SITE_BYTES));
    json_object_set_new(o, "incarnation", hexstr(s->inc, TSYNC__INC_BYTES));
    json_object_set_new(o, "public_key", hexstr(s->pk, TSYNC__PK_BYTES));
    json_object_set_new(o, "hlc", json_integer((json_int_t)hlc));
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT site, seq, hash, frozen_seq FROM tsync_sites WHERE "
                            "seq > 0 ORDER BY site",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        json_decref(o), json_decref(vec);
        return tsync__err_sqlite(s->db, rc, "read vector");
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *e = json_object();
        json_object_set_new(e, "site", hexstr(sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES));
        json_object_set_new(e, "seq", json_integer(sqlite3_column_int64(st, 1)));
        if (sqlite3_column_bytes(st, 2) == TSYNC__HASH_BYTES)
            json_object_set_new(e, "hash", hexstr(sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES));
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            json_object_set_new(e, "frozen_at", json_integer(sqlite3_column_int64(st, 3)));
        json_array_append_new(vec, e);
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "vector", vec);
    *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* Parses the vector of a state into (site, seq) pairs. */
static int parse_since(const char *json, tsync__vv *vv)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    if (!o) return tsync__err(TSYNC_EINVAL, "state is not JSON: %s (line %d)", je.text, je.line);
    json_t *vec = json_object_get(o, "vector");
    int rc = 0;
    if (!json_is_array(vec)) {
        rc = tsync__err(TSYNC_EINVAL, "state has no \"vector\" array (use the output of "
                                      "'tillsync state DB --json')");
    }
    size_t i;
    json_t *e;
    json_array_foreach(vec, i, e)
    {
        if (rc) break;
        const char *site = json_string_value(json_object_get(e, "site"));
        json_t *seq = json_object_get(e, "seq");
        uint8_t id[TSYNC__SITE_BYTES];
        if (!site || tsync__unhex(site, id, sizeof id) != 0 || !json_is_integer(seq) ||
            json_integer_value(seq) < 0) {
            rc = tsync__err(TSYNC_EINVAL, "state: vector entry %zu is malformed", i);
            break;
        }
        const char *hs = json_string_value(json_object_get(e, "hash"));
        uint8_t hash[TSYNC__HASH_BYTES];
        if (hs && tsync__unhex(hs, hash, sizeof hash) != 0) {
            rc = tsync__err(TSYNC_EINVAL, "state: vector entry %zu has a malformed hash", i);
            break;
        }
        if (tsync__vv_set(vv, id, (uint64_t)json_integer_value(seq), hs ? hash : NULL))
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    json_decref(o);
    return rc;
}

int tsync_store_bundle(tsync_store *s, const char *since_json, uint8_t **out, size_t *len,
                       size_t *nbatches)
{
    *out = NULL;
    *len = 0;
    if (nbatches) *nbatches = 0;
    tsync__vv since = {0};
    int rc = since_json ? parse_since(since_json, &since) : 0;
    if (rc) return rc;
    if ((rc = tsync_store_seal(s, NULL))) {
        tsync__vv_free(&since);
        return rc;
    }
    /* A read transaction gives one consistent snapshot of the log. */
    if ((rc = tsync__exec(s, "BEGIN"))) {
        tsync__vv_free(&since);
        return rc;
    }
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    sqlite3_stmt *sites = NULL, *last = NULL, *bodies = NULL, *prevh = NULL;
    if (!w) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    if (sqlite3_prepare_v2(s->db,
                           "SELECT idx, site, pk, inc, seq, frozen_seq FROM tsync_sites "
                           "WHERE seq > 0 AND pk IS NOT NULL ORDER BY idx",
                           -1, &sites, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db,
                           "SELECT max(seq) FROM tsync_log WHERE site=?1 AND seq>?2 AND "
                           "seq<=?3 AND sig IS NOT NULL",
                           -1, &last, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db,
                           "SELECT seq, body, sig FROM tsync_log WHERE site=?1 AND seq>?2 "
                           "AND seq<=?3 ORDER BY seq",
                           -1, &bodies, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "SELECT hash FROM tsync_log WHERE site=?1 AND seq=?2", -1, &prevh,
                           NULL) != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "read log");
        goto out;
    }
    while (rc == 0 && sqlite3_step(sites) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(sites, 0);
        tsync__bsite bs;
        if (sqlite3_column_bytes(sites, 1) != TSYNC__SITE_BYTES ||
            sqlite3_column_bytes(sites, 2) != TSYNC__PK_BYTES ||
            sqlite3_column_bytes(sites, 3) != TSYNC__INC_BYTES)
            continue;
        memcpy(bs.site, sqlite3_column_blob(sites, 1), TSYNC__SITE_BYTES);
        memcpy(bs.pk, sqlite3_column_blob(sites, 2), TSYNC__PK_BYTES);
        memcpy(bs.inc, sqlite3_column_blob(sites, 3), TSYNC__INC_BYTES);
        int64_t head = sqlite3_column_int64(sites, 4);
        const tsync__vv_entry *pe = tsync__vv_get(&since, bs.site);
        int64_t from = pe ? (int64_t)pe->seq : 0;
        int64_t frozen =
            sqlite3_column_type(sites, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(sites, 5);
        static const uint8_t zero[TSYNC__HASH_BYTES];
        if (pe && from > 0 && from <= head && memcmp(pe->hash, zero, sizeof zero) != 0) {
            /* Same number, different hash: a fork. Send our branch from the last common batch
             * (or from the start) so the peer sees it and merges its rows too. */
            sqlite3_reset(prevh);
            sqlite3_bind_int64(prevh, 1, idx);
            sqlite3_bind_int64(prevh, 2, from);
            if (sqlite3_step(prevh) == SQLITE_ROW &&
                sqlite3_column_bytes(prevh, 0) == TSYNC__HASH_BYTES &&
                memcmp(sqlite3_column_blob(prevh, 0), pe->hash, TSYNC__HASH_BYTES) != 0)
                from = frozen >= 0 && frozen < from ? frozen : 0;
        } else if (from > head && frozen >= 0) {
            from = frozen; /* the peer may hold the other branch */
        }
        if (from >= head) continue;
        sqlite3_reset(last);
        sqlite3_bind_int64(last, 1, idx);
        sqlite3_bind_int64(last, 2, from);
        sqlite3_bind_int64(last, 3, head);
        if (sqlite3_step(last) != SQLITE_ROW || sqlite3_column_type(last, 0) == SQLITE_NULL)
            continue; /* no signed end yet */
        int64_t upto = sqlite3_column_int64(last, 0);
        uint8_t prev[TSYNC__HASH_BYTES] = {0};
        if (from > 0) {
            sqlite3_reset(prevh);
            sqlite3_bind_int64(prevh, 1, idx);
            sqlite3_bind_int64(prevh, 2, from);
            if (sqlite3_step(prevh) != SQLITE_ROW ||
                sqlite3_column_bytes(prevh, 0) != TSYNC__HASH_BYTES) {
                rc = tsync__err(TSYNC_ENOTFOUND, "log of a site lacks batch %lld", (long long)from);
                break;
            }
            memcpy(prev, sqlite3_column_blob(prevh, 0), sizeof prev);
        }
        uint32_t si;
        if ((rc = tsync__bundle_writer_site(w, &bs, &si))) break;
        if ((rc = tsync__bundle_writer_run(w, si, (uint64_t)from + 1, prev))) break;
        sqlite3_reset(bodies);
        sqlite3_bind_int64(bodies, 1, idx);
        sqlite3_bind_int64(bodies, 2, from);
        sqlite3_bind_int64(bodies, 3, upto);
        int64_t expect = from + 1;
        const void *sig = NULL;
        while (rc == 0 && sqlite3_step(bodies) == SQLITE_ROW) {
            if (sqlite3_column_int64(bodies, 0) != expect) {
                rc = tsync__err(TSYNC_ECORRUPT, "log has a gap before batch %lld",
                                (long long)expect);
                break;
            }
            expect++;
            rc = tsync__bundle_writer_body(w, sqlite3_column_blob(bodies, 1),
                                           (size_t)sqlite3_column_bytes(bodies, 1));
            if (nbatches) (*nbatches)++;
            sig = sqlite3_column_blob(bodies, 2);
            if (rc == 0 && expect - 1 == upto) rc = tsync__bundle_writer_end_run(w, sig);
        }
    }
    if (rc == 0) {
        /* The shop's certificates, revocations and rotations travel with every bundle, so they
         * replicate like data (the receiver verifies each). */
        uint8_t **blobs = NULL;
        size_t *lens = NULL, nb = 0;
        rc = tsync__trust_export(s, &blobs, &lens, &nb);
        for (size_t i = 0; rc == 0 && i < nb; i++)
            if ((rc = tsync__bundle_writer_trust(w, blobs[i], lens[i])))
                rc = tsync__err(rc, "cannot add trust record %zu to the bundle", i);
        tsync__trust_export_free(blobs, lens, nb);
    }
    if (rc == 0 && (rc = tsync__bundle_writer_finish(w, true, out, len)))
        rc = tsync__err(rc, "cannot write bundle");
out:
    sqlite3_finalize(sites);
    sqlite3_finalize(last);
    sqlite3_finalize(bodies);
    sqlite3_finalize(prevh);
    tsync__bundle_writer_free(w);
    tsync__vv_free(&since);
    tsync__exec(s, "COMMIT");
    return rc;
}
