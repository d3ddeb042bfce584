/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_backup.c — backup, backup check and restore (store/backup.c, docs/BACKUP.md).
 *
 * What must hold: a backup taken while another process keeps selling checks out and restores to a
 * consistent, fully sealed state (each sale with all its lines or none, the stock counter equal to
 * the lines sold); every kind of damaged, truncated, altered or wrong-passphrase file is refused
 * with one line naming it, and the live database, its -wal and its key file stay byte for byte as
 * they were; a restore refuses a database in use; after a restore the till has a new site id, and
 * it converges with a peer by bundles without a fork, a refusal or a reused sequence number; a
 * restore without a key file makes a new key; a copied database gets its own site id.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/backup.h"
#include "tests/lib/helpers.h"

TestSuite(backup, .fini = th_cleanup);

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

/* Encrypting options with the cheapest key derivation libsodium allows, to keep tests fast. */
static tsync_backup_options fast_enc(const char *pass)
{
    tsync_backup_options o = TSYNC_BACKUP_OPTIONS_INIT;
    o.passphrase = pass;
    o.kdf_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    o.kdf_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    return o;
}

static tsync_restore_options with_pass(const char *pass)
{
    tsync_restore_options o = TSYNC_RESTORE_OPTIONS_INIT;
    o.passphrase = pass;
    return o;
}

static void backup_ok(tsync_store *s, const char *out, const tsync_backup_options *o)
{
    int rc = tsync_backup(s, out, o, NULL);
    cr_assert(rc == 0, "backup %s: %s", out, errmsg());
}

static void restore_ok(const char *db, const char *file, const char *pass, tsync_restore_report *r)
{
    tsync_restore_options o = with_pass(pass);
    int rc = tsync_restore(db, file, &o, r);
    cr_assert(rc == 0, "restore %s from %s: %s", db, file, errmsg());
}

/* ---------------------------------------------------------------- files */

typedef struct {
    uint8_t *p;
    size_t n;
    int exists;
} blob;

static blob slurp(const char *path)
{
    blob b = {NULL, 0, 0};
    FILE *f = fopen(path, "rb");
    if (!f) return b;
    b.exists = 1;
    size_t cap = 1 << 16;
    b.p = malloc(cap);
    size_t k;
    while (b.p && (k = fread(b.p + b.n, 1, cap - b.n, f)) > 0) {
        b.n += k;
        if (b.n == cap) b.p = realloc(b.p, cap *= 2);
    }
    fclose(f);
    cr_assert(b.p, "out of memory");
    return b;
}

