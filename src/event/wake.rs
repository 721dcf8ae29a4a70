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
/// blocking instead. Waking from a sleep costs tens of microseconds of
/// scheduler latency on an idle machine; spinning the last stretch takes it
/// out of the timing, at the price of one core busy for at most this long
/// per deadline. 100 us was chosen by measurement (README, Performance):
/// 30 us left the p99 overshoot of 1-10 ms delays at 80-170 us on this
/// machine kind, 100 us brought it under 20 us, 200 us gained nothing.
pub const SPIN_MARGIN: Nanos = 100 * MICROSECOND;

impl WakeTimer {
    /// Arms the wake-up for the next deadline and returns the poll timeout:
    /// `None` (sleep until an event or the timer), or zero while spinning
    /// through the last [`SPIN_MARGIN`] before a deadline.
    pub fn prepare(
        &mut self,
        next: Option<Nanos>,
        now: Nanos,
        cap: Option<Duration>,
    ) -> io::Result<Option<Duration>> {
        let spin = SPIN_MARGIN;
        let timeout = match next {
            Some(deadline) if deadline <= now + spin => {
                self.arm(None)?;
                Some(Duration::ZERO)
            }
            Some(deadline) => {
                self.arm(Some(deadline - spin))?;
                self.poll_timeout(now)
            }
            None => {
                self.arm(None)?;
                None
            }
        };
        Ok(match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        })
    }
}

pub struct WakeTimer {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    armed: Option<Nanos>,
}

#[cfg(target_os = "linux")]
impl WakeTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<WakeTimer> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain syscalls; the fd is owned by OwnedFd right away.
        let fd = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            let raw = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(raw)
        };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(WakeTimer { fd, armed: None })
    }

    /// Arms the timer for `deadline` (or disarms it). Only calls into the
    /// kernel when the deadline changes.
    fn arm(&mut self, deadline: Option<Nanos>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if deadline == self.armed {
            return Ok(());
        }
        let at = deadline.unwrap_or(0);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                // A zero it_value disarms: a deadline of exactly 0 ns is moved to 1.
                tv_nsec: (at % 1_000_000_000).max(u64::from(deadline.is_some() && at == 0))
                    as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec; old value not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }

    /// Acknowledges an expiry so the fd stops being readable.
    pub fn acknowledge(&mut self) {
        use std::os::fd::AsRawFd;
        let mut expirations = 0u64;
        // SAFETY: reads 8 bytes into a u64 from our own nonblocking timerfd.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut expirations as *mut u64).cast(),
                8,
            );
        }
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
        Ok(WakeTimer { armed: None })
    }

    fn arm(&mut self, deadline: Option<Nanos>) -> io::Result<()> {
        self.armed = deadline;
        Ok(())
    }

    pub fn acknowledge(&mut self) {}

    /// Milliseconds to the deadline, rounded up.
    fn poll_timeout(&self, now: Nanos) -> Option<Duration> {
        self.armed
            .map(|d| Duration::from_millis(d.saturating_sub(now).div_ceil(1_000_000)))
    }
}
