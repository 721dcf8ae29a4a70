//! Scale: several server loops on one port lose no run, and one client
//! holds 10 000 concurrent connections to one server.

mod common;
use common::*;
use std::process::Command;

/// Runs `conntest run -r URL ...` and returns (exit code, report JSON).
fn run_against(url: &str, args: &[&str], dir: &TempDir) -> (Option<i32>, serde_json::Value) {
    let report = dir.path("report.json");
    let out = Command::new(bin())
        .args(["run", "-r", url, "-q", "-f"])
        .arg(&report)
        .args(args)
        .output()
        .expect("run conntest");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        serde_json::from_str(&text).expect("report JSON"),
    )
}

#[test]
fn several_loop_threads_share_the_port_and_lose_no_run() {
    let server = ServerProcess::start(&["--threads", "3"]);
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        tasks >= 3,
        "expected 3 loop threads, the process has {tasks} threads"
    );
    let dir = TempDir::new("threads");
    let (code, report) = run_against(
        &server.url(),
        &["--run-count", "20000", "--concurrency", "50"],
        &dir,
    );
    assert_eq!(code, Some(0), "summary: {}", report["summary"]);
    let id = report["client_run_group"]["run_group_id"].as_str().unwrap();
    let group = get_group(server.addr, id);
    let mut counts: Vec<u64> = group["test_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20000).collect::<Vec<u64>>());
    // The kernel spread the 50 connections over the 3 loops: each loop
    // thread was woken by traffic thousands of times, where an idle loop
    // wakes only to look for a shutdown (5 times a second).
    let pid = server.child.id();
    let mut wakeups = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        if field("Name:") == "conntest" || field("Name:").starts_with("loop-") {
            wakeups.push(
                field("voluntary_ctxt_switches:")
                    .parse::<u64>()
                    .unwrap_or(0),
            );
        }
    }
    assert_eq!(wakeups.len(), 3, "loop threads: {wakeups:?}");
    assert!(
        wakeups.iter().all(|&w| w > 200),
        "a loop served nothing: {wakeups:?}"
    );
}

#[test]
fn ten_thousand_concurrent_connections() {
    let server = ServerProcess::start(&["--max-connections", "10100"]);
    let dir = TempDir::new("c10k");
    let (code, report) = run_against(
        &server.url(),
        &[
            "--run-count",
            "20000",
            "--concurrency",
            "10000",
            "--timeout",
            "60s",
        ],
        &dir,
    );
    let summary = &report["summary"];
    if code == Some(2) {
        panic!("setup error (open-file limit?): {summary}");
    }
    assert_eq!(code, Some(0), "summary: {summary}");
    assert_eq!(summary["connections_opened"], 10000);
    assert_eq!(summary["succeeded"], 20000);
}
