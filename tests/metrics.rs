//! `GET /metrics` through the real binary: the counters after real runs,
//! the exposition checked whole by the Prometheus Python client's parser
//! (tests/peers/prom_parse.py), no group id in any label, the token guard.

mod common;

use common::*;
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An upstream that answers every GET with 503.
fn upstream_503() -> TestListener {
    TestListener::start(|mut stream: TcpStream| {
        if read_head(&mut stream).is_some() {
            let _ = write_http_response(&mut stream, 503, "Service Unavailable", b"", true);
        }
    })
}

/// Scrapes /metrics and parses the body with prometheus_client: the body
/// and its samples.
fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> (String, Vec<Value>) {
    let reply = call(addr, "GET", "/metrics", headers, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let types: Vec<&(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .collect();
    assert_eq!(
        types,
        [&(
            "Content-Type".to_owned(),
            "text/plain; version=0.0.4; charset=utf-8".to_owned()
        )]
    );
    let body = reply.text();
    let dir = TempDir::new("metrics");
    let file = dir.path("metrics.txt");
    std::fs::write(&file, &body).expect("write the exposition");
    let parsed = run_python_ok(
        &[&peer_script("prom_parse.py"), &file.to_string_lossy()],
        Duration::from_secs(30),
        "prom_parse.py",
    );
    let samples: Vec<Value> =
        serde_json::from_str(&parsed.stdout).expect("prom_parse.py prints a JSON array");
    (body, samples)
}

/// The value of sample `name` with exactly `labels`; 0 when absent.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"].as_object() == Some(&wanted))
        .map_or(0.0, |s| s["value"].as_f64().expect("a numeric value"))
}

fn requests(samples: &[Value], route: &str, status: &str) -> f64 {
    value(
        samples,
        "conntest_http_requests_total",
        &[("route", route), ("status", status)],
    )
}

#[test]
fn metrics_count_runs_requests_connections_and_upstream_outcomes() {
    let upstream = upstream_503();
    let server = ServerProcess::start(&["--threads", "2"]);
    let addr = server.addr;
    let failing = create_group(
        addr,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://{}/"}}"#,
            upstream.addr
        ),
    );
    let unreachable = create_group(
        addr,
        &format!(
            r#"{{"run_count": 1, "upstream_endpoint": "http://127.0.0.1:{}/"}}"#,
            closed_port()
        ),
    );
    let plain = create_group(addr, r#"{"run_count": 2}"#);
    for (id, count) in [(&failing, 1), (&unreachable, 1), (&plain, 1), (&plain, 2)] {
        let reply = request(addr, "POST", &run_path(id, count), b"payload");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let unknown = "0b6f9a52-3c1d-4e8a-9f57-2a1b3c4d5e6f";
    assert_eq!(request(addr, "GET", "/nope", b"").status, 404);
    assert_eq!(
        request(addr, "GET", &format!("/test-groups/{unknown}"), b"").status,
        404
    );
    // A group's record streams from the store, and is counted too.
    assert_eq!(get_group(addr, &plain)["test_runs"][1]["run_count"], 2);

    // Each request closed its connection; wait (bounded) until the loops
    // have closed them too, leaving only the scrape's own.
    let mut scrapes = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, samples) = loop {
        let (body, samples) = scrape(addr, &[]);
        scrapes += 1.0;
        let open = value(&samples, "conntest_open_connections", &[]);
        if open == 1.0 || Instant::now() >= deadline {
            break (body, samples);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{body}");
    assert_eq!(value(&samples, "conntest_open_connections", &[]), 1.0);
    assert_eq!(value(&samples, "conntest_runs_recorded_total", &[]), 4.0);
    assert_eq!(requests(&samples, "/test-groups/{id}/{count}", "200"), 4.0);
    assert_eq!(requests(&samples, "/test-groups/create", "200"), 3.0);
    assert_eq!(requests(&samples, "other", "404"), 1.0);
    assert_eq!(requests(&samples, "/test-groups/{id}", "404"), 1.0);
    assert_eq!(requests(&samples, "/test-groups/{id}", "200"), 1.0);
    // A scrape counts once answered: the ones before this one.
    assert_eq!(requests(&samples, "/metrics", "200"), scrapes - 1.0);
    let outcome = |o| {
        value(
            &samples,
            "conntest_upstream_requests_total",
            &[("outcome", o)],
        )
    };
    assert_eq!(
        (outcome("ok"), outcome("status"), outcome("error")),
        (0.0, 1.0, 1.0)
    );
    assert_eq!(
        value(&samples, "conntest_store_record_seconds_count", &[]),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "conntest_store_record_seconds_bucket",
            &[("le", "+Inf")]
        ),
        4.0
    );
    for id in [failing.as_str(), &unreachable, &plain, unknown] {
        assert!(!body.contains(id), "group id {id} in the metrics");
    }

    // HEAD answers like GET, without the body.
    let head = call(addr, "HEAD", "/metrics", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(head.body.is_empty());
    let (_, samples) = scrape(addr, &[]);
    assert_eq!(requests(&samples, "/metrics", "200"), scrapes + 1.0);
}

#[test]
fn metrics_need_the_token_when_one_is_set() {
    let server = ServerProcess::start(&["--token", "s3cret"]);
    let addr = server.addr;
    let refused = call(addr, "GET", "/metrics", &[], b"");
    assert_json_error_status(&refused, 401);
    let wrong = call(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_json_error_status(&wrong, 401);
    assert_eq!(call(addr, "GET", "/healthz", &[], b"").status, 200);
    let (_, samples) = scrape(addr, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(requests(&samples, "/metrics", "401"), 2.0);
    assert_eq!(requests(&samples, "/healthz", "200"), 1.0);
}
