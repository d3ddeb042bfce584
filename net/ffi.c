/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/ffi.c — what bindings from other languages need that C gets from the preprocessor: one
 * tsync_<struct>_init() per TSYNC_<STRUCT>_INIT macro, and tsync_free() for the memory the
 * library hands out. It sits in the top layer because the structs of every public header meet
 * here; it uses nothing but those headers.
 *
 * An init function writes only the bytes of the version the caller names: a binding written for
 * version 1 of a struct allocates version 1's size, and a newer library must not write past it.
 * A struct's version N is its fields up to the first one added in N+1 (they only grow at the end,
 * docs/API.md), so the size of an older version is the offset of that field.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tillsync/tillsync.h"
#include "util/util.h"

void tsync_free(void *p)
{
    free(p);
}

/* Copies the first size bytes of the template for version into out. sizes[v - 1] is version v's. */
static int init_versioned(void *out, const void *tmpl, uint32_t version, const size_t *sizes,
                          uint32_t current, const char *what)
{
    if (!out) return tsync__err(TSYNC_EINVAL, "%s: out is NULL", what);
    if (version == 0 || version > current)
        return tsync__err(TSYNC_EVERSION, "%s version %u: this library knows 1 to %u", what,
                          (unsigned)version, (unsigned)current);
    memcpy(out, tmpl, sizes[version - 1]);
    /* The template carries the newest version; the caller's struct says its own. */
    memcpy(out, &version, sizeof version);
    return 0;
}

/* A struct with one version so far. */
#define INIT_V1(type, BASE)                                                                        \
    int type##_init(type *out, uint32_t version)                                                   \
    {                                                                                              \
        static const type tmpl = BASE##_INIT;                                                      \
        static const size_t sizes[] = {sizeof(type)};                                              \
        _Static_assert(offsetof(type, version) == 0, #type ": version first");                     \
        return init_versioned(out, &tmpl, version, sizes, BASE##_VERSION, #type);                  \
    }

/* offsetof(t, f), for each field f named (one to five), each followed by a comma. */
#define OFFSETS_1(t, f)                             offsetof(t, f),
#define OFFSETS_2(t, f, ...)                        OFFSETS_1(t, f) OFFSETS_1(t, __VA_ARGS__)
#define OFFSETS_3(t, f, ...)                        OFFSETS_1(t, f) OFFSETS_2(t, __VA_ARGS__)
#define OFFSETS_4(t, f, ...)                        OFFSETS_1(t, f) OFFSETS_3(t, __VA_ARGS__)
#define OFFSETS_5(t, f, ...)                        OFFSETS_1(t, f) OFFSETS_4(t, __VA_ARGS__)
#define OFFSETS_PICK(_1, _2, _3, _4, _5, name, ...) name
#define OFFSETS(t, ...)                                                                            \
    OFFSETS_PICK(__VA_ARGS__, OFFSETS_5, OFFSETS_4, OFFSETS_3, OFFSETS_2, OFFSETS_1, )             \
    (t, __VA_ARGS__)

/* A struct at version N >= 2: the fields named are the first ones versions 2 to N added, in
 * order (so a struct that gains a version gains a name here, and the assert says so). */
#define INIT_V(type, BASE, ...)                                                                    \
    int type##_init(type *out, uint32_t version)                                                   \
    {                                                                                              \
        static const type tmpl = BASE##_INIT;                                                      \
        static const size_t sizes[] = {OFFSETS(type, __VA_ARGS__) sizeof(type)};                   \
        _Static_assert(sizeof sizes / sizeof sizes[0] == BASE##_VERSION,                           \
                       #type ": name the first field of each of its versions");                    \
        _Static_assert(offsetof(type, version) == 0, #type ": version first");                     \
        return init_versioned(out, &tmpl, version, sizes, BASE##_VERSION, #type);                  \
    }

INIT_V1(tsync_backup_options, TSYNC_BACKUP_OPTIONS)
INIT_V1(tsync_restore_options, TSYNC_RESTORE_OPTIONS)
/* cloud backup (tillsync/vault.h) */
INIT_V1(tsync_vault_options, TSYNC_VAULT_OPTIONS)
INIT_V1(tsync_vault_report, TSYNC_VAULT_REPORT)
INIT_V1(tsync_restore_report, TSYNC_RESTORE_REPORT)
INIT_V1(tsync_export_options, TSYNC_EXPORT_OPTIONS)
INIT_V(tsync_import_options, TSYNC_IMPORT_OPTIONS, dry_run)
INIT_V1(tsync_import_report, TSYNC_IMPORT_REPORT)
INIT_V1(tsync_migrate_report, TSYNC_MIGRATE_REPORT)
INIT_V(tsync_node_options, TSYNC_NODE_OPTIONS, on_peer_state, key_path, console, no_relay)
INIT_V1(tsync_node_error, TSYNC_NODE_ERROR)
INIT_V(tsync_store_status, TSYNC_STORE_STATUS, log_batches, review_open)
INIT_V(tsync_store_options, TSYNC_STORE_OPTIONS, read_only)
INIT_V1(tsync_merge_report, TSYNC_MERGE_REPORT)
INIT_V1(tsync_log_policy, TSYNC_LOG_POLICY)
INIT_V1(tsync_trust_record, TSYNC_TRUST_RECORD)
INIT_V1(tsync_trust_records, TSYNC_TRUST_RECORDS)
INIT_V1(tsync_shop_info, TSYNC_SHOP_INFO)
INIT_V1(tsync_sign_options, TSYNC_SIGN_OPTIONS)
INIT_V1(tsync_enrol_report, TSYNC_ENROL_REPORT)
INIT_V1(tsync_trust_set, TSYNC_TRUST_SET)
INIT_V1(tsync_revocation_preview, TSYNC_REVOCATION_PREVIEW)
INIT_V1(tsync_sync_state, TSYNC_SYNC_STATE)
/* column policies (store.h) */
INIT_V1(tsync_replicate_options, TSYNC_REPLICATE_OPTIONS)
/* the blind relay (relay.h) */
INIT_V(tsync_relay_options, TSYNC_RELAY_OPTIONS, store)
