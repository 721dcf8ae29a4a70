//! The Redis store through the real binary and a real `redis-server` on a
//! free loopback port: the in-progress count, a password, group expiry,
//! two replicas on one Redis (record_headers of a group the other made
//! included), and a Redis that comes up after the server.
//! (Replicas behind nginx, killed replicas and Redis restarts are in
//! tests/scale_out.rs.)

mod common;
use common::cluster::{wait_status, RedisProcess};
use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn status(server: &ServerProcess, id: &str) -> serde_json::Value {
    let reply = request(
        server.addr,
        "GET",
        &format!("/test-groups/{id}/status"),
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The client's one-line summary and exit code for group `id`.
fn run_client(url: &str, id: &str, extra: &[&str]) -> Finished {
    let dir = TempDir::new("redis-client");
    let mut args = vec!["client", "-r", url, "-g", id];
    args.extend_from_slice(extra);
    run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT)
}

/// Regression: the store thread once sent a batch's records ahead of the
/// runs begun in the same batch; the count dipped below zero, was clamped,
/// and stayed at 1 after every run was recorded, so every client waited
/// out its whole --timeout before comparing.
#[test]
fn runs_in_progress_is_zero_once_every_run_is_answered() {
    let redis = RedisProcess::start();
    let server = server_on(&redis.url());
    let id = create_group(server.addr, r#"{"run_count": 3000, "concurrency": 40}"#);
    let done = run_client(&server.url(), &id, &["--timeout", "5s", "-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let s = status(&server, &id);
    assert_eq!(s["recorded_runs"], 3000, "{s}");
    assert_eq!(s["runs_in_progress"], 0, "{s}");
}

#[test]
fn two_replicas_on_one_redis_share_groups_runs_and_deletes() {
    let redis = RedisProcess::start();
    let a = server_on(&redis.url());
    let b = ServerProcess::start_with_env(&[], &[("CONNTEST_STORE", &redis.url())]);
    readyz(&b, 200);
    let id = create_group(a.addr, r#"{"run_count": 200, "concurrency": 8}"#);
    // Runs against B of a group made on A.
    let done = run_client(&b.url(), &id, &["-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let on_a = get_group(a.addr, &id);
    assert_eq!(on_a["test_runs"].as_array().map(Vec::len), Some(200));
    let listed = request(b.addr, "GET", "/test-groups", b"").json();
    assert_eq!(listed[0]["recorded_runs"], 200, "{listed}");
    // Deleted on B: gone on A, also for a run (A knows the group's header).
    assert_eq!(
        request(b.addr, "DELETE", &format!("/test-groups/{id}"), b"").status,
        200
    );
    assert_error(
        &request(a.addr, "GET", &format!("/test-groups/{id}"), b""),
        404,
        "no test group",
    );
    assert_error(
        &request(a.addr, "POST", &format!("/test-groups/{id}/1"), b"late"),
        404,
        "deleted",
    );
    assert!(
        b.log_text().contains("store redis://127.0.0.1:"),
        "{}",
        b.log_text()
    );
}

/// A group made on one replica with `record_headers`: the other replica,
/// which learns the group with its first run, records the values of every
/// run, the first included (a shared store keeps every request's head).
#[test]
fn record_headers_of_a_group_made_on_another_replica() {
    let redis = RedisProcess::start();
    let a = server_on(&redis.url());
    let b = server_on(&redis.url());
    let id = create_group(
        a.addr,
        r#"{"run_count": 30, "concurrency": 3, "record_headers": ["x-forwarded-for"]}"#,
    );
    let done = run_client(
        &b.url(),
        &id,
        &["-q", "-H", "X-Forwarded-For: 198.51.100.7"],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let group = get_group(a.addr, &id);
    let runs = group["test_runs"].as_array().expect("test_runs");
    assert_eq!(runs.len(), 30);
    for run in runs {
        assert_eq!(run["headers"]["x-forwarded-for"], "198.51.100.7", "{run}");
    }
}

#[test]
fn a_password_is_used_and_never_shown() {
    let redis = RedisProcess::start_with_args(&["--requirepass", "s3cret-pw"]);
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}/0", redis.port);
    let server = server_on(&good);
    let id = create_group(server.addr, r#"{"run_count": 5}"#);
    let done = run_client(&server.url(), &id, &["-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port);
    let refused = ServerProcess::start(&["--store", &wrong]);
    let ready = readyz(&refused, 503);
    assert!(ready.text().contains("127.0.0.1"), "{}", ready.text());
    let create = request(
        refused.addr,
        "POST",
        "/test-groups/create",
        br#"{"run_count": 1}"#,
    );
    assert_eq!(create.status, 503, "{}", create.text());
    for text in [
        ready.text(),
        create.text(),
        refused.log_text(),
        server.log_text(),
    ] {
        assert!(
            !text.contains("s3cret-pw") && !text.contains("wrong-pw"),
            "a password shown: {text}"
        );
    }
}

/// Waits until the server's /readyz answers `status`; that answer.
fn readyz(server: &ServerProcess, status: u16) -> Reply {
    assert!(
        wait_status(server.addr, "/readyz", status, Duration::from_secs(10)),
        "/readyz never answered {status}"
    );
    request(server.addr, "GET", "/readyz", b"")
}

/// A server on `url`'s store, once it is ready.
fn server_on(url: &str) -> ServerProcess {
    let server = ServerProcess::start(&["--store", url]);
    readyz(&server, 200);
    server
}

#[test]
fn a_server_started_before_its_redis_is_not_ready_until_it_comes() {
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = ServerProcess::start(&["--store", &url]);
    assert_eq!(request(server.addr, "GET", "/healthz", b"").status, 200);
    let not_ready = readyz(&server, 503);
    assert!(not_ready.text().contains(&url), "{}", not_ready.text());
    let _redis = RedisProcess::start_on(port);
    readyz(&server, 200);
    let id = create_group(server.addr, r#"{"run_count": 3}"#);
    let done = run_client(&server.url(), &id, &["-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[test]
fn groups_expire_after_the_group_ttl_and_make_room() {
    let redis = RedisProcess::start();
    let server = ServerProcess::start(&[
        "--store",
        &redis.url(),
        "--group-ttl",
        "1s",
        "--max-groups",
        "1",
    ]);
    readyz(&server, 200);
    let old = create_group(server.addr, r#"{"run_count": 2}"#);
    assert_eq!(
        request(server.addr, "POST", &format!("/test-groups/{old}/1"), b"x").status,
        200
    );
    assert_error(
        &request(
            server.addr,
            "POST",
            "/test-groups/create",
            br#"{"run_count": 1}"#,
        ),
        507,
        "--max-groups",
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_error(
        &request(server.addr, "GET", &format!("/test-groups/{old}"), b""),
        404,
        "no test group",
    );
    // The expired group no longer counts against --max-groups.
    let new = create_group(server.addr, r#"{"run_count": 2}"#);
    let listed = request(server.addr, "GET", "/test-groups", b"").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["run_group_id"], new.as_str());
}
