/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_relay_vault_codec.c — the vault's relay messages (codec/relay.c, docs/RELAY.md
 * "The vault"): every type round-trips to the same bytes with its fields; every prefix and a
 * trailing byte are refused; each field out of its rules (chunk size and index, chunk count
 * against size, epoch, unsorted RVHELD and RVLISTED) is refused by the encoder and the decoder
 * with one line; seeded random flips are refused or re-encode to the flipped bytes. Writes the
 * fuzz seeds fuzz/corpus/relay/type_9 .. type_17 when TSYNC_WRITE_CORPUS is set.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "codec/relay.h"
#include "tests/lib/helpers.h"
#include "tests/lib/relay_codec_util.h"

#define NS 9

static uint8_t chunk[3000];
static uint64_t held[3] = {0, 2, 65535};
static tsync__rvbackup vbs[2];

static size_t samples(tsync__rmsg *m)
{
    memset(chunk, 0xc7, sizeof chunk);
    memset(m, 0, NS * sizeof *m);
    for (int i = 0; i < 2; i++) {
        memset(&vbs[i], 0, sizeof vbs[i]);
        memset(vbs[i].id, 0x10 + i, 16);
        vbs[i].nchunks = 3;
        vbs[i].size = 2 * TSYNC__VAULT_CHUNK + 17;
        memset(vbs[i].hash, 0x33, 32);
        vbs[i].created_ms = 1765000000000ull + (uint64_t)i;
        memset(vbs[i].origin, 0x44, 16);
        vbs[i].epoch = 2;
    }
    m[0] = (tsync__rmsg){.type = TSYNC__R_VHAVE, .req = 1};
    memset(m[0].backup_id, 0x10, 16);
    m[1] = (tsync__rmsg){.type = TSYNC__R_VHELD, .req = 1, .nheld = 3, .held = held};
    m[2] = (tsync__rmsg){
        .type = TSYNC__R_VPUT, .req = 2, .index = 2, .chunk = chunk, .chunk_len = sizeof chunk};
    memset(m[2].backup_id, 0x10, 16);
    memset(m[2].hash, 0x99, 32);
    m[3] = (tsync__rmsg){.type = TSYNC__R_VCOMMIT, .req = 3, .vb = vbs[0]};
    m[4] = (tsync__rmsg){.type = TSYNC__R_VLIST, .req = 4};
    m[5] = (tsync__rmsg){.type = TSYNC__R_VLISTED, .req = 4, .nbackups = 2, .backups = vbs};
    m[6] = (tsync__rmsg){.type = TSYNC__R_VGET, .req = 5, .index = 1};
    memset(m[6].backup_id, 0x11, 16);
    m[7] = m[2];
    m[7].type = TSYNC__R_VCHUNK;
    m[7].req = 5;
    m[8] = (tsync__rmsg){.type = TSYNC__R_VDEL, .req = 6};
    memset(m[8].backup_id, 0x11, 16);
    return NS;
}

Test(relay_vault_codec, round_trip_every_type)
{
    tsync__rmsg m[NS], d;
    size_t n = samples(m);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = rcu_enc(&m[i], &len);
        char err[TSYNC__ERRLEN];
        tsync__arena a = {0};
        cr_assert_eq(rcu_dec(b, len, &d, &a, err), 0, "%s", err);
        cr_assert_eq(d.type, m[i].type);
        cr_assert_eq(d.req, m[i].req);
        cr_assert(memcmp(d.backup_id, m[i].backup_id, 16) == 0);
        if (d.type == TSYNC__R_VPUT || d.type == TSYNC__R_VCHUNK) {
            cr_assert(d.index == 2 && d.chunk_len == sizeof chunk);
            cr_assert(memcmp(d.chunk, chunk, sizeof chunk) == 0 && d.hash[31] == 0x99);
        }
        if (d.type == TSYNC__R_VHELD)
            cr_assert(d.nheld == 3 && d.held[1] == 2 && d.held[2] == 65535);
        if (d.type == TSYNC__R_VCOMMIT)
            cr_assert(memcmp(&d.vb, &vbs[0], sizeof d.vb) == 0, "commit fields differ");
        if (d.type == TSYNC__R_VLISTED) {
            cr_assert_eq(d.nbackups, 2);
            cr_assert(memcmp(&d.backups[1], &vbs[1], sizeof vbs[1]) == 0);
        }
        if (d.type == TSYNC__R_VGET) cr_assert(d.index == 1 && d.backup_id[0] == 0x11);
        tsync__arena_free(&a);
        rcu_refuses_prefixes_and_trailing(b, len, m[i].type);
        free(b);
    }
}

