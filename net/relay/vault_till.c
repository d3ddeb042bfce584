/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/vault_till.c — the till's side of cloud backup (tillsync/vault.h, docs/BACKUP.md
 * "Cloud backup"): a backup file (tsync_backup) encrypted under a key derived from the shop's
 * data key, uploaded to the relay's vault in 1 MiB chunks, resumable and verified; listing,
 * restoring (download, check, decrypt, then tsync_restore), deleting and keeping the newest N.
 *
 * Design notes
 * - The vault file is the plain backup file's bytes in one libsodium secretstream, behind a
 *   93-byte header in clear (shop id, backup id, origin site, creation time, data-key epoch,
 *   stream header) that is the first chunk's additional data. The key is BLAKE2b-256 keyed with
 *   the epoch's data key over a context, the shop id and the backup id, so every backup has a key
 *   of its own and a till needs nothing but the data key it already holds.
 * - The encrypted file is written once beside the database ("<db>.vault-pending") and uploaded
 *   from there: an interrupted upload is the same bytes next time, so it resumes by asking the
 *   relay which chunks it holds. The pending file goes once the relay committed the backup.
 * - What the relay says (chunk bytes, hashes, the listing) is not trusted: each chunk is checked
 *   against its hash and the whole file against the listed hash (a damaged store is named as
 *   such), then decryption authenticates every byte, and tsync_restore checks the backup again.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "store/trust.h"
#include "tillsync/store.h"
#include "tillsync/vault.h"
#include "util/util.h"

#define CH      TSYNC__VAULT_CHUNK
#define VHDR    93u
#define ABYTES  crypto_secretstream_xchacha20poly1305_ABYTES
#define CONTEXT "tsync-vault-v1"

