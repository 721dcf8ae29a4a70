//! End-to-end tests of `conntest client`, `conntest run` and
//! `scripts/plot.sh`, all through real processes on 127.0.0.1: the seed's
//! exact shell sequence (curl, client, jq recipes, plot), exact concurrency
//! measured on the server's record, discrepancy detection against a
//! misbehaving server written here, every exit code, output modes, bodies,
//! the one-command `run`, and the plot script.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(30);

fn repo_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// Runs `conntest ARGS` in `cwd` to completion (bounded).
fn conntest(cwd: &Path, args: &[&str]) -> Finished {
    let done = run_bounded(&mut conntest_cmd(cwd, args), LIMIT);
    assert!(
        !done.timed_out,
        "conntest {args:?} did not finish within {LIMIT:?}\nstderr: {}",
        done.stderr
    );
    done
}

/// The arguments `client -r URL -g ID EXTRA...`.
fn client_args<'a>(url: &'a str, id: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["client", "-r", url, "-g", id];
    args.extend_from_slice(extra);
    args
}

/// `conntest run [-r REMOTE] --run-count N --concurrency C -f REPORT EXTRA...`
/// in `cwd`, bounded.
fn conntest_run(
    cwd: &Path,
    remote: Option<&str>,
    run_count: &str,
    concurrency: &str,
    report: &str,
    extra: &[&str],
) -> Finished {
    let mut args = vec!["run"];
    if let Some(remote) = remote {
        args.extend(["-r", remote]);
    }
    args.extend(["--run-count", run_count, "--concurrency", concurrency]);
    args.extend(["-f", report]);
    args.extend_from_slice(extra);
    conntest(cwd, &args)
}

/// `conntest client -r URL -g ID EXTRA...` in `cwd`, bounded.
fn client(cwd: &Path, url: &str, id: &str, extra: &[&str]) -> Finished {
    conntest(cwd, &client_args(url, id, extra))
}

/// Polls the server's record of group `id` every 20 ms until it holds at
/// least `at_least` runs, or for 10 s at most; returns the last count seen.
fn wait_for_recorded(addr: SocketAddr, id: &str, at_least: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(10);
    let mut recorded = 0;
    while Instant::now() < until && recorded < at_least {
        std::thread::sleep(Duration::from_millis(20));
        recorded = get_group(addr, id)["test_runs"]
            .as_array()
            .map_or(0, Vec::len);
    }
    recorded
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("results is an array")
}

