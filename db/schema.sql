-- db/schema.sql — the specmoe results database, schema version 2.
--
-- specmoe (src/exp/db.c) applies this file to a new database and migrates an older one step by
-- step with db/migrations/NNN.sql (NNN = the version it produces). The version lives in
-- PRAGMA user_version; schema_version keeps a row per applied step for people to read.
-- The questions people ask (percentiles, acceptance, A/B) are answered by views.sql.
--
-- Time conventions:
--   *_at  columns: Unix epoch seconds (REAL) — when something happened on the wall clock.
--   *_s   columns: seconds since the run started (REAL; a double keeps microseconds for years).
--
-- A run's rows (requests, emissions, steps, MoE events, routes) are written in ONE transaction
-- that also sets runs.status = 'ok'. A run that fails is rolled back and marked 'failed'; a
-- process that dies mid-run leaves status 'running', which readers treat as interrupted.
-- Child tables refer to (run_id, request_index) with DEFERRED foreign keys, so the engine can
-- record a request's emissions before the request row itself (it is written when it finishes).

CREATE TABLE schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL,
    note       TEXT
);

CREATE TABLE experiments (
    experiment_id INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT,
    script_path   TEXT,
    script_text   TEXT,           -- the Lua source as run: the result names what produced it
    settings_json TEXT NOT NULL,  -- the resolved experiment (repeats, order, arm names, ...)
    created_at    REAL NOT NULL,
    ended_at      REAL
);

CREATE TABLE environment (
    experiment_id   INTEGER PRIMARY KEY REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    host            TEXT,
    os              TEXT,         -- uname: sysname release machine
    cpu             TEXT,         -- /proc/cpuinfo "model name"
    cpu_count       INTEGER,
    gpu_name        TEXT,         -- GPU fields are NULL on a CPU-only build
    gpu_count       INTEGER,
    gpu_driver      TEXT,
    cuda_version    TEXT,
    nccl_version    TEXT,
    git_commit      TEXT,         -- "unknown" outside a git checkout; "-dirty" suffix if modified
    build_flags     TEXT,
    compiler        TEXT,
    specmoe_version TEXT,
    captured_at     REAL NOT NULL
);

-- One arm = one fully resolved configuration. The columns are the settings people filter and
-- group by; settings_json holds every setting (the columns are a copy, for SQL convenience).
-- Column names are the flat setting names of the Lua API (src/exp/experiment.c keeps the list;
-- a test checks every setting has its column).
CREATE TABLE arms (
    arm_id                    INTEGER PRIMARY KEY,
    experiment_id             INTEGER NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    arm_index                 INTEGER NOT NULL,  -- position in the script's list of arms
    name                      TEXT NOT NULL,
    target_model_path         TEXT NOT NULL,
    target_moe_runner_backend TEXT NOT NULL,
    target_dtype              TEXT NOT NULL,
    target_moe_a2a_backend    TEXT NOT NULL,
    draft_model_path          TEXT,              -- draft_* are NULL unless drafter = 'model'
    draft_moe_runner_backend  TEXT,
    draft_dtype               TEXT,
    draft_moe_a2a_backend     TEXT,
    drafter                   TEXT NOT NULL CHECK (drafter IN ('none', 'model', 'ngram', 'self')),
    num_speculative_tokens    INTEGER NOT NULL CHECK (num_speculative_tokens >= 0), -- k; 0 with drafter 'none'
    prompt_lookup_min         INTEGER,           -- ngram drafter
    prompt_lookup_max         INTEGER,
    self_draft_top_k          INTEGER,           -- self drafter: experts per token in the draft pass
    temperature               REAL NOT NULL,
    top_p                     REAL NOT NULL,
    top_k                     INTEGER NOT NULL,  -- 0 = disabled
    seed                      INTEGER NOT NULL,  -- base seed; a run uses seed + repeat_index
    workload_kind             TEXT NOT NULL CHECK (workload_kind IN ('prompts', 'random')),
    prompts_file              TEXT,
    num_prompts               INTEGER NOT NULL,
    random_input_len          INTEGER,
    max_new_tokens            INTEGER NOT NULL,
    request_rate              REAL,              -- requests/s of Poisson arrivals; NULL = closed loop
    max_concurrency           INTEGER,           -- requests in flight at most; NULL = unlimited
    -- Route-prediction prefetch: placeholders, NULL until prefetch exists.
    prefetch                  TEXT,
    prefetch_predictor        TEXT,
    expert_cache_slots        INTEGER,
    settings_json             TEXT NOT NULL,
    -- Added in version 2 (db/migrations/002.sql), hence after settings_json: a new and a migrated
    -- database then have the same column order.
    target_device             TEXT NOT NULL DEFAULT 'cpu', -- 'cpu' or 'cuda': where weights, KV cache and math live
    draft_device              TEXT,              -- NULL unless drafter = 'model'
    -- Added in version 3 (db/migrations/003.sql): weights drawn from a seed instead of read from
    -- the checkpoint (a config.json alone: full-size shapes without a download, GPU only).
    target_weights            TEXT NOT NULL DEFAULT 'checkpoint', -- 'checkpoint' or 'random'
    target_weights_seed       INTEGER NOT NULL DEFAULT 0,         -- seed of random weights
    draft_weights             TEXT,              -- NULL unless drafter = 'model'
    draft_weights_seed        INTEGER NOT NULL DEFAULT 0,
    -- Added in version 4 (db/migrations/004.sql): rows per GPU forward pass, SGLang's
    -- --chunked-prefill-size (a prompt longer than this runs in pieces); NULL = the default (512).
    target_chunked_prefill_size INTEGER,
    draft_chunked_prefill_size  INTEGER,
    UNIQUE (experiment_id, arm_index),
    UNIQUE (experiment_id, name)
);

