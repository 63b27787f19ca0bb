/* src/model/tokenizer_text.c — byte buffers, UTF-8 and NFC for the tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* ---- buffers ----------------------------------------------------------------------------- */

sm_status sm_tok_grow(void **items, size_t *cap, size_t need, size_t item_size, const char *what, sm_error *err) {
    if (need <= *cap) return SM_OK;
    size_t new_cap = *cap ? *cap : 16;
    while (new_cap < need) {
        if (new_cap > ((size_t)-1 / 2) / item_size)
            return sm_fail(err, SM_ENOMEM, "size overflow growing %s to %zu items", what, need);
        new_cap *= 2;
    }
    void *p = realloc(*items, new_cap * item_size);
    if (!p) return sm_fail(err, SM_ENOMEM, "out of memory growing %s to %zu items", what, new_cap);
    *items = p;
    *cap = new_cap;
    return SM_OK;
}

sm_status sm_tok_buf_reserve(sm_tok_buf *b, size_t extra, sm_error *err) {
    if (extra > (size_t)-1 - b->len - 1) return sm_fail(err, SM_ENOMEM, "size overflow in tokenizer buffer");
    /* +1 keeps room for a terminating NUL. */
    return sm_tok_grow((void **)&b->data, &b->cap, b->len + extra + 1, 1, "tokenizer text buffer", err);
}

sm_status sm_tok_buf_append(sm_tok_buf *b, const void *bytes, size_t n, sm_error *err) {
    SM_TRY(sm_tok_buf_reserve(b, n, err));
    if (n) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return SM_OK;
}

void sm_tok_buf_free(sm_tok_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint64_t sm_tok_fnv1a(uint64_t h, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* Number of leading bytes of s that could start a well-formed sequence (Unicode Table 3-7),
 * and the full length the lead byte asks for. */
static int utf8_valid_prefix(const unsigned char *s, size_t n, int *want) {
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *want = 1; return 1; }
    if (c >= 0xC2 && c <= 0xDF) *want = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        *want = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        *want = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *want = 1;
        return 0;
    }
    int k = 1;
    while (k < *want && (size_t)k < n) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (s[k] < lo_k || s[k] > hi_k) break;
        k++;
    }
    return k;
}

int sm_tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    int want;
    int k = utf8_valid_prefix(s, n, &want);
    if (k != want || k == 0) return 0;
    switch (k) {
    case 1: *cp = s[0]; break;
    case 2: *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); break;
    case 3: *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F); break;
    default:
        *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
              (s[3] & 0x3F);
    }
    return k;
}

int sm_tok_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t sm_tok_utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        uint32_t cp;
        int k = sm_tok_utf8_decode(u + i, n - i, &cp);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

sm_status sm_tok_utf8_lossy(const char *s, size_t n, sm_tok_buf *out, sm_error *err) {
    static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i; /* copy well-formed runs in one go */
        while (run < n) {
            uint32_t cp;
            int k = u[run] < 0x80 ? 1 : sm_tok_utf8_decode(u + run, n - run, &cp);
            if (!k) break;
            run += (size_t)k;
        }
        SM_TRY(sm_tok_buf_append(out, s + i, run - i, err));
        if (run == n) break;
        int want;
        int k = utf8_valid_prefix(u + run, n - run, &want);
        SM_TRY(sm_tok_buf_append(out, replacement, sizeof replacement, err));
        i = run + (size_t)(k > 0 ? k : 1);
    }
    return SM_OK;
}

bool sm_tok_is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* ---- NFC --------------------------------------------------------------------------------- */

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
       HANGUL_LCOUNT = 19, HANGUL_VCOUNT = 21, HANGUL_TCOUNT = 28,
       HANGUL_NCOUNT = HANGUL_VCOUNT * HANGUL_TCOUNT, HANGUL_SCOUNT = HANGUL_LCOUNT * HANGUL_NCOUNT };

static int ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    int lo = 0, hi = sm_tok_n_ccc_ranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < sm_tok_ccc_ranges[mid].first) hi = mid - 1;
        else if (cp > sm_tok_ccc_ranges[mid].last) lo = mid + 1;
        else return sm_tok_ccc_ranges[mid].ccc;
    }
    return 0;
}

