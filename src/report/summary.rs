//! The report's `summary`: counts by problem kind, rates, and percentiles
//! from HDR histograms (4 significant digits, 1 ns to 2 hours: a 10 ms
//! value is resolved to about 1 us).

use super::shards::ShardCoverage;
use super::{client_duration, ReportInput};
use crate::event::clock::SECOND;
use crate::problem::Problem;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

/// A histogram of nanosecond values (u32 counts: half the memory, and no
/// test has four billion runs).
pub struct Distribution(Option<Histogram<u32>>);

impl Distribution {
    pub fn new() -> Distribution {
        // Zero is recordable (a server duration within one loop wake-up).
        Distribution(Histogram::new_with_bounds(1, 2 * 3_600 * SECOND, 4).ok())
    }

    pub fn record(&mut self, ns: u64) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(ns);
        }
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = self.0.as_ref().filter(|h| !h.is_empty())?;
        Some(Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// The round-trip histogram itself (`summary.histogram`), so that charts
/// need no per-run data: `counts[i]` runs took more than `bounds[i-1]` (0
/// for the first) and at most `bounds[i]` nanoseconds, to the HDR
/// histogram's precision. Only non-empty buckets are listed.
///
/// The buckets are logarithmic, hdrhistogram's `iter_log` from 1 us with a
/// factor of 1.1 (each bound 10% above the last, the first holding
/// everything up to 1 us): fine enough for a percentile plot, and at most
/// about 240 buckets up to the histogram's 2 hours.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyHistogram {
    pub unit: &'static str,
    pub bounds: Vec<u64>,
    pub counts: Vec<u64>,
}

/// [`LatencyHistogram`]'s first bound, in nanoseconds, and its factor.
const FIRST_BUCKET_NS: u64 = 1_000;
const BUCKET_FACTOR: f64 = 1.1;

impl Distribution {
    /// The values' logarithmic buckets; None when there is none.
    pub fn buckets(&self) -> Option<LatencyHistogram> {
        let h = self.0.as_ref().filter(|h| !h.is_empty())?;
        let (bounds, counts) = h
            .iter_log(FIRST_BUCKET_NS, BUCKET_FACTOR)
            .filter(|step| step.count_since_last_iteration() > 0)
            .map(|step| (step.value_iterated_to(), step.count_since_last_iteration()))
            .unzip();
        Some(LatencyHistogram {
            unit: "ns",
            bounds,
            counts,
        })
    }
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution::new()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Every run succeeded and matched the server's record.
    pub passed: bool,
    pub interrupted: bool,
    /// Whether the server's record could be fetched and compared.
    pub verified: bool,
    /// The group's `run_count` (a shard's: its share): `succeeded +
    /// failed + not_sent`.
    pub runs: u64,
    /// Runs with no problem at all.
    pub succeeded: u64,
    /// Runs with at least one problem (an error or a discrepancy). Server
    /// records of runs never sent are not runs: they are counted under
    /// `discrepancies.unexpected` only.
    pub failed: u64,
    /// Runs never sent because the test was interrupted: one count, not a
    /// result each, so the report of an interrupted test is as small as
    /// the runs actually sent.
    pub not_sent: u64,
    /// Client-side errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Differences between what was sent and what the server recorded.
    pub discrepancies: BTreeMap<&'static str, u64>,
    pub wall_time_ns: u64,
    pub throughput_rps: f64,
    pub connections_opened: u64,
    /// The rate `client_delay_ns` asks for, if it paces the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate_rps: Option<f64>,
    /// The rate at which runs actually left, first to last.
    pub achieved_rate_rps: f64,
    pub client_duration_ns: Option<Percentiles>,
    /// The successful round trips of `client_duration_ns`, bucketed.
    pub histogram: Option<LatencyHistogram>,
    pub server_duration_ns: Option<Percentiles>,
    /// Client minus server duration: the time spent on the path.
    pub network_ns: Option<Percentiles>,
    /// From when each run was due to its answer: includes any wait for a
    /// free connection, so a stalled server cannot hide behind the queue
    /// (coordinated omission).
    pub latency_from_due_ns: Option<Percentiles>,
    /// From when each run was due to when it was sent.
    pub dispatch_lag_ns: Option<Percentiles>,
    /// TCP connect time of the runs that opened a connection.
    pub connect_ns: Option<Percentiles>,
    /// TLS handshake time of the runs that opened a TLS connection.
    pub tls_handshake_ns: Option<Percentiles>,
    /// Through a proxy, of the runs that opened a connection: the TCP
    /// connect to the proxy plus, for https, the `CONNECT` exchange
    /// (absent without a proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_connect_ns: Option<Percentiles>,
    /// The server's upstream GETs, from its record: the whole exchange, its
    /// name resolution (absent when the host was an address), its TCP
    /// connect and its TLS handshake.
    pub upstream_response_time_ns: Option<Percentiles>,
    pub upstream_dns_ns: Option<Percentiles>,
    pub upstream_connect_ns: Option<Percentiles>,
    pub upstream_tls_ns: Option<Percentiles>,
    /// The server's certificate was not verified (`--insecure`).
    pub tls_insecure: bool,
    /// What the path agreed to over https: TLS version, cipher suite and
    /// ALPN protocol (absent over http).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::Negotiated>,
    /// The address the test connected to: of the addresses `-r`'s name
    /// resolved to (or an override gave), tried in order, the one that
    /// answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    /// The proxy the test went through (`http://host:port`, never the
    /// credentials), and where it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Why the test stopped before its last run (the server is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Why the server's record could not be compared, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_fetch_error: Option<String>,
    /// A shard's own report: `I/N` (its runs are counts I+1, I+1+N, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The report of a sharded test (`conntest report`): which shards
    /// reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardCoverage>,
    /// A raw TCP or UDP test's own figures (issue 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4Summary>,
}