static void spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static int blob_eq(const blob *a, const blob *b)
{
    return a->exists == b->exists && a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir, sorted, one per line (malloc'd). */
static char *listing(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert(d, "opendir %s", dir);
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(names[i]) + 1;
    char *out = calloc(1, len);
    for (int i = 0; i < n; i++) {
        strcat(out, names[i]);
        strcat(out, "\n");
        free(names[i]);
    }
    return out;
}

/* The live files of a database, byte for byte, and what else is in its folder. */
typedef struct {
    blob db, wal, key;
    char *names;
} live_files;

static live_files capture(const char *dir, const char *db)
{
    char p[4200];
    live_files l;
    l.db = slurp(db);
    snprintf(p, sizeof p, "%s-wal", db);
    l.wal = slurp(p);
    snprintf(p, sizeof p, "%s.key", db);
    l.key = slurp(p);
    l.names = listing(dir);
    return l;
}

static void live_free(live_files *l)
{
    free(l->db.p), free(l->wal.p), free(l->key.p), free(l->names);
}

static void assert_unchanged(const live_files *before, const char *dir, const char *db,
                             const char *what)
{
    live_files now = capture(dir, db);
    cr_assert(blob_eq(&before->db, &now.db), "%s: the database changed", what);
    cr_assert(blob_eq(&before->wal, &now.wal), "%s: the -wal changed", what);
    cr_assert(blob_eq(&before->key, &now.key), "%s: the key file changed", what);
    cr_assert_str_eq(now.names, before->names, "%s: files appeared or went in the folder", what);
    live_free(&now);
}

/* ---------------------------------------------------------------- content */

/* A products store with a few rows and one sealed batch. */
static tsync_store *shop(const char *path)
{
    tsync_store *s = th_open_products(path);
    th_exec(s, "INSERT INTO products VALUES('p1', 'apple', 120, 50), ('p2', 'pear', 80, 10), "
               "('p3', 'plum', 60, 0)");
    th_seal(s);
    return s;
}

static const uint8_t *site_of(tsync_store *s, uint8_t out[16])
{
    memcpy(out, tsync_store_site_id(s), 16);
    return out;
}

/* ---------------------------------------------------------------- round trip */

Test(backup, round_trip_plain_and_encrypted)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = shop(th_path(dir, "a.db"));
    const char *hash = strdup(th_hash(s));
    uint8_t site[16];
    site_of(s, site);
    char *manifest = NULL;
    int rc = tsync_backup(s, th_path(dir, "plain.tsb"), NULL, &manifest);
    cr_assert(rc == 0, "backup: %s", errmsg());
    tsync_backup_options e = fast_enc("correct horse");
    backup_ok(s, th_path(dir, "enc.tsb"), &e);
    tsync_store_free(s);
    cr_assert(access(th_path(dir, "plain.tsb.tmp"), F_OK) != 0, "the .tmp file was left");
    cr_assert(access(th_path(dir, "enc.tsb.image.tmp"), F_OK) != 0, "the scratch copy was left");
    struct stat sb;
    cr_assert(stat(th_path(dir, "enc.tsb"), &sb) == 0 && (sb.st_mode & 077) == 0,
              "a backup must be readable by its owner only");

    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", site[i]);
    cr_assert(strstr(manifest, hex), "the manifest names the source site: %s", manifest);
    cr_assert(strstr(manifest, "\"name\": \"products\",\n      \"rows\": 3"),
              "the manifest counts the rows: %s", manifest);
    char *checked = NULL;
    rc = tsync_backup_check(th_path(dir, "plain.tsb"), NULL, &checked);
    cr_assert(rc == 0, "check: %s", errmsg());
    cr_assert_str_eq(checked, manifest, "the check returns the manifest written");
    free(checked), free(manifest);
    int enc = -1;
    cr_assert(tsync_backup_encrypted(&enc, th_path(dir, "enc.tsb")) == 0 && enc == 1);
    cr_assert(tsync_backup_encrypted(&enc, th_path(dir, "plain.tsb")) == 0 && enc == 0);
    rc = tsync_backup_check(th_path(dir, "enc.tsb"), "correct horse", NULL);
    cr_assert(rc == 0, "check encrypted: %s", errmsg());

    const char *names[] = {"plain.tsb", "enc.tsb"};
    for (int i = 0; i < 2; i++) {
        char db[64];
        snprintf(db, sizeof db, "r%d.db", i);
        tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
        restore_ok(th_path(dir, db), th_path(dir, names[i]), i ? "correct horse" : NULL, &r);
        cr_assert(r.new_key, "no key file was there: a new key must be made");
        cr_assert(memcmp(r.backup_site_id, site, 16) == 0, "the report names the backup's site");
        cr_assert(r.manifest_json && strstr(r.manifest_json, hex));
        tsync_restore_report_clear(&r);
        tsync_store *t = th_open(th_path(dir, db));
        cr_assert_str_eq(th_hash(t), hash, "%s restores other content", names[i]);
        cr_assert(memcmp(tsync_store_site_id(t), site, 16) != 0);
        tsync_store_free(t);
    }
    free((void *)hash);
    free(dir);
}

Test(backup, bad_arguments_write_nothing)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = shop(th_path(dir, "a.db"));
    backup_ok(s, th_path(dir, "a.tsb"), NULL);
    /* bad arguments: nothing is written */
    cr_assert_eq(tsync_backup(s, th_path(dir, "a.db"), NULL, NULL), TSYNC_EINVAL);
    cr_assert(strstr(errmsg(), "a.db"), "%s", errmsg());
    cr_assert_eq(tsync_backup(s, th_path(dir, "a.db.key"), NULL, NULL), TSYNC_EINVAL);
    tsync_backup_options e = fast_enc("");
    cr_assert_eq(tsync_backup(s, th_path(dir, "e.tsb"), &e, NULL), TSYNC_EINVAL);
    th_exec(s, "BEGIN");
    cr_assert_eq(tsync_backup(s, th_path(dir, "t.tsb"), NULL, NULL), TSYNC_EINVAL);
    th_exec(s, "ROLLBACK");
    int rc = tsync_backup(s, th_path(dir, "no/such/folder/x.tsb"), NULL, NULL);
    cr_assert(rc == TSYNC_EIO, "a folder that does not exist: %d %s", rc, errmsg());
    cr_assert(access(th_path(dir, "e.tsb"), F_OK) != 0 && access(th_path(dir, "t.tsb"), F_OK) != 0);
    tsync_store_free(s);
    char *names = listing(dir);
    cr_assert_str_eq(names, "a.db\na.db.key\na.tsb\n", "left behind: %s", names);
    free(names);
    free(dir);
}

static void count_progress(void *ctx, tsync_backup_phase phase, uint64_t done, uint64_t total)
{
    uint64_t *v = ctx; /* [phase] = last done, [5 + phase] = total, [10] = calls */
    cr_assert(phase >= 1 && phase <= 4 && done <= total, "progress %d: %llu of %llu", phase,
              (unsigned long long)done, (unsigned long long)total);
    v[phase] = done;
    v[5 + phase] = total;
    v[10]++;
}

Test(backup, progress_reaches_the_end)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = shop(th_path(dir, "a.db"));
    uint64_t v[11] = {0};
    tsync_backup_options o = TSYNC_BACKUP_OPTIONS_INIT;
    o.step_pages = 2;
    o.progress = count_progress;
    o.progress_ctx = v;
    backup_ok(s, th_path(dir, "a.tsb"), &o);
    tsync_store_free(s);
    cr_assert(v[10] > 3, "progress was called %llu times", (unsigned long long)v[10]);
    cr_assert(v[TSYNC_BACKUP_COPY] == v[5 + TSYNC_BACKUP_COPY] && v[TSYNC_BACKUP_COPY] > 2);
    cr_assert(v[TSYNC_BACKUP_WRITE] == v[5 + TSYNC_BACKUP_WRITE] && v[TSYNC_BACKUP_WRITE] > 0);
    memset(v, 0, sizeof v);
    tsync_restore_options r = TSYNC_RESTORE_OPTIONS_INIT;
    r.progress = count_progress;
    r.progress_ctx = v;
    cr_assert(tsync_restore(th_path(dir, "b.db"), th_path(dir, "a.tsb"), &r, NULL) == 0, "%s",
              errmsg());
    cr_assert(v[TSYNC_BACKUP_READ] > 0 && v[TSYNC_BACKUP_RESTORE] == v[5 + TSYNC_BACKUP_RESTORE]);
    free(dir);
}

/* ---------------------------------------------------------------- a till that keeps selling */

