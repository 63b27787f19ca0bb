/* src/model/tokenizer.c — encoding and decoding with a loaded tokenizer.json (loading itself is in
 * tokenizer_load.c). Every step mirrors the `tokenizers` library's, in the same order, so that
 * ids are identical: see tokenizer_internal.h for the pipeline. */
#include "model/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* ---- pieces: substrings produced by one pipeline stage, stored in one buffer --------------- */

typedef struct piece {
    size_t off, len;
    bool origin; /* starts at offset 0 of the original text (Metaspace's prepend_scheme "first") */
} piece;

typedef struct piece_list {
    sm_tok_buf text;
    piece *items;
    size_t n, cap;
} piece_list;

static void pieces_reset(piece_list *p) {
    p->text.len = 0;
    p->n = 0;
}

static void pieces_free(piece_list *p) {
    sm_tok_buf_free(&p->text);
    free(p->items);
    memset(p, 0, sizeof *p);
}

static sm_status piece_begin(piece_list *p, bool origin, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&p->items, &p->cap, p->n + 1, sizeof *p->items, "tokenizer pieces", err));
    p->items[p->n] = (piece){p->text.len, 0, origin};
    p->n++;
    return SM_OK;
}

static sm_status piece_append(piece_list *p, const char *s, size_t n, sm_error *err) {
    SM_TRY(sm_tok_buf_append(&p->text, s, n, err));
    p->items[p->n - 1].len += n;
    return SM_OK;
}

static sm_status piece_add(piece_list *p, const char *s, size_t n, bool origin, sm_error *err) {
    SM_TRY(piece_begin(p, origin, err));
    return piece_append(p, s, n, err);
}

static const char *piece_text(const piece_list *p, size_t i) { return p->text.data + p->items[i].off; }

/* ---- pattern matching ---------------------------------------------------------------------- */

static sm_status span_push(sm_tok_spans *v, size_t start, size_t end, bool is_match, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&v->items, &v->cap, v->n + 1, sizeof *v->items, "tokenizer spans", err));
    v->items[v->n++] = (sm_tok_span){start, end, is_match};
    return SM_OK;
}

/* The first match of p in s at or after from: 1 and its bounds, or 0 when there is none. */
static sm_status search(const sm_tok_pattern *p, pcre2_match_data *md, const char *s, size_t n, size_t from,
                        int *found, size_t *ms, size_t *me, sm_error *err) {
    *found = 0;
    if (!p->regex) {
        if (p->literal_len == 0) { /* an empty pattern matches (emptily) everywhere */
            *found = 1;
            *ms = *me = from;
            return SM_OK;
        }
        for (size_t i = from; i + p->literal_len <= n; i++) {
            const char *hit = memchr(s + i, p->literal[0], n - i - p->literal_len + 1);
            if (!hit) break;
            i = (size_t)(hit - s);
            if (!memcmp(hit, p->literal, p->literal_len)) {
                *found = 1;
                *ms = i;
                *me = i + p->literal_len;
                return SM_OK;
            }
        }
        return SM_OK;
    }
    int rc = pcre2_match(p->regex, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter has far larger limits */
        rc = pcre2_match(p->regex, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return SM_OK;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return sm_fail(err, SM_ERANGE, "tokenizer: regex matching failed on a piece of %zu bytes: %s", n,
                       (const char *)msg);
    }
    /* rc == 0 only says the ovector has no room for groups; the whole match is there. */
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > ov[1] || ov[1] > n) /* \K can do this; treat as an empty match */
        *ms = *me = ov[1] > n ? n : ov[1];
    else
        *ms = ov[0], *me = ov[1];
    *found = 1;
    return SM_OK;
}

static size_t utf8_char_len(const char *s, size_t n, size_t i) {
    if (i >= n) return 1;
    unsigned char c = (unsigned char)s[i];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return i + k > n ? n - i : k;
}

