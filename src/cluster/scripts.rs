//! The Lua scripts that change the cluster's state in Redis. Each runs
//! atomically, so ownership is decided in one place, in one order, and a
//! change and its presence event are published together.
//!
//! Keys (see `wire.rs`): `wsbeat:id:ID` = `NODE|CONN|BOUND_AT_MS`;
//! `wsbeat:ids:NODE` = the ids a node holds; `wsbeat:lease:NODE` =
//! `TOKEN|CLIENTS|CONNECTIONS|RENEWED_AT_MS` with an expiry;
//! `wsbeat:nodes` = every node that registered and was not reaped.

use redis::Script;

/// Claims an id for a connection.
/// KEYS: id key, this node's ids set.
/// ARGV: id, node, conn, bound_at_ms, `replace`|`reject`, resync `0`|`1`.
/// Returns `{status, holder node, holder conn}`; status is `bound`,
/// `replaced` (the holder was told to close: 4001, or 4002 when settling
/// reject mode after an outage, where the older connection keeps the id),
/// `rejected` (reject mode: the holder keeps it) or `lost` (settling after
/// an outage: the holder keeps it and this connection must go).
const CLAIM: &str = r"
local me = ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
local cur = redis.call('GET', KEYS[1])
local function take()
  redis.call('SET', KEYS[1], me)
  redis.call('SADD', KEYS[2], ARGV[1])
end
local function event(kind, node, rest)
  redis.call('PUBLISH', 'wsbeat:events', kind .. '\n' .. node .. '\n' .. ARGV[1] .. '\n' .. rest)
end
if not cur then
  take()
  event('online', ARGV[2], ARGV[4])
  return {'bound', '', ''}
end
if cur == me then
  return {'bound', '', ''}
end
local node, conn, at = string.match(cur, '^([^|]*)|([^|]*)|([^|]*)$')
if node == nil or tonumber(at) == nil then
  take()
  event('online', ARGV[2], ARGV[4])
  return {'bound', '', ''}
end
if node == ARGV[2] then
  -- This node's registry decided (a replacement here), or a leftover.
  take()
  if ARGV[6] == '0' then
    event('offline', node, 'replaced\n' .. ARGV[4])
    event('online', ARGV[2], ARGV[4])
  end
  return {'bound', '', ''}
end
if redis.call('EXISTS', 'wsbeat:lease:' .. node) == 0 then
  -- A dead node's id not reaped yet: it goes offline once, here.
  redis.call('SREM', 'wsbeat:ids:' .. node, ARGV[1])
  take()
  event('offline', node, 'node_lost\n' .. ARGV[4])
  event('online', ARGV[2], ARGV[4])
  return {'bound', '', ''}
end
local win
if ARGV[6] == '1' then
  -- Two nodes held it while Redis was away: replace keeps the newer
  -- connection, reject the older (ties go to the greater node id).
  local mine, theirs = tonumber(ARGV[4]), tonumber(at)
  local newer = mine > theirs or (mine == theirs and ARGV[2] > node)
  if ARGV[5] == 'replace' then win = newer else win = not newer end
else
  win = ARGV[5] == 'replace'
end
if not win then
  if ARGV[6] == '1' then return {'lost', node, conn} end
  return {'rejected', node, conn}
end
redis.call('SREM', 'wsbeat:ids:' .. node, ARGV[1])
take()
-- The holder goes as a local duplicate would: replaced (4001), or, when
-- reject mode keeps the older connection, refused (4002, reason error).
local verdict, reason = 'replaced', 'replaced'
if ARGV[5] == 'reject' then verdict, reason = 'rejected', 'error' end
event('offline', node, reason .. '\n' .. ARGV[4])
event('online', ARGV[2], ARGV[4])
redis.call('PUBLISH', 'wsbeat:to:' .. node, verdict .. '\n' .. ARGV[1] .. '\n' .. conn)
return {'replaced', node, conn}
";

