//! `--runs failed|all` through the real binary: with `failed`, a large
//! passing test's report holds only its summary (with the histogram) and
//! the failing run, its result and its server record; `conntest run` and
//! `conntest report` take it too; an unknown value is a usage error. And
//! the progress line on a terminal (a pseudo-terminal from util-linux's
//! `script`) shows the live round trip and an ETA.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(120);

fn runs(report: &Value, array: &str) -> Vec<Value> {
    let list = match array {
        "results" => &report["results"],
        group => &report[group]["test_runs"],
    };
    list.as_array()
        .unwrap_or_else(|| panic!("{array} is an array"))
        .clone()
}

/// The histogram's counts add up to the round trips of the summary.
fn assert_histogram_covers_round_trips(summary: &Value) {
    let histogram = &summary["histogram"];
    assert_eq!(histogram["unit"], "ns", "{summary}");
    let total: u64 = histogram["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(u)
        .sum();
    assert_eq!(total, u(&summary["client_duration_ns"]["count"]));
    let bounds: Vec<u64> = histogram["bounds"]
        .as_array()
        .expect("bounds")
        .iter()
        .map(u)
        .collect();
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
}

#[test]
fn a_large_test_with_runs_failed_reports_only_its_failing_run_and_the_summary() {
    const RUN_COUNT: u64 = 50_000;
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("runs-failed");
    let id = create_group(
        server.addr,
        &format!(r#"{{"run_count": {RUN_COUNT}, "concurrency": 10}}"#),
    );
    let running = Running::spawn(&mut conntest_cmd(
        &dir.0,
        &[
            "client",
            "-r",
            &server.url(),
            "-g",
            &id,
            "--runs",
            "failed",
            "-f",
            "report.json",
        ],
    ));
    // Once the test is under way, the server records the last run with a
    // body the client will not send: that run is corrupted.
    let until = Instant::now() + Duration::from_secs(30);
    while runs_of(&get_group(server.addr, &id)).is_empty() {
        assert!(Instant::now() < until, "the test never got under way");
        std::thread::sleep(Duration::from_millis(10));
    }
    let posted = request(server.addr, "POST", &run_path(&id, RUN_COUNT), b"wrong");
    assert_eq!(posted.status, 200);
    let done = running.finish(LIMIT);
    assert_eq!(done.code, Some(1), "stderr: {}", done.stderr);

    let size = std::fs::metadata(dir.path("report.json")).unwrap().len();
    assert!(size < 16 * 1024, "a few kilobytes, not {size} bytes");
    let report = read_json(&dir.path("report.json"));
    let summary = &report["summary"];
    assert_eq!(u(&summary["runs"]), RUN_COUNT, "{summary}");
    assert_eq!(u(&summary["succeeded"]), RUN_COUNT - 1, "{summary}");
    assert_eq!(u(&summary["failed"]), 1, "{summary}");
    assert_eq!(u(&summary["client_duration_ns"]["count"]), RUN_COUNT);
    assert_histogram_covers_round_trips(summary);

    let client = runs(&report, "client_run_group");
    assert_eq!(client.len(), 1, "only the failing run: {client:?}");
    assert_eq!(u(&client[0]["run_count"]), RUN_COUNT);
    let results = runs(&report, "results");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(u(&results[0]["run_count"]), RUN_COUNT);
    let error = results[0]["error"].as_str().expect("the result's error");
    assert!(error.contains("corrupted"), "{error}");
    let server_runs = runs(&report, "server_run_group");
    assert!(
        !server_runs.is_empty() && server_runs.iter().all(|r| u(&r["run_count"]) == RUN_COUNT),
        "only the failing run's server record: {server_runs:?}"
    );
    assert_eq!(
        results[0]["run_id"], server_runs[0]["run_id"],
        "the result names the server record listed"
    );
    assert_eq!(report["server_run_group"]["run_group_id"], id.as_str());
}

#[test]
fn run_lists_every_run_by_default_and_none_of_a_passing_test_with_runs_failed() {
    let dir = TempDir::new("runs-run");
    for (extra, listed) in [
        (&[][..], 200),
        (&["--runs", "all"][..], 200),
        (&["--runs", "failed"][..], 0),
    ] {
        let mut args = vec!["run", "--run-count", "200", "--concurrency", "4", "-q"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-f", "report.json"]);
        let done = run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT);
        assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
        let report = read_json(&dir.path("report.json"));
        for array in ["client_run_group", "server_run_group", "results"] {
            assert_eq!(runs(&report, array).len(), listed, "{args:?}: {array}");
        }
        assert_eq!(u(&report["summary"]["succeeded"]), 200);
        assert_histogram_covers_round_trips(&report["summary"]);
    }
}

#[test]
fn report_with_runs_failed_lists_the_counts_no_shard_sent() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("runs-report");
    let id = create_group(server.addr, r#"{"run_count": 10, "concurrency": 2}"#);
    let url = server.url();
    let shard = run_bounded(
        &mut conntest_cmd(
            &dir.0,
            &["client", "-r", &url, "-g", &id, "--shard", "0/2", "-q"],
        ),
        LIMIT,
    );
    assert_eq!(shard.code, Some(0), "{}", shard.stderr);
    let done = run_bounded(
        &mut conntest_cmd(
            &dir.0,
            &[
                "report",
                "-r",
                &url,
                "-g",
                &id,
                "--runs",
                "failed",
                "-q",
                "-f",
                "group.json",
            ],
        ),
        LIMIT,
    );
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let report = read_json(&dir.path("group.json"));
    assert_eq!(u(&report["summary"]["succeeded"]), 5);
    assert!(runs(&report, "client_run_group").is_empty());
    assert!(runs(&report, "server_run_group").is_empty());
    let missing: Vec<u64> = runs(&report, "results")
        .iter()
        .map(|r| u(&r["run_count"]))
        .collect();
    assert_eq!(missing, [2, 4, 6, 8, 10], "shard 1's counts");
    assert_histogram_covers_round_trips(&report["summary"]);
}

#[test]
fn an_unknown_runs_value_is_a_one_line_usage_error() {
    let dir = TempDir::new("runs-usage");
    let group = "5e0c1f00-0000-4000-8000-00000000beef";
    for command in ["client", "run", "report"] {
        let mut args = vec![command];
        if command != "run" {
            args.extend_from_slice(&["-r", "http://127.0.0.1:9", "-g", group]);
        }
        args.extend_from_slice(&["--runs", "some", "-f", "r.json"]);
        let done = run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT);
        assert_one_line_usage_error(&done, &["--runs", "'some'", "expected failed or all"]);
        assert!(!dir.path("r.json").exists(), "no report");
    }
}

#[test]
fn on_a_terminal_the_progress_line_shows_the_live_round_trip_and_an_eta() {
    let dir = TempDir::new("runs-progress");
    // 40 runs paced 10 ms apart: at least 400 ms, so several lines.
    let lines = progress_lines_of_run(&dir.0, "--run-count 40 --client-delay-ns 10000000", LIMIT);
    for line in &lines {
        assert!(line.contains("/40 runs, "), "{line:?}");
    }
    assert!(
        lines.iter().any(|l| l.contains(", round trip p50 ")
            && l.contains(" p99 ")
            && l.contains(", ETA ")),
        "the live round trip and an ETA: {lines:?}"
    );
}
