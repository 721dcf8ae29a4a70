//! JSON encoding of a 100 000-run group, server side and client side.
//!
//! - `server_group_json_100k`: `GET /test-groups/{id}` through the real
//!   `Api::handle`, draining the streamed body (`BodySource`) piece by piece
//!   as the server loop does. Runs carry a distinct 36-byte UUID body each.
//! - `server_group_get_100k_via_server_conn`: the same GET fed through a
//!   `ServerConn` (request parse, chunked framing, output drain): the whole
//!   server-side path minus the socket.
//! - `client_compare_100k`: the run-by-run comparison of 100 000 client
//!   runs with the server's 100 000 records.
//! - `client_summarize_100k`: the summary (percentiles, counts) of a
//!   100 000-run test.
//! - `client_report_write_100k`: `ReportFile` writing the 100 000-run report
//!   (client runs, the server's runs, results, summary) to a file in the
//!   temp directory, including its fsync and rename.

use conntest::client::verify::compare;
use conntest::client::GroupJson;
use conntest::event::clock::WallAnchor;
use conntest::http::server::{Body, Request, Response, ServerConn, ServerLimits};
use conntest::http::Method;
use conntest::ids::IdGen;
use conntest::report::summary::summarize;
use conntest::report::{ReportFile, ReportInput};
use conntest::run::{BodyPlan, ClientRun, DriverOutcome, Numbering, RunVerdict};
use conntest::server::api::{Action, Api, ApiPolicy};
use conntest::server::store::{Run, Store, StoreLimits};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const RUNS: u64 = 100_000;
/// Wall-clock nanoseconds of the first run (2024-01-01T00:00:00Z).
const WALL0: i64 = 1_704_067_200_000_000_000;
const MONO0: u64 = 1_000_000_000_000;

fn request(method: Method, path: &str, body: &[u8]) -> Request {
    Request::new(method, path, body.to_vec())
}

/// An API whose store holds one group of `RUNS` recorded runs; returns the
/// API, the group id and the bodies sent (a UUID per run).
fn server_with_group() -> (Api, Uuid, Vec<Uuid>) {
    let api = Api::new(
        Arc::new(Mutex::new(Store::new(StoreLimits::default()))),
        ApiPolicy::default(),
    );
    let create = br#"{"description":"bench","run_count":100000,"concurrency":50}"#;
    match api.handle(
        request(Method::Post, "/test-groups/create", create),
        WALL0 as i128,
    ) {
        Action::Respond(r) => assert_eq!(r.status, 200),
        Action::Run(_) => panic!("create is not a run"),
    }
    let id = api.store().groups()[0].header.run_group_id;
    let mut ids = IdGen::new();
    let bodies: Vec<Uuid> = (0..RUNS).map(|_| ids.uuid()).collect();
    {
        let mut store = api.store();
        for (i, body) in bodies.iter().enumerate() {
            let start = WALL0 + i as i64 * 20_000;
            let run = Run {
                run_id: ids.uuid(),
                run_count: i as u64 + 1,
                server_start: start,
                server_end: start + 3_517,
                data: Arc::from(&b""[..]),
                upstream: None,
            };
            store
                .record(&id, run, body.to_string().as_bytes())
                .expect("room");
        }
    }
    (api, id, bodies)
}

/// The group's JSON as the GET streams it; returns its bytes.
fn get_group(api: &Api, path: &str, out: &mut Vec<u8>) {
    out.clear();
    let Action::Respond(Response {
        status: 200,
        body: Body::Stream(mut source),
        ..
    }) = api.handle(request(Method::Get, path, b""), 0)
    else {
        panic!("GET {path} is not a streamed 200");
    };
    let mut piece = Vec::new();
    loop {
        piece.clear();
        let done = source.fill(&mut piece);
        out.extend_from_slice(&piece);
        if done {
            break;
        }
    }
}