#define START_STOCK 1000000

static void sales_schema(tsync_store *s)
{
    th_exec(s, "CREATE TABLE sales(id TEXT PRIMARY KEY, nlines INTEGER NOT NULL DEFAULT 0);"
               "CREATE TABLE lines(id TEXT PRIMARY KEY, sale TEXT, qty INTEGER);"
               "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, stock INTEGER NOT NULL "
               "DEFAULT 0);");
    const char *ctr[] = {"stock"};
    cr_assert(tsync_store_replicate(s, "sales", NULL, 0) == 0, "%s", errmsg());
    cr_assert(tsync_store_replicate(s, "lines", NULL, 0) == 0, "%s", errmsg());
    cr_assert(tsync_store_replicate(s, "products", ctr, 1) == 0, "%s", errmsg());
    th_exec(s, "INSERT INTO products VALUES('p1', 'coffee', 1000000)");
    th_seal(s);
}

/* The child: sells until stopfd is readable or closed; each sale (its lines, the stock it takes,
 * its line count) is one transaction. Writes one byte to readyfd after 20 sales. */
static void seller(const char *db, int stopfd, int readyfd)
{
    tsync_store *s = NULL;
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(&s, db, &o) != 0) _exit(2);
    sqlite3 *h = tsync_store_sqlite(s);
    fcntl(stopfd, F_SETFL, O_NONBLOCK);
    for (int n = 0;; n++) {
        char c;
        ssize_t k = read(stopfd, &c, 1);
        if (k == 1 || k == 0) break;
        int lines = 1 + n % 4;
        char *sql =
            sqlite3_mprintf("BEGIN IMMEDIATE; INSERT INTO sales VALUES('s%06d', %d);", n, lines);
        for (int i = 0; i < lines; i++) {
            char *more = sqlite3_mprintf("%sINSERT INTO lines VALUES('s%06d-%d', 's%06d', %d);"
                                         "UPDATE products SET stock = stock - %d WHERE id='p1';",
                                         sql, n, i, n, i + 1, i + 1);
            sqlite3_free(sql);
            sql = more;
        }
        char *all = sqlite3_mprintf("%sCOMMIT;", sql);
        sqlite3_free(sql);
        int rc = sqlite3_exec(h, all, NULL, NULL, NULL);
        sqlite3_free(all);
        if (rc != SQLITE_OK) _exit(3);
        if (n % 7 == 0 && tsync_store_seal(s, NULL) != 0) _exit(4);
        if (n == 20 && write(readyfd, "r", 1) != 1) _exit(5);
        usleep(300);
    }
    tsync_store_free(s);
    _exit(0);
}

/* Each sale has all its lines, and the stock counter took exactly what the lines sold. */
static int64_t check_sales(tsync_store *r, const char *who)
{
    int64_t sales = th_int(r, "SELECT count(*) FROM sales", -1);
    cr_assert(th_int(r,
                     "SELECT count(*) FROM sales s WHERE s.nlines != (SELECT count(*) FROM lines l "
                     "WHERE l.sale = s.id)",
                     -1) == 0,
              "%s: a sale without all its lines", who);
    cr_assert(
        th_int(r, "SELECT count(*) FROM lines WHERE sale NOT IN (SELECT id FROM sales)", -1) == 0,
        "%s: lines without their sale", who);
    int64_t sold = th_int(r, "SELECT total(qty) FROM lines", -1);
    int64_t stock = th_int(r, "SELECT stock FROM products WHERE id='p1'", -1);
    cr_assert_eq(START_STOCK - stock, sold, "%s: the stock counter says %lld sold, the lines %lld",
                 who, (long long)(START_STOCK - stock), (long long)sold);
    return sales;
}

Test(backup, while_another_process_sells)
{
    char *dir = th_tmpdir_auto();
    const char *db = strdup(th_path(dir, "till.db"));
    tsync_store *s = th_open(db);
    sales_schema(s);
    tsync_store_free(s); /* no connection crosses fork() */
    int stop[2], ready[2];
    cr_assert(pipe(stop) == 0 && pipe(ready) == 0);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(stop[1]);
        close(ready[0]);
        seller(db, stop[0], ready[1]);
    }
    close(stop[0]);
    close(ready[1]);
    char c;
    cr_assert(read(ready[0], &c, 1) == 1, "the selling process did not start");
    s = th_open(db);
    uint8_t site[16];
    site_of(s, site);
    const char *files[] = {"b0.tsb", "b1.tsb", "b2.tsb"};
    int64_t seen_before = th_int(s, "SELECT count(*) FROM sales", 0);
    for (int i = 0; i < 3; i++) {
        tsync_backup_options o =
            i == 1 ? fast_enc("pass") : (tsync_backup_options)TSYNC_BACKUP_OPTIONS_INIT;
        o.step_pages = 3; /* many steps: the seller commits between them */
        backup_ok(s, th_path(dir, files[i]), &o);
        usleep(20000);
    }
    int64_t seen_after = th_int(s, "SELECT count(*) FROM sales", 0);
    tsync_store_free(s);
    cr_assert(write(stop[1], "s", 1) == 1);
    int status = 0;
    cr_assert(waitpid(pid, &status, 0) == pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the seller failed (%d)", status);
    cr_assert(seen_after > seen_before, "the seller did not sell during the backups");

    int64_t prev = 0;
    for (int i = 0; i < 3; i++) {
        const char *pass = i == 1 ? "pass" : NULL;
        cr_assert(tsync_backup_check(th_path(dir, files[i]), pass, NULL) == 0, "check %s: %s",
                  files[i], errmsg());
        char rdb[32];
        snprintf(rdb, sizeof rdb, "r%d.db", i);
        tsync_restore_report rep = TSYNC_RESTORE_REPORT_INIT;
        restore_ok(th_path(dir, rdb), th_path(dir, files[i]), pass, &rep);
        cr_assert(memcmp(rep.backup_site_id, site, 16) == 0);
        tsync_restore_report_clear(&rep);
        tsync_store *r = th_open(th_path(dir, rdb));
        cr_assert_eq(th_int(r, "SELECT count(*) FROM tsync_pending", -1), 0,
                     "%s: the snapshot holds unsealed changes", files[i]);
        int64_t sales = check_sales(r, files[i]);
        cr_assert(sales >= 20 && sales >= prev, "%s holds %lld sales", files[i], (long long)sales);
        prev = sales;
        int64_t n = th_check_log(r, site, files[i], 0, NULL, NULL);
        cr_assert(n >= 1, "%s: no batch of the till", files[i]);
        tsync_store_free(r);
    }
    free((void *)db);
    free(dir);
}

