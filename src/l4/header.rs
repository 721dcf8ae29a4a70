//! The header every raw TCP and UDP run's message starts with, then the
//! data. 36 bytes, big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..3 | magic `CT4` |
//! | 3 | version, 1 |
//! | 4..20 | the group's `run_group_id` (16 bytes) |
//! | 20..28 | the run count |
//! | 28..32 | the data's length |
//! | 32..36 | the data's CRC-32C |
//!
//! The server echoes a message as it received it, header and data.

use super::crc::crc32c;
use super::Dropped;
use uuid::Uuid;

pub const HEADER_LEN: usize = 36;
pub const MAGIC: [u8; 3] = *b"CT4";
pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub group: Uuid,
    pub run_count: u64,
    /// The data's length.
    pub len: u32,
    /// The data's CRC-32C, as the sender computed it.
    pub checksum: u32,
}

/// Why bytes are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// Not `CT4`: not a conntest message.
    Magic,
    /// A version this build does not speak.
    Version(u8),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "shorter than the {HEADER_LEN}-byte header"),
            HeaderError::Magic => f.write_str("not a conntest message (no CT4 magic)"),
            HeaderError::Version(v) => write!(f, "message version {v}, expected {VERSION}"),
        }
    }
}

impl Header {
    /// The header of run `run_count`'s message carrying `data`.
    pub fn for_data(group: Uuid, run_count: u64, data: &[u8]) -> Header {
        Header {
            group,
            run_count,
            len: data.len() as u32,
            checksum: crc32c(data),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..3].copy_from_slice(&MAGIC);
        b[3] = VERSION;
        b[4..20].copy_from_slice(self.group.as_bytes());
        b[20..28].copy_from_slice(&self.run_count.to_be_bytes());
        b[28..32].copy_from_slice(&self.len.to_be_bytes());
        b[32..36].copy_from_slice(&self.checksum.to_be_bytes());
        b
    }

    /// The header at the start of `bytes` (which may hold more).
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(HeaderError::Short)?;
        if b[..3] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[3] != VERSION {
            return Err(HeaderError::Version(b[3]));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&b[20..28]);
        let mut group = [0u8; 16];
        group.copy_from_slice(&b[4..20]);
        Ok(Header {
            group: Uuid::from_bytes(group),
            run_count: u64::from_be_bytes(count),
            len: u32_at(28),
            checksum: u32_at(32),
        })
    }

    /// Whether `data` is what the sender checksummed.
    pub fn checks(&self, data: &[u8]) -> bool {
        data.len() == self.len as usize && crc32c(data) == self.checksum
    }
}

/// Appends run `run_count`'s whole message (header, then data) to `out`.
pub fn encode_message(group: Uuid, run_count: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&Header::for_data(group, run_count, data).encode());
    out.extend_from_slice(data);
}

/// A whole datagram's header and data; an error says why it is not one of
/// ours. The checksum is not checked here: a datagram whose data changed
/// on the way is ours, and recorded as it came (the comparison then shows
/// the corruption).
pub fn parse_datagram(datagram: &[u8], max_data: usize) -> Result<(Header, &[u8]), Dropped> {
    let header = Header::decode(datagram).map_err(|_| Dropped::Header)?;
    let data = &datagram[HEADER_LEN..];
    let len = header.len as usize;
    if len > max_data || data.len() > len {
        return Err(Dropped::Oversized);
    }
    if data.len() < len {
        return Err(Dropped::Truncated);
    }
    Ok((header, data))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed-seed generator (splitmix64), so a failing case replays.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        /// Fewer than `max` random bytes.
        pub(crate) fn bytes_upto(&mut self, max: u64) -> Vec<u8> {
            let len = self.below(max);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn a_message_round_trips() {
        let group = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let mut msg = Vec::new();
        encode_message(group, 42, b"hello", &mut msg);
        assert_eq!(&msg[..4], b"CT4\x01");
        assert_eq!(msg.len(), HEADER_LEN + 5);
        let (h, data) = parse_datagram(&msg, 1200).unwrap();
        assert_eq!(
            (h.group, h.run_count, h.len, data),
            (group, 42, 5, &b"hello"[..])
        );
        assert!(h.checks(data));
        assert!(!h.checks(b"hellp"));
        assert!(!h.checks(b"hell"));
    }

    #[test]
    fn what_is_not_ours_is_named() {
        let group = Uuid::nil();
        let mut msg = Vec::new();
        encode_message(group, 1, b"abcd", &mut msg);
        assert_eq!(parse_datagram(&msg[..10], 1200), Err(Dropped::Header));
        assert_eq!(parse_datagram(b"", 1200), Err(Dropped::Header));
        let mut bad = msg.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::Magic));
        bad = msg.clone();
        bad[3] = 2;
        assert_eq!(Header::decode(&bad), Err(HeaderError::Version(2)));
        assert_eq!(parse_datagram(&bad, 1200), Err(Dropped::Header));
        assert_eq!(
            parse_datagram(&msg[..HEADER_LEN + 3], 1200),
            Err(Dropped::Truncated)
        );
        assert_eq!(parse_datagram(&msg, 3), Err(Dropped::Oversized));
        let mut long = msg.clone();
        long.push(0);
        assert_eq!(parse_datagram(&long, 1200), Err(Dropped::Oversized));
        // A length past what any datagram holds is oversized, not a panic.
        let mut huge = msg.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_datagram(&huge, 65_471), Err(Dropped::Oversized));
    }

    /// Seeded properties: every encoded message parses back to what was
    /// encoded; any one byte flipped in it is either refused, or changes
    /// the header's fields, or fails the checksum; no input panics.
    #[test]
    fn seeded_properties() {
        let mut rng = Rng::new(0x12_c0de);
        for case in 0..2_000 {
            let group = Uuid::from_u64_pair(rng.next(), rng.next());
            let count = rng.next() >> rng.below(64);
            let data = rng.bytes_upto(300);
            let mut msg = Vec::new();
            encode_message(group, count, &data, &mut msg);
            let (h, d) = parse_datagram(&msg, 300).unwrap();
            assert_eq!(
                (h.group, h.run_count, d),
                (group, count, &data[..]),
                "case {case}"
            );
            assert!(h.checks(d));
            // One byte flipped, anywhere.
            let at = rng.below(msg.len() as u64) as usize;
            let mut flipped = msg.clone();
            flipped[at] ^= 1 << rng.below(8);
            match parse_datagram(&flipped, 300) {
                Err(_) => assert!(at < HEADER_LEN, "case {case}: data byte {at} refused"),
                Ok((h2, d2)) => assert!(
                    h2.group != group || h2.run_count != count || !h2.checks(d2),
                    "case {case}: a flip at {at} went unseen"
                ),
            }
            // Arbitrary bytes, and every cut of the message.
            let junk = rng.bytes_upto(80);
            let _ = parse_datagram(&junk, 300);
            let cut = rng.below(msg.len() as u64) as usize;
            assert!(parse_datagram(&msg[..cut], 300).is_err());
        }
    }
}
