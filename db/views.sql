-- db/views.sql — the metrics of DESIGN.md as views, for the plain sqlite3 shell.
--
-- specmoe re-creates these views whenever it opens a database for writing, so a database always
-- has the views of the specmoe that last wrote it. `sqlite3 results.db < db/views.sql` does the
-- same by hand.
--
-- Only completed runs count (runs.status = 'ok'; a run's rows are committed together with that
-- status) and only requests that finished (requests.status = 'ok').
--
-- Percentiles use the NEAREST-RANK definition on raw samples: with the n samples of an arm
-- sorted ascending and ranked 1..n, the p-th percentile is the sample of rank ceil(p/100 * n).
-- It is always an observed value and needs no interpolation. ceil is done in integers:
-- ceil(n * q / 1000) = (n * q + 999) / 1000 for q = 500, 900, 990, 999 (p50, p90, p99, p99.9).
-- Each percentile row carries its sample count n: a p99.9 over 200 samples is just the maximum.
-- Latencies are in seconds (*_s), like the tables.

DROP VIEW IF EXISTS ab_compare;
DROP VIEW IF EXISTS arm_summary;
DROP VIEW IF EXISTS arm_expert_load;
DROP VIEW IF EXISTS expert_load_by_layer;
DROP VIEW IF EXISTS acceptance_by_position;
DROP VIEW IF EXISTS arm_acceptance;
DROP VIEW IF EXISTS arm_throughput;
DROP VIEW IF EXISTS latency_percentiles;
DROP VIEW IF EXISTS latency_samples;
DROP VIEW IF EXISTS itl_samples;
DROP VIEW IF EXISTS request_token_check;
DROP VIEW IF EXISTS request_latency;
DROP VIEW IF EXISTS run_info;

-- Completed runs with their arm and experiment.
CREATE VIEW run_info AS
SELECT r.run_id, r.arm_id, a.arm_index, a.name AS arm, a.experiment_id, e.name AS experiment,
       r.repeat_index, r.seed, r.started_at, r.ended_at, r.ended_at - r.started_at AS wall_s
FROM runs r
JOIN arms a ON a.arm_id = r.arm_id
JOIN experiments e ON e.experiment_id = a.experiment_id
WHERE r.status = 'ok';

-- Per finished request: TTFT = arrival -> first token; E2E = arrival -> last token;
-- TPOT = (E2E - TTFT) / (output tokens - 1), defined only with 2+ output tokens.
CREATE VIEW request_latency AS
SELECT ri.experiment_id, ri.arm_id, ri.arm, q.run_id, q.request_index, q.prompt_tokens,
       q.output_tokens,
       q.first_token_s - q.arrival_s AS ttft_s,
       q.finish_s - q.arrival_s AS e2e_s,
       CASE WHEN q.output_tokens > 1
            THEN (q.finish_s - q.first_token_s) / (q.output_tokens - 1) END AS tpot_s
FROM requests q
JOIN run_info ri ON ri.run_id = q.run_id
WHERE q.status = 'ok' AND q.first_token_s IS NOT NULL AND q.finish_s IS NOT NULL;

-- Sanity: the tokens a request says it produced equal the tokens its emission events carried.
CREATE VIEW request_token_check AS
SELECT q.run_id, q.request_index, q.output_tokens,
       COALESCE(SUM(t.n_tokens), 0) AS emitted_tokens,
       COUNT(t.emission_index) AS emission_events,
       q.output_tokens = COALESCE(SUM(t.n_tokens), 0) AS consistent
FROM requests q
JOIN run_info ri ON ri.run_id = q.run_id
LEFT JOIN token_emissions t ON t.run_id = q.run_id AND t.request_index = q.request_index
GROUP BY q.run_id, q.request_index;

