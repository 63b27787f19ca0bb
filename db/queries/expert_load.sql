-- Expert load per layer of the target: how unbalanced routing is (max / mean tokens per expert)
-- and how many distinct experts a pass touches, verify passes against plain decode passes.
SELECT arm, layer, n_events, ROUND(mean_distinct_experts, 2) AS distinct_experts,
       ROUND(mean_imbalance, 3) AS imbalance
FROM expert_load_by_layer WHERE model = 'target' ORDER BY arm_id, layer;

SELECT r.arm, m.pass, COUNT(*) AS events, ROUND(AVG(m.distinct_experts), 2) AS distinct_experts,
       ROUND(AVG(m.n_tokens), 2) AS tokens_per_pass
FROM moe_layer_events m JOIN run_info r USING (run_id)
WHERE m.model = 'target' GROUP BY r.arm_id, m.pass ORDER BY r.arm_id, m.pass;
