//! The progress line the driver prints on a terminal: runs done, the rate,
//! errors, the live p50/p99 round trip and an ETA, at most 10 times a
//! second.
//!
//! The driver's hot loop does no more than before: the round trips are
//! read from the runs' own stamps when the line is made (each run once,
//! in order, as soon as it and every run before it have finished), into an
//! HDR histogram of 3 significant digits.

use crate::event::clock::{Nanos, MILLISECOND, SECOND};
use crate::report::client_duration;
use crate::report::summary::human_ns;
use crate::run::ClientRun;
use hdrhistogram::Histogram;

/// The shortest time between two lines.
pub const INTERVAL: Nanos = 100 * MILLISECOND;

pub struct Progress {
    run_count: u64,
    started: Nanos,
    /// When the last line was made, and the runs finished then.
    last: (Nanos, u64),
    /// Runs before this index are in `round_trips` (or failed).
    scanned: usize,
    round_trips: Option<Histogram<u64>>,
}

impl Progress {
    pub fn new(started: Nanos, run_count: u64) -> Progress {
        Progress {
            run_count,
            started,
            last: (started, 0),
            scanned: 0,
            round_trips: Histogram::new_with_bounds(1, 3_600 * SECOND, 3).ok(),
        }
    }

    /// The line at `now` (without the terminal's control codes), or None
    /// within [`INTERVAL`] of the last one.
    pub fn line(
        &mut self,
        now: Nanos,
        runs: &[ClientRun],
        finished: u64,
        failed: u64,
    ) -> Option<String> {
        let (then, finished_then) = self.last;
        if now < then + INTERVAL {
            return None;
        }
        self.last = (now, finished);
        self.record(runs);
        let rate = finished.saturating_sub(finished_then) as f64 * SECOND as f64
            / (now - then).max(1) as f64;
        let mut line = format!(
            "{finished}/{} runs, {rate:.0} runs/s, {failed} errors",
            self.run_count
        );
        if let Some(h) = self.round_trips.as_ref().filter(|h| !h.is_empty()) {
            line.push_str(&format!(
                ", round trip p50 {} p99 {}",
                human_ns(h.value_at_quantile(0.50)),
                human_ns(h.value_at_quantile(0.99))
            ));
        }
        // The whole test's pace so far, the steadiest guide to the rest.
        let elapsed = now.saturating_sub(self.started);
        if finished > 0 && finished < self.run_count {
            let left = (self.run_count - finished) as u128 * elapsed as u128 / finished as u128;
            line.push_str(&format!(", ETA {}", eta(left.min(u64::MAX as u128) as u64)));
        }
        Some(line)
    }

    /// Prints the line at `now` over the last one on stderr (a terminal),
    /// unless within [`INTERVAL`] of it.
    pub fn print(&mut self, now: Nanos, runs: &[ClientRun], finished: u64, failed: u64) {
        if let Some(line) = self.line(now, runs, finished, failed) {
            eprint!("\r\x1b[K{line}");
        }
    }

    /// Records the round trips of the runs finished since the last call,
    /// up to the first still in flight.
    fn record(&mut self, runs: &[ClientRun]) {
        let Some(h) = self.round_trips.as_mut() else {
            return;
        };
        for run in &runs[self.scanned.min(runs.len())..] {
            if run.end == 0 && run.failure.is_none() {
                break;
            }
            if let Some(d) = client_duration(run).filter(|_| run.failure.is_none()) {
                h.saturating_record(d);
            }
            self.scanned += 1;
        }
    }
}

/// Clears the progress line before the summary is printed.
pub fn clear() {
    eprint!("\r\x1b[K");
}

/// A time left for people: `45s`, `3m05s`, `2h07m`.
fn eta(ns: Nanos) -> String {
    let s = ns.div_ceil(SECOND);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;
    use crate::run::Failure;

    fn run(start: Nanos, round_trip: Option<Nanos>) -> ClientRun {
        ClientRun {
            start,
            end: round_trip.map_or(0, |d| start + d),
            connect_ns: None,
            tls_ns: None,
            proxy_connect_ns: None,
            status: if round_trip.is_some() { 200 } else { 0 },
            body_uuid: None,
            failure: None,
        }
    }

    #[test]
    fn the_line_shows_the_rate_errors_live_percentiles_and_an_eta() {
        let started = 1_000 * SECOND;
        let mut p = Progress::new(started, 1_000);
        let mut runs: Vec<ClientRun> = (0..98).map(|_| run(started, Some(100_000))).collect();
        runs.push(run(started, Some(2_000_000)));
        runs.push(run(started, Some(2_000_000)));
        let mut refused = run(started, None);
        refused.failure = Some(Box::new(Failure {
            problem: Problem::Refused,
            detail: "connect".into(),
        }));
        runs.push(refused);
        runs.push(run(started, None)); // in flight
                                       // After it: not yet.
        runs.push(run(started, Some(50 * MILLISECOND)));
        runs.push(run(started, Some(50 * MILLISECOND)));
        let line = p.line(started + SECOND, &runs, 102, 1).unwrap();
        assert_eq!(
            line,
            "102/1000 runs, 102 runs/s, 1 errors, round trip p50 100.0 us p99 2.00 ms, ETA 9s"
        );
        // The run in flight ends: it and the one after it count now.
        runs[101].end = started + 100_000;
        runs[101].status = 200;
        let line = p.line(started + 2 * SECOND, &runs, 500, 1).unwrap();
        assert_eq!(
            line,
            "500/1000 runs, 398 runs/s, 1 errors, round trip p50 100.0 us p99 50.00 ms, ETA 2s"
        );
        let done = p.line(started + 3 * SECOND, &runs, 1_000, 1).unwrap();
        assert!(!done.contains("ETA"), "{done}");
        let mut idle = Progress::new(started, 10);
        assert_eq!(
            idle.line(started + SECOND, &[], 0, 0).unwrap(),
            "0/10 runs, 0 runs/s, 0 errors"
        );
    }

    #[test]
    fn lines_come_at_most_ten_times_a_second() {
        let started = 5 * SECOND;
        let mut p = Progress::new(started, 10);
        let lines: Vec<Nanos> = (1..=100)
            .map(|ms| started + ms * 10 * MILLISECOND)
            .filter(|&now| p.line(now, &[], 0, 0).is_some())
            .collect();
        assert_eq!(lines.len(), 10, "one second: {lines:?}");
        assert!(lines.windows(2).all(|w| w[1] - w[0] >= INTERVAL));
        assert!(p.line(lines[9] + INTERVAL - 1, &[], 0, 0).is_none());
        assert!(p.line(lines[9] + INTERVAL, &[], 0, 0).is_some());
    }

    #[test]
    fn etas_for_people() {
        assert_eq!(eta(0), "0s");
        assert_eq!(eta(44_100 * MILLISECOND), "45s");
        assert_eq!(eta(185 * SECOND), "3m05s");
        assert_eq!(eta(7_620 * SECOND), "2h07m");
    }
}
