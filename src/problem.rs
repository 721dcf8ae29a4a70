//! Everything that can be wrong with a run, by kind.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    // What the client saw going wrong.
    /// The connection was refused.
    Refused,
    /// The connection was reset or broken.
    Reset,
    /// No answer within `--timeout`.
    Timeout,
    /// The server closed the connection before answering.
    Closed,
    /// The answer was not HTTP.
    Malformed,
    /// TLS failed: an untrusted certificate, a wrong host name, a handshake
    /// cut short, a peer that does not speak TLS.
    Tls,
    /// A proxy on the way refused or failed the request: a 407, 403 or 502
    /// to `CONNECT`, a 407 in absolute form, an answer that is not HTTP, a
    /// proxy that closed before answering.
    Proxy,
    /// The server answered, but not 200.
    HttpStatus,
    /// Any other socket error.
    Io,
    /// The test was interrupted before this run was answered or sent.
    Interrupted,
    /// The server's upstream request for this run failed (the server
    /// recorded an error: refused, timed out, unresolvable...).
    Upstream,
    /// The server's upstream answered outside 200-399 (the code is in the
    /// record): the path behind the server is broken.
    UpstreamStatus,
    // What the comparison with the server's record found.
    /// Sent and answered, but the server has no record of it.
    Missing,
    /// The server recorded other bytes than were sent.
    Corrupted,
    /// The server recorded the run more than once.
    Duplicated,
    /// The server recorded a run this client never sent.
    Unexpected,
    // What only raw TCP and UDP runs tell (issue 12): the direction.
    /// UDP: no echo, and the server never recorded it.
    LostToServer,
    /// UDP: the server recorded it, but no echo came back.
    LostFromServer,
    /// The echo came back more than once.
    DuplicatedEcho,
    /// The echo's bytes differ from what was sent, though the server
    /// recorded them right.
    CorruptedEcho,
    /// UDP: it reached the server after a run sent after it.
    Reordered,
    /// UDP: its echo reached the client after one the server sent after it.
    ReorderedEcho,
}

impl Problem {
    pub const ALL: [Problem; 16] = [
        Problem::Refused,
        Problem::Reset,
        Problem::Timeout,
        Problem::Closed,
        Problem::Malformed,
        Problem::Tls,
        Problem::Proxy,
        Problem::HttpStatus,
        Problem::Io,
        Problem::Interrupted,
        Problem::Upstream,
        Problem::UpstreamStatus,
        Problem::Missing,
        Problem::Corrupted,
        Problem::Duplicated,
        Problem::Unexpected,
    ];

    /// The kinds only raw TCP and UDP runs have; their reports count them
    /// (zero included), HTTP reports do not.
    pub const L4: [Problem; 6] = [
        Problem::LostToServer,
        Problem::LostFromServer,
        Problem::DuplicatedEcho,
        Problem::CorruptedEcho,
        Problem::Reordered,
        Problem::ReorderedEcho,
    ];

    /// Every kind, by its name.
    pub fn from_name(name: &str) -> Option<Problem> {
        Problem::ALL
            .into_iter()
            .chain(Problem::L4)
            .find(|p| p.name() == name)
    }

    /// A discrepancy between what was sent and what the server recorded,
    /// as opposed to an error seen by the client.
    pub fn is_discrepancy(self) -> bool {
        matches!(
            self,
            Problem::Missing
                | Problem::Corrupted
                | Problem::Duplicated
                | Problem::Unexpected
                | Problem::LostToServer
                | Problem::LostFromServer
                | Problem::DuplicatedEcho
                | Problem::CorruptedEcho
                | Problem::Reordered
                | Problem::ReorderedEcho
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Problem::Refused => "refused",
            Problem::Reset => "reset",
            Problem::Timeout => "timeout",
            Problem::Closed => "closed",
            Problem::Malformed => "malformed",
            Problem::Tls => "tls",
            Problem::Proxy => "proxy",
            Problem::HttpStatus => "http_status",
            Problem::Io => "io",
            Problem::Interrupted => "interrupted",
            Problem::Upstream => "upstream",
            Problem::UpstreamStatus => "upstream_status",
            Problem::Missing => "missing",
            Problem::Corrupted => "corrupted",
            Problem::Duplicated => "duplicated",
            Problem::Unexpected => "unexpected",
            Problem::LostToServer => "lost_to_server",
            Problem::LostFromServer => "lost_from_server",
            Problem::DuplicatedEcho => "duplicated_echo",
            Problem::CorruptedEcho => "corrupted_echo",
            Problem::Reordered => "reordered",
            Problem::ReorderedEcho => "reordered_echo",
        }
    }
}