CREATE TABLE runs (
    run_id        INTEGER PRIMARY KEY,
    arm_id        INTEGER NOT NULL REFERENCES arms (arm_id) ON DELETE CASCADE,
    repeat_index  INTEGER NOT NULL CHECK (repeat_index >= 0),
    seed          INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    error_message TEXT,
    started_at    REAL NOT NULL,
    ended_at      REAL
);
CREATE INDEX runs_by_arm ON runs (arm_id, repeat_index);

CREATE TABLE requests (
    request_id    INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    request_index INTEGER NOT NULL CHECK (request_index >= 0),
    prompt_tokens INTEGER NOT NULL CHECK (prompt_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    arrival_s     REAL NOT NULL,
    first_token_s REAL,          -- NULL when no token was emitted
    finish_s      REAL,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'aborted')),
    finish_reason TEXT,          -- 'stop' (EOS), 'length' (max_new_tokens), ...
    UNIQUE (run_id, request_index)
);

-- One row per emission event: a speculative step that emits n tokens at once is one event
-- (ITL is the gap between consecutive events). Each token's own time is its event's time.
CREATE TABLE token_emissions (
    run_id         INTEGER NOT NULL,
    request_index  INTEGER NOT NULL,
    emission_index INTEGER NOT NULL CHECK (emission_index >= 0),
    time_s         REAL NOT NULL,
    n_tokens       INTEGER NOT NULL CHECK (n_tokens >= 1),
    PRIMARY KEY (run_id, request_index, emission_index),
    FOREIGN KEY (run_id, request_index) REFERENCES requests (run_id, request_index)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
) WITHOUT ROWID;

-- One row per draft-and-verify of one sequence ("draft" in vLLM's num_drafts).
CREATE TABLE spec_steps (
    run_id                 INTEGER NOT NULL,
    request_index          INTEGER NOT NULL,
    step                   INTEGER NOT NULL,  -- engine step (shared by the sequences of a batch)
    time_s                 REAL,              -- when verification finished
    k_proposed             INTEGER NOT NULL CHECK (k_proposed >= 0),
    n_accepted             INTEGER NOT NULL CHECK (n_accepted >= 0 AND n_accepted <= k_proposed),
    accepted_mask          INTEGER,           -- bit i set = draft position i accepted; NULL if k_proposed > 62
    accepted_positions     TEXT NOT NULL,     -- the same as a JSON list, e.g. [0,1]; any k
    n_emitted              INTEGER,           -- tokens emitted (accepted + bonus/correction)
    draft_s                REAL,
    verify_s               REAL,
    overhead_s             REAL,              -- the rest of the step (sampling, rollback, bookkeeping)
    experts_touched_verify INTEGER,           -- sum over layers of distinct experts in the verify pass
    experts_touched_single INTEGER,           -- ... that a single-token decode of the same sequence touches
    PRIMARY KEY (run_id, request_index, step),
    FOREIGN KEY (run_id, request_index) REFERENCES requests (run_id, request_index)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
) WITHOUT ROWID;

-- Routing statistics of one MoE layer in one forward pass of a batch.
CREATE TABLE moe_layer_events (
    event_id               INTEGER PRIMARY KEY,
    run_id                 INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step                   INTEGER NOT NULL,
    model                  TEXT NOT NULL CHECK (model IN ('target', 'draft')),
    pass                   TEXT NOT NULL CHECK (pass IN ('prefill', 'decode', 'draft', 'verify')),
    layer                  INTEGER NOT NULL CHECK (layer >= 0),
    n_tokens               INTEGER NOT NULL CHECK (n_tokens >= 0),
    n_experts              INTEGER NOT NULL CHECK (n_experts >= 1),  -- experts in the layer
    distinct_experts       INTEGER NOT NULL,
    max_tokens_per_expert  INTEGER NOT NULL,
    mean_tokens_per_expert REAL NOT NULL,  -- routed (token, expert) pairs / n_experts
    prefetch_hits          INTEGER,        -- prefetch columns: NULL until prefetch exists
    prefetch_misses        INTEGER,
    stall_s                REAL
);
CREATE INDEX moe_layer_events_by_run ON moe_layer_events (run_id, model, layer);

-- Full route traces (experiment option record_routes = true): what route predictors learn from.
CREATE TABLE route_traces (
    run_id        INTEGER NOT NULL,
    request_index INTEGER NOT NULL,
    model         TEXT NOT NULL CHECK (model IN ('target', 'draft')),
    position      INTEGER NOT NULL,  -- token position in the sequence
    layer         INTEGER NOT NULL,
    expert_ids    TEXT NOT NULL,     -- JSON list, in router order
    weights       TEXT NOT NULL,     -- JSON list, same order
    FOREIGN KEY (run_id, request_index) REFERENCES requests (run_id, request_index)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX route_traces_by_request ON route_traces (run_id, request_index, position);

INSERT INTO schema_version (version, applied_at, note) VALUES (4, (julianday('now') - 2440587.5) * 86400.0, 'new database');
PRAGMA user_version = 4;
