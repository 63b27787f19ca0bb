/* src/model/model_devices.c — the device backends a model can run on, and what model.c and
 * every backend share: option defaults and row checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_device.h"

static const sm_model_device *const devices[] = {
#ifdef SPECMOE_HAVE_CUDA
    &sm_model_device_cuda,
#endif
    NULL, /* keeps the array non-empty in a CPU-only build */
};

const sm_model_device *sm_model_device_find(const char *name) {
    for (size_t i = 0; name && devices[i]; i++)
        if (!strcmp(devices[i]->name, name)) return devices[i];
    return NULL;
}

void sm_model_device_names(char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "cpu");
    for (size_t i = 0; devices[i] && used < cap; i++) used += (size_t)snprintf(buf + used, cap - used, ", %s", devices[i]->name);
}

void sm_model_resolve_limits(const sm_model_opts *opts, const sm_model_config *cfg, int *max_seqs, int *max_context) {
    *max_seqs = opts->max_seqs > 0 ? opts->max_seqs : 1;
    int ctx = opts->max_context > 0 ? opts->max_context : 4096;
    if (ctx > cfg->max_position_embeddings) ctx = cfg->max_position_embeddings;
    *max_context = ctx;
}

sm_status sm_model_check_rows(const sm_model_config *c, int max_seqs, int max_context, const int *seq_len,
                              const sm_row *rows, int n_rows, sm_error *err) {
    int *expect = malloc((size_t)max_seqs * sizeof(int));
    if (!expect) return sm_fail(err, SM_ENOMEM, "forward: out of memory");
    for (int i = 0; i < max_seqs; i++) expect[i] = -1;
    sm_status s = SM_OK;
    for (int r = 0; r < n_rows && !s; r++) {
        const sm_row *row = &rows[r];
        if (row->seq < 0 || row->seq >= max_seqs)
            s = sm_fail(err, SM_ERANGE, "forward: row %d: sequence %d out of range [0, %d)", r, row->seq, max_seqs);
        else if (row->token < 0 || row->token >= c->vocab_size)
            s = sm_fail(err, SM_ERANGE, "forward: row %d: token id %d out of range [0, %d)", r, row->token, c->vocab_size);
        else if (row->pos < 0 || row->pos >= max_context)
            s = sm_fail(err, SM_ERANGE, "forward: row %d: position %d exceeds the context of %d tokens", r, row->pos,
                        max_context);
        else if (expect[row->seq] < 0 ? row->pos > seq_len[row->seq] : row->pos != expect[row->seq])
            s = sm_fail(err, SM_ERANGE, "forward: row %d: sequence %d position %d would leave a hole (cache holds %d)", r,
                        row->seq, row->pos, expect[row->seq] < 0 ? seq_len[row->seq] : expect[row->seq]);
        else
            expect[row->seq] = row->pos + 1;
    }
    free(expect);
    return s;
}
