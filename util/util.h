/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/util.h — the bottom of tillsync: the thread's last error, hex, UTF-8 in messages, the
 * arena the decoders allocate from, the one clock module and the SQL text builder. Nothing here
 * knows a byte format, a merge rule, a database or a socket.
 *
 * THREAD SAFETY: every function is reentrant; the last error is per thread.
 */
#ifndef TSYNC_UTIL_H
#define TSYNC_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tillsync/common.h"

/* One error or refusal message. Long enough for the longest real one (a refusal quoting a
 * trust refusal with a shop and a device name of TSYNC__TRUST_NAME_MAX bytes each, site ids and
 * numbers): a cut message says something else ("cutoff 8" for 89). */
#define TSYNC__ERRLEN 1024

/* ---------------------------------------------------------------- errors */

/* Records the thread's last error (printf-style, one line) and returns code. */
int tsync__err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 0 when version is 1..newest; else TSYNC_EVERSION naming what (an options or report struct). */
int tsync__check_version(const char *what, unsigned int version, unsigned int newest);

/* ---------------------------------------------------------------- time (the one clock module) */

/* Unix time in milliseconds (CLOCK_REALTIME). */
uint64_t tsync__wall_ms(void);
/* Milliseconds of a clock that never goes back (CLOCK_MONOTONIC), for timeouts and rates. */
uint64_t tsync__mono_ms(void);

/* ---------------------------------------------------------------- SQL text (sqlite3_str) */

typedef struct sqlite3_str sqlite3_str;
/* Appends "prefix||name" quoted as an SQL identifier (embedded quotes doubled). */
void tsync__sql_ident(sqlite3_str *b, const char *prefix, const char *name);
/* The same as a new string (sqlite3_free it), or NULL when out of memory. */
char *tsync__sql_quote_ident(const char *prefix, const char *name);
/* Finishes a builder: its text (sqlite3_free it; "" when empty), or NULL when it ran out of
 * memory (the builder is freed either way). */
char *tsync__sql_finish(sqlite3_str *b);
/* Table and column names compare as SQLite compares identifiers (sqlite3_stricmp): ASCII letters
 * without regard to case, every other byte as is. `Items` and `items` are one table to SQLite, so
 * they are one table to tillsync too, wherever a name from another till meets a local one (the
 * store's tables, the snapshot codec's dictionaries). Returns <0, 0, >0 like strcmp (a shorter
 * name that is a prefix of the other sorts first). */
int tsync__name_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* ---------------------------------------------------------------- hex (libsodium) */

void tsync__hex(const uint8_t *p, size_t n, char *out);  /* out: 2n+1 bytes */
int tsync__unhex(const char *s, uint8_t *out, size_t n); /* exactly 2n hex digits */

/* ---------------------------------------------------------------- arena */

/* A bump allocator: many small allocations freed at once. Zero-initialise, then use. */
typedef struct tsync__arena_chunk tsync__arena_chunk;
typedef struct {
    tsync__arena_chunk *head;
} tsync__arena;

/* Returns zeroed memory of n bytes aligned to 16, or NULL when out of memory. */
void *tsync__arena_alloc(tsync__arena *a, size_t n);
/* An array of n elements of size bytes: NULL when n is 0, when n * size overflows or when out of
 * memory (so a caller tests `n && !p`). */
void *tsync__arena_array(tsync__arena *a, size_t n, size_t size);
void tsync__arena_free(tsync__arena *a);
/* Hands a malloc'd block to the arena, which frees it with the rest (a buffer filled elsewhere
 * need not be copied in). Returns false when out of memory: p is then still the caller's. */
bool tsync__arena_adopt(tsync__arena *a, void *p);

/* ---------------------------------------------------------------- UTF-8 in messages */

/* Drops a UTF-8 sequence left incomplete at the end of s by a cut at a byte count (snprintf into
 * a fixed buffer), so a message never ends in half a character. */
void tsync__utf8_trim(char *s);
/* Bytes of the valid UTF-8 character at s (at most n bytes read) that is not a control character
 * (C0, DEL, C1): 1..4, or 0 when s does not start with one. */
size_t tsync__utf8_char(const uint8_t *s, size_t n);

/* True when s[0..n) is valid UTF-8 (no overlong form, surrogate or code point beyond U+10FFFF)
 * holding no control character (C0, DEL, C1). */
bool tsync__utf8_text_ok(const char *s, size_t n);

#endif
