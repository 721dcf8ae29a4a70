//! Integration tests of `conntest server` (issue 2): the real binary on
//! 127.0.0.1, an ephemeral port, spoken to over raw sockets (and curl).
//!
//! Every test starts its own server. Every loop is bounded in count and time;
//! the only timing assertions are "no sooner than the delay" lower bounds and
//! generous upper bounds for the server's own timeouts.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------

fn post_run(addr: SocketAddr, id: &str, count: u64, body: &[u8]) -> Reply {
    request(addr, "POST", &run_path(id, count), body)
}

fn group_runs(addr: SocketAddr, id: &str) -> Vec<Value> {
    runs_of(&get_group(addr, id))
}

/// Waits (bounded) until the group holds `n` runs; its runs.
fn wait_for_runs(addr: SocketAddr, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = group_runs(addr, id);
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The exact bytes a run recorded: `data_base64` when present, else `data`.
fn run_bytes(run: &Value) -> Vec<u8> {
    match run.get("data_base64") {
        Some(b64) => base64_decode(b64.as_str().expect("data_base64 is a string")),
        None => run["data"]
            .as_str()
            .expect("data is a string")
            .as_bytes()
            .to_vec(),
    }
}

/// Each run's `(run_count, data bytes)`, in order.
fn counts_and_bytes(runs: &[Value]) -> Vec<(u64, Vec<u8>)> {
    runs.iter()
        .map(|r| (r["run_count"].as_u64().unwrap(), run_bytes(r)))
        .collect()
}

/// Checks a run's shape and returns its error, which it must have (the
/// `upstream` named says which kind of upstream failed).
fn shaped_run_error<'r>(run: &'r Value, upstream: &str) -> &'r str {
    assert_run_shape(run);
    run["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {upstream} upstream: {run}"))
}

/// The server is still running and answers /healthz with 200.
fn assert_alive_and_healthy(server: &mut ServerProcess) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    assert_eq!(request(server.addr, "GET", "/healthz", b"").status, 200);
}

// ---------------------------------------------------------------------------
// A small independent base64 decoder.
// ---------------------------------------------------------------------------

