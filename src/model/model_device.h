/* src/model/model_device.h — how model.c hands a model to a device backend (internal to the
 * model module and its backends; users see only model.h).
 *
 * model.c keeps what does not depend on where the math runs — option defaults, row checks,
 * per-sequence KV lengths, truncation, the route observer — and a device backend owns weights,
 * KV cache and the forward. Adding a device is one table and one line in model_devices.c. */
#ifndef SM_MODEL_DEVICE_H
#define SM_MODEL_DEVICE_H

#include "model/model.h"

typedef struct sm_model_dev sm_model_dev; /* a backend's model instance (opaque) */

typedef struct sm_model_device {
    const char *name; /* "cuda" */
    /* max_seqs / max_context are already resolved (sm_model_resolve_limits). */
    sm_status (*load)(const char *dir, const sm_model_opts *opts, int max_seqs, int max_context, sm_model_dev **out,
                      sm_error *err);
    /* A second instance sharing base's weights, with its own KV cache. */
    sm_status (*fork)(sm_model_dev *base, const sm_model_opts *opts, int max_seqs, int max_context,
                      sm_model_dev **out, sm_error *err);
    void (*free)(sm_model_dev *m);
    const sm_model_config *(*cfg)(const sm_model_dev *m);
    const sm_tokenizer *(*tokenizer)(const sm_model_dev *m);
    const char *(*dir)(const sm_model_dev *m);
    bool samples; /* forward takes sm_forward_opts.sample */
    /* Rows already checked by model.c (sm_model_check_rows); observer may be NULL. */
    sm_status (*forward)(sm_model_dev *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo,
                         const sm_route_observer *observer, float *logits, sm_error *err);
} sm_model_device;

/* NULL if this build has no such device; "cpu" is not a backend (model.c itself). */
const sm_model_device *sm_model_device_find(const char *name);
/* "cpu, cuda" for messages. */
void sm_model_device_names(char *buf, size_t cap);

/* Defaults of sm_model_opts: max_seqs 0 -> 1, max_context 0 -> min(4096, max_position_embeddings),
 * and never beyond max_position_embeddings. */
void sm_model_resolve_limits(const sm_model_opts *opts, const sm_model_config *cfg, int *max_seqs, int *max_context);

/* The checks of every forward: sequence and token ids in range, positions inside the context and
 * continuing each sequence's cache without a hole (seq_len: [max_seqs] current lengths). */
sm_status sm_model_check_rows(const sm_model_config *cfg, int max_seqs, int max_context, const int *seq_len,
                              const sm_row *rows, int n_rows, sm_error *err);

#ifdef SPECMOE_HAVE_CUDA
extern const sm_model_device sm_model_device_cuda; /* src/cuda/model_cuda.c */
#endif

#endif
