//! What applies to HTTP groups applies to raw TCP and UDP groups (issue
//! 12), through the real binary and real peers on loopback: sharded
//! clients and `conntest report` (the harm a faulty relay did named run by
//! run and by direction in the whole group's report, as one client's
//! names it), replicas sharing one Redis, `--runs failed` and `conntest
//! plot`, the progress line on a terminal, and the early stop when the
//! server is gone (TCP: connection refused; UDP: ICMP port unreachable).

mod common;

use common::cluster::{wait_status, RedisProcess};
use common::l4::{create_l4, harmed, l4_addr, l4_server, udp_harm};
use common::relay::Relay;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(60);

/// `conntest ARGS` in `dir`, bounded; its result.
fn conntest(dir: &TempDir, args: &[&str]) -> Finished {
    let done = run_bounded(
        conntest_cmd(&dir.0, args)
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("CONNTEST_SHARDS"),
        LIMIT,
    );
    assert!(
        !done.timed_out,
        "conntest {args:?} timed out: {}",
        done.stderr
    );
    done
}

/// The report a command wrote to `file` in `dir` (Null when none).
fn report_in(dir: &TempDir, file: &str) -> Value {
    let path = dir.path(file);
    if path.exists() {
        read_json(&path)
    } else {
        Value::Null
    }
}

/// `conntest client -r URL -g ID -q -f FILE EXTRA...`; its result and report.
fn client(dir: &TempDir, url: &str, id: &str, file: &str, extra: &[&str]) -> (Finished, Value) {
    let mut args = vec!["client", "-r", url, "-g", id, "-q", "-f", file];
    args.extend_from_slice(extra);
    let done = conntest(dir, &args);
    (done, report_in(dir, file))
}

/// `conntest report -r URL -g ID -f group.json`; its result and report.
fn group_report(dir: &TempDir, url: &str, id: &str) -> (Finished, Value) {
    let done = conntest(dir, &["report", "-r", url, "-g", id, "-f", "group.json"]);
    (done, report_in(dir, "group.json"))
}

/// Runs shards at once, each `client -r URL -g ID -q --shard I/N -f
/// shardI.json EXTRA...`; their results in order.
fn run_shards(dir: &TempDir, shards: &[(&str, &str)], id: &str, n: u64) -> Vec<Finished> {
    let running: Vec<Running> = shards
        .iter()
        .map(|(url, index)| {
            let shard = format!("{index}/{n}");
            let file = format!("shard{index}.json");
            let args = [
                "client", "-r", url, "-g", id, "-q", "--shard", &shard, "-f", &file,
            ];
            Running::spawn(
                conntest_cmd(&dir.0, &args)
                    .env_remove("JOB_COMPLETION_INDEX")
                    .env_remove("CONNTEST_SHARDS"),
            )
        })
        .collect();
    running.into_iter().map(|r| r.finish(LIMIT)).collect()
}

/// Every discrepancy kind of a raw test is listed, each zero.
fn assert_no_discrepancy(summary: &Value) {
    let kinds = summary["discrepancies"].as_object().expect("discrepancies");
    for kind in [
        "missing",
        "lost_to_server",
        "lost_from_server",
        "reordered_echo",
    ] {
        assert!(kinds.contains_key(kind), "{kind} listed: {summary}");
    }
    assert!(kinds.values().all(|n| u(n) == 0), "{summary}");
}