fn base64_decode(s: &str) -> Vec<u8> {
    assert!(
        s.len() % 4 == 0,
        "base64 length {} is not a multiple of 4: {s}",
        s.len()
    );
    let value = |c: u8| -> u32 {
        (match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not standard base64: {s}"),
        }) as u32
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        for i in 0..group.len() * 3 / 4 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Checks the fields every recorded run has.
fn assert_run_shape(run: &Value) {
    assert_uuid_v4(
        run["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("run without run_id: {run}")),
    );
    assert!(run["run_count"].as_u64().is_some(), "run_count: {run}");
    let time = rfc3339_ns_exact(run["time"].as_str().expect("time"));
    let start = rfc3339_ns_exact(run["server_start"].as_str().expect("server_start"));
    let end = rfc3339_ns_exact(run["server_end"].as_str().expect("server_end"));
    let duration = run["server_duration_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("server_duration_ns: {run}"));
    assert!(start <= end, "server_start after server_end: {run}");
    assert_eq!(
        (end - start) as u64,
        duration,
        "server_duration_ns is not server_end - server_start: {run}"
    );
    assert!(
        (time - now_ns()).abs() < 120 * 1_000_000_000,
        "run time far from now: {run}"
    );
    assert!(run["data"].is_string(), "data is not a string: {run}");
}

// ---------------------------------------------------------------------------
// A fake upstream server.
// ---------------------------------------------------------------------------

struct FakeUpstream {
    addr: SocketAddr,
    /// Request heads received, in arrival order.
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    _listener: TestListener,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Listens on 127.0.0.1:0; answers each request with `answer`, or, when it
/// is None, accepts and reads the request but never answers. Lives at most
/// 30 s.
fn fake_upstream(answer: Option<&'static [u8]>) -> FakeUpstream {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (heads2, stop2) = (Arc::clone(&heads), Arc::clone(&stop));
    let listener = TestListener::start_for(Duration::from_secs(30), 20_000, move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let Some(got) = read_head(&mut s) else {
            return;
        };
        heads2
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&got).into_owned());
        match answer {
            Some(bytes) => {
                let _ = s.write_all(bytes);
                let _ = s.shutdown(std::net::Shutdown::Write);
                thread::sleep(Duration::from_millis(100));
            }
            None => hold(&stop2, Duration::from_secs(30)),
        }
    });
    FakeUpstream {
        addr: listener.addr,
        heads,
        stop,
        _listener: listener,
    }
}

// ---------------------------------------------------------------------------
// POST /test-groups/create
// ---------------------------------------------------------------------------

#[test]
fn create_answers_the_group_with_its_config() {
    let server = ServerProcess::start(&[]);
    let config = r#"{
        "description": "example test group",
        "run_count": 1000,
        "concurrency": 5,
        "client_delay_ns": 100,
        "server_delay_ns": 7,
        "upstream_endpoint": "https://internal.example.net",
        "upstream_timeout_ns": 250000000,
        "data": "payload"
    }"#;
    let before = now_ns();
    let reply = request(
        server.addr,
        "POST",
        "/test-groups/create",
        config.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let g = reply.json();
    assert_uuid_v4(g["run_group_id"].as_str().expect("run_group_id"));
    let created = rfc3339_ns_exact(g["created_at"].as_str().expect("created_at"));
    assert!(
        (created - before).abs() < 60 * 1_000_000_000,
        "created_at far from now: {g}"
    );
    assert_eq!(g["description"], "example test group");
    assert_eq!(g["run_count"], 1000);
    assert_eq!(g["concurrency"], 5);
    assert_eq!(g["client_delay_ns"], 100);
    assert_eq!(g["server_delay_ns"], 7);
    assert_eq!(g["upstream_endpoint"], "https://internal.example.net");
    assert_eq!(g["upstream_timeout_ns"], 250_000_000);
    assert_eq!(g["data"], "payload");
    assert_eq!(g["test_runs"], serde_json::json!([]));

    // The same group comes back from GET, and two groups get two ids.
    let id = g["run_group_id"].as_str().unwrap();
    let again = get_group(server.addr, id);
    assert_eq!(again["run_group_id"], g["run_group_id"]);
    assert_eq!(again["created_at"], g["created_at"]);
    assert_eq!(again["run_count"], 1000);
    let other = create_group(server.addr, r#"{"run_count": 1}"#);
    assert_ne!(other, id);
}

#[test]
fn create_concurrency_absent_or_zero_means_one() {
    let server = ServerProcess::start(&[]);
    for config in [
        r#"{"run_count": 3}"#,
        r#"{"run_count": 3, "concurrency": 0}"#,
    ] {
        let reply = request(
            server.addr,
            "POST",
            "/test-groups/create",
            config.as_bytes(),
        );
        assert_eq!(reply.status, 200, "{config}: {}", reply.text());
        assert_eq!(reply.json()["concurrency"], 1, "{config}: {}", reply.text());
        assert_eq!(reply.json()["test_runs"], serde_json::json!([]));
    }
}

#[test]
fn create_accepts_any_content_type() {
    let server = ServerProcess::start(&[]);
    let body = br#"{"run_count": 2}"#;
    for content_type in [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain; charset=utf-8"),
        Some("application/octet-stream"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("Content-Type", c)])
            .unwrap_or_default();
        let reply = call(server.addr, "POST", "/test-groups/create", &headers, body);
        assert_eq!(
            reply.status,
            200,
            "Content-Type {content_type:?}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["run_count"], 2);
    }
}

/// The README's own command, run by a shell with real curl (`-d` sends
/// `application/x-www-form-urlencoded`).
#[test]
fn readme_curl_create_command_works_as_written() {
    let server = ServerProcess::start(&[]);
    let script = r#"RESP=`curl -sS --max-time 20 $CONNTEST/test-groups/create -d '{
	"description": "example test group",
	"run_count": 1000,
	"concurrency": 5,
	"client_delay_ns": 100,
	"upstream_endpoint": "https://internal.example.net",
	"server_delay_ns": 0
}'`
echo "$RESP""#;
    let out = Command::new("bash")
        .args(["-c", script])
        .env("CONNTEST", server.url())
        .stdin(Stdio::null())
        .output()
        .expect("run bash and curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_uuid_v4(g["run_group_id"].as_str().expect("run_group_id"));
    assert_eq!(g["description"], "example test group");
    assert_eq!(g["run_count"], 1000);
    assert_eq!(g["concurrency"], 5);
    assert_eq!(g["client_delay_ns"], 100);
    assert_eq!(g["server_delay_ns"], 0);
    assert_eq!(g["upstream_endpoint"], "https://internal.example.net");
}

#[test]
fn create_errors_are_400_and_name_the_field() {
    let server = ServerProcess::start(&[]);
    let cases: &[(&str, &str)] = &[
        (r#"{"run_count": 1"#, "JSON"),
        ("not json at all", "JSON"),
        ("", "JSON"),
        ("[1, 2]", "object"),
        (r#"{"run_count": "5"}"#, "run_count"),
        (r#"{"run_count": 5, "description": 3}"#, "description"),
        (r#"{"run_count": 5, "concurrency": true}"#, "concurrency"),
        (
            r#"{"run_count": 5, "upstream_endpoint": 80}"#,
            "upstream_endpoint",
        ),
        (r#"{"run_count": 1.5}"#, "run_count"),
        (r#"{"run_cout": 5}"#, "run_cout"),
        (r#"{"run_count": 5, "run_cout": 5}"#, "run_cout"),
        (r#"{"run_count": 0}"#, "run_count"),
        (r#"{"concurrency": 2}"#, "run_count"),
        ("{}", "run_count"),
        (r#"{"run_count": -1}"#, "run_count"),
        (
            r#"{"run_count": 5, "server_delay_ns": -5}"#,
            "server_delay_ns",
        ),
        (
            r#"{"run_count": 5, "client_delay_ns": -1}"#,
            "client_delay_ns",
        ),
        (r#"{"run_count": 5, "concurrency": -2}"#, "concurrency"),
        (
            r#"{"run_count": 5, "upstream_timeout_ns": -100}"#,
            "upstream_timeout_ns",
        ),
        (
            r#"{"run_count": 5, "upstream_endpoint": "ftp://example.net/"}"#,
            "upstream_endpoint",
        ),
        (
            r#"{"run_count": 5, "upstream_endpoint": "example.net"}"#,
            "upstream_endpoint",
        ),
        (
            r#"{"run_count": 5, "upstream_endpoint": "not a url"}"#,
            "upstream_endpoint",
        ),
    ];
    for (body, field) in cases {
        let reply = request(server.addr, "POST", "/test-groups/create", body.as_bytes());
        assert_error(&reply, 400, field);
    }
    // A non-JSON content type changes nothing.
    let reply = call(
        server.addr,
        "POST",
        "/test-groups/create",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        br#"{"run_cout": 5}"#,
    );
    assert_error(&reply, 400, "run_cout");
    // No refused body created a group.
    let list = request(server.addr, "GET", "/test-groups", b"");
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        serde_json::json!([]),
        "a refused create left a group behind"
    );
}

// ---------------------------------------------------------------------------
// GET /test-groups/{id}, GET /test-groups, DELETE, /healthz, HEAD, 404, 405
// ---------------------------------------------------------------------------

#[test]
fn get_group_shows_runs_in_arrival_order() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 3, "description": "order"}"#);
    let mut conn = Conn::open(server.addr);
    for (count, body) in [(3u64, "third"), (1, "first"), (2, "second"), (5, "fifth")] {
        conn.send(&req("POST", &run_path(&id, count), &[], body.as_bytes()));
        let reply = conn.reply();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            reply.body.is_empty(),
            "a run's answer has a body: {}",
            reply.text()
        );
        assert_eq!(reply.header("content-length"), Some("0"));
    }
    let group = get_group(server.addr, &id);
    assert_eq!(group["run_group_id"], id.as_str());
    assert_eq!(group["description"], "order");
    let runs = runs_of(&group);
    let seen: Vec<(u64, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["run_count"].as_u64().unwrap(),
                r["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![(3, "third"), (1, "first"), (2, "second"), (5, "fifth")]
    );
    let mut ids = HashSet::new();
    let mut last_start = 0;
    for run in &runs {
        assert_run_shape(run);
        assert!(
            ids.insert(run["run_id"].as_str().unwrap().to_owned()),
            "duplicate run_id"
        );
        for absent in [
            "upstream_response_code",
            "upstream_response_time_ns",
            "error",
            "data_base64",
        ] {
            assert!(
                run.get(absent).is_none(),
                "{absent} present without an upstream: {run}"
            );
        }
        let start = rfc3339_ns_exact(run["server_start"].as_str().unwrap());
        assert!(
            start >= last_start,
            "runs not in arrival order of server_start"
        );
        last_start = start;
    }
}

#[test]
fn get_unknown_group_is_404() {
    let server = ServerProcess::start(&[]);
    for path in [
        "/test-groups/6f1c1a34-3c55-4c7e-9d8e-1d1f4bbf2f0a",
        "/test-groups/nope",
    ] {
        let reply = request(server.addr, "GET", path, b"");
        assert_error(&reply, 404, "");
    }
}

#[test]
fn list_groups_gives_configs_and_run_counts_without_runs() {
    let server = ServerProcess::start(&[]);
    let a = create_group(server.addr, r#"{"run_count": 2, "description": "a"}"#);
    let b = create_group(
        server.addr,
        r#"{"run_count": 9, "description": "b", "server_delay_ns": 1}"#,
    );
    for count in 1..=2 {
        assert_eq!(post_run(server.addr, &a, count, b"x").status, 200);
    }
    let reply = request(server.addr, "GET", "/test-groups", b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = reply.json();
    let list = list.as_array().expect("GET /test-groups is an array");
    assert_eq!(list.len(), 2, "{list:?}");
    let find_group = |id: &str| {
        list.iter()
            .find(|g| g["run_group_id"] == id)
            .unwrap_or_else(|| panic!("group {id} not listed: {list:?}"))
    };
    let (ga, gb) = (find_group(&a), find_group(&b));
    assert_eq!(ga["description"], "a");
    assert_eq!(ga["run_count"], 2);
    assert_eq!(ga["recorded_runs"], 2);
    assert_eq!(gb["description"], "b");
    assert_eq!(gb["run_count"], 9);
    assert_eq!(gb["server_delay_ns"], 1);
    assert_eq!(gb["recorded_runs"], 0);
    for g in [ga, gb] {
        assert!(g.get("test_runs").is_none(), "the list carries runs: {g}");
        rfc3339_ns_exact(g["created_at"].as_str().expect("created_at"));
    }
}

#[test]
fn delete_frees_the_group() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let keep = create_group(server.addr, r#"{"run_count": 1}"#);
    assert_eq!(post_run(server.addr, &id, 1, b"x").status, 200);
    let reply = request(server.addr, "DELETE", &format!("/test-groups/{id}"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_error(
        &request(server.addr, "GET", &format!("/test-groups/{id}"), b""),
        404,
        "",
    );
    assert_error(
        &request(server.addr, "DELETE", &format!("/test-groups/{id}"), b""),
        404,
        "",
    );
    assert_error(&post_run(server.addr, &id, 2, b"y"), 404, "");
    let list = request(server.addr, "GET", "/test-groups", b"").json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["run_group_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keep.as_str()]);
    get_group(server.addr, &keep);
}

#[test]
fn healthz_answers_200() {
    let server = ServerProcess::start(&[]);
    let reply = request(server.addr, "GET", "/healthz", b"");
    assert_eq!(reply.status, 200);
    // With a query string too (probes add them).
    assert_eq!(
        request(server.addr, "GET", "/healthz?probe=1", b"").status,
        200
    );
}

#[test]
fn head_on_get_routes_sends_headers_only() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    assert_eq!(post_run(server.addr, &id, 1, b"some data").status, 200);
    let get_len = request(server.addr, "GET", "/healthz", b"").body.len();
    for path in [
        "/healthz".to_owned(),
        format!("/test-groups/{id}"),
        "/test-groups".to_owned(),
    ] {
        // HEAD then GET /healthz pipelined: a body after the HEAD answer
        // would be read as the start of the second answer and fail it.
        let mut conn = Conn::open(server.addr);
        let mut bytes = req("HEAD", &path, &[], b"");
        bytes.extend(req("GET", "/healthz", &[("Connection", "close")], b""));
        conn.send(&bytes);
        let head = conn.reply_to(true);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(
            head.header("content-type").is_some(),
            "HEAD {path} lacks Content-Type"
        );
        if path == "/healthz" {
            assert_eq!(
                head.header("content-length"),
                Some(get_len.to_string().as_str()),
                "HEAD /healthz"
            );
        }
        let get = conn.reply();
        assert_eq!(get.status, 200, "the answer after HEAD {path}");
        assert_eq!(
            get.body.len(),
            get_len,
            "the answer after HEAD {path}: {}",
            get.text()
        );
        let (rest, closed) = conn.read_until_close(Duration::from_secs(5));
        assert!(
            rest.is_empty(),
            "bytes after the last answer: {:?}",
            preview(&rest)
        );
        assert!(closed, "Connection: close not honoured");
    }
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/nope"),
        ("POST", "/nope/1/2/3"),
        ("GET", "/test-groups/a/b/c"),
    ] {
        assert_error(&request(server.addr, method, path, b""), 404, "");
    }
    let group = format!("/test-groups/{id}");
    let run = format!("/test-groups/{id}/1");
    for (method, path, allowed) in [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/test-groups", "GET"),
        ("PUT", "/test-groups", "GET"),
        ("PUT", group.as_str(), "DELETE"),
        ("POST", group.as_str(), "GET"),
        ("GET", run.as_str(), "POST"),
        ("DELETE", run.as_str(), "POST"),
        ("PUT", "/test-groups/create", "POST"),
    ] {
        let reply = call(server.addr, method, path, &[], b"");
        assert_error(&reply, 405, "");
        let allow = reply
            .header("allow")
            .unwrap_or_else(|| panic!("405 for {method} {path} without Allow"));
        assert!(
            allow.contains(allowed),
            "{method} {path}: Allow {allow:?} lacks {allowed}"
        );
        assert!(
            !allow.split(',').any(|m| m.trim() == method),
            "{method} {path}: Allow {allow:?} lists {method}"
        );
    }
    // GET on the create route: the issue allows 404 or 405; either way a
    // JSON error, and a 405 names POST.
    let reply = call(server.addr, "GET", "/test-groups/create", &[], b"");
    assert!(
        matches!(reply.status, 404 | 405),
        "GET /test-groups/create: {}",
        reply.status
    );
    assert_error(&reply, reply.status, "");
    if reply.status == 405 {
        assert!(reply.header("allow").is_some_and(|a| a.contains("POST")));
    }
    // Nothing above recorded a run.
    assert!(group_runs(server.addr, &id).is_empty());
}

// ---------------------------------------------------------------------------
// POST /test-groups/{id}/{count}
// ---------------------------------------------------------------------------

#[test]
fn run_count_must_be_a_positive_integer() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 5}"#);
    for count in [
        "0",
        "-1",
        "abc",
        "+1",
        "1.5",
        "1e3",
        "0x10",
        "%201",
        "18446744073709551616",
    ] {
        let reply = request(
            server.addr,
            "POST",
            &format!("/test-groups/{id}/{count}"),
            b"body",
        );
        assert_error(&reply, 400, "");
    }
    assert!(
        group_runs(server.addr, &id).is_empty(),
        "a refused run was recorded"
    );
    // Unknown groups: 404, for a well-formed id and for garbage.
    assert_error(
        &post_run(server.addr, "7d8e9f00-1111-4222-8333-444455556666", 1, b"x"),
        404,
        "",
    );
    assert_error(&post_run(server.addr, "no-such-group", 1, b"x"), 404, "");
    // And a good one still works.
    assert_eq!(post_run(server.addr, &id, 1, b"ok").status, 200);
    assert_eq!(group_runs(server.addr, &id).len(), 1);
}

#[test]
fn the_same_count_twice_is_recorded_twice() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    assert_eq!(post_run(server.addr, &id, 1, b"once").status, 200);
    assert_eq!(post_run(server.addr, &id, 1, b"twice").status, 200);
    assert_eq!(post_run(server.addr, &id, 2, b"other").status, 200);
    let runs = group_runs(server.addr, &id);
    let seen: Vec<(u64, Vec<u8>)> = counts_and_bytes(&runs);
    assert_eq!(
        seen,
        vec![
            (1, b"once".to_vec()),
            (1, b"twice".to_vec()),
            (2, b"other".to_vec())
        ]
    );
    assert_ne!(runs[0]["run_id"], runs[1]["run_id"]);
}

#[test]
fn bodies_are_recorded_byte_for_byte() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 6}"#);
    let multiline =
        "line one\r\nline two ✓ — ünïcødé 日本語 🚀\n\ttabbed \"quoted\" \\ back\u{0}nul\n\n"
            .as_bytes()
            .to_vec();
    let all_bytes: Vec<u8> = (0..=255u8).rev().collect();
    let broken_utf8 = b"valid start \xe2\x9c then \xff\xfe and \xc0\xaf end\x80".to_vec();
    let large: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bodies: Vec<Vec<u8>> = vec![
        b"plain".to_vec(),
        multiline,
        all_bytes,
        broken_utf8,
        Vec::new(),
        large,
    ];
    let mut conn = Conn::open(server.addr);
    for (i, body) in bodies.iter().enumerate() {
        conn.send(&req("POST", &run_path(&id, i as u64 + 1), &[], body));
        assert_eq!(conn.reply().status, 200, "body {i}");
    }
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), bodies.len());
    for (i, (run, body)) in runs.iter().zip(&bodies).enumerate() {
        assert_run_shape(run);
        assert_eq!(run["run_count"], i as u64 + 1);
        match std::str::from_utf8(body) {
            Ok(text) => {
                assert_eq!(
                    run["data"].as_str(),
                    Some(text),
                    "body {i} not shown as readable text"
                );
                assert!(
                    run.get("data_base64").is_none(),
                    "body {i} is UTF-8 but has data_base64"
                );
            }
            Err(_) => {
                let b64 = run["data_base64"]
                    .as_str()
                    .unwrap_or_else(|| panic!("non-UTF-8 body {i} without data_base64"));
                assert_eq!(
                    base64_decode(b64),
                    *body,
                    "body {i}: data_base64 is not the exact bytes"
                );
                assert!(run["data"].is_string(), "body {i}: data is not a string");
            }
        }
        assert_eq!(run_bytes(run), *body, "body {i} not recorded byte for byte");
    }
}

#[test]
fn server_delay_holds_the_answer_and_is_in_the_duration() {
    let server = ServerProcess::start(&[]);
    let delay = 200 * MS;
    let id = create_group(
        server.addr,
        &format!(r#"{{"run_count": 1, "server_delay_ns": {delay}}}"#),
    );
    let mut conn = Conn::open(server.addr);
    let sent = Instant::now();
    conn.send(&req("POST", &run_path(&id, 1), &[], b"delayed"));
    let reply = conn.reply();
    let waited = sent.elapsed();
    assert_eq!(reply.status, 200);
    assert!(
        waited >= Duration::from_nanos(delay),
        "the answer came after {waited:?}, sooner than the {delay} ns delay"
    );
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 1);
    assert_run_shape(&runs[0]);
    let duration = runs[0]["server_duration_ns"].as_u64().unwrap();
    assert!(
        duration >= delay,
        "server_duration_ns {duration} leaves the {delay} ns delay out"
    );
    assert_eq!(run_bytes(&runs[0]), b"delayed");
}

#[test]
fn pipelined_requests_are_answered_in_request_order() {
    let server = ServerProcess::start(&[]);
    let slow = create_group(
        server.addr,
        r#"{"run_count": 2, "server_delay_ns": 300000000}"#,
    );
    let mid = create_group(
        server.addr,
        r#"{"run_count": 2, "server_delay_ns": 100000000}"#,
    );
    let fast = create_group(server.addr, r#"{"run_count": 2}"#);
    // Each answer differs, so the order is visible; the slow runs complete
    // last inside the server but come first on the wire.
    let mut bytes = Vec::new();
    bytes.extend(req("POST", &run_path(&slow, 1), &[], b"slow-1")); // 200, 300 ms
    bytes.extend(req("GET", "/nope", &[], b"")); // 404 at once
    bytes.extend(req("POST", &run_path(&mid, 1), &[], b"mid-1")); // 200, 100 ms
    bytes.extend(req("POST", &run_path(&fast, 0), &[], b"")); // 400 at once
    bytes.extend(req("POST", &run_path(&fast, 1), &[], b"fast-1")); // 200 at once
    bytes.extend(req("GET", "/healthz", &[], b"")); // 200 JSON at once
    bytes.extend(req(
        "POST",
        "/test-groups/create",
        &[],
        br#"{"run_cout": 1}"#,
    )); // 400 at once
    bytes.extend(req("POST", &run_path(&slow, 2), &[], b"slow-2")); // 200, 300 ms
    bytes.extend(req("GET", "/test-groups", &[], b"")); // 200 JSON list at once
    let mut conn = Conn::open(server.addr);
    let sent = Instant::now();
    conn.send(&bytes); // one write
    let first = conn.reply();
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "the first answer arrived before its 300 ms delay"
    );
    let rest: Vec<Reply> = (0..8).map(|_| conn.reply()).collect();
    let replies: Vec<&Reply> = std::iter::once(&first).chain(rest.iter()).collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 404, 200, 400, 200, 200, 400, 200, 200]);
    assert!(replies[0].body.is_empty());
    assert!(replies[1].text().contains("error"));
    assert!(
        replies[3].text().contains("'0'") || replies[3].text().contains('0'),
        "{}",
        replies[3].text()
    );
    assert!(
        replies[5].text().contains("ok"),
        "healthz body: {}",
        replies[5].text()
    );
    assert!(
        replies[6].text().contains("run_cout"),
        "{}",
        replies[6].text()
    );
    assert!(replies[8].json().is_array(), "{}", replies[8].text());
    let counts = |id: &str| counts_and_bytes(&group_runs(server.addr, id));

    // (The order of runs with equal deadlines is checked separately below.)
    let mut slow_runs = counts(&slow);
    slow_runs.sort();
    assert_eq!(
        slow_runs,
        vec![(1, b"slow-1".to_vec()), (2, b"slow-2".to_vec())]
    );
    assert_eq!(counts(&mid), vec![(1, b"mid-1".to_vec())]);
    assert_eq!(counts(&fast), vec![(1, b"fast-1".to_vec())]);
}

/// Pipelined runs of one group arrive together and share a deadline; the
/// group must still list them in arrival (request) order. Several delays,
/// so the timer wheel holds them at different levels.
#[test]
fn runs_with_the_same_deadline_are_listed_in_arrival_order() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr;
    let delays_ms = [1u64, 3, 9, 20, 70, 150, 300];
    let groups: Vec<String> = delays_ms
        .iter()
        .map(|d| {
            create_group(
                addr,
                &format!(r#"{{"run_count": 4, "server_delay_ns": {}}}"#, d * MS),
            )
        })
        .collect();
    let workers: Vec<_> = groups
        .iter()
        .cloned()
        .map(|id| {
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut bytes = Vec::new();
                for count in 1..=4 {
                    bytes.extend(req(
                        "POST",
                        &run_path(&id, count),
                        &[],
                        format!("arrived {count}").as_bytes(),
                    ));
                }
                conn.send(&bytes);
                for _ in 1..=4 {
                    assert_eq!(conn.reply().status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread failed");
    }
    let mut wrong = Vec::new();
    for (id, delay) in groups.iter().zip(delays_ms) {
        let runs = group_runs(addr, id);
        let counts: Vec<u64> = runs
            .iter()
            .map(|r| r["run_count"].as_u64().unwrap())
            .collect();
        let data: Vec<Vec<u8>> = runs.iter().map(run_bytes).collect();
        assert_eq!(data.len(), 4, "delay {delay} ms: runs lost");
        if counts != [1, 2, 3, 4] {
            wrong.push(format!("delay {delay} ms: {counts:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "runs not listed in arrival order: {wrong:?}"
    );
}

// ---------------------------------------------------------------------------
// Expect: 100-continue, chunked, HTTP/1.0, Connection: close
// ---------------------------------------------------------------------------

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    let body = b"the body after 100";
    let mut conn = Conn::open(server.addr);
    conn.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            run_path(&id, 1),
            body.len()
        )
        .as_bytes(),
    );
    // No body sent yet: the server must speak first (bounded by the read timeout).
    let interim = conn.reply();
    assert_eq!(
        interim.status,
        100,
        "expected 100 Continue, got {} {}",
        interim.status,
        interim.text()
    );
    conn.send(body);
    let reply = conn.reply();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The same on create, on the same connection.
    let config = br#"{"run_count": 4}"#;
    conn.send(
        format!(
            "POST /test-groups/create HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            config.len()
        )
        .as_bytes(),
    );
    assert_eq!(conn.reply().status, 100);
    conn.send(config);
    let created = conn.reply();
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["run_count"], 4);
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 1);
    assert_eq!(run_bytes(&runs[0]), body);
}

#[test]
fn the_100_continue_status_line_is_exact() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let mut conn = Conn::open(server.addr);
    conn.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            run_path(&id, 1)
        )
        .as_bytes(),
    );
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    while find(&got, b"\r\n\r\n").is_none() && Instant::now() < deadline {
        match conn.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no 100 Continue before the body: {e}"),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "got {:?}",
        preview(&got)
    );
    conn.buf = got[find(&got, b"\r\n\r\n").unwrap() + 4..].to_vec();
    conn.send(b"abc");
    assert_eq!(conn.reply().status, 200);
}

#[test]
fn curl_posting_a_2_kib_body_succeeds() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let body: String = (0..2048).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let tmp = TempDir::new("curl-body");
    let file = tmp.path("body.txt");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("curl")
        .args([
            "-v",
            "-sS",
            "--max-time",
            "15",
            "--expect100-timeout",
            "30",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{}{}", server.url(), run_path(&id, 1)))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "curl: {stderr}"
    );
    if stderr.contains("> Expect: 100-continue") {
        assert!(
            stderr.contains("< HTTP/1.1 100 Continue"),
            "curl sent Expect but saw no 100 Continue: {stderr}"
        );
    }
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 1);
    assert_eq!(run_bytes(&runs[0]), body.as_bytes());
}

#[test]
fn chunked_request_bodies_are_recorded() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 3}"#);
    let mut conn = Conn::open(server.addr);
    // Sent in pieces that split sizes, data and CRLFs across writes.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        run_path(&id, 1)
    );
    let pieces: [&[u8]; 6] = [
        head.as_bytes(),
        b"7\r\nhello, ",
        b"\r\n7;ext=1\r\nchun",
        b"ked\r\nD\r\n world\nline 2\r",
        b"\n0\r\n",
        b"X-Trailer: yes\r\n\r\n",
    ];
    for piece in pieces {
        conn.send(piece);
        thread::sleep(Duration::from_millis(15));
    }
    assert_eq!(conn.reply().status, 200);
    // Non-UTF-8 bytes through chunked framing, then a plain request on the
    // same connection.
    let mut bytes = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        run_path(&id, 2)
    )
    .into_bytes();
    bytes.extend_from_slice(b"3\r\n\xff\x00\x80\r\n2\r\n\r\n\r\n0\r\n\r\n");
    bytes.extend(req("POST", &run_path(&id, 3), &[], b"after"));
    conn.send(&bytes);
    assert_eq!(conn.reply().status, 200);
    assert_eq!(conn.reply().status, 200);
    let runs = group_runs(server.addr, &id);
    let seen: Vec<(u64, Vec<u8>)> = counts_and_bytes(&runs);
    assert_eq!(
        seen,
        vec![
            (1, b"hello, chunked world\nline 2".to_vec()),
            (2, b"\xff\x00\x80\r\n".to_vec()),
            (3, b"after".to_vec()),
        ]
    );
    // A chunked create works too.
    let mut conn = Conn::open(server.addr);
    conn.send(b"POST /test-groups/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"run_\r\na\r\ncount\": 7}\r\n0\r\n\r\n");
    let created = conn.reply();
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["run_count"], 7);
}

