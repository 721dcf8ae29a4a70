//! Client side of one HTTP/1.1 connection, sans-IO.
//!
//! One implementation serves `conntest client` (the test runs and the group
//! fetches) and the server's upstream GETs. Requests are serialized with
//! [`ClientConn::send`] into [`ClientConn::poll_output`]; bytes read go in
//! through [`ClientConn::receive`]; complete responses come out of
//! [`ClientConn::next_response`] in order.

use super::chunked::{ChunkedDecoder, ChunkedError};
use super::{framing, push_decimal, Method};
use std::collections::VecDeque;
use std::mem::MaybeUninit;

#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Largest response head.
    pub max_head: usize,
    /// Largest response body read.
    pub max_body: u64,
    /// Count body bytes without keeping them (upstream answers).
    pub discard_body: bool,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_head: 64 * 1024,
            max_body: 1 << 30,
            discard_body: false,
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The response could not be parsed.
    Malformed(String),
    /// The body is over the limit; the connection cannot be reused.
    BodyTooLarge { status: u16, limit: u64 },
    /// The peer closed the connection before a whole response arrived.
    ClosedEarly,
    /// Bytes arrived that answer no request.
    Unsolicited,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Malformed(why) => write!(f, "malformed response: {why}"),
            ClientError::BodyTooLarge { status, limit } => {
                write!(
                    f,
                    "response body (status {status}) larger than {limit} bytes; not read further"
                )
            }
            ClientError::ClosedEarly => {
                f.write_str("connection closed before the response was complete")
            }
            ClientError::Unsolicited => f.write_str("response received without a request"),
        }
    }
}

enum ReadState {
    Head,
    Body {
        status: u16,
        close: bool,
        remaining: u64,
        body: Vec<u8>,
    },
    Chunked {
        status: u16,
        close: bool,
        decoder: ChunkedDecoder,
        body: Vec<u8>,
    },
    UntilClose {
        status: u16,
        body: Vec<u8>,
        read: u64,
    },
}

/// No extra header lines, for [`ClientConn::send`].
pub const NO_HEADERS: &[(&str, &str)] = &[];

pub struct ClientConn {
    limits: ClientLimits,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// For each request sent and not yet answered: was it a HEAD?
    awaiting: VecDeque<bool>,
    state: ReadState,
}

const MAX_HEADERS: usize = 64;

impl ClientConn {
    pub fn new(limits: ClientLimits) -> Self {
        ClientConn {
            limits,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            awaiting: VecDeque::new(),
            state: ReadState::Head,
        }
    }

    /// Bytes received and not yet taken into a response (what an answer to
    /// no request consists of).
    pub fn unread(&self) -> &[u8] {
        &self.input
    }

