//! `conntest client` and `conntest run`: fetch the group, drive the runs,
//! fetch the server's record, compare, report.

pub mod driver;
pub mod fetch;
pub mod gather;
pub mod l4;
pub mod pacing;
pub mod progress;
pub mod shard;
pub mod verify;

use crate::http::Method;
use crate::json::{stream_array_member, Elements};
use crate::report::summary::{render, summarize, Summary};
use crate::report::{ReportFile, ReportInput, RunsFilter};
use crate::run::{BodyPlan, DriverOutcome};
use crate::wire::{GroupHeader, Protocol, QuickRuns, RecordedRun, RecordedRuns, ServerRunJson};
use driver::DriverConfig;
use fetch::{error_message, Endpoint};
use pacing::RunPlan;
use serde::Deserialize;
use shard::Shard;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub group: String,
    pub report: Option<PathBuf>,
    /// Which runs the report lists (`--runs`).
    pub runs: RunsFilter,
    /// `-d`: the body of every run.
    pub data: Option<Vec<u8>>,
    /// Per-request timeout.
    pub timeout: Duration,
    pub quiet: bool,
    /// Certificates are not verified (`--insecure`): said in the summary.
    pub insecure: bool,
    /// Go on when the server seems gone (`--keep-going`).
    pub keep_going: bool,
    /// The server runs in this process (`conntest run` without -r): it
    /// needs descriptors too.
    pub embedded_server: bool,
    /// Send only this shard's runs and upload them (`--shard I/N`).
    pub shard: Option<Shard>,
    /// Where raw TCP and UDP runs go (`--l4-addr`), rather than the
    /// server's host and the port its group answer names.
    pub l4_addr: Option<std::net::SocketAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            group: String::new(),
            report: None,
            runs: RunsFilter::All,
            data: None,
            timeout: Duration::from_secs(30),
            quiet: false,
            insecure: false,
            keep_going: false,
            embedded_server: false,
            shard: None,
            l4_addr: None,
        }
    }
}

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Interrupted,
}

/// A group as `GET /test-groups/{id}` shows it, its runs held compactly.
#[derive(Deserialize)]
pub struct GroupJson {
    #[serde(flatten)]
    pub header: GroupHeader,
    #[serde(default)]
    pub test_runs: RecordedRuns,
    /// Where the server takes a tcp or udp group's runs.
    #[serde(default)]
    pub l4: Option<crate::wire::L4Ports>,
}

/// Fetches a group, parsing it as it streams in; a setup error in words if
/// that fails.
pub fn fetch_group(endpoint: &Endpoint, id: &str, timeout: Duration) -> Result<GroupJson, String> {
    match endpoint.get_with(&format!("/test-groups/{id}"), timeout, read_group)? {
        Ok(group) => Ok(group),
        Err((404, _)) => Err(format!("no test group '{id}' on {}", endpoint.url)),
        Err((status, message)) => Err(format!(
            "fetching group {id}: server answered {status}: {message}"
        )),
    }
}

/// A group's JSON as it streams in: each run is read from its own text
/// (serde borrowing its strings, or [`QuickRuns`]) into a compact record as
/// it arrives.
fn read_group(body: &mut dyn std::io::Read) -> Result<GroupJson, String> {
    let mut runs = GroupRuns::default();
    let rest = stream_array_member(body, "test_runs", &mut runs)?;
    let mut group: GroupJson = serde_json::from_slice(&rest).map_err(|e| e.to_string())?;
    if !runs.runs.is_empty() {
        group.test_runs = RecordedRuns(runs.runs);
    }
    Ok(group)
}

#[derive(Default)]
struct GroupRuns {
    runs: Vec<RecordedRun>,
    quick: QuickRuns,
}

impl Elements for GroupRuns {
    fn quick(&mut self, text: &[u8]) -> Option<usize> {
        let (run, len) = self.quick.run(text, self.runs.last().map(|r| &r.data))?;
        self.runs.push(run);
        Some(len)
    }

    fn element(&mut self, text: &[u8]) -> Result<(), String> {
        let json: ServerRunJson<'_> = serde_json::from_slice(text)
            .map_err(|e| format!("test run {}: {e}", self.runs.len() + 1))?;
        let run = RecordedRun::from_json(json, self.runs.last().map(|r| &r.data))?;
        self.runs.push(run);
        Ok(())
    }
}

/// A group that already holds recorded runs would mix two tests' runs:
/// every run would come out duplicated. Refused here, in one place.
fn refuse_used_group(group: &GroupJson) -> Result<(), String> {
    match group.test_runs.0.len() {
        0 => Ok(()),
        n => Err(format!(
            "group {} already holds {n} recorded runs: create a new group for each test",
            group.header.run_group_id
        )),
    }
}

