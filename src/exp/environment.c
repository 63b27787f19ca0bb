#include "exp/environment.h"

#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifdef SPECMOE_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

#ifndef SPECMOE_SOURCE_DIR
#define SPECMOE_SOURCE_DIR "."
#endif

/* First line of a shell command's output, or "" (git may be absent on the GPU machine). */
static void command_line(const char *cmd, char *out, size_t cap) {
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p) return;
    if (fgets(out, (int)cap, p)) out[strcspn(out, "\r\n")] = '\0';
    else out[0] = '\0';
    /* drain so the child does not get SIGPIPE mid-write */
    char sink[256];
    while (fgets(sink, sizeof sink, p)) {}
    pclose(p);
}

static void cpu_model(char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t') colon++;
                snprintf(out, cap, "%s", colon);
                out[strcspn(out, "\r\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

static void git_commit(const char *dir, char *out, size_t cap) {
    char cmd[1024], commit[96], dirty[8];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse HEAD 2>/dev/null", dir);
    command_line(cmd, commit, sizeof commit);
    if (strlen(commit) < 7) {
        snprintf(out, cap, "unknown");
        return;
    }
    snprintf(cmd, sizeof cmd, "git -C '%s' status --porcelain --untracked-files=no 2>/dev/null | head -1", dir);
    command_line(cmd, dirty, sizeof dirty);
    snprintf(out, cap, "%s%s", commit, dirty[0] ? "-dirty" : "");
}

void sm_environment_capture(sm_environment *env, const char *source_dir) {
    memset(env, 0, sizeof *env);
    gethostname(env->host, sizeof env->host - 1);
    struct utsname u;
    if (uname(&u) == 0) snprintf(env->os, sizeof env->os, "%s %s %s", u.sysname, u.release, u.machine);
    cpu_model(env->cpu, sizeof env->cpu);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    env->cpu_count = n > 0 ? (int)n : 0;
    git_commit(source_dir ? source_dir : SPECMOE_SOURCE_DIR, env->git_commit, sizeof env->git_commit);
    snprintf(env->specmoe_version, sizeof env->specmoe_version, "0.1");
#ifdef __VERSION__
    snprintf(env->compiler, sizeof env->compiler, "%s", __VERSION__);
#endif
    snprintf(env->build_flags, sizeof env->build_flags, "cuda=%s optimize=%s asserts=%s sanitize=%s",
#ifdef SPECMOE_HAVE_CUDA
             "on",
#else
             "off",
#endif
#ifdef __OPTIMIZE__
             "on",
#else
             "off",
#endif
#ifdef NDEBUG
             "off",
#else
             "on",
#endif
#if defined(__SANITIZE_ADDRESS__)
             "address"
#else
             "off"
#endif
    );
#ifdef SPECMOE_HAVE_CUDA
    int count = 0, v = 0;
    if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
        struct cudaDeviceProp prop;
        env->gpu_count = count;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) snprintf(env->gpu_name, sizeof env->gpu_name, "%s", prop.name);
    }
    if (cudaRuntimeGetVersion(&v) == cudaSuccess) snprintf(env->cuda_version, sizeof env->cuda_version, "%d.%d", v / 1000, (v % 1000) / 10);
    command_line("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null", env->gpu_driver,
                 sizeof env->gpu_driver);
    if (!env->gpu_driver[0] && cudaDriverGetVersion(&v) == cudaSuccess)
        snprintf(env->gpu_driver, sizeof env->gpu_driver, "CUDA driver API %d.%d", v / 1000, (v % 1000) / 10);
    if (ncclGetVersion(&v) == ncclSuccess)
        snprintf(env->nccl_version, sizeof env->nccl_version, "%d.%d.%d", v / 10000, (v % 10000) / 100, v % 100);
#endif
}
