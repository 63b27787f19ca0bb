-- A tiny experiment on the random-weight fixture (no tokenizer: generated prompts).
local sm = require "specmoe"
local fixture = "tests/fixtures/loader/ckpt/qwen3_moe_hub"
return sm.experiment {
  name = "tiny",
  target = sm.model { path = fixture, moe_runner_backend = "ref" },
  draft = sm.model { path = fixture },
  workload = { num_prompts = 6, random_input_len = 5, max_new_tokens = 12, max_concurrency = 2 },
  repeats = 2,
  seed = 7,
  arms = {
    sm.arm { name = "baseline" },
    sm.arm { name = "self_draft", drafter = "model", k = 3 },
    sm.arm { name = "ngram", drafter = "ngram", k = 2, temperature = 0.8 },
  },
}
