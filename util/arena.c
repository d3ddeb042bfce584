/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util/arena.c — a bump allocator: the decoders allocate a message's arrays here and free them
 * as one.
 */
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct tsync__arena_chunk {
    tsync__arena_chunk *next;
    size_t size, used;
};

/* Chunk payloads start after the header rounded up to 16, so every bump stays 16-aligned
 * (calloc returns memory aligned for max_align_t, which is 16 on the platforms we build for). */
#define ARENA_HDR   ((sizeof(tsync__arena_chunk) + 15) & ~(size_t)15)
#define ARENA_CHUNK ((size_t)16 << 10)

void *tsync__arena_alloc(tsync__arena *a, size_t n)
{
    if (n > SIZE_MAX - ARENA_HDR - 16) return NULL;
    n = n ? (n + 15) & ~(size_t)15 : 16;
    tsync__arena_chunk *c = a->head;
    if (c && c->size - c->used >= n) {
        void *p = (char *)c + ARENA_HDR + c->used;
        c->used += n;
        return p;
    }
    size_t size = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
    tsync__arena_chunk *nc = calloc(1, ARENA_HDR + size);
    if (!nc) return NULL;
    nc->size = size;
    nc->used = n;
    if (c && size != ARENA_CHUNK) {
        /* A large block gets a chunk of its own, kept behind the current one so the room left
         * in the current chunk is not wasted. */
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        a->head = nc;
    }
    return (char *)nc + ARENA_HDR;
}

void *tsync__arena_array(tsync__arena *a, size_t n, size_t size)
{
    if (n == 0) return NULL;
    return size && n > SIZE_MAX / size ? NULL : tsync__arena_alloc(a, n * size);
}

/* An adopted block is a chunk with no room (size == used == ADOPTED) holding the block's address:
 * the bump never takes from it, and tsync__arena_free frees the block with it. */
#define ADOPTED SIZE_MAX

bool tsync__arena_adopt(tsync__arena *a, void *p)
{
    tsync__arena_chunk *nc = malloc(ARENA_HDR + sizeof p);
    if (!nc) return false;
    nc->size = nc->used = ADOPTED;
    memcpy((char *)nc + ARENA_HDR, &p, sizeof p);
    /* behind the head, so the room left in the current chunk is still used */
    tsync__arena_chunk *c = a->head;
    if (c) {
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = NULL;
        a->head = nc;
    }
    return true;
}

void tsync__arena_free(tsync__arena *a)
{
    tsync__arena_chunk *c = a->head;
    while (c) {
        tsync__arena_chunk *next = c->next;
        if (c->size == ADOPTED) {
            void *p;
            memcpy(&p, (char *)c + ARENA_HDR, sizeof p);
            free(p);
        }
        free(c);
        c = next;
    }
    a->head = NULL;
}
