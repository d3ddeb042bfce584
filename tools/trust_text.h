/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/trust_text.h — what the trust commands share (tools/trust_text.c): shop trust records as
 * files (read, armoured with a description, written to stdout), the admin key file, and the small
 * formatting helpers of their messages. The work is the library's (tillsync/trust.h); these only
 * read files, print and explain failures on stderr the way every tillsync command does.
 */
#ifndef TSYNC_TOOLS_TRUST_TEXT_H
#define TSYNC_TOOLS_TRUST_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "cli.h"

#define DEFAULT_DAYS 365u
#define PK           TSYNC_PUBLIC_KEY_BYTES

/* Prints "tillsync: MSG (see 'tillsync --help')" to stderr and returns 2 (a usage error). */
int tt_usage(const char *msg);
/* The message of the last failing library call (never NULL). */
const char *tt_error(void);
/* n bytes as 2n lowercase hex digits and a NUL. */
void tt_hex(const uint8_t *p, size_t n, char *out);
/* Exactly 2n hex digits (slen) into n bytes: 0, or -1. */
int tt_unhex(const char *s, size_t slen, uint8_t *out, size_t n);
/* A whole file (or stdin for "-"), NUL-terminated and malloc'd: 0, or 1 after printing why not. */
int tt_slurp(const char *path, char **out, size_t *len);
/* The records of a file appended to *r (its armoured blocks, or the file as one raw record):
 * 0, or 1 after printing why not. */
int tt_read_records(const char *path, tsync_trust_records *r);
/* Decodes a record read from path into *out, which must be of kind want (0: any): 0, or 1 after
 * printing why not. */
int tt_decode(const char *path, const uint8_t *rec, size_t len, int want, tsync_trust_record *out);
/* The "# " comment lines above an armoured block: what the record is, in plain words, and how it
 * is installed. malloc'd (NULL when out of memory). */
char *tt_describe(const tsync_trust_record *r);
/* A record we made, armoured with its description (malloc'd), or NULL after printing why not. */
char *tt_armoured(const uint8_t *rec, size_t len);
/* Writes tt_armoured's text to stdout: 0, or 1 after printing why not. */
int tt_emit(const uint8_t *rec, size_t len);
/* Loads an admin key file: 0, or 1 after printing why not. */
int tt_load_key(const char *path, tsync_shop_key **k);
/* --days N: 1..TSYNC_TRUST_MAX_DAYS: 0, or -1. */
int tt_parse_days(const char *s, unsigned *days);

#endif
