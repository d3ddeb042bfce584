/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_api_trust.c — the public trust API (tillsync/trust.h), through the public
 * headers only, as an app embedding the library would use it: a shop made, tills enrolled end to
 * end without the CLI (request, signature, text armour, install; and the one-machine case), the
 * trust set read as data, a revocation with its preview, a rotation, a signed migration, and the
 * version check of every versioned struct (an old and a future version).
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tillsync/tillsync.h"

static char g_dir[64];

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "%s", "/tmp/tsync_api_trust_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    if (g_dir[0]) nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(api_trust, .init = setup, .fini = teardown);

static const char *path(const char *name)
{
    static char buf[8][256];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static tsync_store *open_till(const char *name)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s;
    cr_assert_eq(tsync_store_open(&s, path(name), &o), 0, "open %s: %s", name, errmsg());
    return s;
}

static tsync_shop_key *make_shop(const char *file, const char *name)
{
    tsync_shop_key *k;
    cr_assert_eq(tsync_shop_key_create(&k, path(file), name), 0, "shop: %s", errmsg());
    return k;
}

/* The request of s, through its text armour and back, as it would travel by e-mail. */
static void request_via_text(tsync_store *s, const char *name, uint8_t **req, size_t *len)
{
    uint8_t *raw;
    size_t rlen;
    cr_assert_eq(tsync_trust_request(&raw, &rlen, s, name), 0, "request: %s", errmsg());
    char *text;
    cr_assert_eq(tsync_trust_armour(&text, raw, rlen, "a request\nof a till"), 0);
    cr_assert(strstr(text, "# a request\n# of a till\n"), "comment lines: %s", text);
    cr_assert(strstr(text, "-----BEGIN TILLSYNC ENROLMENT REQUEST-----\n"), "%s", text);
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    cr_assert_eq(tsync_trust_records_parse(&r, text, strlen(text)), 0, "%s", errmsg());
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.lens[0], rlen);
    cr_assert_eq(memcmp(r.records[0], raw, rlen), 0);
    *req = r.records[0], *len = r.lens[0];
    r.records[0] = NULL;
    tsync_trust_records_clear(&r);
    free(text);
    free(raw);
}

/* A till enrolled the two-machine way; returns its certificate (caller frees). */
static uint8_t *enrol_by_request(tsync_store *s, const tsync_shop_key *k, const char *name,
                                 unsigned days, size_t *clen, tsync_enrol_report *rep)
{
    uint8_t *req, *cert;
    size_t rlen;
    request_via_text(s, name, &req, &rlen);
    tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
    o.days = days;
    cr_assert_eq(tsync_shop_key_sign_request(&cert, clen, k, req, rlen, &o), 0, "sign: %s",
                 errmsg());
    free(req);
    const uint8_t *recs[1] = {cert};
    cr_assert_eq(tsync_trust_enrol(rep, s, recs, clen, 1), 0, "enrol: %s", errmsg());
    return cert;
}