/// `GET /test-groups/{id}/status`: runs received and not yet recorded.
#[derive(Deserialize)]
struct GroupStatus {
    runs_in_progress: u64,
}

/// Waits until the server holds no run of the group in progress (its
/// upstream GET or delay under way), or until `deadline`. A server without
/// the status route is not waited for.
fn wait_until_recorded(
    endpoint: &Endpoint,
    id: &str,
    deadline: std::time::Instant,
    stop: &AtomicBool,
) {
    let route = format!("/test-groups/{id}/status");
    // A signal ends the wait: the test is then reported as interrupted.
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let status = endpoint.get_json::<GroupStatus>(&route, left.max(Duration::from_secs(1)));
        match status {
            Ok(Ok(s)) if s.runs_in_progress > 0 && !left.is_zero() => {
                crate::debug!(
                    "{} runs still in progress on the server",
                    s.runs_in_progress
                );
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
            _ => return,
        }
    }
}

/// Creates a group from its JSON config; returns its id.
pub fn create_group(
    endpoint: &Endpoint,
    config: &[u8],
    timeout: Duration,
) -> Result<String, String> {
    let response = endpoint.request(Method::Post, "/test-groups/create", config, timeout)?;
    if response.status != 200 {
        return Err(format!(
            "creating the group: server answered {}: {}",
            response.status,
            error_message(&response)
        ));
    }
    let header: GroupHeader = serde_json::from_slice(&response.body)
        .map_err(|e| format!("the server's answer to create is not a group: {e}"))?;
    Ok(header.run_group_id.to_string())
}

/// Why a test could not run (no report is written).
#[derive(Debug)]
pub enum RunError {
    /// The server, the group or the report path is not usable, in words.
    Setup(String),
    /// This machine refused a resource the client needs (its event loop).
    Internal(String),
}