#[test]
fn sharded_udp_and_tcp_groups_make_one_report_with_zero_discrepancies() {
    let server = l4_server(&[]);
    let url = server.url();
    for (protocol, reuse) in [("udp", false), ("tcp", false), ("tcp", true)] {
        let dir = TempDir::new("l4-shards");
        let config = format!(
            r#"{{"run_count": 31, "concurrency": 4, "protocol": "{protocol}", "tcp_reuse": {reuse}}}"#
        );
        let (id, _) = create_l4(server.addr, &config, protocol);
        let shards = [(url.as_str(), "0"), (&url, "1"), (&url, "2")];
        for (i, done) in run_shards(&dir, &shards, &id, 3).iter().enumerate() {
            assert_eq!(done.code, Some(0), "{protocol} shard {i}: {}", done.stderr);
            let own = report_in(&dir, &format!("shard{i}.json"));
            let share = (1..=31u64).filter(|n| (n - 1) % 3 == i as u64).count() as u64;
            assert_eq!(tally(&own["summary"]), (share, share, 0), "{protocol}");
            assert_eq!(u(&own["summary"]["l4"]["reached_server"]), share);
            if reuse {
                // Concurrency 4 split 2, 1, 1: a connection per slot.
                let slots = if i == 0 { 2 } else { 1 };
                let opened = u(&own["summary"]["connections_opened"]);
                assert!((1..=slots).contains(&opened), "shard {i}: {opened}");
            }
        }
        let (done, group) = group_report(&dir, &url, &id);
        assert_eq!(done.code, Some(0), "{protocol}: {}", done.stderr);
        assert!(done.stderr.ends_with("PASS\n"), "{}", done.stderr);
        let summary = &group["summary"];
        assert_eq!(tally(summary), (31, 31, 0), "{protocol}: {summary}");
        assert_no_discrepancy(summary);
        let l4 = &summary["l4"];
        assert_eq!(l4["protocol"], protocol, "{summary}");
        assert_eq!((u(&l4["sent"]), u(&l4["reached_server"])), (31, 31));
        assert_eq!(summary["shards"]["complete"], serde_json::json!([0, 1, 2]));
        let all: Vec<u64> = (1..=31).collect();
        assert_eq!(counts(&group["client_run_group"]["test_runs"]), all);
        for run in group["client_run_group"]["test_runs"].as_array().unwrap() {
            // Each round trip as its shard measured it (never 0: the echo
            // is read after the message left).
            assert!(u(&run["client_duration_ns"]) > 0, "{run}");
            if protocol == "tcp" && !reuse {
                assert!(
                    u(&run["connect_ns"]) > 0,
                    "a fresh connection per run: {run}"
                );
            }
        }
        let opened = u(&summary["connections_opened"]);
        match (protocol, reuse) {
            ("tcp", false) => assert_eq!(opened, 31),
            ("tcp", true) => assert!((3..=4).contains(&opened), "{opened}"),
            _ => assert_eq!(opened, 0),
        }
    }

    // A shard never run: its runs are missing, named on stderr.
    let dir = TempDir::new("l4-shards-missing");
    let (id, _) = create_l4(
        server.addr,
        r#"{"run_count": 9, "concurrency": 3, "protocol": "udp"}"#,
        "udp",
    );
    let done = run_shards(&dir, &[(&url, "0"), (&url, "2")], &id, 3);
    assert!(done.iter().all(|d| d.code == Some(0)), "{done:?}");
    let (done, group) = group_report(&dir, &url, &id);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    for needle in [
        "shards never reported: 1 (of 3)",
        "runs no shard sent: 2, 5, 8\n",
    ] {
        assert!(done.stderr.contains(needle), "{needle:?}: {}", done.stderr);
    }
    let summary = &group["summary"];
    assert_eq!(tally(summary), (9, 6, 3));
    assert_eq!(u(&summary["discrepancies"]["missing"]), 3);
    assert_eq!(
        u(&summary["l4"]["lost_to_server"]),
        0,
        "never sent, not lost"
    );
    let expected: BTreeMap<u64, Vec<String>> =
        [2, 5, 8].map(|n| (n, vec!["missing".to_owned()])).into();
    assert_eq!(harmed(&group), expected);
}