/// The kind of a result's error: the text before the first ':'.
fn error_kinds(result: &Value) -> Vec<String> {
    result["error"]
        .as_str()
        .map(|e| {
            e.split("; ")
                .map(|p| p.split(':').next().unwrap_or("").trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A stand-in upstream endpoint: answers every request 200 "ok".
fn start_upstream(hits: Arc<AtomicU64>) -> TestListener {
    TestListener::start(move |stream| {
        serve_http(stream, 10_000, |request| {
            hits.fetch_add(1, Ordering::Relaxed);
            (200, "OK", b"ok".to_vec(), request.wants_close())
        })
    })
}

/// Serves up to `max` requests on `stream` (10 s read timeout): `answer`
/// gives each one's status, reason, body and whether to close after it.
/// Stops at the end of the stream, on a write error or after a close.
fn serve_http(
    stream: TcpStream,
    max: usize,
    mut answer: impl FnMut(&HttpRequest) -> (u16, &'static str, Vec<u8>, bool),
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    for _ in 0..max {
        let Some(request) = read_http_request(&mut reader) else {
            return;
        };
        let (status, reason, body, close) = answer(&request);
        if write_http_response(&mut out, status, reason, &body, close).is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The seed's exact sequence

const SEED_DATA: &str = "first line: hello\n\
zweite Zeile: grüße, naïve café\n\
第三行 — ✓ 🚀\n\
\tindented, with \"quotes\", $dollar, `backticks` and a \\ backslash\n\
\n\
after a blank line";

#[test]
fn seed_sequence_with_curl_client_jq_recipes_and_plot() {
    for tool in ["curl", "jq", "gnuplot"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is needed by the seed's usage (apt-get install -y curl jq gnuplot-nox)"
        );
    }
    let dir = TempDir::new("seed");
    std::fs::write(dir.path("data.txt"), SEED_DATA).unwrap();
    std::os::unix::fs::symlink(repo_scripts(), dir.path("scripts")).unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let upstream = start_upstream(Arc::clone(&hits));
    let bin_dir = bin().parent().unwrap().to_path_buf();

    // The seed's commands verbatim, except: an ephemeral local server, a
    // local upstream instead of internal.example.net, 200 runs, and
    // `open` (a viewer) left out. Markers split the jq recipes' output.
    let script = r#"
set -euo pipefail
export PATH="@BIN_DIR@:$PATH"
conntest server -p 0 --bind 127.0.0.1 >/dev/null 2>server.log &
echo $! > server.pid
trap 'kill "$(cat server.pid)" 2>/dev/null || true' EXIT
PORT=
for _ in $(seq 1 200); do
  PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' server.log)
  [ -n "$PORT" ] && break
  sleep 0.05
done
[ -n "$PORT" ] || { echo "the server did not start" >&2; cat server.log >&2; exit 3; }

# set CONNTEST remote endpoint
export CONNTEST=http://127.0.0.1:$PORT
# create a new test group, storing the response in a variable
RESP=`curl $CONNTEST/test-groups/create -d '{
	"description": "example test group",
	"run_count": 200,
	"concurrency": 5,
	"client_delay_ns": 100,
	"upstream_endpoint": "http://@UPSTREAM@",
	"server_delay_ns": 0
}'`
# export the run_group_id from the response JSON
export run_group_id=`echo $RESP | jq -r '.run_group_id'`
echo "@@ group"
echo "$run_group_id"

conntest client -r $CONNTEST -g $run_group_id -f report.json -d "$(<data.txt)"

REPORT_FILE=report.json
echo "@@ average"
jq '.average_response_time_ns' $REPORT_FILE
echo "@@ errors"
jq '.results[] | select(.error != null)' $REPORT_FILE
echo "@@ durations"
jq '.results |=sort_by(.run_count)|.results[]|.client_duration_ns' $REPORT_FILE
echo "@@ plot"
export SCRIPTS_DIR=scripts
export REPORT_FILE=report.json
bash scripts/plot.sh
echo "@@ end"
"#
    .replace("@BIN_DIR@", &bin_dir.to_string_lossy())
    .replace("@UPSTREAM@", &upstream.addr.to_string());

    let done = run_bounded(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&dir.0),
        Duration::from_secs(45),
    );
    if done.timed_out {
        if let Ok(pid) = std::fs::read_to_string(dir.path("server.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
    assert_eq!(
        done.code,
        Some(0),
        "the seed sequence failed\nstdout:\n{}\nstderr:\n{}",
        done.stdout,
        done.stderr
    );
    assert!(
        done.stderr.contains("PASS"),
        "the client's summary says PASS: {}",
        done.stderr
    );

    // The output of each step, by marker.
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    for part in done.stdout.split("@@ ").skip(1) {
        let (name, body) = part.split_once('\n').unwrap_or((part, ""));
        sections.insert(name.trim().to_owned(), body.to_owned());
    }
    assert!(
        sections.contains_key("end"),
        "the script ran to its end: {}",
        done.stdout
    );
    let group_id = sections["group"].trim();
    assert_eq!(group_id.len(), 36, "run_group_id is a UUID: {group_id:?}");

    let report = read_json(&dir.path("report.json"));
    for field in [
        "client_run_group",
        "server_run_group",
        "results",
        "average_response_time_ns",
        "summary",
    ] {
        assert!(
            report.get(field).is_some_and(|v| !v.is_null()),
            "report has {field}"
        );
    }
    assert_eq!(report["client_run_group"]["run_group_id"], group_id);
    assert_eq!(report["server_run_group"]["run_group_id"], group_id);

    // jq '.average_response_time_ns' prints the average, a positive integer.
    let average: u64 = sections["average"]
        .trim()
        .parse()
        .expect("the average is an integer");
    assert!(average > 0);
    assert_eq!(average, u(&report["average_response_time_ns"]));

    // select(.error != null) prints nothing on a passing run.
    assert_eq!(sections["errors"].trim(), "", "no result has an error");

    // Every run is in results, once, without an error key.
    let results = results(&report);
    assert_eq!(results.len(), 200);
    let counts: HashSet<u64> = results.iter().map(|r| u(&r["run_count"])).collect();
    assert_eq!(counts, (1..=200).collect::<HashSet<u64>>());
    for r in results {
        assert!(r.get("error").is_none(), "no error key on a good run: {r}");
        for field in [
            "run_id",
            "run_group_id",
            "client_time",
            "server_time",
            "client_duration_ns",
            "server_duration_ns",
        ] {
            assert!(r.get(field).is_some(), "result has {field}: {r}");
        }
    }

    // The durations recipe prints one number per run, in run_count order.
    let printed: Vec<u64> = sections["durations"]
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("a duration: {l:?}"))
        })
        .collect();
    let mut by_count: Vec<(u64, u64)> = results
        .iter()
        .map(|r| (u(&r["run_count"]), u(&r["client_duration_ns"])))
        .collect();
    by_count.sort();
    assert_eq!(
        printed,
        by_count.iter().map(|&(_, d)| d).collect::<Vec<_>>()
    );
    assert!(printed.iter().all(|&d| d > 0));

    // The server recorded the multi-line UTF-8 data exactly, and went upstream.
    let server_runs = report["server_run_group"]["test_runs"]
        .as_array()
        .expect("server runs");
    assert_eq!(server_runs.len(), 200);
    for run in server_runs {
        assert_eq!(
            run["data"].as_str(),
            Some(SEED_DATA),
            "the server's data is data.txt exactly"
        );
        assert!(run.get("data_base64").is_none());
        assert_eq!(run["upstream_response_code"], 200, "{run}");
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        200,
        "one upstream GET per run"
    );
    let client_runs = report["client_run_group"]["test_runs"]
        .as_array()
        .expect("client runs");
    assert_eq!(client_runs.len(), 200);
    assert!(client_runs
        .iter()
        .all(|r| r["data"].as_str() == Some(SEED_DATA)));

    let summary = &report["summary"];
    assert_eq!(summary["passed"], true);
    assert_eq!(u(&summary["runs"]), 200);
    assert_eq!(u(&summary["failed"]), 0);
    // Every run went upstream: the server's upstream timings are summarised.
    assert_eq!(u(&summary["upstream_response_time_ns"]["count"]), 200);
    assert_eq!(u(&summary["upstream_connect_ns"]["count"]), 200);
    assert!(summary["upstream_tls_ns"].is_null(), "no TLS upstream here");
    for (kind, n) in summary["discrepancies"].as_object().unwrap() {
        assert_eq!(u(n), 0, "no {kind}");
    }

    // The seed's plot step.
    let png = std::fs::read(dir.path("roundtrip-plot.png"))
        .expect("roundtrip-plot.png in the current directory");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
}

// ---------------------------------------------------------------------------
// Exact concurrency, as the server saw it

#[test]
fn exactly_concurrency_requests_in_flight_on_the_server() {
    let server = ServerProcess::start(&[]);
    let id = create_group(
        server.addr,
        r#"{"run_count": 80, "concurrency": 8, "server_delay_ns": 20000000}"#,
    );
    let dir = TempDir::new("concurrency");
    let done = client(&dir.0, &server.url(), &id, &["-f", "report.json", "-q"]);
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);

    let group = get_group(server.addr, &id);
    let runs = group["test_runs"].as_array().expect("test_runs");
    assert_eq!(runs.len(), 80);
    // +1 at each start, -1 at each end; at equal instants the end first.
    let mut events: Vec<(i128, i32)> = Vec::new();
    for run in runs {
        let start = rfc3339_ns(run["server_start"].as_str().unwrap());
        let end = rfc3339_ns(run["server_end"].as_str().unwrap());
        assert!(
            end - start >= 20_000_000,
            "the server's record includes its 20 ms delay: {} ns ({run})",
            end - start
        );
        events.push((start, 1));
        events.push((end, -1));
    }
    events.sort();
    let (mut open, mut max) = (0, 0);
    for (_, delta) in events {
        open += delta;
        max = max.max(open);
    }
    assert_eq!(
        max, 8,
        "the server held exactly 8 runs at once at its busiest"
    );

    let report = read_json(&dir.path("report.json"));
    assert!(
        report["summary"].get("tls").is_none(),
        "no TLS over http://"
    );
    let wall = u(&report["summary"]["wall_time_ns"]);
    eprintln!(
        "80 runs, concurrency 8, 20 ms server delay: wall time {:.1} ms (ideal 200 ms)",
        wall as f64 / 1e6
    );
    assert!(
        wall >= 10 * 20_000_000,
        "10 rounds of 20 ms take at least 200 ms, reported {wall} ns"
    );
}

// ---------------------------------------------------------------------------
// A misbehaving server, written here

#[derive(Default, Clone)]
struct Misbehaviour {
    /// Answers 200 but does not list this run.
    drop: Option<u64>,
    /// Lists this run with one byte of its data altered.
    corrupt: Option<u64>,
    /// Lists this run twice.
    duplicate: Option<u64>,
    /// Lists a run of this count, which the client never sends.
    unexpected: Option<u64>,
    /// Lists this run as started in the year 2300, beyond an i64 of
    /// nanoseconds.
    far_future: Option<u64>,
    /// Answers this run 503 (and does not record it).
    unavailable: Option<u64>,
    /// Answers every run whose count is a multiple of this with
    /// `Connection: close`, then closes the connection.
    close_every: Option<u64>,
}

/// Runs as the mock received them: (run count, body), in order of arrival.
type Received = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

struct MockServer {
    listener: TestListener,
    id: String,
    received: Received,
}

impl MockServer {
    fn url(&self) -> String {
        format!("http://{}", self.listener.addr)
    }
}

const TIMESTAMP: &str = "2026-01-01T00:00:00.000001Z";

fn mock_run(count: u64, data: &[u8], serial: usize) -> Value {
    json!({
        "run_id": format!("00000000-0000-4000-8000-{serial:012x}"),
        "run_count": count,
        "time": TIMESTAMP,
        "data": String::from_utf8_lossy(data),
        "server_start": TIMESTAMP,
        "server_end": TIMESTAMP,
        "server_duration_ns": 1000,
    })
}

fn start_mock(run_count: u64, concurrency: u64, bad: Misbehaviour) -> MockServer {
    let id = "5e0c1f00-0000-4000-8000-00000000beef".to_owned();
    let received: Received = Arc::default();
    let (group_id, store) = (id.clone(), Arc::clone(&received));
    let listing = move |runs: &[(u64, Vec<u8>)]| {
        let mut list = Vec::new();
        for (count, data) in runs {
            let count = *count;
            if bad.drop == Some(count) {
                continue;
            }
            let mut data = data.clone();
            if bad.corrupt == Some(count) && !data.is_empty() {
                data[0] ^= 1;
            }
            list.push(mock_run(count, &data, list.len()));
            if bad.far_future == Some(count) {
                list.last_mut().unwrap()["server_start"] = "2300-01-01T00:00:00Z".into();
            }
            if bad.duplicate == Some(count) {
                list.push(mock_run(count, &data, list.len()));
            }
        }
        if let (Some(extra), Some((_, data))) = (bad.unexpected, runs.first()) {
            list.push(mock_run(extra, data, list.len()));
        }
        list
    };
    let listener = TestListener::start(move |stream| {
        serve_http(stream, 100_000, |request| {
            let mut close = request.wants_close();
            let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
            let (status, reason, body) = match (request.method.as_str(), segments.as_slice()) {
                ("GET", ["test-groups", g]) if *g == group_id => {
                    let runs = store.lock().unwrap().clone();
                    let group = json!({
                        "run_group_id": group_id,
                        "created_at": TIMESTAMP,
                        "description": "a misbehaving server",
                        "run_count": run_count,
                        "concurrency": concurrency,
                        "client_delay_ns": 0,
                        "server_delay_ns": 0,
                        "test_runs": listing(&runs),
                    });
                    (200, "OK", serde_json::to_vec(&group).unwrap())
                }
                ("POST", ["test-groups", g, n]) if *g == group_id => match n.parse::<u64>() {
                    Ok(n) if bad.unavailable == Some(n) => (
                        503,
                        "Service Unavailable",
                        br#"{"error":"mock: unavailable"}"#.to_vec(),
                    ),
                    Ok(n) => {
                        store.lock().unwrap().push((n, request.body.clone()));
                        close |= bad.close_every.is_some_and(|k| n % k == 0);
                        (200, "OK", Vec::new())
                    }
                    Err(_) => (
                        400,
                        "Bad Request",
                        br#"{"error":"mock: bad count"}"#.to_vec(),
                    ),
                },
                _ => (
                    404,
                    "Not Found",
                    br#"{"error":"mock: no such route"}"#.to_vec(),
                ),
            };
            (status, reason, body, close)
        })
    });
    MockServer {
        listener,
        id,
        received,
    }
}

/// Runs `conntest client -f report.json -q` (in a new directory named for
/// `tag`) against a mock server that misbehaves as `bad`, asserts it exits
/// with `code`, and returns the mock and the report.
fn quiet_client_against_mock(
    run_count: u64,
    concurrency: u64,
    bad: Misbehaviour,
    tag: &str,
    code: i32,
) -> (MockServer, Value) {
    let mock = start_mock(run_count, concurrency, bad);
    let dir = TempDir::new(tag);
    let done = client(&dir.0, &mock.url(), &mock.id, &["-f", "report.json", "-q"]);
    assert_eq!(done.code, Some(code), "stderr: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    (mock, report)
}

#[test]
fn discrepancies_against_a_misbehaving_server_fail_the_test() {
    let n = 40;
    let bad = Misbehaviour {
        drop: Some(7),
        corrupt: Some(13),
        duplicate: Some(21),
        unexpected: Some(n + 5),
        ..Misbehaviour::default()
    };
    let mock = start_mock(n, 4, bad);
    let dir = TempDir::new("mock");
    let done = client(&dir.0, &mock.url(), &mock.id, &["-f", "report.json"]);
    assert_eq!(
        done.code,
        Some(1),
        "discrepancies fail the test; stderr: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("FAIL"),
        "the reason on stderr: {}",
        done.stderr
    );
    assert_eq!(
        mock.received.lock().unwrap().len(),
        n as usize,
        "every run was sent once"
    );

    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["report.json"],
        "the report, and no temporary file left behind"
    );
    let report = read_json(&dir.path("report.json"));
    let d = &report["summary"]["discrepancies"];
    assert_eq!(
        (
            u(&d["missing"]),
            u(&d["corrupted"]),
            u(&d["duplicated"]),
            u(&d["unexpected"])
        ),
        (1, 1, 1, 1),
        "{d}"
    );
    assert_eq!(report["summary"]["passed"], false);
    for (kind, count) in report["summary"]["errors"].as_object().unwrap() {
        assert_eq!(u(count), 0, "no client-side {kind} errors");
    }

    let results = results(&report);
    assert_eq!(
        results.len(),
        n as usize + 1,
        "every client run plus the unexpected one"
    );
    let expected: BTreeMap<u64, &str> = [
        (7, "missing"),
        (13, "corrupted"),
        (21, "duplicated"),
        (n + 5, "unexpected"),
    ]
    .into();
    let mut seen = HashSet::new();
    for r in results {
        let count = u(&r["run_count"]);
        assert!(seen.insert(count), "run {count} appears once in results");
        match expected.get(&count) {
            Some(kind) => {
                let error = r["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("run {count} has an error: {r}"));
                assert_eq!(
                    error_kinds(r),
                    vec![kind.to_string()],
                    "run {count}: {error}"
                );
            }
            None => assert!(
                r.get("error").is_none(),
                "an unaffected run has no error key: {r}"
            ),
        }
    }
    assert!(
        seen.is_superset(&(1..=n).collect()),
        "every client run is in results"
    );
}

#[test]
fn a_non_200_answer_is_an_http_status_error() {
    let n = 20;
    let bad = Misbehaviour {
        unavailable: Some(5),
        ..Misbehaviour::default()
    };
    let (_mock, report) = quiet_client_against_mock(n, 2, bad, "mock503", 1);
    let summary = &report["summary"];
    assert_eq!(u(&summary["errors"]["http_status"]), 1, "{summary}");
    assert_eq!(u(&summary["failed"]), 1);
    for (kind, count) in summary["discrepancies"].as_object().unwrap() {
        assert_eq!(u(count), 0, "a refused run is not also {kind}");
    }
    let results = results(&report);
    assert_eq!(results.len(), n as usize);
    for r in results {
        if u(&r["run_count"]) == 5 {
            assert_eq!(error_kinds(r), vec!["http_status".to_owned()], "{r}");
            assert!(r["error"].as_str().unwrap().contains("503"), "{r}");
        } else {
            assert!(r.get("error").is_none(), "{r}");
        }
    }
}

#[test]
fn a_record_time_beyond_an_i64_of_nanoseconds_is_an_error_not_wrapped() {
    let bad = Misbehaviour {
        far_future: Some(3),
        ..Misbehaviour::default()
    };
    let (_mock, report) = quiet_client_against_mock(5, 1, bad, "mock2300", 1);
    let summary = &report["summary"];
    assert_eq!(summary["verified"], false, "{summary}");
    let error = summary["server_fetch_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("run 3: server_start '2300-01-01T00:00:00Z' is outside"),
        "{summary}"
    );
    assert_eq!(report["server_run_group"], Value::Null);
}

#[test]
fn connections_the_server_closes_are_reopened() {
    let n = 60;
    let bad = Misbehaviour {
        close_every: Some(4),
        ..Misbehaviour::default()
    };
    let (mock, report) = quiet_client_against_mock(n, 3, bad, "mock-close", 0);
    assert!(results(&report).iter().all(|r| r.get("error").is_none()));
    assert_eq!(
        mock.received.lock().unwrap().len(),
        n as usize,
        "each run sent once"
    );
    let opened = u(&report["summary"]["connections_opened"]);
    assert!(
        opened > 3,
        "closed connections were replaced: {opened} opened"
    );
}

// ---------------------------------------------------------------------------
// Exit codes and errors

/// A usage or setup error: exit 2, one line on stderr, no report.
fn assert_setup_error(dir: &TempDir, args: &[&str], mention: &str) {
    let report = dir.path("report.json");
    let _ = std::fs::remove_file(&report);
    let done = conntest(&dir.0, args);
    assert_eq!(
        done.code,
        Some(2),
        "conntest {args:?}: stderr {}",
        done.stderr
    );
    let lines: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "conntest {args:?}: one line on stderr, got {:?}",
        done.stderr
    );
    assert!(
        lines[0].contains(mention),
        "conntest {args:?}: {:?} mentions {mention:?}",
        lines[0]
    );
    assert!(
        !report.exists(),
        "conntest {args:?}: no report on a setup error"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "conntest {args:?} left files: {leftovers:?}"
    );
}

#[test]
fn usage_and_setup_errors_exit_2_without_a_report() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let id = create_group(server.addr, r#"{"run_count": 3}"#);
    let dir = TempDir::new("usage");
    assert_setup_error(
        &dir,
        &client_args(&url, &id, &["-f", "report.json", "--bogus"]),
        "--bogus",
    );
    assert_setup_error(&dir, &["client", "-g", &id, "-f", "report.json"], "-r");
    assert_setup_error(&dir, &["client", "-r", &url, "-f", "report.json"], "-g");
    assert_setup_error(
        &dir,
        &client_args(&url, &id, &["-f", "report.json", "--timeout", "soon"]),
        "soon",
    );
    assert_setup_error(
        &dir,
        &[
            "client",
            "-r",
            "ftp://127.0.0.1:1",
            "-g",
            &id,
            "-f",
            "report.json",
        ],
        "-r",
    );
    let closed = format!("http://127.0.0.1:{}", closed_port());
    assert_setup_error(
        &dir,
        &["client", "-r", &closed, "-g", &id, "-f", "report.json"],
        "127.0.0.1",
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_setup_error(
        &dir,
        &["client", "-r", &url, "-g", unknown, "-f", "report.json"],
        unknown,
    );
    assert_setup_error(
        &dir,
        &[
            "run",
            "-r",
            &closed,
            "--run-count",
            "3",
            "-f",
            "report.json",
        ],
        "127.0.0.1",
    );
    assert_setup_error(&dir, &["frobnicate"], "frobnicate");
    // The group is untouched by all of that.
    assert_eq!(
        get_group(server.addr, &id)["test_runs"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn server_killed_mid_test_fails_with_errors_and_does_not_hang() {
    let mut server = ServerProcess::start(&[]);
    let id = create_group(
        server.addr,
        r#"{"run_count": 2000, "concurrency": 4, "server_delay_ns": 1000000}"#,
    );
    let dir = TempDir::new("killed");
    let url = server.url();
    let client = Running::spawn(&mut conntest_cmd(
        &dir.0,
        &client_args(&url, &id, &["-f", "report.json", "-q", "--timeout", "2s"]),
    ));
    // Kill the server once it is well into the test (about 200 ms in).
    let recorded = wait_for_recorded(server.addr, &id, 100);
    assert!(
        (100..2000).contains(&recorded),
        "the test was under way when the server was killed: {recorded} runs"
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
    let killed = Instant::now();

    let done = client.finish(Duration::from_secs(40));
    assert!(
        !done.timed_out,
        "the client must not hang when its server dies; stderr: {}",
        done.stderr
    );
    eprintln!(
        "client exited {:?} after {:.2} s from the kill",
        done.code,
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(done.code, Some(1), "stderr: {}", done.stderr);

    let report = read_json(&dir.path("report.json"));
    let summary = &report["summary"];
    assert_eq!(summary["passed"], false);
    assert_eq!(
        summary["verified"], false,
        "the server's record could not be fetched: {summary}"
    );
    assert!(report["server_run_group"].is_null());
    let results = results(&report);
    assert_eq!(results.len(), 2000, "every run is in results");
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert!(!failed.is_empty(), "runs after the kill failed");
    assert_eq!(u(&summary["failed"]), failed.len() as u64);
    let allowed = ["refused", "reset", "closed"];
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for r in &failed {
        for kind in error_kinds(r) {
            assert!(
                allowed.contains(&kind.as_str()),
                "a dead server shows as refused, reset or closed: {r}"
            );
            *by_kind.entry(kind).or_default() += 1;
        }
    }
    eprintln!("failed runs by kind: {by_kind:?}");
    assert!(
        by_kind.get("refused").is_some_and(|&n| n > 0),
        "runs after the kill are refused: {by_kind:?}"
    );
    for (kind, n) in &by_kind {
        assert_eq!(u(&summary["errors"][kind]), *n, "summary counts {kind}");
    }
}

#[test]
fn interrupted_client_exits_130_with_a_partial_report() {
    let server = ServerProcess::start(&[]);
    let id = create_group(
        server.addr,
        r#"{"run_count": 5000, "concurrency": 2, "server_delay_ns": 1000000}"#,
    );
    let dir = TempDir::new("interrupted");
    let url = server.url();
    let client = Running::spawn(&mut conntest_cmd(
        &dir.0,
        &client_args(&url, &id, &["-f", "report.json", "-q"]),
    ));
    let recorded = wait_for_recorded(server.addr, &id, 50);
    assert!(
        (50..5000).contains(&recorded),
        "under way when interrupted: {recorded} runs"
    );
    let pid = client.child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let done = client.finish(Duration::from_secs(30));
    assert!(
        !done.timed_out,
        "an interrupted client stops; stderr: {}",
        done.stderr
    );
    assert_eq!(done.code, Some(130), "stderr: {}", done.stderr);
    let report = read_json(&dir.path("report.json"));
    assert_eq!(report["summary"]["interrupted"], true);
    assert_eq!(report["summary"]["passed"], false);
    // Runs never sent are one count, not a result each.
    let sent = results(&report).len() as u64;
    let not_sent = u(&report["summary"]["not_sent"]);
    assert!(not_sent > 0, "runs never sent are counted");
    assert_eq!(sent + not_sent, 5000, "every run is a result or not_sent");
}

#[test]
fn help_and_version() {
    let dir = TempDir::new("help");
    for command in ["server", "client", "run"] {
        for flag in ["--help", "-h"] {
            let done = conntest(&dir.0, &[command, flag]);
            assert_eq!(done.code, Some(0), "{command} {flag}: {}", done.stderr);
            assert!(
                done.stdout.contains("Usage"),
                "{command} {flag} prints usage: {}",
                done.stdout
            );
        }
    }
    let done = conntest(&dir.0, &["--help"]);
    assert_eq!(done.code, Some(0));
    assert!(done.stdout.contains("conntest client"));
    let done = conntest(&dir.0, &["--version"]);
    assert_eq!(done.code, Some(0));
    assert!(
        done.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        done.stdout
    );
}

// ---------------------------------------------------------------------------
// Output

#[test]
fn quiet_prints_nothing_and_the_summary_says_pass() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("quiet");
    let id = create_group(server.addr, r#"{"run_count": 30, "concurrency": 3}"#);
    let done = client(&dir.0, &server.url(), &id, &["-f", "report.json", "-q"]);
    assert_eq!(done.code, Some(0));
    assert_eq!(done.stderr, "", "-q prints nothing on stderr");
    assert_eq!(done.stdout, "", "nothing on stdout either");
    assert!(dir.path("report.json").exists());

    let id = create_group(server.addr, r#"{"run_count": 30, "concurrency": 3}"#);
    let done = conntest(&dir.0, &["client", "-r", &server.url(), "-g", &id]);
    assert_eq!(done.code, Some(0));
    assert!(
        done.stderr.contains("PASS"),
        "a summary ending in PASS: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("30 runs"),
        "the summary counts the runs: {}",
        done.stderr
    );
    assert!(
        !done.stderr.contains('\r'),
        "no progress line when stderr is not a terminal: {:?}",
        done.stderr
    );
}

// ---------------------------------------------------------------------------
// Bodies

fn server_data(server: &ServerProcess, id: &str) -> Vec<(u64, String)> {
    let group = get_group(server.addr, id);
    let mut runs: Vec<(u64, String)> = group["test_runs"]
        .as_array()
        .expect("test_runs")
        .iter()
        .map(|r| {
            (
                u(&r["run_count"]),
                r["data"].as_str().expect("data").to_owned(),
            )
        })
        .collect();
    runs.sort();
    runs
}

#[test]
fn bodies_default_to_a_uuid_per_run_else_the_group_data_else_dash_d() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("bodies");

    // No -d, no group data: a distinct UUID v4 per run.
    let id = create_group(server.addr, r#"{"run_count": 30, "concurrency": 3}"#);
    let done = client(&dir.0, &server.url(), &id, &["-f", "report.json", "-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let runs = server_data(&server, &id);
    assert_eq!(runs.len(), 30);
    assert!(
        runs.iter().all(|(_, d)| is_uuid_v4(d)),
        "UUID v4 bodies: {runs:?}"
    );
    assert_eq!(
        runs.iter().map(|(_, d)| d).collect::<HashSet<_>>().len(),
        30,
        "all distinct"
    );
    let report = read_json(&dir.path("report.json"));
    let sent: Vec<(u64, String)> = report["client_run_group"]["test_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (u(&r["run_count"]), r["data"].as_str().unwrap().to_owned()))
        .collect();
    let mut sent = sent;
    sent.sort();
    assert_eq!(sent, runs, "the report shows what each run carried");

    // The group's data, when set.
    let group_data = "group body — ü\nsecond line";
    let config = json!({"run_count": 10, "concurrency": 2, "data": group_data}).to_string();
    let id = create_group(server.addr, &config);
    let done = client(&dir.0, &server.url(), &id, &["-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let runs = server_data(&server, &id);
    assert_eq!(runs.len(), 10);
    assert!(runs.iter().all(|(_, d)| d == group_data), "{runs:?}");

    // -d wins over the group's data.
    let id = create_group(server.addr, &config);
    let done = client(&dir.0, &server.url(), &id, &["-q", "-d", "from -d"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let runs = server_data(&server, &id);
    assert_eq!(runs.len(), 10);
    assert!(runs.iter().all(|(_, d)| d == "from -d"), "{runs:?}");
}

// ---------------------------------------------------------------------------
// One command

#[test]
fn run_with_the_embedded_server() {
    let dir = TempDir::new("run-embedded");
    let done = conntest_run(&dir.0, None, "500", "10", "r.json", &[]);
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert!(done.stderr.contains("PASS"), "{}", done.stderr);
    let report = read_json(&dir.path("r.json"));
    let results = results(&report);
    assert_eq!(results.len(), 500);
    assert!(
        results.iter().all(|r| r.get("error").is_none()),
        "no errors"
    );
    assert_eq!(report["summary"]["passed"], true);
    assert_eq!(
        report["server_run_group"]["test_runs"]
            .as_array()
            .map(Vec::len),
        Some(500)
    );
    assert_eq!(report["client_run_group"]["concurrency"], 10);
}

#[test]
fn run_against_a_remote_server() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("run-remote");
    let done = conntest_run(
        &dir.0,
        Some(&server.url()),
        "500",
        "10",
        "r.json",
        &["-q", "--description", "one step"],
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let report = read_json(&dir.path("r.json"));
    assert_eq!(results(&report).len(), 500);
    let id = report["client_run_group"]["run_group_id"]
        .as_str()
        .expect("run_group_id");
    let group = get_group(server.addr, id);
    assert_eq!(
        group["test_runs"].as_array().map(Vec::len),
        Some(500),
        "the group lives on that server"
    );
    assert_eq!(group["description"], "one step");
    assert_eq!(group["concurrency"], 10);
}

// ---------------------------------------------------------------------------
// The plot script

fn bash_path() -> PathBuf {
    ["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("bash")
}

#[test]
fn plot_script_writes_a_png_and_only_removes_its_own_files() {
    let source = TempDir::new("plot-report");
    let done = conntest_run(&source.0, None, "100", "2", "report.json", &["-q"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let report = source.path("report.json");

    // From an unrelated directory holding someone's .tsv, with the script
    // named by its absolute path and a private TMPDIR to check for leftovers.
    let cwd = TempDir::new("plot-cwd");
    let tmp = TempDir::new("plot-tmp");
    std::fs::write(cwd.path("keep.tsv"), "1\t2\n").unwrap();
    let script = repo_scripts().join("plot.sh");
    let done = run_bounded(
        Command::new(bash_path())
            .arg(&script)
            .current_dir(&cwd.0)
            .env("SCRIPTS_DIR", repo_scripts())
            .env("REPORT_FILE", &report)
            .env("TMPDIR", &tmp.0),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "plot.sh: {}", done.stderr);
    let png = std::fs::read(cwd.path("roundtrip-plot.png"))
        .expect("roundtrip-plot.png in the current directory");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic bytes");
    assert_eq!(
        std::fs::read_to_string(cwd.path("keep.tsv"))
            .ok()
            .as_deref(),
        Some("1\t2\n"),
        "keep.tsv untouched"
    );
    let mut names: Vec<String> = std::fs::read_dir(&cwd.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["keep.tsv", "roundtrip-plot.png"],
        "nothing else left in the current directory"
    );
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        0,
        "its temporary files are gone"
    );

    // Without SCRIPTS_DIR, a relative REPORT_FILE, from the report's directory.
    let done = run_bounded(
        Command::new(bash_path())
            .arg(&script)
            .current_dir(&source.0)
            .env_remove("SCRIPTS_DIR")
            .env("REPORT_FILE", "report.json")
            .env("TMPDIR", &tmp.0),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "plot.sh: {}", done.stderr);
    assert!(source.path("roundtrip-plot.png").exists());
}

#[test]
fn plot_script_usage_errors_exit_2() {
    let cwd = TempDir::new("plot-errors");
    let script = repo_scripts().join("plot.sh");
    let plot = |env: &[(&str, &str)], path: Option<&Path>| {
        let mut cmd = Command::new(bash_path());
        cmd.arg(&script)
            .current_dir(&cwd.0)
            .env_remove("REPORT_FILE")
            .env("SCRIPTS_DIR", repo_scripts());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        run_bounded(&mut cmd, LIMIT)
    };
    let done = plot(&[], None);
    assert_eq!(done.code, Some(2), "no REPORT_FILE: {}", done.stderr);
    assert!(done.stderr.contains("REPORT_FILE"), "{}", done.stderr);

    let done = plot(&[("REPORT_FILE", "missing.json")], None);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("missing.json"), "{}", done.stderr);

    // jq and gnuplot absent: a PATH with neither.
    std::fs::write(cwd.path("report.json"), r#"{"results": []}"#).unwrap();
    let empty = TempDir::new("plot-empty-path");
    let done = plot(&[("REPORT_FILE", "report.json")], Some(&empty.0));
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("jq") && done.stderr.contains("gnuplot"),
        "names what is missing: {}",
        done.stderr
    );
    assert!(!cwd.path("roundtrip-plot.png").exists());
}

#[test]
fn rfc3339_parser_self_check() {
    assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), 0);
    assert_eq!(
        rfc3339_ns("2000-03-01T00:00:00Z"),
        951_868_800 * 1_000_000_000
    );
    assert_eq!(
        rfc3339_ns("2026-11-24T14:50:05.24190385Z"),
        1_795_531_805_241_903_850
    );
    assert_eq!(rfc3339_ns("1969-12-31T23:59:59.5Z"), -500_000_000);
}
