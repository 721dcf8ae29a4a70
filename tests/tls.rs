//! TLS end to end, all on 127.0.0.1 through the real binaries: a CA and
//! leaf certificates made here at run time (rcgen); `conntest run` and
//! `conntest client` against an https conntest server (`--cacert`,
//! `SSL_CERT_FILE`, `--insecure`); every TLS error (untrusted certificate,
//! wrong host name, plain HTTP to a TLS port, a handshake cut short, a peer
//! that never speaks) as a clear message and never a hang; the server's
//! https upstreams (`--upstream-cacert`, errors, timeouts); and handshakes
//! split into single bytes, through a byte-at-a-time TCP proxy and through
//! `conntest::tls::Transport` values driven in memory.

mod common;
use common::pki::Pki;
use common::*;
use conntest::tls::{client_config, server_config, Identity, Transport, Verifying};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this (and the test fails).
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Certificates (common::pki)

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `conntest server --tls-cert --tls-key` with a fresh leaf for `names`.
fn tls_server(pki: &Pki, file: &str, names: &[&str]) -> ServerProcess {
    let (cert, key) = pki.leaf(file, names);
    ServerProcess::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)])
}

// ---------------------------------------------------------------------------
// Running the client

fn conntest_cmd(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("CONNTEST_TOKEN")
        .env_remove("LOG_LEVEL")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    cmd
}

fn finish_bounded(mut cmd: Command, what: &str) -> Finished {
    let done = run_bounded(&mut cmd, LIMIT);
    assert!(
        !done.timed_out,
        "{what} did not finish within {LIMIT:?} (a hang)\nstderr: {}",
        done.stderr
    );
    done
}

/// Runs `conntest ARGS` in `cwd` to completion (bounded).
fn conntest(cwd: &Path, args: &[&str]) -> Finished {
    finish_bounded(conntest_cmd(cwd, args), &format!("conntest {args:?}"))
}

/// Runs `conntest run -r REMOTE OPTIONS -f REPORT` in `cwd` (bounded).
fn conntest_run(cwd: &Path, remote: &str, options: &[&str], report: &Path) -> Finished {
    let mut args = vec!["run", "-r", remote];
    args.extend_from_slice(options);
    args.extend(["-f", s(report)]);
    conntest(cwd, &args)
}

/// `conntest run --insecure --run-count 3 --timeout TIMEOUT` against a
/// listener on 127.0.0.1:`port`.
fn run_insecure_against(dir: &TempDir, port: u16, timeout: &str, report: &Path) -> Finished {
    conntest_run(
        &dir.0,
        &format!("https://127.0.0.1:{port}"),
        &["--insecure", "--run-count", "3", "--timeout", timeout],
        report,
    )
}

/// Asserts that `done` exited 0, with its stderr and the server's log in the
/// message.
fn assert_exit_ok(done: &Finished, server: &ServerProcess) {
    assert_eq!(
        done.code,
        Some(0),
        "stderr: {}\nserver log: {}",
        done.stderr,
        server.log_text()
    );
}

fn client_runs(report: &Value) -> &Vec<Value> {
    report["client_run_group"]["test_runs"]
        .as_array()
        .expect("client_run_group.test_runs")
}

fn server_runs(group: &Value) -> &Vec<Value> {
    group["test_runs"].as_array().expect("test_runs")
}

/// The one line a setup error prints: exit 2, one line, no report.
fn assert_setup_error(done: &Finished, report: &Path, mentions: &[&str]) -> String {
    assert_eq!(
        done.code,
        Some(2),
        "a setup error exits 2\nstdout: {}\nstderr: {}",
        done.stdout,
        done.stderr
    );
    let text = done.stderr.trim();
    assert_eq!(
        text.lines().count(),
        1,
        "a setup error is one line on stderr: {text:?}"
    );
    let lower = text.to_lowercase();
    for m in mentions {
        assert!(
            lower.contains(&m.to_lowercase()),
            "the error mentions {m:?}: {text:?}"
        );
    }
    assert!(
        !report.exists(),
        "no report is written on a setup error ({})",
        report.display()
    );
    text.to_owned()
}

/// Checks a passing https report: every connection shook hands, and each
/// run that opened a connection carries its connect and handshake times.
fn assert_tls_timings(report: &Value, expect_connections: Option<u64>) {
    let summary = &report["summary"];
    assert_eq!(summary["passed"], true, "{summary}");
    let opened = u(&summary["connections_opened"]);
    if let Some(n) = expect_connections {
        assert_eq!(opened, n, "connections opened (keep-alive): {summary}");
    }
    assert!(opened >= 1);
    assert_eq!(
        u(&summary["tls_handshake_ns"]["count"]),
        opened,
        "one handshake per connection: {summary}"
    );
    assert_eq!(
        u(&summary["connect_ns"]["count"]),
        opened,
        "one connect per connection: {summary}"
    );
    assert!(u(&summary["tls_handshake_ns"]["max"]) > 0);
    assert_eq!(summary["tls_insecure"], false);
    let runs = client_runs(report);
    let mut with_handshake = 0;
    for run in runs {
        let connect = run.get("connect_ns");
        let handshake = run.get("tls_handshake_ns");
        assert_eq!(
            connect.is_some(),
            handshake.is_some(),
            "a run that opened a TLS connection has both connect_ns and tls_handshake_ns: {run}"
        );
        if let (Some(c), Some(h)) = (connect, handshake) {
            with_handshake += 1;
            assert!(u(c) > 0 && u(h) > 0, "{run}");
        }
        assert_eq!(run["status"], 200, "{run}");
        assert!(run.get("error").is_none(), "{run}");
    }
    assert_eq!(
        with_handshake, opened,
        "the runs that opened a connection are the ones with handshake times"
    );
}

// ---------------------------------------------------------------------------
// An independent https client (rustls directly, with its own trust)

