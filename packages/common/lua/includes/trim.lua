-- Phase "trim": the raw and late streams are trimmed by age (MINID, approximate: whole stream
-- nodes), never past what the group has not merged yet — the cut is the older of now - retention,
-- the oldest pending entry and the group's last-delivered id.
local function trimByAge(stream, late, now, retention, delivered, minPending)
  if retention <= 0 then return end
  local cutMs = now - retention
  if minPending then
    local pm = parseId(minPending)
    if pm < cutMs then cutMs = pm end
  end
  local dm = parseId(delivered)
  if dm < cutMs then cutMs = dm end
  if cutMs > 0 then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', cutMs))
    redis.call('XTRIM', late, 'MINID', '~', string.format('%d', now - retention))
  end
end
