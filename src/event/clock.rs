//! Time for the event loops.
//!
//! Every state machine in conntest takes time as a plain `Nanos` value handed
//! in by its loop; only the loops read the clock. `Nanos` counts nanoseconds
//! on the monotonic clock. On Linux that is CLOCK_MONOTONIC itself, so a
//! deadline can be handed to a timerfd unchanged. A [`WallAnchor`] turns a
//! monotonic instant into wall-clock time for reports: it pairs one monotonic
//! reading with one wall reading, so every timestamp of a run is derived from
//! the same anchor and no two of them disagree about the order of events.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds on the monotonic clock.
pub type Nanos = u64;

pub const MICROSECOND: Nanos = 1_000;
pub const MILLISECOND: Nanos = 1_000_000;
pub const SECOND: Nanos = 1_000_000_000;

/// Reads the monotonic clock.
#[cfg(target_os = "linux")]
pub fn now() -> Nanos {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * SECOND + ts.tv_nsec as u64
}

/// Reads the monotonic clock (portable fallback: nanoseconds since first use).
#[cfg(not(target_os = "linux"))]
pub fn now() -> Nanos {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // Start at one second so that 0 never means "now".
    SECOND + origin.elapsed().as_nanos() as u64
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn wall_now() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A wall-clock time as the i64 of nanoseconds records hold. A host clock
/// outside 1677-09-21..2262-04-11 reads as the nearest end, never wraps.
pub fn wall_i64(wall: i128) -> i64 {
    wall.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Maps monotonic instants to wall-clock time through one paired reading.
#[derive(Debug, Clone, Copy)]
pub struct WallAnchor {
    mono: Nanos,
    wall: i128,
}

impl WallAnchor {
    /// Pairs a monotonic reading with a wall reading taken right after it.
    pub fn capture() -> Self {
        let mono = now();
        let wall = wall_now();
        WallAnchor { mono, wall }
    }

    /// An anchor with chosen values, for tests that drive time by hand.
    pub const fn fixed(mono: Nanos, wall: i128) -> Self {
        WallAnchor { mono, wall }
    }

    /// Wall-clock nanoseconds since the Unix epoch for a monotonic instant.
    pub fn wall(&self, mono: Nanos) -> i128 {
        self.wall + mono as i128 - self.mono as i128
    }
}
