"""Every Lua script the gateway runs on Redis, beside the keys they touch (keys.py).

Each names its KEYS and ARGV in a comment. The job's own: CLAIM, MARK_STARTED,
STORE_ONCE, CANCEL; the tenants': ADMIT (quotas), RATE_COUNT (rate limits); the locks
one process holds at a time: FAIR_LOCK_RENEW (a busy model's dispatcher),
BATCH_LOCK_RENEW and BATCH_LOCK_RELEASE (the process driving a batch).
"""

from __future__ import annotations

# The scripts. Each job moves through them: CLAIM (API) -> MARK_STARTED (worker) ->
# STORE_ONCE (worker); or CANCEL (API) at any point before its result.

# Publishes a result on the job's channel (requests that follow the job), on its
# claim's reply_to (the API process that queued it) and on the reply_to its task
# message carries (the same process, unless Redis lost the claim: then the message's
# is the only one left).
_PUBLISH_RESULT = """
local function publish_result(result_key, job_key, result, carried)
  redis.call('PUBLISH', result_key, result)
  local claimed = redis.call('HGET', job_key, 'reply_to')
  if claimed then redis.call('PUBLISH', claimed, result) end
  if carried and carried ~= '' and carried ~= claimed then redis.call('PUBLISH', carried, result) end
end
"""

# Claims job_id for this request unless it is claimed already; returns the
# fingerprint of the request that claimed it first, or nil when this one did; or
# {'full', n} when n jobs wait to start already (ARGV[6], MAX_QUEUED_JOBS): the
# claim is refused. Entries older than a claim's TTL are dropped from the count.
# ARGV[7], when not empty, is the channel the job's result is also published on.
# ARGV[8], when given and not empty, is the tenant it is run for; ARGV[9] its model's queue.
# KEYS: job hash, queued set. ARGV: fingerprint, task, now, job TTL, job id, max queued, reply_to, tenant, queue.
CLAIM = """
local existing = redis.call('HGET', KEYS[1], 'fingerprint')
if existing then return existing end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
local waiting = redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return {'full', waiting} end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'task', ARGV[2], 'accepted_at', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'reply_to', ARGV[7]) end
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[8]) end
if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[9]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return false
"""

# As a job starts. KEYS: job hash, queued set, result, lease. ARGV: now, job TTL,
# job id, lease seconds, this worker's name, the message's reply_to (or ''). Answers:
#   'cancelled'  cancelled while it was queued
#   'answered'   it has a result already: published again, for a request that
#                queued it anew (one whose first publish seemed to fail, yet reached
#                the broker and ran)
#   'running'    another live worker holds its lease
#   'start'      it may run: leased to this worker, marked started, no longer queued
MARK_STARTED = (
    _PUBLISH_RESULT
    + """
if redis.call('HEXISTS', KEYS[1], 'cancelled_at') == 1 then return 'cancelled' end
local result = redis.call('GET', KEYS[3])
if result then
  redis.call('ZREM', KEYS[2], ARGV[3])
  publish_result(KEYS[3], KEYS[1], result, ARGV[6])
  return 'answered'
end
if not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'EX', ARGV[4]) then return 'running' end
redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
return 'start'
"""
)

# Stores and publishes the result ARGV[1] for ARGV[2] seconds unless a result is
# stored already; answers 1 when it stored, 0 when it kept the earlier result.
# The result stored is counted to its tenant (in the same call: a job's first
# result once, and no round trip more): KEYS[3..5] and ARGV[4..8] when given.
# KEYS: result, job hash; the day's usage, the tenant's tokens of the minute and of
# the day. ARGV: result, seconds, the message's reply_to (or ''); the usage fields'
# prefix ("{tenant}|{model}|"), the count ("jobs" or "failed"), prompt tokens,
# completion tokens, seconds the usage is kept.
STORE_ONCE = (
    _PUBLISH_RESULT
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
publish_result(KEYS[1], KEYS[2], ARGV[1], ARGV[3])
if #KEYS >= 5 then
  local prompt, completion = tonumber(ARGV[6]), tonumber(ARGV[7])
  redis.call('HINCRBY', KEYS[3], ARGV[4] .. ARGV[5], 1)
  if prompt + completion > 0 then
    redis.call('HINCRBY', KEYS[3], ARGV[4] .. 'prompt_tokens', prompt)
    redis.call('HINCRBY', KEYS[3], ARGV[4] .. 'completion_tokens', completion)
    if redis.call('INCRBY', KEYS[4], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[4], 120)
    end
    if redis.call('INCRBY', KEYS[5], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[5], 172800)
    end
  end
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[8]) end
end
return 1
"""
)

# Admits a tenant's job under its quotas, before its claim: refused ({quota, n})
# when the tokens its jobs used this minute or this UTC day reached a quota, or when
# it has as many jobs in flight as it may. Its jobs in flight are a sorted set of
# the ids admitted; one whose result is stored (answered, failed, cancelled), or older
# than a job's TTL, is no longer in flight, and is dropped when the set is full (so
# nothing need take a job out as it ends). A quota of 0 is none.
# KEYS: in-flight set, tokens of the minute, tokens of the day.
# ARGV: job id, now, jobs in flight, tokens per minute, tokens per day, the result
#       keys' prefix (`Keys.result` of ''), job TTL.
ADMIT = """
local function over(key, quota)
  local used = tonumber(redis.call('GET', key) or '0')
  return quota > 0 and used >= quota, used
end
local full, used = over(KEYS[2], tonumber(ARGV[4]))
if full then return {'tokens_per_minute', used} end
full, used = over(KEYS[3], tonumber(ARGV[5]))
if full then return {'tokens_per_day', used} end
local limit = tonumber(ARGV[3])
if limit == 0 or redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local now = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= limit then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[6] .. id) == 1 then redis.call('ZREM', KEYS[1], id) end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[7]))
  local count = redis.call('ZCARD', KEYS[1])
  if count >= limit then return {'jobs_in_flight', count} end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return false
"""

# Cancels a job unless it has a result already: marks it, takes it out of the
# queued set, stores and publishes its cancelled result (waiting requests get their
# answer at once), and names it on the cancel channel (so a worker running it
# stops). Answers "unknown", "finished" or "cancelled".
# KEYS: job hash, queued set, result, cancel channel. ARGV: now, job TTL, job id,
# the cancelled result, result TTL.
CANCEL = (
    _PUBLISH_RESULT
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
redis.call('HSET', KEYS[1], 'cancelled_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
publish_result(KEYS[3], KEYS[1], ARGV[4], '')
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 'cancelled'
"""
)

# The tenants' rate limits: counts a request in its key's window; answers the count so far.
# KEYS: the window's counter. ARGV: the window's seconds.
RATE_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# The lock of a busy model's dispatcher (api/tenancy/fair_share.py): renewed when it is
# this process's, taken when free; answers 1 when held.
# KEYS: the lock (`fair-lock:{queue}`). ARGV: this process's token, milliseconds.
FAIR_LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

# The lock of the process driving a batch (api/batches/keeper.py): held when it is this
# process's (or free); answers 1 when held. KEYS: the lock. ARGV: this process's token, seconds.
BATCH_LOCK_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# Lets a batch's lock go when it is this process's (another may hold it after a lapse).
# KEYS: the lock. ARGV: this process's token.
BATCH_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