/* ---------------------------------------------------------------- damaged files */

typedef struct {
    const char *what;
    uint8_t *p;
    size_t n;
    const char *pass;
    int code; /* the error expected, 0 for any */
} bad_file;

static void flip(bad_file *b, const blob *good, size_t at, const char *what, const char *pass,
                 int code)
{
    b->what = what;
    b->n = good->n;
    b->p = malloc(good->n);
    memcpy(b->p, good->p, good->n);
    cr_assert(at < good->n, "%s: offset %zu beyond %zu", what, at, good->n);
    b->p[at] ^= 0x20;
    b->pass = pass;
    b->code = code;
}

static void cut(bad_file *b, const blob *good, size_t len, const char *what, const char *pass)
{
    b->what = what;
    b->n = len;
    b->p = malloc(len + 1);
    memcpy(b->p, good->p, len);
    b->pass = pass;
    b->code = TSYNC_ECORRUPT;
}

/* A database big enough that its encrypted backup spans several 1 MiB chunks. */
static void fill(tsync_store *s, int rows)
{
    th_exec(s, "BEGIN");
    char sql[200];
    for (int i = 0; i < rows; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO products VALUES('k%05d', hex(randomblob(300)), %d, %d)", i, i, i % 7);
        th_exec(s, sql);
    }
    th_exec(s, "COMMIT");
    th_seal(s);
}

