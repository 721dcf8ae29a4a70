//! Hardening tests (issue 6), all through the real binary on 127.0.0.1:
//! slowloris and post-answer dribbling, a connection flood against
//! --max-connections, oversized, absurd and unfinished requests, pipelining
//! past the pipeline limit, clients that never read, upstreams that refuse,
//! reset, hang, answer garbage, answer a gigabyte or trickle, --max-groups
//! and --max-runs, first and second SIGTERM/SIGINT, the token on the client
//! side and in the logs, and memory after a burst of 10 000 connections.
//!
//! Every loop here is bounded in count and in time, and no test asserts a
//! speed beyond generous bounds on the server's own timeouts. The heavy
//! versions (a slowloris of a byte a second for 30 s, a 100 000-attempt
//! flood, repeated memory bursts) are the `#[ignore]`d tests at the end,
//! which `scripts/hardening.sh` runs.

mod common;

use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;
const SIGINT: i32 = 2;
/// Every conntest client process here is killed after this.
const LIMIT: Duration = Duration::from_secs(45);
/// The server's drain of a closing connection (`DRAIN_TIMEOUT` in the
/// server): how long it may read out a peer's leftovers after its answer.
const DRAIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// `conntest ARGS` with no token or log level inherited from the caller.
fn conntest_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("CONNTEST_TOKEN")
        .env_remove("LOG_LEVEL");
    cmd
}

/// Runs a prepared conntest command to completion (bounded).
fn finish(cmd: &mut Command) -> Finished {
    let done = run_bounded(cmd, LIMIT);
    assert!(
        !done.timed_out,
        "{cmd:?} did not finish within {LIMIT:?}\nstderr: {}",
        done.stderr
    );
    done
}

fn conntest(args: &[&str]) -> Finished {
    finish(&mut conntest_cmd(args))
}

/// The value of a `/proc/PID/status` field in kB (VmRSS, VmHWM).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open sockets of a process (its listener and its connections; not its
/// epoll, timer or event descriptors, which the loop makes after it logs
/// "listening").
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until `pid` holds at most `sockets` sockets; the count.
fn wait_for_sockets_at_most(pid: u32, sockets: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = open_sockets(pid);
        if n <= sockets || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// This process's (soft, hard) limits on open files, from /proc/self/limits.
fn fd_limits() -> (usize, Option<usize>) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let fields: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).collect())
        .unwrap_or_default();
    let soft = fields.first().and_then(|v| v.parse().ok()).unwrap_or(1024);
    (soft, fields.get(1).and_then(|v| v.parse().ok()))
}

/// Raises this process's soft open-file limit to the hard one, once (with
/// util-linux `prlimit`: no crate of the tests wraps setrlimit); the soft
/// limit then in force. The tests running beside each other share it.
fn raise_fd_limit() -> usize {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let (soft, Some(hard)) = fd_limits() {
            if soft < hard {
                let _ = Command::new("prlimit")
                    .arg(format!("--pid={}", std::process::id()))
                    .arg(format!("--nofile={hard}:{hard}"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    });
    fd_limits().0
}

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

/// GET /healthz on a new connection within 2 s: its status.
fn healthz(addr: SocketAddr) -> Result<u16, String> {
    call_within(addr, "GET", "/healthz", &[], b"", Duration::from_secs(2)).map(|r| r.status)
}

/// After `what`: within 5 s the server holds no more sockets than the
/// `sockets_before` it held before, and it is healthy.
fn assert_released_and_healthy(
    server: &mut ServerProcess,
    pid: u32,
    sockets_before: usize,
    what: &str,
) {
    let held = wait_for_sockets_at_most(pid, sockets_before, Duration::from_secs(5));
    assert!(
        held <= sockets_before,
        "the server holds {held} sockets after {what}, {sockets_before} before"
    );
    assert_healthy(server, what);
}

/// The server process is alive and answers /healthz 200 promptly.
fn assert_healthy(server: &mut ServerProcess, after: &str) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited after {after}; log:\n{}",
        server.log_text()
    );
    assert_eq!(
        healthz(server.addr),
        Ok(200),
        "/healthz after {after}; log:\n{}",
        server.log_text()
    );
}

/// A pseudo-random number generator (xorshift), seeded per use.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------

/// The head a dribbler sends, one byte at a time; it never ends.
const DRIBBLE_HEAD: &[u8] = b"POST /test-groups/create HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A hostile connection sending one byte of a request head at a time. It
/// does not care about answers: it keeps sending after a 408 and after the
/// server's FIN, until the server really lets go (a reset or a failed
/// write), which is what frees the server's slot.
struct Dribbler {
    stream: TcpStream,
    opened: Instant,
    sent: usize,
    next: Instant,
    /// The first bytes the server sent.
    got: Vec<u8>,
    eof_at: Option<Instant>,
    released_at: Option<Instant>,
    /// One of the first connections, not a replacement.
    initial: bool,
}

impl Dribbler {
    fn open(addr: SocketAddr, initial: bool, rng: &mut Rng) -> std::io::Result<Dribbler> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let mut d = Dribbler {
            stream,
            opened: now,
            sent: 0,
            next: now,
            got: Vec::new(),
            eof_at: None,
            released_at: None,
            initial,
        };
        d.step(now, rng, (200, 500));
        Ok(d)
    }

    /// Reads what arrived and sends the next byte; false once released.
    fn step(&mut self, now: Instant, rng: &mut Rng, gap_ms: (u64, u64)) -> bool {
        if self.released_at.is_some() {
            return false;
        }
        let mut chunk = [0u8; 512];
        for _ in 0..8 {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof_at.get_or_insert(now);
                    break;
                }
                Ok(n) => {
                    if self.got.len() < 512 {
                        self.got.extend_from_slice(&chunk[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.released_at = Some(now);
                    return false;
                }
            }
        }
        let byte = DRIBBLE_HEAD.get(self.sent).copied().unwrap_or(b'a');
        match self.stream.write(&[byte]) {
            Ok(_) => self.sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                self.released_at = Some(now);
                return false;
            }
        }
        self.next = now + Duration::from_millis(rng.between(gap_ms.0, gap_ms.1));
        true
    }

    fn got_408(&self) -> bool {
        self.got.starts_with(b"HTTP/1.1 408")
    }
}

/// What a slowloris attack saw.
#[derive(Debug, Default)]
struct SlowlorisStats {
    opened: usize,
    initial: usize,
    initial_408: usize,
    initial_eof: usize,
    initial_released: usize,
    /// Longest time from open to release of a released connection.
    longest_hold: Duration,
    /// Connections still held by the server at the end.
    still_held: usize,
    /// Of those, how many had been answered 408 / seen EOF.
    still_held_after_408: usize,
    still_held_after_eof: usize,
    /// The first bytes one held connection got, for the report.
    sample_held: String,
}

