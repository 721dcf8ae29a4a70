//! Scale-out with real components started by the tests: Debian's
//! redis-server, 3 `conntest server --store redis://...` replicas, and
//! nginx round-robin in front of them (tests/common/cluster.rs). The
//! README's flow, sharded clients and `conntest report`, a replica killed
//! and Redis restarted mid-test, any replica serving any route, and the
//! limitation without a store.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(90);

/// `conntest ARGS` in `cwd`, spawned (killed on drop).
fn spawn(cwd: &Path, args: &[&str]) -> Running {
    Running::spawn(&mut conntest_cmd(cwd, args))
}

/// Waits for a spawned conntest (bounded by [`LIMIT`]) and prints what it
/// said; panics if it had to be killed.
fn finish(running: Running, what: &str) -> Finished {
    let done = running.finish(LIMIT);
    println!(
        "{what}: exit {:?} after {:?}\n{}",
        done.code, done.elapsed, done.stderr
    );
    assert!(!done.timed_out, "{what} did not finish within {LIMIT:?}");
    done
}

/// `curl -sS -d CONFIG URL/test-groups/create`, as the README creates a
/// group; the `run_group_id`.
fn curl_create(url: &str, config: &str) -> String {
    let done = run_bounded(
        Command::new("curl").args([
            "-sS",
            "--max-time",
            "10",
            &format!("{url}/test-groups/create"),
            "-d",
            config,
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(done.code, Some(0), "curl: {}", done.stderr);
    let group: Value = serde_json::from_str(&done.stdout)
        .unwrap_or_else(|e| panic!("create answered no JSON ({e}): {}", done.stdout));
    group["run_group_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_group_id: {group}"))
        .to_owned()
}

/// An upstream endpoint answering every GET 200 "ok".
fn upstream_ok() -> TestListener {
    TestListener::start(|mut stream: TcpStream| {
        while read_head(&mut stream).is_some() {
            if write_http_response(&mut stream, 200, "OK", b"ok", false).is_err() {
                return;
            }
        }
    })
}

/// Asserts a report passed: `passed`, `runs` run counts all succeeded, no
/// error and no discrepancy of any kind.
fn assert_passed(report: &Value, runs: u64) {
    let summary = &report["summary"];
    assert_eq!(summary["passed"], true, "{summary}");
    assert_eq!(u(&summary["runs"]), runs, "{summary}");
    assert_eq!(u(&summary["succeeded"]), runs, "{summary}");
    assert_eq!(u(&summary["failed"]), 0, "{summary}");
    assert_no_discrepancy(summary);
    for (kind, n) in summary["errors"].as_object().expect("errors") {
        assert_eq!(u(n), 0, "errors.{kind}: {summary}");
    }
}

/// Runs `conntest ARGS` (a client or a report, writing the report named
/// by the last argument in `dir`) to exit 0; the report, asserted passed
/// over `runs` runs.
fn passing_report(dir: &TempDir, args: &[&str], runs: u64) -> Value {
    let done = finish(spawn(&dir.0, args), args[0]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = read_json(&dir.path(args[args.len() - 1]));
    assert_passed(&report, runs);
    report
}

fn assert_no_discrepancy(summary: &Value) {
    let discrepancies = summary["discrepancies"].as_object().expect("discrepancies");
    for kind in ["missing", "corrupted", "duplicated", "unexpected"] {
        assert_eq!(
            u(&discrepancies[kind]),
            0,
            "discrepancies.{kind}: {summary}"
        );
    }
}

/// `recorded_runs` of group `id` as replica `addr` reports it.
fn recorded(addr: SocketAddr, id: &str) -> u64 {
    let reply = call(addr, "GET", &format!("/test-groups/{id}/status"), &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    u(&reply.json()["recorded_runs"])
}

/// Polls `recorded` on `addr` every 20 ms until it reaches `at_least` (at
/// most 30 s); the last count seen.
fn wait_recorded(addr: SocketAddr, id: &str, at_least: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen = recorded(addr, id);
    while seen < at_least && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        seen = recorded(addr, id);
    }
    seen
}

/// A run as the client or the server has it: its run count and body.
fn count_and_data(run: &Value) -> (u64, String) {
    let data = run
        .get("data_base64")
        .or_else(|| run.get("data"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("a run without data: {run}"));
    (u(&run["run_count"]), data.to_owned())
}

/// What a test with failures must show when nothing acknowledged was lost:
/// the client's `report` against `server_runs` (the group's record, fetched
/// from a surviving replica by the test itself, not by the client).
///
/// - every run the client saw succeed (status 200, no error) is in the
///   server's record with the same body: nothing acknowledged was lost;
/// - the report's failed results are exactly the runs the client saw fail
///   (same run counts), and `summary.failed` counts them;
/// - no discrepancy at all: no acknowledged run missing, none replayed
///   (duplicated), none corrupted, none unexpected.
///
/// Returns the run counts the client saw fail and those of its runs that
/// failed with `status` (such as 502 or 503).
fn assert_nothing_acknowledged_lost(
    report: &Value,
    server_runs: &[Value],
    status: u16,
) -> (BTreeSet<u64>, usize) {
    let client_runs = report["client_run_group"]["test_runs"]
        .as_array()
        .expect("client test_runs");
    let server: BTreeMap<u64, Vec<String>> =
        server_runs
            .iter()
            .map(count_and_data)
            .fold(BTreeMap::new(), |mut map, (count, data)| {
                map.entry(count).or_insert_with(Vec::new).push(data);
                map
            });
    let mut seen_failed = BTreeSet::new();
    let mut with_status = 0;
    for run in client_runs {
        let (count, data) = count_and_data(run);
        let ok = run.get("error").is_none() && run["status"] == 200;
        if ok {
            let held = server.get(&count).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(
                held,
                [data],
                "run {count} was acknowledged (200) but the server holds {held:?}"
            );
        } else {
            seen_failed.insert(count);
            if run["status"] == status {
                with_status += 1;
            }
        }
    }
    let reported_failed: BTreeSet<u64> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r.get("error").is_some())
        .map(|r| u(&r["run_count"]))
        .collect();
    assert_eq!(
        reported_failed, seen_failed,
        "the report's failures are the runs the client saw fail"
    );
    let summary = &report["summary"];
    assert_eq!(u(&summary["failed"]), seen_failed.len() as u64, "{summary}");
    assert_no_discrepancy(summary);
    (seen_failed, with_status)
}

/// (a) The README's flow through nginx: create with curl, `conntest
/// client -r http://nginx`, zero discrepancies; the runs were recorded by
/// all 3 replicas (each one's own counter), exactly once in all (the
/// counters add up to the run count), and the upstream timings each
/// replica measured are in the one record.
#[test]
fn readme_flow_through_nginx_passes_with_runs_on_every_replica() {
    let cluster = Cluster::start(&[]);
    let upstream = upstream_ok();
    let url = cluster.url();
    let runs = 300;
    let id = curl_create(
        &url,
        &format!(
            r#"{{"description": "through nginx", "run_count": {runs}, "concurrency": 5,
                "client_delay_ns": 100, "server_delay_ns": 0,
                "upstream_endpoint": "http://{}/"}}"#,
            upstream.addr
        ),
    );
    let dir = TempDir::new("scale-readme");
    let report = passing_report(
        &dir,
        &["client", "-r", &url, "-g", &id, "-f", "report.json"],
        runs,
    );

    let per_replica = assert_runs_on_every_replica(&cluster);
    assert_eq!(per_replica.iter().sum::<f64>(), runs as f64);
    let server_runs = runs_of(&report["server_run_group"]);
    assert_eq!(server_runs.len() as u64, runs);
    for run in &server_runs {
        assert_eq!(run["upstream_response_code"], 200, "{run}");
        assert!(run["upstream_response_time_ns"].is_u64(), "{run}");
    }
}

/// The run count of each of a report's results, in order.
fn result_counts(report: &Value) -> Vec<u64> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| u(&r["run_count"]))
        .collect()
}

