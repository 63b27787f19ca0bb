/* src/model/tokenizer_load.c — tokenizer.json (as the `tokenizers` library writes it) read with
 * jansson into the pipeline of tokenizer_internal.h. Anything the encoder cannot reproduce exactly
 * is refused with SM_EUNSUPPORTED naming the file and the JSON path, never silently ignored:
 * a tokenizer that gives different ids would corrupt every experiment quietly. */
#include "model/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* Ids beyond this are refused: tables indexed by id are allocated up front. */
#define MAX_TOKEN_ID (1 << 24)
#define KEYPATH_CAP 256

/* GPT-2's split regex, which ByteLevel uses when use_regex is true. */
static const char gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct loader {
    const char *file;
    sm_tokenizer *t;
    size_t norm_cap, pre_cap, dec_cap, post_cap, added_cap;
} loader;

/* ---- JSON helpers: every failure names the file and the key path --------------------------- */

static const char *kind_name(const json_t *j) {
    if (!j) return "nothing";
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

/* Key paths longer than KEYPATH_CAP are cut, ending in "..." (they only appear in messages). */
static const char *keypath_fmt(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *keypath_fmt(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, KEYPATH_CAP, fmt, ap);
    va_end(ap);
    if (n >= KEYPATH_CAP) memcpy(buf + KEYPATH_CAP - 4, "...", 4);
    return buf;
}

static const char *join(char *buf, const char *path, const char *key) {
    return !path || !*path ? keypath_fmt(buf, "%s", key) : keypath_fmt(buf, "%s.%s", path, key);
}

static const char *index_path(char *buf, const char *path, const char *key, size_t i) {
    char tmp[KEYPATH_CAP];
    return keypath_fmt(buf, "%s[%zu]", join(tmp, path, key), i);
}

static sm_status bad_type(const loader *L, const char *path, const json_t *j, const char *want, sm_error *err) {
    return sm_fail(err, SM_EFORMAT, "%s: %s: expected %s, got %s", L->file, path, want, kind_name(j));
}

/* Only keys in allowed (NULL-terminated; "type" always) may appear: an unknown key may change
   the ids, so it is refused rather than ignored. */
static sm_status check_keys(const loader *L, const json_t *obj, const char *path, const char *const *allowed,
                            sm_error *err) {
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        bool ok = !strcmp(key, "type");
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(key, *a);
        if (!ok) {
            char kp[KEYPATH_CAP];
            return sm_fail(err, SM_EUNSUPPORTED, "%s: %s: unknown key (not supported)", L->file, join(kp, path, key));
        }
    }
    return SM_OK;
}

static sm_status get_string(const loader *L, const json_t *obj, const char *path, const char *key, bool required,
                            const char **s, size_t *n, sm_error *err) {
    char kp[KEYPATH_CAP];
    json_t *v = json_object_get(obj, key);
    *s = NULL;
    *n = 0;
    if (!v || json_is_null(v)) {
        if (required) return sm_fail(err, SM_EFORMAT, "%s: %s: missing", L->file, join(kp, path, key));
        return SM_OK;
    }
    if (!json_is_string(v)) return bad_type(L, join(kp, path, key), v, "a string", err);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return SM_OK;
}

static sm_status get_bool(const loader *L, const json_t *obj, const char *path, const char *key, bool dflt, bool *out,
                          sm_error *err) {
    char kp[KEYPATH_CAP];
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v)) return SM_OK;
    if (!json_is_boolean(v)) return bad_type(L, join(kp, path, key), v, "true or false", err);
    *out = json_is_true(v);
    return SM_OK;
}

static sm_status get_count(const loader *L, const json_t *obj, const char *path, const char *key, size_t dflt,
                           size_t *out, sm_error *err) {
    char kp[KEYPATH_CAP];
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v)) return SM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad_type(L, join(kp, path, key), v, "a non-negative integer", err);
    *out = (size_t)json_integer_value(v);
    return SM_OK;
}

static sm_status get_id(const loader *L, const json_t *v, const char *path, int *id, sm_error *err) {
    if (!json_is_integer(v)) return bad_type(L, path, v, "a token id (integer)", err);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= MAX_TOKEN_ID)
        return sm_fail(err, SM_EFORMAT, "%s: %s: token id %lld is out of range [0, %d)", L->file, path, (long long)x,
                       MAX_TOKEN_ID);
    *id = (int)x;
    return SM_OK;
}

static sm_status dup_bytes(const char *s, size_t n, char **out, const char *what, sm_error *err) {
    SM_TRY(sm_alloc((void **)out, n + 1, what, err));
    if (n) memcpy(*out, s, n);
    (*out)[n] = '\0';
    return SM_OK;
}

/* The component's "type"; an object without one is refused. */
static sm_status get_type(const loader *L, const json_t *obj, const char *path, const char **type, sm_error *err) {
    if (!json_is_object(obj)) return bad_type(L, path, obj, "an object", err);
    size_t n;
    return get_string(L, obj, path, "type", true, type, &n, err);
}

static sm_status unsupported_type(const loader *L, const char *path, const char *type, const char *supported,
                                  sm_error *err) {
    return sm_fail(err, SM_EUNSUPPORTED, "%s: %s.type: '%s' is not supported (supported: %s)", L->file, path, type,
                   supported);
}