#[test]
fn http_1_0_requests_are_answered_and_closed() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    // A run over HTTP/1.0, without half-closing: the server closes.
    let mut conn = Conn::open(server.addr);
    conn.send(
        format!(
            "POST {} HTTP/1.0\r\nContent-Length: 4\r\n\r\nv1.0",
            run_path(&id, 1)
        )
        .as_bytes(),
    );
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(
        closed,
        "HTTP/1.0 connection left open; got {:?}",
        preview(&bytes)
    );
    let replies = parse_replies(&bytes);
    assert_eq!(replies.len(), 1, "{:?}", preview(&bytes));
    assert_eq!(replies[0].status, 200);
    // The group over HTTP/1.0: a complete JSON document, then close.
    let mut conn = Conn::open(server.addr);
    conn.send(format!("GET /test-groups/{id} HTTP/1.0\r\n\r\n").as_bytes());
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(closed, "HTTP/1.0 connection left open");
    assert!(bytes.starts_with(b"HTTP/1."), "{:?}", preview(&bytes));
    let head_end = find(&bytes, b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "chunked answer to HTTP/1.0: {head}"
    );
    let reply = parse_reply(&bytes, false, true).expect("a reply").0;
    assert_eq!(reply.status, 200);
    let group = reply.json();
    assert_eq!(runs_of(&group).len(), 1);
    assert_eq!(run_bytes(&runs_of(&group)[0]), b"v1.0");
    // HTTP/1.0 with two requests in one write: only the first is answered.
    let mut conn = Conn::open(server.addr);
    conn.send(b"GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n");
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(closed);
    assert_eq!(parse_replies(&bytes).len(), 1, "{:?}", preview(&bytes));
}

