//! Proxies (issue 14), through Debian's tinyproxy started here on a free
//! loopback port: `http://` in absolute form and `https://` through
//! `CONNECT` with TLS end to end (tinyproxy's log proves the traffic went
//! through it), `--proxy` and the environment as curl reads them,
//! `--noproxy`/`NO_PROXY`, credentials (407 without, a pass with), a
//! refused `CONNECT` port (403), an unreachable proxy, a run refused by
//! the proxy (kind `proxy`), and the server's upstream GETs through the
//! proxy of its environment.

mod common;
use common::pki::self_signed;
use common::*;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A self-signed (CA:FALSE) certificate for `localhost` in `dir`:
/// (cert, key). Given as `--cacert`, it is pinned.
fn certificate(dir: &TempDir) -> (PathBuf, PathBuf) {
    self_signed(&dir.0, "server", "localhost", false)
}

/// A plain conntest server and an https one with a fresh certificate
/// (its path, for `--cacert`).
fn plain_and_tls_servers(dir: &TempDir) -> (PathBuf, ServerProcess, ServerProcess) {
    let (cert, key) = certificate(dir);
    let tls = ServerProcess::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    (cert, ServerProcess::start(&[]), tls)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `conntest run -r REMOTE` (20 runs over 2 connections) with `extra`
/// flags and `env` set.
fn conntest_run(dir: &TempDir, remote: &str, extra: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut args = vec![
        "run",
        "-r",
        remote,
        "--run-count",
        "20",
        "--concurrency",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut cmd = conntest_cmd(&dir.0, &args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, LIMIT)
}

/// The report's runs that opened a connection, as (connect_ns,
/// proxy_connect_ns, tls_handshake_ns).
fn connection_times(report: &Value) -> Vec<(u64, Option<u64>, Option<u64>)> {
    report["client_run_group"]["test_runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let connect = r["connect_ns"].as_u64()?;
            Some((
                connect,
                r["proxy_connect_ns"].as_u64(),
                r["tls_handshake_ns"].as_u64(),
            ))
        })
        .collect()
}

#[test]
fn http_goes_through_the_proxy_in_absolute_form() {
    let server = ServerProcess::start(&[]);
    let proxy = TinyProxy::start(&[], None);
    let dir = TempDir::new("proxy-http");
    let report = dir.path("report.json");
    // The lower-case variable, as curl reads it for http.
    let done = conntest_run(
        &dir,
        &server.url(),
        &["-f", s(&report)],
        &[("http_proxy", &proxy.url())],
    );
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, proxy.log());
    let json = read_json(&report);
    let summary = &json["summary"];
    assert_eq!(summary["succeeded"], 20, "{summary}");
    assert_eq!(summary["proxy"], proxy.url().as_str());
    assert_eq!(summary["server_address"], proxy.addr.to_string().as_str());
    // Every connection opened went to the proxy; without CONNECT its time
    // is the TCP connect's.
    let times = connection_times(&json);
    assert!(!times.is_empty());
    for (connect, proxy_connect, tls) in &times {
        assert_eq!(Some(*connect), *proxy_connect);
        assert_eq!(*tls, None);
    }
    assert_eq!(summary["proxy_connect_ns"]["count"], times.len());
    // Setup, runs and record fetch all went through it, in absolute form.
    let log = proxy.log();
    let origin = format!("http://{}/test-groups/", server.addr);
    for line in [
        format!("POST {origin}create HTTP/1.1"),
        format!("POST {origin}"),
        format!("GET {origin}"),
    ] {
        assert!(log.contains(&line), "no '{line}' in\n{log}");
    }

    // HTTP_PROXY in upper case is ignored, as curl ignores it, and said so.
    let requests = log.matches("Request (file descriptor").count();
    let done = conntest_run(&dir, &server.url(), &[], &[("HTTP_PROXY", &proxy.url())]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("HTTP_PROXY is ignored, as curl ignores it: set http_proxy"),
        "{}",
        done.stderr
    );
    assert_eq!(
        proxy.log().matches("Request (file descriptor").count(),
        requests
    );
}

