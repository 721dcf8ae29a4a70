//! The sans-IO HTTP/1.1 machines on the run route's hot path.
//!
//! - `server_parse_run_request`: a fresh `ServerConn` holding one typical
//!   run request (`POST /test-groups/<uuid>/123`, 36-byte body) parses it;
//!   only `next_request` is timed.
//! - `server_run_request_cycle` / `_split_in_two_reads`: one kept-alive
//!   `ServerConn` does what the server loop does per run: receive the bytes
//!   (whole, or in two reads split inside the head), parse, answer an empty
//!   200, and drain the output.
//! - `client_parse_ok_response`: a `ClientConn` awaiting one answer parses
//!   `HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n`; only `next_response`
//!   is timed.
//! - `client_serialize_run_request`: `ClientConn::send` of the run request.
//! - `client_run_cycle`: one kept-alive `ClientConn` serializes a run, takes
//!   its answer and parses it, as the load driver does per run.

use conntest::event::clock::WallAnchor;
use conntest::http::client::{ClientConn, ClientLimits, NO_HEADERS};
use conntest::http::server::{Response, ServerConn, ServerLimits};
use conntest::http::Method;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1:8080";
const PATH: &str = "/test-groups/0f8c2a4e-6d1b-4c3a-9e7f-5b2d8a1c3e90/123";
/// A 36-byte body: a UUID, as the client sends by default.
const BODY: &[u8] = b"3b6f1c2e-8a4d-4f6b-9c1e-7d2a5b8e0f13";
const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// The run request exactly as the conntest client writes it.
fn run_request() -> Vec<u8> {
    let mut c = ClientConn::new(ClientLimits::default());
    c.send(Method::Post, HOST, PATH, NO_HEADERS, BODY);
    let bytes = c.poll_output().to_vec();
    assert_eq!(BODY.len(), 36);
    assert!(bytes.starts_with(b"POST /test-groups/"));
    bytes
}

/// Answers every complete request with an empty 200 and drains the output,
/// as the server loop does; returns the requests handled.
fn answer_all(conn: &mut ServerConn) -> usize {
    let mut handled = 0;
    while let Some(request) = conn.next_request(0) {
        black_box(&request.body);
        conn.respond(request.seq, Response::empty(200), 0);
        handled += 1;
    }
    loop {
        let n = conn.poll_output().len();
        if n == 0 {
            break;
        }
        conn.advance_output(n);
    }
    handled
}

fn server(c: &mut Criterion) {
    let request = run_request();
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));

    group.bench_function("server_parse_run_request", |b| {
        b.iter_batched(
            || {
                let mut conn = ServerConn::new(ServerLimits::default(), WallAnchor::capture(), 0);
                conn.receive(&request, 0);
                conn
            },
            |mut conn| {
                let r = conn.next_request(0).expect("a whole request");
                black_box(&r);
                (conn, r)
            },
            BatchSize::SmallInput,
        )
    });

    group.bench_function("server_run_request_cycle", |b| {
        let mut conn = ServerConn::new(ServerLimits::default(), WallAnchor::capture(), 0);
        b.iter(|| {
            conn.receive(black_box(&request), 0);
            assert_eq!(answer_all(&mut conn), 1);
        })
    });

    // Split inside the path: the first read holds a partial head.
    let (first, second) = request.split_at(40);
    group.bench_function("server_run_request_cycle_split_in_two_reads", |b| {
        let mut conn = ServerConn::new(ServerLimits::default(), WallAnchor::capture(), 0);
        b.iter(|| {
            conn.receive(black_box(first), 0);
            assert!(conn.next_request(0).is_none());
            conn.receive(black_box(second), 0);
            assert_eq!(answer_all(&mut conn), 1);
        })
    });
    group.finish();
}

fn client(c: &mut Criterion) {
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));

    group.bench_function("client_parse_ok_response", |b| {
        b.iter_batched(
            || {
                let mut conn = ClientConn::new(ClientLimits::default());
                conn.send(Method::Post, HOST, PATH, NO_HEADERS, BODY);
                let n = conn.poll_output().len();
                conn.advance_output(n);
                conn.receive(OK_RESPONSE);
                conn
            },
            |mut conn| {
                let r = conn
                    .next_response()
                    .expect("well formed")
                    .expect("complete");
                assert_eq!(r.status, 200);
                (conn, r)
            },
            BatchSize::SmallInput,
        )
    });

    // Each send queues one answer owed; a fresh connection every 1024 sends
    // keeps that queue small. Only the sends are timed.
    group.bench_function("client_serialize_run_request", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(1024);
                left -= batch;
                let mut conn = ClientConn::new(ClientLimits::default());
                let start = Instant::now();
                for _ in 0..batch {
                    conn.send(
                        Method::Post,
                        black_box(HOST),
                        black_box(PATH),
                        NO_HEADERS,
                        black_box(BODY),
                    );
                    let n = black_box(conn.poll_output()).len();
                    conn.advance_output(n);
                }
                total += start.elapsed();
            }
            total
        })
    });

    group.bench_function("client_run_cycle", |b| {
        let mut conn = ClientConn::new(ClientLimits::default());
        b.iter(|| {
            conn.send(Method::Post, HOST, PATH, NO_HEADERS, black_box(BODY));
            let n = black_box(conn.poll_output()).len();
            conn.advance_output(n);
            conn.receive(black_box(OK_RESPONSE));
            let r = conn
                .next_response()
                .expect("well formed")
                .expect("complete");
            black_box(r.status)
        })
    });
    group.finish();
}

criterion_group!(benches, server, client);
criterion_main!(benches);