#[test]
fn connection_close_is_honoured_and_keep_alive_is_the_default() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    // Keep-alive by default: three requests, one at a time, on one connection.
    let mut conn = Conn::open(server.addr);
    for count in 1..=2 {
        conn.send(&req("POST", &run_path(&id, count), &[], b"k"));
        let reply = conn.reply();
        assert_eq!(reply.status, 200);
        assert!(!reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")));
    }
    // Connection: close: answered, then closed; what follows is not read.
    let mut bytes = req("GET", "/healthz", &[("Connection", "close")], b"");
    bytes.extend(req("POST", &run_path(&id, 3), &[], b"never"));
    conn.send(&bytes);
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(closed, "Connection: close not honoured");
    let replies = parse_replies(&bytes);
    assert_eq!(
        replies.len(),
        1,
        "answers after Connection: close: {:?}",
        preview(&bytes)
    );
    assert_eq!(replies[0].status, 200);
    assert!(replies[0]
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close")));
    let counts: Vec<u64> = group_runs(server.addr, &id)
        .iter()
        .map(|r| r["run_count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![1, 2],
        "a request after Connection: close was carried out"
    );
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

#[test]
fn header_block_too_large_is_431() {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let big = "a".repeat(64 * 1024);
    let reply = call(
        server.addr,
        "POST",
        &run_path(&id, 1),
        &[("X-Big", &big)],
        b"x",
    );
    assert_error(&reply, 431, "");
    // Many headers of normal size.
    let mut conn = Conn::open(server.addr);
    let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        bytes.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    conn.send(&bytes);
    assert_error(&conn.reply(), 431, "");
    // A head that never ends but keeps growing.
    let mut conn = Conn::open(server.addr);
    conn.send(
        format!(
            "GET /healthz HTTP/1.1\r\nX-Endless: {}",
            "b".repeat(40 * 1024)
        )
        .as_bytes(),
    );
    assert_error(&conn.reply(), 431, "");
    assert!(group_runs(server.addr, &id).is_empty());
    assert_eq!(request(server.addr, "GET", "/healthz", b"").status, 200);
}

#[test]
fn body_over_max_body_is_413_naming_the_limit() {
    let server = ServerProcess::start(&["--max-body", "1000"]);
    let id = create_group(server.addr, r#"{"run_count": 3}"#);
    let reply = post_run(server.addr, &id, 1, &[b'x'; 1001]);
    assert_error(&reply, 413, "1000");
    // Exactly the limit is fine.
    assert_eq!(post_run(server.addr, &id, 2, &[b'y'; 1000]).status, 200);
    // A chunked body that grows past the limit.
    let mut conn = Conn::open(server.addr);
    let mut bytes = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        run_path(&id, 3)
    )
    .into_bytes();
    for _ in 0..3 {
        bytes.extend_from_slice(format!("190\r\n{}\r\n", "z".repeat(400)).as_bytes());
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    conn.send(&bytes);
    assert_error(&conn.reply(), 413, "1000");
    // Announced too large, body never sent: refused at once.
    let mut conn = Conn::open(server.addr);
    conn.send(
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n",
            run_path(&id, 4)
        )
        .as_bytes(),
    );
    assert_error(&conn.reply(), 413, "1000");
    // A create body over the limit too.
    let config = format!(
        r#"{{"run_count": 1, "description": "{}"}}"#,
        "d".repeat(2000)
    );
    assert_error(
        &request(
            server.addr,
            "POST",
            "/test-groups/create",
            config.as_bytes(),
        ),
        413,
        "1000",
    );
    let runs = group_runs(server.addr, &id);
    let counts: Vec<u64> = runs
        .iter()
        .map(|r| r["run_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![2], "only the 1000-byte run is recorded");
    assert_eq!(run_bytes(&runs[0]), vec![b'y'; 1000]);
}

#[test]
fn a_request_that_never_completes_gets_408() {
    let server = ServerProcess::start(&["--request-timeout", "300ms"]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    // Half a head, then half a body.
    let partial_head = b"POST /test-groups/x/1 HTTP/1.1\r\nHost: x\r\nContent-Le".to_vec();
    let mut partial_body = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        run_path(&id, 1)
    )
    .into_bytes();
    partial_body.extend_from_slice(b"abc");
    let mut conns: Vec<(Conn, Instant)> = Vec::new();
    for bytes in [&partial_head, &partial_body] {
        let mut conn = Conn::open(server.addr);
        let sent = Instant::now();
        conn.send(bytes);
        conns.push((conn, sent));
    }
    for (i, (mut conn, sent)) in conns.into_iter().enumerate() {
        assert_timed_out_reply(
            conn.read_until_close(Duration::from_secs(5)),
            sent.elapsed(),
            Duration::from_millis(300),
            &format!("case {i}, read for 5 s"),
            |reply| {
                assert_error(reply, 408, "");
            },
        );
    }
    assert!(
        group_runs(server.addr, &id).is_empty(),
        "the incomplete request was recorded"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = ServerProcess::start(&["--idle-timeout", "300ms"]);
    // After an answer, then silence.
    let mut conn = Conn::open(server.addr);
    // The server's last activity on the connection is no earlier than this.
    let idle_from = Instant::now();
    conn.send(&req("GET", "/healthz", &[], b""));
    assert_eq!(conn.reply().status, 200);
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(closed, "idle connection not closed within 5 s");
    assert!(
        bytes.is_empty(),
        "an idle close sent bytes: {:?}",
        preview(&bytes)
    );
    assert!(
        idle_from.elapsed() >= Duration::from_millis(300),
        "closed before --idle-timeout"
    );
    // A connection that never sends anything.
    let mut conn = Conn::open(server.addr);
    let (_, closed) = conn.read_until_close(Duration::from_secs(5));
    assert!(closed, "silent connection not closed within 5 s");
    // A connection in use is not closed while it keeps talking: activity
    // restarts the idle clock (gaps well under the timeout, total over it).
    let server = ServerProcess::start(&["--idle-timeout", "1s"]);
    let mut conn = Conn::open(server.addr);
    for _ in 0..5 {
        conn.send(&req("GET", "/healthz", &[], b""));
        assert_eq!(conn.reply().status, 200);
        thread::sleep(Duration::from_millis(300));
    }
    conn.send(&req("GET", "/healthz", &[], b""));
    assert_eq!(
        conn.reply().status,
        200,
        "a busy connection was closed as idle"
    );
}

// ---------------------------------------------------------------------------
// Clients that vanish
// ---------------------------------------------------------------------------

#[test]
fn a_client_gone_mid_request_records_nothing_and_harms_nothing() {
    let mut server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let path = run_path(&id, 1);
    let cases: Vec<Vec<u8>> = vec![
        // Half a body.
        [
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").into_bytes(),
            vec![b'h'; 50],
        ]
        .concat(),
        // Half a chunked body.
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
            .into_bytes(),
        // Half a head.
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Len").into_bytes(),
        // Waiting for 100 Continue, then gone.
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
        )
        .into_bytes(),
    ];
    for bytes in &cases {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(bytes).unwrap();
        drop(s);
        // Half-closed only.
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert_eq!(request(server.addr, "GET", "/healthz", b"").status, 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    assert!(
        group_runs(server.addr, &id).is_empty(),
        "a cut-short request was recorded"
    );
    assert_eq!(post_run(server.addr, &id, 1, b"whole").status, 200);
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 1);
    assert_eq!(run_bytes(&runs[0]), b"whole");
}

#[test]
fn a_client_gone_mid_delay_still_has_its_run_recorded() {
    let mut server = ServerProcess::start(&[]);
    let delay = 200 * MS;
    let id = create_group(
        server.addr,
        &format!(r#"{{"run_count": 3, "server_delay_ns": {delay}}}"#),
    );
    // Fully closed right after sending.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&req("POST", &run_path(&id, 1), &[], b"gone-1"))
        .unwrap();
    drop(s);
    // Two pipelined runs, then closed.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut bytes = req("POST", &run_path(&id, 2), &[], b"gone-2");
    bytes.extend(req("POST", &run_path(&id, 3), &[], b"gone-3"));
    s.write_all(&bytes).unwrap();
    drop(s);
    let runs = wait_for_runs(server.addr, &id, 3);
    assert_eq!(
        runs.len(),
        3,
        "runs whose client vanished mid-delay were lost: {runs:?}"
    );
    let mut seen: Vec<(u64, Vec<u8>)> = counts_and_bytes(&runs);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, b"gone-1".to_vec()),
            (2, b"gone-2".to_vec()),
            (3, b"gone-3".to_vec())
        ]
    );
    for run in &runs {
        assert_run_shape(run);
        assert!(run["server_duration_ns"].as_u64().unwrap() >= delay);
    }
    assert_alive_and_healthy(&mut server);
}

// ---------------------------------------------------------------------------
// Burst: 20 000 runs over 50 keep-alive connections
// ---------------------------------------------------------------------------

#[test]
fn burst_of_20000_runs_over_50_connections_loses_nothing() {
    const RUNS: u64 = 20_000;
    const CONNS: u64 = 50;
    const PIPELINE: usize = 4;
    let server = ServerProcess::start(&[]);
    let addr = server.addr;
    let id = Arc::new(create_group(
        addr,
        &format!(r#"{{"run_count": {RUNS}, "concurrency": {CONNS}}}"#),
    ));
    let body = |count: u64| format!("run {count} payload ✓ {}", "x".repeat((count % 7) as usize));
    let workers: Vec<_> = (0..CONNS)
        .map(|t| {
            let id = Arc::clone(&id);
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let counts: Vec<u64> = (1..=RUNS).filter(|c| c % CONNS == t).collect();
                for batch in counts.chunks(PIPELINE) {
                    let mut bytes = Vec::new();
                    for &c in batch {
                        bytes.extend(req("POST", &run_path(&id, c), &[], body(c).as_bytes()));
                    }
                    conn.send(&bytes);
                    for &c in batch {
                        let reply = conn.reply();
                        assert_eq!(reply.status, 200, "run {c}: {}", reply.text());
                        assert_eq!(reply.header("content-length"), Some("0"), "run {c}");
                    }
                }
                counts.len()
            })
        })
        .collect();
    let sent: usize = workers
        .into_iter()
        .map(|w| w.join().expect("a client thread failed"))
        .sum();
    assert_eq!(sent as u64, RUNS);
    let group = get_group(addr, &id);
    let runs = runs_of(&group);
    assert_eq!(runs.len() as u64, RUNS, "runs lost or duplicated");
    let mut seen = vec![false; RUNS as usize + 1];
    let mut run_ids = HashSet::new();
    for run in &runs {
        let c = run["run_count"].as_u64().expect("run_count");
        assert!((1..=RUNS).contains(&c), "run_count {c} out of range");
        assert!(!seen[c as usize], "run_count {c} recorded twice");
        seen[c as usize] = true;
        assert_eq!(
            run["data"].as_str(),
            Some(body(c).as_str()),
            "run {c}'s data"
        );
        assert!(
            run_ids.insert(run["run_id"].as_str().expect("run_id").to_owned()),
            "duplicate run_id"
        );
    }
    assert!(seen[1..].iter().all(|&s| s));
    let list = request(addr, "GET", "/test-groups", b"").json();
    assert_eq!(list[0]["recorded_runs"], RUNS);
}

// ---------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------

#[test]
fn upstream_answers_are_recorded() {
    let server = ServerProcess::start(&[]);
    let upstream = fake_upstream(Some(
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    ));
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 3, "upstream_endpoint": "http://{}/probe", "upstream_timeout_ns": 5000000000}}"#,
            upstream.addr
        ),
    );
    for count in 1..=3 {
        assert_eq!(
            post_run(server.addr, &id, count, b"with upstream").status,
            200
        );
    }
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 3);
    for run in &runs {
        assert_run_shape(run);
        assert_eq!(run["upstream_response_code"], 204, "{run}");
        assert!(
            run["upstream_response_time_ns"]
                .as_u64()
                .is_some_and(|t| t > 0),
            "{run}"
        );
        assert!(
            run.get("error").is_none(),
            "error recorded for a good upstream: {run}"
        );
    }
    let heads = upstream.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "the upstream saw {} requests", heads.len());
    for head in &heads {
        assert!(
            head.starts_with("GET /probe HTTP/1.1\r\n"),
            "upstream request: {head:?}"
        );
        assert!(
            head.to_ascii_lowercase().contains("\r\nhost: "),
            "no Host header: {head:?}"
        );
    }

    // An upstream answer with a body, keep-alive framing.
    let upstream = fake_upstream(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"));
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://{}/"}}"#,
            upstream.addr
        ),
    );
    assert_eq!(post_run(server.addr, &id, 1, b"b").status, 200);
    let run = &group_runs(server.addr, &id)[0];
    assert_eq!(run["upstream_response_code"], 200, "{run}");
    assert!(run.get("error").is_none(), "{run}");
}

