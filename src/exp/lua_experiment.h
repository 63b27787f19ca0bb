/* src/exp/lua_experiment.h — running an experiment script (Lua 5.4) and reading the experiment
 * it declares. The script is checked completely here (src/exp/lua_core.c and the lua/specmoe files):
 * a failure is one message naming the script's file:line, and nothing has been loaded or
 * written. */
#ifndef SM_EXP_LUA_EXPERIMENT_H
#define SM_EXP_LUA_EXPERIMENT_H

#include "core/status.h"
#include "exp/experiment.h"

/* lua_dir: the directory holding specmoe/init.lua; NULL = found by paths.h. */
sm_status sm_experiment_load(const char *script_path, const char *lua_dir, sm_experiment *out, sm_error *err);

#endif
