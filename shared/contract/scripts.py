"""Every Lua script the gateway runs on Redis, beside the keys they touch (keys.py).

Each names its KEYS and ARGV in a comment. The job's own: CLAIM, MARK_STARTED,
STORE_ONCE, CANCEL, MARK_NOTIFIED; the tenants': ADMIT (quotas, and a project's rate
limits per model), BATCH_CHARGE (a project's batches' input tokens per model and day),
STREAM_JOIN and STREAM_LEAVE (streams read), RATE_COUNT (rate limits); RELAY_ADD (a streamed job's
pieces); the locks one process holds at a time: FAIR_LOCK_RENEW (a busy model's
dispatcher), BATCH_LOCK_RENEW and BATCH_LOCK_RELEASE (the process driving a batch); the slots of
a model's servers (tasks/model/servers.py): SERVER_TAKE, SERVER_RELEASE, SERVER_PROBES,
SERVER_RECOVERED, SERVER_RECLAIM, SERVER_RENEW.
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
# An ended job's claim is in its result (KEYS[3], when given: STORE_ONCE keeps it
# there, its fingerprint first), its hash gone.
# ARGV[7], when not empty, is the channel the job's result is also published on.
# ARGV[8], when given and not empty, is the tenant it is run for; ARGV[9] its model's queue;
# ARGV[10], when '1', marks it queued in the background (no request awaits it); ARGV[11],
# when given and not empty, its priority.
# KEYS: job hash, queued set, result. ARGV: fingerprint, task, now, job TTL, job id, max queued, reply_to, tenant,
# queue, background, priority.
CLAIM = """
local existing = redis.call('HGET', KEYS[1], 'fingerprint')
if existing then return existing end
if KEYS[3] then
  local kept = string.match(redis.call('GETRANGE', KEYS[3], 0, 255), '^{"claim":{"fingerprint":"([^"]*)"')
  if kept then return kept end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
local waiting = redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return {'full', waiting} end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'task', ARGV[2], 'accepted_at', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'reply_to', ARGV[7]) end
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'tenant', ARGV[8]) end
if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[9]) end
if ARGV[10] == '1' then redis.call('HSET', KEYS[1], 'background', '1') end
if ARGV[11] and ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'priority', ARGV[11]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return false
"""

# As a job starts. KEYS: job hash, queued set, result, lease. ARGV: now, job TTL,
# job id, lease seconds, this worker's name, the message's reply_to (or ''). Answers
# (the contract's `Start`):
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
# ARGV[4], when given and not empty, is what is published instead: the result with
# what only the requests awaiting it read (the answer's timing, contract.RUN_ONLY).
# An ended job keeps one key: its result. What GET /jobs/{id} and a resubmission of
# its job_id read of its claim (its hash's fingerprint, accepted_at, started_at,
# tenant) is kept in the result, a JSON object, as its first member `claim` (the
# fingerprint first: CLAIM reads it there), and the hash goes; the rest of the hash
# (task, reply_to, queue, background, notify) only a job not yet ended needs.
# The result stored is counted to its tenant (in the same call: a job's first
# result once, and no round trip more): KEYS[3..5] and ARGV[5..9] when given; and
# the job, ended, leaves its tenant's jobs in flight (KEYS[6], ARGV[10]) when given.
# Its lease goes too (KEYS[7], when given: a second delivery finds the result first).
# KEYS: result, job hash; the day's usage, the tenant's tokens of the minute and of
# the day, its jobs in flight; its lease; the minute's usage (KEYS[8], counted as the
# day's, when given). ARGV: result, seconds, the message's reply_to (or ''),
# the result as published (or ''); the usage fields' prefix ("{tenant}|{model}|"), the
# count ("jobs" or "failed"), prompt tokens, completion tokens, seconds the usage is
# kept; the job's id; seconds the minute's usage is kept.
# An answered job is counted by bucket too (the Administration API's usage and costs) in
# the minute's `Keys.usage_buckets` hash, KEYS[9] when given; ARGV[12..17]: its fields'
# prefix (`usage_bucket_prefix`), input tokens (cached ones among them), cached input
# tokens, output tokens, cost (nano-USD), seconds the hash is kept. The tenant's use of
# models this minute is KEYS[10] (when given, '' for a job not counted so: a batch's),
# ARGV[18] the model's prefix in it (`model_use_prefix`). The tenant's spend of the month
# is KEYS[11] (when given): an answered job's cost (ARGV[16], nano-USD, as its buckets
# have it) is added only if the key exists, made by ADMIT for a project with a spend
# limit, so a Redis that lost it is seeded from the usage history, not from 0.
STORE_ONCE = (
    _PUBLISH_RESULT
    + """
