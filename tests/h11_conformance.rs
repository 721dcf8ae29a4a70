//! An independent strict peer: Python's h11 (a pure-Python HTTP/1.1 state
//! machine written by others) drives the real `conntest server` binary and
//! checks the framing of every byte of every answer
//! (`tests/peers/h11_peer.py`, one scenario per test). Needs `python3`
//! with h11 (`scripts/test.sh` installs it); the script fails loudly
//! without it.

mod common;

use common::{peer_script, run_python_ok, ServerProcess};
use std::time::Duration;

/// The request timeout and body limit the `errors` scenario is built for.
const ERROR_LIMITS: [&str; 4] = ["--request-timeout", "1s", "--max-body", "4096"];

/// Starts a server with `server_args` and runs one h11 scenario on it;
/// fails with the peer's message unless every check passed.
fn h11_scenario(scenario: &str, server_args: &[&str]) {
    let server = ServerProcess::start(server_args);
    let addr = server.addr.to_string();
    let done = run_python_ok(
        &[&peer_script("h11_peer.py"), &addr, scenario],
        Duration::from_secs(180),
        &format!("h11 peer, scenario {scenario}"),
    );
    assert!(
        done.stdout.contains(&format!("ok {scenario} ")),
        "the h11 peer did not report scenario {scenario} as run:\n{}",
        done.stdout
    );
}

#[test]
fn h11_keep_alive_across_many_requests() {
    h11_scenario("keep-alive", &[]);
}

/// Groups of 975 and 1 000 runs with UUID bodies and of 512 runs of 3 000
/// bytes, twice each on one keep-alive connection: nothing may follow an
/// answer (a finished streamed body sent twice shows as a stray
/// `3\r\n]}\n\r\n0\r\n\r\n`).
#[test]
fn h11_big_groups_back_to_back_on_one_connection() {
    h11_scenario("big-groups", &[]);
}

/// The same groups over HTTP/1.0: the close ends the body, which must be
/// one JSON document (not `...]}\n]}\n`).
#[test]
fn h11_big_groups_over_http10() {
    h11_scenario("big-groups-http10", &[]);
}

#[test]
fn h11_http10_with_and_without_keep_alive() {
    h11_scenario("http10", &[]);
}

#[test]
fn h11_pipelined_requests() {
    h11_scenario("pipelining", &[]);
}

#[test]
fn h11_expect_100_continue() {
    h11_scenario("expect-continue", &[]);
}

#[test]
fn h11_chunked_uploads() {
    h11_scenario("chunked-upload", &[]);
}

#[test]
fn h11_head_requests() {
    h11_scenario("head", &[]);
}

/// A 4 KiB receive buffer, 4 KiB reads with a pause: the server's
/// streaming must resume correctly after every partial write.
#[test]
fn h11_slow_reader_of_big_groups() {
    h11_scenario("slow-reader", &[]);
}

#[test]
fn h11_slow_reader_of_big_groups_over_http10() {
    h11_scenario("slow-reader-http10", &[]);
}

/// 400, 404, 405 on a connection that goes on; 400 (malformed), 408, 413
/// and 431 with a close.
#[test]
fn h11_error_answers() {
    h11_scenario("errors", &ERROR_LIMITS);
}
