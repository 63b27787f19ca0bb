#include "exp/lua_experiment.h"

#include <jansson.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exp/lua_core.h"
#include "exp/paths.h"

static sm_status dup_string(const char *s, char **out, sm_error *err) {
    *out = NULL;
    if (!s) return SM_OK;
    *out = strdup(s);
    return *out ? SM_OK : sm_fail(err, SM_ENOMEM, "out of memory reading the experiment");
}

/* Reads field `key` of the table at the top of the stack. */
static sm_status read_setting(lua_State *L, const sm_setting *s, sm_arm *arm, sm_error *err) {
    char *p = (char *)arm + s->offset;
    int t = lua_getfield(L, -1, s->name);
    sm_status st = SM_OK;
    if (t == LUA_TNIL) {
        if (!s->nullable) st = sm_fail(err, SM_EINTERNAL, "arm '%s': resolved setting '%s' is missing", arm->name, s->name);
    } else if (s->kind == SM_SETTING_STRING) {
        if (t != LUA_TSTRING) st = sm_fail(err, SM_EINTERNAL, "arm '%s': '%s' is not a string", arm->name, s->name);
        else st = dup_string(lua_tostring(L, -1), (char **)p, err);
    } else {
        int isnum = 0;
        if (s->kind == SM_SETTING_REAL) {
            double v = lua_tonumberx(L, -1, &isnum);
            if (isnum) *(double *)p = v;
        } else {
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (isnum && s->kind == SM_SETTING_INT && (v < INT_MIN || v > INT_MAX)) isnum = 0;
            if (isnum && s->kind == SM_SETTING_INT) *(int *)p = (int)v;
            if (isnum && s->kind == SM_SETTING_INT64) *(int64_t *)p = (int64_t)v;
        }
        if (!isnum) st = sm_fail(err, SM_EINVAL, "arm '%s': '%s' must be %s", arm->name, s->name,
                                 s->kind == SM_SETTING_REAL ? "a number" : "an integer in range");
    }
    lua_pop(L, 1);
    return st;
}

static sm_status read_string_field(lua_State *L, const char *key, char **out, sm_error *err) {
    lua_getfield(L, -1, key);
    sm_status s = dup_string(lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL, out, err);
    lua_pop(L, 1);
    return s;
}

