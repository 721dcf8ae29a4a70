//! A minimal independent HTTP/1.1 client over raw sockets: requests, reply
//! parsing, and the API calls most tests share.

use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Asserts that an error answer has `status` and a JSON content type.
pub fn assert_json_error_status(reply: &Reply, status: u16) {
    assert_eq!(
        reply.status,
        status,
        "expected {status}, got {}: {}",
        reply.status,
        reply.text()
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "error without a JSON content type: {:?}",
        reply.headers
    );
}

/// What a request the server timed out gets: in `read` (the bytes that
/// arrived and whether the connection closed) exactly one reply, which
/// `check` checks (a 408), then the close, and that no sooner than
/// `at_least` (the request timeout) after the request: `waited`. `what`
/// names the case in the messages.
pub fn assert_timed_out_reply(
    read: (Vec<u8>, bool),
    waited: Duration,
    at_least: Duration,
    what: &str,
    check: impl FnOnce(&Reply),
) {
    let (bytes, closed) = read;
    let replies = parse_replies(&bytes);
    assert_eq!(
        replies.len(),
        1,
        "{what}: no 408 in time; got {:?}",
        preview(&bytes)
    );
    check(&replies[0]);
    assert!(closed, "{what}: the connection stayed open after the 408");
    assert!(
        waited >= at_least,
        "{what}: 408 after {waited:?}, before --request-timeout"
    );
}

/// Sends raw bytes, half-closes, and reads everything the server sends back.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("write");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Parses every response in `bytes` (Content-Length or chunked bodies).
pub fn parse_replies(mut bytes: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        bytes = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let headers = parse_header_lines(lines);
        let get = |n: &str| find_header(&headers, n);
        let mut body = Vec::new();
        if status >= 200 {
            if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                loop {
                    let line_end = find(bytes, b"\r\n").expect("chunk size line");
                    let size = usize::from_str_radix(
                        std::str::from_utf8(&bytes[..line_end]).unwrap().trim(),
                        16,
                    )
                    .unwrap();
                    bytes = &bytes[line_end + 2..];
                    if size == 0 {
                        bytes = &bytes[2.min(bytes.len())..];
                        break;
                    }
                    body.extend_from_slice(&bytes[..size]);
                    bytes = &bytes[size + 2..];
                }
            } else {
                let len: usize = get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(bytes.len());
                body = bytes[..len.min(bytes.len())].to_vec();
                bytes = &bytes[len.min(bytes.len())..];
            }
        }
        replies.push(Reply {
            status,
            headers,
            body,
        });
    }
    replies
}

/// Where `needle` first stands in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Name: value` header lines as trimmed pairs; lines without a ':' are
/// passed over.
pub fn parse_header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The value of the first header named `name` (in any case).
pub fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A keep-alive HTTP/1.1 request; Content-Length when there is a body or
/// the method is POST.
pub fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads from `stream` after the bytes already in `out` until the peer
/// closes or `limit` passes: every byte that arrived and whether the
/// connection was closed (EOF or reset).
pub fn read_until_close(
    stream: &mut TcpStream,
    mut out: Vec<u8>,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            Err(_) => return (out, true), // reset: closed too
        }
    }
}

/// One request with `Connection: close`; the final (non-1xx) reply.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    if !body.is_empty() || method == "POST" {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    parse_replies(&raw(addr, &req))
        .into_iter()
        .rfind(|r| r.status >= 200)
        .expect("a response")
}

