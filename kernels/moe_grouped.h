/* kernels/moe_grouped.h — fused grouped expert MLP (SwiGLU) over tokens sorted by expert.
 *
 * Two launches per MoE layer, each covering every active expert at once:
 *   gate_up: act[a, :] = silu(x[a] · Wg_eᵀ) * (x[a] · Wu_eᵀ)          for a in expert e's range
 *   down:    y[a, :]   = weight[a] * (act[a] · Wd_eᵀ)                 (routing weight in the epilogue)
 * Expert ranges come from expert_offsets in DEVICE memory and the grid depends only on n_assign,
 * so a launch can be captured in a CUDA graph and replayed with new routing.
 *
 * Regimes (chosen by the expected tokens per active expert, or forced for tests and benches):
 *   decode      — few tokens per expert: memory-bound; many CTAs per expert, one warp per output
 *                 column streaming a BF16 weight row with 16-byte loads, tokens held in shared
 *                 memory (re-streams the row per tile of at most 8 tokens);
 *   prefill     — many tokens per expert: tensor-core tiles (WMMA bf16, fp32 accumulate),
 *                 64 tokens × 64 columns per CTA, cp.async double buffering;
 *   decode-mma  — several tokens per expert on large experts: a CTA per (expert, 16 columns)
 *                 streams each weight once for up to 32 tokens with mma.sync (moe_decode_mma.cu);
 *   prefill-mma — 128×128×32 mma.sync tiles, ldmatrix, 3-stage cp.async (moe_prefill_mma.cu);
 *                 needs K % 32 == 0 and N % 64 == 0, other shapes run `prefill` instead;
 *   prefill-wgmma — Hopper: 128×256×64 tiles copied by TMA, multiplied by wgmma from shared
 *                 memory, a producer warp and two consumer warpgroups (moe_prefill_wgmma.cu);
 *                 any shape (operands not 16-byte aligned run prefill-mma's choice instead).
 * AUTO chooses by tokens per expert (see pick() in moe_grouped.cu); the mma kernels join it
 * through auto_allow (sm_moe_auto_allow_from_env: on unless the environment turns them off).
 *
 * Layouts (BF16, row-major, row strides are the padded sizes; the runner pads with zeros):
 *   x, y:       [n_assign, hidden]      act: [n_assign, ffn]
 *   w_gate_up:  [num_experts, 2*ffn, hidden]  rows 0..ffn-1 gate, ffn..2ffn-1 up
 *   w_down:     [num_experts, hidden, ffn]
 * hidden and ffn must be multiples of 8 (16-byte rows). */
#ifndef SM_MOE_GROUPED_H
#define SM_MOE_GROUPED_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sm_moe_regime {
    SM_MOE_REGIME_AUTO = 0,
    SM_MOE_REGIME_DECODE,
    SM_MOE_REGIME_PREFILL,
    SM_MOE_REGIME_DECODE_MMA,
    SM_MOE_REGIME_PREFILL_MMA,
    SM_MOE_REGIME_PREFILL_WGMMA,
    SM_MOE_REGIME_COUNT
} sm_moe_regime;

/* Bits of sm_moe_grouped_args.auto_allow: new kernels AUTO may choose, whether the decode
 * gate_up may route the batch itself (sm_cuda_moe_gate_up_routed), and whether the chained down
 * projection finds its experts before its wait (sm_cuda_moe_down_chained). */
enum {
    SM_MOE_ALLOW_DECODE_MMA = 1u << 0,
    SM_MOE_ALLOW_PREFILL_MMA = 1u << 1,
    SM_MOE_ALLOW_PREFILL_WGMMA = 1u << 2,
    SM_MOE_ALLOW_GATE_UP_ROUTING = 1u << 3,
    SM_MOE_ALLOW_EARLY_DOWN = 1u << 4
};

typedef struct sm_moe_grouped_args {
    int num_experts;
    int hidden;                  /* multiple of 8 */
    int ffn;                     /* multiple of 8 */
    int n_assign;                /* rows of x/act/y; fixes the grid; expert_offsets[E] must equal it */
    const int *expert_offsets;   /* device [num_experts + 1] */
    sm_moe_regime regime;
    unsigned auto_allow;         /* SM_MOE_ALLOW_* bits; 0: AUTO keeps to decode/prefill */
} sm_moe_grouped_args;

/* The kernel a launch runs for one projection (down_proj false: gate_up): what AUTO resolves
 * to, or the forced regime after its shape fallback (prefill-mma -> prefill). For labels. */
