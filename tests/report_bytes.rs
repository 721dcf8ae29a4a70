//! The report's bytes for fixed inputs, compared byte for byte with the
//! reports stored under `tests/data/` (written once by the serde-based
//! report writer this test was added with). Any change to how the report
//! is made must keep them identical.
//!
//! `CONNTEST_BLESS=1 cargo test --test report_bytes` rewrites the stored
//! files; do so only when the report's format changes on purpose.

use conntest::client::verify::compare;
use conntest::event::clock::WallAnchor;
use conntest::problem::Problem;
use conntest::report::summary::summarize;
use conntest::report::{ReportFile, ReportInput, RunsFilter};
use conntest::run::{BodyPlan, ClientRun, DriverOutcome, Failure, Numbering};
use conntest::wire::{
    run_json, GroupConfig, GroupHeader, HeaderValues, RecordedRun, RunExtra, UpstreamOutcome,
};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use uuid::Uuid;

/// Wall-clock nanoseconds of the test's start (2026-11-25T08:00:00Z), and
/// the monotonic instant it maps to.
const WALL0: i64 = 1_795_593_600_000_000_000;
const MONO0: u64 = 5_000_000_000;
const RUNS: u64 = 40;

fn uuid(n: u64) -> Uuid {
    Uuid::from_u64_pair(0x6f1c_2b1e_0f6e_4a51, 0x9c7e_0000_0000_0000 | n)
}

/// With `paths`, the group records header values and its runs' records
/// hold them and a client certificate's subject.
fn header(paths: bool) -> GroupHeader {
    GroupHeader {
        run_group_id: uuid(0xabc),
        created_at: "2026-11-25T07:59:59.123456789Z".into(),
        config: GroupConfig {
            description: "bytes \"quoted\"\nline ✓".into(),
            run_count: RUNS,
            concurrency: 3,
            client_delay_ns: 250_000,
            server_delay_ns: 0,
            upstream_endpoint: Some("http://127.0.0.1:9/up".into()),
            upstream_timeout_ns: Some(1_000_000_000),
            data: None,
            record_headers: paths.then(|| vec!["x-forwarded-for".into(), "via".into()]),
            l4: Default::default(),
        },
    }
}

/// Client runs of every kind: answered, failed before an answer, a non-200
/// status, never answered; some opened a connection (and a TLS session).
fn outcome() -> DriverOutcome {
    let runs = (0..RUNS - 2)
        .map(|i| {
            let start = MONO0 + 1_000 + i * 250_000 + (i * 7919) % 977;
            let fail = |problem, detail: &str| {
                Some(Box::new(Failure {
                    problem,
                    detail: detail.into(),
                }))
            };
            let (end, status, failure) = match i {
                5 => (0, 0, fail(Problem::Timeout, "no answer within 1s")),
                9 => (
                    start + 31_337,
                    503,
                    fail(Problem::HttpStatus, "503 \"busy\""),
                ),
                13 => (0, 0, fail(Problem::Reset, "connection reset\tby peer")),
                _ => (start + 40_000 + (i * 104_729) % 60_000, 200, None),
            };
            ClientRun {
                start: if i == 17 { 0 } else { start },
                end: if i == 17 { 0 } else { end },
                connect_ns: NonZeroU64::new(if i % 3 == 0 { 21_000 + i } else { 0 }),
                tls_ns: NonZeroU64::new(if i % 6 == 0 { 90_000 + i } else { 0 }),
                proxy_connect_ns: None,
                status: if i == 17 { 0 } else { status },
                body_uuid: Some(uuid(1000 + i)),
                failure: if i == 17 {
                    fail(Problem::Interrupted, "")
                } else {
                    failure
                },
            }
        })
        .collect();
    DriverOutcome {
        runs,
        started: MONO0,
        finished: MONO0 + RUNS * 250_000 + 77_777,
        client_delay: 250_000,
        anchor: WallAnchor::fixed(MONO0, WALL0 as i128),
        interrupted: false,
        connections_opened: 13,
        tls: None,
        numbering: Numbering::ALL,
    }
}

