//! Regression tests for the HTTP machines' defects, through the real binary:
//! a streamed group sent twice, requests lost to an EOF in the same read, a
//! pipelined request timed from its predecessor's first byte, and an
//! upstream GET that lost its query string or trailing slash.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records `runs` runs of `data` in a new group (or UUID bodies when `data`
/// is None) over one keep-alive connection; returns the group id.
fn group_with_runs(addr: std::net::SocketAddr, runs: usize, data: Option<&[u8]>) -> String {
    let id = create_group(addr, &format!(r#"{{"run_count": {runs}}}"#));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for count in 1..=runs {
        let body = match data {
            Some(d) => d.to_vec(),
            // The size of the default bodies (a UUID each).
            None => format!("00000000-0000-4000-8000-{count:012}").into_bytes(),
        };
        s.write_all(&req(
            "POST",
            &format!("/test-groups/{id}/{count}"),
            &[],
            &body,
        ))
        .unwrap();
        let reply = read_one_reply(&mut reader);
        assert_eq!(reply.status, 200, "run {count}: {}", reply.text());
    }
    id
}

/// Reads exactly one reply (Content-Length or chunked), no byte further.
fn read_one_reply(reader: &mut impl std::io::BufRead) -> Reply {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        reader.read_exact(&mut byte).expect("reply head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("stray bytes where an answer should start: {text:?}"));
    let headers = parse_header_lines(lines.filter(|l| !l.is_empty()));
    let mut body = Vec::new();
    if find_header(&headers, "transfer-encoding").is_some() {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).expect("chunk size");
            let size = usize::from_str_radix(size_line.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            assert!(chunk.ends_with(b"\r\n"), "chunk not followed by CRLF");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let len: usize = find_header(&headers, "content-length")
            .expect("a length")
            .parse()
            .unwrap();
        body.resize(len, 0);
        reader.read_exact(&mut body).expect("body");
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A socket with a 4 KiB receive buffer, read 4 KiB at a time with pauses:
/// the server's output backs up and the streamed body is produced in steps.
fn slow_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).expect("connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_slowly_until_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    all
}

fn assert_group_json(body: &[u8], runs: usize) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        let tail = &body[body.len().saturating_sub(40)..];
        panic!(
            "invalid JSON ({e}); ends {:?}",
            String::from_utf8_lossy(tail)
        )
    });
    assert_eq!(v["test_runs"].as_array().map(Vec::len), Some(runs));
}

#[test]
fn a_big_group_read_slowly_is_sent_once_over_http10_and_keep_alive() {
    let server = ServerProcess::start(&[]);
    let data = vec![b'd'; 3000];
    let id = group_with_runs(server.addr, 512, Some(&data));
    let path = format!("/test-groups/{id}");

    // HTTP/1.0: the body ends with the connection, so it must end once.
    let mut s = slow_reader(server.addr);
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let all = read_slowly_until_close(&mut s);
    let body_at = find(&all, b"\r\n\r\n").expect("a head") + 4;
    assert_group_json(&all[body_at..], 512);

    // HTTP/1.1 keep-alive: two answers back to back, nothing between.
    let mut s = slow_reader(server.addr);
    let mut two = req("GET", &path, &[], b"");
    two.extend(req("GET", &path, &[("Connection", "close")], b""));
    s.write_all(&two).unwrap();
    let all = read_slowly_until_close(&mut s);
    let mut reader = BufReader::new(&all[..]);
    for _ in 0..2 {
        let reply = read_one_reply(&mut reader);
        assert_eq!(reply.status, 200);
        assert_group_json(&reply.body, 512);
    }
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "stray bytes after the answers: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn groups_read_twice_on_one_connection_stay_in_frame() {
    let server = ServerProcess::start(&[]);
    for runs in [975, 1000] {
        let id = group_with_runs(server.addr, runs, None);
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        for _ in 0..3 {
            s.write_all(&req("GET", &format!("/test-groups/{id}"), &[], b""))
                .unwrap();
            let reply = read_one_reply(&mut reader);
            assert_eq!(reply.status, 200, "{runs} runs: {}", reply.text());
            assert_group_json(&reply.body, runs);
        }
    }
}

