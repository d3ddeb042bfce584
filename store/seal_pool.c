/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/seal_pool.c — the memory of the batch being sealed: a bump allocator whose chunks are kept
 * from one batch to the next. Freeing a batch's few megabytes and allocating them again for the
 * next one let the C library hand them back to the kernel and fault them in again, which cost
 * more than building the batch.
 */
#include <stdlib.h>
#include <string.h>

#include "seal_int.h"

#define POOL_CHUNK ((size_t)256 << 10)

struct tsync__pool_chunk {
    tsync__pool_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

static tsync__pool_chunk *chunk_new(size_t size)
{
    tsync__pool_chunk *c = malloc(sizeof *c + size);
    if (c) c->next = NULL, c->size = size, c->used = 0;
    return c;
}

void *tsync__pool_alloc(tsync__pool *p, size_t n)
{
    n = n ? (n + 15) & ~(size_t)15 : 16;
    if (n > POOL_CHUNK / 4) {
        /* A large block gets a chunk of its own, given back at the next reset. */
        tsync__pool_chunk *c = chunk_new(n);
        if (!c) return NULL;
        c->next = p->big;
        p->big = c;
        memset(c->data, 0, n);
        return c->data;
    }
    while (p->cur && p->cur->size - p->cur->used < n) {
        if (!p->cur->next && !(p->cur->next = chunk_new(POOL_CHUNK))) return NULL;
        p->cur = p->cur->next;
    }
    if (!p->cur && !(p->cur = p->head = chunk_new(POOL_CHUNK))) return NULL;
    void *d = p->cur->data + p->cur->used;
    p->cur->used += n;
    memset(d, 0, n);
    return d;
}

void tsync__pool_reset(tsync__pool *p)
{
    for (tsync__pool_chunk *c = p->head; c; c = c->next) c->used = 0;
    p->cur = p->head;
    while (p->big) {
        tsync__pool_chunk *n = p->big->next;
        free(p->big);
        p->big = n;
    }
}

void tsync__pool_free(tsync__pool *p)
{
    tsync__pool_reset(p);
    while (p->head) {
        tsync__pool_chunk *n = p->head->next;
        free(p->head);
        p->head = n;
    }
    p->cur = NULL;
}
