-- lua/specmoe/util.lua — small helpers of the specmoe module: error positions, "did you mean",
-- a seeded generator (the same seed gives the same order on every machine).
local M = {}

--- "script.lua:12" of the function `level` levels above the caller of where().
function M.where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info then return "?" end
  local src = info.source or "?"
  if src:sub(1, 1) == "@" then src = src:sub(2) else src = info.short_src end
  return src .. ":" .. tostring(info.currentline)
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
