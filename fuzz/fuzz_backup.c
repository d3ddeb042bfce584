/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_backup.c — the decoder of backup files (store/backup_format.c), which reads whatever
 * file a shop's IT person hands to `tillsync backup-check` or `tillsync restore`. The first byte
 * picks what the rest is:
 * - even: a whole backup file, through tsync__bak_read (header and format, key derivation
 *   parameters, secretstream chunks, image hash, manifest, trailer, end of file). The passphrase is
 *   "fuzz" and the key derivation is capped at libsodium's minimum, so an encrypted input costs
 *   microseconds instead of the second a real file's Argon2id takes; larger parameters are refused
 *   before any work, as a checker with limits would.
 * - odd: a manifest, straight to tsync__bak_manifest_check (a file reaches it only when its hash
 *   verifies), with an image of 4096 bytes whose hash is 32 bytes of 0xab.
 * Any input must end in 0 or an error with nothing written, never in a crash, a leak or a hang.
 *
 * Seeds (fuzz/corpus/backup/): plain and encrypted backups of a fresh database with 512-byte pages
 * made by tsync_backup (passphrase "fuzz", opslimit 1, memlimit 8192), and a matching manifest.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) {
        uint8_t h[32];
        memset(h, 0xab, sizeof h);
        /* Refused or accepted, both are right answers: only a crash, a leak or a hang is not. */
        if (tsync__bak_manifest_check((const char *)data + 1, size - 1, 4096, h, "fuzz") != 0)
            return 0;
        return 0;
    }
    FILE *in = fmemopen((void *)(data + 1), size - 1 ? size - 1 : 1, "rb");
    if (!in) return 0;
    if (size == 1) fgetc(in); /* an empty file */
    tsync__bak_read_opts o;
    memset(&o, 0, sizeof o);
    o.name = "fuzz";
    o.passphrase = "fuzz";
    o.max_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    o.max_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    o.image_fd = -1;
    o.file_size = size - 1;
    tsync__bak_info info;
    if (tsync__bak_read(in, &o, &info) == 0) tsync__bak_info_clear(&info);
    fclose(in);
    return 0;
}