/// A TLS client session trusting only `ca`, for `host`.
fn client_session(ca: &CertificateDer<'static>, host: &str) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA into the root store");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    rustls::ClientConnection::new(Arc::new(config), name).expect("session")
}

fn https_request(
    port: u16,
    host: &str,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Reply {
    let session = client_session(ca, host);
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    tls.write_all(&req).expect("https write");
    tls.flush().expect("https flush");
    let mut out = Vec::new();
    // The server may close without close_notify: what arrived still counts.
    let _ = tls.read_to_end(&mut out);
    parse_replies(&out)
        .into_iter()
        .rfind(|r| r.status >= 200)
        .unwrap_or_else(|| panic!("no https answer: {:?}", String::from_utf8_lossy(&out)))
}

fn https_create_group(port: u16, ca: &CertificateDer<'static>, config: &str) -> String {
    let reply = https_request(
        port,
        "localhost",
        ca,
        "POST",
        "/test-groups/create",
        config.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["run_group_id"]
        .as_str()
        .expect("run_group_id")
        .to_owned()
}

// ---------------------------------------------------------------------------
// Client to an https conntest server

#[test]
fn run_and_client_against_an_https_server() {
    let pki = Pki::new("tls-ok");
    let server = tls_server(&pki, "leaf", &["localhost", "127.0.0.1"]);
    let port = server.addr.port();
    let remote = format!("https://localhost:{port}");

    // The one-command run: 300 runs over 4 keep-alive connections.
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &remote,
        &[
            "--cacert",
            s(&pki.ca),
            "--run-count",
            "300",
            "--concurrency",
            "4",
        ],
        &report,
    );
    assert_eq!(
        done.code,
        Some(0),
        "https run passes\nstderr: {}\nserver log: {}",
        done.stderr,
        server.log_text()
    );
    assert!(
        !done.stderr.contains("WARNING"),
        "no --insecure warning: {}",
        done.stderr
    );
    let json = read_json(&report);
    assert_eq!(u(&json["summary"]["runs"]), 300);
    assert_eq!(u(&json["summary"]["succeeded"]), 300);
    // What the path agreed to is in the summary.
    let agreed = &json["summary"]["tls"];
    assert_eq!(agreed["version"], "TLSv1.3", "{agreed}");
    assert_eq!(agreed["alpn"], "http/1.1", "{agreed}");
    assert!(
        agreed["cipher_suite"]
            .as_str()
            .is_some_and(|s| s.starts_with("TLS13_")),
        "{agreed}"
    );
    assert_eq!(client_runs(&json).len(), 300);
    assert_tls_timings(&json, Some(4));
    assert!(
        json["client_run_group"]["remote_addr"]
            .as_str()
            .is_some_and(|r| r.starts_with("https://localhost:")),
        "{}",
        json["client_run_group"]["remote_addr"]
    );

    // `conntest client` against a group created over https (by an
    // independent client).
    let id = https_create_group(
        port,
        &pki.ca_der,
        r#"{"run_count": 40, "concurrency": 2, "description": "tls client"}"#,
    );
    let report2 = pki.path("client.json");
    let done = conntest(
        &pki.dir.0,
        &[
            "client",
            "-r",
            &remote,
            "-g",
            &id,
            "--cacert",
            s(&pki.ca),
            "-f",
            s(&report2),
        ],
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let json = read_json(&report2);
    assert_tls_timings(&json, Some(2));
    assert_eq!(u(&json["summary"]["succeeded"]), 40);
    let group = https_request(
        port,
        "localhost",
        &pki.ca_der,
        "GET",
        &format!("/test-groups/{id}"),
        b"",
    );
    assert_eq!(group.status, 200, "{}", group.text());
    assert_eq!(server_runs(&group.json()).len(), 40);

    // The IP address in the certificate works as a name too.
    let report3 = pki.path("ip.json");
    let done = conntest(
        &pki.dir.0,
        &[
            "run",
            "-r",
            &format!("https://127.0.0.1:{port}"),
            "--cacert",
            s(&pki.ca),
            "--run-count",
            "20",
            "--concurrency",
            "2",
            "-q",
            "-f",
            s(&report3),
        ],
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert_tls_timings(&read_json(&report3), Some(2));
}

#[test]
fn ssl_cert_file_instead_of_cacert() {
    let pki = Pki::new("tls-env");
    let server = tls_server(&pki, "leaf", &["localhost", "127.0.0.1"]);
    let report = pki.path("report.json");
    let mut cmd = conntest_cmd(
        &pki.dir.0,
        &[
            "run",
            "-r",
            &format!("https://localhost:{}", server.addr.port()),
            "--run-count",
            "50",
            "--concurrency",
            "2",
            "-f",
            s(&report),
        ],
    );
    cmd.env("SSL_CERT_FILE", &pki.ca);
    let done = finish_bounded(cmd, "conntest run with SSL_CERT_FILE");
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    assert_tls_timings(&read_json(&report), Some(2));
}

#[test]
fn insecure_accepts_an_untrusted_certificate_and_says_so() {
    let pki = Pki::new("tls-insecure");
    // Trusted by no one, and not even for this name.
    let server = tls_server(&pki, "leaf", &["other.example"]);
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &format!("https://localhost:{}", server.addr.port()),
        &["--insecure", "--run-count", "30", "--concurrency", "3"],
        &report,
    );
    assert_eq!(done.code, Some(0), "stderr: {}", done.stderr);
    let warning = done
        .stderr
        .lines()
        .find(|l| l.starts_with("WARNING"))
        .unwrap_or_else(|| panic!("a WARNING line in the summary: {}", done.stderr));
    assert!(
        warning.contains("--insecure") || warning.contains("not verified"),
        "{warning}"
    );
    let json = read_json(&report);
    assert_eq!(json["summary"]["tls_insecure"], true, "{}", json["summary"]);
    assert_eq!(json["summary"]["passed"], true);
    let opened = u(&json["summary"]["connections_opened"]);
    assert_eq!(opened, 3);
    assert_eq!(u(&json["summary"]["tls_handshake_ns"]["count"]), opened);
}

// ---------------------------------------------------------------------------
// Client-side errors: clear, one line, exit 2, never a hang

#[test]
fn untrusted_certificate_is_a_setup_error() {
    let pki = Pki::new("tls-untrusted");
    let server = tls_server(&pki, "leaf", &["localhost", "127.0.0.1"]);
    let remote = format!("https://localhost:{}", server.addr.port());
    let report = pki.path("report.json");

    // No --cacert: the platform's roots do not know this CA. The error
    // names the host, what was presented and the flags that fix it.
    let done = conntest(
        &pki.dir.0,
        &["run", "-r", &remote, "--run-count", "5", "-f", s(&report)],
    );
    assert_setup_error(
        &done,
        &report,
        &[
            "the certificate of localhost",
            "subject 'CN=localhost'",
            "issuer 'CN=conntest test CA tls-untrusted'",
            "not trusted",
            "--cacert",
            "--insecure",
        ],
    );

    // Another CA does not help either.
    let other = Pki::new("tls-other-ca");
    let done = conntest_run(
        &pki.dir.0,
        &remote,
        &["--cacert", s(&other.ca), "--run-count", "5"],
        &report,
    );
    assert_setup_error(&done, &report, &["not trusted"]);

    // `conntest client` says the same.
    let id = https_create_group(server.addr.port(), &pki.ca_der, r#"{"run_count": 5}"#);
    let done = conntest(
        &pki.dir.0,
        &["client", "-r", &remote, "-g", &id, "-f", s(&report)],
    );
    assert_setup_error(&done, &report, &["not trusted"]);

    // The server shrugs it off.
    let health = https_request(
        server.addr.port(),
        "localhost",
        &pki.ca_der,
        "GET",
        "/healthz",
        b"",
    );
    assert_eq!(health.status, 200);
}

#[test]
fn wrong_host_name_is_a_setup_error() {
    let pki = Pki::new("tls-name");
    let server = tls_server(&pki, "leaf", &["other.example"]);
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &format!("https://localhost:{}", server.addr.port()),
        &["--cacert", s(&pki.ca), "--run-count", "5"],
        &report,
    );
    let message = assert_setup_error(
        &done,
        &report,
        &[
            "not valid for the name 'localhost'",
            "it names other.example",
        ],
    );
    assert!(
        !message.contains("not trusted"),
        "the CA is trusted; the name is what is wrong: {message}"
    );
}

/// A certificate outside its validity says when it was (or will be) valid.
#[test]
fn an_expired_or_not_yet_valid_certificate_says_when_it_is_valid() {
    for (tag, from, to, words) in [
        (
            "tls-expired",
            2020,
            2021,
            &[
                "has expired",
                "2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z",
            ][..],
        ),
        (
            "tls-future",
            2090,
            2091,
            &[
                "is not valid yet",
                "valid from 2090-01-01T00:00:00Z to 2091-01-01T00:00:00Z",
                "check the clocks",
            ],
        ),
    ] {
        let pki = Pki::new(tag);
        let (cert, key) = pki.leaf_with("leaf", &["localhost"], |p| {
            p.not_before = rcgen::date_time_ymd(from, 1, 1);
            p.not_after = rcgen::date_time_ymd(to, 1, 1);
        });
        let server = ServerProcess::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)]);
        let report = pki.path("report.json");
        let done = conntest_run(
            &pki.dir.0,
            &format!("https://localhost:{}", server.addr.port()),
            &["--cacert", s(&pki.ca), "--run-count", "2"],
            &report,
        );
        assert_setup_error(&done, &report, words);
    }
}

