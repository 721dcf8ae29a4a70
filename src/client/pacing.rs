//! When each run of a test starts, for both drivers (HTTP, and raw TCP and
//! UDP): run `i` is due
//! `i * client_delay` after the test's start, and starts once due and a
//! slot is free. A run not yet due arms one wake-up on the driver's wheel.

use crate::event::clock::Nanos;
use crate::event::timer::{TimerKey, TimerWheel};
use crate::ids::IdGen;
use crate::run::{BodyPlan, ClientRun};

/// What a test sends, whatever its protocol: both drivers take it.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Runs to send: the `i`-th (from 0) carries count `first_count + i *
    /// count_stride` (1 and 1 for one client; I + 1 and N for shard I of N).
    pub run_count: u64,
    pub first_count: u64,
    pub count_stride: u64,
    pub concurrency: usize,
    pub client_delay: Nanos,
    /// Each run's bound (`--timeout`).
    pub timeout: Nanos,
    pub body: BodyPlan,
    /// A progress line on stderr (a terminal).
    pub progress: bool,
    /// Go on even when every run has been refused for a while
    /// (`--keep-going`).
    pub keep_going: bool,
}

pub struct Pacing {
    /// The test's start: run 0's due time.
    pub started: Nanos,
    delay: Nanos,
    run_count: u64,
    /// The wake-up armed for the next run, until it fires.
    due_timer: Option<TimerKey>,
}

impl Pacing {
    pub fn new(started: Nanos, delay: Nanos, run_count: u64) -> Pacing {
        Pacing {
            started,
            delay,
            run_count,
            due_timer: None,
        }
    }

    /// Whether run `index` (as many have started) may start at `now`:
    /// false once all have, or while it is not due (`due` is then armed on
    /// `wheel` for its time, once).
    pub fn due<T>(&mut self, index: usize, now: Nanos, wheel: &mut TimerWheel<T>, due: T) -> bool {
        if index as u64 >= self.run_count {
            return false;
        }
        let at = self.started + index as u64 * self.delay;
        if at > now {
            if self.due_timer.is_none() {
                self.due_timer = Some(wheel.insert(at, due));
            }
            return false;
        }
        true
    }

    /// The wake-up armed by [`Pacing::due`] fired.
    pub fn woke(&mut self) {
        self.due_timer = None;
    }
}

/// A run about to start: its body's UUID drawn when the body is one.
pub fn new_run(body: &BodyPlan, ids: &mut IdGen) -> ClientRun {
    ClientRun {
        start: 0,
        end: 0,
        connect_ns: None,
        tls_ns: None,
        proxy_connect_ns: None,
        status: 0,
        body_uuid: matches!(body, BodyPlan::Uuid).then(|| ids.uuid()),
        failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time by hand: runs start when due, one wake-up is armed for the
    /// next, and none past the run count.
    #[test]
    fn runs_start_when_due_and_one_wake_up_waits() {
        let mut wheel: TimerWheel<u8> = TimerWheel::new(0);
        let mut p = Pacing::new(1_000, 100, 3);
        assert!(p.due(0, 1_000, &mut wheel, 0));
        assert!(!p.due(1, 1_050, &mut wheel, 0));
        assert!(!p.due(1, 1_060, &mut wheel, 0));
        let mut fired = Vec::new();
        wheel.poll(1_060, &mut fired);
        assert!(fired.is_empty());
        wheel.poll(10_000, &mut fired);
        assert_eq!(fired, [0], "one wake-up, not one per look");
        p.woke();
        assert!(p.due(1, 1_100, &mut wheel, 0));
        assert!(p.due(2, 5_000, &mut wheel, 0));
        assert!(!p.due(3, 5_000, &mut wheel, 0), "past the run count");
    }
}
