-- Latency percentiles per arm in milliseconds, with the sample count behind each.
--   sqlite3 -header -column results.db < db/queries/latency_tails.sql
SELECT arm, metric, n,
       ROUND(p50_s * 1e3, 3) AS p50_ms, ROUND(p90_s * 1e3, 3) AS p90_ms,
       ROUND(p99_s * 1e3, 3) AS p99_ms, ROUND(p999_s * 1e3, 3) AS p999_ms
FROM latency_percentiles ORDER BY arm_id, metric;

-- The slowest ten inter-token gaps and where they happened.
SELECT arm, run_id, request_index, emission_index, ROUND(itl_s * 1e3, 3) AS itl_ms
FROM itl_samples ORDER BY itl_s DESC LIMIT 10;
