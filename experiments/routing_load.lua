-- experiments/routing_load.lua — is routing of the trained pair alive on text it never saw?
-- Records the full route trace (every token, every MoE layer: experts and weights) of the target
-- and of the draft while the draft proposes k = 4 tokens, on the 64 held-out prompts. These
-- traces are also the data a route predictor (prefetch) is evaluated on.
--
--   specmoe run experiments/routing_load.lua --db routes.db
--   sqlite3 -header -column routes.db < db/queries/expert_load_from_traces.sql
local sm = require "specmoe"

return sm.experiment {
  name = "routing_load",
  description = "route traces of target and draft on the 64 held-out prompts (draft model, k = 4, greedy)",
  target = sm.model { path = "models/target", moe_runner_backend = "ref" },
  draft = sm.model { path = "models/draft", moe_runner_backend = "ref" },
  workload = { prompts_file = "prompts/heldout.jsonl", num_prompts = 64, max_new_tokens = 64,
               max_concurrency = 4 },
  sampling = { temperature = 0 },
  repeats = 1,
  seed = 1,
  record_routes = true,
  arms = { sm.arm { name = "draft_k4", drafter = "model", k = 4 } },
}