if #KEYS >= 6 then redis.call('ZREM', KEYS[6], ARGV[10]) end
if #KEYS >= 7 then redis.call('DEL', KEYS[7]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local result = ARGV[1]
local kept = {}
if string.sub(result, 1, 1) == '{' and string.sub(result, 1, 9) ~= '{"claim":' then
  local names = {'fingerprint', 'accepted_at', 'started_at', 'tenant'}
  local values = redis.call('HMGET', KEYS[2], unpack(names))
  for i, name in ipairs(names) do
    if values[i] then table.insert(kept, '"' .. name .. '":' .. cjson.encode(values[i])) end
  end
  if #kept > 0 then
    local rest = string.sub(result, 2)
    if string.match(rest, '^%s*}') == nil then rest = ',' .. rest end
    result = '{"claim":{' .. table.concat(kept, ',') .. '}' .. rest
  end
end
redis.call('SET', KEYS[1], result, 'EX', ARGV[2])
local published = ARGV[4]
if not published or published == '' then published = result end
publish_result(KEYS[1], KEYS[2], published, ARGV[3])
if #kept > 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('HDEL', KEYS[2], 'task', 'reply_to', 'queue', 'background')
end
if #KEYS >= 5 then
  local prompt, completion = tonumber(ARGV[7]), tonumber(ARGV[8])
  redis.call('HINCRBY', KEYS[3], ARGV[5] .. ARGV[6], 1)
  if prompt + completion > 0 then
    redis.call('HINCRBY', KEYS[3], ARGV[5] .. 'prompt_tokens', prompt)
    redis.call('HINCRBY', KEYS[3], ARGV[5] .. 'completion_tokens', completion)
    if redis.call('INCRBY', KEYS[4], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[4], 120)
    end
    if redis.call('INCRBY', KEYS[5], prompt + completion) == prompt + completion then
      redis.call('EXPIRE', KEYS[5], 172800)
    end
  end
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[9]) end
  if #KEYS >= 8 then
    redis.call('HINCRBY', KEYS[8], ARGV[5] .. ARGV[6], 1)
    if prompt + completion > 0 then
      redis.call('HINCRBY', KEYS[8], ARGV[5] .. 'prompt_tokens', prompt)
      redis.call('HINCRBY', KEYS[8], ARGV[5] .. 'completion_tokens', completion)
    end
    if redis.call('TTL', KEYS[8]) < 0 then redis.call('EXPIRE', KEYS[8], ARGV[11]) end
  end
  if #KEYS >= 9 and ARGV[6] == 'jobs' then
    local counts = {'requests', '1', 'input', ARGV[13], 'cached', ARGV[14], 'output', ARGV[15], 'cost', ARGV[16]}
    for i = 1, #counts, 2 do
      local n = tonumber(counts[i + 1])
      if n > 0 then redis.call('HINCRBY', KEYS[9], ARGV[12] .. counts[i], n) end
    end
    if redis.call('TTL', KEYS[9]) < 0 then redis.call('EXPIRE', KEYS[9], ARGV[17]) end
  end
  if #KEYS >= 10 and KEYS[10] ~= '' and prompt + completion > 0 then
    redis.call('HINCRBY', KEYS[10], ARGV[18] .. 'tokens', prompt + completion)
    redis.call('EXPIRE', KEYS[10], 120)
  end
  if #KEYS >= 11 and ARGV[6] == 'jobs' and tonumber(ARGV[16]) > 0 and redis.call('EXISTS', KEYS[11]) == 1 then
    redis.call('INCRBY', KEYS[11], ARGV[16])
  end
end
return 1
"""
)

# Marks a claimed job's end to be sent to webhooks (its hash's `notify`), unless the
# hash is gone: the job ended already (STORE_ONCE), and no cancellation of it follows;
# a mark would only leave a hash of its own, without a TTL. Answers 1 when marked.
# KEYS: job hash.
MARK_NOTIFIED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'notify', '1')
return 1
"""