/* {"String": "..."} or {"Regex": "..."} */
static sm_status get_pattern(const loader *L, const json_t *obj, const char *path, const char *key,
                             sm_tok_pattern *p, sm_error *err) {
    char kp[KEYPATH_CAP], kp2[KEYPATH_CAP];
    join(kp, path, key);
    json_t *v = json_object_get(obj, key);
    if (!v) return sm_fail(err, SM_EFORMAT, "%s: %s: missing", L->file, kp);
    if (!json_is_object(v) || json_object_size(v) != 1)
        return bad_type(L, kp, v, "an object with one key, \"String\" or \"Regex\"", err);
    json_t *lit = json_object_get(v, "String"), *re = json_object_get(v, "Regex");
    if (lit) {
        if (!json_is_string(lit)) return bad_type(L, join(kp2, kp, "String"), lit, "a string", err);
        SM_TRY(dup_bytes(json_string_value(lit), json_string_length(lit), &p->literal, "tokenizer pattern", err));
        p->literal_len = json_string_length(lit);
        return SM_OK;
    }
    if (re) {
        if (!json_is_string(re)) return bad_type(L, join(kp2, kp, "Regex"), re, "a string", err);
        return sm_tok_regex_compile(json_string_value(re), json_string_length(re), L->file, join(kp2, kp, "Regex"),
                                    &p->regex, err);
    }
    return sm_fail(err, SM_EUNSUPPORTED, "%s: %s: pattern kind '%s' is not supported (String or Regex)", L->file, kp,
                   json_object_iter_key(json_object_iter(v)));
}

static void pattern_free(sm_tok_pattern *p) {
    if (p->regex) pcre2_code_free(p->regex);
    free(p->literal);
    memset(p, 0, sizeof *p);
}

/* A single character given as a string ("▁"): its code point and UTF-8 bytes. */
static sm_status get_char(const loader *L, const json_t *obj, const char *path, const char *key, const char *dflt,
                          uint32_t *cp, char utf8[4], size_t *utf8_len, sm_error *err) {
    const char *s;
    size_t n;
    char kp[KEYPATH_CAP];
    SM_TRY(get_string(L, obj, path, key, false, &s, &n, err));
    if (!s) {
        s = dflt;
        n = strlen(dflt);
    }
    int k = sm_tok_utf8_decode((const unsigned char *)s, n, cp);
    if (k == 0 || (size_t)k != n)
        return sm_fail(err, SM_EFORMAT, "%s: %s: expected exactly one character, got '%s'", L->file,
                       join(kp, path, key), s);
    if (utf8) memcpy(utf8, s, (size_t)k);
    if (utf8_len) *utf8_len = (size_t)k;
    return SM_OK;
}

static sm_status get_prepend_scheme(const loader *L, const json_t *obj, const char *path,
                                    sm_tok_prepend_scheme *out, sm_error *err) {
    const char *s;
    size_t n;
    char kp[KEYPATH_CAP];
    bool legacy;
    /* Files written before prepend_scheme existed say add_prefix_space instead. */
    SM_TRY(get_bool(L, obj, path, "add_prefix_space", true, &legacy, err));
    *out = legacy ? SM_PREPEND_ALWAYS : SM_PREPEND_NEVER;
    SM_TRY(get_string(L, obj, path, "prepend_scheme", false, &s, &n, err));
    if (!s) return SM_OK;
    if (!strcmp(s, "always")) *out = SM_PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = SM_PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = SM_PREPEND_NEVER;
    else
        return sm_fail(err, SM_EUNSUPPORTED, "%s: %s: '%s' is not a prepend scheme (always, first, never)", L->file,
                       join(kp, path, "prepend_scheme"), s);
    return SM_OK;
}

/* ---- model: BPE ----------------------------------------------------------------------------- */

static sm_status add_merge(loader *L, const char *path, const char *a, size_t a_len, const char *b, size_t b_len,
                           int rank, size_t *merge_cap, sm_error *err) {
    sm_tok_bpe *m = &L->t->bpe;
    long ea = sm_tok_strmap_find(&m->vocab, a, a_len), eb = sm_tok_strmap_find(&m->vocab, b, b_len);
    if (ea < 0 || eb < 0)
        return sm_fail(err, SM_EFORMAT, "%s: %s: token '%.*s' is not in the vocabulary", L->file, path,
                       (int)(ea < 0 ? a_len : b_len), ea < 0 ? a : b);
    /* The merged token drops the right side's continuing_subword_prefix, as `tokenizers` does. */
    if (b_len < m->prefix_len)
        return sm_fail(err, SM_EFORMAT, "%s: %s: token '%.*s' is shorter than continuing_subword_prefix", L->file, path,
                       (int)b_len, b);
    sm_tok_buf joined = {0};
    sm_status st = sm_tok_buf_append(&joined, a, a_len, err);
    if (st == SM_OK) st = sm_tok_buf_append(&joined, b + m->prefix_len, b_len - m->prefix_len, err);
    long en = st == SM_OK ? sm_tok_strmap_find(&m->vocab, joined.data, joined.len) : -1;
    if (st == SM_OK && en < 0)
        st = sm_fail(err, SM_EFORMAT, "%s: %s: merged token '%s' is not in the vocabulary", L->file, path, joined.data);
    sm_tok_buf_free(&joined);
    SM_TRY(st);
    int ia = m->vocab.entries[ea].value, ib = m->vocab.entries[eb].value, in = m->vocab.entries[en].value;
    SM_TRY(sm_tok_pairmap_put(&m->merges, ia, ib, rank, in, err));
    SM_TRY(sm_tok_grow((void **)&m->merge_pairs, merge_cap, 3 * ((size_t)m->n_merges + 1), sizeof(int), "BPE merges",
                       err));
    m->merge_pairs[3 * m->n_merges] = ia;
    m->merge_pairs[3 * m->n_merges + 1] = ib;
    m->merge_pairs[3 * m->n_merges + 2] = in;
    m->n_merges++;
    return SM_OK;
}

