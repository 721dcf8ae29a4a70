//! Server side of one HTTP/1.1 connection, sans-IO.
//!
//! Bytes from the socket go in through [`ServerConn::receive`]; complete
//! requests come out of [`ServerConn::next_request`]; the application answers
//! each one, in any order, with [`ServerConn::respond`]; the bytes to write
//! come out of [`ServerConn::poll_output`] in request order (pipelining).
//! Protocol errors (malformed head, oversized head or body, bad framing) are
//! answered here with a JSON error, after which the connection closes.
//!
//! The machine owns its time, as quinn-proto's `Connection` does: every call
//! that moves it is handed `now`, [`ServerConn::poll_timeout`] names its next
//! deadline (the request being read, idleness, the closing drain) and
//! [`ServerConn::handle_timeout`] acts on it. The loop keeps only the socket
//! and one timer per connection.
//!
//! Its life: open (requests in, answers out) -> finished (everything owed is
//! written; the loop shuts the write side and calls [`ServerConn::shut_down`])
//! -> draining (the peer's leftovers are read and dropped, at most
//! `drain_timeout`) -> closed ([`ServerConn::is_closed`]).

use super::chunked::{ChunkedDecoder, ChunkedError};
use super::date::DateClock;
use super::{error_body, framing, has_token, push_decimal, reason_phrase, Method};
use crate::event::clock::{Nanos, WallAnchor, MILLISECOND, SECOND};
use std::collections::VecDeque;
use std::mem::MaybeUninit;

/// Bounds on what one connection may make the server hold, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Largest request head (request line and headers), else 431.
    pub max_head: usize,
    /// Largest request body, else 413.
    pub max_body: u64,
    /// Requests read ahead of their answers; past this the connection is not
    /// read until answers drain, so a pipelining client cannot grow memory.
    pub max_pipelined: usize,
    /// A request must arrive whole within this of its first byte, else 408
    /// (slowloris). The clock does not run while the pipeline is full: the
    /// server, not the peer, is then the one waiting.
    pub request_timeout: Nanos,
    /// A connection with nothing to read or answer is closed after this.
    pub idle_timeout: Nanos,
    /// How long a closing connection may take to read out the peer's leftovers.
    pub drain_timeout: Nanos,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
            max_pipelined: 64,
            request_timeout: 10 * SECOND,
            idle_timeout: 60 * SECOND,
            drain_timeout: 2 * SECOND,
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
    /// The request head as it came (request line and header lines), kept
    /// only while the machine is told to ([`ServerConn::keep_heads`]), for
    /// a group that records header values.
    pub head: Option<Box<[u8]>>,
    /// The subject of the client certificate its connection presented
    /// (mutual TLS); the loop sets it.
    pub client_cert_subject: Option<std::sync::Arc<str>>,
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
            head: None,
            client_cert_subject: None,
        }
    }
}

/// Produces a long response body piece by piece, so a large answer is never
/// held whole in memory.
pub trait BodySource: Send {
    /// Appends the next piece to `out`; returns true when the body is
    /// complete. Appending nothing and returning false means "nothing yet":
    /// it is asked again when the output drains or the loop services the
    /// connection.
    fn fill(&mut self, out: &mut Vec<u8>) -> bool;

    /// The body cannot be completed (its source failed): the answer stops
    /// where it is and the connection closes without the chunked
    /// terminator, so the peer sees an incomplete answer rather than a
    /// short one.
    fn failed(&self) -> bool {
        false
    }
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

/// Where a streamed answer stands. Each step happens once: the head, then
/// the body's pieces, then (chunked) the terminator; `Done` writes nothing.
enum StreamState {
    /// The response head, written before the first piece.
    Head(Vec<u8>),
    Pieces,
    Done,
    /// The source failed: nothing more is written, the connection closes.
    Failed,
}

/// A streamed answer being encoded into the output.
struct BodyStream {
    source: Box<dyn BodySource>,
    /// Chunked (HTTP/1.1), or delimited by closing (HTTP/1.0).
    chunked: bool,
    state: StreamState,
    piece: Vec<u8>,
}

impl BodyStream {
    /// Appends to `out` until it holds `limit` bytes or the body is complete.
    /// True once the whole answer, terminator included, is in `out`.
    fn encode(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        loop {
            match &mut self.state {
                StreamState::Head(head) => {
                    out.append(head);
                    self.state = StreamState::Pieces;
                }
                StreamState::Pieces => {
                    if out.len() >= limit {
                        return false;
                    }
                    self.piece.clear();
                    let complete = self.source.fill(&mut self.piece);
                    if self.source.failed() {
                        self.state = StreamState::Failed;
                        return true;
                    }
                    if self.chunked && !self.piece.is_empty() {
                        push_hex(out, self.piece.len());
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&self.piece);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(&self.piece);
                    }
                    if complete {
                        if self.chunked {
                            out.extend_from_slice(b"0\r\n\r\n");
                        }
                        self.state = StreamState::Done;
                    } else if self.piece.is_empty() {
                        // Nothing to send yet; asked again when output drains.
                        return false;
                    }
                }
                StreamState::Done | StreamState::Failed => return true,
            }
        }
    }
}

