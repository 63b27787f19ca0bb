-- Acceptance per arm of the most recent experiment (experiments/heldout_acceptance.lua writes
-- one): vLLM's counters, acceptance_rate = accepted / drafted tokens, SGLang's accept_length =
-- 1 + accepted / drafts, and the per-position rate accepted_per_pos[i] / num_drafts.
--   sqlite3 -header -column heldout.db < db/queries/acceptance_by_arm.sql
-- Arms without drafts (the target-only baseline) show no acceptance (NULL) and no positions.
WITH latest AS (SELECT MAX(experiment_id) AS experiment_id FROM experiments)
SELECT a.name AS arm, a.drafter, a.num_speculative_tokens AS k,
       acc.num_drafts, acc.num_draft_tokens, acc.num_accepted_tokens,
       ROUND(acc.acceptance_rate, 4) AS acceptance_rate,
       ROUND(acc.accept_length, 4) AS accept_length
FROM arms a
JOIN latest l ON l.experiment_id = a.experiment_id
LEFT JOIN arm_acceptance acc ON acc.arm_id = a.arm_id
ORDER BY a.arm_index;

-- Per draft position (0-based): the share of drafts whose position i was accepted.
WITH latest AS (SELECT MAX(experiment_id) AS experiment_id FROM experiments)
SELECT a.name AS arm,
       MAX(CASE WHEN p.position = 0 THEN ROUND(p.rate, 4) END) AS pos0,
       MAX(CASE WHEN p.position = 1 THEN ROUND(p.rate, 4) END) AS pos1,
       MAX(CASE WHEN p.position = 2 THEN ROUND(p.rate, 4) END) AS pos2,
       MAX(CASE WHEN p.position = 3 THEN ROUND(p.rate, 4) END) AS pos3,
       MAX(CASE WHEN p.position > 3 THEN 'more: see acceptance_by_position' END) AS beyond
FROM arms a
JOIN latest l ON l.experiment_id = a.experiment_id
JOIN acceptance_by_position p ON p.arm_id = a.arm_id
GROUP BY a.arm_id ORDER BY a.arm_index;