/// The server's record of `outcome`'s runs (bodies from `body`), with a
/// run missing, one recorded twice, one corrupted, one never sent, upstream
/// outcomes and an error with characters JSON escapes.
fn server_runs(outcome: &DriverOutcome, body: &BodyPlan, paths: bool) -> Vec<RecordedRun> {
    let mut records = Vec::new();
    let mut text = [0u8; 36];
    for (i, run) in outcome.runs.iter().enumerate() {
        if i == 7 || i == 5 || i == 13 || i == 17 {
            continue;
        }
        let mut data: Arc<[u8]> = Arc::from(body.bytes(i, run, &mut text));
        if i == 11 {
            data = Arc::from(&b"\xffnot what was sent\x01"[..]);
        }
        let start = WALL0 + 1_000 + i as i64 * 250_000 + 9_000;
        let upstream = match i % 4 {
            0 => Some(UpstreamOutcome {
                code: 200,
                time_ns: 12_345 + i as u64,
                dns_ns: None,
                connect_ns: Some(3_000 + i as u64),
                tls_ns: None,
                error: None,
            }),
            1 if i == 21 => Some(UpstreamOutcome {
                code: 0,
                time_ns: 1_000_000_000,
                dns_ns: Some(555),
                connect_ns: None,
                tls_ns: Some(777),
                error: Some("timed out: \"up\"\n\\ \u{7}".into()),
            }),
            _ => None,
        };
        let extra = match (upstream, paths) {
            (None, false) => None,
            (upstream, false) => Some(Box::new(RunExtra {
                upstream,
                ..RunExtra::default()
            })),
            (upstream, true) => Some(Box::new(RunExtra {
                upstream,
                client_cert_subject: Some(Arc::from(format!("CN=client {}, O=\"t\"", i % 2))),
                headers: Some(HeaderValues(match i % 3 {
                    0 => vec![],
                    1 => vec![("x-forwarded-for".into(), "127.0.0.1".into())],
                    _ => vec![
                        (
                            "x-forwarded-for".into(),
                            format!("10.0.0.{i}, 127.0.0.1").into(),
                        ),
                        ("via".into(), "1.1 nginx \u{1}\\".into()),
                    ],
                })),
            })),
        };
        let record = RecordedRun {
            run_id: uuid(5000 + i as u64),
            run_count: i as u64 + 1,
            server_start: start,
            server_end: start + 3_517 + i as i64,
            data,
            extra,
        };
        if i == 3 {
            records.push(record.clone());
        }
        records.push(record);
    }
    records.push(RecordedRun {
        run_id: uuid(9999),
        run_count: RUNS + 5,
        server_start: WALL0 - 1,
        server_end: WALL0 - 2,
        data: Arc::from(&b"stray"[..]),
        extra: None,
    });
    records
}

fn stored(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Writes the report of `body` under `filter` and compares it with
/// `tests/data/{name}`.
fn check(name: &str, body: BodyPlan, filter: RunsFilter) {
    check_paths(name, body, filter, false);
}

fn check_paths(name: &str, body: BodyPlan, filter: RunsFilter, paths: bool) {
    let header = header(paths);
    let outcome = outcome();
    let server = server_runs(&outcome, &body, paths);
    let verdicts = compare(&outcome, &body, Some(&server), RUNS);
    let input = ReportInput {
        header: &header,
        remote_addr: "http://127.0.0.1:8080/",
        outcome: &outcome,
        body: &body,
        server_runs: Some(&server),
        verdicts: &verdicts,
    };
    let summary = summarize(&input, None);
    assert!(!summary.passed && summary.histogram.is_some());
    let dir = std::env::temp_dir().join(format!(
        "conntest-report-bytes-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    // In one go, and with the client's runs written ahead while the
    // server's record is not known yet, as `conntest client` does.
    let mut written = Vec::new();
    for ahead in [false, true] {
        let mut report = ReportFile::open(&path).unwrap().with_runs(filter);
        if ahead {
            report.write_ahead(&ReportInput {
                server_runs: None,
                verdicts: &[],
                ..input
            });
        }
        report
            .write(&input, &mut summary.clone(), &AtomicBool::new(false))
            .unwrap();
        written.push(std::fs::read(&path).unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        written[0] == written[1],
        "{name}: written ahead, the report differs"
    );
    let written = written.swap_remove(0);
    let text = String::from_utf8_lossy(&written);
    assert!(text.contains("\"histogram\":{"), "{text}");
    // The server's runs are what serde writes for them.
    if filter == RunsFilter::All {
        let report: serde_json::Value = serde_json::from_slice(&written).unwrap();
        let runs = report["server_run_group"]["test_runs"].as_array().unwrap();
        assert_eq!(runs.len(), server.len());
        for (json, run) in runs.iter().zip(&server) {
            assert_eq!(*json, serde_json::to_value(run_json(run)).unwrap());
        }
    }
    if std::env::var_os("CONNTEST_BLESS").is_some() {
        std::fs::write(stored(name), &written).unwrap();
    }
    let expected = std::fs::read(stored(name)).expect("the stored report");
    if written != expected {
        let at = written
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(written.len().min(expected.len()));
        let from = at.saturating_sub(120);
        panic!(
            "{name}: the report differs from the stored one at byte {at} (lengths {} and {}):\n\
             written: {}\nstored:  {}",
            written.len(),
            expected.len(),
            String::from_utf8_lossy(&written[from..(at + 120).min(written.len())]),
            String::from_utf8_lossy(&expected[from..(at + 120).min(expected.len())]),
        );
    }
}

#[test]
fn uuid_bodies_every_run() {
    check("report-uuid-all.json", BodyPlan::Uuid, RunsFilter::All);
}

#[test]
fn fixed_binary_body_every_run() {
    check(
        "report-fixed-all.json",
        BodyPlan::Fixed(b"\xfe\"fixed\"\n\\body\x7f".to_vec()),
        RunsFilter::All,
    );
}

#[test]
fn fixed_text_body_failed_runs_only() {
    check(
        "report-fixed-failed.json",
        BodyPlan::Fixed("the body ✓ \u{1}".as_bytes().to_vec()),
        RunsFilter::Failed,
    );
}

#[test]
fn record_headers_and_client_certificate_subjects() {
    check_paths(
        "report-paths-all.json",
        BodyPlan::Uuid,
        RunsFilter::All,
        true,
    );
}