static const sm_tok_decomp *decomp_of(uint32_t cp) {
    int lo = 0, hi = sm_tok_n_decomps - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < sm_tok_decomps[mid].cp) hi = mid - 1;
        else if (cp > sm_tok_decomps[mid].cp) lo = mid + 1;
        else return &sm_tok_decomps[mid];
    }
    return NULL;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_VCOUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_TCOUNT)
        return a + (b - HANGUL_T);
    int lo = 0, hi = sm_tok_n_comps - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const sm_tok_comp *c = &sm_tok_comps[mid];
        if (a < c->first || (a == c->first && b < c->second)) hi = mid - 1;
        else if (a > c->first || b > c->second) lo = mid + 1;
        else return c->composite;
    }
    return 0;
}

static sm_status push_cp(uint32_t **cps, size_t *n, size_t *cap, uint32_t cp, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)cps, cap, *n + 1, sizeof **cps, "NFC code points", err));
    (*cps)[(*n)++] = cp;
    return SM_OK;
}

static sm_status nfc_slow(const char *s, size_t n, sm_tok_buf *out, sm_error *err) {
    uint32_t *cps = NULL;
    size_t n_cps = 0, cap = 0;
    sm_status st = SM_OK;
    /* 1. full canonical decomposition */
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n && st == SM_OK;) {
        uint32_t cp;
        int k = sm_tok_utf8_decode(u + i, n - i, &cp);
        if (!k) { st = sm_fail(err, SM_EINTERNAL, "NFC: ill-formed UTF-8 at byte %zu", i); break; }
        i += (size_t)k;
        if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SCOUNT) {
            uint32_t si = cp - HANGUL_S;
            st = push_cp(&cps, &n_cps, &cap, HANGUL_L + si / HANGUL_NCOUNT, err);
            if (st == SM_OK) st = push_cp(&cps, &n_cps, &cap, HANGUL_V + (si % HANGUL_NCOUNT) / HANGUL_TCOUNT, err);
            if (st == SM_OK && si % HANGUL_TCOUNT) st = push_cp(&cps, &n_cps, &cap, HANGUL_T + si % HANGUL_TCOUNT, err);
            continue;
        }
        const sm_tok_decomp *d = cp >= 0xC0 ? decomp_of(cp) : NULL;
        if (!d) { st = push_cp(&cps, &n_cps, &cap, cp, err); continue; }
        for (int j = 0; j < d->len && st == SM_OK; j++)
            st = push_cp(&cps, &n_cps, &cap, sm_tok_decomp_data[d->offset + j], err);
    }
    if (st != SM_OK) { free(cps); return st; }
    /* 2. canonical ordering: a stable insertion sort of each run of non-starters by class */
    for (size_t i = 1; i < n_cps; i++) {
        int c = ccc_of(cps[i]);
        if (!c) continue;
        size_t j = i;
        uint32_t cp = cps[i];
        while (j > 0 && ccc_of(cps[j - 1]) > c) {
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = cp;
    }
    /* 3. canonical composition: a character joins the last starter unless something between
       them is a starter or has a class >= its own (it is "blocked"). */
    size_t n_out = 0;
    long starter = -1;
    int last_ccc = 0;
    for (size_t i = 0; i < n_cps; i++) {
        uint32_t cp = cps[i];
        int c = ccc_of(cp);
        if (starter >= 0) {
            bool adjacent = (size_t)starter == n_out - 1;
            if (adjacent || (last_ccc != 0 && last_ccc < c)) {
                uint32_t comp = compose(cps[starter], cp);
                if (comp) {
                    cps[starter] = comp;
                    continue;
                }
            }
        }
        if (c == 0) starter = (long)n_out;
        last_ccc = c;
        cps[n_out++] = cp;
    }
    for (size_t i = 0; i < n_out && st == SM_OK; i++) {
        char enc[4];
        int k = sm_tok_utf8_encode(cps[i], enc);
        st = sm_tok_buf_append(out, enc, (size_t)k, err);
    }
    free(cps);
    return st;
}

sm_status sm_tok_nfc(const char *s, size_t n, sm_tok_buf *out, sm_error *err) {
    /* Every code point below U+0300 is NFC-stable and composes only with a following mark at
       U+0300 or above, whose lead byte is 0xCC or higher: text without such bytes is already NFC. */
    bool quick = true;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0xCC) { quick = false; break; }
    if (quick) return sm_tok_buf_append(out, s, n, err);
    return nfc_slow(s, n, out, err);
}
