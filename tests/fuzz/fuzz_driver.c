/* tests/fuzz/fuzz_driver.c — runs a fuzz target, int fuzz_one(const uint8_t *, size_t).
 *
 * Built with -DSPECMOE_LIBFUZZER (SPECMOE_FUZZ=ON, clang) it is only LLVMFuzzerTestOneInput and
 * libFuzzer drives it. Otherwise it is a small deterministic fuzzer for ctest:
 *
 *   fuzz_x [--iterations N] [--seed S] [--ext .json] PATH...
 *
 * runs every seed file under PATH (files or directories, recursively; --ext filters names), then
 * N mutants of them (bit flips, interesting bytes, truncations, insertions, deletions, chunk
 * copies, splices of two seeds), all from one seeded PRNG, so a failure replays exactly. A
 * mutant that crashes is first written to fuzz-crash-<target>-<iteration>.bin (ASan aborts). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fuzz_one(const uint8_t *data, size_t size);

#ifdef SPECMOE_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_one(data, size);
    return 0;
}

#else

typedef struct blob {
    uint8_t *data;
    size_t len;
    char *name;
} blob;

typedef struct corpus {
    blob *items;
    size_t n, cap;
} corpus;

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static void add_file(corpus *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (64L << 20)) { fclose(f); return; }
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); return; }
    fclose(f);
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->items = realloc(c->items, c->cap * sizeof *c->items);
        if (!c->items) { perror("realloc"); exit(2); }
    }
    c->items[c->n++] = (blob){buf, (size_t)n, strdup(path)};
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted directory walk, so that the order (and with it every mutant) is the same everywhere. */
static void add_path(corpus *c, const char *path, const char *ext) {
    struct stat sb;
    if (stat(path, &sb) != 0) { fprintf(stderr, "fuzz: no such seed path %s\n", path); exit(2); }
    if (!S_ISDIR(sb.st_mode)) {
        if (!ext || ends_with(path, ext)) add_file(c, path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            names = realloc(names, cap * sizeof *names);
            if (!names) { perror("realloc"); exit(2); }
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(path) + strlen(names[i]) + 2;
        char *child = malloc(len);
        snprintf(child, len, "%s/%s", path, names[i]);
        add_path(c, child, ext);
        free(child);
        free(names[i]);
    }
    free(names);
}

/* One mutation step applied in place to buf (capacity cap, length *len). */
static void mutate_once(uint8_t *buf, size_t *len, size_t cap, const corpus *c) {
    static const uint8_t interesting[] = {0, 1, 0x7F, 0x80, 0xFF, '"', '\\', '{', '}', '[', ']', ',', ':', '-',
                                          '0', '9', 'e', ' ', '\n', 0xC3, 0xE2, 0xF0};
    size_t n = *len;
    switch (rnd_below(8)) {
    case 0: /* bit flip */
        if (n) buf[rnd_below(n)] ^= (uint8_t)(1u << rnd_below(8));
        break;
    case 1: /* interesting byte */
        if (n) buf[rnd_below(n)] = interesting[rnd_below(sizeof interesting)];
        break;
    case 2: /* truncate */
        *len = rnd_below(n + 1);
        break;
    case 3: { /* insert a few bytes */
        size_t k = 1 + rnd_below(4), at = rnd_below(n + 1);
        if (n + k > cap) break;
        memmove(buf + at + k, buf + at, n - at);
        for (size_t i = 0; i < k; i++)
            buf[at + i] = rnd_below(2) ? interesting[rnd_below(sizeof interesting)] : (uint8_t)rnd();
        *len = n + k;
        break;
    }
    case 4: { /* delete a range */
        if (!n) break;
        size_t at = rnd_below(n), k = 1 + rnd_below(n - at < 16 ? n - at : 16);
        memmove(buf + at, buf + at + k, n - at - k);
        *len = n - k;
        break;
    }
    case 5: { /* copy a chunk over another place */
        if (n < 2) break;
        size_t from = rnd_below(n), to = rnd_below(n), k = 1 + rnd_below(32);
        if (from + k > n) k = n - from;
        if (to + k > n) k = n - to;
        memmove(buf + to, buf + from, k);
        break;
    }
    case 6: { /* splice: our head + another seed's tail */
        const blob *o = &c->items[rnd_below(c->n)];
        size_t head = rnd_below(n + 1), from = rnd_below(o->len + 1), k = o->len - from;
        if (head + k > cap) k = cap - head;
        memcpy(buf + head, o->data + from, k);
        *len = head + k;
        break;
    }
    default: /* change a digit (ids, offsets, shapes) */
        for (size_t tries = 0; tries < 16 && n; tries++) {
            size_t at = rnd_below(n);
            if (buf[at] >= '0' && buf[at] <= '9') { buf[at] = (uint8_t)('0' + rnd_below(10)); break; }
        }
    }
}

int main(int argc, char **argv) {
    long iterations = 1000;
    unsigned long long seed = 1;
    const char *ext = NULL, *target = argv[0];
    corpus c = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--ext") && i + 1 < argc) ext = argv[++i];
        else add_path(&c, argv[i], ext);
    }
    if (c.n == 0) { fprintf(stderr, "fuzz: no seed files\n"); return 2; }
    const char *slash = strrchr(target, '/');
    if (slash) target = slash + 1;
    for (size_t i = 0; i < c.n; i++) fuzz_one(c.items[i].data, c.items[i].len);
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    size_t max_len = 0;
    for (size_t i = 0; i < c.n; i++) max_len = c.items[i].len > max_len ? c.items[i].len : max_len;
    size_t cap = 2 * max_len + 64;
    uint8_t *buf = malloc(cap);
    for (long it = 0; it < iterations; it++) {
        const blob *b = &c.items[(size_t)it % c.n];
        memcpy(buf, b->data, b->len);
        size_t len = b->len;
        int steps = 1 + (int)rnd_below(4);
        for (int s = 0; s < steps; s++) mutate_once(buf, &len, cap, &c);
        /* exactly-sized copy, so that ASan sees any read past the end */
        uint8_t *input = malloc(len ? len : 1);
        memcpy(input, buf, len);
        char crash[256];
        snprintf(crash, sizeof crash, "fuzz-crash-%s-%ld.bin", target, it);
        FILE *f = getenv("FUZZ_SAVE_ALL") ? fopen(crash, "wb") : NULL; /* opt-in: before each run */
        if (f) { fwrite(input, 1, len, f); fclose(f); }
        fuzz_one(input, len);
        if (f) remove(crash);
        free(input);
    }
    printf("%s: %zu seeds and %ld mutants (seed %llu) ran clean\n", target, c.n, iterations, seed);
    free(buf);
    for (size_t i = 0; i < c.n; i++) { free(c.items[i].data); free(c.items[i].name); }
    free(c.items);
    return 0;
}

#endif