sm_status sm_tok_find_matches(const sm_tok_pattern *p, pcre2_match_data *md, const char *s, size_t n,
                              sm_tok_spans *out, sm_error *err) {
    out->n = 0;
    if (n == 0) return span_push(out, 0, 0, false, err);
    /* Iterate as Oniguruma's find_iter does: an empty match right where the previous match ended is
       skipped by stepping one character forward. */
    size_t prev = 0, last_end = 0, last_match_end = 0;
    bool have_last = false;
    while (last_end <= n) {
        int found;
        size_t ms, me;
        SM_TRY(search(p, md, s, n, last_end, &found, &ms, &me, err));
        if (!found) break;
        if (ms == me && have_last && last_match_end == me) {
            last_end += utf8_char_len(s, n, last_end);
            continue;
        }
        last_end = me;
        last_match_end = me;
        have_last = true;
        if (prev != ms) SM_TRY(span_push(out, prev, ms, false, err));
        SM_TRY(span_push(out, ms, me, true, err));
        prev = me;
    }
    if (prev != n) SM_TRY(span_push(out, prev, n, false, err));
    return SM_OK;
}

/* SplitDelimiterBehavior applied to the spans of find_matches; all results are pieces. */
static sm_status apply_behavior(const sm_tok_spans *in, sm_tok_split_behavior behavior, bool invert,
                                sm_tok_spans *out, sm_error *err) {
    out->n = 0;
    bool prev_match = false;
    if (behavior == SM_SPLIT_MERGED_WITH_NEXT) {
        for (size_t k = in->n; k-- > 0;) {
            sm_tok_span sp = in->items[k];
            bool m = sp.is_match != invert;
            if (m && !prev_match && out->n) out->items[out->n - 1].start = sp.start;
            else SM_TRY(span_push(out, sp.start, sp.end, false, err));
            prev_match = m;
        }
        for (size_t i = 0, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
            sm_tok_span t = out->items[i];
            out->items[i] = out->items[j];
            out->items[j] = t;
        }
        return SM_OK;
    }
    for (size_t k = 0; k < in->n; k++) {
        sm_tok_span sp = in->items[k];
        bool m = sp.is_match != invert;
        switch (behavior) {
        case SM_SPLIT_REMOVED:
            if (!m) SM_TRY(span_push(out, sp.start, sp.end, false, err));
            break;
        case SM_SPLIT_ISOLATED: SM_TRY(span_push(out, sp.start, sp.end, false, err)); break;
        case SM_SPLIT_CONTIGUOUS:
            if (m == prev_match && out->n) out->items[out->n - 1].end = sp.end;
            else SM_TRY(span_push(out, sp.start, sp.end, false, err));
            break;
        case SM_SPLIT_MERGED_WITH_PREVIOUS:
            if (m && !prev_match && out->n) out->items[out->n - 1].end = sp.end;
            else SM_TRY(span_push(out, sp.start, sp.end, false, err));
            break;
        case SM_SPLIT_MERGED_WITH_NEXT: break; /* handled above */
        }
        prev_match = m;
    }
    return SM_OK;
}

/* Replace every match of p in s with content, appending to out. */
static sm_status replace_all(const sm_tok_pattern *p, pcre2_match_data *md, const char *s, size_t n,
                             const char *content, size_t content_len, sm_tok_spans *spans, sm_tok_buf *out,
                             sm_error *err) {
    SM_TRY(sm_tok_find_matches(p, md, s, n, spans, err));
    for (size_t k = 0; k < spans->n; k++) {
        const sm_tok_span *sp = &spans->items[k];
        if (sp->is_match) SM_TRY(sm_tok_buf_append(out, content, content_len, err));
        else SM_TRY(sm_tok_buf_append(out, s + sp->start, sp->end - sp->start, err));
    }
    return SM_OK;
}

/* ---- normalizer ---------------------------------------------------------------------------- */

