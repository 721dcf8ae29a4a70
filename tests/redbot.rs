//! REDbot (PyPI `redbot`, "lint for HTTP", pinned in scripts/test.sh) checks
//! the answers of the real `conntest server` binary: the group, the list
//! and the health route. It fails on the notes of a missing `Date` header
//! (RFC 9110 requires it of an origin server with a clock) and of an answer
//! any cache may store (a cache on the path must never hand out an old
//! group record). Needs `python3` with redbot.

mod common;

use common::{create_group, request, run_python_ok, ServerProcess};
use serde_json::Value;
use std::time::Duration;

/// REDbot's notes that fail the test: (note id, words of its summary). A
/// note fails when either matches, so a renamed id or a reworded summary
/// is still caught.
const BANNED: [(&str, &str); 3] = [
    ("DATE_CLOCKLESS", "This response doesn't have a Date header"),
    ("STORE_STORABLE", "allows all caches to store it"),
    (
        "STORE_STORABLE_SHARED_ONLY",
        "allows only shared caches to store it",
    ),
];

/// Every note (id, summary) REDbot gives the answer to `GET url`,
/// subnotes included. Fails unless REDbot ran, printed its HAR and checked
/// exactly one answer with `status`.
fn redbot_notes(url: &str, status: u64) -> Vec<(String, String)> {
    let done = run_python_ok(
        &["-m", "redbot.cli", "-o", "har", url],
        Duration::from_secs(60),
        &format!("REDbot on {url}"),
    );
    let har: Value = serde_json::from_str(&done.stdout).unwrap_or_else(|e| {
        panic!(
            "REDbot printed no HAR JSON for {url} ({e}): {:?}",
            done.stdout
        )
    });
    assert!(
        har["log"]["_red_error"].is_null(),
        "REDbot could not check {url}: {}",
        har["log"]["_red_error"]
    );
    let entries = har["log"]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        entries.len(),
        1,
        "REDbot checked {} answers for {url} (no answer: it could not connect?): {}",
        entries.len(),
        done.stdout
    );
    let entry = &entries[0];
    assert_eq!(
        entry["response"]["status"].as_u64(),
        Some(status),
        "REDbot saw another status for {url}: {}",
        entry["response"]
    );
    fn collect(notes: &Value, out: &mut Vec<(String, String)>) {
        for note in notes.as_array().into_iter().flatten() {
            let text = |k: &str| note[k].as_str().unwrap_or_default().to_owned();
            out.push((text("note_id"), text("summary")));
            collect(&note["subnotes"], out);
        }
    }
    let mut notes = Vec::new();
    collect(&entry["_red_messages"], &mut notes);
    assert!(
        notes
            .iter()
            .any(|(id, summary)| !id.is_empty() && !summary.is_empty()),
        "REDbot gave no notes for {url} (it always notes something): {}",
        done.stdout
    );
    notes
}

/// REDbot's notes on `path` of `server` hold none of BANNED.
fn assert_redbot_clean(server: &ServerProcess, path: &str) {
    let url = format!("{}{path}", server.url());
    let notes = redbot_notes(&url, 200);
    let flagged: Vec<String> = notes
        .iter()
        .filter(|(id, summary)| {
            BANNED
                .iter()
                .any(|(bad_id, words)| id == bad_id || summary.contains(words))
        })
        .map(|(id, summary)| format!("{id}: {summary}"))
        .collect();
    assert!(
        flagged.is_empty(),
        "REDbot on GET {path}:\n  {}\n(every note: {notes:?})",
        flagged.join("\n  ")
    );
}

/// A server holding one group with one recorded run; the group's id.
fn server_with_a_group() -> (ServerProcess, String) {
    let server = ServerProcess::start(&[]);
    let id = create_group(server.addr, r#"{"run_count": 2, "concurrency": 1}"#);
    let reply = request(server.addr, "POST", &format!("/test-groups/{id}/1"), b"one");
    assert_eq!(reply.status, 200, "{}", reply.text());
    (server, id)
}

#[test]
fn redbot_on_a_group() {
    let (server, id) = server_with_a_group();
    assert_redbot_clean(&server, &format!("/test-groups/{id}"));
}

#[test]
fn redbot_on_the_group_list() {
    let (server, _) = server_with_a_group();
    assert_redbot_clean(&server, "/test-groups");
}

#[test]
fn redbot_on_the_probes_and_metrics() {
    let (server, id) = server_with_a_group();
    let status = format!("/test-groups/{id}/status");
    for path in ["/healthz", "/readyz", "/metrics", status.as_str()] {
        assert_redbot_clean(&server, path);
    }
}
