#include "moe/router.h"

#include <math.h>

void sm_router_topk(const float *logits, int n_rows, int num_experts, int top_k, bool renormalize,
                    int *expert_ids, float *weights) {
    for (int r = 0; r < n_rows; r++) {
        const float *l = logits + (long)r * num_experts;
        int *ids = expert_ids + (long)r * top_k;
        float *w = weights + (long)r * top_k;
        float max = l[0];
        for (int e = 1; e < num_experts; e++) max = l[e] > max ? l[e] : max;
        float sum = 0;
        for (int e = 0; e < num_experts; e++) sum += expf(l[e] - max);
        /* Selection by repeated max keeps the lower id on ties and needs no scratch memory;
         * k is small (<= 16) so k passes over E logits are cheap. */
        for (int j = 0; j < top_k; j++) {
            int best = -1;
            for (int e = 0; e < num_experts; e++) {
                bool taken = false;
                for (int i = 0; i < j; i++) taken |= ids[i] == e;
                if (!taken && (best < 0 || l[e] > l[best])) best = e;
            }
            ids[j] = best;
            w[j] = expf(l[best] - max) / sum;
        }
        if (renormalize) {
            float s = 0;
            for (int j = 0; j < top_k; j++) s += w[j];
            for (int j = 0; j < top_k; j++) w[j] /= s;
        }
    }
}
