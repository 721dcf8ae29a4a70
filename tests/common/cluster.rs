//! Scale-out peers, started by the tests as the test user on loopback:
//! Debian's `redis-server` and nginx on free 127.0.0.1 ports, and a
//! [`Cluster`] of 3 `conntest server` replicas sharing one Redis behind
//! nginx round-robin.

use super::{call, closed_port, ServerProcess, TempDir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const NGINX: &str = "/usr/sbin/nginx";

/// How long a peer gets to start answering, or to exit when asked.
const PEER_LIMIT: Duration = Duration::from_secs(10);
/// Ports tried before a start gives up (another process may take the free
/// port between the look-up and the bind).
const PORT_ATTEMPTS: usize = 5;

/// Waits up to [`PEER_LIMIT`] for `child` to exit, then kills it.
fn reap(child: &mut Child) {
    let until = Instant::now() + PEER_LIMIT;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` (a name, as `kill -s` takes it) to process (group) `pid`.
fn send_signal(signal: &str, pid: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", pid])
        .stderr(Stdio::null())
        .status();
}

/// Waits until `ready` or until `child` exited or [`PEER_LIMIT`] passed;
/// whether it became ready.
fn wait_ready(child: &mut Child, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + PEER_LIMIT;
    while Instant::now() < until {
        if ready() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether a Redis on 127.0.0.1:`port` takes commands: PING answers PONG,
/// or NOAUTH when it wants a password (not `-LOADING` while it reads its
/// append-only file back).
pub fn redis_pongs(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
}

/// A `redis-server` on a free 127.0.0.1 port, its files in a temporary
/// directory; killed on drop.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    /// Arguments after the harness's own (a later one overrides).
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisProcess {
    /// A Redis that keeps nothing on disk (`--save '' --appendonly no`).
    pub fn start() -> RedisProcess {
        Self::start_with_args(&[])
    }

    /// A Redis whose append-only file is written and fsynced before each
    /// reply (`--appendonly yes --appendfsync always`), so what it
    /// acknowledged survives [`RedisProcess::stop`] and
    /// [`RedisProcess::restart`], as a production Redis's would.
    pub fn start_persistent() -> RedisProcess {
        Self::start_with_args(&["--appendonly", "yes"])
    }

    /// A Redis given `extra` arguments too (such as `--requirepass PW`).
    pub fn start_with_args(extra: &[&str]) -> RedisProcess {
        let mut redis = Self::new(extra);
        for _ in 0..PORT_ATTEMPTS {
            redis.port = closed_port();
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start; see {}", redis.log_path());
    }

    /// A Redis on `port` (say, one a server was told before Redis came).
    pub fn start_on(port: u16) -> RedisProcess {
        let mut redis = Self::new(&[]);
        redis.port = port;
        assert!(
            redis.spawn(),
            "redis-server did not start on port {port}; see {}",
            redis.log_path()
        );
        redis
    }

    fn new(extra: &[&str]) -> RedisProcess {
        RedisProcess {
            child: None,
            port: 0,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            dir: TempDir::new("redis"),
        }
    }

    fn log_path(&self) -> String {
        self.dir.path("redis.log").to_string_lossy().into_owned()
    }

    /// Starts redis-server on `self.port`; whether it answers PING.
    fn spawn(&mut self) -> bool {
        let dir = self.dir.0.to_string_lossy().into_owned();
        let port = self.port.to_string();
        let log = self.log_path();
        let mut child = Command::new(REDIS_SERVER)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--appendfsync", "always"])
            .args(["--dir", &dir, "--logfile", &log, "--daemonize", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REDIS_SERVER}: {e}"));
        let port = self.port;
        let ready = wait_ready(&mut child, || redis_pongs(port));
        if ready {
            self.child = Some(child);
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        ready
    }

    /// `redis://127.0.0.1:PORT/0`, as `--store` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops Redis as an operator would (SIGTERM: it closes its clients
    /// and, when persistent, flushes its append-only file) and waits for
    /// the exit; the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal("TERM", &child.id().to_string());
            reap(&mut child);
        }
    }

    /// Starts Redis again on the same port with the same directory (a
    /// persistent one reads its append-only file back) and waits for PONG.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}; see {}",
            self.port,
            self.log_path()
        );
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The nginx configuration of a round-robin load balancer on
/// 127.0.0.1:`port` in front of `upstreams`, every file it writes in `dir`.
fn nginx_config(dir: &str, port: u16, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("        server {addr};\n"))
        .collect();
    nginx_http(
        dir,
        &format!(
            r#"    upstream replicas {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        # The replicas enforce their own --max-body.
        client_max_body_size 0;
        # Keep-alive to the replicas: HTTP/1.1 without nginx's default
        # "Connection: close".
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # The group GET streams (chunked) as the replica writes it.
        proxy_buffering off;
        proxy_read_timeout 60s;
        # Everything but runs keeps nginx's default `proxy_next_upstream
        # error timeout`: a request that could not reach a replica (a killed
        # one) goes to the next, so the client's setup and record GETs
        # survive a dead replica. Since 1.9.13 that default passes a POST on
        # only when it was never sent; GET and DELETE, idempotent, it may
        # send again after a failure.
        location / {{
            proxy_pass http://replicas;
        }}
        # A run is the thing counted. `off`: every run reaches exactly one
        # replica or fails to the client as it is (a 502), never replayed
        # to another replica, whatever nginx's version or a later
        # `non_idempotent`, so a test's failures are exactly the runs the
        # client saw fail.
        location ~ ^/test-groups/[^/]+/[0-9]+$ {{
            proxy_pass http://replicas;
            proxy_next_upstream off;
        }}
    }}
