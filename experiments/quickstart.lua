-- experiments/quickstart.lua — the README's first experiment: the target alone against the
-- target with a draft model proposing k = 4 tokens, small enough for a laptop CPU (< 2 min on
-- 2 cores).
--
--   specmoe run experiments/quickstart.lua --db results.db
--   specmoe report results.db --html report.html
--   sqlite3 results.db 'SELECT arm, acceptance_rate, accept_length, itl_p50_s, itl_p99_s FROM arm_summary'
local sm = require "specmoe"

return sm.experiment {
  name = "quickstart",
  description = "target alone vs target + draft model (k = 4), greedy",
  target = sm.model { path = "experiments/models/target", moe_runner_backend = "ref" },
  draft = sm.model { path = "experiments/models/draft", moe_runner_backend = "ref" },
  -- Held-out Python source the pair never saw in training (experiments/train/train.py).
  workload = { prompts_file = "experiments/prompts/heldout.jsonl", num_prompts = 16, max_new_tokens = 48,
               max_concurrency = 2 },
  sampling = { temperature = 0 },
  repeats = 2,          -- interleaved: baseline, spec, baseline, spec
  seed = 1,
  arms = {
    sm.arm { name = "target_only" },
    sm.arm { name = "draft_k4", drafter = "model", k = 4 },
  },
}
