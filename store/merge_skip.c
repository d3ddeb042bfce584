/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/merge_skip.c — which row changes of a bundle file a merge may leave out because a later
 * change of the same row in the same file supersedes them (store/merge_int.h). The first pass of
 * tsync_store_merge_file (store/bundle_read.c), which reads every batch anyway, builds a summary;
 * the second pass asks it for every row change before folding it (store/merge_apply.c).
 *
 * Design notes
 * - Why: the file merges in slices, each its own transaction, so a row updated in ten rounds was
 *   written eleven times (a 1M-row shop after ten update rounds: 48 s, twice the old in-memory
 *   fold). With the summary it is written about twice: its first change and its last.
 * - What may be left out (exactly, never "probably"): a change e of row R by site S is skipped
 *   when, in this file, only S changes R, and e lies strictly inside a chain e_s .. e_n of S's
 *   changes to R where each is a plain insert-or-update (ROW_ADD, no removals, no counters), the
 *   links after e_s write the same columns (e_s may write more: an insert, then price updates),
 *   each link's overwritten clock (old_hlc, old_site) is the previous link's
 *   (hlc, S), and the clocks increase; and the chain start e_s was applied in this merge and won
 *   every one of its columns. Then, at every link, both the full fold and the skipping one show a
 *   link of this chain no newer than the next link's old clock: no link records a conflict
 *   (record iff old < current), every link wins, and e_n leaves the same values, clocks and
 *   existence (the OR-set keeps each site's highest add) either way. The conflict journal, the
 *   rows and the clocks are those of the unskipped merge; parked changes too (a skipped change has
 *   every column here).
 * - Keys are kept whole (no hash decides anything) in a table with a memory budget
 *   (TSYNC__MERGE_SKIP_BYTES, ~40 bytes a row at short keys): rows met once it is full are not
 *   tracked, and merge as before.
 * - The proof needs every batch of the file to apply in this merge, in each site's order, with
 *   nothing else writing the rows between. Skipping is off when anything could hold or refuse
 *   a batch: an enrolled database or trust records in the file, held batches already waiting, a
 *   gap or a fork against our log, a dependency neither here nor in the file, a clock too far
 *   ahead, a frozen or revoked site, our own batches beyond our head; and from the moment a batch
 *   the summary counted turns out to be here already (another merge ran between two slices).
 *   Changes skipped before that moment are superseded by changes that apply all the same.
 */
#include <stdlib.h>
#include <string.h>

#include "merge_int.h"
#include "store/trust.h"

size_t tsync__merge_skip_bytes = TSYNC__MERGE_SKIP_BYTES;
size_t tsync__merge_skipped_total;

enum { F_BROKEN = 1, F_CHAIN = 2, F_WON = 4, F_LINKED = 8 };
#define NONE   0xffu
#define MAXN   250u /* changes of one row counted (more: not tracked) */
#define MAXSIT 250u

typedef struct {
    uint32_t koff;    /* the key at keys + koff: [len][table][encoded key]; 0: empty slot */
    uint8_t site;     /* the only site changing it, NONE: not yet */
    uint8_t mask;     /* the chain's column set (index in masks): its start's until linked */
    uint8_t start, n; /* the chain start's ordinal, the changes counted */
    uint8_t seen;     /* pass 2: changes met */
    uint8_t flags;
    uint16_t tag; /* bits of the key's hash: most probes then never read the key */
} sslot;

typedef struct {
    uint8_t id[TSYNC__SITE_BYTES];
    uint64_t head, next, need; /* our seq of it, the next seq the file must bring, deps on it */
    uint8_t hash[TSYNC__HASH_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    int in_file, local, has_pk;
} ssite;

struct tsync__mskip {
    tsync_store *s;
    sslot *slot;
    tsync__hlc *last; /* pass 1, by slot: the clock of the row's last change (freed after) */
    size_t cap, used;
    uint8_t *keys;
    size_t klen, kcap;
    int full, off;
    ssite site[MAXSIT];
    unsigned nsite;
    uint64_t mask[255];
    unsigned nmask;
    int tbl[255];
    unsigned ntbl;
    uint64_t now_ms;
    size_t skipped;
};

static uint64_t key_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ull;
    /* FNV's low bits see only the low bits of the bytes: mix (murmur3's finalizer), since the
     * table is indexed by them and keys differ in their last characters. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

int tsync__mskip_new(tsync__mskip **out, tsync_store *s)
{
    tsync__mskip *k = calloc(1, sizeof *k);
    if (!k) return tsync__err(TSYNC_ENOMEM, "out of memory");
    k->s = s;
    k->now_ms = tsync__ref_now_ms(s);
    k->cap = 64;
    k->slot = calloc(k->cap, sizeof *k->slot);
    k->last = calloc(k->cap, sizeof *k->last);
    k->kcap = 4096;
    k->keys = malloc(k->kcap);
    k->klen = 1; /* offset 0 means empty */
    if (!k->slot || !k->last || !k->keys) {
        tsync__mskip_free(k);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    int en = tsync__trust_enrolled(s, NULL);
    if (en < 0) {
        tsync__mskip_free(k);
        return en;
    }
    if (en || !tsync__merge_skip_bytes) k->off = 1;
    /* cached statements (tsync__prep): a merge of one small bundle runs these too */
    sqlite3_stmt *st = tsync__prep(s, "SELECT 1 FROM tsync_held LIMIT 1");
    if (!st) {
        tsync__mskip_free(k);
        return TSYNC_EIO;
    }
    if (sqlite3_step(st) != SQLITE_DONE) k->off = 1;
    sqlite3_reset(st);
    *out = k;
    return 0;
}

void tsync__mskip_free(tsync__mskip *k)
{
    if (!k) return;
    tsync__merge_skipped_total += k->skipped;
    free(k->slot);
    free(k->last);
    free(k->keys);
    free(k);
}

void tsync__mskip_disable(tsync__mskip *k)
{
    if (k) k->off = 1;
}

int tsync__mskip_active(const tsync__mskip *k)
{
    return k && !k->off;
}

size_t tsync__mskip_kept_bytes(const tsync__mskip *k)
{
    return k && !k->off ? k->cap * sizeof(sslot) + k->klen : 0;
}

size_t tsync__mskip_skipped(const tsync__mskip *k)
{
    return k ? k->skipped : 0;
}

/* The site record of id (added with its head here when new); NULL when there are too many. */
static ssite *site_of(tsync__mskip *k, const uint8_t id[TSYNC__SITE_BYTES], int *rc)
{
    *rc = 0;
    for (unsigned i = 0; i < k->nsite; i++)
        if (memcmp(k->site[i].id, id, TSYNC__SITE_BYTES) == 0) return &k->site[i];
    if (k->nsite == MAXSIT) return NULL;
    ssite *m = &k->site[k->nsite];
    memset(m, 0, sizeof *m);
    memcpy(m->id, id, TSYNC__SITE_BYTES);
    sqlite3_stmt *st =
        tsync__prep(k->s, "SELECT idx, seq, hash, frozen_seq, pk FROM tsync_sites WHERE site=?1");
    if (!st) {
        *rc = TSYNC_EIO;
        return NULL;
    }
    sqlite3_bind_blob(st, 1, id, TSYNC__SITE_BYTES, SQLITE_STATIC);
    int rows = 0, x;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        m->head = (uint64_t)sqlite3_column_int64(st, 1);
        if (sqlite3_column_bytes(st, 2) == TSYNC__HASH_BYTES)
            memcpy(m->hash, sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) k->off = 1; /* frozen after a fork */
        if ((uint32_t)sqlite3_column_int64(st, 0) == k->s->local_idx) m->local = 1;
        m->has_pk = sqlite3_column_bytes(st, 4) == TSYNC__PK_BYTES;
        if (m->has_pk) memcpy(m->pk, sqlite3_column_blob(st, 4), TSYNC__PK_BYTES);
    }
    sqlite3_reset(st);
    if (x != SQLITE_DONE) {
        *rc = tsync__err_sqlite(k->s->db, x, "read sites");
        return NULL;
    }
    if (rows > 1) k->off = 1; /* one id under two entries: not worth reasoning about */
    m->next = m->head + 1;
    k->nsite++;
    return m;
}

static int table_idx(tsync__mskip *k, int id)
{
    for (unsigned i = 0; i < k->ntbl; i++)
        if (k->tbl[i] == id) return (int)i;
    if (k->ntbl == 255) return -1;
    k->tbl[k->ntbl] = id;
    return (int)k->ntbl++;
}

static int mask_idx(tsync__mskip *k, uint64_t mask, int add)
{
    for (unsigned i = 0; i < k->nmask; i++)
        if (k->mask[i] == mask) return (int)i;
    if (!add || k->nmask == 255) return -1;
    k->mask[k->nmask] = mask;
    return (int)k->nmask++;
}

/* The summary key of a row: [len][table][encoded key]; 0 when it does not fit. */
static size_t make_key(tsync__mskip *k, const tsync__table *t, const tsync__val *pk,
                       uint8_t buf[258], int add)
{
    size_t n = tsync__key_size(pk, t->npk);
    if (n > 250) return 0;
    int ti = add ? table_idx(k, t->id) : -1;
    if (!add)
        for (unsigned i = 0; i < k->ntbl; i++)
            if (k->tbl[i] == t->id) ti = (int)i;
    if (ti < 0) return 0;
    buf[0] = (uint8_t)(n + 1);
    buf[1] = (uint8_t)ti;
    tsync__key_encode(pk, t->npk, buf + 2);
    return n + 2;
}

static int grow(tsync__mskip *k)
{
    size_t nc = k->cap * 2;
    /* The budget is what stays for pass 2 (the slots and the keys written; the clocks of pass 1
     * are freed before it begins, and a reservation not written takes no memory). */
    if (k->last == NULL || nc * sizeof(sslot) + k->klen > tsync__merge_skip_bytes) {
        k->full = 1;
        return 0;
    }
    /* In two steps, the slots then the clocks, so the old and new of both never coexist: the
     * growth is pass 1's peak of memory. */
    sslot *ns = calloc(nc, sizeof *ns);
    uint32_t *to = malloc(k->cap * sizeof *to);
    if (!ns || !to) {
        free(ns);
        free(to);
        k->full = 1; /* merging without the summary's help is still right */
        return 0;
    }
    for (size_t i = 0; i < k->cap; i++) {
        to[i] = UINT32_MAX;
        if (!k->slot[i].koff) continue;
        const uint8_t *key = k->keys + k->slot[i].koff;
        size_t j = key_hash(key, (size_t)key[0] + 1) & (nc - 1);
        while (ns[j].koff) j = (j + 1) & (nc - 1);
        ns[j] = k->slot[i];
        to[i] = (uint32_t)j;
    }
    free(k->slot);
    k->slot = ns;
    tsync__hlc *nl = calloc(nc, sizeof *nl);
    if (nl)
        for (size_t i = 0; i < k->cap; i++)
            if (to[i] != UINT32_MAX) nl[to[i]] = k->last[i];
    free(to);
    free(k->last);
    k->last = nl;
    if (!nl) k->off = 1; /* the clocks are lost: no chain can be proved */
    k->cap = nc;
    return 0;
}

/* The slot of key (added when add and there is room); NULL when absent. */
static sslot *find(tsync__mskip *k, const uint8_t *key, size_t n, int add)
{
    if (add && !k->full && (k->used + 1) * 8 >= k->cap * 7) grow(k);
    uint64_t h = key_hash(key, n);
    uint16_t tag = (uint16_t)(h >> 48);
    size_t j = h & (k->cap - 1);
    while (k->slot[j].koff) {
        const uint8_t *o = k->keys + k->slot[j].koff;
        if (k->slot[j].tag == tag && o[0] + 1u == n && memcmp(o, key, n) == 0) return &k->slot[j];
        j = (j + 1) & (k->cap - 1);
    }
    if (!add || k->full || (k->used + 1) * 8 >= k->cap * 7) return NULL;
    if (k->klen + n > k->kcap) {
        size_t nk = k->kcap * 2;
        if (nk > UINT32_MAX || k->klen + n + k->cap * sizeof(sslot) > tsync__merge_skip_bytes) {
            k->full = 1;
            return NULL;
        }
        uint8_t *p = realloc(k->keys, nk);
        if (!p) {
            k->full = 1;
            return NULL;
        }
        k->keys = p;
        k->kcap = nk;
    }
    memcpy(k->keys + k->klen, key, n);
    sslot *sl = &k->slot[j];
    memset(sl, 0, sizeof *sl);
    sl->koff = (uint32_t)k->klen;
    sl->tag = tag;
    sl->site = NONE;
    sl->mask = NONE;
    k->klen += n;
    k->used++;
    return sl;
}

/* The column set of change br of table bt (local columns), or 0 when it is not an
 * insert-or-update of columns this database has as plain columns (link: and nothing else). */
static uint64_t plain_mask(const tsync__table *t, const tsync__btable *bt, const tsync__brow *br,
                           int link)
{
    /* A link is only that; a chain start is applied, so it may also count and remove. */
    if (link ? br->flags != TSYNC__ROW_ADD || br->nrmv || br->nctrs
             : !(br->flags & TSYNC__ROW_ADD) || (br->flags & TSYNC__ROW_DEL))
        return 0;
    if (!br->ncols) return 0;
    uint64_t m = 0;
    for (uint32_t i = 0; i < br->ncols; i++) {
        uint32_t bc = br->cols[i].col;
        int col = tsync__col_by_name(t, bt->cols[bc], bt->col_len[bc]);
        if (col < 0 || t->is_counter[col]) return 0;
        m |= 1ull << col;
    }
    return m;
}

int tsync__mskip_batch(tsync__mskip *k, const tsync__batch *b,
                       const uint8_t prev[TSYNC__HASH_BYTES], const uint8_t pk[TSYNC__PK_BYTES])
{
    if (k->off) return 0;
    int rc;
    ssite *o = site_of(k, b->origin, &rc);
    if (rc) return rc;
    if (!o) return k->off = 1, 0;
    if (!o->has_pk) {
        /* a site new here: the key its run is signed with, as the merge looks it up */
        memcpy(o->pk, pk, TSYNC__PK_BYTES);
        o->has_pk = 1;
    }
    if (o->local) {
        /* our own batches come back as duplicates; beyond our head, this database went back */
        if (b->seq > o->head) k->off = 1;
        return 0;
    }
    if (b->seq <= o->head) return 0; /* here already: not applied again */
    if (b->seq != o->next) return k->off = 1, 0;
    if (b->seq == o->head + 1 && memcmp(prev, o->hash, TSYNC__HASH_BYTES) != 0)
        return k->off = 1, 0; /* a fork: its own machinery */
    o->next++;
    o->in_file = 1;
    if (tsync__hlc_too_far(b->hlc_hi, k->now_ms, k->s->skew_bound_ms)) return k->off = 1, 0;
    for (uint32_t d = 0; d < b->ndeps; d++) {
        ssite *ds = site_of(k, b->sites[b->deps[d].site], &rc);
        if (rc) return rc;
        if (!ds) return k->off = 1, 0;
        if (b->deps[d].seq > ds->need) ds->need = b->deps[d].seq;
    }
    uint8_t si = (uint8_t)(o - k->site);
    for (uint32_t ri = 0; ri < b->nrows; ri++) {
        const tsync__brow *br = &b->rows[ri];
        const tsync__btable *bt = &b->tables[br->table];
        tsync__table *t = tsync__table_by_name(k->s, bt->name, bt->name_len);
        if (!t || (int)bt->npk != t->npk) continue; /* parked: never skipped */
        uint8_t key[258];
        size_t n = make_key(k, t, br->pk, key, 1);
        if (!n) continue;
        sslot *sl = find(k, key, n, 1);
        if (!sl) continue; /* the summary is full: this row merges as before */
        if (sl->flags & F_BROKEN) continue;
        tsync__hlc *lastp = &k->last[sl - k->slot], last = *lastp;
        if ((sl->site != NONE && sl->site != si) || sl->n >= MAXN || (sl->n && br->hlc <= last)) {
            sl->flags = F_BROKEN;
            continue;
        }
        sl->site = si;
        uint64_t m = plain_mask(t, bt, br, 1), ms = plain_mask(t, bt, br, 0);
        int mi = m ? mask_idx(k, m, 1) : -1, msi = ms ? mask_idx(k, ms, 1) : -1;
        /* The links after the start write the same columns, the start may write more (an insert
         * followed by price updates). */
        int links = sl->n && (sl->flags & F_CHAIN) && mi >= 0 &&
                    (sl->flags & F_LINKED ? mi == sl->mask : (m & ~k->mask[sl->mask]) == 0);
        for (uint32_t c = 0; links && c < br->ncols; c++) {
            const tsync__bcol *bc = &br->cols[c];
            links = bc->old_hlc == last &&
                    memcmp(b->sites[bc->old_site], b->origin, TSYNC__SITE_BYTES) == 0;
        }
        if (links) {
            sl->flags |= F_LINKED;
            sl->mask = (uint8_t)mi;
        } else {
            if (msi >= 0) {
                sl->flags = F_CHAIN;
                sl->start = sl->n;
                sl->mask = (uint8_t)msi;
            } else {
                sl->flags = 0;
            }
        }
        *lastp = br->hlc;
        sl->n++;
    }
    return 0;
}

/* Whether pass 2 can leave out a change of the row: its chain holds changes strictly between its
 * start and its last (tsync__mskip_row). */
static int useful(const sslot *sl)
{
    return sl->koff && (sl->flags & (F_BROKEN | F_CHAIN)) == F_CHAIN && sl->n >= sl->start + 3u;
}

/* After pass 1, only the rows with a change to leave out stay: pass 2 then looks every change up
 * in a sparser table (a miss in a table filled to 7/8 probes ~30 slots), and a file whose rows
 * change at most twice (new rows: an insert and an update) drops the summary whole, with its
 * lookups and its claim on the fold's memory (TSYNC__MERGE_SKIP_BIG). */
static void compact(tsync__mskip *k)
{
    size_t keep = 0, kbytes = 1;
    for (size_t i = 0; i < k->cap; i++)
        if (useful(&k->slot[i])) {
            keep++;
            kbytes += k->keys[k->slot[i].koff] + 1u;
        }
    if (!keep) {
        free(k->slot);
        free(k->keys);
        k->slot = NULL;
        k->keys = NULL;
        k->cap = k->used = k->klen = k->kcap = 0;
        k->off = 1;
        return;
    }
    if (keep * 2 > k->used) return; /* most stay: a rebuild would save little */
    size_t nc = 64;
    while (nc < keep * 2) nc *= 2;
    sslot *ns = calloc(nc, sizeof *ns);
    uint8_t *nk = malloc(kbytes);
    if (!ns || !nk) { /* the summary as it is still answers right */
        free(ns);
        free(nk);
        return;
    }
    size_t klen = 1;
    for (size_t i = 0; i < k->cap; i++) {
        if (!useful(&k->slot[i])) continue;
        const uint8_t *key = k->keys + k->slot[i].koff;
        size_t n = (size_t)key[0] + 1;
        size_t j = key_hash(key, n) & (nc - 1);
        while (ns[j].koff) j = (j + 1) & (nc - 1);
        ns[j] = k->slot[i];
        ns[j].koff = (uint32_t)klen;
        memcpy(nk + klen, key, n);
        klen += n;
    }
    free(k->slot);
    free(k->keys);
    k->slot = ns;
    k->keys = nk;
    k->cap = nc;
    k->used = keep;
    k->klen = k->kcap = klen;
    k->full = 1; /* pass 2 adds nothing */
}

int tsync__mskip_end(tsync__mskip *k)
{
    free(k->last);
    k->last = NULL;
    if (k->off) return 0;
    for (unsigned i = 0; i < k->nsite; i++) {
        ssite *m = &k->site[i];
        uint64_t have = m->next - 1; /* our head, or the last the file brings */
        if (m->need > have) k->off = 1;
        if (!m->in_file) continue;
        /* a revoked device's batches may be refused */
        int has = m->has_pk;
        const uint8_t *pk = m->pk;
        if (has) {
            uint64_t cut;
            int rv = tsync__trust_cutoff(k->s, pk, m->id, &cut);
            if (rv < 0) return rv;
            if (rv == 1) k->off = 1;
        }
    }
    if (!k->off) compact(k);
    return 0;
}

int tsync__mskip_recheck(tsync__mskip *k)
{
    /* The heads the summary counted from must still be ours when the merge begins. */
    for (unsigned i = 0; !k->off && i < k->nsite; i++) {
        sqlite3_stmt *st = tsync__prep(k->s, "SELECT seq FROM tsync_sites WHERE site=?1");
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 1, k->site[i].id, TSYNC__SITE_BYTES, SQLITE_STATIC);
        uint64_t head = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
        if (head != k->site[i].head) k->off = 1;
    }
    return 0;
}

