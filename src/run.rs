//! A test's runs as the client saw them and the verdict on each: what the
//! client produces and the report reads. A leaf module, so the report never
//! depends on the client that drives the test.

use crate::event::clock::{Nanos, WallAnchor};
use crate::problem::Problem;
use std::num::NonZeroU64;
use uuid::Uuid;

/// What each run sends.
#[derive(Debug, Clone)]
pub enum BodyPlan {
    /// The same bytes every run (`-d` or the group's `data`).
    Fixed(Vec<u8>),
    /// A fresh UUID v4 per run, so a mixed-up delivery shows.
    Uuid,
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
    /// The UUID sent as the body under [`BodyPlan::Uuid`].
    pub body_uuid: Option<Uuid>,
    pub failure: Option<Box<Failure>>,
}

pub struct DriverOutcome {
    /// Index `n - 1` holds run `n`; runs never sent (interrupted) are absent.
    pub runs: Vec<ClientRun>,
    pub started: Nanos,
    pub finished: Nanos,
    /// The pace: run `n` was due at `started + (n - 1) * client_delay`.
    pub client_delay: Nanos,
    pub anchor: WallAnchor,
    pub interrupted: bool,
    pub connections_opened: u64,
}

impl DriverOutcome {
    /// When run `index + 1` was due to leave.
    pub fn due(&self, index: usize) -> Nanos {
        self.started + index as u64 * self.client_delay
    }
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
