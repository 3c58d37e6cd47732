//! The Lua scripts of the Redis transport. Keys are built inside the scripts from the global key
//! prefix (`ARGV[1]`), so message data reaches them only as arguments. Envelopes are passed along
//! as the original strings: Lua's `cjson.encode` turns empty arrays into `{}`, so an envelope is
//! only ever decoded to read fields, never re-encoded.
//!
//! Per in-flight message (`tag` = kombu's `delivery_tag`):
//! - `unacked` (hash): tag → `[envelope, exchange, routing_key]` (kombu's ack emulation);
//! - `unacked_index` (sorted set): tag → broker time of delivery or last lease renewal (seconds),
//!   plus one member that is no tag, [`INDEX_KEEPER`] (see there);
//! - `rqueue.lease` (hash): tag → `owner \n step \n envelope length \n queue`; a length of -1 means
//!   the payload was not a kombu envelope and is stored as a JSON string in `unacked`;
//! - `rqueue.owned.<owner>` (set): the tags an owner holds;
//! - `rqueue.deliveries` (hash): tag → deliveries that ended without an ack (a rejection, a
//!   lease that expired, a dead owner), kept across redeliveries until ack. Written only on those
//!   rare paths: a fetch reads it (this delivery is one more), an ack deletes it.
//!
//! Every record kind is written with one multi-field command per batch, never one per message.

/// A member of `unacked_index` that is no delivery tag: longer than Redis's
/// `zset-max-listpack-value` (64 bytes), so the index is kept as a skip list. As a small listpack
/// (fewer than 128 members: a worker's few in-flight messages) each member a batch adds costs
/// ~9 µs of Redis CPU (a linear search and a reallocation per member), as a skip list ~0.3 µs, and
/// Redis turns a set back into a listpack only when it is emptied, which the keeper prevents.
/// Its score is +inf: kombu's restore and rqueue's sweep read only scores up to a past time.
pub const INDEX_KEEPER: &str =
    "rqueue: not a delivery tag; keeps this index a skip list, which takes batches fastest";

/// Shared helpers prepended to every script (`%s` stands for [`INDEX_KEEPER`]).
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
local KEEPER = '%s'
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
-- The delivery tag of a kombu envelope. Found as text where it is unambiguous: exactly one
-- `"delivery_tag":` key in the envelope (it cannot occur inside a JSON string, whose quotes are
-- escaped) and a plain value; otherwise decoded. Decoding a large envelope costs Redis far more
-- than the fetch itself. Returns nil for a payload that is not a kombu envelope.
-- The search starts at '_', which base64 bodies never hold and JSON keys seldom do: every
-- occurrence of a search's first byte is a false start for `find`. Bytes are compared with
-- string.byte where possible: a string made per check costs more than the check.
local TAG_KEY = '_tag":'
local QUOTE, SPACE, BACKSLASH = 34, 32, 92
local function find_tag_key(env, init)
  local s, e = string.find(env, TAG_KEY, init, true)
  while s and not (string.sub(env, s - 9, s - 1) == '"delivery' and string.byte(env, s - 10) ~= BACKSLASH) do
    s, e = string.find(env, TAG_KEY, e, true)
  end
  return s, e
end
local function tag_of(env)
  local s, e = find_tag_key(env, 1)
  if s and not find_tag_key(env, e) then
    local open = e + 1
    if string.byte(env, open) == SPACE then open = open + 1 end
    local close = string.byte(env, open) == QUOTE and string.find(env, '"', open + 1, true)
    if close and close > open + 1 then
      local tag = string.sub(env, open + 1, close - 1)
      if not string.find(tag, '\\', 1, true) and not string.find(tag, '\n', 1, true) then
        return tag
      end
    end
  end
  local ok, obj = pcall(cjson.decode, env)
  if ok and type(obj) == 'table' and type(obj.properties) == 'table' then
    local tag = obj.properties.delivery_tag
    if type(tag) == 'string' and tag ~= '' and not string.find(tag, '\n', 1, true) then return tag end
  end
  return nil
