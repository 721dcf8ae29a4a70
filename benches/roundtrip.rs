//! Loopback round trips of the client engine against the server engine, in
//! one process: a `Server` bound on 127.0.0.1:0 runs in a thread; groups are
//! created over HTTP with `client::create_group`.
//!
//! One criterion iteration is one run, so the reported time is per run and
//! the throughput is runs/s. A sample of N runs is sent as 2 000-run groups
//! (the last one shorter), each driven from scratch: connections are opened
//! anew for every group and counted in the time.
//!
//! - `driver_c1` / `driver_c50`: `client::driver::drive` alone (the load
//!   loop: connect, send, read, stamp) at concurrency 1 and 50.
//! - `client_run_c1` / `client_run_c50`: `client::run`, end to end as
//!   `conntest client -q` without `-f`: fetch the group, drive it, fetch the
//!   server's record, compare run by run, summarize. Group creation and
//!   deletion are not timed.

use conntest::client::driver::{self, DriverConfig};
use conntest::client::fetch::Endpoint;
use conntest::client::pacing::RunPlan;
use conntest::client::{self, ClientOptions, Verdict};
use conntest::event::clock::SECOND;
use conntest::http::Method;
use conntest::run::BodyPlan;
use conntest::server::{Server, ServerOptions, StopSignal};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const GROUP_RUNS: u64 = 2_000;
const BODY: &str = "3b6f1c2e-8a4d-4f6b-9c1e-7d2a5b8e0f13";
const TIMEOUT: Duration = Duration::from_secs(10);

/// The sizes of the groups that make up a sample of `iters` runs.
fn chunks(iters: u64) -> impl Iterator<Item = u64> {
    let full = iters / GROUP_RUNS;
    let rest = iters % GROUP_RUNS;
    (0..full)
        .map(|_| GROUP_RUNS)
        .chain((rest > 0).then_some(rest))
}

fn create(endpoint: &Endpoint, runs: u64, concurrency: usize) -> String {
    let config = format!(r#"{{"run_count":{runs},"concurrency":{concurrency},"data":"{BODY}"}}"#);
    client::create_group(endpoint, config.as_bytes(), TIMEOUT).expect("group created")
}

fn delete(endpoint: &Endpoint, id: &str) {
    let r = endpoint
        .request(Method::Delete, &format!("/test-groups/{id}"), b"", TIMEOUT)
        .expect("delete");
    assert_eq!(r.status, 200);
}

fn roundtrip(c: &mut Criterion) {
    let server = Server::bind(ServerOptions::default()).expect("bind 127.0.0.1:0");
    let addr = server.local_addrs()[0];
    assert!(addr.ip().is_loopback());
    let stop = StopSignal::default();
    let loop_stop = stop.clone();
    let handle = std::thread::spawn(move || server.run(loop_stop));
    let endpoint = Endpoint::local(addr);
    let never = AtomicBool::new(false);

    let mut group = c.benchmark_group("roundtrip");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));

    for concurrency in [1usize, 50] {
        // One group takes every driver run; its record grows, which the
        // driver never reads. Deleted afterwards.
        let id = create(&endpoint, GROUP_RUNS, concurrency);
        group.bench_function(format!("driver_c{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for runs in chunks(iters) {
                    let cfg = DriverConfig {
                        addr,
                        host_header: endpoint.url.host_header(),
                        run_path: format!("/test-groups/{id}/"),
                        headers: Vec::new(),
                        plan: RunPlan {
                            run_count: runs,
                            first_count: 1,
                            count_stride: 1,
                            concurrency,
                            client_delay: 0,
                            timeout: 10 * SECOND,
                            body: BodyPlan::Fixed(BODY.as_bytes().to_vec()),
                            progress: false,
                            keep_going: false,
                        },
                        tls: None,
                        proxy: None,
                    };
                    let start = Instant::now();
                    let (outcome, _) = driver::drive(cfg, &never).expect("event loop");
                    total += start.elapsed();
                    assert_eq!(outcome.runs.len() as u64, runs);
                    assert!(outcome
                        .runs
                        .iter()
                        .all(|r| r.status == 200 && r.failure.is_none()));
                }
                total
            })
        });
        delete(&endpoint, &id);

        group.bench_function(format!("client_run_c{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for runs in chunks(iters) {
                    let id = create(&endpoint, runs, concurrency);
                    let options = ClientOptions {
                        group: id.clone(),
                        quiet: true,
                        timeout: TIMEOUT,
                        ..ClientOptions::default()
                    };
                    let start = Instant::now();
                    let verdict = client::run(&endpoint, &options, &never).expect("test ran");
                    total += start.elapsed();
                    assert_eq!(verdict, Verdict::Passed);
                    delete(&endpoint, &id);
                }
                total
            })
        });
    }
    group.finish();

    stop.trigger();
    handle.join().expect("server thread").expect("server loop");
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
