//! Messages cut out of a TCP byte stream: bytes in, whole messages out.
//! Sans-IO; the server reads runs with it and the client its echoes. A
//! stream cannot be resynchronised after a bad header, so the first error
//! is final: the caller counts it and closes the connection.

use super::header::{Header, HEADER_LEN};
use super::Dropped;
use crate::event::clock::Nanos;

/// One message of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the next message starts in `buf`.
    at: usize,
    max_data: usize,
    failed: Option<Dropped>,
}

impl Framer {
    /// A decoder of messages carrying at most `max_data` bytes of data.
    pub fn new(max_data: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            at: 0,
            max_data,
            failed: None,
        }
    }

    /// Takes bytes read from the stream.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, or the error that ends the stream; None
    /// while a message is incomplete.
    pub fn next_message(&mut self) -> Option<Result<Message, Dropped>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let rest = &self.buf[self.at..];
        if rest.len() < HEADER_LEN {
            // A wrong magic shows in the first bytes: refuse it at once
            // rather than wait for a header's worth of someone else's bytes.
            let magic = &super::header::MAGIC[..rest.len().min(3)];
            if rest[..magic.len()] != *magic {
                return Some(Err(self.fail(Dropped::Header)));
            }
            return None;
        }
        let header = match Header::decode(rest) {
            Ok(h) => h,
            Err(_) => return Some(Err(self.fail(Dropped::Header))),
        };
        let len = header.len as usize;
        if len > self.max_data {
            return Some(Err(self.fail(Dropped::Oversized)));
        }
        if rest.len() < HEADER_LEN + len {
            return None;
        }
        let data = rest[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.at += HEADER_LEN + len;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        Some(Ok(Message { header, data }))
    }

    /// The stream ended: an error when it ended inside a message.
    pub fn receive_eof(&mut self) -> Option<Dropped> {
        if self.failed.is_none() && self.at < self.buf.len() {
            return Some(self.fail(Dropped::Truncated));
        }
        None
    }

    /// Bytes held of a message not yet whole.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }

    fn fail(&mut self, why: Dropped) -> Dropped {
        self.failed = Some(why);
        self.buf = Vec::new();
        self.at = 0;
        why
    }
}

/// A raw TCP connection's deadlines, the HTTP connection's counterparts:
/// a message must arrive whole within `message` of its first byte (a peer
/// that stops mid-message is cut off), and a connection with nothing
/// pending (no partial message, no run held, nothing to write) is closed
/// `idle` after its last activity. Sans-IO: the loop says what happened and
/// when, and asks for the next deadline.
#[derive(Debug, Clone, Copy)]
pub struct StreamClock {
    idle: Nanos,
    message: Nanos,
    last: Nanos,
    /// When the message not yet whole began.
    partial_since: Option<Nanos>,
}

/// Why a connection's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing happened for the idle timeout.
    Idle,
    /// A message did not arrive whole in time.
    Partial,
}

impl StreamClock {
    pub fn new(idle: Nanos, message: Nanos, now: Nanos) -> StreamClock {
        StreamClock {
            idle,
            message,
            last: now,
            partial_since: None,
        }
    }

    /// Bytes came or left at `now`; `pending` bytes of a message are not
    /// yet whole.
    pub fn activity(&mut self, now: Nanos, pending: usize) {
        self.last = now;
        self.partial_since = match pending {
            0 => None,
            _ => Some(self.partial_since.unwrap_or(now)),
        };
    }

    /// The next deadline; `busy` while the server owes the peer something
    /// (a run held, an echo unwritten): it is then not idle.
    pub fn poll_timeout(&self, busy: bool) -> Option<Nanos> {
        match (self.partial_since, busy) {
            (Some(since), _) => Some(since.saturating_add(self.message)),
            (None, true) => None,
            (None, false) => Some(self.last.saturating_add(self.idle)),
        }
    }