/// A UDP group of 40 runs at `concurrency`, and a relay in front of its
/// port doing [`udp_harm`]'s harm; the runs harmed.
fn harmed_udp_group(
    server: &ServerProcess,
    concurrency: u32,
) -> (String, Relay, BTreeMap<u64, Vec<String>>) {
    let config = format!(r#"{{"run_count": 40, "concurrency": {concurrency}, "protocol": "udp"}}"#);
    let (id, udp) = create_l4(server.addr, &config, "udp");
    let (faults, expected) = udp_harm();
    (id, Relay::udp(udp, faults), expected)
}

/// The summary's raw figures of one of each harm in each direction.
fn assert_one_of_each(l4: &Value) {
    for field in [
        "lost_to_server",
        "lost_from_server",
        "duplicated_to_server",
        "duplicated_from_server",
        "corrupted_to_server",
        "corrupted_from_server",
        "reordered_to_server",
        "reordered_from_server",
        "max_reorder_extent_to_server",
    ] {
        assert_eq!(u(&l4[field]), 1, "{field}: {l4}");
    }
    assert_eq!(l4["loss_to_server_percent"], 2.5, "{l4}");
}

#[test]
fn a_sharded_udp_test_through_a_faulty_relay_names_each_harm_in_the_group_report() {
    let server = l4_server(&[]);
    let url = server.url();
    let dir = TempDir::new("l4-shards-harm");
    // Three runs in flight per shard, so a datagram the relay holds back
    // is sent on by the shard's next one even while another run waits out
    // its timeout (a dropped echo).
    let (id, relay, expected) = harmed_udp_group(&server, 9);
    let target = relay.addr.to_string();
    // One after the other: the relay sends echoes back to the last sender.
    for i in 0..3 {
        let shard = format!("{i}/3");
        let file = format!("shard{i}.json");
        let args = ["--shard", &shard, "--l4-addr", &target, "--timeout", "1s"];
        let (done, own) = client(&dir, &url, &id, &file, &args);
        assert_eq!(done.code, Some(1), "shard {i}: {}", done.stderr);
        let mine: BTreeMap<u64, Vec<String>> = expected
            .iter()
            .filter(|(n, _)| (*n - 1) % 3 == i)
            .map(|(n, k)| (*n, k.clone()))
            .collect();
        assert_eq!(harmed(&own), mine, "shard {i}: {}", own["summary"]);
    }
    drop(relay);
    let (done, group) = group_report(&dir, &url, &id);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stderr.ends_with("FAIL\n"), "{}", done.stderr);
    assert_eq!(harmed(&group), expected, "{}", group["summary"]);
    let summary = &group["summary"];
    assert_eq!(tally(summary), (40, 32, 8));
    assert_one_of_each(&summary["l4"]);
}

/// `conntest server --store URL` taking raw runs, once it is ready.
fn replica(redis: &RedisProcess) -> ServerProcess {
    let server = l4_server(&["--store", &redis.url()]);
    assert!(
        wait_status(server.addr, "/readyz", 200, Duration::from_secs(10)),
        "/readyz never answered 200"
    );
    server
}

