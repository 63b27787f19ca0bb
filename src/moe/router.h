/* src/moe/router.h — router top-k on the CPU: softmax over expert logits, top-k, optional
 * renormalisation (norm_topk_prob). Ties go to the lower expert id, as torch.topk does on CPU. */
#ifndef SM_ROUTER_H
#define SM_ROUTER_H

#include <stdbool.h>

/* logits [n_rows, num_experts] -> ids/weights [n_rows, top_k]. */
void sm_router_topk(const float *logits, int n_rows, int num_experts, int top_k, bool renormalize,
                    int *expert_ids, float *weights);

#endif
