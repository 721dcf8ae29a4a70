//! Where `-f` writes, through the real binary: a symlink is followed, a FIFO
//! and a character device (made in a temporary folder, never the machine's
//! own /dev) are written in place, `-` is standard output; a path that
//! cannot be written fails before the first run; an interrupted test's
//! report holds only the runs sent; SIGINT after the runs (while the record
//! is fetched or the report written) ends the test as interrupted, and a
//! second SIGINT exits at once, leaving no temporary file.

mod common;
use common::*;
use serde_json::Value;
use std::fs::FileType;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// Every conntest invocation here is killed after this.
const LIMIT: Duration = Duration::from_secs(60);

/// `conntest run --run-count 20 -q -f REPORT` in `dir`, bounded.
fn small_run(dir: &Path, report: &str) -> Finished {
    let done = run_bounded(
        &mut conntest_cmd(dir, &["run", "--run-count", "20", "-q", "-f", report]),
        LIMIT,
    );
    assert!(!done.timed_out, "-f {report}: {}", done.stderr);
    done
}

/// A complete report of a passing 20-run test.
fn assert_full_report(report: &Value, what: &str) {
    assert_eq!(report["summary"]["passed"], true, "{what}: {report}");
    assert_eq!(
        report["results"].as_array().map(Vec::len),
        Some(20),
        "{what}"
    );
}

/// Names of the temporary files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// `path` is still the kind of file it was (`is_kind`), and nothing was
/// left beside it.
fn assert_kept(path: &Path, is_kind: fn(&FileType) -> bool) {
    let kind = std::fs::symlink_metadata(path).unwrap().file_type();
    assert!(is_kind(&kind), "{} was replaced: {kind:?}", path.display());
    assert_eq!(leftovers(path.parent().unwrap()), Vec::<String>::new());
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

fn kill(signal: &str, pid: u32) {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
}

#[test]
fn a_symlink_is_followed_and_its_target_replaced_in_its_own_folder() {
    let dir = TempDir::new("symlink");
    std::fs::create_dir(dir.path("real")).unwrap();
    std::fs::write(dir.path("real/r.json"), "old").unwrap();
    std::os::unix::fs::symlink("real/r.json", dir.path("link.json")).unwrap();
    // A dangling link names the file to create.
    std::os::unix::fs::symlink("real/new.json", dir.path("dangling.json")).unwrap();
    for (link, target) in [
        ("link.json", "real/r.json"),
        ("dangling.json", "real/new.json"),
    ] {
        let done = small_run(&dir.0, link);
        assert_eq!(done.code, Some(0), "-f {link}: {}", done.stderr);
        let meta = std::fs::symlink_metadata(dir.path(link)).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "-f {link} replaced the link instead of following it"
        );
        assert_full_report(&read_json(&dir.path(target)), link);
    }
    assert_eq!(leftovers(&dir.0), Vec::<String>::new());
    assert_eq!(leftovers(&dir.path("real")), Vec::<String>::new());
}

#[test]
fn a_fifo_is_written_in_place_while_a_reader_reads_it() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("pipe");
    mkfifo(&fifo);
    let (tx, rx) = mpsc::channel();
    let path = fifo.clone();
    // If the client never opens the FIFO this thread stays blocked; the
    // test fails on the timeout below and the process ends it.
    thread::spawn(move || {
        let mut text = String::new();
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
        let _ = tx.send(read.map(|_| text));
    });
    let done = small_run(&dir.0, "pipe");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let text = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader of the FIFO got nothing")
        .expect("reading the FIFO");
    let report: Value = serde_json::from_str(&text).expect("the FIFO carried a JSON report");
    assert_full_report(&report, "FIFO");
    assert_kept(&fifo, FileType::is_fifo);
}

#[test]
fn a_character_device_is_written_in_place() {
    let dir = TempDir::new("chardev");
    let device = dir.path("null");
    // The null device's numbers, made here (as root) and not /dev/null.
    let made = Command::new("mknod")
        .arg(&device)
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(made.success(), "mknod needs root");
    let done = small_run(&dir.0, "null");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_kept(&device, FileType::is_char_device);
}