/// What a raw TCP or UDP test found, by direction. Round-trip percentiles
/// are the summary's `client_duration_ns`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct L4Summary {
    pub protocol: &'static str,
    /// Runs whose message left.
    pub sent: u64,
    /// Runs the server recorded at least once.
    pub reached_server: u64,
    /// UDP: never recorded, no echo.
    pub lost_to_server: u64,
    /// UDP: recorded, no echo.
    pub lost_from_server: u64,
    /// `lost_to_server` of `sent`, in percent.
    pub loss_to_server_percent: f64,
    /// `lost_from_server` of `reached_server`, in percent.
    pub loss_from_server_percent: f64,
    /// Runs the server recorded more than once.
    pub duplicated_to_server: u64,
    /// Runs whose echo came back more than once.
    pub duplicated_from_server: u64,
    pub corrupted_to_server: u64,
    pub corrupted_from_server: u64,
    /// UDP: runs that reached the server after one sent after them
    /// (RFC 4737), and the largest extent (arrivals late).
    pub reordered_to_server: u64,
    pub max_reorder_extent_to_server: u64,
    /// UDP: echoes that reached the client after one the server sent after them.
    pub reordered_from_server: u64,
    pub max_reorder_extent_from_server: u64,
    /// UDP: RFC 3550 interarrival jitter of the one-way transit, each way
    /// (client send to server arrival, server echo to client arrival; the
    /// clocks' offset cancels out), as iperf3 reports it.
    pub jitter_to_server_ns: u64,
    pub jitter_from_server_ns: u64,
}

