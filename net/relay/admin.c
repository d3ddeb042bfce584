/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/admin.c — a relay's directory without a running relay: making it (key and store),
 * its public key, admitting a shop, and the status report (tillsync relay init|admit|status).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay_int.h"
#include "store/relay_store.h"
#include "tillsync/relay.h"
#include "util/util.h"

static const char MAGIC[8] = {'T', 'S', 'Y', 'N', 'C', 'R', 'L', 'Y'};

static void key_path(const char *dir, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", dir, TSYNC__RELAY_KEY_FILE);
}

int tsync__relay_key_load(const char *dir, uint8_t sk[64])
{
    char path[4096];
    key_path(dir, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? tsync__err(TSYNC_ENOTFOUND,
                                            "%s: no relay here (tillsync relay init %s)", path, dir)
                               : tsync__err(TSYNC_EIO, "%s: %s", path, strerror(errno));
    uint8_t b[TSYNC__RELAY_KEY_BYTES + 1];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    uint8_t h[32], pk[32];
    if (n != TSYNC__RELAY_KEY_BYTES || memcmp(b, MAGIC, 8) != 0)
        return tsync__err(TSYNC_ECORRUPT, "%s: not a relay key file", path);
    if (b[8] != 1) return tsync__err(TSYNC_ECORRUPT, "%s: key file version %u", path, b[8]);
    crypto_generichash(h, 32, b, 73, NULL, 0);
    crypto_sign_ed25519_sk_to_pk(pk, b + 9);
    uint8_t again[64];
    crypto_sign_seed_keypair(pk, again, b + 9);
    int bad = sodium_memcmp(h, b + 73, 32) != 0 || sodium_memcmp(again, b + 9, 64) != 0;
    if (!bad) memcpy(sk, b + 9, 64);
    sodium_memzero(b, sizeof b);
    sodium_memzero(again, sizeof again);
    if (bad) return tsync__err(TSYNC_ECORRUPT, "%s: damaged (checksum or key)", path);
    return 0;
}

int tsync_relay_public_key(const char *dir, char pk_hex[65])
{
    uint8_t sk[64];
    int rc = tsync__relay_key_load(dir, sk);
    if (rc) return rc;
    sodium_bin2hex(pk_hex, 65, sk + 32, 32);
    sodium_memzero(sk, sizeof sk);
    return 0;
}

int tsync_relay_init(const char *dir, char pk_hex[65])
{
    if (!dir || !*dir) return tsync__err(TSYNC_EINVAL, "relay init: no directory");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return tsync__err(TSYNC_EIO, "%s: %s", dir, strerror(errno));
    char path[4096];
    key_path(dir, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return errno == EEXIST ? tsync__err(TSYNC_EEXISTS, "%s: a relay is here already", path)
                               : tsync__err(TSYNC_EIO, "%s: %s", path, strerror(errno));
    uint8_t b[TSYNC__RELAY_KEY_BYTES], pk[32];
    memcpy(b, MAGIC, 8);
    b[8] = 1;
    crypto_sign_keypair(pk, b + 9);
    crypto_generichash(b + 73, 32, b, 73, NULL, 0);
    ssize_t w = write(fd, b, sizeof b);
    int ok = w == (ssize_t)sizeof b && fsync(fd) == 0;
    int e = errno;
    close(fd);
    sodium_memzero(b, sizeof b);
    if (!ok) {
        unlink(path);
        return tsync__err(TSYNC_EIO, "%s: %s", path, strerror(e));
    }
    tsync__rstore *st;
    int rc = tsync__rstore_sqlite_open(&st, dir, 1, 0);
    if (rc) {
        unlink(path);
        return rc;
    }
    st->ops->close(st);
    if (pk_hex) sodium_bin2hex(pk_hex, 65, pk, 32);
    return 0;
}

int tsync_relay_admit(const char *dir, const uint8_t admin_pk[32], uint64_t quota_mb,
                      uint64_t expires_ms)
{
    return tsync_relay_admit_store(dir, NULL, admin_pk, quota_mb, expires_ms);
}

int tsync_relay_admit_store(const char *dir, const char *store_url, const uint8_t admin_pk[32],
                            uint64_t quota_mb, uint64_t expires_ms)
{
    uint8_t curve[32];
    if (!admin_pk || crypto_sign_ed25519_pk_to_curve25519(curve, admin_pk) != 0)
        return tsync__err(TSYNC_EINVAL, "relay admit: not a valid admin public key");
    if (quota_mb == 0 || quota_mb > (UINT64_C(1) << 40))
        return tsync__err(TSYNC_EINVAL, "relay admit: quota must be 1 MiB to 2^40 MiB");
    uint8_t sk[64];
    int rc = tsync__relay_key_load(dir, sk); /* a relay directory, not any folder */
    sodium_memzero(sk, sizeof sk);
    if (rc) return rc;
    tsync__rstore *st;
    rc = tsync__rstore_open(&st, dir, store_url, 0, 0);
    if (rc) return rc;
    rc = st->ops->admit(st, admin_pk, quota_mb << 20, expires_ms, tsync__wall_ms());
    st->ops->close(st);
    return rc;
}

typedef struct {
    json_t *shops, *refused, *root;
} status_ctx;

static json_t *hexj(const uint8_t *p, size_t n)
{
    char h[65];
    sodium_bin2hex(h, sizeof h, p, n);
    return json_string(h);
}

static int st_shop(void *ctx, const tsync__rshop *s)
{
    status_ctx *c = ctx;
    json_t *o =
        json_pack("{s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I}", "admin_key", hexj(s->admin_pk, 32),
                  "shop_id", s->has_shop_id ? hexj(s->shop_id, 16) : json_null(), "quota_bytes",
                  (json_int_t)s->quota_bytes, "expires", (json_int_t)s->expires_ms, "admitted",
                  (json_int_t)s->admitted_ms, "bytes", (json_int_t)s->bytes, "envelopes",
                  (json_int_t)s->envelopes, "revocations", (json_int_t)s->revocations);
    if (!o || json_array_append_new(c->shops, o)) return TSYNC_ENOMEM;
    return 0;
}

static int st_counter(void *ctx, const char *name, int64_t n)
{
    status_ctx *c = ctx;
    if (!strncmp(name, "refused.", 8))
        return json_object_set_new(c->refused, name + 8, json_integer(n)) ? TSYNC_ENOMEM : 0;
    return json_object_set_new(c->root, name, json_integer(n)) ? TSYNC_ENOMEM : 0;
}

int tsync_relay_status_json(const char *dir, char **out)
{
    return tsync_relay_status_json_store(dir, NULL, out);
}

int tsync_relay_status_json_store(const char *dir, const char *store_url, char **out)
{
    *out = NULL;
    char pk[65];
    int rc = tsync_relay_public_key(dir, pk);
    if (rc) return rc;
    tsync__rstore *st;
    rc = tsync__rstore_open(&st, dir, store_url, 0, 1);
    if (rc) return rc;
    status_ctx c = {json_array(), json_object(), json_object()};
    json_object_set_new(c.root, "public_key", json_string(pk));
    json_object_set_new(c.root, "store",
                        json_string(store_url && *store_url ? store_url : "sqlite"));
    json_object_set_new(c.root, "sessions", json_integer(0));
    json_object_set_new(c.root, "sessions_open", json_integer(0));
    rc = st->ops->stats(st, st_shop, &c, st_counter);
    st->ops->close(st);
    json_object_set_new(c.root, "shops", c.shops);
    json_object_set_new(c.root, "refused", c.refused);
    if (!rc) {
        *out = json_dumps(c.root, JSON_INDENT(2));
        if (!*out) rc = tsync__err(TSYNC_ENOMEM, "relay status: out of memory");
    }
    json_decref(c.root);
    return rc;
}
