#include "sched/workload.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exp/paths.h"
#include "spec/sampler.h"

static bool is_jsonl(const char *path) {
    size_t n = strlen(path);
    return (n > 6 && !strcmp(path + n - 6, ".jsonl")) || (n > 5 && !strcmp(path + n - 5, ".json"));
}

static sm_status push(sm_prompt_set *p, int *cap, sm_prompt item, const char *path, sm_error *err) {
    if (p->n == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        sm_prompt *grown = realloc(p->items, (size_t)ncap * sizeof *grown);
        if (!grown) {
            free(item.text);
            free(item.ids);
            return sm_fail(err, SM_ENOMEM, "%s: out of memory reading prompts", path);
        }
        p->items = grown;
        *cap = ncap;
    }
    p->items[p->n++] = item;
    if (item.text) p->needs_tokenizer = true;
    if (item.ids && item.n_ids > p->max_ids) p->max_ids = item.n_ids;
    return SM_OK;
}

static sm_status parse_json_line(const char *line, size_t len, const char *path, int lineno, sm_prompt *out,
                                 sm_error *err) {
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    if (!o) return sm_fail(err, SM_EFORMAT, "%s:%d: not JSON: %s", path, lineno, je.text);
    sm_status s = SM_OK;
    *out = (sm_prompt){0};
    /* "prompt" as in vLLM's custom datasets; "text" as in experiments/prompts/heldout.jsonl */
    json_t *text = json_is_object(o) ? json_object_get(o, "prompt") : NULL;
    if (!text && json_is_object(o)) text = json_object_get(o, "text");
    json_t *ids = json_is_object(o) ? json_object_get(o, "prompt_ids") : NULL;
    json_t *mnt = json_is_object(o) ? json_object_get(o, "max_new_tokens") : NULL;
    if (!json_is_object(o)) {
        s = sm_fail(err, SM_EFORMAT, "%s:%d: expected an object {\"prompt\": ...} or {\"prompt_ids\": [...]}", path,
                    lineno);
    } else if (json_is_string(text)) {
        out->text = strdup(json_string_value(text));
        if (!out->text) s = sm_fail(err, SM_ENOMEM, "%s:%d: out of memory", path, lineno);
    } else if (json_is_array(ids) && json_array_size(ids) > 0) {
        size_t n = json_array_size(ids);
        out->ids = malloc(n * sizeof *out->ids);
        if (!out->ids) s = sm_fail(err, SM_ENOMEM, "%s:%d: out of memory", path, lineno);
        for (size_t i = 0; s == SM_OK && i < n; i++) {
            json_t *v = json_array_get(ids, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff)
                s = sm_fail(err, SM_EFORMAT, "%s:%d: prompt_ids[%zu] is not a token id", path, lineno, i);
            else
                out->ids[i] = (int)json_integer_value(v);
        }
        out->n_ids = (int)n;
    } else {
        s = sm_fail(err, SM_EFORMAT, "%s:%d: needs \"prompt\" (text) or \"prompt_ids\" (non-empty list of ids)", path,
                    lineno);
    }
    if (s == SM_OK && mnt) {
        if (!json_is_integer(mnt) || json_integer_value(mnt) < 1 || json_integer_value(mnt) > 1000000)
            s = sm_fail(err, SM_EFORMAT, "%s:%d: max_new_tokens must be a positive integer", path, lineno);
        else
            out->max_new_tokens = (int)json_integer_value(mnt);
    }
    json_decref(o);
    if (s != SM_OK) {
        free(out->text);
        free(out->ids);
        *out = (sm_prompt){0};
    }
    return s;
}

sm_status sm_prompts_read(const char *path, sm_prompt_set *out, sm_error *err) {
    *out = (sm_prompt_set){0};
    char *text;
    size_t len;
    SM_TRY(sm_read_text_file(path, &text, &len, err));
    bool jsonl = is_jsonl(path);
    int cap = 0, lineno = 0;
    sm_status s = SM_OK;
    for (char *line = text; s == SM_OK && line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        lineno++;
        size_t trimmed = n;
        while (trimmed && (line[trimmed - 1] == '\r' || line[trimmed - 1] == ' ' || line[trimmed - 1] == '\t')) trimmed--;
        if (trimmed > 0) {
            sm_prompt item = {0};
            if (jsonl) {
                s = parse_json_line(line, trimmed, path, lineno, &item, err);
            } else {
                item.text = strndup(line, trimmed);
                if (!item.text) s = sm_fail(err, SM_ENOMEM, "%s: out of memory", path);
            }
            if (s == SM_OK) s = push(out, &cap, item, path, err);
        }
        line += n + 1;
    }
    free(text);
    if (s == SM_OK && out->n == 0) s = sm_fail(err, SM_EFORMAT, "%s: no prompts (the file is empty)", path);
    if (s != SM_OK) sm_prompts_free(out);
    return s;
}

