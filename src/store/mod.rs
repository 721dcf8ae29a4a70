//! The server's record of test groups, their runs and the shards' uploads,
//! behind one interface with two backends: [`memory`] (the default, and the
//! embedded server's) and `redis` (shared by many replicas).
//!
//! The interface is asynchronous so the loop never waits on a store. The
//! loop [`Backend::submit`]s an [`Op`] with a ticket; the answer is either
//! returned at once (the memory backend always, Redis when it can answer
//! from what it knows) or delivered later into the loop's [`Inbox`], which
//! wakes the loop through its `mio::Waker`.

pub mod memory;
pub mod redis;

use crate::wire::{GroupConfig, GroupHeader};
pub use crate::wire::{RecordedRun as Run, UpstreamOutcome};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Capacity bounds, so no client can grow the store without limit.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_groups: usize,
    /// Recorded runs across all groups (shards' uploaded runs included).
    pub max_runs: u64,
    /// Groups older than this are dropped, in nanoseconds.
    pub group_ttl: u64,
}

/// Seven days.
pub const DEFAULT_GROUP_TTL: u64 = 7 * 24 * 3600 * 1_000_000_000;

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_groups: 10_000,
            max_runs: 50_000_000,
            group_ttl: DEFAULT_GROUP_TTL,
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such group (never created, deleted, or expired).
    UnknownGroup,
    /// No such shard upload in the group.
    UnknownShard,
    /// A limit is reached (507); the message names the flag.
    Full(String),
    /// The store cannot be reached (503); the message names the store.
    Unavailable(String),
    /// The request does not fit what is held (409), e.g. a shard page that
    /// leaves a gap.
    Conflict(String),
}

/// Which list of a group a [`Op::Read`] pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunList {
    /// The runs the server recorded.
    Server,
    /// The client-side runs shard `I` uploaded.
    Shard(u32),
}

/// One client shard's upload, as the status route shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardStatus {
    pub shard: u32,
    pub shards: u32,
    pub runs: u64,
    pub complete: bool,
}

/// A group's counts, for the status route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub recorded_runs: u64,
    /// Received and not yet recorded, by every loop (and every replica).
    pub runs_in_progress: u64,
    /// Sorted by shard.
    pub shards: Vec<ShardStatus>,
}

/// A group in the list.
#[derive(Debug, Clone)]
pub struct Listed {
    pub header: Arc<GroupHeader>,
    pub recorded_runs: u64,
}

/// One page of a run list, as JSON objects joined by commas (no brackets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub json: Vec<u8>,
    /// Objects in `json`.
    pub items: usize,
    /// No object follows this page (as of the read).
    pub end: bool,
}

/// A shard's page of client-side runs, each one JSON object.
#[derive(Debug, Clone)]
pub struct ShardPage {
    pub shard: u32,
    pub shards: u32,
    /// Index of the page's first run among the shard's runs.
    pub from: u64,
    pub runs: Vec<Box<[u8]>>,
    /// The shard's last page.
    pub last: bool,
}

/// What the loop asks of the store.
#[derive(Debug)]
pub enum Op {
    /// Reply: [`Reply::Group`].
    Create {
        /// Boxed: the largest operation by far, and the rarest.
        config: Box<GroupConfig>,
        created_at: String,
        /// Wall-clock nanoseconds of the creation, for expiry.
        created_ns: i128,
    },
    /// Reply: [`Reply::List`], in creation order.
    List,
    /// Reply: [`Reply::Group`].
    Header { id: Uuid },
    /// Reply: [`Reply::Status`].
    Status { id: Uuid },
    /// Reply: [`Reply::Done`].
    Delete { id: Uuid },
    /// A run arrived: it is in progress until recorded. Reply:
    /// [`Reply::Group`] (its config says what the run does), or `Full` when
    /// no run may be recorded.
    Begin { id: Uuid },
    /// Records a run begun with [`Op::Begin`]; it is no longer in progress,
    /// recorded or refused. Reply: [`Reply::Done`] once the record is
    /// durable in the store.
    Record { id: Uuid, run: Run, body: Vec<u8> },
    /// Reply: [`Reply::Page`] of at most `max` runs from index `from`.
    Read {
        id: Uuid,
        list: RunList,
        from: u64,
        max: usize,
    },
    /// Reply: [`Reply::Appended`] with the runs the shard holds now.
    AppendShard { id: Uuid, page: ShardPage },
}

/// The store's answer to an [`Op`].
#[derive(Debug)]
pub enum Reply {
    Group(Arc<GroupHeader>),
    List(Vec<Listed>),
    Status(GroupStatus),
    Done,
    Page(Page),
    Appended { runs: u64 },
    Error(StoreError),
}

impl From<Result<Reply, StoreError>> for Reply {
    fn from(r: Result<Reply, StoreError>) -> Reply {
        r.unwrap_or_else(Reply::Error)
    }
}

/// Names an operation's answer for the loop that submitted it.
pub type Ticket = u64;

/// Where a backend delivers answers it could not give at once: one per
/// loop, waking that loop.
pub struct Inbox {
    replies: Mutex<Vec<(Ticket, Reply)>>,
    waker: Arc<mio::Waker>,
}

impl Inbox {
    pub fn new(waker: Arc<mio::Waker>) -> Arc<Inbox> {
        Arc::new(Inbox {
            replies: Mutex::new(Vec::new()),
            waker,
        })
    }

    /// Delivers answers and wakes the loop.
    pub fn deliver(&self, replies: impl IntoIterator<Item = (Ticket, Reply)>) {
        let mut queue = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        let before = queue.len();
        queue.extend(replies);
        let woke = before == 0 && !queue.is_empty();
        drop(queue);
        if woke {
            let _ = self.waker.wake();
        }
    }

    /// Takes every answer delivered so far into `out`.
    pub fn take(&self, out: &mut Vec<(Ticket, Reply)>) {
        let mut queue = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut queue);
    }
}

/// A store backend.
pub trait Backend: Send + Sync {
    /// Carries out `op`. Returns the answer when it is known now; otherwise
    /// delivers `(ticket, answer)` into `inbox` later, exactly once.
    fn submit(&self, op: Op, ticket: Ticket, inbox: &Arc<Inbox>) -> Option<Reply>;

    /// Whether the store takes writes now; the error names the store and
    /// why not (for `/readyz`).
    fn ready(&self) -> Result<(), String>;

    /// The store as a user names it, without secrets (for the log).
    fn describe(&self) -> String;
}

/// A shared backend.
pub type Store = Arc<dyn Backend>;

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