Test(api_trust, enrol_end_to_end_and_trust_set)
{
    tsync_shop_key *k = make_shop("shop.key", "Corner Shop");
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    cr_assert_eq(tsync_shop_key_info(&info, k), 0);
    cr_assert_str_eq(info.shop_name, "Corner Shop");
    cr_assert_gt(info.created_ms, 0);

    /* The key file reads back as the same shop; over it, nothing is written. */
    tsync_shop_key *k2;
    cr_assert_eq(tsync_shop_key_load(&k2, path("shop.key")), 0, "%s", errmsg());
    tsync_shop_info info2 = TSYNC_SHOP_INFO_INIT;
    cr_assert_eq(tsync_shop_key_info(&info2, k2), 0);
    cr_assert_eq(memcmp(info.shop_id, info2.shop_id, TSYNC_SHOP_ID_BYTES), 0);
    cr_assert_eq(memcmp(info.admin_key, info2.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    cr_assert_str_eq(info.shop_name, info2.shop_name);
    cr_assert_eq(info.created_ms, info2.created_ms);
    tsync_shop_key_free(k2);
    cr_assert_eq(tsync_shop_key_create(NULL, path("shop.key"), "Again"), TSYNC_EEXISTS);
    cr_assert_eq(tsync_shop_key_create(NULL, path("bad.key"), ""), TSYNC_EINVAL);

    /* Till a: request, signature, install, as three people would. */
    tsync_store *a = open_till("a.db");
    uint8_t apk[TSYNC_PUBLIC_KEY_BYTES];
    cr_assert_eq(tsync_store_public_key(apk, a), 0);
    tsync_trust_set t = TSYNC_TRUST_SET_INIT;
    cr_assert_eq(tsync_trust_set_get(&t, a), 0, "%s", errmsg());
    cr_assert_eq(t.enrolled, 0);
    cr_assert_eq(t.ndevices, 0);

    uint8_t *req;
    size_t rlen;
    request_via_text(a, "till-a", &req, &rlen);
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    cr_assert_eq(tsync_trust_record_decode(&r, req, rlen), 0, "%s", errmsg());
    cr_assert_eq(r.kind, TSYNC_TRUST_REQUEST);
    cr_assert_str_eq(r.device_name, "till-a");
    cr_assert_eq(memcmp(r.device_key, apk, sizeof apk), 0);
    cr_assert_str_eq(tsync_trust_kind_label(r.kind), "ENROLMENT REQUEST");

    uint8_t *cert;
    size_t clen;
    tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
    o.days = 30;
    cr_assert_eq(tsync_shop_key_sign_request(&cert, &clen, k, req, rlen, &o), 0, "%s", errmsg());
    cr_assert_eq(tsync_trust_record_decode(&r, cert, clen), 0, "%s", errmsg());
    cr_assert_eq(r.kind, TSYNC_TRUST_CERTIFICATE);
    cr_assert_str_eq(r.shop_name, "Corner Shop");
    cr_assert_str_eq(r.device_name, "till-a");
    cr_assert_eq(memcmp(r.shop_id, info.shop_id, TSYNC_SHOP_ID_BYTES), 0);
    cr_assert_eq(memcmp(r.admin_key, info.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    cr_assert_eq(memcmp(r.device_key, apk, sizeof apk), 0);
    cr_assert_eq(r.expires_ms - r.not_before_ms, 30ull * 86400000ull);
    tsync_trust_record_clear(&r);

    /* A signed certificate is not a request; a request is not something a till installs. */
    uint8_t *bad;
    size_t blen;
    cr_assert_eq(tsync_shop_key_sign_request(&bad, &blen, k, cert, clen, NULL), TSYNC_EINVAL);
    const uint8_t *reqs[1] = {req};
    cr_assert_eq(tsync_trust_enrol(NULL, a, reqs, &rlen, 1), TSYNC_EINVAL);
    free(req);

    tsync_enrol_report rep = TSYNC_ENROL_REPORT_INIT;
    const uint8_t *certs[1] = {cert};
    cr_assert_eq(tsync_trust_enrol(&rep, a, certs, &clen, 1), 0, "%s", errmsg());
    cr_assert_eq(rep.first, 1);
    cr_assert_eq(rep.own, 1);
    cr_assert_eq(rep.added, 1);
    cr_assert_str_eq(rep.shop_name, "Corner Shop");
    cr_assert_str_eq(rep.device_name, "till-a");
    cr_assert_eq(memcmp(rep.shop_id, info.shop_id, TSYNC_SHOP_ID_BYTES), 0);
    /* Again: nothing new. */
    cr_assert_eq(tsync_trust_enrol(&rep, a, certs, &clen, 1), 0, "%s", errmsg());
    cr_assert_eq(rep.first, 0);
    cr_assert_eq(rep.added, 0);
    free(cert);

    /* Till b: the one-machine case. */
    tsync_store *b = open_till("b.db");
    uint8_t bpk[TSYNC_PUBLIC_KEY_BYTES];
    cr_assert_eq(tsync_store_public_key(bpk, b), 0);
    tsync_sign_options ob = TSYNC_SIGN_OPTIONS_INIT;
    ob.device_name = "till-b";
    cr_assert_eq(tsync_trust_enrol_with_key(&rep, b, k, &ob), 0, "%s", errmsg());
    cr_assert_eq(rep.first, 1);
    cr_assert_str_eq(rep.device_name, "till-b");

    /* a learns of b by b's certificate (a second request, signed for a). */
    cert = enrol_by_request(b, k, "till-b", 0, &clen, NULL);
    certs[0] = cert;
    cr_assert_eq(tsync_trust_enrol(&rep, a, certs, &clen, 1), 0, "%s", errmsg());
    cr_assert_eq(rep.first, 0);
    cr_assert_eq(rep.own, 0);
    cr_assert_eq(rep.added, 1);
    free(cert);

    /* The trust set, as data. */
    cr_assert_eq(tsync_trust_set_get(&t, a), 0, "%s", errmsg());
    cr_assert_eq(t.enrolled, 1);
    cr_assert_str_eq(t.shop_name, "Corner Shop");
    cr_assert_eq(memcmp(t.shop_id, info.shop_id, TSYNC_SHOP_ID_BYTES), 0);
    cr_assert_eq(t.nadmin_keys, 1);
    cr_assert_eq(memcmp(t.admin_keys[0], info.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    cr_assert_eq(t.ndevices, 2);
    cr_assert_str_eq(t.devices[0].name, "till-a");
    cr_assert_str_eq(t.devices[1].name, "till-b");
    cr_assert_eq(t.devices[0].this_device, 1);
    cr_assert_eq(t.devices[1].this_device, 0);
    cr_assert_eq(memcmp(t.devices[0].key, apk, sizeof apk), 0);
    cr_assert_eq(memcmp(t.devices[1].key, bpk, sizeof bpk), 0);
    cr_assert_eq(t.devices[0].revoked, 0);
    cr_assert_eq(t.devices[0].expires_ms - t.devices[0].not_before_ms, 30ull * 86400000ull);
    cr_assert_eq(t.devices[0].nsites, 1);
    cr_assert_eq(memcmp(t.devices[0].site_ids[0], tsync_store_site_id(a), TSYNC_SITE_ID_BYTES), 0);
    cr_assert_eq(t.devices[1].nsites, 0, "a has seen nothing of b yet");
    tsync_trust_set_clear(&t);
    cr_assert_eq(t.version, TSYNC_TRUST_SET_VERSION);
    cr_assert_eq(t.ndevices, 0);

    char *js;
    cr_assert_eq(tsync_trust_json(&js, a), 0);
    cr_assert(strstr(js, "\"enrolled\": true"), "%s", js);
    cr_assert(strstr(js, "till-b"), "%s", js);
    free(js);

    tsync_store_free(a);
    tsync_store_free(b);
    tsync_shop_key_free(k);
}

Test(api_trust, revoke_with_preview)
{
    tsync_shop_key *k = make_shop("shop.key", "Corner Shop");
    tsync_store *a = open_till("a.db"), *b = open_till("b.db"), *x = open_till("x.db");
    size_t clen;
    uint8_t *ca = enrol_by_request(a, k, "till-a", 0, &clen, NULL);
    free(ca);
    uint8_t *cb = enrol_by_request(b, k, "till-b", 0, &clen, NULL);
    const uint8_t *certs[1] = {cb};
    cr_assert_eq(tsync_trust_enrol(NULL, a, certs, &clen, 1), 0, "%s", errmsg());
    free(cb);
    uint8_t bpk[TSYNC_PUBLIC_KEY_BYTES];
    cr_assert_eq(tsync_store_public_key(bpk, b), 0);

    /* b sells twice; a merges both batches. */
    const char *ddl = "CREATE TABLE sales(id TEXT PRIMARY KEY, total INTEGER)";
    cr_assert_eq(tsync_store_exec(a, ddl, NULL, NULL), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_replicate(a, "sales", NULL, 0), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_exec(b, ddl, NULL, NULL), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_replicate(b, "sales", NULL, 0), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_exec(b, "INSERT INTO sales VALUES('s1', 5)", NULL, NULL), 0);
    cr_assert_eq(tsync_store_exec(b, "INSERT INTO sales VALUES('s2', 7)", NULL, NULL), 0);
    uint8_t *bundle;
    size_t blen;
    cr_assert_eq(tsync_store_bundle(&bundle, &blen, b, NULL, NULL), 0, "%s", errmsg());
    tsync_merge_report mr = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(a, bundle, blen, &mr), 0, "%s", errmsg());
    cr_assert_eq(mr.merged, 2);
    tsync_merge_report_clear(&mr);
    free(bundle);

    /* What a holds of b is the cutoff that keeps it. */
    tsync_cutoff *cuts;
    size_t ncuts;
    cr_assert_eq(tsync_revocation_cutoffs_from_db(&cuts, &ncuts, path("a.db"), bpk), 0, "%s",
                 errmsg());
    cr_assert_eq(ncuts, 1);
    cr_assert_eq(memcmp(cuts[0].site_id, tsync_store_site_id(b), TSYNC_SITE_ID_BYTES), 0);
    cr_assert_eq(cuts[0].seq, 2);
    tsync_cutoff *none;
    size_t nnone;
    cr_assert_eq(tsync_revocation_cutoffs_from_db(&none, &nnone, path("nothing.db"), bpk),
                 TSYNC_ENOTFOUND);
    cr_assert_null(none);

    /* The preview of a cut at 1: a holds one batch after it, nobody depends on it. */
    tsync_cutoff one = cuts[0];
    one.seq = 1;
    free(cuts);
    tsync_revocation_preview p = TSYNC_REVOCATION_PREVIEW_INIT;
    cr_assert_eq(tsync_revocation_preview_get(&p, path("a.db"), bpk, &one, 1), 0, "%s", errmsg());
    cr_assert_eq(p.nsites, 1);
    cr_assert_eq(p.sites[0].cutoff, 1);
    cr_assert_eq(p.sites[0].known, 1);
    cr_assert_eq(p.sites[0].have, 2);
    cr_assert_eq(p.sites[0].beyond, 1);
    cr_assert_eq(p.sites[0].ndeps, 0);
    tsync_revocation_preview_clear(&p);
    cr_assert_eq(p.nsites, 0);
    cr_assert_eq(p.version, TSYNC_REVOCATION_PREVIEW_VERSION);

    /* Sign, read back, install; twice is a no-op; a till not enrolled refuses it. */
    uint8_t *rev;
    size_t rvlen;
    cr_assert_eq(tsync_shop_key_revoke(&rev, &rvlen, k, bpk, &one, 1), 0, "%s", errmsg());
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    cr_assert_eq(tsync_trust_record_decode(&r, rev, rvlen), 0, "%s", errmsg());
    cr_assert_eq(r.kind, TSYNC_TRUST_REVOCATION);
    cr_assert_eq(memcmp(r.device_key, bpk, sizeof bpk), 0);
    cr_assert_eq(r.ncutoffs, 1);
    cr_assert_eq(r.cutoffs[0].seq, 1);
    tsync_trust_record_clear(&r);
    cr_assert_null(r.cutoffs);
    cr_assert_eq(tsync_trust_revoke(a, rev, rvlen), 0, "%s", errmsg());
    cr_assert_eq(tsync_trust_revoke(a, rev, rvlen), 0, "%s", errmsg());
    cr_assert_eq(tsync_trust_revoke(x, rev, rvlen), TSYNC_EREFUSED);
    /* a certificate is not a revocation */
    size_t cxlen;
    uint8_t *cx = enrol_by_request(x, k, "till-x", 0, &cxlen, NULL);
    cr_assert_eq(tsync_trust_revoke(a, cx, cxlen), TSYNC_EINVAL);
    free(cx);
    /* a site named twice */
    tsync_cutoff twice[2] = {one, one};
    uint8_t *bad;
    size_t badlen;
    cr_assert_eq(tsync_shop_key_revoke(&bad, &badlen, k, bpk, twice, 2), TSYNC_EINVAL);
    free(rev);

    tsync_trust_set t = TSYNC_TRUST_SET_INIT;
    cr_assert_eq(tsync_trust_set_get(&t, a), 0, "%s", errmsg());
    cr_assert_eq(t.ndevices, 2);
    cr_assert_str_eq(t.devices[1].name, "till-b");
    cr_assert_eq(t.devices[1].revoked, 1);
    cr_assert_eq(t.devices[0].revoked, 0);
    cr_assert_eq(t.devices[1].nsites, 1, "a knows b's site now");
    tsync_trust_set_clear(&t);

    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(x);
    tsync_shop_key_free(k);
}

Test(api_trust, rotation_and_signed_migration)
{
    tsync_shop_key *k = make_shop("shop.key", "Corner Shop");
    tsync_store *a = open_till("a.db");
    size_t clen;
    free(enrol_by_request(a, k, "till-a", 0, &clen, NULL));

    tsync_shop_key *nk;
    uint8_t *rot;
    size_t rotlen;
    cr_assert_eq(tsync_shop_key_rotate(&nk, &rot, &rotlen, k, path("new.key")), 0, "%s", errmsg());
    cr_assert_eq(access(path("new.key"), F_OK), 0);
    tsync_shop_info oi = TSYNC_SHOP_INFO_INIT, ni = TSYNC_SHOP_INFO_INIT;
    cr_assert_eq(tsync_shop_key_info(&oi, k), 0);
    cr_assert_eq(tsync_shop_key_info(&ni, nk), 0);
    cr_assert_eq(memcmp(oi.shop_id, ni.shop_id, TSYNC_SHOP_ID_BYTES), 0);
    cr_assert_neq(memcmp(oi.admin_key, ni.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
    cr_assert_eq(tsync_trust_record_decode(&r, rot, rotlen), 0, "%s", errmsg());
    cr_assert_eq(r.kind, TSYNC_TRUST_ROTATION);
    cr_assert_eq(memcmp(r.admin_key, oi.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    cr_assert_eq(memcmp(r.new_admin_key, ni.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    /* never over an existing file, and then nothing is made */
    uint8_t *rot2 = (uint8_t *)"x";
    size_t rot2len = 1;
    cr_assert_eq(tsync_shop_key_rotate(NULL, &rot2, &rot2len, k, path("new.key")), TSYNC_EEXISTS);
    cr_assert_null(rot2);

    const uint8_t *recs[1] = {rot};
    tsync_enrol_report rep = TSYNC_ENROL_REPORT_INIT;
    cr_assert_eq(tsync_trust_enrol(&rep, a, recs, &rotlen, 1), 0, "%s", errmsg());
    cr_assert_eq(rep.added, 1);
    free(rot);
    tsync_trust_set t = TSYNC_TRUST_SET_INIT;
    cr_assert_eq(tsync_trust_set_get(&t, a), 0, "%s", errmsg());
    cr_assert_eq(t.nadmin_keys, 2);
    cr_assert_eq(memcmp(t.admin_keys[1], ni.admin_key, TSYNC_PUBLIC_KEY_BYTES), 0);
    tsync_trust_set_clear(&t);

    /* A migration signed by the new key runs on a. */
    int64_t num;
    cr_assert_eq(tsync_migration_number(&num, "007_notes.sql"), 0);
    cr_assert_eq(num, 7);
    cr_assert_eq(tsync_migration_number(&num, "notes.sql"), TSYNC_EINVAL);
    cr_assert_eq(tsync_migration_number(&num, "000_zero.sql"), TSYNC_EINVAL);
    cr_assert_eq(tsync_migration_number(&num, "1234567890123456789_long.sql"), TSYNC_EINVAL);
    cr_assert_eq(tsync_migration_number(&num, "001_.sql"), TSYNC_EINVAL);
    cr_assert_eq(tsync_migration_number(&num, "001_x.txt"), TSYNC_EINVAL);
    const char *sql = "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);\n";
    uint8_t *mig;
    size_t miglen;
    cr_assert_eq(tsync_shop_key_sign_migration(&mig, &miglen, nk, "bad.sql", sql, strlen(sql)),
                 TSYNC_EINVAL);
    cr_assert_eq(
        tsync_shop_key_sign_migration(&mig, &miglen, nk, "001_notes.sql", sql, strlen(sql)), 0,
        "%s", errmsg());
    cr_assert_eq(tsync_trust_record_decode(&r, mig, miglen), 0, "%s", errmsg());
    cr_assert_eq(r.kind, TSYNC_TRUST_MIGRATION);
    cr_assert_eq(r.migration_number, 1);
    cr_assert_str_eq(r.migration_name, "001_notes.sql");
    cr_assert_eq(r.sql_len, strlen(sql));
    tsync_migrate_report mrep = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(tsync_store_migrate_signed(a, mig, miglen, &mrep), 0, "%s", errmsg());
    tsync_migrate_report_clear(&mrep);
    int64_t v;
    cr_assert_eq(tsync_store_schema_version(&v, a), 0);
    cr_assert_eq(v, 1);
    free(mig);

    tsync_shop_key_free(nk);
    tsync_shop_key_free(k);
    tsync_store_free(a);
}

Test(api_trust, armour_and_files)
{
    tsync_shop_key *k = make_shop("shop.key", "Corner Shop");
    tsync_store *a = open_till("a.db");
    uint8_t *req;
    size_t rlen;
    cr_assert_eq(tsync_trust_request(&req, &rlen, a, NULL), 0, "%s", errmsg());
    uint8_t *cert;
    size_t clen;
    cr_assert_eq(tsync_shop_key_sign_request(&cert, &clen, k, req, rlen, NULL), 0, "%s", errmsg());

    /* Two blocks in one text, in an e-mail. */
    char *t1, *t2;
    cr_assert_eq(tsync_trust_armour(&t1, req, rlen, NULL), 0);
    cr_assert_eq(tsync_trust_armour(&t2, cert, clen, NULL), 0);
    char mail[16384];
    snprintf(mail, sizeof mail, "Hello,\nhere they are:\n%s\n%s\nBye\n", t1, t2);
    tsync_trust_records r = TSYNC_TRUST_RECORDS_INIT;
    cr_assert_eq(tsync_trust_records_parse(&r, mail, strlen(mail)), 0, "%s", errmsg());
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.lens[1], clen);
    /* Raw bytes are one record; appended to what the list holds. */
    cr_assert_eq(tsync_trust_records_parse(&r, (const char *)cert, clen), 0, "%s", errmsg());
    cr_assert_eq(r.n, 3);
    cr_assert_eq(memcmp(r.records[2], cert, clen), 0);
    /* No block and not a record: nothing appended. */
    cr_assert_eq(tsync_trust_records_parse(&r, "hello", 5), TSYNC_ENOTFOUND);
    cr_assert_eq(strncmp(errmsg(), "holds no tillsync record", 24), 0, "%s", errmsg());
    cr_assert_eq(r.n, 3);
    /* A label that is not its record's kind. */
    const char *begin = "-----BEGIN TILLSYNC CERTIFICATE-----\n";
    const char *body = strstr(t2, begin) + strlen(begin);
    const char *end = strstr(body, "-----END TILLSYNC CERTIFICATE-----");
    char swapped[8192];
    snprintf(swapped, sizeof swapped,
             "-----BEGIN TILLSYNC REVOCATION-----\n%.*s-----END TILLSYNC REVOCATION-----\n",
             (int)(end - body), body);
    cr_assert_eq(tsync_trust_records_parse(&r, swapped, strlen(swapped)), TSYNC_ECORRUPT, "%s",
                 swapped);
    cr_assert(strstr(errmsg(), "another kind of record"), "%s", errmsg());
    cr_assert_eq(r.n, 3);
    /* A block cut off. */
    t2[strlen(t2) / 2] = '\0';
    cr_assert_eq(tsync_trust_records_parse(&r, t2, strlen(t2)), TSYNC_ECORRUPT);
    tsync_trust_records_clear(&r);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(r.version, TSYNC_TRUST_RECORDS_VERSION);

    /* A tampered record does not decode. */
    cert[clen - 1] ^= 1;
    tsync_trust_record d = TSYNC_TRUST_RECORD_INIT;
    cr_assert_eq(tsync_trust_record_decode(&d, cert, clen), TSYNC_EBADSIG);
    char *t3;
    cr_assert_eq(tsync_trust_armour(&t3, (const uint8_t *)"xx", 2, NULL), TSYNC_EINVAL);
    cr_assert_null(t3);

    /* The key file starts like one; a record file does not. */
    FILE *f = fopen(path("shop.key"), "rb");
    char head[8];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    cr_assert_eq(tsync_shop_key_sniff(head, n), 1);
    cr_assert_eq(tsync_shop_key_sniff(req, rlen), 0);
    cr_assert_eq(tsync_shop_key_sniff(head, 3), 0);
    /* A key file others can read is refused, and the message says why. */
    cr_assert_eq(chmod(path("shop.key"), 0644), 0);
    tsync_shop_key *k2;
    cr_assert_eq(tsync_shop_key_load(&k2, path("shop.key")), TSYNC_EINVAL);
    cr_assert_null(k2);
    cr_assert_eq(tsync_shop_key_load(&k2, path("none.key")), TSYNC_ENOTFOUND);
    /* More days than a certificate may have. */
    tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
    o.days = TSYNC_TRUST_MAX_DAYS + 1;
    uint8_t *c2;
    size_t c2len;
    cr_assert_eq(tsync_shop_key_sign_request(&c2, &c2len, k, req, rlen, &o), TSYNC_EINVAL);

    free(t1);
    free(t2);
    free(req);
    free(cert);
    tsync_shop_key_free(k);
    tsync_store_free(a);
}

/* Every versioned struct refuses version 0 (older than any) and a future one with
 * TSYNC_EVERSION and a one-line message, and changes nothing. */
static void expect_version_error(int rc, const char *what)
{
    cr_assert_eq(rc, TSYNC_EVERSION, "%s: %d", what, rc);
    const char *m = errmsg();
    cr_assert(strstr(m, what), "%s: the message does not name the struct: %s", what, m);
    cr_assert_null(strchr(m, '\n'), "%s: not one line: %s", what, m);
    cr_assert_null(strstr(m, "tillsync "), "%s: names a command: %s", what, m);
}

Test(api_trust, versions_checked)
{
    tsync_shop_key *k = make_shop("shop.key", "Corner Shop");
    tsync_store *a = open_till("a.db");
    uint8_t *req;
    size_t rlen;
    cr_assert_eq(tsync_trust_request(&req, &rlen, a, "till-a"), 0, "%s", errmsg());
    const unsigned bad[2] = {0, 1000};
    for (int i = 0; i < 2; i++) {
        tsync_trust_record r = TSYNC_TRUST_RECORD_INIT;
        r.version = bad[i];
        expect_version_error(tsync_trust_record_decode(&r, req, rlen), "tsync_trust_record");
        cr_assert_eq(r.kind, 0);

        tsync_trust_records rs = TSYNC_TRUST_RECORDS_INIT;
        rs.version = bad[i];
        expect_version_error(tsync_trust_records_parse(&rs, (const char *)req, rlen),
                             "tsync_trust_records");
        cr_assert_eq(rs.n, 0);

        tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
        info.version = bad[i];
        expect_version_error(tsync_shop_key_info(&info, k), "tsync_shop_info");

        tsync_sign_options o = TSYNC_SIGN_OPTIONS_INIT;
        o.version = bad[i];
        uint8_t *cert = NULL;
        size_t clen;
        expect_version_error(tsync_shop_key_sign_request(&cert, &clen, k, req, rlen, &o),
                             "tsync_sign_options");
        cr_assert_null(cert);
        tsync_enrol_report rep0 = TSYNC_ENROL_REPORT_INIT;
        expect_version_error(tsync_trust_enrol_with_key(&rep0, a, k, &o), "tsync_sign_options");

        tsync_enrol_report rep = TSYNC_ENROL_REPORT_INIT;
        rep.version = bad[i];
        expect_version_error(tsync_trust_enrol_with_key(&rep, a, k, NULL), "tsync_enrol_report");
        const uint8_t *recs[1] = {req};
        expect_version_error(tsync_trust_enrol(&rep, a, recs, &rlen, 1), "tsync_enrol_report");

        tsync_trust_set t = TSYNC_TRUST_SET_INIT;
        t.version = bad[i];
        expect_version_error(tsync_trust_set_get(&t, a), "tsync_trust_set");

        tsync_revocation_preview p = TSYNC_REVOCATION_PREVIEW_INIT;
        p.version = bad[i];
        uint8_t pk[TSYNC_PUBLIC_KEY_BYTES] = {0};
        expect_version_error(tsync_revocation_preview_get(&p, path("a.db"), pk, NULL, 0),
                             "tsync_revocation_preview");
    }
    /* Nothing of the refused calls enrolled the till. */
    tsync_trust_set t = TSYNC_TRUST_SET_INIT;
    cr_assert_eq(tsync_trust_set_get(&t, a), 0, "%s", errmsg());
    cr_assert_eq(t.enrolled, 0);
    free(req);
    tsync_shop_key_free(k);
    tsync_store_free(a);
}
