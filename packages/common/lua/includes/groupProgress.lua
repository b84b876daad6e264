-- Phase "group progress": what the aggregators' group has merged — everything up to its
-- last-delivered id, except entries still pending. Returns the last-delivered id, the oldest pending
-- id (false when none), and mergedThrough(id): whether everything up to id is merged.
--- @include "streamIds"
local function groupProgress(stream, group)
  local delivered, minPending = '0-0', false
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if ok then
    for _, g in ipairs(groups) do
      local name, pending, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1]
        elseif g[i] == 'pending' then pending = g[i + 1]
        elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group then
        delivered = last
        if pending > 0 then
          minPending = redis.call('XPENDING', stream, group)[2]
        end
      end
    end
  end
  local function mergedThrough(id)
    if id == '0-0' then return true end
    if not idLe(id, delivered) then return false end
    if minPending and idLe(minPending, id) then return false end
    return true
  end
  return delivered, minPending, mergedThrough
end
