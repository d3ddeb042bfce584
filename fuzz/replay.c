/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/replay.c — a main() for the fuzz targets without libFuzzer: feeds every file of a folder
 * (a corpus, fuzz/corpus/<name>/) to LLVMFuzzerTestOneInput once, in name order. The normal gcc
 * build links each fuzz/fuzz_*.c with this file, and ctest replays the corpora with it, so an
 * input that once crashed a target (or a seed) keeps being checked on every test run, under
 * ASan/UBSan and TSan too, not only in the clang fuzz stage.
 *
 * usage: fuzz_NAME-replay DIR...
 * Exits 1 when a folder cannot be read or holds no file (a missing corpus must not pass as an
 * empty one), 0 when every input returned; a crash is the target's own abort or a sanitizer's.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads a whole file into a buffer of its own size, so that ASan sees a read past the input. */
static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        return -1;
    }
    /* An exact copy: an over-read of the input is then a heap overflow, as under libFuzzer. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    *out = exact;
    *len = n;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file of dir; returns how many, or -1 on an error (printed). */
static long replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot read %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) abort();
            names = more;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) abort();
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    long done = 0;
    for (size_t i = 0; i < n; i++) {
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(plen);
        if (!path) abort();
        snprintf(path, plen, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            uint8_t *data;
            size_t len;
            if (read_file(path, &data, &len) != 0) {
                fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
                done = -1;
            } else {
                LLVMFuzzerTestOneInput(data, len);
                free(data);
                if (done >= 0) done++;
            }
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
        return 2;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        long n = replay_dir(argv[i]);
        if (n == 0) fprintf(stderr, "replay: %s holds no input: a corpus is missing\n", argv[i]);
        if (n <= 0)
            rc = 1;
        else
            printf("replayed %ld inputs of %s\n", n, argv[i]);
    }
    return rc;
}
