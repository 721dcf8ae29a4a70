//! `LOG_FORMAT=json`: every line the server logs is one JSON object with
//! `time`, `level` and `message`, for Kubernetes log pipelines.

mod common;

use common::*;

#[test]
fn json_log_lines_are_one_object_each() {
    let server =
        ServerProcess::start_with_env(&[], &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]);
    assert_eq!(request(server.addr, "GET", "/nope", b"").status, 404);
    let (code, log) = stop_and_collect_log(server);
    assert_eq!(code, Some(0), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "start, the 404, stop: {log}");
    for v in &lines {
        let time = v["time"].as_str().expect("time");
        assert!(rfc3339_ns(time) > 0, "{v}");
        assert!(["error", "warn", "info", "debug"].contains(&v["level"].as_str().unwrap_or("")));
        assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{v}");
    }
    let messages: Vec<&str> = lines.iter().filter_map(|v| v["message"].as_str()).collect();
    assert!(messages
        .iter()
        .any(|m| m.contains("listening on 127.0.0.1:")));
    assert!(messages
        .iter()
        .any(|m| m.starts_with("answered 404 to GET /nope")));
}

#[test]
fn an_unknown_log_format_is_refused_in_one_line() {
    let done = run_bounded(
        std::process::Command::new(bin())
            .args(["server", "-p", "0", "--bind", "127.0.0.1"])
            .env("LOG_FORMAT", "yaml"),
        std::time::Duration::from_secs(10),
    );
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert_eq!(
        done.stderr.trim(),
        "conntest: LOG_FORMAT 'yaml' is not one of text, json"
    );
}
