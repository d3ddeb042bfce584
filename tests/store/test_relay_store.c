/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_relay_store.c — the relay's SQLite store (store/relay_store.c) through its
 * vtable: an envelope put twice is stored once; ranges are merged per origin (touching and
 * overlapping ranges join, gaps stay); a put past the quota stores nothing, not even its
 * envelopes that would fit; get walks from a seq inside an envelope, in seq order, and stops when
 * the callback says so; revocations and counters are kept; everything survives a reopen (the
 * scenario is ru_store_rules, shared with the JetStream store's test). The vault's rules
 * (ru_vault_rules): chunks held once, replaced until committed, commit re-hashing the file,
 * list, get, quota, delete.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "store/relay_store.h"
#include "tests/lib/helpers.h"
#include "tests/lib/relay_util.h"

TestSuite(relay_store, .fini = th_cleanup);

Test(relay_store, put_ranges_quota_get_reopen)
{
    char *dir = th_tmpdir_auto();
    tsync__rstore *st;
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 0, 1), TSYNC_ENOTFOUND);
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 1, 0), 0);
    uint8_t pk[32];
    memset(pk, 7, 32);
    int64_t shop_id = ru_store_rules(st, st, pk);
    cr_assert_eq(st->ops->count(st, "refused.quota", 2, 0), 0);
    cr_assert_eq(st->ops->count(st, "refused.quota", 1, 0), 0);
    st->ops->close(st);
    cr_assert_eq(tsync__rstore_sqlite_open(&st, dir, 0, 0), 0);
    uint8_t dev[32];
    memset(dev, 9, 32);
    cr_assert_eq(st->ops->revoked(st, shop_id, dev), 1);
    tsync__rshop shop;
    cr_assert_eq(st->ops->shop(st, pk, &shop), 0);
    cr_assert_eq(shop.revocations, 1);
    cr_assert_eq(shop.bytes, 580); /* what ru_store_rules stored */
    st->ops->close(st);
}

Test(relay_store, vault_rules)
{
    tsync__rstore *st;
    cr_assert_eq(tsync__rstore_sqlite_open(&st, th_tmpdir_auto(), 1, 0), 0);
    ru_vault_rules(st);
    st->ops->close(st);
}
