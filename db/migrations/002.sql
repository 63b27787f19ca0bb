-- db/migrations/002.sql — schema version 1 -> 2: the device each arm's models ran on.
-- Every run recorded before version 2 ran on the CPU (specmoe could not run a GPU model from an
-- experiment), so existing arms get 'cpu'; a draft device only where the arm had a draft model.
ALTER TABLE arms ADD COLUMN target_device TEXT NOT NULL DEFAULT 'cpu';
ALTER TABLE arms ADD COLUMN draft_device TEXT;
UPDATE arms SET draft_device = 'cpu' WHERE drafter = 'model';
INSERT INTO schema_version (version, applied_at, note)
    VALUES (2, (julianday('now') - 2440587.5) * 86400.0, 'arms.target_device, arms.draft_device');
PRAGMA user_version = 2;
