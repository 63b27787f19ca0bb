-- experiments/heldout_acceptance.lua — how much each drafter gets accepted on text the models
-- never saw: the trained target/draft pair (experiments/models) on all 64 held-out prompts
-- (experiments/prompts/heldout.jsonl), greedy, 64 new tokens each.
--
--   specmoe run experiments/heldout_acceptance.lua --db heldout.db
--   sqlite3 -header -column heldout.db < db/queries/acceptance_by_arm.sql
--
-- Arms: the target alone (the baseline), a draft model, prompt lookup (n-gram) and the target
-- drafting for itself with one expert per token instead of two; k = 4 for all three drafters.
-- Greedy decoding makes every arm's text identical to the baseline's, so acceptance differs
-- only by drafter, and one repeat suffices for acceptance (latency would want more).
-- About 30 s on 2 CPU cores (ref runner).
local sm = require "specmoe"

return sm.experiment {
  name = "heldout_acceptance",
  description = "drafters on 64 held-out prompts: target only, draft model, n-gram, self top-1; k = 4, greedy",
  target = sm.model { path = "models/target", moe_runner_backend = "ref" },
  draft = sm.model { path = "models/draft", moe_runner_backend = "ref" },
  workload = { prompts_file = "prompts/heldout.jsonl", num_prompts = 64, max_new_tokens = 64,
               max_concurrency = 4 },
  sampling = { temperature = 0 },
  repeats = 1,
  seed = 1,
  arms = {
    sm.arm { name = "target_only" },
    sm.arm { name = "draft_k4", drafter = "model", k = 4 },
    sm.arm { name = "ngram_k4", drafter = "ngram", k = 4 },
    sm.arm { name = "self_top1_k4", drafter = "self", k = 4, self_draft_top_k = 1 },
  },
}
