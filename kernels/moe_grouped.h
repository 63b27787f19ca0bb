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

/* Bits of sm_moe_grouped_args.auto_allow: new kernels AUTO may choose. */
enum { SM_MOE_ALLOW_DECODE_MMA = 1u << 0, SM_MOE_ALLOW_PREFILL_MMA = 1u << 1, SM_MOE_ALLOW_PREFILL_WGMMA = 1u << 2 };

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
 * at create): both mma kernels allowed; SPECMOE_MOE_DECODE=simt or SPECMOE_MOE_PREFILL=wmma
 * leaves one out (A/B against the older kernels). */
unsigned sm_moe_auto_allow_from_env(void);

sm_status sm_cuda_moe_gate_up(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *x,
                              const sm_bf16_bits *w_gate_up, sm_bf16_bits *act, sm_error *err);

/* weight: device [n_assign] routing weights, multiplied into y. */
sm_status sm_cuda_moe_down(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *act,
                           const sm_bf16_bits *w_down, const float *weight, sm_bf16_bits *y, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