end
-- Lua's unpack takes a bounded number of values; batches are not: CHUNK groups per command.
local CHUNK = 500
local function bulk(cmd, key, args, width)
  local n, step = 0, CHUNK * width
  for i = 1, #args, step do
    n = n + redis.call(cmd, key, unpack(args, i, math.min(#args, i + step - 1)))
  end
  return n
end
local function bulk_read(cmd, key, args)
  local out = {}
  for i = 1, #args, CHUNK do
    for _, v in ipairs(redis.call(cmd, key, unpack(args, i, math.min(#args, i + CHUNK - 1)))) do
      out[#out + 1] = v
    end
  end
  return out
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

/// ARGV: prefix, owner, limit, eta batch per queue, multi-pop ('1': `RPOP key count`, Redis
/// 6.2+), queue count, queues... Returns flat `[tag, queue, envelope, deliveries]` groups.
/// A batch costs a fixed number of commands, whatever its size: a multi-pop per queue and bucket,
/// then one multi-field write per record kind, so the bookkeeping per task falls with the batch.
const FETCH_BODY: &str = r#"
local owner = ARGV[2]
local limit = tonumber(ARGV[3])
local eta_batch = tonumber(ARGV[4])
local multi_pop = ARGV[5] == '1'
local nq = tonumber(ARGV[6])
local t = redis.call('TIME')
local now_s = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stamp = string.format('%.6f', now_s) -- formatted once: not once per message by redis.call
local queues = {}
for i = 1, nq do queues[i] = ARGV[6 + i] end
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
-- (b) pop in priority order: every queue's bucket 0 before any bucket 3; within a bucket an
-- equal share from each queue in turn (in the order given), so a long queue does not starve others
local from, steps, envs_, n = {}, {}, {}, 0
local got = 0
for _, step in ipairs({'0', '3', '6', '9'}) do
  local active = queues
  while got < limit and #active > 0 do
    local still = {}
    local share = math.ceil((limit - got) / #active)
    for _, q in ipairs(active) do
      local want = math.min(share, limit - got)
      if want <= 0 then break end
      local envs
      if multi_pop then
        envs = redis.call('RPOP', list_key(q, step), want)
      else
        local env = redis.call('RPOP', list_key(q, step))
        envs = env and {env}
        want = 1
      end
      if envs then
        for _, env in ipairs(envs) do
          n = n + 1
          from[n], steps[n], envs_[n] = q, step, env
        end
        got = got + #envs
        if #envs == want then still[#still + 1] = q end
      end
    end
    active = still
  end
end
if got == 0 then return {} end
-- (c) lease records, one write per kind for the whole batch
local tags, entries, stamps, metas = {}, {}, {}, {}
local quoted = {}
for i = 1, n do
  local q, step, env = from[i], steps[i], envs_[i]
  local tag = tag_of(env)
  local entry, envlen
  quoted[q] = quoted[q] or cjson.encode(q)
  if tag then
    -- kombu's entry is [envelope, exchange, routing key]; the anonymous exchange with the queue
    -- as routing key sends a kombu restore straight back to the queue it was taken from
    entry = '[' .. env .. ',"",' .. quoted[q] .. ']'
    envlen = #env
  else
    -- not a kombu envelope: give it a tag so the worker can dead-letter it
    tag = 'rqueue-' .. t[1] .. t[2] .. '-' .. redis.call('INCR', prefix .. 'rqueue.tagseq')
    entry = '[' .. cjson.encode(env) .. ',"",' .. quoted[q] .. ']'
    envlen = -1
  end
  tags[i] = tag
  entries[#entries + 1] = tag
  entries[#entries + 1] = entry
  stamps[#stamps + 1] = stamp
  stamps[#stamps + 1] = tag
  metas[#metas + 1] = tag
  metas[#metas + 1] = owner .. '\n' .. step .. '\n' .. envlen .. '\n' .. q
end
local before = bulk_read('HMGET', counts, tags)
bulk('HSET', unacked, entries, 2)
stamps[#stamps + 1] = 'inf'
stamps[#stamps + 1] = KEEPER
bulk('ZADD', index, stamps, 2)
bulk('SADD', prefix .. 'rqueue.owned.' .. owner, tags, 1)
bulk('HSET', leases, metas, 2)
local out = {}
for i, tag in ipairs(tags) do
  out[#out + 1] = tag
  out[#out + 1] = from[i]
  out[#out + 1] = envs_[i]
  out[#out + 1] = before[i] and tostring(tonumber(before[i]) + 1) or '1'
end
return out
"#;

/// ARGV: prefix, tags... Returns how many were in flight. One multi-key command per record kind
/// (and per owner set) for the whole batch.
const ACK_BODY: &str = r#"
local tags = {}
for i = 2, #ARGV do tags[#tags + 1] = ARGV[i] end
local metas = bulk_read('HMGET', leases, tags)
local by_owner = {}
for i, meta in ipairs(metas) do
  local holder = meta and string.sub(meta, 1, (string.find(meta, '\n', 1, true) or 0) - 1)
  if holder then
    by_owner[holder] = by_owner[holder] or {}
    table.insert(by_owner[holder], tags[i])
  end
end
local n = bulk('HDEL', unacked, tags, 1)
bulk('ZREM', index, tags, 1)
bulk('HDEL', leases, tags, 1)
bulk('HDEL', counts, tags, 1)
for holder, held in pairs(by_owner) do bulk('SREM', prefix .. 'rqueue.owned.' .. holder, held, 1) end
return n
"#;

/// ARGV: prefix, undo ('1': this delivery does not count, '0': it counts), tags... Deliveries back
/// to the front of their list, unchanged. Pushed last tag first so the first tag is consumed next.
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
    if not undo then redis.call('HINCRBY', counts, tag, 1) end
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
local stamp = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local held = {}
for i = 3, #ARGV do held[ARGV[i]] = true end
local owned = redis.call('SMEMBERS', prefix .. 'rqueue.owned.' .. ARGV[2])
local stamps = {}
for _, tag in ipairs(owned) do
  if held[tag] then
    stamps[#stamps + 1] = stamp
    stamps[#stamps + 1] = tag
  end
end
for i = 1, #stamps, 2 * CHUNK do
  redis.call('ZADD', index, 'XX', unpack(stamps, i, math.min(#stamps, i + 2 * CHUNK - 1)))
end
return owned
"#;

/// ARGV: prefix, mode, ... Reads in-flight entries for the Rust side to decide on.
/// mode `tags`: tags...; `owner`: owner; `expired`: visibility s, foreign visibility s, limit, scan.
/// Returns `[ceilings, (tag, entry, meta, deliveries)...]` with '' for missing values, deliveries
/// counting the one in flight when rqueue leased it (kombu's deliveries are not counted); in mode
/// `expired`, `ceilings` is `"<lease ceiling>,<other clients' ceiling>"` (epoch seconds), which the
/// restore script checks each entry against again.
const INSPECT_BODY: &str = r#"
local mode = ARGV[2]
local out = {''}
local function add(tag)
  local entry = redis.call('HGET', unacked, tag)
  local meta = redis.call('HGET', leases, tag)
  local n = tonumber(redis.call('HGET', counts, tag)) or 0
  if lease_holds(meta, entry) then n = n + 1 end
  out[#out + 1] = tag
  out[#out + 1] = entry or ''
  out[#out + 1] = meta or ''
  out[#out + 1] = tostring(n)
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
        -- the delivery that ended here counts (one by a kombu worker was never counted)
        if held then redis.call('HINCRBY', counts, tag, 1) end
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

/// SET + PUBLISH result records, each unless the stored one is a SUCCESS (JSON via cjson, msgpack
/// via cmsgpack; the substring test skips decoding when the stored record cannot be a SUCCESS).
/// KEYS: n result keys, then (pickle only: Lua cannot read a pickled status) n SUCCESS markers;
/// ARGV: expiry in ms (`''` = none), then `(payload, status)` per result. One call stores a
/// batch: a script call costs Redis more than the commands a record needs. Returns how many
/// were written (the others found a SUCCESS stored). Shared with the Python backend
/// (`rqueue.backends.redis`), which runs the very same text.
pub const STORE_RESULT_LUA: &str = r#"
local n = (#ARGV - 1) / 2
local marked = #KEYS > n
local ttl = ARGV[1]
local written = 0
for i = 1, n do
  local key, payload, status = KEYS[i], ARGV[2 * i], ARGV[2 * i + 1]
  local marker = marked and KEYS[n + i]
  local final = false
  local current = redis.call('GET', key)
  if current and string.find(current, 'SUCCESS', 1, true) then
    local ok, meta = pcall(cjson.decode, current)
    if not ok or type(meta) ~= 'table' then
      ok, meta = pcall(cmsgpack.unpack, current)
    end
    final = ok and type(meta) == 'table' and meta['status'] == 'SUCCESS'
  end
  if not final and marker then
    final = redis.call('EXISTS', marker) == 1
  end
  if not final then
    if ttl == '' then
      redis.call('SET', key, payload)
    else
      redis.call('SET', key, payload, 'PX', ttl)
    end
    if marker and status == 'SUCCESS' then
      if ttl == '' then
        redis.call('SET', marker, '1')
      else
        redis.call('SET', marker, '1', 'PX', ttl)
      end
    end
    redis.call('PUBLISH', key, payload)
    written = written + 1
  end
end
return written
"#;

/// Takes the leader lease of a periodic schedule (when free: an expired key is gone), or renews
/// it for its holder. KEYS[1] the lease key; ARGV: token, ttl ms. 1 when held now, else 0.
pub const BEAT_LEASE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Gives a lease up if the token holds it. KEYS[1] the lease key; ARGV[1] token.
pub const BEAT_RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sends one tick, fenced: only the lease holder, only a tick later than the entry's last one;
/// records the tick and pushes the message in the same script. KEYS: lease, runs hash, target
/// (the bucket list, or the ETA set; absent: only record the tick); ARGV: token, entry, tick ms,
/// payload, ETA score ('' = push to the list), ETA member prefix. 1 sent, 0 not the leader, -1
/// already sent.
pub const BEAT_SEND_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if #KEYS < 3 then
  return 1
end
if ARGV[5] == '' then
  redis.call('LPUSH', KEYS[3], ARGV[4])
else
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6] .. ARGV[4])
end
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
    let prelude = PRELUDE.replacen("%s", INDEX_KEEPER, 1);
    redis::Script::new(&format!("{flags}{prelude}{body}"))
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
    /// Periodic tasks' lease and fenced send (no prelude: they touch no message index).
    pub beat_lease: redis::Script,
    pub beat_release: redis::Script,
    pub beat_send: redis::Script,
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
            beat_lease: redis::Script::new(BEAT_LEASE_LUA),
            beat_release: redis::Script::new(BEAT_RELEASE_LUA),
            beat_send: redis::Script::new(BEAT_SEND_LUA),
        }
    }
}
