/* safetensors: known values come back exactly in every dtype (also from unaligned memory),
 * lookups scale to many tensors, shards resolve through the index, and every lie a header can
 * tell fails with a message naming the file and the tensor. Fixtures:
 * tests/fixtures/gen/make_loader_fixtures.py (the safetensors library rejects the same bad
 * files, which the script checks). */
#include <stdint.h>
#include <string.h>

#include "model/safetensors.h"
#include "test.h"

#define ST_DIR "tests/fixtures/loader/st/"
#define CK_DIR "tests/fixtures/loader/ckpt/"

static const float want_vals[12] = {-1.25f, -1.0f, -0.75f, -0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f};

static void check_values(const sm_safetensors *st, const char *tensor, sm_dtype dtype, const char *file) {
    const sm_tensor *t = sm_safetensors_find(st, tensor);
    CHECK(t != NULL, "%s: '%s' not found", file, tensor);
    if (!t) return;
    CHECK(t->dtype == dtype && sm_tensor_numel(t) == 12, "%s: '%s' dtype %s numel %lld", file, tensor,
          sm_dtype_name(t->dtype), (long long)sm_tensor_numel(t));
    CHECK(!strcmp(t->name, tensor) && !strcmp(t->file, file), "%s: name/file %s %s", tensor, t->name, t->file);
    float out[12];
    sm_error err = {0};
    CHECK_OK(sm_tensor_to_f32(t, out, 12, &err), &err);
    CHECK(!memcmp(out, want_vals, sizeof out), "%s: '%s' values differ (first %g)", file, tensor, out[0]);
}

static void test_values(void) {
    sm_safetensors *st = NULL;
    sm_error err = {0};
    const char *path = ST_DIR "values.safetensors";
    CHECK_OK(sm_safetensors_open_file(path, &st, &err), &err);
    if (!st) return;
    CHECK(sm_safetensors_count(st) == 7, "count %d", sm_safetensors_count(st));
    check_values(st, "f32", SM_DTYPE_F32, path);
    check_values(st, "bf16", SM_DTYPE_BF16, path);
    check_values(st, "f16", SM_DTYPE_F16, path);
    const sm_tensor *t = sm_safetensors_find(st, "f32");
    CHECK(t && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 4 && t->nbytes == 48, "f32 shape");
    CHECK_OK(sm_tensor_expect_shape(t, 2, (int64_t[]){3, 4}, &err), &err);
    CHECK(sm_tensor_expect_shape(t, 2, (int64_t[]){4, 3}, &err) == SM_EFORMAT &&
              strstr(err.msg, "tensor 'f32' has shape [3, 4], expected [4, 3]") && strstr(err.msg, path),
          "expect_shape message: %s", err.msg);
    CHECK(sm_tensor_expect_shape_dims(t, 1, (int64_t[]){12}, "vocab_size", &err) == SM_EFORMAT &&
              strstr(err.msg, "expected [12] (vocab_size)"),
          "expect_shape_dims message: %s", err.msg);
    float out[12];
    CHECK(sm_tensor_to_f32(t, out, 11, &err) == SM_EINVAL && strstr(err.msg, "'f32'"), "wrong n: %s", err.msg);

    t = sm_safetensors_find(st, "f8"); /* E4M3FN: 1.0, -2.0, 2^-9 (subnormal), NaN */
    CHECK_OK(sm_tensor_to_f32(t, out, 4, &err), &err);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 1.0f / 512 && isnan(out[3]), "f8: %g %g %g %g", out[0],
          out[1], out[2], out[3]);
    t = sm_safetensors_find(st, "i64");
    int64_t ints[2];
    memcpy(ints, t->data, sizeof ints);
    CHECK(t->dtype == SM_DTYPE_I64 && ints[0] == 7 && ints[1] == -3, "i64 %lld %lld", (long long)ints[0],
          (long long)ints[1]);
    CHECK(sm_tensor_to_f32(t, out, 2, &err) == SM_EUNSUPPORTED && strstr(err.msg, "'i64'"), "i64 to f32: %s",
          err.msg);
    t = sm_safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && sm_tensor_numel(t) == 1, "scalar");
    CHECK_OK(sm_tensor_to_f32(t, out, 1, &err), &err);
    CHECK(out[0] == 42.0f, "scalar value %g", out[0]);
    t = sm_safetensors_find(st, "empty");
    CHECK(t && sm_tensor_numel(t) == 0 && t->nbytes == 0, "empty tensor");
    CHECK(sm_safetensors_find(st, "nope") == NULL && sm_safetensors_find(st, "") == NULL, "absent names");
    sm_safetensors_close(st);

    /* written by the safetensors library itself */
    path = ST_DIR "values_ref.safetensors";
    CHECK_OK(sm_safetensors_open_file(path, &st, &err), &err);
    if (!st) return;
    check_values(st, "f32", SM_DTYPE_F32, path);
    check_values(st, "f16", SM_DTYPE_F16, path);
    t = sm_safetensors_find(st, "i64");
    memcpy(ints, t->data, sizeof ints);
    CHECK(ints[0] == 7 && ints[1] == -3, "library i64");
    sm_safetensors_close(st);
}