# Admits a tenant's job under its quotas, before its claim: refused ({quota, n})
# when the tokens its jobs used this minute or this UTC day reached a quota, or when
# it has as many jobs in flight as it may. Its jobs in flight are a sorted set of
# the ids admitted; a job leaves it as it ends (STORE_ONCE, CANCEL); one whose result
# is stored, or older than a job's TTL, is dropped too when the set is full (a job
# that ended before its tenant's set was written so). A quota of 0 is none.
# With a model (ARGV[8], when given and not '': its fields' prefix, `model_use_prefix`),
# its project's rate limits on that model too: refused ({limit, n}) when the model's
# tokens this minute, or its requests admitted this minute or this UTC day, reached
# their limit; admitted, the job is one request more of the model in both windows.
# A project with a spend limit (KEYS[6], when given: its month's spend, nano-USD) is
# refused ({'spend_limit', spent}) first, once that reaches the limit (ARGV[12]); a spend
# that Redis does not hold (lost, or a new month) starts from ARGV[13], the month's spend
# as the usage history has it, for ARGV[14] seconds. With a spend limit and no model,
# KEYS[4..5] and ARGV[8..11] are '' (each check reads only its own keys).
# KEYS: in-flight set, tokens of the minute, tokens of the day; the tenant's use of
#       models this minute and this UTC day (`Keys.model_use`, with a model); the
#       month's spend (with a spend limit).
# ARGV: job id, now, jobs in flight, tokens per minute, tokens per day, the result
#       keys' prefix (`Keys.result` of ''), job TTL; with a model: its prefix, its
#       requests per minute, tokens per minute, requests per day; with a spend limit:
#       the limit, spend so far, its TTL.
ADMIT = """
if #KEYS >= 6 then
  local spent = redis.call('GET', KEYS[6])
  if not spent then
    spent = ARGV[13]
    redis.call('SET', KEYS[6], spent, 'EX', ARGV[14])
  end
  if tonumber(spent) >= tonumber(ARGV[12]) then return {'spend_limit', spent} end
end
local function over(key, quota)
  local used = tonumber(redis.call('GET', key) or '0')
  return quota > 0 and used >= quota, used
end
local full, used = over(KEYS[2], tonumber(ARGV[4]))
if full then return {'tokens_per_minute', used} end
full, used = over(KEYS[3], tonumber(ARGV[5]))
if full then return {'tokens_per_day', used} end
local model = ARGV[8]
if model == '' then model = nil end
if model then
  local minute = redis.call('HMGET', KEYS[4], model .. 'requests', model .. 'tokens')
  local requests, tokens = tonumber(minute[1] or '0'), tonumber(minute[2] or '0')
  local today = tonumber(redis.call('HGET', KEYS[5], model .. 'requests') or '0')
  local rpm, tpm, rpd = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  if tpm > 0 and tokens >= tpm then return {'max_tokens_per_1_minute', tokens} end
  if rpm > 0 and requests >= rpm then return {'max_requests_per_1_minute', requests} end
  if rpd > 0 and today >= rpd then return {'max_requests_per_1_day', today} end
end
local limit = tonumber(ARGV[3])
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
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
end
if model then
  redis.call('HINCRBY', KEYS[4], model .. 'requests', 1)
  redis.call('EXPIRE', KEYS[4], 120)
  redis.call('HINCRBY', KEYS[5], model .. 'requests', 1)
  redis.call('EXPIRE', KEYS[5], 172800)
end
return false
"""

# Charges a batch's input tokens (estimated) to its project's UTC day, per model,
# under each model's batch_1_day_max_input_tokens: all of them, or none when one
# would go past its limit (refused: {that model's prefix, its tokens used today}). A
# batch charged already (driven again after its process died) is admitted as it is.
# KEYS: the tenant's use of models this UTC day (`Keys.model_use`).
# ARGV: the batch's id, the day's TTL; then for each model: its prefix
#       (`model_use_prefix`), the batch's tokens, its limit.
BATCH_CHARGE = """
local charged = 'batch:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[1], charged) == 1 then return false end
for i = 3, #ARGV, 3 do
  local used = tonumber(redis.call('HGET', KEYS[1], ARGV[i] .. 'batch_input_tokens') or '0')
  if used + tonumber(ARGV[i + 1]) > tonumber(ARGV[i + 2]) then return {ARGV[i], used} end
end
for i = 3, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], ARGV[i] .. 'batch_input_tokens', ARGV[i + 1])
end
redis.call('HSET', KEYS[1], charged, '1')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return false
"""