#[test]
fn a_pipelined_request_is_timed_from_its_own_first_byte() {
    let server = ServerProcess::start(&["--request-timeout", "1s"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // The first request ends and the second begins in one write.
    s.write_all(b"\r\nGET /healthz HTTP/1.1\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_one_reply(&mut reader).status, 200);
    // Past the first request's deadline, within the second's.
    std::thread::sleep(Duration::from_millis(1300).saturating_sub(started.elapsed()));
    s.write_all(b"Host: x\r\n\r\n").unwrap();
    let reply = read_one_reply(&mut reader);
    assert_eq!(
        reply.status,
        200,
        "the second request got {}: {}",
        reply.status,
        reply.text()
    );
}

#[test]
fn answers_carry_date_and_cache_control_no_store() {
    let server = ServerProcess::start(&[]);
    for path in ["/healthz", "/test-groups", "/nope"] {
        let reply = request(server.addr, "GET", path, b"");
        let date = reply
            .header("date")
            .unwrap_or_else(|| panic!("{path}: no Date"));
        assert!(
            date.ends_with(" GMT") && date.len() == 29,
            "{path}: Date {date}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
    }
}

/// An upstream that records each request target and answers `status`.
fn recording_upstream(status: u16) -> (TestListener, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let listener = TestListener::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        while let Some(request) = read_http_request(&mut reader) {
            sink.lock().unwrap().push(request.path.clone());
            if write_http_response(&mut out, status, "Status", b"", true).is_err() {
                break;
            }
        }
    });
    (listener, seen)
}

fn run_once(server: &ServerProcess, config: &str) -> serde_json::Value {
    let id = create_group(server.addr, config);
    let reply = request(server.addr, "POST", &format!("/test-groups/{id}/1"), b"x");
    assert_eq!(reply.status, 200, "{}", reply.text());
    get_group(server.addr, &id)["test_runs"][0].clone()
}

#[test]
fn the_upstream_gets_the_exact_path_and_query() {
    let server = ServerProcess::start(&[]);
    let (upstream, seen) = recording_upstream(200);
    let port = upstream.addr.port();
    for target in ["/health/?deep=1&x=2", "/a/b/", "/?q=%20x", "/"] {
        let run = run_once(
            &server,
            &format!(
                r#"{{"run_count": 1, "upstream_endpoint": "http://127.0.0.1:{port}{target}"}}"#
            ),
        );
        assert_eq!(run["upstream_response_code"], 200, "{run}");
        assert_eq!(
            seen.lock().unwrap().last().map(String::as_str),
            Some(target)
        );
    }
}

#[test]
fn upstream_answers_outside_200_to_399_are_errors_and_names_are_timed() {
    let server = ServerProcess::start(&[]);
    let (bad, _) = recording_upstream(503);
    let run = run_once(
        &server,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://127.0.0.1:{}/"}}"#,
            bad.addr.port()
        ),
    );
    assert_eq!(run["upstream_response_code"], 503, "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("503"), "{run}");
    assert!(
        run.get("upstream_dns_ns").is_none(),
        "a literal needs no look-up: {run}"
    );

    let (ok, _) = recording_upstream(302);
    let run = run_once(
        &server,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://localhost:{}/"}}"#,
            ok.addr.port()
        ),
    );
    assert_eq!(run["upstream_response_code"], 302, "{run}");
    assert!(
        run.get("error").is_none(),
        "a redirect answer is a working path: {run}"
    );
    let dns = run["upstream_dns_ns"]
        .as_u64()
        .expect("a name is looked up");
    let total = run["upstream_response_time_ns"].as_u64().unwrap();
    assert!(dns > 0 && dns <= total, "{run}");
}

/// `conntest run` against an upstream answering `status` through `host`;
/// the exit code and the report.
fn run_through_upstream(host: &str, status: u16) -> (Option<i32>, serde_json::Value) {
    let (upstream, seen) = recording_upstream(status);
    let dir = TempDir::new("upstream-status");
    let report = dir.path("report.json");
    let endpoint = format!("http://{host}:{}/check?x=1", upstream.addr.port());
    let done = run_bounded(
        std::process::Command::new(bin()).args([
            "run",
            "--run-count",
            "20",
            "--concurrency",
            "4",
            "--upstream-endpoint",
            &endpoint,
            "-q",
            "-f",
            report.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(seen.lock().unwrap().len(), 20, "{}", done.stderr);
    (done.code, read_json(&report))
}

#[test]
fn an_upstream_answering_503_fails_the_test_by_upstream_status() {
    let (code, report) = run_through_upstream("127.0.0.1", 503);
    assert_eq!(code, Some(1), "{}", report["summary"]);
    let summary = &report["summary"];
    assert_eq!(summary["errors"]["upstream_status"], 20, "{summary}");
    assert_eq!(summary["passed"], false);
    let first = &report["results"][0]["error"];
    assert!(
        first.as_str().unwrap_or_default().contains("503"),
        "{first}"
    );

    let (code, report) = run_through_upstream("localhost", 200);
    assert_eq!(code, Some(0), "{}", report["summary"]);
    let dns = &report["summary"]["upstream_dns_ns"];
    assert!(dns["p50"].as_u64().is_some_and(|ns| ns > 0), "{dns}");
}