/* A file image whose data section starts at an odd address: 16-bit and 32-bit elements are
 * misaligned, which UBSan would flag if the reader dereferenced them directly. */
static void test_unaligned(void) {
    char header[256];
    int hl = snprintf(header, sizeof header,
                      "{\"b\":{\"dtype\":\"BF16\",\"shape\":[12],\"data_offsets\":[0,24]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[12],\"data_offsets\":[24,48]},"
                      "\"f\":{\"dtype\":\"F32\",\"shape\":[12],\"data_offsets\":[48,96]}}");
    if (hl % 2 == 0) header[hl++] = ' '; /* odd header length: 8 + hl is odd */
    size_t len = 8 + (size_t)hl + 96;
    unsigned char *mem = malloc(len), *image = mem; /* malloc'd: aligned, so the data starts odd */
    for (int i = 0; i < 8; i++) image[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(image + 8, header, (size_t)hl);
    unsigned char *data = image + 8 + hl;
    for (int i = 0; i < 12; i++) {
        uint16_t b = sm_f32_to_bf16(want_vals[i]), h = sm_f32_to_f16(want_vals[i]);
        memcpy(data + 2 * i, &b, 2);
        memcpy(data + 24 + 2 * i, &h, 2);
        memcpy(data + 48 + 4 * i, &want_vals[i], 4);
    }
    sm_safetensors *st = NULL;
    sm_error err = {0};
    CHECK_OK(sm_safetensors_parse(image, len, "unaligned", &st, &err), &err);
    if (st) {
        CHECK(((uintptr_t)sm_safetensors_find(st, "b")->data & 1) == 1, "data really is misaligned");
        check_values(st, "b", SM_DTYPE_BF16, "unaligned");
        check_values(st, "h", SM_DTYPE_F16, "unaligned");
        check_values(st, "f", SM_DTYPE_F32, "unaligned");
        sm_safetensors_close(st);
    }
    free(mem);
}

/* Many tensors (more than any fixed table would hold), all found by name. */
static void test_many_tensors(void) {
    enum { N = 20000 };
    size_t cap = (size_t)N * 80 + 16;
    char *header = malloc(cap);
    size_t at = (size_t)snprintf(header, cap, "{");
    for (int i = 0; i < N; i++)
        at += (size_t)snprintf(header + at, cap - at, "%s\"model.layers.%d.w\":{\"dtype\":\"F32\",\"shape\":[1],"
                               "\"data_offsets\":[%d,%d]}", i ? "," : "", i, 4 * i, 4 * i + 4);
    at += (size_t)snprintf(header + at, cap - at, "}");
    size_t len = 8 + at + 4 * (size_t)N;
    unsigned char *image = calloc(1, len);
    for (int i = 0; i < 8; i++) image[i] = (unsigned char)((uint64_t)at >> (8 * i));
    memcpy(image + 8, header, at);
    for (int i = 0; i < N; i++) {
        float v = (float)i;
        memcpy(image + 8 + at + 4 * (size_t)i, &v, 4);
    }
    sm_safetensors *st = NULL;
    sm_error err = {0};
    CHECK_OK(sm_safetensors_parse(image, len, "many", &st, &err), &err);
    if (st) {
        CHECK(sm_safetensors_count(st) == N, "count %d", sm_safetensors_count(st));
        int wrong = 0;
        for (int i = 0; i < N; i++) {
            char name[64];
            snprintf(name, sizeof name, "model.layers.%d.w", i);
            const sm_tensor *t = sm_safetensors_find(st, name);
            float v = -1;
            if (t) sm_tensor_to_f32(t, &v, 1, &err);
            wrong += !t || v != (float)i;
        }
        CHECK(wrong == 0, "%d of %d tensors not found or wrong", wrong, N);
        CHECK(sm_safetensors_find(st, "model.layers.20000.w") == NULL, "absent name found");
        sm_safetensors_close(st);
    }
    free(image);
    free(header);
}

/* Every prefix of a valid file is either rejected cleanly or (the whole file) accepted. */
static void test_truncations(void) {
    FILE *f = fopen(ST_DIR "values.safetensors", "rb");
    CHECK(f != NULL, "open values.safetensors");
    if (!f) return;
    unsigned char buf[4096];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    int accepted = 0;
    for (size_t n = 0; n <= len; n++) {
        unsigned char *copy = malloc(n ? n : 1); /* exact-size copy so ASan sees any overread */
        memcpy(copy, buf, n);
        sm_safetensors *st = NULL;
        sm_error err = {0};
        sm_status s = sm_safetensors_parse(copy, n, "prefix", &st, &err);
        if (s == SM_OK) { accepted++; sm_safetensors_close(st); }
        else CHECK(s == SM_EFORMAT && strstr(err.msg, "prefix"), "prefix %zu: %s %s", n, sm_status_name(s), err.msg);
        free(copy);
    }
    CHECK(accepted == 1, "%d prefixes accepted (only the whole file should be)", accepted);
}

typedef struct bad_case {
    const char *file;
    sm_status code;
    const char *needle1, *needle2;
} bad_case;

static const bad_case bad_cases[] = {
    {"truncated", SM_EFORMAT, "'a.weight'", "outside the data section"},
    {"too_short", SM_EFORMAT, "5 bytes", "too short"},
    {"empty", SM_EFORMAT, "0 bytes", "too short"},
    {"header_too_long", SM_EFORMAT, "header length 1048576", "exceeds the file size"},
    {"offsets_out_of_range", SM_EFORMAT, "'b.weight'", "[16, 40] are outside the data section (24 bytes)"},
    {"overlap", SM_EFORMAT, "'b.weight' [8, 16) overlaps", "'a.weight' [0, 16)"},
    {"size_mismatch", SM_EFORMAT, "'a.weight'", "span 12 bytes, but f32 x 4 elements need 16"},
    {"gap", SM_EFORMAT, "'b.weight'", "unused"},
    {"duplicate", SM_EFORMAT, "duplicate tensor name", "a.weight"},
    {"unknown_dtype", SM_EFORMAT, "'a.weight'", "unknown dtype 'Q4_K'"},
    {"f64_dtype", SM_EUNSUPPORTED, "'a.weight'", "F64"},
    {"negative_shape", SM_EFORMAT, "'a.weight'", "shape[0]"},
    {"bad_json", SM_EFORMAT, "not valid JSON", "line 1"},
    {"not_object", SM_EFORMAT, "header", "object"},
};

static void test_bad_files(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *b = &bad_cases[i];
        char path[256];
        snprintf(path, sizeof path, ST_DIR "bad/%s.safetensors", b->file);
        sm_safetensors *st = (sm_safetensors *)1;
        sm_error err = {0};
        sm_status s = sm_safetensors_open_file(path, &st, &err);
        CHECK(s == b->code, "%s: status %s, want %s (%s)", b->file, sm_status_name(s), sm_status_name(b->code), err.msg);
        CHECK(st == NULL, "%s: no set returned on failure", b->file);
        CHECK(strstr(err.msg, path) && strstr(err.msg, b->needle1) && strstr(err.msg, b->needle2),
              "%s: message lacks the path, '%s' or '%s': %s", b->file, b->needle1, b->needle2, err.msg);
    }
    sm_safetensors *st;
    sm_error err = {0};
    CHECK(sm_safetensors_open_file(ST_DIR "nope.safetensors", &st, &err) == SM_EIO && strstr(err.msg, "nope.safetensors"),
          "missing file: %s", err.msg);
    CHECK(sm_safetensors_open_file(ST_DIR, &st, &err) == SM_EIO, "a directory is not a file: %s", err.msg);
}

