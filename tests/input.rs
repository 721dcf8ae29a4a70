//! What the user types, through the real binary: `-d @FILE` and `-d @-`
//! byte for byte, `--insecure` over plain http, tokens (empty ones refused,
//! the Bearer scheme in any case, the start line), `-g` as a UUID, the URL
//! scheme in any case, one-line setup errors that name the flag, the URL
//! and the duration, the create body's messages, and a plot title from a
//! multi-line description.

mod common;
use base64::Engine;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(30);

/// `conntest ARGS` in `cwd` with `env` (and not the caller's token or log
/// level), killed after LIMIT: a hang shows as no exit code.
fn conntest_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    run_bounded(
        Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .env_remove("CONNTEST_TOKEN")
            .env_remove("LOG_LEVEL")
            .envs(env.iter().copied()),
        LIMIT,
    )
}

fn conntest(cwd: &Path, args: &[&str]) -> Finished {
    conntest_env(cwd, args, &[])
}

/// `conntest run --run-count 3 -f report.json EXTRA...` in `dir`, which
/// passes; the report's path.
fn run_with_report(dir: &TempDir, extra: &[&str]) -> PathBuf {
    let report = dir.path("report.json");
    let mut args = vec!["run", "--run-count", "3", "-f", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    let done = conntest(&dir.0, &args);
    assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
    report
}

/// Every run body the server recorded for group `id`, as exact bytes.
fn recorded_bodies(server: &ServerProcess, id: &str) -> Vec<Vec<u8>> {
    runs_of(&get_group(server.addr, id))
        .iter()
        .map(|run| match run["data_base64"].as_str() {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("data_base64 is base64"),
            None => run["data"].as_str().expect("data").as_bytes().to_vec(),
        })
        .collect()
}

/// Creates a group of `runs` runs, runs `conntest client -q EXTRA...` on
/// it, which passes, and returns the bodies the server recorded.
fn client_sends(server: &ServerProcess, dir: &TempDir, runs: u64, extra: &[&str]) -> Vec<Vec<u8>> {
    let id = create_group(server.addr, &format!(r#"{{"run_count": {runs}}}"#));
    let url = server.url();
    let mut args = vec!["client", "-r", &url, "-g", &id, "-q"];
    args.extend_from_slice(extra);
    let done = conntest(&dir.0, &args);
    assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
    recorded_bodies(server, &id)
}

#[test]
fn data_from_a_file_or_standard_input_is_sent_byte_for_byte() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let dir = TempDir::new("input-data");

    // Trailing newlines and NULs, which "$(<file)" loses.
    let text = b"first line\n\0second\0line\n\n\n".to_vec();
    std::fs::write(dir.path("text.txt"), &text).unwrap();
    assert_eq!(
        client_sends(&server, &dir, 3, &["-d", "@text.txt"]),
        vec![text; 3]
    );

    // Standard input, with bytes that are not UTF-8 (data_base64).
    let binary = b"\xff\xfe\0binary\x80\n\n".to_vec();
    std::fs::write(dir.path("binary.bin"), &binary).unwrap();
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    let script = format!(
        "exec '{}' client -r {url} -g {id} -q -d @- < binary.bin",
        bin().display()
    );
    let done = run_bounded(
        Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir.0)
            .env_remove("CONNTEST_TOKEN"),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert_eq!(recorded_bodies(&server, &id), vec![binary; 2]);

    // 600 KB: more than an argument can hold.
    let big: Vec<u8> = (0..600 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.path("big.txt"), &big).unwrap();
    assert_eq!(
        client_sends(&server, &dir, 2, &["-d", "@big.txt"]),
        vec![big; 2]
    );

    // A value without '@' is the body itself, as in the seed's usage.
    assert_eq!(
        client_sends(&server, &dir, 1, &["-d", "literal body"]),
        vec![b"literal body".to_vec()]
    );

    // A file that is not there: one line naming -d and the file.
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let done = conntest(
        &dir.0,
        &["client", "-r", &url, "-g", &id, "-d", "@absent.txt"],
    );
    assert_one_line_usage_error(&done, &["-d", "absent.txt"]);
}

#[test]
fn insecure_over_plain_http_warns_of_nothing() {
    let dir = TempDir::new("input-insecure");
    let report = read_json(&run_with_report(&dir, &["--insecure"]));
    assert_eq!(report["summary"]["tls_insecure"], Value::Bool(false));
    let done = conntest(&dir.0, &["run", "--insecure", "--run-count", "3"]);
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert!(
        !done.stderr.contains("WARNING") && !done.stderr.contains("certificate"),
        "no certificate warning over http: {}",
        done.stderr
    );

    let server = ServerProcess::start(&[]);
    let report = dir.path("client.json");
    let report_arg = report.to_str().unwrap();
    client_sends(&server, &dir, 2, &["--insecure", "-f", report_arg]);
    assert_eq!(
        read_json(&report)["summary"]["tls_insecure"],
        Value::Bool(false)
    );
}

#[test]
fn empty_tokens_are_refused_at_start() {
    let dir = TempDir::new("input-empty-token");
    let empty: &[(&str, &str)] = &[("CONNTEST_TOKEN", "")];
    for (args, env, needle) in [
        (vec!["server", "-p", "0", "--token", ""], &[][..], "--token"),
        (vec!["server", "-p", "0"], empty, "CONNTEST_TOKEN"),
        (
            vec!["run", "--run-count", "1", "--token", ""],
            &[],
            "--token",
        ),
        (vec!["run", "--run-count", "1"], empty, "CONNTEST_TOKEN"),
    ] {
        let done = conntest_env(&dir.0, &args, env);
        assert!(!done.timed_out, "{args:?} started instead of refusing");
        assert_one_line_usage_error(&done, &[needle, "empty"]);
    }
}

#[test]
fn the_bearer_scheme_is_matched_in_any_case() {
    let server = ServerProcess::start(&["--token", "s3cret"]);
    for (header, status) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER  s3cret", 200),
        ("bEaReR s3cret", 200),
        ("Bearer S3CRET", 401),
        ("Basic s3cret", 401),
        ("bearer", 401),
        ("bearers3cret", 401),
    ] {
        let reply = parse_replies(&raw(
            server.addr,
            &req(
                "GET",
                "/test-groups",
                &[("Authorization", header), ("Connection", "close")],
                b"",
            ),
        ));
        assert_eq!(
            reply.first().map(|r| r.status),
            Some(status),
            "Authorization: {header}"
        );
    }
    let log = start_line(&server);
    assert!(log.contains("bearer token required"), "{log}");
    assert!(!log.contains("s3cret"), "the token is never logged: {log}");

    let open = ServerProcess::start(&[]);
    let log = start_line(&open);
    assert!(log.contains("no token required"), "{log}");
}

/// The server's log once its start line is in (the address reaches the
/// harness a moment before the line does).
fn start_line(server: &ServerProcess) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !server.log_text().contains("listening on") && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.log_text()
}

