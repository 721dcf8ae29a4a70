//! Raw TCP and UDP runs (issue 12): the binary message each run carries and
//! its checks, as pure functions and a sans-IO stream decoder. No sockets
//! and no clock here; the server loop (`server::l4`) and the client's own
//! loop (`client::l4`) move the bytes.
//!
//! - [`crc`]: CRC-32C, the checksum of a message's data;
//! - [`header`]: the 36-byte header, encoded and parsed, and a whole
//!   datagram's checks;
//! - [`framing`]: messages cut out of a TCP byte stream;
//! - [`order`]: reordering and jitter of a sequence of arrivals.

pub mod crc;
pub mod framing;
pub mod header;
pub mod order;

/// Why a datagram or a TCP message is not taken: it is counted (the
/// server's `/metrics`) and dropped, never recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not our magic or version, or shorter than a header.
    Header,
    /// Fewer data bytes than the header announces (a datagram cut short,
    /// or a TCP connection closed mid-message).
    Truncated,
    /// More data than allowed (a datagram past its group's
    /// `max_data_bytes`, a TCP message past `--max-body`), or a datagram
    /// with bytes after its data.
    Oversized,
    /// A group the store does not know.
    UnknownGroup,
    /// A group of another protocol (an http group's id in a datagram, a
    /// udp group's over TCP).
    Protocol,
    /// The store refused the run (full, or unreachable): the client sees
    /// no echo.
    Refused,
    /// A TCP message that did not arrive whole within `--request-timeout`
    /// of its first byte: the connection is closed.
    Timeout,
}

impl Dropped {
    pub const ALL: [Dropped; 7] = [
        Dropped::Header,
        Dropped::Truncated,
        Dropped::Oversized,
        Dropped::UnknownGroup,
        Dropped::Protocol,
        Dropped::Refused,
        Dropped::Timeout,
    ];

    /// The `reason` label of `conntest_l4_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Header => "header",
            Dropped::Truncated => "truncated",
            Dropped::Oversized => "oversized",
            Dropped::UnknownGroup => "unknown_group",
            Dropped::Protocol => "protocol",
            Dropped::Refused => "refused",
            Dropped::Timeout => "timeout",
        }
    }
}