Test(backup, damaged_files_are_refused_and_change_nothing)
{
    char *dir = th_tmpdir_auto();
    char *bad_dir = th_tmpdir_auto();
    const char *db = strdup(th_path(dir, "live.db"));
    tsync_store *s = shop(db);
    fill(s, 4000);
    backup_ok(s, th_path(bad_dir, "good.tsb"), NULL);
    tsync_backup_options e = fast_enc("secret");
    backup_ok(s, th_path(bad_dir, "good_enc.tsb"), &e);
    th_exec(s, "UPDATE products SET price = price + 1 WHERE id = 'p1'");
    th_seal(s);
    tsync_store_free(s);
    /* Leave the live database with a -wal holding frames, as after a crash of the till app. */
    sqlite3 *h;
    cr_assert(sqlite3_open(db, &h) == SQLITE_OK);
    sqlite3_db_config(h, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    cr_assert(sqlite3_exec(h, "UPDATE products SET name = 'green apple' WHERE id = 'p1'", NULL,
                           NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    live_files before = capture(dir, db);
    cr_assert(before.wal.exists && before.wal.n > 0, "the test needs a -wal with frames");

    blob good = slurp(th_path(bad_dir, "good.tsb"));
    blob genc = slurp(th_path(bad_dir, "good_enc.tsb"));
    cr_assert(genc.n > 3 * TSYNC__BAK_CHUNK, "the encrypted backup has %zu bytes", genc.n);
    size_t image = TSYNC__BAK_IMAGE_AT, end = good.n, chunk = TSYNC__BAK_CHUNK + 17;
    size_t at_chunk2 = TSYNC__BAK_ENC_HEADER + chunk;

    bad_file bad[80];
    int n = 0;
    flip(&bad[n++], &good, 0, "magic", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, 8, "format byte", NULL, TSYNC_EVERSION);
    flip(&bad[n++], &good, 9, "flags byte", NULL, TSYNC_EVERSION);
    flip(&bad[n++], &good, 12, "image length", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, 17, "image length, high byte", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, 100, "header padding", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, image + 20, "image header", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, image + (end - image) / 2, "middle of the image", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, end - 200, "manifest", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, end - 40, "end of the manifest", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &good, end - 1, "trailer hash", NULL, TSYNC_ECORRUPT);
    flip(&bad[n++], &genc, 10, "encrypted: key derivation algorithm", "secret", 0);
    flip(&bad[n++], &genc, 11, "encrypted: opslimit", "secret", 0);
    flip(&bad[n++], &genc, 16, "encrypted: memlimit", "secret", 0);
    flip(&bad[n++], &genc, 30, "encrypted: salt", "secret", TSYNC_EBADSIG);
    flip(&bad[n++], &genc, 50, "encrypted: stream header", "secret", TSYNC_EBADSIG);
    flip(&bad[n++], &genc, 100, "encrypted: first chunk", "secret", TSYNC_EBADSIG);
    flip(&bad[n++], &genc, at_chunk2 + 500, "encrypted: second chunk", "secret", TSYNC_ECORRUPT);
    flip(&bad[n++], &genc, genc.n - 1, "encrypted: last chunk", "secret", TSYNC_ECORRUPT);
    flip(&bad[n], &genc, 0, "encrypted: wrong passphrase", "Secret", TSYNC_EBADSIG);
    bad[n++].p[0] ^= 0x20; /* unflipped: only the passphrase is wrong */
    flip(&bad[n], &genc, 0, "encrypted: no passphrase", NULL, TSYNC_EINVAL);
    bad[n++].p[0] ^= 0x20;
    flip(&bad[n], &good, 0, "plain file, flags say encrypted", "secret", 0);
    bad[n].p[0] ^= 0x20;
    bad[n++].p[9] = TSYNC__BAK_ENCRYPTED;
    /* truncated at many offsets, in both kinds */
    size_t cuts[] = {0,
                     1,
                     8,
                     9,
                     10,
                     17,
                     18,
                     4095,
                     image,
                     image + 1,
                     image + 4096,
                     (image + end) / 3,
                     (image + end) / 2,
                     end - 300,
                     end - 37,
                     end - 33,
                     end - 32,
                     end - 31,
                     end - 1};
    static char names[64][64];
    int nn = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        snprintf(names[nn], sizeof names[nn], "plain, cut at %zu of %zu", cuts[i], end);
        cut(&bad[n++], &good, cuts[i], names[nn++], NULL);
    }
    size_t ecuts[] = {10,
                      62,
                      63,
                      64,
                      63 + 17,
                      at_chunk2 - 1,
                      at_chunk2,
                      at_chunk2 + 1,
                      at_chunk2 + chunk,
                      genc.n - 18,
                      genc.n - 17,
                      genc.n - 1};
    for (size_t i = 0; i < sizeof ecuts / sizeof *ecuts; i++) {
        snprintf(names[nn], sizeof names[nn], "encrypted, cut at %zu of %zu", ecuts[i], genc.n);
        cut(&bad[n], &genc, ecuts[i], names[nn++], "secret");
        /* A cut first chunk cannot be told from a wrong passphrase: either error will do. */
        if (ecuts[i] > TSYNC__BAK_ENC_HEADER && ecuts[i] < at_chunk2) bad[n].code = 0;
        n++;
    }
    /* extra bytes, and files that are no backup at all */
    cut(&bad[n], &good, good.n, "plain, one byte too many", NULL);
    bad[n].p[bad[n].n++] = 'x';
    n++;
    cut(&bad[n], &genc, genc.n, "encrypted, one byte too many", "secret");
    bad[n].p[bad[n].n++] = 'x';
    n++;
    cut(&bad[n++], &before.db, before.db.n, "a plain SQLite database", NULL);
    cut(&bad[n++], &before.key, before.key.n, "a key file", NULL);
    cr_assert(n <= 80);

    for (int i = 0; i < n; i++) {
        const char *path = th_path(bad_dir, "bad.tsb");
        spit(path, bad[i].p, bad[i].n);
        tsync_error_clear();
        int rc = tsync_backup_check(path, bad[i].pass, NULL);
        cr_assert(rc != 0, "%s: the check accepts it", bad[i].what);
        cr_assert(bad[i].code == 0 || rc == bad[i].code, "%s: check says %d (%s), expected %d",
                  bad[i].what, rc, errmsg(), bad[i].code);
        cr_assert(strstr(errmsg(), "bad.tsb") && !strchr(errmsg(), '\n'),
                  "%s: not one line naming the file: %s", bad[i].what, errmsg());
        tsync_restore_options o = with_pass(bad[i].pass);
        int rrc = tsync_restore(db, path, &o, NULL);
        cr_assert(rrc == rc, "%s: restore says %d (%s), the check %d", bad[i].what, rrc, errmsg(),
                  rc);
        assert_unchanged(&before, dir, db, bad[i].what);
        free(bad[i].p);
    }
    /* and still the good ones are fine */
    cr_assert(tsync_backup_check(th_path(bad_dir, "good_enc.tsb"), "secret", NULL) == 0, "%s",
              errmsg());
    restore_ok(db, th_path(bad_dir, "good.tsb"), NULL, NULL);
    free(good.p), free(genc.p);
    live_free(&before);
    free((void *)db);
    free(dir);
    free(bad_dir);
}

Test(backup, refuses_a_database_in_use)
{
    char *dir = th_tmpdir_auto();
    const char *db = strdup(th_path(dir, "a.db"));
    tsync_store *s = shop(db);
    backup_ok(s, th_path(dir, "a.tsb"), NULL);
    tsync_store_free(s);
    /* another process with the database open (a running node, the till app) */
    int hold[2], ready[2];
    cr_assert(pipe(hold) == 0 && pipe(ready) == 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(hold[1]);
        tsync_store *c = NULL;
        tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
        if (tsync_store_open(&c, db, &o) != 0 || write(ready[1], "r", 1) != 1) _exit(2);
        char ch;
        if (read(hold[0], &ch, 1) < 0) _exit(3);
        tsync_store_free(c);
        _exit(0);
    }
    close(hold[0]);
    char ch;
    cr_assert(read(ready[0], &ch, 1) == 1);
    live_files before = capture(dir, db); /* as the other process left it after opening */
    int rc = tsync_restore(db, th_path(dir, "a.tsb"), NULL, NULL);
    cr_assert(rc == TSYNC_EBUSY, "restore while another process has it open: %d %s", rc, errmsg());
    cr_assert(strstr(errmsg(), "in use"), "%s", errmsg());
    assert_unchanged(&before, dir, db, "in use by another process");
    cr_assert(write(hold[1], "x", 1) == 1);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the same process holding a store */
    s = th_open(db);
    rc = tsync_restore(db, th_path(dir, "a.tsb"), NULL, NULL);
    cr_assert(rc == TSYNC_EBUSY, "restore while this process has it open: %d %s", rc, errmsg());
    tsync_store_free(s);
    restore_ok(db, th_path(dir, "a.tsb"), NULL, NULL);
    live_free(&before);
    free((void *)db);
    free(dir);
}

/* ---------------------------------------------------------------- identity after a restore */

static int64_t stock_of(tsync_store *s, const char *id)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT stock FROM products WHERE id='%s'", id);
    return th_int(s, sql, -1);
}

static char *state_field(tsync_store *s, const char *field)
{
    char *js = NULL;
    cr_assert(tsync_store_state_json(&js, s) == 0);
    char key[64];
    snprintf(key, sizeof key, "\"%s\": \"", field);
    char *p = strstr(js, key);
    cr_assert(p, "state has no %s", field);
    p += strlen(key);
    char *out = strndup(p, strcspn(p, "\""));
    free(js);
    return out;
}

Test(backup, restore_renews_the_site_and_catches_up_from_a_peer)
{
    char *dir = th_tmpdir_auto();
    const char *a_path = strdup(th_path(dir, "a.db"));
    tsync_store *a = shop(a_path), *b = th_open_products(th_path(dir, "b.db"));
    th_exec(a, "UPDATE products SET stock = stock - 2 WHERE id = 'p1'");
    th_seal(a);
    cr_assert(th_sync(a, b) == 0, "%s", errmsg());
    uint8_t old_site[16];
    site_of(a, old_site);
    char *old_pk = state_field(a, "public_key"), *old_inc = state_field(a, "incarnation");
    backup_ok(a, th_path(dir, "a.tsb"), NULL);
    int64_t at_backup = th_check_log(a, old_site, "a at the backup", 1, NULL, NULL);

    /* after the backup: a keeps selling and syncs; b sells too */
    for (int i = 0; i < 3; i++) {
        th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id = 'p1'");
        th_exec(a, "INSERT INTO products VALUES('late' || abs(random() % 1000000), 'x', 1, 1)");
        th_seal(a);
    }
    cr_assert(th_sync(a, b) == 0, "%s", errmsg());
    th_exec(b, "UPDATE products SET stock = stock - 5 WHERE id = 'p1'");
    th_seal(b);
    int64_t last_old = th_check_log(a, old_site, "a before the restore", 1, NULL, NULL);
    cr_assert(last_old > at_backup);
    tsync_store_free(a);

    /* the disk of a fails; its backup comes back */
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    restore_ok(a_path, th_path(dir, "a.tsb"), NULL, &r);
    cr_assert(!r.new_key, "the key file was there");
    cr_assert(memcmp(r.site_id, old_site, 16) != 0, "the restored database kept its site id");
    cr_assert(memcmp(r.backup_site_id, old_site, 16) == 0);
    tsync_restore_report_clear(&r);
    a = th_open(a_path);
    cr_assert(memcmp(tsync_store_site_id(a), old_site, 16) != 0, "the site id came back");
    char *pk = state_field(a, "public_key"), *inc = state_field(a, "incarnation");
    cr_assert_str_eq(pk, old_pk, "the device key must be kept");
    cr_assert_str_neq(inc, old_inc, "the incarnation must be renewed");
    cr_assert_eq(th_check_log(a, old_site, "a restored", 0, NULL, NULL), at_backup);
    cr_assert_eq(stock_of(a, "p1"), 48);

    /* a catches up from b: its own old batches too, forwarded */
    cr_assert(th_sync(b, a) == 0, "catching up: %s", errmsg());
    cr_assert_eq(th_check_log(a, old_site, "a caught up", 0, NULL, NULL), last_old);
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id = 'p2'");
    th_exec(a, "UPDATE products SET price = 99 WHERE id = 'p3'");
    th_seal(a);
    cr_assert(th_sync(a, b) == 0, "%s", errmsg());
    cr_assert(th_sync(b, a) == 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b), "a and b differ after the restore");
    cr_assert_eq(stock_of(a, "p1"), 50 - 2 - 3 - 5, "a sale was lost or counted twice");
    cr_assert_eq(stock_of(b, "p2"), 9);

    /* no sequence number was reused: one chain per site, both places, no fork */
    uint8_t new_site[16];
    site_of(a, new_site);
    cr_assert_eq(th_check_log(a, new_site, "a, new site", 1, NULL, NULL), 1);
    cr_assert_eq(th_check_log(b, new_site, "b, a's new site", 0, NULL, NULL), 1);
    cr_assert_eq(th_check_log(b, old_site, "b, a's old site", 0, NULL, NULL), last_old);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_forks", -1), 0);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_forks", -1), 0);
    free(pk), free(inc), free(old_pk), free(old_inc);
    tsync_store_free(a);
    tsync_store_free(b);
    free((void *)a_path);
    free(dir);
}