# A client begins reading a job's stream: refused (the count) when its tenant reads
# as many streams as it may already, else one reader more of the job (-1). The
# tenant's streams are a sorted set of readers' tokens by when they lapse (an API
# process renews its own: those of a process gone lapse); with no limit, only the
# job's readers are counted.
# KEYS: the tenant's streams, the job's readers. ARGV: token, now ms, lapses at ms,
# limit (0: none), the readers count's TTL.
STREAM_JOIN = """
local limit = tonumber(ARGV[4])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  local reading = redis.call('ZCARD', KEYS[1])
  if reading >= limit then return reading end
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return -1
"""

# A client stopped reading a job's stream: its place among its tenant's streams is
# free, and the job has one reader fewer; a count down to none is removed (a stream
# refused, or read to its end, leaves nothing). Answers how many still read it.
# KEYS: the tenant's streams, the job's readers. ARGV: the reader's token.
STREAM_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local left = redis.call('DECR', KEYS[2])
if left <= 0 then redis.call('DEL', KEYS[2]) end
return left
"""

# Cancels a job unless it has a result already: marks it, takes it out of the
# queued set, stores and publishes its cancelled result (waiting requests get their
# answer at once), and names it on the cancel channel (so a worker running it
# stops); the job leaves its tenant's jobs in flight. Answers "unknown", "finished"
# or "cancelled".
# KEYS: job hash, queued set, result, cancel channel, the tenant's jobs in flight.
# ARGV: now, job TTL, job id, the cancelled result, result TTL.
CANCEL = (
    _PUBLISH_RESULT
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
redis.call('HSET', KEYS[1], 'cancelled_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[3]) end
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
publish_result(KEYS[3], KEYS[1], ARGV[4], '')
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 'cancelled'
"""
)

# Adds a streamed job's pieces to its stream (tasks/relay.py), all at once, each once:
# a try whose answer was lost on the way back (Redis away) is made again with the
# pieces since, and those the lost try added are not added again. Answers 1, or -1
# when the stream is not as the relay left it (Redis lost it): nothing added. The
# stream's TTL is set as it is made and again as its end is added (the relay gives a
# shorter one then: a delivered stream is kept for resumes only, STREAM_TTL).
# KEYS: the stream. ARGV: its TTL, how many entries it held before these, then each
# entry as a JSON object of its fields.
RELAY_ADD = """
local before = tonumber(ARGV[2])
local added = redis.call('XLEN', KEYS[1]) - before
if added < 0 or added > #ARGV - 2 then return -1 end
local ended = false
for i = 3 + added, #ARGV do
  local fields = {}
  for name, value in pairs(cjson.decode(ARGV[i])) do
    table.insert(fields, name)
    table.insert(fields, tostring(value))
    if name == 'end' then ended = true end
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
if before == 0 or ended then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

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

# The lock of the process driving a batch (api/openai/batches/keeper.py): held when it is this
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


# The slots of a model's servers, shared by every worker. Common to their scripts:
# KEYS[1] is the model's `servers` hash; `spec` ("name=slots,name=slots", in the
# registry's order) names the servers this worker knows, and adds those the hash
# lacks (Redis emptied, a server added) or changes their slots.
_SERVERS = """
local pool = KEYS[1]
local function f(s, name) return s .. '|' .. name end
local function load(spec)
  local flat = redis.call('HGETALL', pool)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local names = {}
  for item in string.gmatch(spec, '[^,]+') do
    local name, slots = string.match(item, '^(.*)=(%d+)$')
    slots = tonumber(slots)
    local have = tonumber(h[f(name, 'slots')])
    if not have then
      redis.call('HSET', pool, f(name, 'slots'), slots, f(name, 'free'), slots, f(name, 'state'), 'up',
                 f(name, 'fails'), 0)
      h[f(name, 'slots')], h[f(name, 'free')], h[f(name, 'state')], h[f(name, 'fails')] = slots, slots, 'up', '0'
    elseif have ~= slots then
      redis.call('HSET', pool, f(name, 'slots'), slots)
      h[f(name, 'free')] = redis.call('HINCRBY', pool, f(name, 'free'), slots - have)
      h[f(name, 'slots')] = slots
    end
    table.insert(names, name)
  end
  return names, h
end
-- A server is slow when its calls took over twice as long as the fastest's lately.
local function slow_of(names, h)
  local fastest = nil
  for _, s in ipairs(names) do
    local took = tonumber(h[f(s, 'ewma')] or '0')
    if h[f(s, 'state')] == 'up' and took > 0 and (fastest == nil or took < fastest) then fastest = took end
  end
  return function(s) return fastest ~= nil and tonumber(h[f(s, 'ewma')] or '0') > 2 * fastest end