/// Runs a whole test against `endpoint`.
pub fn run(
    endpoint: &Endpoint,
    options: &ClientOptions,
    stop: &AtomicBool,
) -> Result<Verdict, RunError> {
    let group = fetch_group(endpoint, &options.group, options.timeout).map_err(RunError::Setup)?;
    // A shard's group holds the other shards' runs.
    match options.shard {
        None => refuse_used_group(&group),
        Some(shard) => shard.check(group.header.config.run_count),
    }
    .map_err(RunError::Setup)?;
    if let Some(shard) = options.shard {
        shard::warn_if_reported(endpoint, &options.group, shard, options.timeout);
    }
    let split = options.shard.unwrap_or(Shard::WHOLE);
    let l4_ports = group.l4;
    let header = group.header;
    let config = &header.config;
    let body = match (&options.data, &config.data) {
        (Some(d), _) => BodyPlan::Fixed(d.clone()),
        (None, Some(d)) => BodyPlan::Fixed(d.as_bytes().to_vec()),
        (None, None) => BodyPlan::Uuid,
    };
    let concurrency = split.concurrency(config.concurrency.max(1) as usize);
    // The embedded server holds the other end of every connection.
    let sides = if options.embedded_server { 2 } else { 1 };
    if let Err(short) = crate::event::check_fd_budget(sides * concurrency as u64) {
        let (who, or) = if options.embedded_server {
            (
                " (client and embedded server)",
                ", or start a separate `conntest server` and pass -r",
            )
        } else {
            ("", "")
        };
        return Err(RunError::Setup(format!(
            "concurrency {concurrency} needs {} open files{who}, but the limit is {}: raise it (ulimit -n {}){or}",
            short.needed, short.limit, short.needed
        )));
    }
    // The report's path is checked before the first run is sent.
    let report = open_report(options.report.as_deref(), options.runs)?;
    let progress = !options.quiet && driver::stderr_is_terminal();
    let cfg = DriverConfig {
        addr: endpoint.addr(),
        host_header: endpoint.host_header(),
        run_path: endpoint.target(&format!("/test-groups/{}/", header.run_group_id)),
        headers: endpoint.run_headers(),
        plan: RunPlan {
            run_count: split.runs(config.run_count),
            first_count: split.first_count(),
            count_stride: split.count,
            concurrency,
            client_delay: split.delay(config.client_delay_ns),
            timeout: (options.timeout.as_nanos() as u64).max(1),
            body: body.clone(),
            progress,
            keep_going: options.keep_going,
        },
        tls: endpoint
            .tls
            .as_ref()
            .map(|c| (Arc::clone(c), endpoint.url.host.clone())),
        proxy: endpoint.proxy_route(),
    };
    let internal = |e: std::io::Error| RunError::Internal(format!("event loop: {e}"));
    let (outcome, gave_up, l4_facts) = match config.l4.protocol {
        Protocol::Http => {
            let (outcome, gave_up) = driver::drive(cfg, stop).map_err(internal)?;
            (outcome, gave_up, None)
        }
        protocol => {
            let addr = l4_target(endpoint, options, protocol, l4_ports)?;
            check_l4_data(&body, config)?;
            let l4 = l4::L4DriverConfig {
                addr,
                protocol,
                tcp_reuse: config.l4.tcp_reuse,
                group: header.run_group_id,
                plan: cfg.plan,
            };
            let (outcome, facts, gave_up) = l4::drive(l4, stop).map_err(internal)?;
            (outcome, gave_up, Some(facts))
        }
    };
    crate::debug!("the runs are done; fetching the server's record");

    // The server's record, once it holds no run of this test in progress,
    // compared run by run. Each phase's time is logged at debug level.
    let phase = std::time::Instant::now();
    let longest = [
        config.server_delay_ns,
        config.upstream_timeout_ns.unwrap_or(0),
    ]
    .into_iter()
    .map(Duration::from_nanos)
    .fold(options.timeout, Duration::max);
    // The report's client runs are written meanwhile, on a thread of their
    // own: they do not depend on the server's record (with every run listed).
    let remote = endpoint.url.to_string();
    let ahead = ReportInput {
        header: &header,
        remote_addr: &remote,
        outcome: &outcome,
        body: &body,
        server_runs: None,
        verdicts: &[],
    };
    let (report, uploaded, fetched) = std::thread::scope(|scope| {
        let report = report.map(|mut report| {
            scope.spawn(move || {
                report.write_ahead(&ahead);
                report
            })
        });
        if !outcome.interrupted {
            wait_until_recorded(endpoint, &options.group, phase + longest, stop);
        }
        let uploaded = options
            .shard
            .map(|shard| {
                let l4 = l4_facts.as_ref();
                upload_shard(endpoint, options, shard, &outcome, &body, l4, stop)
            })
            .transpose();
        let fetched = fetch_record(
            endpoint,
            &options.group,
            options.timeout.max(Duration::from_secs(10)),
            stop,
        );
        let report = report.map(|writer| writer.join()).transpose();
        (report, uploaded, fetched)
    });
    let report =
        report.map_err(|_| RunError::Internal("writing the report's client runs failed".into()))?;
    let (server_runs, fetch_error) = match fetched {
        Ok(runs) => (Some(runs.0), None),
        Err(e) => (None, Some(e)),
    };
    crate::debug!("fetched the server's record in {:?}", phase.elapsed());
    let done = Done {
        header: &header,
        outcome: &outcome,
        body: &body,
        server_runs: server_runs.as_deref(),
        fetch_error,
        l4: l4_facts.as_ref(),
    };
    let output = Output {
        report,
        path: options.report.as_deref(),
        quiet: options.quiet,
    };
    let verdict = verify_and_conclude(endpoint, done, output, stop, |_, summary| {
        summary.tls_insecure = options.insecure;
        summary.shard = options.shard.map(|s| s.label());
        if gave_up.is_some() {
            summary.passed = false;
            summary.stopped_early = gave_up;
        }
    })?;
    // The shard's own report is written; the group's lacks its record.
    uploaded.map_err(RunError::Setup)?;
    Ok(verdict)
}

/// Uploads a shard's record unless the test was interrupted (the group's
/// report then names the shard as never reported).
fn upload_shard(
    endpoint: &Endpoint,
    options: &ClientOptions,
    shard: Shard,
    outcome: &DriverOutcome,
    body: &BodyPlan,
    l4: Option<&l4::L4Facts>,
    stop: &AtomicBool,
) -> Result<(), String> {
    if outcome.interrupted || stop.load(Ordering::Relaxed) {
        eprintln!(
            "conntest: interrupted: shard {}'s record was not uploaded",
            shard.label()
        );
        return Ok(());
    }
    let phase = std::time::Instant::now();
    let timeout = options.timeout.max(Duration::from_secs(10));
    shard::upload(
        endpoint,
        &options.group,
        shard,
        outcome,
        body,
        l4,
        timeout,
        stop,
    )
    .map_err(|e| format!("uploading shard {}'s record: {e}", shard.label()))?;
    crate::debug!(
        "uploaded {} runs in {:?}",
        outcome.runs.len(),
        phase.elapsed()
    );
    Ok(())
}