/* Each bad field is refused by the encoder (EINVAL) and, encoded by hand from a good message
 * whose check is bypassed, by the decoder (ECORRUPT) with the same line. */
static void refused(tsync__rmsg *bad, const char *needle)
{
    char err[TSYNC__ERRLEN];
    uint8_t *out;
    size_t len;
    cr_assert_eq(tsync__relay_encode(bad, &out, &len, err), TSYNC_EINVAL, "type %u encoded",
                 bad->type);
    cr_assert(strstr(err, needle), "'%s' lacks '%s'", err, needle);
}

Test(relay_vault_codec, bad_fields)
{
    tsync__rmsg m[NS], b;
    samples(m);
    b = m[2], b.chunk_len = 0;
    refused(&b, "chunk of 0 bytes");
    b = m[2], b.chunk_len = TSYNC__VAULT_CHUNK + 1;
    refused(&b, "1..1048576");
    b = m[2], b.index = TSYNC__VAULT_MAX_CHUNKS;
    refused(&b, "chunk index");
    b = m[6], b.index = TSYNC__VAULT_MAX_CHUNKS;
    refused(&b, "chunk index");
    b = m[3], b.vb.nchunks = 0;
    refused(&b, "0 chunks");
    b = m[3], b.vb.size = 2 * TSYNC__VAULT_CHUNK;
    refused(&b, "do not make 3 chunks");
    b = m[3], b.vb.size = 3 * TSYNC__VAULT_CHUNK + 1;
    refused(&b, "do not make 3 chunks");
    b = m[3], b.vb.epoch = 0;
    refused(&b, "epoch");
    uint64_t unsorted[2] = {3, 3};
    b = m[1], b.held = unsorted, b.nheld = 2;
    refused(&b, "not ascending");
    tsync__rvbackup rev[2] = {vbs[1], vbs[0]};
    b = m[5], b.backups = rev;
    refused(&b, "not after");

    /* The decoder: a VPUT with an empty chunk, made by patching a good encoding's length. */
    tsync__rmsg one = m[2];
    one.chunk_len = 1;
    size_t len;
    uint8_t *enc1 = rcu_enc(&one, &len);
    /* the last item is bin8 (0xc4, 1, byte): make it bin8 of length 0 */
    cr_assert_eq(enc1[len - 3], 0xc4);
    enc1[len - 2] = 0;
    tsync__rmsg d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(rcu_dec(enc1, len - 1, &d, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "RVPUT"), "%s", err);
    tsync__arena_free(&a);
    free(enc1);
}

Test(relay_vault_codec, seeded_random_flips)
{
    tsync__rmsg m[NS];
    size_t n = samples(m);
    rcu_random_flips(m, n, 3000, "relay_vault_codec.seeded_random_flips");
}

Test(relay_vault_codec, reason_names)
{
    cr_assert_str_eq(tsync__rerr_name(TSYNC__RERR_NOT_FOUND), "not_found");
    cr_assert_str_eq(tsync__rerr_name(TSYNC__RERR_BAD_HASH), "bad_hash");
}

Test(relay_vault_codec, fuzz_seeds)
{
    tsync__rmsg m[NS];
    size_t n = samples(m);
    rcu_write_seeds(m, n);
}
