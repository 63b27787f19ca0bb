/* src/exp/environment.h — what produced a result: host, CPU, GPU / driver / CUDA / NCCL (CUDA
 * builds only), git commit of the source tree, build flags. Stored once per experiment. */
#ifndef SM_EXP_ENVIRONMENT_H
#define SM_EXP_ENVIRONMENT_H

typedef struct sm_environment {
    char host[256];
    char os[256];
    char cpu[256];
    int cpu_count;
    char gpu_name[256];     /* empty on a CPU-only build */
    int gpu_count;
    char gpu_driver[64];
    char cuda_version[64];
    char nccl_version[64];
    char git_commit[96];    /* "unknown" outside a git checkout; "-dirty" when modified */
    char build_flags[256];
    char compiler[128];
    char specmoe_version[32];
} sm_environment;

/* Never fails: what cannot be found is left empty (or "unknown"). source_dir: the tree whose
 * git commit is recorded (NULL = the configured source directory). */
void sm_environment_capture(sm_environment *env, const char *source_dir);

#endif
