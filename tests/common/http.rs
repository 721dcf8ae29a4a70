//! A minimal independent HTTP/1.1 client over raw sockets: requests, reply
//! parsing, and the API calls most tests share.

use std::io::{Read, Write};
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
        String::from_utf8_lossy(&bytes)
            .chars()
            .take(600)
            .collect::<String>()
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
    let reply = request(addr, "POST", "/test-groups/create", config.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["run_group_id"]
        .as_str()
        .expect("run_group_id")
        .to_owned()
}

pub fn get_group(addr: SocketAddr, id: &str) -> serde_json::Value {
    let reply = request(addr, "GET", &format!("/test-groups/{id}"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}
