//! Real paths, through Debian's nginx in three roles. Reaching the right
//! place: `-H 'Name: value'` on every request to the server, through an
//! nginx that routes by Host name and wants an ingress header, as an
//! ingress does (framing headers are refused); `--resolve` /
//! `--connect-to` sending a name that no DNS knows to an address, to the
//! server and to the ingress; the headers the ingress adds
//! (`X-Forwarded-For`, `Via`) in the record through `record_headers`.
//! nginx terminating TLS with `ssl_verify_client on` and a test CA (mutual
//! TLS), and with a self-signed CA:TRUE certificate (pinned by `--cacert`).
//! Certificates are made here (rcgen).

mod common;
use common::cluster::{nginx_http, Nginx};
use common::pki::{self_signed, Pki};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// nginx on `port`: Host `routed.example` with `X-Ingress-Auth: letmein`
/// reaches `server`; any other Host gets 421, a missing header 403.
fn ingress(dir: &str, port: u16, server: SocketAddr) -> String {
    nginx_http(
        dir,
        &format!(
            r#"    server {{
        listen 127.0.0.1:{port} default_server;
        return 421;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name routed.example;
        location / {{
            if ($http_x_ingress_auth != "letmein") {{ return 403; }}
            proxy_pass http://{server};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Via "1.1 ingress";
            proxy_buffering off;
        }}
    }}
"#
        ),
    )
}

/// nginx on `port` terminating TLS with `cert`/`key` in front of `server`
/// (plain HTTP behind it), passing the client certificate's subject on as
/// `X-Client-Subject`; `more` goes in its `server` block.
fn tls_terminator(
    dir: &str,
    port: u16,
    server: SocketAddr,
    tls: (&Path, &Path),
    more: &str,
) -> String {
    let (cert, key) = (tls.0.display(), tls.1.display());
    nginx_http(
        dir,
        &format!(
            r#"    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
{more}
        location / {{
            proxy_pass http://{server};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Subject $ssl_client_s_dn;
            proxy_buffering off;
        }}
    }}
"#
        ),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The server's record of a report's runs.
fn server_runs(report: &Value) -> &Vec<Value> {
    report["server_run_group"]["test_runs"]
        .as_array()
        .expect("server_run_group.test_runs")
}

/// A setup error: exit 2, one line naming every needle, no report.
fn assert_setup_error(done: &Finished, report: &Path, needles: &[&str]) {
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    let line = done.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} in: {line}");
    }
    assert!(!report.exists(), "no report on a setup error");
}

fn conntest_run(dir: &TempDir, remote: &str, extra: &[&str]) -> Finished {
    let mut args = vec![
        "run",
        "-r",
        remote,
        "--run-count",
        "40",
        "--concurrency",
        "4",
    ];
    args.extend_from_slice(extra);
    run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT)
}

#[test]
fn headers_reach_an_ingress_that_routes_by_host() {
    let server = ServerProcess::start(&[]);
    let nginx = Nginx::start_with(|dir, port| ingress(dir, port, server.addr));
    let dir = TempDir::new("headers");
    let report = dir.path("report.json");

    let done = conntest_run(
        &dir,
        &nginx.url(),
        &[
            "-H",
            "Host: routed.example",
            "--header",
            "X-Ingress-Auth: letmein",
            "-f",
            report.to_str().unwrap(),
        ],
    );
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, nginx.error_log());
    let json = read_json(&report);
    assert_eq!(json["summary"]["succeeded"], 40, "{}", json["summary"]);

    // Without them the ingress turns the test away at its first request.
    let done = conntest_run(&dir, &nginx.url(), &[]);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("421"), "{}", done.stderr);
    let done = conntest_run(&dir, &nginx.url(), &["-H", "Host: routed.example"]);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("403"), "{}", done.stderr);
}

#[test]
fn framing_and_malformed_headers_are_one_line_usage_errors() {
    let dir = TempDir::new("headers-bad");
    for (value, needle) in [
        ("Content-Length: 3", "Content-Length"),
        ("transfer-encoding: chunked", "transfer-encoding"),
        ("no colon here", "Name: value"),
        ("Bad Name: x", "not a header name"),
    ] {
        let done = run_bounded(
            &mut conntest_cmd(&dir.0, &["run", "--run-count", "1", "-H", value]),
            LIMIT,
        );
        assert_one_line_usage_error(&done, &["-H", needle]);
    }
}

