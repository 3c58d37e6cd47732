//! The Lua scripts of the Redis transport. Keys are built inside the scripts from the global key
//! prefix (`ARGV[1]`), so message data reaches them only as arguments. Envelopes are passed along
//! as the original strings: Lua's `cjson.encode` turns empty arrays into `{}`, so an envelope is
//! only ever decoded to read fields, never re-encoded.
//!
//! Per in-flight message (`tag` = kombu's `delivery_tag`):
//! - `unacked` (hash): tag → `[envelope, exchange, routing_key]` (kombu's ack emulation);
//! - `unacked_index` (sorted set): tag → broker time of delivery or last lease renewal (seconds);
//! - `rqueue.lease` (hash): tag → `owner \n step \n envelope length \n queue`; a length of -1 means
//!   the payload was not a kombu envelope and is stored as a JSON string in `unacked`;
//! - `rqueue.owned.<owner>` (set): the tags an owner holds;
//! - `rqueue.deliveries` (hash): tag → delivery count, kept across redeliveries until ack.

/// Shared helpers prepended to every script.
const PRELUDE: &str = r#"
local prefix = ARGV[1]
local unacked = prefix .. 'unacked'
local index = prefix .. 'unacked_index'
local leases = prefix .. 'rqueue.lease'
local counts = prefix .. 'rqueue.deliveries'
local function list_key(q, step)
  if step == '0' or step == 0 then return prefix .. q end
  return prefix .. q .. '\6\22' .. step