/// Creates a group of one run held by `delay_ns` and returns one write's
/// worth of requests: a GET /healthz, then that run. Sent in one go, the
/// server reads both and starts the delayed run before it answers the
/// healthz: once that answer is here, the run is in flight.
pub fn healthz_then_delayed_run(addr: SocketAddr, delay_ns: u64) -> Vec<u8> {
    let id = create_group(
        addr,
        &format!(r#"{{"run_count": 1, "server_delay_ns": {delay_ns}}}"#),
    );
    let mut bytes = req("GET", "/healthz", &[], b"");
    bytes.extend(req(
        "POST",
        &format!("/test-groups/{id}/1"),
        &[],
        b"in flight",
    ));
    bytes
}

/// Creates a group from a JSON config; returns its id.
pub fn create_group(addr: SocketAddr, config: &str) -> String {
    create_answer(addr, config)["run_group_id"]
        .as_str()
        .expect("run_group_id")
        .to_owned()
}

/// POST /test-groups/create: the whole answer (status 200 asserted).
pub fn create_answer(addr: SocketAddr, config: &str) -> Value {
    let reply = request(addr, "POST", "/test-groups/create", config.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// GET /test-groups/{id}: the group record (status 200 asserted).
pub fn get_group(addr: SocketAddr, id: &str) -> Value {
    let reply = request(addr, "GET", &format!("/test-groups/{id}"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The first 600 characters of `bytes` as text, for failure messages.
pub fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(600).collect()
}

/// Asserts a JSON error answer: the status, a JSON content type, a body
/// that is exactly `{"error": "..."}`, and a non-empty message containing
/// `needle`; the message.
pub fn assert_error(reply: &Reply, status: u16, needle: &str) -> String {
    assert_json_error_status(reply, status);
    let v = reply.json();
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {v}"));
    assert_eq!(
        obj.len(),
        1,
        "error body has other fields than \"error\": {v}"
    );
    let message = obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("\"error\" is not a string: {v}"))
        .to_owned();
    assert!(!message.is_empty(), "empty error message");
    assert!(
        message.contains(needle),
        "error {message:?} does not mention {needle:?}"
    );
    message
}

/// Parses one reply from the front of `buf`: the reply and the bytes it
/// used, or None when more bytes are needed. `head_only`: it answers a
/// HEAD request (no body). `eof`: the peer has closed, so a body without
/// framing ends here. Panics on anything but an HTTP/1.x status line.
pub fn parse_reply(buf: &[u8], head_only: bool, eof: bool) -> Option<(Reply, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    assert!(
        status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "),
        "not a status line: {status_line:?} (buffer {:?})",
        preview(buf)
    );
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = parse_header_lines(lines);
    let get = |n: &str| find_header(&headers, n);
    let mut at = end + 4;
    let mut body = Vec::new();
    let bodiless = status < 200 || status == 204 || status == 304 || head_only;
    if bodiless {
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = at + find(&buf[at..], b"\r\n")?;
            let size_text = String::from_utf8_lossy(&buf[at..line_end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
            let size = usize::from_str_radix(&size_text, 16).expect("chunk size");
            at = line_end + 2;
            if size == 0 {
                // Trailers up to an empty line.
                loop {
                    let line_end = at + find(&buf[at..], b"\r\n")?;
                    let empty = line_end == at;
                    at = line_end + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().expect("Content-Length");
        if buf.len() < at + len {
            return None;
        }
        body.extend_from_slice(&buf[at..at + len]);
        at += len;
    } else if eof {
        body.extend_from_slice(&buf[at..]);
        at = buf.len();
    } else {
        return None;
    }
    Some((
        Reply {
            status,
            headers,
            body,
        },
        at,
    ))
}

/// How long [`Conn::reply`] and [`call`] wait for a whole reply.
pub const REPLY_LIMIT: Duration = Duration::from_secs(20);
/// How long one read may bring nothing before a reply counts as stalled,
/// whatever is left of its limit.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// A client connection that reads replies one at a time, each bounded.
pub struct Conn {
    pub stream: TcpStream,
    /// Bytes read from `stream` but not yet taken as a reply.
    pub buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (within 5 s), with Nagle off and a read timeout
    /// of [`STALL_LIMIT`] for direct reads of `stream`.
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(STALL_LIMIT)).unwrap();
        Conn::from(stream)
    }

    /// A connection over an already connected `stream` (Nagle off).
    pub fn from(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// The next complete reply (interim 1xx replies included) within
    /// [`REPLY_LIMIT`]; panics otherwise.
    pub fn reply(&mut self) -> Reply {
        self.reply_to(false)
    }

    /// [`Conn::reply`]; `head` when it answers a HEAD request.
    pub fn reply_to(&mut self, head: bool) -> Reply {
        self.next_reply(REPLY_LIMIT, head)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next complete reply within `limit`; else what happened and the
    /// bytes that did arrive.
    pub fn reply_within(&mut self, limit: Duration) -> Result<Reply, String> {
        self.next_reply(limit, false)
    }

    /// The next complete reply within `limit`, no read waiting longer than
    /// [`STALL_LIMIT`]; `head` when it answers a HEAD request.
    fn next_reply(&mut self, limit: Duration, head: bool) -> Result<Reply, String> {
        let deadline = Instant::now() + limit;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf, head, false) {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no complete reply within {limit:?}; got {:?}",
                    preview(&self.buf)
                ));
            }
            let wait = left.min(STALL_LIMIT);
            self.stream.set_read_timeout(Some(wait)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    if let Some((reply, used)) = parse_reply(&self.buf, head, true) {
                        self.buf.drain(..used);
                        return Ok(reply);
                    }
                    return Err(format!(
                        "the server closed the connection before a complete reply; got {:?}",
                        preview(&self.buf)
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if wait < left {
                        return Err(format!(
                            "nothing for {STALL_LIMIT:?} while waiting for a reply; got {:?}",
                            preview(&self.buf)
                        ));
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "reading a reply: {e}; got so far {:?}",
                        preview(&self.buf)
                    ))
                }
            }
        }
    }

    /// Reads until the server closes the connection or `limit` passes:
    /// every byte that arrived (buffered ones included) and whether the
    /// connection was closed (EOF or reset).
    pub fn read_until_close(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        read_until_close(&mut self.stream, std::mem::take(&mut self.buf), limit)
    }
}

/// One request on its own connection (`Connection: close` added to
/// `headers`): connects within 2 s and reads the reply (a HEAD's without a
/// body) within `limit`; else what went wrong.
pub fn call_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> Result<Reply, String> {
    let mut headers = headers.to_vec();
    headers.push(("Connection", "close"));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = Conn::from(stream);
    conn.stream
        .write_all(&req(method, path, &headers, body))
        .map_err(|e| format!("write: {e}"))?;
    conn.next_reply(limit, method == "HEAD")
}

/// [`call_within`] 10 s.
pub fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    call_within(addr, method, path, headers, body, Duration::from_secs(10))
}

/// [`call_within`] [`REPLY_LIMIT`]; panics when there is no reply.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    call_within(addr, method, path, headers, body, REPLY_LIMIT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The path of run `count` of group `id`.
pub fn run_path(id: &str, count: u64) -> String {
    format!("/test-groups/{id}/{count}")
}

/// A group record's `test_runs`.
pub fn runs_of(group: &Value) -> Vec<Value> {
    group["test_runs"]
        .as_array()
        .expect("test_runs is an array")
        .clone()
}
