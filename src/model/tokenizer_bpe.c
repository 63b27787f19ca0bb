/* src/model/tokenizer_bpe.c — hash maps for vocabularies and merges, and BPE merging of one
 * word, step for step as `tokenizers`' BPE model does it (so that ids match exactly). */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* ---- string -> int map ------------------------------------------------------------------- */

static sm_status strmap_rehash(sm_tok_strmap *m, size_t n_slots, sm_error *err) {
    int32_t *slots;
    SM_TRY(sm_alloc((void **)&slots, n_slots * sizeof *slots, "tokenizer hash slots", err));
    memset(slots, 0xFF, n_slots * sizeof *slots);
    for (size_t e = 0; e < m->n_entries; e++) {
        size_t i = (size_t)m->entries[e].hash & (n_slots - 1);
        while (slots[i] >= 0) i = (i + 1) & (n_slots - 1);
        slots[i] = (int32_t)e;
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n_slots;
    return SM_OK;
}

long sm_tok_strmap_find(const sm_tok_strmap *m, const char *key, size_t len) {
    if (!m->n_slots) return -1;
    uint64_t h = sm_tok_fnv1a(SM_TOK_FNV_OFFSET, key, len);
    for (size_t i = (size_t)h & (m->n_slots - 1);; i = (i + 1) & (m->n_slots - 1)) {
        int32_t e = m->slots[i];
        if (e < 0) return -1;
        const struct sm_tok_strmap_entry *en = &m->entries[e];
        if (en->hash == h && en->len == len && !memcmp(m->pool + en->offset, key, len)) return e;
    }
}

sm_status sm_tok_strmap_put(sm_tok_strmap *m, const char *key, size_t len, int value, size_t *entry_index,
                            sm_error *err) {
    long found = sm_tok_strmap_find(m, key, len);
    if (found >= 0) {
        m->entries[found].value = value;
        if (entry_index) *entry_index = (size_t)found;
        return SM_OK;
    }
    if (len > UINT32_MAX || m->n_entries >= INT32_MAX)
        return sm_fail(err, SM_ERANGE, "tokenizer map: key of %zu bytes or %zu keys is too many", len, m->n_entries);
    if ((m->n_entries + 1) * 2 > m->n_slots) SM_TRY(strmap_rehash(m, m->n_slots ? m->n_slots * 2 : 64, err));
    SM_TRY(sm_tok_grow((void **)&m->entries, &m->entries_cap, m->n_entries + 1, sizeof *m->entries,
                       "tokenizer map entries", err));
    if (len + 1 > (size_t)-1 - m->pool_len) return sm_fail(err, SM_ENOMEM, "tokenizer string pool overflow");
    SM_TRY(sm_tok_grow((void **)&m->pool, &m->pool_cap, m->pool_len + len + 1, 1, "tokenizer string pool", err));
    struct sm_tok_strmap_entry *en = &m->entries[m->n_entries];
    en->offset = m->pool_len;
    en->len = (uint32_t)len;
    en->value = value;
    en->hash = sm_tok_fnv1a(SM_TOK_FNV_OFFSET, key, len);
    if (len) memcpy(m->pool + m->pool_len, key, len);
    m->pool[m->pool_len + len] = '\0';
    m->pool_len += len + 1;
    size_t i = (size_t)en->hash & (m->n_slots - 1);
    while (m->slots[i] >= 0) i = (i + 1) & (m->n_slots - 1);
    m->slots[i] = (int32_t)m->n_entries;
    if (entry_index) *entry_index = m->n_entries;
    m->n_entries++;
    return SM_OK;
}

void sm_tok_strmap_free(sm_tok_strmap *m) {
    free(m->pool);
    free(m->entries);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- (id, id) -> merge map ----------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser: ids are small and sequential */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static sm_status pairmap_rehash(sm_tok_pairmap *m, size_t n_slots, sm_error *err) {
    struct sm_tok_pair_slot *slots;
    SM_TRY(sm_alloc((void **)&slots, n_slots * sizeof *slots, "merge hash slots", err));
    for (size_t i = 0; i < n_slots; i++) slots[i].key = UINT64_MAX;
    for (size_t j = 0; j < m->n_slots; j++) {
        if (m->slots[j].key == UINT64_MAX) continue;
        size_t i = (size_t)mix64(m->slots[j].key) & (n_slots - 1);
        while (slots[i].key != UINT64_MAX) i = (i + 1) & (n_slots - 1);
        slots[i] = m->slots[j];
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n_slots;
    return SM_OK;
}

const struct sm_tok_pair_slot *sm_tok_pairmap_find(const sm_tok_pairmap *m, int a, int b) {
    if (!m->n_slots) return NULL;
    uint64_t key = pair_key(a, b);
    for (size_t i = (size_t)mix64(key) & (m->n_slots - 1);; i = (i + 1) & (m->n_slots - 1)) {
        if (m->slots[i].key == key) return &m->slots[i];
        if (m->slots[i].key == UINT64_MAX) return NULL;
    }
}

sm_status sm_tok_pairmap_put(sm_tok_pairmap *m, int a, int b, int rank, int new_id, sm_error *err) {
    if ((m->count + 1) * 2 > m->n_slots) SM_TRY(pairmap_rehash(m, m->n_slots ? m->n_slots * 2 : 64, err));
    uint64_t key = pair_key(a, b);
    size_t i = (size_t)mix64(key) & (m->n_slots - 1);
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & (m->n_slots - 1);
    if (m->slots[i].key == UINT64_MAX) m->count++;
    /* A repeated pair keeps the later rank, as collecting the merges into a map does. */
    m->slots[i].key = key;
    m->slots[i].rank = rank;
    m->slots[i].new_id = new_id;
    return SM_OK;
}

void sm_tok_pairmap_free(sm_tok_pairmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- BPE ----------------------------------------------------------------------------------- */

sm_status sm_tok_ids_push(sm_tok_ids *v, int id, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&v->ids, &v->cap, v->n + 1, sizeof *v->ids, "token ids", err));
    v->ids[v->n++] = id;
    return SM_OK;
}

static sm_status add_symbol(sm_tok_bpe_scratch *s, size_t *n, int id, int len, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&s->symbols, &s->symbols_cap, *n + 1, sizeof *s->symbols, "BPE symbols", err));
    struct sm_tok_symbol *sym = &s->symbols[*n];
    sym->id = id;
    sym->len = len;
    sym->prev = (int)*n - 1;
    sym->next = -1;
    if (*n) s->symbols[*n - 1].next = (int)*n;
    (*n)++;
    return SM_OK;
}

