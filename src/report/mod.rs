//! The report `conntest client -f` writes, and the summary it prints.
//!
//! Top-level fields follow the original tool: `client_run_group`,
//! `server_run_group`, `results`, `average_response_time_ns`; `summary` adds
//! counts by problem kind and percentiles. The report is streamed element
//! by element, so a million runs never sit in memory as one JSON text. A
//! regular file (or a new path) is written to a temporary file in its
//! folder, then renamed over it, so a reader never sees half a report; a
//! symlink is followed first. Anything else (standard output, a FIFO, a
//! device) is written in place, as a shell's `>` would.

pub mod shards;
pub mod summary;

use crate::json::JsonOut;
use crate::run::{BodyPlan, ClientRun, DriverOutcome, Nanos32, RunVerdict};
use crate::time::Rfc3339;
use crate::wire::{data_fields, write_data, write_run, GroupHeader, RecordedRun};
use shards::ClientRunFields;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use summary::Summary;

/// Everything a report is made of.
pub struct ReportInput<'a> {
    pub header: &'a GroupHeader,
    pub remote_addr: &'a str,
    pub outcome: &'a DriverOutcome,
    pub body: &'a BodyPlan,
    /// The server's runs, or None when they could not be fetched.
    pub server_runs: Option<&'a [RecordedRun]>,
    pub verdicts: &'a [RunVerdict],
}

/// Which runs go into the report's three run arrays (`--runs`); the
/// `summary` always covers every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunsFilter {
    /// Every run (the seed's report, complete).
    #[default]
    All,
    /// Only failed or discrepant runs, and the server records they were
    /// compared with (or that no run sent).
    Failed,
}

impl RunsFilter {
    /// `--runs failed|all`.
    pub fn parse(s: &str) -> Result<RunsFilter, String> {
        match s {
            "all" => Ok(RunsFilter::All),
            "failed" => Ok(RunsFilter::Failed),
            _ => Err(format!("'{s}': expected failed or all")),
        }
    }

    /// Whether the run or result with this verdict (None: a run with no
    /// verdict) is written.
    fn keeps(self, verdict: Option<&RunVerdict>) -> bool {
        self == RunsFilter::All || !verdict.is_some_and(RunVerdict::is_ok)
    }

    /// The server records written: None for all, else the indices of those
    /// a failed verdict names, in order.
    fn server_records(self, verdicts: &[RunVerdict]) -> Option<Vec<u32>> {
        if self == RunsFilter::All {
            return None;
        }
        let mut kept: Vec<u32> = verdicts
            .iter()
            .filter(|v| !v.is_ok())
            .filter_map(|v| v.server_index)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        Some(kept)
    }
}

/// The client's duration of a run that was sent and answered.
pub fn client_duration(run: &ClientRun) -> Option<u64> {
    (run.start != 0 && run.end >= run.start && run.status != 0).then(|| run.end - run.start)
}

/// The run at `index` as JSON (`uuid` holds a UUID body's text).
pub fn client_run_fields<'a>(
    outcome: &DriverOutcome,
    index: usize,
    body: &'a BodyPlan,
    uuid: &'a mut [u8; 36],
) -> ClientRunFields<'a> {
    let run = &outcome.runs[index];
    let anchor = &outcome.anchor;
    let fields = data_fields(body.bytes(index, run, uuid));
    ClientRunFields {
        run_count: outcome.count(index),
        time: Rfc3339(anchor.wall(outcome.due(index))),
        data: fields.data,
        data_base64: fields.data_base64,
        client_start: (run.start != 0).then(|| Rfc3339(anchor.wall(run.start))),
        client_end: (run.end != 0).then(|| Rfc3339(anchor.wall(run.end))),
        client_duration_ns: client_duration(run),
        connect_ns: run.connect_ns.map(NonZeroU64::get),
        tls_handshake_ns: run.tls_ns.map(NonZeroU64::get),
        proxy_connect_ns: run.proxy_connect_ns.map(Nanos32::get),
        status: (run.status != 0).then_some(run.status),
        error: run
            .failure
            .as_ref()
            .map(|f| format!("{}: {}", f.problem.name(), f.detail)),
        echoes: None,
        echo_error: None,
        echo_order: None,
    }
}

