/* src/exp/lua_core.h — the C module `specmoe.core` (backend and drafter names, dtype checks,
 * model and prompt-file inspection) that the lua/specmoe files builds on. */
#ifndef SM_EXP_LUA_CORE_H
#define SM_EXP_LUA_CORE_H

#include <lua.h>

int sm_luaopen_core(lua_State *L);

#endif
