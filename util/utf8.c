/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/utf8.c — UTF-8 in messages: a cut never leaves half a character, and names are checked
 * character by character.
 */
#include <string.h>

#include "util/util.h"

bool tsync__utf8_text_ok(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    if (!s) return false;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return false;
            i++;
            continue;
        }
        unsigned need, cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07;
        } else {
            return false; /* continuation byte first, overlong lead (c0, c1) or beyond U+10FFFF */
        }
        if (n - i <= need) return false;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
            return false; /* overlong, out of range, surrogate, C1 control */
        i += need + 1;
    }
    return true;
}

void tsync__utf8_trim(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) i--;
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    if (lead < 0xc0) return; /* ASCII last, or stray continuation bytes: nothing was cut */
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    if (n - (i - 1) < need) s[i - 1] = '\0';
}

size_t tsync__utf8_char(const uint8_t *s, size_t n)
{
    if (n == 0) return 0;
    if (s[0] < 0x80) return s[0] < 0x20 || s[0] == 0x7f ? 0 : 1;
    size_t need = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
                  : s[0] >= 0xe0 && s[0] <= 0xef ? 3
                  : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                 : 0;
    if (need == 0 || n < need) return 0;
    return tsync__utf8_text_ok((const char *)s, need) ? need : 0;
}