-- ITL: the gap between consecutive emission events of a request (n - 1 samples for n events).
CREATE VIEW itl_samples AS
SELECT experiment_id, arm_id, arm, run_id, request_index, emission_index, itl_s
FROM (
    SELECT ri.experiment_id, ri.arm_id, ri.arm, t.run_id, t.request_index, t.emission_index,
           t.time_s - LAG(t.time_s) OVER (PARTITION BY t.run_id, t.request_index
                                          ORDER BY t.emission_index) AS itl_s
    FROM token_emissions t
    JOIN requests q ON q.run_id = t.run_id AND q.request_index = t.request_index AND q.status = 'ok'
    JOIN run_info ri ON ri.run_id = t.run_id
)
WHERE itl_s IS NOT NULL;

-- Every latency sample of an arm, one row each: metric is 'ttft', 'itl', 'tpot' or 'e2e'.
CREATE VIEW latency_samples AS
SELECT experiment_id, arm_id, 'ttft' AS metric, ttft_s AS value_s FROM request_latency
UNION ALL
SELECT experiment_id, arm_id, 'tpot', tpot_s FROM request_latency WHERE tpot_s IS NOT NULL
UNION ALL
SELECT experiment_id, arm_id, 'e2e', e2e_s FROM request_latency
UNION ALL
SELECT experiment_id, arm_id, 'itl', itl_s FROM itl_samples;

-- Nearest-rank percentiles per arm and metric (see the top of this file), with n beside them.
CREATE VIEW latency_percentiles AS
WITH ranked AS (
    SELECT experiment_id, arm_id, metric, value_s,
           ROW_NUMBER() OVER (PARTITION BY arm_id, metric ORDER BY value_s) AS rank_,
           COUNT(*) OVER (PARTITION BY arm_id, metric) AS n
    FROM latency_samples
)
SELECT r.experiment_id, r.arm_id, a.name AS arm, r.metric, r.n,
       MAX(CASE WHEN rank_ = (n * 500 + 999) / 1000 THEN value_s END) AS p50_s,
       MAX(CASE WHEN rank_ = (n * 900 + 999) / 1000 THEN value_s END) AS p90_s,
       MAX(CASE WHEN rank_ = (n * 990 + 999) / 1000 THEN value_s END) AS p99_s,
       MAX(CASE WHEN rank_ = (n * 999 + 999) / 1000 THEN value_s END) AS p999_s,
       AVG(value_s) AS mean_s,
       MIN(value_s) AS min_s,
       MAX(value_s) AS max_s
FROM ranked r
JOIN arms a ON a.arm_id = r.arm_id
GROUP BY r.arm_id, r.metric;

-- Throughput: output tokens of an arm's completed runs over the sum of their wall times.
CREATE VIEW arm_throughput AS
SELECT ri.experiment_id, ri.arm_id, ri.arm,
       COUNT(*) AS n_runs,
       SUM(ri.wall_s) AS wall_s,
       SUM(rq.n_requests) AS n_requests,
       SUM(rq.output_tokens) AS output_tokens,
       SUM(rq.prompt_tokens) AS prompt_tokens,
       SUM(rq.output_tokens) / NULLIF(SUM(ri.wall_s), 0) AS output_tok_per_s,
       SUM(rq.n_requests) / NULLIF(SUM(ri.wall_s), 0) AS requests_per_s
FROM run_info ri
JOIN (SELECT run_id, COUNT(*) AS n_requests, SUM(output_tokens) AS output_tokens,
             SUM(prompt_tokens) AS prompt_tokens
      FROM requests WHERE status = 'ok' GROUP BY run_id) rq ON rq.run_id = ri.run_id
GROUP BY ri.arm_id;