sm_status sm_tok_normalize(const struct sm_tokenizer *t, pcre2_match_data *md, const char *s, size_t n,
                           sm_tok_buf *out, sm_error *err) {
    out->len = 0;
    SM_TRY(sm_tok_buf_append(out, s, n, err));
    if (t->n_norm == 0) return SM_OK;
    sm_tok_buf tmp = {0};
    sm_tok_spans spans = {0};
    sm_status st = SM_OK;
    for (int i = 0; i < t->n_norm && st == SM_OK; i++) {
        const sm_tok_norm_step *step = &t->norm[i];
        tmp.len = 0;
        switch (step->kind) {
        case SM_NORM_NFC: st = sm_tok_nfc(out->data, out->len, &tmp, err); break;
        case SM_NORM_PREPEND:
            if (out->len == 0) continue; /* `tokenizers` prepends to non-empty text only */
            st = sm_tok_buf_append(&tmp, step->text, step->text_len, err);
            if (st == SM_OK) st = sm_tok_buf_append(&tmp, out->data, out->len, err);
            break;
        case SM_NORM_REPLACE:
            st = replace_all(&step->pattern, md, out->data, out->len, step->text, step->text_len, &spans, &tmp, err);
            break;
        }
        if (st == SM_OK) {
            sm_tok_buf swap = *out;
            *out = tmp;
            tmp = swap;
        }
    }
    sm_tok_buf_free(&tmp);
    free(spans.items);
    return st;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

sm_status sm_tok_trie_add(sm_tok_trie *tr, const char *s, size_t n, int added, sm_error *err) {
    if (n == 0) return SM_OK;
    if (tr->n_nodes == 0) memset(tr->root, 0xFF, sizeof tr->root);
    tr->empty = false;
    int node = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int child = node < 0 ? tr->root[b] : tr->nodes[node].first_child;
        if (node >= 0)
            while (child >= 0 && tr->nodes[child].byte != b) child = tr->nodes[child].next_sibling;
        if (child < 0) {
            SM_TRY(sm_tok_grow((void **)&tr->nodes, &tr->nodes_cap, tr->n_nodes + 1, sizeof *tr->nodes,
                               "added-token trie", err));
            child = (int)tr->n_nodes++;
            tr->nodes[child] = (struct sm_tok_trie_node){-1, -1, -1, b};
            if (node < 0) {
                tr->root[b] = child;
            } else {
                tr->nodes[child].next_sibling = tr->nodes[node].first_child;
                tr->nodes[node].first_child = child;
            }
        }
        node = child;
    }
    if (tr->nodes[node].added < 0) tr->nodes[node].added = added; /* a repeated content: the first token wins */
    return SM_OK;
}

void sm_tok_trie_free(sm_tok_trie *tr) {
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
    tr->empty = true;
}

/* The longest added token that starts at s: its index (and length), or -1. */
static int trie_longest(const sm_tok_trie *tr, const char *s, size_t n, size_t *len) {
    int best = -1;
    int node = tr->root[(unsigned char)s[0]];
    for (size_t i = 0; node >= 0;) {
        if (tr->nodes[node].added >= 0) {
            best = tr->nodes[node].added;
            *len = i + 1;
        }
        if (++i >= n) break;
        unsigned char b = (unsigned char)s[i];
        int child = tr->nodes[node].first_child;
        while (child >= 0 && tr->nodes[child].byte != b) child = tr->nodes[child].next_sibling;
        node = child;
    }
    return best;
}

static uint32_t char_at(const char *s, size_t n, size_t i) {
    uint32_t cp = 0xFFFD;
    sm_tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
    return cp;
}

static size_t char_before(const char *s, size_t i) {
    do i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

/* Rust regex's \w (what single_word tests on the neighbouring characters). */
static bool is_word_char(const struct sm_tokenizer *t, pcre2_match_data *md, const char *s, size_t n) {
    if (!t->word_char) return false;
    return pcre2_match(t->word_char, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, md, NULL) >= 0;
}

typedef struct seg {
    size_t start, end;
    int added; /* index in t->added, or -1 for text */
} seg;

typedef struct seg_list {
    seg *items;
    size_t n, cap;
} seg_list;

static sm_status seg_push(seg_list *v, size_t start, size_t end, int added, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&v->items, &v->cap, v->n + 1, sizeof *v->items, "added-token splits", err));
    v->items[v->n++] = (seg){start, end, added};
    return SM_OK;
}

/* Cut s at the added tokens of tr, as AddedVocabulary::find_matches does: leftmost-longest,
 * non-overlapping matches, with single_word, lstrip and rstrip applied to each. */
