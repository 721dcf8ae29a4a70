//! Raw TCP and UDP groups (issue 12) through the real binary on loopback:
//! passing runs; a relay between client and server that drops, duplicates,
//! swaps and corrupts chosen runs in one direction, and the report naming
//! exactly those runs and that direction; malformed datagrams and TCP
//! messages counted in /metrics and never recorded.

mod common;

use common::relay::{Fault, Faults, Relay};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn server() -> ServerProcess {
    ServerProcess::start(&["--tcp-port", "0", "--udp-port", "0"])
}

/// Creates a group; returns its id and the raw port the answer names.
fn create(server: &ServerProcess, config: &str, protocol: &str) -> (String, SocketAddr) {
    let json = create_answer(server.addr, config);
    let port = json["l4"][format!("{protocol}_port")]
        .as_u64()
        .expect("l4 port") as u16;
    let id = json["run_group_id"].as_str().unwrap().to_owned();
    (id, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn client(server: &ServerProcess, id: &str, extra: &[&str]) -> (Finished, Value) {
    let dir = TempDir::new("l4");
    let report = dir.path("report.json");
    let url = server.url();
    let mut args = vec!["client", "-r", &url, "-g", id, "-q", "-f"];
    args.push(report.to_str().unwrap());
    args.extend_from_slice(extra);
    let done = run_bounded(&mut conntest_cmd(&dir.0, &args), Duration::from_secs(60));
    let text = std::fs::read(&report).unwrap_or_default();
    let json = serde_json::from_slice(&text).unwrap_or(Value::Null);
    (done, json)
}

/// Each failed run's problem kinds, by run count (the report's `results`,
/// whose `error` is `kind: detail; kind: detail`).
fn harmed(report: &Value) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in report["results"].as_array().expect("results") {
        let Some(error) = r["error"].as_str() else {
            continue;
        };
        let kinds = error
            .split("; ")
            .map(|p| p.split(':').next().unwrap_or(p).to_owned());
        out.entry(r["run_count"].as_u64().unwrap())
            .or_default()
            .extend(kinds);
    }
    out
}

#[test]
fn udp_and_tcp_runs_pass_and_are_recorded() {
    let server = server();
    for (protocol, extra) in [("udp", ""), ("tcp", ""), ("tcp", r#", "tcp_reuse": true"#)] {
        let config =
            format!(r#"{{"run_count": 300, "concurrency": 8, "protocol": "{protocol}"{extra}}}"#);
        let (id, _) = create(&server, &config, protocol);
        let (done, report) = client(&server, &id, &[]);
        assert_eq!(done.code, Some(0), "{protocol}{extra}: {}", done.stderr);
        let summary = &report["summary"];
        assert_eq!(summary["succeeded"], 300, "{summary}");
        assert_eq!(summary["l4"]["protocol"], protocol);
        assert_eq!(summary["l4"]["reached_server"], 300);
        let group = get_group(server.addr, &id);
        assert_eq!(group["test_runs"].as_array().unwrap().len(), 300);
        assert_eq!(group["protocol"], protocol);
        if protocol == "tcp" {
            let opened = summary["connections_opened"].as_u64().unwrap();
            if extra.is_empty() {
                assert_eq!(opened, 300, "a fresh connection per run");
                assert_eq!(summary["connect_ns"]["count"], 300);
            } else {
                assert!(opened <= 8, "{opened} connections for 8 reused");
            }
        }
    }
}

#[test]
fn a_udp_relay_s_harm_is_named_run_by_run_and_by_direction() {
    let server = server();
    let config = r#"{"run_count": 40, "concurrency": 4, "protocol": "udp"}"#;
    let (id, udp) = create(&server, config, "udp");
    let faults = Faults {
        to_server: [
            (5, Fault::Drop),
            (13, Fault::Duplicate),
            (21, Fault::SwapWithNext),
            (29, Fault::Flip),
        ]
        .into(),
        from_server: [
            (9, Fault::Drop),
            (17, Fault::Duplicate),
            (25, Fault::SwapWithNext),
            (33, Fault::Flip),
        ]
        .into(),
    };
    let relay = Relay::udp(udp, faults);
    let target = relay.addr.to_string();
    let (done, report) = client(&server, &id, &["--l4-addr", &target, "--timeout", "1s"]);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let expected: BTreeMap<u64, Vec<String>> = [
        (5, "lost_to_server"),
        (9, "lost_from_server"),
        (13, "duplicated"),
        (17, "duplicated_echo"),
        (21, "reordered"),
        (25, "reordered_echo"),
        (29, "corrupted"),
        (33, "corrupted_echo"),
    ]
    .into_iter()
    .map(|(n, k)| (n, vec![k.to_owned()]))
    .collect();
    assert_eq!(harmed(&report), expected, "{}", report["summary"]);
    let l4 = &report["summary"]["l4"];
    assert_eq!(l4["lost_to_server"], 1);
    assert_eq!(l4["lost_from_server"], 1);
    assert_eq!(l4["loss_to_server_percent"], 2.5);
    assert_eq!(l4["reordered_to_server"], 1);
    assert_eq!(l4["max_reorder_extent_to_server"], 1);
    assert_eq!(l4["reordered_from_server"], 1);
    assert_eq!(report["summary"]["failed"], 8);
    drop(relay);
}

#[test]
fn a_tcp_relay_s_corruption_is_named_by_direction() {
    let server = server();
    let config = r#"{"run_count": 30, "concurrency": 3, "protocol": "tcp"}"#;
    let (id, tcp) = create(&server, config, "tcp");
    let faults = Faults {
        to_server: [(7, Fault::Flip)].into(),
        from_server: [(19, Fault::Flip)].into(),
    };
    let relay = Relay::tcp(tcp, faults);
    let target = relay.addr.to_string();
    let (done, report) = client(&server, &id, &["--l4-addr", &target]);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let expected: BTreeMap<u64, Vec<String>> = [(7, "corrupted"), (19, "corrupted_echo")]
        .into_iter()
        .map(|(n, k)| (n, vec![k.to_owned()]))
        .collect();
    assert_eq!(harmed(&report), expected, "{}", report["summary"]);
}

/// `name{labels} value` from the exposition text.
fn metric(server: &ServerProcess, sample: &str) -> u64 {
    let body = request(server.addr, "GET", "/metrics", b"").text();
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(server: &ServerProcess, sample: &str, value: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    while metric(server, sample) < value && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(metric(server, sample), value, "{sample}");
}

fn message(group: &str, count: u64, len: u32, data: &[u8]) -> Vec<u8> {
    let id = uuid::Uuid::parse_str(group).unwrap();
    let mut m = b"CT4\x01".to_vec();
    m.extend_from_slice(id.as_bytes());
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(data);
    m
}

#[test]
fn what_is_not_ours_is_counted_and_never_recorded() {
    let server = server();
    let (udp_group, udp) = create(&server, r#"{"run_count": 5, "protocol": "udp"}"#, "udp");
    let (tcp_group, tcp) = create(&server, r#"{"run_count": 5, "protocol": "tcp"}"#, "tcp");
    let http_group = create_group(server.addr, r#"{"run_count": 5}"#);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unknown = uuid::Uuid::new_v4().to_string();
    for (datagram, reason) in [
        (b"hello".to_vec(), "header"),
        (
            b"GET / HTTP/1.1\r\n\r\n0123456789012345678901234567890".to_vec(),
            "header",
        ),
        (message(&udp_group, 1, 10, b"short"), "truncated"),
        (message(&udp_group, 1, 1300, &[b'x'; 1300]), "oversized"),
        (message(&unknown, 1, 2, b"ok"), "unknown_group"),
        (message(&tcp_group, 1, 2, b"ok"), "protocol"),
        (message(&http_group, 1, 2, b"ok"), "protocol"),
    ] {
        socket.send_to(&datagram, udp).unwrap();
        let _ = reason;
    }
    let udp_dropped =
        |reason| format!("conntest_l4_dropped_total{{protocol=\"udp\",reason=\"{reason}\"}}");
    wait_for(&server, &udp_dropped("header"), 2);
    wait_for(&server, &udp_dropped("protocol"), 2);
    for reason in ["truncated", "oversized", "unknown_group"] {
        wait_for(&server, &udp_dropped(reason), 1);
    }
    // TCP: a stream that is not ours is closed at its first bad message.
    for (bytes, cut) in [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        (message(&tcp_group, 1, 10, b"short"), true),
        (message(&udp_group, 1, 2, b"ok"), false),
    ] {
        let mut stream = TcpStream::connect(tcp).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&bytes).unwrap();
        if cut {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // The server closes the connection: no echo.
        let read = std::io::Read::read(&mut stream, &mut [0u8; 64]);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let tcp_dropped =
        |reason| format!("conntest_l4_dropped_total{{protocol=\"tcp\",reason=\"{reason}\"}}");
    wait_for(&server, &tcp_dropped("header"), 1);
    wait_for(&server, &tcp_dropped("truncated"), 1);
    wait_for(&server, &tcp_dropped("protocol"), 1);
    for id in [&udp_group, &tcp_group, &http_group] {
        let group = get_group(server.addr, id);
        assert_eq!(group["test_runs"].as_array().unwrap().len(), 0, "{id}");
    }
    assert_eq!(metric(&server, "conntest_runs_recorded_total"), 0);
    // The server is still serving: a real test passes.
    let (id, _) = create(&server, r#"{"run_count": 20, "protocol": "udp"}"#, "udp");
    let (done, _) = client(&server, &id, &[]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[test]
fn refusals_name_the_field() {
    let server = ServerProcess::start(&[]);
    for (body, needle) in [
        (
            r#"{"run_count": 1, "protocol": "udp"}"#,
            "this server takes no udp runs (start it with --udp-port PORT)",
        ),
        (
            r#"{"run_count": 1, "protocol": "udp", "upstream_endpoint": "http://x"}"#,
            "upstream_endpoint is for http groups only",
        ),
    ] {
        let reply = request(server.addr, "POST", "/test-groups/create", body.as_bytes());
        assert_eq!(reply.status, 400);
        assert!(
            reply.json()["error"].as_str().unwrap().contains(needle),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn conntest_run_takes_a_protocol() {
    let dir = TempDir::new("l4run");
    for protocol in ["udp", "tcp"] {
        let done = run_bounded(
            &mut conntest_cmd(
                &dir.0,
                &[
                    "run",
                    "--protocol",
                    protocol,
                    "--run-count",
                    "50",
                    "--concurrency",
                    "4",
                    "-q",
                ],
            ),
            Duration::from_secs(60),
        );
        assert_eq!(done.code, Some(0), "{protocol}: {}", done.stderr);
    }
}

/// A raw port already taken: the server exits 2 with one line naming that
/// port and its protocol (not the HTTP port).
#[test]
fn a_taken_raw_port_is_named() {
    let dir = TempDir::new("l4-bind");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (flag, protocol, port) in [
        ("--udp-port", "udp", udp.local_addr().unwrap().port()),
        ("--tcp-port", "tcp", tcp.local_addr().unwrap().port()),
    ] {
        let port_text = port.to_string();
        let args = ["server", "--bind", "127.0.0.1", "-p", "0", flag, &port_text];
        let done = run_bounded(&mut conntest_cmd(&dir.0, &args), Duration::from_secs(20));
        assert_eq!(done.code, Some(2), "{}", done.stderr);
        let expected = format!("conntest: cannot listen for raw {protocol} runs on port {port}: ");
        assert!(
            done.stderr.starts_with(&expected) && done.stderr.trim_end().lines().count() == 1,
            "{}",
            done.stderr
        );
    }
}

/// Raw TCP connections have the HTTP connections' deadlines: half a header
/// left hanging is cut off after --request-timeout and counted; a
/// connection that says nothing is closed after --idle-timeout.
#[test]
fn a_stalled_raw_connection_is_cut_off() {
    let server = ServerProcess::start(&[
        "--tcp-port",
        "0",
        "--request-timeout",
        "300ms",
        "--idle-timeout",
        "500ms",
    ]);
    let (group, tcp) = create(&server, r#"{"run_count": 5, "protocol": "tcp"}"#, "tcp");
    let closed = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(tcp).unwrap();
        // Far past both timeouts: a read that times out means never closed.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let read = std::io::Read::read(&mut stream, &mut [0u8; 64]);
        assert!(matches!(read, Ok(0)), "not closed by the server: {read:?}");
    };
    let half = message(&group, 1, 2, b"ok");
    closed(&half[..18]);
    wait_for(
        &server,
        "conntest_l4_dropped_total{protocol=\"tcp\",reason=\"timeout\"}",
        1,
    );
    closed(b"");
    // The idle close is not a message dropped.
    assert_eq!(
        metric(
            &server,
            "conntest_l4_dropped_total{protocol=\"tcp\",reason=\"timeout\"}"
        ),
        1
    );
    assert_eq!(
        get_group(server.addr, &group)["test_runs"],
        serde_json::json!([])
    );
}
