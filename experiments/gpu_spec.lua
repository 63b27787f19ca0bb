-- experiments/gpu_spec.lua — the trained pair on the GPU (device = "cuda", BF16, our `cuda` MoE
-- runner for target and draft, sampling and the acceptance test on the device): the target
-- alone against a draft model at k = 2 and 4 and prompt-lookup n-grams at k = 4, greedy and at
-- temperature 0.7, on held-out prompts. Recorded on an H200 in bench/RESULTS.md (before
-- warmup_requests was added: the first arm's TTFT p99 there includes the graph captures). Needs a CUDA build and a GPU; a CPU-only build stops
-- before running anything, naming the device.
--
--   specmoe run experiments/gpu_spec.lua --db results.db
--   specmoe report results.db --experiment gpu_spec
local sm = require "specmoe"

return sm.experiment {
  name = "gpu_spec",
  description = "target alone vs draft model k in {2, 4} vs n-gram k = 4, on the GPU, greedy and T = 0.7",
  target = sm.model { path = "experiments/models/target", device = "cuda", moe_runner_backend = "cuda" },
  draft = sm.model { path = "experiments/models/draft", device = "cuda", moe_runner_backend = "cuda" },
  workload = { prompts_file = "experiments/prompts/heldout.jsonl", num_prompts = 32, max_new_tokens = 64,
               max_concurrency = 8 },
  repeats = 2,
  warmup_requests = 8,  -- graph captures and lazy allocations out of the first run's tails
  seed = 3,
  arms = sm.arms(
    sm.arm { name = "target_only" },
    sm.arm { name = "draft_k2", drafter = "model", k = 2 },
    sm.arm { name = "draft_k4", drafter = "model", k = 4 },
    sm.arm { name = "ngram_k4", drafter = "ngram", k = 4 },
    sm.arm { name = "draft_k4_t07", drafter = "model", k = 4, sampling = { temperature = 0.7 } },
    sm.arm { name = "target_only_t07", sampling = { temperature = 0.7 } }
  ),
}
