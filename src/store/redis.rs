//! The Redis store: groups, runs and shard uploads in one Redis shared by
//! every replica, so any replica serves any route for any group.
//!
//! The loop never waits on Redis. [`RedisStore::submit`] queues the
//! operation for a store thread and returns; the thread takes everything
//! queued, sends it as one pipeline (one round trip for a whole burst of
//! runs), and delivers each answer into its loop's [`Inbox`]. A run is
//! answered only after its record's reply, so an acknowledged run is in
//! Redis (as durable as Redis's own persistence makes it).
//!
//! Each operation is one Lua script, so its checks and writes are atomic
//! across replicas: a group's limit, a run's record and its counts cannot
//! interleave with another replica's.
//!
//! Keys, all under `conntest:`: `groups` (sorted set of ids by creation
//! time), `total` (runs held), `counts` (hash: id -> runs held), and per
//! group `{id}:header`, `{id}:runs`, `{id}:progress`, `{id}:shards` (hash:
//! shard -> `N:complete`) and `{id}:shard:{I}`. Every per-group key expires
//! with the group (`--group-ttl`); creating a group also drops expired ones
//! from the index and the counts.
//!
//! Redis down: operations answer `Unavailable` (503) at once, `/readyz`
//! says so, and the thread reconnects by itself every half second.

use super::{
    Backend, GroupStatus, Inbox, Listed, Op, Page, Reply, RunList, ShardPage, ShardStatus,
    StoreError, StoreLimits, Ticket,
};
use crate::wire::{run_json, GroupHeader};
use redis::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Operations sent in one pipeline at most.
const MAX_BATCH: usize = 512;
/// Connect and reply bound; past it the store counts as down.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pipelines sent and not yet answered, at most.
const IN_FLIGHT: usize = 2;
/// How often a down store is tried again.
const RETRY: Duration = Duration::from_millis(500);
/// Headers kept per replica before the cache starts over.
const MAX_CACHED: usize = 100_000;

/// A group's header and when it expires (Unix milliseconds).
#[derive(Clone)]
struct Known {
    header: Arc<GroupHeader>,
    expire_at_ms: i64,
}

struct Shared {
    /// As the user named the store, without the password.
    shown: String,
    limits: StoreLimits,
    up: AtomicBool,
    last_error: Mutex<String>,
    /// Group headers never change: a run on a known group needs no round
    /// trip before it starts.
    known: Mutex<HashMap<Uuid, Known>>,
}

impl Shared {
    fn unavailable(&self) -> StoreError {
        let why = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StoreError::Unavailable(format!("store {} is unavailable: {why}", self.shown))
    }

    fn known(&self, id: &Uuid) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn remember(&self, known: Known) {
        let mut cache = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(known.header.run_group_id, known);
    }

    fn forget(&self, id: &Uuid) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// What the store thread does.
enum Job {
    /// An operation whose answer goes to `inbox` under `ticket`.
    Op {
        op: Op,
        ticket: Ticket,
        inbox: Arc<Inbox>,
    },
    /// A run began on a known group: count it in progress; nobody waits.
    Begun { id: Uuid, expire_at_ms: i64 },
}

pub struct RedisStore {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
}

/// A checked store URL, not yet connected.
pub struct RedisUrl {
    client: redis::Client,
    shown: String,
}

impl RedisUrl {
    /// Checks `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://...`.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let shown = without_password(url);
        let client = redis::Client::open(url).map_err(|e| format!("--store {shown}: {e}"))?;
        Ok(RedisUrl { client, shown })
    }
}

