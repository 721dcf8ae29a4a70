//! The client's verdict through the real binary: a used group is refused,
//! the server's record is compared only once it holds no run in progress,
//! summary counts add up, the average is null when nothing succeeded, a
//! test whose server is gone stops early, and an answer to no request is an
//! error on its connection.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(30);

fn client_cmd(cwd: &Path, url: &str, id: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["client", "-r", url, "-g", id])
        .args(extra)
        .current_dir(cwd)
        .env_remove("CONNTEST_TOKEN")
        .env_remove("LOG_LEVEL");
    cmd
}

/// `conntest client -r URL -g ID EXTRA...` in `cwd`, bounded.
fn client(cwd: &Path, url: &str, id: &str, extra: &[&str]) -> Finished {
    let done = run_bounded(&mut client_cmd(cwd, url, id, extra), LIMIT);
    assert!(!done.timed_out, "the client hung; stderr: {}", done.stderr);
    done
}

fn recorded(addr: SocketAddr, id: &str) -> usize {
    runs_of(&get_group(addr, id)).len()
}

/// Polls the server every 20 ms (10 s at most) until group `id` holds at
/// least `at_least` runs.
fn wait_for_recorded(addr: SocketAddr, id: &str, at_least: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while recorded(addr, id) < at_least {
        assert!(Instant::now() < until, "the test never got under way");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates group `config` on `server` and starts a client on it through
/// `url` in `dir`; returns once the server has recorded `at_least` runs.
fn client_under_way(
    dir: &TempDir,
    server: SocketAddr,
    url: &str,
    config: &str,
    extra: &[&str],
    at_least: usize,
) -> (String, Running) {
    let id = create_group(server, config);
    let running = Running::spawn(&mut client_cmd(&dir.0, url, &id, extra));
    wait_for_recorded(server, &id, at_least);
    (id, running)
}

fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("")
}

fn server_runs(report: &Value) -> &Vec<Value> {
    report["server_run_group"]["test_runs"]
        .as_array()
        .expect("the server's record is in the report")
}

#[test]
fn a_group_that_already_holds_runs_is_refused() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 5, "concurrency": 2}"#);
    let dir = TempDir::new("used-group");
    let first = client(&dir.0, &server.url(), &id, &["-q"]);
    assert_eq!(first.code, Some(0), "stderr: {}", first.stderr);

    let again = client(&dir.0, &server.url(), &id, &["-f", "again.json"]);
    assert_eq!(again.code, Some(2), "stderr: {}", again.stderr);
    let message = again.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("5 recorded runs") && message.contains("create a new group"),
        "says how many runs are there and what to do: {message}"
    );
    assert!(
        !dir.path("again.json").exists(),
        "no report for a refused test"
    );
    assert_eq!(recorded(server.addr, &id), 5, "nothing was sent");
}