fn push_hex(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (i * 4)) & 0xf]);
    }
}

enum Ready {
    Bytes(Vec<u8>),
    Stream(BodyStream),
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

/// The connection's life after its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// Our side is shut; the peer's leftovers are read until `until`.
    Draining {
        until: Nanos,
    },
    Closed,
}

/// The outcome of parsing a request head.
enum Head {
    /// A request is being read; go on.
    Parsed,
    /// More bytes are needed.
    Partial,
    /// Refused with an error answer; nothing more is read.
    Refused,
}

pub struct ServerConn {
    limits: ServerLimits,
    /// The `Date` header's text for `now`.
    date: DateClock,
    /// The latest `now` handed in.
    now: Nanos,
    input: Vec<u8>,
    state: ReadState,
    next_seq: u64,
    slots: VecDeque<Slot>,
    output: Vec<u8>,
    written: usize,
    /// Set when the answer carrying `close` has been moved to `output`.
    closing: bool,
    peer_closed: bool,
    life: Life,
    /// When the request now being read began: its first byte, or the moment
    /// a full pipeline freed up for it, whichever is later.
    request_since: Option<Nanos>,
    /// The last time the peer sent bytes or was answered.
    last_active: Nanos,
    /// The server is shutting down ([`ServerConn::go_away`]).
    going_away: bool,
    /// The error this machine answered on its own (there is at most one:
    /// the connection reads nothing after it), for the loop to log.
    refusal: Option<(u16, String)>,
    /// Keep each request's head ([`Request::head`]).
    keep_heads: bool,
}

impl ServerConn {
    /// A connection accepted at `now`.
    pub fn new(limits: ServerLimits, anchor: WallAnchor, now: Nanos) -> Self {
        ServerConn {
            limits,
            date: DateClock::new(anchor),
            now,
            input: Vec::new(),
            state: ReadState::Head,
            next_seq: 0,
            slots: VecDeque::new(),
            output: Vec::new(),
            written: 0,
            closing: false,
            peer_closed: false,
            life: Life::Open,
            request_since: None,
            last_active: now,
            going_away: false,
            refusal: None,
            keep_heads: false,
        }
    }

    /// Whether requests parsed from now on keep their head: off, a request
    /// costs nothing more.
    pub fn keep_heads(&mut self, keep: bool) {
        self.keep_heads = keep;
    }

    /// The status and reason of the error this machine answered itself
    /// (400, 408, 413, 431, 501, 503 while going away), once.
    pub fn take_refusal(&mut self) -> Option<(u16, String)> {
        self.refusal.take()
    }

    /// Feeds bytes read from the peer at `now`. While draining they are
    /// dropped and do not extend the drain.
    pub fn receive(&mut self, data: &[u8], now: Nanos) {
        self.now = now;
        if self.life != Life::Open || matches!(self.state, ReadState::Stopped) || data.is_empty() {
            return;
        }
        self.input.extend_from_slice(data);
        self.last_active = now;
        if self.request_since.is_none() && self.has_room() {
            self.request_since = Some(now);
        }
    }

    /// The peer closed its sending side: the complete requests already
    /// received are still answered; a request cut short is dropped (it has
    /// no answer to wait for); then the connection closes.
    pub fn receive_eof(&mut self) {
        self.peer_closed = true;
        if let Life::Draining { .. } = self.life {
            self.life = Life::Closed;
        }
    }

    /// Whether the loop should read from the socket now: false while the
    /// pipeline is full and once no more requests will be read, true while
    /// draining (to read out the peer's leftovers).
    pub fn wants_input(&self) -> bool {
        match self.life {
            Life::Open => {
                !self.peer_closed && !matches!(self.state, ReadState::Stopped) && self.has_room()
            }
            Life::Draining { .. } => true,
            Life::Closed => false,
        }
    }

