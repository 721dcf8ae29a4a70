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

use crate::event::clock::WallAnchor;
use crate::run::{BodyPlan, ClientRun, DriverOutcome, RunVerdict};
use crate::time::Rfc3339;
use crate::wire::{data_fields, run_json, GroupHeader, RecordedRun};
use serde::Serialize;
use shards::ClientRunFields;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use summary::Summary;
use uuid::Uuid;

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

#[derive(Serialize)]
struct ClientRunJson<'a> {
    run_group_id: Uuid,
    remote_addr: &'a str,
    #[serde(flatten)]
    run: ClientRunFields<'a>,
}

#[derive(Serialize)]
struct ResultJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<Uuid>,
    run_group_id: Uuid,
    run_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_time: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_time: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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
        time: wall(anchor, outcome.due(index)),
        data: fields.data,
        data_base64: fields.data_base64,
        client_start: (run.start != 0).then(|| wall(anchor, run.start)),
        client_end: (run.end != 0).then(|| wall(anchor, run.end)),
        client_duration_ns: client_duration(run),
        connect_ns: run.connect_ns.map(NonZeroU64::get),
        tls_handshake_ns: run.tls_ns.map(NonZeroU64::get),
        status: (run.status != 0).then_some(run.status),
        error: run
            .failure
            .as_ref()
            .map(|f| format!("{}: {}", f.problem.name(), f.detail)),
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

fn wall(anchor: &WallAnchor, mono: u64) -> Rfc3339 {
    Rfc3339(anchor.wall(mono))
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
        })
    }

    /// Writes only the runs `runs` keeps (`--runs`).
    pub fn with_runs(mut self, runs: RunsFilter) -> ReportFile {
        self.runs = runs;
        self
    }

    /// Writes the report; a regular file is synced and renamed into place.
    /// A stop signal that arrives before the report's end marks it (and
    /// `summary`) interrupted.
    pub fn write(
        mut self,
        input: &ReportInput<'_>,
        summary: &mut Summary,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        match &self.file {
            None => write_json(
                &mut BufWriter::with_capacity(1 << 20, io::stdout().lock()),
                input,
                summary,
                self.runs,
                stop,
            )?,
            Some(file) => write_json(
                &mut BufWriter::with_capacity(1 << 20, file),
                input,
                summary,
                self.runs,
                stop,
            )?,
        }
        if let (Some(file), Some((tmp, target))) = (&self.file, &self.rename) {
            file.sync_all()?;
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

fn write_json(
    out: &mut impl Write,
    input: &ReportInput<'_>,
    summary: &mut Summary,
    filter: RunsFilter,
    stop: &AtomicBool,
) -> io::Result<()> {
    let header = input.header;
    let anchor = &input.outcome.anchor;
    let group_id = header.run_group_id;

    // client_run_group: the group's header, the remote, then every run.
    let mut client_header = serde_json::to_value(header)?;
    client_header["remote_addr"] = input.remote_addr.into();
    let text = serde_json::to_string(&client_header)?;
    out.write_all(b"{\"client_run_group\":")?;
    out.write_all(&text.as_bytes()[..text.len() - 1])?;
    out.write_all(b",\"test_runs\":[")?;
    let mut uuid_text = [0u8; 36];
    let mut first = true;
    for i in 0..input.outcome.runs.len() {
        if !filter.keeps(input.verdicts.get(i)) {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.write_all(b",")?;
        }
        let json = ClientRunJson {
            run_group_id: group_id,
            remote_addr: input.remote_addr,
            run: client_run_fields(input.outcome, i, input.body, &mut uuid_text),
        };
        serde_json::to_writer(&mut *out, &json)?;
    }
    out.write_all(b"]},\"server_run_group\":")?;

    // server_run_group: as the server showed it.
    match input.server_runs {
        Some(runs) => {
            let text = serde_json::to_string(header)?;
            out.write_all(&text.as_bytes()[..text.len() - 1])?;
            out.write_all(b",\"test_runs\":[")?;
            let kept = filter.server_records(input.verdicts);
            let indices: Box<dyn Iterator<Item = usize>> = match &kept {
                None => Box::new(0..runs.len()),
                Some(kept) => Box::new(kept.iter().map(|&i| i as usize)),
            };
            for (n, run) in indices.filter_map(|i| runs.get(i)).enumerate() {
                if n > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, &run_json(run))?;
            }
            out.write_all(b"]}")?;
        }
        None => out.write_all(b"null")?,
    }

    // results: one per verdict.
    out.write_all(b",\"results\":[")?;
    let mut first = true;
    for (i, verdict) in input.verdicts.iter().enumerate() {
        if !filter.keeps(Some(verdict)) {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.write_all(b",")?;
        }
        // The first verdicts are the runs sent, in order; then counts
        // never sent (missing, merged shards) and records never sent.
        let client = input.outcome.runs.get(i);
        let server = verdict
            .server_index
            .and_then(|s| input.server_runs.and_then(|runs| runs.get(s as usize)));
        let json = ResultJson {
            run_id: server.map(|s| s.run_id),
            run_group_id: group_id,
            run_count: verdict.run_count,
            client_time: client.map(|_| wall(anchor, input.outcome.due(i))),
            server_time: server.map(|s| Rfc3339(s.server_start as i128)),
            client_duration_ns: client.and_then(client_duration),
            server_duration_ns: server.map(RecordedRun::server_duration_ns),
            error: problems_text(verdict),
        };
        serde_json::to_writer(&mut *out, &json)?;
    }
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
