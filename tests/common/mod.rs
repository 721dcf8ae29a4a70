//! Test harness: the real `conntest` binary on 127.0.0.1, an ephemeral port,
//! and a minimal independent HTTP/1.1 client over raw sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_conntest"))
}

/// A `conntest server` child process, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the server logged to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `conntest server -p 0 --bind 127.0.0.1 EXTRA...` and waits
    /// for its "listening on" line.
    pub fn start(extra: &[&str]) -> ServerProcess {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(bin());
        cmd.args(["server", "-p", "0", "--bind", "127.0.0.1"])
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conntest server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().expect("address in log"));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not report its address");
        ServerProcess { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server (e.g. libc SIGTERM = 15).
    pub fn signal(&self, signal: i32) {
        Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// SIGTERM's number on Linux and the BSDs.
pub const SIGTERM: i32 = 15;

/// Stops a server with SIGTERM and returns its exit code and whole log.
pub fn stop_and_collect_log(mut server: ServerProcess) -> (Option<i32>, String) {
    server.signal(SIGTERM);
    let code = server.wait_exit(Duration::from_secs(10));
    // The stderr reader thread may lag the exit a little.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !server.log_text().contains("stopped") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    (code, server.log_text())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "conntest-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace([' ', '{', '}', ':'], ""));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a bounded child process ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; None when killed by a signal (or by the time limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The time limit ran out and the process was killed.
    pub timed_out: bool,
}

/// A child process with captured output, killed on drop.
pub struct Running {
    pub child: Child,
    started: Instant,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    err: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Running {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        fn drain(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = tx.send(bytes);
            });
            rx
        }
        let out = drain(child.stdout.take().expect("stdout"));
        let err = drain(child.stderr.take().expect("stderr"));
        Running {
            child,
            started,
            out,
            err,
        }
    }

    /// Waits at most `limit` (from the spawn) for the process to exit,
    /// killing it when the limit runs out; its code and output.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        let elapsed = self.started.elapsed();
        // A grandchild still holding a pipe must not hang the test.
        let text = |rx: &std::sync::mpsc::Receiver<Vec<u8>>| {
            String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
                .into_owned()
        };
        Finished {
            code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout: text(&self.out),
            stderr: text(&self.err),
            elapsed,
            timed_out,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Finished {
    Running::spawn(cmd).finish(limit)
}

/// Nanoseconds since the Unix epoch of an RFC 3339 UTC timestamp
/// (`2026-11-24T14:50:05.24190385Z`, fraction optional).
pub fn rfc3339_ns(s: &str) -> i128 {
    fn fail(s: &str) -> ! {
        panic!("not an RFC 3339 UTC timestamp: {s:?}")
    }
    let (date, time) = s.split_once('T').unwrap_or_else(|| fail(s));
    let time = time.strip_suffix('Z').unwrap_or_else(|| fail(s));
    let num = |t: &str| t.parse::<i64>().unwrap_or_else(|_| fail(s));
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    if d.len() != 3 || t.len() != 3 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        fail(s);
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<9}"))
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2];
    secs as i128 * 1_000_000_000 + nanos as i128
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

/// A test-written TCP server on 127.0.0.1: one thread per connection
/// running `handler`. Stops accepting on drop (and after a bounded time).
pub struct TestListener {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl TestListener {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TestListener {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test listener");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handler = Arc::new(handler);
        let accepter = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            let mut accepted = 0;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until && accepted < 20_000 {
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
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.accepter.take() {
            let _ = handle.join();
        }
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
