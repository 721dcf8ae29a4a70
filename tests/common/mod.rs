//! Test harness: the real `conntest` binary on 127.0.0.1, an ephemeral port,
//! and a minimal independent HTTP/1.1 client over raw sockets.
//!
//! Compiled into every test binary, so not every helper is used by each.
//! Processes live here; the raw HTTP client in `http`, test-written servers
//! (fake upstreams, proxies) in `servers`, independent decoders (RFC 3339,
//! UUID, base64, JSON files) in `formats`, Redis, nginx and a cluster of
//! replicas behind them in `cluster`; a faulty UDP/TCP relay for raw runs
//! in `relay`, and raw groups' own helpers in `l4`.
#![allow(dead_code)]

pub mod cluster;
pub mod formats;
pub mod http;
pub mod l4;
pub mod pki;
pub mod relay;
pub mod servers;

// Not every test binary uses every part.
#[allow(unused_imports)]
pub use formats::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use servers::*;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_conntest"))
}

/// `conntest ARGS` run in `cwd`, untouched by the caller's token and log
/// level.
pub fn conntest_cmd(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("CONNTEST_TOKEN")
        .env_remove("LOG_LEVEL");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// A `conntest server` child process, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the server logged to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `conntest server -p 0 --bind 127.0.0.1 EXTRA...` and waits
    /// for its "listening on" line.
    pub fn start(extra: &[&str]) -> ServerProcess {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(bin());
        cmd.args(["server", "-p", "0", "--bind", "127.0.0.1"])
            .args(extra);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conntest server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    // Text lines end with the address; JSON ones with `"}`.
                    let addr = rest.split(['"', ' ']).next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("address in log"));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not report its address");
        ServerProcess { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server (e.g. libc SIGTERM = 15).
    pub fn signal(&self, signal: i32) {
        Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The whole log once it holds the "stopped" line, or after 3 s: the
    /// stderr reader thread may lag the exit a little.
    pub fn log_after_exit(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.log_text().contains("stopped") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log_text()
    }
}

/// SIGTERM's number on Linux and the BSDs.
pub const SIGTERM: i32 = 15;

/// Stops a server with SIGTERM and returns its exit code and whole log.
pub fn stop_and_collect_log(mut server: ServerProcess) -> (Option<i32>, String) {
    server.signal(SIGTERM);
    let code = server.wait_exit(Duration::from_secs(10));
    (code, server.log_after_exit())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "conntest-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace([' ', '{', '}', ':'], ""));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a bounded child process ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; None when killed by a signal (or by the time limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The time limit ran out and the process was killed.
    pub timed_out: bool,
}

/// A child process with captured output, killed on drop.
pub struct Running {
    pub child: Child,
    started: Instant,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    err: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Running {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        fn drain(mut pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = tx.send(bytes);
            });
            rx
        }
        let out = drain(child.stdout.take().expect("stdout"));
        let err = drain(child.stderr.take().expect("stderr"));
        Running {
            child,
            started,
            out,
            err,
        }
    }

    /// Waits at most `limit` (from the spawn) for the process to exit,
    /// killing it when the limit runs out; its code and output.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        let elapsed = self.started.elapsed();
        // A grandchild still holding a pipe must not hang the test.
        let text = |rx: &std::sync::mpsc::Receiver<Vec<u8>>| {
            String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
                .into_owned()
        };
        Finished {
            code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout: text(&self.out),
            stderr: text(&self.err),
            elapsed,
            timed_out,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts a usage error: exit 2 and exactly one line on stderr, holding
/// every one of `needles`.
pub fn assert_one_line_usage_error(done: &Finished, needles: &[&str]) {
    assert_eq!(
        done.code,
        Some(2),
        "exit 2 expected\nstderr: {}",
        done.stderr
    );
    let lines: Vec<&str> = done.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", done.stderr);
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from: {}",
            lines[0]
        );
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Finished {
    Running::spawn(cmd).finish(limit)
}

/// Runs `python3 ARGS...` (a script under tests/peers, or `-m MODULE`),
/// bounded by `limit`, and prints its output; panics, with the output,
/// unless it exited 0. `what` names the run in the messages.
pub fn run_python_ok(args: &[&str], limit: Duration, what: &str) -> Finished {
    let done = run_bounded(Command::new("python3").args(args), limit);
    println!(
        "{what}: exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
        done.code, done.elapsed, done.stdout, done.stderr
    );
    assert!(
        !done.timed_out,
        "{what}: python3 {args:?} did not finish within {limit:?}"
    );
    assert_eq!(
        done.code,
        Some(0),
        "{what}: python3 {args:?} failed:\n{}{}",
        done.stdout,
        done.stderr
    );
    done
}

/// A file under tests/peers (the independent peers' scripts).
pub fn peer_script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `conntest run ARGS` on a pseudo-terminal (util-linux's `script`), so
/// that it prints progress lines; asserts it passed and returns the
/// progress lines it drew (each must clear the one before).
pub fn progress_lines_of_run(dir: &Path, args: &str, limit: Duration) -> Vec<String> {
    let command = format!("{} run {args}", bin().display());
    let done = run_bounded(
        Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .current_dir(dir)
            .env_remove("LOG_LEVEL"),
        limit,
    );
    assert_eq!(
        done.code,
        Some(0),
        "run {args}: {}{}",
        done.stdout,
        done.stderr
    );
    let lines: Vec<String> = done
        .stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains(" errors"))
        .map(str::to_owned)
        .collect();
    assert!(
        !lines.is_empty(),
        "run {args}: a progress line: {:?}",
        done.stdout
    );
    for line in &lines {
        assert!(
            line.starts_with("\x1b[K"),
            "each line clears the last: {line:?}"
        );
    }
    lines
}
