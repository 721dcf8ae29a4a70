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

/// The proxy variables conntest reads as curl does: the tests' commands
/// drop them, so a proxy in the tester's environment changes nothing.
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

pub const TINYPROXY: &str = "/usr/bin/tinyproxy";

/// Debian's tinyproxy in the foreground on a free 127.0.0.1 port, its
/// configuration and log in a temporary directory; killed on drop.
pub struct TinyProxy {
    child: std::process::Child,
    pub addr: SocketAddr,
    dir: super::TempDir,
}

impl TinyProxy {
    /// Allows `CONNECT` to `connect_ports` only (every port when empty)
    /// and, with `auth` (user, password), wants Basic credentials.
    pub fn start(connect_ports: &[u16], auth: Option<(&str, &str)>) -> TinyProxy {
        let dir = super::TempDir::new("tinyproxy");
        for _ in 0..5 {
            let port = closed_port();
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 100\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Info\n",
                dir.path("tinyproxy.log").display()
            );
            for p in connect_ports {
                conf.push_str(&format!("ConnectPort {p}\n"));
            }
            if let Some((user, password)) = auth {
                conf.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            let path = dir.path("tinyproxy.conf");
            std::fs::write(&path, conf).expect("write tinyproxy.conf");
            let mut child = std::process::Command::new(TINYPROXY)
                .arg("-d")
                .arg("-c")
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {TINYPROXY}: {e}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
                if TcpStream::connect(addr).is_ok() {
                    return TinyProxy { child, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tinyproxy did not start: {}", Self::read_log(&dir));
    }

    /// `http://127.0.0.1:PORT`, with `user:password@` when given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far: each request it carried (`CONNECT host:port`,
    /// `POST http://...`) is there.
    pub fn log(&self) -> String {
        Self::read_log(&self.dir)
    }

    fn read_log(dir: &super::TempDir) -> String {
        std::fs::read_to_string(dir.path("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
