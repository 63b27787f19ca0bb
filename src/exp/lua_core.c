/* src/exp/lua_core.c — `specmoe.core`, the C half of the Lua module: what the engine knows
 * (backends, drafters, dtypes) and cheap looks at files (a model's config, a prompts file), so
 * the pure-Lua half can check a script completely before anything heavy runs. */
#include "exp/lua_core.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "model/config.h"
#include "model/tokenizer.h"
#include "moe/a2a.h"
#include "moe/runner.h"
#include "sched/workload.h"
#include "spec/spec.h"

#ifdef SPECMOE_HAVE_CUDA
#include "cuda/moe_device.h"
#endif

/* Pushes "a, b, c" as the list {"a", "b", "c"}. */
static void push_names(lua_State *L, const char *names) {
    lua_newtable(L);
    int i = 0;
    const char *p = names;
    while (*p) {
        while (*p == ',' || *p == ' ') p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ') p++;
        if (p > start) {
            lua_pushlstring(L, start, (size_t)(p - start));
            lua_rawseti(L, -2, ++i);
        }
    }
}

static int l_runner_backends(lua_State *L) {
    char buf[512];
    sm_runner_names(buf, sizeof buf);
    push_names(L, buf);
    return 1;
}

static int l_a2a_backends(lua_State *L) {
    char buf[512];
    sm_a2a_names(buf, sizeof buf);
    push_names(L, buf);
    return 1;
}

/* The runners a GPU model can use (those with a device-pointer path), and the one "auto" picks
 * there; an empty list and nil in a build without CUDA. */
static int l_device_runner_backends(lua_State *L) {
    lua_newtable(L);
#ifdef SPECMOE_HAVE_CUDA
    lua_pushcfunction(L, l_runner_backends);
    lua_call(L, 0, 1);
    int n = (int)luaL_len(L, -1), out = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const sm_runner_backend *b = sm_runner_find(lua_tostring(L, -1), false);
        if (b && sm_runner_has_device_path(b)) lua_rawseti(L, -3, ++out);
        else lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushstring(L, "cuda"); /* what the GPU model takes for "auto" (src/cuda/model_cuda_weights.c) */
#else
    lua_pushnil(L);
#endif
    return 2;
}

static int l_drafters(lua_State *L) {
    char buf[512];
    sm_drafter_names(buf, sizeof buf);
    push_names(L, buf);
    return 1;
}

static int l_max_k(lua_State *L) {
    lua_pushinteger(L, SM_SPEC_MAX_K);
    return 1;
}

/* Weight dtypes a model can be stored in (index types excluded). */
static int l_dtypes(lua_State *L) {
    lua_newtable(L);
    for (int d = 0, i = 0; d < SM_DTYPE_COUNT; d++) {
        if (d == SM_DTYPE_I64 || d == SM_DTYPE_I32) continue;
        lua_pushstring(L, sm_dtype_name((sm_dtype)d));
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static int l_dtype_known(lua_State *L) {
    sm_dtype d;
    lua_pushboolean(L, sm_dtype_parse(luaL_checkstring(L, 1), &d) == 0 && d != SM_DTYPE_I64 && d != SM_DTYPE_I32);
    return 1;
}

/* runner_weight_dtypes(name) -> {"f32", "bf16", ...}, the dtypes the runner stores expert
 * weights in, and the backend's name ("auto" resolves to what this build picks on the CPU);
 * nil for an unknown runner. */
static int l_runner_weight_dtypes(lua_State *L) {
    const sm_runner_backend *r = sm_runner_find(luaL_checkstring(L, 1), false);
    if (!r) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    for (int d = 0, i = 0; d < SM_DTYPE_COUNT; d++) {
        if (!(r->weight_dtypes & SM_DTYPE_BIT(d))) continue;
        lua_pushstring(L, sm_dtype_name((sm_dtype)d));
        lua_rawseti(L, -2, ++i);
    }
    lua_pushstring(L, r->name);
    return 2;
}

/* Canonical name of a dtype ("float32" -> "f32"), or nil. */
static int l_dtype_canonical(lua_State *L) {
    sm_dtype d;
    if (sm_dtype_parse(luaL_checkstring(L, 1), &d) == 0) lua_pushstring(L, sm_dtype_name(d));
    else lua_pushnil(L);
    return 1;
}

static int l_exists(lua_State *L) {
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
    return 1;
}

static void set_int(lua_State *L, const char *key, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

/* model_info(dir) -> {vocab_size, num_layers, num_experts, num_experts_per_tok, max_context,
 * has_tokenizer, tokenizer_fingerprint} or nil, message. */
static int l_model_info(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    char path[PATH_MAX];
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s is not a directory (a checkpoint directory with config.json)", dir);
        return 2;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    sm_model_config cfg;
    sm_error err = {0};
    if (sm_config_load(path, &cfg, &err) != SM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_newtable(L);
    set_int(L, "vocab_size", cfg.vocab_size);
    set_int(L, "num_layers", cfg.num_layers);
    set_int(L, "num_experts", cfg.num_experts);
    set_int(L, "num_experts_per_tok", cfg.num_experts_per_tok);
    /* The context a model instance gets by default (sm_model_opts.max_context = 0). */
    int max_context = cfg.max_position_embeddings < 4096 ? cfg.max_position_embeddings : 4096;
    set_int(L, "max_context", max_context);
    lua_pushstring(L, cfg.arch_name);
    lua_setfield(L, -2, "architecture");
    sm_config_free(&cfg);

    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    bool has_tok = stat(path, &st) == 0;
    lua_pushboolean(L, has_tok);
    lua_setfield(L, -2, "has_tokenizer");
    if (has_tok) {
        sm_tokenizer *tok;
        if (sm_tokenizer_load(path, &tok, &err) != SM_OK) {
            lua_pushnil(L);
            lua_pushstring(L, err.msg);
            return 2;
        }
        char fp[32];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)sm_tokenizer_fingerprint(tok));
        sm_tokenizer_free(tok);
        lua_pushstring(L, fp);
        lua_setfield(L, -2, "tokenizer_fingerprint");
    }
    return 1;
}

/* prompts_info(path) -> {count, needs_tokenizer, max_ids} or nil, message. */
static int l_prompts_info(lua_State *L) {
    sm_prompt_set p;
    sm_error err = {0};
    if (sm_prompts_read(luaL_checkstring(L, 1), &p, &err) != SM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_newtable(L);
    set_int(L, "count", p.n);
    set_int(L, "max_ids", p.max_ids);
    lua_pushboolean(L, p.needs_tokenizer);
    lua_setfield(L, -2, "needs_tokenizer");
    sm_prompts_free(&p);
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"runner_backends", l_runner_backends},
    {"a2a_backends", l_a2a_backends},
    {"device_runner_backends", l_device_runner_backends},
    {"drafters", l_drafters},
    {"max_k", l_max_k},
    {"dtypes", l_dtypes},
    {"dtype_known", l_dtype_known},
    {"runner_weight_dtypes", l_runner_weight_dtypes},
    {"dtype_canonical", l_dtype_canonical},
    {"exists", l_exists},
    {"model_info", l_model_info},
    {"prompts_info", l_prompts_info},
    {NULL, NULL},
};

int sm_luaopen_core(lua_State *L) {
    luaL_newlib(L, core_functions);
    /* Whether this build can run a model on the GPU (sm.model { device = "cuda" }). */
#ifdef SPECMOE_HAVE_CUDA
    lua_pushboolean(L, 1);
#else
    lua_pushboolean(L, 0);
#endif
    lua_setfield(L, -2, "have_cuda");
    return 1;
}