end
local function parse_meta(meta)
  return string.match(meta, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
end
-- Whether a lease record still describes the in-flight entry: the entry must be the one rqueue
-- wrote, '[' envelope ',' exchange ',' routing key ']' with the envelope envlen bytes long (or, for
-- envlen -1, '[' JSON string ...). kombu's restore and a Celery worker's redelivery rewrite the
-- entry (as '[{...}, "...", "..."]') but leave the record behind: a stale record must neither
-- apply rqueue's visibility timeout to a Celery worker's message nor cut its entry.
local function lease_holds(meta, entry)
  if not meta or not entry then return false end
  local _, _, envlen = parse_meta(meta)
  envlen = tonumber(envlen)
  if not envlen then return false end
  if envlen < 0 then return string.sub(entry, 1, 2) == '["' end
  return string.sub(entry, 1, 2) == '[{' and string.sub(entry, 1 + envlen, 3 + envlen) == '},"'
end
local function forget(tag, meta)
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', index, tag)
  if meta then
    local holder = parse_meta(meta)
    redis.call('HDEL', leases, tag)
    if holder then redis.call('SREM', prefix .. 'rqueue.owned.' .. holder, tag) end
  end
end
"#;

/// ARGV: prefix, owner, limit, eta batch per queue, queue count, queues...
/// Returns flat `[tag, queue, envelope, deliveries]` groups.
const FETCH_BODY: &str = r#"
local owner = ARGV[2]
local limit = tonumber(ARGV[3])
local eta_batch = tonumber(ARGV[4])
local nq = tonumber(ARGV[5])
local t = redis.call('TIME')
local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local queues = {}
for i = 1, nq do queues[i] = ARGV[5 + i] end
-- (a) due ETA messages back to their list (bounded per queue and call)
for _, q in ipairs(queues) do
  local ek = prefix .. 'rqueue.eta.' .. q
  local due = redis.call('ZRANGEBYSCORE', ek, '-inf', now_ms, 'LIMIT', 0, eta_batch)
  for _, m in ipairs(due) do
    local bar = string.find(m, '|', 1, true)
    if bar then
      local step = string.match(string.sub(m, 1, bar - 1), '^(%d)')
      redis.call('LPUSH', list_key(q, step or '0'), string.sub(m, bar + 1))
    end
    redis.call('ZREM', ek, m)
  end
end
-- (b) pop in priority order: every queue's bucket 0 before any bucket 3; within a bucket one
-- message from each queue in turn (in the order given), so a long queue does not starve others
local out = {}
local got = 0
local owned = prefix .. 'rqueue.owned.' .. owner
for _, step in ipairs({'0', '3', '6', '9'}) do
  local active = queues
  while got < limit and #active > 0 do
    local still = {}
    for _, q in ipairs(active) do
      if got >= limit then break end
      local env = redis.call('RPOP', list_key(q, step))
      if env then
        still[#still + 1] = q
        got = got + 1
        -- (c) lease records
        local ok, obj = pcall(cjson.decode, env)
        local tag, ex, rk
        if ok and type(obj) == 'table' and type(obj.properties) == 'table' then
          tag = obj.properties.delivery_tag
          local di = obj.properties.delivery_info
          if type(di) == 'table' then ex = di.exchange; rk = di.routing_key end
        end
        local entry, envlen
        if type(tag) == 'string' and tag ~= '' and not string.find(tag, '\n', 1, true) then
          if type(ex) ~= 'string' then ex = '' end
          if type(rk) ~= 'string' then rk = q end
          entry = '[' .. env .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
          envlen = #env
        else
          -- not a kombu envelope: give it a tag so the worker can dead-letter it
          tag = 'rqueue-' .. t[1] .. t[2] .. '-' .. redis.call('INCR', prefix .. 'rqueue.tagseq')
          entry = '[' .. cjson.encode(env) .. ',"",' .. cjson.encode(q) .. ']'
          envlen = -1
        end
        redis.call('HSET', unacked, tag, entry)
        redis.call('ZADD', index, now_s, tag)
        redis.call('SADD', owned, tag)
        redis.call('HSET', leases, tag, owner .. '\n' .. step .. '\n' .. envlen .. '\n' .. q)
        local n = redis.call('HINCRBY', counts, tag, 1)
        out[#out + 1] = tag
        out[#out + 1] = q
        out[#out + 1] = env
        out[#out + 1] = tostring(n)
      end
    end
    active = still
  end
end
return out
"#;

/// ARGV: prefix, tags... Returns how many were in flight.
const ACK_BODY: &str = r#"
local n = 0
for i = 2, #ARGV do
  local tag = ARGV[i]
  local meta = redis.call('HGET', leases, tag)
  if redis.call('HEXISTS', unacked, tag) == 1 then n = n + 1 end
  forget(tag, meta)
  redis.call('HDEL', counts, tag)
end
return n
"#;

/// ARGV: prefix, undo ('1': undo this delivery's count, '0': keep it), tags... Deliveries back to
/// the front of their list, unchanged. Pushed last tag first so the first tag is consumed next.
const REQUEUE_BODY: &str = r#"
local n = 0
local undo = ARGV[2] == '1'
for i = #ARGV, 3, -1 do
  local tag = ARGV[i]
  local meta = redis.call('HGET', leases, tag)
  local entry = redis.call('HGET', unacked, tag)
  if meta and entry and not lease_holds(meta, entry) then
    -- restored by kombu and delivered to a Celery worker since: its message now; drop the record
    redis.call('HDEL', leases, tag)
    redis.call('SREM', prefix .. 'rqueue.owned.' .. parse_meta(meta), tag)
  elseif meta and entry then
    local _, step, envlen, q = parse_meta(meta)
    envlen = tonumber(envlen) or -1
    local env
    if envlen >= 0 then env = string.sub(entry, 2, 1 + envlen) else env = cjson.decode(entry)[1] end
    redis.call('RPUSH', list_key(q, step), env)
    forget(tag, meta)
    if undo and redis.call('HINCRBY', counts, tag, -1) <= 0 then redis.call('HDEL', counts, tag) end
    n = n + 1
  end
end
return n
"#;

/// ARGV: prefix, owner, held tags... Renews, with the broker's clock, the leases of the owner's
/// tags that the owner says it holds, and returns every tag in its owner set. A tag the owner
/// does not hold got there by a fetch whose reply never reached it (the script ran after the
/// client gave up on it); renewing it would strand the message, so the caller hands it back.
const EXTEND_BODY: &str = r#"
local t = redis.call('TIME')
local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = {}
for i = 3, #ARGV do held[ARGV[i]] = true end
local owned = redis.call('SMEMBERS', prefix .. 'rqueue.owned.' .. ARGV[2])
for _, tag in ipairs(owned) do
  if held[tag] then redis.call('ZADD', index, 'XX', now_s, tag) end
end
return owned
"#;

/// ARGV: prefix, mode, ... Reads in-flight entries for the Rust side to decide on.
/// mode `tags`: tags...; `owner`: owner; `expired`: visibility s, foreign visibility s, limit, scan.
/// Returns `[ceilings, (tag, entry, meta, deliveries)...]` with '' for missing values; in mode
/// `expired`, `ceilings` is `"<lease ceiling>,<other clients' ceiling>"` (epoch seconds), which the
/// restore script checks each entry against again.
const INSPECT_BODY: &str = r#"
local mode = ARGV[2]
local out = {''}
local function add(tag)
  out[#out + 1] = tag
  out[#out + 1] = redis.call('HGET', unacked, tag) or ''
  out[#out + 1] = redis.call('HGET', leases, tag) or ''
  out[#out + 1] = redis.call('HGET', counts, tag) or '0'
end
if mode == 'tags' then
  for i = 3, #ARGV do add(ARGV[i]) end
elseif mode == 'owner' then
  for _, tag in ipairs(redis.call('SMEMBERS', prefix .. 'rqueue.owned.' .. ARGV[3])) do add(tag) end
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  -- rqueue's leases expire after the visibility timeout; other clients' entries (kombu workers,
  -- no lease record) after theirs
  local ceil, fceil = now - tonumber(ARGV[3]), now - tonumber(ARGV[4])
  local limit, scan = tonumber(ARGV[5]), tonumber(ARGV[6])
  out[1] = string.format('%.6f,%.6f', ceil, fceil)
  local upper = string.format('%.6f', math.max(ceil, fceil))
  local offset, found = 0, 0
  while found < limit and offset < scan do
    local page = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. upper, 'WITHSCORES', 'LIMIT', offset, 100)
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local tag = page[i]
      local meta = redis.call('HGET', leases, tag)
      local leased = meta and lease_holds(meta, redis.call('HGET', unacked, tag))
      local score = tonumber(page[i + 1])
      if found < limit and ((leased and score < ceil) or (not leased and score < fceil)) then
        add(tag)
        found = found + 1
      end
    end
    offset = offset + 100
  end
end
return out
"#;

/// ARGV: prefix, ceilings from the inspect script ('' = none), owner ('' = any), then `(tag, kind, key, data)` groups;
/// kind `q` = RPUSH data to key (front of the queue), `d` = LPUSH data to key (dead letters),
/// `x` = only forget records of a message no longer in flight.
/// Acts only on entries still in flight (and still expired / still held by owner).
/// Returns `[moved, dead]`.
const RESTORE_BODY: &str = r#"
local ceil, owner = ARGV[2], ARGV[3]
local moved, dead = 0, 0
for i = 4, #ARGV, 4 do
  local tag, kind, key, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local meta = redis.call('HGET', leases, tag)
  local entry = redis.call('HGET', unacked, tag)
  local ok = entry ~= false
  if not ok then
    forget(tag, meta)
  else
    local held = lease_holds(meta, entry)
    if ceil ~= '' then
      -- still expired: against the lease ceiling when leased, else the other clients' one
      local own, foreign = string.match(ceil, '^([^,]+),([^,]+)$')
      local s = redis.call('ZSCORE', index, tag)
      ok = s and tonumber(s) < tonumber(held and own or foreign)
    end
    if ok and owner ~= '' then ok = held and parse_meta(meta) == owner end
    if ok and kind ~= 'x' then
      forget(tag, meta)
      if kind == 'q' then
        redis.call('RPUSH', key, data)
        moved = moved + 1
      else
        redis.call('LPUSH', key, data)
        redis.call('HDEL', counts, tag)
        dead = dead + 1
      end
    end
  end
end
return {moved, dead}
"#;

/// ARGV: prefix, HSCAN cursor, count. Forgets lease records (with their owner-set member and
/// delivery count) of messages no longer in flight. rqueue's own scripts drop a lease with its
/// in-flight entry, atomically; only kombu's restore and ack (a Celery worker recovering a dead
/// rqueue worker's messages) leave one behind. Returns `[next cursor, forgotten]`.
const TIDY_BODY: &str = r#"
local page = redis.call('HSCAN', leases, ARGV[2], 'COUNT', tonumber(ARGV[3]))
local fields, n = page[2], 0
for i = 1, #fields, 2 do
  local tag = fields[i]
  if redis.call('HEXISTS', unacked, tag) == 0 then
    forget(tag, fields[i + 1])
    redis.call('HDEL', counts, tag)
    n = n + 1
  end
end
return {page[1], n}
"#;

/// ARGV: prefix, dead-letter list, record, target list, envelope, tag.
const REQUEUE_DEAD_BODY: &str = r#"
if redis.call('LREM', ARGV[2], 1, ARGV[3]) == 1 then
  redis.call('LPUSH', ARGV[4], ARGV[5])
  redis.call('HDEL', counts, ARGV[6])
  return 1
end
return 0
"#;

/// The key (and pub/sub channel) prefix of a task's result, as Celery's Redis backend writes it.
/// Results never carry the broker's `global_keyprefix`: they stay where Celery's backend reads them.
pub const RESULT_KEY_PREFIX: &str = "celery-task-meta-";
/// With the pickle serializer Lua cannot read a record's status, so a SUCCESS is also marked under
/// this prefix (plus the task id).
pub const RESULT_FINAL_PREFIX: &str = "rqueue-task-final-";

/// SET + PUBLISH one result record unless the stored one is a SUCCESS (JSON via cjson, msgpack via
/// cmsgpack; the substring test skips decoding when the stored record cannot be a SUCCESS).
/// KEYS[1] result key, KEYS[2] (pickle only) SUCCESS marker; ARGV: payload, expiry in ms
/// (`''` = none), status. Returns 1 when written, 0 when a SUCCESS was already stored.
/// Shared with the Python backend (`rqueue.backends.redis`), which runs the very same text.
pub const STORE_RESULT_LUA: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and string.find(current, 'SUCCESS', 1, true) then
  local ok, meta = pcall(cjson.decode, current)
  if not ok or type(meta) ~= 'table' then
    ok, meta = pcall(cmsgpack.unpack, current)
  end
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if KEYS[2] and ARGV[3] == 'SUCCESS' then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[2], '1')
  else
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  end
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

/// Redis 7 refuses every write command of a script without flags while its memory is full
/// (`noeviction`), even after the script has popped a message: the fetch script would lose it,
/// and acks could never free memory. Scripts flagged `allow-oom` run to the end. Redis 6 knows
/// no flags (a shebang does not compile there), but checks memory only before a script's first
/// write, which in these scripts is the one that frees memory (RPOP, HDEL, LREM).
const ALLOW_OOM: &str = "#!lua flags=allow-oom\n";

fn script(body: &str, allow_oom: bool) -> redis::Script {
    let flags = if allow_oom { ALLOW_OOM } else { "" };
    redis::Script::new(&format!("{flags}{PRELUDE}{body}"))
}

/// The scripts, hashed once; invoked by SHA (loaded on first NOSCRIPT). The worker's scripts may
/// run while Redis is out of memory (see [`ALLOW_OOM`]): a full Redis must still drain, with
/// each completed task freeing its message. Producers' plain commands are refused, clearly.
pub(crate) struct Scripts {
    pub fetch: redis::Script,
    pub ack: redis::Script,
    pub requeue: redis::Script,
    pub extend: redis::Script,
    pub inspect: redis::Script,
    pub restore: redis::Script,
    pub tidy: redis::Script,
    pub requeue_dead: redis::Script,
    /// [`STORE_RESULT_LUA`], without the prelude (its keys are not prefixed).
    pub store_result: redis::Script,
}

impl Scripts {
    /// `allow_oom` needs Redis 7 or later.
    pub fn new(allow_oom: bool) -> Self {
        let flags = if allow_oom { ALLOW_OOM } else { "" };
        Scripts {
            fetch: script(FETCH_BODY, allow_oom),
            ack: script(ACK_BODY, allow_oom),
            requeue: script(REQUEUE_BODY, allow_oom),
            extend: script(EXTEND_BODY, allow_oom),
            inspect: script(INSPECT_BODY, false),
            restore: script(RESTORE_BODY, allow_oom),
            tidy: script(TIDY_BODY, allow_oom),
            requeue_dead: script(REQUEUE_DEAD_BODY, allow_oom),
            store_result: redis::Script::new(&format!("{flags}{STORE_RESULT_LUA}")),
        }
    }
}