-- Speculative decoding counters (vLLM's names). A draft is a step that proposed >= 1 token.
--   acceptance_rate = num_accepted_tokens / num_draft_tokens
--   accept_length   = 1 + num_accepted_tokens / num_drafts   (the bonus/correction token counts)
--   verify_expert_overhead = experts touched by verify passes / by single-token decodes
CREATE VIEW arm_acceptance AS
SELECT ri.experiment_id, ri.arm_id, ri.arm,
       COUNT(*) FILTER (WHERE s.k_proposed > 0) AS num_drafts,
       SUM(s.k_proposed) AS num_draft_tokens,
       SUM(s.n_accepted) AS num_accepted_tokens,
       1.0 * SUM(s.n_accepted) / NULLIF(SUM(s.k_proposed), 0) AS acceptance_rate,
       1.0 + 1.0 * SUM(s.n_accepted) / NULLIF(COUNT(*) FILTER (WHERE s.k_proposed > 0), 0) AS accept_length,
       1.0 * SUM(s.experts_touched_verify) / NULLIF(SUM(s.experts_touched_single), 0) AS verify_expert_overhead,
       SUM(s.draft_s) AS draft_s,
       SUM(s.verify_s) AS verify_s,
       SUM(s.overhead_s) AS overhead_s
FROM spec_steps s
JOIN run_info ri ON ri.run_id = s.run_id
GROUP BY ri.arm_id;

-- accepted_per_pos[i] = drafts whose position i (0-based) was accepted;
-- rate = accepted_per_pos / num_drafts (DESIGN.md); conditional_rate = among drafts that
-- proposed position i. Every position below the arm's largest k has a row, zeros included.
CREATE VIEW acceptance_by_position AS
WITH RECURSIVE
drafts AS (
    SELECT ri.experiment_id, ri.arm_id, s.k_proposed, s.accepted_positions
    FROM spec_steps s JOIN run_info ri ON ri.run_id = s.run_id
    WHERE s.k_proposed > 0
),
arm_k AS (
    SELECT experiment_id, arm_id, MAX(k_proposed) AS max_k, COUNT(*) AS num_drafts
    FROM drafts GROUP BY arm_id
),
positions (arm_id, position) AS (
    SELECT arm_id, 0 FROM arm_k
    UNION ALL
    SELECT p.arm_id, p.position + 1 FROM positions p JOIN arm_k k ON k.arm_id = p.arm_id
    WHERE p.position + 1 < k.max_k
),
accepted AS (
    SELECT d.arm_id, CAST(j.value AS INTEGER) AS position, COUNT(*) AS n
    FROM drafts d, json_each(d.accepted_positions) j
    GROUP BY d.arm_id, CAST(j.value AS INTEGER)
),
proposed AS (
    SELECT p.arm_id, p.position, COUNT(*) AS n
    FROM positions p JOIN drafts d ON d.arm_id = p.arm_id AND d.k_proposed > p.position
    GROUP BY p.arm_id, p.position
)
SELECT k.experiment_id, p.arm_id, a.name AS arm, p.position, k.num_drafts,
       COALESCE(pr.n, 0) AS num_proposed,
       COALESCE(ac.n, 0) AS accepted_per_pos,
       1.0 * COALESCE(ac.n, 0) / k.num_drafts AS rate,
       1.0 * COALESCE(ac.n, 0) / NULLIF(pr.n, 0) AS conditional_rate
FROM positions p
JOIN arm_k k ON k.arm_id = p.arm_id
JOIN arms a ON a.arm_id = p.arm_id
LEFT JOIN accepted ac ON ac.arm_id = p.arm_id AND ac.position = p.position
LEFT JOIN proposed pr ON pr.arm_id = p.arm_id AND pr.position = p.position;

-- Expert load per layer. imbalance = max / mean tokens per expert of one layer in one pass
-- (EPLB's balancedness is its inverse), averaged over the passes; the mean counts every expert
-- of the layer, used or not.
CREATE VIEW expert_load_by_layer AS
SELECT ri.experiment_id, ri.arm_id, ri.arm, m.model, m.layer,
       COUNT(*) AS n_events,
       SUM(m.n_tokens) AS n_tokens,
       AVG(m.distinct_experts) AS mean_distinct_experts,
       AVG(m.max_tokens_per_expert / m.mean_tokens_per_expert) AS mean_imbalance,
       MAX(m.max_tokens_per_expert / m.mean_tokens_per_expert) AS max_imbalance,
       SUM(m.prefetch_hits) AS prefetch_hits,
       SUM(m.prefetch_misses) AS prefetch_misses,
       SUM(m.stall_s) AS stall_s
FROM moe_layer_events m
JOIN run_info ri ON ri.run_id = m.run_id
WHERE m.mean_tokens_per_expert > 0
GROUP BY ri.arm_id, m.model, m.layer;

-- The target model's load imbalance over all its MoE passes and layers, per arm.
CREATE VIEW arm_expert_load AS
SELECT ri.experiment_id, ri.arm_id, ri.arm,
       COUNT(*) AS n_events,
       AVG(m.max_tokens_per_expert / m.mean_tokens_per_expert) AS expert_load_imbalance,
       AVG(m.distinct_experts) AS mean_distinct_experts
FROM moe_layer_events m
JOIN run_info ri ON ri.run_id = m.run_id
WHERE m.model = 'target' AND m.mean_tokens_per_expert > 0
GROUP BY ri.arm_id;

-- One row per arm with every headline metric.
CREATE VIEW arm_summary AS
WITH lat AS (
    SELECT arm_id,
        MAX(CASE WHEN metric = 'ttft' THEN n END) AS ttft_n,
        MAX(CASE WHEN metric = 'ttft' THEN p50_s END) AS ttft_p50_s,
        MAX(CASE WHEN metric = 'ttft' THEN p90_s END) AS ttft_p90_s,
        MAX(CASE WHEN metric = 'ttft' THEN p99_s END) AS ttft_p99_s,
        MAX(CASE WHEN metric = 'ttft' THEN p999_s END) AS ttft_p999_s,
        MAX(CASE WHEN metric = 'itl' THEN n END) AS itl_n,
        MAX(CASE WHEN metric = 'itl' THEN p50_s END) AS itl_p50_s,
        MAX(CASE WHEN metric = 'itl' THEN p90_s END) AS itl_p90_s,
        MAX(CASE WHEN metric = 'itl' THEN p99_s END) AS itl_p99_s,
        MAX(CASE WHEN metric = 'itl' THEN p999_s END) AS itl_p999_s,
        MAX(CASE WHEN metric = 'tpot' THEN n END) AS tpot_n,
        MAX(CASE WHEN metric = 'tpot' THEN p50_s END) AS tpot_p50_s,
        MAX(CASE WHEN metric = 'tpot' THEN p90_s END) AS tpot_p90_s,
        MAX(CASE WHEN metric = 'tpot' THEN p99_s END) AS tpot_p99_s,
        MAX(CASE WHEN metric = 'tpot' THEN p999_s END) AS tpot_p999_s,
        MAX(CASE WHEN metric = 'e2e' THEN n END) AS e2e_n,
        MAX(CASE WHEN metric = 'e2e' THEN p50_s END) AS e2e_p50_s,
        MAX(CASE WHEN metric = 'e2e' THEN p90_s END) AS e2e_p90_s,
        MAX(CASE WHEN metric = 'e2e' THEN p99_s END) AS e2e_p99_s,
        MAX(CASE WHEN metric = 'e2e' THEN p999_s END) AS e2e_p999_s
    FROM latency_percentiles GROUP BY arm_id
)
SELECT a.experiment_id, e.name AS experiment, a.arm_id, a.arm_index, a.name AS arm,
       a.drafter, a.num_speculative_tokens, a.temperature,
       t.n_runs, t.n_requests, t.output_tokens, t.wall_s, t.output_tok_per_s,
       lat.ttft_n, lat.ttft_p50_s, lat.ttft_p90_s, lat.ttft_p99_s, lat.ttft_p999_s,
       lat.itl_n, lat.itl_p50_s, lat.itl_p90_s, lat.itl_p99_s, lat.itl_p999_s,
       lat.tpot_n, lat.tpot_p50_s, lat.tpot_p90_s, lat.tpot_p99_s, lat.tpot_p999_s,
       lat.e2e_n, lat.e2e_p50_s, lat.e2e_p90_s, lat.e2e_p99_s, lat.e2e_p999_s,
       acc.num_drafts, acc.num_draft_tokens, acc.num_accepted_tokens, acc.acceptance_rate,
       acc.accept_length, acc.verify_expert_overhead,
       el.expert_load_imbalance
FROM arms a
JOIN experiments e ON e.experiment_id = a.experiment_id
LEFT JOIN arm_throughput t ON t.arm_id = a.arm_id
LEFT JOIN lat ON lat.arm_id = a.arm_id
LEFT JOIN arm_acceptance acc ON acc.arm_id = a.arm_id
LEFT JOIN arm_expert_load el ON el.arm_id = a.arm_id;

-- A/B: every pair of arms of an experiment (arm_a listed first in the script), side by side,
-- with differences b - a. For confidence intervals use `specmoe report`.
CREATE VIEW ab_compare AS
SELECT a.experiment_id, a.experiment, a.arm AS arm_a, b.arm AS arm_b,
       a.output_tok_per_s AS output_tok_per_s_a, b.output_tok_per_s AS output_tok_per_s_b,
       b.output_tok_per_s - a.output_tok_per_s AS output_tok_per_s_diff,
       b.output_tok_per_s / NULLIF(a.output_tok_per_s, 0) AS output_tok_per_s_ratio,
       a.acceptance_rate AS acceptance_rate_a, b.acceptance_rate AS acceptance_rate_b,
       b.acceptance_rate - a.acceptance_rate AS acceptance_rate_diff,
       a.accept_length AS accept_length_a, b.accept_length AS accept_length_b,
       b.accept_length - a.accept_length AS accept_length_diff,
       a.ttft_p50_s AS ttft_p50_s_a, b.ttft_p50_s AS ttft_p50_s_b, b.ttft_p50_s - a.ttft_p50_s AS ttft_p50_s_diff,
       a.ttft_p99_s AS ttft_p99_s_a, b.ttft_p99_s AS ttft_p99_s_b, b.ttft_p99_s - a.ttft_p99_s AS ttft_p99_s_diff,
       a.itl_p50_s AS itl_p50_s_a, b.itl_p50_s AS itl_p50_s_b, b.itl_p50_s - a.itl_p50_s AS itl_p50_s_diff,
       a.itl_p99_s AS itl_p99_s_a, b.itl_p99_s AS itl_p99_s_b, b.itl_p99_s - a.itl_p99_s AS itl_p99_s_diff,
       a.tpot_p50_s AS tpot_p50_s_a, b.tpot_p50_s AS tpot_p50_s_b, b.tpot_p50_s - a.tpot_p50_s AS tpot_p50_s_diff,
       a.tpot_p99_s AS tpot_p99_s_a, b.tpot_p99_s AS tpot_p99_s_b, b.tpot_p99_s - a.tpot_p99_s AS tpot_p99_s_diff,
       a.e2e_p50_s AS e2e_p50_s_a, b.e2e_p50_s AS e2e_p50_s_b, b.e2e_p50_s - a.e2e_p50_s AS e2e_p50_s_diff,
       a.e2e_p99_s AS e2e_p99_s_a, b.e2e_p99_s AS e2e_p99_s_b, b.e2e_p99_s - a.e2e_p99_s AS e2e_p99_s_diff,
       a.ttft_n AS ttft_n_a, b.ttft_n AS ttft_n_b, a.itl_n AS itl_n_a, b.itl_n AS itl_n_b
FROM arm_summary a
JOIN arm_summary b ON b.experiment_id = a.experiment_id AND b.arm_index > a.arm_index;