#[test]
fn upstream_delay_and_server_delay_add_up() {
    let server = ServerProcess::start(&[]);
    let upstream = fake_upstream(Some(b"HTTP/1.1 204 No Content\r\n\r\n"));
    let delay = 150 * MS;
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 1, "server_delay_ns": {delay}, "upstream_endpoint": "http://{}/"}}"#,
            upstream.addr
        ),
    );
    let started = Instant::now();
    assert_eq!(post_run(server.addr, &id, 1, b"x").status, 200);
    assert!(started.elapsed() >= Duration::from_nanos(delay));
    let run = &group_runs(server.addr, &id)[0];
    let upstream_ns = run["upstream_response_time_ns"].as_u64().unwrap();
    let duration = run["server_duration_ns"].as_u64().unwrap();
    assert!(
        duration >= delay + upstream_ns,
        "server_duration_ns {duration} < delay {delay} + upstream {upstream_ns}"
    );
}

#[test]
fn an_upstream_that_never_answers_times_out_and_the_run_still_succeeds() {
    let server = ServerProcess::start(&[]);
    let upstream = fake_upstream(None);
    let timeout = 100 * MS;
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 2, "upstream_endpoint": "http://{}/slow", "upstream_timeout_ns": {timeout}}}"#,
            upstream.addr
        ),
    );
    for count in 1..=2 {
        let started = Instant::now();
        let reply = post_run(server.addr, &id, count, b"t");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            started.elapsed() >= Duration::from_nanos(timeout),
            "answered before the upstream timeout"
        );
    }
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let error = shaped_run_error(run, "a silent");
        let lower = error.to_ascii_lowercase();
        assert!(
            lower.contains("timed out") || lower.contains("timeout"),
            "error does not mention the timeout: {error}"
        );
        assert_ne!(run["upstream_response_code"], 200);
        assert!(
            run["server_duration_ns"].as_u64().unwrap() >= timeout,
            "{run}"
        );
    }
    assert_eq!(
        upstream.heads.lock().unwrap().len(),
        2,
        "the request did not reach the upstream"
    );
}

