-- Expert load per layer from full route traces (experiments with record_routes = true):
-- tokens routed to each expert, then per (model, layer) the load imbalance max/mean (EPLB's
-- balancedness is its inverse), min/mean, and how many experts received no token at all.
-- An expert missing from the traces entirely is counted through the layer's expert count.
WITH routed AS (
    SELECT t.run_id, t.model, t.layer, CAST(e.value AS INTEGER) AS expert
    FROM route_traces t, json_each(t.expert_ids) e
),
per_expert AS (
    SELECT run_id, model, layer, expert, COUNT(*) AS tokens
    FROM routed GROUP BY run_id, model, layer, expert
),
layer_size AS (
    SELECT run_id, model, layer, MAX(n_experts) AS n_experts
    FROM moe_layer_events GROUP BY run_id, model, layer
)
SELECT p.model, p.layer, l.n_experts AS experts,
       COUNT(*) AS experts_used,
       l.n_experts - COUNT(*) AS experts_unused,
       SUM(p.tokens) AS routed_pairs,
       ROUND(MAX(p.tokens) / (SUM(p.tokens) * 1.0 / l.n_experts), 3) AS max_over_mean,
       ROUND(CASE WHEN COUNT(*) < l.n_experts THEN 0
                  ELSE MIN(p.tokens) / (SUM(p.tokens) * 1.0 / l.n_experts) END, 3) AS min_over_mean
FROM per_expert p JOIN layer_size l USING (run_id, model, layer)
GROUP BY p.run_id, p.model, p.layer
ORDER BY p.run_id, p.model DESC, p.layer;
