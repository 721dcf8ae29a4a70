//! The raw TCP/UDP message parsers fed arbitrary bytes: a datagram parsed
//! whole, and the same bytes as a TCP stream cut at split points the input
//! picks.
//!
//! Checks: no panic; a datagram taken has exactly the data its header
//! announces, within the limit, and re-encodes to the same bytes; the
//! stream decoder gives the same messages (and the same error) whatever
//! the cuts, each within its limit.

#![no_main]

mod common;

use common::Input;
use conntest::l4::framing::Framer;
use conntest::l4::header::{parse_datagram, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn stream<'a>(max: usize, pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
    let mut f = Framer::new(max);
    let mut got = Vec::new();
    for piece in pieces {
        f.receive(piece);
        while let Some(m) = f.next_message() {
            match m {
                Ok(m) => {
                    assert!(m.data.len() <= max);
                    assert_eq!(m.data.len(), m.header.len as usize);
                    got.push((m.header.run_count, m.data));
                }
                Err(e) => return (got, Some(format!("{e:?}"))),
            }
        }
    }
    let end = f.receive_eof().map(|e| format!("{e:?}"));
    (got, end)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = [0, 16, 1_200, 65_471][(input.flags & 3) as usize];
    if let Ok((header, body)) = parse_datagram(input.payload, max) {
        assert_eq!(body.len(), header.len as usize);
        assert!(body.len() <= max);
        assert_eq!(&input.payload[..HEADER_LEN], &header.encode()[..]);
        assert_eq!(header.checks(body), conntest::l4::crc::crc32c(body) == header.checksum);
    }
    let whole = stream(max, [input.payload]);
    let cut = stream(max, input.pieces(input.payload));
    assert_eq!(whole, cut);
});