Test(backup, restore_without_a_key_file_makes_a_new_key)
{
    char *dir = th_tmpdir_auto();
    const char *a_path = strdup(th_path(dir, "a.db"));
    tsync_store *a = shop(a_path);
    char *old_pk = state_field(a, "public_key");
    const char *hash = strdup(th_hash(a));
    backup_ok(a, th_path(dir, "a.tsb"), NULL);
    tsync_store_free(a);
    cr_assert(unlink(th_path(dir, "a.db.key")) == 0); /* new hardware: the key is gone */
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    restore_ok(a_path, th_path(dir, "a.tsb"), NULL, &r);
    cr_assert(r.new_key, "new_key must say the till has to enrol");
    tsync_restore_report_clear(&r);
    struct stat sb;
    cr_assert(stat(th_path(dir, "a.db.key"), &sb) == 0 && (sb.st_mode & 0777) == 0600);
    a = th_open(a_path);
    char *pk = state_field(a, "public_key");
    cr_assert_str_neq(pk, old_pk, "a new device key was expected");
    cr_assert_str_eq(th_hash(a), hash);
    tsync_store_free(a);
    free(pk), free(old_pk), free((void *)hash);
    free((void *)a_path);
    free(dir);
}

Test(backup, restore_where_the_database_is_gone_but_the_key_is_not)
{
    char *dir = th_tmpdir_auto();
    const char *a_path = strdup(th_path(dir, "a.db"));
    tsync_store *a = shop(a_path);
    uint8_t old_site[16];
    site_of(a, old_site);
    backup_ok(a, th_path(dir, "a.tsb"), NULL);
    tsync_store_free(a);
    cr_assert(unlink(a_path) == 0);
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    restore_ok(a_path, th_path(dir, "a.tsb"), NULL, &r);
    cr_assert(!r.new_key && memcmp(r.site_id, old_site, 16) != 0);
    tsync_restore_report_clear(&r);
    /* a -wal without its database would be applied to the restored one: refused */
    tsync_store_free(th_open(a_path));
    cr_assert(rename(a_path, th_path(dir, "moved.db")) == 0);
    spit(th_path(dir, "a.db-wal"), "stale", 5);
    int rc = tsync_restore(a_path, th_path(dir, "a.tsb"), NULL, NULL);
    cr_assert(rc == TSYNC_EINVAL && strstr(errmsg(), "a.db-wal"), "%d %s", rc, errmsg());
    cr_assert(access(a_path, F_OK) != 0, "a database was made anyway");
    free((void *)a_path);
    free(dir);
}