pub fn summarize(input: &ReportInput<'_>, server_fetch_error: Option<String>) -> Summary {
    let outcome = input.outcome;
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut discrepancies: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in Problem::ALL {
        let map = if p.is_discrepancy() {
            &mut discrepancies
        } else {
            &mut errors
        };
        map.insert(p.name(), 0);
    }
    // The first verdicts are the runs sent, one each (a count two shards
    // sent counts once, as one run); any after them are counts no shard
    // sent (missing: failed runs) and server records of runs never sent
    // (unexpected: not runs). Runs never sent otherwise have no verdict.
    let client_runs = outcome.covers(input.header.config.run_count);
    let (mut succeeded, mut failed, mut unexpected) = (0u64, 0u64, 0u64);
    for (i, v) in input.verdicts.iter().enumerate() {
        if i < outcome.runs.len() && outcome.is_repeat(i) {
            continue;
        }
        if v.is_ok() {
            succeeded += 1;
        } else if v.is_unexpected() {
            unexpected += 1;
        } else {
            failed += 1;
        }
    }
    let not_sent = client_runs.saturating_sub(succeeded + failed);
    for v in input.verdicts {
        for (p, _) in v.problems() {
            let map = if p.is_discrepancy() {
                &mut discrepancies
            } else {
                &mut errors
            };
            *map.entry(p.name()).or_default() += 1;
        }
    }
    let mut client = Distribution::new();
    let mut server = Distribution::new();
    let mut network = Distribution::new();
    let mut from_due = Distribution::new();
    let mut lag = Distribution::new();
    let mut connect = Distribution::new();
    let mut handshake = Distribution::new();
    let mut proxy_connect = Distribution::new();
    let mut upstream = [
        Distribution::new(),
        Distribution::new(),
        Distribution::new(),
        Distribution::new(),
    ];
    for u in input
        .server_runs
        .into_iter()
        .flatten()
        .filter_map(|r| r.upstream())
    {
        let timings = [Some(u.time_ns), u.dns_ns, u.connect_ns, u.tls_ns];
        for (histogram, value) in upstream.iter_mut().zip(timings) {
            if let Some(v) = value {
                histogram.record(v);
            }
        }
    }
    let [upstream_time, upstream_dns, upstream_connect, upstream_tls] = upstream;
    let (mut first_start, mut last_start) = (u64::MAX, 0);
    for (i, run) in outcome.runs.iter().enumerate() {
        let due = outcome.due(i);
        if run.start != 0 {
            lag.record(run.start.saturating_sub(due));
            first_start = first_start.min(run.start);
            last_start = last_start.max(run.start);
        }
        if let Some(c) = run.connect_ns {
            connect.record(c.get());
        }
        if let Some(t) = run.tls_ns {
            handshake.record(t.get());
        }
        if let Some(p) = run.proxy_connect_ns {
            proxy_connect.record(p.get());
        }
        let Some(d) = client_duration(run) else {
            continue;
        };
        client.record(d);
        from_due.record(run.end - due.min(run.start));
        let server_run = input
            .verdicts
            .get(i)
            .and_then(|v| v.server_index)
            .and_then(|s| input.server_runs.and_then(|runs| runs.get(s as usize)));
        if let Some(s) = server_run {
            server.record(s.server_duration_ns());
            network.record(d.saturating_sub(s.server_duration_ns()));
        }
    }
    let wall = outcome.finished.saturating_sub(outcome.started);
    let sent = outcome.runs.iter().filter(|r| r.start != 0).count() as u64;
    let achieved = if sent > 1 && last_start > first_start {
        (sent - 1) as f64 * SECOND as f64 / (last_start - first_start) as f64
    } else {
        0.0
    };
    let delay = outcome.client_delay;
    Summary {
        passed: failed == 0
            && unexpected == 0
            && server_fetch_error.is_none()
            && !outcome.interrupted,
        interrupted: outcome.interrupted,
        verified: server_fetch_error.is_none(),
        runs: client_runs,
        succeeded,
        failed,
        not_sent,
        errors,
        discrepancies,
        wall_time_ns: wall,
        throughput_rps: if wall > 0 {
            sent as f64 * SECOND as f64 / wall as f64
        } else {
            0.0
        },
        connections_opened: outcome.connections_opened,
        target_rate_rps: (delay > 0).then(|| SECOND as f64 / delay as f64),
        achieved_rate_rps: achieved,
        client_duration_ns: client.percentiles(),
        histogram: client.buckets(),
        server_duration_ns: server.percentiles(),
        network_ns: network.percentiles(),
        latency_from_due_ns: from_due.percentiles(),
        dispatch_lag_ns: lag.percentiles(),
        connect_ns: connect.percentiles(),
        tls_handshake_ns: handshake.percentiles(),
        proxy_connect_ns: proxy_connect.percentiles(),
        upstream_response_time_ns: upstream_time.percentiles(),
        upstream_dns_ns: upstream_dns.percentiles(),
        upstream_connect_ns: upstream_connect.percentiles(),
        upstream_tls_ns: upstream_tls.percentiles(),
        tls_insecure: false,
        tls: outcome.tls.clone(),
        server_address: None,
        proxy: None,
        stopped_early: None,
        server_fetch_error,
        shard: None,
        shards: None,
        l4: None,
    }
}

impl Summary {
    /// A stop signal came after the runs (while the record was fetched or
    /// the report written): the test is interrupted, so it did not pass.
    pub fn interrupt(&mut self) {
        self.interrupted = true;
        self.passed = false;
    }
}

/// Nanoseconds for people: `950 ns`, `95.1 us`, `2.30 ms`, `1.20 s`.
pub fn human_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