static sm_status load_merges(loader *L, const json_t *merges, sm_error *err) {
    char kp[KEYPATH_CAP];
    if (!merges || json_is_null(merges)) return SM_OK;
    if (!json_is_array(merges)) return bad_type(L, "model.merges", merges, "an array", err);
    size_t cap = 0;
    int rank = 0;
    for (size_t i = 0; i < json_array_size(merges); i++) {
        json_t *e = json_array_get(merges, i);
        index_path(kp, "model", "merges", i);
        if (rank >= INT32_MAX - 1) return sm_fail(err, SM_ERANGE, "%s: %s: too many merges", L->file, kp);
        if (json_is_string(e)) { /* "a b": exactly two tokens separated by one space */
            const char *s = json_string_value(e);
            size_t n = json_string_length(e);
            if (n >= 8 && !memcmp(s, "#version", 8)) continue; /* a merges.txt header kept as a line */
            const char *sp = memchr(s, ' ', n);
            if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
                return sm_fail(err, SM_EFORMAT, "%s: %s: '%s' is not two tokens separated by one space", L->file, kp, s);
            SM_TRY(add_merge(L, kp, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp + 1 - s), rank++, &cap, err));
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                   json_is_string(json_array_get(e, 1))) {
            json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            SM_TRY(add_merge(L, kp, json_string_value(a), json_string_length(a), json_string_value(b),
                             json_string_length(b), rank++, &cap, err));
        } else {
            return bad_type(L, kp, e, "\"a b\" or [\"a\", \"b\"]", err);
        }
    }
    return SM_OK;
}

static sm_status load_model(loader *L, const json_t *model, sm_error *err) {
    static const char *const keys[] = {"dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                                       "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges", NULL};
    sm_tok_bpe *m = &L->t->bpe;
    if (!model) return sm_fail(err, SM_EFORMAT, "%s: model: missing", L->file);
    if (!json_is_object(model)) return bad_type(L, "model", model, "an object", err);
    json_t *type = json_object_get(model, "type");
    /* Old files leave the type out; a vocabulary with merges is BPE. */
    if (type && !json_is_string(type)) return bad_type(L, "model.type", type, "a string", err);
    if (type && strcmp(json_string_value(type), "BPE"))
        return sm_fail(err, SM_EUNSUPPORTED, "%s: model.type: '%s' is not supported (BPE only)", L->file,
                       json_string_value(type));
    if (!type && !json_object_get(model, "merges"))
        return sm_fail(err, SM_EUNSUPPORTED, "%s: model: no type and no merges: not a BPE model (BPE only)", L->file);
    SM_TRY(check_keys(L, model, "model", keys, err));

    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout)) {
        if (!json_is_number(dropout)) return bad_type(L, "model.dropout", dropout, "a number or null", err);
        if (json_number_value(dropout) != 0.0)
            return sm_fail(err, SM_EUNSUPPORTED, "%s: model.dropout: %g is not supported (BPE dropout is random; "
                           "encoding here is deterministic)", L->file, json_number_value(dropout));
    }
    SM_TRY(get_bool(L, model, "model", "fuse_unk", false, &m->fuse_unk, err));
    SM_TRY(get_bool(L, model, "model", "byte_fallback", false, &m->byte_fallback, err));
    SM_TRY(get_bool(L, model, "model", "ignore_merges", false, &m->ignore_merges, err));
    const char *s;
    size_t n;
    SM_TRY(get_string(L, model, "model", "continuing_subword_prefix", false, &s, &n, err));
    if (s) {
        SM_TRY(dup_bytes(s, n, &m->prefix, "continuing_subword_prefix", err));
        m->prefix_len = n;
    }
    SM_TRY(get_string(L, model, "model", "end_of_word_suffix", false, &s, &n, err));
    if (s) {
        SM_TRY(dup_bytes(s, n, &m->suffix, "end_of_word_suffix", err));
        m->suffix_len = n;
    }

    json_t *vocab = json_object_get(model, "vocab");
    if (!vocab) return sm_fail(err, SM_EFORMAT, "%s: model.vocab: missing", L->file);
    if (!json_is_object(vocab)) return bad_type(L, "model.vocab", vocab, "an object", err);
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t key_len = json_object_iter_key_len(it);
        char kp[KEYPATH_CAP];
        keypath_fmt(kp, "model.vocab['%.64s']", key);
        int id;
        SM_TRY(get_id(L, json_object_iter_value(it), kp, &id, err));
        SM_TRY(sm_tok_strmap_put(&m->vocab, key, key_len, id, NULL, err));
    }
    SM_TRY(load_merges(L, json_object_get(model, "merges"), err));

    m->unk_id = -1;
    SM_TRY(get_string(L, model, "model", "unk_token", false, &s, &n, err));
    if (s) { /* an unk_token missing from the vocabulary cannot be emitted: unknowns are dropped */
        long e = sm_tok_strmap_find(&m->vocab, s, n);
        if (e >= 0) m->unk_id = m->vocab.entries[e].value;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        long e = sm_tok_strmap_find(&m->vocab, name, 6);
        m->byte_ids[b] = e >= 0 ? m->vocab.entries[e].value : -1;
    }
    return SM_OK;
}

/* ---- normalizer ------------------------------------------------------------------------------ */

static sm_status push_norm(loader *L, sm_tok_norm_step **step, sm_error *err) {
    sm_tokenizer *t = L->t;
    SM_TRY(sm_tok_grow((void **)&t->norm, &L->norm_cap, (size_t)t->n_norm + 1, sizeof *t->norm, "normalizer steps", err));
    *step = &t->norm[t->n_norm++];
    memset(*step, 0, sizeof **step);
    return SM_OK;
}

