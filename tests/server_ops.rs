//! Running a server (issue 13): the port it claims, the addresses and
//! upstream entries it is given, what it logs, the descriptors it counts
//! before it starts, and how it stops. All through the real binary on
//! loopback, every wait bounded.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every conntest process here is killed after this.
const LIMIT: Duration = Duration::from_secs(30);

/// `conntest ARGS` with no token or log level inherited from the caller.
fn conntest(args: &[&str]) -> Command {
    conntest_cmd(&std::env::temp_dir(), args)
}

/// `conntest ARGS` run under `prlimit --nofile=N:N` (util-linux runs the
/// binary with that open-file limit, soft and hard).
fn conntest_with_fd_limit(nofile: u64, args: &[&str]) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg(bin())
        .args(args)
        .env_remove("CONNTEST_TOKEN")
        .env_remove("LOG_LEVEL");
    cmd
}

/// `conntest server` on 127.0.0.1:`port` with `threads` loops, bounded.
fn server_on_port(port: &str, threads: &str) -> Finished {
    run_bounded(
        &mut conntest(&[
            "server",
            "-p",
            port,
            "--bind",
            "127.0.0.1",
            "--threads",
            threads,
        ]),
        LIMIT,
    )
}

/// A port nothing listens on right now (bound and released).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// Waits (at most 10 s) until something accepts connections on `addr`.
fn wait_listening(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends a process started with [`Running::spawn`] with SIGTERM.
fn terminate(running: Running) -> Finished {
    Command::new("kill")
        .args([format!("-{SIGTERM}"), running.child.id().to_string()])
        .status()
        .expect("kill");
    running.finish(LIMIT)
}

// ---------------------------------------------------------------------------
// The port (item 18) and the address (item 14)
// ---------------------------------------------------------------------------

#[test]
fn a_second_server_does_not_join_a_port_a_server_with_threads_listens_on() {
    let first = ServerProcess::start(&["--threads", "2"]);
    let port = first.addr.port().to_string();
    assert_one_line_usage_error(&server_on_port(&port, "2"), &[&port]);
    // The first one still answers.
    assert_eq!(request(first.addr, "GET", "/healthz", b"").status, 200);
}

#[test]
fn a_port_another_program_listens_on_is_refused_whatever_the_threads() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    for threads in ["1", "2", "4"] {
        assert_one_line_usage_error(&server_on_port(&port, threads), &[&port]);
    }
}

#[test]
fn bind_takes_an_ipv6_address_in_brackets() {
    let port = free_port("::1");
    let server = Running::spawn(&mut conntest(&[
        "server",
        "-p",
        &port.to_string(),
        "--bind",
        "[::1]",
    ]));
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    wait_listening(addr);
    assert_eq!(request(addr, "GET", "/healthz", b"").status, 200);
    let done = terminate(server);
    assert!(
        done.stderr.contains(&format!("listening on [::1]:{port}")),
        "{}",
        done.stderr
    );
    // Brackets are for IPv6 only.
    let done = run_bounded(
        &mut conntest(&["server", "-p", "0", "--bind", "[127.0.0.1]"]),
        LIMIT,
    );
    assert_one_line_usage_error(&done, &["[127.0.0.1]"]);
}

// ---------------------------------------------------------------------------
// --upstream-allow (item 12)
// ---------------------------------------------------------------------------

#[test]
fn upstream_allow_entries_with_a_scheme_are_understood_and_ipv6_hosts_shown_in_brackets() {
    let server = ServerProcess::start(&["--upstream-allow", "http://127.0.0.1:9,[::1]:9"]);
    let create = |endpoint: &str| {
        let config = serde_json::json!({"run_count": 1, "upstream_endpoint": endpoint});
        request(
            server.addr,
            "POST",
            "/test-groups/create",
            config.to_string().as_bytes(),
        )
    };
    for allowed in [
        "http://127.0.0.1:9/x",
        "http://[::1]:9/",
        "https://[::1]:9/",
    ] {
        let reply = create(allowed);
        assert_eq!(reply.status, 200, "{allowed}: {}", reply.text());
    }
    // The entry's scheme binds: https to the same host and port is not it.
    assert_error(&create("https://127.0.0.1:9/"), 400, "'127.0.0.1:9'");
    assert_error(&create("http://[::1]:10/"), 400, "'[::1]:10'");
}

#[test]
fn an_upstream_allow_entry_that_is_not_understood_is_refused_at_start() {
    for entry in [
        "ftp://127.0.0.1:21",
        "http://127.0.0.1:80/path",
        "host:port",
    ] {
        let done = run_bounded(
            &mut conntest(&["server", "-p", "0", "--upstream-allow", entry]),
            LIMIT,
        );
        assert_one_line_usage_error(&done, &["--upstream-allow", entry]);
    }
}

// ---------------------------------------------------------------------------
// Logging (item 19)
// ---------------------------------------------------------------------------

