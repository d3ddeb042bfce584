/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_image.c — issue 10, defects 6 and 7 in process: an old copy of a database
 * written back over it (same path and inode) takes a new incarnation, through the marker beside the
 * key file or through a peer that shows the lost branch, and then every replica converges with both
 * branches; a read-only open writes nothing (a full disk) and refuses writes.
 * tests/cli/cli_image.sh and tests/cli/cli_diskfull.sh do the same with live nodes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/helpers.h"
#include "store/snapshot.h"
#include "store/sync.h"

TestSuite(image, .fini = th_cleanup);

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "r+b");
    if (!b) b = fopen(to, "wb");
    cr_assert(a && b, "copy %s -> %s", from, to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) cr_assert_eq(fwrite(buf, 1, n, b), n);
    /* cp over the live file: same inode, truncated to the copy's length */
    cr_assert_eq(ftruncate(fileno(b), ftell(b)), 0);
    fclose(a);
    fclose(b);
}

static int64_t rollbacks_of(tsync_store *s, char **site)
{
    char *js = NULL;
    cr_assert_eq(tsync_store_state_json(&js, s), 0);
    const char *r = strstr(js, "\"rollbacks\": ");
    cr_assert(r, "state has no rollbacks: %s", js);
    int64_t n = strtoll(r + 13, NULL, 10);
    if (site) {
        const char *p = strstr(js, "\"site\": \"");
        *site = strndup(p + 9, 32);
    }
    free(js);
    return n;
}

/* a and b in sync with 2 sales of a; the old copy of a (and its marker) is taken; a sells p3,
 * which reaches b; the copy is written back (whole image: marker too, or the file alone). */
static void revert(const char *dir, int whole, tsync_store **pa, tsync_store **pb, char **site0)
{
    const char *A = th_path(dir, "a.db");
    tsync_store *a = th_open_products(A), *b = th_open_products(th_path(dir, "b.db"));
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 240, 10)");
    th_seal(a);
    th_exec(a, "INSERT INTO products VALUES('p2', 'cake', 390, 5)");
    th_seal(a);
    cr_assert_geq(th_sync(a, b), 0);
    rollbacks_of(a, site0);
    tsync_store_free(a);
    copy_file(A, th_path(dir, "old.db"));
    copy_file(th_path(dir, "a.db.key.mark"), th_path(dir, "old.mark"));
    a = th_open(A);
    th_exec(a, "INSERT INTO products VALUES('p3', 'scone', 300, 7)");
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id = 'p1'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0);
    tsync_store_free(a);
    struct stat st0, st1;
    cr_assert_eq(stat(A, &st0), 0);
    copy_file(th_path(dir, "old.db"), A);
    if (whole) copy_file(th_path(dir, "old.mark"), th_path(dir, "a.db.key.mark"));
    cr_assert_eq(stat(A, &st1), 0);
    cr_assert_eq(st0.st_ino, st1.st_ino);
    *pa = th_open(A);
    *pb = b;
}

Test(image, file_copied_back_is_caught_at_open)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a, *b;
    char *site0, *site1;
    revert(dir, 0, &a, &b, &site0);
    /* The marker knew batch 3 had left: a new incarnation before anything is written. */
    cr_assert_eq(rollbacks_of(a, &site1), 1);
    cr_assert_str_neq(site0, site1);
    th_exec(a, "INSERT INTO products VALUES('p4', 'bun', 120, 3)");
    th_seal(a);
    cr_assert_eq(th_sync(b, a), 0, "%s", tsync_error_last() ? tsync_error_last()->message : "");
    cr_assert_eq(th_sync(a, b), 0);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 4);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), 4);
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 9);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_forks", -1), 0);
    free(site0);
    free(site1);
    tsync_store_free(a);
    tsync_store_free(b);
    free(dir);
}

