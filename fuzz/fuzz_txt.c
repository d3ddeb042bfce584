/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_txt.c — libFuzzer target for the TXT decoder of mDNS discovery
 * (tsync__disc_txt_parse in net/discovery_avahi.c): the bytes are DNS TXT rdata as any host on
 * the LAN can announce it. Any input must be refused with a one-line message or decode; what
 * decodes must re-encode (tsync__disc_txt_encode) to a TXT that decodes to the same fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsync__disc_txt t, u;
    char err[128];
    int rc = tsync__disc_txt_parse(data, size, &t, err, sizeof err);
    if (rc != 0) {
        if (rc != TSYNC_ECORRUPT || err[0] == '\0' || strchr(err, '\n')) abort();
        return 0;
    }
    if (t.has_shop != 0 && t.has_shop != 1) abort();
    uint8_t buf[TSYNC__DISC_TXT_MAX];
    size_t n = tsync__disc_txt_encode(&t, buf, sizeof buf);
    if (n == 0 || n > sizeof buf) abort();
    if (tsync__disc_txt_parse(buf, n, &u, err, sizeof err) != 0) abort();
    if (u.version != t.version || u.has_shop != t.has_shop ||
        memcmp(u.key, t.key, sizeof t.key) != 0 ||
        (t.has_shop && memcmp(u.shop, t.shop, sizeof t.shop) != 0))
        abort();
    return 0;
}
