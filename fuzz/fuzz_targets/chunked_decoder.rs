//! ChunkedDecoder fed arbitrary bytes, cut at split points the input picks.
//!
//! Checks: no panic; the payload, the bytes consumed, the result (done, not
//! yet done, or the error) and the running total are exactly those of a
//! decoder fed everything at once; before the end every byte fed is
//! consumed, after it none; a finished body's payload is its total and
//! within the limit.

#![no_main]

mod common;

use common::Input;
use conntest::http::chunked::{ChunkedDecoder, ChunkedError};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Outcome {
    /// Bytes consumed, known only while no error came.
    consumed: Option<usize>,
    result: Result<bool, ChunkedError>,
    payload: Vec<u8>,
    total: u64,
}

fn run<'a>(max: u64, keep: bool, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max);
    let mut payload = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let was_done = decoder.is_done();
        let sink = keep.then_some(&mut payload);
        match decoder.decode(piece, sink) {
            Ok(used) => {
                assert!(used <= piece.len());
                if was_done {
                    assert_eq!(used, 0, "consumed past the end of the body");
                } else if !decoder.is_done() {
                    assert_eq!(used, piece.len(), "unconsumed bytes before the end");
                }
                consumed += used;
            }
            Err(e) => {
                return Outcome {
                    consumed: None,
                    result: Err(e),
                    payload,
                    total: decoder.total(),
                }
            }
        }
    }
    Outcome {
        consumed: Some(consumed),
        result: Ok(decoder.is_done()),
        payload,
        total: decoder.total(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = match input.flags & 3 {
        0 => u64::MAX,
        1 => 16,
        2 => 1024,
        _ => 0,
    };
    let keep = input.flags & 4 == 0;

    let whole = run(max, keep, [input.payload]);
    let split = run(max, keep, input.pieces(input.payload));
    assert_eq!(whole, split, "decoding depends on the split");

    if !keep {
        assert!(whole.payload.is_empty(), "payload kept when only counting");
    }
    if whole.result == Ok(true) {
        assert!(whole.total <= max, "body over the limit");
        if keep {
            assert_eq!(whole.payload.len() as u64, whole.total);
        }
    }
    if whole.result.is_err() && keep {
        assert!(whole.payload.len() as u64 <= whole.total);
    }
});
