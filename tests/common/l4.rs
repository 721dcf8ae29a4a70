//! Raw TCP and UDP groups (issue 12) in tests: a server taking both on
//! ephemeral ports, a group made and the raw port its answer names, and
//! the harm a report names, run by run.

use super::relay::{Fault, Faults};
use super::{request, ServerProcess};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `conntest server` taking raw TCP and UDP runs on free ports, `extra`
/// after.
pub fn l4_server(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--tcp-port", "0", "--udp-port", "0"];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// Creates a group on the server at `addr`; returns its id and the raw
/// port (of `protocol`) the answer names, on 127.0.0.1.
pub fn create_l4(addr: SocketAddr, config: &str, protocol: &str) -> (String, SocketAddr) {
    let reply = request(addr, "POST", "/test-groups/create", config.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    let id = json["run_group_id"].as_str().unwrap().to_owned();
    (id, l4_addr(&json, protocol))
}

/// The raw port of `protocol` a group's JSON names, on 127.0.0.1.
pub fn l4_addr(group: &Value, protocol: &str) -> SocketAddr {
    let port = group["l4"][format!("{protocol}_port")]
        .as_u64()
        .unwrap_or_else(|| panic!("no l4.{protocol}_port in {group}")) as u16;
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Each failed run's problem kinds, by run count (the report's `results`,
/// whose `error` is `kind: detail; kind: detail`).
pub fn harmed(report: &Value) -> BTreeMap<u64, Vec<String>> {
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

/// One harm of each kind in each direction for a UDP group of at least 33
/// runs, and the kinds its report must name, by run count.
pub fn udp_harm() -> (Faults, BTreeMap<u64, Vec<String>>) {
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
    let expected = [
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
    (faults, expected)
}
