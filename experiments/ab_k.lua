-- experiments/ab_k.lua — how many tokens to draft, and with what: a grid over k and drafters
-- (a draft model, prompt-lookup n-grams, self-speculation with one expert per token), plus the
-- target-alone baseline. Each arm runs 3 times, interleaved, so slow drift hits all alike.
--
--   specmoe run experiments/ab_k.lua --db results.db && specmoe report results.db --experiment ab_k
local sm = require "specmoe"

return sm.experiment {
  name = "ab_k",
  description = "k in {2, 4, 6} x drafter in {model, ngram, self}",
  target = sm.model { path = "experiments/models/target", moe_runner_backend = "ref" },
  draft = sm.model { path = "experiments/models/draft", moe_runner_backend = "ref" },
  workload = { num_prompts = 6, random_input_len = 32, max_new_tokens = 32, max_concurrency = 2 },
  self_draft_top_k = 1,
  repeats = 3,
  seed = 2,
  arms = sm.arms(
    sm.arm { name = "baseline" },
    sm.grid { name = "{drafter}_k{k}", drafter = { "model", "ngram", "self" }, k = { 2, 4, 6 }, axes = { "drafter", "k" } }
  ),
}
