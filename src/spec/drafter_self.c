/* src/spec/drafter_self.c — the "self" drafter: the target drafts for itself in a cheaper mode,
 * running a subset of its layers and/or fewer experts per token (e.g. top-1 instead of top-k:
 * a MoE-specific self-speculation knob). It is a fork of the target: the same weights, its own
 * KV cache, so the target's cache is never disturbed by draft passes. */
#include <stdlib.h>

#include "spec/drafter_lm.h"
#include "spec/drafter_registry.h"

static sm_status build_skip(const sm_spec_config *cfg, int n_layers, bool *skip, sm_error *err) {
    const int *list = cfg->self_layers ? cfg->self_layers : cfg->self_skip_layers;
    int n = cfg->self_layers ? cfg->n_self_layers : cfg->n_self_skip_layers;
    const char *what = cfg->self_layers ? "self_layers" : "self_skip_layers";
    if (cfg->self_layers && cfg->self_skip_layers)
        return sm_fail(err, SM_EINVAL, "self drafter: give either the layers to keep or the layers to skip, not both");
    for (int l = 0; l < n_layers; l++) skip[l] = cfg->self_layers != NULL; /* keep-list: start from none */
    for (int i = 0; i < n; i++) {
        if (list[i] < 0 || list[i] >= n_layers)
            return sm_fail(err, SM_EINVAL, "self drafter: %s entry %d is layer %d, but the target has layers 0..%d",
                           what, i, list[i], n_layers - 1);
        skip[list[i]] = cfg->self_layers == NULL;
    }
    int kept = 0;
    for (int l = 0; l < n_layers; l++) kept += !skip[l];
    if (kept == 0) return sm_fail(err, SM_EINVAL, "self drafter: %s leaves no layer to run", what);
    return SM_OK;
}

static sm_status self_create(const sm_drafter_init *init, void **state, sm_error *err) {
    const sm_spec_config *cfg = init->cfg;
    const sm_model_config *mc = sm_model_cfg(init->target);
    if (cfg->self_top_k < 0)
        return sm_fail(err, SM_EINVAL, "self drafter: experts per token %d must be >= 1 (0 = the model's)", cfg->self_top_k);
    if (cfg->self_top_k > 0) {
        if (!sm_config_is_moe(mc))
            return sm_fail(err, SM_EINVAL, "self drafter: experts per token given, but target %s is not a MoE model",
                           sm_model_dir(init->target));
        if (cfg->self_top_k > mc->num_experts)
            return sm_fail(err, SM_EINVAL, "self drafter: %d experts per token requested but target %s has %d experts",
                           cfg->self_top_k, sm_model_dir(init->target), mc->num_experts);
    }
    bool *skip;
    SM_TRY(sm_calloc((void **)&skip, (size_t)mc->num_layers, sizeof(bool), "self drafter layers", err));
    sm_status s = build_skip(cfg, mc->num_layers, skip, err);
    sm_model *fork = NULL;
    if (!s) s = sm_model_fork(init->target, NULL, &fork, err);
    sm_lm_drafter *d = NULL;
    if (!s) s = sm_lm_drafter_create(fork, true, &d, err);
    if (s) {
        free(skip);
        return s;
    }
    d->skip_layer = skip;
    d->fo.skip_layer = skip;
    d->fo.top_k_override = cfg->self_top_k;
    *state = d;
    return SM_OK;
}

const sm_drafter_backend sm_drafter_self = {
    .name = "self",
    .create = self_create,
    .propose = sm_lm_drafter_propose,
    .rollback = sm_lm_drafter_rollback,
    .release = sm_lm_drafter_release,
    .max_context = sm_lm_drafter_max_context,
    .model = sm_lm_drafter_model,
    .destroy = sm_lm_drafter_destroy,
};
