/* src/model/safetensors.c — memory-mapped safetensors files, single or sharded.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [a, b], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {...}}
 * then the data section; offsets are relative to its start. As in the reference
 * implementation, the tensors must tile the data section exactly: sorted by offset, each
 * begins where the previous one ends and the last one ends at the end of the file. Nothing
 * read from the file is trusted before it has been checked against the file size. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers of real checkpoints are well under 10 MB; the bound keeps a hostile length from
 * making the JSON parser chew through gigabytes. */
#define HEADER_MAX_BYTES (100ull << 20)

typedef struct st_file {
    char *path;
    const unsigned char *image; /* the whole file */
    uint64_t len;
    bool mapped;                /* munmap on close (false: caller's buffer) */
} st_file;

struct sm_safetensors {
    char *source;               /* what was opened, for messages */
    st_file *files;
    int n_files, cap_files;
    sm_tensor *tensors;
    int n_tensors, cap_tensors;
    int *slots;                 /* open-addressing hash: tensor index + 1, 0 = empty */
    size_t n_slots;             /* power of two, at least twice n_tensors */
};

/* ---- dtypes --------------------------------------------------------------------------- */

static const struct { const char *name; sm_dtype dtype; } supported_dtypes[] = {
    {"F32", SM_DTYPE_F32}, {"BF16", SM_DTYPE_BF16}, {"F16", SM_DTYPE_F16},
    {"F8_E4M3", SM_DTYPE_F8_E4M3}, {"I64", SM_DTYPE_I64}, {"I32", SM_DTYPE_I32},
};
/* Valid safetensors dtypes this engine has no use for. */
static const char *const other_dtypes[] = {"BOOL", "U8", "I8", "I16", "U16", "U32", "U64", "F64",
                                           "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};

/* ---- hash map of names ---------------------------------------------------------------- */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static sm_status rehash(sm_safetensors *st, size_t n_slots, sm_error *err) {
    int *slots;
    SM_TRY(sm_calloc((void **)&slots, n_slots, sizeof *slots, "safetensors name index", err));
    for (int i = 0; i < st->n_tensors; i++) {
        size_t j = hash_name(st->tensors[i].name) & (n_slots - 1);
        while (slots[j]) j = (j + 1) & (n_slots - 1);
        slots[j] = i + 1;
    }
    free(st->slots);
    st->slots = slots;
    st->n_slots = n_slots;
    return SM_OK;
}

const sm_tensor *sm_safetensors_find(const sm_safetensors *st, const char *name) {
    if (!st || !st->n_slots) return NULL;
    for (size_t j = hash_name(name) & (st->n_slots - 1); st->slots[j]; j = (j + 1) & (st->n_slots - 1)) {
        const sm_tensor *t = &st->tensors[st->slots[j] - 1];
        if (!strcmp(t->name, name)) return t;
    }
    return NULL;
}

/* Append a tensor (name is copied). Fails on a name seen before, naming both places. */
static sm_status add_tensor(sm_safetensors *st, const sm_tensor *t, sm_error *err) {
    const sm_tensor *prev = sm_safetensors_find(st, t->name);
    if (prev)
        return sm_fail(err, SM_EFORMAT, "%s: duplicate tensor name '%s' (also in %s)", t->file, t->name, prev->file);
    if (st->n_tensors == st->cap_tensors) {
        int cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        sm_tensor *grown = realloc(st->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return sm_fail(err, SM_ENOMEM, "out of memory growing the tensor list to %d entries", cap);
        st->tensors = grown;
        st->cap_tensors = cap;
    }
    char *name = strdup(t->name);
    if (!name) return sm_fail(err, SM_ENOMEM, "out of memory copying tensor name '%s'", t->name);
    sm_tensor *slot = &st->tensors[st->n_tensors++];
    *slot = *t;
    slot->name = name;
    if ((size_t)st->n_tensors * 2 > st->n_slots) return rehash(st, st->n_slots ? st->n_slots * 2 : 128, err);
    size_t j = hash_name(name) & (st->n_slots - 1);
    while (st->slots[j]) j = (j + 1) & (st->n_slots - 1);
    st->slots[j] = st->n_tensors;
    return SM_OK;
}

/* ---- one file ------------------------------------------------------------------------- */

typedef struct span {
    uint64_t begin, end;
    int tensor;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static sm_status parse_dtype(const char *path, const char *name, json_t *v, sm_dtype *out, sm_error *err) {
    if (!json_is_string(v)) return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': 'dtype' must be a string", path, name);
    const char *s = json_string_value(v);
    for (size_t i = 0; i < sizeof supported_dtypes / sizeof supported_dtypes[0]; i++)
        if (!strcmp(s, supported_dtypes[i].name)) { *out = supported_dtypes[i].dtype; return SM_OK; }
    for (size_t i = 0; i < sizeof other_dtypes / sizeof other_dtypes[0]; i++)
        if (!strcmp(s, other_dtypes[i]))
            return sm_fail(err, SM_EUNSUPPORTED,
                           "%s: tensor '%s' has dtype %s, which is not supported (F32, BF16, F16, F8_E4M3, I64, I32)",
                           path, name, s);
    return sm_fail(err, SM_EFORMAT, "%s: tensor '%s' has unknown dtype '%.40s'", path, name, s);
}

static bool json_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* One header entry -> t (views the data section at data). */
static sm_status parse_entry(const char *path, const char *name, json_t *v, const unsigned char *data,
                             uint64_t data_len, sm_tensor *t, span *sp, sm_error *err) {
    if (!json_is_object(v)) return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': entry must be an object", path, name);
    memset(t, 0, sizeof *t);
    t->name = name;
    t->file = path;
    SM_TRY(parse_dtype(path, name, json_object_get(v, "dtype"), &t->dtype, err));

    json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape))
        return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': 'shape' must be a list of sizes", path, name);
    if (json_array_size(shape) > SM_TENSOR_MAX_DIMS)
        return sm_fail(err, SM_EUNSUPPORTED, "%s: tensor '%s' has %zu dimensions; at most %d are supported", path,
                       name, json_array_size(shape), SM_TENSOR_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t size;
        if (!json_u64(json_array_get(shape, (size_t)d), &size))
            return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': shape[%d] must be a non-negative integer", path, name, d);
        if (__builtin_mul_overflow(numel, size, &numel) || numel > (uint64_t)INT64_MAX)
            return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': element count overflows at shape[%d]", path, name, d);
        t->shape[d] = (int64_t)size;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)sm_dtype_size(t->dtype), &nbytes))
        return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': byte size overflows", path, name);

    json_t *offsets = json_object_get(v, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_u64(json_array_get(offsets, 0), &begin) ||
        !json_u64(json_array_get(offsets, 1), &end))
        return sm_fail(err, SM_EFORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end] (non-negative integers)",
                       path, name);
    if (begin > end || end > data_len)
        return sm_fail(err, SM_EFORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] are outside the data section (%llu bytes)%s", path,
                       name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len,
                       begin <= end ? "; is the file truncated?" : "");
    if (end - begin != nbytes)
        return sm_fail(err, SM_EFORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes, but %s x %llu elements need %llu",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin), sm_dtype_name(t->dtype), (unsigned long long)numel,
                       (unsigned long long)nbytes);
    t->data = data + begin;
    t->nbytes = nbytes;
    sp->begin = begin;
    sp->end = end;
    return SM_OK;
}

