/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/shopkey.c — the shop admin key file on disk (store/trust.h; the format is
 * codec/shopkey.c): create a shop, write a new key file, replace one atomically when the admin's
 * devices or data keys change, and read one.
 *
 * Design notes
 * - A new key file is created with O_EXCL and never overwrites anything: it may be the only copy
 *   of a shop. Replacing an existing one (a version 2 file that gained a device or an epoch) goes
 *   through a new file beside it and rename(), so a crash leaves the old file or the new one,
 *   never a torn one.
 * - Every read refuses a file other users can read: the file is the shop.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "store/trust.h"

/* Writes the image to fd, fsyncs and closes it. */
static int put(int fd, const char *path, const uint8_t *img, size_t len)
{
    int rc = 0;
    size_t off = 0;
    while (off < len && rc == 0) {
        ssize_t w = write(fd, img + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", path, strerror(errno));
        else
            off += (size_t)w;
    }
    if (rc == 0 && (fchmod(fd, 0600) != 0 || fsync(fd) != 0))
        rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = tsync__err(TSYNC_EIO, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

static int image(const tsync__shopkey *k, const tsync__shopkey_ext *x, uint8_t **img, size_t *len)
{
    int rc = x ? tsync__shopkey_encode_ext(k, x, img, len) : tsync__shopkey_encode(k, img, len);
    if (rc == TSYNC_ENOMEM) return tsync__err(rc, "out of memory");
    if (rc)
        return tsync__err(TSYNC_EINVAL,
                          "cannot encode the admin key file (more than %u devices "
                          "or data keys?)",
                          TSYNC__SHOPKEY_MAX_DEVICES);
    return 0;
}

int tsync__shopkey_write_ext(const char *path, const tsync__shopkey *k, const tsync__shopkey_ext *x)
{
    uint8_t *img;
    size_t len;
    int rc = image(k, x, &img, &len);
    if (rc) return rc;
    /* O_EXCL: never overwrite a key file, even one created a moment ago by someone else. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? tsync__err(TSYNC_EEXISTS,
                                          "%s exists already; refusing to overwrite it (it may "
                                          "be the only copy of a shop's admin key)",
                                          path)
                             : tsync__err(TSYNC_EIO, "cannot create %s: %s", path, strerror(errno));
    } else {
        rc = put(fd, path, img, len);
        if (rc) unlink(path);
    }
    sodium_memzero(img, len);
    free(img);
    return rc;
}

int tsync__shopkey_write(const char *path, const tsync__shopkey *k)
{
    return tsync__shopkey_write_ext(path, k, NULL);
}

int tsync__shopkey_replace(const char *path, const tsync__shopkey *k, const tsync__shopkey_ext *x)
{
    uint8_t *img;
    size_t len;
    int rc = image(k, x, &img, &len);
    if (rc) return rc;
    char *tmp = malloc(strlen(path) + 16);
    char *dir = strdup(path);
    if (!tmp || !dir) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    sprintf(tmp, "%s.new.XXXXXX", path);
    int fd = mkstemp(tmp); /* 0600 */
    if (fd < 0) {
        rc = tsync__err(TSYNC_EIO, "cannot write beside %s: %s", path, strerror(errno));
        goto out;
    }
    rc = put(fd, tmp, img, len);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = tsync__err(TSYNC_EIO, "cannot replace %s: %s", path, strerror(errno));
    if (rc) {
        unlink(tmp);
        goto out;
    }
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the rename is durable once the folder is */
        if (fsync(dfd) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot sync the folder of %s: %s", path, strerror(errno));
        close(dfd);
    }
out:
    free(tmp);
    free(dir);
    sodium_memzero(img, len);
    free(img);
    return rc;
}

int tsync__shopkey_create_ext(const char *path, const char *name, uint64_t now_ms,
                              tsync__shopkey *out, tsync__shopkey_ext *xout)
{
    if (xout) memset(xout, 0, sizeof *xout);
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    struct stat sb;
    if (lstat(path, &sb) == 0)
        return tsync__err(TSYNC_EEXISTS,
                          "%s exists already; refusing to overwrite it (it may be the only copy "
                          "of a shop's admin key)",
                          path);
    uint8_t seed[32], shop_id[TSYNC__SHOP_ID_BYTES];
    randombytes_buf(seed, sizeof seed);
    randombytes_buf(shop_id, sizeof shop_id);
    tsync__shopkey k;
    char err[TSYNC__ERRLEN];
    int rc = tsync__shopkey_init(&k, seed, shop_id, name ? name : "", name ? strlen(name) : 0,
                                 now_ms, err);
    sodium_memzero(seed, sizeof seed);
    if (rc) return tsync__err(rc, "%s", err);
    /* Epoch 1 of the data key is made with the shop (docs/RELAY_KEYS.md). */
    tsync__shopkey_epoch e1 = {.epoch = 1, .created_ms = now_ms};
    randombytes_buf(e1.key, sizeof e1.key);
    tsync__shopkey_ext x = {.version = 2, .epochs = &e1, .nepochs = 1};
    rc = tsync__shopkey_write_ext(path, &k, &x);
    if (rc == 0 && out) *out = k;
    if (rc == 0 && xout) {
        xout->epochs = malloc(sizeof e1);
        if (!xout->epochs) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        } else {
            xout->epochs[0] = e1;
            xout->nepochs = 1;
            xout->version = 2;
        }
    }
    sodium_memzero(&e1, sizeof e1);
    tsync__shopkey_wipe(&k);
    return rc;
}

int tsync__shopkey_create(const char *path, const char *name, uint64_t now_ms, tsync__shopkey *out)
{
    return tsync__shopkey_create_ext(path, name, now_ms, out, NULL);
}

int tsync__shopkey_load_ext(const char *path, tsync__shopkey *out, tsync__shopkey_ext *x)
{
    memset(out, 0, sizeof *out);
    if (x) memset(x, 0, sizeof *x);
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT
                   ? tsync__err(TSYNC_ENOTFOUND, "admin key file %s does not exist", path)
                   : tsync__err(TSYNC_EIO, "cannot open admin key file %s: %s", path,
                                strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tsync__err(TSYNC_EIO, "%s is not a regular file", path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return tsync__err(TSYNC_EINVAL,
                          "admin key file %s is readable by other users; run: chmod 600 %s", path,
                          path);
    }
    /* One byte more than the limit, so an oversized file is refused as such. */
    size_t cap = (size_t)sb.st_size < TSYNC__SHOPKEY_MAX_BYTES ? (size_t)sb.st_size + 1
                                                               : TSYNC__SHOPKEY_MAX_BYTES + 1;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            sodium_memzero(buf, cap);
            free(buf);
            return tsync__err(TSYNC_EIO, "cannot read admin key file %s: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    char err[TSYNC__ERRLEN];
    int rc = tsync__shopkey_decode_ext(buf, n, out, x, err);
    sodium_memzero(buf, cap);
    free(buf);
    return rc ? tsync__err(rc, "%s: %s", path, err) : 0;
}

int tsync__shopkey_load(const char *path, tsync__shopkey *out)
{
    return tsync__shopkey_load_ext(path, out, NULL);
}
