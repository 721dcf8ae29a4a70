//! What the event loops are built from: the clock, the timer wheel, the
//! precise wake-up timer, the DNS resolver thread, datagrams read and sent
//! in batches, and token bookkeeping.

pub mod clock;
pub mod datagrams;
pub mod resolver;
pub mod timer;
pub mod wake;

use mio::Token;

/// What a mio token points at. Each loop's tokens carry a kind in their low
/// bits and a slab index above them, so one `usize` names any source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Listener(usize),
    WakeTimer,
    Waker,
    Connection(usize),
    Upstream(usize),
    /// The server's raw TCP and UDP sockets (issue 12): their own numbering.
    L4(usize),
}

const KIND_BITS: u32 = 3;

impl Source {
    pub fn token(self) -> Token {
        let (kind, index) = match self {
            Source::Listener(i) => (0, i),
            Source::WakeTimer => (1, 0),
            Source::Waker => (2, 0),
            Source::Connection(i) => (3, i),
            Source::Upstream(i) => (4, i),
            Source::L4(i) => (5, i),
        };
        Token((index << KIND_BITS) | kind)
    }

    pub fn from_token(token: Token) -> Option<Source> {
        let index = token.0 >> KIND_BITS;
        Some(match token.0 & ((1 << KIND_BITS) - 1) {
            0 => Source::Listener(index),
            1 => Source::WakeTimer,
            2 => Source::Waker,
            3 => Source::Connection(index),
            4 => Source::Upstream(index),
            5 => Source::L4(index),
            _ => return None,
        })
    }
}

/// Where a non-blocking connect stands, once its socket reports readiness:
/// `None` while still in progress, else whether it succeeded.
pub fn connect_outcome(stream: &mio::net::TcpStream) -> Option<std::io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Some(Err(e)),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e)),
        },
    }
}

/// Descriptors a process needs beside its connections: the poll instance,
/// listeners, timers, the resolver, standard streams, the report file.
pub const FD_MARGIN: u64 = 64;

/// Open files `connections` sockets need, and the limit when it is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdShortage {
    pub needed: u64,
    pub limit: u64,
}

/// Counts the descriptors `connections` sockets need (plus [`FD_MARGIN`])
/// against the open-file limit, raised to the hard limit first.
pub fn check_fd_budget(connections: u64) -> Result<(), FdShortage> {
    let needed = connections.saturating_add(FD_MARGIN);
    let limit = raise_fd_limit();
    if limit < needed {
        Err(FdShortage { needed, limit })
    } else {
        Ok(())
    }
}

/// Raises the open-file limit to its hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        // `None` is unlimited (RLIM_INFINITY), the highest limit of all.
        let lim = getrlimit(Resource::Nofile);
        let current = lim.current.unwrap_or(u64::MAX);
        let maximum = lim.maximum.unwrap_or(u64::MAX);
        if current < maximum {
            let want = Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            };
            if setrlimit(Resource::Nofile, want).is_ok() {
                return maximum;
            }
        }
        current
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in [
            Source::Listener(3),
            Source::WakeTimer,
            Source::Waker,
            Source::Connection(0),
            Source::Connection(123_456),
            Source::Upstream(9),
            Source::L4(7),
        ] {
            assert_eq!(Source::from_token(s.token()), Some(s));
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit_and_reported() {
        use rustix::process::{getrlimit, Resource};
        let limit = raise_fd_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current.unwrap_or(u64::MAX), limit);
        assert_eq!(now.current, now.maximum);
    }

    #[test]
    fn the_fd_budget_counts_the_margin() {
        let limit = raise_fd_limit();
        if limit < u64::MAX {
            assert_eq!(
                check_fd_budget(limit),
                Err(FdShortage {
                    needed: limit + FD_MARGIN,
                    limit
                })
            );
        }
        assert_eq!(check_fd_budget(0), Ok(()));
    }
}