static lua_Integer read_int_field(lua_State *L, const char *key) {
    lua_getfield(L, -1, key);
    lua_Integer v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static sm_status read_experiment(lua_State *L, sm_experiment *x, sm_error *err) {
    SM_TRY(read_string_field(L, "name", &x->name, err));
    SM_TRY(read_string_field(L, "description", &x->description, err));
    SM_TRY(read_string_field(L, "order", &x->order, err));
    x->repeats = (int)read_int_field(L, "repeats");
    x->warmup_requests = (int)read_int_field(L, "warmup_requests");
    lua_getfield(L, -1, "record_routes");
    x->record_routes = lua_toboolean(L, -1);
    lua_pop(L, 1);

    lua_getfield(L, -1, "arms");
    int n = (int)luaL_len(L, -1);
    sm_status s = sm_calloc((void **)&x->arms, (size_t)(n ? n : 1), sizeof *x->arms, "arms", err);
    for (int i = 0; s == SM_OK && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        sm_arm *a = &x->arms[i];
        x->n_arms = i + 1;
        a->index = i;
        s = read_string_field(L, "name", &a->name, err);
        if (s == SM_OK) s = read_string_field(L, "where", &a->where, err);
        for (int j = 0; s == SM_OK && j < sm_n_arm_settings; j++) s = read_setting(L, &sm_arm_settings[j], a, err);
        if (s == SM_OK) s = sm_arm_make_json(a, err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    SM_TRY(s);

    lua_getfield(L, -1, "schedule");
    n = (int)luaL_len(L, -1);
    s = sm_calloc((void **)&x->schedule, (size_t)(n ? n : 1), sizeof *x->schedule, "schedule", err);
    for (int i = 0; s == SM_OK && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        x->schedule[i].arm = (int)read_int_field(L, "arm");
        x->schedule[i].repeat = (int)read_int_field(L, "rep");
        if (x->schedule[i].arm < 0 || x->schedule[i].arm >= x->n_arms)
            s = sm_fail(err, SM_EINTERNAL, "schedule entry %d names arm %d of %d", i, x->schedule[i].arm, x->n_arms);
        x->n_schedule = i + 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    SM_TRY(s);

    /* The experiment's own JSON: its settings and every arm's. */
    json_t *o = json_object(), *arms = json_array();
    json_object_set_new(o, "name", json_string(x->name));
    if (x->description) json_object_set_new(o, "description", json_string(x->description));
    json_object_set_new(o, "repeats", json_integer(x->repeats));
    json_object_set_new(o, "order", json_string(x->order));
    json_object_set_new(o, "record_routes", json_boolean(x->record_routes));
    /* only when set, so experiments recorded before the key existed still match and resume */
    if (x->warmup_requests > 0) json_object_set_new(o, "warmup_requests", json_integer(x->warmup_requests));
    for (int i = 0; i < x->n_arms; i++) {
        json_error_t je;
        json_array_append_new(arms, json_loads(x->arms[i].settings_json, 0, &je));
    }
    json_object_set_new(o, "arms", arms);
    x->settings_json = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!x->settings_json) return sm_fail(err, SM_ENOMEM, "out of memory building the experiment's JSON");
    return SM_OK;
}

/* Adds the traceback-free message: Lua errors raised by specmoe already carry file:line. */
static int on_error(lua_State *L) {
    if (!lua_isstring(L, 1)) {
        luaL_tolstring(L, 1, NULL);
    }
    return 1;
}

sm_status sm_experiment_load(const char *script_path, const char *lua_dir, sm_experiment *out, sm_error *err) {
    memset(out, 0, sizeof *out);
    char dir[PATH_MAX];
    if (lua_dir) snprintf(dir, sizeof dir, "%s", lua_dir);
    else SM_TRY(sm_resource_dir_find(SM_RESOURCE_LUA, dir, sizeof dir, err));

    size_t text_len;
    char *text;
    SM_TRY(sm_read_text_file(script_path, &text, &text_len, err));

    lua_State *L = luaL_newstate();
    if (!L) {
        free(text);
        return sm_fail(err, SM_ENOMEM, "cannot create a Lua state");
    }
    luaL_openlibs(L);
    /* package.path: only specmoe's lua/ and the script's own directory (for shared helpers). */
    char script_dir[PATH_MAX];
    snprintf(script_dir, sizeof script_dir, "%s", script_path);
    char *slash = strrchr(script_dir, '/');
    if (slash) *slash = '\0';
    else snprintf(script_dir, sizeof script_dir, ".");
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua", dir, dir, script_dir);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, sm_luaopen_core);
    lua_setfield(L, -2, "specmoe.core");
    lua_pop(L, 2);

    sm_status s = SM_OK;
    lua_pushcfunction(L, on_error);
    char chunkname[PATH_MAX + 2];
    snprintf(chunkname, sizeof chunkname, "@%s", script_path);
    if (luaL_loadbufferx(L, text, text_len, chunkname, "t") != LUA_OK) {
        s = sm_fail(err, SM_ELUA, "%s", lua_tostring(L, -1));
    } else if (lua_pcall(L, 0, 1, -2) != LUA_OK) {
        s = sm_fail(err, SM_ELUA, "%s", lua_tostring(L, -1));
    } else {
        /* The script returns sm.experiment{...}; if it returned nothing, take the last one. */
        bool ok = false;
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "__experiment");
            ok = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        if (!ok) {
            lua_pop(L, 1);
            lua_getglobal(L, "package");
            lua_getfield(L, -1, "loaded");
            lua_getfield(L, -1, "specmoe.resolve");
            if (lua_istable(L, -1)) lua_getfield(L, -1, "last");
            else lua_pushnil(L);
            ok = lua_istable(L, -1);
        }
        if (!ok)
            s = sm_fail(err, SM_ELUA, "%s: the script declares no experiment (end it with `return sm.experiment { ... }`)",
                        script_path);
        else
            s = read_experiment(L, out, err);
    }
    lua_close(L);
    if (s == SM_OK) {
        s = dup_string(script_path, &out->script_path, err);
        out->script_text = text;
    } else {
        free(text);
        sm_experiment_free(out);
    }
    return s;
}
