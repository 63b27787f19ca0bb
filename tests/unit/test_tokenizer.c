/* Tokenizer tests: ids and decoded text must equal those of the `tokenizers` library exactly
 * (fixtures made by tests/fixtures/gen/make_tokenizer_fixtures.py), and broken tokenizer.json
 * files must fail with messages that name the file and the JSON path. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "test.h"

static const char *const fixtures[] = {"gpt2", "llama3", "qwen2", "olmoe", "llama2", "mixtral_meta", "affixes"};
/* Those without a normalizer that changes text or an <unk>: decode(encode(t)) == t. */
static const char *const lossless[] = {"gpt2", "llama3", "llama2"};

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

static void fixture_path(char *buf, size_t cap, const char *name, const char *file) {
    const char *root = getenv("SPECMOE_SOURCE_DIR");
    snprintf(buf, cap, "%s/tests/fixtures/tokenizers/%s/%s", root ? root : ".", name, file);
}

static bool ids_equal(const int *ids, int n, const json_t *want) {
    if (!json_is_array(want) || (size_t)n != json_array_size(want)) return false;
    for (int i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, (size_t)i)) != ids[i]) return false;
    return true;
}

static void print_ids(const char *what, const int *ids, int n) {
    fprintf(stderr, "  %s: [", what);
    for (int i = 0; i < n; i++) fprintf(stderr, i ? ", %d" : "%d", ids[i]);
    fprintf(stderr, "]\n");
}

static void check_encode(const sm_tokenizer *tok, const char *name, int line, const char *text, size_t len,
                         bool special, const json_t *want) {
    int *ids = NULL, n = 0;
    sm_error err = {0};
    CHECK_OK(sm_tokenizer_encode(tok, text, len, special, &ids, &n, &err), &err);
    bool same = ids_equal(ids, n, want);
    CHECK(same, "%s line %d: ids (add_special=%d) of '%.*s' differ from tokenizers'", name, line, special, (int)len,
          text);
    if (!same) {
        print_ids("got ", ids, n);
        char *w = json_dumps(want, JSON_COMPACT);
        fprintf(stderr, "  want: %s\n", w);
        free(w);
    }
    free(ids);
}

static void check_decode(const sm_tokenizer *tok, const char *name, int line, const json_t *ids_json, bool skip,
                         const json_t *want) {
    size_t n = json_array_size(ids_json);
    int *ids = malloc((n + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int)json_integer_value(json_array_get(ids_json, i));
    char *text = NULL;
    size_t len = 0;
    sm_error err = {0};
    CHECK_OK(sm_tokenizer_decode(tok, ids, (int)n, skip, &text, &len, &err), &err);
    bool same = text && json_string_length(want) == len && !memcmp(json_string_value(want), text, len);
    CHECK(same, "%s line %d: decode(skip_special=%d) = '%s', tokenizers says '%s'", name, line, skip,
          text ? text : "(null)", json_string_value(want));
    free(text);
    free(ids);
}

/* Every case of every fixture: ids with and without special tokens, and decoded text. */
static void test_fixture(const char *name) {
    char path[1024];
    fixture_path(path, sizeof path, name, "tokenizer.json");
    sm_tokenizer *tok = NULL;
    sm_error err = {0};
    CHECK_OK(sm_tokenizer_load(path, &tok, &err), &err);
    if (!tok) return;
    fixture_path(path, sizeof path, name, "cases.jsonl");
    char *cases = read_file(path, NULL);
    CHECK(cases != NULL, "cannot read %s", path);
    int line = 0, n_cases = 0;
    for (char *p = cases, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl) nl = p + strlen(p) - 1;
        line++;
        json_error_t jerr;
        json_t *c = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &jerr);
        CHECK(c != NULL, "%s:%d: %s", path, line, jerr.text);
        if (!c) continue;
        n_cases++;
        json_t *text = json_object_get(c, "text");
        const json_t *ids = json_object_get(c, "ids");
        if (text) {
            const char *s = json_string_value(text);
            size_t len = json_string_length(text);
            check_encode(tok, name, line, s, len, true, ids);
            check_encode(tok, name, line, s, len, false, json_object_get(c, "ids_no_special"));
        } else {
            ids = json_object_get(c, "decode_ids");
        }
        check_decode(tok, name, line, ids, false, json_object_get(c, "decoded"));
        check_decode(tok, name, line, ids, true, json_object_get(c, "decoded_skip_special"));
        json_decref(c);
    }
    CHECK(n_cases > 50, "%s: only %d cases", name, n_cases);
    free(cases);
    sm_tokenizer_free(tok);
}