static sm_status split_added(const struct sm_tokenizer *t, const sm_tok_trie *tr, pcre2_match_data *md,
                             const char *s, size_t n, seg_list *out, sm_error *err) {
    out->n = 0;
    size_t start_offset = 0, pos = 0;
    while (pos < n && !tr->empty) {
        int a = -1;
        size_t i = pos, mlen = 0;
        for (; i < n; i++) {
            if (tr->root[(unsigned char)s[i]] < 0) continue;
            a = trie_longest(tr, s + i, n - i, &mlen);
            if (a >= 0) break;
        }
        if (a < 0) break;
        size_t start = i, stop = i + mlen;
        pos = stop; /* the search resumes after the match, even when it is discarded */
        const sm_tok_added *tok = &t->added[a];
        if (tok->single_word) {
            bool left_ok = start == 0 || !is_word_char(t, md, s + char_before(s, start), n - char_before(s, start));
            bool right_ok = stop == n || !is_word_char(t, md, s + stop, n - stop);
            if (!left_ok || !right_ok) continue;
        }
        if (tok->lstrip) {
            size_t j = start;
            while (j > 0) {
                size_t k = char_before(s, j);
                if (!sm_tok_is_white_space(char_at(s, n, k))) break;
                j = k;
            }
            start = j > start_offset ? j : start_offset;
        }
        if (tok->rstrip)
            while (stop < n && sm_tok_is_white_space(char_at(s, n, stop))) stop += utf8_char_len(s, n, stop);
        if (start > stop) start = stop;
        if (start_offset < start) SM_TRY(seg_push(out, start_offset, start, -1, err));
        SM_TRY(seg_push(out, start, stop, a, err));
        start_offset = stop;
    }
    if (start_offset < n) SM_TRY(seg_push(out, start_offset, n, -1, err));
    return SM_OK;
}

/* ---- encoding ------------------------------------------------------------------------------ */

typedef struct enc_ctx {
    pcre2_match_data *md;
    sm_tok_spans spans, spans2;
    piece_list a, b;
    sm_tok_buf norm, tmp;
    seg_list segs, subsegs;
    sm_tok_bpe_scratch bpe;
} enc_ctx;

static void enc_ctx_free(enc_ctx *c) {
    if (c->md) pcre2_match_data_free(c->md);
    free(c->spans.items);
    free(c->spans2.items);
    pieces_free(&c->a);
    pieces_free(&c->b);
    sm_tok_buf_free(&c->norm);
    sm_tok_buf_free(&c->tmp);
    free(c->segs.items);
    free(c->subsegs.items);
    sm_tok_bpe_scratch_free(&c->bpe);
}

/* Append s to the last piece of out with every byte replaced by its GPT-2 character. */
static sm_status append_byte_chars(const struct sm_tokenizer *t, piece_list *out, const char *s, size_t n,
                                   sm_error *err) {
    SM_TRY(sm_tok_buf_reserve(&out->text, 2 * n, err));
    char *dst = out->text.data + out->text.len;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        dst[w++] = t->byte_char[b][0];
        if (t->byte_char_len[b] == 2) dst[w++] = t->byte_char[b][1];
    }
    out->text.len += w;
    out->text.data[out->text.len] = '\0';
    out->items[out->n - 1].len += w;
    return SM_OK;
}

/* Cut each piece of in with a pattern and the split behaviour, into out. */
static sm_status pre_split(const sm_tok_pattern *p, sm_tok_split_behavior behavior, bool invert, enc_ctx *c,
                           const char *s, size_t n, bool origin, piece_list *out, sm_error *err) {
    SM_TRY(sm_tok_find_matches(p, c->md, s, n, &c->spans, err));
    SM_TRY(apply_behavior(&c->spans, behavior, invert, &c->spans2, err));
    for (size_t k = 0; k < c->spans2.n; k++) {
        const sm_tok_span *sp = &c->spans2.items[k];
        if (sp->end > sp->start) SM_TRY(piece_add(out, s + sp->start, sp->end - sp->start, origin && sp->start == 0, err));
    }
    return SM_OK;
}

static sm_status pre_byte_level(const struct sm_tokenizer *t, const sm_tok_pre_step *step, enc_ctx *c,
                                const char *s, size_t n, bool origin, piece_list *out, sm_error *err) {
    if (step->add_prefix_space && s[0] != ' ') {
        c->tmp.len = 0;
        SM_TRY(sm_tok_buf_append(&c->tmp, " ", 1, err));
        SM_TRY(sm_tok_buf_append(&c->tmp, s, n, err));
        s = c->tmp.data;
        n = c->tmp.len;
    }
    if (!step->pattern.regex) {
        SM_TRY(piece_begin(out, origin, err));
        return append_byte_chars(t, out, s, n, err);
    }
    SM_TRY(sm_tok_find_matches(&step->pattern, c->md, s, n, &c->spans, err));
    for (size_t k = 0; k < c->spans.n; k++) { /* Isolated: matches and gaps are all pieces */
        const sm_tok_span *sp = &c->spans.items[k];
        if (sp->end == sp->start) continue;
        SM_TRY(piece_begin(out, origin && sp->start == 0, err));
        SM_TRY(append_byte_chars(t, out, s + sp->start, sp->end - sp->start, err));
    }
    return SM_OK;
}