sm_moe_regime sm_moe_regime_pick(const sm_moe_grouped_args *a, bool down_proj);

/* "auto", "decode", "prefill", "decode-mma", "prefill-mma", "prefill-wgmma"; "?" for other values. */
const char *sm_moe_regime_name(sm_moe_regime r);
/* The regime with that name, or -1. */
int sm_moe_regime_parse(const char *name);

/* auto_allow from the environment, read once by whoever owns the launches (the `cuda` runner
 * at create): both mma kernels, gate_up routing and the early chained down allowed;
 * SPECMOE_MOE_DECODE=simt or SPECMOE_MOE_PREFILL=wmma leaves a kernel out, SPECMOE_MOE_ROUTE=launch
 * keeps the routing in its own launch, SPECMOE_MOE_DOWN=late makes sm_cuda_moe_down_chained wait
 * before finding its experts (A/B against the older paths). */
unsigned sm_moe_auto_allow_from_env(void);

sm_status sm_cuda_moe_gate_up(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *x,
                              const sm_bf16_bits *w_gate_up, sm_bf16_bits *act, sm_error *err);

/* The routing of a decode-sized batch, for gate_up to do itself: the same outputs as
 * sm_cuda_moe_route (fused_ops.h) except xs — the expert inputs are read from h by assignment. */
typedef struct sm_moe_route_job {
    const float *logits;         /* device [rows, num_experts] router logits */
    int rows, top_k;             /* rows * top_k == n_assign */
    bool renormalize;            /* norm_topk_prob */
    const sm_bf16_bits *h;       /* device [rows, h_width]: the normalised rows the experts take */
    int h_width;                 /* multiple of 8, <= hidden (the rest of a token row is zero) */
    int *expert_ids;             /* device [n_assign], as sm_cuda_router_topk */
    int *expert_offsets;         /* device [num_experts + 1], as sm_cuda_moe_permute */
    float *weights;              /* device [n_assign], as sm_cuda_router_topk */
    int *sorted_src, *sorted_pos; /* device [n_assign], as sm_cuda_moe_permute, ascending row within an expert */
    float *sorted_weight;        /* device [n_assign]: the routing weight at each sorted position */
} sm_moe_route_job;

#define SM_MOE_ROUTED_MAX_EXPERTS 128
#define SM_MOE_ROUTED_MAX_ROWS 4

/* Whether sm_cuda_moe_gate_up_routed takes this job: SM_MOE_ALLOW_GATE_UP_ROUTING in auto_allow,
 * the decode regime for gate_up (AUTO's pick or forced), num_experts <= SM_MOE_ROUTED_MAX_EXPERTS,
 * rows 1..SM_MOE_ROUTED_MAX_ROWS, h 16-byte aligned. */
bool sm_moe_gate_up_routes(const sm_moe_grouped_args *a, const sm_moe_route_job *job);

/* gate_up with the routing inside: every CTA repeats the (cheap) routing of the batch from the
 * logits instead of waiting for a routing launch, and CTA (0, 0) writes it out for the down
 * projection and the combine. act, ids, weights, offsets and the permutation are bit for bit those
 * of sm_cuda_moe_route followed by sm_cuda_moe_gate_up. SM_EINVAL where sm_moe_gate_up_routes says no. */
sm_status sm_cuda_moe_gate_up_routed(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_moe_route_job *job,
                                     const sm_bf16_bits *w_gate_up, sm_bf16_bits *act, sm_error *err);

/* weight: device [n_assign] routing weights, multiplied into y. */
sm_status sm_cuda_moe_down(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *act,
                           const sm_bf16_bits *w_down, const float *weight, sm_bf16_bits *y, sm_error *err);

/* sm_cuda_moe_down launched on the same stream right after sm_cuda_moe_gate_up with the same
 * args (not after sm_cuda_moe_gate_up_routed, which writes the offsets itself). Where both
 * projections run the decode regime, or both decode-mma (and SM_MOE_ALLOW_EARLY_DOWN is in
 * auto_allow), every CTA reads the expert offsets, finds its expert and requests its first
 * weights BEFORE waiting for gate_up (programmatic dependent launch): those gate_up kernels let
 * their dependents start only after their own wait, when the offsets' writer has completed.
 * Otherwise it is sm_cuda_moe_down.
 * y is bit for bit sm_cuda_moe_down's. */
sm_status sm_cuda_moe_down_chained(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *act,
                                   const sm_bf16_bits *w_down, const float *weight, sm_bf16_bits *y, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