/* The tensors must tile the data section: no overlap (two tensors sharing bytes), no gap. */
static sm_status check_tiling(const char *path, span *spans, int n, const sm_safetensors *st, uint64_t data_len,
                              sm_error *err) {
    qsort(spans, (size_t)n, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const char *name = st->tensors[spans[i].tensor].name;
        if (spans[i].begin < at)
            return sm_fail(err, SM_EFORMAT, "%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", path,
                           name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                           st->tensors[spans[i - 1].tensor].name, (unsigned long long)spans[i - 1].begin,
                           (unsigned long long)spans[i - 1].end);
        if (spans[i].begin > at)
            return sm_fail(err, SM_EFORMAT, "%s: tensor '%s' starts at data offset %llu, leaving bytes [%llu, %llu) unused",
                           path, name, (unsigned long long)spans[i].begin, (unsigned long long)at,
                           (unsigned long long)spans[i].begin);
        at = spans[i].end;
    }
    if (at != data_len)
        return sm_fail(err, SM_EFORMAT, "%s: data section is %llu bytes but the tensors cover %llu", path,
                       (unsigned long long)data_len, (unsigned long long)at);
    return SM_OK;
}

/* Parse file number file_index (already in st->files) and append its tensors. */
static sm_status parse_file(sm_safetensors *st, int file_index, sm_error *err) {
    const st_file *f = &st->files[file_index];
    const char *path = f->path;
    if (f->len < 8)
        return sm_fail(err, SM_EFORMAT, "%s: file is %llu bytes, too short for a safetensors header", path,
                       (unsigned long long)f->len);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | f->image[i];
    if (header_len > f->len - 8)
        return sm_fail(err, SM_EFORMAT, "%s: safetensors header length %llu exceeds the file size %llu", path,
                       (unsigned long long)header_len, (unsigned long long)f->len);
    if (header_len > HEADER_MAX_BYTES)
        return sm_fail(err, SM_EFORMAT, "%s: safetensors header length %llu exceeds the %llu-byte limit", path,
                       (unsigned long long)header_len, HEADER_MAX_BYTES);
    const unsigned char *data = f->image + 8 + header_len;
    uint64_t data_len = f->len - 8 - header_len;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->image + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key)
            return sm_fail(err, SM_EFORMAT, "%s: duplicate tensor name in the safetensors header (line %d, column %d): %s",
                           path, jerr.line, jerr.column, jerr.text);
        return sm_fail(err, SM_EFORMAT, "%s: safetensors header is not valid JSON (line %d, column %d): %s", path,
                       jerr.line, jerr.column, jerr.text);
    }
    sm_status status = SM_OK;
    span *spans = NULL;
    if (!json_is_object(root)) {
        status = sm_fail(err, SM_EFORMAT, "%s: safetensors header must be a JSON object", path);
        goto done;
    }
    status = sm_calloc((void **)&spans, json_object_size(root), sizeof *spans, "safetensors spans", err);
    if (status) goto done;
    int n_spans = 0;
    const char *name;
    json_t *value;
    json_object_foreach(root, name, value) {
        if (!strcmp(name, "__metadata__")) {
            if (!json_is_object(value)) {
                status = sm_fail(err, SM_EFORMAT, "%s: '__metadata__' must be an object", path);
                goto done;
            }
            continue;
        }
        sm_tensor t;
        status = parse_entry(path, name, value, data, data_len, &t, &spans[n_spans], err);
        if (status) goto done;
        spans[n_spans++].tensor = st->n_tensors;
        status = add_tensor(st, &t, err);
        if (status) goto done;
    }
    status = check_tiling(path, spans, n_spans, st, data_len, err);
