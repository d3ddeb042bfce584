/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/demo.c — `tillsync demo`: three tills of one shop sell at the same time without a network,
 * then converge by exchanging bundles. It shows the three merge rules on a products table: stock
 * is a PN-counter (every till's sales count), price is last-writer-wins (concurrent price changes
 * resolve the same way everywhere) and row existence is add-wins (a product deleted at one till
 * while another till updated it survives).
 *
 * The demo checks its own claims rather than trusting the library: at the end the three tills must
 * show the same content hash, and every product's stock must equal 100 minus what the demo itself
 * recorded as sold at all tills. Only the public API is used, plus SQLite for the app's SQL (as a
 * POS app would) and one thread per till, each with its own tsync_store.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define NTILLS        3
#define NPRODUCTS     20
#define INITIAL_STOCK 100
#define SALES         250 /* per till */
#define NREPRICE      3   /* products whose price till2 and till3 both change */
#define MAX_ROUNDS    4

static const struct {
    const char *id, *name;
    int price; /* cents */
} CATALOGUE[NPRODUCTS] = {
    {"P01", "Espresso", 220},         {"P02", "Cappuccino", 310},
    {"P03", "Flat white", 330},       {"P04", "Black tea", 240},
    {"P05", "Hot chocolate", 350},    {"P06", "Orange juice", 290},
    {"P07", "Sparkling water", 180},  {"P08", "Croissant", 210},
    {"P09", "Pain au chocolat", 240}, {"P10", "Cinnamon bun", 290},
    {"P11", "Blueberry muffin", 260}, {"P12", "Banana bread", 280},
    {"P13", "Ham sandwich", 520},     {"P14", "Cheese toastie", 480},
    {"P15", "Tomato soup", 450},      {"P16", "Caesar salad", 690},
    {"P17", "Carrot cake", 390},      {"P18", "Brownie", 270},
    {"P19", "Granola pot", 360},      {"P20", "Fruit salad", 340},
};

/* ---------------------------------------------------------------- small helpers */

/* splitmix64: small, seedable, and the same on every platform. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rnd_below(uint64_t *s, int n)
{
    return (int)(rnd(s) % (uint64_t)n);
}

static const char *money(int cents, char buf[16])
{
    snprintf(buf, 16, "%d.%02d", cents / 100, cents % 100);
    return buf;
}

static void short_hash(const uint8_t h[TSYNC_HASH_BYTES], char out[13])
{
    sodium_bin2hex(out, 13, h, 6);
}

/* The library's last error on this thread, as text. */
static const char *lib_error(void)
{
    const tsync_error *e = tsync_error_last();
    return e->code && e->message ? e->message : "unknown error";
}

/* ---------------------------------------------------------------- one till */

typedef struct {
    int product;   /* index into CATALOGUE */
    int at_sale;   /* done just before this sale */
    int new_price; /* cents */
} reprice;

typedef struct {
    int no; /* 1, 2 or 3 */
    char path[PATH_MAX];
    uint64_t rng;

    /* What the scenario asks of this till (done on its thread, between sales). */
    int delete_product, delete_at; /* -1: none */
    int rename_product, rename_at; /* -1: none */
    char new_name[80];
    reprice reprices[NREPRICE];
    int nreprices;

    /* What happened, recorded by the till itself. */
    long sold[NPRODUCTS]; /* units, counted only for committed updates that hit a row */
    int sales, lines, units, missed_lines;
    size_t batches;
    double seconds;
    char err[300];
} till;

static int till_fail(till *t, const char *what, const char *detail)
{
    snprintf(t->err, sizeof t->err, "till%d: %s: %s", t->no, what, detail);
    return -1;
}

