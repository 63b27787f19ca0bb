#include "exp/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SPECMOE_SOURCE_DIR
#define SPECMOE_SOURCE_DIR "."
#endif

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir qualifies when dir/probe is a file. */
static int try_dir(const char *dir, const char *probe, char *out, size_t cap) {
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, probe) >= sizeof path) return 0;
    if (!is_file(path)) return 0;
    if ((size_t)snprintf(out, cap, "%s", dir) >= cap) return 0;
    return 1;
}

sm_status sm_resource_dir_find(sm_resource_dir which, char *out, size_t cap, sm_error *err) {
    const char *env_name = which == SM_RESOURCE_LUA ? "SPECMOE_LUA_PATH" : "SPECMOE_DB_DIR";
    const char *sub = which == SM_RESOURCE_LUA ? "lua" : "db";
    const char *probe = which == SM_RESOURCE_LUA ? "specmoe/init.lua" : "schema.sql";

    const char *env = getenv(env_name);
    if (env && *env) {
        if (try_dir(env, probe, out, cap)) return SM_OK;
        return sm_fail(err, SM_EIO, "%s=%s: no %s there", env_name, env, probe);
    }

    char tried[SM_ERROR_MSG_CAP / 2] = "";
    size_t used = 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        for (int up = 1; up <= 2; up++) {
            char dir[PATH_MAX];
            if ((size_t)snprintf(dir, sizeof dir, "%s/%s/%s", exe, up == 1 ? ".." : "../..", sub) >= sizeof dir)
                continue;
            if (try_dir(dir, probe, out, cap)) return SM_OK;
            if (used < sizeof tried) used += (size_t)snprintf(tried + used, sizeof tried - used, "%s, ", dir);
        }
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", SPECMOE_SOURCE_DIR, sub);
    if (try_dir(dir, probe, out, cap)) return SM_OK;
    return sm_fail(err, SM_EIO, "cannot find specmoe's %s/ directory (tried %s%s); set %s to it", sub, tried,
                   dir, env_name);
}

sm_status sm_read_text_file(const char *path, char **text, size_t *len, sm_error *err) {
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sm_fail(err, SM_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); return sm_fail(err, SM_ENOMEM, "%s: out of memory reading", path); }
    for (;;) {
        if (used + 1 >= cap) {
            char *grown = cap > ((size_t)-1) / 2 ? NULL : realloc(buf, cap * 2);
            if (!grown) { free(buf); fclose(f); return sm_fail(err, SM_ENOMEM, "%s: out of memory reading", path); }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + used, 1, cap - used - 1, f);
        used += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) { free(buf); return sm_fail(err, SM_EIO, "%s: read error", path); }
    buf[used] = '\0';
    *text = buf;
    if (len) *len = used;
    return SM_OK;
}