end
-- The free slots of the healthy servers: of the fast ones, and of the slow ones.
local function free_by_class(names, h, slow)
  local fast, slowly = 0, 0
  for _, s in ipairs(names) do
    if h[f(s, 'state')] == 'up' then
      local left = math.max(0, tonumber(h[f(s, 'free')]))
      if slow(s) then slowly = slowly + left else fast = fast + left end
    end
  end
  return fast, slowly
end
-- The line for a slot. Every waiter is in `waiting` (a sorted set: its priority's band
-- of BAND, 9 first, then the time it was accepted), and in its tenant's own line,
-- `waiting .. ':' .. tenant` (the same scores). Tenants take turns by weight, as the
-- fair-share dispatcher's (start-time fair queuing): the `turns` hash holds each
-- tenant's weight (w|t) and virtual time (vt|t), and `now`, the virtual time of the last
-- turn taken. A tenant's waiters, in its own order, are at vt, vt + 1/w, vt + 2/w, ...;
-- the line is every tenant's, merged by (band, that time, tenant). A slot taken by a
-- tenant's waiter adds 1/w to its vt; a tenant that starts waiting starts at `now` (an
-- idle tenant saves no turns). With one tenant in line, its own order is the line.
local BAND = 1e13
local function line_of(waiting, t) return waiting .. ':' .. t end
local function ahead(a, b)  -- keys {band, virtual time, tenant}
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end
-- The tenants known to the line ({name, w, vt, n}: n waiters, 0 for one not waiting),
-- by name.
local function tenants_of(waiting, turns)
  local flat = redis.call('HGETALL', turns)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local list = {}
  for k, v in pairs(h) do
    local t = string.match(k, '^w|(.*)$')
    if t then
      table.insert(list, {name = t, w = tonumber(v), vt = tonumber(h['vt|' .. t] or '0'),
                          n = redis.call('ZCARD', line_of(waiting, t))})
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end
local function waiting_tenants(waiting, turns)
  local list = {}
  for _, u in ipairs(tenants_of(waiting, turns)) do
    if u.n > 0 then table.insert(list, u) end
  end
  return list
end
-- The place in line (0: first) of `waiter` of tenant `t`.
local function rank_of(waiting, turns, t, waiter)
  local list = waiting_tenants(waiting, turns)
  if #list <= 1 then return redis.call('ZRANK', waiting, waiter) end
  local j = redis.call('ZRANK', line_of(waiting, t), waiter)
  local band = math.floor(tonumber(redis.call('ZSCORE', line_of(waiting, t), waiter)) / BAND)
  local mine = nil
  for _, u in ipairs(list) do if u.name == t then mine = u end end
  local key = {band, mine.vt + j / mine.w, t}
  local rank = j
  for _, u in ipairs(list) do
    if u.name ~= t then
      local line = line_of(waiting, u.name)
      -- Its waiters of a higher priority are all ahead; of the same, those whose time is less.
      local lo = redis.call('ZCOUNT', line, '-inf', '(' .. (band * BAND))
      local hi = lo + redis.call('ZCOUNT', line, band * BAND, '(' .. ((band + 1) * BAND))
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if ahead({band, u.vt + mid / u.w, u.name}, key) then lo = mid + 1 else hi = mid end
      end
      rank = rank + lo
    end
  end
  return rank
end
-- The first `count` waiters in line (from_end: the last `count`, the last first).
local function in_line(waiting, turns, count, from_end)
  if count <= 0 then return {} end
  local list = waiting_tenants(waiting, turns)
  if #list <= 1 then
    if from_end then return redis.call('ZREVRANGE', waiting, 0, count - 1) end
    return redis.call('ZRANGE', waiting, 0, count - 1)
  end
  for _, u in ipairs(list) do
    local line = line_of(waiting, u.name)
    if from_end then
      u.items = redis.call('ZREVRANGE', line, 0, count - 1, 'WITHSCORES')
    else
      u.items = redis.call('ZRANGE', line, 0, count - 1, 'WITHSCORES')
    end
    u.at = 0
  end
  local found = {}
  while #found < count do
    local best, best_key = nil, nil
    for _, u in ipairs(list) do
      if 2 * u.at < #u.items then
        local j = from_end and (u.n - 1 - u.at) or u.at
        local key = {math.floor(tonumber(u.items[2 * u.at + 2]) / BAND), u.vt + j / u.w, u.name}
        if best == nil or (from_end and ahead(best_key, key)) or (not from_end and ahead(key, best_key)) then
          best, best_key = u, key
        end
      end
    end
    if best == nil then break end
    table.insert(found, best.items[2 * best.at + 1])
    best.at = best.at + 1
  end
  return found