#[test]
fn resolve_and_connect_to_send_a_name_to_an_address() {
    let server = ServerProcess::start(&[]);
    let port = server.addr.port();
    let dir = TempDir::new("resolve");
    // `conntest.invalid` resolves nowhere: only the override reaches it.
    let remote = format!("http://conntest.invalid:{port}");
    let done = conntest_run(
        &dir,
        &remote,
        &["--resolve", &format!("conntest.invalid:{port}:127.0.0.1")],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let done = conntest_run(
        &dir,
        "http://conntest.invalid",
        &[
            "--connect-to",
            &format!("conntest.invalid:80:127.0.0.1:{port}"),
        ],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    // An override for another port does not apply.
    let done = conntest_run(
        &dir,
        &remote,
        &["--resolve", "conntest.invalid:1:127.0.0.1"],
    );
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("cannot resolve 'conntest.invalid'"),
        "{}",
        done.stderr
    );
    for (flag, value, needle) in [
        ("--resolve", "conntest.invalid:80", "HOST:PORT:ADDR"),
        ("--resolve", "h:80:not-an-ip", "not an IP address"),
        ("--connect-to", "h:80", "HOST:PORT:HOST2:PORT2"),
    ] {
        let done = conntest_run(&dir, &remote, &[flag, value]);
        assert_one_line_usage_error(&done, &[flag, needle]);
    }
}

/// The ingress reached by name through `--resolve` (the name is nowhere in
/// DNS; Host and the route keep it), and `record_headers` showing in the
/// report what the ingress added: `X-Forwarded-For` (appended to the
/// client's own) and `Via`.
#[test]
fn an_ingress_reached_by_resolve_adds_headers_the_record_shows() {
    let server = ServerProcess::start(&[]);
    let nginx = Nginx::start_with(|dir, port| ingress(dir, port, server.addr));
    let port = nginx.addr.port();
    let dir = TempDir::new("ingress-resolve");
    let report = dir.path("report.json");
    let id = create_group(
        server.addr,
        r#"{"run_count": 12, "concurrency": 3, "record_headers": ["X-Forwarded-For", "via", "x-absent"]}"#,
    );
    let done = run_bounded(
        &mut conntest_cmd(
            &dir.0,
            &[
                "client",
                "-r",
                &format!("http://routed.example:{port}"),
                "--resolve",
                &format!("routed.example:{port}:127.0.0.1"),
                "-H",
                "X-Ingress-Auth: letmein",
                "-H",
                "X-Forwarded-For: 203.0.113.9",
                "-g",
                &id,
                "-f",
                s(&report),
            ],
        ),
        LIMIT,
    );
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, nginx.error_log());
    let json = read_json(&report);
    assert_eq!(
        json["server_run_group"]["record_headers"],
        serde_json::json!(["x-forwarded-for", "via", "x-absent"])
    );
    let runs = server_runs(&json);
    assert_eq!(runs.len(), 12);
    for run in runs {
        assert_eq!(
            run["headers"],
            serde_json::json!({"x-forwarded-for": "203.0.113.9, 127.0.0.1", "via": "1.1 ingress"}),
            "{run}"
        );
        assert!(run.get("client_cert_subject").is_none(), "{run}");
    }

    // Straight to the server (no ingress): the client's header alone, and
    // a group without record_headers records none.
    let id = create_group(
        server.addr,
        r#"{"run_count": 2, "record_headers": ["x-forwarded-for"]}"#,
    );
    let plain = create_group(server.addr, r#"{"run_count": 2}"#);
    for (group, expected) in [
        (&id, serde_json::json!({"x-forwarded-for": "203.0.113.9"})),
        (&plain, Value::Null),
    ] {
        let done = run_bounded(
            &mut conntest_cmd(
                &dir.0,
                &[
                    "client",
                    "-r",
                    &format!("http://{}", server.addr),
                    "-H",
                    "X-Forwarded-For: 203.0.113.9",
                    "-g",
                    group,
                    "-f",
                    s(&report),
                ],
            ),
            LIMIT,
        );
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        let json = read_json(&report);
        for run in server_runs(&json) {
            assert_eq!(
                run.get("headers").cloned().unwrap_or(Value::Null),
                expected,
                "{run}"
            );
        }
    }
}

/// A bad `record_headers` is a 400 naming the field.
#[test]
fn record_headers_are_checked_at_creation() {
    let server = ServerProcess::start(&[]);
    for (list, needle) in [
        (r#""via""#, "record_headers must be an array"),
        (r#"["a b"]"#, "'a b' is not a header name"),
        (r#"["authorization"]"#, "carries credentials"),
    ] {
        let config = format!(r#"{{"run_count": 1, "record_headers": {list}}}"#);
        let reply = request(
            server.addr,
            "POST",
            "/test-groups/create",
            config.as_bytes(),
        );
        assert_error(&reply, 400, needle);
    }
}

/// nginx terminating TLS with `ssl_verify_client on` and a test CA, in
/// front of a plain conntest server: a client with `--cert/--key` passes
/// (and nginx's view of its certificate reaches the record), one without
/// is told in words what the path wants.
#[test]
fn nginx_requiring_a_client_certificate() {
    let pki = Pki::new("nginx-mtls");
    let server_tls = pki.leaf("nginx", &["localhost"]);
    let (cert, key) = pki.client_leaf("client", "conntest client");
    let server = ServerProcess::start(&[]);
    let ca = pki.ca.clone();
    let nginx = Nginx::start_with(|dir, port| {
        let more = format!(
            "        ssl_client_certificate {};\n        ssl_verify_client on;",
            ca.display()
        );
        tls_terminator(
            dir,
            port,
            server.addr,
            (&server_tls.0, &server_tls.1),
            &more,
        )
    });
    let remote = format!("https://localhost:{}", nginx.addr.port());
    let id = create_group(
        server.addr,
        r#"{"run_count": 6, "concurrency": 2, "record_headers": ["x-client-subject"]}"#,
    );
    let report = pki.path("report.json");
    let client = |extra: &[&str], report: &Path| {
        let mut args = vec!["client", "-r", &remote, "-g", &id, "--cacert", s(&pki.ca)];
        args.extend_from_slice(extra);
        args.extend(["-f", s(report)]);
        run_bounded(&mut conntest_cmd(&pki.dir.0, &args), LIMIT)
    };
    let done = client(&["--cert", s(&cert), "--key", s(&key)], &report);
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, nginx.error_log());
    let json = read_json(&report);
    assert_eq!(json["summary"]["succeeded"], 6);
    for run in server_runs(&json) {
        assert_eq!(
            run["headers"]["x-client-subject"], "CN=conntest client",
            "{run}"
        );
    }

    let none = pki.path("none.json");
    let done = client(&[], &none);
    assert_setup_error(
        &done,
        &none,
        &[
            "400",
            "No required SSL certificate was sent",
            "asks for a client certificate",
            "--cert FILE --key FILE",
        ],
    );
    let other = Pki::new("nginx-mtls-other");
    let (other_cert, other_key) = other.client_leaf("client", "conntest client");
    let refused = pki.path("refused.json");
    let done = client(
        &["--cert", s(&other_cert), "--key", s(&other_key)],
        &refused,
    );
    assert_setup_error(
        &done,
        &refused,
        &[
            "400",
            "The SSL certificate error",
            "refused the client certificate",
        ],
    );
}

/// nginx terminating TLS with a self-signed CA:TRUE certificate, as
/// `openssl req -x509 -newkey ... -subj /CN=localhost` makes it: pinned by
/// `--cacert cert.pem`; without it the error names the certificate, why and
/// the fix.
#[test]
fn nginx_with_a_self_signed_ca_certificate() {
    let dir = TempDir::new("nginx-selfsigned");
    let (cert, key) = self_signed(&dir.0, "cert", "localhost", true);
    let server = ServerProcess::start(&[]);
    let nginx =
        Nginx::start_with(|d, port| tls_terminator(d, port, server.addr, (&cert, &key), ""));
    let remote = format!("https://localhost:{}", nginx.addr.port());
    let report = dir.path("report.json");
    let done = conntest_run(&dir, &remote, &["--cacert", s(&cert), "-f", s(&report)]);
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, nginx.error_log());
    let tls = &read_json(&report)["summary"]["tls"];
    assert!(
        tls["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{tls}"
    );

    let refused = dir.path("refused.json");
    let done = conntest_run(&dir, &remote, &["-f", s(&refused)]);
    assert_setup_error(
        &done,
        &refused,
        &[
            "the certificate of localhost (subject 'CN=localhost', issuer 'CN=localhost', self-signed, CA:TRUE",
            "is a CA certificate (CA:TRUE) used as the server's own",
            "give it to --cacert FILE (pinned by exact match)",
            "--insecure",
        ],
    );
}