done:
    free(spans);
    json_decref(root);
    return status;
}

/* ---- sets ----------------------------------------------------------------------------- */

static sm_status set_create(const char *source, sm_safetensors **out, sm_error *err) {
    sm_safetensors *st;
    SM_TRY(sm_calloc((void **)&st, 1, sizeof *st, "safetensors set", err));
    st->source = strdup(source);
    if (!st->source) { free(st); return sm_fail(err, SM_ENOMEM, "out of memory opening %s", source); }
    *out = st;
    return SM_OK;
}

static sm_status add_file(sm_safetensors *st, const char *path, const void *image, uint64_t len, bool mapped,
                          sm_error *err) {
    if (st->n_files == st->cap_files) {
        int cap = st->cap_files ? st->cap_files * 2 : 4;
        st_file *grown = realloc(st->files, (size_t)cap * sizeof *grown);
        if (!grown) return sm_fail(err, SM_ENOMEM, "out of memory opening %s", path);
        st->files = grown;
        st->cap_files = cap;
    }
    char *copy = strdup(path);
    if (!copy) return sm_fail(err, SM_ENOMEM, "out of memory opening %s", path);
    st->files[st->n_files++] = (st_file){.path = copy, .image = image, .len = len, .mapped = mapped};
    return SM_OK;
}