end
-- Puts `waiter` of tenant `t` (weight `w`) in line at `score`, if it is not there yet.
local function join(waiting, turns, t, w, waiter, score)
  local line = line_of(waiting, t)
  if redis.call('ZADD', waiting, 'NX', score, waiter) == 0 and redis.call('ZSCORE', line, waiter) then return end
  if redis.call('ZCARD', line) == 0 then
    local now = tonumber(redis.call('HGET', turns, 'now') or '0')
    if tonumber(redis.call('HGET', turns, 'vt|' .. t) or '0') < now then
      redis.call('HSET', turns, 'vt|' .. t, string.format('%.17g', now))
    end
  end
  redis.call('ZADD', line, score, waiter)
  redis.call('HSET', turns, 'w|' .. t, math.max(0.001, tonumber(w)))
end
-- Takes `waiter` out of line; `served`: it took a slot, its tenant's turn is counted.
local function leave(waiting, turns, t, waiter, served)
  redis.call('ZREM', waiting, waiter)
  redis.call('ZREM', line_of(waiting, t), waiter)
  if served then
    local vt = tonumber(redis.call('HGET', turns, 'vt|' .. t) or '0')
    local w = tonumber(redis.call('HGET', turns, 'w|' .. t) or '1')
    if vt > tonumber(redis.call('HGET', turns, 'now') or '0') then
      redis.call('HSET', turns, 'now', string.format('%.17g', vt))
    end
    redis.call('HSET', turns, 'vt|' .. t, string.format('%.17g', vt + 1 / w))
  end
