-- db/migrations/004.sql — schema version 3 -> 4: the chunk size of each arm's GPU prompts.
-- Every arm recorded before version 4 ran with the default (NULL: 512 rows per forward pass).
ALTER TABLE arms ADD COLUMN target_chunked_prefill_size INTEGER;
ALTER TABLE arms ADD COLUMN draft_chunked_prefill_size INTEGER;
INSERT INTO schema_version (version, applied_at, note)
    VALUES (4, (julianday('now') - 2440587.5) * 86400.0, 'arms.target_chunked_prefill_size, arms.draft_chunked_prefill_size');
PRAGMA user_version = 4;