/* Map path read-only and add it to the set (not yet parsed). */
static sm_status map_file(sm_safetensors *st, const char *path, sm_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sm_fail(err, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return sm_fail(err, SM_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sm_fail(err, SM_EIO, "%s: not a regular file", path);
    }
    uint64_t len = (uint64_t)sb.st_size;
    void *image = NULL;
    if (len > 0) { /* mmap refuses zero length; parse_file reports the short file */
        image = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (image == MAP_FAILED) {
            int e = errno;
            close(fd);
            return sm_fail(err, SM_EIO, "%s: cannot mmap %llu bytes: %s", path, (unsigned long long)len, strerror(e));
        }
    }
    close(fd);
    sm_status status = add_file(st, path, image, len, len > 0, err);
    if (status && image) munmap(image, (size_t)len);
    return status;
}

sm_status sm_safetensors_parse(const void *buf, uint64_t len, const char *path, sm_safetensors **out, sm_error *err) {
    *out = NULL;
    sm_safetensors *st;
    SM_TRY(set_create(path, &st, err));
    sm_status status = add_file(st, path, buf, len, false, err);
    if (!status) status = parse_file(st, 0, err);
    if (status) { sm_safetensors_close(st); return status; }
    *out = st;
    return SM_OK;
}

sm_status sm_safetensors_open_file(const char *path, sm_safetensors **out, sm_error *err) {
    *out = NULL;
    sm_safetensors *st;
    SM_TRY(set_create(path, &st, err));
    sm_status status = map_file(st, path, err);
    if (!status) status = parse_file(st, 0, err);
    if (status) { sm_safetensors_close(st); return status; }
    *out = st;
    return SM_OK;
}

/* ---- sharded checkpoints -------------------------------------------------------------- */

typedef struct shard_ref {
    const char *file;   /* as written in weight_map */
    const char *tensor; /* one tensor that lives there, for messages */
} shard_ref;

static int shard_ref_cmp(const void *a, const void *b) {
    return strcmp(((const shard_ref *)a)->file, ((const shard_ref *)b)->file);
}

static sm_status read_small_file(const char *path, size_t max, char **text, size_t *len, sm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sm_fail(err, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    sm_status status = SM_OK;
    if (fseek(f, 0, SEEK_END) != 0 || ftell(f) < 0) status = sm_fail(err, SM_EIO, "%s: cannot seek: %s", path, strerror(errno));
    long size = status ? 0 : ftell(f);
    if (!status && (size_t)size > max)
        status = sm_fail(err, SM_EFORMAT, "%s: %ld bytes is larger than the %zu-byte limit", path, size, max);
    if (!status) status = sm_alloc((void **)text, (size_t)size + 1, path, err);
    if (!status) {
        rewind(f);
        *len = fread(*text, 1, (size_t)size, f);
        if (*len != (size_t)size) {
            status = sm_fail(err, SM_EIO, "%s: short read", path);
            free(*text);
            *text = NULL;
        }
    }
    fclose(f);
    return status;
}

/* Open the shards listed in index_path's weight_map, each once, and check that every tensor
 * the index lists is in the shard it names. */
static sm_status open_sharded(sm_safetensors *st, const char *dir, const char *index_path, sm_error *err) {
    char *text = NULL;
    size_t len = 0;
    SM_TRY(read_small_file(index_path, HEADER_MAX_BYTES, &text, &len, err));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return sm_fail(err, SM_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", index_path, jerr.line,
                       jerr.column, jerr.text);
    sm_status status = SM_OK;
    shard_ref *refs = NULL;
    char *path = NULL;
    json_t *map = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        status = sm_fail(err, SM_EFORMAT, "%s: missing 'weight_map' object", index_path);
        goto done;
    }
    size_t n_refs = 0;
    status = sm_calloc((void **)&refs, json_object_size(map), sizeof *refs, "shard list", err);
    if (status) goto done;
    const char *name;
    json_t *value;
    json_object_foreach(map, name, value) {
        const char *file = json_string_value(value);
        if (!file || !file[0] || strchr(file, '/') || !strcmp(file, "..")) {
            status = sm_fail(err, SM_EFORMAT, "%s: weight_map['%s'] must be a file name in the same directory",
                             index_path, name);
            goto done;
        }
        refs[n_refs++] = (shard_ref){.file = file, .tensor = name};
    }
    qsort(refs, n_refs, sizeof *refs, shard_ref_cmp);
    size_t path_cap = strlen(dir) + 1;
    for (size_t i = 0; i < n_refs; i++)
        if (strlen(refs[i].file) + strlen(dir) + 2 > path_cap) path_cap = strlen(refs[i].file) + strlen(dir) + 2;
    status = sm_alloc((void **)&path, path_cap, "shard path", err);
    if (status) goto done;
    for (size_t i = 0; i < n_refs; i++) {
        if (i > 0 && !strcmp(refs[i].file, refs[i - 1].file)) continue;
        snprintf(path, path_cap, "%s/%s", dir, refs[i].file);
        status = map_file(st, path, err);
        if (!status) status = parse_file(st, st->n_files - 1, err);
        if (status) {
            sm_error_prefix(err, "%s: shard '%s' (holding tensor '%s'): ", index_path, refs[i].file, refs[i].tensor);
            goto done;
        }
    }
    json_object_foreach(map, name, value) {
        snprintf(path, path_cap, "%s/%s", dir, json_string_value(value));
        const sm_tensor *t = sm_safetensors_find(st, name);
        if (!t) {
            status = sm_fail(err, SM_EFORMAT, "%s: tensor '%s' is listed in shard '%s', but %s does not contain it",
                             index_path, name, json_string_value(value), path);
            goto done;
        }
        if (strcmp(t->file, path) != 0) {
            status = sm_fail(err, SM_EFORMAT, "%s: tensor '%s' is listed in shard '%s', but it is in %s", index_path,
                             name, json_string_value(value), t->file);
            goto done;
        }
    }
done:
    free(path);
    free(refs);
    json_decref(root);
    return status;
}

sm_status sm_safetensors_open_dir(const char *dir, sm_safetensors **out, sm_error *err) {
    *out = NULL;
    size_t cap = strlen(dir) + 64;
    char *index_path = NULL, *single_path = NULL;
    SM_TRY(sm_alloc((void **)&index_path, cap, "path", err));
    sm_status status = sm_alloc((void **)&single_path, cap, "path", err);
    if (status) { free(index_path); return status; }
    snprintf(index_path, cap, "%s/model.safetensors.index.json", dir);
    snprintf(single_path, cap, "%s/model.safetensors", dir);
    sm_safetensors *st = NULL;
    if (access(index_path, F_OK) == 0) {
        status = set_create(index_path, &st, err);
        if (!status) status = open_sharded(st, dir, index_path, err);
        if (!status && st->n_files > 1) {
            char source[SM_ERROR_MSG_CAP];
            snprintf(source, sizeof source, "%s (%d shards)", index_path, st->n_files);
            char *copy = strdup(source);
            if (copy) { free(st->source); st->source = copy; }
        }
    } else if (access(single_path, F_OK) == 0) {
        status = sm_safetensors_open_file(single_path, &st, err);
    } else {
        status = sm_fail(err, SM_EIO, "%s: no model.safetensors or model.safetensors.index.json found", dir);
    }
    free(index_path);
    free(single_path);
    if (status) { sm_safetensors_close(st); return status; }
    *out = st;
    return SM_OK;
}

void sm_safetensors_close(sm_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].mapped) munmap((void *)st->files[i].image, (size_t)st->files[i].len);
        free(st->files[i].path);
    }
    free(st->tensors);
    free(st->files);
    free(st->slots);
    free(st->source);
    free(st);
}