#[test]
fn the_status_route_counts_runs_in_progress() {
    let server = ServerProcess::start(&[]);
    let id = create_group(
        server.addr,
        r#"{"run_count": 1, "server_delay_ns": 400000000}"#,
    );
    let status = || {
        request(
            server.addr,
            "GET",
            &format!("/test-groups/{id}/status"),
            b"",
        )
        .json()
    };
    assert_eq!(status()["runs_in_progress"], 0);
    let mut held = Conn::open(server.addr);
    held.send(&req("POST", &run_path(&id, 1), &[("Host", "x")], b"body"));
    // The run is held 400 ms: while it is, the status says so.
    let until = Instant::now() + Duration::from_secs(5);
    while status()["runs_in_progress"] != 1 {
        assert!(Instant::now() < until, "the held run shows: {}", status());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(status()["recorded_runs"], 0);
    assert_eq!(held.reply().status, 200);
    let after = status();
    assert_eq!(
        (
            after["runs_in_progress"].clone(),
            after["recorded_runs"].clone()
        ),
        (0.into(), 1.into()),
        "{after}"
    );
    let unknown = request(server.addr, "GET", "/test-groups/nope/status", b"");
    assert_json_error_status(&unknown, 404);
}

/// Runs a group whose runs all time out on the client (`--timeout 1ms`)
/// while the server still holds them; the report must hold every run the
/// server recorded.
fn assert_every_held_run_is_in_the_report(server: &ServerProcess, config: &str, runs: usize) {
    let id = create_group(server.addr, config);
    let dir = TempDir::new("in-progress");
    let done = client(
        &dir.0,
        &server.url(),
        &id,
        &["-q", "-f", "report.json", "--timeout", "1ms"],
    );
    assert_eq!(done.code, Some(1), "every run timed out: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    assert_eq!(
        server_runs(&report).len(),
        runs,
        "the record was fetched once the server had recorded every run: {}",
        report["summary"]
    );
    assert_eq!(report["summary"]["discrepancies"]["missing"], 0);
    let results = report["results"].as_array().expect("results");
    assert!(
        results.iter().all(|r| !r["server_time"].is_null()),
        "every result is paired with the server's record"
    );
}

#[test]
fn the_record_is_compared_once_no_delayed_run_is_in_progress() {
    let server = ServerProcess::start(&[]);
    assert_every_held_run_is_in_the_report(
        &server,
        r#"{"run_count": 20, "server_delay_ns": 5000000}"#,
        20,
    );
}

#[test]
fn the_record_is_compared_once_no_upstream_get_is_in_progress() {
    // A slow upstream: answers each GET 40 ms after it arrives.
    let upstream = TestListener::start(|mut stream| {
        if read_head(&mut stream).is_some() {
            std::thread::sleep(Duration::from_millis(40));
            let _ = write_http_response(&mut stream, 200, "OK", b"ok", true);
        }
    });
    let server = ServerProcess::start(&[]);
    let config = format!(
        r#"{{"run_count": 30, "concurrency": 3, "upstream_endpoint": "http://{}/", "upstream_timeout_ns": 2000000000}}"#,
        upstream.addr
    );
    assert_every_held_run_is_in_the_report(&server, &config, 30);
}

#[test]
fn summary_counts_add_up_with_unexpected_runs() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("counts");
    let config = r#"{"run_count": 5, "client_delay_ns": 100000000}"#;
    let (id, running) = client_under_way(
        &dir,
        server.addr,
        &server.url(),
        config,
        &["-f", "report.json"],
        1,
    );
    // Two runs the client never sends, recorded while its test runs.
    for count in [98, 99] {
        assert_eq!(
            request(server.addr, "POST", &run_path(&id, count), b"x").status,
            200
        );
    }
    let done = running.finish(LIMIT);
    assert_eq!(done.code, Some(1), "stderr: {}", done.stderr);
    let summary = &read_json(&dir.path("report.json"))["summary"];
    let count = |v: &Value| v.as_u64().expect("a count");
    let (runs, succeeded, failed) = (
        count(&summary["runs"]),
        count(&summary["succeeded"]),
        count(&summary["failed"]),
    );
    assert_eq!(
        runs,
        succeeded + failed,
        "runs = succeeded + failed: {summary}"
    );
    assert_eq!((runs, succeeded, failed), (5, 5, 0), "{summary}");
    assert_eq!(summary["discrepancies"]["unexpected"], 2, "{summary}");
    assert_eq!(summary["passed"], false, "unexpected runs fail the test");
    assert!(
        done.stderr.contains("5 ok, 0 failed") && done.stderr.contains("2 unexpected"),
        "the line adds up too: {}",
        done.stderr
    );
    assert_eq!(last_line(&done.stderr), "FAIL");
}

#[test]
fn an_interrupted_test_ends_with_interrupted() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("interrupted-line");
    let config = r#"{"run_count": 1000, "client_delay_ns": 10000000}"#;
    let (_, running) = client_under_way(
        &dir,
        server.addr,
        &server.url(),
        config,
        &["-f", "report.json"],
        5,
    );
    Command::new("kill")
        .args(["-INT", &running.child.id().to_string()])
        .status()
        .expect("kill");
    let done = running.finish(LIMIT);
    assert_eq!(done.code, Some(130), "stderr: {}", done.stderr);
    assert_eq!(
        last_line(&done.stderr),
        "INTERRUPTED",
        "stderr: {}",
        done.stderr
    );
}

#[test]
fn the_average_is_null_when_no_run_succeeded() {
    let server = ServerProcess::start(&[]);
    let config = format!(
        r#"{{"run_count": 3, "upstream_endpoint": "http://127.0.0.1:{}/"}}"#,
        closed_port()
    );
    let id = create_group(server.addr, &config);
    let dir = TempDir::new("null-average");
    let done = client(&dir.0, &server.url(), &id, &["-q", "-f", "report.json"]);
    assert_eq!(
        done.code,
        Some(1),
        "every run's upstream failed: {}",
        done.stderr
    );
    let report = read_json(&dir.path("report.json"));
    assert_eq!(report["summary"]["succeeded"], 0, "{}", report["summary"]);
    assert!(
        report["average_response_time_ns"].is_null(),
        "null, not {}",
        report["average_response_time_ns"]
    );
}

/// A paced test long enough (60 s) that it only ends in time by stopping.
const PACED: &str = r#"{"run_count": 6000, "concurrency": 2, "client_delay_ns": 10000000}"#;

fn assert_stopped_early(done: &Finished, report: &Value) {
    assert!(
        !done.timed_out,
        "the client stops early; stderr: {}",
        done.stderr
    );
    assert_eq!(done.code, Some(1), "stderr: {}", done.stderr);
    assert!(
        done.stderr.contains("stopped early") && done.stderr.contains("--keep-going"),
        "a clear line: {}",
        done.stderr
    );
    assert_eq!(last_line(&done.stderr), "FAIL");
    let summary = &report["summary"];
    assert!(summary["stopped_early"].as_str().is_some(), "{summary}");
    assert_eq!(
        (summary["passed"].clone(), summary["interrupted"].clone()),
        (false.into(), false.into())
    );
    assert!(summary["errors"]["refused"].as_u64() > Some(0), "{summary}");
}