static int till_exec(till *t, sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        till_fail(t, sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Runs one statement with (int, text) parameters; *changes gets the rows it changed. */
static int till_step(till *t, sqlite3_stmt *st, int a, const char *b, int *changes)
{
    sqlite3_reset(st);
    sqlite3_bind_int(st, 1, a);
    sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return till_fail(t, "update", sqlite3_errmsg(sqlite3_db_handle(st)));
    if (changes) *changes = sqlite3_changes(sqlite3_db_handle(st));
    return 0;
}

/* The back-office events of this till that fall before sale i, each in its own transaction. */
static int till_events(till *t, sqlite3 *db, sqlite3_stmt *set_price, int i)
{
    for (int k = 0; k < t->nreprices; k++) {
        if (t->reprices[k].at_sale != i) continue;
        if (till_step(t, set_price, t->reprices[k].new_price, CATALOGUE[t->reprices[k].product].id,
                      NULL))
            return -1;
    }
    if (t->rename_product >= 0 && t->rename_at == i) {
        char *sql = sqlite3_mprintf("UPDATE products SET name = %Q WHERE id = %Q", t->new_name,
                                    CATALOGUE[t->rename_product].id);
        int rc = sql ? till_exec(t, db, sql) : till_fail(t, "rename", "out of memory");
        sqlite3_free(sql);
        if (rc) return rc;
    }
    if (t->delete_product >= 0 && t->delete_at == i) {
        char *sql =
            sqlite3_mprintf("DELETE FROM products WHERE id = %Q", CATALOGUE[t->delete_product].id);
        int rc = sql ? till_exec(t, db, sql) : till_fail(t, "delete", "out of memory");
        sqlite3_free(sql);
        if (rc) return rc;
    }
    return 0;
}

/* A till's day: SALES sales of one or two lines, one transaction each, sealed every few sales
 * as a node would after noticing the commits. */
static int till_sell(till *t, tsync_store *s)
{
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *sell = NULL, *set_price = NULL;
    if (sqlite3_prepare_v2(db, "UPDATE products SET stock = stock - ?1 WHERE id = ?2", -1, &sell,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "UPDATE products SET price = ?1 WHERE id = ?2", -1, &set_price,
                           NULL) != SQLITE_OK) {
        till_fail(t, "prepare", sqlite3_errmsg(db));
        goto fail;
    }
    int until_seal = 1 + rnd_below(&t->rng, 6);
    for (int i = 0; i < SALES; i++) {
        if (till_events(t, db, set_price, i)) goto fail;
        int nlines = 1 + rnd_below(&t->rng, 2), prod[2], qty[2], hit[2];
        if (till_exec(t, db, "BEGIN IMMEDIATE")) goto fail;
        for (int l = 0; l < nlines; l++) {
            prod[l] = rnd_below(&t->rng, NPRODUCTS);
            qty[l] = 1 + rnd_below(&t->rng, 2);
            if (till_step(t, sell, qty[l], CATALOGUE[prod[l]].id, &hit[l])) {
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                goto fail;
            }
        }
        if (till_exec(t, db, "COMMIT")) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        /* Only now is the sale real: count what it changed. */
        t->sales++;
        for (int l = 0; l < nlines; l++) {
            if (!hit[l]) {
                t->missed_lines++; /* the product is gone at this till */
                continue;
            }
            t->lines++;
            t->units += qty[l];
            t->sold[prod[l]] += qty[l];
        }
        if (--until_seal == 0 || i == SALES - 1) {
            size_t nb = 0;
            if (tsync_store_seal(s, &nb) != 0) {
                till_fail(t, "seal", lib_error());
                goto fail;
            }
            t->batches += nb;
            until_seal = 3 + rnd_below(&t->rng, 5);
        }
    }
    sqlite3_finalize(sell);
    sqlite3_finalize(set_price);
    return 0;
fail:
    sqlite3_finalize(sell);
    sqlite3_finalize(set_price);
    return -1;
}

static void *till_thread(void *arg)
{
    till *t = arg;
    double t0 = cli_mono_s();
    tsync_store *s = NULL;
    if (tsync_store_open(&s, t->path, NULL) != 0) {
        till_fail(t, "open", lib_error());
        return NULL;
    }
    till_sell(t, s);
    tsync_store_free(s);
    t->seconds = cli_mono_s() - t0;
    return NULL;
}

/* ---------------------------------------------------------------- the demo */

typedef struct {
    char dir[PATH_MAX];
    int remove_dir;
    till tills[NTILLS];
    tsync_store *s[NTILLS];
    int reprice_products[NREPRICE];
    int deleted; /* product till1 deletes and till3 renames */
    char err[400];
} demo;

static int demo_fail(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int demo_fail(demo *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int open_tills(demo *d, int create)
{
    for (int i = 0; i < NTILLS; i++) {
        tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
        o.create = create;
        if (tsync_store_open(&d->s[i], d->tills[i].path, &o) != 0)
            return demo_fail(d, "till%d: open %s: %s", i + 1, d->tills[i].path, lib_error());
    }
    return 0;
}

static void close_tills(demo *d)
{
    for (int i = 0; i < NTILLS; i++) {
        tsync_store_free(d->s[i]);
        d->s[i] = NULL;
    }
}

/* Sends `from` what `to` lacks: `to`'s state, a bundle since it, a merge. Prints one line. */
static int exchange(demo *d, int from, int to, size_t *moved)
{
    char *state = NULL;
    uint8_t *bundle = NULL;
    size_t len = 0, nb = 0;
    if (tsync_store_state_json(&state, d->s[to]) != 0)
        return demo_fail(d, "till%d: state: %s", to + 1, lib_error());
    int rc = tsync_store_bundle(&bundle, &len, d->s[from], state, &nb);
    free(state);
    if (rc != 0) return demo_fail(d, "till%d: bundle: %s", from + 1, lib_error());
    printf("    till%d -> till%d: ", from + 1, to + 1);
    if (nb == 0) {
        printf("nothing new\n");
        free(bundle);
        return 0;
    }
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    rc = tsync_store_merge(d->s[to], bundle, len, &r);
    printf("%3zu batches, %6zu bytes; merged %zu, duplicates %zu, held %zu, parked %zu, "
           "refused %zu, conflicts %zu\n",
           nb, len, r.merged, r.duplicates, r.held, r.parked, r.refused, r.conflicts);
    for (size_t i = 0; i < r.nmessages; i++) printf("      %s\n", r.messages[i]);
    free(bundle);
    *moved += nb;
    if (rc != 0 || r.refused)
        rc = demo_fail(d, "till%d: merging the bundle of till%d: %s", to + 1, from + 1,
                       rc ? lib_error() : "batches refused");
    tsync_merge_report_clear(&r);
    return rc;
}

static int setup(demo *d)
{
    static const char *TABLE = "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, "
                               "price INTEGER, stock INTEGER NOT NULL DEFAULT 0)";
    static const char *const COUNTERS[] = {"stock"};
    printf("1. Setting up the shop\n");
    if (open_tills(d, 1)) return -1;
    for (int i = 0; i < NTILLS; i++) {
        if (tsync_store_exec(d->s[i], TABLE, NULL, NULL) != 0)
            return demo_fail(d, "till%d: create table: %s", i + 1, lib_error());
        if (tsync_store_replicate(d->s[i], "products", COUNTERS, 1) != 0)
            return demo_fail(d, "till%d: replicate: %s", i + 1, lib_error());
    }
    printf("  till1, till2, till3: created products, replicated with stock as a counter\n");

    /* The catalogue is entered at one till only: two tills inserting the same key would both
     * contribute their initial stock to the counter. */
    sqlite3 *db = tsync_store_sqlite(d->s[0]);
    sqlite3_stmt *ins = NULL;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO products(id, name, price, stock) "
                                "VALUES(?1, ?2, ?3, ?4)",
                                -1, &ins, NULL);
    for (int p = 0; rc == SQLITE_OK && p < NPRODUCTS; p++) {
        sqlite3_bind_text(ins, 1, CATALOGUE[p].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, CATALOGUE[p].name, -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 3, CATALOGUE[p].price);
        sqlite3_bind_int(ins, 4, INITIAL_STOCK);
        rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(ins);
    }
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        demo_fail(d, "till1: catalogue: %s", sqlite3_errmsg(db));
        sqlite3_finalize(ins);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    sqlite3_finalize(ins);
    size_t nb = 0;
    if (tsync_store_seal(d->s[0], &nb) != 0) return demo_fail(d, "till1: seal: %s", lib_error());
    printf("  till1: entered %d products with stock %d (sealed into %zu batch%s)\n", NPRODUCTS,
           INITIAL_STOCK, nb, nb == 1 ? "" : "es");
    printf("  till1 sends the catalogue to the other tills by bundle:\n");
    size_t moved = 0;
    if (exchange(d, 0, 1, &moved) || exchange(d, 0, 2, &moved)) return -1;
    close_tills(d);
    return 0;
}

/* Picks the scenario from the seed: which products are repriced at till2 and till3, and which
 * one till1 deletes while till3 renames it. */
static void plan(demo *d, uint64_t seed)
{
    uint64_t r = seed ^ 0x5eedULL;
    int order[NPRODUCTS];
    for (int p = 0; p < NPRODUCTS; p++) order[p] = p;
    for (int p = NPRODUCTS - 1; p > 0; p--) {
        int j = rnd_below(&r, p + 1), x = order[p];
        order[p] = order[j], order[j] = x;
    }
    for (int k = 0; k < NREPRICE; k++) d->reprice_products[k] = order[k];
    d->deleted = order[NREPRICE];
    for (int i = 0; i < NTILLS; i++) {
        till *t = &d->tills[i];
        t->no = i + 1;
        t->rng = seed * 0x100000001b3ULL + (uint64_t)(i + 1);
        t->delete_product = t->rename_product = -1;
    }
    till *t1 = &d->tills[0], *t2 = &d->tills[1], *t3 = &d->tills[2];
    t1->delete_product = d->deleted;
    t1->delete_at = SALES / 3;
    t3->rename_product = d->deleted;
    t3->rename_at = SALES / 2;
    snprintf(t3->new_name, sizeof t3->new_name, "%s (new recipe)", CATALOGUE[d->deleted].name);
    /* The same three prices change at till2 (up 10%) and till3 (a 20% promotion), at different
     * points of the day, so that either till may write last. */
    static const int at2[NREPRICE] = {SALES / 5, SALES * 3 / 5, SALES * 2 / 5};
    static const int at3[NREPRICE] = {SALES * 3 / 5, SALES / 5, SALES * 2 / 5};
    for (int k = 0; k < NREPRICE; k++) {
        int p = d->reprice_products[k];
        t2->reprices[k] = (reprice){p, at2[k], CATALOGUE[p].price * 11 / 10};
        t3->reprices[k] = (reprice){p, at3[k], CATALOGUE[p].price * 8 / 10};
    }
    t2->nreprices = t3->nreprices = NREPRICE;
}

static int sell(demo *d)
{
    printf("\n2. Selling, each till on its own thread with its own connection, no network\n");
    pthread_t th[NTILLS];
    double t0 = cli_mono_s();
    int started = 0;
    for (; started < NTILLS; started++) {
        int e = pthread_create(&th[started], NULL, till_thread, &d->tills[started]);
        if (e) {
            demo_fail(d, "cannot start a till thread: %s", strerror(e));
            break;
        }
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (started < NTILLS) return -1;
    for (int i = 0; i < NTILLS; i++)
        if (d->tills[i].err[0]) return demo_fail(d, "%s", d->tills[i].err);
    char a[16], b[16];
    for (int i = 0; i < NTILLS; i++) {
        till *t = &d->tills[i];
        printf("  till%d: %d sales, %d units in %d lines, sealed into %zu batches (%.2f s)\n",
               t->no, t->sales, t->units, t->lines, t->batches, t->seconds);
        for (int k = 0; k < t->nreprices; k++) {
            int p = t->reprices[k].product;
            printf("         before sale %3d: price of %s %s %s -> %s\n", t->reprices[k].at_sale,
                   CATALOGUE[p].id, CATALOGUE[p].name, money(CATALOGUE[p].price, a),
                   money(t->reprices[k].new_price, b));
        }
        if (t->rename_product >= 0)
            printf("         before sale %3d: renamed %s %s to \"%s\"\n", t->rename_at,
                   CATALOGUE[t->rename_product].id, CATALOGUE[t->rename_product].name, t->new_name);
        if (t->delete_product >= 0)
            printf("         before sale %3d: deleted %s %s (%ld sold before; %d later sale "
                   "lines found it gone)\n",
                   t->delete_at, CATALOGUE[t->delete_product].id, CATALOGUE[t->delete_product].name,
                   t->sold[t->delete_product], t->missed_lines);
    }
    printf("  all three done in %.2f s\n", cli_mono_s() - t0);
    return 0;
}

static int hashes(demo *d, uint8_t h[NTILLS][TSYNC_HASH_BYTES], int *equal)
{
    for (int i = 0; i < NTILLS; i++)
        if (tsync_store_hash(h[i], d->s[i], NULL) != 0)
            return demo_fail(d, "till%d: hash: %s", i + 1, lib_error());
    *equal = 1;
    for (int i = 1; i < NTILLS; i++)
        if (memcmp(h[0], h[i], TSYNC_HASH_BYTES) != 0) *equal = 0;
    return 0;
}

static int sync_tills(demo *d, uint64_t seed, int *rounds)
{
    printf("\n3. Exchanging bundles, every pair in an order shuffled by the seed, until the tills "
           "agree\n");
    if (open_tills(d, 0)) return -1;
    int pairs[NTILLS * (NTILLS - 1)][2], npairs = 0;
    for (int i = 0; i < NTILLS; i++)
        for (int j = 0; j < NTILLS; j++)
            if (i != j) pairs[npairs][0] = i, pairs[npairs][1] = j, npairs++;
    uint64_t r = seed;
    uint8_t h[NTILLS][TSYNC_HASH_BYTES];
    int equal = 0;
    for (*rounds = 1; *rounds <= MAX_ROUNDS; (*rounds)++) {
        for (int k = npairs - 1; k > 0; k--) {
            int j = rnd_below(&r, k + 1), a = pairs[k][0], b = pairs[k][1];
            pairs[k][0] = pairs[j][0], pairs[k][1] = pairs[j][1];
            pairs[j][0] = a, pairs[j][1] = b;
        }
        printf("  round %d:\n", *rounds);
        size_t moved = 0;
        for (int k = 0; k < npairs; k++)
            if (exchange(d, pairs[k][0], pairs[k][1], &moved)) return -1;
        if (hashes(d, h, &equal)) return -1;
        char x[NTILLS][13];
        for (int i = 0; i < NTILLS; i++) short_hash(h[i], x[i]);
        printf(
            "  round %d moved %zu batches; content hashes: till1 %s…, till2 %s…, till3 %s…: %s\n",
            *rounds, moved, x[0], x[1], x[2], equal ? "equal" : "not yet equal");
        if (equal) return 0;
    }
    (*rounds)--;
    return 0;
}

typedef struct {
    int present;
    char name[80];
    int price;
    long stock;
} shown;

/* What a till shows for a product, through SQL as the app would read it. */
static int show(demo *d, int i, int p, shown *out)
{
    sqlite3 *db = tsync_store_sqlite(d->s[i]);
    sqlite3_stmt *st;
    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db, "SELECT name, price, stock FROM products WHERE id = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return demo_fail(d, "till%d: read products: %s", i + 1, sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, CATALOGUE[p].id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->present = 1;
        const unsigned char *n = sqlite3_column_text(st, 0);
        snprintf(out->name, sizeof out->name, "%s", n ? (const char *)n : "");
        out->price = sqlite3_column_int(st, 1);
        out->stock = (long)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return demo_fail(d, "till%d: read products: %s", i + 1, sqlite3_errmsg(db));
    return 0;
}

static long total_sold(const demo *d, int p)
{
    long n = 0;
    for (int i = 0; i < NTILLS; i++) n += d->tills[i].sold[p];
    return n;
}

static int report(demo *d)
{
    printf("\n4. A few products at each till (price / stock as the app reads them)\n");
    int pick[NREPRICE + 2], npick = 0;
    for (int k = 0; k < NREPRICE; k++) pick[npick++] = d->reprice_products[k];
    pick[npick++] = d->deleted;
    int best = -1;
    for (int p = 0; p < NPRODUCTS; p++) {
        int taken = 0;
        for (int k = 0; k < npick; k++) taken |= pick[k] == p;
        if (!taken && (best < 0 || total_sold(d, p) > total_sold(d, best))) best = p;
    }
    pick[npick++] = best;
    printf("  %-4s %-5s  %-26s %6s %6s   %s\n", "id", "till", "name", "price", "stock",
           "sold at till1+2+3 = total -> expected");
    char a[16];
    for (int k = 0; k < npick; k++) {
        int p = pick[k];
        for (int i = 0; i < NTILLS; i++) {
            shown v;
            if (show(d, i, p, &v)) return -1;
            printf("  %-4s till%d  ", i ? "" : CATALOGUE[p].id, i + 1);
            if (!v.present)
                printf("%-26s %6s %6s", "(no such row)", "", "");
            else
                printf("%-26s %6s %6ld", v.name, money(v.price, a), v.stock);
            if (i == 0)
                printf("   %ld+%ld+%ld = %ld -> %ld", d->tills[0].sold[p], d->tills[1].sold[p],
                       d->tills[2].sold[p], total_sold(d, p), INITIAL_STOCK - total_sold(d, p));
            printf("\n");
        }
    }
    for (int p = 0; p < NPRODUCTS; p++)
        if (INITIAL_STOCK - total_sold(d, p) < 0)
            printf("  %s %s is oversold (%ld): each till sold from its own view of the stock; "
                   "the counter keeps every sale\n",
                   CATALOGUE[p].id, CATALOGUE[p].name, INITIAL_STOCK - total_sold(d, p));
    char b[16], c[16];
    printf("  concurrent price changes (last writer wins, the same at every till):\n");
    for (int k = 0; k < NREPRICE; k++) {
        int p = d->reprice_products[k];
        shown v;
        if (show(d, 0, p, &v)) return -1;
        const reprice *r2 = &d->tills[1].reprices[k], *r3 = &d->tills[2].reprices[k];
        const char *who = v.price == r2->new_price   ? "till2's"
                          : v.price == r3->new_price ? "till3's"
                                                     : "neither";
        printf("    %s %s: till2 set %s before sale %d, till3 set %s before sale %d -> kept %s "
               "(%s)\n",
               CATALOGUE[p].id, CATALOGUE[p].name, money(r2->new_price, a), r2->at_sale,
               money(r3->new_price, b), r3->at_sale, money(v.price, c), who);
    }
    return 0;
}

/* The verdict: equal hashes, every stock equal to 100 minus what was sold everywhere, the
 * deleted-and-renamed product present, each repriced product at one of the two prices. */
static int verify(demo *d)
{
    printf("\n5. Verdict\n");
    uint8_t h[NTILLS][TSYNC_HASH_BYTES];
    int equal;
    if (hashes(d, h, &equal)) return -1;
    char x[13];
    short_hash(h[0], x);
    if (!equal) return demo_fail(d, "not converged: the tills' content hashes differ");
    printf("  content hash: %s… at all three tills\n", x);
    long units = 0;
    for (int p = 0; p < NPRODUCTS; p++) {
        long expect = INITIAL_STOCK - total_sold(d, p);
        units += total_sold(d, p);
        for (int i = 0; i < NTILLS; i++) {
            shown v;
            if (show(d, i, p, &v)) return -1;
            if (!v.present)
                return demo_fail(d, "not converged: %s %s is missing at till%d", CATALOGUE[p].id,
                                 CATALOGUE[p].name, i + 1);
            if (v.stock != expect)
                return demo_fail(d,
                                 "not converged: stock of %s at till%d is %ld, expected "
                                 "%d - %ld sold = %ld",
                                 CATALOGUE[p].id, i + 1, v.stock, INITIAL_STOCK, total_sold(d, p),
                                 expect);
        }
    }
    printf("  stock: all %d products at all three tills equal %d minus the units sold at all "
           "tills (%ld units)\n",
           NPRODUCTS, INITIAL_STOCK, units);
    shown v;
    if (show(d, 0, d->deleted, &v)) return -1;
    if (strcmp(v.name, d->tills[2].new_name) != 0)
        return demo_fail(d, "not converged: %s should show till3's name \"%s\", shows \"%s\"",
                         CATALOGUE[d->deleted].id, d->tills[2].new_name, v.name);
    printf("  %s: deleted at till1 while till3 renamed it; present everywhere as \"%s\" "
           "(add-wins)\n",
           CATALOGUE[d->deleted].id, v.name);
    for (int k = 0; k < NREPRICE; k++) {
        int p = d->reprice_products[k];
        if (show(d, 0, p, &v)) return -1;
        if (v.price != d->tills[1].reprices[k].new_price &&
            v.price != d->tills[2].reprices[k].new_price)
            return demo_fail(d, "not converged: price of %s is %d, neither till2's nor till3's",
                             CATALOGUE[p].id, v.price);
    }
    printf("  prices: each concurrently changed price is one of the two written\n");
    return 0;
}

/* ---------------------------------------------------------------- folder and arguments */

static const char *const FILES[] = {"", "-wal", "-shm", "-journal", ".key", ".key.mark"};

static int make_dir(demo *d, const char *dir, int keep)
{
    if (dir) {
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return demo_fail(d, "cannot create %s: %s", dir, strerror(errno));
        snprintf(d->dir, sizeof d->dir, "%s", dir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(d->dir, sizeof d->dir, "%s/tillsync-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(d->dir))
            return demo_fail(d, "cannot create a temporary folder: %s", strerror(errno));
        d->remove_dir = !keep;
    }
    for (int i = 0; i < NTILLS; i++) {
        till *t = &d->tills[i];
        if ((size_t)snprintf(t->path, sizeof t->path, "%s/till%d.db", d->dir, i + 1) >=
            sizeof t->path)
            return demo_fail(d, "folder name too long: %s", d->dir);
        struct stat sb;
        if (stat(t->path, &sb) == 0)
            return demo_fail(d, "%s exists already; give --dir a new or empty folder", t->path);
    }
    return 0;
}

static void remove_dir(demo *d)
{
    if (!d->remove_dir) return;
    char p[PATH_MAX + 16];
    for (int i = 0; i < NTILLS; i++)
        for (size_t f = 0; f < sizeof FILES / sizeof *FILES; f++) {
            snprintf(p, sizeof p, "%s%s", d->tills[i].path, FILES[f]);
            unlink(p);
        }
    rmdir(d->dir);
}

int cmd_demo(int argc, char **argv)
{
    const char *dir = NULL;
    int keep = 0, have_seed = 0;
    uint64_t seed = 0;
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"keep", no_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    /* argv[1] is "--offline" (main put it there): getopt starts after it. */
    cli_opts p = {.cmd = "demo", .argc = argc - 1, .argv = argv + 1, .longopts = opts};
    int c;
    while ((c = cli_opt_next(&p)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        if (c == 'd') dir = optarg;
        if (c == 'k') keep = 1;
        if (c == 's') {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "tillsync: demo: --seed needs a number, not '%s'\n", optarg);
                return 2;
            }
            have_seed = 1;
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "tillsync: demo: unexpected argument '%s' (see 'tillsync demo --help')\n",
                argv[1 + optind]);
        return 2;
    }
    if (!have_seed) seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);

    demo *d = calloc(1, sizeof *d);
    if (!d) {
        fprintf(stderr, "tillsync: demo: out of memory\n");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* A reader that stops early (demo | head) must not stop the demo before it cleans up. */
    signal(SIGPIPE, SIG_IGN);
    double t0 = cli_mono_s();
    int rounds = 0, rc = make_dir(d, dir, keep);
    if (rc == 0) {
        printf("tillsync demo: three tills of one shop, offline all day, then synced by bundles\n");
        printf("  seed %llu (replay the same choices with --seed %llu), folder %s\n\n",
               (unsigned long long)seed, (unsigned long long)seed, d->dir);
        plan(d, seed);
        rc = setup(d);
    }
    if (rc == 0) rc = sell(d);
    if (rc == 0) rc = sync_tills(d, seed, &rounds);
    if (rc == 0) rc = report(d);
    if (rc == 0) rc = verify(d);
    close_tills(d);
    if (rc == 0) {
        printf("converged after %d round%s of exchanges in %.2f s%s%s\n", rounds,
               rounds == 1 ? "" : "s", cli_mono_s() - t0,
               d->remove_dir ? "" : "; databases kept in ", d->remove_dir ? "" : d->dir);
    } else {
        fprintf(stderr, "tillsync: demo: %s\n", d->err[0] ? d->err : "failed");
    }
    remove_dir(d);
    free(d);
    return rc == 0 ? 0 : 1;
}
