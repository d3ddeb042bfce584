/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_clock.c — the clock rules of docs/DATA_MODEL.md ("Clocks") in one process:
 * a till whose clock ran a day ahead while alone takes it back once it knows the shop's time, its
 * later batches are not held, the far-ahead ones are released by them, the receiver's clock does
 * not follow, and every replica ends with the same rows (a write always goes above the clock it
 * overwrites). A till with its wall clock ahead of the recorded shop median stamps with the shop's
 * time. The shop's offset is recorded here directly, as the node does (net/node.c clock_tick).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"

#define DAY (24LL * 3600 * 1000)

static uint64_t hlc_ms(tsync_store *s)
{
    tsync__hlc h;
    cr_assert_eq(tsync__hlc_load(s, &h), 0);
    return tsync__hlc_ms(h);
}

/* Writes sql on s as a machine whose clock is `ahead` ms ahead would capture it, and seals. */
static void write_at(tsync_store *s, int64_t ahead, const char *sql)
{
    th_exec(s, sql);
    char up[96];
    snprintf(up, sizeof up, "UPDATE tsync_pending SET wall = wall + %lld", (long long)ahead);
    th_exec(s, up);
    th_seal(s);
}

static void merge_all(tsync_store *from, tsync_store *to, size_t *merged, size_t *held)
{
    size_t len;
    uint8_t *b = th_bundle(from, &len);
    tsync_merge_report rep = {.version = TSYNC_MERGE_REPORT_VERSION};
    cr_assert_eq(tsync_store_merge(to, b, len, &rep), 0);
    *merged = rep.merged;
    *held = rep.held;
    tsync_merge_report_clear(&rep);
    free(b);
}

Test(store_clock, poisoned_till_recovers_and_replicas_converge)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    /* a writes a price with its clock a day ahead, alone. */
    write_at(a, DAY, "INSERT INTO products VALUES('p1', 'tea', 100, 10)");
    cr_assert_gt(hlc_ms(a), tsync__now_ms(a) + DAY - 60000);
    size_t merged, held;
    merge_all(a, b, &merged, &held);
    cr_assert_eq(held, 1, "a far-ahead batch with nothing after it is held");
    cr_assert_eq(merged, 0);

    /* a's clock is right again and its node learnt the shop's time: the next seal takes the HLC
     * back; the price it overwrites keeps losing to it (its clock goes above the old one). */
    cr_assert_eq(tsync__shop_clock_record(a, 1, 0), 0);
    write_at(a, 0, "UPDATE products SET price = 120 WHERE id='p1'");
    write_at(a, 0, "INSERT INTO products VALUES('p2', 'cake', 300, 5)");
    cr_assert_lt(hlc_ms(a), tsync__now_ms(a) + 60000, "a's clock was not taken back");
    int64_t resets = 0;
    cr_assert_eq(tsync__meta_int(a, "hlc_resets", &resets, 0), 0);
    cr_assert_eq(resets, 1);

    /* b: the later batch shows a's clock fixed; all three merge, b's clock stays put. */
    merge_all(a, b, &merged, &held);
    cr_assert_eq(held, 0);
    cr_assert_eq(merged, 3);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_held", -1), 0);
    cr_assert_lt(hlc_ms(b), tsync__now_ms(b) + 6 * 60000, "b's clock followed a's");
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='p1'", -1), 120);
    cr_assert_str_eq(th_hash(a), th_hash(b));

    /* b overwrites the far-ahead row: its write must win everywhere, though b's clock is not
     * ahead; its batch carries the row's clock + 1 and is released by b's next batch. */
    write_at(b, 0, "UPDATE products SET name = 'green tea', stock = stock - 1 WHERE id='p1'");
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='p1'", -1), 120);
    merge_all(b, a, &merged, &held);
    cr_assert_eq(held, 1);
    write_at(b, 0, "INSERT INTO products VALUES('p3', 'scone', 250, 2)");
    merge_all(b, a, &merged, &held);
    cr_assert_eq(held, 0);
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 9);
    char *name = th_text(a, "SELECT name FROM products WHERE id='p1'");
    cr_assert_str_eq(name, "green tea");
    free(name);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_lt(hlc_ms(a), tsync__now_ms(a) + 6 * 60000);
    tsync_store_free(a);
    tsync_store_free(b);
    free(dir);
}

Test(store_clock, wall_clock_ahead_of_the_shop_is_corrected_when_sealing)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    /* a's machine is a day ahead; its node measured the shop a day behind it. */
    a->clock_offset_ms = DAY;
    cr_assert_eq(tsync__shop_clock_record(a, 1, -DAY), 0);
    write_at(a, DAY, "INSERT INTO products VALUES('p1', 'tea', 100, 10)");
    cr_assert_lt(hlc_ms(a), tsync__now_ms(b) + 60000, "the day-ahead wall clock reached the HLC");
    size_t merged, held;
    merge_all(a, b, &merged, &held);
    cr_assert_eq(held, 0);
    cr_assert_eq(merged, 1);
    /* A stale record (older than a minute) is not used. */
    cr_assert_eq(tsync__meta_int(a, "shop_clock_at", NULL, (int64_t)tsync__now_ms(a) - 120000), 0);
    int64_t off;
    cr_assert_eq(tsync__shop_offset(a, &off), 0);
    tsync_store_free(a);
    tsync_store_free(b);
    free(dir);
}
