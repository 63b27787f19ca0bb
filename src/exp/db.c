#include "exp/db.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exp/paths.h"

sm_status sm_db_fail(sqlite3 *db, sm_error *err, const char *purpose) {
    const char *file = db ? sqlite3_db_filename(db, "main") : NULL;
    return sm_fail(err, SM_ESQL, "%s: %s: %s", file && *file ? file : "(database)", purpose,
                   db ? sqlite3_errmsg(db) : "cannot allocate a connection");
}

sm_status sm_db_exec(sqlite3 *db, const char *sql, const char *purpose, sm_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return SM_OK;
    const char *file = sqlite3_db_filename(db, "main");
    sm_fail(err, SM_ESQL, "%s: %s: %s", file && *file ? file : "(database)", purpose, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return SM_ESQL;
}

sm_status sm_db_prepare(sqlite3 *db, const char *sql, const char *purpose, sqlite3_stmt **stmt, sm_error *err) {
    *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, stmt, NULL) == SQLITE_OK) return SM_OK;
    return sm_db_fail(db, err, purpose);
}

static sm_status user_version(sqlite3 *db, int *out, sm_error *err) {
    sqlite3_stmt *st;
    SM_TRY(sm_db_prepare(db, "PRAGMA user_version", "reading the schema version", &st, err));
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sm_db_fail(db, err, "reading the schema version");
        sqlite3_finalize(st);
        return SM_ESQL;
    }
    *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return SM_OK;
}

static sm_status count_objects(sqlite3 *db, int *out, sm_error *err) {
    sqlite3_stmt *st;
    SM_TRY(sm_db_prepare(db, "SELECT COUNT(*) FROM sqlite_schema", "inspecting the database", &st, err));
    if (sqlite3_step(st) != SQLITE_ROW) {
        sm_db_fail(db, err, "inspecting the database");
        sqlite3_finalize(st);
        return SM_ESQL;
    }
    *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return SM_OK;
}

/* Runs a whole SQL file inside one transaction, so a failure leaves the database as it was. */
static sm_status apply_file(sqlite3 *db, const char *dir, const char *name, sm_error *err) {
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return sm_fail(err, SM_EIO, "%s/%s: path too long", dir, name);
    char *sql;
    SM_TRY(sm_read_text_file(path, &sql, NULL, err));
    char purpose[PATH_MAX + 16];
    snprintf(purpose, sizeof purpose, "applying %s", path);
    sm_status s = sm_db_exec(db, "BEGIN IMMEDIATE", purpose, err);
    if (s == SM_OK) s = sm_db_exec(db, sql, purpose, err);
    if (s == SM_OK) s = sm_db_exec(db, "COMMIT", purpose, err);
    if (s != SM_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    free(sql);
    return s;
}

static sm_status migrate(sqlite3 *db, const char *file, const char *dir, int want, sm_error *err) {
    int have;
    SM_TRY(user_version(db, &have, err));
    if (have == 0) {
        int objects;
        SM_TRY(count_objects(db, &objects, err));
        if (objects > 0)
            return sm_fail(err, SM_EFORMAT, "%s: not a specmoe results database (it has tables but no schema version)",
                           file);
        SM_TRY(apply_file(db, dir, "schema.sql", err));
        SM_TRY(user_version(db, &have, err));
        if (have < 1) return sm_fail(err, SM_EINTERNAL, "%s/schema.sql did not set PRAGMA user_version", dir);
    }
    if (have > want)
        return sm_fail(err, SM_EUNSUPPORTED,
                       "%s: schema version %d is newer than this specmoe understands (%d); use a newer specmoe "
                       "or another database file",
                       file, have, want);
    while (have < want) {
        char name[32];
        snprintf(name, sizeof name, "migrations/%03d.sql", have + 1);
        SM_TRY(apply_file(db, dir, name, err));
        int now;
        SM_TRY(user_version(db, &now, err));
        if (now != have + 1)
            return sm_fail(err, SM_EINTERNAL, "%s/%s left schema version %d, expected %d", dir, name, now, have + 1);
        have = now;
    }
    return SM_OK;
}

sm_status sm_db_open(const char *path, const sm_db_opts *opts, sqlite3 **out, sm_error *err) {
    *out = NULL;
    sm_db_opts o = opts ? *opts : (sm_db_opts){0};
    int want = o.schema_version > 0 ? o.schema_version : SM_DB_SCHEMA_VERSION;
    char dir[PATH_MAX];
    if (o.schema_dir) {
        if ((size_t)snprintf(dir, sizeof dir, "%s", o.schema_dir) >= sizeof dir)
            return sm_fail(err, SM_EINVAL, "schema directory path too long");
    } else if (!o.read_only) {
        SM_TRY(sm_resource_dir_find(SM_RESOURCE_DB, dir, sizeof dir, err));
    }

    int flags = SQLITE_OPEN_URI | (o.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        sm_fail(err, SM_ESQL, "%s: cannot open%s: %s", path, o.read_only ? " for reading" : "",
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return SM_ESQL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, o.busy_timeout_ms > 0 ? o.busy_timeout_ms : 5000);

    sm_status s = SM_OK;
    if (o.read_only) {
        int have;
        s = user_version(db, &have, err);
        if (s == SM_OK && have == 0)
            s = sm_fail(err, SM_EFORMAT, "%s: not a specmoe results database (no schema version)", path);
        else if (s == SM_OK && have > want)
            s = sm_fail(err, SM_EUNSUPPORTED, "%s: schema version %d is newer than this specmoe understands (%d)",
                        path, have, want);
        else if (s == SM_OK && have < want)
            s = sm_fail(err, SM_EUNSUPPORTED,
                        "%s: schema version %d is older than %d; `specmoe run` with this database migrates it", path,
                        have, want);
    } else {
        /* SQLite silently falls back to read-only when the file is not writable; say so now
         * rather than at the first INSERT of a long experiment. */
        if (sqlite3_db_readonly(db, "main") == 1)
            s = sm_fail(err, SM_EIO, "%s: the database is read-only (check the file's permissions); nothing was written",
                        path);
        if (s == SM_OK) s = sm_db_exec(db, "PRAGMA foreign_keys = ON", "enabling foreign keys", err);
        if (s == SM_OK) {
            /* WAL lets `sqlite3 results.db` read while an experiment writes. */
            sqlite3_stmt *st = NULL;
            s = sm_db_prepare(db, "PRAGMA journal_mode = WAL", "switching to WAL", &st, err);
            if (s == SM_OK && sqlite3_step(st) != SQLITE_ROW) s = sm_db_fail(db, err, "switching to WAL");
            sqlite3_finalize(st);
        }
        if (s == SM_OK) s = migrate(db, path, dir, want, err);
        if (s == SM_OK) s = apply_file(db, dir, "views.sql", err);
    }
    if (s != SM_OK) {
        sqlite3_close(db);
        return s;
    }
    *out = db;
    return SM_OK;
}

void sm_db_close(sqlite3 *db) {
    if (db) sqlite3_close(db);
}