static sm_status pre_metaspace(const sm_tok_pre_step *step, enc_ctx *c, const char *s, size_t n, bool origin,
                               piece_list *out, sm_error *err) {
    sm_tok_buf *b = &c->tmp;
    b->len = 0;
    const char *rep = step->replacement;
    size_t rep_len = step->replacement_len;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') SM_TRY(sm_tok_buf_append(b, rep, rep_len, err));
        else SM_TRY(sm_tok_buf_append(b, s + i, 1, err));
    }
    bool starts = b->len >= rep_len && !memcmp(b->data, rep, rep_len);
    bool prepend = !starts && (step->prepend_scheme == SM_PREPEND_ALWAYS ||
                               (step->prepend_scheme == SM_PREPEND_FIRST && origin));
    if (prepend) {
        SM_TRY(sm_tok_buf_reserve(b, rep_len, err));
        memmove(b->data + rep_len, b->data, b->len + 1);
        memcpy(b->data, rep, rep_len);
        b->len += rep_len;
    }
    if (!step->split) return piece_add(out, b->data, b->len, origin, err);
    sm_tok_pattern lit = {NULL, (char *)rep, rep_len};
    return pre_split(&lit, SM_SPLIT_MERGED_WITH_NEXT, false, c, b->data, b->len, origin, out, err);
}

/* Pre-tokenize one normalized text and run the model on each piece. */
static sm_status encode_piece(const struct sm_tokenizer *t, enc_ctx *c, const char *s, size_t n, bool origin,
                              sm_tok_ids *ids, sm_error *err) {
    piece_list *in = &c->a, *out = &c->b;
    pieces_reset(in);
    SM_TRY(piece_add(in, s, n, origin, err));
    for (int i = 0; i < t->n_pre; i++) {
        const sm_tok_pre_step *step = &t->pre[i];
        pieces_reset(out);
        for (size_t k = 0; k < in->n; k++) {
            const char *ps = piece_text(in, k);
            size_t pn = in->items[k].len;
            bool po = in->items[k].origin;
            if (pn == 0) continue;
            switch (step->kind) {
            case SM_PRE_SPLIT: SM_TRY(pre_split(&step->pattern, step->behavior, step->invert, c, ps, pn, po, out, err)); break;
            case SM_PRE_BYTE_LEVEL: SM_TRY(pre_byte_level(t, step, c, ps, pn, po, out, err)); break;
            case SM_PRE_METASPACE: SM_TRY(pre_metaspace(step, c, ps, pn, po, out, err)); break;
            }
        }
        piece_list *swap = in;
        in = out;
        out = swap;
    }
    for (size_t k = 0; k < in->n; k++)
        SM_TRY(sm_tok_bpe_word(&t->bpe, piece_text(in, k), in->items[k].len, &c->bpe, ids, err));
    return SM_OK;
}

static sm_status encode_text(const struct sm_tokenizer *t, enc_ctx *c, const char *text, size_t len,
                             sm_tok_ids *ids, sm_error *err) {
    SM_TRY(split_added(t, &t->raw_trie, c->md, text, len, &c->segs, err));
    for (size_t i = 0; i < c->segs.n; i++) {
        seg sg = c->segs.items[i];
        if (sg.added >= 0) {
            SM_TRY(sm_tok_ids_push(ids, t->added[sg.added].id, err));
            continue;
        }
        if (sg.end == sg.start) continue;
        SM_TRY(sm_tok_normalize(t, c->md, text + sg.start, sg.end - sg.start, &c->norm, err));
        const char *ns = c->norm.data;
        size_t nn = c->norm.len;
        SM_TRY(split_added(t, &t->norm_trie, c->md, ns, nn, &c->subsegs, err));
        for (size_t j = 0; j < c->subsegs.n; j++) {
            seg sub = c->subsegs.items[j];
            if (sub.added >= 0) SM_TRY(sm_tok_ids_push(ids, t->added[sub.added].id, err));
            else if (sub.end > sub.start)
                SM_TRY(encode_piece(t, c, ns + sub.start, sub.end - sub.start, sg.start == 0 && sub.start == 0, ids, err));
        }
    }
    return SM_OK;
}