typedef struct {
    uint8_t shop[16], id[16], origin[16];
    uint64_t created_ms;
    uint32_t epoch;
    uint8_t ss[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
} vhdr;

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void hdr_put(uint8_t b[VHDR], const vhdr *h)
{
    memcpy(b, "TSYNCVLT", 8);
    b[8] = 1;
    memcpy(b + 9, h->shop, 16);
    memcpy(b + 25, h->id, 16);
    memcpy(b + 41, h->origin, 16);
    put_le(b + 57, h->created_ms, 8);
    put_le(b + 65, h->epoch, 4);
    memcpy(b + 69, h->ss, sizeof h->ss);
}

static int hdr_get(const uint8_t *b, size_t n, vhdr *h, const char *name)
{
    if (n < VHDR || memcmp(b, "TSYNCVLT", 8) != 0)
        return tsync__err(TSYNC_ECORRUPT, "%s is not a tillsync vault file", name);
    if (b[8] != 1)
        return tsync__err(TSYNC_EVERSION, "%s is a vault file of format %u; this reads 1", name,
                          b[8]);
    memcpy(h->shop, b + 9, 16);
    memcpy(h->id, b + 25, 16);
    memcpy(h->origin, b + 41, 16);
    h->created_ms = get_le(b + 57, 8);
    h->epoch = (uint32_t)get_le(b + 65, 4);
    memcpy(h->ss, b + 69, sizeof h->ss);
    if (h->epoch == 0) return tsync__err(TSYNC_ECORRUPT, "%s: data-key epoch 0", name);
    return 0;
}

static void derive(uint8_t out[32], const uint8_t dk[32], const vhdr *h)
{
    uint8_t msg[sizeof CONTEXT - 1 + 32];
    memcpy(msg, CONTEXT, sizeof CONTEXT - 1);
    memcpy(msg + sizeof CONTEXT - 1, h->shop, 16);
    memcpy(msg + sizeof CONTEXT - 1 + 16, h->id, 16);
    crypto_generichash(out, 32, msg, sizeof msg, dk, 32);
}

static char *path_with(const char *path, const char *suffix)
{
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

/* The data key of epoch (0: the latest this till holds); *epoch receives it. */
static int data_key(tsync_store *s, uint32_t *epoch, uint8_t key[32])
{
    tsync__held_key *v;
    uint32_t n, latest;
    int rc = tsync__data_keys_held(s, &v, &n, &latest);
    if (rc) return rc;
    if (*epoch)
        rc = tsync__err(TSYNC_ENOTFOUND,
                        "the backup is encrypted under data-key epoch %u, which is not sealed to"
                        " this till",
                        *epoch);
    else
        rc = tsync__err(TSYNC_ENOTFOUND, "no data key of the shop is sealed to this till (the"
                                         " admin issues one: docs/RELAY_KEYS.md)");
    for (uint32_t i = n; i-- > 0;)
        if (!*epoch || v[i].epoch == *epoch) {
            *epoch = v[i].epoch;
            memcpy(key, v[i].key, 32);
            rc = 0;
            break;
        }
    tsync__held_keys_free(v, n);
    return rc;
}

static void entry_of(tsync_vault_entry *e, const tsync__rvbackup *b)
{
    memset(e, 0, sizeof *e);
    sodium_bin2hex(e->id, sizeof e->id, b->id, 16);
    e->created_ms = b->created_ms;
    e->size = b->size;
    e->chunks = (uint32_t)b->nchunks;
    e->epoch = (uint32_t)b->epoch;
    memcpy(e->origin, b->origin, 16);
    memcpy(e->hash, b->hash, 32);
}

/* ro: read-only, so that reading keys and trust records changes no byte of the database (a
 * restore promises that on failure). */
static int open_store(tsync_store **s, const char *db, const tsync_vault_options *o, int ro)
{
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.key_path = o ? o->key_path : NULL;
    so.read_only = ro;
    return tsync_store_open(s, db, &so);
}

static int timeout_of(const tsync_vault_options *o)
{
    return o && o->timeout_ms > 0 ? o->timeout_ms : 10000;
}

static int check_opts(const tsync_vault_options *o)
{
    return o ? tsync__check_version("tsync_vault_options", o->version, TSYNC_VAULT_OPTIONS_VERSION)
             : 0;
}

/* ---------------------------------------------------------------- encrypting */

/* Encrypts the file at plain into a new file out (0600, fsynced, renamed into place). */
static int encrypt_file(const char *plain, const char *out, const vhdr *h0, const uint8_t dk[32])
{
    vhdr h = *h0;
    uint8_t key[32], hb[VHDR];
    crypto_secretstream_xchacha20poly1305_state st;
    derive(key, dk, &h);
    crypto_secretstream_xchacha20poly1305_init_push(&st, h.ss, key);
    sodium_memzero(key, sizeof key);
    hdr_put(hb, &h);
    char *tmp = path_with(out, ".tmp");
    FILE *in = fopen(plain, "rb");
    int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    uint8_t *pt = malloc(CH), *ct = malloc(CH + ABYTES);
    int rc = 0;
    struct stat sb;
    if (!tmp || !pt || !ct) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (!rc && (!in || fstat(fileno(in), &sb) != 0))
        rc = tsync__err(TSYNC_EIO, "cannot read %s: %s", plain, strerror(errno));
    if (!rc && fd < 0) rc = tsync__err(TSYNC_EIO, "cannot create %s: %s", tmp, strerror(errno));
    if (!rc && write(fd, hb, VHDR) != (ssize_t)VHDR)
        rc = tsync__err(TSYNC_EIO, "cannot write %s", tmp);
    uint64_t left = rc ? 0 : (uint64_t)sb.st_size;
    for (int first = 1; !rc && (first || left > 0); first = 0) {
        size_t n = left > CH ? CH : (size_t)left;
        if (fread(pt, 1, n, in) != n) {
            rc = tsync__err(TSYNC_EIO, "cannot read %s", plain);
            break;
        }
        left -= n;
        unsigned long long clen;
        crypto_secretstream_xchacha20poly1305_push(
            &st, ct, &clen, pt, n, first ? hb : NULL, first ? VHDR : 0,
            left ? 0 : crypto_secretstream_xchacha20poly1305_TAG_FINAL);
        if (write(fd, ct, (size_t)clen) != (ssize_t)clen)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (!rc && fsync(fd) != 0) rc = tsync__err(TSYNC_EIO, "cannot sync %s", tmp);
    if (fd >= 0) close(fd);
    if (in) fclose(in);
    if (!rc && rename(tmp, out) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot rename %s: %s", tmp, strerror(errno));
    if (rc && tmp) unlink(tmp);
    free(tmp);
    if (pt) sodium_memzero(pt, CH);
    free(pt);
    free(ct);
    return rc;
}

/* Decrypts the vault file at in_path (header h, checked by the caller) into plain. */
static int decrypt_file(const char *in_path, const char *plain, const vhdr *h, const uint8_t dk[32],
                        const char *name)
{
    uint8_t key[32], hb[VHDR];
    crypto_secretstream_xchacha20poly1305_state st;
    derive(key, dk, h);
    int bad = crypto_secretstream_xchacha20poly1305_init_pull(&st, h->ss, key);
    sodium_memzero(key, sizeof key);
    FILE *in = fopen(in_path, "rb");
    int fd = open(plain, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint8_t *pt = malloc(CH), *ct = malloc(CH + ABYTES + 1);
    int rc = 0;
    if (!pt || !ct) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (!rc && (!in || fd < 0 || fread(hb, 1, VHDR, in) != VHDR))
        rc = tsync__err(TSYNC_EIO, "cannot stage %s: %s", name, strerror(errno));
    if (!rc && bad) rc = tsync__err(TSYNC_ECORRUPT, "%s does not decrypt", name);
    int done = 0;
    for (uint64_t i = 0; !rc && !done; i++) {
        size_t n = fread(ct, 1, CH + ABYTES, in);
        unsigned long long plen;
        unsigned char tag;
        if (n < ABYTES ||
            crypto_secretstream_xchacha20poly1305_pull(&st, pt, &plen, &tag, ct, n,
                                                       i == 0 ? hb : NULL, i == 0 ? VHDR : 0) != 0)
            rc = tsync__err(TSYNC_ECORRUPT,
                            "%s: encrypted chunk %llu does not authenticate (altered, truncated,"
                            " or another shop's)",
                            name, (unsigned long long)i);
        else if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
            done = 1;
        else if (n < CH + ABYTES)
            rc = tsync__err(TSYNC_ECORRUPT, "%s is truncated", name);
        if (!rc && write(fd, pt, (size_t)plen) != (ssize_t)plen)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", plain, strerror(errno));
    }
    if (!rc && fgetc(in) != EOF) rc = tsync__err(TSYNC_ECORRUPT, "%s: data follows its end", name);
    if (fd >= 0) close(fd);
    if (in) fclose(in);
    if (pt) sodium_memzero(pt, CH);
    free(pt);
    free(ct);
    return rc;
}

/* ---------------------------------------------------------------- upload */

/* Size, chunk count and BLAKE2b-256 of the file at path. */
static int file_hash(const char *path, uint64_t *size, uint8_t hash[32])
{
    FILE *f = fopen(path, "rb");
    if (!f) return tsync__err(TSYNC_EIO, "cannot read %s: %s", path, strerror(errno));
    uint8_t *b = malloc(CH);
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, 32);
    *size = 0;
    size_t n;
    while (b && (n = fread(b, 1, CH, f)) > 0) {
        crypto_generichash_update(&h, b, n);
        *size += n;
    }
    int rc = !b          ? tsync__err(TSYNC_ENOMEM, "out of memory")
             : ferror(f) ? tsync__err(TSYNC_EIO, "cannot read %s", path)
                         : 0;
    crypto_generichash_final(&h, hash, 32);
    free(b);
    fclose(f);
    return rc;
}

/* Makes the pending file: a backup, encrypted. */
static int make_pending(tsync_store *s, const char *db, const char *pending, vhdr *h)
{
    uint8_t dk[32];
    uint32_t epoch = 0;
    int rc = data_key(s, &epoch, dk);
    if (rc) return rc;
    if (tsync__trust_enrolled(s, h->shop) != 1) {
        sodium_memzero(dk, sizeof dk);
        return tsync__err(TSYNC_ENOTFOUND, "this database is not enrolled in a shop");
    }
    randombytes_buf(h->id, sizeof h->id);
    memcpy(h->origin, tsync_store_site_id(s), 16);
    h->created_ms = tsync__wall_ms();
    h->epoch = epoch;
    char *plain = path_with(db, ".vault-plain.tmp");
    rc = plain ? tsync_backup(s, plain, NULL, NULL) : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (!rc) rc = encrypt_file(plain, pending, h, dk);
    if (plain) unlink(plain);
    free(plain);
    sodium_memzero(dk, sizeof dk);
    return rc;
}

static int read_pending(const char *pending, vhdr *h)
{
    FILE *f = fopen(pending, "rb");
    if (!f) return TSYNC_ENOTFOUND;
    uint8_t b[VHDR];
    size_t n = fread(b, 1, VHDR, f);
    fclose(f);
    return hdr_get(b, n, h, pending);
}

typedef struct {
    uint8_t *held; /* one byte per chunk */
    uint64_t n;
} held_set;

static int upload(tsync__rclient *c, const char *pending, const vhdr *h,
                  const tsync_vault_options *o, tsync_vault_report *r)
{
    tsync__rvbackup vb = {.created_ms = h->created_ms, .epoch = h->epoch};
    memcpy(vb.id, h->id, 16);
    memcpy(vb.origin, h->origin, 16);
    int rc = file_hash(pending, &vb.size, vb.hash);
    if (rc) return rc;
    vb.nchunks = (vb.size + CH - 1) / CH;
    entry_of(&r->backup, &vb);
    if (vb.nchunks == 0 || vb.nchunks > TSYNC__VAULT_MAX_CHUNKS)
        return tsync__err(TSYNC_EINVAL, "%s: %llu bytes; the vault takes 1 byte to 64 GiB", pending,
                          (unsigned long long)vb.size);
    /* What the relay holds of it already. */
    tsync__rmsg q = {.type = TSYNC__R_VHAVE};
    memcpy(q.backup_id, h->id, 16);
    const tsync__rmsg *a;
    rc = tsync__rclient_call(c, &q, &a);
    if (!rc && a->type != TSYNC__R_VHELD)
        rc = tsync__err(TSYNC_ECORRUPT, "relay %s answered RVHAVE with type %u",
                        tsync__rclient_addr(c), a->type);
    if (rc) return rc;
    uint8_t *held = calloc(vb.nchunks, 1);
    if (!held) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < a->nheld; i++)
        if (a->held[i] < vb.nchunks && !held[a->held[i]]) {
            held[a->held[i]] = 1;
            r->chunks_held++;
        }
    FILE *f = fopen(pending, "rb");
    uint8_t *b = malloc(CH);
    if (!f || !b) rc = tsync__err(TSYNC_EIO, "cannot read %s", pending);
    uint32_t max = o ? o->max_chunks : 0;
    for (uint64_t i = 0; !rc && i < vb.nchunks; i++) {
        if (held[i]) continue;
        if ((max && r->chunks_sent >= max) || (o && o->stop && *o->stop)) {
            free(held);
            free(b);
            fclose(f);
            return 0; /* pending; the next call goes on */
        }
        size_t n = i + 1 < vb.nchunks ? CH : (size_t)(vb.size - i * CH);
        if (fseeko(f, (off_t)(i * CH), SEEK_SET) != 0 || fread(b, 1, n, f) != n) {
            rc = tsync__err(TSYNC_EIO, "cannot read %s", pending);
            break;
        }
        tsync__rmsg p = {.type = TSYNC__R_VPUT, .index = i, .chunk = b, .chunk_len = n};
        memcpy(p.backup_id, h->id, 16);
        crypto_generichash(p.hash, 32, b, n, NULL, 0);
        rc = tsync__rclient_call(c, &p, &a);
        if (!rc && a->type != TSYNC__R_ACK)
            rc = tsync__err(TSYNC_ECORRUPT, "relay %s answered RVPUT with type %u",
                            tsync__rclient_addr(c), a->type);
        if (!rc) r->chunks_sent++;
        if (!rc && o && o->progress)
            o->progress(o->progress_ctx, TSYNC_BACKUP_WRITE,
                        (i + 1) * CH > vb.size ? vb.size : (i + 1) * CH, vb.size);
    }
    free(held);
    free(b);
    if (f) fclose(f);
    if (rc) return rc;
    tsync__rmsg cm = {.type = TSYNC__R_VCOMMIT, .vb = vb};
    rc = tsync__rclient_call(c, &cm, &a);
    if (rc) return rc;
    r->complete = 1;
    unlink(pending);
    return 0;
}

int tsync_vault_backup(const char *db_path, const tsync_vault_options *o, tsync_vault_report *rep)
{
    tsync_vault_report local = TSYNC_VAULT_REPORT_INIT;
    tsync_vault_report *r = rep ? rep : &local;
    if (rep) {
        int rc =
            tsync__check_version("tsync_vault_report", rep->version, TSYNC_VAULT_REPORT_VERSION);
        if (rc) return rc;
        memset((uint8_t *)rep + sizeof rep->version, 0, sizeof *rep - sizeof rep->version);
    }
    if (!db_path) return tsync__err(TSYNC_EINVAL, "no database given");
    int rc = check_opts(o);
    if (rc) return rc;
    tsync_store *s;
    rc = open_store(&s, db_path, o, 0);
    if (rc) return rc;
    char *pending = path_with(db_path, ".vault-pending");
    tsync__rclient *c = NULL;
    vhdr h;
    uint8_t shop[16];
    rc = pending ? tsync__rclient_open(&c, s, timeout_of(o), o ? o->stop : NULL)
                 : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (!rc) {
        memcpy(shop, tsync__rclient_shop(c), 16);
        snprintf(r->relay, sizeof r->relay, "%s", tsync__rclient_addr(c));
        int p = read_pending(pending, &h);
        if (p == 0 && !memcmp(h.shop, shop, 16)) {
            r->resumed = 1;
        } else {
            /* None, unreadable or another shop's (the till was enrolled again): start anew. */
            if (p != TSYNC_ENOTFOUND) unlink(pending);
            rc = make_pending(s, db_path, pending, &h);
        }
    }
    if (!rc) rc = upload(c, pending, &h, o, r);
    if (rc == TSYNC_EFULL) {
        /* Past the quota: the chunks already stored would hold quota for a backup that cannot
         * be finished, and nothing lists them. Drop them and the pending file; the error stays. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tsync_error_last()->message);
        tsync__rmsg d = {.type = TSYNC__R_VDEL};
        memcpy(d.backup_id, h.id, 16);
        const tsync__rmsg *a;
        (void)tsync__rclient_call(c, &d, &a);
        unlink(pending);
        tsync__err(TSYNC_EFULL, "%s", msg);
    }
    tsync__rclient_free(c);
    tsync_store_free(s);
    free(pending);
    return rc;
}

/* ---------------------------------------------------------------- listing, choosing */

static int list_raw(tsync__rclient *c, tsync_vault_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    tsync__rmsg q = {.type = TSYNC__R_VLIST};
    const tsync__rmsg *a;
    int rc = tsync__rclient_call(c, &q, &a);
    if (rc) return rc;
    if (a->type != TSYNC__R_VLISTED)
        return tsync__err(TSYNC_ECORRUPT, "relay %s answered RVLIST with type %u",
                          tsync__rclient_addr(c), a->type);
    if (!a->nbackups) return 0;
    *out = calloc(a->nbackups, sizeof **out);
    if (!*out) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < a->nbackups; i++) entry_of(&(*out)[i], &a->backups[i]);
    *n = a->nbackups;
    return 0;
}

/* The entry `which` names: "latest", an id, or a unique prefix of 8 or more hex digits. */
static int choose(const tsync_vault_entry *v, size_t n, const char *which, size_t *at)
{
    if (!which || !*which) return tsync__err(TSYNC_EINVAL, "no backup named (an id or latest)");
    if (!strcmp(which, "latest")) {
        if (!n) return tsync__err(TSYNC_ENOTFOUND, "the shop has no cloud backup yet");
        *at = n - 1;
        return 0;
    }
    size_t len = strlen(which), found = 0;
    if (len < 8 || len > 32 || strspn(which, "0123456789abcdef") != len)
        return tsync__err(TSYNC_EINVAL,
                          "backup '%s': give an id (8 to 32 lower-case hex digits) or latest",
                          which);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(v[i].id, which, len)) {
            *at = i;
            found++;
        }
    if (!found) return tsync__err(TSYNC_ENOTFOUND, "no cloud backup %s in the shop's vault", which);
    if (found > 1)
        return tsync__err(TSYNC_EINVAL, "backup %s: %zu backups start so; give more digits", which,
                          found);
    return 0;
}

/* Opens store and client: the common start of list, delete, keep and restore. */
static int session(const char *db, const tsync_vault_options *o, tsync_store **s,
                   tsync__rclient **c)
{
    *s = NULL;
    *c = NULL;
    if (!db) return tsync__err(TSYNC_EINVAL, "no database given");
    int rc = check_opts(o);
    if (!rc) rc = open_store(s, db, o, 1);
    if (!rc) rc = tsync__rclient_open(c, *s, timeout_of(o), o ? o->stop : NULL);
    if (rc) {
        tsync_store_free(*s);
        *s = NULL;
    }
    return rc;
}

int tsync_vault_list(const char *db_path, const tsync_vault_options *o, tsync_vault_entry **out,
                     size_t *n)
{
    if (!out || !n) return tsync__err(TSYNC_EINVAL, "nowhere to put the list");
    *out = NULL;
    *n = 0;
    tsync_store *s;
    tsync__rclient *c;
    int rc = session(db_path, o, &s, &c);
    if (!rc) rc = list_raw(c, out, n);
    tsync__rclient_free(c);
    tsync_store_free(s);
    return rc;
}

static int del_one(tsync__rclient *c, const char *idhex)
{
    tsync__rmsg q = {.type = TSYNC__R_VDEL};
    sodium_hex2bin(q.backup_id, 16, idhex, 32, NULL, NULL, NULL);
    const tsync__rmsg *a;
    return tsync__rclient_call(c, &q, &a);
}

int tsync_vault_delete(const char *db_path, const char *which, const tsync_vault_options *o)
{
    tsync_store *s;
    tsync__rclient *c;
    tsync_vault_entry *v = NULL;
    size_t n = 0, at = 0;
    int rc = session(db_path, o, &s, &c);
    if (!rc) rc = list_raw(c, &v, &n);
    if (!rc && which && !strcmp(which, "latest"))
        rc = tsync__err(TSYNC_EINVAL, "delete names one backup by its id, not latest");
    if (!rc) rc = choose(v, n, which, &at);
    if (!rc) rc = del_one(c, v[at].id);
    free(v);
    tsync__rclient_free(c);
    tsync_store_free(s);
    return rc;
}

int tsync_vault_keep(const char *db_path, uint32_t keep, const tsync_vault_options *o,
                     uint32_t *deleted)
{
    if (deleted) *deleted = 0;
    if (keep == 0) return tsync__err(TSYNC_EINVAL, "keep at least one backup");
    tsync_store *s;
    tsync__rclient *c;
    tsync_vault_entry *v = NULL;
    size_t n = 0;
    int rc = session(db_path, o, &s, &c);
    if (!rc) rc = list_raw(c, &v, &n);
    uint32_t mine = 0;
    /* Newest first: the first `keep` of this till's stay. */
    for (size_t i = n; !rc && i-- > 0;) {
        if (memcmp(v[i].origin, tsync_store_site_id(s), 16) != 0) continue;
        if (++mine <= keep) continue;
        rc = del_one(c, v[i].id);
        if (!rc && deleted) (*deleted)++;
    }
    free(v);
    tsync__rclient_free(c);
    tsync_store_free(s);
    return rc;
}

/* ---------------------------------------------------------------- restore */

/* Downloads e into the file at path, checking each chunk and the whole file. */
static int download(tsync__rclient *c, const tsync_vault_entry *e, const char *path,
                    const tsync_vault_options *o)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return tsync__err(TSYNC_EIO, "cannot create %s: %s", path, strerror(errno));
    crypto_generichash_state fh;
    crypto_generichash_init(&fh, NULL, 0, 32);
    int rc = 0;
    for (uint64_t i = 0; !rc && i < e->chunks; i++) {
        tsync__rmsg q = {.type = TSYNC__R_VGET, .index = i};
        sodium_hex2bin(q.backup_id, 16, e->id, 32, NULL, NULL, NULL);
        const tsync__rmsg *a;
        rc = tsync__rclient_call(c, &q, &a);
        if (rc) break;
        size_t want = i + 1 < e->chunks ? CH : (size_t)(e->size - i * CH);
        uint8_t h[32];
        if (a->type == TSYNC__R_VCHUNK) crypto_generichash(h, 32, a->chunk, a->chunk_len, NULL, 0);
        if (a->type != TSYNC__R_VCHUNK || a->index != i ||
            memcmp(a->backup_id, q.backup_id, 16) != 0 || a->chunk_len != want)
            rc =
                tsync__err(TSYNC_ECORRUPT, "cloud backup %s: relay %s sent another chunk than %llu",
                           e->id, tsync__rclient_addr(c), (unsigned long long)i);
        else if (sodium_memcmp(h, a->hash, 32) != 0)
            rc = tsync__err(TSYNC_ECORRUPT,
                            "cloud backup %s: chunk %llu does not match its hash (damaged in the"
                            " relay's store): nothing was restored",
                            e->id, (unsigned long long)i);
        else if (write(fd, a->chunk, a->chunk_len) != (ssize_t)a->chunk_len)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", path, strerror(errno));
        if (!rc) crypto_generichash_update(&fh, a->chunk, a->chunk_len);
        if (!rc && o && o->progress)
            o->progress(o->progress_ctx, TSYNC_BACKUP_READ, i * CH + a->chunk_len, e->size);
    }
    uint8_t got[32];
    crypto_generichash_final(&fh, got, 32);
    if (!rc && sodium_memcmp(got, e->hash, 32) != 0)
        rc = tsync__err(TSYNC_ECORRUPT,
                        "cloud backup %s: the file does not match its hash: nothing was restored",
                        e->id);
    if (!rc && fsync(fd) != 0) rc = tsync__err(TSYNC_EIO, "cannot sync %s", path);
    close(fd);
    return rc;
}

/* A temporary name beside db (mkstemp; the file exists, empty). */
static char *temp_beside(const char *db, const char *what)
{
    char *p = path_with(db, what);
    if (!p) return NULL;
    int fd = mkstemp(p);
    if (fd < 0) {
        free(p);
        return NULL;
    }
    close(fd);
    return p;
}

int tsync_vault_restore(const char *db_path, const char *which, const tsync_vault_options *o,
                        tsync_restore_report *report)
{
    tsync_store *s;
    tsync__rclient *c;
    tsync_vault_entry *v = NULL;
    size_t n = 0, at = 0;
    int rc = session(db_path, o, &s, &c);
    if (!rc) rc = list_raw(c, &v, &n);
    if (!rc) rc = choose(v, n, which, &at);
    char *enc = NULL, *plain = NULL;
    if (!rc) {
        enc = temp_beside(db_path, ".vault-dl-XXXXXX");
        plain = temp_beside(db_path, ".vault-plain-XXXXXX");
        if (!enc || !plain)
            rc = tsync__err(TSYNC_EIO, "cannot stage a download beside %s", db_path);
    }
    if (!rc) rc = download(c, &v[at], enc, o);
    /* The header: this shop's, this backup, an epoch this till holds. */
    vhdr h;
    uint8_t dk[32], shop[16];
    if (!rc) rc = read_pending(enc, &h);
    if (!rc && (tsync__trust_enrolled(s, shop) != 1 || memcmp(h.shop, shop, 16) != 0))
        rc = tsync__err(TSYNC_ECORRUPT, "cloud backup %s is not of this till's shop", v[at].id);
    if (!rc) {
        char idh[33];
        sodium_bin2hex(idh, sizeof idh, h.id, 16);
        if (strcmp(idh, v[at].id) != 0)
            rc = tsync__err(TSYNC_ECORRUPT, "cloud backup %s holds another backup (%s)", v[at].id,
                            idh);
    }
    uint32_t epoch = h.epoch;
    if (!rc) rc = data_key(s, &epoch, dk);
    if (!rc) {
        char name[64];
        snprintf(name, sizeof name, "cloud backup %.32s", v[at].id);
        rc = decrypt_file(enc, plain, &h, dk, name);
        sodium_memzero(dk, sizeof dk);
    }
    /* The till's trust records, put back after the restore. */
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    if (!rc) rc = tsync__trust_export(s, &blobs, &lens, &nb);
    tsync__rclient_free(c);
    tsync_store_free(s);
    if (enc) unlink(enc);
    if (!rc) {
        tsync_restore_options ro = TSYNC_RESTORE_OPTIONS_INIT;
        ro.key_path = o ? o->key_path : NULL;
        ro.progress = o ? o->progress : NULL;
        ro.progress_ctx = o ? o->progress_ctx : NULL;
        rc = tsync_restore(db_path, plain, &ro, report);
    }
    if (!rc && nb) {
        rc = open_store(&s, db_path, o, 0);
        char err[TSYNC__ERRLEN];
        for (size_t i = 0; !rc && i < nb; i++)
            if (tsync__trust_import(s, blobs[i], lens[i], err) == TSYNC_EIO)
                rc = tsync__err(TSYNC_EIO, "restored, but the till's trust records: %s", err);
        tsync_store_free(rc ? NULL : s);
    }
    if (blobs) tsync__trust_export_free(blobs, lens, nb);
    if (plain) unlink(plain);
    free(enc);
    free(plain);
    free(v);
    return rc;
}