static sm_status load_normalizer(loader *L, const json_t *j, const char *path, sm_error *err) {
    if (!j || json_is_null(j)) return SM_OK;
    const char *type, *s;
    size_t n;
    sm_tok_norm_step *step;
    SM_TRY(get_type(L, j, path, &type, err));
    if (!strcmp(type, "NFC")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){NULL}, err));
        SM_TRY(push_norm(L, &step, err));
        step->kind = SM_NORM_NFC;
    } else if (!strcmp(type, "Prepend")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"prepend", NULL}, err));
        SM_TRY(get_string(L, j, path, "prepend", true, &s, &n, err));
        SM_TRY(push_norm(L, &step, err));
        step->kind = SM_NORM_PREPEND;
        SM_TRY(dup_bytes(s, n, &step->text, "Prepend normalizer", err));
        step->text_len = n;
    } else if (!strcmp(type, "Replace")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"pattern", "content", NULL}, err));
        SM_TRY(get_string(L, j, path, "content", true, &s, &n, err));
        SM_TRY(push_norm(L, &step, err));
        step->kind = SM_NORM_REPLACE;
        SM_TRY(dup_bytes(s, n, &step->text, "Replace normalizer", err));
        step->text_len = n;
        SM_TRY(get_pattern(L, j, path, "pattern", &step->pattern, err));
    } else if (!strcmp(type, "Sequence")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"normalizers", NULL}, err));
        json_t *list = json_object_get(j, "normalizers");
        char kp[KEYPATH_CAP];
        if (!json_is_array(list)) return bad_type(L, join(kp, path, "normalizers"), list, "an array", err);
        for (size_t i = 0; i < json_array_size(list); i++)
            SM_TRY(load_normalizer(L, json_array_get(list, i), index_path(kp, path, "normalizers", i), err));
    } else {
        return unsupported_type(L, path, type, "NFC, Prepend, Replace, Sequence", err);
    }
    return SM_OK;
}

/* ---- pre-tokenizer --------------------------------------------------------------------------- */

static sm_status push_pre(loader *L, sm_tok_pre_step **step, sm_error *err) {
    sm_tokenizer *t = L->t;
    SM_TRY(sm_tok_grow((void **)&t->pre, &L->pre_cap, (size_t)t->n_pre + 1, sizeof *t->pre, "pre-tokenizer steps", err));
    *step = &t->pre[t->n_pre++];
    memset(*step, 0, sizeof **step);
    return SM_OK;
}

static sm_status get_behavior(const loader *L, const json_t *j, const char *path, sm_tok_split_behavior *out,
                              sm_error *err) {
    static const struct { const char *name; sm_tok_split_behavior b; } names[] = {
        {"Removed", SM_SPLIT_REMOVED}, {"Isolated", SM_SPLIT_ISOLATED},
        {"MergedWithPrevious", SM_SPLIT_MERGED_WITH_PREVIOUS}, {"MergedWithNext", SM_SPLIT_MERGED_WITH_NEXT},
        {"Contiguous", SM_SPLIT_CONTIGUOUS}};
    const char *s;
    size_t n;
    char kp[KEYPATH_CAP];
    SM_TRY(get_string(L, j, path, "behavior", true, &s, &n, err));
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].b;
            return SM_OK;
        }
    return sm_fail(err, SM_EUNSUPPORTED,
                   "%s: %s: '%s' is not a split behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                   "Contiguous)", L->file, join(kp, path, "behavior"), s);
}

static sm_status load_pre(loader *L, const json_t *j, const char *path, sm_error *err) {
    if (!j || json_is_null(j)) return SM_OK;
    const char *type;
    sm_tok_pre_step *step;
    char kp[KEYPATH_CAP];
    SM_TRY(get_type(L, j, path, &type, err));
    if (!strcmp(type, "ByteLevel")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"add_prefix_space", "trim_offsets", "use_regex", NULL}, err));
        bool add_prefix_space, use_regex;
        SM_TRY(get_bool(L, j, path, "add_prefix_space", true, &add_prefix_space, err));
        SM_TRY(get_bool(L, j, path, "use_regex", true, &use_regex, err));
        SM_TRY(push_pre(L, &step, err));
        step->kind = SM_PRE_BYTE_LEVEL;
        step->add_prefix_space = add_prefix_space;
        if (use_regex)
            SM_TRY(sm_tok_regex_compile(gpt2_regex, strlen(gpt2_regex), L->file, join(kp, path, "use_regex"),
                                        &step->pattern.regex, err));
    } else if (!strcmp(type, "Split")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"pattern", "behavior", "invert", NULL}, err));
        sm_tok_split_behavior behavior = SM_SPLIT_ISOLATED;
        bool invert;
        SM_TRY(get_behavior(L, j, path, &behavior, err));
        SM_TRY(get_bool(L, j, path, "invert", false, &invert, err));
        SM_TRY(push_pre(L, &step, err));
        step->kind = SM_PRE_SPLIT;
        step->behavior = behavior;
        step->invert = invert;
        SM_TRY(get_pattern(L, j, path, "pattern", &step->pattern, err));
    } else if (!strcmp(type, "Metaspace")) {
        SM_TRY(check_keys(L, j, path,
                          (const char *const[]){"replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep",
                                                NULL}, err));
        uint32_t cp;
        char rep[4];
        size_t rep_len;
        sm_tok_prepend_scheme scheme;
        bool split;
        SM_TRY(get_char(L, j, path, "replacement", "\xE2\x96\x81", &cp, rep, &rep_len, err));
        SM_TRY(get_prepend_scheme(L, j, path, &scheme, err));
        SM_TRY(get_bool(L, j, path, "split", true, &split, err));
        SM_TRY(push_pre(L, &step, err));
        step->kind = SM_PRE_METASPACE;
        memcpy(step->replacement, rep, rep_len);
        step->replacement_len = rep_len;
        step->prepend_scheme = scheme;
        step->split = split;
    } else if (!strcmp(type, "Sequence")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"pretokenizers", NULL}, err));
        json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list)) return bad_type(L, join(kp, path, "pretokenizers"), list, "an array", err);
        for (size_t i = 0; i < json_array_size(list); i++)
            SM_TRY(load_pre(L, json_array_get(list, i), index_path(kp, path, "pretokenizers", i), err));
    } else {
        return unsupported_type(L, path, type, "ByteLevel, Split, Metaspace, Sequence", err);
    }
    return SM_OK;
}

/* ---- decoder --------------------------------------------------------------------------------- */