static sm_status post_process(const struct sm_tokenizer *t, sm_tok_ids *ids, sm_error *err) {
    for (int s = 0; s < t->n_post; s++) {
        const sm_tok_post_step *step = &t->post[s];
        sm_tok_ids out = {0};
        sm_status st = SM_OK;
        for (int i = 0; i < step->n_items && st == SM_OK; i++) {
            const sm_tok_post_item *it = &step->items[i];
            if (it->ids) {
                for (int k = 0; k < it->n_ids && st == SM_OK; k++) st = sm_tok_ids_push(&out, it->ids[k], err);
            } else {
                for (size_t k = 0; k < ids->n && st == SM_OK; k++) st = sm_tok_ids_push(&out, ids->ids[k], err);
            }
        }
        if (st != SM_OK) { free(out.ids); return st; }
        free(ids->ids);
        *ids = out;
    }
    return SM_OK;
}

sm_status sm_tokenizer_encode(const sm_tokenizer *tok, const char *text, size_t len, bool add_special, int **ids,
                              int *n_ids, sm_error *err) {
    if (!tok || !ids || !n_ids || (!text && len))
        return sm_fail(err, SM_EINVAL, "sm_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    size_t bad = sm_tok_utf8_check(text, len);
    if (bad != len)
        return sm_fail(err, SM_EINVAL, "tokenizer %s: text is not valid UTF-8 (byte 0x%02X at offset %zu)", tok->path,
                       (unsigned char)text[bad], bad);
    enc_ctx c = {0};
    sm_tok_ids out = {0};
    c.md = pcre2_match_data_create(1, NULL);
    sm_status st = c.md ? SM_OK : sm_fail(err, SM_ENOMEM, "out of memory creating regex match data");
    if (st == SM_OK && len) st = encode_text(tok, &c, text, len, &out, err);
    if (st == SM_OK && add_special) st = post_process(tok, &out, err);
    if (st == SM_OK && out.n > (size_t)INT32_MAX) st = sm_fail(err, SM_ERANGE, "tokenizer: more than 2^31 tokens");
    enc_ctx_free(&c);
    if (st != SM_OK) {
        free(out.ids);
        return st;
    }
    if (!out.ids) st = sm_alloc((void **)&out.ids, sizeof(int), "token ids", err);
    if (st != SM_OK) return st;
    *ids = out.ids;
    *n_ids = (int)out.n;
    return SM_OK;
}

/* ---- decoding ------------------------------------------------------------------------------ */

static sm_status dec_byte_level(const struct sm_tokenizer *t, const piece_list *in, sm_tok_buf *bytes,
                                piece_list *out, sm_error *err) {
    bytes->len = 0;
    for (size_t k = 0; k < in->n; k++) {
        const char *s = piece_text(in, k);
        size_t n = in->items[k].len, start = bytes->len;
        bool mapped = true;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            int len = sm_tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
            if (!len || cp >= sizeof t->char_byte / sizeof t->char_byte[0] || t->char_byte[cp] < 0) {
                mapped = false;
                break;
            }
            char b = (char)t->char_byte[cp];
            SM_TRY(sm_tok_buf_append(bytes, &b, 1, err));
            i += (size_t)len;
        }
        if (!mapped) { /* a token with other characters (an added token) stands for its own bytes */
            bytes->len = start;
            SM_TRY(sm_tok_buf_append(bytes, s, n, err));
        }
    }
    SM_TRY(piece_begin(out, false, err));
    sm_tok_buf lossy = {0};
    sm_status st = sm_tok_utf8_lossy(bytes->data ? bytes->data : "", bytes->len, &lossy, err);
    if (st == SM_OK) st = piece_append(out, lossy.data ? lossy.data : "", lossy.len, err);
    sm_tok_buf_free(&lossy);
    return st;
}

