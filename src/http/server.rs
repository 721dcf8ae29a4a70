//! Server side of one HTTP/1.1 connection, sans-IO.
//!
//! Bytes from the socket go in through [`ServerConn::receive`]; complete
//! requests come out of [`ServerConn::next_request`]; the application answers
//! each one, in any order, with [`ServerConn::respond`]; the bytes to write
//! come out of [`ServerConn::poll_output`] in request order (pipelining).
//! Protocol errors (malformed head, oversized head or body, bad framing) are
//! answered here with a JSON error, after which the connection closes.

use super::chunked::{ChunkedDecoder, ChunkedError};
use super::{error_body, framing, has_token, push_decimal, reason_phrase, Method};
use std::collections::VecDeque;

/// Bounds on what one connection may make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Largest request head (request line and headers), else 431.
    pub max_head: usize,
    /// Largest request body, else 413.
    pub max_body: u64,
    /// Requests read ahead of their answers; past this the connection is not
    /// read until answers drain, so a pipelining client cannot grow memory.
    pub max_pipelined: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
            max_pipelined: 64,
        }
    }
}

const MAX_HEADERS: usize = 64;
/// Output held before a streamed body is asked for more.
const STREAM_HIGH_WATER: usize = 256 * 1024;

/// One complete request.
#[derive(Debug)]
pub struct Request {
    /// Position of the request on its connection; answer with this.
    pub seq: u64,
    pub method: Method,
    /// The path of the target, without query string.
    pub path: String,
    pub body: Vec<u8>,
    pub authorization: Option<Vec<u8>>,
}

impl Request {
    /// A request built by hand (tests, benchmarks), as the first on its
    /// connection and without credentials.
    pub fn new(method: Method, path: &str, body: Vec<u8>) -> Request {
        Request {
            seq: 0,
            method,
            path: path.to_owned(),
            body,
            authorization: None,
        }
    }
}

/// Produces a long response body piece by piece, so a large answer is never
/// held whole in memory.
pub trait BodySource: Send {
    /// Appends the next piece to `out`; returns true when the body is complete.
    fn fill(&mut self, out: &mut Vec<u8>) -> bool;
}