impl RedisStore {
    /// Starts the store thread; the first connection is made there (a
    /// store down at start is reported by `/readyz` and the log, and
    /// retried).
    pub fn start(url: RedisUrl, limits: StoreLimits) -> Result<RedisStore, String> {
        let RedisUrl { client, shown } = url;
        let shared = Arc::new(Shared {
            shown,
            limits,
            up: AtomicBool::new(false),
            last_error: Mutex::new("not connected yet".to_owned()),
            known: Mutex::new(HashMap::new()),
        });
        let (jobs, queue) = mpsc::channel();
        let thread = StoreThread {
            client,
            shared: Arc::clone(&shared),
            conn: None,
            scripts: Scripts::default(),
        };
        std::thread::Builder::new()
            .name("redis-store".into())
            .spawn(move || thread.run(queue))
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        Ok(RedisStore { shared, jobs })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| self.shared.unavailable())
    }
}

impl Backend for RedisStore {
    fn submit(&self, op: Op, ticket: Ticket, inbox: &Arc<Inbox>) -> Option<Reply> {
        if !self.shared.up.load(Ordering::Relaxed) {
            return Some(Reply::Error(self.shared.unavailable()));
        }
        // A run on a known group starts at once (a group deleted meanwhile
        // refuses its record). Reads ask Redis: another replica may have
        // deleted the group.
        if let Op::Begin { id } = op {
            if let Some(known) = self.shared.known(&id) {
                let begun = Job::Begun {
                    id,
                    expire_at_ms: known.expire_at_ms,
                };
                return Some(match self.send(begun) {
                    Ok(()) => Reply::Group(known.header),
                    Err(e) => Reply::Error(e),
                });
            }
        }
        let job = Job::Op {
            op,
            ticket,
            inbox: Arc::clone(inbox),
        };
        match self.send(job) {
            Ok(()) => None,
            Err(e) => Some(Reply::Error(e)),
        }
    }

    fn ready(&self) -> Result<(), String> {
        if self.shared.up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            match self.shared.unavailable() {
                StoreError::Unavailable(why) => Err(why),
                _ => Err(format!("store {} is unavailable", self.shared.shown)),
            }
        }
    }

    fn describe(&self) -> String {
        self.shared.shown.clone()
    }
}

/// `redis://:secret@host:6379/0` as `redis://host:6379/0`.
fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// The SHA1s of the scripts loaded on the current connection.
#[derive(Default)]
struct Scripts {
    create: String,
    list: String,
    header: String,
    status: String,
    delete: String,
    begin: String,
    record: String,
    read: String,
    append: String,
}