static void test_sharded(void) {
    sm_safetensors *one = NULL, *sharded = NULL;
    sm_error err = {0};
    CHECK_OK(sm_safetensors_open_dir(CK_DIR "qwen3_moe_hub", &one, &err), &err);
    CHECK_OK(sm_safetensors_open_dir(CK_DIR "qwen3_moe_sharded", &sharded, &err), &err);
    if (one && sharded) {
        CHECK(sm_safetensors_file_count(one) == 1 && sm_safetensors_file_count(sharded) == 2, "file counts %d %d",
              sm_safetensors_file_count(one), sm_safetensors_file_count(sharded));
        CHECK(strstr(sm_safetensors_source(sharded), "model.safetensors.index.json (2 shards)") != NULL, "source %s",
              sm_safetensors_source(sharded));
        CHECK(sm_safetensors_count(one) == sm_safetensors_count(sharded), "tensor counts %d %d",
              sm_safetensors_count(one), sm_safetensors_count(sharded));
        int differ = 0, in_shard2 = 0;
        for (int i = 0; i < sm_safetensors_count(one); i++) {
            const sm_tensor *a = sm_safetensors_at(one, i), *b = sm_safetensors_find(sharded, a->name);
            differ += !b || a->nbytes != b->nbytes || memcmp(a->data, b->data, a->nbytes) != 0;
            in_shard2 += b && strstr(b->file, "model-00002-of-00002.safetensors") != NULL;
        }
        CHECK(differ == 0, "%d tensors differ between the single file and the shards", differ);
        CHECK(in_shard2 > 0 && in_shard2 < sm_safetensors_count(one), "%d tensors in shard 2", in_shard2);
    }
    sm_safetensors_close(one);
    sm_safetensors_close(sharded);

    const char *idx = CK_DIR "bad_missing_shard/model.safetensors.index.json";
    sm_status s = sm_safetensors_open_dir(CK_DIR "bad_missing_shard", &sharded, &err);
    CHECK(s == SM_EIO && strstr(err.msg, idx) && strstr(err.msg, "model-00003-of-00003.safetensors") &&
              strstr(err.msg, "'model.norm.weight'"),
          "missing shard: %s %s", sm_status_name(s), err.msg);
    idx = CK_DIR "bad_index_lies/model.safetensors.index.json";
    s = sm_safetensors_open_dir(CK_DIR "bad_index_lies", &sharded, &err);
    CHECK(s == SM_EFORMAT && strstr(err.msg, idx) && strstr(err.msg, "'model.norm.weight'") &&
              strstr(err.msg, "model-00001-of-00002.safetensors") && strstr(err.msg, "model-00002-of-00002.safetensors"),
          "index lies: %s %s", sm_status_name(s), err.msg);
    s = sm_safetensors_open_dir(CK_DIR "bad_no_weights", &sharded, &err);
    CHECK(s == SM_EIO && strstr(err.msg, "bad_no_weights") && strstr(err.msg, "model.safetensors"), "no weights: %s",
          err.msg);
}

int main(void) {
    test_values();
    test_unaligned();
    test_many_tensors();
    test_truncations();
    test_bad_files();
    test_sharded();
    TEST_MAIN_END
}