/// A test whose runs are done, and the server's record of them.
struct Done<'a> {
    header: &'a GroupHeader,
    outcome: &'a DriverOutcome,
    body: &'a BodyPlan,
    server_runs: Option<&'a [RecordedRun]>,
    /// Why the server's record could not be fetched, when it could not.
    fetch_error: Option<String>,
    /// A raw TCP or UDP test's own facts.
    l4: Option<&'a l4::L4Facts>,
}

/// Where a raw test's runs go: `--l4-addr`, else the server's address
/// with the port the group answer names.
fn l4_target(
    endpoint: &Endpoint,
    options: &ClientOptions,
    protocol: Protocol,
    ports: Option<crate::wire::L4Ports>,
) -> Result<std::net::SocketAddr, RunError> {
    if let Some(addr) = options.l4_addr {
        return Ok(addr);
    }
    let ports = ports.unwrap_or_default();
    let port = match protocol {
        Protocol::Udp => ports.udp_port,
        _ => ports.tcp_port,
    };
    match port {
        Some(port) => Ok(std::net::SocketAddr::new(endpoint.addr().ip(), port)),
        None => Err(RunError::Setup(format!(
            "the server did not say where it takes {} runs (no l4.{}_port in the group): give --l4-addr HOST:PORT",
            protocol.name(),
            protocol.name()
        ))),
    }
}

/// A UDP run's data must fit the group's `max_data_bytes`.
fn check_l4_data(body: &BodyPlan, config: &crate::wire::GroupConfig) -> Result<(), RunError> {
    if config.l4.protocol != Protocol::Udp {
        return Ok(());
    }
    let max = config.l4.max_data();
    match body {
        BodyPlan::Fixed(data) if data.len() as u64 > max => Err(RunError::Setup(format!(
            "-d: {} bytes of data, more than the group's max_data_bytes ({max}) lets a datagram carry",
            data.len()
        ))),
        _ => Ok(()),
    }
}

/// Compares a finished test's runs with the server's record, sums them up
/// (`adjust` adds what the caller knows) and concludes.
fn verify_and_conclude(
    endpoint: &Endpoint,
    done: Done<'_>,
    output: Output<'_>,
    stop: &AtomicBool,
    adjust: impl FnOnce(&ReportInput<'_>, &mut Summary),
) -> Result<Verdict, RunError> {
    let phase = std::time::Instant::now();
    let run_count = done.header.config.run_count;
    // Runs never sent get no verdict: the summary counts them (not_sent).
    let mut verdicts = verify::compare(done.outcome, done.body, done.server_runs, run_count);
    let l4_summary = done
        .l4
        .map(|facts| l4::judge(&mut verdicts, done.outcome, facts, done.server_runs));
    crate::debug!("compared {} runs in {:?}", verdicts.len(), phase.elapsed());
    let remote = endpoint.url.to_string();
    let input = ReportInput {
        header: done.header,
        remote_addr: &remote,
        outcome: done.outcome,
        body: done.body,
        server_runs: done.server_runs,
        verdicts: &verdicts,
    };
    let mut summary = summarize(&input, done.fetch_error);
    summary.server_address = Some(endpoint.addr().to_string());
    if let Some(l4) = l4_summary {
        l4::summarize(&mut summary, l4);
    }
    summary.proxy = endpoint.proxy.as_ref().map(ToString::to_string);
    adjust(&input, &mut summary);
    conclude(&input, summary, output, stop)
}

/// Where a finished test's report goes.
struct Output<'a> {
    report: Option<ReportFile>,
    path: Option<&'a Path>,
    quiet: bool,
}

/// Writes the report and the summary of a finished test (one client's, a
/// shard's or a whole sharded group's) and gives its verdict.
fn conclude(
    input: &ReportInput<'_>,
    mut summary: Summary,
    output: Output<'_>,
    stop: &AtomicBool,
) -> Result<Verdict, RunError> {
    if stop.load(Ordering::Relaxed) {
        summary.interrupt();
    }
    let written = match output.report {
        Some(report) => {
            let phase = std::time::Instant::now();
            let written = report.write(input, &mut summary, stop);
            crate::debug!("wrote the report in {:?}", phase.elapsed());
            written
        }
        None => Ok(()),
    };
    // A report that could not be written: the summary is all that is left.
    if !output.quiet || written.is_err() {
        eprintln!("{}", render(&summary));
    }
    if let (Err(e), Some(path)) = (written, output.path) {
        return Err(RunError::Setup(format!(
            "writing the report {}: {e}",
            path.display()
        )));
    }
    // A signal in any phase, even after the report was finished, ends the
    // test as interrupted.
    Ok(if summary.interrupted || stop.load(Ordering::Relaxed) {
        Verdict::Interrupted
    } else if summary.passed {
        Verdict::Passed
    } else {
        Verdict::Failed
    })
}