    /// Whether the connection's time is up at `now`.
    pub fn expired(&self, now: Nanos, busy: bool) -> Option<Expired> {
        let deadline = self.poll_timeout(busy)?;
        (now >= deadline).then_some(match self.partial_since {
            Some(_) => Expired::Partial,
            None => Expired::Idle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::encode_message;
    use super::*;

    /// Time driven by hand: idle after `idle` of nothing, unless a run is
    /// held; a message begun must end within `message` of its first byte,
    /// however the bytes trickle in; a whole message restarts the clock.
    #[test]
    fn the_stream_clock_cuts_idle_and_slow_peers() {
        let (idle, message) = (60, 10);
        let mut c = StreamClock::new(idle, message, 100);
        assert_eq!(c.poll_timeout(false), Some(160));
        assert_eq!(c.expired(159, false), None);
        assert_eq!(c.expired(160, false), Some(Expired::Idle));
        assert_eq!(c.poll_timeout(true), None, "a held run is not idleness");
        assert_eq!(c.expired(1_000, true), None);
        // Half a header at 120, more bytes at 125: still due at 130.
        c.activity(120, 18);
        assert_eq!(c.poll_timeout(false), Some(130));
        c.activity(125, 30);
        assert_eq!(c.poll_timeout(true), Some(130), "held or not");
        assert_eq!(c.expired(129, false), None);
        assert_eq!(c.expired(130, true), Some(Expired::Partial));
        // The message completed at 128: idle again from there.
        c.activity(128, 0);
        assert_eq!(c.poll_timeout(false), Some(188));
        assert_eq!(c.expired(130, false), None);
        // A framer's pending bytes drive it.
        let mut f = Framer::new(100);
        let mut bytes = Vec::new();
        encode_message(uuid::Uuid::nil(), 1, b"data", &mut bytes);
        f.receive(&bytes[..20]);
        c.activity(200, f.pending());
        assert_eq!(c.expired(210, false), Some(Expired::Partial));
    }
    use uuid::Uuid;

    fn stream(messages: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, data) in messages {
            encode_message(Uuid::nil(), *n, data, &mut out);
        }
        out
    }

    fn drain(f: &mut Framer) -> (Vec<(u64, Vec<u8>)>, Option<Dropped>) {
        let mut got = Vec::new();
        while let Some(m) = f.next_message() {
            match m {
                Ok(m) => got.push((m.header.run_count, m.data)),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[test]
    fn every_split_gives_the_same_messages() {
        let bytes = stream(&[(1, b"one"), (2, b""), (3, b"three three")]);
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let mut f = Framer::new(100);
                let mut got = Vec::new();
                for piece in [&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]] {
                    f.receive(piece);
                    let (m, e) = drain(&mut f);
                    assert_eq!(e, None);
                    got.extend(m);
                }
                assert_eq!(f.receive_eof(), None);
                let counts: Vec<u64> = got.iter().map(|m| m.0).collect();
                assert_eq!(counts, [1, 2, 3], "cuts {cut} {cut2}");
                assert_eq!(got[2].1, b"three three");
            }
        }
    }

    #[test]
    fn errors_end_the_stream() {
        let mut f = Framer::new(100);
        f.receive(b"GET / HTTP/1.1\r\n");
        assert_eq!(drain(&mut f), (vec![], Some(Dropped::Header)));
        f.receive(&stream(&[(1, b"x")]));
        assert_eq!(drain(&mut f).1, Some(Dropped::Header), "final");

        let mut f = Framer::new(2);
        f.receive(&stream(&[(1, b"ok"), (2, b"big")]));
        assert_eq!(
            drain(&mut f),
            (vec![(1, b"ok".to_vec())], Some(Dropped::Oversized))
        );

        let mut f = Framer::new(100);
        let bytes = stream(&[(1, b"abc")]);
        f.receive(&bytes[..bytes.len() - 1]);
        assert_eq!(drain(&mut f), (vec![], None));
        assert_eq!(f.pending(), bytes.len() - 1);
        assert_eq!(f.receive_eof(), Some(Dropped::Truncated));
        // A wrong first byte is refused before a whole header arrives.
        let mut f = Framer::new(100);
        f.receive(b"C");
        assert_eq!(drain(&mut f), (vec![], None));
        f.receive(b"X");
        assert_eq!(drain(&mut f).1, Some(Dropped::Header));
    }

    /// Seeded: a stream of random messages cut at random points decodes to
    /// those messages; random bytes never panic.
    #[test]
    fn seeded_streams() {
        let mut rng = super::super::header::tests::Rng::new(7);
        for case in 0..300 {
            let n = rng.below(6) as usize;
            let datas: Vec<Vec<u8>> = (0..n).map(|_| rng.bytes_upto(50)).collect();
            let msgs: Vec<(u64, &[u8])> = datas
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64 + 1, &d[..]))
                .collect();
            let bytes = stream(&msgs);
            let mut f = Framer::new(64);
            let mut got = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let take = 1 + rng.below(40) as usize;
                let end = (at + take).min(bytes.len());
                f.receive(&bytes[at..end]);
                at = end;
                let (m, e) = drain(&mut f);
                assert_eq!(e, None, "case {case}");
                got.extend(m);
            }
            assert_eq!(got.len(), n, "case {case}");
            for (i, (count, data)) in got.iter().enumerate() {
                assert_eq!((*count, data), (i as u64 + 1, &datas[i]));
            }
            let mut junk = Framer::new(64);
            junk.receive(&rng.bytes_upto(120));
            let _ = drain(&mut junk);
            let _ = junk.receive_eof();
        }
    }
}