#[test]
fn https_goes_through_connect_with_tls_end_to_end() {
    let dir = TempDir::new("proxy-https");
    let (cert, key) = certificate(&dir);
    let server = ServerProcess::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    let proxy = TinyProxy::start(&[server.addr.port()], None);
    let report = dir.path("report.json");
    // The name is the proxy's to resolve; TLS checks it, end to end.
    let remote = format!("https://localhost:{}", server.addr.port());
    let done = conntest_run(
        &dir,
        &remote,
        &["--cacert", s(&cert), "-f", s(&report)],
        &[("HTTPS_PROXY", &proxy.url())],
    );
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, proxy.log());
    let json = read_json(&report);
    let summary = &json["summary"];
    assert_eq!(summary["succeeded"], 20, "{summary}");
    assert_eq!(summary["tls"]["alpn"], "http/1.1", "{summary}");
    let times = connection_times(&json);
    assert!(!times.is_empty());
    for (connect, proxy_connect, tls) in &times {
        // TCP to the proxy, then CONNECT: the tunnel took longer.
        assert!(proxy_connect.is_some_and(|p| p > *connect), "{times:?}");
        assert!(tls.is_some(), "{times:?}");
    }
    assert_eq!(summary["proxy_connect_ns"]["count"], times.len());
    let log = proxy.log();
    let connect = format!("CONNECT localhost:{} HTTP/1.1", server.addr.port());
    // The setup fetch, one tunnel per connection and the record fetch.
    assert!(
        log.matches(&connect).count() >= 2 + times.len(),
        "{times:?}\n{log}"
    );

    // A proxy that does not allow CONNECT to the server's port: 403, in
    // words naming the proxy and the fix.
    let strict = TinyProxy::start(&[1], None);
    let done = conntest_run(
        &dir,
        &remote,
        &["--cacert", s(&cert), "--proxy", &strict.url()],
        &[],
    );
    assert_one_line_usage_error(
        &done,
        &[
            &format!("the proxy {} (--proxy) answered 403", strict.url()),
            &format!("to CONNECT localhost:{}", server.addr.port()),
            "it does not allow that destination",
            "--noproxy HOST",
        ],
    );
}