#[test]
fn a_paced_test_whose_server_is_killed_stops_early() {
    let mut server = ServerProcess::start(&[]);
    let dir = TempDir::new("gone-killed");
    let url = server.url();
    let extra = ["-f", "report.json"];
    let (_, running) = client_under_way(&dir, server.addr, &url, PACED, &extra, 20);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let done = running.finish(LIMIT);
    assert_stopped_early(&done, &read_json(&dir.path("report.json")));
}

/// Runs group `config` through a relay whose port closes (and whose
/// connections are cut) once the test is under way.
fn through_a_closing_port(
    server: &ServerProcess,
    dir: &TempDir,
    config: &str,
    extra: &[&str],
) -> Finished {
    let relay = Relay::start(server.addr, None);
    let url = format!("http://{}", relay.listener.addr);
    let (_, running) = client_under_way(dir, server.addr, &url, config, extra, 20);
    relay.close();
    running.finish(LIMIT)
}

#[test]
fn a_paced_test_whose_port_closes_stops_early_unless_keep_going() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("gone-closed");
    let done = through_a_closing_port(&server, &dir, PACED, &["-f", "report.json"]);
    assert_stopped_early(&done, &read_json(&dir.path("report.json")));

    // With --keep-going: every run is tried (about 5 s of refused runs).
    let config = r#"{"run_count": 500, "concurrency": 2, "client_delay_ns": 10000000}"#;
    let extra = ["-f", "kept.json", "--keep-going"];
    let done = through_a_closing_port(&server, &dir, config, &extra);
    assert_eq!(done.code, Some(1), "the runs were refused: {}", done.stderr);
    assert!(!done.stderr.contains("stopped early"), "{}", done.stderr);
    let report = read_json(&dir.path("kept.json"));
    let sent = report["client_run_group"]["test_runs"]
        .as_array()
        .expect("runs");
    assert_eq!(sent.len(), 500, "every run was tried");
    assert!(report["summary"]["stopped_early"].is_null());
}

#[test]
fn an_answer_to_no_request_is_malformed_and_the_connection_replaced() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 20, "concurrency": 1}"#);
    let relay = Relay::start(server.addr, Some(5));
    let url = format!("http://{}", relay.listener.addr);
    let dir = TempDir::new("unsolicited");
    let done = client(&dir.0, &url, &id, &["-q", "-f", "report.json"]);
    assert_eq!(done.code, Some(1), "stderr: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    let summary = &report["summary"];
    assert_eq!(summary["errors"]["malformed"], 1, "{summary}");
    let runs = report["client_run_group"]["test_runs"]
        .as_array()
        .expect("runs");
    let flagged: Vec<&Value> = runs.iter().filter(|r| !r["error"].is_null()).collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let error = flagged[0]["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("malformed:") && error.contains("HTTP/1.1 200"),
        "names the unexpected answer: {error}"
    );
    assert!(
        u(&summary["connections_opened"]) >= 2,
        "the connection was replaced: {summary}"
    );
    // No run took the extra answer for its own: each ended after the
    // server started it.
    let server_start: std::collections::HashMap<u64, i128> = server_runs(&report)
        .iter()
        .map(|r| {
            (
                u(&r["run_count"]),
                rfc3339_ns(r["server_start"].as_str().unwrap()),
            )
        })
        .collect();
    for run in runs {
        let end = rfc3339_ns(run["client_end"].as_str().expect("client_end"));
        let start = server_start[&u(&run["run_count"])];
        assert!(
            end > start,
            "run {} ended before the server started it",
            run["run_count"]
        );
    }
}

/// A TCP relay on loopback in front of `target`. Requests pass as they
/// are; answers too, except that the `duplicate`-th run answer (a `200`
/// with an empty body, read whole) is passed twice, in one write.
struct Relay {
    listener: TestListener,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: SocketAddr, duplicate: Option<u64>) -> Relay {
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let answers = Arc::new(AtomicU64::new(0));
        let streams = Arc::clone(&open);
        let listener = TestListener::start(move |client| {
            let Ok(upstream) = TcpStream::connect(target) else {
                return;
            };
            let (Ok(mut client_out), Ok(mut upstream_in)) =
                (client.try_clone(), upstream.try_clone())
            else {
                return;
            };
            if let Ok(c) = client.try_clone() {
                streams.lock().unwrap().push(c);
            }
            let mut requests = client;
            let mut upstream_out = upstream;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut requests, &mut upstream_out);
                let _ = upstream_out.shutdown(Shutdown::Write);
            });
            let mut chunk = vec![0; 64 * 1024];
            loop {
                let n = match upstream_in.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let bytes = &chunk[..n];
                let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
                let run_answer = text.starts_with("http/1.1 200")
                    && text.ends_with("\r\n\r\n")
                    && text.contains("content-length: 0\r\n");
                let nth = if run_answer {
                    answers.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    0
                };
                let out = if duplicate == Some(nth) {
                    [bytes, bytes].concat()
                } else {
                    bytes.to_vec()
                };
                if client_out.write_all(&out).is_err() {
                    break;
                }
            }
            let _ = client_out.shutdown(Shutdown::Both);
        });
        Relay { listener, open }
    }

    /// Closes the port and cuts every relayed connection.
    fn close(self) {
        drop(self.listener);
        for stream in self.open.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