    /// Requests sent (or queued to send) and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.awaiting.len()
    }

    /// Queues a request. `host` is the Host header's value; `extra` headers
    /// are written as given.
    /// `extra` header lines, `Name: value` each, after `Host`; use
    /// [`NO_HEADERS`] for none.
    pub fn send<N: AsRef<str>, V: AsRef<str>>(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        extra: &[(N, V)],
        body: &[u8],
    ) {
        let out = &mut self.output;
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in extra {
            out.extend_from_slice(name.as_ref().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_ref().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || matches!(method, Method::Post | Method::Put) {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.awaiting.push_back(method == Method::Head);
    }

    pub fn poll_output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    pub fn advance_output(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }

    pub fn receive(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// The next complete response, if the input holds one.
    pub fn next_response(&mut self) -> Result<Option<Response>, ClientError> {
        loop {
            match &mut self.state {
                ReadState::Head => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    if !self.parse_head()? {
                        return Ok(None);
                    }
                }
                ReadState::Body {
                    remaining, body, ..
                } => {
                    let take = (*remaining).min(self.input.len() as u64) as usize;
                    if !self.limits.discard_body {
                        body.extend_from_slice(&self.input[..take]);
                    }
                    self.input.drain(..take);
                    *remaining -= take as u64;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    return Ok(self.finish());
                }
                ReadState::Chunked {
                    status,
                    decoder,
                    body,
                    ..
                } => {
                    let sink = (!self.limits.discard_body).then_some(body);
                    match decoder.decode(&self.input, sink) {
                        Ok(used) => {
                            self.input.drain(..used);
                            if !decoder.is_done() {
                                return Ok(None);
                            }
                            return Ok(self.finish());
                        }
                        Err(ChunkedError::TooLarge) => {
                            return Err(ClientError::BodyTooLarge {
                                status: *status,
                                limit: self.limits.max_body,
                            })
                        }
                        Err(ChunkedError::Malformed(why)) => {
                            return Err(ClientError::Malformed(why.to_owned()))
                        }
                    }
                }
                ReadState::UntilClose { status, body, read } => {
                    *read += self.input.len() as u64;
                    if *read > self.limits.max_body {
                        return Err(ClientError::BodyTooLarge {
                            status: *status,
                            limit: self.limits.max_body,
                        });
                    }
                    if !self.limits.discard_body {
                        body.append(&mut self.input);
                    }
                    self.input.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// The status of the response now arriving, once its head is in.
    pub fn pending_status(&self) -> Option<u16> {
        match &self.state {
            ReadState::Head => None,
            ReadState::Body { status, .. }
            | ReadState::Chunked { status, .. }
            | ReadState::UntilClose { status, .. } => Some(*status),
        }
    }

    /// Moves the body bytes of the response now arriving into `out`, so a
    /// large body can be consumed as it streams in.
    pub fn take_partial_body(&mut self, out: &mut Vec<u8>) {
        if let ReadState::Body { body, .. }
        | ReadState::Chunked { body, .. }
        | ReadState::UntilClose { body, .. } = &mut self.state
        {
            out.append(body);
        }
    }

    /// The peer closed the connection: completes a body delimited by the
    /// close, or reports a response cut short.
    pub fn receive_eof(&mut self) -> Result<Option<Response>, ClientError> {
        if let Some(r) = self.next_response()? {
            return Ok(Some(r));
        }
        match std::mem::replace(&mut self.state, ReadState::Head) {
            ReadState::UntilClose { status, body, .. } => {
                self.awaiting.pop_front();
                Ok(Some(Response {
                    status,
                    body,
                    close: true,
                }))
            }
            ReadState::Head if self.input.is_empty() && self.awaiting.is_empty() => Ok(None),
            _ => Err(ClientError::ClosedEarly),
        }
    }

    fn finish(&mut self) -> Option<Response> {
        match std::mem::replace(&mut self.state, ReadState::Head) {
            ReadState::Body {
                status,
                close,
                body,
                ..
            }
            | ReadState::Chunked {
                status,
                close,
                body,
                ..
            } => {
                self.awaiting.pop_front();
                Some(Response {
                    status,
                    body,
                    close,
                })
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Parses a response head; false when more input is needed.
    fn parse_head(&mut self) -> Result<bool, ClientError> {
        let Some(&was_head) = self.awaiting.front() else {
            return Err(ClientError::Unsolicited);
        };
        // Left uninitialised: zeroing 64 headers cost more than parsing.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        // Only the first max_head + 1 bytes decide, whatever the reads were.
        let window = self.input.len().min(self.limits.max_head.saturating_add(1));
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &self.input[..window],
            &mut headers,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) if n <= self.limits.max_head => n,
            Ok(_) => {
                if self.input.len() > self.limits.max_head {
                    return Err(ClientError::Malformed(format!(
                        "response head larger than {} bytes",
                        self.limits.max_head
                    )));
                }
                return Ok(false);
            }
            Err(e) => return Err(ClientError::Malformed(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let http10 = resp.version == Some(0);
        let framing =
            framing(resp.headers).map_err(|why| ClientError::Malformed(why.to_string()))?;
        self.input.drain(..head_len);
        // Interim answers (100 Continue and the like) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            return Ok(true);
        }
        let close = framing.connection_close || (http10 && !framing.connection_keep_alive);
        let no_body = was_head || status == 204 || status == 304;
        let limit = self.limits.max_body;
        self.state = if no_body {
            ReadState::Body {
                status,
                close,
                remaining: 0,
                body: Vec::new(),
            }
        } else if framing.chunked {
            ReadState::Chunked {
                status,
                close,
                decoder: ChunkedDecoder::new(limit),
                body: Vec::new(),
            }
        } else if let Some(n) = framing.content_length {
            if n > limit {
                return Err(ClientError::BodyTooLarge { status, limit });
            }
            let capacity = if self.limits.discard_body {
                0
            } else {
                n.min(1 << 20) as usize
            };
            ReadState::Body {
                status,
                close,
                remaining: n,
                body: Vec::with_capacity(capacity),
            }
        } else {
            ReadState::UntilClose {
                status,
                body: Vec::new(),
                read: 0,
            }
        };
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_awaiting(n: usize) -> ClientConn {
        let mut c = ClientConn::new(ClientLimits::default());
        for _ in 0..n {
            c.send(Method::Post, "h:1", "/x", NO_HEADERS, b"body");
        }
        c
    }

    #[test]
    fn serializes_requests() {
        let mut c = ClientConn::new(ClientLimits::default());
        c.send(
            Method::Post,
            "example:8080",
            "/p/test-groups/g/1",
            &[("Authorization", "Bearer t")],
            b"hi",
        );
        assert_eq!(
            c.poll_output(),
            b"POST /p/test-groups/g/1 HTTP/1.1\r\nHost: example:8080\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\nhi"
        );
        c.advance_output(c.poll_output().len());
        c.send(Method::Get, "h", "/", NO_HEADERS, b"");
        assert_eq!(c.poll_output(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    const RESPONSES: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn every_split_point_yields_the_same_responses() {
        for split in 0..=RESPONSES.len() {
            let mut c = conn_awaiting(3);
            let mut got = Vec::new();
            for part in [&RESPONSES[..split], &RESPONSES[split..]] {
                c.receive(part);
                while let Some(r) = c.next_response().unwrap() {
                    got.push((r.status, r.body, r.close));
                }
            }
            assert_eq!(
                got,
                vec![
                    (200, b"abc".to_vec(), false),
                    (404, b"no".to_vec(), false),
                    (200, vec![], true)
                ],
                "split at {split}"
            );
            assert_eq!(c.in_flight(), 0);
        }
    }

    #[test]
    fn body_delimited_by_close() {
        let mut c = conn_awaiting(1);
        c.receive(b"HTTP/1.0 200 OK\r\n\r\nall of it");
        assert!(c.next_response().unwrap().is_none());
        let r = c.receive_eof().unwrap().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"all of it"[..], true)
        );
    }

    #[test]
    fn errors() {
        let mut c = conn_awaiting(1);
        c.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert!(c.next_response().unwrap().is_none());
        assert_eq!(c.receive_eof().unwrap_err(), ClientError::ClosedEarly);

        let mut c = conn_awaiting(1);
        c.receive(b"garbage\r\n\r\n");
        assert!(matches!(c.next_response(), Err(ClientError::Malformed(_))));

        let mut c = ClientConn::new(ClientLimits::default());
        c.receive(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(c.next_response().unwrap_err(), ClientError::Unsolicited);

        let mut c = ClientConn::new(ClientLimits {
            max_body: 5,
            discard_body: true,
            ..ClientLimits::default()
        });
        c.send(Method::Get, "h", "/", NO_HEADERS, b"");
        c.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
        assert_eq!(
            c.next_response().unwrap_err(),
            ClientError::BodyTooLarge {
                status: 200,
                limit: 5
            }
        );
    }

    #[test]
    fn body_can_be_taken_while_it_streams_in() {
        let mut c = conn_awaiting(1);
        c.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        assert!(c.next_response().unwrap().is_none());
        assert_eq!(c.pending_status(), Some(200));
        let mut got = Vec::new();
        c.take_partial_body(&mut got);
        assert_eq!(got, b"abc");
        c.receive(b"2\r\nde\r\n0\r\n\r\n");
        let r = c.next_response().unwrap().unwrap();
        assert_eq!(r.body, b"de");
        assert_eq!(c.pending_status(), None);
    }

    #[test]
    fn discarded_bodies_are_counted_not_kept() {
        let mut c = ClientConn::new(ClientLimits {
            discard_body: true,
            ..ClientLimits::default()
        });
        c.send(Method::Get, "h", "/", NO_HEADERS, b"");
        c.receive(b"HTTP/1.1 204 No Content\r\n\r\n");
        let r = c.next_response().unwrap().unwrap();
        assert_eq!(r.status, 204);
        c.send(Method::Get, "h", "/", NO_HEADERS, b"");
        c.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody");
        assert!(c.next_response().unwrap().unwrap().body.is_empty());
    }
}
