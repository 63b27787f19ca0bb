-- lua/specmoe/init.lua — the `specmoe` module scripts use:
--
--   local sm = require "specmoe"
--   return sm.experiment {
--     name = "quickstart", repeats = 2,
--     target = sm.model { path = "experiments/models/target" },
--     draft  = sm.model { path = "experiments/models/draft" },
--     workload = { num_prompts = 8, random_input_len = 16, max_new_tokens = 32, max_concurrency = 2 },
--     arms = { sm.arm { name = "baseline" }, sm.arm { name = "spec", drafter = "model", k = 4 } },
--   }
--
-- Everything is checked here, before any model loads or the database is opened: unknown keys
-- (with a "did you mean"), wrong types, missing files, unknown backends, a draft that does not
-- fit the target. Each error names the script line that declared the offending table.
-- The C side (src/exp/lua_experiment.c) reads the table sm.experiment returns.

local core = require "specmoe.core"
local util = require "specmoe.util"

local M = { _VERSION = "specmoe 0.1" }

local fail, where = util.fail, util.where

-- ---- the vocabulary ------------------------------------------------------------------------

-- Settings of a model (target or draft), as sm.model{} keys.
local MODEL_KEYS = {
  path = "string", moe_runner_backend = "string", dtype = "string", moe_a2a_backend = "string",
  device = "string", weights = "string", weights_seed = "integer", chunked_prefill_size = "integer",
}

-- Flat settings of an arm: name -> Lua type. These are the arms table's columns.
local FLAT = {
  target_model_path = "string", target_moe_runner_backend = "string", target_dtype = "string",
  target_moe_a2a_backend = "string", target_device = "string", target_weights = "string",
  target_weights_seed = "integer", target_chunked_prefill_size = "integer",
  draft_model_path = "string", draft_moe_runner_backend = "string", draft_dtype = "string",
  draft_moe_a2a_backend = "string", draft_device = "string", draft_weights = "string",
  draft_weights_seed = "integer", draft_chunked_prefill_size = "integer",
  drafter = "string", num_speculative_tokens = "integer",
  prompt_lookup_min = "integer", prompt_lookup_max = "integer", self_draft_top_k = "integer",
  temperature = "number", top_p = "number", top_k = "integer", seed = "integer",
  prompts_file = "string", num_prompts = "integer", random_input_len = "integer",
  max_new_tokens = "integer", request_rate = "number", max_concurrency = "integer",
}

-- Groups: nested tables whose keys are flattened into FLAT names.
local GROUPS = {
  sampling = { temperature = "temperature", top_p = "top_p", top_k = "top_k", seed = "seed" },
  workload = {
    prompts_file = "prompts_file", num_prompts = "num_prompts", random_input_len = "random_input_len",
    max_new_tokens = "max_new_tokens", request_rate = "request_rate", max_concurrency = "max_concurrency",
  },
  speculative = {
    drafter = "drafter", num_speculative_tokens = "num_speculative_tokens", k = "num_speculative_tokens",
    prompt_lookup_min = "prompt_lookup_min", prompt_lookup_max = "prompt_lookup_max",
    self_draft_top_k = "self_draft_top_k",
  },
}
local ALIASES = { k = "num_speculative_tokens" }

-- Keys of an arm: flat names, aliases, groups, models, name.
local ARM_KEYS = { name = "string", target = "model", draft = "model" }
for k, t in pairs(FLAT) do ARM_KEYS[k] = t end
for k, v in pairs(ALIASES) do ARM_KEYS[k] = FLAT[v] end
for k in pairs(GROUPS) do ARM_KEYS[k] = "table" end

-- Keys of an experiment: every arm key (a default for all arms) and its own.
local EXPERIMENT_KEYS = {
  description = "string", repeats = "integer", order = "string", record_routes = "boolean",
  warmup_requests = "integer",
  arms = "table",
}
for k, t in pairs(ARM_KEYS) do EXPERIMENT_KEYS[k] = t end
EXPERIMENT_KEYS.name = "string"

local ORDERS = { interleaved = true, sequential = true, shuffled = true }

-- ---- checking tables -----------------------------------------------------------------------

local MODEL_TAG, ARM_TAG = {}, {}

