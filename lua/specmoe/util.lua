-- lua/specmoe/util.lua — small helpers of the specmoe module: error positions, "did you mean",
-- a seeded generator (the same seed gives the same order on every machine).
local M = {}

-- The last script line that ran (a line hook keeps it). `return sm.experiment { ... }` is a
-- tail call: the script's frame is gone when sm.experiment runs, and this is its line.
local last_line
local function is_module_source(src) return src:find("/specmoe/[%w_]+%.lua$") ~= nil end
debug.sethook(function(_, line)
  local info = debug.getinfo(2, "S")
  if info and info.source:sub(1, 1) == "@" and not is_module_source(info.source) then
    last_line = info.source:sub(2) .. ":" .. line
  end
end, "l")

--- "script.lua:12" of the function `level` levels above the caller of where().
function M.where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline > 0 and info.source:sub(1, 1) == "@" and not is_module_source(info.source) then
    return info.source:sub(2) .. ":" .. tostring(info.currentline)
  end
  return last_line or "?"
end

--- Raises "at: message" without Lua adding its own position (at already names the line).
function M.fail(at, fmt, ...)
  error((at and (at .. ": ") or "") .. string.format(fmt, ...), 0)
end

local function distance(a, b)
  local la, lb = #a, #b
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    for j = 1, lb do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[lb]
end
M.distance = distance

--- The known name closest to `name` (keys of `known`, or a list), if it is close enough.
function M.suggest(name, known)
  local best, best_d
  local names = {}
  if #known > 0 then names = known else for k in pairs(known) do names[#names + 1] = k end end
  table.sort(names)
  local lname = name:lower()
  for _, k in ipairs(names) do
    local d = distance(lname, k:lower())
    if k:lower():find(lname, 1, true) or lname:find(k:lower(), 1, true) then d = math.min(d, 2) end
    if not best_d or d < best_d then best, best_d = k, d end
  end
  if best and best_d <= math.max(2, #name // 3) then return best end
  return nil
end

--- A deterministic generator: rng(n) returns an integer in [1, n]. (LCG, 64-bit wrap.)
function M.rng(seed)
  local state = (math.tointeger(seed) or 0) * 2862933555777941757 + 3037000493
  return function(n)
    state = state * 6364136223846793005 + 1442695040888963407
    return ((state >> 33) % n) + 1
  end
end

--- Splits "a, b, c".
function M.split_names(s)
  local out = {}
  for name in tostring(s):gmatch("[^,%s]+") do out[#out + 1] = name end
  return out
end

return M
