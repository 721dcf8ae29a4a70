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
use conntest::server::api::{Action, Api, ApiPolicy, Next};
use conntest::server::stream::{StoreStream, StreamCtx};
use conntest::store::memory::MemoryStore;
use conntest::store::{Inbox, Op, Run, StoreLimits};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
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
    let store = Arc::new(MemoryStore::new(StoreLimits::default()));
    let api = Api::new(store.clone(), ApiPolicy::default());
    let create = br#"{"description":"bench","run_count":100000,"concurrency":50}"#;
    let created = answer(&api, request(Method::Post, "/test-groups/create", create));
    let Body::Json(created) = created.body else {
        panic!("create answers JSON")
    };
    let id: Uuid = serde_json::from_slice::<serde_json::Value>(&created).expect("JSON")
        ["run_group_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("an id");
    let mut ids = IdGen::new();
    let bodies: Vec<Uuid> = (0..RUNS).map(|_| ids.uuid()).collect();
    for (i, body) in bodies.iter().enumerate() {
        let start = WALL0 + i as i64 * 20_000;
        let run = Run {
            run_id: ids.uuid(),
            run_count: i as u64 + 1,
            server_start: start,
            server_end: start + 3_517,
            data: Arc::from(&b""[..]),
            extra: None,
        };
        store.apply(Op::Begin { id }).expect("room");
        store
            .apply(Op::Record {
                id,
                run,
                body: body.to_string().into_bytes(),
            })
            .expect("room");
    }
    (api, id, bodies)
}

/// The API's answer to a request that is not a run, as the loop makes it
/// with the memory store (which answers at once).
fn answer(api: &Api, request: Request) -> Response {
    let (op, then) = match api.handle(request, WALL0 as i128) {
        Action::Respond(response) => return response,
        Action::Store(op, then) => (op, then),
    };
    let poll = mio::Poll::new().expect("poll");
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
    let inbox = Inbox::new(waker);
    let reply = api.store().submit(op, 0, &inbox).expect("answered at once");
    match api.answer(then, reply) {
        Next::Respond(response) => response,
        Next::Run(_) => panic!("not a run"),
        Next::Stream { id, list, head } => {
            let ctx = StreamCtx {
                store: Arc::clone(api.store()),
                inbox,
                ticket: 0,
                mailbox: Default::default(),
            };
            Response::stream(200, Box::new(StoreStream::new(ctx, id, list, head)))
        }
    }
}

/// The group's JSON as the GET streams it; returns its bytes.
fn get_group(api: &Api, path: &str, out: &mut Vec<u8>) {
    out.clear();
    let Response {
        status: 200,
        body: Body::Stream(mut source),
        ..
    } = answer(api, request(Method::Get, path, b""))
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
            let Response {
                body: Body::Stream(mut source),
                ..
            } = answer(&api, request(Method::Get, &path, b""))
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
            conn.respond(seq, answer(&api, r), 0);
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
                proxy_connect_ns: None,
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
        tls: None,
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
