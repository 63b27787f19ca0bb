/* src/spec/drafter_model.c — the "model" drafter: a separate (smaller) draft model, dense or
 * MoE, with its own runner / a2a backends (SGLang's --speculative-moe-runner-backend). */
#include <string.h>

#include "spec/drafter_lm.h"
#include "spec/drafter_registry.h"

/* Rejection sampling compares p and q token by token, so both models must number tokens the
 * same way: same vocabulary size, and the same tokenizer when both ship one. */
static sm_status check_same_vocab(const sm_model *target, const sm_model *draft, sm_error *err) {
    const char *td = sm_model_dir(target), *dd = sm_model_dir(draft);
    int tv = sm_model_cfg(target)->vocab_size, dv = sm_model_cfg(draft)->vocab_size;
    if (tv != dv)
        return sm_fail(err, SM_EINVAL,
                       "draft model %s has a vocabulary of %d tokens but target %s has %d: "
                       "speculative decoding needs the same vocabulary", dd, dv, td, tv);
    const sm_tokenizer *tt = sm_model_tokenizer(target), *dt = sm_model_tokenizer(draft);
    if (tt && dt && sm_tokenizer_fingerprint(tt) != sm_tokenizer_fingerprint(dt))
        return sm_fail(err, SM_EINVAL,
                       "draft model %s and target %s have different tokenizers (tokenizer.json "
                       "vocabularies or merges differ): speculative decoding needs the same token ids", dd, td);
    return SM_OK;
}

static sm_status model_create(const sm_drafter_init *init, void **state, sm_error *err) {
    const sm_spec_config *cfg = init->cfg;
    sm_model *draft = cfg->draft_model;
    bool owned = false;
    if (!draft) {
        if (!cfg->draft_dir || !*cfg->draft_dir)
            return sm_fail(err, SM_EINVAL, "drafter 'model' needs a draft model directory (--draft DIR)");
        sm_model_opts o = cfg->draft_opts;
        if (o.max_seqs <= 0) o.max_seqs = init->max_seqs;
        if (o.max_context <= 0) o.max_context = init->max_context;
        if (sm_model_load(cfg->draft_dir, &o, &draft, err))
            return sm_error_prefix(err, "loading draft model %s: ", cfg->draft_dir);
        owned = true;
    } else if (sm_model_max_seqs(draft) < init->max_seqs) {
        return sm_fail(err, SM_EINVAL, "draft model %s has %d KV slots but the target %s has %d",
                       sm_model_dir(draft), sm_model_max_seqs(draft), sm_model_dir(init->target), init->max_seqs);
    }
    sm_status s = check_same_vocab(init->target, draft, err);
    if (s) {
        if (owned) sm_model_free(draft);
        return s;
    }
    sm_lm_drafter *d;
    SM_TRY(sm_lm_drafter_create(draft, owned, &d, err));
    *state = d;
    return SM_OK;
}

const sm_drafter_backend sm_drafter_model = {
    .name = "model",
    .create = model_create,
    .propose = sm_lm_drafter_propose,
    .rollback = sm_lm_drafter_rollback,
    .release = sm_lm_drafter_release,
    .max_context = sm_lm_drafter_max_context,
    .model = sm_lm_drafter_model,
    .destroy = sm_lm_drafter_destroy,
};