/// Keys are built inside the scripts from the group id (one Redis, not a
/// cluster). Replies: an integer code below zero is a refusal
/// (-1 unknown group, -2 full, -3 conflict, -4 unknown shard).
mod lua {
    pub const CREATE: &str = r#"
-- ARGV: id, header, now_ms, ttl_ms, max_groups
local p = 'conntest:'
local expired = redis.call('ZRANGEBYSCORE', p..'groups', '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
for _, g in ipairs(expired) do
  local n = tonumber(redis.call('HGET', p..'counts', g) or '0')
  if n > 0 then redis.call('DECRBY', p..'total', n) end
  redis.call('HDEL', p..'counts', g)
  redis.call('ZREM', p..'groups', g)
  for _, i in ipairs(redis.call('HKEYS', p..g..':shards')) do redis.call('DEL', p..g..':shard:'..i) end
  redis.call('DEL', p..g..':header', p..g..':runs', p..g..':progress', p..g..':shards')
end
if redis.call('ZCARD', p..'groups') >= tonumber(ARGV[5]) then return -2 end
local expire_at = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('SET', p..ARGV[1]..':header', ARGV[2], 'PXAT', expire_at)
redis.call('ZADD', p..'groups', tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', p..'counts', ARGV[1], 0)
return expire_at
"#;

    pub const LIST: &str = r#"
local p = 'conntest:'
local out = {}
for _, g in ipairs(redis.call('ZRANGE', p..'groups', 0, -1)) do
  local h = redis.call('GET', p..g..':header')
  if h then
    table.insert(out, h)
    table.insert(out, tonumber(redis.call('LLEN', p..g..':runs')))
  end
end
return out
"#;

    pub const HEADER: &str = r#"
-- ARGV: id, begin ('1': a run began, count it in progress)
-- reply: {header, expire_at_ms} or -1
local k = 'conntest:'..ARGV[1]..':header'
local h = redis.call('GET', k)
if not h then return -1 end
local pexp = redis.call('PEXPIRETIME', k)
if ARGV[2] == '1' then
  redis.call('INCR', 'conntest:'..ARGV[1]..':progress')
  redis.call('PEXPIREAT', 'conntest:'..ARGV[1]..':progress', pexp)
end
return {h, pexp}
"#;

    pub const STATUS: &str = r#"
-- ARGV: id; reply: {recorded, in_progress, shard, shards, complete, runs, ...} or -1
local p = 'conntest:'..ARGV[1]
if redis.call('EXISTS', p..':header') == 0 then return -1 end
local out = {redis.call('LLEN', p..':runs'), tonumber(redis.call('GET', p..':progress') or '0')}
local shards = redis.call('HGETALL', p..':shards')
for i = 1, #shards, 2 do
  local n, complete = string.match(shards[i + 1], '^(%d+):(%d)$')
  table.insert(out, tonumber(shards[i]))
  table.insert(out, tonumber(n))
  table.insert(out, tonumber(complete))
  table.insert(out, redis.call('LLEN', p..':shard:'..shards[i]))
end
return out
"#;

    pub const DELETE: &str = r#"
-- ARGV: id
local p = 'conntest:'
local g = ARGV[1]
if redis.call('DEL', p..g..':header') == 0 then return -1 end
local n = tonumber(redis.call('HGET', p..'counts', g) or '0')
if n > 0 then redis.call('DECRBY', p..'total', n) end
redis.call('HDEL', p..'counts', g)
redis.call('ZREM', p..'groups', g)
for _, i in ipairs(redis.call('HKEYS', p..g..':shards')) do redis.call('DEL', p..g..':shard:'..i) end
redis.call('DEL', p..g..':runs', p..g..':progress', p..g..':shards')
return 1
"#;

    pub const BEGIN: &str = r#"
-- ARGV: id, count, expire_at_ms
local k = 'conntest:'..ARGV[1]..':progress'
redis.call('INCRBY', k, ARGV[2])
redis.call('PEXPIREAT', k, ARGV[3])
return 1
"#;

    pub const RECORD: &str = r#"
-- ARGV: id, max_runs, run_json...; reply: how many of the runs, in order,
-- are recorded (the rest found the store full), or -1.
-- The runs are no longer in progress either way.
local p = 'conntest:'
local g = ARGV[1]
local pexp = redis.call('PEXPIRETIME', p..g..':header')
if pexp < 0 then return -1 end
local count = #ARGV - 2
local progress = redis.call('DECRBY', p..g..':progress', count)
if progress < 0 then redis.call('SET', p..g..':progress', 0, 'PXAT', pexp) end
local room = tonumber(ARGV[2]) - tonumber(redis.call('GET', p..'total') or '0')
local n = math.max(0, math.min(count, room))
if n == 0 then return 0 end
for i = 3, 2 + n, 512 do
  redis.call('RPUSH', p..g..':runs', unpack(ARGV, i, math.min(i + 511, 2 + n)))
end
redis.call('PEXPIREAT', p..g..':runs', pexp)
redis.call('INCRBY', p..'total', n)
redis.call('HINCRBY', p..'counts', g, n)
return n
"#;

    pub const READ: &str = r#"
-- ARGV: id, list key suffix, from, max; reply: the items, or -1 / -4
local p = 'conntest:'..ARGV[1]
if redis.call('EXISTS', p..':header') == 0 then return -1 end
local key = p..':'..ARGV[2]
if ARGV[2] ~= 'runs' and redis.call('EXISTS', key) == 0 then return -4 end
local from = tonumber(ARGV[3])
return redis.call('LRANGE', key, from, from + tonumber(ARGV[4]) - 1)
"#;

    pub const APPEND: &str = r#"
-- ARGV: id, shard, shards, from, last, max_runs, run...
-- reply: runs held, or {-3, held, shards} (conflict), -1, -2
local p = 'conntest:'
local g = ARGV[1]
local pexp = redis.call('PEXPIRETIME', p..g..':header')
if pexp < 0 then return -1 end
local key = p..g..':shard:'..ARGV[2]
local held = redis.call('LLEN', key)
local meta = redis.call('HGET', p..g..':shards', ARGV[2])
local shards, complete = tonumber(ARGV[3]), 0
if meta then
  local n, c = string.match(meta, '^(%d+):(%d)$')
  shards, complete = tonumber(n), tonumber(c)
end
local count = #ARGV - 6
local from = tonumber(ARGV[4])
if from < held and from + count <= held then return held end
if shards ~= tonumber(ARGV[3]) or from ~= held then return {-3, held, shards} end
if tonumber(redis.call('GET', p..'total') or '0') + count > tonumber(ARGV[6]) then return -2 end
for i = 7, #ARGV, 512 do
  redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + 511, #ARGV)))
end
if ARGV[5] == '1' then complete = 1 end
redis.call('HSET', p..g..':shards', ARGV[2], shards..':'..complete)
redis.call('PEXPIREAT', key, pexp)
redis.call('PEXPIREAT', p..g..':shards', pexp)
redis.call('INCRBY', p..'total', count)
redis.call('HINCRBY', p..'counts', g, count)
return held + count
"#;
}

struct StoreThread {
    client: redis::Client,
    shared: Arc<Shared>,
    conn: Option<redis::Connection>,
    scripts: Scripts,
}

/// A script call of a pipeline, and who waits on its reply.
enum Call {
    One(redis::Cmd, Expect, (Arc<Inbox>, Ticket)),
    /// Runs of one group begun (nobody waits).
    Begun {
        id: Uuid,
        count: u64,
        expire_at_ms: i64,
    },
    /// Runs of one group to record, in order, with who waits on each.
    Records {
        id: Uuid,
        runs: Vec<Vec<u8>>,
        to: Vec<(Arc<Inbox>, Ticket)>,
    },
}

/// An operation as the pipeline carries it out.
enum Planned {
    One(redis::Cmd, Expect),
    /// A run to record with the batch's other runs of its group.
    Record {
        id: Uuid,
        json: Vec<u8>,
    },
}

/// How a job's reply value is read.
enum Expect {
    Create(Arc<GroupHeader>),
    List,
    Header,
    Status,
    Delete(Uuid),
    /// At most this many items.
    Read(usize),
    Append(ShardPage),
}

impl StoreThread {
    /// Sends what is queued as a pipeline while the previous one is still
    /// on its way (at most [`IN_FLIGHT`] at once), then reads the oldest
    /// one's replies: Redis works on one batch while this thread answers
    /// the last and the loops queue the next.
    fn run(mut self, queue: Receiver<Job>) {
        let mut batch = Vec::new();
        let mut in_flight: VecDeque<Vec<Call>> = VecDeque::new();
        loop {
            if self.conn.is_none() {
                self.connect();
            }
            if in_flight.is_empty() && batch.is_empty() {
                // Idle, the connection is checked (so /readyz tells a store
                // gone quiet); down, it is tried again.
                match queue.recv_timeout(RETRY) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) => {
                        self.ping();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            batch.extend(queue.try_iter().take(MAX_BATCH.saturating_sub(batch.len())));
            if !batch.is_empty() && in_flight.len() < IN_FLIGHT {
                let calls = self.plan(&mut batch);
                match self.send(&calls) {
                    Ok(()) => in_flight.push_back(calls),
                    Err(e) => {
                        self.down(&e);
                        self.fail(in_flight.drain(..).chain([calls]));
                    }
                }
                continue;
            }
            // The window is full, or nothing more is queued: read the
            // oldest batch's replies.
            if let Some(calls) = in_flight.pop_front() {
                if let Err(e) = self.receive(calls) {
                    self.down(&e);
                    self.fail(in_flight.drain(..));
                }
            }
        }
    }

    /// Answers every call of `batches` with the store's unavailability.
    fn fail(&self, batches: impl Iterator<Item = Vec<Call>>) {
        let mut replies = Vec::new();
        for calls in batches {
            for call in calls {
                self.answer(call, None, &mut replies);
            }
        }
        deliver(replies);
    }

    fn connect(&mut self) {
        let connected = self
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                self.scripts = load_scripts(&mut conn)?;
                Ok(conn)
            });
        match connected {
            Ok(conn) => {
                self.conn = Some(conn);
                if !self.shared.up.swap(true, Ordering::SeqCst) {
                    crate::info!("store {} connected", self.shared.shown);
                }
            }
            Err(e) => self.down(&e),
        }
    }

    fn ping(&mut self) {
        if let Some(conn) = &mut self.conn {
            if let Err(e) = redis::cmd("PING").query::<String>(conn) {
                self.down(&e);
            }
        }
    }

    fn down(&mut self, e: &redis::RedisError) {
        self.conn = None;
        let why = e.to_string();
        let mut last = self
            .shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let was_up = self.shared.up.swap(false, Ordering::SeqCst);
        if was_up || *last != why {
            crate::warn!(
                "store {} is unavailable: {why}; retrying every {} ms",
                self.shared.shown,
                RETRY.as_millis()
            );
        }
        *last = why;
    }

    /// The batch's script calls. A burst of runs of one group costs two:
    /// one counts the runs begun, one records the runs done.
    fn plan(&self, batch: &mut Vec<Job>) -> Vec<Call> {
        let mut calls: Vec<Call> = Vec::with_capacity(batch.len());
        let mut begun_at: HashMap<Uuid, usize> = HashMap::new();
        let mut records_at: HashMap<Uuid, usize> = HashMap::new();
        for job in batch.drain(..) {
            match job {
                Job::Begun { id, expire_at_ms } => match begun_at.get(&id) {
                    Some(&i) => {
                        if let Call::Begun { count, .. } = &mut calls[i] {
                            *count += 1;
                        }
                    }
                    None => {
                        begun_at.insert(id, calls.len());
                        calls.push(Call::Begun {
                            id,
                            count: 1,
                            expire_at_ms,
                        });
                    }
                },
                Job::Op { op, ticket, inbox } => match self.command(op) {
                    Planned::One(cmd, expect) => {
                        calls.push(Call::One(cmd, expect, (inbox, ticket)))
                    }
                    Planned::Record { id, json } => {
                        let i = *records_at.entry(id).or_insert_with(|| {
                            calls.push(Call::Records {
                                id,
                                runs: Vec::new(),
                                to: Vec::new(),
                            });
                            calls.len() - 1
                        });
                        if let Call::Records { runs, to, .. } = &mut calls[i] {
                            runs.push(json);
                            to.push((inbox, ticket));
                        }
                    }
                },
            }
        }
        // Runs begun are counted before any run is recorded: a run's start
        // is always queued before its record, so the in-progress count
        // never dips below what is really in progress.
        calls.sort_by_key(|call| !matches!(call, Call::Begun { .. }));
        calls
    }

    /// Writes the calls as one pipeline.
    fn send(&mut self, calls: &[Call]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for call in calls {
            match call {
                Call::One(cmd, ..) => {
                    pipe.add_command(cmd.clone());
                }
                Call::Begun {
                    id,
                    count,
                    expire_at_ms,
                } => {
                    evalsha(&mut pipe, &self.scripts.begin)
                        .arg(id.to_string())
                        .arg(*count)
                        .arg(*expire_at_ms);
                }
                Call::Records { id, runs, .. } => {
                    let cmd = evalsha(&mut pipe, &self.scripts.record)
                        .arg(id.to_string())
                        .arg(self.shared.limits.max_runs);
                    for run in runs {
                        cmd.arg(&run[..]);
                    }
                }
            }
        }
        let conn = self.conn.as_mut().ok_or_else(not_connected)?;
        conn.send_packed_command(&pipe.get_packed_pipeline())
    }

    /// Reads one reply per call, in order, and delivers the answers. An
    /// error reply answers its own call; a broken connection is returned
    /// (the calls not yet read are answered as unavailable).
    fn receive(&mut self, calls: Vec<Call>) -> redis::RedisResult<()> {
        let mut replies: Vec<(Arc<Inbox>, Ticket, Reply)> = Vec::with_capacity(calls.len());
        let mut broken = None;
        for call in calls {
            let value = match (&broken, self.conn.as_mut()) {
                (None, Some(conn)) => match conn.recv_response() {
                    Ok(value) => Some(value),
                    Err(e) if e.is_io_error() || e.is_unrecoverable_error() => {
                        broken = Some(e);
                        None
                    }
                    Err(e) => {
                        crate::warn!("store {}: {e}", self.shared.shown);
                        None
                    }
                },
                _ => None,
            };
            self.answer(call, value, &mut replies);
        }
        deliver(replies);
        broken.map_or(Ok(()), Err)
    }

    /// The answers to one call, given its reply (none: unavailable).
    fn answer(
        &self,
        call: Call,
        value: Option<Value>,
        replies: &mut Vec<(Arc<Inbox>, Ticket, Reply)>,
    ) {
        match call {
            Call::One(_, expect, (inbox, ticket)) => {
                let reply = match value {
                    Some(value) => self.read_reply(expect, value),
                    None => Reply::Error(self.shared.unavailable()),
                };
                replies.push((inbox, ticket, reply));
            }
            Call::Begun { .. } => {}
            Call::Records { id, to, .. } => {
                // The first `recorded` runs are in; the rest found the
                // store full (or the group gone, or the store down).
                let (recorded, refusal) = match value.as_ref().and_then(int) {
                    Some(-1) => {
                        self.shared.forget(&id);
                        (0, StoreError::UnknownGroup)
                    }
                    Some(n) if n >= 0 => (n as usize, self.full()),
                    _ => (0, self.shared.unavailable()),
                };
                for (i, (inbox, ticket)) in to.into_iter().enumerate() {
                    let reply = if i < recorded {
                        Reply::Done
                    } else {
                        Reply::Error(refusal.clone())
                    };
                    replies.push((inbox, ticket, reply));
                }
            }
        }
    }

    /// The script call that carries out `op`, and how to read its reply.
    fn command(&self, op: Op) -> Planned {
        let s = &self.scripts;
        let limits = &self.shared.limits;
        let mut cmd = redis::cmd("EVALSHA");
        let expect = match op {
            Op::Create {
                config,
                created_at,
                created_ns,
            } => {
                let id = Uuid::new_v4();
                let header = Arc::new(GroupHeader {
                    run_group_id: id,
                    created_at,
                    config: *config,
                });
                let now_ms = (created_ns / 1_000_000) as i64;
                evalsha_cmd(&mut cmd, &s.create)
                    .arg(id.to_string())
                    .arg(serde_json::to_vec(&*header).unwrap_or_default())
                    .arg(now_ms)
                    .arg((limits.group_ttl / 1_000_000).max(1))
                    .arg(limits.max_groups);
                Expect::Create(header)
            }
            Op::List => {
                evalsha_cmd(&mut cmd, &s.list);
                Expect::List
            }
            Op::Header { id } => {
                evalsha_cmd(&mut cmd, &s.header).arg(id.to_string()).arg(0);
                Expect::Header
            }
            Op::Begin { id } => {
                evalsha_cmd(&mut cmd, &s.header).arg(id.to_string()).arg(1);
                Expect::Header
            }
            Op::Status { id } => {
                evalsha_cmd(&mut cmd, &s.status).arg(id.to_string());
                Expect::Status
            }
            Op::Delete { id } => {
                evalsha_cmd(&mut cmd, &s.delete).arg(id.to_string());
                Expect::Delete(id)
            }
            Op::Record { id, mut run, body } => {
                // Recorded with the batch's other runs of the group.
                run.data = Arc::from(body);
                let json = serde_json::to_vec(&run_json(&run)).unwrap_or_default();
                return Planned::Record { id, json };
            }
            Op::Read {
                id,
                list,
                from,
                max,
            } => {
                let key = match list {
                    RunList::Server => "runs".to_owned(),
                    RunList::Shard(i) => format!("shard:{i}"),
                };
                evalsha_cmd(&mut cmd, &s.read)
                    .arg(id.to_string())
                    .arg(key)
                    .arg(from)
                    .arg(max);
                Expect::Read(max)
            }
            Op::AppendShard { id, mut page } => {
                let cmd = evalsha_cmd(&mut cmd, &s.append)
                    .arg(id.to_string())
                    .arg(page.shard)
                    .arg(page.shards)
                    .arg(page.from)
                    .arg(u8::from(page.last))
                    .arg(limits.max_runs);
                for run in std::mem::take(&mut page.runs) {
                    cmd.arg(&*run);
                }
                Expect::Append(page)
            }
        };
        Planned::One(cmd, expect)
    }

    fn read_reply(&self, expect: Expect, value: Value) -> Reply {
        let refused = match &value {
            Value::Int(code) if *code < 0 => Some(*code),
            _ => None,
        };
        let result = match (expect, refused) {
            (Expect::Delete(id), Some(-1)) => {
                self.shared.forget(&id);
                Err(StoreError::UnknownGroup)
            }
            (_, Some(-1)) => Err(StoreError::UnknownGroup),
            (_, Some(-2)) => Err(self.full()),
            (_, Some(-4)) => Err(StoreError::UnknownShard),
            (expect, _) => self.parse(expect, value),
        };
        result.into()
    }

    fn full(&self) -> StoreError {
        let l = &self.shared.limits;
        StoreError::Full(format!(
            "the store holds its limit of {} groups (--max-groups) or {} runs (--max-runs); DELETE /test-groups/ID frees room",
            l.max_groups, l.max_runs
        ))
    }

    fn parse(&self, expect: Expect, value: Value) -> Result<Reply, StoreError> {
        let bad = |what: &str| {
            StoreError::Unavailable(format!(
                "store {}: unexpected reply to {what}",
                self.shared.shown
            ))
        };
        match expect {
            Expect::Create(header) => {
                let expire_at_ms = int(&value).ok_or_else(|| bad("create"))?;
                self.shared.remember(Known {
                    header: Arc::clone(&header),
                    expire_at_ms,
                });
                Ok(Reply::Group(header))
            }
            Expect::List => {
                let items = array(value).ok_or_else(|| bad("list"))?;
                let mut groups = Vec::with_capacity(items.len() / 2);
                for pair in items.chunks(2) {
                    let [header, runs] = pair else {
                        return Err(bad("list"));
                    };
                    let header: GroupHeader = bytes(header)
                        .and_then(|b| serde_json::from_slice(b).ok())
                        .ok_or_else(|| bad("list"))?;
                    groups.push(Listed {
                        header: Arc::new(header),
                        recorded_runs: int(runs).unwrap_or(0) as u64,
                    });
                }
                Ok(Reply::List(groups))
            }
            Expect::Header => {
                let items = array(value).ok_or_else(|| bad("header"))?;
                let (Some(header), Some(expire_at_ms)) = (
                    items
                        .first()
                        .and_then(bytes)
                        .and_then(|b| serde_json::from_slice::<GroupHeader>(b).ok()),
                    items.get(1).and_then(int),
                ) else {
                    return Err(bad("header"));
                };
                let header = Arc::new(header);
                self.shared.remember(Known {
                    header: Arc::clone(&header),
                    expire_at_ms,
                });
                Ok(Reply::Group(header))
            }
            Expect::Status => {
                let items: Vec<i64> = array(value)
                    .ok_or_else(|| bad("status"))?
                    .iter()
                    .map(|v| int(v).unwrap_or(0))
                    .collect();
                let [recorded, in_progress, shards @ ..] = items.as_slice() else {
                    return Err(bad("status"));
                };
                let mut shards: Vec<ShardStatus> = shards
                    .chunks_exact(4)
                    .map(|s| ShardStatus {
                        shard: s[0] as u32,
                        shards: s[1] as u32,
                        complete: s[2] == 1,
                        runs: s[3] as u64,
                    })
                    .collect();
                shards.sort_by_key(|s| s.shard);
                Ok(Reply::Status(GroupStatus {
                    recorded_runs: *recorded as u64,
                    runs_in_progress: (*in_progress).max(0) as u64,
                    shards,
                }))
            }
            Expect::Delete(id) => {
                self.shared.forget(&id);
                Ok(Reply::Done)
            }
            Expect::Read(max) => {
                let items = array(value).ok_or_else(|| bad("read"))?;
                let mut page = Page {
                    items: items.len(),
                    end: false,
                    json: Vec::new(),
                };
                for item in &items {
                    if !page.json.is_empty() {
                        page.json.push(b',');
                    }
                    page.json
                        .extend_from_slice(bytes(item).ok_or_else(|| bad("read"))?);
                }
                page.end = items.len() < max;
                Ok(Reply::Page(page))
            }
            Expect::Append(page) => match value {
                Value::Int(held) => Ok(Reply::Appended { runs: held as u64 }),
                Value::Array(items) => {
                    let held = items.get(1).and_then(int).unwrap_or(0) as u64;
                    let shards = items.get(2).and_then(int).unwrap_or(0) as u32;
                    super::memory::check_shard_page(shards, held, &page)
                        .map(|()| Reply::Appended { runs: held })
                }
                _ => Err(bad("a shard upload")),
            },
        }
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "not connected"))
}

