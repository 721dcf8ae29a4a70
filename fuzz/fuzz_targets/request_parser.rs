//! ServerConn fed arbitrary bytes, cut at split points the input picks.
//!
//! Every request is answered (at once, or deferred and answered in reverse
//! order), the output is drained, the peer then closes. Checks: no panic;
//! the requests parsed and the answers written are exactly those of a run
//! fed everything at once; the connection ends finished, with the conn's
//! own error answer (if any) last, 4xx or 501, closing.

#![no_main]

mod common;

use common::{Input, Rng};
use conntest::event::clock::WallAnchor;
use conntest::http::server::{BodySource, Request, Response, ServerConn, ServerLimits};
use conntest::http::Method;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Seen {
    seq: u64,
    method: Method,
    path: String,
    body: Vec<u8>,
    authorization: Option<Vec<u8>>,
}

struct Pieces(u32);

impl BodySource for Pieces {
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(format!("[{}]", self.0).as_bytes());
        self.0 -= 1;
        self.0 == 0
    }
}

fn limits(flags: u8) -> ServerLimits {
    match flags & 3 {
        0 => ServerLimits::default(),
        1 => ServerLimits {
            max_head: 64,
            max_body: 32,
            max_pipelined: 2,
            ..ServerLimits::default()
        },
        2 => ServerLimits {
            max_head: 256,
            max_body: 1024,
            max_pipelined: 4,
            ..ServerLimits::default()
        },
        _ => ServerLimits {
            max_head: 1024,
            max_body: 16,
            max_pipelined: 1,
            ..ServerLimits::default()
        },
    }
}

/// The answer to a request: a function of the request only, so both runs
/// write the same bytes. No answer carries input bytes, so "HTTP/1.1 "
/// only ever starts a response in the output. No streamed answer when
/// answers are deferred: to an HTTP/1.0 request it closes the connection,
/// dropping the requests read ahead, and how many were read ahead depends
/// on the split.
fn answer(flags: u8, r: &Seen) -> Response {
    let seq = r.seq.to_string();
    let kinds = if flags & 4 != 0 { 3 } else { 4 };
    let response = match (r.seq + (flags >> 4) as u64) % kinds {
        0 => Response::empty(200),
        1 => Response::json(201, format!("{{\"len\":{}}}", r.body.len()).into_bytes()),
        2 => Response::error(404, "not here"),
        _ => Response::stream(200, Box::new(Pieces(r.body.len() as u32 % 5 + 1))),
    };
    response.with_header("X-Fuzz-Seq", seq)
}

struct Run {
    flags: u8,
    conn: ServerConn,
    seen: Vec<Seen>,
    pending: Vec<usize>,
    output: Vec<u8>,
    /// Drains the output in random amounts when set.
    drain_rng: Option<Rng>,
}

impl Run {
    fn new(flags: u8, drain_rng: Option<Rng>) -> Run {
        Run {
            flags,
            conn: ServerConn::new(limits(flags), WallAnchor::fixed(0, 0), 0),
            seen: Vec::new(),
            pending: Vec::new(),
            output: Vec::new(),
            drain_rng,
        }
    }

    fn record(&mut self, r: Request) {
        self.pending.push(self.seen.len());
        self.seen.push(Seen {
            seq: r.seq,
            method: r.method,
            path: r.path,
            body: r.body,
            authorization: r.authorization,
        });
    }

    fn answer_pending(&mut self) {
        let defer = self.flags & 4 != 0;
        let mut pending = std::mem::take(&mut self.pending);
        if defer {
            pending.reverse();
        }
        for i in pending {
            let response = answer(self.flags, &self.seen[i]);
            self.conn.respond(self.seen[i].seq, response, 0);
        }
    }

    fn drain(&mut self) {
        loop {
            let out = self.conn.poll_output();
            if out.is_empty() {
                break;
            }
            let n = match &mut self.drain_rng {
                Some(rng) => 1 + rng.below(out.len()),
                None => out.len(),
            };
            self.output.extend_from_slice(&out[..n]);
            self.conn.advance_output(n);
        }
    }

    /// Reads every request the input holds, answering as it goes.
    fn pump(&mut self) {
        let defer = self.flags & 4 != 0;
        loop {
            let mut progressed = false;
            while let Some(r) = self.conn.next_request(0) {
                progressed = true;
                self.record(r);
                if !defer {
                    self.answer_pending();
                }
            }
            self.answer_pending();
            self.drain();
            // Poked for coverage: these must not panic in any state.
            let _ = (
                self.conn.wants_input(),
                self.conn.is_idle(),
                self.conn.is_mid_request(),
                self.conn.poll_timeout(),
            );
            if !progressed {
                break;
            }
        }
    }

    fn finish(&mut self) {
        self.conn.receive_eof();
        self.pump();
        assert!(
            self.conn.is_finished(),
            "connection not finished after EOF and all answers"
        );
        self.conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0);
        assert!(self.conn.next_request(0).is_none(), "request read after EOF");
    }
}

/// The output cut into responses.
fn responses(output: &[u8]) -> Vec<&[u8]> {
    let marker = b"HTTP/1.1 ";
    let mut starts: Vec<usize> = output
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| w == marker)
        .map(|(i, _)| i)
        .collect();
    assert!(
        output.is_empty() || starts.first() == Some(&0),
        "output does not start with a status line"
    );
    starts.push(output.len());
    starts.windows(2).map(|w| &output[w[0]..w[1]]).collect()
}

fn is_conn_error(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    !text.contains("X-Fuzz-Seq") && !text.starts_with("HTTP/1.1 100 ")
}

fn status(response: &[u8]) -> &[u8] {
    &response[9..12]
}

fn check_error_is_last(responses: &[&[u8]]) {
    for (i, r) in responses.iter().enumerate() {
        if is_conn_error(r) {
            assert_eq!(i, responses.len() - 1, "an answer follows an error answer");
            assert!(status(r)[0] == b'4' || status(r) == b"501", "error status");
            let text = String::from_utf8_lossy(r);
            assert!(
                text.contains("Connection: close\r\n"),
                "error answer without close"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };

    let mut whole = Run::new(input.flags, None);
    whole.conn.receive(input.payload, 0);
    whole.pump();
    whole.finish();

    let drain_rng = (input.flags & 8 != 0).then(|| input.rng());
    let mut split = Run::new(input.flags, drain_rng);
    for piece in input.pieces(input.payload) {
        split.conn.receive(piece, 0);
        split.pump();
    }
    split.finish();

    assert_eq!(whole.seen, split.seen, "requests depend on the split");
    for (i, s) in whole.seen.iter().enumerate() {
        assert_eq!(s.seq, i as u64, "sequence numbers");
    }

    let a = responses(&whole.output);
    let b = responses(&split.output);
    check_error_is_last(&a);
    check_error_is_last(&b);
    assert_eq!(a, b, "answers depend on the split");
});