fn server(c: &mut Criterion) -> (Vec<u8>, Vec<Uuid>) {
    let (api, id, bodies) = server_with_group();
    let path = format!("/test-groups/{id}");
    let mut json = Vec::new();
    get_group(&api, &path, &mut json);
    eprintln!("group JSON of {RUNS} runs: {} bytes", json.len());

    let mut group = c.benchmark_group("report");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(RUNS));

    group.bench_function("server_group_json_100k", |b| {
        // Piece by piece, as the server does: only one piece is held at a time.
        b.iter(|| {
            let Action::Respond(Response {
                body: Body::Stream(mut source),
                ..
            }) = api.handle(request(Method::Get, &path, b""), 0)
            else {
                panic!("not a stream");
            };
            let mut piece = Vec::with_capacity(64 * 1024);
            let mut bytes = 0;
            loop {
                piece.clear();
                let done = source.fill(&mut piece);
                bytes += black_box(&piece).len();
                if done {
                    break;
                }
            }
            assert_eq!(bytes, json.len());
        })
    });

    let get = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n").into_bytes();
    group.bench_function("server_group_get_100k_via_server_conn", |b| {
        let mut conn = ServerConn::new(ServerLimits::default(), WallAnchor::capture(), 0);
        b.iter(|| {
            conn.receive(&get, 0);
            let r = conn.next_request(0).expect("a whole request");
            let seq = r.seq;
            match api.handle(r, 0) {
                Action::Respond(response) => conn.respond(seq, response, 0),
                Action::Run(_) => panic!("a GET is not a run"),
            }
            let mut bytes = 0;
            loop {
                let n = conn.poll_output().len();
                if n == 0 {
                    break;
                }
                bytes += n;
                conn.advance_output(n);
            }
            assert!(bytes > json.len());
        })
    });
    group.finish();
    (json, bodies)
}

fn client(c: &mut Criterion, group_json: &[u8], bodies: &[Uuid]) {
    let group_json: GroupJson =
        serde_json::from_slice(group_json).expect("the GET's JSON is a group");
    assert_eq!(group_json.test_runs.0.len() as u64, RUNS);
    let header = group_json.header;
    let server_runs = group_json.test_runs.0;
    // Runs leave back to back (no pacing) every 20 us and take 40 to 80 us.
    let runs: Vec<ClientRun> = bodies
        .iter()
        .enumerate()
        .map(|(i, &uuid)| {
            let start = MONO0 + 1_000 + i as u64 * 20_000;
            ClientRun {
                start,
                end: start + 40_000 + (i as u64 * 7919) % 40_000,
                connect_ns: if i < 50 {
                    NonZeroU64::new(25_000)
                } else {
                    None
                },
                tls_ns: None,
                status: 200,
                body_uuid: Some(uuid),
                failure: None,
            }
        })
        .collect();
    let outcome = DriverOutcome {
        runs,
        started: MONO0,
        finished: MONO0 + RUNS * 20_000 + 100_000,
        client_delay: 0,
        anchor: WallAnchor::fixed(MONO0, WALL0 as i128),
        interrupted: false,
        connections_opened: 50,
        numbering: Numbering::ALL,
    };
    let body = BodyPlan::Uuid;
    let verdicts: Vec<RunVerdict> = compare(&outcome, &body, Some(&server_runs), RUNS);
    assert!(verdicts.iter().all(RunVerdict::is_ok));
    let input = ReportInput {
        header: &header,
        remote_addr: "http://127.0.0.1:8080/",
        outcome: &outcome,
        body: &body,
        server_runs: Some(&server_runs),
        verdicts: &verdicts,
    };

    let mut group = c.benchmark_group("report");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(RUNS));

    group.bench_function("client_compare_100k", |b| {
        b.iter(|| black_box(compare(&outcome, &body, Some(&server_runs), RUNS)))
    });

    group.bench_function("client_summarize_100k", |b| {
        b.iter(|| black_box(summarize(&input, None)))
    });

    let mut summary = summarize(&input, None);
    assert!(summary.passed, "the benched report is of a passing test");
    let path =
        std::env::temp_dir().join(format!("conntest-bench-report-{}.json", std::process::id()));
    let stop = AtomicBool::new(false);
    group.bench_function("client_report_write_100k", |b| {
        b.iter(|| {
            ReportFile::open(&path)
                .and_then(|report| report.write(&input, &mut summary, &stop))
                .expect("report written")
        })
    });
    if let Ok(meta) = std::fs::metadata(&path) {
        eprintln!("client report of {RUNS} runs: {} bytes", meta.len());
    }
    let _ = std::fs::remove_file(&path);
    group.finish();
}

fn benches(c: &mut Criterion) {
    let (json, bodies) = server(c);
    client(c, &json, &bodies);
}

criterion_group!(report, benches);
criterion_main!(report);
