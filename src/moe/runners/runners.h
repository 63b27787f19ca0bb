/* src/moe/runners/runners.h — the runner backends the registry knows (internal header). */
#ifndef SM_RUNNERS_H
#define SM_RUNNERS_H

#include "moe/runner.h"

extern const sm_runner_backend sm_runner_ref;
#ifdef SPECMOE_HAVE_CUDA
extern const sm_runner_backend sm_runner_cublaslt; /* src/cuda/runner_cublaslt.c */
extern const sm_runner_backend sm_runner_cuda;     /* src/cuda/runner_cuda.c */
#endif

#endif
