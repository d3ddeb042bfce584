/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/install/test_ffi.c — the helpers for bindings (net/ffi.c): each tsync_<struct>_init()
 * gives what its TSYNC_<STRUCT>_INIT macro gives, writes no byte past the version the caller
 * names, and refuses versions it does not know; tsync_free() frees what the library returns.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tests/lib/helpers.h"
#include "tillsync/tillsync.h"

/* The init function of the current version equals the macro, byte for byte (a static object's
 * padding is zero, and so is the template's the function copies). A byte after the struct
 * stays untouched. */
#define CHECK_INIT(type, BASE)                                                                     \
    do {                                                                                           \
        static const type want = BASE##_INIT;                                                      \
        unsigned char buf[sizeof(type) + 1];                                                       \
        memset(buf, 0xa5, sizeof buf);                                                             \
        cr_assert_eq(type##_init((type *)(void *)buf, BASE##_VERSION), 0, #type "_init");          \
        cr_assert_eq(memcmp(buf, &want, sizeof(type)), 0, #type "_init differs from the macro");   \
        cr_assert_eq(buf[sizeof(type)], 0xa5, #type "_init wrote past the struct");                \
        cr_assert_eq(type##_init((type *)(void *)buf, 0), TSYNC_EVERSION, #type " version 0");     \
        cr_assert_eq(type##_init((type *)(void *)buf, BASE##_VERSION + 1), TSYNC_EVERSION,         \
                     #type " a newer version");                                                    \
        cr_assert_eq(type##_init(NULL, BASE##_VERSION), TSYNC_EINVAL, #type " NULL");              \
    } while (0)

Test(ffi, init_functions_equal_init_macros)
{
    CHECK_INIT(tsync_backup_options, TSYNC_BACKUP_OPTIONS);
    CHECK_INIT(tsync_restore_options, TSYNC_RESTORE_OPTIONS);
    CHECK_INIT(tsync_restore_report, TSYNC_RESTORE_REPORT);
    CHECK_INIT(tsync_export_options, TSYNC_EXPORT_OPTIONS);
    CHECK_INIT(tsync_import_options, TSYNC_IMPORT_OPTIONS);
    CHECK_INIT(tsync_import_report, TSYNC_IMPORT_REPORT);
    CHECK_INIT(tsync_migrate_report, TSYNC_MIGRATE_REPORT);
    CHECK_INIT(tsync_node_options, TSYNC_NODE_OPTIONS);
    CHECK_INIT(tsync_node_error, TSYNC_NODE_ERROR);
    CHECK_INIT(tsync_store_status, TSYNC_STORE_STATUS);
    CHECK_INIT(tsync_store_options, TSYNC_STORE_OPTIONS);
    CHECK_INIT(tsync_merge_report, TSYNC_MERGE_REPORT);
    CHECK_INIT(tsync_log_policy, TSYNC_LOG_POLICY);
    CHECK_INIT(tsync_trust_record, TSYNC_TRUST_RECORD);
    CHECK_INIT(tsync_trust_records, TSYNC_TRUST_RECORDS);
    CHECK_INIT(tsync_shop_info, TSYNC_SHOP_INFO);
    CHECK_INIT(tsync_sign_options, TSYNC_SIGN_OPTIONS);
    CHECK_INIT(tsync_enrol_report, TSYNC_ENROL_REPORT);
    CHECK_INIT(tsync_trust_set, TSYNC_TRUST_SET);
    CHECK_INIT(tsync_revocation_preview, TSYNC_REVOCATION_PREVIEW);
    CHECK_INIT(tsync_vault_options, TSYNC_VAULT_OPTIONS); /* tillsync/vault.h */
    CHECK_INIT(tsync_vault_report, TSYNC_VAULT_REPORT);
}

/* A binding written for version 1 allocates version 1's size: the init of version 1 writes that
 * much, says version 1, and the library then reads it as version 1 (tsync_store_open). */
Test(ffi, older_version_writes_only_its_own_size)
{
    size_t v1 = offsetof(tsync_store_options, read_only);
    unsigned char buf[sizeof(tsync_store_options)];
    memset(buf, 0xa5, sizeof buf);
    cr_assert_eq(tsync_store_options_init((tsync_store_options *)(void *)buf, 1), 0);
    tsync_store_options o;
    memcpy(&o, buf, sizeof o);
    cr_assert_eq(o.version, 1);
    cr_assert_eq(o.create, 0);
    for (size_t i = v1; i < sizeof buf; i++) cr_assert_eq(buf[i], 0xa5, "byte %zu written", i);

    size_t n1 = offsetof(tsync_node_options, on_peer_state);
    unsigned char nbuf[sizeof(tsync_node_options)];
    memset(nbuf, 0xa5, sizeof nbuf);
    cr_assert_eq(tsync_node_options_init((tsync_node_options *)(void *)nbuf, 1), 0);
    for (size_t i = n1; i < sizeof nbuf; i++) cr_assert_eq(nbuf[i], 0xa5, "byte %zu written", i);

    size_t s1 = offsetof(tsync_store_status, log_batches);
    unsigned char sbuf[sizeof(tsync_store_status)];
    memset(sbuf, 0xa5, sizeof sbuf);
    cr_assert_eq(tsync_store_status_init((tsync_store_status *)(void *)sbuf, 1), 0);
    for (size_t i = s1; i < sizeof sbuf; i++) cr_assert_eq(sbuf[i], 0xa5, "byte %zu written", i);
}

/* An unknown version leaves a message naming the struct. */
Test(ffi, unknown_version_message)
{
    tsync_merge_report r;
    cr_assert_eq(tsync_merge_report_init(&r, 7), TSYNC_EVERSION);
    cr_assert(strstr(tsync_error_last()->message, "tsync_merge_report version 7"), "%s",
              tsync_error_last()->message);
}

/* tsync_free takes NULL and what the library returned (ASan's leak check sees the rest). */
Test(ffi, free_what_the_library_returns, .fini = th_cleanup)
{
    tsync_free(NULL);
    tsync_store *s = th_open_products(th_path(th_tmpdir_auto(), "a.db"));
    char *json = NULL;
    cr_assert_eq(tsync_store_state_json(&json, s), 0);
    cr_assert(json && json[0] == '{');
    tsync_free(json);
    uint8_t *bundle = NULL;
    size_t len = 0;
    cr_assert_eq(tsync_store_bundle(&bundle, &len, s, NULL, NULL), 0);
    tsync_free(bundle);
    tsync_store_free(s);
}