/// Opens `-f` before anything is sent, so a path that cannot be written
/// fails at once.
fn open_report(path: Option<&Path>, runs: RunsFilter) -> Result<Option<ReportFile>, RunError> {
    path.map(|path| {
        ReportFile::open(path)
            .map(|file| file.with_runs(runs))
            .map_err(|e| RunError::Setup(format!("-f {}: {e}", path.display())))
    })
    .transpose()
}

/// Fetches the server's record on a thread of its own, so that a stop
/// signal that comes during the fetch ends the wait at once: the test is
/// then reported without it. (After a signal during the runs, the record
/// of the runs sent is still fetched; a second signal exits.)
fn fetch_record(
    endpoint: &Endpoint,
    id: &str,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<RecordedRuns, String> {
    let (tx, rx) = mpsc::channel();
    let (endpoint, id) = (endpoint.clone(), id.to_owned());
    std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || {
            let _ = tx.send(fetch_group(&endpoint, &id, timeout).map(|g| g.test_runs));
        })
        .map_err(|e| format!("starting the fetch: {e}"))?;
    let stopped_before = stop.load(Ordering::Relaxed);
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(fetched) => return fetched,
            Err(RecvTimeoutError::Timeout) if !stopped_before && stop.load(Ordering::Relaxed) => {
                return Err("interrupted while fetching it".into())
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("the fetch ended unanswered".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed reader takes what serde takes: runs in the server's own
    /// layout, runs with upstream fields, escapes, spacing and keys in
    /// another order, and the array anywhere in the object.
    #[test]
    fn read_group_reads_what_serde_reads() {
        let id = "6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c";
        let quick = |n: u64| {
            format!(
                r#"{{"run_id":"{id}","run_count":{n},"time":"2026-11-25T08:00:00.000000001Z","data":"same","server_start":"2026-11-25T08:00:00.00000000{n}Z","server_end":"2026-11-25T08:00:01.000000000Z","server_duration_ns":1}}"#
            )
        };
        let runs = [
            quick(1),
            quick(2),
            format!(
                r#" {{ "run_count": 3, "run_id": "{id}", "time": "x", "data": "a\"b\n",
                    "server_start": "2026-11-25T09:00:00+01:00", "server_end": "2026-11-25T08:00:00.5Z",
                    "server_duration_ns": 0, "upstream_response_code": 502, "error": "bad \"gateway\"" }} "#
            ),
            quick(4),
            format!(
                r#"{{"run_id":"{id}","run_count":5,"time":"t","data":"\u00ff","data_base64":"/w==","server_start":"2026-11-25T08:00:00Z","server_end":"2026-11-25T08:00:00Z","server_duration_ns":0}}"#
            ),
            quick(6),
        ]
        .join(",");
        let header = format!(
            r#""run_group_id":"{id}","created_at":"2026-11-25T07:00:00Z","description":"d \"q\"","run_count":6,"concurrency":1,"client_delay_ns":0,"server_delay_ns":0"#
        );
        for json in [
            format!("{{{header},\"test_runs\":[{runs}]}}\n"),
            format!("{{ \"test_runs\" : [{runs}] ,{header}}}"),
        ] {
            let read = read_group(&mut json.as_bytes()).unwrap();
            let serde: GroupJson = serde_json::from_str(&json).unwrap();
            assert_eq!(read.test_runs.0.len(), 6);
            assert_eq!(
                format!("{:?} {:?}", read.header, read.test_runs.0),
                format!("{:?} {:?}", serde.header, serde.test_runs.0)
            );
        }
        let empty = format!("{{{header},\"test_runs\":[]}}");
        assert!(read_group(&mut empty.as_bytes())
            .unwrap()
            .test_runs
            .0
            .is_empty());
        let cut = format!("{{{header},\"test_runs\":[{}", quick(1));
        assert!(read_group(&mut cut.as_bytes()).is_err());
        let bad = format!("{{{header},\"test_runs\":[{},{{\"run_id\":1}}]}}", quick(1));
        match read_group(&mut bad.as_bytes()) {
            Err(e) => assert!(e.starts_with("test run 2:"), "{e}"),
            Ok(_) => panic!("a run that is not one is an error"),
        }
    }
}
