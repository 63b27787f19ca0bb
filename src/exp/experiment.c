#include "exp/experiment.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(name, field, nullable) {name, SM_SETTING_STRING, offsetof(sm_arm, field), nullable, false}
#define I(name, field, nullable) {name, SM_SETTING_INT, offsetof(sm_arm, field), nullable, false}
#define R(name, field, nullable) {name, SM_SETTING_REAL, offsetof(sm_arm, field), nullable, false}
#define W(name, field, nullable) {name, SM_SETTING_STRING, offsetof(sm_arm, field), nullable, true}
#define W64(name, field, nullable) {name, SM_SETTING_INT64, offsetof(sm_arm, field), nullable, true}
#define WI(name, field, nullable) {name, SM_SETTING_INT, offsetof(sm_arm, field), nullable, true}

/* Order = the order --dry-run and the JSON list them: a model's settings together, so the arms
 * table's columns (added over schema versions) may come in another order. "name" is handled
 * separately. */
const sm_setting sm_arm_settings[] = {
    S("target_model_path", target.path, false),
    S("target_moe_runner_backend", target.moe_runner_backend, false),
    S("target_dtype", target.dtype, false),
    S("target_moe_a2a_backend", target.moe_a2a_backend, false),
    S("target_device", target.device, false),
    W("target_weights", target.weights, false),
    W64("target_weights_seed", target.weights_seed, false),
    WI("target_chunked_prefill_size", target.chunked_prefill_size, true),
    S("draft_model_path", draft.path, true),
    S("draft_moe_runner_backend", draft.moe_runner_backend, true),
    S("draft_dtype", draft.dtype, true),
    S("draft_moe_a2a_backend", draft.moe_a2a_backend, true),
    S("draft_device", draft.device, true),
    W("draft_weights", draft.weights, true),
    W64("draft_weights_seed", draft.weights_seed, true),
    WI("draft_chunked_prefill_size", draft.chunked_prefill_size, true),
    S("drafter", drafter, false),
    I("num_speculative_tokens", num_speculative_tokens, false),
    I("prompt_lookup_min", prompt_lookup_min, true),
    I("prompt_lookup_max", prompt_lookup_max, true),
    I("self_draft_top_k", self_draft_top_k, true),
    R("temperature", temperature, false),
    R("top_p", top_p, false),
    I("top_k", top_k, false),
    {"seed", SM_SETTING_INT64, offsetof(sm_arm, seed), false, false},
    S("workload_kind", workload_kind, false),
    S("prompts_file", prompts_file, true),
    I("num_prompts", num_prompts, false),
    I("random_input_len", random_input_len, true),
    I("max_new_tokens", max_new_tokens, false),
    R("request_rate", request_rate, true),
    I("max_concurrency", max_concurrency, true),
};
const int sm_n_arm_settings = (int)(sizeof sm_arm_settings / sizeof sm_arm_settings[0]);

sm_status sm_arm_make_json(sm_arm *arm, sm_error *err) {
    json_t *o = json_object();
    if (!o) return sm_fail(err, SM_ENOMEM, "arm '%s': out of memory building its JSON", arm->name);
    json_object_set_new(o, "name", json_string(arm->name));
    for (int i = 0; i < sm_n_arm_settings; i++) {
        const sm_setting *s = &sm_arm_settings[i];
        const char *p = (const char *)arm + s->offset;
        json_t *v = NULL;
        if (s->json_if_set && (s->kind == SM_SETTING_STRING
                                   ? !*(char *const *)p || !strcmp(*(char *const *)p, "checkpoint")
                               : s->kind == SM_SETTING_INT ? *(const int *)p == 0
                                                           : *(const int64_t *)p == 0))
            continue;
        switch (s->kind) {
        case SM_SETTING_STRING: {
            const char *str = *(char *const *)p;
            v = str ? json_string(str) : json_null();
            break;
        }
        case SM_SETTING_INT: {
            int x = *(const int *)p;
            v = s->nullable && x == 0 ? json_null() : json_integer(x);
            break;
        }
        case SM_SETTING_INT64: v = json_integer(*(const int64_t *)p); break;
        case SM_SETTING_REAL: {
            double x = *(const double *)p;
            v = s->nullable && x == 0 ? json_null() : json_real(x);
            break;
        }
        }
        json_object_set_new(o, s->name, v);
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) return sm_fail(err, SM_ENOMEM, "arm '%s': out of memory building its JSON", arm->name);
    free(arm->settings_json);
    arm->settings_json = text;
    return SM_OK;
}

static void free_model(sm_model_settings *m) {
    free(m->path);
    free(m->moe_runner_backend);
    free(m->dtype);
    free(m->moe_a2a_backend);
    free(m->device);
    free(m->weights);
}

void sm_experiment_free(sm_experiment *x) {
    if (!x) return;
    for (int i = 0; i < x->n_arms; i++) {
        sm_arm *a = &x->arms[i];
        free(a->name);
        free(a->where);
        free_model(&a->target);
        free_model(&a->draft);
        free(a->drafter);
        free(a->workload_kind);
        free(a->prompts_file);
        free(a->settings_json);
    }
    free(x->arms);
    free(x->schedule);
    free(x->name);
    free(x->description);
    free(x->script_path);
    free(x->script_text);
    free(x->order);
    free(x->settings_json);
    memset(x, 0, sizeof *x);
}

void sm_experiment_print(const sm_experiment *x, void *file) {
    FILE *f = file;
    fprintf(f, "experiment %s: %d arm%s x %d repeat%s = %d runs, order %s%s", x->name, x->n_arms,
            x->n_arms == 1 ? "" : "s", x->repeats, x->repeats == 1 ? "" : "s", x->n_schedule, x->order,
            x->record_routes ? ", route traces recorded" : "");
    if (x->warmup_requests > 0) fprintf(f, ", %d untimed warm-up request%s per run", x->warmup_requests,
                                        x->warmup_requests == 1 ? "" : "s");
    fputc('\n', f);
    for (int i = 0; i < x->n_arms; i++) {
        const sm_arm *a = &x->arms[i];
        fprintf(f, "\narm %d: %s  (%s)\n", i, a->name, a->where ? a->where : "?");
        for (int j = 0; j < sm_n_arm_settings; j++) {
            const sm_setting *s = &sm_arm_settings[j];
            const char *p = (const char *)a + s->offset;
            switch (s->kind) {
            case SM_SETTING_STRING: {
                const char *str = *(char *const *)p;
                if (str) fprintf(f, "  %-26s %s\n", s->name, str);
                break;
            }
            case SM_SETTING_INT:
                if (!s->nullable || *(const int *)p) fprintf(f, "  %-26s %d\n", s->name, *(const int *)p);
                break;
            case SM_SETTING_INT64:
                if (!s->nullable || *(const int64_t *)p) fprintf(f, "  %-26s %lld\n", s->name, (long long)*(const int64_t *)p);
                break;
            case SM_SETTING_REAL:
                if (!s->nullable || *(const double *)p) fprintf(f, "  %-26s %g\n", s->name, *(const double *)p);
                break;
            }
        }
    }
    fprintf(f, "\nrun order:");
    for (int i = 0; i < x->n_schedule; i++)
        fprintf(f, "%s %s#%d", i ? "," : "", x->arms[x->schedule[i].arm].name, x->schedule[i].repeat);
    fputc('\n', f);
}
