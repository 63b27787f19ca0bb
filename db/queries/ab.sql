-- Two arms side by side (every pair of the latest experiment), differences B - A.
-- For confidence intervals use `specmoe report results.db`.
SELECT arm_a, arm_b,
       ROUND(output_tok_per_s_ratio, 3) AS throughput_ratio,
       ROUND(acceptance_rate_diff, 3) AS acceptance_rate_diff,
       ROUND(itl_p50_s_diff * 1e3, 3) AS itl_p50_ms_diff, ROUND(itl_p99_s_diff * 1e3, 3) AS itl_p99_ms_diff,
       ROUND(e2e_p99_s_diff * 1e3, 3) AS e2e_p99_ms_diff, itl_n_a, itl_n_b
FROM ab_compare WHERE experiment_id = (SELECT MAX(experiment_id) FROM experiments);