Test(image, whole_image_reverted_is_caught_by_a_peer)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a, *b;
    char *site0, *site1;
    revert(dir, 1, &a, &b, &site0);
    cr_assert_eq(rollbacks_of(a, NULL), 0); /* the marker went back too: a cannot know */
    /* a sells on its old site id: branch Y, while b holds branch X (p3). */
    th_exec(a, "INSERT INTO products VALUES('p4', 'bun', 120, 3)");
    th_exec(a, "UPDATE products SET stock = stock - 2 WHERE id = 'p1'");
    th_seal(a);
    /* Another handle (the app's) opened before the renewal must not seal under the old id. */
    tsync_store *app = th_open(th_path(dir, "a.db"));
    int rc = th_sync(b, a);
    cr_assert(rc == 0 || rc == TSYNC_EFORK, "merge: %d %s", rc,
              tsync_error_last() ? tsync_error_last()->message : "");
    cr_assert_eq(rollbacks_of(a, &site1), 1);
    cr_assert_str_neq(site0, site1);
    th_exec(app, "INSERT INTO products VALUES('p5', 'pie', 450, 2)");
    th_seal(app);
    char *app_site = NULL;
    rollbacks_of(app, &app_site);
    cr_assert_str_eq(app_site, site1);
    rc = th_sync(a, b);
    cr_assert(rc == 0 || rc == TSYNC_EFORK, "merge: %d", rc);
    th_sync(b, a);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 5);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), 5);
    /* 10, minus 1 on the lost branch, minus 2 on the branch written after the revert */
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 7);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p1'", -1), 7);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_geq(th_int(a, "SELECT count(*) FROM tsync_forks", -1), 1);
    cr_assert_geq(th_int(b, "SELECT count(*) FROM tsync_forks", -1), 1);
    free(site0);
    free(site1);
    free(app_site);
    tsync_store_free(app);
    tsync_store_free(a);
    tsync_store_free(b);
    free(dir);
}

Test(image, read_only_open_writes_nothing)
{
    char *dir = th_tmpdir_auto();
    const char *A = th_path(dir, "a.db");
    tsync_store *a = th_open_products(A);
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 240, 10)");
    th_seal(a);
    /* a row captured and not sealed: a read-only handle must leave it so */
    th_exec(a, "INSERT INTO products VALUES('p2', 'cake', 390, 5)");
    tsync_store_free(a);
    struct stat d0, k0, d1, k1;
    cr_assert_eq(stat(A, &d0), 0);
    cr_assert_eq(stat(th_path(dir, "a.db.key"), &k0), 0);
    sleep(1); /* mtimes would move */
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.read_only = 1;
    cr_assert_eq(tsync_store_open(&a, A, &o), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 2);
    cr_assert_eq(strlen(th_hash(a)), 64);
    uint8_t *bun = NULL;
    size_t len = 0, nb = 0;
    cr_assert_eq(tsync_store_bundle(&bun, &len, a, NULL, &nb), 0);
    cr_assert_eq(nb, 1); /* the sealed batch; nothing sealed now */
    free(bun);
    cr_assert_neq(tsync_store_exec(a, "INSERT INTO products VALUES('p3', 'x', 1, 1)", NULL, NULL),
                  0);
    tsync_store_free(a);
    cr_assert_eq(stat(A, &d1), 0);
    cr_assert_eq(stat(th_path(dir, "a.db.key"), &k1), 0);
    cr_assert_eq(d0.st_size, d1.st_size);
    cr_assert_eq(d0.st_mtime, d1.st_mtime);
    cr_assert_eq(k0.st_mtime, k1.st_mtime);
    a = th_open(A);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 1);
    tsync_store_free(a);
    free(dir);
}

typedef struct {
    uint8_t *c[64];
    size_t len[64], n;
} chunks;

static int collect(void *ctx, const uint8_t *chunk, size_t len)
{
    chunks *k = ctx;
    cr_assert_lt(k->n, 64);
    k->c[k->n] = malloc(len);
    memcpy(k->c[k->n], chunk, len);
    k->len[k->n++] = len;
    return 0;
}

Test(image, whole_image_reverted_then_a_snapshot_from_a_peer)
{
    /* A till far behind gets a snapshot rather than batches: one that shows more of the till's
     * own site than its log holds is the same sign that its log went back. */
    char *dir = th_tmpdir_auto();
    tsync_store *a, *b;
    char *site0, *site1;
    revert(dir, 1, &a, &b, &site0);
    chunks k = {0};
    tsync__vv vv = {0};
    cr_assert_eq(tsync__snap_export(b, 1 << 16, collect, &k, &vv), 0, "%s",
                 tsync_error_last()->message);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync__snap_import(a, (const uint8_t *const *)k.c, k.len, k.n, &vv, &r);
    cr_assert_eq(rc, 0, "import: %s", tsync_error_last()->message);
    tsync_merge_report_clear(&r);
    cr_assert_eq(rollbacks_of(a, &site1), 1);
    cr_assert_str_neq(site0, site1);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 3);
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 9);
    th_exec(a, "INSERT INTO products VALUES('p4', 'bun', 120, 3)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", tsync_error_last()->message);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    for (size_t i = 0; i < k.n; i++) free(k.c[i]);
    tsync__vv_free(&vv);
    free(site0);
    free(site1);
    tsync_store_free(a);
    tsync_store_free(b);
    free(dir);
}