/* "<0xNN>" -> NN (as Rust's u8::from_str_radix on the two characters), or -1. */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0) {
            if (i == 3 && ch == '+') continue; /* from_str_radix accepts a leading '+' */
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

static sm_status flush_bytes(sm_tok_buf *bytes, piece_list *out, sm_error *err) {
    if (!bytes->len) return SM_OK;
    if (sm_tok_utf8_check(bytes->data, bytes->len) == bytes->len) {
        SM_TRY(piece_add(out, bytes->data, bytes->len, false, err));
    } else { /* one U+FFFD per byte, as ByteFallback does */
        for (size_t i = 0; i < bytes->len; i++) SM_TRY(piece_add(out, "\xEF\xBF\xBD", 3, false, err));
    }
    bytes->len = 0;
    return SM_OK;
}

static sm_status dec_byte_fallback(const piece_list *in, sm_tok_buf *bytes, piece_list *out, sm_error *err) {
    bytes->len = 0;
    for (size_t k = 0; k < in->n; k++) {
        int b = byte_token(piece_text(in, k), in->items[k].len);
        if (b >= 0) {
            char ch = (char)b;
            SM_TRY(sm_tok_buf_append(bytes, &ch, 1, err));
            continue;
        }
        SM_TRY(flush_bytes(bytes, out, err));
        SM_TRY(piece_add(out, piece_text(in, k), in->items[k].len, false, err));
    }
    return flush_bytes(bytes, out, err);
}

static sm_status dec_strip(const sm_tok_dec_step *step, const char *s, size_t n, piece_list *out, sm_error *err) {
    size_t n_chars = 0;
    for (size_t i = 0; i < n; i += utf8_char_len(s, n, i)) n_chars++;
    size_t begin = 0, cut = 0;
    while (cut < step->start && begin < n && char_at(s, n, begin) == step->ch) {
        begin += utf8_char_len(s, n, begin);
        cut++;
    }
    size_t end = n;
    for (size_t i = 0; i < step->stop && i < n_chars - cut && end > begin; i++) {
        size_t k = char_before(s, end);
        if (char_at(s, n, k) != step->ch) break;
        end = k;
    }
    return piece_add(out, s + begin, end - begin, false, err);
}

static sm_status dec_metaspace(const sm_tok_dec_step *step, size_t index, const char *s, size_t n, piece_list *out,
                               sm_error *err) {
    SM_TRY(piece_begin(out, false, err));
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char_len(s, n, i);
        if (char_at(s, n, i) == step->ch) {
            if (!(index == 0 && step->prepend_scheme != SM_PREPEND_NEVER)) SM_TRY(piece_append(out, " ", 1, err));
        } else {
            SM_TRY(piece_append(out, s + i, k, err));
        }
        i += k;
    }
    return SM_OK;
}

static sm_status decode_step(const struct sm_tokenizer *t, const sm_tok_dec_step *step, pcre2_match_data *md,
                             const piece_list *in, piece_list *out, sm_tok_buf *scratch, sm_tok_spans *spans,
                             sm_error *err) {
    switch (step->kind) {
    case SM_DEC_BYTE_LEVEL: return dec_byte_level(t, in, scratch, out, err);
    case SM_DEC_BYTE_FALLBACK: return dec_byte_fallback(in, scratch, out, err);
    case SM_DEC_FUSE:
        SM_TRY(piece_begin(out, false, err));
        for (size_t k = 0; k < in->n; k++) SM_TRY(piece_append(out, piece_text(in, k), in->items[k].len, err));
        return SM_OK;
    case SM_DEC_REPLACE:
        for (size_t k = 0; k < in->n; k++) {
            SM_TRY(piece_begin(out, false, err));
            size_t before = out->text.len;
            SM_TRY(replace_all(&step->pattern, md, piece_text(in, k), in->items[k].len, step->text, step->text_len,
                               spans, &out->text, err));
            out->items[out->n - 1].len = out->text.len - before;
        }
        return SM_OK;
    case SM_DEC_STRIP:
        for (size_t k = 0; k < in->n; k++) SM_TRY(dec_strip(step, piece_text(in, k), in->items[k].len, out, err));
        return SM_OK;
    case SM_DEC_METASPACE:
        for (size_t k = 0; k < in->n; k++) SM_TRY(dec_metaspace(step, k, piece_text(in, k), in->items[k].len, out, err));
        return SM_OK;
    }
    return sm_fail(err, SM_EINTERNAL, "tokenizer: unknown decoder step %d", (int)step->kind);
}

