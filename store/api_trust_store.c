/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_trust_store.c — the public API of shop trust, the till's half
 * (include/tillsync/trust.h): this device's key and enrolment request, installing certificates,
 * rotations and revocations, the trust set as data, and the admin's preview of a revocation. The
 * rules are store/trust.c's and store/kept.c's; this file turns them into the public conventions.
 */
#include <stdlib.h>
#include <string.h>

#include "api_trust_int.h"
#include "internal.h"

int tsync_store_public_key(uint8_t out[TSYNC_PUBLIC_KEY_BYTES], tsync_store *s)
{
    if (!out || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    memcpy(out, s->pk, TSYNC__PK_BYTES);
    return 0;
}

int tsync_trust_request(uint8_t **req, size_t *req_len, tsync_store *s, const char *device_name)
{
    if (!req || !req_len || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    return tsync__trust_request(s, device_name, req, req_len);
}

static void report_fill(tsync_enrol_report *out, const tsync__enrol_result *r)
{
    out->first = r->first;
    out->own = r->own;
    memcpy(out->shop_id, r->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(out->shop_name, r->shop_name, sizeof out->shop_name);
    memcpy(out->device_name, r->device_name, sizeof out->device_name);
    out->expires_ms = r->expires_ms;
    out->added = r->added;
}

static int report_check(tsync_enrol_report *report)
{
    if (!report) return 0;
    int rc = tsync__api_version(report->version, TSYNC_ENROL_REPORT_VERSION, "tsync_enrol_report");
    if (rc) return rc;
    unsigned int v = report->version;
    memset(report, 0, sizeof *report);
    report->version = v;
    return 0;
}

int tsync_trust_enrol(tsync_enrol_report *report, tsync_store *s, const uint8_t *const *records,
                      const size_t *lens, size_t n)
{
    if (!s || (n && (!records || !lens))) return tsync__err(TSYNC_EINVAL, "no records given");
    int rc = report_check(report);
    if (rc) return rc;
    tsync__enrol_result r;
    rc = tsync__trust_enrol(s, records, lens, n, &r);
    if (rc == 0 && report) report_fill(report, &r);
    return rc;
}

int tsync_trust_enrol_with_key(tsync_enrol_report *report, tsync_store *s, const tsync_shop_key *k,
                               const tsync_sign_options *opts)
{
    if (!s || !k) return tsync__err(TSYNC_EINVAL, "no store or key given");
    int rc = report_check(report);
    unsigned days;
    const char *name;
    if (rc == 0) rc = tsync__api_sign_options(opts, &days, &name);
    if (rc) return rc;
    uint8_t *req = NULL, *cert = NULL;
    size_t rlen = 0, clen = 0;
    /* The name goes into the request, so the certificate keeps it as a signed one would. */
    rc = tsync__trust_request(s, name, &req, &rlen);
    if (rc == 0) {
        tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
        o.days = days;
        rc = tsync_shop_key_sign_request(&cert, &clen, k, req, rlen, &o);
    }
    if (rc == 0) {
        const uint8_t *recs[1] = {cert};
        rc = tsync_trust_enrol(report, s, recs, &clen, 1);
    }
    free(req);
    free(cert);
    return rc;
}

int tsync_trust_revoke(tsync_store *s, const uint8_t *rev, size_t rev_len)
{
    if (!s || !rev) return tsync__err(TSYNC_EINVAL, "no revocation given");
    return tsync__trust_revoke(s, rev, rev_len);
}

int tsync_trust_json(char **out, tsync_store *s)
{
    if (!out || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    return tsync__trust_json(s, out);
}

/* ---------------------------------------------------------------- the trust set */

void tsync_trust_set_clear(tsync_trust_set *t)
{
    if (!t) return;
    unsigned int v = t->version;
    for (size_t i = 0; i < t->ndevices; i++) free(t->devices[i].site_ids);
    free(t->devices);
    free(t->admin_keys);
    memset(t, 0, sizeof *t);
    t->version = v;
}

/* Appends a 32-byte key to the admin keys (the queries give each once). */
static int add_admin_key(tsync_trust_set *t, const void *pk, int n)
{
    if (n != TSYNC__PK_BYTES) return 0;
    uint8_t(*nk)[TSYNC_PUBLIC_KEY_BYTES] =
        realloc(t->admin_keys, (t->nadmin_keys + 1) * sizeof *nk);
    if (!nk) return tsync__err(TSYNC_ENOMEM, "out of memory");
    t->admin_keys = nk;
    memcpy(nk[t->nadmin_keys++], pk, TSYNC__PK_BYTES);
    return 0;
}

/* The sites this database knows of the device's key. */
static int device_sites(tsync_store *s, tsync_trust_device *d)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "SELECT site FROM tsync_sites WHERE pk=?1 ORDER BY site", -1,
                                &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read the sites of a device");
    sqlite3_bind_blob(st, 1, d->key, TSYNC__PK_BYTES, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        uint8_t(*ns)[TSYNC_SITE_ID_BYTES] = realloc(d->site_ids, (d->nsites + 1) * sizeof *ns);
        if (!ns) {
            sqlite3_finalize(st);
            return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
        d->site_ids = ns;
        memcpy(ns[d->nsites++], sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
    }
    rc = rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "read the sites of a device");
    sqlite3_finalize(st);
    return rc;
}

static int read_set(tsync_trust_set *t, tsync_store *s)
{
    sqlite3_stmt *st;
    /* The shop and the key it enrolled with (tsync__trust_enrolled said the tables exist). */
    int rc = sqlite3_prepare_v2(s->db, "SELECT name, admin_pk FROM tsync_shop WHERE id=1", -1, &st,
                                NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read the shop");
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        tsync__api_name(t->shop_name, name ? name : "", name ? strlen(name) : 0);
        rc = add_admin_key(t, sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1));
    } else {
        rc = tsync__err_sqlite(s->db, rc, "read the shop");
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    /* Every other key joined to it by rotations (the same query as the JSON's). */
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT old_pk FROM tsync_rotations WHERE joined=1 AND old_pk!=?1 "
                            "UNION SELECT new_pk FROM tsync_rotations WHERE joined=1 AND "
                            "new_pk!=?1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read the admin keys");
    sqlite3_bind_blob(st, 1, t->admin_keys[0], TSYNC__PK_BYTES, SQLITE_STATIC);
    while (rc == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rc = add_admin_key(t, sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0));
    if (rc == SQLITE_DONE) rc = 0;
    if (rc > 0) rc = tsync__err_sqlite(s->db, rc, "read the admin keys");
    sqlite3_finalize(st);
    if (rc) return rc;
    /* The devices: one per key, as tsync_trust_json lists them. */
    rc = sqlite3_prepare_v2(
        s->db,
        "SELECT device_pk, (SELECT device_name FROM tsync_certs n WHERE n.device_pk = "
        "c.device_pk ORDER BY expires DESC, id LIMIT 1) AS name, min(not_before), max(expires), "
        "EXISTS(SELECT 1 FROM tsync_revocations r WHERE r.device_pk = c.device_pk) "
        "FROM tsync_certs c GROUP BY device_pk ORDER BY name, device_pk",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read the certificates");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__PK_BYTES) continue;
        tsync_trust_device *nd = realloc(t->devices, (t->ndevices + 1) * sizeof *nd);
        if (!nd) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        t->devices = nd;
        tsync_trust_device *d = &nd[t->ndevices++];
        memset(d, 0, sizeof *d);
        memcpy(d->key, sqlite3_column_blob(st, 0), TSYNC__PK_BYTES);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        tsync__api_name(d->name, name ? name : "", name ? strlen(name) : 0);
        d->not_before_ms = (uint64_t)sqlite3_column_int64(st, 2);
        d->expires_ms = (uint64_t)sqlite3_column_int64(st, 3);
        d->revoked = sqlite3_column_int(st, 4) != 0;
        d->this_device = memcmp(d->key, s->pk, TSYNC__PK_BYTES) == 0;
        if ((rc = device_sites(s, d))) break;
    }
    if (rc == SQLITE_DONE) rc = 0;
    if (rc > 0) rc = tsync__err_sqlite(s->db, rc, "read the certificates");
    sqlite3_finalize(st);
    return rc;
}

int tsync_trust_set_get(tsync_trust_set *out, tsync_store *s)
{
    if (!out || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    int rc = tsync__api_version(out->version, TSYNC_TRUST_SET_VERSION, "tsync_trust_set");
    if (rc) return rc;
    tsync_trust_set_clear(out);
    rc = tsync__trust_enrolled(s, out->shop_id);
    if (rc <= 0) return rc;
    out->enrolled = 1;
    /* One snapshot, so that the shop, its keys and its devices agree. */
    int own = sqlite3_get_autocommit(s->db);
    if (own && (rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL)) != SQLITE_OK)
        return tsync__err_sqlite(s->db, rc, "read the trust set");
    rc = read_set(out, s);
    if (own) sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc) tsync_trust_set_clear(out);
    return rc;
}

/* ---------------------------------------------------------------- the revocation preview */

int tsync_revocation_cutoffs_from_db(tsync_cutoff **out, size_t *n, const char *db_path,
                                     const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES])
{
    if (!out || !n || !db_path || !device_key)
        return tsync__err(TSYNC_EINVAL, "no database or key given");
    *out = NULL, *n = 0;
    tsync__cutoff *c;
    uint32_t nc;
    int rc = tsync__trust_cutoffs_from_db(db_path, device_key, &c, &nc);
    if (rc) return rc;
    if (nc) {
        *out = malloc(nc * sizeof **out);
        if (!*out) {
            free(c);
            return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
    }
    tsync__api_cutoffs_out(*out, c, nc);
    free(c);
    *n = nc;
    return 0;
}

void tsync_revocation_preview_clear(tsync_revocation_preview *p)
{
    if (!p) return;
    unsigned int v = p->version;
    for (size_t i = 0; i < p->nsites; i++) free(p->sites[i].deps);
    free(p->sites);
    memset(p, 0, sizeof *p);
    p->version = v;
}

int tsync_revocation_preview_get(tsync_revocation_preview *out, const char *db_path,
                                 const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                                 const tsync_cutoff *cutoffs, size_t ncutoffs)
{
    if (!out || !db_path || !device_key || (ncutoffs && !cutoffs))
        return tsync__err(TSYNC_EINVAL, "no database or key given");
    int rc = tsync__api_version(out->version, TSYNC_REVOCATION_PREVIEW_VERSION,
                                "tsync_revocation_preview");
    if (rc) return rc;
    tsync_revocation_preview_clear(out);
    if (ncutoffs > TSYNC__TRUST_MAX_CUTOFFS)
        return tsync__err(TSYNC_EINVAL, "a revocation names at most %u sites, not %zu",
                          TSYNC__TRUST_MAX_CUTOFFS, ncutoffs);
    tsync__cutoff *cuts = tsync__api_cutoffs_in(cutoffs, ncutoffs);
    if (ncutoffs && !cuts) return TSYNC_ENOMEM;
    tsync__cut_site *v;
    uint32_t n;
    rc = tsync__trust_cut_preview(db_path, device_key, cuts, (uint32_t)ncutoffs, &v, &n);
    free(cuts);
    if (rc) return rc;
    out->sites = n ? calloc(n, sizeof *out->sites) : NULL;
    if (n && !out->sites) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        tsync_revocation_site *e = &out->sites[i];
        memcpy(e->site_id, v[i].site, TSYNC__SITE_BYTES);
        e->cutoff = v[i].cutoff;
        e->known = v[i].known;
        e->have = v[i].have;
        e->beyond = v[i].beyond;
        e->kept = v[i].kept;
        out->nsites = i + 1;
        if (v[i].ndeps == 0) continue;
        e->deps = calloc(v[i].ndeps, sizeof *e->deps);
        if (!e->deps) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        e->ndeps = v[i].ndeps;
        for (uint32_t k = 0; k < v[i].ndeps; k++) {
            memcpy(e->deps[k].site_id, v[i].deps[k].site, TSYNC__SITE_BYTES);
            memcpy(e->deps[k].key, v[i].deps[k].pk, TSYNC__PK_BYTES);
            memcpy(e->deps[k].name, v[i].deps[k].name, sizeof e->deps[k].name);
            e->deps[k].batches = v[i].deps[k].batches;
            e->deps[k].max_dep = v[i].deps[k].max_dep;
        }
    }
    tsync__cut_preview_free(v, n);
    if (rc) tsync_revocation_preview_clear(out);
    return rc;
}