Test(backup, a_damaged_key_file_is_refused_before_anything_changes)
{
    char *dir = th_tmpdir_auto();
    const char *a_path = strdup(th_path(dir, "a.db"));
    tsync_store *a = shop(a_path);
    backup_ok(a, th_path(dir, "a.tsb"), NULL);
    tsync_store_free(a);
    blob key = slurp(th_path(dir, "a.db.key"));
    key.p[40] ^= 1;
    spit(th_path(dir, "a.db.key"), key.p, key.n);
    chmod(th_path(dir, "a.db.key"), 0600);
    live_files before = capture(dir, a_path);
    int rc = tsync_restore(a_path, th_path(dir, "a.tsb"), NULL, NULL);
    cr_assert(rc == TSYNC_ECORRUPT && strstr(errmsg(), "a.db.key"), "%d %s", rc, errmsg());
    assert_unchanged(&before, dir, a_path, "damaged key file");
    live_free(&before);
    free(key.p);
    free((void *)a_path);
    free(dir);
}

Test(backup, a_copied_database_gets_its_own_site_id)
{
    char *dir = th_tmpdir_auto();
    const char *a_path = strdup(th_path(dir, "a.db"));
    tsync_store *a = shop(a_path);
    uint8_t site[16];
    site_of(a, site);
    tsync_store_free(a);
    /* a cloned till image: database and key file copied to another place */
    blob d = slurp(a_path), k = slurp(th_path(dir, "a.db.key"));
    spit(th_path(dir, "clone.db"), d.p, d.n);
    spit(th_path(dir, "clone.db.key"), k.p, k.n);
    chmod(th_path(dir, "clone.db.key"), 0600);
    tsync_store *c = th_open(th_path(dir, "clone.db"));
    cr_assert(memcmp(tsync_store_site_id(c), site, 16) != 0, "the copy kept the site id");
    th_exec(c, "UPDATE products SET stock = stock - 1 WHERE id = 'p1'");
    th_seal(c);
    a = th_open(a_path);
    cr_assert(memcmp(tsync_store_site_id(a), site, 16) == 0, "the original lost its site id");
    th_exec(a, "UPDATE products SET stock = stock - 1 WHERE id = 'p1'");
    th_seal(a);
    /* both sold with batch 2 of their own site: no fork when they meet */
    cr_assert(th_sync(c, a) == 0, "%s", errmsg());
    cr_assert(th_sync(a, c) == 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(c));
    cr_assert_eq(stock_of(a, "p1"), 48);
    tsync_store_free(a);
    tsync_store_free(c);
    free(d.p), free(k.p);
    free((void *)a_path);
    free(dir);
}

Test(backup, restore_into_a_database_of_another_page_size)
{
    char *dir = th_tmpdir_auto();
    const char *src = strdup(th_path(dir, "big_pages.db"));
    sqlite3 *h;
    cr_assert(sqlite3_open(src, &h) == SQLITE_OK);
    cr_assert(sqlite3_exec(h, "PRAGMA page_size=8192; CREATE TABLE x(a)", NULL, NULL, NULL) == 0);
    sqlite3_close(h);
    tsync_store *s = shop(src);
    cr_assert_eq(th_int(s, "PRAGMA page_size", 0), 8192);
    const char *hash = strdup(th_hash(s));
    backup_ok(s, th_path(dir, "b.tsb"), NULL);
    tsync_store_free(s);
    tsync_store *live = shop(th_path(dir, "live.db"));
    cr_assert_eq(th_int(live, "PRAGMA page_size", 0), 4096);
    tsync_store_free(live);
    restore_ok(th_path(dir, "live.db"), th_path(dir, "b.tsb"), NULL, NULL);
    live = th_open(th_path(dir, "live.db"));
    cr_assert_eq(th_int(live, "PRAGMA page_size", 0), 8192);
    char *mode = th_text(live, "PRAGMA journal_mode");
    cr_assert_str_eq(mode, "wal");
    free(mode);
    cr_assert_str_eq(th_hash(live), hash);
    tsync_store_free(live);
    free((void *)hash);
    free((void *)src);
    free(dir);
}