int sm_safetensors_count(const sm_safetensors *st) { return st ? st->n_tensors : 0; }

const sm_tensor *sm_safetensors_at(const sm_safetensors *st, int index) {
    return st && index >= 0 && index < st->n_tensors ? &st->tensors[index] : NULL;
}

const char *sm_safetensors_source(const sm_safetensors *st) { return st ? st->source : ""; }

int sm_safetensors_file_count(const sm_safetensors *st) { return st ? st->n_files : 0; }

/* ---- tensors -------------------------------------------------------------------------- */

int64_t sm_tensor_numel(const sm_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
}

sm_status sm_tensor_expect_shape_dims(const sm_tensor *t, int ndim, const int64_t *shape, const char *dims,
                                      sm_error *err) {
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (same) return SM_OK;
    char got[128], want[128];
    format_shape(got, sizeof got, t->ndim, t->shape);
    format_shape(want, sizeof want, ndim, shape);
    return sm_fail(err, SM_EFORMAT, "%s: tensor '%s' has shape %s, expected %s%s%s%s", t->file ? t->file : "?",
                   t->name ? t->name : "?", got, want, dims ? " (" : "", dims ? dims : "", dims ? ")" : "");
}

sm_status sm_tensor_expect_shape(const sm_tensor *t, int ndim, const int64_t *shape, sm_error *err) {
    return sm_tensor_expect_shape_dims(t, ndim, shape, NULL, err);
}

