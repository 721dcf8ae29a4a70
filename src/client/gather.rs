//! `conntest report`: the whole report of a sharded test, from the server
//! alone. The group's record, the status route's list of the shards that
//! uploaded and each shard's uploaded runs are fetched; the runs are merged
//! (every count 1..run_count must come from exactly one shard) and verified
//! and written as one client's test would be.

use super::fetch::Endpoint;
use super::l4::{L4Facts, L4Run};
use super::{fetch_group, open_report, verify_and_conclude, Done, Output, RunError, Verdict};
use crate::problem::Problem;
use crate::report::shards::{merge, LoadedEcho, Merged, ShardCoverage, ShardRecord, ShardsStatus};
use crate::report::RunsFilter;
use crate::run::{DriverOutcome, RunVerdict};
use crate::wire::Protocol;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GatherOptions {
    pub group: String,
    pub report: Option<PathBuf>,
    /// Which runs the report lists (`--runs`).
    pub runs: RunsFilter,
    /// Per-request timeout.
    pub timeout: Duration,
    pub quiet: bool,
    /// Certificates are not verified (`--insecure`): said in the summary.
    pub insecure: bool,
}

/// Builds and writes the group's report from the server's records.
pub fn report(
    endpoint: &Endpoint,
    options: &GatherOptions,
    stop: &AtomicBool,
) -> Result<Verdict, RunError> {
    let report = open_report(options.report.as_deref(), options.runs)?;
    let id = &options.group;
    let timeout = options.timeout.max(Duration::from_secs(10));
    let group = fetch_group(endpoint, id, timeout).map_err(RunError::Setup)?;
    let status =
        match endpoint.get_json::<ShardsStatus>(&format!("/test-groups/{id}/status"), timeout) {
            Ok(Ok(status)) => status,
            Ok(Err((code, message))) => {
                return Err(RunError::Setup(format!(
                    "the status of group {id}: server answered {code}: {message}"
                )))
            }
            Err(e) => return Err(RunError::Setup(e)),
        };
    let coverage = ShardCoverage::of(&status.shards);
    let mut records = Vec::with_capacity(status.shards.len());
    for shard in &status.shards {
        let route = format!("/test-groups/{id}/shards/{}", shard.shard);
        match endpoint.get_json::<ShardRecord>(&route, timeout) {
            Ok(Ok(record)) => records.push(record),
            Ok(Err((code, message))) => {
                return Err(RunError::Setup(format!(
                    "shard {}'s record: server answered {code}: {message}",
                    shard.shard
                )))
            }
            Err(e) => {
                return Err(RunError::Setup(format!(
                    "shard {}'s record: {e}",
                    shard.shard
                )))
            }
        }
    }
    let header = group.header;
    let config = &header.config;
    let Merged {
        outcome,
        body,
        echoes,
    } = merge(records, config.client_delay_ns);
    let l4 = match config.l4.protocol {
        Protocol::Http => None,
        protocol => Some(l4_facts(protocol, &outcome, echoes)),
    };
    let server_runs = group.test_runs.0;
    let done = Done {
        header: &header,
        outcome: &outcome,
        body: &body,
        server_runs: Some(&server_runs),
        fetch_error: None,
        l4: l4.as_ref(),
    };
    let output = Output {
        report,
        path: options.report.as_deref(),
        quiet: options.quiet,
    };
    verify_and_conclude(endpoint, done, output, stop, |input, summary| {
        summary.tls_insecure = options.insecure;
        if let Some(problem) = coverage.problem() {
            summary.passed = false;
            eprintln!("conntest: {problem}");
        }
        if let Some(missing) = missing_counts(&input.verdicts[input.outcome.runs.len()..]) {
            eprintln!("conntest: {missing}");
        }
        summary.shards = Some(coverage);
    })
}

/// A raw test's facts from what the shards uploaded. A run uploaded
/// without them (a client before they were uploaded) had one echo when it
/// was answered, and says nothing of the order.
fn l4_facts(
    protocol: Protocol,
    outcome: &DriverOutcome,
    echoes: Vec<Option<Box<LoadedEcho>>>,
) -> L4Facts {
    let runs = outcome
        .runs
        .iter()
        .zip(echoes)
        .map(|(run, echo)| match echo {
            Some(e) => L4Run::received(e.echoes, e.error, e.order),
            None => L4Run::received(u32::from(run.status != 0), None, None),
        })
        .collect();
    L4Facts { protocol, runs }
}

/// Most counts named in the line about runs no shard sent.
const NAMED: usize = 10;

/// "runs no shard sent: 3, 6, 9 and 330 more", from the verdicts after the
/// runs sent; None when there are none.
fn missing_counts(after_runs: &[RunVerdict]) -> Option<String> {
    let missing: Vec<u64> = after_runs
        .iter()
        .filter(|v| v.problems().iter().any(|(p, _)| *p == Problem::Missing))
        .map(|v| v.run_count)
        .collect();
    let (named, more) = missing.split_at(missing.len().min(NAMED));
    let named: Vec<String> = named.iter().map(u64::to_string).collect();
    match (named.is_empty(), more.len()) {
        (true, _) => None,
        (false, 0) => Some(format!("runs no shard sent: {}", named.join(", "))),
        (false, more) => Some(format!(
            "runs no shard sent: {} and {more} more",
            named.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_are_named_then_counted() {
        let missing = |n| RunVerdict::new(n, None, vec![(Problem::Missing, "x".into())]);
        let unexpected = RunVerdict::new(0, Some(0), vec![(Problem::Unexpected, "x".into())]);
        assert_eq!(missing_counts(std::slice::from_ref(&unexpected)), None);
        assert_eq!(
            missing_counts(&[missing(3), missing(6), unexpected.clone()]).unwrap(),
            "runs no shard sent: 3, 6"
        );
        let many: Vec<RunVerdict> = (1..=12).map(missing).collect();
        assert_eq!(
            missing_counts(&many).unwrap(),
            "runs no shard sent: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"
        );
    }
}