/* Random text of ASCII, accents, combining marks, CJK, emoji and whitespace runs survives
   decode(encode(text)) unchanged with the byte-level and byte-fallback tokenizers. */
static void test_round_trip(const char *name) {
    static const uint32_t pool[] = {' ', ' ', ' ', '\n', '\t', 'a', 'e', 's', 't', 'T', 'h', '0', '7', '\'', '.', '<', '>',
                                    0xE9, 0xC5, 0x301, 0x30A, 0x4E2D, 0x6587, 0xD55C, 0x1F600, 0x1F389, 0x200D, 0x3000,
                                    0xA0, 0x2028, 0xFFFD, 0x10FFFF, 0x1100, 0x1161};
    char path[1024];
    fixture_path(path, sizeof path, name, "tokenizer.json");
    sm_tokenizer *tok = NULL;
    sm_error err = {0};
    CHECK_OK(sm_tokenizer_load(path, &tok, &err), &err);
    if (!tok) return;
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (int iter = 0; iter < 300; iter++) {
        char text[400];
        size_t len = 0;
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int n_chars = (int)((rng >> 33) % 60);
        for (int k = 0; k < n_chars; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t cp = pool[(rng >> 33) % (sizeof pool / sizeof pool[0])];
            if (cp < 0x80) text[len++] = (char)cp;
            else if (cp < 0x800) { text[len++] = (char)(0xC0 | cp >> 6); text[len++] = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                text[len++] = (char)(0xE0 | cp >> 12);
                text[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                text[len++] = (char)(0x80 | (cp & 0x3F));
            } else {
                text[len++] = (char)(0xF0 | cp >> 18);
                text[len++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                text[len++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                text[len++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        int *ids = NULL, n = 0;
        char *back = NULL;
        size_t back_len = 0;
        CHECK_OK(sm_tokenizer_encode(tok, text, len, false, &ids, &n, &err), &err);
        CHECK_OK(sm_tokenizer_decode(tok, ids, n, false, &back, &back_len, &err), &err);
        CHECK(back && back_len == len && !memcmp(back, text, len), "%s: decode(encode('%.*s')) = '%s'", name, (int)len,
              text, back ? back : "(null)");
        free(ids);
        free(back);
    }
    sm_tokenizer_free(tok);
}

/* The fingerprint depends on the vocabulary, not on how the file is written. */
static void test_fingerprint(void) {
    char path[1024];
    uint64_t fp[sizeof fixtures / sizeof fixtures[0]];
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        fixture_path(path, sizeof path, fixtures[i], "tokenizer.json");
        size_t len;
        char *text = read_file(path, &len);
        sm_tokenizer *a = NULL, *b = NULL;
        sm_error err = {0};
        CHECK_OK(sm_tokenizer_parse(text, len, path, &a, &err), &err);
        json_t *root = json_loadb(text, len, 0, NULL);
        char *resorted = json_dumps(root, JSON_SORT_KEYS | JSON_INDENT(1));
        CHECK_OK(sm_tokenizer_parse(resorted, strlen(resorted), "resorted.json", &b, &err), &err);
        fp[i] = sm_tokenizer_fingerprint(a);
        CHECK(a && b && fp[i] == sm_tokenizer_fingerprint(b), "%s: fingerprint changes with key order", fixtures[i]);
        for (size_t k = 0; k < i; k++) CHECK(fp[k] != fp[i], "%s and %s share a fingerprint", fixtures[k], fixtures[i]);
        /* one merge fewer is a different tokenizer */
        json_array_remove(json_object_get(json_object_get(root, "model"), "merges"), 0);
        char *fewer = json_dumps(root, JSON_COMPACT);
        sm_tokenizer *c = NULL;
        CHECK_OK(sm_tokenizer_parse(fewer, strlen(fewer), "fewer.json", &c, &err), &err);
        CHECK(c && sm_tokenizer_fingerprint(c) != fp[i], "%s: fingerprint ignores merges", fixtures[i]);
        sm_tokenizer_free(a);
        sm_tokenizer_free(b);
        sm_tokenizer_free(c);
        free(fewer);
        free(resorted);
        json_decref(root);
        free(text);
    }
}

static void test_vocab_queries(void) {
    char path[1024];
    fixture_path(path, sizeof path, "llama2", "tokenizer.json");
    sm_tokenizer *tok = NULL;
    sm_error err = {0};
    CHECK_OK(sm_tokenizer_load(path, &tok, &err), &err);
    if (!tok) return;
    CHECK(sm_tokenizer_token_to_id(tok, "<s>") == 1, "<s> -> %d", sm_tokenizer_token_to_id(tok, "<s>"));
    CHECK(sm_tokenizer_token_to_id(tok, "<0x0A>") == 3 + 10, "<0x0A> -> %d", sm_tokenizer_token_to_id(tok, "<0x0A>"));
    CHECK(sm_tokenizer_token_to_id(tok, "no such token") == -1, "absent token has an id");
    CHECK(!strcmp(sm_tokenizer_id_to_token(tok, 2), "</s>"), "id 2 -> %s", sm_tokenizer_id_to_token(tok, 2));
    CHECK(sm_tokenizer_id_to_token(tok, sm_tokenizer_vocab_size(tok)) == NULL, "id past the end has a token");
    CHECK(sm_tokenizer_is_special(tok, 1) && !sm_tokenizer_is_special(tok, 3 + 10), "special flags");
    int *ids = NULL, n = 0;
    CHECK(sm_tokenizer_encode(tok, "a\xC3", 2, false, &ids, &n, &err) == SM_EINVAL && strstr(err.msg, "UTF-8"),
          "invalid UTF-8 input: %s", err.msg);
    char *text = NULL;
    int bad = sm_tokenizer_vocab_size(tok) + 5;
    CHECK(sm_tokenizer_decode(tok, &bad, 1, false, &text, NULL, &err) == SM_ERANGE && strstr(err.msg, path),
          "out-of-range id: %s", err.msg);
    sm_tokenizer_free(tok);
}

/* ---- broken files ---------------------------------------------------------------------------- */

static json_t *fixture_json(const char *name) {
    char path[1024];
    fixture_path(path, sizeof path, name, "tokenizer.json");
    json_error_t jerr;
    return json_load_file(path, 0, &jerr);
}

static void expect_failure(json_t *root, sm_status code, const char *needle, const char *what) {
    char *text = json_dumps(root, JSON_COMPACT);
    sm_tokenizer *tok = NULL;
    sm_error err = {0};
    sm_status st = sm_tokenizer_parse(text, strlen(text), "bad/tok.json", &tok, &err);
    CHECK(st == code && tok == NULL, "%s: got %s (%s), want %s", what, sm_status_name(st), err.msg,
          sm_status_name(code));
    CHECK(strstr(err.msg, "bad/tok.json") && strstr(err.msg, needle), "%s: message '%s' lacks '%s'", what, err.msg,
          needle);
    sm_tokenizer_free(tok);
    free(text);
    json_decref(root);
}

static void test_bad_files(void) {
    json_t *j;
    j = fixture_json("gpt2");
    json_object_set_new(json_object_get(j, "model"), "type", json_string("WordPiece"));
    expect_failure(j, SM_EUNSUPPORTED, "model.type: 'WordPiece' is not supported (BPE only)", "WordPiece model");

    j = fixture_json("gpt2");
    json_object_set_new(json_object_get(j, "model"), "vocab", json_array());
    expect_failure(j, SM_EFORMAT, "model.vocab: expected an object", "vocab as array");

    j = fixture_json("gpt2");
    json_array_set_new(json_object_get(json_object_get(j, "model"), "merges"), 3, json_integer(7));
    expect_failure(j, SM_EFORMAT, "model.merges[3]", "merge as integer");

    j = fixture_json("gpt2");
    json_array_set_new(json_object_get(json_object_get(j, "model"), "merges"), 2, json_string("zzzq yyyq"));
    expect_failure(j, SM_EFORMAT, "model.merges[2]: token 'zzzq' is not in the vocabulary", "merge of unknown token");

    j = fixture_json("gpt2");
    json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "x", json_string("7"));
    expect_failure(j, SM_EFORMAT, "model.vocab['x']: expected a token id", "id as string");

    j = fixture_json("gpt2");
    json_object_set_new(j, "added_tokens", json_string("oops"));
    expect_failure(j, SM_EFORMAT, "added_tokens: expected an array", "added_tokens as string");

    j = fixture_json("gpt2");
    json_object_set_new(json_array_get(json_object_get(j, "added_tokens"), 0), "special", json_integer(1));
    expect_failure(j, SM_EFORMAT, "added_tokens[0].special: expected true or false", "special as integer");

    j = fixture_json("llama3");
    json_t *split = json_array_get(json_object_get(json_object_get(j, "pre_tokenizer"), "pretokenizers"), 0);
    json_object_set_new(json_object_get(split, "pattern"), "Regex", json_string("(unclosed"));
    expect_failure(j, SM_EUNSUPPORTED, "pre_tokenizer.pretokenizers[0].pattern.Regex: regex '(unclosed'", "bad regex");

    j = fixture_json("llama3");
    json_object_set_new(json_object_get(j, "pre_tokenizer"), "type", json_string("Whitespace"));
    expect_failure(j, SM_EUNSUPPORTED, "pre_tokenizer.type: 'Whitespace' is not supported", "Whitespace pre-tokenizer");

    j = fixture_json("llama2");
    json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "NFKC"));
    expect_failure(j, SM_EUNSUPPORTED, "normalizer.type: 'NFKC' is not supported", "NFKC normalizer");

    j = fixture_json("llama2");
    json_object_set_new(json_array_get(json_object_get(json_object_get(j, "decoder"), "decoders"), 3), "content",
                        json_string("ab"));
    expect_failure(j, SM_EFORMAT, "decoder.decoders[3].content: expected exactly one character", "Strip of 2 chars");

    j = fixture_json("llama2");
    json_object_set_new(json_object_get(j, "model"), "dropout", json_real(0.1));
    expect_failure(j, SM_EUNSUPPORTED, "model.dropout", "BPE dropout");

    j = fixture_json("llama2");
    json_object_set_new(json_object_get(j, "model"), "surprise", json_true());
    expect_failure(j, SM_EUNSUPPORTED, "model.surprise: unknown key", "unknown model key");

    j = fixture_json("mixtral_meta");
    json_object_set_new(json_object_get(j, "pre_tokenizer"), "prepend_scheme", json_string("sometimes"));
    expect_failure(j, SM_EUNSUPPORTED, "pre_tokenizer.prepend_scheme: 'sometimes'", "bad prepend scheme");

    j = fixture_json("mixtral_meta");
    json_object_set_new(json_object_get(j, "post_processor"), "special_tokens", json_object());
    expect_failure(j, SM_EFORMAT, "special token '<s>' is not in post_processor.special_tokens", "template token");

    j = fixture_json("mixtral_meta");
    json_object_set_new(j, "truncation", json_pack("{s:i}", "max_length", 16));
    expect_failure(j, SM_EUNSUPPORTED, "truncation", "truncation");

    j = json_array();
    expect_failure(j, SM_EFORMAT, "expected an object, got an array", "top-level array");

    /* truncated and missing files, through sm_tokenizer_load */
    char path[1024];
    fixture_path(path, sizeof path, "qwen2", "tokenizer.json");
    size_t len;
    char *text = read_file(path, &len);
    const char *tmp = "test_tokenizer_truncated.json";
    FILE *f = fopen(tmp, "wb");
    CHECK(f != NULL, "cannot write %s", tmp);
    if (f) {
        fwrite(text, 1, len / 2, f);
        fclose(f);
    }
    sm_tokenizer *tok = NULL;
    sm_error err = {0};
    sm_status st = sm_tokenizer_load(tmp, &tok, &err);
    CHECK(st == SM_EFORMAT && strstr(err.msg, tmp) && strstr(err.msg, "invalid JSON"), "truncated: %s", err.msg);
    remove(tmp);
    st = sm_tokenizer_load("no/such/tokenizer.json", &tok, &err);
    CHECK(st == SM_EIO && strstr(err.msg, "no/such/tokenizer.json"), "missing file: %s", err.msg);
    /* every prefix of a valid file is either rejected cleanly or (never) accepted */
    for (size_t cut = 0; cut < len; cut += len / 97 + 1) {
        st = sm_tokenizer_parse(text, cut, "prefix.json", &tok, &err);
        CHECK(st == SM_EFORMAT && tok == NULL, "prefix of %zu bytes: %s", cut, sm_status_name(st));
    }
    free(text);
}

int main(void) {
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) test_fixture(fixtures[i]);
    for (size_t i = 0; i < sizeof lossless / sizeof lossless[0]; i++) test_round_trip(lossless[i]);
    test_fingerprint();
    test_vocab_queries();
    test_bad_files();
    TEST_MAIN_END
}