/// The closing lines printed on stderr.
pub fn render(summary: &Summary) -> String {
    let mut out = format!(
        "{} runs in {}, {:.0} runs/s: {} ok, {} failed",
        summary.runs,
        human_ns(summary.wall_time_ns),
        summary.throughput_rps,
        summary.succeeded,
        summary.failed
    );
    if summary.not_sent > 0 {
        out.push_str(&format!(", {} not sent", summary.not_sent));
    }
    let kinds: Vec<String> = summary
        .errors
        .iter()
        .chain(summary.discrepancies.iter())
        .filter(|(_, &n)| n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if !kinds.is_empty() {
        out.push_str(&format!(" ({})", kinds.join(", ")));
    }
    if let Some(p) = &summary.client_duration_ns {
        out.push_str(&format!(
            "\nround trip: p50 {}, p99 {}, max {}",
            human_ns(p.p50),
            human_ns(p.p99),
            human_ns(p.max)
        ));
    }
    if let Some(p) = &summary.server_duration_ns {
        out.push_str(&format!(
            "; server: p50 {}, p99 {}",
            human_ns(p.p50),
            human_ns(p.p99)
        ));
    }
    if summary.tls_insecure {
        out.push_str("\nWARNING: the server's certificate was not verified (--insecure)");
    }
    if let Some(e) = &summary.server_fetch_error {
        out.push_str(&format!("\nthe server's record could not be fetched: {e}"));
    }
    if let Some(why) = &summary.stopped_early {
        out.push_str(&format!("\n{why}"));
    }
    out.push_str(if summary.interrupted {
        "\nINTERRUPTED"
    } else if summary.passed {
        "\nPASS"
    } else {
        "\nFAIL"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut d = Distribution::new();
        for v in 1..=1000u64 {
            d.record(v * 1000);
        }
        let p = d.percentiles().unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1000);
        assert!((499_000..=501_000).contains(&p.p50), "{}", p.p50);
        assert!((989_000..=991_000).contains(&p.p99), "{}", p.p99);
        assert!((999_000..=1_001_000).contains(&p.max));
        assert!(Distribution::new().percentiles().is_none());
    }

    #[test]
    fn the_histogram_holds_every_value_in_ascending_log_buckets() {
        let mut d = Distribution::new();
        // 100 000 values from 200 ns to about 20 s, spread over the scale.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let exponent = (x % 1_000) as f64 / 1_000.0 * 8.0;
            d.record((200.0 * 10f64.powf(exponent)) as u64);
        }
        d.record(5);
        let h = d.buckets().unwrap();
        assert_eq!(h.unit, "ns");
        assert_eq!(h.counts.iter().sum::<u64>(), 100_001);
        assert_eq!(h.bounds.len(), h.counts.len());
        assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
        assert!(h.counts.iter().all(|&c| c > 0), "only non-empty buckets");
        assert!((150..=300).contains(&h.bounds.len()), "{}", h.bounds.len());
        assert!(h.bounds[0] < FIRST_BUCKET_NS, "up to 1 us: {}", h.bounds[0]);
        let top = *h.bounds.last().unwrap();
        assert!(top >= d.percentiles().unwrap().max, "{top}");
        // Neighbouring bounds are about 10% apart.
        let ratio = h.bounds[h.bounds.len() - 1] as f64 / h.bounds[h.bounds.len() - 2] as f64;
        assert!((1.05..1.15).contains(&ratio), "{ratio}");
        assert!(Distribution::new().buckets().is_none());
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["bounds"].as_array().unwrap().len(), h.bounds.len());
    }

    use crate::run::{BodyPlan, RunVerdict};
    use crate::wire::{GroupHeader, RecordedRun};

    /// A three-run test (50 us round trips) whose server record has an
    /// upstream with a name, one with an address (no look-up), and none.
    struct ThreeRuns {
        header: GroupHeader,
        outcome: crate::run::DriverOutcome,
        body: BodyPlan,
        server_runs: Vec<RecordedRun>,
        verdicts: Vec<RunVerdict>,
    }

    impl ThreeRuns {
        fn new() -> ThreeRuns {
            use crate::event::clock::WallAnchor;
            use crate::run::{ClientRun, DriverOutcome};
            use crate::wire::RecordedRuns;

            let header: GroupHeader = serde_json::from_str(
                r#"{"run_group_id": "5e0c1f00-0000-4000-8000-00000000beef",
                    "created_at": "2026-01-01T00:00:00Z", "description": "",
                    "run_count": 3, "concurrency": 1, "client_delay_ns": 0,
                    "server_delay_ns": 0, "upstream_endpoint": "http://up"}"#,
            )
            .unwrap();
            let run = |n: u32, upstream: &str| {
                format!(
                    r#"{{"run_id": "00000000-0000-4000-8000-00000000000{n}", "run_count": {n},
                        "time": "2026-01-01T00:00:00Z", "data": "x",
                        "server_start": "2026-01-01T00:00:00Z",
                        "server_end": "2026-01-01T00:00:00.000001Z",
                        "server_duration_ns": 1000{upstream}}}"#
                )
            };
            let records = format!(
                "[{}, {}, {}]",
                run(
                    1,
                    r#", "upstream_response_code": 200, "upstream_response_time_ns": 10000,
                       "upstream_dns_ns": 2000, "upstream_connect_ns": 3000, "upstream_tls_ns": 4000"#
                ),
                run(
                    2,
                    r#", "upstream_response_code": 200, "upstream_response_time_ns": 9000,
                       "upstream_connect_ns": 5000"#
                ),
                run(3, ""),
            );
            let RecordedRuns(server_runs) = serde_json::from_str(&records).unwrap();
            let client_run = |start| ClientRun {
                start,
                end: start + 50_000,
                connect_ns: None,
                tls_ns: None,
                proxy_connect_ns: None,
                status: 200,
                body_uuid: None,
                failure: None,
            };
            let outcome = DriverOutcome {
                runs: vec![client_run(1_000), client_run(2_000), client_run(3_000)],
                started: 1_000,
                finished: 60_000,
                client_delay: 0,
                anchor: WallAnchor::fixed(0, 0),
                interrupted: false,
                connections_opened: 1,
                tls: None,
                numbering: crate::run::Numbering::ALL,
            };
            let verdicts = (0..3)
                .map(|i| RunVerdict::new(i + 1, Some(i as u32), Vec::new()))
                .collect();
            ThreeRuns {
                header,
                outcome,
                body: BodyPlan::Fixed(b"x".to_vec()),
                server_runs,
                verdicts,
            }
        }

        fn input(&self) -> ReportInput<'_> {
            ReportInput {
                header: &self.header,
                remote_addr: "http://server",
                outcome: &self.outcome,
                body: &self.body,
                server_runs: Some(&self.server_runs),
                verdicts: &self.verdicts,
            }
        }
    }

    #[test]
    fn upstream_timings_from_the_server_record_including_dns() {
        let test = ThreeRuns::new();
        let dns: Vec<_> = test
            .server_runs
            .iter()
            .map(|r| r.upstream().and_then(|u| u.dns_ns))
            .collect();
        assert_eq!(dns, [Some(2000), None, None]);
        let summary = summarize(&test.input(), None);
        assert!(summary.passed);
        let count_and_max = |p: &Option<Percentiles>| p.as_ref().map(|p| (p.count, p.max));
        assert_eq!(count_and_max(&summary.upstream_dns_ns), Some((1, 2000)));
        assert_eq!(count_and_max(&summary.upstream_connect_ns), Some((2, 5000)));
        assert_eq!(count_and_max(&summary.upstream_tls_ns), Some((1, 4000)));
        assert_eq!(
            count_and_max(&summary.upstream_response_time_ns),
            Some((2, 10000))
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["upstream_dns_ns"]["p50"], 2000);
        // Every successful round trip (50 us each) is in the histogram.
        assert_eq!(json["histogram"]["unit"], "ns");
        assert_eq!(json["histogram"]["counts"], serde_json::json!([3]));
        let bound = json["histogram"]["bounds"][0].as_u64().unwrap();
        assert!((50_000..55_000).contains(&bound), "{bound}");
    }

    /// With `--runs failed`, the run arrays hold the failed run alone (and
    /// its server record); the summary and its histogram cover all three.
    #[test]
    fn a_report_of_failed_runs_keeps_the_whole_summary_and_histogram() {
        let mut test = ThreeRuns::new();
        test.verdicts[1] = RunVerdict::new(
            2,
            Some(1),
            vec![(Problem::Corrupted, "data differs".into())],
        );
        let input = test.input();
        let mut summary = summarize(&input, None);
        let mut out = Vec::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        super::super::write_json(
            &mut out,
            &input,
            &mut summary,
            super::super::RunsFilter::Failed,
            &stop,
            false,
        )
        .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let counts = |runs: &serde_json::Value| -> Vec<u64> {
            runs.as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_count"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(counts(&report["client_run_group"]["test_runs"]), [2]);
        assert_eq!(counts(&report["server_run_group"]["test_runs"]), [2]);
        assert_eq!(counts(&report["results"]), [2]);
        assert_eq!(report["summary"]["runs"], 3);
        assert_eq!(report["summary"]["failed"], 1);
        assert_eq!(report["summary"]["client_duration_ns"]["count"], 3);
        assert_eq!(
            report["summary"]["histogram"]["counts"],
            serde_json::json!([3])
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(950), "950 ns");
        assert_eq!(human_ns(95_100), "95.1 us");
        assert_eq!(human_ns(2_300_000), "2.30 ms");
        assert_eq!(human_ns(1_200_000_000), "1.20 s");
    }
}
