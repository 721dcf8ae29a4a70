//! Reaching the right place: `-H 'Name: value'` on every request to the
//! server, through a real nginx that routes by Host name and wants an
//! ingress header, as an ingress does (framing headers are refused); and
//! `--resolve` / `--connect-to` sending a name that no DNS knows to the
//! server's address.

mod common;
use common::cluster::{nginx_http, Nginx};
use common::*;
use std::net::SocketAddr;
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
            proxy_buffering off;
        }}
    }}
"#
        ),
    )
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
