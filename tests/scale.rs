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
    // The loops start right after the server logs its address.
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while threads() < 3 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        threads() >= 3,
        "expected 3 loop threads, the process has {}",
        threads()
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
    // thread spent CPU time on traffic (utime + stime, in clock ticks),
    // where an idle loop only wakes 5 times a second to look for a shutdown
    // and stays at zero ticks.
    let pid = server.child.id();
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name = name.trim();
        if name == "conntest" || name.starts_with("loop-") {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: utime is the 14th field.
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let fields: Vec<u64> = rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect();
            ticks.push(fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0));
        }
    }
    eprintln!("CPU ticks per loop thread: {ticks:?}");
    assert_eq!(ticks.len(), 3, "loop threads: {ticks:?}");
    assert!(
        ticks.iter().all(|&t| t >= 2),
        "a loop served nothing: {ticks:?}"
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