pub enum Body {
    Empty,
    Json(Vec<u8>),
    Stream(Box<dyn BodySource>),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Json(body),
        }
    }

    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, error_body(message))
    }

    pub fn stream(status: u16, source: Box<dyn BodySource>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Stream(source),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

enum Ready {
    Bytes(Vec<u8>),
    Stream {
        /// The response head, written before the first piece.
        head: Vec<u8>,
        source: Box<dyn BodySource>,
        chunked: bool,
    },
}

/// An answer owed, in request order.
struct Slot {
    /// `None` for an interim `100 Continue`.
    seq: Option<u64>,
    head_only: bool,
    http10: bool,
    /// Close the connection once this answer is written.
    close: bool,
    ready: Option<Ready>,
}

enum ReadState {
    Head,
    Body {
        request: Request,
        remaining: u64,
    },
    Chunked {
        request: Request,
        decoder: ChunkedDecoder,
    },
    /// No more requests are read on this connection.
    Stopped,
}

pub struct ServerConn {
    limits: ServerLimits,
    input: Vec<u8>,
    state: ReadState,
    next_seq: u64,
    slots: VecDeque<Slot>,
    output: Vec<u8>,
    written: usize,
    /// Set when the answer carrying `close` has been moved to `output`.
    closing: bool,
    peer_closed: bool,
}

impl ServerConn {
    pub fn new(limits: ServerLimits) -> Self {
        ServerConn {
            limits,
            input: Vec::new(),
            state: ReadState::Head,
            next_seq: 0,
            slots: VecDeque::new(),
            output: Vec::new(),
            written: 0,
            closing: false,
            peer_closed: false,
        }
    }

    /// Feeds bytes read from the peer.
    pub fn receive(&mut self, data: &[u8]) {
        if !matches!(self.state, ReadState::Stopped) {
            self.input.extend_from_slice(data);
        }
    }

    /// The peer closed its sending side: finish the answers owed, then close.
    /// A request cut short is dropped; it had no answer to wait for.
    pub fn receive_eof(&mut self) {
        self.peer_closed = true;
        if let ReadState::Body { request, .. } | ReadState::Chunked { request, .. } =
            std::mem::replace(&mut self.state, ReadState::Stopped)
        {
            self.slots.retain(|s| s.seq != Some(request.seq));
        }
        self.state = ReadState::Stopped;
        self.input = Vec::new();
    }

    /// Whether the loop should read from the socket now. False while the
    /// pipeline is full or once no more requests will be read.
    pub fn wants_input(&self) -> bool {
        !matches!(self.state, ReadState::Stopped) && self.slots.len() < self.limits.max_pipelined
    }

    /// No request in progress and no answer owed: the connection is idle.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ReadState::Head) && self.input.is_empty() && self.slots.is_empty()
    }

    /// A request has begun arriving but is not complete.
    pub fn is_mid_request(&self) -> bool {
        match self.state {
            ReadState::Head => !self.input.is_empty(),
            ReadState::Body { .. } | ReadState::Chunked { .. } => true,
            ReadState::Stopped => false,
        }
    }

    /// Everything owed is written and the connection should now close.
    pub fn is_finished(&self) -> bool {
        let done_reading = self.closing || self.peer_closed;
        done_reading && self.slots.is_empty() && self.written == self.output.len()
    }

    /// Parses the next complete request, if the input holds one.
    pub fn next_request(&mut self) -> Option<Request> {
        loop {
            match &mut self.state {
                ReadState::Stopped => return None,
                ReadState::Head => {
                    // A full pipeline waits for answers before reading on.
                    if self.slots.len() >= self.limits.max_pipelined || !self.parse_head() {
                        return None;
                    }
                }
                ReadState::Body { remaining, request } => {
                    let take = (*remaining).min(self.input.len() as u64) as usize;
                    request.body.extend_from_slice(&self.input[..take]);
                    self.input.drain(..take);
                    *remaining -= take as u64;
                    if *remaining > 0 {
                        return None;
                    }
                    return self.finish_request();
                }
                ReadState::Chunked { request, decoder } => {
                    match decoder.decode(&self.input, Some(&mut request.body)) {
                        Ok(used) => {
                            self.input.drain(..used);
                            if !decoder.is_done() {
                                return None;
                            }
                            return self.finish_request();
                        }
                        Err(ChunkedError::TooLarge) => {
                            self.fail(413, &self.too_large_message());
                        }
                        Err(ChunkedError::Malformed(why)) => {
                            self.fail(400, &format!("malformed chunked body: {why}"));
                        }
                    }
                }
            }
        }
    }

    fn too_large_message(&self) -> String {
        format!(
            "request body larger than the limit of {} bytes (--max-body)",
            self.limits.max_body
        )
    }

    fn finish_request(&mut self) -> Option<Request> {
        match std::mem::replace(&mut self.state, ReadState::Head) {
            ReadState::Body { request, .. } | ReadState::Chunked { request, .. } => {
                if self.slots.back().is_some_and(|s| s.close) {
                    self.state = ReadState::Stopped;
                }
                Some(request)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Parses a request head; returns false when more input is needed or
    /// the request was refused.
    fn parse_head(&mut self) -> bool {
        // Empty lines between pipelined requests are allowed and skipped.
        let blank = self
            .input
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            self.input.drain(..blank);
        }
        if self.input.is_empty() {
            return false;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        // Only the first max_head + 1 bytes decide (431 or 400 alike),
        // whatever the reads were.
        let window = self.input.len().min(self.limits.max_head.saturating_add(1));
        let head_len = match req.parse(&self.input[..window]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.input.len() > self.limits.max_head {
                    self.fail(431, &self.head_too_large_message());
                }
                return false;
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.fail(431, &format!("more than {MAX_HEADERS} request headers"));
                return false;
            }
            Err(e) => {
                self.fail(400, &format!("malformed request: {e}"));
                return false;
            }
        };
        if head_len > self.limits.max_head {
            self.fail(431, &self.head_too_large_message());
            return false;
        }
        let method = Method::parse(req.method.unwrap_or(""));
        let target = req.path.unwrap_or("/");
        let http10 = req.version == Some(0);
        let framing = match framing(req.headers) {
            Ok(f) => f,
            Err(why) => {
                let status = if why.starts_with("unsupported") {
                    501
                } else {
                    400
                };
                self.fail(status, why);
                return false;
            }
        };
        let expect_continue = req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("expect") && has_token(h.value, "100-continue"));
        let authorization = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value.to_vec());
        let path = path_of(target).to_owned();
        self.input.drain(..head_len);

        let keep_alive = if http10 {
            framing.connection_keep_alive && !framing.connection_close
        } else {
            !framing.connection_close
        };
        let length = if framing.chunked {
            None
        } else {
            Some(framing.content_length.unwrap_or(0))
        };
        if length.is_some_and(|n| n > self.limits.max_body) {
            self.fail(413, &self.too_large_message());
            return false;
        }
        if expect_continue && !http10 && length != Some(0) {
            self.slots.push_back(Slot {
                seq: None,
                head_only: false,
                http10: false,
                close: false,
                ready: Some(Ready::Bytes(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())),
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq: Some(seq),
            head_only: method == Method::Head,
            http10,
            close: !keep_alive,
            ready: None,
        });
        let request = Request {
            seq,
            method,
            path,
            body: Vec::with_capacity(length.unwrap_or(0) as usize),
            authorization,
        };
        self.state = match length {
            Some(remaining) => ReadState::Body { request, remaining },
            None => ReadState::Chunked {
                request,
                decoder: ChunkedDecoder::new(self.limits.max_body),
            },
        };
        self.flush_ready();
        true
    }

    fn head_too_large_message(&self) -> String {
        format!("request head larger than {} bytes", self.limits.max_head)
    }

    /// Refuses the request being read (a timeout, say): answers `status`
    /// with a JSON error, in order, and closes.
    pub fn abort_request(&mut self, status: u16, message: &str) {
        if !matches!(self.state, ReadState::Stopped) {
            self.fail(status, message);
        }
    }

    /// Refuses the request being read: answers `status` and closes.
    fn fail(&mut self, status: u16, message: &str) {
        let response = Response::error(status, message);
        match std::mem::replace(&mut self.state, ReadState::Stopped) {
            ReadState::Body { request, .. } | ReadState::Chunked { request, .. } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.seq == Some(request.seq)) {
                    slot.close = true;
                }
                self.respond(request.seq, response);
            }
            _ => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.slots.push_back(Slot {
                    seq: Some(seq),
                    head_only: false,
                    http10: false,
                    close: true,
                    ready: None,
                });
                self.respond(seq, response);
            }
        }
        self.input = Vec::new();
    }

    /// Answers request `seq`. Answers to requests already gone (the slot was
    /// dropped when the peer closed) are ignored.
    pub fn respond(&mut self, seq: u64, response: Response) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.seq == Some(seq)) else {
            return;
        };
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut head, response.status as u64);
        head.push(b' ');
        head.extend_from_slice(reason_phrase(response.status).as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &response.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if matches!(response.body, Body::Json(_) | Body::Stream(_)) {
            head.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        // A streamed body to an HTTP/1.0 peer is delimited by closing.
        let streamed = matches!(response.body, Body::Stream(_));
        if streamed && slot.http10 {
            slot.close = true;
        }
        if slot.close {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if slot.http10 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        let ready = match response.body {
            Body::Empty => {
                head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
                Ready::Bytes(head)
            }
            Body::Json(body) => {
                head.extend_from_slice(b"Content-Length: ");
                push_decimal(&mut head, body.len() as u64);
                head.extend_from_slice(b"\r\n\r\n");
                if !slot.head_only {
                    head.extend_from_slice(&body);
                }
                Ready::Bytes(head)
            }
            Body::Stream(source) => {
                let chunked = !slot.http10;
                if chunked {
                    head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                head.extend_from_slice(b"\r\n");
                if slot.head_only {
                    Ready::Bytes(head)
                } else {
                    Ready::Stream {
                        head,
                        source,
                        chunked,
                    }
                }
            }
        };
        slot.ready = Some(ready);
        self.flush_ready();
    }

    /// Moves answers that are next in order into the output buffer.
    fn flush_ready(&mut self) {
        while let Some(slot) = self.slots.front_mut() {
            match &mut slot.ready {
                None => return,
                Some(Ready::Bytes(bytes)) => {
                    if self.output.is_empty() {
                        std::mem::swap(&mut self.output, bytes);
                        self.written = 0;
                    } else {
                        self.output.extend_from_slice(bytes);
                    }
                }
                Some(Ready::Stream {
                    head,
                    source,
                    chunked,
                }) => {
                    self.output.append(head);
                    let mut piece = Vec::new();
                    while self.output.len() - self.written < STREAM_HIGH_WATER {
                        piece.clear();
                        let done = source.fill(&mut piece);
                        if *chunked && !piece.is_empty() {
                            self.output
                                .extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                            self.output.extend_from_slice(&piece);
                            self.output.extend_from_slice(b"\r\n");
                        } else {
                            self.output.extend_from_slice(&piece);
                        }
                        if done {
                            if *chunked {
                                self.output.extend_from_slice(b"0\r\n\r\n");
                            }
                            break;
                        }
                        if piece.is_empty() {
                            return;
                        }
                    }
                    if self.output.len() - self.written >= STREAM_HIGH_WATER {
                        return;
                    }
                }
            }
            if slot.close {
                self.closing = true;
                self.state = ReadState::Stopped;
                self.slots.clear();
                self.input = Vec::new();
                return;
            }
            self.slots.pop_front();
        }
    }

    /// Bytes waiting to be written to the socket.
    pub fn poll_output(&mut self) -> &[u8] {
        if self.written == self.output.len() {
            self.flush_ready();
        }
        &self.output[self.written..]
    }

    /// Records that `n` bytes of [`ServerConn::poll_output`] were written.
    pub fn advance_output(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.output.len() {
            self.output.clear();
            self.written = 0;
            self.flush_ready();
        }
    }
}

/// The path of a request target: origin-form as is, absolute-form without
/// scheme and authority, and without the query string.
fn path_of(target: &str) -> &str {
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => target,
    };
    path.split(['?', '#']).next().unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            max_head: 1024,
            max_body: 64,
            max_pipelined: 8,
        }
    }

    fn output(conn: &mut ServerConn) -> String {
        let out = String::from_utf8_lossy(conn.poll_output()).into_owned();
        let n = out.len();
        conn.advance_output(n);
        out
    }

    const TWO_REQUESTS: &[u8] = b"POST /test-groups/g/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /test-groups/g/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";

    #[test]
    fn every_split_point_yields_the_same_requests() {
        for split in 0..=TWO_REQUESTS.len() {
            let mut conn = ServerConn::new(limits());
            let mut got = Vec::new();
            for part in [&TWO_REQUESTS[..split], &TWO_REQUESTS[split..]] {
                conn.receive(part);
                while let Some(r) = conn.next_request() {
                    got.push((r.seq, r.path, r.body));
                }
            }
            assert_eq!(
                got,
                vec![
                    (0, "/test-groups/g/1".to_owned(), b"hello".to_vec()),
                    (1, "/test-groups/g/2".to_owned(), b"abc".to_vec())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut conn = ServerConn::new(limits());
        let mut got = 0;
        for b in TWO_REQUESTS {
            conn.receive(std::slice::from_ref(b));
            while conn.next_request().is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 2);
    }

    #[test]
    fn answers_go_out_in_request_order() {
        let mut conn = ServerConn::new(limits());
        conn.receive(TWO_REQUESTS);
        let a = conn.next_request().unwrap();
        let b = conn.next_request().unwrap();
        conn.respond(b.seq, Response::error(404, "second"));
        assert_eq!(output(&mut conn), "", "second answer waits for the first");
        conn.respond(a.seq, Response::empty(200));
        let out = output(&mut conn);
        let first = out.find("200 OK").unwrap();
        let second = out.find("404 Not Found").unwrap();
        assert!(first < second);
        assert!(conn.is_idle());
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let mut conn = ServerConn::new(limits());
        conn.receive(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(conn.next_request().is_none());
        assert_eq!(output(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
        conn.receive(b"abc");
        let r = conn.next_request().unwrap();
        assert_eq!(r.body, b"abc");
        conn.respond(r.seq, Response::empty(200));
        assert!(output(&mut conn).starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn head_gets_headers_only() {
        let mut conn = ServerConn::new(limits());
        conn.receive(b"HEAD /healthz HTTP/1.1\r\n\r\n");
        let r = conn.next_request().unwrap();
        assert_eq!(r.method, Method::Head);
        conn.respond(r.seq, Response::json(200, b"{\"ok\":true}".to_vec()));
        let out = output(&mut conn);
        assert!(out.contains("Content-Length: 11\r\n"));
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn http10_and_connection_close_close_after_the_answer() {
        for req in [
            &b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let mut conn = ServerConn::new(limits());
            conn.receive(req);
            let r = conn.next_request().unwrap();
            assert!(conn.next_request().is_none(), "nothing read after close");
            conn.respond(r.seq, Response::empty(200));
            assert!(output(&mut conn).contains("Connection: close"));
            assert!(conn.is_finished());
        }
    }

    #[test]
    fn http10_keep_alive_is_honoured() {
        let mut conn = ServerConn::new(limits());
        conn.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = conn.next_request().unwrap();
        conn.respond(r.seq, Response::empty(200));
        assert!(output(&mut conn).contains("Connection: keep-alive"));
        assert!(!conn.is_finished());
    }

    fn refused(input: &[u8]) -> String {
        let mut conn = ServerConn::new(limits());
        conn.receive(input);
        assert!(conn.next_request().is_none());
        let out = output(&mut conn);
        assert!(conn.is_finished(), "closes after an error");
        out
    }

    #[test]
    fn limits_and_malformed_input_get_clear_errors() {
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(refused(big_head.as_bytes()).starts_with("HTTP/1.1 431"));
        let partial_big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert!(refused(partial_big.as_bytes()).starts_with("HTTP/1.1 431"));
        let out = refused(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 413") && out.contains("--max-body"));
        assert!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n")
                .starts_with("HTTP/1.1 413")
        );
        assert!(refused(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .starts_with("HTTP/1.1 400")
        );
        assert!(refused(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .starts_with("HTTP/1.1 400"));
        assert!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
                .starts_with("HTTP/1.1 501")
        );
        assert!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .contains("{\"error\":\"malformed chunked body")
        );
    }

    #[test]
    fn pipeline_depth_is_bounded() {
        let mut conn = ServerConn::new(limits());
        conn.receive(&b"GET / HTTP/1.1\r\n\r\n".repeat(20));
        let mut seqs = Vec::new();
        while let Some(r) = conn.next_request() {
            seqs.push(r.seq);
        }
        assert_eq!(seqs.len(), 8);
        assert!(!conn.wants_input());
        for s in seqs {
            conn.respond(s, Response::empty(200));
        }
        output(&mut conn);
        assert!(conn.wants_input());
        assert_eq!(std::iter::from_fn(|| conn.next_request()).count(), 8);
    }

    #[test]
    fn peer_gone_mid_request_drops_it_but_answers_earlier_ones() {
        let mut conn = ServerConn::new(limits());
        conn.receive(b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        let a = conn.next_request().unwrap();
        assert!(conn.next_request().is_none());
        conn.receive_eof();
        assert!(!conn.is_finished());
        conn.respond(a.seq, Response::empty(200));
        assert!(output(&mut conn).starts_with("HTTP/1.1 200"));
        assert!(conn.is_finished());
    }

    struct Counter(u32);
    impl BodySource for Counter {
        fn fill(&mut self, out: &mut Vec<u8>) -> bool {
            self.0 += 1;
            out.extend_from_slice(format!("[{}]", self.0).as_bytes());
            self.0 == 3
        }
    }

    #[test]
    fn streamed_body_is_chunked() {
        let mut conn = ServerConn::new(limits());
        conn.receive(b"GET /big HTTP/1.1\r\n\r\n");
        let r = conn.next_request().unwrap();
        conn.respond(r.seq, Response::stream(200, Box::new(Counter(0))));
        let out = output(&mut conn);
        assert!(
            out.contains(
                "Transfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n3\r\n[2]\r\n3\r\n[3]\r\n0\r\n\r\n"
            ),
            "{out}"
        );
        assert!(conn.is_idle());
    }

    #[test]
    fn absolute_form_and_query_are_reduced_to_the_path() {
        assert_eq!(path_of("http://h:1/test-groups?x=1"), "/test-groups");
        assert_eq!(path_of("/a/b?c"), "/a/b");
        assert_eq!(path_of("http://h"), "/");
    }
}
