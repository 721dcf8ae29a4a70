//! Test-written servers on 127.0.0.1: fake upstreams and the like.

use super::http::{find, find_header, parse_header_lines};
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

/// A test-written TCP server on 127.0.0.1 (a fake upstream, a proxy): one
/// thread per connection running `handler` on a blocking stream. Stops
/// accepting on drop, and after its lifetime or its number of connections.
pub struct TestListener {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl TestListener {
    /// Accepts for 120 s and 20 000 connections at the most.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TestListener {
        Self::start_for(Duration::from_secs(120), 20_000, handler)
    }

    /// Accepts for `lifetime` and `max_connections` at the most.
    pub fn start_for(
        lifetime: Duration,
        max_connections: usize,
        handler: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> TestListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test listener");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handler = Arc::new(handler);
        let accepter = std::thread::spawn(move || {
            let until = Instant::now() + lifetime;
            let mut accepted = 0;
            while !flag.load(Ordering::Relaxed)
                && Instant::now() < until
                && accepted < max_connections
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        accepted += 1;
                        let _ = stream.set_nonblocking(false);
                        let handler = Arc::clone(&handler);
                        std::thread::spawn(move || handler(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        TestListener {
            addr,
            stop,
            accepter: Some(accepter),
        }
    }
}

impl Drop for TestListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.accepter.take() {
            let _ = handle.join();
        }
    }
}

/// Reads a request head (up to its empty line, or 64 KiB at the most):
/// the bytes read, or None when the stream ended or failed first.
pub fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&got, b"\r\n\r\n").is_none() && got.len() < 64 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    Some(got)
}

/// Sleeps (in 10 ms steps) until `stop` is set or `limit` passes: how a
/// test server holds a connection without answering.
pub fn hold(stop: &AtomicBool, limit: Duration) {
    let until = Instant::now() + limit;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request as a test server reads it.
#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the client asked to close the connection after the answer.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one request (Content-Length bodies only); None at end of stream,
/// on an error, or on anything unexpected.
pub fn read_http_request(reader: &mut impl BufRead) -> Option<HttpRequest> {
    let mut line = Vec::new();
    let mut head = Vec::new();
    for _ in 0..200 {
        line.clear();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if text.is_empty() {
            if head.is_empty() {
                continue;
            }
            break;
        }
        head.push(text);
    }
    let mut request_line = head.first()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers = parse_header_lines(head[1..].iter().map(String::as_str));
    let mut request = HttpRequest {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let len: usize = request
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    if len > 16 << 20 {
        return None;
    }
    request.body = vec![0; len];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

/// Writes one HTTP/1.1 answer with a Content-Length body.
pub fn write_http_response(
    out: &mut impl Write,
    status: u16,
    reason: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut bytes = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{connection}",
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        bytes.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    out.write_all(&bytes)?;
    out.flush()
}