    fn has_room(&self) -> bool {
        self.slots.len() < self.limits.max_pipelined
    }

    /// No request in progress and no answer owed: the connection is idle.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ReadState::Head)
            && self.input.is_empty()
            && self.slots.is_empty()
            && self.written == self.output.len()
    }

    /// A request has begun arriving but is not complete.
    pub fn is_mid_request(&self) -> bool {
        match self.state {
            ReadState::Head => !self.input.is_empty(),
            ReadState::Body { .. } | ReadState::Chunked { .. } => true,
            ReadState::Stopped => false,
        }
    }

    /// Everything owed is written and no more requests will be read: the
    /// loop should shut the write side (once its transport has flushed) and
    /// call [`ServerConn::shut_down`].
    pub fn is_finished(&self) -> bool {
        let done_reading = self.closing
            || (self.peer_closed && matches!(self.state, ReadState::Stopped))
            || (self.going_away && self.is_idle());
        self.life == Life::Open
            && done_reading
            && self.slots.is_empty()
            && self.written == self.output.len()
    }

    /// The loop shut the write side at `now`: read out what the peer still
    /// sends (so the kernel does not answer unread bytes with a reset that
    /// could destroy the final answer in flight), then close.
    pub fn shut_down(&mut self, now: Nanos) {
        self.now = now;
        self.life = if self.peer_closed {
            Life::Closed
        } else {
            Life::Draining {
                until: now.saturating_add(self.limits.drain_timeout),
            }
        };
        self.input = Vec::new();
    }

    /// Nothing more will happen on this connection: the loop drops it.
    pub fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// The next instant [`ServerConn::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        match self.life {
            Life::Closed => None,
            Life::Draining { until } => Some(until),
            Life::Open if self.is_idle() => {
                Some(self.last_active.saturating_add(self.limits.idle_timeout))
            }
            Life::Open => self
                .request_since
                .filter(|_| self.is_mid_request() && self.has_room())
                .map(|since| since.saturating_add(self.limits.request_timeout)),
        }
    }

    /// Acts on the deadlines that have passed at `now`: a request not
    /// received in time gets 408 and the connection closes; an idle
    /// connection or a drain that took too long is closed.
    pub fn handle_timeout(&mut self, now: Nanos) {
        self.now = now;
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.life {
            Life::Draining { .. } => self.life = Life::Closed,
            Life::Open if self.is_idle() => self.life = Life::Closed,
            Life::Open => {
                let message = format!(
                    "request not received in full within {} ms",
                    self.limits.request_timeout / MILLISECOND
                );
                self.fail(408, &message);
            }
            Life::Closed => {}
        }
    }

    /// The server is shutting down: the answers owed are still given, a
    /// request not yet read whole (now or later) gets 503 and the connection
    /// closes after it, and once nothing is owed the connection is finished.
    pub fn go_away(&mut self) {
        self.going_away = true;
        if self.is_mid_request() && self.life == Life::Open {
            self.refuse_shutting_down();
        }
    }

    fn refuse_shutting_down(&mut self) {
        self.fail(
            503,
            "the server is shutting down; no new requests are taken",
        );
    }

    /// Parses the next complete request, if the input holds one.
    pub fn next_request(&mut self, now: Nanos) -> Option<Request> {
        self.now = now;
        loop {
            match &mut self.state {
                ReadState::Stopped => return None,
                ReadState::Head => {
                    let blank = self
                        .input
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    // Empty lines between pipelined requests are allowed and skipped.
                    if blank > 0 {
                        self.input.drain(..blank);
                    }
                    if self.input.is_empty() {
                        self.request_since = None;
                        if self.peer_closed {
                            self.state = ReadState::Stopped;
                        }
                        return None;
                    }
                    // A full pipeline waits for answers before reading on,
                    // and its request's clock does not run meanwhile.
                    if !self.has_room() {
                        self.request_since = None;
                        return None;
                    }
                    if self.going_away {
                        self.refuse_shutting_down();
                        return None;
                    }
                    self.request_since.get_or_insert(now);
                    match self.parse_head() {
                        Head::Parsed => {}
                        Head::Refused => return None,
                        Head::Partial => {
                            if self.peer_closed {
                                // Cut short: it will never be complete.
                                self.state = ReadState::Stopped;
                                self.input = Vec::new();
                            }
                            return None;
                        }
                    }
                }
                ReadState::Body { remaining, request } => {
                    let take = (*remaining).min(self.input.len() as u64) as usize;
                    request.body.extend_from_slice(&self.input[..take]);
                    self.input.drain(..take);
                    *remaining -= take as u64;
                    if *remaining > 0 {
                        return self.drop_if_cut_short();
                    }
                    return self.finish_request();
                }
                ReadState::Chunked { request, decoder } => {
                    match decoder.decode(&self.input, Some(&mut request.body)) {
                        Ok(used) => {
                            self.input.drain(..used);
                            if !decoder.is_done() {
                                return self.drop_if_cut_short();
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

    /// A request body still incomplete after the peer closed is dropped
    /// with its answer slot.
    fn drop_if_cut_short(&mut self) -> Option<Request> {
        if self.peer_closed {
            if let ReadState::Body { request, .. } | ReadState::Chunked { request, .. } =
                std::mem::replace(&mut self.state, ReadState::Stopped)
            {
                self.slots.retain(|s| s.seq != Some(request.seq));
            }
            self.input = Vec::new();
        }
        None
    }

    fn too_large_message(&self) -> String {
        format!(
            "request body larger than the limit of {} bytes (--max-body)",
            self.limits.max_body
        )
    }

    fn finish_request(&mut self) -> Option<Request> {
        self.request_since = None;
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

    /// Parses a request head at the start of the input.
    fn parse_head(&mut self) -> Head {
        // Left uninitialised: zeroing 64 headers cost more than parsing.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        // Only the first max_head + 1 bytes decide (431 or 400 alike),
        // whatever the reads were.
        let window = self.input.len().min(self.limits.max_head.saturating_add(1));
        let head_len = match req.parse_with_uninit_headers(&self.input[..window], &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.input.len() > self.limits.max_head {
                    self.fail(431, &self.head_too_large_message());
                    return Head::Refused;
                }
                return Head::Partial;
            }
            Err(httparse::Error::TooManyHeaders) => {
                self.fail(431, &format!("more than {MAX_HEADERS} request headers"));
                return Head::Refused;
            }
            Err(e) => {
                self.fail(400, &format!("malformed request: {e}"));
                return Head::Refused;
            }
        };
        if head_len > self.limits.max_head {
            self.fail(431, &self.head_too_large_message());
            return Head::Refused;
        }
        let method = Method::parse(req.method.unwrap_or(""));
        let target = req.path.unwrap_or("/");
        let http10 = req.version == Some(0);
        let framing = match framing(req.headers) {
            Ok(f) => f,
            Err(why) => {
                self.fail(why.status(), &why.to_string());
                return Head::Refused;
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
        let head = self.keep_heads.then(|| Box::from(&self.input[..head_len]));
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
            return Head::Refused;
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
            head,
            client_cert_subject: None,
        };
        self.state = match length {
            Some(remaining) => ReadState::Body { request, remaining },
            None => ReadState::Chunked {
                request,
                decoder: ChunkedDecoder::new(self.limits.max_body),
            },
        };
        self.flush_ready();
        Head::Parsed
    }

    fn head_too_large_message(&self) -> String {
        format!("request head larger than {} bytes", self.limits.max_head)
    }

    /// Refuses the request being read: answers `status` and closes.
    fn fail(&mut self, status: u16, message: &str) {
        self.refusal = Some((status, message.to_owned()));
        self.request_since = None;
        let response = Response::error(status, message);
        let seq = match std::mem::replace(&mut self.state, ReadState::Stopped) {
            ReadState::Body { request, .. } | ReadState::Chunked { request, .. } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.seq == Some(request.seq)) {
                    slot.close = true;
                }
                request.seq
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
                seq
            }
        };
        self.respond(seq, response, self.now);
        self.input = Vec::new();
    }

    /// Answers request `seq` at `now`. Answers to requests already gone (the
    /// slot was dropped when the peer closed) are ignored.
    pub fn respond(&mut self, seq: u64, response: Response, now: Nanos) {
        self.now = now;
        self.last_active = self.last_active.max(now);
        let Some(slot) = self.slots.iter_mut().find(|s| s.seq == Some(seq)) else {
            return;
        };
        let mut head = Vec::with_capacity(192);
        head.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut head, response.status as u64);
        head.push(b' ');
        head.extend_from_slice(reason_phrase(response.status).as_bytes());
        // RFC 9110 6.6.1: an origin server with a clock sends Date. Every
        // answer is about live state a cache must never replay.
        head.extend_from_slice(b"\r\nDate: ");
        self.date.push(&mut head, now);
        head.extend_from_slice(b"\r\nCache-Control: no-store\r\n");
        for (name, value) in &response.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        // A body is JSON unless the answer names its own type.
        let typed = response
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if !typed && matches!(response.body, Body::Json(_) | Body::Stream(_)) {
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
                    Ready::Stream(BodyStream {
                        source,
                        chunked,
                        state: StreamState::Head(head),
                        piece: Vec::new(),
                    })
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
                Some(Ready::Stream(stream)) => {
                    let limit = self.written + STREAM_HIGH_WATER;
                    if !stream.encode(&mut self.output, limit) {
                        return;
                    }
                    if matches!(stream.state, StreamState::Failed) {
                        slot.close = true;
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
            ..ServerLimits::default()
        }
    }

    fn conn() -> ServerConn {
        ServerConn::new(limits(), WallAnchor::fixed(0, 0), 0)
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
            let mut conn = conn();
            let mut got = Vec::new();
            for part in [&TWO_REQUESTS[..split], &TWO_REQUESTS[split..]] {
                conn.receive(part, 0);
                while let Some(r) = conn.next_request(0) {
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
        let mut conn = conn();
        let mut got = 0;
        for b in TWO_REQUESTS {
            conn.receive(std::slice::from_ref(b), 0);
            while conn.next_request(0).is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 2);
    }

    #[test]
    fn answers_go_out_in_request_order() {
        let mut conn = conn();
        conn.receive(TWO_REQUESTS, 0);
        let a = conn.next_request(0).unwrap();
        let b = conn.next_request(0).unwrap();
        conn.respond(b.seq, Response::error(404, "second"), 0);
        assert_eq!(output(&mut conn), "", "second answer waits for the first");
        conn.respond(a.seq, Response::empty(200), 0);
        let out = output(&mut conn);
        let first = out.find("200 OK").unwrap();
        let second = out.find("404 Not Found").unwrap();
        assert!(first < second);
        assert!(conn.is_idle());
    }

    #[test]
    fn expect_continue_is_answered_before_the_body() {
        let mut conn = conn();
        conn.receive(
            b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            0,
        );
        assert!(conn.next_request(0).is_none());
        assert_eq!(output(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
        conn.receive(b"abc", 0);
        let r = conn.next_request(0).unwrap();
        assert_eq!(r.body, b"abc");
        conn.respond(r.seq, Response::empty(200), 0);
        assert!(output(&mut conn).starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn head_gets_headers_only() {
        let mut conn = conn();
        conn.receive(b"HEAD /healthz HTTP/1.1\r\n\r\n", 0);
        let r = conn.next_request(0).unwrap();
        assert_eq!(r.method, Method::Head);
        conn.respond(r.seq, Response::json(200, b"{\"ok\":true}".to_vec()), 0);
        let out = output(&mut conn);
        assert!(out.contains("Content-Length: 11\r\n"));
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn heads_are_kept_only_when_asked() {
        let mut conn = conn();
        let req = b"POST /a HTTP/1.1\r\nVia: 1.1 x\r\nContent-Length: 1\r\n\r\nb";
        conn.receive(req, 0);
        assert_eq!(conn.next_request(0).unwrap().head, None);
        conn.keep_heads(true);
        conn.receive(req, 0);
        let r = conn.next_request(0).unwrap();
        assert_eq!(r.head.as_deref(), Some(&req[..req.len() - 1]));
        assert_eq!(r.body, b"b");
    }

    #[test]
    fn http10_and_connection_close_close_after_the_answer() {
        for req in [
            &b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let mut conn = conn();
            conn.receive(req, 0);
            let r = conn.next_request(0).unwrap();
            assert!(conn.next_request(0).is_none(), "nothing read after close");
            conn.respond(r.seq, Response::empty(200), 0);
            assert!(output(&mut conn).contains("Connection: close"));
            assert!(conn.is_finished());
        }
    }

    #[test]
    fn http10_keep_alive_is_honoured() {
        let mut conn = conn();
        let out = answer_one(
            &mut conn,
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(out.contains("Connection: keep-alive"));
        assert!(!conn.is_finished());
    }

    fn refused(input: &[u8]) -> String {
        let mut conn = conn();
        conn.receive(input, 0);
        assert!(conn.next_request(0).is_none());
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
        let mut conn = conn();
        conn.receive(&b"GET / HTTP/1.1\r\n\r\n".repeat(20), 0);
        let mut seqs = Vec::new();
        while let Some(r) = conn.next_request(0) {
            seqs.push(r.seq);
        }
        assert_eq!(seqs.len(), 8);
        assert!(!conn.wants_input());
        for s in seqs {
            conn.respond(s, Response::empty(200), 0);
        }
        output(&mut conn);
        assert!(conn.wants_input());
        assert_eq!(std::iter::from_fn(|| conn.next_request(0)).count(), 8);
    }

    #[test]
    fn peer_gone_mid_request_drops_it_but_answers_earlier_ones() {
        let mut conn = conn();
        conn.receive(
            b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
            0,
        );
        let a = conn.next_request(0).unwrap();
        assert!(conn.next_request(0).is_none());
        conn.receive_eof();
        assert!(
            conn.next_request(0).is_none(),
            "the request cut short is dropped"
        );
        assert!(!conn.is_finished());
        conn.respond(a.seq, Response::empty(200), 0);
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
        let mut conn = conn();
        conn.receive(b"GET /big HTTP/1.1\r\n\r\n", 0);
        let r = conn.next_request(0).unwrap();
        conn.respond(r.seq, Response::stream(200, Box::new(Counter(0))), 0);
        let out = output(&mut conn);
        assert!(
            out.contains(
                "Transfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n3\r\n[2]\r\n3\r\n[3]\r\n0\r\n\r\n"
            ),
            "{out}"
        );
        assert!(conn.is_idle());
    }

    /// A body that gives one piece, then nothing yet, then fails.
    struct Failing(u32);
    impl BodySource for Failing {
        fn fill(&mut self, out: &mut Vec<u8>) -> bool {
            self.0 += 1;
            if self.0 == 1 {
                out.extend_from_slice(b"[1]");
            }
            false
        }
        fn failed(&self) -> bool {
            self.0 >= 3
        }
    }

    #[test]
    fn a_failed_stream_is_cut_off_and_closes_without_the_terminator() {
        let mut conn = conn();
        conn.receive(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0);
        let a = conn.next_request(0).unwrap();
        conn.respond(a.seq, Response::stream(200, Box::new(Failing(0))), 0);
        let mut out = String::new();
        for _ in 0..4 {
            out += &output(&mut conn);
        }
        assert!(
            out.ends_with("\r\n\r\n3\r\n[1]\r\n"),
            "no terminator: {out}"
        );
        assert!(conn.is_finished(), "the connection closes");
        assert!(
            conn.next_request(0).is_none(),
            "the next request is dropped"
        );
    }

    #[test]
    fn absolute_form_and_query_are_reduced_to_the_path() {
        assert_eq!(path_of("http://h:1/test-groups?x=1"), "/test-groups");
        assert_eq!(path_of("/a/b?c"), "/a/b");
        assert_eq!(path_of("http://h"), "/");
    }

    /// A body whose last piece takes the output past the high-water mark.
    struct Big {
        pieces: u32,
    }
    impl BodySource for Big {
        fn fill(&mut self, out: &mut Vec<u8>) -> bool {
            self.pieces -= 1;
            out.resize(out.len() + 100_000, b'x');
            if self.pieces == 0 {
                out.extend_from_slice(b"]}\n");
            }
            self.pieces == 0
        }
    }

    /// Reads the output `step` bytes at a time, as a slow peer would.
    fn output_in_steps(conn: &mut ServerConn, step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let out = conn.poll_output();
            if out.is_empty() {
                return all;
            }
            let n = out.len().min(step);
            all.extend_from_slice(&out[..n]);
            conn.advance_output(n);
        }
    }

    #[test]
    fn a_streamed_body_ends_once_when_its_end_lands_past_the_high_water_mark() {
        for http10 in [false, true] {
            let mut conn = conn();
            let version = if http10 { "1.0" } else { "1.1" };
            conn.receive(format!("GET /big HTTP/{version}\r\n\r\n").as_bytes(), 0);
            let r = conn.next_request(0).unwrap();
            conn.respond(r.seq, Response::stream(200, Box::new(Big { pieces: 3 })), 0);
            let out = output_in_steps(&mut conn, 4096);
            let body = &out[find(&out, b"\r\n\r\n").unwrap() + 4..];
            if http10 {
                assert_eq!(body.len(), 300_003, "HTTP/1.0 body is the pieces once");
                assert!(body.ends_with(b"x]}\n"));
                assert!(conn.is_finished());
            } else {
                let end = b"\r\n0\r\n\r\n";
                assert!(body.ends_with(end), "one terminator");
                assert_eq!(body.windows(3).filter(|w| w == b"]}\n").count(), 1);
                assert!(conn.is_idle(), "nothing more owed");
                assert!(
                    output_in_steps(&mut conn, 4096).is_empty(),
                    "no stray bytes"
                );
                conn.receive(b"GET /healthz HTTP/1.1\r\n\r\n", 0);
                let r = conn.next_request(0).unwrap();
                conn.respond(r.seq, Response::empty(200), 0);
                assert!(output_in_steps(&mut conn, 4096).starts_with(b"HTTP/1.1 200 OK\r\n"));
            }
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn complete_requests_before_eof_in_one_read_are_answered() {
        // A TLS close_notify right behind the requests arrives this way.
        let mut conn = conn();
        conn.receive(TWO_REQUESTS, 0);
        conn.receive_eof();
        let a = conn.next_request(0).expect("first request kept");
        let b = conn.next_request(0).expect("second request kept");
        assert!(conn.next_request(0).is_none());
        conn.respond(a.seq, Response::empty(200), 0);
        conn.respond(b.seq, Response::empty(200), 0);
        assert_eq!(output(&mut conn).matches("200 OK").count(), 2);
        assert!(conn.is_finished());
        conn.shut_down(0);
        assert!(conn.is_closed(), "the peer is gone: no drain");
    }

    #[test]
    fn a_pipelined_request_gets_its_own_request_clock() {
        let mut conn = conn();
        let first = b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
        conn.receive(first, 0);
        assert!(conn.next_request(0).is_none());
        assert_eq!(conn.poll_timeout(), Some(10 * SECOND));
        // The first request ends 9 s later and the next one begins.
        conn.receive(b"cdGET /b HTTP/1.1\r\n", 9 * SECOND);
        let a = conn.next_request(9 * SECOND).unwrap();
        assert!(conn.next_request(9 * SECOND).is_none());
        assert_eq!(
            conn.poll_timeout(),
            Some(19 * SECOND),
            "from its own first byte"
        );
        conn.handle_timeout(10 * SECOND);
        conn.respond(a.seq, Response::empty(200), 10 * SECOND);
        let out = output(&mut conn);
        assert!(
            out.starts_with("HTTP/1.1 200") && !out.contains("408"),
            "{out}"
        );
        conn.handle_timeout(19 * SECOND - 1);
        assert_eq!(output(&mut conn), "");
        conn.handle_timeout(19 * SECOND);
        let out = output(&mut conn);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("within 10000 ms"), "{out}");
        assert!(conn.is_finished());
    }

    #[test]
    fn the_request_clock_stops_while_the_pipeline_is_full() {
        let mut conn = conn();
        let mut input = b"GET / HTTP/1.1\r\n\r\n".repeat(8);
        input.extend_from_slice(b"GET /ninth HTTP/1.1\r\n");
        conn.receive(&input, 0);
        let seqs: Vec<u64> = std::iter::from_fn(|| conn.next_request(0).map(|r| r.seq)).collect();
        assert_eq!(seqs.len(), 8);
        assert_eq!(conn.poll_timeout(), None, "the server is the one waiting");
        for s in seqs {
            conn.respond(s, Response::empty(200), 30 * SECOND);
        }
        output(&mut conn);
        assert!(conn.next_request(30 * SECOND).is_none());
        assert_eq!(conn.poll_timeout(), Some(40 * SECOND));
    }

    #[test]
    fn idle_connections_close_after_the_idle_timeout() {
        let mut conn = conn();
        assert_eq!(conn.poll_timeout(), Some(60 * SECOND));
        conn.receive(b"GET / HTTP/1.1\r\n\r\n", 5 * SECOND);
        let r = conn.next_request(5 * SECOND).unwrap();
        assert_eq!(conn.poll_timeout(), None, "an answer is owed");
        conn.respond(r.seq, Response::empty(200), 7 * SECOND);
        output(&mut conn);
        assert_eq!(
            conn.poll_timeout(),
            Some(67 * SECOND),
            "idle from the answer"
        );
        conn.handle_timeout(67 * SECOND - 1);
        assert!(!conn.is_closed());
        conn.handle_timeout(67 * SECOND);
        assert!(conn.is_closed());
    }

    /// Feeds one whole request at time 0, answers it 200 and drains the output.
    fn answer_one(conn: &mut ServerConn, request: &[u8]) -> String {
        conn.receive(request, 0);
        let r = conn.next_request(0).expect("a whole request");
        conn.respond(r.seq, Response::empty(200), 0);
        output(conn)
    }

    #[test]
    fn a_closing_connection_drains_for_at_most_the_drain_timeout() {
        let mut conn = conn();
        answer_one(&mut conn, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(conn.is_finished());
        conn.shut_down(SECOND);
        assert!(conn.wants_input(), "leftovers are read out");
        conn.receive(b"more bytes", SECOND + 500 * MILLISECOND);
        assert_eq!(
            conn.poll_timeout(),
            Some(3 * SECOND),
            "leftovers do not extend it"
        );
        conn.handle_timeout(3 * SECOND);
        assert!(conn.is_closed());
        let mut conn = self::conn();
        answer_one(&mut conn, b"GET / HTTP/1.0\r\n\r\n");
        conn.shut_down(0);
        conn.receive_eof();
        assert!(conn.is_closed(), "the peer's close ends the drain");
    }

    #[test]
    fn answers_carry_date_and_no_store() {
        let mut conn = ServerConn::new(
            limits(),
            WallAnchor::fixed(0, 784_111_777 * 1_000_000_000),
            0,
        );
        conn.receive(b"GET / HTTP/1.1\r\n\r\nGARBAGE\x01\r\n\r\n", 0);
        let r = conn.next_request(0).unwrap();
        assert!(conn.next_request(0).is_none(), "the garbage is refused");
        conn.respond(r.seq, Response::empty(200), 0);
        let out = output(&mut conn);
        for answer in out.split("HTTP/1.1 ").skip(1) {
            assert!(
                answer.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
                "{answer}"
            );
            assert!(
                answer.contains("\r\nCache-Control: no-store\r\n"),
                "{answer}"
            );
        }
        assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "the 400 too: {out}");
    }

    #[test]
    fn going_away_answers_what_is_owed_then_refuses_and_closes() {
        // Idle: finished at once.
        let mut idle = conn();
        idle.go_away();
        assert!(idle.is_finished());

        // A request held: its answer goes out, then the connection is done.
        let mut held = conn();
        held.receive(b"GET /a HTTP/1.1\r\n\r\n", 0);
        let a = held.next_request(0).unwrap();
        held.go_away();
        assert!(!held.is_finished());
        held.respond(a.seq, Response::empty(200), 0);
        let out = output(&mut held);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(!out.contains("Connection: close"), "{out}");
        assert!(held.is_finished());

        // A request held and a later one: the later one gets 503 and close,
        // after the held answer.
        let mut busy = conn();
        busy.receive(b"GET /a HTTP/1.1\r\n\r\n", 0);
        let a = busy.next_request(0).unwrap();
        busy.go_away();
        busy.receive(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0);
        assert!(busy.next_request(0).is_none());
        assert!(!busy.is_finished());
        busy.respond(a.seq, Response::empty(200), 0);
        let out = output(&mut busy);
        let (first, second) = out.split_at(out.find("HTTP/1.1 503").unwrap());
        assert!(first.starts_with("HTTP/1.1 200"), "{out}");
        assert!(second.contains("Connection: close\r\n"), "{out}");
        assert!(
            second.contains("{\"error\":\"the server is shutting down"),
            "{out}"
        );
        assert!(busy.is_finished());

        // A request half read when the server goes away: 503 at once.
        let mut half = conn();
        half.receive(b"POST /c HTTP/1.1\r\nContent-Length: 9\r\n\r\nab", 0);
        assert!(half.next_request(0).is_none());
        half.go_away();
        let out = output(&mut half);
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(half.is_finished());
    }

    #[test]
    fn refusals_are_reported_once_for_the_loop_to_log() {
        let mut conn = conn();
        conn.receive(b"GET / HTTP/1.1\r\n\r\n", 0);
        let r = conn.next_request(0).unwrap();
        conn.respond(
            r.seq,
            Response::error(404, "answered by the application"),
            0,
        );
        assert_eq!(
            conn.take_refusal(),
            None,
            "the application's errors are its own to log"
        );
        let refused = refused(b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 413"));
        let mut conn = self::conn();
        conn.receive(b"GET / HT", 0);
        conn.handle_timeout(10 * SECOND);
        let (status, why) = conn.take_refusal().expect("the 408");
        assert_eq!(status, 408);
        assert!(why.contains("10000 ms"), "{why}");
        assert_eq!(conn.take_refusal(), None, "once");
    }

    #[test]
    fn hex_lengths() {
        for (n, hex) in [
            (0, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (300_003, "493e3"),
        ] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, hex.as_bytes());
        }
    }
}