/// Mean client duration over the runs that were answered; None (null in
/// the report) when none was.
pub fn average_response_time_ns(runs: &[ClientRun]) -> Option<u64> {
    let (sum, n) = runs
        .iter()
        .filter_map(client_duration)
        .fold((0u128, 0u64), |(s, n), d| (s + d as u128, n + 1));
    (n > 0).then(|| (sum / n as u128) as u64)
}

fn problems_text(verdict: &RunVerdict) -> Option<String> {
    if verdict.is_ok() {
        return None;
    }
    let parts: Vec<String> = verdict
        .problems()
        .iter()
        .map(|(p, d)| format!("{}: {d}", p.name()))
        .collect();
    Some(parts.join("; "))
}

/// Where `-f` writes, opened before the first run is sent so that a path
/// that cannot be written fails the test before it starts.
pub struct ReportFile {
    /// None: standard output.
    file: Option<File>,
    /// The temporary file `file` is, and the path it replaces once
    /// complete; removed if the report is never completed.
    rename: Option<(PathBuf, PathBuf)>,
    runs: RunsFilter,
    /// `client_run_group` is written already ([`ReportFile::write_ahead`]),
    /// or could not be.
    ahead: Option<io::Result<()>>,
}

impl ReportFile {
    /// Opens `path`: `-` and `/dev/stdout` are standard output; a symlink
    /// is followed; a regular file or a new path gets a temporary file
    /// beside it (registered with [`crate::signals`], so a second signal
    /// removes it); anything else is opened for writing in place.
    pub fn open(path: &Path) -> io::Result<ReportFile> {
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            return Ok(ReportFile {
                file: None,
                rename: None,
                runs: RunsFilter::All,
                ahead: None,
            });
        }
        let target = resolve(path)?;
        let in_place = match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ))
            }
            // A link under /proc names an open descriptor, not a file.
            Ok(m) => !m.is_file() || target.starts_with("/proc"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if in_place {
            let file = OpenOptions::new().write(true).open(&target)?;
            return Ok(ReportFile {
                file: Some(file),
                rename: None,
                runs: RunsFilter::All,
                ahead: None,
            });
        }
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "report.json".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", tmp.display()))
            })?;
        crate::signals::set_temporary(Some(tmp.clone()));
        Ok(ReportFile {
            file: Some(file),
            rename: Some((tmp, target)),
            runs: RunsFilter::All,
            ahead: None,
        })
    }

    /// Writes only the runs `runs` keeps (`--runs`).
    pub fn with_runs(mut self, runs: RunsFilter) -> ReportFile {
        self.runs = runs;
        self
    }

    /// Writes the report's `client_run_group` before the rest is known, so
    /// that it is written while the server's record is fetched: only when
    /// every run is listed (`--runs failed` lists the runs the comparison
    /// finds failed). `input`'s server record and verdicts are not read.
    pub fn write_ahead(&mut self, input: &ReportInput<'_>) {
        if self.runs == RunsFilter::All && self.ahead.is_none() {
            let phase = std::time::Instant::now();
            let mut json = JsonOut::with_capacity(CHUNK + (64 << 10));
            let written = match &self.file {
                None => write_client_group(&mut json, &mut io::stdout().lock(), input, self.runs),
                Some(file) => write_client_group(&mut json, &mut &*file, input, self.runs),
            };
            self.ahead = Some(written);
            crate::debug!("wrote the report's client runs in {:?}", phase.elapsed());
        }
    }

    /// Writes the report (the rest of it, after [`ReportFile::write_ahead`]);
    /// a regular file is synced and renamed into place. A stop signal that
    /// arrives before the report's end marks it (and `summary`) interrupted.
    pub fn write(
        mut self,
        input: &ReportInput<'_>,
        summary: &mut Summary,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let ahead = self.ahead.take();
        let ahead = match ahead {
            Some(written) => {
                written?;
                true
            }
            None => false,
        };
        let runs = self.runs;
        match &self.file {
            None => write_json(&mut io::stdout().lock(), input, summary, runs, stop, ahead)?,
            Some(file) => write_json(&mut &*file, input, summary, runs, stop, ahead)?,
        }
        if let (Some(file), Some((tmp, target))) = (&self.file, &self.rename) {
            let phase = std::time::Instant::now();
            file.sync_all()?;
            crate::debug!("synced the report to its disk in {:?}", phase.elapsed());
            std::fs::rename(tmp, target)?;
            self.rename = None;
            crate::signals::set_temporary(None);
        }
        Ok(())
    }
}