static sm_status push_dec(loader *L, sm_tok_dec_step **step, sm_error *err) {
    sm_tokenizer *t = L->t;
    SM_TRY(sm_tok_grow((void **)&t->dec, &L->dec_cap, (size_t)t->n_dec + 1, sizeof *t->dec, "decoder steps", err));
    *step = &t->dec[t->n_dec++];
    memset(*step, 0, sizeof **step);
    return SM_OK;
}

static sm_status load_decoder(loader *L, const json_t *j, const char *path, sm_error *err) {
    if (!j || json_is_null(j)) return SM_OK;
    const char *type, *s;
    size_t n;
    sm_tok_dec_step *step;
    char kp[KEYPATH_CAP];
    SM_TRY(get_type(L, j, path, &type, err));
    L->t->has_decoder = true;
    if (!strcmp(type, "ByteLevel")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"add_prefix_space", "trim_offsets", "use_regex", NULL}, err));
        SM_TRY(push_dec(L, &step, err));
        step->kind = SM_DEC_BYTE_LEVEL;
    } else if (!strcmp(type, "ByteFallback") || !strcmp(type, "Fuse")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){NULL}, err));
        SM_TRY(push_dec(L, &step, err));
        step->kind = type[0] == 'B' ? SM_DEC_BYTE_FALLBACK : SM_DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"content", "start", "stop", NULL}, err));
        uint32_t ch;
        size_t start, stop;
        SM_TRY(get_char(L, j, path, "content", " ", &ch, NULL, NULL, err));
        SM_TRY(get_count(L, j, path, "start", 0, &start, err));
        SM_TRY(get_count(L, j, path, "stop", 0, &stop, err));
        SM_TRY(push_dec(L, &step, err));
        step->kind = SM_DEC_STRIP;
        step->ch = ch;
        step->start = start;
        step->stop = stop;
    } else if (!strcmp(type, "Replace")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"pattern", "content", NULL}, err));
        SM_TRY(get_string(L, j, path, "content", true, &s, &n, err));
        SM_TRY(push_dec(L, &step, err));
        step->kind = SM_DEC_REPLACE;
        SM_TRY(dup_bytes(s, n, &step->text, "Replace decoder", err));
        step->text_len = n;
        SM_TRY(get_pattern(L, j, path, "pattern", &step->pattern, err));
    } else if (!strcmp(type, "Metaspace")) {
        SM_TRY(check_keys(L, j, path,
                          (const char *const[]){"replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep",
                                                NULL}, err));
        uint32_t ch;
        sm_tok_prepend_scheme scheme;
        bool split;
        SM_TRY(get_char(L, j, path, "replacement", "\xE2\x96\x81", &ch, NULL, NULL, err));
        SM_TRY(get_prepend_scheme(L, j, path, &scheme, err));
        SM_TRY(get_bool(L, j, path, "split", true, &split, err));
        SM_TRY(push_dec(L, &step, err));
        step->kind = SM_DEC_METASPACE;
        step->ch = ch;
        step->prepend_scheme = scheme;
    } else if (!strcmp(type, "Sequence")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"decoders", NULL}, err));
        json_t *list = json_object_get(j, "decoders");
        if (!json_is_array(list)) return bad_type(L, join(kp, path, "decoders"), list, "an array", err);
        for (size_t i = 0; i < json_array_size(list); i++)
            SM_TRY(load_decoder(L, json_array_get(list, i), index_path(kp, path, "decoders", i), err));
    } else {
        return unsupported_type(L, path, type, "ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence", err);
    }
    return SM_OK;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

/* Ids as `tokenizers` assigns them when it reads the file (the "id" written there is only checked
   with a warning): a token of the model's vocabulary keeps its id, any other goes after the
   model's vocabulary and the added tokens so far. */
static int added_token_id(const sm_tokenizer *t, const char *content, size_t len) {
    long e = sm_tok_strmap_find(&t->bpe.vocab, content, len);
    if (e >= 0) return t->bpe.vocab.entries[e].value;
    int model_size = (int)t->bpe.vocab.n_entries, max = -1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id > max) max = t->added[i].id;
    if (max < 0) return model_size;
    return max >= model_size || model_size == 0 ? max + 1 : model_size;
}

static sm_status load_added(loader *L, const json_t *list, sm_error *err) {
    static const char *const keys[] = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special",
                                       NULL};
    sm_tokenizer *t = L->t;
    if (!list || json_is_null(list)) return SM_OK;
    if (!json_is_array(list)) return bad_type(L, "added_tokens", list, "an array", err);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char kp[KEYPATH_CAP];
        json_t *j = json_array_get(list, i);
        index_path(kp, "", "added_tokens", i);
        if (!json_is_object(j)) return bad_type(L, kp, j, "an object", err);
        SM_TRY(check_keys(L, j, kp, keys, err));
        const char *content;
        size_t len;
        int file_id = 0;
        bool special, single_word, lstrip, rstrip, normalized;
        SM_TRY(get_string(L, j, kp, "content", true, &content, &len, err));
        json_t *id = json_object_get(j, "id");
        if (id) {
            char kp2[KEYPATH_CAP];
            SM_TRY(get_id(L, id, join(kp2, kp, "id"), &file_id, err));
        }
        SM_TRY(get_bool(L, j, kp, "special", false, &special, err));
        SM_TRY(get_bool(L, j, kp, "single_word", false, &single_word, err));
        SM_TRY(get_bool(L, j, kp, "lstrip", false, &lstrip, err));
        SM_TRY(get_bool(L, j, kp, "rstrip", false, &rstrip, err));
        SM_TRY(get_bool(L, j, kp, "normalized", !special, &normalized, err));
        /* `tokenizers` ignores empty tokens and repeats of a content (the first one stays). */
        if (len == 0 || sm_tok_strmap_find(&t->added_map, content, len) >= 0) continue;
        int tok_id = added_token_id(t, content, len);
        if (tok_id >= MAX_TOKEN_ID)
            return sm_fail(err, SM_EFORMAT, "%s: %s: token id %d is out of range", L->file, kp, tok_id);
        SM_TRY(sm_tok_grow((void **)&t->added, &L->added_cap, (size_t)t->n_added + 1, sizeof *t->added, "added tokens",
                           err));
        sm_tok_added *a = &t->added[t->n_added];
        memset(a, 0, sizeof *a);
        SM_TRY(dup_bytes(content, len, &a->content, "added token", err));
        t->n_added++;
        a->len = len;
        a->id = tok_id;
        a->special = special;
        a->single_word = single_word;
        a->lstrip = lstrip;
        a->rstrip = rstrip;
        a->normalized = normalized;
        SM_TRY(sm_tok_strmap_put(&t->added_map, content, len, t->n_added - 1, NULL, err));
    }
    return SM_OK;
}

