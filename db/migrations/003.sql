-- db/migrations/003.sql — schema version 2 -> 3: where each arm's model weights came from.
-- Every arm recorded before version 3 read its checkpoint (random weights could not be asked for
-- from an experiment); a draft only where the arm had a draft model.
ALTER TABLE arms ADD COLUMN target_weights TEXT NOT NULL DEFAULT 'checkpoint';
ALTER TABLE arms ADD COLUMN target_weights_seed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE arms ADD COLUMN draft_weights TEXT;
ALTER TABLE arms ADD COLUMN draft_weights_seed INTEGER NOT NULL DEFAULT 0;
UPDATE arms SET draft_weights = 'checkpoint' WHERE drafter = 'model';
INSERT INTO schema_version (version, applied_at, note)
    VALUES (3, (julianday('now') - 2440587.5) * 86400.0, 'arms.target_weights(_seed), arms.draft_weights(_seed)');
PRAGMA user_version = 3;
