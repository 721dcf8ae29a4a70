//! Wakes the loop at a timer deadline with microsecond precision.
//!
//! mio's poll timeout is whole milliseconds (epoll_wait rounds up), far too
//! coarse for server delays and client pacing measured in microseconds. On
//! Linux a timerfd armed at the wheel's next deadline (absolute, on
//! CLOCK_MONOTONIC, the clock `clock::now` reads) is registered with the
//! poll, and the thread's timer slack is cut to 1 ns so the kernel does not
//! batch the wake-up with others. Elsewhere the poll timeout is used,
//! rounded up so the loop never wakes before a deadline.

use crate::event::clock::{Nanos, MICROSECOND};
use mio::{Registry, Token};
use std::io;
use std::time::Duration;

/// How long before a deadline the loop stops sleeping and polls without
/// blocking instead. Waking from a sleep costs scheduler latency: tens of
/// microseconds on an idle machine, hundreds on a virtual machine whose
/// idle vCPU the host deschedules. Spinning the last stretch takes it out of
/// the timing at the price of a busy core for that stretch. The margin
/// adapts: each timer wake-up measures how late it landed, the margin rises
/// to 1.5x that at once and decays slowly when wake-ups are prompt, between
/// these bounds. (A fixed 30 us left the p99 overshoot of 1-10 ms delays at
/// 80-170 us on this machine kind, a fixed 100 us at up to 620 us when the
/// host was busy.)
const MIN_SPIN: Nanos = 50 * MICROSECOND;
#[cfg(target_os = "linux")]
const MAX_SPIN: Nanos = 1_000 * MICROSECOND;

impl WakeTimer {
    /// Learns from a timer wake-up that landed `late` after it was due
    /// (only the timerfd reports that).
    #[cfg(target_os = "linux")]
    fn learn(&mut self, late: Nanos) {
        let wanted = (late + late / 2).clamp(MIN_SPIN, MAX_SPIN);
        if wanted > self.spin {
            self.spin = wanted;
        } else {
            self.spin -= (self.spin - wanted) / 32;
        }
    }

    /// Arms the wake-up for the next deadline, or `cap` from now if that
    /// comes first, and returns the poll timeout: `None` (sleep until an
    /// event or the timer), or zero while spinning through the last stretch
    /// (the spin margin) before a deadline.
    ///
    /// On Linux the cap is the timer's too, never the poll's: a poll
    /// timeout arms and cancels a kernel timer on every wait (a VM exit
    /// each, on a virtual machine), which a ping-pong of datagrams pays on
    /// each message. A wake-up already armed no later than needed and still
    /// ahead is kept, so the timer is set about once per cap, not per wait;
    /// it may wake the loop early, which then finds nothing due.
    pub fn prepare(
        &mut self,
        next: Option<Nanos>,
        now: Nanos,
        cap: Option<Duration>,
    ) -> io::Result<Option<Duration>> {
        let spin = self.spin;
        if next.is_some_and(|deadline| deadline <= now + spin) {
            self.arm(None)?;
            return Ok(Some(Duration::ZERO));
        }
        let cap_at = cap.map(|c| now.saturating_add(c.as_nanos() as Nanos));
        let wake_at = match (next.map(|d| d - spin), cap_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let in_time = matches!((self.armed, wake_at), (Some(a), Some(w)) if a > now && a <= w);
        if !in_time {
            self.arm(wake_at)?;
        }
        Ok(self.poll_timeout(now))
    }
}

pub struct WakeTimer {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    armed: Option<Nanos>,
    spin: Nanos,
}

#[cfg(target_os = "linux")]
impl WakeTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<WakeTimer> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        use std::os::fd::AsRawFd;
        // The kernel's default slack of 50 us would batch our wake-up with
        // others. Best effort, as before: a failure only costs precision.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(WakeTimer {
            fd,
            armed: None,
            spin: MIN_SPIN,
        })
    }

    /// Arms the timer for `deadline` (or disarms it). Only calls into the
    /// kernel when the deadline changes.
    fn arm(&mut self, deadline: Option<Nanos>) -> io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        if deadline == self.armed {
            return Ok(());
        }
        let at = deadline.unwrap_or(0);
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: (at / 1_000_000_000) as _,
                // A zero it_value disarms: a deadline of exactly 0 ns is moved to 1.
                tv_nsec: (at % 1_000_000_000).max(u64::from(deadline.is_some() && at == 0)) as _,
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::ABSTIME, &spec)?;
        self.armed = deadline;
        Ok(())
    }

    /// Acknowledges an expiry (seen at `now`) so the fd stops being
    /// readable, and learns how late the wake-up was.
    pub fn acknowledge(&mut self, now: Nanos) {
        if let Some(at) = self.armed {
            self.learn(now.saturating_sub(at));
        }
        // The expiry count (8 bytes); nothing to read (EAGAIN) is fine.
        let mut expirations = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut expirations);
        self.armed = None;
    }

    /// The poll timeout to use: the timerfd does the waking.
    fn poll_timeout(&self, _now: Nanos) -> Option<Duration> {
        None
    }
}