"#
        ),
    )
}

/// An nginx configuration, every file it writes in `dir`, its `http` block
/// holding `servers` (upstreams and servers).
pub fn nginx_http(dir: &str, servers: &str) -> String {
    format!(
        r#"worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{servers}}}
"#
    )
}

/// nginx as a round-robin load balancer in front of `upstreams`, run as
/// the test user in its own process group (master and worker); stopped on
/// drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx on a free 127.0.0.1 port and waits until it answers
    /// (any status: a GET /healthz proxied to a replica).
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        Self::start_with(|dir, port| nginx_config(dir, port, upstreams))
    }

    /// Starts nginx with the configuration `config(dir, port)` makes (see
    /// [`nginx_http`]) and waits until it answers anything but 502.
    pub fn start_with(config: impl Fn(&str, u16) -> String) -> Nginx {
        let dir = TempDir::new("nginx");
        let root = dir.0.to_string_lossy().into_owned();
        for _ in 0..PORT_ATTEMPTS {
            let port = closed_port();
            let conf = dir.path("nginx.conf");
            std::fs::write(&conf, config(&root, port)).expect("write nginx.conf");
            let mut child = Command::new(NGINX)
                .args([
                    "-p",
                    &format!("{root}/"),
                    "-e",
                    &format!("{root}/error.log"),
                ])
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {NGINX}: {e}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let answers = || {
                super::try_call(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status != 502)
            };
            if wait_ready(&mut child, answers) {
                return Nginx { child, addr, dir };
            }
            Self::stop_group(&mut child);
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path("error.log")).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }

    /// SIGTERM to the whole group (nginx's fast shutdown), bounded, then
    /// SIGKILL to whatever is left of it (a worker outliving its master).
    fn stop_group(child: &mut Child) {
        let group = format!("-{}", child.id());
        send_signal("TERM", &group);
        reap(child);
        send_signal("KILL", &group);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        Self::stop_group(&mut self.child);
    }
}

/// Polls `GET path` on `addr` every 50 ms until it answers `status` (at
/// most `limit`); whether it did.
pub fn wait_status(addr: SocketAddr, path: &str, status: u16, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if super::try_call(addr, "GET", path, &[], b"").is_ok_and(|r| r.status == status) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one series of `GET /metrics` on `addr`: `series` is the
/// exact text before the value, such as `conntest_runs_recorded_total` or
/// `conntest_http_requests_total{route="/healthz",status="200"}`; 0 when
/// the series is absent.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let reply = call(addr, "GET", "/metrics", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a metric value"))
}

/// Redis + 3 `conntest server --store redis://...` replicas, each ready
/// (`/readyz` 200), + nginx round-robin in front of them.
pub struct Cluster {
    pub redis: RedisProcess,
    pub replicas: Vec<ServerProcess>,
    pub nginx: Nginx,
}

/// Replicas in a [`Cluster`].
pub const REPLICAS: usize = 3;

impl Cluster {
    /// A cluster on a fresh Redis that keeps nothing on disk; `extra`
    /// flags go to every replica.
    pub fn start(extra: &[&str]) -> Cluster {
        Self::on(RedisProcess::start(), extra)
    }

    /// A cluster on `redis`.
    pub fn on(redis: RedisProcess, extra: &[&str]) -> Cluster {
        let store = redis.url();
        let mut args = vec!["--store", store.as_str()];
        args.extend_from_slice(extra);
        let replicas: Vec<ServerProcess> =
            (0..REPLICAS).map(|_| ServerProcess::start(&args)).collect();
        // A replica listens before its store connection is up (runs get a
        // 503 until then): wait for readiness, as a load balancer would.
        for replica in &replicas {
            assert!(
                wait_status(replica.addr, "/readyz", 200, PEER_LIMIT),
                "replica {} not ready",
                replica.addr
            );
        }
        let nginx = Nginx::start(&replicas.iter().map(|r| r.addr).collect::<Vec<_>>());
        Cluster {
            redis,
            replicas,
            nginx,
        }
    }

    /// nginx's URL: the cluster's one address.
    pub fn url(&self) -> String {
        self.nginx.url()
    }

    /// `conntest_runs_recorded_total` of each replica, in order.
    pub fn runs_recorded(&self) -> Vec<f64> {
        self.replicas
            .iter()
            .map(|r| metric(r.addr, "conntest_runs_recorded_total"))
            .collect()
    }
}
