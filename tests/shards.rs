//! Sharded clients through the real binary: `conntest client --shard I/N`
//! processes against one `conntest server` (memory store), each verifying
//! its own runs and uploading its record, then `conntest report` building
//! the whole group's report from the server alone.

mod common;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(30);

/// `conntest ARGS` in `cwd` with `env` set, bounded, not timed out.
fn conntest_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let done = run_bounded(&mut command(cwd, args, env), LIMIT);
    assert!(
        !done.timed_out,
        "conntest {args:?} timed out: {}",
        done.stderr
    );
    done
}

/// The command, free of the shard variables of the caller's environment.
fn command(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = conntest_cmd(cwd, args);
    cmd.env_remove("JOB_COMPLETION_INDEX")
        .env_remove("CONNTEST_SHARDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A shard's extra arguments and environment.
type ShardCommand<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Runs the shards given at once, as an Indexed Job's pods would; their
/// results in that order.
fn run_shards(dir: &TempDir, url: &str, id: &str, shards: &[ShardCommand<'_>]) -> Vec<Finished> {
    let running: Vec<Running> = shards
        .iter()
        .map(|(extra, env)| {
            let mut args = vec!["client", "-r", url, "-g", id, "-q"];
            args.extend_from_slice(extra);
            Running::spawn(&mut command(&dir.0, &args, env))
        })
        .collect();
    running.into_iter().map(|r| r.finish(LIMIT)).collect()
}

/// `conntest report -r URL -g ID -f FILE`; its result and the report.
fn report(dir: &TempDir, url: &str, id: &str) -> (Finished, Value) {
    let done = conntest_env(
        &dir.0,
        &["report", "-r", url, "-g", id, "-f", "group.json"],
        &[],
    );
    let path = dir.path("group.json");
    let json = if path.exists() {
        read_json(&path)
    } else {
        Value::Null
    };
    (done, json)
}

/// A server, a group of `config` and the shards named (`I/N` each) run on
/// it at once, each passing.
struct Sharded {
    server: ServerProcess,
    dir: TempDir,
    url: String,
    id: String,
}

fn run_passing_shards(tag: &str, config: &str, shards: &[&str]) -> Sharded {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new(tag);
    let url = server.url();
    let id = create_group(server.addr, config);
    let args: Vec<[&str; 2]> = shards.iter().map(|s| ["--shard", s]).collect();
    let commands: Vec<ShardCommand<'_>> = args.iter().map(|a| (&a[..], &[][..])).collect();
    let done = run_shards(&dir, &url, &id, &commands);
    assert!(done.iter().all(|d| d.code == Some(0)), "{done:?}");
    Sharded {
        server,
        dir,
        url,
        id,
    }
}

/// Asserts that `done` said `needle` on stderr.
fn said(done: &Finished, needle: &str) {
    assert!(
        done.stderr.contains(needle),
        "{needle:?} not in: {}",
        done.stderr
    );
}

fn status(addr: SocketAddr, id: &str) -> Value {
    let reply = request(addr, "GET", &format!("/test-groups/{id}/status"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[test]
fn three_shards_and_the_report_pass_with_zero_discrepancies() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("shards-pass");
    let url = server.url();
    let id = create_group(
        server.addr,
        r#"{"run_count": 31, "concurrency": 4, "description": "three shards"}"#,
    );
    // The three ways of naming a shard: I/N, I and N, an Indexed Job's
    // index with CONNTEST_SHARDS.
    let done = run_shards(
        &dir,
        &url,
        &id,
        &[
            (&["--shard", "0/3", "-f", "shard0.json"], &[]),
            (&["--shard", "1", "--shards", "3", "-f", "shard1.json"], &[]),
            (
                &["-f", "shard2.json"],
                &[("JOB_COMPLETION_INDEX", "2"), ("CONNTEST_SHARDS", "3")],
            ),
        ],
    );
    for (i, d) in done.iter().enumerate() {
        assert_eq!(d.code, Some(0), "shard {i}: {}", d.stderr);
    }
    // Each shard's own report: its runs only, verified against the
    // server's record of them, the other shards' runs not its business.
    for i in 0..3u64 {
        let own = read_json(&dir.path(&format!("shard{i}.json")));
        let expected: Vec<u64> = (1..=31).filter(|n| (n - 1) % 3 == i).collect();
        assert_eq!(counts(&own["client_run_group"]["test_runs"]), expected);
        assert_eq!(counts(&own["results"]), expected);
        let summary = &own["summary"];
        assert_eq!(summary["shard"], format!("{i}/3"));
        let share = expected.len() as u64;
        assert_eq!(tally(summary), (share, share, 0));
        assert_eq!(summary["passed"], true);
        assert!(summary["discrepancies"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| u(n) == 0));
    }
    let shards = status(server.addr, &id)["shards"].clone();
    assert_eq!(
        shards
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (u(&s["shard"]), u(&s["runs"]), s["complete"] == true))
            .collect::<Vec<_>>(),
        [(0, 11, true), (1, 10, true), (2, 10, true)]
    );

    let (done, group) = report(&dir, &url, &id);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stderr.ends_with("PASS\n"), "{}", done.stderr);
    let summary = &group["summary"];
    assert_eq!(tally(summary), (31, 31, 0));
    assert!(summary["discrepancies"]
        .as_object()
        .unwrap()
        .values()
        .all(|n| u(n) == 0));
    assert_eq!(summary["shards"]["complete"], serde_json::json!([0, 1, 2]));
    let all: Vec<u64> = (1..=31).collect();
    assert_eq!(counts(&group["client_run_group"]["test_runs"]), all);
    assert_eq!(counts(&group["results"]), all);
    assert_eq!(
        group["server_run_group"]["test_runs"]
            .as_array()
            .unwrap()
            .len(),
        31
    );
    // Every run's body (a UUID each) as its shard sent it: equal to the
    // server's record of that count, as the shard's own report had it.
    let server_data: std::collections::BTreeMap<u64, String> = group["server_run_group"]
        ["test_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (u(&r["run_count"]), r["data"].as_str().unwrap().to_owned()))
        .collect();
    let shard1 = read_json(&dir.path("shard1.json"));
    for run in group["client_run_group"]["test_runs"].as_array().unwrap() {
        let n = u(&run["run_count"]);
        assert_eq!(run["data"].as_str().unwrap(), server_data[&n]);
        assert!(run["client_duration_ns"].as_u64().is_some());
        if (n - 1) % 3 == 1 {
            let own = shard1["client_run_group"]["test_runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| u(&r["run_count"]) == n)
                .unwrap();
            for field in ["time", "client_start", "client_end", "data"] {
                assert_eq!(run[field], own[field], "run {n}: {field}");
            }
        }
    }
    assert!(u(&summary["client_duration_ns"]["count"]) == 31);
}

#[test]
fn a_shard_never_run_makes_the_report_fail_naming_the_missing_counts() {
    let Sharded {
        server,
        dir,
        url,
        id,
    } = run_passing_shards(
        "shards-missing",
        r#"{"run_count": 9, "concurrency": 3}"#,
        &["0/3", "2/3"],
    );
    let listed: Vec<u64> = status(server.addr, &id)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["shard"]))
        .collect();
    assert_eq!(listed, [0, 2]);
    let (done, group) = report(&dir, &url, &id);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    said(&done, "shards never reported: 1 (of 3)");
    said(&done, "runs no shard sent: 2, 5, 8\n");
    assert!(done.stderr.ends_with("FAIL\n"), "{}", done.stderr);
    let summary = &group["summary"];
    assert_eq!(summary["passed"], false);
    assert_eq!(tally(summary), (9, 6, 3));
    assert_eq!(u(&summary["discrepancies"]["missing"]), 3);
    assert_eq!(summary["shards"]["absent"], serde_json::json!([1]));
    let missing: Vec<(u64, String)> = group["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["error"].is_string())
        .map(|r| (u(&r["run_count"]), r["error"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        missing,
        [2, 5, 8].map(|n| (n, format!("missing: no shard sent run {n}")))
    );
}

#[test]
fn the_same_shard_run_twice_makes_its_counts_duplicated() {
    let sharded = run_passing_shards(
        "shards-twice",
        r#"{"run_count": 6, "concurrency": 2}"#,
        &["0/2", "1/2"],
    );
    let (dir, url, id) = (&sharded.dir, &sharded.url, &sharded.id);
    // Shard 1 again (a pod restarted): warned, and its own report sees
    // its counts recorded twice.
    let again = conntest_env(
        &dir.0,
        &[
            "client",
            "-r",
            url,
            "-g",
            id,
            "--shard",
            "1/2",
            "-f",
            "again.json",
        ],
        &[],
    );
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    said(&again, "shard 1/2 already uploaded a record of 3 runs");
    let own = read_json(&dir.path("again.json"));
    assert_eq!(u(&own["summary"]["discrepancies"]["duplicated"]), 3);

    let (done, group) = report(dir, url, id);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let summary = &group["summary"];
    assert_eq!(tally(summary), (6, 3, 3));
    assert_eq!(u(&summary["discrepancies"]["duplicated"]), 3);
    assert_eq!(u(&summary["discrepancies"]["missing"]), 0);
    let duplicated: Vec<u64> = group["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("duplicated: recorded 2 times"))
        })
        .map(|r| u(&r["run_count"]))
        .collect();
    assert_eq!(duplicated, [2, 4, 6]);
}

#[test]
fn a_large_record_is_uploaded_in_pages() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("shards-pages");
    let url = server.url();
    // 40 runs of 30 000 bytes: about 1.2 MB of record, three pages.
    let id = create_group(server.addr, r#"{"run_count": 40, "concurrency": 2}"#);
    std::fs::write(dir.path("body"), "b".repeat(30_000)).unwrap();
    let done = conntest_env(
        &dir.0,
        &[
            "client", "-r", &url, "-g", &id, "--shard", "0/1", "-d", "@body", "-q",
        ],
        &[],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let (done, group) = report(&dir, &url, &id);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(u(&group["summary"]["succeeded"]), 40);
    let runs = group["client_run_group"]["test_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 40);
    assert!(runs
        .iter()
        .all(|r| r["data"].as_str().unwrap().len() == 30_000));
}

#[test]
fn shard_and_report_usage_errors_are_one_line_with_exit_2() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("shards-usage");
    let url = server.url();
    let id = create_group(server.addr, r#"{"run_count": 3}"#);
    let client = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["client", "-r", url.as_str(), "-g", id.as_str()];
        args.extend_from_slice(extra);
        conntest_env(&dir.0, &args, env)
    };
    for (extra, env, needles) in [
        (
            &["--shard", "3/3"][..],
            &[][..],
            &["--shard: shard 3 of 3 does not exist"][..],
        ),
        (&["--shard", "0/0"], &[], &["--shard", "at least 1"]),
        (
            &["--shard", "1/x"],
            &[],
            &["--shard: '1/x' is not a whole number"],
        ),
        (&["--shard", "1"], &[], &["number of shards is missing"]),
        (&["--shard", "1/3", "--shards", "2"], &[], &["disagree"]),
        (
            &["--shard", "0/4"],
            &[],
            &["4 shards for a group of 3 runs"],
        ),
        (
            &[],
            &[("CONNTEST_SHARDS", "3")],
            &["CONNTEST_SHARDS 3", "JOB_COMPLETION_INDEX"],
        ),
        (
            &[],
            &[("CONNTEST_SHARDS", "3"), ("JOB_COMPLETION_INDEX", "5")],
            &["JOB_COMPLETION_INDEX: shard 5 of 3 does not exist"],
        ),
    ] {
        assert_one_line_usage_error(&client(extra, env), needles);
    }
    // Nothing was sent by the refused shards.
    assert_eq!(u(&status(server.addr, &id)["recorded_runs"]), 0);

    let unknown = "6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c";
    let report_args = |id: &'static str| ["report", "-r", "URL", "-g", id, "-f", "r.json"];
    let mut args = report_args(unknown);
    args[2] = &url;
    assert_one_line_usage_error(&conntest_env(&dir.0, &args, &[]), &["no test group"]);
    let mut args = report_args("nope");
    args[2] = &url;
    assert_one_line_usage_error(&conntest_env(&dir.0, &args, &[]), &["-g", "not a UUID"]);
    assert_one_line_usage_error(
        &conntest_env(&dir.0, &["report", "-g", unknown], &[]),
        &["-r URL is required"],
    );
    assert!(!dir.path("r.json").exists());
    let help = conntest_env(&dir.0, &["report", "--help"], &[]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("missing"), "{}", help.stdout);
}
