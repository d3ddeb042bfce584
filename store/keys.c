/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/keys.c — the device key file that lives beside the database (never inside it).
 *
 * Layout (binary, 153 bytes): "TSYNCKEY" | version u8 (1) | Ed25519 secret key (64) |
 * incarnation (16) | fingerprint (32) | BLAKE2b-256 of everything before (32).
 *
 * The fingerprint is BLAKE2b-256 of the machine id and the database file's device and inode. When
 * it no longer matches, the database was copied (a cloned till image) or recreated, so the
 * incarnation is renewed: the site id changes and no site id ever reuses a sequence number.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define KEY_MAGIC "TSYNCKEY"
#define KEY_LEN   (8 + 1 + 64 + 16 + 32 + 32)

static void fingerprint(const char *db_path, uint8_t out[32])
{
    crypto_generichash_state st;
    char mid[128] = {0};
    FILE *f = fopen("/etc/machine-id", "r");
    if (f) {
        if (!fgets(mid, sizeof mid, f)) mid[0] = 0;
        fclose(f);
    }
    if (!mid[0]) gethostname(mid, sizeof mid - 1);
    struct stat sb;
    memset(&sb, 0, sizeof sb);
    stat(db_path, &sb);
    uint64_t ids[2] = {(uint64_t)sb.st_dev, (uint64_t)sb.st_ino};
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)mid, strlen(mid));
    crypto_generichash_update(&st, (const uint8_t *)ids, sizeof ids);
    crypto_generichash_final(&st, out, 32);
}

static int write_key(tsync_store *s, const uint8_t fp[32])
{
    uint8_t buf[KEY_LEN];
    size_t o = 0;
    memcpy(buf, KEY_MAGIC, 8), o = 8;
    buf[o++] = 1;
    memcpy(buf + o, s->sk, 64), o += 64;
    memcpy(buf + o, s->inc, 16), o += 16;
    memcpy(buf + o, fp, 32), o += 32;
    crypto_generichash(buf + o, 32, buf, o, NULL, 0);

    size_t plen = strlen(s->key_path);
    char *tmp = malloc(plen + 8);
    if (!tmp) return tsync__err(TSYNC_ENOMEM, "out of memory");
    snprintf(tmp, plen + 8, "%s.tmp", s->key_path);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = tsync__err(TSYNC_EIO, "cannot write key file %s: %s", tmp, strerror(errno));
    } else {
        if (fchmod(fd, 0600) != 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf ||
            fsync(fd) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot write key file %s: %s", tmp, strerror(errno));
        close(fd);
        if (rc == 0 && rename(tmp, s->key_path) != 0)
            rc = tsync__err(TSYNC_EIO, "cannot install key file %s: %s", s->key_path,
                            strerror(errno));
        if (rc != 0) unlink(tmp);
    }
    sodium_memzero(buf, sizeof buf);
    free(tmp);
    return rc;
}

int tsync__key_load_or_create(tsync_store *s, int create)
{
    uint8_t fp[32];
    fingerprint(s->path, fp);

    int fd = open(s->key_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            return tsync__err(TSYNC_EIO, "cannot open key file %s: %s", s->key_path,
                              strerror(errno));
        if (!create)
            return tsync__err(TSYNC_ENOTFOUND,
                              "key file %s is missing (opening with create makes one)",
                              s->key_path);
        crypto_sign_keypair(s->pk, s->sk);
        randombytes_buf(s->inc, sizeof s->inc);
        return write_key(s, fp);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return tsync__err(TSYNC_EIO, "cannot stat key file %s", s->key_path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return tsync__err(TSYNC_EINVAL, "key file %s is readable by other users; run: chmod 600 %s",
                          s->key_path, s->key_path);
    }
    uint8_t buf[KEY_LEN + 1];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    uint8_t sum[32];
    if (n == KEY_LEN) crypto_generichash(sum, 32, buf, KEY_LEN - 32, NULL, 0);
    if (n != KEY_LEN || memcmp(buf, KEY_MAGIC, 8) != 0 || buf[8] != 1 ||
        sodium_memcmp(sum, buf + KEY_LEN - 32, 32) != 0) {
        sodium_memzero(buf, sizeof buf);
        return tsync__err(TSYNC_ECORRUPT, "key file %s is damaged (bad length, magic or checksum)",
                          s->key_path);
    }
    memcpy(s->sk, buf + 9, 64);
    memcpy(s->inc, buf + 73, 16);
    crypto_sign_ed25519_sk_to_pk(s->pk, s->sk);
    int renew = memcmp(buf + 89, fp, 32) != 0;
    sodium_memzero(buf, sizeof buf);
    if (renew && !s->read_only) {
        /* Copied or recreated database: a new incarnation gives it a new site id. */
        randombytes_buf(s->inc, sizeof s->inc);
        return write_key(s, fp);
    }
    return 0;
}