#[test]
fn debug_logs_each_error_answer_with_status_route_and_peer_but_no_secrets() {
    let token = "t0ken-n0t-in-the-log";
    let server = ServerProcess::start_with_env(&["--token", token], &[("LOG_LEVEL", "debug")]);
    let auth = format!("Bearer {token}");
    let mut conn = Conn::open(server.addr);
    let peer = conn.stream.local_addr().unwrap();
    conn.send(&req("GET", "/nope", &[("Authorization", &auth)], b""));
    assert_eq!(conn.reply().status, 404);
    conn.send(&req(
        "POST",
        "/test-groups/create",
        &[("Authorization", &auth)],
        b"{\"body-not-in-the-log\": 1}",
    ));
    assert_eq!(conn.reply().status, 400);
    conn.send(&req(
        "GET",
        "/test-groups",
        &[("Authorization", "Bearer wrong")],
        b"",
    ));
    assert_eq!(conn.reply().status, 401);
    // Refused by the HTTP layer before any route: a body over --max-body.
    let mut big = Conn::open(server.addr);
    let big_peer = big.stream.local_addr().unwrap();
    big.send(b"POST /test-groups/create HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
    assert_eq!(big.reply().status, 413);
    let (code, log) = stop_and_collect_log(server);
    assert_eq!(code, Some(0), "{log}");
    for expected in [
        format!("answered 404 to GET /nope from {peer}"),
        format!("answered 400 to POST /test-groups/create from {peer}"),
        format!("answered 401 to GET /test-groups from {peer}"),
        format!("answered 413 (request body larger than the limit of 1048576 bytes (--max-body)) to a request from {big_peer}"),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
    }
    for secret in [token, "wrong", "body-not-in-the-log"] {
        assert!(!log.contains(secret), "{secret:?} logged:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// The descriptor budget (item 20)
// ---------------------------------------------------------------------------

#[test]
fn run_counts_the_descriptors_of_client_and_embedded_server_before_the_first_run() {
    // 400 client sockets + 400 server sockets + a margin: over 512.
    let done = run_bounded(
        &mut conntest_with_fd_limit(
            512,
            &["run", "--concurrency", "400", "--run-count", "400", "-q"],
        ),
        LIMIT,
    );
    assert_one_line_usage_error(&done, &["512", "ulimit -n", "conntest server"]);
    // Within the limit it runs.
    let done = run_bounded(
        &mut conntest_with_fd_limit(
            512,
            &["run", "--concurrency", "100", "--run-count", "200", "-q"],
        ),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "{done:?}");
}

#[test]
fn a_server_short_of_descriptors_warns_once_at_start_and_counts_repeated_accept_warnings() {
    let port = closed_port();
    let server = Running::spawn(
        conntest_with_fd_limit(
            64,
            &[
                "server",
                "-p",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--max-connections",
                "1000",
            ],
        )
        .env("LOG_LEVEL", "info"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    // More connections than descriptors: accept fails with EMFILE and is
    // retried every 50 ms while they stay open.
    let conns: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(conns.len() > 64, "only {} connections", conns.len());
    std::thread::sleep(Duration::from_millis(1500));
    drop(conns);
    let done = terminate(server);
    assert_eq!(done.code, Some(0), "{done:?}");
    let lines = |needle: &str| {
        done.stderr
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
    };
    let start = lines("open-file limit is 64");
    assert_eq!(start.len(), 1, "{}", done.stderr);
    assert!(start[0].contains("--max-connections 1000"), "{}", start[0]);
    assert!(start[0].contains("ulimit -n"), "{}", start[0]);
    let accept = lines("accept: Too many open files");
    assert_eq!(accept.len(), 2, "once, then as a count:\n{}", done.stderr);
    assert!(accept[1].contains("repeated"), "{}", done.stderr);
}

// ---------------------------------------------------------------------------
// Graceful shutdown (item 21)
// ---------------------------------------------------------------------------

#[test]
fn sigterm_finishes_held_runs_refuses_new_requests_and_closes_idle_connections() {
    let mut server = ServerProcess::start(&[]);
    let addr = server.addr;
    // Long enough to outlast the server noticing the signal (its loop
    // checks at least every 200 ms) and the steps below.
    let id = create_group(addr, r#"{"run_count": 10, "server_delay_ns": 1000000000}"#);
    let mut idle = Conn::open(addr);
    idle.send(&req("GET", "/healthz", &[], b""));
    assert_eq!(idle.reply().status, 200);
    // A healthz and a run in one write: once the healthz is answered, the
    // run is held.
    let mut held: Vec<Conn> = (1..=3)
        .map(|count| {
            let mut conn = Conn::open(addr);
            let mut bytes = req("GET", "/healthz", &[], b"");
            bytes.extend(req("POST", &run_path(&id, count), &[], b"held"));
            conn.send(&bytes);
            assert_eq!(conn.reply().status, 200);
            conn
        })
        .collect();
    server.signal(SIGTERM);

    // The idle keep-alive connection is closed without an answer.
    let (bytes, closed) = idle.read_until_close(Duration::from_secs(5));
    assert!(closed && bytes.is_empty(), "{}", preview(&bytes));
    // Readiness says so too: a probe on a connection still open (sent while
    // its run is held) gets 503, so a load balancer stops sending new work.
    held[1].send(&req("GET", "/readyz", &[], b""));
    // A new request on a connection still open: its held run is answered,
    // the new request gets 503 with a JSON error, and the connection closes.
    held[0].send(&req("POST", &run_path(&id, 4), &[], b"late"));
    assert_eq!(held[0].reply().status, 200);
    let refused = held[0].reply();
    assert_error(&refused, 503, "shutting down");
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(held[0].read_until_close(Duration::from_secs(5)).1);
    assert_eq!(held[1].reply().status, 200, "its held run");
    assert_error(&held[1].reply(), 503, "shutting down");
    assert!(held[1].read_until_close(Duration::from_secs(5)).1);
    // The other held runs are answered, and their connections closed.
    for conn in &mut held[2..] {
        assert_eq!(conn.reply().status, 200);
        assert!(conn.read_until_close(Duration::from_secs(5)).1);
    }
    let code = server.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit within 5 s of the last answer");
    let log = server.log_after_exit();
    assert!(
        log.contains("SIGTERM received: stopping; finishing 3 held runs"),
        "{log}"
    );
}

#[test]
fn the_readiness_probe_answers_without_a_token() {
    let server = ServerProcess::start(&["--token", "s3cret"]);
    let ready = request(server.addr, "GET", "/readyz", b"");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(request(server.addr, "GET", "/test-groups", b"").status, 401);
}