/* The two tries: special tokens come before the others, as `tokenizers` orders its patterns, and
   a normalized token is matched by its normalized content. */
static sm_status build_tries(loader *L, sm_error *err) {
    sm_tokenizer *t = L->t;
    t->raw_trie.empty = t->norm_trie.empty = true;
    sm_tok_buf norm = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return sm_fail(err, SM_ENOMEM, "out of memory creating regex match data");
    sm_status st = SM_OK;
    for (int pass = 0; pass < 2 && st == SM_OK; pass++) {
        for (int i = 0; i < t->n_added && st == SM_OK; i++) {
            const sm_tok_added *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            if (!a->normalized) {
                st = sm_tok_trie_add(&t->raw_trie, a->content, a->len, i, err);
                continue;
            }
            st = sm_tok_normalize(t, md, a->content, a->len, &norm, err);
            if (st == SM_OK) st = sm_tok_trie_add(&t->norm_trie, norm.data, norm.len, i, err);
        }
    }
    bool single_word = false;
    for (int i = 0; i < t->n_added; i++) single_word |= t->added[i].single_word;
    if (st == SM_OK && single_word) /* Rust regex's \w, for single_word's neighbour test */
        st = sm_tok_regex_compile("\\w", 2, L->file, "added_tokens.single_word", &t->word_char, err);
    sm_tok_buf_free(&norm);
    pcre2_match_data_free(md);
    return st;
}

/* ---- post-processor ---------------------------------------------------------------------------- */

static sm_status push_post(loader *L, sm_tok_post_step **step, sm_error *err) {
    sm_tokenizer *t = L->t;
    SM_TRY(sm_tok_grow((void **)&t->post, &L->post_cap, (size_t)t->n_post + 1, sizeof *t->post, "post-processor steps",
                       err));
    *step = &t->post[t->n_post++];
    memset(*step, 0, sizeof **step);
    return SM_OK;
}

/* Append an item (n_ids < 0: the sequence itself) to a template. */
static sm_status template_push(sm_tok_post_step *step, size_t *cap, const int *ids, int n_ids, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&step->items, cap, (size_t)step->n_items + 1, sizeof *step->items,
                       "post-processor template", err));
    sm_tok_post_item *it = &step->items[step->n_items++];
    it->ids = NULL;
    it->n_ids = 0;
    if (n_ids < 0) return SM_OK;
    SM_TRY(sm_alloc((void **)&it->ids, ((size_t)n_ids + 1) * sizeof(int), "post-processor ids", err));
    if (n_ids) memcpy(it->ids, ids, (size_t)n_ids * sizeof(int));
    it->n_ids = n_ids;
    return SM_OK;
}

/* ["</s>", 2] of RobertaProcessing / BertProcessing */
static sm_status get_token_pair(const loader *L, const json_t *j, const char *path, const char *key, int *id,
                                sm_error *err) {
    char kp[KEYPATH_CAP];
    json_t *v = json_object_get(j, key);
    join(kp, path, key);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(json_array_get(v, 0)))
        return bad_type(L, kp, v, "[\"token\", id]", err);
    return get_id(L, json_array_get(v, 1), kp, id, err);
}

static sm_status load_template(loader *L, const json_t *j, const char *path, sm_error *err) {
    char kp[KEYPATH_CAP], kp2[KEYPATH_CAP];
    json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single)) return bad_type(L, join(kp, path, "single"), single, "an array", err);
    if (specials && !json_is_object(specials))
        return bad_type(L, join(kp, path, "special_tokens"), specials, "an object", err);
    sm_tok_post_step *step;
    size_t cap = 0;
    SM_TRY(push_post(L, &step, err));
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        index_path(kp, path, "single", i);
        json_t *sp = json_object_get(item, "SpecialToken"), *seq = json_object_get(item, "Sequence");
        if (!json_is_object(item) || json_object_size(item) != 1 || (!sp && !seq))
            return bad_type(L, kp, item, "{\"SpecialToken\": ...} or {\"Sequence\": ...}", err);
        json_t *inner = sp ? sp : seq;
        const char *name;
        size_t name_len;
        join(kp2, kp, sp ? "SpecialToken" : "Sequence");
        if (!json_is_object(inner)) return bad_type(L, kp2, inner, "an object", err);
        SM_TRY(get_string(L, inner, kp2, "id", true, &name, &name_len, err));
        if (seq) {
            if (strcmp(name, "A"))
                return sm_fail(err, SM_EUNSUPPORTED, "%s: %s.id: sequence '%s' in a single-sequence template (only A)",
                               L->file, kp2, name);
            SM_TRY(template_push(step, &cap, NULL, -1, err));
            continue;
        }
        json_t *def = specials ? json_object_get(specials, name) : NULL;
        if (!def)
            return sm_fail(err, SM_EFORMAT, "%s: %s.id: special token '%s' is not in %s.special_tokens", L->file, kp2,
                           name, path);
        char dp[KEYPATH_CAP];
        keypath_fmt(dp, "%s.special_tokens['%.64s']", path, name);
        json_t *ids = json_is_object(def) ? json_object_get(def, "ids") : NULL;
        if (!json_is_array(ids)) return bad_type(L, dp, def, "an object with an \"ids\" array", err);
        size_t n = json_array_size(ids);
        if (n > 1024) return sm_fail(err, SM_EUNSUPPORTED, "%s: %s.ids: %zu ids is too many", L->file, dp, n);
        int buf[1024];
        for (size_t k = 0; k < n; k++) SM_TRY(get_id(L, json_array_get(ids, k), index_path(kp, dp, "ids", k), &buf[k], err));
        SM_TRY(template_push(step, &cap, buf, (int)n, err));
    }
    return SM_OK;
}