/* ---------------------------------------------------------------- hashes that match */

static void replace(char **s, const char *from, const char *to)
{
    char *at = strstr(*s, from);
    cr_assert(at, "no '%s' in the manifest", from);
    size_t head = (size_t)(at - *s), fl = strlen(from), tl = strlen(to), n = strlen(*s);
    char *out = malloc(n - fl + tl + 1);
    memcpy(out, *s, head);
    memcpy(out + head, to, tl);
    memcpy(out + head + tl, at + fl, n - head - fl + 1);
    free(*s);
    *s = out;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A plain backup rebuilt around another image, its manifest and trailer recomputed so that every
 * hash matches: what only the check of the image itself can refuse. */
static blob forge(const blob *good, const uint8_t *img, size_t len)
{
    size_t at = TSYNC__BAK_IMAGE_AT, old = (size_t)le(good->p + 10, 8);
    uint32_t mlen = (uint32_t)le(good->p + at + old, 4);
    char *manifest = strndup((const char *)good->p + at + old + 4, mlen);
    uint8_t oh[32], nh[32];
    crypto_generichash(oh, 32, good->p + at, old, NULL, 0);
    crypto_generichash(nh, 32, img, len, NULL, 0);
    char ohex[65], nhex[65], from[64], to[64];
    for (int i = 0; i < 32; i++) snprintf(ohex + 2 * i, 3, "%02x", oh[i]);
    for (int i = 0; i < 32; i++) snprintf(nhex + 2 * i, 3, "%02x", nh[i]);
    replace(&manifest, ohex, nhex);
    snprintf(from, sizeof from, "\"bytes\": %zu", old);
    snprintf(to, sizeof to, "\"bytes\": %zu", len);
    replace(&manifest, from, to);
    mlen = (uint32_t)strlen(manifest);
    blob b = {calloc(1, at + len + 4 + mlen + 32), at + len + 4 + mlen + 32, 1};
    memcpy(b.p, good->p, TSYNC__BAK_PLAIN_HEADER);
    for (int i = 0; i < 8; i++) b.p[10 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    memcpy(b.p + at, img, len);
    uint8_t *q = b.p + at + len;
    for (int i = 0; i < 4; i++) q[i] = (uint8_t)(mlen >> (8 * i));
    memcpy(q + 4, manifest, mlen);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, b.p, TSYNC__BAK_PLAIN_HEADER + 8);
    crypto_generichash_update(&st, nh, 32);
    crypto_generichash_update(&st, q, 4 + mlen);
    crypto_generichash_final(&st, q + 4 + mlen, 32);
    free(manifest);
    return b;
}

Test(backup, matching_hashes_do_not_get_a_bad_image_past_the_check)
{
    char *dir = th_tmpdir_auto();
    const char *db = strdup(th_path(dir, "a.db"));
    tsync_store *s = shop(db);
    backup_ok(s, th_path(dir, "good.tsb"), NULL);
    tsync_store_free(s);
    blob good = slurp(th_path(dir, "good.tsb"));
    size_t len = (size_t)le(good.p + 10, 8);
    uint8_t *img = malloc(len);

    /* the forger itself is right: the untouched image passes */
    memcpy(img, good.p + TSYNC__BAK_IMAGE_AT, len);
    blob same = forge(&good, img, len);
    spit(th_path(dir, "same.tsb"), same.p, same.n);
    cr_assert(tsync_backup_check(th_path(dir, "same.tsb"), NULL, NULL) == 0, "%s", errmsg());

    /* a b-tree page with a page type that does not exist */
    img[4096] = 0x07;
    blob broken = forge(&good, img, len);
    spit(th_path(dir, "broken.tsb"), broken.p, broken.n);

    /* a sound SQLite database that is no tillsync database */
    sqlite3 *h;
    cr_assert(sqlite3_open(th_path(dir, "other.db"), &h) == SQLITE_OK);
    cr_assert(sqlite3_exec(h, "CREATE TABLE t(a); INSERT INTO t VALUES(1)", NULL, NULL, NULL) == 0);
    sqlite3_close(h);
    blob other = slurp(th_path(dir, "other.db"));
    blob foreign = forge(&good, other.p, other.n);
    spit(th_path(dir, "foreign.tsb"), foreign.p, foreign.n);

    live_files before = capture(dir, db);
    const char *cases[][2] = {{"broken.tsb", "fails quick_check"},
                              {"foreign.tsb", "is not a tillsync database"}};
    for (int i = 0; i < 2; i++) {
        int rc = tsync_backup_check(th_path(dir, cases[i][0]), NULL, NULL);
        cr_assert(rc == TSYNC_ECORRUPT && strstr(errmsg(), cases[i][1]), "%s: %d %s", cases[i][0],
                  rc, errmsg());
        rc = tsync_restore(db, th_path(dir, cases[i][0]), NULL, NULL);
        cr_assert(rc == TSYNC_ECORRUPT && strstr(errmsg(), cases[i][1]), "%s: %d %s", cases[i][0],
                  rc, errmsg());
        assert_unchanged(&before, dir, db, cases[i][0]);
    }
    live_free(&before);
    free(good.p), free(same.p), free(broken.p), free(other.p), free(foreign.p), free(img);
    free((void *)db);
    free(dir);
}