/* FP8 E4M3 (the "fn" variant: no infinities, S.1111.111 is NaN). */
static float f8_e4m3_to_f32(uint8_t b) {
    int sign = b >> 7, exp = (b >> 3) & 0xf, mant = b & 7;
    float v;
    if (exp == 0xf && mant == 7) v = __builtin_nanf("");
    else if (exp == 0) v = (float)mant / 8.0f / 64.0f; /* subnormal: mant/8 * 2^-6 */
    else v = (1.0f + (float)mant / 8.0f) * __builtin_ldexpf(1.0f, exp - 7);
    return sign ? -v : v;
}

sm_status sm_tensor_to_f32(const sm_tensor *t, float *dst, int64_t n, sm_error *err) {
    int64_t numel = sm_tensor_numel(t);
    if (n != numel)
        return sm_fail(err, SM_EINVAL, "%s: tensor '%s' has %lld elements, caller expected %lld", t->file, t->name,
                       (long long)numel, (long long)n);
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case SM_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float)); /* memcpy: the mapping may be unaligned */
        return SM_OK;
    case SM_DTYPE_BF16:
    case SM_DTYPE_F16: {
        /* Copy through an aligned bounce buffer: reading uint16_t straight from an odd address
         * is undefined behaviour (and UBSan says so). */
        uint16_t bounce[2048];
        for (int64_t i = 0; i < n; i += 2048) {
            size_t chunk = (size_t)(n - i < 2048 ? n - i : 2048);
            memcpy(bounce, src + i * 2, chunk * 2);
            sm_convert_to_f32(dst + i, bounce, t->dtype, chunk);
        }
        return SM_OK;
    }
    case SM_DTYPE_F8_E4M3:
        for (int64_t i = 0; i < n; i++) dst[i] = f8_e4m3_to_f32(src[i]);
        return SM_OK;
    default:
        return sm_fail(err, SM_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; expected a floating-point tensor", t->file,
                       t->name, sm_dtype_name(t->dtype));
    }
}