#[test]
fn a_refused_upstream_is_an_error_in_the_run() {
    let server = ServerProcess::start(&[]);
    let port = closed_port();
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://127.0.0.1:{port}/", "upstream_timeout_ns": 5000000000}}"#
        ),
    );
    let reply = post_run(server.addr, &id, 1, b"r");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let run = &group_runs(server.addr, &id)[0];
    let error = shaped_run_error(run, "a refused");
    assert!(error.to_ascii_lowercase().contains("refused"), "{error}");
    assert_ne!(run["upstream_response_code"], 200);
}

/// An https upstream that does not speak TLS (here: a plain HTTP server that
/// answers whatever arrives, so the handshake fails at once) gives each run
/// a clear error; the run itself still succeeds and the server lives on.
#[test]
fn an_https_upstream_that_fails_is_a_clear_error_not_a_crash() {
    let mut server = ServerProcess::start(&[]);
    // At most the two runs' connections; each is answered in plain text.
    let plain = TestListener::start_for(Duration::from_secs(120), 2, |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk);
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let _ = s.shutdown(std::net::Shutdown::Write);
    });
    let plain_addr = plain.addr;
    let id = create_group(
        server.addr,
        &format!(
            r#"{{"run_count": 2, "upstream_endpoint": "https://{plain_addr}/", "upstream_timeout_ns": 5000000000}}"#
        ),
    );
    for count in 1..=2 {
        assert_eq!(post_run(server.addr, &id, count, b"s").status, 200);
    }
    let runs = group_runs(server.addr, &id);
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let error = shaped_run_error(run, "a failed https");
        let lower = error.to_ascii_lowercase();
        assert!(
            lower.contains("tls") || lower.contains("https") || lower.contains("handshake"),
            "unclear error: {error}"
        );
        assert_ne!(run["upstream_response_code"], 204, "{run}");
    }
    assert_alive_and_healthy(&mut server);
}