static sm_status load_post(loader *L, const json_t *j, const char *path, sm_error *err) {
    if (!j || json_is_null(j)) return SM_OK;
    const char *type;
    char kp[KEYPATH_CAP];
    SM_TRY(get_type(L, j, path, &type, err));
    if (!strcmp(type, "ByteLevel")) { /* only trims offsets: the ids are unchanged */
        return check_keys(L, j, path, (const char *const[]){"add_prefix_space", "trim_offsets", "use_regex", NULL}, err);
    } else if (!strcmp(type, "TemplateProcessing")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"single", "pair", "special_tokens", NULL}, err));
        return load_template(L, j, path, err);
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"sep", "cls", "trim_offsets", "add_prefix_space", NULL}, err));
        int cls, sep;
        SM_TRY(get_token_pair(L, j, path, "cls", &cls, err));
        SM_TRY(get_token_pair(L, j, path, "sep", &sep, err));
        sm_tok_post_step *step;
        size_t cap = 0;
        SM_TRY(push_post(L, &step, err));
        SM_TRY(template_push(step, &cap, &cls, 1, err));
        SM_TRY(template_push(step, &cap, NULL, -1, err));
        return template_push(step, &cap, &sep, 1, err);
    } else if (!strcmp(type, "Sequence")) {
        SM_TRY(check_keys(L, j, path, (const char *const[]){"processors", NULL}, err));
        json_t *list = json_object_get(j, "processors");
        if (!json_is_array(list)) return bad_type(L, join(kp, path, "processors"), list, "an array", err);
        for (size_t i = 0; i < json_array_size(list); i++)
            SM_TRY(load_post(L, json_array_get(list, i), index_path(kp, path, "processors", i), err));
        return SM_OK;
    }
    return unsupported_type(L, path, type, "TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence",
                            err);
}

/* ---- id tables, byte map, fingerprint ------------------------------------------------------------ */

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256, 257, ... */
static void build_byte_map(sm_tokenizer *t) {
    for (size_t i = 0; i < sizeof t->char_byte / sizeof t->char_byte[0]; i++) t->char_byte[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)next++;
        char enc[4];
        int k = sm_tok_utf8_encode(cp, enc);
        memcpy(t->byte_char[b], enc, (size_t)k);
        t->byte_char_len[b] = (uint8_t)k;
        t->char_byte[cp] = (int16_t)b;
    }
}

static sm_status build_id_tables(loader *L, sm_error *err) {
    sm_tokenizer *t = L->t;
    int size = 0;
    for (size_t e = 0; e < t->bpe.vocab.n_entries; e++)
        if (t->bpe.vocab.entries[e].value + 1 > size) size = t->bpe.vocab.entries[e].value + 1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > size) size = t->added[i].id + 1;
    t->vocab_size = size;
    size_t n = size ? (size_t)size : 1;
    SM_TRY(sm_alloc((void **)&t->model_entry_by_id, n * sizeof(int32_t), "tokenizer id table", err));
    SM_TRY(sm_alloc((void **)&t->added_by_id, n * sizeof(int), "tokenizer id table", err));
    memset(t->model_entry_by_id, 0xFF, n * sizeof(int32_t));
    memset(t->added_by_id, 0xFF, n * sizeof(int));
    for (size_t e = 0; e < t->bpe.vocab.n_entries; e++) t->model_entry_by_id[t->bpe.vocab.entries[e].value] = (int32_t)e;
    for (int i = 0; i < t->n_added; i++)
        if (t->added_by_id[t->added[i].id] < 0) t->added_by_id[t->added[i].id] = i;
    /* Post-processor ids must name tokens: the model would index its embedding with them. */
    for (int s = 0; s < t->n_post; s++)
        for (int i = 0; i < t->post[s].n_items; i++)
            for (int k = 0; k < t->post[s].items[i].n_ids; k++) {
                int id = t->post[s].items[i].ids[k];
                if (id >= size || (t->model_entry_by_id[id] < 0 && t->added_by_id[id] < 0))
                    return sm_fail(err, SM_EFORMAT, "%s: post_processor: special token id %d is not in the vocabulary",
                                   L->file, id);
            }
    return SM_OK;
}

static uint64_t fnv_int(uint64_t h, int64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)v >> (8 * i));
    return sm_tok_fnv1a(h, b, sizeof b);
}

/* Over every id's token (model and added, with the special flag) and every merge in rank order:
   independent of the file's key order and formatting. */
static uint64_t fingerprint(const sm_tokenizer *t) {
    uint64_t h = fnv_int(SM_TOK_FNV_OFFSET, t->vocab_size);
    for (int id = 0; id < t->vocab_size; id++) {
        int32_t e = t->model_entry_by_id[id];
        int a = t->added_by_id[id];
        h = fnv_int(h, id);
        if (e >= 0) {
            h = fnv_int(h, t->bpe.vocab.entries[e].len);
            h = sm_tok_fnv1a(h, sm_tok_strmap_key(&t->bpe.vocab, (size_t)e), t->bpe.vocab.entries[e].len);
        }
        if (a >= 0) {
            h = fnv_int(h, (int64_t)t->added[a].len + (t->added[a].special ? 1LL << 40 : 1LL << 41));
            h = sm_tok_fnv1a(h, t->added[a].content, t->added[a].len);
        }
    }
    h = fnv_int(h, t->bpe.n_merges);
    for (int i = 0; i < 3 * t->bpe.n_merges; i++) h = fnv_int(h, t->bpe.merge_pairs[i]);
    return h;
}