impl Drop for ReportFile {
    /// A report never completed leaves no temporary file.
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.rename.take() {
            crate::signals::set_temporary(None);
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Follows `path`'s symlinks (a relative target from the link's folder),
/// at most 40 as the kernel does, and stops at one into /proc: `/dev/fd/N`
/// and its like name open descriptors, not files.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        let is_link = std::fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link || current.starts_with("/proc") {
            return Ok(current);
        }
        let target = std::fs::read_link(&current)?;
        current = match current.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// Bytes gathered before they go to the file.
const CHUNK: usize = 1 << 20;

/// Writes the gathered bytes once there are enough of them.
fn spill(json: &mut JsonOut, out: &mut impl Write) -> io::Result<()> {
    if json.buf.len() >= CHUNK {
        out.write_all(&json.buf)?;
        json.buf.clear();
    }
    Ok(())
}

/// The run at `index` as the report's `client_run_group` shows it, after
/// `prefix` (`{"run_group_id":...,"remote_addr":...,"run_count":`): the
/// bytes serde_json writes for [`client_run_fields`].
fn write_client_run(json: &mut JsonOut, prefix: &[u8], input: &ReportInput<'_>, i: usize) {
    let outcome = input.outcome;
    let run = &outcome.runs[i];
    let anchor = &outcome.anchor;
    json.raw(prefix);
    json.uint(outcome.count(i));
    json.key("time");
    json.time(anchor.wall(outcome.due(i)));
    let mut uuid = [0u8; 36];
    write_data(json, input.body.bytes(i, run, &mut uuid));
    if run.start != 0 {
        json.key("client_start");
        json.time(anchor.wall(run.start));
    }
    if run.end != 0 {
        json.key("client_end");
        json.time(anchor.wall(run.end));
    }
    json.opt_uint("client_duration_ns", client_duration(run));
    json.opt_uint("connect_ns", run.connect_ns.map(NonZeroU64::get));
    json.opt_uint("tls_handshake_ns", run.tls_ns.map(NonZeroU64::get));
    json.opt_uint("proxy_connect_ns", run.proxy_connect_ns.map(Nanos32::get));
    json.opt_uint("status", (run.status != 0).then_some(run.status as u64));
    if let Some(f) = &run.failure {
        json.key("error");
        json.str(&format!("{}: {}", f.problem.name(), f.detail));
    }
    json.raw(b"}");
}

/// The result of verdict `i`: the bytes serde_json writes for its
/// `ResultJson`.
fn write_result(json: &mut JsonOut, input: &ReportInput<'_>, i: usize, verdict: &RunVerdict) {
    // The first verdicts are the runs sent, in order; then counts
    // never sent (missing, merged shards) and records never sent.
    let client = input.outcome.runs.get(i);
    let server = verdict
        .server_index
        .and_then(|s| input.server_runs.and_then(|runs| runs.get(s as usize)));
    json.raw(b"{");
    if let Some(s) = server {
        json.raw(b"\"run_id\":");
        json.uuid(&s.run_id);
        json.raw(b",");
    }
    json.raw(b"\"run_group_id\":");
    json.uuid(&input.header.run_group_id);
    json.key("run_count");
    json.uint(verdict.run_count);
    if client.is_some() {
        json.key("client_time");
        json.time(input.outcome.anchor.wall(input.outcome.due(i)));
    }
    if let Some(s) = server {
        json.key("server_time");
        json.time(s.server_start as i128);
    }
    json.opt_uint("client_duration_ns", client.and_then(client_duration));
    json.opt_uint(
        "server_duration_ns",
        server.map(RecordedRun::server_duration_ns),
    );
    if let Some(text) = problems_text(verdict) {
        json.key("error");
        json.str(&text);
    }
    json.raw(b"}");
}