end
-- Wakes the first `first` waiters in line (for fast servers' slots) and the last `last`
-- (for slow servers' slots: see SERVER_TAKE).
local function wake(waiting, turns, prefix, first, last)
  local woken = {}
  for _, w in ipairs(in_line(waiting, turns, first, false)) do woken[w] = true end
  for _, w in ipairs(in_line(waiting, turns, last, true)) do woken[w] = true end
  for w in pairs(woken) do
    redis.call('LPUSH', prefix .. w, 1)
    redis.call('LTRIM', prefix .. w, 0, 0)
    redis.call('PEXPIRE', prefix .. w, 60000)
  end
end
local function wake_for_free(waiting, turns, prefix, names, h)
  local slow = slow_of(names, h)
  local fast, slowly = free_by_class(names, h, slow)
  wake(waiting, turns, prefix, fast, slowly)
end
"""

# Takes a slot for one job, or puts it in line. The slot is one of a healthy server
# that is not in `exclude` (",a,b,": servers that failed this job), the prefix's
# server when it has one free, else the one whose calls took least lately (its
# `ewma`, in ms), weighed by how busy it is. A fast server's slot is taken only when
# fewer waiters are ahead in line than such slots are free; a slow one's (a server
# whose calls take over twice the fastest's) only when fewer are behind: ahead and
# behind in the line of tenants' turns (above). Returns {1, server, affinity hit}, or
# {0, down_since}: down_since is when the model's last healthy server went down ('0'
# while one is up).
# KEYS: servers, holds, waiting, beats, affinity key, turns. ARGV: now ms, spec,
# waiter, score, hold id, hold expires ms, waiter's beat expires ms, exclude, affinity
# TTL (0: none), wake prefix, worker, tenant, tenant's weight.
SERVER_TAKE = (
    _SERVERS
    + """
local names, h = load(ARGV[2])
local now, exclude = tonumber(ARGV[1]), ARGV[8]
local waiting, beats = KEYS[3], KEYS[4]
local slow = slow_of(names, h)
local function usable(s)
  return s and h[f(s, 'state')] == 'up' and tonumber(h[f(s, 'free')] or '0') > 0
    and not string.find(exclude, ',' .. s .. ',', 1, true)
end
local free = {fast = 0, slow = 0}
local best, cost = {}, {}
for _, s in ipairs(names) do
  if usable(s) then
    local left, slots = tonumber(h[f(s, 'free')]), tonumber(h[f(s, 'slots')])
    local class = slow(s) and 'slow' or 'fast'
    free[class] = free[class] + left
    -- Its recent time a call, the more so the busier it is: the quickest server with
    -- room first (one not measured yet first of all), equal ones in turn.
    local c = tonumber(h[f(s, 'ewma')] or '0') * (1 + (slots - left) / slots) + (slots - left) / slots * 1e-6
    if cost[class] == nil or c < cost[class] then best[class], cost[class] = s, c end
  end
end
local turns, tenant = KEYS[6], ARGV[12]
join(waiting, turns, tenant, ARGV[13], ARGV[3], ARGV[4])
redis.call('HSET', beats, ARGV[3], ARGV[7])
if free.fast + free.slow == 0 then return {0, h['down_since'] or '0'} end
-- The first in line take the fast servers' free slots; the last in line (those that
-- waited least) the slow servers': the time a slow call adds falls on the jobs with
-- the least time spent already, and no slot is left free while a job waits.
local rank, count = rank_of(waiting, turns, tenant, ARGV[3]), redis.call('ZCARD', waiting)
local chosen = nil
if rank < free.fast then
  chosen = best.fast
elseif free.slow > 0 and rank >= count - free.slow then
  chosen = best.slow
end
if not chosen then return {0, h['down_since'] or '0'} end
local hit = 0
if ARGV[9] ~= '0' then
  local last = redis.call('GET', KEYS[5])
  if last and usable(last) and slow(last) == slow(chosen) then chosen, hit = last, 1 end
  redis.call('SET', KEYS[5], chosen, 'EX', ARGV[9])
end
local best = chosen
redis.call('HINCRBY', pool, f(best, 'free'), -1)
redis.call('HSET', KEYS[2], ARGV[5], best .. '|' .. ARGV[6] .. '|' .. ARGV[11])
leave(waiting, turns, tenant, ARGV[3], true)
redis.call('HDEL', beats, ARGV[3])
return {1, best, hit}
"""
)

# Gives a slot back. `outcome`: ok (the server answered), fail (it failed: one more
# failure in a row; at `threshold` it goes down, to be probed after `first probe`
# ms), down (it failed so that it is down at once: refused the connection), or
# none (the job was cancelled or at fault: no word on the server). Wakes the waiters
# first in line, as many as slots are free. Returns {1, server, 'down' when it went
# down now, 'last' when no server of the model is up any more}, or {0} for a hold
# that is gone (reclaimed, or Redis emptied).
# KEYS: servers, holds, waiting, turns. ARGV: hold id, outcome, now ms, threshold,
# first probe ms, wake prefix, why, spec, ms the call took (its server's `ewma`).
SERVER_RELEASE = (
    _SERVERS
    + """
local names, h = load(ARGV[8])
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return {0} end
redis.call('HDEL', KEYS[2], ARGV[1])
local s = string.match(held, '^(.*)|[^|]*|[^|]*$')
if not h[f(s, 'slots')] then return {0} end
h[f(s, 'free')] = redis.call('HINCRBY', pool, f(s, 'free'), 1)
local outcome, now = ARGV[2], tonumber(ARGV[3])
local went, last = '', ''
if outcome == 'ok' then
  redis.call('HINCRBY', pool, f(s, 'jobs'), 1)
  local took = tonumber(ARGV[9] or '')
  if took then
    local was = tonumber(h[f(s, 'ewma')] or '')
    redis.call('HSET', pool, f(s, 'ewma'), was and (0.8 * was + 0.2 * took) or took)
  end
  if h[f(s, 'fails')] ~= '0' then redis.call('HSET', pool, f(s, 'fails'), 0) end
elseif outcome == 'fail' or outcome == 'down' then
  redis.call('HINCRBY', pool, f(s, 'failures'), 1)
  local fails = redis.call('HINCRBY', pool, f(s, 'fails'), 1)
  redis.call('HSET', pool, f(s, 'why'), ARGV[7])
  if h[f(s, 'state')] == 'up' and (outcome == 'down' or fails >= tonumber(ARGV[4])) then
    redis.call('HSET', pool, f(s, 'state'), 'down', f(s, 'since'), now, f(s, 'probe_at'), now + tonumber(ARGV[5]),
               f(s, 'probe_wait'), ARGV[5])
    h[f(s, 'state')] = 'down'
    went = 'down'
    local up = false
    for _, other in ipairs(names) do
      if h[f(other, 'state')] == 'up' then up = true end
    end
    if not up and not h['down_since'] then
      redis.call('HSET', pool, 'down_since', now)
      last = 'last'
    end
  end
end
wake_for_free(KEYS[3], KEYS[4], ARGV[6], names, h)
return {1, s, went, last}
"""
)

# The down servers whose probe is due: each gets its next probe time (its wait
# doubled, at most `max wait`), so that one worker probes it at a time.
# KEYS: servers. ARGV: now ms, spec, max wait ms.
SERVER_PROBES = (
    _SERVERS
    + """
local names, h = load(ARGV[2])
local now, most = tonumber(ARGV[1]), tonumber(ARGV[3])
local due = {}
for _, s in ipairs(names) do
  if h[f(s, 'state')] == 'down' and tonumber(h[f(s, 'probe_at')] or '0') <= now then
    local wait = math.min(most, 2 * tonumber(h[f(s, 'probe_wait')] or '1000'))
    redis.call('HSET', pool, f(s, 'probe_at'), now + wait, f(s, 'probe_wait'), wait)
    table.insert(due, s)
  end
end
return due
"""
)

# A down server answered its probe: it is up again, and the waiters first in line
# are woken. Returns 1 when it was down.
# KEYS: servers, waiting, turns. ARGV: server, now ms, wake prefix, spec.
SERVER_RECOVERED = (
    _SERVERS
    + """
local names, h = load(ARGV[4])
local s = ARGV[1]
if h[f(s, 'state')] ~= 'down' then return 0 end
redis.call('HSET', pool, f(s, 'state'), 'up', f(s, 'fails'), 0, f(s, 'since'), ARGV[2])
redis.call('HDEL', pool, 'down_since')
h[f(s, 'state')] = 'up'
wake_for_free(KEYS[2], KEYS[3], ARGV[3], names, h)
return 1
"""
)

# Gives back the slots whose holder stopped renewing them (its worker died), takes
# out of the line (and their tenants') the waiters that stopped looking, and wakes
# waiters for the free slots. Returns how many slots and waiters it dropped.
# KEYS: servers, holds, waiting, beats, turns. ARGV: now ms, wake prefix, spec.
SERVER_RECLAIM = (
    _SERVERS
    + """
local names, h = load(ARGV[3])
local now, count = tonumber(ARGV[1]), 0
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local s, expires = string.match(flat[i + 1], '^(.*)|([^|]*)|[^|]*$')
  if tonumber(expires) < now then
    redis.call('HDEL', KEYS[2], flat[i])
    if h[f(s, 'slots')] then h[f(s, 'free')] = redis.call('HINCRBY', pool, f(s, 'free'), 1) end
    count = count + 1
  end
end
-- Waiters that stopped waiting (their process died) leave the line: they would hold
-- back those behind them.
local line = redis.call('ZRANGE', KEYS[3], 0, -1)
if #line > 0 then
  local beats = redis.call('HMGET', KEYS[4], unpack(line))
  local tenants = nil
  for i, w in ipairs(line) do
    if tonumber(beats[i] or '0') < now then
      tenants = tenants or tenants_of(KEYS[3], KEYS[5])
      for _, u in ipairs(tenants) do leave(KEYS[3], KEYS[5], u.name, w, false) end
      redis.call('ZREM', KEYS[3], w)
      redis.call('HDEL', KEYS[4], w)
      count = count + 1
    end
  end
end
-- A tenant's line holding a waiter the model's line lost (a key evicted) would keep
-- counting it ahead of others: such waiters leave it.
local tenants, total = tenants_of(KEYS[3], KEYS[5]), 0
for _, u in ipairs(tenants) do total = total + u.n end
if total > redis.call('ZCARD', KEYS[3]) then
  for _, u in ipairs(tenants) do
    for _, w in ipairs(redis.call('ZRANGE', line_of(KEYS[3], u.name), 0, -1)) do
      if not redis.call('ZSCORE', KEYS[3], w) then
        redis.call('ZREM', line_of(KEYS[3], u.name), w)
        count = count + 1
      end
    end
  end
end
if count > 0 then wake_for_free(KEYS[3], KEYS[5], ARGV[2], names, h) end
return count
"""
)

# Renews the holds of one worker (their ids) to a new expiry; a hold already
# reclaimed stays gone.
# KEYS: holds. ARGV: expires ms, hold ids...
SERVER_RENEW = """
for i = 2, #ARGV do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held then
    local s, worker = string.match(held, '^(.*)|[^|]*|([^|]*)$')
    redis.call('HSET', KEYS[1], ARGV[i], s .. '|' .. ARGV[1] .. '|' .. worker)
  end
end
return 1
"""