int tsync__mskip_site(const tsync__mskip *k, const uint8_t id[TSYNC__SITE_BYTES])
{
    if (!k || k->off) return -1;
    for (unsigned i = 0; i < k->nsite; i++)
        if (memcmp(k->site[i].id, id, TSYNC__SITE_BYTES) == 0)
            return k->site[i].in_file ? (int)i : -1;
    return -1;
}

void tsync__mskip_dup(tsync__mskip *k, const uint8_t id[TSYNC__SITE_BYTES], uint64_t seq)
{
    int si = tsync__mskip_site(k, id);
    if (si >= 0 && seq > k->site[si].head) k->off = 1;
}

int tsync__mskip_row(tsync__mskip *k, int si, const tsync__table *t, const tsync__btable *bt,
                     const tsync__brow *br, void **start)
{
    *start = NULL;
    if (si < 0 || k->off) return 0;
    uint8_t key[258];
    size_t n = make_key(k, t, br->pk, key, 0);
    if (!n) return 0;
    sslot *sl = find(k, key, n, 0);
    if (!sl) return 0;
    unsigned ord = sl->seen++;
    if ((sl->flags & (F_BROKEN | F_CHAIN)) != F_CHAIN || sl->site != (unsigned)si) return 0;
    if (ord == sl->start) {
        *start = sl; /* the caller says whether it won (tsync__mskip_won) */
        return 0;
    }
    if (ord <= sl->start || ord + 1 >= sl->n || !(sl->flags & F_WON)) return 0;
    uint64_t m = plain_mask(t, bt, br, 1);
    if (!m || mask_idx(k, m, 0) != sl->mask) return 0;
    k->skipped++;
    return 1;
}

void tsync__mskip_won(tsync__mskip *k, void *start)
{
    (void)k;
    ((sslot *)start)->flags |= F_WON;
}

uint64_t tsync__mskip_mask(const tsync__mskip *k, void *start)
{
    return k->mask[((sslot *)start)->mask];
}