#[cfg(not(target_os = "linux"))]
impl WakeTimer {
    pub fn new(_registry: &Registry, _token: Token) -> io::Result<WakeTimer> {
        Ok(WakeTimer {
            armed: None,
            spin: MIN_SPIN,
        })
    }

    fn arm(&mut self, deadline: Option<Nanos>) -> io::Result<()> {
        self.armed = deadline;
        Ok(())
    }

    pub fn acknowledge(&mut self, _now: Nanos) {}

    /// Milliseconds to the deadline, rounded up.
    fn poll_timeout(&self, now: Nanos) -> Option<Duration> {
        self.armed
            .map(|d| Duration::from_millis(d.saturating_sub(now).div_ceil(1_000_000)))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_spin_margin_rises_at_once_and_decays_slowly() {
        let poll = mio::Poll::new().unwrap();
        let mut timer = WakeTimer::new(poll.registry(), Token(1)).unwrap();
        assert_eq!(timer.spin, MIN_SPIN);
        timer.learn(200 * MICROSECOND);
        assert_eq!(timer.spin, 300 * MICROSECOND);
        timer.learn(10 * MICROSECOND);
        assert!(timer.spin < 300 * MICROSECOND && timer.spin > 290 * MICROSECOND);
        for _ in 0..1000 {
            timer.learn(0);
        }
        assert!(timer.spin < MIN_SPIN + MICROSECOND);
        timer.learn(10_000 * MICROSECOND);
        assert_eq!(timer.spin, MAX_SPIN);
    }

    /// Time by hand: the cap is armed once and kept while it is still in
    /// time; an earlier deadline re-arms; the poll never carries a timeout
    /// except zero while spinning.
    #[test]
    fn the_cap_is_armed_once_not_per_wait() {
        let poll = mio::Poll::new().unwrap();
        let mut timer = WakeTimer::new(poll.registry(), Token(1)).unwrap();
        let ms = 1_000 * MICROSECOND;
        let cap = Some(Duration::from_millis(100));
        let t0 = 1_000 * ms;
        assert_eq!(timer.prepare(None, t0, cap).unwrap(), None);
        assert_eq!(timer.armed, Some(t0 + 100 * ms));
        // Later waits keep it: no call into the kernel.
        assert_eq!(timer.prepare(None, t0 + 10 * ms, cap).unwrap(), None);
        assert_eq!(timer.armed, Some(t0 + 100 * ms));
        // A deadline before it re-arms, minus the spin margin.
        timer
            .prepare(Some(t0 + 50 * ms), t0 + 20 * ms, cap)
            .unwrap();
        assert_eq!(timer.armed, Some(t0 + 50 * ms - MIN_SPIN));
        // A later deadline keeps the earlier wake-up (which finds nothing due).
        timer
            .prepare(Some(t0 + 90 * ms), t0 + 21 * ms, cap)
            .unwrap();
        assert_eq!(timer.armed, Some(t0 + 50 * ms - MIN_SPIN));
        // Past the armed time, it is armed anew.
        timer.prepare(None, t0 + 60 * ms, cap).unwrap();
        assert_eq!(timer.armed, Some(t0 + 160 * ms));
        // Within the spin margin: disarmed, a zero poll timeout.
        let near = timer.prepare(Some(t0 + 61 * ms), t0 + 61 * ms - MICROSECOND, cap);
        assert_eq!(near.unwrap(), Some(Duration::ZERO));
        assert_eq!(timer.armed, None);
    }
}
