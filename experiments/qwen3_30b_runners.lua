-- experiments/qwen3_30b_runners.lua — the Qwen3-30B-A3B shape (48 layers, 128 experts, top-8) with
-- random weights on one GPU: our fused `cuda` MoE runner against `cublaslt`, at 1 and 8 requests
-- in flight; latency tails per arm in SQLite. Needs a CUDA build and ~62 GB of GPU memory
-- (experiments/configs/ holds the config.json; no weights are read). Not yet run: written after
-- the session's device time was spent.
--
--   specmoe run experiments/qwen3_30b_runners.lua --db results.db
--   specmoe report results.db --experiment qwen3_30b_runners
local sm = require "specmoe"

local function qwen3(runner)
  return sm.model { path = "configs/qwen3-30b-a3b", weights = "random", weights_seed = 1, device = "cuda",
                    moe_runner_backend = runner }
end

return sm.experiment {
  name = "qwen3_30b_runners",
  description = "Qwen3-30B-A3B shape, random weights: cuda vs cublaslt MoE runner, 1 and 8 in flight",
  target = qwen3("cuda"),
  workload = { num_prompts = 16, random_input_len = 128, max_new_tokens = 64, max_concurrency = 1 },
  warmup_requests = 2,
  repeats = 2,
  arms = sm.arms(
    sm.arm { name = "cuda_c1" },
    sm.arm { name = "cublaslt_c1", target = qwen3("cublaslt") },
    sm.arm { name = "cuda_c8", workload = { max_concurrency = 8 } },
    sm.arm { name = "cublaslt_c8", target = qwen3("cublaslt"), workload = { max_concurrency = 8 } }
  ),
}