/* Min-heap on (rank, pos): the lowest-ranked merge first, the leftmost among equals. */
static bool merge_less(const struct sm_tok_merge *x, const struct sm_tok_merge *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static sm_status heap_push(sm_tok_bpe_scratch *s, size_t *n, struct sm_tok_merge m, sm_error *err) {
    SM_TRY(sm_tok_grow((void **)&s->heap, &s->heap_cap, *n + 1, sizeof *s->heap, "BPE merge queue", err));
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&m, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = m;
    return SM_OK;
}

static struct sm_tok_merge heap_pop(sm_tok_bpe_scratch *s, size_t *n) {
    struct sm_tok_merge top = s->heap[0], last = s->heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && merge_less(&s->heap[child + 1], &s->heap[child])) child++;
        if (!merge_less(&s->heap[child], &last)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (*n) s->heap[i] = last;
    return top;
}

static sm_status push_pair(const sm_tok_bpe *m, sm_tok_bpe_scratch *s, size_t *n_heap, int pos, sm_error *err) {
    const struct sm_tok_symbol *sym = &s->symbols[pos];
    if (sym->next < 0) return SM_OK;
    const struct sm_tok_pair_slot *p = sm_tok_pairmap_find(&m->merges, sym->id, s->symbols[sym->next].id);
    if (!p) return SM_OK;
    return heap_push(s, n_heap, (struct sm_tok_merge){p->rank, pos, p->new_id}, err);
}

sm_status sm_tok_bpe_word(const sm_tok_bpe *m, const char *word, size_t len, sm_tok_bpe_scratch *s,
                          sm_tok_ids *out, sm_error *err) {
    if (len == 0) return SM_OK;
    if (m->ignore_merges) {
        long e = sm_tok_strmap_find(&m->vocab, word, len);
        if (e >= 0) return sm_tok_ids_push(out, m->vocab.entries[e].value, err);
    }
    /* 1. one symbol per character (prefix/suffix attached), unknowns via bytes or unk */
    size_t n = 0;
    int unk_pending = -1, unk_len = 0;
    const unsigned char *u = (const unsigned char *)word;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = sm_tok_utf8_decode(u + i, len - i, &cp);
        if (!k) return sm_fail(err, SM_EINTERNAL, "BPE: ill-formed UTF-8 inside a word at byte %zu", i);
        bool first = i == 0, last = i + (size_t)k == len;
        const char *sym = word + i;
        size_t sym_len = (size_t)k;
        if ((!first && m->prefix) || (last && m->suffix)) {
            size_t need = (size_t)k + m->prefix_len + m->suffix_len;
            SM_TRY(sm_tok_grow((void **)&s->sym_buf, &s->sym_buf_cap, need, 1, "BPE symbol", err));
            sym_len = 0;
            if (!first && m->prefix) { memcpy(s->sym_buf, m->prefix, m->prefix_len); sym_len = m->prefix_len; }
            memcpy(s->sym_buf + sym_len, word + i, (size_t)k);
            sym_len += (size_t)k;
            if (last && m->suffix) { memcpy(s->sym_buf + sym_len, m->suffix, m->suffix_len); sym_len += m->suffix_len; }
            sym = s->sym_buf;
        }
        i += (size_t)k;
        long e = sm_tok_strmap_find(&m->vocab, sym, sym_len);
        if (e >= 0) {
            if (unk_pending >= 0) {
                SM_TRY(add_symbol(s, &n, unk_pending, unk_len, err));
                unk_pending = -1;
            }
            SM_TRY(add_symbol(s, &n, m->vocab.entries[e].value, k, err));
            continue;
        }
        if (m->byte_fallback) {
            bool all = true;
            for (size_t j = 0; j < sym_len && all; j++) all = m->byte_ids[(unsigned char)sym[j]] >= 0;
            if (all) {
                /* As in `tokenizers`, a pending unk is not flushed before byte tokens. */
                for (size_t j = 0; j < sym_len; j++) SM_TRY(add_symbol(s, &n, m->byte_ids[(unsigned char)sym[j]], 1, err));
                continue;
            }
        }
        if (m->unk_id >= 0) {
            if (unk_pending >= 0 && m->fuse_unk) {
                unk_len += k;
            } else {
                if (unk_pending >= 0) SM_TRY(add_symbol(s, &n, unk_pending, unk_len, err));
                unk_pending = m->unk_id;
                unk_len = k;
            }
        }
        /* no unk_token: the character is dropped, as `tokenizers` drops it */
    }
    if (unk_pending >= 0) SM_TRY(add_symbol(s, &n, unk_pending, unk_len, err));

    /* 2. merge the lowest-ranked adjacent pair until none is left */
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) SM_TRY(push_pair(m, s, &n_heap, (int)i, err));
    while (n_heap) {
        struct sm_tok_merge top = heap_pop(s, &n_heap);
        struct sm_tok_symbol *cur = &s->symbols[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        struct sm_tok_symbol right = s->symbols[cur->next];
        /* Skip queue entries made stale by an earlier merge. */
        const struct sm_tok_pair_slot *p = sm_tok_pairmap_find(&m->merges, cur->id, right.id);
        if (!p || p->new_id != top.new_id) continue;
        s->symbols[cur->next].len = 0;
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) s->symbols[right.next].prev = top.pos;
        if (cur->prev >= 0) SM_TRY(push_pair(m, s, &n_heap, cur->prev, err));
        SM_TRY(push_pair(m, s, &n_heap, top.pos, err));
    }
    for (size_t i = 0; i < n; i++)
        if (s->symbols[i].len) SM_TRY(sm_tok_ids_push(out, s->symbols[i].id, err));
    return SM_OK;
}

void sm_tok_bpe_scratch_free(sm_tok_bpe_scratch *s) {
    free(s->symbols);
    free(s->heap);
    free(s->sym_buf);
    memset(s, 0, sizeof *s);
}

void sm_tok_bpe_free(sm_tok_bpe *m) {
    sm_tok_strmap_free(&m->vocab);
    sm_tok_pairmap_free(&m->merges);
    free(m->merge_pairs);
    free(m->prefix);
    free(m->suffix);
    memset(m, 0, sizeof *m);
}