static sm_status decode_tokens(const struct sm_tokenizer *t, const int *ids, int n_ids, bool skip_special,
                               piece_list *in, sm_error *err) {
    for (int i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->vocab_size)
            return sm_fail(err, SM_ERANGE, "tokenizer %s: token id %d at position %d is outside the vocabulary (size %d)",
                           t->path, id, i, t->vocab_size);
        const char *s;
        size_t n;
        int a = t->added_by_id[id];
        if (a >= 0) {
            s = t->added[a].content;
            n = t->added[a].len;
        } else if (t->model_entry_by_id[id] >= 0) {
            const struct sm_tok_strmap_entry *e = &t->bpe.vocab.entries[t->model_entry_by_id[id]];
            s = t->bpe.vocab.pool + e->offset;
            n = e->len;
        } else {
            continue; /* a hole in the ids: `tokenizers` skips unknown ids too */
        }
        if (skip_special) { /* by content, as `tokenizers` checks it */
            long e = sm_tok_strmap_find(&t->added_map, s, n);
            if (e >= 0 && t->added[t->added_map.entries[e].value].special) continue;
        }
        SM_TRY(piece_add(in, s, n, false, err));
    }
    return SM_OK;
}

sm_status sm_tokenizer_decode(const sm_tokenizer *tok, const int *ids, int n_ids, bool skip_special, char **text,
                              size_t *len, sm_error *err) {
    if (!tok || !text || (!ids && n_ids > 0) || n_ids < 0)
        return sm_fail(err, SM_EINVAL, "sm_tokenizer_decode: bad arguments");
    *text = NULL;
    if (len) *len = 0;
    piece_list a = {0}, b = {0};
    sm_tok_buf scratch = {0}, result = {0};
    sm_tok_spans spans = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    sm_status st = md ? SM_OK : sm_fail(err, SM_ENOMEM, "out of memory creating regex match data");
    if (st == SM_OK) st = decode_tokens(tok, ids, n_ids, skip_special, &a, err);
    piece_list *in = &a, *out = &b;
    for (int i = 0; i < tok->n_dec && st == SM_OK; i++) {
        pieces_reset(out);
        st = decode_step(tok, &tok->dec[i], md, in, out, &scratch, &spans, err);
        piece_list *swap = in;
        in = out;
        out = swap;
    }
    for (size_t k = 0; k < in->n && st == SM_OK; k++) {
        if (k && !tok->has_decoder) st = sm_tok_buf_append(&result, " ", 1, err);
        if (st == SM_OK) st = sm_tok_buf_append(&result, piece_text(in, k), in->items[k].len, err);
    }
    if (st == SM_OK && !result.data) st = sm_tok_buf_append(&result, "", 0, err);
    pieces_free(&a);
    pieces_free(&b);
    sm_tok_buf_free(&scratch);
    free(spans.items);
    if (md) pcre2_match_data_free(md);
    if (st != SM_OK) {
        sm_tok_buf_free(&result);
        return st;
    }
    *text = result.data;
    if (len) *len = result.len;
    return SM_OK;
}

/* ---- vocabulary queries --------------------------------------------------------------------- */

int sm_tokenizer_vocab_size(const sm_tokenizer *tok) { return tok ? tok->vocab_size : 0; }

int sm_tokenizer_token_to_id(const sm_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    size_t n = strlen(token);
    long e = sm_tok_strmap_find(&tok->added_map, token, n);
    if (e >= 0) return tok->added[tok->added_map.entries[e].value].id;
    e = sm_tok_strmap_find(&tok->bpe.vocab, token, n);
    return e >= 0 ? tok->bpe.vocab.entries[e].value : -1;
}

const char *sm_tokenizer_id_to_token(const sm_tokenizer *tok, int id) {
    if (!tok || id < 0 || id >= tok->vocab_size) return NULL;
    if (tok->added_by_id[id] >= 0) return tok->added[tok->added_by_id[id]].content;
    if (tok->model_entry_by_id[id] >= 0) return sm_tok_strmap_key(&tok->bpe.vocab, (size_t)tok->model_entry_by_id[id]);
    return NULL;
}

bool sm_tokenizer_is_special(const sm_tokenizer *tok, int id) {
    if (!tok || id < 0 || id >= tok->vocab_size || tok->added_by_id[id] < 0) return false;
    return tok->added[tok->added_by_id[id]].special;
}

uint64_t sm_tokenizer_fingerprint(const sm_tokenizer *tok) { return tok ? tok->fingerprint : 0; }