/// The report's start: `{"client_run_group":...` up to its runs' end.
fn write_client_group(
    json: &mut JsonOut,
    out: &mut impl Write,
    input: &ReportInput<'_>,
    filter: RunsFilter,
) -> io::Result<()> {
    let header = input.header;

    // client_run_group: the group's header, the remote, then every run.
    let mut client_header = serde_json::to_value(header)?;
    client_header["remote_addr"] = input.remote_addr.into();
    let text = serde_json::to_string(&client_header)?;
    json.raw(b"{\"client_run_group\":");
    json.raw(&text.as_bytes()[..text.len() - 1]);
    json.raw(b",\"test_runs\":[");
    let mut prefix = JsonOut::default();
    prefix.raw(b"{\"run_group_id\":");
    prefix.uuid(&header.run_group_id);
    prefix.key("remote_addr");
    prefix.str(input.remote_addr);
    prefix.key("run_count");
    let mut first = true;
    for i in 0..input.outcome.runs.len() {
        if !filter.keeps(input.verdicts.get(i)) {
            continue;
        }
        if !std::mem::take(&mut first) {
            json.raw(b",");
        }
        write_client_run(json, &prefix.buf, input, i);
        spill(json, out)?;
    }
    json.raw(b"]}");
    out.write_all(&json.buf)?;
    json.buf.clear();
    Ok(())
}

/// The report, or its rest when `client_run_group` is written already
/// (`ahead`).
fn write_json(
    out: &mut impl Write,
    input: &ReportInput<'_>,
    summary: &mut Summary,
    filter: RunsFilter,
    stop: &AtomicBool,
    ahead: bool,
) -> io::Result<()> {
    let header = input.header;
    let mut json = JsonOut::with_capacity(CHUNK + (64 << 10));
    let json = &mut json;
    if !ahead {
        write_client_group(json, out, input, filter)?;
    }
    json.raw(b",\"server_run_group\":");

    // server_run_group: as the server showed it.
    match input.server_runs {
        Some(runs) => {
            let text = serde_json::to_string(header)?;
            json.raw(&text.as_bytes()[..text.len() - 1]);
            json.raw(b",\"test_runs\":[");
            let kept = filter.server_records(input.verdicts);
            let indices: Box<dyn Iterator<Item = usize>> = match &kept {
                None => Box::new(0..runs.len()),
                Some(kept) => Box::new(kept.iter().map(|&i| i as usize)),
            };
            for (n, run) in indices.filter_map(|i| runs.get(i)).enumerate() {
                if n > 0 {
                    json.raw(b",");
                }
                write_run(json, run);
                spill(json, out)?;
            }
            json.raw(b"]}");
        }
        None => json.raw(b"null"),
    }

    // results: one per verdict.
    json.raw(b",\"results\":[");
    let mut first = true;
    for (i, verdict) in input.verdicts.iter().enumerate() {
        if !filter.keeps(Some(verdict)) {
            continue;
        }
        if !std::mem::take(&mut first) {
            json.raw(b",");
        }
        write_result(json, input, i, verdict);
        spill(json, out)?;
    }
    out.write_all(&json.buf)?;
    if stop.load(Ordering::Relaxed) {
        summary.interrupt();
    }
    write!(
        out,
        "],\"average_response_time_ns\":{},\"interrupted\":{},\"summary\":",
        // null, not 0, when no run succeeded.
        serde_json::Value::from(
            average_response_time_ns(&input.outcome.runs).filter(|_| summary.succeeded > 0)
        ),
        summary.interrupted
    )?;
    serde_json::to_writer(&mut *out, &*summary)?;
    out.write_all(b"}\n")?;
    out.flush()
}
