//! A test's runs as the client saw them and the verdict on each: what the
//! client produces and the report reads. A leaf module, so the report never
//! depends on the client that drives the test.

use crate::event::clock::{Nanos, WallAnchor};
use crate::problem::Problem;
use std::num::NonZeroU64;
use std::sync::Arc;
use uuid::Uuid;

/// What each run sends.
#[derive(Debug, Clone)]
pub enum BodyPlan {
    /// The same bytes every run (`-d` or the group's `data`).
    Fixed(Vec<u8>),
    /// A fresh UUID v4 per run, so a mixed-up delivery shows.
    Uuid,
    /// Each run's own bytes, by run index: the runs of several shards
    /// merged, as they uploaded them.
    PerRun(Vec<Arc<[u8]>>),
}

impl BodyPlan {
    /// The body run `index` carried (`uuid` holds a UUID's text).
    pub fn bytes<'a>(&'a self, index: usize, run: &ClientRun, uuid: &'a mut [u8; 36]) -> &'a [u8] {
        match (self, run.body_uuid) {
            (BodyPlan::Fixed(bytes), _) => bytes,
            (BodyPlan::PerRun(bodies), _) => bodies.get(index).map_or(&[], |b| b),
            (BodyPlan::Uuid, Some(id)) => id.hyphenated().encode_lower(uuid).as_bytes(),
            (BodyPlan::Uuid, None) => b"",
        }
    }
}

/// A run's failure as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub problem: Problem,
    pub detail: Box<str>,
}

/// One run as the client saw it. Instants are monotonic; 0 means "never".
/// When it was due follows from its position: [`DriverOutcome::due`].
/// Kept small (64 bytes): a million-run test holds a million of these.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub start: Nanos,
    pub end: Nanos,
    /// TCP connect time, when this run opened its connection.
    pub connect_ns: Option<NonZeroU64>,
    /// TLS handshake time, when this run opened a TLS connection. The run's
    /// `start` is then the moment the handshake ended and the request left.
    pub tls_ns: Option<NonZeroU64>,
    pub status: u16,
    /// Through a proxy, when this run opened a connection: the TCP connect
    /// to the proxy plus, for https, the `CONNECT` exchange (until the
    /// proxy's 2xx arrived). Kept in 32 bits so the run stays 64 bytes.
    pub proxy_connect_ns: Option<Nanos32>,
    /// The UUID sent as the body under [`BodyPlan::Uuid`].
    pub body_uuid: Option<Uuid>,
    pub failure: Option<Box<Failure>>,
}

/// A duration in 32 bits: exact to the nanosecond up to 2^31 ns (2.1 s),
/// to the microsecond above that, up to 2^31 us (35 minutes, past which it
/// stays at 35 minutes). Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nanos32(std::num::NonZeroU32);

impl Nanos32 {
    const MICROS: u32 = 1 << 31;

    /// None for zero.
    pub fn new(ns: u64) -> Option<Nanos32> {
        let raw = if ns < u64::from(Self::MICROS) {
            ns as u32
        } else {
            Self::MICROS | (ns / 1_000).min(u64::from(Self::MICROS - 1)) as u32
        };
        std::num::NonZeroU32::new(raw).map(Nanos32)
    }

    pub fn get(self) -> u64 {
        let raw = self.0.get();
        if raw & Self::MICROS == 0 {
            u64::from(raw)
        } else {
            u64::from(raw & !Self::MICROS) * 1_000
        }
    }
}

/// Which run count each of a test's client runs carries, and when it was due.
#[derive(Debug, Clone)]
pub enum Numbering {
    /// Run index `i` carries count `first + i * stride` and was due at
    /// `started + i * client_delay`: one client (1, 1) or shard I of N
    /// (I + 1, N).
    Stride { first: u64, stride: u64 },
    /// The runs of several shards merged, in count order (a count two
    /// shards sent comes twice).
    Listed(Vec<ListedRun>),
}

impl Numbering {
    /// One client sending every run.
    pub const ALL: Numbering = Numbering::Stride {
        first: 1,
        stride: 1,
    };
}

/// One run of a merged test: its count, when it was due and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedRun {
    pub count: u64,
    pub due: Nanos,
    pub shard: u32,
}