/// A self-signed certificate that is not a CA (CA:FALSE), untrusted: the
/// error says self-signed and how to pin it; given with --cacert it passes.
#[test]
fn a_self_signed_end_entity_certificate_is_named_and_pinned() {
    let dir = TempDir::new("tls-selfsigned-leaf");
    // Not `localhost`: Debian's snakeoil certificate, trusted here, has
    // that name (a case of its own, below).
    let (cert, key) = common::pki::self_signed(&dir.0, "leaf", "127.0.0.1", false);
    let server = ServerProcess::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    let remote = format!("https://127.0.0.1:{}", server.addr.port());
    let report = dir.path("report.json");
    let message = assert_setup_error(
        &conntest_run(&dir.0, &remote, &["--run-count", "2"], &report),
        &report,
        &[
            "the certificate of 127.0.0.1 (subject 'CN=127.0.0.1', issuer 'CN=127.0.0.1', self-signed",
            "is self-signed and not trusted here",
            "--cacert FILE (pinned by exact match)",
            "--insecure",
        ],
    );
    assert!(!message.contains("CA:TRUE"), "{message}");
    // Another self-signed certificate of the same name, trusted, is named
    // as what it is (as Debian's snakeoil, CN=localhost, would be).
    let (other, _) = common::pki::self_signed(&dir.0, "other", "127.0.0.1", false);
    assert_setup_error(
        &conntest_run(&dir.0, &remote, &["--cacert", s(&other), "--run-count", "2"], &report),
        &report,
        &[
            "is self-signed and not trusted here: the certificate trusted here with its name (subject 'CN=127.0.0.1'",
            "is another one, and a name match is not a chain",
            "--cacert FILE (pinned by exact match)",
        ],
    );
    let done = conntest_run(
        &dir.0,
        &remote,
        &["--cacert", s(&cert), "--run-count", "2"],
        &report,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

/// `--resolve` sends the name to an address; the certificate is still
/// checked against the URL's name (and SNI carries it).
#[test]
fn resolve_keeps_the_urls_name_for_tls() {
    let pki = Pki::new("tls-resolve");
    let server = tls_server(&pki, "leaf", &["conntest.invalid"]);
    let port = server.addr.port();
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &format!("https://conntest.invalid:{port}"),
        &[
            "--resolve",
            &format!("conntest.invalid:{port}:127.0.0.1"),
            "--cacert",
            s(&pki.ca),
            "--run-count",
            "3",
        ],
        &report,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[test]
fn mutual_tls_requires_and_checks_the_client_certificate() {
    let pki = Pki::new("tls-mutual");
    let (cert, key) = pki.leaf("server", &["localhost"]);
    let server = ServerProcess::start(&[
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--tls-client-ca",
        s(&pki.ca),
    ]);
    let remote = format!("https://localhost:{}", server.addr.port());
    let (client_cert, client_key) = pki.client_leaf("client", "conntest client");
    let trust = ["--cacert", s(&pki.ca), "--run-count", "5"];

    let report = pki.path("report.json");
    let mut args = trust.to_vec();
    args.extend(["--cert", s(&client_cert), "--key", s(&client_key)]);
    let done = conntest_run(&pki.dir.0, &remote, &args, &report);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    // Each run's record names the client certificate it came with.
    let json = read_json(&report);
    let runs = server_runs(&json["server_run_group"]);
    assert_eq!(runs.len(), 5);
    for run in runs {
        assert_eq!(run["client_cert_subject"], "CN=conntest client", "{run}");
    }

    let none = pki.path("none.json");
    let done = conntest_run(&pki.dir.0, &remote, &trust, &none);
    assert_setup_error(&done, &none, &["requires a client certificate", "--cert"]);

    let other = Pki::new("tls-mutual-other");
    let (other_cert, other_key) = other.client_leaf("client", "conntest client");
    let refused = pki.path("refused.json");
    let mut args = trust.to_vec();
    args.extend(["--cert", s(&other_cert), "--key", s(&other_key)]);
    let done = conntest_run(&pki.dir.0, &remote, &args, &refused);
    assert_setup_error(&done, &refused, &["refused the client certificate"]);
}

/// `openssl req -x509 ... -subj /CN=host` makes a self-signed certificate
/// marked CA:TRUE; curl accepts it given with --cacert, and so do we: the
/// exact certificate is pinned. Without it, the error says what it is.
#[test]
fn a_self_signed_ca_certificate_given_with_cacert_is_pinned() {
    let dir = TempDir::new("tls-selfsigned");
    let (cert_path, key_path) = common::pki::self_signed(&dir.0, "cert", "localhost", true);
    let server = ServerProcess::start(&["--tls-cert", s(&cert_path), "--tls-key", s(&key_path)]);
    let remote = format!("https://localhost:{}", server.addr.port());
    let report = dir.path("report.json");

    let done = conntest_run(
        &dir.0,
        &remote,
        &["--cacert", s(&cert_path), "--run-count", "3"],
        &report,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);

    let refused = dir.path("refused.json");
    let done = conntest_run(&dir.0, &remote, &["--run-count", "3"], &refused);
    assert_setup_error(
        &done,
        &refused,
        &["CA:TRUE", "self-signed", "--cacert", "pinned"],
    );
}

/// A trusted certificate with the issuer's name is not the issuer: the
/// error names the certificate that was tried (as Debian's snakeoil, also
/// CN=localhost, was taken for a test certificate's issuer).
#[test]
fn a_trusted_certificate_of_the_same_name_is_named_when_it_did_not_sign() {
    let real = Pki::new("tls-same-name");
    let impostor = Pki::new("tls-same-name");
    let server = tls_server(&real, "leaf", &["localhost"]);
    let report = real.path("report.json");
    let done = conntest_run(
        &real.dir.0,
        &format!("https://localhost:{}", server.addr.port()),
        &["--cacert", s(&impostor.ca), "--run-count", "2"],
        &report,
    );
    assert_setup_error(
        &done,
        &report,
        &[
            "the certificate trusted here with its issuer's name (subject 'CN=conntest test CA tls-same-name'",
            "did not sign it",
            "--cacert",
        ],
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_a_clear_400() {
    let pki = Pki::new("tls-plain");
    let server = tls_server(&pki, "leaf", &["localhost", "127.0.0.1"]);
    let port = server.addr.port();

    // Raw HTTP over TCP.
    for request in [
        &b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &b"POST /test-groups/create HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"[..],
    ] {
        let replies = parse_replies(&raw(server.addr, request));
        assert_eq!(
            replies.len(),
            1,
            "one answer to {:?}",
            String::from_utf8_lossy(request)
        );
        let reply = &replies[0];
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(reply
            .header("content-type")
            .is_some_and(|v| v.contains("application/json")));
        let error = reply.json()["error"].as_str().expect("error").to_owned();
        assert!(
            error.contains("HTTPS") && error.contains("https://"),
            "the answer says the port speaks HTTPS: {error}"
        );
    }

    // The client with http:// says why.
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &format!("http://localhost:{port}"),
        &["--run-count", "5"],
        &report,
    );
    assert_setup_error(&done, &report, &["400", "HTTPS"]);

    // The server still serves https.
    let health = https_request(port, "localhost", &pki.ca_der, "GET", "/healthz", b"");
    assert_eq!(health.status, 200);
}

/// What a misbehaving "TLS server" does with a connection.
#[derive(Clone, Copy, Debug)]
enum CutShort {
    /// Closes at once, without reading.
    CloseAtOnce,
    /// Reads the ClientHello, then closes.
    CloseAfterHello,
    /// Reads the ClientHello, sends the start of a handshake record, closes.
    HalfARecord,
    /// Answers the ClientHello with plain HTTP.
    AnswersHttp,
}

/// Accepts, reads whatever comes, never answers; leaves when the peer
/// closes or errors, or after a bounded time.
fn silent_listener() -> TestListener {
    TestListener::start(|mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

fn misbehaving_tls(kind: CutShort) -> TestListener {
    TestListener::start(move |mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if !matches!(kind, CutShort::CloseAtOnce) {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
        }
        match kind {
            CutShort::HalfARecord => {
                // Handshake, TLS 1.2, 0x50 bytes announced, 3 sent.
                let _ = stream.write_all(&[0x16, 0x03, 0x03, 0x00, 0x50, 0x02, 0x00, 0x00]);
            }
            CutShort::AnswersHttp => {
                let _ = write_http_response(&mut stream, 200, "OK", b"{}", true);
            }
            _ => {}
        }
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Write);
    })
}

#[test]
fn a_handshake_cut_short_is_a_clear_error_not_a_hang() {
    let dir = TempDir::new("tls-cut");
    let report = dir.path("report.json");
    for (kind, mentions) in [
        (CutShort::CloseAfterHello, &["handshake"][..]),
        (CutShort::HalfARecord, &["handshake"][..]),
        (CutShort::AnswersHttp, &["tls"][..]),
    ] {
        let listener = misbehaving_tls(kind);
        let done = run_insecure_against(&dir, listener.addr.port(), "10s", &report);
        eprintln!("{kind:?}: {}", done.stderr.trim());
        assert_setup_error(&done, &report, mentions);
    }
    // Closed before the ClientHello was even read: the kernel may answer
    // with a reset rather than an orderly close; either way it must say
    // the handshake did not happen.
    let listener = misbehaving_tls(CutShort::CloseAtOnce);
    let done = run_insecure_against(&dir, listener.addr.port(), "10s", &report);
    eprintln!("CloseAtOnce: {}", done.stderr.trim());
    let message = assert_setup_error(&done, &report, &[]);
    let lower = message.to_lowercase();
    assert!(
        lower.contains("handshake"),
        "a connection closed or reset before the TLS handshake completed says so: {message}"
    );
}

#[test]
fn a_peer_that_never_speaks_tls_times_out() {
    let dir = TempDir::new("tls-silent");
    let report = dir.path("report.json");
    // Accepts, reads, says nothing; gives up after a bounded time.
    let listener = silent_listener();
    let done = run_insecure_against(&dir, listener.addr.port(), "1s", &report);
    eprintln!("silent peer: {}", done.stderr.trim());
    let message = assert_setup_error(&done, &report, &[]);
    let lower = message.to_lowercase();
    assert!(
        lower.contains("timed out") || lower.contains("timeout"),
        "a peer that never answers the ClientHello is a timeout: {message}"
    );
}

// ---------------------------------------------------------------------------
// The server to https upstreams

/// Creates a group with `config` on a plain server, runs it with
/// `conntest client`, and returns the client's exit code, its report and the
/// server's record of the group.
fn run_upstream_group(
    main: &ServerProcess,
    dir: &TempDir,
    config: &str,
) -> (Finished, Value, Value) {
    let id = create_group(main.addr, config);
    let report = dir.path(&format!("report-{id}.json"));
    let done = conntest(
        &dir.0,
        &["client", "-r", &main.url(), "-g", &id, "-f", s(&report)],
    );
    let json = read_json(&report);
    let group = get_group(main.addr, &id);
    (done, json, group)
}

fn assert_upstreams_ok(group: &Value, count: usize) {
    let runs = server_runs(group);
    assert_eq!(runs.len(), count, "{group}");
    for run in runs {
        assert_eq!(run["upstream_response_code"], 200, "{run}");
        assert!(run.get("error").is_none(), "no upstream error: {run}");
        let connect = run["upstream_connect_ns"].as_u64();
        let tls = run["upstream_tls_ns"].as_u64();
        assert!(connect.is_some_and(|c| c > 0), "upstream_connect_ns: {run}");
        assert!(
            tls.is_some_and(|t| t > 0),
            "upstream_tls_ns: {run}\nall: {group}"
        );
    }
}

/// Every server run recorded an upstream error mentioning all of `mentions`;
/// the client failed the test with one upstream error per run.
fn assert_upstream_errors(
    done: &Finished,
    report: &Value,
    group: &Value,
    count: u64,
    mentions: &[&str],
) {
    assert_eq!(
        done.code,
        Some(1),
        "upstream errors fail the test\nstderr: {}",
        done.stderr
    );
    assert_eq!(
        u(&report["summary"]["errors"]["upstream"]),
        count,
        "{}",
        report["summary"]
    );
    let runs = server_runs(group);
    assert_eq!(runs.len() as u64, count, "{group}");
    for run in runs {
        let error = run["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an upstream error is recorded: {run}"));
        let lower = error.to_lowercase();
        for m in mentions {
            assert!(
                lower.contains(&m.to_lowercase()),
                "the upstream error mentions {m:?}: {error}"
            );
        }
    }
}

#[test]
fn https_upstream_verified_with_upstream_cacert() {
    let pki = Pki::new("tls-up");
    let upstream = tls_server(&pki, "up", &["localhost"]);
    let endpoint = format!("https://localhost:{}/healthz", upstream.addr.port());
    let config = format!(
        r#"{{"run_count": 20, "concurrency": 4, "upstream_endpoint": "{endpoint}", "upstream_timeout_ns": 10000000000}}"#
    );

    // Trusted with --upstream-cacert.
    let main = ServerProcess::start(&["--upstream-cacert", s(&pki.ca)]);
    let (done, report, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_exit_ok(&done, &main);
    assert_eq!(report["summary"]["passed"], true);
    assert_upstreams_ok(&group, 20);
    // The report carries the server's record as the server showed it.
    assert_upstreams_ok(&report["server_run_group"], 20);
    drop(main);

    // Trusted through SSL_CERT_FILE on the server.
    let main = ServerProcess::start_with_env(&[], &[("SSL_CERT_FILE", s(&pki.ca))]);
    let (done, _, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_eq!(
        done.code,
        Some(0),
        "SSL_CERT_FILE on the server\nstderr: {}",
        done.stderr
    );
    assert_upstreams_ok(&group, 20);
}

#[test]
fn https_upstream_errors_are_recorded_per_run() {
    let pki = Pki::new("tls-up-err");
    let upstream = tls_server(&pki, "up", &["localhost"]);
    let endpoint = format!("https://localhost:{}/healthz", upstream.addr.port());

    // No trust for the upstream's CA.
    let main = ServerProcess::start(&[]);
    let config = format!(
        r#"{{"run_count": 6, "concurrency": 3, "upstream_endpoint": "{endpoint}", "upstream_timeout_ns": 10000000000}}"#
    );
    let (done, report, group) = run_upstream_group(&main, &pki.dir, &config);
    // The fix named is the server's own flag: it has no --insecure.
    assert_upstream_errors(
        &done,
        &report,
        &group,
        6,
        &[
            "certificate",
            "not trusted",
            "trust its CA with --upstream-cacert FILE",
        ],
    );
    for run in server_runs(&group) {
        assert!(
            !run["error"].as_str().unwrap_or("").contains("--insecure"),
            "{run}"
        );
    }
    drop(main);

    // Trusted, but the certificate is for another name.
    let wrong = tls_server(&pki, "wrong", &["other.example"]);
    let main = ServerProcess::start(&["--upstream-cacert", s(&pki.ca)]);
    let config = format!(
        r#"{{"run_count": 4, "concurrency": 2, "upstream_endpoint": "https://localhost:{}/healthz", "upstream_timeout_ns": 10000000000}}"#,
        wrong.addr.port()
    );
    let (done, report, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_upstream_errors(
        &done,
        &report,
        &group,
        4,
        &["not valid for the name 'localhost'"],
    );

    // https:// to a plain HTTP server.
    let plain = ServerProcess::start(&[]);
    let config = format!(
        r#"{{"run_count": 4, "concurrency": 2, "upstream_endpoint": "https://localhost:{}/healthz", "upstream_timeout_ns": 10000000000}}"#,
        plain.addr.port()
    );
    let (done, report, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_upstream_errors(&done, &report, &group, 4, &["tls"]);

    // A handshake cut short.
    let cut = misbehaving_tls(CutShort::CloseAfterHello);
    let config = format!(
        r#"{{"run_count": 4, "concurrency": 2, "upstream_endpoint": "https://127.0.0.1:{}/", "upstream_timeout_ns": 10000000000}}"#,
        cut.addr.port()
    );
    let (done, report, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_upstream_errors(&done, &report, &group, 4, &["handshake"]);
}

#[test]
fn https_upstream_that_never_speaks_tls_times_out() {
    let dir = TempDir::new("tls-up-silent");
    // Accepts TCP, reads the ClientHello, never answers; leaves when the
    // server gives up (or after a bounded time).
    let silent = silent_listener();
    let main = ServerProcess::start(&[]);
    let config = format!(
        r#"{{"run_count": 4, "concurrency": 4, "upstream_endpoint": "https://127.0.0.1:{}/", "upstream_timeout_ns": 200000000}}"#,
        silent.addr.port()
    );
    let (done, report, group) = run_upstream_group(&main, &dir, &config);
    let runs = server_runs(&group);
    for run in runs {
        let error = run["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains("timed out") || error.contains("timeout"),
            "the upstream error mentions the timeout: {run}"
        );
        assert!(run["upstream_connect_ns"].as_u64().is_some(), "{run}");
        assert!(run.get("upstream_tls_ns").is_none(), "no handshake: {run}");
    }
    assert_upstream_errors(&done, &report, &group, 4, &[]);
}

// ---------------------------------------------------------------------------
// Handshakes split into single bytes: a TCP proxy

/// A TCP proxy on 127.0.0.1 that forwards each direction one byte per read
/// and one byte per (flushed, Nagle-free) write.
struct ByteProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    _listener: TestListener,
}

impl ByteProxy {
    fn start(target: SocketAddr) -> ByteProxy {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (flag, conns, count) = (
            Arc::clone(&stop),
            Arc::clone(&connections),
            Arc::clone(&bytes),
        );
        let listener = TestListener::start_for(Duration::from_secs(120), 1000, move |client| {
            conns.fetch_add(1, Ordering::Relaxed);
            let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                return;
            };
            for (from, to) in [(&client, &server), (&server, &client)] {
                let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                    continue;
                };
                let (flag, count) = (Arc::clone(&flag), Arc::clone(&count));
                std::thread::spawn(move || forward_bytes(from, to, &flag, &count));
            }
        });
        ByteProxy {
            addr: listener.addr,
            stop,
            connections,
            bytes,
            _listener: listener,
        }
    }
}

fn forward_bytes(mut from: TcpStream, mut to: TcpStream, stop: &AtomicBool, count: &AtomicU64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = to.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = from.set_nodelay(true);
    let _ = to.set_nodelay(true);
    let until = Instant::now() + Duration::from_secs(120);
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        match from.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                if to.write_all(&byte).and_then(|_| to.flush()).is_err() {
                    break;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for ByteProxy {
    fn drop(&mut self) {
        // The forwarders stop; the listener stops accepting as it drops.
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn handshakes_through_a_byte_at_a_time_proxy() {
    let pki = Pki::new("tls-proxy");
    let server = tls_server(&pki, "leaf", &["localhost"]);
    let proxy = ByteProxy::start(server.addr);
    let report = pki.path("report.json");
    let done = conntest_run(
        &pki.dir.0,
        &format!("https://localhost:{}", proxy.addr.port()),
        &[
            "--cacert",
            s(&pki.ca),
            "--run-count",
            "50",
            "--concurrency",
            "2",
        ],
        &report,
    );
    assert_exit_ok(&done, &server);
    let json = read_json(&report);
    assert_eq!(u(&json["summary"]["succeeded"]), 50);
    assert_tls_timings(&json, Some(2));
    // The 2 test connections, the create and the 2 group fetches.
    assert!(proxy.connections.load(Ordering::Relaxed) >= 3);
    assert!(proxy.bytes.load(Ordering::Relaxed) > 10_000);
}

#[test]
fn https_upstream_through_a_byte_at_a_time_proxy() {
    let pki = Pki::new("tls-up-proxy");
    let upstream = tls_server(&pki, "up", &["localhost"]);
    let proxy = ByteProxy::start(upstream.addr);
    let main = ServerProcess::start(&["--upstream-cacert", s(&pki.ca)]);
    let config = format!(
        r#"{{"run_count": 10, "concurrency": 2, "upstream_endpoint": "https://localhost:{}/healthz", "upstream_timeout_ns": 10000000000}}"#,
        proxy.addr.port()
    );
    let (done, _, group) = run_upstream_group(&main, &pki.dir, &config);
    assert_exit_ok(&done, &main);
    assert_upstreams_ok(&group, 10);
    assert_eq!(proxy.connections.load(Ordering::Relaxed), 10);
}

// ---------------------------------------------------------------------------
// Handshakes split into single bytes: Transport values in memory

/// A socket that takes one byte per write call and would block on every
/// other call.
#[derive(Default)]
struct OneByteSocket {
    wire: Vec<u8>,
    block_next: bool,
    writes: u64,
}

impl Write for OneByteSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.block_next = !self.block_next;
        if !self.block_next {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Some(&b) = buf.first() else {
            return Ok(0);
        };
        self.wire.push(b);
        self.writes += 1;
        Ok(1)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One side of an in-memory TLS connection.
struct Side {
    transport: Transport,
    socket: OneByteSocket,
    /// Plaintext still to offer to `Transport::write`.
    outgoing: Vec<u8>,
    /// Plaintext decoded from the peer.
    received: Vec<u8>,
    /// Ciphertext the peer wrote and this side has not decoded yet.
    read_pos: usize,
    decodes: u64,
}

impl Side {
    fn new(transport: Transport) -> Side {
        Side {
            transport,
            socket: OneByteSocket::default(),
            outgoing: Vec::new(),
            received: Vec::new(),
            read_pos: 0,
            decodes: 0,
        }
    }

    /// Offers outgoing plaintext (or handshake records) to the socket.
    fn send(&mut self) -> Result<(), String> {
        let n = self
            .transport
            .write(&self.outgoing, &mut self.socket)
            .map_err(|e| format!("write: {e}"))?;
        self.outgoing.drain(..n);
        Ok(())
    }
}

/// Moves at most one byte of ciphertext from `from`'s socket into `to`.
fn deliver_one(from: &Side, to: &mut Side) -> Result<bool, String> {
    let Some(&b) = from.socket.wire.get(to.read_pos) else {
        return Ok(false);
    };
    to.read_pos += 1;
    to.decodes += 1;
    let plain = to.transport.decode(&[b])?.to_vec();
    to.received.extend_from_slice(&plain);
    Ok(true)
}

/// Steps both sides until `done` holds; each step writes what is owed and
/// delivers at most one byte each way. Bounded in steps; a stall (nothing
/// written or delivered for many steps) is an error.
fn step_until(
    client: &mut Side,
    server: &mut Side,
    what: &str,
    done: impl Fn(&Side, &Side) -> bool,
) -> Result<u64, String> {
    let progress = |c: &Side, s: &Side| {
        (
            c.socket.wire.len(),
            s.socket.wire.len(),
            c.read_pos,
            s.read_pos,
            c.outgoing.len(),
            s.outgoing.len(),
        )
    };
    let mut last = progress(client, server);
    let mut idle = 0;
    for step in 0..1_000_000u64 {
        if done(client, server) {
            return Ok(step);
        }
        client.send().map_err(|e| format!("client {e}"))?;
        server.send().map_err(|e| format!("server {e}"))?;
        deliver_one(client, server).map_err(|e| format!("server decode: {e}"))?;
        deliver_one(server, client).map_err(|e| format!("client decode: {e}"))?;
        let now = progress(client, server);
        if now == last {
            idle += 1;
            if idle > 10 {
                return Err(format!("stalled before {what} (after {step} steps)"));
            }
        } else {
            idle = 0;
            last = now;
        }
    }
    Err(format!("{what} did not happen within the step bound"))
}

fn in_memory_pair(pki: &Pki, names: &[&str], server_name: &str, trust: bool) -> (Side, Side) {
    let (cert, key) = pki.leaf("mem", names);
    let server_cfg = server_config(Identity::load(&cert, &key, ("cert", "key")).unwrap(), None)
        .expect("server config");
    let client_cfg = if trust {
        client_config(&[pki.ca.as_path()], false, None, Verifying::Client)
    } else {
        client_config(&[], false, None, Verifying::Client)
    }
    .expect("client config");
    let client = Transport::tls_client(&client_cfg, server_name).expect("client transport");
    let server = Transport::tls_server(&server_cfg).expect("server transport");
    assert!(client.is_tls() && server.is_tls());
    assert!(client.is_handshaking() && server.is_handshaking());
    (Side::new(client), Side::new(server))
}

#[test]
fn transport_handshake_fed_one_byte_per_decode() {
    let pki = Pki::new("tls-mem");
    let (mut client, mut server) = in_memory_pair(&pki, &["localhost"], "localhost", true);

    // The handshake, from empty writes only.
    let steps = step_until(&mut client, &mut server, "the handshake", |c, s| {
        !c.transport.is_handshaking() && !s.transport.is_handshaking()
    })
    .expect("handshake");
    assert!(
        steps > 100,
        "the handshake took many one-byte steps: {steps}"
    );
    assert!(client.decodes > 100 && server.decodes > 100);
    assert!(client.socket.writes > 100 && server.socket.writes > 100);
    assert!(client.received.is_empty() && server.received.is_empty());

    // A request larger than one TLS record, byte by byte.
    let request: Vec<u8> = (0..40_000u32)
        .map(|i| b"POST /x HTTP/1.1 conntest "[(i % 26) as usize])
        .collect();
    client.outgoing = request.clone();
    step_until(&mut client, &mut server, "the request", |_, s| {
        s.received.len() >= request.len()
    })
    .expect("request");
    assert_eq!(server.received, request, "the request round-trips");

    // And an answer back.
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    server.outgoing = answer.clone();
    step_until(&mut client, &mut server, "the answer", |c, _| {
        c.received.len() >= answer.len()
    })
    .expect("answer");
    assert_eq!(client.received, answer);
    assert!(!client.transport.peer_closed() && !server.transport.peer_closed());
}

#[test]
fn transport_plaintext_written_before_the_handshake_completes() {
    let pki = Pki::new("tls-mem-early");
    let (mut client, mut server) = in_memory_pair(&pki, &["localhost"], "localhost", true);
    // The HTTP machine hands its request over at once; it leaves after the
    // handshake.
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    client.outgoing = request.clone();
    step_until(&mut client, &mut server, "the early request", |_, s| {
        s.received.len() >= request.len()
    })
    .expect("early request");
    assert_eq!(server.received, request);
    assert!(!client.transport.is_handshaking() && !server.transport.is_handshaking());
}

#[test]
fn transport_errors_name_their_cause() {
    let pki = Pki::new("tls-mem-err");

    // Untrusted.
    let (mut client, mut server) = in_memory_pair(&pki, &["localhost"], "localhost", false);
    let err = step_until(&mut client, &mut server, "a failure", |_, _| false).unwrap_err();
    assert!(err.contains("not trusted"), "{err}");

    // Wrong name.
    let (mut client, mut server) = in_memory_pair(&pki, &["other.example"], "localhost", true);
    let err = step_until(&mut client, &mut server, "a failure", |_, _| false).unwrap_err();
    assert!(err.contains("not valid for the name 'localhost'"), "{err}");

    // Plain HTTP to a TLS server.
    let (_, mut server) = in_memory_pair(&pki, &["localhost"], "localhost", true);
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let err = server
        .transport
        .decode(request)
        .map(|p| p.to_vec())
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");
    assert!(conntest::tls::looks_like_http(request));
    assert!(!conntest::tls::looks_like_http(&[0x16, 0x03, 0x01]));

    // A bad server name is refused up front.
    let cfg = client_config(&[pki.ca.as_path()], false, None, Verifying::Client).unwrap();
    assert!(Transport::tls_client(&cfg, "not a name!").is_err());
}

/// A request and the client's close_notify in one TCP write: the server
/// reads both at once and must still answer the request.
#[test]
fn a_request_and_close_notify_in_one_read_are_answered() {
    let pki = Pki::new("tls-close-notify");
    let server = tls_server(&pki, "leaf", &["localhost"]);
    let mut session = client_session(&pki.ca_der, "localhost");
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while session.is_handshaking() {
        session.complete_io(&mut tcp).expect("handshake");
    }
    session
        .writer()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    session.send_close_notify();
    let mut flight = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut flight).unwrap();
    }
    tcp.write_all(&flight).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match session.read_tls(&mut tcp) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let state = session.process_new_packets().expect("TLS from the server");
                let mut plain = vec![0; state.plaintext_bytes_to_read()];
                let n = session.reader().read(&mut plain).unwrap_or(0);
                out.extend_from_slice(&plain[..n]);
            }
        }
    }
    let replies = parse_replies(&out);
    assert_eq!(
        replies.first().map(|r| r.status),
        Some(200),
        "no answer: {:?}",
        String::from_utf8_lossy(&out)
    );
}

// ---------------------------------------------------------------------------
// The server's Redis store over TLS (`rediss://`)

#[test]
fn a_rediss_store_is_verified_against_the_platform_trust() {
    let pki = Pki::new("rediss");
    let (cert, key) = pki.leaf("redis", &["localhost"]);
    let tls_port = closed_port();
    let redis = common::cluster::RedisProcess::start_with_args(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        s(&cert),
        "--tls-key-file",
        s(&key),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/0");
    let ready = |server: &ServerProcess, status| {
        common::cluster::wait_status(server.addr, "/readyz", status, Duration::from_secs(10))
    };
    // Trusted through SSL_CERT_FILE: groups and runs go over TLS.
    let server =
        ServerProcess::start_with_env(&["--store", &url], &[("SSL_CERT_FILE", s(&pki.ca))]);
    assert!(ready(&server, 200), "{}", server.log_text());
    let id = create_group(server.addr, r#"{"run_count": 1}"#);
    let run = request(
        server.addr,
        "POST",
        &format!("/test-groups/{id}/1"),
        b"over tls",
    );
    assert_eq!(run.status, 200, "{}", run.text());
    assert_eq!(
        get_group(server.addr, &id)["test_runs"][0]["data"],
        "over tls"
    );
    // Another CA: never ready, and /readyz says why.
    let other = Pki::new("rediss-other");
    let untrusted =
        ServerProcess::start_with_env(&["--store", &url], &[("SSL_CERT_FILE", s(&other.ca))]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let why = loop {
        let reply = request(untrusted.addr, "GET", "/readyz", b"");
        assert_eq!(reply.status, 503, "{}", reply.text());
        // "not connected yet" until the first handshake has failed.
        if reply.text().contains("certificate") || Instant::now() > deadline {
            break reply.text();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(why.contains(&url) && why.contains("certificate"), "{why}");
    drop(redis);
}