#[test]
fn the_group_must_be_a_uuid() {
    let dir = TempDir::new("input-group");
    // Nothing is sent: the port is closed, so any attempt would say so.
    let url = format!("http://127.0.0.1:{}", closed_port());
    for bad in ["a b", "x\r\nX-Injected: 1", "not-a-uuid", ""] {
        let done = conntest(&dir.0, &["client", "-r", &url, "-g", bad]);
        assert_one_line_usage_error(&done, &["-g", "not a UUID"]);
    }
}

#[test]
fn the_url_scheme_is_matched_in_any_case() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("input-scheme");
    let id = create_group(server.addr, r#"{"run_count": 2}"#);
    let url = format!("HTTP://{}", server.addr);
    let done = conntest(&dir.0, &["client", "-r", &url, "-g", &id, "-q"]);
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let done = conntest(
        &dir.0,
        &[
            "run",
            "-r",
            &format!("Http://{}", server.addr),
            "--run-count",
            "2",
            "-q",
        ],
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
}

/// Some other web server: 501 and an HTML page for everything.
fn not_conntest(mut stream: TcpStream) {
    if read_head(&mut stream).is_none() {
        return;
    }
    let page = "<!DOCTYPE html>\n<html>\n<head><title>501 Not Implemented</title></head>\n\
                <body>\n<h1>Not Implemented</h1>\n<p>The method is not supported.</p>\n\
                </body>\n</html>\n";
    let _ = write!(
        stream,
        "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{page}",
        page.len()
    );
}

#[test]
fn a_server_that_is_not_conntest_gives_one_line() {
    let other = TestListener::start(not_conntest);
    let dir = TempDir::new("input-not-conntest");
    let url = format!("http://{}", other.addr);
    let id = "6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c";
    let done = conntest(&dir.0, &["client", "-r", &url, "-g", id]);
    assert_one_line_usage_error(&done, &["501", "not a conntest"]);
    let done = conntest(&dir.0, &["run", "-r", &url, "--run-count", "1"]);
    assert_one_line_usage_error(&done, &["501", "not a conntest"]);
}

#[test]
fn flag_errors_name_the_flag() {
    let dir = TempDir::new("input-flags");
    for (args, needle) in [
        (
            vec!["run", "--concurrency", "-5"],
            "--concurrency: '-5' is not a whole number",
        ),
        (
            vec!["run", "--run-count", "many"],
            "--run-count: 'many' is not a whole number",
        ),
        (vec!["run", "--timeout", "soon"], "--timeout: 'soon'"),
        (
            vec!["server", "--threads", "-1"],
            "--threads: '-1' is not a positive whole number",
        ),
        (vec!["server", "-p", "http"], "-p: 'http' is not a port"),
        (vec!["run", "--run-count"], "--run-count: needs a value"),
    ] {
        let done = conntest(&dir.0, &args);
        assert_one_line_usage_error(&done, &[needle]);
    }
}

#[test]
fn a_setup_timeout_names_the_url_and_the_duration() {
    // Reads the request and never answers (until the test ends).
    let silent = TestListener::start(|mut stream| {
        if read_head(&mut stream).is_some() {
            hold(&AtomicBool::new(false), Duration::from_secs(10));
        }
    });
    let dir = TempDir::new("input-timeout");
    let url = format!("http://{}", silent.addr);
    let id = "6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c";
    let done = conntest(
        &dir.0,
        &["client", "-r", &url, "-g", id, "--timeout", "300ms"],
    );
    assert_one_line_usage_error(&done, &[&url, "300ms", "--timeout"]);
    let done = conntest(
        &dir.0,
        &["run", "-r", &url, "--run-count", "1", "--timeout", "300ms"],
    );
    assert_one_line_usage_error(&done, &[&url, "300ms"]);
}

#[test]
fn create_body_messages() {
    let server = ServerProcess::start(&[]);
    let create = |body: &[u8]| request(server.addr, "POST", "/test-groups/create", body);
    let reply = create(br#"{"run_count": 100000000000000000000}"#);
    assert_error(&reply, 400, "run_count must be at most 100000000");
    let reply = create(br#"{"run_count":1,"run_count":2}"#);
    assert_error(&reply, 400, "'run_count' is given twice");
    let reply = create(br#"{"run_count": 1, "description": "a", "description": "b"}"#);
    assert_error(&reply, 400, "'description' is given twice");
    // A byte order mark, as some editors save, is skipped.
    let reply = create(b"\xEF\xBB\xBF{\"run_count\": 4}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["run_count"], 4);
}

#[test]
fn a_multi_line_description_gives_a_plot() {
    let dir = TempDir::new("input-plot");
    let description = "first line\nsecond line\r\n\tand 'quotes'";
    let report = run_with_report(&dir, &["-q", "--description", description]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/plot.sh");
    let done = run_bounded(
        Command::new("bash")
            .arg(&script)
            .current_dir(&dir.0)
            .env("REPORT_FILE", &report)
            .env("TMPDIR", &dir.0),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "plot.sh failed: {}", done.stderr);
    let png = std::fs::read(dir.path("roundtrip-plot.png")).expect("the plot is written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}
