/* src/exp/db.h — opening a results database: create it from db/schema.sql, migrate an older
 * one step by step (db/migrations/NNN.sql produces version NNN), refuse a newer one, and
 * refresh the views (db/views.sql). WAL journal, foreign keys on, a busy timeout so a second
 * writer waits instead of failing at once.
 *
 * Every failure message names the database file, what was being done, and SQLite's message. */
#ifndef SM_EXP_DB_H
#define SM_EXP_DB_H

#include <stdbool.h>
#include <sqlite3.h>

#include "core/status.h"

/* The schema version this specmoe writes and reads (PRAGMA user_version). */
#define SM_DB_SCHEMA_VERSION 4

typedef struct sm_db_opts {
    const char *schema_dir; /* dir with schema.sql, views.sql, migrations/; NULL = found by paths.h */
    int schema_version;     /* 0 = SM_DB_SCHEMA_VERSION (tests migrate to other versions) */
    bool read_only;         /* an existing database, for reading (report); nothing is written */
    int busy_timeout_ms;    /* 0 = 5000 */
} sm_db_opts;

/* path may be a file name or an SQLite URI ("file:x.db?mode=ro"). opts may be NULL. */
sm_status sm_db_open(const char *path, const sm_db_opts *opts, sqlite3 **out, sm_error *err);
void sm_db_close(sqlite3 *db);

/* Run SQL text (several statements). purpose says what it is for, in the error message. */
sm_status sm_db_exec(sqlite3 *db, const char *sql, const char *purpose, sm_error *err);
sm_status sm_db_prepare(sqlite3 *db, const char *sql, const char *purpose, sqlite3_stmt **stmt, sm_error *err);

/* Fill err with "<db file>: <purpose>: <sqlite message>" for the connection's last error and
 * return SM_ESQL. */
sm_status sm_db_fail(sqlite3 *db, sm_error *err, const char *purpose);

#endif
