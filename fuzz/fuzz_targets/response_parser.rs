//! ClientConn fed arbitrary bytes after a few requests, cut at split points
//! the input picks.
//!
//! The first payload byte says which requests are HEAD (bit i for request
//! i); the flags pick the limits, whether bodies are discarded, and how many
//! requests are sent. Checks: no panic; the responses (bodies taken piece
//! by piece with `take_partial_body` in the split run), the error and the
//! end-of-file outcome are exactly those of a run fed everything at once;
//! no interim response comes out; HEAD answers and discarded bodies are
//! empty; no more responses than requests.

#![no_main]

mod common;

use common::{Input, Rng};
use conntest::http::client::{ClientConn, ClientError, ClientLimits};
use conntest::http::Method;
use libfuzzer_sys::fuzz_target;

fn limits(flags: u8) -> ClientLimits {
    let discard_body = flags & 4 != 0;
    match flags & 3 {
        0 => ClientLimits {
            discard_body,
            ..ClientLimits::default()
        },
        1 => ClientLimits {
            max_head: 64,
            max_body: 32,
            discard_body,
        },
        2 => ClientLimits {
            max_head: 256,
            max_body: 1024,
            discard_body,
        },
        _ => ClientLimits {
            max_head: 1024,
            max_body: 16,
            discard_body,
        },
    }
}

#[derive(Debug, PartialEq)]
enum End {
    /// Stopped at an error before the end of the input.
    Error(ClientError),
    /// What `receive_eof` said.
    Eof(Result<Option<(u16, Vec<u8>, bool)>, ClientError>),
}

#[derive(Debug, PartialEq)]
struct Outcome {
    responses: Vec<(u16, Vec<u8>, bool)>,
    end: End,
}

struct Run {
    conn: ClientConn,
    responses: Vec<(u16, Vec<u8>, bool)>,
    /// Body bytes taken while the response streamed in.
    partial: Vec<u8>,
    take_rng: Option<Rng>,
}

impl Run {
    fn new(flags: u8, heads: &[bool], take_rng: Option<Rng>) -> Run {
        let mut conn = ClientConn::new(limits(flags));
        for (i, &head) in heads.iter().enumerate() {
            let method = if head { Method::Head } else { Method::Get };
            let path = format!("/r/{i}");
            conn.send(method, "h:1", &path, &[] as &[(&str, &str)], b"");
        }
        let n = conn.poll_output().len();
        conn.advance_output(n);
        Run {
            conn,
            responses: Vec::new(),
            partial: Vec::new(),
            take_rng,
        }
    }

    fn push(&mut self, r: conntest::http::client::Response) {
        let mut body = std::mem::take(&mut self.partial);
        body.extend_from_slice(&r.body);
        self.responses.push((r.status, body, r.close));
    }

    fn feed(&mut self, piece: &[u8]) -> Result<(), ClientError> {
        self.conn.receive(piece);
        loop {
            match self.conn.next_response()? {
                Some(r) => self.push(r),
                None => {
                    let _ = self.conn.pending_status();
                    if let Some(rng) = &mut self.take_rng {
                        if rng.below(2) == 0 {
                            self.conn.take_partial_body(&mut self.partial);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    fn run<'a>(mut self, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        for piece in pieces {
            if let Err(e) = self.feed(piece) {
                return Outcome {
                    responses: self.responses,
                    end: End::Error(e),
                };
            }
        }
        let eof = match self.conn.receive_eof() {
            Ok(Some(r)) => {
                self.push(r);
                Ok(self.responses.last().cloned())
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        Outcome {
            responses: self.responses,
            end: End::Eof(eof),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let Some((&mask, payload)) = input.payload.split_first() else {
        return;
    };
    let count = ((input.flags >> 3) & 7) as usize + 1;
    let heads: Vec<bool> = (0..count).map(|i| mask >> i & 1 == 1).collect();

    let whole = Run::new(input.flags, &heads, None).run([payload]);
    let split = Run::new(input.flags, &heads, Some(input.rng())).run(input.pieces(payload));
    assert_eq!(whole, split, "outcome depends on the split");

    assert!(
        whole.responses.len() <= count,
        "more responses than requests"
    );
    for (i, (status, body, _)) in whole.responses.iter().enumerate() {
        assert!(
            !(100..200).contains(status) || *status == 101,
            "interim response {status} came out"
        );
        if heads[i] || input.flags & 4 != 0 {
            assert!(body.is_empty(), "body for a HEAD or discarded response");
        }
        assert!(
            body.len() as u64 <= limits(input.flags).max_body,
            "body over the limit"
        );
        if *status == 204 || *status == 304 {
            assert!(body.is_empty(), "body for a {status}");
        }
    }
});
