/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/common.h — error codes, error details and the export macro shared by every public
 * header.
 *
 * THREAD SAFETY: every function here may be called from any thread; the last-error record is
 * thread-local, so it describes the last failing call made on the calling thread.
 */
#ifndef TILLSYNC_COMMON_H
#define TILLSYNC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TSYNC_API marks the public functions, the only symbols the library exports. An app linking the
 * static library defines TSYNC_STATIC (pkg-config and the CMake package do it for it), which on
 * Windows keeps the declarations from asking for a DLL. */
#if defined(_WIN32) && !defined(TSYNC_STATIC)
#if defined(TSYNC_BUILDING)
#define TSYNC_API __declspec(dllexport)
#else
#define TSYNC_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define TSYNC_API __attribute__((visibility("default")))
#else
#define TSYNC_API
#endif
#if defined(__GNUC__)
#define TSYNC_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define TSYNC_WARN_UNUSED
#endif

/* Error codes. Every public function returns 0 on success or one of these (negative). */
typedef enum {
    TSYNC_OK = 0,
    TSYNC_ERROR = -1,       /* generic failure; see tsync_error_last() */
    TSYNC_EINVAL = -2,      /* an argument or a user input is invalid */
    TSYNC_ENOMEM = -3,      /* out of memory */
    TSYNC_ENOTFOUND = -4,   /* the named table, column, file or site does not exist */
    TSYNC_EEXISTS = -5,     /* it exists already */
    TSYNC_EIO = -6,         /* an operating-system or SQLite I/O error */
    TSYNC_EBADSIG = -7,     /* a signature does not verify */
    TSYNC_ECORRUPT = -8,    /* malformed, truncated or tampered bytes */
    TSYNC_EVERSION = -9,    /* unsupported format or protocol version, or an options or report
                               struct of a version this library does not know (docs/API.md) */
    TSYNC_ECLOCKSKEW = -10, /* a clock is too far ahead */
    TSYNC_EFORK = -11,      /* two different batches claim the same origin and sequence number */
    TSYNC_ECHAIN = -12,     /* the hash chain of an origin's batches is broken */
    TSYNC_EUNSUPPORTED =
        -13,           /* the schema or request cannot be supported (for example a rowid table) */
    TSYNC_EBUSY = -14, /* the database is locked by another writer for too long, or another
                          node runs on it (tsync_node_new) */
    TSYNC_EREFUSED = -15, /* an input was refused; details in the report or tsync_error_last() */
    TSYNC_EFULL = -16,    /* the disk (or the database's size limit) is full; nothing was written */
} tsync_error_code;

/* The error of the last failing call on this thread. */
typedef struct {
    int32_t code;        /* a tsync_error_code */
    const char *message; /* one line naming what was wrong; borrowed, valid until the next failing
                            call on this thread */
} tsync_error;

/* Returns the last error recorded on this thread; never NULL: while none is recorded (or after
 * tsync_error_clear()), a static record with code 0 and message "no error". Borrowed pointer. */
TSYNC_API const tsync_error *tsync_error_last(void);

/* Clears the last error of this thread. */
TSYNC_API void tsync_error_clear(void);

/* A static English description of an error code. Never NULL. */
TSYNC_API const char *tsync_strerror(int code);

/* Frees memory the library returned for the caller to free (strings, JSON, byte buffers: the
 * headers say "the caller's"). Accepts NULL. Equivalent to free() where the app and the library
 * share one C runtime; a binding from another language, or an app with its own allocator or C
 * runtime (Windows), must use this. Objects have their own tsync_<type>_free(). */
TSYNC_API void tsync_free(void *p);

/* Version of the library as "MAJOR.MINOR.PATCH": the TSYNC_VERSION_STRING of tillsync/version.h
 * it was built with. Static string. */
TSYNC_API const char *tsync_version(void);

#ifdef __cplusplus
}
#endif
#endif