/// The raw port of `protocol` a replica took, from its start lines.
fn logged_port(server: &ServerProcess, protocol: &str) -> u16 {
    let needle = format!("taking raw {protocol} runs on port ");
    let log = server.log_text();
    log.lines()
        .find_map(|l| l.split(&needle).nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{needle:?} not in: {log}"))
}

#[test]
fn raw_groups_on_redis_replicas_pass_wherever_their_runs_land() {
    let redis = RedisProcess::start();
    let a = replica(&redis);
    let b = replica(&redis);
    let dir = TempDir::new("l4-redis");
    for protocol in ["udp", "tcp"] {
        let config = format!(r#"{{"run_count": 200, "concurrency": 8, "protocol": "{protocol}"}}"#);
        // A group passes on one replica, its record read from the other.
        let (id, on_a) = create_l4(a.addr, &config, protocol);
        assert_eq!(on_a.port(), logged_port(&a, protocol), "A's own port");
        let (done, report) = client(&dir, &a.url(), &id, "a.json", &[]);
        assert_eq!(done.code, Some(0), "{protocol}: {}", done.stderr);
        assert_no_discrepancy(&report["summary"]);
        assert_eq!(
            get_group(b.addr, &id)["test_runs"]
                .as_array()
                .unwrap()
                .len(),
            200
        );

        // A group made on A, its raw runs sent to B's port: B records them
        // in the shared store and A's record is complete.
        let (id, _) = create_l4(a.addr, &config, protocol);
        let seen_from_b = l4_addr(&get_group(b.addr, &id), protocol);
        assert_eq!(
            seen_from_b.port(),
            logged_port(&b, protocol),
            "B's own port"
        );
        assert_ne!(seen_from_b, on_a);
        let target = seen_from_b.to_string();
        let (done, report) = client(&dir, &a.url(), &id, "b.json", &["--l4-addr", &target]);
        assert_eq!(done.code, Some(0), "{protocol}: {}", done.stderr);
        assert_eq!(tally(&report["summary"]), (200, 200, 0));
        let record = get_group(a.addr, &id);
        let mut recorded = counts(&record["test_runs"]);
        recorded.sort_unstable();
        assert_eq!(recorded, (1..=200).collect::<Vec<u64>>(), "{protocol}");
        let status = request(a.addr, "GET", &format!("/test-groups/{id}/status"), b"").json();
        assert_eq!(u(&status["runs_in_progress"]), 0, "{status}");
    }
    // Two shards, each through its own replica's ports; the report from
    // either replica holds the whole group.
    let shard_dir = TempDir::new("l4-redis-shards");
    let (id, _) = create_l4(
        b.addr,
        r#"{"run_count": 50, "concurrency": 4, "protocol": "udp"}"#,
        "udp",
    );
    let (url_a, url_b) = (a.url(), b.url());
    let done = run_shards(&shard_dir, &[(&url_a, "0"), (&url_b, "1")], &id, 2);
    assert!(done.iter().all(|d| d.code == Some(0)), "{done:?}");
    let (done, group) = group_report(&shard_dir, &url_a, &id);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(tally(&group["summary"]), (50, 50, 0));
    assert_no_discrepancy(&group["summary"]);
}

/// What tests/peers/plot_parse.py found in a plot.
fn parsed_plot(path: &std::path::Path) -> Value {
    let script = peer_script("plot_parse.py");
    let done = run_python_ok(&[&script, path.to_str().unwrap()], LIMIT, "plot_parse");
    serde_json::from_str(&done.stdout).expect("plot_parse prints JSON")
}

#[test]
fn runs_failed_lists_only_the_harmed_raw_runs_and_the_report_plots() {
    let server = l4_server(&[]);
    let dir = TempDir::new("l4-failed");
    let (id, relay, expected) = harmed_udp_group(&server, 4);
    let target = relay.addr.to_string();
    let args = ["--l4-addr", &target, "--timeout", "1s", "--runs", "failed"];
    let (done, report) = client(&dir, &server.url(), &id, "report.json", &args);
    drop(relay);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(harmed(&report), expected);
    let listed: Vec<u64> = expected.keys().copied().collect();
    assert_eq!(counts(&report["client_run_group"]["test_runs"]), listed);
    assert_eq!(counts(&report["results"]), listed);
    // The server records compared with the harmed runs: every one the
    // server holds but run 5's, which never reached it.
    let server_runs: BTreeSet<u64> = counts(&report["server_run_group"]["test_runs"])
        .into_iter()
        .collect();
    let reached: BTreeSet<u64> = listed.iter().copied().filter(|&n| n != 5).collect();
    assert_eq!(server_runs, reached);
    // The summary covers every run.
    let summary = &report["summary"];
    assert_eq!(tally(summary), (40, 32, 8));
    assert_one_of_each(&summary["l4"]);
    let histogram: u64 = summary["histogram"]["counts"]
        .as_array()
        .expect("histogram")
        .iter()
        .map(u)
        .sum();
    assert_eq!(histogram, u(&summary["client_duration_ns"]["count"]));
    assert!(histogram >= 32, "{summary}");

    for out in ["report.html", "report.svg"] {
        let path = dir.path(out);
        let done = conntest(&dir, &["plot", "report.json", "-o", path.to_str().unwrap()]);
        assert_eq!(done.code, Some(0), "plot: {}", done.stderr);
        let found = parsed_plot(&path);
        assert_eq!(found["charts"].as_array().map(Vec::len), Some(5), "{found}");
    }
    // The page's summary table holds the raw figures.
    let page = std::fs::read_to_string(dir.path("report.html")).unwrap();
    assert!(page.contains("<td>l4</td>"), "the l4 row");
    assert!(page.contains("lost_to_server 1"), "the l4 figures");
}

#[test]
fn a_progress_line_shows_on_a_terminal_for_raw_runs() {
    let dir = TempDir::new("l4-progress");
    for protocol in ["udp", "tcp"] {
        let args = format!("--protocol {protocol} --run-count 40 --client-delay-ns 10000000");
        let lines = progress_lines_of_run(&dir.0, &args, LIMIT);
        assert!(lines.iter().all(|l| l.contains("/40 runs, ")), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(", round trip p50 ") && l.contains(", ETA ")),
            "{protocol}: the live round trip and an ETA: {lines:?}"
        );
    }
}

/// Waits until the server holds at least `n` runs of the group.
fn wait_recorded(addr: SocketAddr, id: &str, n: u64) {
    let until = Instant::now() + LIMIT;
    let route = format!("/test-groups/{id}/status");
    while Instant::now() < until {
        if u(&request(addr, "GET", &route, b"").json()["recorded_runs"]) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server never recorded {n} runs of {id}");
}

#[test]
fn a_raw_test_stops_early_once_its_server_is_gone() {
    for protocol in ["udp", "tcp"] {
        let server = l4_server(&[]);
        let dir = TempDir::new("l4-gone");
        // A long test at 1 000 runs a second.
        let config = format!(
            r#"{{"run_count": 1000000, "concurrency": 4, "client_delay_ns": 1000000, "protocol": "{protocol}"}}"#
        );
        let (id, _) = create_l4(server.addr, &config, protocol);
        let url = server.url();
        let args = [
            "client",
            "-r",
            &url,
            "-g",
            &id,
            "-f",
            "report.json",
            "--timeout",
            "10s",
        ];
        let client = Running::spawn(&mut conntest_cmd(&dir.0, &args));
        wait_recorded(server.addr, &id, 50);
        drop(server);
        let done = client.finish(LIMIT);
        assert_eq!(done.code, Some(1), "{protocol}: {}", done.stderr);
        assert!(
            done.stderr
                .contains("stopped early: every run was refused for 3 s and none succeeded"),
            "{protocol}: {}",
            done.stderr
        );
        let report = read_json(&dir.path("report.json"));
        let summary = &report["summary"];
        assert!(summary["stopped_early"].as_str().is_some(), "{summary}");
        assert_eq!(summary["passed"], false);
        assert!(u(&summary["not_sent"]) > 0, "{summary}");
        assert!(u(&summary["errors"]["refused"]) > 0, "{summary}");
        let refusal = report["client_run_group"]["test_runs"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find_map(|r| r["error"].as_str().filter(|e| e.starts_with("refused: ")))
            .expect("a refused run");
        let cause = if protocol == "udp" {
            "ICMP port unreachable"
        } else {
            "Connection refused"
        };
        assert!(refusal.contains(cause), "{protocol}: {refusal}");
    }
}

#[test]
fn an_interrupted_raw_test_writes_its_partial_report_and_exits_130() {
    let server = l4_server(&[]);
    let dir = TempDir::new("l4-interrupt");
    let config = r#"{"run_count": 1000000, "concurrency": 4, "client_delay_ns": 1000000, "protocol": "udp"}"#;
    let (id, _) = create_l4(server.addr, config, "udp");
    let url = server.url();
    let args = ["client", "-r", &url, "-g", &id, "-q", "-f", "report.json"];
    let client = Running::spawn(&mut conntest_cmd(&dir.0, &args));
    wait_recorded(server.addr, &id, 50);
    let pid = client.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let done = client.finish(LIMIT);
    assert_eq!(done.code, Some(130), "{}", done.stderr);
    let summary = &read_json(&dir.path("report.json"))["summary"];
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(summary["stopped_early"].is_null(), "{summary}");
    assert!(u(&summary["not_sent"]) > 0, "{summary}");
    // The runs in flight had their grace: every run sent is verified.
    assert_eq!(u(&summary["failed"]), 0, "{summary}");
}
