"""The Lua scripts of the Redis store: each one atomic round trip on one slot (a model's hash tag)."""

# A lookup that also takes the single-flight locks of the entries the request must compute (see
# caching.core.store.LockRequest), so a miss costs two round trips: this and the save. An entry
# is locked when absent, of another generation, of a version the cache no longer follows (when
# following), or not fresh at ARGV[3]: the rule of caching.core.freshness.needs_lock, here read
# from the value's header (byte 0: format 1; bytes 2-3: the header's length; then its JSON).
# Deciding what to serve stays in Python: a lock this takes that the request does not need is
# released with its save, one it does not take is taken after.
#   KEYS: generation, version generation, followed version, entries (n), their locks (n)
#   ARGV: lock token, lock ms, now, follow ('1'/'0'), every entry ('1'/'0')
#   Returns: generation, version generation, followed version, the n values, then per entry
#            1 (locked now), 0 (another request holds its lock) or -1 (servable: not tried)
LOOKUP_LOCKING_SCRIPT = """
local n = (#KEYS - 3) / 2
local token, lock_ms, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local follow, every = ARGV[4] == '1', ARGV[5] == '1'
local reply = {}
for first = 1, 3 + n, 1000 do
  local chunk = redis.call('MGET', unpack(KEYS, first, math.min(first + 999, 3 + n)))
  for i = 1, #chunk do reply[first + i - 1] = chunk[i] end
end
local current = reply[3] or ''
local generation = false
if reply[1] and reply[2] then generation = reply[1] .. '.' .. reply[2] end
local function text(value)
  if type(value) == 'string' then return value end
  return nil
end
local function servable(value)
  if not generation or #value < 4 or string.byte(value, 1) ~= 1 then return false end
  local header_end = 4 + string.byte(value, 3) * 256 + string.byte(value, 4)
  local ok, header = pcall(cjson.decode, string.sub(value, 5, header_end))
  if not ok or type(header) ~= 'table' or header.g ~= generation then return false end
  if follow then
    local version, deployed = text(header.v), text(header.d)
    local tag = ''
    if version or deployed then tag = (deployed or '') .. '/' .. (version or '') end
    if tag ~= current then return false end
  end
  return type(header.x) ~= 'number' or header.x > now
end
for i = 1, n do
  local value = reply[3 + i]
  local state = -1
  if every or not value or not servable(value) then
    if redis.call('SET', KEYS[3 + n + i], token, 'NX', 'PX', lock_ms) then state = 1 else state = 0 end
  end
  reply[3 + n + i] = state
end
return reply
"""

# One atomic round trip per save. When following versions, an answer from the version the
# cache follows is stored; one from a version never seen before makes the cache follow it
# (the old version is retired and its entries stop being served); one from a retired
# version is returned to its client but not stored, so a slow answer from the old model
# cannot win back the cache. A request that took single-flight locks stores an entry only
# while it still holds that entry's lock: an instance purge deletes the locks, so an answer
# computed before the purge is not stored after it. With admission (admit > 1) an entry is
# stored only once its instance has missed that many times within the window; until then
# it is handed off (kept briefly) for requests waiting on this computation. The locks are
# released last. A model's keys share a hash tag, so this works on a cluster.
#   KEYS: version, retired, generation keys to create,
#         (entry, admission, lock, handoff) per entry, further locks to release
#   ARGV: tag, follow, #generations, #entries, admit, admission window, lock token,
#         handoff ms, generation tokens, (value, ttl) per entry
SAVE_SCRIPT = """
local tag, follow = ARGV[1], ARGV[2]
local ngen, nent, admit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, token, handoff_ms = ARGV[6], ARGV[7], ARGV[8]
local function owned(key)
  return token ~= '' and redis.call('GET', key) == token
end
local function release()
  for i = 1, nent do
    local lock = KEYS[2 + ngen + 4 * (i - 1) + 3]
    if owned(lock) then redis.call('DEL', lock) end
  end
  for i = 3 + ngen + 4 * nent, #KEYS do
    if owned(KEYS[i]) then redis.call('DEL', KEYS[i]) end
  end
end
local current = redis.call('GET', KEYS[1]) or ''
local status = 'stored'
if follow == '1' and current ~= tag then
  if tag == '' or redis.call('SISMEMBER', KEYS[2], tag) == 1 then
    release()
    return {'superseded', current, 0}
  end
  if current ~= '' then redis.call('SADD', KEYS[2], current) end
  redis.call('SET', KEYS[1], tag)
  status = 'advanced'
end
-- Publish the generation tokens this request made up for missing keys. If another request
-- published its own first, this request's entries carry a generation nobody will read:
-- store nothing rather than write entries that can never be served.
local generation_ok = true
for i = 1, ngen do
  redis.call('SET', KEYS[2 + i], ARGV[8 + i], 'NX')
  if redis.call('GET', KEYS[2 + i]) ~= ARGV[8 + i] then generation_ok = false end
end
local stored = 0
for i = 1, (generation_ok and nent or 0) do
  local base = 2 + ngen + 4 * (i - 1)
  local entry, admission, lock, handoff = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
  local value, ttl = ARGV[8 + ngen + 2 * i - 1], ARGV[8 + ngen + 2 * i]
  if token == '' or owned(lock) then
    local admitted = true
    if admit > 1 then
      local seen = redis.call('INCR', admission)
      if seen == 1 then redis.call('EXPIRE', admission, window) end
      admitted = seen >= admit
      if admitted then redis.call('DEL', admission) end
    end
    if admitted then
      redis.call('SET', entry, value, 'EX', ttl)
      stored = stored + 1
    else
      redis.call('SET', handoff, value, 'PX', handoff_ms)
    end
  end
end
release()
return {status, current, stored}
"""


# Delete a lock only while it still holds the caller's token.
UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Take a job lock that nobody holds, or whose holder's token starts with ARGV[3] (when given):
# the same task delivered again, whose first delivery died holding it.
JOB_LOCK_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and (ARGV[3] == '' or string.sub(holder, 1, #ARGV[3]) ~= ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Lease up to ARGV[3] tokens from an API key's token bucket (capacity ARGV[1], refilled at
# ARGV[1] per ARGV[2] ms), by Redis's clock, which every process shares: the rule of
# caching.core.ratelimit.take. The bucket is a hash of its tokens and when they were counted,
# kept until it would be full again (an absent bucket is a full one).
#   KEYS: the bucket      ARGV: count, period ms, want
#   Returns: tokens granted, ms until the bucket holds a token again (0 when some were granted)
LEASE_SCRIPT = """
local count, period_ms, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = count, now end
if now > at then tokens = tokens + (now - at) * count / period_ms end
tokens = math.min(tokens, count)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted == 0 then wait = math.ceil((1 - tokens) * period_ms / count) end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', math.max(now, at))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((count - tokens) * period_ms / count)))
return {granted, wait}
"""