void sm_prompts_free(sm_prompt_set *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->items[i].text);
        free(p->items[i].ids);
    }
    free(p->items);
    *p = (sm_prompt_set){0};
}

void sm_workload_free(sm_workload *w) {
    for (int i = 0; i < w->n; i++) free(w->items[i].prompt);
    free(w->items);
    *w = (sm_workload){0};
}

static bool avoided(const sm_workload_opts *o, int id) {
    for (int i = 0; i < o->n_avoid_ids; i++)
        if (o->avoid_ids[i] == id) return true;
    return false;
}

sm_status sm_workload_build(const sm_workload_opts *o, sm_workload *out, sm_error *err) {
    *out = (sm_workload){0};
    if (o->num_prompts < 1) return sm_fail(err, SM_EINVAL, "workload: num_prompts must be >= 1");
    if (o->prompts && o->num_prompts > o->prompts->n)
        return sm_fail(err, SM_EINVAL, "workload: num_prompts %d exceeds the %d prompts given", o->num_prompts,
                       o->prompts->n);
    if (!o->prompts && (o->random_input_len < 1 || o->vocab_size < 1))
        return sm_fail(err, SM_EINVAL, "workload: random prompts need random_input_len >= 1 and a vocabulary");
    SM_TRY(sm_calloc((void **)&out->items, (size_t)o->num_prompts, sizeof *out->items, "workload", err));
    out->n = o->num_prompts;

    /* Separate generators for prompts and arrivals: changing the rate keeps the prompts. */
    sm_rng prompt_rng, arrival_rng;
    sm_rng_seed(&prompt_rng, o->seed * 2 + 1);
    sm_rng_seed(&arrival_rng, o->seed * 2 + 2);
    double t = 0;
    sm_status s = SM_OK;
    for (int i = 0; s == SM_OK && i < o->num_prompts; i++) {
        sm_workload_item *it = &out->items[i];
        it->max_new_tokens = o->max_new_tokens;
        if (o->prompts) {
            const sm_prompt *p = &o->prompts->items[i];
            if (p->max_new_tokens) it->max_new_tokens = p->max_new_tokens;
            if (p->ids) {
                s = sm_alloc((void **)&it->prompt, (size_t)p->n_ids * sizeof(int), "prompt", err);
                if (s == SM_OK) memcpy(it->prompt, p->ids, (size_t)p->n_ids * sizeof(int));
                it->n_prompt = p->n_ids;
            } else if (!o->tokenizer) {
                s = sm_fail(err, SM_EINVAL, "workload: prompt %d is text but the target has no tokenizer", i);
            } else {
                s = sm_tokenizer_encode(o->tokenizer, p->text, strlen(p->text), true, &it->prompt, &it->n_prompt, err);
                if (s == SM_OK && it->n_prompt == 0)
                    s = sm_fail(err, SM_EINVAL, "workload: prompt %d encodes to no tokens", i);
            }
        } else {
            s = sm_alloc((void **)&it->prompt, (size_t)o->random_input_len * sizeof(int), "prompt", err);
            for (int j = 0; s == SM_OK && j < o->random_input_len; j++) {
                int id;
                do id = (int)(sm_rng_next(&prompt_rng) % (uint64_t)o->vocab_size);
                while (avoided(o, id) && o->n_avoid_ids < o->vocab_size);
                it->prompt[j] = id;
            }
            it->n_prompt = o->random_input_len;
        }
        if (o->request_rate > 0) {
            /* Exponential gaps: a Poisson process, as `vllm bench serve --request-rate`. */
            t += -log(1.0 - sm_rng_uniform(&arrival_rng)) / o->request_rate;
            it->arrival_s = t;
        }
    }
    if (s != SM_OK) sm_workload_free(out);
    return s;
}