fn evalsha<'a>(pipe: &'a mut redis::Pipeline, sha: &str) -> &'a mut redis::Pipeline {
    pipe.cmd("EVALSHA").arg(sha).arg(0)
}

fn evalsha_cmd<'a>(cmd: &'a mut redis::Cmd, sha: &str) -> &'a mut redis::Cmd {
    cmd.arg(sha).arg(0)
}

fn load_scripts(conn: &mut redis::Connection) -> redis::RedisResult<Scripts> {
    let mut load = |source: &str| -> redis::RedisResult<String> {
        redis::cmd("SCRIPT").arg("LOAD").arg(source).query(conn)
    };
    Ok(Scripts {
        create: load(lua::CREATE)?,
        list: load(lua::LIST)?,
        header: load(lua::HEADER)?,
        status: load(lua::STATUS)?,
        delete: load(lua::DELETE)?,
        begin: load(lua::BEGIN)?,
        record: load(lua::RECORD)?,
        read: load(lua::READ)?,
        append: load(lua::APPEND)?,
    })
}

/// Delivers the answers, one lock and one wake per loop.
fn deliver(mut replies: Vec<(Arc<Inbox>, Ticket, Reply)>) {
    while let Some((inbox, _, _)) = replies.first() {
        let inbox = Arc::clone(inbox);
        let (mine, rest): (Vec<_>, Vec<_>) = replies
            .into_iter()
            .partition(|(i, _, _)| Arc::ptr_eq(i, &inbox));
        inbox.deliver(mine.into_iter().map(|(_, t, r)| (t, r)));
        replies = rest;
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            without_password("redis://:s3cret@db:6379/0"),
            "redis://db:6379/0"
        );
        assert_eq!(without_password("rediss://user:p@ss@db/2"), "rediss://db/2");
        assert_eq!(without_password("redis://db:6379/0"), "redis://db:6379/0");
    }
}
