-- Acceptance per arm, with vLLM's counter names, and the per-position curve.
--   sqlite3 -header -column results.db < db/queries/acceptance.sql
SELECT arm, num_drafts, num_draft_tokens, num_accepted_tokens,
       ROUND(acceptance_rate, 3) AS acceptance_rate, ROUND(accept_length, 3) AS accept_length,
       ROUND(verify_expert_overhead, 3) AS verify_expert_overhead
FROM arm_acceptance ORDER BY arm_id;

SELECT arm, position, num_drafts, accepted_per_pos, ROUND(rate, 3) AS rate,
       ROUND(conditional_rate, 3) AS conditional_rate
FROM acceptance_by_position ORDER BY arm_id, position;