local function check_type(value, want, key, context, at)
  local got = math.type(value) or type(value)
  if want == "integer" then
    if got == "integer" then return end
    if got == "float" and value == math.floor(value) then return end
  elseif want == "number" then
    if type(value) == "number" then return end
  elseif want == "model" then
    if type(value) == "table" or type(value) == "string" then return end
    want = "table (sm.model{...}) or string path"
  elseif type(value) == want then
    return
  end
  fail(at, "%s: '%s' must be %s %s, got %s (%s)", context, key, want:match("^[aeiou]") and "an" or "a",
    want, got, tostring(value))
end

-- Every key of t must be in keys (a name -> type table); suggests the nearest known key.
local function check_keys(t, keys, context, at)
  for k, v in pairs(t) do
    if type(k) == "string" and k:sub(1, 2) == "__" then goto continue end
    if type(k) ~= "string" then
      fail(at, "%s: unexpected list entry %s (settings are name = value)", context, tostring(k))
    end
    if keys[k] == nil then
      local hint = util.suggest(k, keys)
      fail(at, "%s: unknown key '%s'%s", context, k, hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
    check_type(v, keys[k], k, context, at)
    ::continue::
  end
end

local function check_model(t, context, at)
  if type(t) == "string" then return { path = t, __where = at } end
  if getmetatable(t) == MODEL_TAG then return t end
  check_keys(t, MODEL_KEYS, context, at)
  return t
end

-- Checks one arm (or experiment-level defaults) and returns its settings flattened.
local function flatten(t, context, at)
  local flat = {}
  for k, v in pairs(t) do
    if k == "target" or k == "draft" then
      local m = check_model(v, context .. ": " .. k, (type(v) == "table" and v.__where) or at)
      flat[k .. "_model_path"] = m.path
      flat[k .. "_moe_runner_backend"] = m.moe_runner_backend
      flat[k .. "_dtype"] = m.dtype
      flat[k .. "_moe_a2a_backend"] = m.moe_a2a_backend
      flat[k .. "_device"] = m.device
      flat[k .. "_weights"] = m.weights
      flat[k .. "_weights_seed"] = m.weights_seed
      flat[k .. "_chunked_prefill_size"] = m.chunked_prefill_size
      flat["__" .. k .. "_where"] = m.__where -- model errors point at the sm.model line
    elseif GROUPS[k] then
      local keys = {}
      for gk in pairs(GROUPS[k]) do keys[gk] = FLAT[GROUPS[k][gk]] end
      check_keys(v, keys, context .. ": " .. k, at)
      for gk, gv in pairs(v) do flat[GROUPS[k][gk]] = gv end
    elseif ALIASES[k] then
      flat[ALIASES[k]] = v
    elseif FLAT[k] then
      flat[k] = v
    end
  end
  for k, v in pairs(flat) do
    if math.type(v) == "float" and FLAT[k] == "integer" then flat[k] = math.tointeger(v) end
  end
  return flat
end

-- ---- public helpers ------------------------------------------------------------------------

--- A model: sm.model { path = DIR, moe_runner_backend = "auto", dtype = "auto", moe_a2a_backend = "local",
---                     device = "cpu",    -- device = "cuda": weights, KV cache and math on the GPU
---                     weights = "checkpoint", weights_seed = 0 }
---                     -- weights = "random": drawn from weights_seed, only config.json is read
---                     -- (full-size shapes without a download; device = "cuda" only)
---                     -- chunked_prefill_size = N (device = "cuda"): rows per forward pass, a
---                     -- longer prompt runs in pieces (SGLang's --chunked-prefill-size; 4096)
function M.model(t)
  local at = where(2)
  if type(t) ~= "table" then fail(at, "sm.model: expected a table {path = ...}, got %s", type(t)) end
  check_keys(t, MODEL_KEYS, "sm.model", at)
  if t.path == nil then fail(at, "sm.model: 'path' is required (a checkpoint directory)") end
  local m = {}
  for k, v in pairs(t) do m[k] = v end
  m.__where = at
  return setmetatable(m, MODEL_TAG)
end

--- One arm: a name and the settings in which it differs from the experiment's defaults.
function M.arm(t)
  local at = where(2)
  if type(t) ~= "table" then fail(at, "sm.arm: expected a table, got %s", type(t)) end
  check_keys(t, ARM_KEYS, "sm.arm" .. (type(t.name) == "string" and (" '" .. t.name .. "'") or ""), at)
  local a = {}
  for k, v in pairs(t) do a[k] = v end
  a.__where = at
  return setmetatable(a, ARM_TAG)
end

--- A grid of arms: every combination of the list-valued settings, e.g.
---   sm.grid { drafter = {"model", "ngram"}, k = {2, 4, 8} }          -- 6 arms
--- Scalar settings apply to every arm. `name` is a template ("{drafter}_k{k}"); by default
--- names read "drafter=model,k=2". Axes vary in the order given by `axes` (default: sorted).
function M.grid(t)
  local at = where(2)
  if type(t) ~= "table" then fail(at, "sm.grid: expected a table, got %s", type(t)) end
  local fixed, axes, order = {}, {}, t.axes
  for k, v in pairs(t) do
    if k ~= "name" and k ~= "axes" then
      if type(v) == "table" and #v > 0 and getmetatable(v) ~= MODEL_TAG then
        axes[k] = v
      else
        fixed[k] = v
      end
    end
  end
  if order == nil then
    order = {}
    for k in pairs(axes) do order[#order + 1] = k end
    table.sort(order)
  else
    for _, k in ipairs(order) do
      if not axes[k] then fail(at, "sm.grid: axis '%s' in 'axes' has no list of values", tostring(k)) end
    end
  end
  if #order == 0 then fail(at, "sm.grid: no list-valued setting to vary (e.g. k = {2, 4})") end
  check_keys(fixed, ARM_KEYS, "sm.grid", at)
  for _, k in ipairs(order) do
    if ARM_KEYS[k] == nil then
      local hint = util.suggest(k, ARM_KEYS)
      fail(at, "sm.grid: unknown key '%s'%s", k, hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
  end
  local arms = {}
  local function label(v)
    if type(v) == "table" then return tostring(v.path or v.name or "?"):match("([^/]+)/*$") end
    return tostring(v)
  end
  local function rec(i, cur)
    if i > #order then
      local a = {}
      for k, v in pairs(fixed) do a[k] = v end
      local parts = {}
      for _, k in ipairs(order) do
        a[k] = cur[k]
        parts[#parts + 1] = k .. "=" .. label(cur[k])
      end
      if type(t.name) == "string" then
        a.name = t.name:gsub("{([%w_]+)}", function(k) return cur[k] ~= nil and label(cur[k]) or "{" .. k .. "}" end)
      else
        a.name = table.concat(parts, ",")
      end
      check_keys(a, ARM_KEYS, "sm.grid arm '" .. a.name .. "'", at)
      a.__where = at
      arms[#arms + 1] = setmetatable(a, ARM_TAG)
      return
    end
    for _, v in ipairs(axes[order[i]]) do
      cur[order[i]] = v
      rec(i + 1, cur)
    end
  end
  rec(1, {})
  return arms
end

--- Concatenates lists of arms: sm.arms(sm.arm{...}, sm.grid{...}, ...)
function M.arms(...)
  local out = {}
  for _, x in ipairs({ ... }) do
    if getmetatable(x) == ARM_TAG then
      out[#out + 1] = x
    else
      for _, a in ipairs(x) do out[#out + 1] = a end
    end
  end
  return out
end

--- The order runs execute in: list of {arm = i (1-based), rep = r (0-based)}.
---   interleaved: A B C A B C ... (default: drift over time hits every arm alike)
---   sequential:  A A B B C C
---   shuffled:    each round of arms in a seeded random order
function M.schedule(n_arms, repeats, order, seed)
  local out = {}
  if order == "sequential" then
    for a = 1, n_arms do for r = 0, repeats - 1 do out[#out + 1] = { arm = a, rep = r } end end
  else
    local rng = util.rng(seed or 0)
    for r = 0, repeats - 1 do
      local perm = {}
      for a = 1, n_arms do perm[a] = a end
      if order == "shuffled" then
        for i = n_arms, 2, -1 do
          local j = rng(i)
          perm[i], perm[j] = perm[j], perm[i]
        end
      end
      for _, a in ipairs(perm) do out[#out + 1] = { arm = a, rep = r } end
    end
  end
  return out
end

M.experiment = function(t)
  -- not a tail call: where(2) must still see the script's frame
  local x = require("specmoe.resolve").experiment(t, {
    at = where(2), check_keys = check_keys, flatten = flatten, schedule = M.schedule,
    EXPERIMENT_KEYS = EXPERIMENT_KEYS, ARM_KEYS = ARM_KEYS, ARM_TAG = ARM_TAG, ORDERS = ORDERS, FLAT = FLAT,
  })
  return x
end

M.core = core
return M
