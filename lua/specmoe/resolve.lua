-- lua/specmoe/resolve.lua — turns sm.experiment{...} into fully resolved arms: defaults filled,
-- settings that do not apply dropped, files, backends and model pairs checked. Errors name the
-- line of the arm (or experiment) that holds the bad setting.
local core = require "specmoe.core"
local util = require "specmoe.util"

local M = {}
local fail = util.fail

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function one_of(value, allowed, what, at, context)
  if allowed[value] then return end
  local names = {}
  for k in pairs(allowed) do names[#names + 1] = k end
  table.sort(names)
  local hint = util.suggest(value, names)
  fail(at, "%s: unknown %s '%s'%s (known: %s)", context, what, value,
    hint and (", did you mean '" .. hint .. "'?") or "", table.concat(names, ", "))
end

-- A path as given if it exists from the current directory, else relative to the script.
local function find_path(path, script_dir)
  if core.exists(path) then return path end
  if script_dir and path:sub(1, 1) ~= "/" then
    local alt = script_dir .. "/" .. path
    if core.exists(alt) then return alt end
  end
  return nil
end

-- Every device specmoe knows; whether this build has it is core.have_cuda (a CPU-only build
-- still knows the name, so it can say why it cannot run there).
local DEVICES = { cpu = true, cuda = true }

-- Checks prefix_device (default "cpu") and returns it.
local function check_device(a, prefix, at, context)
  local key = prefix .. "_device"
  local device = a[key] or "cpu"
  if not DEVICES[device] then
    -- "gpu" and torch's "cuda:0" mean cuda, and swapped letters ("cdua") the device they spell:
    -- edit distance alone would offer "cpu" for both "gpu" and "cdua".
    local lower = device:lower()
    local function letters(w)
      local t = {}
      for ch in w:gmatch(".") do t[#t + 1] = ch end
      table.sort(t)
      return table.concat(t)
    end
    local hint = (lower == "gpu" or lower:match("^cuda")) and "cuda" or nil
    for name in pairs(DEVICES) do
      if not hint and letters(lower) == letters(name) then hint = name end
    end
    hint = hint or util.suggest(device, DEVICES)
    fail(at, "%s: unknown device (%s) '%s'%s (known: cpu, cuda)", context, key, device,
      hint and (", did you mean '" .. hint .. "'?") or "")
  end
  if device == "cuda" and not core.have_cuda then
    fail(at, "%s: %s = \"cuda\", but this specmoe was built without CUDA (-DSPECMOE_CUDA=OFF); use a CUDA build "
      .. "or device = \"cpu\"", context, key)
  end
  return device
end

local model_cache, prompts_cache = {}, {}

local function model_info(path, at, context)
  if model_cache[path] == nil then
    local info, msg = core.model_info(path)
    if not info then fail(at, "%s: %s", context, msg) end
    model_cache[path] = info
  end
  return model_cache[path]
end

local function check_model(a, prefix, at, context, script_dir)
  at = a["__" .. prefix .. "_where"] or at
  local key = prefix .. "_model_path"
  local found = find_path(a[key], script_dir)
  if not found then fail(at, "%s: %s '%s' does not exist", context, key, a[key]) end
  a[key] = found
  local info = model_info(found, at, context .. ": " .. key)
  local runner = a[prefix .. "_moe_runner_backend"] or "auto"
  local a2a = a[prefix .. "_moe_a2a_backend"] or "local"
  local dtype = a[prefix .. "_dtype"] or "auto"
  local device = check_device(a, prefix, at, context)
  local runners = set_of(core.runner_backends()); runners.auto = true
  local a2as = set_of(core.a2a_backends())
  one_of(runner, runners, "MoE runner backend (" .. prefix .. "_moe_runner_backend)", at, context)
  one_of(a2a, a2as, "all-to-all backend (" .. prefix .. "_moe_a2a_backend)", at, context)
  if dtype ~= "auto" and not core.dtype_known(dtype) then
    fail(at, "%s: unknown %s_dtype '%s' (known: auto, %s)", context, prefix, dtype, table.concat(core.dtypes(), ", "))
  end
  if device == "cuda" then
    -- The GPU model takes only runners with a device path and keeps expert weights in bf16
    -- (src/cuda/model_cuda_weights.c); say so now rather than when the model loads.
    local gpu_runners = core.device_runner_backends()
    if runner ~= "auto" and not set_of(gpu_runners)[runner] then
      fail(at, "%s: MoE runner backend '%s' cannot run in a GPU model (%s_device = \"cuda\"; GPU runners: auto, %s)",
        context, runner, prefix, table.concat(gpu_runners, ", "))
    end
    if dtype ~= "auto" and core.dtype_canonical(dtype) ~= "bf16" then
      fail(at, "%s: %s_dtype '%s': the GPU model (%s_device = \"cuda\") keeps expert weights in bf16 (or auto)",
        context, prefix, dtype, prefix)
    end
  elseif dtype ~= "auto" then
    -- The dtype the runner stores expert weights in: each runner declares which it takes.
    local takes, picked = core.runner_weight_dtypes(runner)
    if not set_of(takes)[core.dtype_canonical(dtype)] then
      local which = runner == "auto" and ("'auto' (" .. picked .. " here)") or ("'" .. runner .. "'")
      fail(at, "%s: %s_dtype '%s': MoE runner backend %s takes expert weights in %s (or auto)", context, prefix,
        dtype, which, table.concat(takes, ", "))
    end
  end
  if dtype ~= "auto" then dtype = core.dtype_canonical(dtype) end
  local weights, seed = a[prefix .. "_weights"] or "checkpoint", a[prefix .. "_weights_seed"] or 0
  one_of(weights, { checkpoint = true, random = true }, "weights (" .. prefix .. "_weights)", at, context)
  if weights == "random" and device ~= "cuda" then
    fail(at, "%s: %s_weights = \"random\" needs %s_device = \"cuda\" (the CPU model reads its checkpoint)", context,
      prefix, prefix)
  end
  if seed < 0 then fail(at, "%s: %s_weights_seed must be >= 0, got %d", context, prefix, seed) end
  local chunk = a[prefix .. "_chunked_prefill_size"]
  if chunk ~= nil then
    if device ~= "cuda" then
      fail(at, "%s: %s_chunked_prefill_size needs %s_device = \"cuda\" (the CPU model takes a batch whole)", context,
        prefix, prefix)
    end
    if chunk < 1 or chunk > 65536 then
      fail(at, "%s: %s_chunked_prefill_size must be 1..65536 rows, got %d", context, prefix, chunk)
    end
  end
  a[prefix .. "_moe_runner_backend"], a[prefix .. "_moe_a2a_backend"], a[prefix .. "_dtype"] = runner, a2a, dtype
  a[prefix .. "_device"], a[prefix .. "_weights"], a[prefix .. "_weights_seed"] = device, weights, seed
  return info
end

local function resolve_arm(a, at, context, exp_seed, script_dir)
  -- speculative settings
  local k = a.num_speculative_tokens
  if a.drafter == nil then
    if k ~= nil and k > 0 then
      a.drafter = a.draft_model_path and "model" or nil
      if not a.drafter then
        fail(at, "%s: num_speculative_tokens = %d but no drafter (set drafter = \"model\" with a draft model, \"ngram\" or \"self\")", context, k)
      end
    else
      a.drafter = "none"
    end
  end
  local drafters = set_of(core.drafters()); drafters.none = true
  one_of(a.drafter, drafters, "drafter", at, context)
  if a.drafter == "none" then
    if k ~= nil and k ~= 0 then
      fail(at, "%s: drafter \"none\" (the target alone) cannot propose num_speculative_tokens = %d", context, k)
    end
    a.num_speculative_tokens = 0
  else
    a.num_speculative_tokens = k or 4
    local maxk = core.max_k()
    if a.num_speculative_tokens < 1 or a.num_speculative_tokens > maxk then
      fail(at, "%s: num_speculative_tokens must be 1..%d with drafter \"%s\", got %d", context, maxk, a.drafter,
        a.num_speculative_tokens)
    end
  end
  if a.drafter ~= "model" then
    a.draft_model_path, a.draft_moe_runner_backend, a.draft_dtype, a.draft_moe_a2a_backend = nil, nil, nil, nil
    a.draft_device, a.draft_weights, a.draft_weights_seed, a.draft_chunked_prefill_size = nil, nil, nil, nil
  end
  if a.drafter == "ngram" then
    a.prompt_lookup_min = a.prompt_lookup_min or 1
    a.prompt_lookup_max = a.prompt_lookup_max or math.max(4, a.prompt_lookup_min)
    if a.prompt_lookup_min < 1 or a.prompt_lookup_max < a.prompt_lookup_min then
      fail(at, "%s: need 1 <= prompt_lookup_min <= prompt_lookup_max, got %d and %d", context, a.prompt_lookup_min,
        a.prompt_lookup_max)
    end
  else
    a.prompt_lookup_min, a.prompt_lookup_max = nil, nil
  end
  if a.drafter ~= "self" then a.self_draft_top_k = nil end

  -- models
  if a.target_model_path == nil then
    fail(at, "%s: no target model (set target = sm.model { path = \"...\" })", context)
  end
  local tinfo = check_model(a, "target", at, context, script_dir)
  if a.drafter == "model" then
    if a.draft_model_path == nil then
      fail(at, "%s: drafter \"model\" needs a draft model (draft = sm.model { path = \"...\" })", context)
    end
    local dinfo = check_model(a, "draft", at, context, script_dir)
    if dinfo.vocab_size ~= tinfo.vocab_size then
      fail(at, "%s: draft %s has vocab_size %d but target %s has %d: a draft must share the target's vocabulary",
        context, a.draft_model_path, dinfo.vocab_size, a.target_model_path, tinfo.vocab_size)
    end
    if tinfo.tokenizer_fingerprint and dinfo.tokenizer_fingerprint
        and tinfo.tokenizer_fingerprint ~= dinfo.tokenizer_fingerprint then
      fail(at, "%s: draft %s and target %s have different tokenizers (same vocab size, other tokens)", context,
        a.draft_model_path, a.target_model_path)
    end
  end
  if a.drafter == "self" then
    if tinfo.num_experts == 0 then
      fail(at, "%s: drafter \"self\" needs an MoE target; %s is dense", context, a.target_model_path)
    end
    a.self_draft_top_k = a.self_draft_top_k or 1
    if a.self_draft_top_k < 1 or a.self_draft_top_k > tinfo.num_experts_per_tok then
      fail(at, "%s: self_draft_top_k must be 1..%d (the target's experts per token), got %d", context,
        tinfo.num_experts_per_tok, a.self_draft_top_k)
    end
  end

  -- sampling
  a.temperature = a.temperature or 0.0
  a.top_p = a.top_p or 1.0
  a.top_k = a.top_k or 0
  a.seed = a.seed or exp_seed
  if a.temperature < 0 then fail(at, "%s: temperature must be >= 0 (0 = greedy), got %g", context, a.temperature) end
  if not (a.top_p > 0 and a.top_p <= 1) then fail(at, "%s: top_p must be in (0, 1], got %g", context, a.top_p) end
  if a.top_k < 0 then fail(at, "%s: top_k must be >= 0 (0 = off), got %d", context, a.top_k) end

  -- workload
  local max_prompt_len
  if a.prompts_file then
    local found = find_path(a.prompts_file, script_dir)
    if not found then fail(at, "%s: prompts_file '%s' does not exist", context, a.prompts_file) end
    a.prompts_file = found
    if prompts_cache[found] == nil then
      local info, msg = core.prompts_info(found)
      if not info then fail(at, "%s: %s", context, msg) end
      prompts_cache[found] = info
    end
    local p = prompts_cache[found]
    if p.needs_tokenizer and not tinfo.has_tokenizer then
      fail(at, "%s: %s holds text prompts but target %s has no tokenizer.json (give token ids as JSONL {\"prompt_ids\": [...]})",
        context, found, a.target_model_path)
    end
    a.workload_kind = "prompts"
    a.num_prompts = a.num_prompts or p.count
    if a.num_prompts < 1 or a.num_prompts > p.count then
      fail(at, "%s: num_prompts = %d but %s holds %d prompts", context, a.num_prompts, found, p.count)
    end
    if a.random_input_len then fail(at, "%s: random_input_len is for generated prompts; this arm reads prompts_file", context) end
    max_prompt_len = p.max_ids
  else
    a.workload_kind = "random"
    a.num_prompts = a.num_prompts or 8
    a.random_input_len = a.random_input_len or 16
    if a.num_prompts < 1 then fail(at, "%s: num_prompts must be >= 1, got %d", context, a.num_prompts) end
    if a.random_input_len < 1 then fail(at, "%s: random_input_len must be >= 1, got %d", context, a.random_input_len) end
    max_prompt_len = a.random_input_len
  end
  a.max_new_tokens = a.max_new_tokens or 32
  if a.max_new_tokens < 1 then fail(at, "%s: max_new_tokens must be >= 1, got %d", context, a.max_new_tokens) end
  if a.request_rate ~= nil and not (a.request_rate > 0) then
    fail(at, "%s: request_rate must be > 0 requests/s (leave it out for a closed loop), got %g", context, a.request_rate)
  end
  if a.max_concurrency ~= nil and a.max_concurrency < 1 then
    fail(at, "%s: max_concurrency must be >= 1, got %d", context, a.max_concurrency)
  end
  if max_prompt_len then
    local need = max_prompt_len + a.max_new_tokens + a.num_speculative_tokens + 1
    if need > tinfo.max_context then
      fail(at, "%s: prompts of %d tokens + max_new_tokens %d + k %d need a context of %d, but %s allows %d", context,
        max_prompt_len, a.max_new_tokens, a.num_speculative_tokens, need, a.target_model_path, tinfo.max_context)
    end
  end
  return a
end

function M.experiment(t, env)
  local at = env.at
  if type(t) ~= "table" then fail(at, "sm.experiment: expected a table, got %s", type(t)) end
  env.check_keys(t, env.EXPERIMENT_KEYS, "sm.experiment", at)
  local script = at:match("^(.*):%d+$") or ""
  local script_dir = script:match("^(.*)/[^/]*$") or "."

  local x = {
    name = t.name or (script:match("([^/]+)%.lua$") or "experiment"),
    description = t.description,
    repeats = math.tointeger(t.repeats or 1),
    order = t.order or "interleaved",
    record_routes = t.record_routes or false,
    warmup_requests = math.tointeger(t.warmup_requests or 0),
    seed = math.tointeger(t.seed or 0),
  }
  if x.repeats < 1 then fail(at, "sm.experiment: repeats must be >= 1, got %d", x.repeats) end
  if x.warmup_requests < 0 then
    fail(at, "sm.experiment: warmup_requests must be >= 0, got %d", x.warmup_requests)
  end
  one_of(x.order, env.ORDERS, "order", at, "sm.experiment")

  local defaults_src = {}
  for k, v in pairs(t) do
    if env.ARM_KEYS[k] and k ~= "name" then defaults_src[k] = v end
  end
  local defaults = env.flatten(defaults_src, "sm.experiment", at)

  local arms_in = t.arms
  if arms_in == nil then arms_in = { { name = "default" } } end
  if #arms_in == 0 then fail(at, "sm.experiment: 'arms' must be a non-empty list of sm.arm{...}") end
  x.arms = {}
  local names = {}
  for i, arm in ipairs(arms_in) do
    local arm_at = (type(arm) == "table" and arm.__where) or at
    if type(arm) ~= "table" then fail(at, "sm.experiment: arms[%d] must be a table, got %s", i, type(arm)) end
    if getmetatable(arm) ~= env.ARM_TAG then
      env.check_keys(arm, env.ARM_KEYS, "sm.experiment: arms[" .. i .. "]", arm_at)
    end
    local name = arm.name or ("arm" .. (i - 1))
    local context = "arm '" .. name .. "'"
    if names[name] then fail(arm_at, "%s: two arms are named '%s' (arm names must be unique)", context, name) end
    names[name] = true
    local a = {}
    for k, v in pairs(defaults) do a[k] = v end
    for k, v in pairs(env.flatten(arm, context, arm_at)) do a[k] = v end
    resolve_arm(a, arm_at, context, x.seed, script_dir)
    a.name, a.where = name, arm_at
    a.__target_where, a.__draft_where = nil, nil
    x.arms[i] = a
  end

  x.schedule = {}
  for _, s in ipairs(env.schedule(#x.arms, x.repeats, x.order, x.seed)) do
    x.schedule[#x.schedule + 1] = { arm = s.arm - 1, rep = s.rep }
  end
  x.__experiment = true
  M.last = x
  return x
end

return M
