/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_trust_int.h — what the files of the public trust API share (store/api_trust.c,
 * store/api_trust_store.c, store/api_shopkey.c). Private to store/.
 */
#ifndef TSYNC_STORE_API_TRUST_INT_H
#define TSYNC_STORE_API_TRUST_INT_H

#include "store/trust.h"
#include "tillsync/trust.h"

/* 0 when got is a version from 1 to known, else TSYNC_EVERSION with a one-line message naming
 * the struct (what). */
int tsync__api_version(unsigned int got, unsigned int known, const char *what);

/* Copies n bytes of a name (not NUL-terminated) into out, cut at TSYNC_TRUST_NAME_MAX. */
void tsync__api_name(char out[TSYNC_TRUST_NAME_MAX + 1], const char *s, size_t n);

/* Checks opts (NULL: defaults) and gives its days (0 read as 365) and device name. */
int tsync__api_sign_options(const tsync_sign_options *opts, unsigned *days, const char **name);

/* Public cutoffs as the formats' (malloc'd; NULL with the error recorded when out of memory, or
 * when n is 0), and back into out (n entries). */
tsync__cutoff *tsync__api_cutoffs_in(const tsync_cutoff *c, size_t n);
void tsync__api_cutoffs_out(tsync_cutoff *out, const tsync__cutoff *c, size_t n);

/* A public key handle: the key, what its file's version 2 adds (x.version 1 for a version 1
 * file) and the file's path (store/api_shopkey.c writes changes back there). */
struct tsync_shop_key {
    tsync__shopkey k;
    tsync__shopkey_ext x;
    char *path;
};

/* A deep copy of from into to (version set to 2). TSYNC_ENOMEM. */
int tsync__shopkey_ext_copy(tsync__shopkey_ext *to, const tsync__shopkey_ext *from);

/* The key inside a public handle. */
const tsync__shopkey *tsync__api_shopkey(const tsync_shop_key *k);

#endif
