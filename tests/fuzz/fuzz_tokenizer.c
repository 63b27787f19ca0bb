/* Fuzz target: tokenizer.json parsing, and encoding/decoding with whatever parses. An input that
 * does not start with '{' is used as text instead, encoded and decoded with every fixture
 * tokenizer (loaded once from $SPECMOE_SOURCE_DIR), so the encoder sees arbitrary text too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

int fuzz_one(const uint8_t *data, size_t size);

static const char *const texts[] = {"", "Hello world", " a  b\n\n c\t", "I'm 12345 <s>[INST]</s>",
                                    "caf\xC3\xA9 e\xCC\x81 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
                                    "<|endoftext|><|im_start|>x<mask> y"};

/* Encode then decode; every call must succeed or fail cleanly. */
static void exercise(const sm_tokenizer *tok, const char *text, size_t len) {
    for (int special = 0; special < 2; special++) {
        int *ids = NULL, n = 0;
        sm_error err;
        if (sm_tokenizer_encode(tok, text, len, special, &ids, &n, &err) == SM_OK) {
            char *out = NULL;
            size_t out_len;
            if (sm_tokenizer_decode(tok, ids, n, special, &out, &out_len, &err) == SM_OK && strlen(out) > out_len) abort();
            free(out);
        }
        free(ids);
    }
}

/* Make text valid UTF-8 by replacing bad bytes with '?', as the encoder accepts only UTF-8. */
static char *as_text(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return NULL;
    memcpy(s, data, size);
    s[size] = '\0';
    for (size_t i = 0; i < size;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >= 0xC2 && c < 0xE0) ? 2 : (c >= 0xE0 && c < 0xF0) ? 3 : (c >= 0xF0 && c < 0xF5) ? 4 : 0;
        bool ok = k && i + k <= size;
        for (size_t j = 1; ok && j < k; j++) ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
        if (ok && k == 3) { /* overlong or surrogate */
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d > 0x9F);
        }
        if (ok && k == 4) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d > 0x8F);
        }
        if (!ok) { s[i++] = '?'; continue; }
        i += k;
    }
    return s;
}

static sm_tokenizer **fixtures(int *n) {
    static sm_tokenizer *toks[8];
    static int count = -1;
    if (count < 0) {
        static const char *const names[] = {"gpt2", "llama3", "qwen2", "olmoe", "llama2", "mixtral_meta", "affixes"};
        const char *root = getenv("SPECMOE_SOURCE_DIR");
        count = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/%s/tokenizer.json", root ? root : ".", names[i]);
            if (sm_tokenizer_load(path, &toks[count], NULL) == SM_OK) count++;
        }
    }
    *n = count;
    return toks;
}

int fuzz_one(const uint8_t *data, size_t size) {
    if (size == 0 || data[0] != '{') {
        char *text = as_text(data, size);
        int n;
        sm_tokenizer **toks = fixtures(&n);
        for (int i = 0; i < n && text; i++) {
            exercise(toks[i], text, size);
            /* the bytes as ids too */
            int ids[64], n_ids = 0;
            for (size_t k = 0; k + 1 < size && n_ids < 64; k += 2) ids[n_ids++] = (data[k] | data[k + 1] << 8) % 1024;
            char *out = NULL;
            sm_tokenizer_decode(toks[i], ids, n_ids, size & 1, &out, NULL, NULL);
            free(out);
        }
        free(text);
        return 0;
    }
    sm_tokenizer *tok = NULL;
    sm_error err;
    if (sm_tokenizer_parse((const char *)data, size, "fuzz/tokenizer.json", &tok, &err) != SM_OK) {
        if (!memchr(err.msg, '\0', sizeof err.msg) || strncmp(err.msg, "fuzz/tokenizer.json", 19)) abort();
        return 0;
    }
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) exercise(tok, texts[i], strlen(texts[i]));
    int vocab = sm_tokenizer_vocab_size(tok), ids[300], n_ids = 0;
    for (int id = 0; id < vocab && n_ids < 300; id += 1 + vocab / 300) ids[n_ids++] = id;
    char *out = NULL;
    sm_tokenizer_decode(tok, ids, n_ids, false, &out, NULL, NULL);
    free(out);
    for (int id = -1; id <= vocab && id < 2000; id++) {
        const char *s = sm_tokenizer_id_to_token(tok, id);
        if (s) sm_tokenizer_token_to_id(tok, s); /* (a token with a NUL inside maps to nothing: no check) */
    }
    sm_tokenizer_fingerprint(tok);
    sm_tokenizer_free(tok);
    return 0;
}