/// Lets go of an id if, and only if, this connection still holds it.
/// KEYS: id key, this node's ids set. ARGV: id, node, conn, reason, at_ms.
/// Returns 1 when released (and the offline event published).
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
local mine = ARGV[2] .. '|' .. ARGV[3] .. '|'
if cur and string.sub(cur, 1, #mine) == mine then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('PUBLISH', 'wsbeat:events', 'offline\n' .. ARGV[2] .. '\n' .. ARGV[1] .. '\n' .. ARGV[4] .. '\n' .. ARGV[5])
  return 1
end
return 0
";

/// Lets go of ids this node no longer holds at all (found after an
/// outage). KEYS: this node's ids set. ARGV: node, reason, at_ms, ids...
const RELEASE_STALE: &str = r"
local n = 0
for i = 4, #ARGV do
  local k = 'wsbeat:id:' .. ARGV[i]
  local cur = redis.call('GET', k)
  redis.call('SREM', KEYS[1], ARGV[i])
  if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
    redis.call('DEL', k)
    redis.call('PUBLISH', 'wsbeat:events', 'offline\n' .. ARGV[1] .. '\n' .. ARGV[i] .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
    n = n + 1
  end
end
return n
";

/// Sends a message to the live node holding an id, unless that is this
/// node. KEYS: id key. ARGV: this node, message.
/// Returns `{receivers, holder}`; `{0, ''}` when no live node holds it.
const SEND: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return {0, ''} end
local node = string.match(cur, '^([^|]*)|')
if node == nil or node == ARGV[1] then return {0, ''} end
if redis.call('EXISTS', 'wsbeat:lease:' .. node) == 0 then return {0, ''} end
return {redis.call('PUBLISH', 'wsbeat:to:' .. node, ARGV[2]), node}
";

/// The live node holding an id, or ''. KEYS: id key.
const OWNER: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return '' end
local node = string.match(cur, '^([^|]*)|')
if node == nil or redis.call('EXISTS', 'wsbeat:lease:' .. node) == 0 then return '' end
return node
";

/// Registers or renews this node's lease. KEYS: lease key.
/// ARGV: token, value (starting with `token|`), lease ms, node.
/// Returns 1 renewed, 0 created (it had expired, or never existed), -1 held
/// by another instance.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', 'wsbeat:nodes', ARGV[4])
if cur then return 1 end
return 0
";

/// Takes up to a batch of a dead node's ids offline (`node_lost`), unless
/// its lease came back. ARGV: dead node, batch, at_ms.
/// Returns how many were taken from its set, or -1 when it is alive.
const REAP: &str = r"
if redis.call('EXISTS', 'wsbeat:lease:' .. ARGV[1]) == 1 then return -1 end
local ids = redis.call('SPOP', 'wsbeat:ids:' .. ARGV[1], tonumber(ARGV[2]))
local mine = ARGV[1] .. '|'
for _, id in ipairs(ids) do
  local k = 'wsbeat:id:' .. id
  local cur = redis.call('GET', k)
  if cur and string.sub(cur, 1, #mine) == mine then
    redis.call('DEL', k)
    redis.call('PUBLISH', 'wsbeat:events', 'offline\n' .. ARGV[1] .. '\n' .. id .. '\nnode_lost\n' .. ARGV[3])
  end
end
if #ids < tonumber(ARGV[2]) then
  redis.call('SREM', 'wsbeat:nodes', ARGV[1])
end
return #ids
";

/// Every registered node with its lease value (`''` when it expired):
/// `{node, value, node, value, ...}`.
const NODES: &str = r"
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', 'wsbeat:nodes')) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('GET', 'wsbeat:lease:' .. n) or ''
end
return out
";

/// A node leaving on purpose: its lease and what is left of its set go.
/// KEYS: lease key, ids set. ARGV: token, node.
const DEREGISTER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1])
  -- Ids left behind (unbinds that did not make it) are reaped as lost.
  if redis.call('SCARD', KEYS[2]) == 0 then
    redis.call('SREM', 'wsbeat:nodes', ARGV[2])
  end
  return 1
end
return 0
";

/// The scripts, hashed once per process.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

/// Every script's source, to load on a new connection (a restarted Redis
/// has none), so pipelines can use EVALSHA.
pub(super) const ALL: [&str; 9] = [
    CLAIM,
    RELEASE,
    RELEASE_STALE,
    SEND,
    OWNER,
    RENEW,
    REAP,
    NODES,
    DEREGISTER,
];

pub(super) struct Scripts {
    pub claim: Script,
    pub release: Script,
    pub release_stale: Script,
    pub send: Script,
    pub owner: Script,
    pub renew: Script,
    pub reap: Script,
    pub nodes: Script,
    pub deregister: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            release_stale: Script::new(RELEASE_STALE),
            send: Script::new(SEND),
            owner: Script::new(OWNER),
            renew: Script::new(RENEW),
            reap: Script::new(REAP),
            nodes: Script::new(NODES),
            deregister: Script::new(DEREGISTER),
        }
    }
}