/// Asserts that each replica recorded runs (its own
/// `conntest_runs_recorded_total`, counted by the process, not the store);
/// the counts.
fn assert_runs_on_every_replica(cluster: &Cluster) -> Vec<f64> {
    let per_replica = cluster.runs_recorded();
    println!("runs recorded per replica: {per_replica:?}");
    assert!(
        per_replica.iter().all(|&n| n > 0.0),
        "every replica recorded runs: {per_replica:?}"
    );
    per_replica
}

/// The arguments `client -r URL -g ID --shard I/3 -f shardI.json -q`.
fn shard_args(url: &str, id: &str, shard: usize) -> Vec<String> {
    [
        "client".to_owned(),
        "-r".to_owned(),
        url.to_owned(),
        "-g".to_owned(),
        id.to_owned(),
        "--shard".to_owned(),
        format!("{shard}/3"),
        "-f".to_owned(),
        format!("shard{shard}.json"),
        "-q".to_owned(),
    ]
    .to_vec()
}

/// Runs the given shards of 3 of group `id` concurrently through `url`;
/// their exit codes.
fn run_shards(dir: &Path, url: &str, id: &str, shards: &[usize]) -> Vec<Option<i32>> {
    let running: Vec<Running> = shards
        .iter()
        .map(|&shard| {
            let args = shard_args(url, id, shard);
            spawn(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    running
        .into_iter()
        .zip(shards)
        .map(|(r, shard)| finish(r, &format!("shard {shard}/3")).code)
        .collect()
}

/// (b) 3 shards through nginx at once, then `conntest report` from the
/// server alone passes with every run count 1..run_count sent exactly
/// once; and the same report over a group where one shard never ran fails
/// with its runs missing, so the pass is not the report's default.
#[test]
fn three_shards_through_nginx_then_report_passes() {
    let cluster = Cluster::start(&[]);
    let url = cluster.url();
    let dir = TempDir::new("scale-shards");
    let runs = 600;
    let id = curl_create(
        &url,
        &format!(r#"{{"run_count": {runs}, "concurrency": 6}}"#),
    );
    assert_eq!(run_shards(&dir.0, &url, &id, &[0, 1, 2]), [Some(0); 3]);
    for shard in 0..3u64 {
        let own = read_json(&dir.path(&format!("shard{shard}.json")));
        assert_eq!(own["summary"]["passed"], true, "shard {shard}");
        let counts = result_counts(&own);
        assert_eq!(counts.len() as u64, runs / 3, "shard {shard}'s own runs");
        assert!(
            counts.iter().all(|n| (n - 1) % 3 == shard),
            "shard {shard} sent only its own run counts: {counts:?}"
        );
    }
    let status = get_json(cluster.nginx.addr, &format!("/test-groups/{id}/status"));
    let shards = status["shards"].as_array().expect("status lists shards");
    assert_eq!(shards.len(), 3, "{status}");
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(u(&shard["shard"]), i as u64, "{status}");
        assert_eq!(u(&shard["shards"]), 3, "{status}");
        assert_eq!(u(&shard["runs"]), runs / 3, "{status}");
        assert_eq!(shard["complete"], true, "{status}");
    }

    let whole = passing_report(
        &dir,
        &["report", "-r", &url, "-g", &id, "-f", "whole.json"],
        runs,
    );
    let counts: BTreeSet<u64> = result_counts(&whole).into_iter().collect();
    assert_eq!(counts, (1..=runs).collect::<BTreeSet<u64>>());
    assert_runs_on_every_replica(&cluster);

    // Shard 2 never runs: its 10 run counts are missing, and the report
    // fails.
    let partial = curl_create(&url, r#"{"run_count": 30, "concurrency": 3}"#);
    assert_eq!(run_shards(&dir.0, &url, &partial, &[0, 1]), [Some(0); 2]);
    let done = finish(
        spawn(
            &dir.0,
            &["report", "-r", &url, "-g", &partial, "-f", "partial.json"],
        ),
        "report of a partial group",
    );
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let summary = &read_json(&dir.path("partial.json"))["summary"];
    assert_eq!(summary["passed"], false, "{summary}");
    assert_eq!(u(&summary["discrepancies"]["missing"]), 10, "{summary}");
}

/// GET `path` on `addr`: the JSON answer (200 asserted).
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let reply = call(addr, "GET", path, &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The group's whole record from replica `addr`, fetched by the test.
fn server_record(addr: SocketAddr, id: &str) -> Vec<Value> {
    runs_of(&get_json(addr, &format!("/test-groups/{id}")))
}

/// A group of `runs` runs at concurrency 6, 1 ms apart, each held
/// `server_delay_ns` by the server (a few seconds in all), and a client on
/// it through nginx writing report.json.
fn paced_client(
    cluster: &Cluster,
    dir: &TempDir,
    runs: u64,
    server_delay_ns: u64,
) -> (String, Running) {
    let url = cluster.url();
    let id = curl_create(
        &url,
        &format!(
            r#"{{"run_count": {runs}, "concurrency": 6, "client_delay_ns": 1000000,
                "server_delay_ns": {server_delay_ns}}}"#
        ),
    );
    let client = spawn(
        &dir.0,
        &[
            "client",
            "-r",
            &url,
            "-g",
            &id,
            "-f",
            "report.json",
            "-q",
            "--timeout",
            "5s",
        ],
    );
    (id, client)
}

/// (c) A replica SIGKILLed while the client runs through nginx loses no
/// acknowledged run: see [`assert_nothing_acknowledged_lost`]. It cannot
/// pass by accident: the killed replica had recorded runs before the kill
/// and held runs in their server delay when killed, the client saw runs
/// fail (nginx answers 502 for those the dead replica held or was sent,
/// `proxy_next_upstream off`), runs kept succeeding after the kill on the
/// survivors, and the record is read from a survivor.
#[test]
fn replica_killed_mid_test_loses_no_acknowledged_run() {
    let mut cluster = Cluster::start(&[]);
    let dir = TempDir::new("scale-kill");
    let runs = 1500;
    // Each replica holds about 2 runs in their 20 ms delay at any time, so
    // the kill cuts runs in flight.
    let (id, client) = paced_client(&cluster, &dir, runs, 20_000_000);
    let survivor = cluster.replicas[1].addr;
    let at_kill = wait_recorded(survivor, &id, runs / 4);
    let victim_recorded = metric(cluster.replicas[0].addr, "conntest_runs_recorded_total");
    assert!(
        at_kill < runs,
        "the test was under way at the kill: {at_kill}"
    );
    assert!(
        victim_recorded > 0.0,
        "the killed replica had recorded runs"
    );
    let _ = cluster.replicas[0].child.kill();
    let _ = cluster.replicas[0].child.wait();

    let done = finish(client, "client");
    assert_eq!(done.code, Some(1), "runs failed: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    let server_runs = server_record(survivor, &id);
    let (failed, bad_gateway) = assert_nothing_acknowledged_lost(&report, &server_runs, 502);
    let succeeded = u(&report["summary"]["succeeded"]);
    println!(
        "recorded at the kill: {at_kill}; succeeded {succeeded}, failed {failed:?} \
         ({bad_gateway} with 502); the server holds {}",
        server_runs.len()
    );
    assert!(
        bad_gateway > 0,
        "runs sent to the dead replica failed with 502"
    );
    assert!(
        succeeded > at_kill,
        "runs succeeded on the survivors after the kill"
    );
    assert_eq!(succeeded + failed.len() as u64, runs);
}

/// (d) Redis stopped mid-test and started again: runs and creates answer
/// 503 naming the store while it is down, `/healthz` stays 200, `/readyz`
/// is 503 until the replicas have reconnected by themselves, then 200; the
/// client saw 503s and lost no acknowledged run (see
/// [`assert_nothing_acknowledged_lost`]). Redis is persistent here (its
/// append-only file fsynced before each reply) as a production one is: a
/// Redis that forgets everything on restart would lose every group.
#[test]
fn redis_restarted_mid_test_gives_503s_recovers_and_loses_no_acknowledged_run() {
    let mut cluster = Cluster::on(RedisProcess::start_persistent(), &[]);
    let dir = TempDir::new("scale-redis");
    let direct = cluster.replicas[0].addr;
    let probe = create_group(direct, r#"{"run_count": 2}"#);
    let runs = 4000;
    let (id, client) = paced_client(&cluster, &dir, runs, 0);
    let at_stop = wait_recorded(direct, &id, runs / 5);
    assert!(at_stop < runs, "the test was under way: {at_stop}");
    let store = cluster.redis.url();
    cluster.redis.stop();

    for replica in &cluster.replicas {
        assert!(
            wait_status(replica.addr, "/readyz", 503, Duration::from_secs(10)),
            "/readyz turns 503 while the store is down"
        );
        let ready = call(replica.addr, "GET", "/readyz", &[], b"");
        assert_error(&ready, 503, "store");
        assert_eq!(call(replica.addr, "GET", "/healthz", &[], b"").status, 200);
    }
    let create = call(
        direct,
        "POST",
        "/test-groups/create",
        &[],
        br#"{"run_count": 1}"#,
    );
    assert_error(&create, 503, &format!("store {store}"));
    let run = call(direct, "POST", &run_path(&probe, 1), &[], b"probe");
    assert_error(&run, 503, &format!("store {store}"));
    // Down for a while as the client goes on sending (a run per ms).
    std::thread::sleep(Duration::from_secs(1));
    cluster.redis.restart();

    for replica in &cluster.replicas {
        assert!(
            wait_status(replica.addr, "/readyz", 200, Duration::from_secs(30)),
            "the replica reconnected by itself"
        );
    }
    let run = call(direct, "POST", &run_path(&probe, 2), &[], b"probe");
    assert_eq!(run.status, 200, "runs are taken again: {}", run.text());

    let done = finish(client, "client");
    assert_eq!(done.code, Some(1), "runs failed with 503: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    let server_runs = server_record(cluster.replicas[2].addr, &id);
    let (failed, unavailable) = assert_nothing_acknowledged_lost(&report, &server_runs, 503);
    let succeeded = u(&report["summary"]["succeeded"]);
    println!(
        "recorded at the stop: {at_stop}; succeeded {succeeded}, {} failed ({unavailable} \
         with 503); the server holds {}",
        failed.len(),
        server_runs.len()
    );
    assert!(unavailable > 0, "runs sent while Redis was down got 503");
    assert!(
        server_runs.len() as u64 >= at_stop,
        "what was recorded before the stop survived it"
    );
    assert!(succeeded > at_stop, "runs succeeded after the restart");
}

/// (e) With the store any replica serves any route: create on replica 1,
/// runs on all three, GET on replica 2, status and list on replica 3,
/// DELETE on replica 3 seen by the others; `--max-groups` and `--max-runs`
/// (507) count what all replicas hold; pipelined runs too.
#[test]
fn any_replica_serves_any_route_and_limits_hold_across_replicas() {
    let cluster = Cluster::start(&["--max-groups", "2", "--max-runs", "3"]);
    let [r1, r2, r3] = [0, 1, 2].map(|i| cluster.replicas[i].addr);
    let id = create_group(r1, r#"{"run_count": 10}"#);
    for (addr, count) in [(r1, 1), (r2, 2), (r3, 3)] {
        let reply = call(addr, "POST", &run_path(&id, count), &[], b"body");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let counts: BTreeSet<u64> = server_record(r2, &id)
        .iter()
        .map(|r| u(&r["run_count"]))
        .collect();
    assert_eq!(counts, BTreeSet::from([1, 2, 3]));
    assert_eq!(recorded(r3, &id), 3);
    // 3 runs held in all: a fourth on any replica is refused.
    let full = call(r1, "POST", &run_path(&id, 4), &[], b"body");
    assert_error(&full, 507, "");
    let second = create_group(r2, r#"{"run_count": 5}"#);
    let full = call(
        r3,
        "POST",
        "/test-groups/create",
        &[],
        br#"{"run_count": 1}"#,
    );
    assert_error(&full, 507, "");
    let list = get_json(r3, "/test-groups");
    let listed: BTreeMap<String, u64> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|g| {
            (
                g["run_group_id"].as_str().expect("id").to_owned(),
                u(&g["recorded_runs"]),
            )
        })
        .collect();
    assert_eq!(
        listed,
        BTreeMap::from([(id.clone(), 3), (second.clone(), 0)])
    );

    assert_eq!(
        call(r3, "DELETE", &format!("/test-groups/{id}"), &[], b"").status,
        200
    );
    let gone = call(r1, "GET", &format!("/test-groups/{id}"), &[], b"");
    assert_error(&gone, 404, "no test group");
    let list = get_json(cluster.nginx.addr, "/test-groups");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    // The freed group and runs are free on every replica.
    let third = create_group(r1, r#"{"run_count": 5}"#);
    let mut conn = Conn::open(r2);
    let mut pipelined = req("POST", &run_path(&third, 1), &[], b"one");
    pipelined.extend(req("POST", &run_path(&second, 1), &[], b"two"));
    conn.send(&pipelined);
    assert_eq!(conn.reply().status, 200);
    assert_eq!(conn.reply().status, 200);
    assert_eq!(recorded(r3, &third) + recorded(r1, &second), 2);
}

/// Without a store each replica holds its own groups: nginx round-robin
/// over 3 memory replicas reproduces issue 10's failure, the group created
/// on one replica and the client's first fetch on another answering `no
/// test group` (exit 2). The documented limitation; also checks that the
/// harness's nginx really spreads requests over the replicas.
#[test]
fn without_a_store_round_robin_over_memory_replicas_loses_the_group() {
    let replicas: Vec<ServerProcess> = (0..REPLICAS).map(|_| ServerProcess::start(&[])).collect();
    let nginx = Nginx::start(&replicas.iter().map(|r| r.addr).collect::<Vec<_>>());
    for _ in 0..30 {
        assert_eq!(call(nginx.addr, "GET", "/healthz", &[], b"").status, 200);
    }
    let healthz = r#"conntest_http_requests_total{route="/healthz",status="200"}"#;
    let spread: Vec<f64> = replicas.iter().map(|r| metric(r.addr, healthz)).collect();
    assert!(
        spread.iter().all(|&n| n >= 10.0),
        "round-robin: 10 of the 30 GETs on each replica: {spread:?}"
    );

    let url = nginx.url();
    let id = curl_create(&url, r#"{"run_count": 10}"#);
    let dir = TempDir::new("scale-memory");
    let done = finish(spawn(&dir.0, &["client", "-r", &url, "-g", &id]), "client");
    assert_one_line_usage_error(&done, &["no test group", &id]);
    let created = r#"conntest_http_requests_total{route="/test-groups/create",status="200"}"#;
    let creators: Vec<f64> = replicas.iter().map(|r| metric(r.addr, created)).collect();
    assert_eq!(
        creators.iter().sum::<f64>(),
        1.0,
        "one replica holds the group: {creators:?}"
    );
}

/// The harness itself: Redis answers, stops (the port refuses), and starts
/// again on the same port; a persistent one keeps what it acknowledged.
#[test]
fn harness_redis_stops_and_restarts_on_the_same_port() {
    let mut redis = RedisProcess::start_persistent();
    let addr = SocketAddr::from(([127, 0, 0, 1], redis.port));
    let command =
        |bytes: &[u8]| -> String { String::from_utf8_lossy(&raw(addr, bytes)).into_owned() };
    assert_eq!(command(b"SET k v\r\nQUIT\r\n"), "+OK\r\n+OK\r\n");
    redis.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "stopped: the port refuses"
    );
    assert!(!redis_pongs(redis.port));
    redis.restart();
    assert!(redis_pongs(redis.port));
    assert_eq!(command(b"GET k\r\nQUIT\r\n"), "$1\r\nv\r\n+OK\r\n");
    let plain = RedisProcess::start();
    assert_ne!(plain.port, redis.port);
    assert!(redis_pongs(plain.port));
    assert_eq!(plain.url(), format!("redis://127.0.0.1:{}/0", plain.port));
}