pub struct DriverOutcome {
    /// The runs sent, in order (`numbering` says each one's count); runs
    /// never sent (interrupted) are absent.
    pub runs: Vec<ClientRun>,
    pub started: Nanos,
    pub finished: Nanos,
    /// The pace: run `n` was due at `started + (n - 1) * client_delay`.
    pub client_delay: Nanos,
    pub anchor: WallAnchor,
    pub interrupted: bool,
    pub connections_opened: u64,
    pub numbering: Numbering,
    /// What the first TLS session agreed to (https only).
    pub tls: Option<crate::tls::Negotiated>,
}

impl DriverOutcome {
    /// When the run at `index` was due to leave.
    pub fn due(&self, index: usize) -> Nanos {
        match &self.numbering {
            Numbering::Stride { .. } => self.started + index as u64 * self.client_delay,
            Numbering::Listed(runs) => runs.get(index).map_or(0, |r| r.due),
        }
    }

    /// The run count of the run at `index`.
    pub fn count(&self, index: usize) -> u64 {
        match &self.numbering {
            Numbering::Stride { first, stride } => first + index as u64 * stride,
            Numbering::Listed(runs) => runs.get(index).map_or(0, |r| r.count),
        }
    }

    /// Whether a server record of `count` is this test's to verify: every
    /// count for one client or merged shards; for a shard, its own counts
    /// (the others' records are theirs).
    pub fn owns(&self, count: u64) -> bool {
        match self.numbering {
            Numbering::Stride { first, stride } if stride > 1 => {
                count >= first && (count - first) % stride == 0
            }
            _ => true,
        }
    }

    /// How many of a group's `run_count` runs this test was to send.
    pub fn covers(&self, run_count: u64) -> u64 {
        match self.numbering {
            Numbering::Stride { first, stride } if first <= run_count => {
                (run_count - first) / stride.max(1) + 1
            }
            Numbering::Stride { .. } => 0,
            Numbering::Listed(_) => run_count,
        }
    }

    /// Whether every count from 1 to the group's `run_count` is expected
    /// among the runs (merged shards): a count none carries is missing.
    pub fn expects_every_count(&self) -> bool {
        matches!(self.numbering, Numbering::Listed(_))
    }

    /// Whether the run at `index` repeats the count of the one before it
    /// (a count two shards sent): not a run of its own in the counts.
    pub fn is_repeat(&self, index: usize) -> bool {
        index > 0 && self.count(index) == self.count(index - 1)
    }
}

#[cfg(test)]
#[test]
fn nanos32_is_exact_below_two_seconds_and_to_the_microsecond_above() {
    assert_eq!(Nanos32::new(0), None);
    for ns in [1, 999, 2_147_483_647] {
        assert_eq!(Nanos32::new(ns).map(Nanos32::get), Some(ns));
    }
    assert_eq!(Nanos32::new(2_147_483_648).unwrap().get(), 2_147_483_000);
    assert_eq!(Nanos32::new(30_000_000_123).unwrap().get(), 30_000_000_000);
    assert_eq!(Nanos32::new(u64::MAX).unwrap().get(), 2_147_483_647_000);
    assert_eq!(std::mem::size_of::<Option<Nanos32>>(), 4);
}

/// The verdict on one run, 24 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVerdict {
    pub run_count: u64,
    /// The server record it was matched with (the first, if several).
    pub server_index: Option<u32>,
    /// A thin pointer (8 bytes, where a boxed slice is 16): most verdicts
    /// have no problem, and a million-run test holds a million verdicts.
    #[allow(clippy::box_collection)]
    problems: Option<Box<Vec<(Problem, String)>>>,
}

impl RunVerdict {
    pub fn new(
        run_count: u64,
        server_index: Option<u32>,
        problems: Vec<(Problem, String)>,
    ) -> RunVerdict {
        RunVerdict {
            run_count,
            server_index,
            problems: (!problems.is_empty()).then(|| Box::new(problems)),
        }
    }

    pub fn problems(&self) -> &[(Problem, String)] {
        self.problems.as_deref().map_or(&[], Vec::as_slice)
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_none()
    }

    /// A server record of a run this client never sent.
    pub fn is_unexpected(&self) -> bool {
        self.problems()
            .iter()
            .any(|(p, _)| *p == Problem::Unexpected)
    }
}