/* ---- entry points -------------------------------------------------------------------------------- */

static sm_status check_top(const loader *L, const json_t *root, sm_error *err) {
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens", "normalizer",
                                       "pre_tokenizer", "model", "post_processor", "decoder", NULL};
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)root, key, value) {
        bool ok = false;
        for (const char *const *k = keys; *k && !ok; k++) ok = !strcmp(key, *k);
        if (!ok) return sm_fail(err, SM_EUNSUPPORTED, "%s: %s: unknown key (not supported)", L->file, key);
    }
    json_t *trunc = json_object_get(root, "truncation");
    if (trunc && !json_is_null(trunc))
        return sm_fail(err, SM_EUNSUPPORTED, "%s: truncation: not supported (must be null): it would cut prompts",
                       L->file);
    json_t *pad = json_object_get(root, "padding");
    if (pad && !json_is_null(pad)) { /* padding to the longest of a batch never changes one sequence */
        json_t *strategy = json_is_object(pad) ? json_object_get(pad, "strategy") : NULL;
        if (!json_is_string(strategy) || strcmp(json_string_value(strategy), "BatchLongest"))
            return sm_fail(err, SM_EUNSUPPORTED, "%s: padding: only null or strategy \"BatchLongest\" is supported",
                           L->file);
    }
    return SM_OK;
}

sm_status sm_tokenizer_parse(const char *json, size_t len, const char *path, sm_tokenizer **out, sm_error *err) {
    if (!out || (!json && len)) return sm_fail(err, SM_EINVAL, "sm_tokenizer_parse: NULL argument");
    *out = NULL;
    if (!path) path = "tokenizer.json";
    json_error_t jerr;
    json_t *root = json_loadb(json ? json : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return sm_fail(err, SM_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", path, jerr.line, jerr.column,
                       jerr.text);
    sm_tokenizer *t = NULL;
    sm_status st = sm_calloc((void **)&t, 1, sizeof *t, "tokenizer", err);
    loader L = {path, t, 0, 0, 0, 0, 0};
    if (st == SM_OK) {
        t->raw_trie.empty = t->norm_trie.empty = true;
        t->bpe.unk_id = -1;
        st = dup_bytes(path, strlen(path), &t->path, "tokenizer path", err);
    }
    if (st == SM_OK && !json_is_object(root)) st = bad_type(&L, "(top level)", root, "an object", err);
    if (st == SM_OK) st = check_top(&L, root, err);
    if (st == SM_OK) st = load_model(&L, json_object_get(root, "model"), err);
    if (st == SM_OK) st = load_normalizer(&L, json_object_get(root, "normalizer"), "normalizer", err);
    if (st == SM_OK) st = load_pre(&L, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", err);
    if (st == SM_OK) st = load_decoder(&L, json_object_get(root, "decoder"), "decoder", err);
    if (st == SM_OK) st = load_added(&L, json_object_get(root, "added_tokens"), err);
    if (st == SM_OK) st = build_tries(&L, err);
    if (st == SM_OK) st = load_post(&L, json_object_get(root, "post_processor"), "post_processor", err);
    if (st == SM_OK) st = build_id_tables(&L, err);
    json_decref(root);
    if (st != SM_OK) {
        sm_tokenizer_free(t);
        return st;
    }
    build_byte_map(t);
    t->fingerprint = fingerprint(t);
    *out = t;
    return SM_OK;
}

sm_status sm_tokenizer_load(const char *path, sm_tokenizer **out, sm_error *err) {
    if (!path || !out) return sm_fail(err, SM_EINVAL, "sm_tokenizer_load: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sm_fail(err, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    sm_tok_buf buf = {0};
    sm_status st = SM_OK;
    char chunk[65536];
    size_t n;
    while (st == SM_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0) st = sm_tok_buf_append(&buf, chunk, n, err);
    if (st == SM_OK && ferror(f)) st = sm_fail(err, SM_EIO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    if (st == SM_OK) st = sm_tokenizer_parse(buf.data, buf.len, path, out, err);
    sm_tok_buf_free(&buf);
    return st;
}

sm_status sm_tokenizer_load_dir(const char *dir, sm_tokenizer **out, sm_error *err) {
    if (!dir || !out) return sm_fail(err, SM_EINVAL, "sm_tokenizer_load_dir: NULL argument");
    *out = NULL;
    char path[4200];
    if (snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= (int)sizeof path)
        return sm_fail(err, SM_EINVAL, "%s: directory name too long", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) return SM_OK; /* checkpoints without a tokenizer run on token ids */
    fclose(probe);
    return sm_tokenizer_load(path, out, err);
}

void sm_tokenizer_free(sm_tokenizer *t) {
    if (!t) return;
    free(t->path);
    sm_tok_bpe_free(&t->bpe);
    free(t->model_entry_by_id);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    sm_tok_strmap_free(&t->added_map);
    free(t->added_by_id);
    sm_tok_trie_free(&t->raw_trie);
    sm_tok_trie_free(&t->norm_trie);
    if (t->word_char) pcre2_code_free(t->word_char);
    for (int i = 0; i < t->n_norm; i++) {
        pattern_free(&t->norm[i].pattern);
        free(t->norm[i].text);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++) pattern_free(&t->pre[i].pattern);
    free(t->pre);
    for (int i = 0; i < t->n_dec; i++) {
        pattern_free(&t->dec[i].pattern);
        free(t->dec[i].text);
    }
    free(t->dec);
    for (int i = 0; i < t->n_post; i++) {
        for (int k = 0; k < t->post[i].n_items; k++) free(t->post[i].items[k].ids);
        free(t->post[i].items);
    }
    free(t->post);
    free(t);
}
