/* src/exp/paths.h — where specmoe finds the files it ships beside its source: the Lua half of
 * the `specmoe` module (lua/) and the database schema (db/).
 *
 * Looked up in this order, first match wins:
 *   1. an environment variable (SPECMOE_LUA_PATH for lua/, SPECMOE_DB_DIR for db/), taken as is;
 *   2. relative to the running binary: <dir of binary>/.. and <dir of binary>/../.. (the binary
 *      lives in a build directory of <repo>, also when the tree is copied to another machine);
 *   3. SPECMOE_SOURCE_DIR, the source tree the binary was configured from. */
#ifndef SM_EXP_PATHS_H
#define SM_EXP_PATHS_H

#include <stddef.h>

#include "core/status.h"

typedef enum sm_resource_dir {
    SM_RESOURCE_LUA, /* contains specmoe/init.lua */
    SM_RESOURCE_DB   /* contains schema.sql and views.sql */
} sm_resource_dir;

/* Writes the directory into out (cap bytes). Fails with SM_EIO listing the places tried. */
sm_status sm_resource_dir_find(sm_resource_dir which, char *out, size_t cap, sm_error *err);

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
sm_status sm_read_text_file(const char *path, char **text, size_t *len, sm_error *err);

#endif