#[test]
fn an_unresolvable_upstream_is_an_error_and_does_not_stall_the_server() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr;
    let id = create_group(
        addr,
        r#"{"run_count": 1, "upstream_endpoint": "http://nonexistent.invalid/", "upstream_timeout_ns": 3000000000}"#,
    );
    let path = run_path(&id, 1);
    let runner = thread::spawn(move || request(addr, "POST", &path, b"dns"));
    // While the name resolves (or fails), the loop keeps answering.
    for _ in 0..5 {
        let mut conn = Conn::open(addr);
        conn.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        conn.send(&req("GET", "/healthz", &[("Connection", "close")], b""));
        assert_eq!(conn.reply().status, 200, "healthz stalled while resolving");
    }
    let reply = runner.join().expect("the run request failed");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let run = &group_runs(addr, &id)[0];
    let error = shaped_run_error(run, "an unresolvable");
    assert!(!error.is_empty());
    assert_ne!(run["upstream_response_code"], 200);
}

// ---------------------------------------------------------------------------
// --token, CONNTEST_TOKEN, --upstream-allow
// ---------------------------------------------------------------------------

fn check_token_guard(server: &ServerProcess, token: &str) {
    let addr = server.addr;
    let good = format!("Bearer {token}");
    let auth = [("Authorization", good.as_str())];
    // /healthz needs no token.
    assert_eq!(call(addr, "GET", "/healthz", &[], b"").status, 200);
    // Every other route does.
    for (method, path) in [
        ("GET", "/test-groups"),
        ("POST", "/test-groups/create"),
        ("GET", "/test-groups/6f1c1a34-3c55-4c7e-9d8e-1d1f4bbf2f0a"),
        ("GET", "/nope"),
    ] {
        let body: &[u8] = if method == "POST" {
            br#"{"run_count": 1}"#
        } else {
            b""
        };
        assert_error(&call(addr, method, path, &[], body), 401, "");
        for wrong in [
            format!("Bearer {token}x"),
            "Bearer ".to_owned(),
            format!("Basic {token}"),
            token.to_owned(),
        ] {
            let reply = call(
                addr,
                method,
                path,
                &[("Authorization", wrong.as_str())],
                body,
            );
            assert_error(&reply, 401, "");
        }
    }
    let created = call(
        addr,
        "POST",
        "/test-groups/create",
        &auth,
        br#"{"run_count": 2}"#,
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["run_group_id"].as_str().unwrap().to_owned();
    assert_error(
        &call(addr, "POST", &run_path(&id, 1), &[], b"no token"),
        401,
        "",
    );
    assert_eq!(
        call(addr, "POST", &run_path(&id, 2), &auth, b"token").status,
        200
    );
    let group = call(addr, "GET", &format!("/test-groups/{id}"), &auth, b"");
    assert_eq!(group.status, 200);
    let counts: Vec<u64> = runs_of(&group.json())
        .iter()
        .map(|r| r["run_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![2], "a run without the token was recorded");
    assert_eq!(call(addr, "GET", "/test-groups", &auth, b"").status, 200);
}

#[test]
fn token_guards_every_route_but_healthz() {
    let server = ServerProcess::start(&["--token", "s3cret"]);
    check_token_guard(&server, "s3cret");
}

#[test]
fn conntest_token_env_sets_the_token() {
    let server = ServerProcess::start_with_env(&[], &[("CONNTEST_TOKEN", "from-env-7")]);
    check_token_guard(&server, "from-env-7");
}

#[test]
fn upstream_allow_restricts_upstream_endpoint_at_create() {
    let port = closed_port();
    let allow = format!("127.0.0.1:{port},internal.example.net");
    let server = ServerProcess::start(&["--upstream-allow", &allow]);
    let create_with_upstream = |endpoint: &str| {
        let config = format!(r#"{{"run_count": 1, "upstream_endpoint": "{endpoint}"}}"#);
        request(
            server.addr,
            "POST",
            "/test-groups/create",
            config.as_bytes(),
        )
    };
    for endpoint in [
        format!("http://127.0.0.1:{port}/x"),
        "https://internal.example.net".to_owned(),
    ] {
        let reply = create_with_upstream(&endpoint);
        assert_eq!(reply.status, 200, "{endpoint} refused: {}", reply.text());
    }
    for (endpoint, host) in [
        (
            format!("http://127.0.0.1:{}/x", port.wrapping_add(1).max(1)),
            "127.0.0.1",
        ),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "169.254.169.254",
        ),
        ("http://evil.example.com/".to_owned(), "evil.example.com"),
    ] {
        let reply = create_with_upstream(&endpoint);
        let message = assert_error(&reply, 400, host);
        assert!(message.contains("upstream"), "{message}");
    }
    // No upstream at all is fine.
    create_group(server.addr, r#"{"run_count": 1}"#);
    let list = request(server.addr, "GET", "/test-groups", b"").json();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------
// Logging and signals
// ---------------------------------------------------------------------------

/// The same traffic for each log level.
fn some_traffic(addr: SocketAddr, runs: u64) {
    let id = create_group(addr, r#"{"run_count": 1}"#);
    let mut conn = Conn::open(addr);
    for count in 1..=runs {
        conn.send(&req("POST", &run_path(&id, count), &[], b"log"));
        assert_eq!(conn.reply().status, 200);
    }
    assert_eq!(post_run(addr, &id, 0, b"bad").status, 400);
    assert_eq!(request(addr, "GET", "/nope", b"").status, 404);
    get_group(addr, &id);
}

#[test]
fn log_level_debug_logs_more_than_info() {
    let info = ServerProcess::start_with_env(&[], &[("LOG_LEVEL", "info")]);
    let debug = ServerProcess::start_with_env(&[], &[("LOG_LEVEL", "debug")]);
    some_traffic(info.addr, 3);
    some_traffic(debug.addr, 3);
    let (info_code, info_log) = stop_and_collect_log(info);
    let (debug_code, debug_log) = stop_and_collect_log(debug);
    assert_eq!(info_code, Some(0), "{info_log}");
    assert_eq!(debug_code, Some(0), "{debug_log}");
    assert!(
        !info_log.contains("DEBUG"),
        "info logged debug lines: {info_log}"
    );
    assert!(
        debug_log.lines().count() > info_log.lines().count(),
        "debug logged no more than info:\n--- debug\n{debug_log}\n--- info\n{info_log}"
    );
}

#[test]
fn info_does_not_log_a_line_per_request() {
    let server = ServerProcess::start_with_env(&[], &[("LOG_LEVEL", "info")]);
    some_traffic(server.addr, 100);
    let (code, log) = stop_and_collect_log(server);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("listening on"), "{log}");
    assert!(
        log.lines().count() <= 6,
        "info log grows with requests ({} lines):\n{log}",
        log.lines().count()
    );
}

#[test]
fn a_bogus_log_level_exits_2_with_one_line() {
    let mut child = Command::new(bin())
        .args(["server", "-p", "0", "--bind", "127.0.0.1"])
        .env("LOG_LEVEL", "bogus")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("LOG_LEVEL=bogus: the server started instead of refusing");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr:?}"
    );
    assert!(
        stderr.contains("LOG_LEVEL") && stderr.contains("bogus"),
        "{stderr}"
    );
}

#[test]
fn sigterm_finishes_a_delay_in_flight_then_exits_0() {
    let mut server = ServerProcess::start(&[]);
    let delay = 300 * MS;
    // One write, so the server reads both requests in one go and starts the
    // delayed run before it answers the healthz: once the healthz answer is
    // here, the run is in flight.
    let bytes = healthz_then_delayed_run(server.addr, delay);
    let mut conn = Conn::open(server.addr);
    let sent = Instant::now();
    conn.send(&bytes);
    assert_eq!(conn.reply().status, 200);
    server.signal(SIGTERM);
    let reply = conn.reply();
    assert_eq!(
        reply.status,
        200,
        "the run in flight was not answered: {}",
        reply.text()
    );
    assert!(
        sent.elapsed() >= Duration::from_nanos(delay),
        "answered before its delay"
    );
    let code = server.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "log:\n{}", server.log_text());
}