/// Keeps `count` dribblers going against `addr` while `busy()` is true
/// (replacing the ones the server lets go), then stops replacing and keeps
/// dribbling until every one is let go or `linger` passes. Bounded by
/// `limit` overall.
fn slowloris(
    addr: SocketAddr,
    count: usize,
    gap_ms: (u64, u64),
    linger: Duration,
    limit: Duration,
    mut busy: impl FnMut() -> bool,
) -> SlowlorisStats {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all: Vec<Dribbler> = Vec::with_capacity(count * 2);
    for _ in 0..count {
        let d = Dribbler::open(addr, true, &mut rng).expect("open a dribbler");
        all.push(d);
    }
    let mut live = count;
    let mut replacing = true;
    let mut linger_until = None;
    let mut replacements = 0usize;
    let mut longest_hold = Duration::ZERO;
    while live > 0 && started.elapsed() < limit {
        if replacing && !busy() {
            replacing = false;
            linger_until = Some(Instant::now() + linger);
        }
        if linger_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let now = Instant::now();
        let mut released = 0;
        for d in all.iter_mut() {
            if d.released_at.is_none() && d.next <= now && !d.step(now, &mut rng, gap_ms) {
                released += 1;
                longest_hold = longest_hold.max(now - d.opened);
            }
        }
        live -= released;
        if replacing {
            for _ in 0..released {
                if replacements >= count * 20 {
                    break;
                }
                if let Ok(d) = Dribbler::open(addr, false, &mut rng) {
                    all.push(d);
                    live += 1;
                    replacements += 1;
                }
            }
            // Released ones are done with; keep the list from growing.
            all.retain(|d| d.released_at.is_none() || d.initial);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut stats = SlowlorisStats {
        opened: count + replacements,
        longest_hold,
        ..SlowlorisStats::default()
    };
    for d in &all {
        if d.initial {
            stats.initial += 1;
            stats.initial_408 += d.got_408() as usize;
            stats.initial_eof += d.eof_at.is_some() as usize;
            stats.initial_released += d.released_at.is_some() as usize;
        }
        if d.released_at.is_none() {
            stats.still_held += 1;
            stats.still_held_after_408 += d.got_408() as usize;
            stats.still_held_after_eof += d.eof_at.is_some() as usize;
            if stats.sample_held.is_empty() {
                stats.sample_held = format!(
                    "sent {} bytes over {:?}, got {:?}, EOF {:?} after opening",
                    d.sent,
                    d.opened.elapsed(),
                    preview(&d.got),
                    d.eof_at.map(|t| t - d.opened)
                );
            }
        }
    }
    stats
}

/// How many dribblers a slowloris may use: `wanted`, or fewer when this
/// process's open-file limit is too low for them (said so on stderr).
fn dribblers(wanted: usize) -> usize {
    let limit = raise_fd_limit();
    // Each may be replaced once while its predecessor is still open.
    let n = wanted.min(limit.saturating_sub(1_000) / 3).max(100);
    if n < wanted {
        eprintln!("slowloris: {n} connections instead of {wanted} (open-file limit {limit})");
    }
    n
}

/// Runs `conntest run -r URL ARGS` while a slowloris of `count` dribblers
/// goes on; the honest test's outcome and the attack's statistics.
fn honest_test_under_slowloris(
    server: &ServerProcess,
    count: usize,
    gap_ms: (u64, u64),
    linger: Duration,
    run_args: &[&str],
) -> (Finished, SlowlorisStats) {
    let url = server.url();
    let mut args = vec!["run", "-r", url.as_str(), "-q", "--timeout", "20s"];
    args.extend_from_slice(run_args);
    // The attack starts first; the honest test once every dribbler is in.
    let mut honest: Option<Running> = None;
    let mut done: Option<Finished> = None;
    let stats = slowloris(
        server.addr,
        count,
        gap_ms,
        linger,
        LIMIT + linger + Duration::from_secs(30),
        || {
            let Some(running) = honest.as_mut() else {
                honest = Some(Running::spawn(&mut conntest_cmd(&args)));
                return true;
            };
            if let Ok(None) = running.child.try_wait() {
                return true;
            }
            if let Some(running) = honest.take() {
                done = Some(running.finish(Duration::from_secs(5)));
            }
            false
        },
    );
    let finished = match (done, honest) {
        (Some(f), _) => f,
        (None, Some(running)) => running.finish(LIMIT),
        (None, None) => panic!("the honest test never started"),
    };
    (finished, stats)
}

fn assert_slowloris_released(stats: &SlowlorisStats, request_timeout: Duration) {
    assert_eq!(
        stats.initial_408, stats.initial,
        "not every dribbler got a 408 within --request-timeout {request_timeout:?} plus slack: {stats:#?}"
    );
    assert_eq!(
        stats.still_held, 0,
        "the server still holds dribbling connections long after their 408 \
         (--request-timeout {request_timeout:?}, drain {DRAIN:?}): {stats:#?}"
    );
}

#[test]
fn slowloris_does_not_stop_an_honest_2000_run_test() {
    let mut server = ServerProcess::start(&["--request-timeout", "2s"]);
    let pid = server.child.id();
    let sockets_before = open_sockets(pid);
    let request_timeout = Duration::from_secs(2);
    // After the honest test, the dribblers go on until the server has let
    // every one go: a 408 at 2 s, a drain of at most 2 s, and slack.
    let linger = request_timeout + DRAIN + Duration::from_secs(4);
    let count = dribblers(1000);
    let (honest, stats) = honest_test_under_slowloris(
        &server,
        count,
        (200, 500),
        linger,
        &["--run-count", "2000", "--concurrency", "4"],
    );
    eprintln!(
        "slowloris: {} connections opened, the longest held {:?}; {stats:?}",
        stats.opened, stats.longest_hold
    );
    assert_eq!(
        honest.code,
        Some(0),
        "the honest test failed under slowloris\nstderr: {}\nstdout: {}",
        honest.stderr,
        honest.stdout
    );
    assert_eq!(stats.initial, count, "{stats:?}");
    assert_slowloris_released(&stats, request_timeout);
    assert_released_and_healthy(&mut server, pid, sockets_before, "slowloris");
}

#[test]
fn a_peer_that_keeps_sending_after_its_answer_does_not_hold_a_slot() {
    // One slot: while a finished connection is drained, nobody else is
    // served, so the drain must end even if the peer never stops sending.
    let mut server = ServerProcess::start(&["--max-connections", "1"]);
    let mut hostile = Conn::open(server.addr);
    hostile.send(&req("GET", "/healthz", &[("Connection", "close")], b""));
    let reply = hostile
        .reply_within(Duration::from_secs(5))
        .expect("an answer");
    assert_eq!(reply.status, 200);
    // A second connection waits in the backlog for the slot.
    let mut waiting = Conn::open(server.addr);
    waiting.send(&req("GET", "/healthz", &[("Connection", "close")], b""));
    // The hostile peer sends a byte every 200 ms, for at most 10 s.
    let started = Instant::now();
    let mut released = None;
    while started.elapsed() < Duration::from_secs(10) {
        if hostile.stream.write_all(b"x").is_err() {
            released = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let answered = waiting.reply_within(Duration::from_secs(3));
    assert!(
        released.is_some(),
        "a peer sending a byte every 200 ms after its Connection: close answer was \
         not cut off within 10 s (the drain should end {DRAIN:?} after the answer)"
    );
    assert_eq!(
        answered.map(|r| r.status),
        Ok(200),
        "the connection waiting for the slot was not served"
    );
    assert_healthy(&mut server, "a peer dribbling after its answer");
}

// ---------------------------------------------------------------------------
// Connection flood
// ---------------------------------------------------------------------------

#[test]
fn a_connection_flood_waits_beyond_the_cap_and_the_server_recovers() {
    let mut server = ServerProcess::start(&["--max-connections", "50"]);
    let addr = server.addr;
    let pid = server.child.id();
    let sockets_before = open_sockets(pid);
    // 300 connections, opened in order, sending nothing. The kernel's
    // backlog completes them all; the server accepts the first 50.
    let mut flood: Vec<Conn> = (0..300).map(|_| Conn::open(addr)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_sockets(pid) < sockets_before + 50 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    let accepted = open_sockets(pid) - sockets_before;
    assert_eq!(
        accepted, 50,
        "the server holds {accepted} connections with --max-connections 50"
    );
    // (b) The accepted ones keep being served.
    flood[0].send(&req("GET", "/healthz", &[], b""));
    assert_eq!(
        flood[0]
            .reply_within(Duration::from_secs(2))
            .map(|r| r.status),
        Ok(200),
        "an accepted connection was not served while the flood waits"
    );
    // (a) One beyond the cap is not served while the first 50 stay open.
    let last = flood.len() - 1;
    flood[last].send(&req("GET", "/healthz", &[("Connection", "close")], b""));
    let early = flood[last].reply_within(Duration::from_millis(500));
    assert!(
        early.is_err(),
        "a connection beyond the cap was served: {early:?}"
    );
    for i in [1, 25, 49] {
        flood[i].send(&req("GET", "/healthz", &[], b""));
        assert_eq!(
            flood[i]
                .reply_within(Duration::from_secs(2))
                .map(|r| r.status),
            Ok(200),
            "accepted connection {i} was not served"
        );
    }
    // Once everything ahead of it closes, the waiting one is served.
    let mut waiting = flood.pop().unwrap();
    drop(flood);
    assert_eq!(
        waiting
            .reply_within(Duration::from_secs(5))
            .map(|r| r.status),
        Ok(200),
        "the connection beyond the cap was not served after the others closed"
    );
    drop(waiting);
    // (c) The server recovers: prompt answers, a whole test passes.
    let started = Instant::now();
    assert_eq!(healthz(addr), Ok(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    let url = server.url();
    let done = conntest(&[
        "run",
        "-r",
        &url,
        "-q",
        "--run-count",
        "1000",
        "--concurrency",
        "2",
    ]);
    assert_eq!(
        done.code,
        Some(0),
        "a test after the flood failed: {}",
        done.stderr
    );
    assert_released_and_healthy(&mut server, pid, sockets_before, "the flood");
}

// ---------------------------------------------------------------------------
// Oversized and unfinished requests
// ---------------------------------------------------------------------------

#[test]
fn oversized_absurd_and_unfinished_requests_get_clear_answers() {
    let mut server = ServerProcess::start(&["--max-body", "4096", "--request-timeout", "1s"]);
    let addr = server.addr;
    // A 64 KiB header block.
    let big = "h".repeat(64 * 1024);
    let reply = try_call(
        addr,
        "POST",
        "/test-groups/create",
        &[("X-Big", &big)],
        br#"{"run_count": 1}"#,
    )
    .expect("an answer to a 64 KiB header block");
    assert_error(&reply, 431, "");
    assert_healthy(&mut server, "a 64 KiB header block");
    // A body over --max-body.
    let config = format!(
        r#"{{"run_count": 1, "description": "{}"}}"#,
        "d".repeat(5000)
    );
    let reply = try_call(addr, "POST", "/test-groups/create", &[], config.as_bytes())
        .expect("an answer to a body over --max-body");
    assert_error(&reply, 413, "4096");
    assert_healthy(&mut server, "a body over --max-body");
    // Absurd numbers: refused, naming the field and the limit.
    for (body, field) in [
        (r#"{"run_count": 1000000000000}"#, "run_count"),
        (
            r#"{"run_count": 10, "concurrency": 1000000000}"#,
            "concurrency",
        ),
        (
            r#"{"run_count": 10, "server_delay_ns": 100000000000000000}"#,
            "server_delay_ns",
        ),
        (
            r#"{"run_count": 10, "client_delay_ns": 100000000000000000}"#,
            "client_delay_ns",
        ),
        (
            r#"{"run_count": 10, "upstream_timeout_ns": 100000000000000000}"#,
            "upstream_timeout_ns",
        ),
        (r#"{"run_count": 1e300}"#, "run_count"),
        (r#"{"run_count": 18446744073709551616}"#, "run_count"),
    ] {
        let reply = try_call(addr, "POST", "/test-groups/create", &[], body.as_bytes())
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let message = assert_error(&reply, 400, field);
        if !body.contains("e300") && !body.contains("18446744073709551616") {
            assert!(message.contains("at most"), "{body}: {message}");
        }
        assert_healthy(&mut server, body);
    }
    let list = try_call(addr, "GET", "/test-groups", &[], b"").unwrap();
    assert_eq!(
        list.json(),
        serde_json::json!([]),
        "a refused create left a group"
    );
    // A body that never finishes: 10 of 100 bytes, then silence.
    let mut conn = Conn::open(addr);
    let sent = Instant::now();
    conn.send(
        b"POST /test-groups/create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"run_cou",
    );
    assert_timed_out_reply(
        conn.read_until_close(Duration::from_secs(6)),
        sent.elapsed(),
        Duration::from_secs(1),
        "a body that never finishes, read for 6 s (--request-timeout 1s)",
        |reply| {
            assert_error(reply, 408, "");
        },
    );
    assert_healthy(&mut server, "a body that never finishes");
}

// ---------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Accept, then close at once without reading.
    CloseAtOnce,
    /// Accept, let the request arrive, close without reading it (a reset).
    Reset,
    /// Accept, read the request, never answer.
    Hang,
    /// Answer `HELLO\r\n\r\n`.
    Garbage,
    /// Announce a 1 GiB body by Content-Length, then stream zeros.
    HugeLength,
    /// A chunked body of zeros without end.
    HugeChunked,
    /// A body delimited by the close, zeros without end.
    HugeUntilClose,
    /// A good answer, one byte every 100 ms.
    Trickle,
}

/// A fake upstream on 127.0.0.1 misbehaving as told; stops on drop and
/// after 30 s at most.
struct FakeUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    /// Per streamed answer: body bytes written, and how the writing ended.
    streamed: Arc<Mutex<Vec<(u64, String)>>>,
    _listener: TestListener,
}

impl FakeUpstream {
    fn start(fault: Fault) -> FakeUpstream {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let streamed = Arc::new(Mutex::new(Vec::new()));
        let (stop2, accepted2, streamed2) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&streamed),
        );
        let listener = TestListener::start_for(Duration::from_secs(30), 20_000, move |stream| {
            accepted2.fetch_add(1, Ordering::SeqCst);
            misbehave(fault, stream, &stop2, &streamed2)
        });
        FakeUpstream {
            addr: listener.addr,
            stop,
            accepted,
            streamed,
            _listener: listener,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/fault", self.addr)
    }

    /// Waits (bounded) until `n` streamed answers have ended; them.
    fn wait_streamed(&self, n: usize, limit: Duration) -> Vec<(u64, String)> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.streamed.lock().unwrap().clone();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn misbehave(
    fault: Fault,
    mut stream: TcpStream,
    stop: &AtomicBool,
    streamed: &Mutex<Vec<(u64, String)>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    match fault {
        Fault::CloseAtOnce => drop(stream),
        Fault::Reset => {
            // Closing with the request unread makes the kernel send a reset.
            let mut byte = [0u8; 1];
            let _ = stream.peek(&mut byte);
            thread::sleep(Duration::from_millis(20));
            drop(stream);
        }
        Fault::Hang => {
            let _ = read_head(&mut stream);
            hold(stop, Duration::from_secs(30));
        }
        Fault::Garbage => {
            if read_head(&mut stream).is_some() {
                let _ = stream.write_all(b"HELLO\r\n\r\n");
                hold(stop, Duration::from_secs(10));
            }
        }
        Fault::Trickle => {
            if read_head(&mut stream).is_some() {
                for &b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
                    if stop.load(Ordering::SeqCst) || stream.write_all(&[b]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                hold(stop, Duration::from_secs(5));
            }
        }
        Fault::HugeLength | Fault::HugeChunked | Fault::HugeUntilClose => {
            if read_head(&mut stream).is_none() {
                return;
            }
            let zeros = vec![0u8; 64 * 1024];
            let (head, frame): (&[u8], Vec<u8>) = match fault {
                Fault::HugeLength => (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
                    zeros,
                ),
                Fault::HugeChunked => {
                    let mut f = b"10000\r\n".to_vec();
                    f.extend_from_slice(&zeros);
                    f.extend_from_slice(b"\r\n");
                    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", f)
                }
                _ => (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", zeros),
            };
            let mut written = 0u64;
            let until = Instant::now() + Duration::from_secs(20);
            let how = if stream.write_all(head).is_err() {
                "the head could not be written".to_owned()
            } else {
                loop {
                    if written >= 1 << 30 {
                        break "wrote the whole GiB".to_owned();
                    }
                    if Instant::now() >= until {
                        break "still writing after 20 s".to_owned();
                    }
                    match stream.write(&frame) {
                        Ok(n) => written += n as u64,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break "stalled: the server stopped reading but kept the connection"
                                .to_owned()
                        }
                        Err(e) => break format!("write failed: {e}"),
                    }
                }
            };
            streamed.lock().unwrap().push((written, how));
        }
    }
}

const FAULT_RUNS: u64 = 3;
const UPSTREAM_TIMEOUT_NS: u64 = 300 * MS;

/// Runs a group whose upstream is `endpoint` with `conntest client` (the
/// client fails: every run has an upstream error), checks the report and
/// the server's health; the server's record of the runs.
fn runs_against_upstream(server: &mut ServerProcess, endpoint: &str) -> Vec<Value> {
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": {FAULT_RUNS}, "upstream_endpoint": "{endpoint}", "upstream_timeout_ns": {UPSTREAM_TIMEOUT_NS}}}"#
        ),
    );
    let dir = TempDir::new("hardening-upstream");
    let report_path = dir.path("report.json");
    let url = server.url();
    let report_arg = report_path.to_string_lossy().into_owned();
    let done = conntest(&["client", "-r", &url, "-g", &id, "-q", "-f", &report_arg]);
    assert_eq!(
        done.code,
        Some(1),
        "the client should fail when every upstream fails\nstderr: {}",
        done.stderr
    );
    let report = read_json(&report_path);
    let summary = &report["summary"];
    assert_eq!(
        summary["errors"]["upstream"].as_u64(),
        Some(FAULT_RUNS),
        "summary: {summary}"
    );
    assert_eq!(summary["failed"].as_u64(), Some(FAULT_RUNS), "{summary}");
    let runs = runs_of(&get_group(server.addr, &id));
    assert_eq!(runs.len(), FAULT_RUNS as usize, "runs lost: {runs:?}");
    assert_healthy(server, &format!("upstream {endpoint}"));
    runs
}

/// The run's upstream error, lower-cased.
fn upstream_error(run: &Value) -> String {
    run["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error recorded for a failing upstream: {run}"))
        .to_ascii_lowercase()
}

fn assert_no_upstream_answer(run: &Value) {
    let code = run["upstream_response_code"].as_u64().unwrap_or(0);
    assert_eq!(
        code, 0,
        "an answer code recorded for a failed upstream: {run}"
    );
}

#[test]
fn upstream_that_refuses() {
    let mut server = ServerProcess::start(&[]);
    let endpoint = format!("http://127.0.0.1:{}/", closed_port());
    for run in runs_against_upstream(&mut server, &endpoint) {
        let error = upstream_error(&run);
        assert!(
            error.contains("connect") && error.contains("refused"),
            "{error}"
        );
        assert_no_upstream_answer(&run);
    }
}

#[test]
fn upstream_that_closes_or_resets() {
    let mut server = ServerProcess::start(&[]);
    for fault in [Fault::CloseAtOnce, Fault::Reset] {
        let upstream = FakeUpstream::start(fault);
        for run in runs_against_upstream(&mut server, &upstream.url()) {
            let error = upstream_error(&run);
            assert!(
                ["closed", "reset", "broken pipe"]
                    .iter()
                    .any(|w| error.contains(w)),
                "{fault:?}: unclear error: {error}"
            );
            assert_no_upstream_answer(&run);
            assert!(
                run["server_duration_ns"].as_u64().unwrap() < UPSTREAM_TIMEOUT_NS,
                "{fault:?}: the run waited for the timeout: {run}"
            );
        }
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), FAULT_RUNS);
    }
}

#[test]
fn upstream_that_hangs_or_trickles_times_out() {
    let mut server = ServerProcess::start(&[]);
    for fault in [Fault::Hang, Fault::Trickle] {
        let upstream = FakeUpstream::start(fault);
        for run in runs_against_upstream(&mut server, &upstream.url()) {
            let error = upstream_error(&run);
            assert!(error.contains("timed out"), "{fault:?}: {error}");
            assert_no_upstream_answer(&run);
            assert!(
                run["server_duration_ns"].as_u64().unwrap() >= UPSTREAM_TIMEOUT_NS,
                "{run}"
            );
        }
        // A raw POST is answered 200 once the upstream timeout ends.
        let id = create_group(
            server.addr,
            &format!(
                r#"{{"run_count": 1, "upstream_endpoint": "{}", "upstream_timeout_ns": {UPSTREAM_TIMEOUT_NS}}}"#,
                upstream.url()
            ),
        );
        let sent = Instant::now();
        let reply = try_call(server.addr, "POST", &run_path(&id, 1), &[], b"held")
            .expect("an answer to the run");
        let waited = sent.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            waited >= Duration::from_nanos(UPSTREAM_TIMEOUT_NS) && waited < Duration::from_secs(3),
            "{fault:?}: answered after {waited:?} with a 300 ms upstream timeout"
        );
        assert_healthy(&mut server, &format!("{fault:?}"));
    }
}

#[test]
fn upstream_that_answers_garbage() {
    let mut server = ServerProcess::start(&[]);
    let upstream = FakeUpstream::start(Fault::Garbage);
    for run in runs_against_upstream(&mut server, &upstream.url()) {
        let error = upstream_error(&run);
        assert!(error.contains("malformed"), "{error}");
        assert_no_upstream_answer(&run);
    }
}

#[test]
fn upstream_that_answers_a_gigabyte_is_not_read_past_the_limit() {
    let mut server = ServerProcess::start(&[]);
    for fault in [Fault::HugeLength, Fault::HugeChunked, Fault::HugeUntilClose] {
        let upstream = FakeUpstream::start(fault);
        let runs = runs_against_upstream(&mut server, &upstream.url());
        for run in &runs {
            let error = upstream_error(run);
            assert!(
                error.contains("larger than"),
                "{fault:?}: the error does not say the body is too large: {error}"
            );
            assert_eq!(
                run["upstream_response_code"].as_u64(),
                Some(200),
                "{fault:?}: {run}"
            );
        }
        let streamed = upstream.wait_streamed(FAULT_RUNS as usize, Duration::from_secs(25));
        eprintln!("{fault:?}: bytes written before the server let go: {streamed:?}");
        assert_eq!(
            streamed.len(),
            FAULT_RUNS as usize,
            "{fault:?}: {streamed:?}"
        );
        for (written, how) in &streamed {
            assert!(
                how.starts_with("write failed"),
                "{fault:?}: the server did not close the connection: {how} after {written} bytes"
            );
            assert!(
                *written < 16 << 20,
                "{fault:?}: the server took {written} bytes of the body, limit 1 MiB"
            );
        }
    }
    // --upstream-max-body sets the limit.
    let mut server = ServerProcess::start(&["--upstream-max-body", "1000"]);
    let upstream = FakeUpstream::start(Fault::HugeLength);
    for run in runs_against_upstream(&mut server, &upstream.url()) {
        let error = upstream_error(&run);
        assert!(error.contains("larger than 1000"), "{error}");
    }
}

// ---------------------------------------------------------------------------
// Bounded resources
// ---------------------------------------------------------------------------

#[test]
fn max_groups_answers_507_until_a_group_is_deleted() {
    let mut server = ServerProcess::start(&["--max-groups", "3"]);
    let addr = server.addr;
    let ids: Vec<String> = (0..3)
        .map(|_| create_group(addr, r#"{"run_count": 1}"#))
        .collect();
    for _ in 0..3 {
        let reply = try_call(
            addr,
            "POST",
            "/test-groups/create",
            &[],
            br#"{"run_count": 1}"#,
        )
        .expect("an answer");
        assert_error(&reply, 507, "--max-groups");
    }
    let list = try_call(addr, "GET", "/test-groups", &[], b"")
        .unwrap()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let deleted = try_call(
        addr,
        "DELETE",
        &format!("/test-groups/{}", ids[0]),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    create_group(addr, r#"{"run_count": 1}"#);
    let reply = try_call(
        addr,
        "POST",
        "/test-groups/create",
        &[],
        br#"{"run_count": 1}"#,
    )
    .unwrap();
    assert_error(&reply, 507, "--max-groups");
    assert_healthy(&mut server, "--max-groups");
}

#[test]
fn max_runs_answers_507_across_groups_until_a_group_is_deleted() {
    let mut server = ServerProcess::start(&["--max-runs", "100"]);
    let addr = server.addr;
    let a = create_group(addr, r#"{"run_count": 200}"#);
    let b = create_group(addr, r#"{"run_count": 10}"#);
    // 100 runs, pipelined 50 at a time on one connection.
    let mut conn = Conn::open(addr);
    for batch in 0..2 {
        let mut bytes = Vec::new();
        for count in batch * 50 + 1..=batch * 50 + 50 {
            bytes.extend(req("POST", &run_path(&a, count), &[], b"r"));
        }
        conn.send(&bytes);
        for count in batch * 50 + 1..=batch * 50 + 50 {
            let reply = conn
                .reply_within(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("run {count}: {e}"));
            assert_eq!(reply.status, 200, "run {count}: {}", reply.text());
        }
    }
    // The 101st, in either group.
    conn.send(&req("POST", &run_path(&a, 101), &[], b"r"));
    let reply = conn
        .reply_within(Duration::from_secs(5))
        .expect("an answer");
    assert_error(&reply, 507, "--max-runs");
    let reply = try_call(addr, "POST", &run_path(&b, 1), &[], b"r").unwrap();
    assert_error(&reply, 507, "--max-runs");
    assert_eq!(runs_of(&get_group(addr, &a)).len(), 100);
    assert!(runs_of(&get_group(addr, &b)).is_empty());
    // Deleting a group frees its runs.
    let deleted = try_call(addr, "DELETE", &format!("/test-groups/{a}"), &[], b"").unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(
        try_call(addr, "POST", &run_path(&b, 1), &[], b"r")
            .unwrap()
            .status,
        200
    );
    assert_healthy(&mut server, "--max-runs");
}

#[test]
fn more_requests_pipelined_than_the_pipeline_limit_are_all_answered() {
    // The server parses at most 64 pipelined requests ahead of its answers;
    // the rest must wait in its buffer, not be forgotten there.
    let mut server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 200}"#);
    let mut conn = Conn::open(server.addr);
    let mut bytes = Vec::new();
    for count in 1..=100 {
        bytes.extend(req("GET", "/healthz", &[], b""));
        bytes.extend(req("POST", &run_path(&id, count), &[], b"p"));
    }
    // One write: the server reads all 200 requests at once.
    conn.send(&bytes);
    for i in 1..=200 {
        let reply = conn
            .reply_within(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("pipelined request {i} of 200 not answered: {e}"));
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert_eq!(runs_of(&get_group(server.addr, &id)).len(), 100);
    assert_healthy(&mut server, "200 pipelined requests");
}

#[test]
fn clients_that_never_read_cannot_grow_the_server() {
    let mut server = ServerProcess::start(&[]);
    let addr = server.addr;
    let pid = server.child.id();
    // A group of about 5 MB as JSON: 2 000 runs of 2 KiB.
    let body = "b".repeat(2048);
    let url = server.url();
    let done = conntest(&["run", "-r", &url, "-q", "--run-count", "2000", "-d", &body]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let list = try_call(addr, "GET", "/test-groups", &[], b"")
        .unwrap()
        .json();
    let id = list[0]["run_group_id"].as_str().unwrap().to_owned();
    let size = try_call(addr, "GET", &format!("/test-groups/{id}"), &[], b"")
        .unwrap()
        .body
        .len();
    thread::sleep(Duration::from_millis(200));
    let before = proc_status_kb(pid, "VmRSS");
    // 4 connections each ask for it 100 times and read nothing.
    let mut request = Vec::new();
    for _ in 0..100 {
        request.extend(req("GET", &format!("/test-groups/{id}"), &[], b""));
    }
    let mut hogs: Vec<Conn> = (0..4).map(|_| Conn::open(addr)).collect();
    for hog in hogs.iter_mut() {
        hog.send(&request);
    }
    thread::sleep(Duration::from_secs(2));
    assert_healthy(&mut server, "clients that never read");
    let held = proc_status_kb(pid, "VmRSS");
    let growth = held.saturating_sub(before);
    eprintln!(
        "never-reading clients: 400 pipelined GETs of a {size}-byte group; VmRSS {before} kB \
         before, {held} kB while held (+{growth} kB)"
    );
    // Unbounded, it would be 400 x the group (or 4 x 64 of it, parsed ahead).
    assert!(
        growth < 64 * 1024,
        "VmRSS grew by {growth} kB for 4 clients that never read ({size}-byte answers)"
    );
    drop(hogs);
    assert_healthy(&mut server, "clients that never read, closed");
}

// ---------------------------------------------------------------------------
// Server signals
// ---------------------------------------------------------------------------

/// Starts a run held by `delay_ns` on a new connection; returns once the
/// server has it in flight (its pipelined /healthz is answered).
fn run_in_flight(server: &ServerProcess, delay_ns: u64) -> Conn {
    let bytes = healthz_then_delayed_run(server.addr, delay_ns);
    let mut conn = Conn::open(server.addr);
    conn.send(&bytes);
    assert_eq!(
        conn.reply_within(Duration::from_secs(5)).map(|r| r.status),
        Ok(200)
    );
    conn
}

/// Whether a new connection to `addr` is refused or left unanswered.
fn new_connections_refused(addr: SocketAddr) -> Result<(), String> {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(_) => Ok(()),
        Ok(stream) => {
            let mut conn = Conn::from(stream);
            let _ = conn
                .stream
                .write_all(&req("GET", "/healthz", &[("Connection", "close")], b""));
            match conn.reply_within(Duration::from_millis(300)) {
                Ok(reply) => Err(format!("answered {}", reply.status)),
                Err(_) => Ok(()),
            }
        }
    }
}

#[test]
fn first_signal_stops_accepting_and_finishes_the_run_in_flight() {
    for signal in [SIGTERM, SIGINT] {
        let mut server = ServerProcess::start(&[]);
        let delay = 500 * MS;
        let sent = Instant::now();
        let mut conn = run_in_flight(&server, delay);
        server.signal(signal);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            new_connections_refused(server.addr),
            Ok(()),
            "signal {signal}: a new connection was served while stopping"
        );
        let reply = conn.reply_within(Duration::from_secs(5));
        assert_eq!(
            reply.as_ref().map(|r| r.status),
            Ok(200),
            "signal {signal}: the held run was not answered; log:\n{}",
            server.log_text()
        );
        assert!(sent.elapsed() >= Duration::from_nanos(delay));
        let code = server.wait_exit(Duration::from_secs(5));
        assert_eq!(
            code,
            Some(0),
            "signal {signal}: exit; log:\n{}",
            server.log_text()
        );
    }
}

#[test]
fn second_signal_exits_at_once() {
    for (first, second) in [(SIGTERM, SIGTERM), (SIGTERM, SIGINT), (SIGINT, SIGINT)] {
        let mut server = ServerProcess::start(&[]);
        let _conn = run_in_flight(&server, 5_000 * MS);
        server.signal(first);
        thread::sleep(Duration::from_millis(200));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "signals {first}: exited before finishing the 5 s delay"
        );
        let sent = Instant::now();
        server.signal(second);
        let code = server.wait_exit(Duration::from_secs(1));
        assert_eq!(
            code,
            Some(128 + second),
            "signals {first}, {second}: not an immediate exit 128+{second} within 1 s (after {:?})",
            sent.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// Access
// ---------------------------------------------------------------------------

const TOKEN: &str = "tok-7f3a9c51-SECRET";

#[test]
fn the_client_presents_the_token_from_flag_or_env() {
    let server = ServerProcess::start(&["--token", TOKEN]);
    let url = server.url();
    let run = |token: Option<&str>, env: Option<&str>| {
        let mut args = vec!["run", "-r", url.as_str(), "-q", "--run-count", "20"];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let mut cmd = conntest_cmd(&args);
        if let Some(t) = env {
            cmd.env("CONNTEST_TOKEN", t);
        }
        finish(&mut cmd)
    };
    let with_flag = run(Some(TOKEN), None);
    assert_eq!(with_flag.code, Some(0), "{}", with_flag.stderr);
    let with_env = run(None, Some(TOKEN));
    assert_eq!(with_env.code, Some(0), "{}", with_env.stderr);
    for (what, done) in [
        ("no token", run(None, None)),
        ("a wrong token", run(Some("wrong"), None)),
        ("a wrong CONNTEST_TOKEN", run(None, Some("wrong"))),
    ] {
        assert_eq!(done.code, Some(2), "{what}: {}", done.stderr);
        let stderr = done.stderr.to_ascii_lowercase();
        assert!(
            stderr.contains("401") && stderr.contains("token"),
            "{what}: the message does not say the token was refused: {}",
            done.stderr
        );
        assert!(!done.stderr.contains(TOKEN), "{what}: {}", done.stderr);
    }
    // `conntest client` on a group created with the token.
    let auth = format!("Bearer {TOKEN}");
    let created = try_call(
        server.addr,
        "POST",
        "/test-groups/create",
        &[("Authorization", &auth)],
        br#"{"run_count": 10, "concurrency": 2}"#,
    )
    .unwrap();
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["run_group_id"].as_str().unwrap().to_owned();
    let done = conntest(&["client", "-r", &url, "-g", &id, "-q"]);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("401"), "{}", done.stderr);
    let mut cmd = conntest_cmd(&["client", "-r", &url, "-g", &id, "-q"]);
    cmd.env("CONNTEST_TOKEN", TOKEN);
    let done = finish(&mut cmd);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[test]
fn logs_never_show_the_token_or_run_bodies() {
    const BODY: &str = "BODY-d41d8cd98f00-MARKER";
    const GROUP_DATA: &str = "GROUPDATA-5eb63bbbe01e-MARKER";
    const WRONG: &str = "WRONG-0cc175b9c0f1-TOKEN";
    let common_args = [
        "--request-timeout",
        "500ms",
        "--max-body",
        "4096",
        "--upstream-allow",
        "127.0.0.1",
    ];
    let mut info_args = common_args.to_vec();
    info_args.extend(["--token", TOKEN]);
    let info = ServerProcess::start_with_env(&info_args, &[("LOG_LEVEL", "info")]);
    let debug = ServerProcess::start_with_env(
        &common_args,
        &[("LOG_LEVEL", "debug"), ("CONNTEST_TOKEN", TOKEN)],
    );
    let auth = format!("Bearer {TOKEN}");
    let auth_header = [("Authorization", auth.as_str())];
    for server in [&info, &debug] {
        let url = server.url();
        let addr = server.addr;
        // A whole test with a distinctive body, at debug level on the client too.
        let mut cmd = conntest_cmd(&[
            "run",
            "-r",
            &url,
            "-q",
            "--run-count",
            "30",
            "--concurrency",
            "2",
            "-d",
            BODY,
            "--token",
            TOKEN,
        ]);
        cmd.env("LOG_LEVEL", "debug");
        let done = finish(&mut cmd);
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        assert!(!done.stderr.contains(TOKEN), "client: {}", done.stderr);
        // A group whose data is distinctive, its runs failing upstream.
        let config = format!(
            r#"{{"run_count": 3, "data": "{GROUP_DATA}", "upstream_endpoint": "http://127.0.0.1:{}/", "upstream_timeout_ns": 200000000}}"#,
            closed_port()
        );
        let created = try_call(
            addr,
            "POST",
            "/test-groups/create",
            &auth_header,
            config.as_bytes(),
        )
        .unwrap();
        assert_eq!(created.status, 200, "{}", created.text());
        let id = created.json()["run_group_id"].as_str().unwrap().to_owned();
        // POST /test-groups/ID/COUNT on its own connection.
        let post_run = |count: u64, headers: &[(&str, &str)], body: &[u8]| {
            try_call(addr, "POST", &run_path(&id, count), headers, body).unwrap()
        };
        for count in 1..=3 {
            let reply = post_run(count, &auth_header, GROUP_DATA.as_bytes());
            assert_eq!(reply.status, 200);
        }
        // Refusals: a wrong token, a body too large, a body never finished,
        // a bad run count; each carrying the markers.
        let wrong = format!("Bearer {WRONG}");
        let reply = post_run(1, &[("Authorization", &wrong)], BODY.as_bytes());
        assert_eq!(reply.status, 401);
        let big = BODY.repeat(300);
        let reply = post_run(2, &auth_header, big.as_bytes());
        assert_eq!(reply.status, 413);
        let reply = post_run(0, &auth_header, BODY.as_bytes());
        assert_eq!(reply.status, 400);
        let mut conn = Conn::open(addr);
        conn.send(
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 1000\r\n\r\n{BODY}",
                run_path(&id, 3)
            )
            .as_bytes(),
        );
        let _ = conn.read_until_close(Duration::from_secs(3));
    }
    let (info_code, info_log) = stop_and_collect_log(info);
    let (debug_code, debug_log) = stop_and_collect_log(debug);
    assert_eq!(info_code, Some(0), "{info_log}");
    assert_eq!(debug_code, Some(0), "{debug_log}");
    assert!(
        debug_log.contains("DEBUG"),
        "LOG_LEVEL=debug logged nothing at debug level:\n{debug_log}"
    );
    for (level, log) in [("info", &info_log), ("debug", &debug_log)] {
        for secret in [TOKEN, WRONG, BODY, GROUP_DATA] {
            assert!(
                !log.contains(secret),
                "the {level} log shows {secret:?}:\n{log}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// How many sockets a burst may use: 10 000, or fewer when this process's
/// open-file limit (shared with the tests running beside it) is lower.
fn burst_size(wanted: usize) -> usize {
    let limit = raise_fd_limit();
    let n = wanted.min(limit.saturating_sub(4_000)).max(500);
    if n < wanted {
        eprintln!("burst: {n} connections instead of {wanted} (open-file limit {limit})");
    }
    n
}

/// Opens `n` connections, sends a /healthz on each, reads every answer,
/// then closes them all; returns how many were answered 200.
fn burst(addr: SocketAddr, n: usize) -> usize {
    let mut conns = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => conns.push(Conn::from(s)),
            Err(e) => {
                eprintln!(
                    "burst: connect failed after {} connections: {e}",
                    conns.len()
                );
                break;
            }
        }
    }
    let request = req("GET", "/healthz", &[], b"");
    for c in conns.iter_mut() {
        let _ = c.stream.write_all(&request);
    }
    let mut ok = 0;
    for c in conns.iter_mut() {
        if Instant::now() >= deadline {
            break;
        }
        if c.reply_within(Duration::from_secs(5))
            .is_ok_and(|r| r.status == 200)
        {
            ok += 1;
        }
    }
    ok
}

/// Runs bursts of `n` connections; (baseline, after each burst) VmRSS in kB.
fn memory_after_bursts(server: &ServerProcess, n: usize, bursts: usize) -> (u64, Vec<u64>) {
    let pid = server.child.id();
    for _ in 0..20 {
        assert_eq!(healthz(server.addr), Ok(200));
    }
    thread::sleep(Duration::from_millis(200));
    let sockets_before = open_sockets(pid);
    let baseline = proc_status_kb(pid, "VmRSS");
    let mut after = Vec::new();
    for round in 1..=bursts {
        let answered = burst(server.addr, n);
        assert_eq!(answered, n, "burst {round}: {answered} of {n} answered");
        let held = wait_for_sockets_at_most(pid, sockets_before, Duration::from_secs(10));
        assert!(
            held <= sockets_before,
            "burst {round}: the server holds {held} sockets, {sockets_before} before"
        );
        thread::sleep(Duration::from_millis(300));
        after.push(proc_status_kb(pid, "VmRSS"));
    }
    (baseline, after)
}

#[test]
fn memory_returns_after_a_burst_of_10000_connections() {
    let mut server = ServerProcess::start(&["--max-connections", "12000"]);
    let n = burst_size(10_000);
    let (baseline, after) = memory_after_bursts(&server, n, 2);
    let peak = proc_status_kb(server.child.id(), "VmHWM");
    // The server frees its connection table and trims the heap once a
    // burst is over: back to within 2 MB of where it started.
    let bound = baseline + 2 * 1024;
    eprintln!(
        "memory: {n} connections per burst; VmRSS baseline {baseline} kB, peak (VmHWM) \
         {peak} kB, after each burst {after:?} kB; bound {bound} kB"
    );
    assert!(
        after[0] <= bound,
        "VmRSS after a burst of {n} connections is {} kB: baseline {baseline} kB, \
         peak {peak} kB, bound baseline + 2 MB = {bound} kB",
        after[0]
    );
    // What the allocator keeps, a second burst reuses: growth is a leak.
    assert!(
        after[1] <= after[0] + 1024,
        "VmRSS grows burst after burst: baseline {baseline} kB, after each {after:?} kB"
    );
    assert_healthy(&mut server, "a burst of connections");
}

// ---------------------------------------------------------------------------
// Heavy versions, for scripts/hardening.sh (`cargo test -- --ignored`).
// Knobs come from the environment.
// ---------------------------------------------------------------------------

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 1 000 connections each dribbling a byte a second for ~30 s (the
/// default --request-timeout, 10 s, lets each live a while) while an
/// honest 2 000-run test, paced to span the attack, passes.
#[test]
#[ignore = "heavy: run by scripts/hardening.sh"]
fn heavy_slowloris_a_byte_a_second() {
    let connections = dribblers(knob("HARDENING_SLOWLORIS_CONNECTIONS", 1000) as usize);
    let seconds = knob("HARDENING_SLOWLORIS_SECONDS", 30);
    let mut server = ServerProcess::start(&[]);
    let pace = (seconds * 1_000_000_000 / 2000).to_string();
    let linger = Duration::from_secs(10) + DRAIN + Duration::from_secs(5);
    let (honest, stats) = honest_test_under_slowloris(
        &server,
        connections,
        (900, 1100),
        linger,
        &[
            "--run-count",
            "2000",
            "--concurrency",
            "4",
            "--client-delay-ns",
            &pace,
        ],
    );
    eprintln!("heavy slowloris: {stats:?}");
    assert_eq!(honest.code, Some(0), "honest test: {}", honest.stderr);
    assert_slowloris_released(&stats, Duration::from_secs(10));
    assert_healthy(&mut server, "the heavy slowloris");
}

/// 100 000 connection attempts from 8 threads, 400 in flight at a time,
/// against --max-connections 200 (each asks /healthz and closes), while an
/// honest test runs: all are answered in turn, and then
/// the server answers promptly, holds no connection, and its memory is
/// back near its baseline.
#[test]
#[ignore = "heavy: run by scripts/hardening.sh"]
fn heavy_flood_of_100000_connection_attempts() {
    let attempts = knob("HARDENING_FLOOD_ATTEMPTS", 100_000);
    let threads = 8;
    let mut server = ServerProcess::start(&["--max-connections", "200"]);
    let addr = server.addr;
    let pid = server.child.id();
    for _ in 0..20 {
        assert_eq!(healthz(addr), Ok(200));
    }
    let sockets_before = open_sockets(pid);
    let baseline = proc_status_kb(pid, "VmRSS");
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
            thread::spawn(move || {
                // Each thread keeps up to 50 connections in flight: 400 in
                // all against a cap of 200, so half wait in the backlog.
                let until = Instant::now() + Duration::from_secs(100);
                let request = req("GET", "/healthz", &[("Connection", "close")], b"");
                let mut in_flight: std::collections::VecDeque<Conn> = Default::default();
                let settle = |c: Option<Conn>| {
                    let ok = c
                        .and_then(|mut c| c.reply_within(Duration::from_secs(10)).ok())
                        .is_some_and(|r| r.status == 200);
                    let counter = if ok { &answered } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                };
                for _ in 0..attempts / threads {
                    if Instant::now() >= until {
                        break;
                    }
                    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        .ok()
                        .map(Conn::from)
                        .and_then(|mut c| c.stream.write_all(&request).ok().map(|_| c));
                    match conn {
                        Some(c) => in_flight.push_back(c),
                        None => settle(None),
                    }
                    if in_flight.len() >= 50 {
                        settle(in_flight.pop_front());
                    }
                }
                while let Some(c) = in_flight.pop_front() {
                    settle(Some(c));
                }
            })
        })
        .collect();
    let url = server.url();
    let honest = conntest(&[
        "run",
        "-r",
        &url,
        "-q",
        "--run-count",
        "2000",
        "--concurrency",
        "4",
    ]);
    for w in workers {
        let _ = w.join();
    }
    let (ok, bad) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let held = wait_for_sockets_at_most(pid, sockets_before, Duration::from_secs(10));
    thread::sleep(Duration::from_millis(300));
    let after = proc_status_kb(pid, "VmRSS");
    eprintln!(
        "heavy flood: {ok} answered, {bad} failed; VmRSS {baseline} kB before, {after} kB after; \
         {held} sockets ({sockets_before} before)"
    );
    assert_eq!(honest.code, Some(0), "honest test: {}", honest.stderr);
    assert_eq!(
        (ok, bad),
        (attempts / threads * threads, 0),
        "flood attempts not answered (a queued one must be served in turn)"
    );
    assert!(
        held <= sockets_before,
        "{held} sockets, {sockets_before} before"
    );
    assert!(
        after <= (baseline + 5 * 1024) * 3 / 2,
        "VmRSS {after} kB after the flood, {baseline} kB before"
    );
    assert_healthy(&mut server, "the heavy flood");
}

/// Three bursts of 10 000 connections: memory after the last is no more
/// than after the first (a leak grows; allocator retention does not).
#[test]
#[ignore = "heavy: run by scripts/hardening.sh"]
fn heavy_memory_repeated_bursts() {
    let bursts = knob("HARDENING_BURSTS", 3) as usize;
    let mut server = ServerProcess::start(&["--max-connections", "12000"]);
    let n = burst_size(10_000);
    let (baseline, after) = memory_after_bursts(&server, n, bursts);
    eprintln!("heavy memory: {n} connections per burst; VmRSS baseline {baseline} kB, after each burst {after:?} kB");
    let first = after[0];
    let last = *after.last().unwrap();
    assert!(
        last <= first + 2 * 1024,
        "VmRSS grows burst after burst: baseline {baseline} kB, after each {after:?} kB"
    );
    assert!(
        last <= (baseline + 5 * 1024) * 3 / 2,
        "VmRSS {last} kB after {bursts} bursts, baseline {baseline} kB"
    );
    assert_healthy(&mut server, "repeated bursts");
}
