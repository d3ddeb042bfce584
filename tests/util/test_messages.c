/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/util/test_messages.c — error and refusal texts are whole or cut on a character boundary
 * (issue 10, defect 10): the last error keeps a message that quotes another refusal, a message
 * longer than any buffer loses whole characters only, and the UTF-8 helpers of crdt/cert.c that
 * do the cutting and the cleaning of a peer note.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "codec/cert.h"
#include "store/internal.h"

/* A refusal quoting a trust refusal, with shop and device names of 64 bytes of non-ASCII text:
 * the longest kind of message tillsync writes. */
Test(messages, a_long_refusal_is_kept_whole)
{
    char shop[65] = "", dev[65] = "";
    while (strlen(shop) + 2 <= 64) strcat(shop, "ö");
    while (strlen(dev) + 3 <= 63) strcat(dev, "…");
    strcat(dev, "x");
    char inner[TSYNC__ERRLEN];
    snprintf(inner, sizeof inner,
             "key 0123456789abcdef… (device '%s') was revoked: site 0123456789abcdef… seq "
             "18446744073709551615 is after the cutoff 89",
             dev);
    cr_assert(strstr(inner, "cutoff 89"), "the refusal itself was cut: %s", inner);
    tsync__err(TSYNC_EREFUSED,
               "the database holds 18446744073709551615 batches (site 0123456789abcdef…, up to seq "
               "18446744073709551615) that shop '%s' would refuse: %s. Give that device's "
               "certificate too, or enrol a fresh database (%s; %s; %s)",
               shop, inner, shop, dev, shop);
    const char *m = tsync_error_last()->message;
    cr_assert(strstr(m, "is after the cutoff 89. Give"), "cut: %s", m);
    cr_assert(strstr(m, dev), "the device name is not whole: %s", m);
    char tail[200];
    snprintf(tail, sizeof tail, "; %s; %s)", dev, shop);
    cr_assert(strlen(m) > 600 && strstr(m, tail), "cut: %s", m);
}

Test(messages, a_cut_never_splits_a_character)
{
    char big[4000];
    strcpy(big, "xy");
    while (strlen(big) + 3 < sizeof big) strcat(big, "…");
    tsync__err(TSYNC_EINVAL, "%s", big);
    const char *m = tsync_error_last()->message;
    size_t n = strlen(m);
    cr_assert(n >= 1024 && n < strlen(big), "message of %zu bytes", n);
    cr_assert_eq((n - 2) % 3, 0, "cut inside a character: %zu bytes", n);
    cr_assert(tsync__trust_name_ok(m + n - 3, 3), "the message ends in half a character");
}

Test(messages, utf8_trim_and_char)
{
    char s[16];
    strcpy(s, "ab\xe2\x80"); /* half a "…" */
    tsync__utf8_trim(s);
    cr_assert_str_eq(s, "ab");
    strcpy(s, "ab\xe2\x80\xa6"); /* a whole one */
    tsync__utf8_trim(s);
    cr_assert_str_eq(s, "ab\xe2\x80\xa6");
    strcpy(s, "\xc3");
    tsync__utf8_trim(s);
    cr_assert_str_eq(s, "");
    strcpy(s, "a\xf0\x9f\x98");
    tsync__utf8_trim(s);
    cr_assert_str_eq(s, "a");
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\xe2\x80\xa6", 3), 3);
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\xe2\x80\xa6", 2), 0, "cut short");
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\xc3\xb6", 2), 2);
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"a", 1), 1);
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\n", 1), 0, "a control character");
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\xc2\x85", 2), 0, "a C1 control");
    cr_assert_eq(tsync__utf8_char((const uint8_t *)"\x80", 1), 0, "a stray continuation byte");
}