#[test]
fn noproxy_and_no_proxy_reach_the_server_directly() {
    let server = ServerProcess::start(&[]);
    // Nothing listens there: a test that used it would fail.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let dir = TempDir::new("noproxy");
    let report = dir.path("report.json");
    let done = conntest_run(
        &dir,
        &server.url(),
        &[
            "--proxy",
            &dead,
            "--noproxy",
            "example.com,127.0.0.1",
            "-f",
            s(&report),
        ],
        &[],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let summary = &read_json(&report)["summary"];
    assert!(summary.get("proxy").is_none(), "{summary}");
    assert!(summary.get("proxy_connect_ns").is_none(), "{summary}");
    let done = conntest_run(
        &dir,
        &server.url(),
        &[],
        &[
            ("http_proxy", &dead),
            ("NO_PROXY", "10.0.0.0/8, 127.0.0.0/8"),
        ],
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    // --noproxy replaces NO_PROXY: '' sends every host to the proxy.
    let done = conntest_run(
        &dir,
        &server.url(),
        &["--noproxy", ""],
        &[("http_proxy", &dead), ("NO_PROXY", "127.0.0.1")],
    );
    assert_one_line_usage_error(
        &done,
        &[&format!("cannot connect to the proxy {dead} (http_proxy)")],
    );
}

#[test]
fn credentials_go_to_the_proxy_and_a_407_is_said_in_words() {
    let dir = TempDir::new("proxy-auth");
    let (cert, plain, tls) = plain_and_tls_servers(&dir);
    let proxy = TinyProxy::start(&[], Some(("tester", "s3-cr.et")));
    let https = format!("https://localhost:{}", tls.addr.port());
    let cacert = ["--cacert", s(&cert)];

    for (remote, what) in [
        (
            plain.url(),
            format!("POST http://{}/test-groups/create", plain.addr),
        ),
        (
            https.clone(),
            format!("CONNECT localhost:{}", tls.addr.port()),
        ),
    ] {
        let done = conntest_run(
            &dir,
            &remote,
            &[&cacert[..], &["--proxy", &proxy.url()]].concat(),
            &[],
        );
        assert_one_line_usage_error(
            &done,
            &[
                &format!(
                    "the proxy {} (--proxy) answered 407 Proxy Authentication Required to {what}",
                    proxy.url()
                ),
                "it wants credentials; give them as http://user:pass@proxy",
            ],
        );
    }
    // Wrong ones are refused in other words.
    let wrong = format!("http://tester:nope@{}", proxy.addr);
    let done = conntest_run(
        &dir,
        &https,
        &[&cacert[..], &["--proxy", &wrong]].concat(),
        &[],
    );
    // (tinyproxy answers 401 to wrong ones.)
    assert_one_line_usage_error(&done, &["answered 401", "it refused the credentials given"]);
    assert!(!done.stderr.contains("nope"), "{}", done.stderr);

    // Percent-encoded in the URL, decoded for the proxy.
    let given = format!("http://tester:s3%2Dcr.et@{}", proxy.addr);
    for remote in [plain.url(), https] {
        let report = dir.path("report.json");
        let done = conntest_run(
            &dir,
            &remote,
            &[&cacert[..], &["--proxy", &given, "-f", s(&report)]].concat(),
            &[],
        );
        assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, proxy.log());
        let summary = &read_json(&report)["summary"];
        assert_eq!(summary["succeeded"], 20, "{summary}");
        // The summary names the proxy, never the credentials.
        assert_eq!(summary["proxy"], proxy.url().as_str());
    }
}

#[test]
fn an_unreachable_or_unknown_proxy_is_a_setup_error() {
    let server = ServerProcess::start(&[]);
    let dir = TempDir::new("proxy-gone");
    let port = closed_port();
    let done = conntest_run(
        &dir,
        &server.url(),
        &["--proxy", &format!("127.0.0.1:{port}")],
        &[],
    );
    assert_one_line_usage_error(
        &done,
        &[&format!(
            "cannot connect to the proxy http://127.0.0.1:{port} (--proxy) (127.0.0.1:{port})"
        )],
    );
    let done = conntest_run(
        &dir,
        &server.url(),
        &["--proxy", "no-such-proxy.invalid"],
        &[],
    );
    assert_one_line_usage_error(
        &done,
        &["the proxy http://no-such-proxy.invalid:1080 (--proxy): cannot resolve 'no-such-proxy.invalid'"],
    );
    let done = conntest_run(&dir, &server.url(), &["--proxy", "socks5://u:pw@h:1"], &[]);
    assert_one_line_usage_error(
        &done,
        &["--proxy: 'socks5://u:***@h:1': socks5:// proxies are not supported; give an http:// proxy"],
    );
    // The server checks its environment when it starts.
    let mut cmd = conntest_cmd(&dir.0, &["server", "-p", "0", "--bind", "127.0.0.1"]);
    cmd.env("https_proxy", "socks4://h:1");
    let done = run_bounded(&mut cmd, LIMIT);
    assert_one_line_usage_error(&done, &["https_proxy: 'socks4://h:1': socks4:// proxies"]);
}

/// A proxy written here: the setup and record requests (absolute form)
/// are passed to the server, every run is answered 407.
fn refusing_runs_proxy() -> TestListener {
    TestListener::start(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut client = stream;
        let Some(request) = read_http_request(&mut reader) else {
            return;
        };
        let Some(rest) = request.path.strip_prefix("http://") else {
            return;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let is_run = path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
        if request.method == "POST" && is_run {
            let _ = client.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let Ok(mut server) = TcpStream::connect(authority) else {
            return;
        };
        let head = format!(
            "{} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            request.method,
            request.body.len()
        );
        let _ = server.write_all(head.as_bytes());
        let _ = server.write_all(&request.body);
        let _ = std::io::copy(&mut server, &mut client);
    })
}

/// The report of a test whose 20 runs the proxy refused (exit 1).
fn failed_by_the_proxy(done: &Finished, report: &Path) -> Value {
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let json = read_json(report);
    let summary = &json["summary"];
    assert_eq!(summary["errors"]["proxy"], 20, "{summary}");
    json
}

#[test]
fn a_run_the_proxy_refuses_fails_with_kind_proxy() {
    let server = ServerProcess::start(&[]);
    let proxy = refusing_runs_proxy();
    let dir = TempDir::new("proxy-runs");
    let report = dir.path("report.json");
    let url = format!("http://{}", proxy.addr);
    let done = conntest_run(
        &dir,
        &server.url(),
        &["--proxy", &url, "-f", s(&report)],
        &[],
    );
    let json = failed_by_the_proxy(&done, &report);
    let run = &json["client_run_group"]["test_runs"][0];
    assert_eq!(run["status"], 407);
    assert_eq!(
        run["error"],
        format!(
            "proxy: the proxy {url} (--proxy) answered 407 Proxy Authentication Required to the run's request: it wants credentials; give them as http://user:pass@proxy"
        )
        .as_str()
    );
}

#[test]
fn the_servers_upstream_gets_go_through_the_proxy_of_its_environment() {
    let dir = TempDir::new("proxy-upstream");
    let (cert, plain, tls) = plain_and_tls_servers(&dir);
    let proxy = TinyProxy::start(&[tls.addr.port()], None);
    let server = ServerProcess::start_with_env(
        &["--upstream-cacert", s(&cert)],
        &[("http_proxy", &proxy.url()), ("HTTPS_PROXY", &proxy.url())],
    );
    let client = |upstream: &str| {
        let report = dir.path("report.json");
        let config =
            format!(r#"{{"run_count": 6, "concurrency": 2, "upstream_endpoint": "{upstream}"}}"#);
        let group = create_group(server.addr, &config);
        let mut cmd = conntest_cmd(
            &dir.0,
            &[
                "client",
                "-r",
                &server.url(),
                "-g",
                &group,
                "-f",
                s(&report),
            ],
        );
        (run_bounded(&mut cmd, LIMIT), read_json(&report))
    };
    let upstream = format!("http://{}/healthz?via=proxy", plain.addr);
    let (done, json) = client(&upstream);
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, proxy.log());
    assert_eq!(json["summary"]["upstream_connect_ns"]["count"], 6);
    assert!(
        proxy.log().contains(&format!("GET {upstream} HTTP/1.1")),
        "{}",
        proxy.log()
    );

    let upstream = format!("https://localhost:{}/healthz", tls.addr.port());
    let (done, json) = client(&upstream);
    assert_eq!(done.code, Some(0), "{}\n{}", done.stderr, proxy.log());
    assert_eq!(json["summary"]["upstream_tls_ns"]["count"], 6);
    let connect = format!("CONNECT localhost:{} HTTP/1.1", tls.addr.port());
    assert_eq!(proxy.log().matches(&connect).count(), 6, "{}", proxy.log());

    // CONNECT to a port the proxy does not allow: each run's upstream
    // error says so.
    let upstream = format!("https://localhost:{}/healthz", plain.addr.port());
    let (done, json) = client(&upstream);
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(
        json["summary"]["errors"]["upstream"], 6,
        "{}",
        json["summary"]
    );
    let error = json["server_run_group"]["test_runs"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        error,
        format!(
            "the proxy {} (HTTPS_PROXY) answered 403 Access violation to CONNECT localhost:{}: it does not allow that destination (allow the host and port in the proxy's configuration, or reach the server directly with --noproxy HOST)",
            proxy.url(),
            plain.addr.port()
        )
    );
}

/// A `CONNECT` proxy written here: it tunnels the first `CONNECT` (the
/// client's fetch of the group), refuses the next `refused` with 403, and
/// tunnels every one after.
fn refusing_connect_proxy(refused: usize) -> TestListener {
    let seen = Arc::new(AtomicUsize::new(0));
    TestListener::start(move |stream| {
        let mut client = stream;
        let Some(head) = read_head(&mut client) else {
            return;
        };
        let line = String::from_utf8_lossy(&head);
        let Some(target) = line
            .strip_prefix("CONNECT ")
            .and_then(|rest| rest.split(' ').next())
        else {
            return;
        };
        let n = seen.fetch_add(1, Ordering::SeqCst);
        if (1..=refused).contains(&n) {
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        let Ok(server) = TcpStream::connect(target) else {
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let (mut up, mut down) = (server.try_clone().unwrap(), client.try_clone().unwrap());
        let relay = std::thread::spawn(move || {
            let _ = std::io::copy(&mut down, &mut up);
            let _ = up.shutdown(std::net::Shutdown::Write);
        });
        let (mut server, mut client) = (server, client);
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Write);
        let _ = relay.join();
    })
}

#[test]
fn a_connect_the_proxy_refuses_fails_the_run_with_kind_proxy() {
    let dir = TempDir::new("proxy-connect-runs");
    let (cert, _plain, tls) = plain_and_tls_servers(&dir);
    // One connection, so the 20 runs open one after another: each is
    // refused, and the record fetch after them is tunnelled.
    let group = create_group_on(&tls, &cert, r#"{"run_count": 20, "concurrency": 1}"#);
    let proxy = refusing_connect_proxy(20);
    let url = format!("http://{}", proxy.addr);
    let report = dir.path("report.json");
    let remote = format!("https://localhost:{}", tls.addr.port());
    let mut cmd = conntest_cmd(
        &dir.0,
        &[
            "client",
            "-r",
            &remote,
            "-g",
            &group,
            "--cacert",
            s(&cert),
            "--proxy",
            &url,
            "-f",
            s(&report),
            "--keep-going",
        ],
    );
    let done = run_bounded(&mut cmd, LIMIT);
    let json = failed_by_the_proxy(&done, &report);
    assert_eq!(json["summary"]["verified"], true, "{}", json["summary"]);
    let run = &json["client_run_group"]["test_runs"][0];
    assert_eq!(
        run["error"],
        format!(
            "proxy: the proxy {url} (--proxy) answered 403 Forbidden to CONNECT localhost:{}: it does not allow that destination (allow the host and port in the proxy's configuration, or reach the server directly with --noproxy HOST)",
            tls.addr.port()
        )
        .as_str()
    );
    assert!(run["connect_ns"].as_u64().is_some() && run.get("proxy_connect_ns").is_none());
}

/// Creates a group on an https conntest server (`cert` pinned), directly.
fn create_group_on(server: &ServerProcess, cert: &Path, config: &str) -> String {
    let remote = format!("https://localhost:{}", server.addr.port());
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--cacert", s(cert), "-d", config])
        .arg(format!("{remote}/test-groups/create"));
    let done = run_bounded(&mut cmd, LIMIT);
    let json: Value = serde_json::from_str(&done.stdout).expect(&done.stderr);
    json["run_group_id"].as_str().unwrap().to_owned()
}