#[test]
fn dash_and_a_link_to_an_open_descriptor_write_to_standard_output() {
    let dir = TempDir::new("stdout");
    // Like /dev/stdout, in a folder of our own.
    std::os::unix::fs::symlink("/proc/self/fd/1", dir.path("out")).unwrap();
    for report in ["-", "out"] {
        let done = small_run(&dir.0, report);
        assert_eq!(done.code, Some(0), "-f {report}: {}", done.stderr);
        let json: Value = serde_json::from_str(&done.stdout)
            .unwrap_or_else(|e| panic!("-f {report}: stdout is not the report ({e})"));
        assert_full_report(&json, report);
    }
    assert!(!dir.path("-").exists(), "-f - wrote a file named '-'");
    assert!(std::fs::symlink_metadata(dir.path("out"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(leftovers(&dir.0), Vec::<String>::new());
}

#[test]
fn an_unwritable_report_path_fails_before_the_first_run() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let dir = TempDir::new("unwritable");
    std::fs::create_dir(dir.path("somedir")).unwrap();
    for report in ["/nonexistent/dir/r.json", "somedir"] {
        let id = create_group(server.addr, r#"{"run_count": 200, "concurrency": 2}"#);
        let done = run_bounded(
            &mut conntest_cmd(&dir.0, &["client", "-r", &url, "-g", &id, "-f", report]),
            LIMIT,
        );
        assert_eq!(done.code, Some(2), "-f {report}: {}", done.stderr);
        assert_eq!(
            done.stderr.trim().lines().count(),
            1,
            "-f {report}: one line: {}",
            done.stderr
        );
        assert!(done.stderr.contains(report), "{}", done.stderr);
        let recorded = runs_of(&get_group(server.addr, &id)).len();
        assert_eq!(recorded, 0, "-f {report}: runs were sent before failing");
    }
}

#[test]
fn a_report_that_fails_at_the_end_still_prints_the_summary() {
    let dir = TempDir::new("broken-pipe");
    let fifo = dir.path("pipe");
    mkfifo(&fifo);
    // A reader that goes away at once: writing the report then fails.
    let path = fifo.clone();
    thread::spawn(move || drop(std::fs::File::open(path)));
    let done = small_run(&dir.0, "pipe");
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("20 runs") && done.stderr.contains("writing the report"),
        "the summary (even with -q) and the error: {}",
        done.stderr
    );
}

#[test]
fn an_interrupted_large_test_reports_only_the_runs_sent() {
    let server = ServerProcess::start(&[]);
    let url = server.url();
    let id = create_group(
        server.addr,
        r#"{"run_count": 1000000, "client_delay_ns": 1000000}"#,
    );
    let dir = TempDir::new("not-sent");
    let client = Running::spawn(&mut conntest_cmd(
        &dir.0,
        &["client", "-r", &url, "-g", &id, "-q", "-f", "r.json"],
    ));
    let until = Instant::now() + Duration::from_secs(20);
    while runs_of(&get_group(server.addr, &id)).len() < 100 && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    kill("-INT", client.child.id());
    let done = client.finish(LIMIT);
    assert_eq!(done.code, Some(130), "{}", done.stderr);
    let report = read_json(&dir.path("r.json"));
    let sent = report["results"].as_array().unwrap().len() as u64;
    let not_sent = u(&report["summary"]["not_sent"]);
    assert!((100..100_000).contains(&sent), "{sent} results");
    assert_eq!(sent + not_sent, 1_000_000);
    let summary = &report["summary"];
    assert_eq!(
        u(&summary["succeeded"]) + u(&summary["failed"]) + not_sent,
        u(&summary["runs"]),
        "runs = succeeded + failed + not_sent: {summary}"
    );
    assert_eq!(
        report["client_run_group"]["test_runs"]
            .as_array()
            .map(Vec::len),
        Some(sent as usize)
    );
    // The runs sent are still checked against the server's record.
    assert_eq!(report["summary"]["verified"], true, "{}", done.stderr);
    assert!(report["server_run_group"].is_object());
    let size = std::fs::metadata(dir.path("r.json")).unwrap().len();
    assert!(size < 10 << 20, "a {size}-byte report for {sent} runs sent");
}

/// A `conntest run` at debug level whose stderr is read line by line as
/// it comes; killed on drop.
struct Live {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Live {
    fn start(dir: &Path, args: &[&str]) -> Live {
        let mut child = conntest_cmd(dir, args)
            .env("LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn conntest");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Live {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        while let Ok(line) = self.lines.recv_timeout(LIMIT) {
            let found = line.contains(needle);
            self.seen.push(line);
            if found {
                return;
            }
        }
        panic!("no line with '{needle}':\n{}", self.seen.join("\n"));
    }

    fn exit_code(&mut self) -> Option<i32> {
        let until = Instant::now() + LIMIT;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BIG_RUN: &[&str] = &[
    "run",
    "--run-count",
    "50000",
    "--concurrency",
    "8",
    "-f",
    "r.json",
];

#[test]
fn sigint_after_the_runs_ends_the_test_as_interrupted() {
    // While the record is compared and the report written, and while the
    // record is fetched.
    for phase in [
        "fetched the server's record",
        "fetching the server's record",
    ] {
        let dir = TempDir::new("late-sigint");
        let mut live = Live::start(&dir.0, BIG_RUN);
        live.wait_for(phase);
        kill("-INT", live.child.id());
        let code = live.exit_code();
        assert_eq!(code, Some(130), "SIGINT at '{phase}'");
        let report = read_json(&dir.path("r.json"));
        assert_eq!(report["interrupted"], true, "at '{phase}'");
        assert_eq!(report["summary"]["interrupted"], true, "at '{phase}'");
        assert_eq!(report["summary"]["passed"], false, "at '{phase}'");
        assert_eq!(leftovers(&dir.0), Vec::<String>::new(), "at '{phase}'");
    }
}

/// Waits until a temporary file in `dir` holds bytes: the report is being
/// written.
fn wait_for_writing(dir: &Path) {
    let until = Instant::now() + LIMIT;
    while Instant::now() < until {
        let writing = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".tmp")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            });
        if writing {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
    panic!("the report was never written to a temporary file");
}

#[test]
fn a_second_sigint_exits_at_once_and_removes_the_temporary_file() {
    // While the report is written, and during the runs (the temporary
    // file exists from the start).
    let paced: &[&str] = &[
        "run",
        "--run-count",
        "100000",
        "--client-delay-ns",
        "1000000",
        "-f",
        "r.json",
    ];
    for (phase, args) in [("writing", BIG_RUN), ("running", paced)] {
        let dir = TempDir::new("second-sigint");
        let mut live = Live::start(&dir.0, args);
        if phase == "writing" {
            live.wait_for("fetched the server's record");
            wait_for_writing(&dir.0);
        } else {
            live.wait_for("created group");
            // Into the paced runs, past the handlers' installation.
            thread::sleep(Duration::from_secs(1));
        }
        kill("-INT", live.child.id());
        thread::sleep(Duration::from_millis(50));
        kill("-INT", live.child.id());
        let code = live.exit_code();
        assert_eq!(code, Some(130), "two SIGINTs while {phase}");
        assert!(
            !dir.path("r.json").exists(),
            "while {phase}: the second SIGINT let the report finish"
        );
        assert_eq!(leftovers(&dir.0), Vec::<String>::new(), "while {phase}");
    }
}
