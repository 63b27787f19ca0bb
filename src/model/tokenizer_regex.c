/* src/model/tokenizer_regex.c — tokenizer.json regexes (written for Oniguruma, which `tokenizers`
 * uses) compiled with PCRE2. The two dialects agree on everything the published split patterns use
 * except a few escapes, which are rewritten here before compiling. */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* Oniguruma's \s is Unicode White_Space; PCRE2's UCP \s also takes U+180E. Spelling the set out
   keeps the two identical. */
static const char white_space_body[] =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
/* Oniguruma's \h is a hexadecimal digit (PCRE2's is horizontal space). */
static const char hex_body[] = "0-9A-Fa-f";

static sm_status emit(sm_tok_buf *b, const char *s, sm_error *err) { return sm_tok_buf_append(b, s, strlen(s), err); }

static sm_status emit_class(sm_tok_buf *b, bool in_class, bool negate, const char *body, sm_error *err) {
    if (in_class) return emit(b, body, err);
    SM_TRY(emit(b, negate ? "[^" : "[", err));
    SM_TRY(emit(b, body, err));
    return emit(b, "]", err);
}

static sm_status translate(const char *p, size_t n, sm_tok_buf *out, sm_error *err) {
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[++i];
            if (e == 's') SM_TRY(emit_class(out, in_class, false, white_space_body, err));
            else if (e == 'S' && !in_class) SM_TRY(emit_class(out, false, true, white_space_body, err));
            else if (e == 'h') SM_TRY(emit_class(out, in_class, false, hex_body, err));
            else if (e == 'H' && !in_class) SM_TRY(emit_class(out, false, true, hex_body, err));
            else {
                char two[2] = {c, e};
                SM_TRY(sm_tok_buf_append(out, two, 2, err));
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            SM_TRY(sm_tok_buf_append(out, &c, 1, err));
            /* "[^]...]" and "[]...]": a leading ']' is a literal, not the end of the class */
            if (i + 1 < n && p[i + 1] == '^') SM_TRY(sm_tok_buf_append(out, &p[++i], 1, err));
            if (i + 1 < n && p[i + 1] == ']') SM_TRY(sm_tok_buf_append(out, &p[++i], 1, err));
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') { /* POSIX [:alpha:] stays as is */
            const char *close = NULL;
            for (size_t j = i + 2; j + 1 < n; j++)
                if (p[j] == ':' && p[j + 1] == ']') { close = p + j; break; }
            if (close) {
                size_t k = (size_t)(close - p) + 2;
                SM_TRY(sm_tok_buf_append(out, p + i, k - i, err));
                i = k - 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = false;
        SM_TRY(sm_tok_buf_append(out, &c, 1, err));
    }
    return SM_OK;
}

sm_status sm_tok_regex_compile(const char *pattern, size_t len, const char *file, const char *keypath,
                               pcre2_code **out, sm_error *err) {
    *out = NULL;
    sm_tok_buf pcre = {0};
    sm_status st = translate(pattern, len, &pcre, err);
    if (st == SM_OK && !pcre.data) st = sm_tok_buf_append(&pcre, "", 0, err);
    if (st != SM_OK) {
        sm_tok_buf_free(&pcre);
        return st;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        sm_tok_buf_free(&pcre);
        return sm_fail(err, SM_ENOMEM, "%s: %s: out of memory compiling a regex", file, keypath);
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF); /* Oniguruma knows only \n as a line end */
    int code;
    PCRE2_SIZE offset;
    /* MULTILINE: in Oniguruma's (Ruby) syntax ^ and $ always match at line boundaries. */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pcre.data, pcre.len, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &code,
                                   &offset, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        st = sm_fail(err, SM_EUNSUPPORTED, "%s: %s: regex '%.*s' does not compile (as PCRE2 '%s', offset %zu): %s", file,
                     keypath, (int)(len > 200 ? 200 : len), pattern, pcre.data, (size_t)offset, (const char *)msg);
        sm_tok_buf_free(&pcre);
        return st;
    }
    sm_tok_buf_free(&pcre);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is used when JIT is unavailable */
    *out = re;
    return SM_OK;
}
