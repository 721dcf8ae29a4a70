//! What `conntest plot` reads from a report: the summary (its table, its
//! counts and its latency histogram) and the per-run fields the per-run
//! charts need. Everything else in the report is skipped unread.

use crate::time::parse_rfc3339;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A timestamp field, parsed as it is read (None when absent or not RFC 3339).
fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
    let text: Option<Cow<'de, str>> = Option::deserialize(d)?;
    Ok(text.and_then(|t| parse_rfc3339(&t)))
}

#[derive(Deserialize)]
struct ReportFile {
    #[serde(default)]
    client_run_group: Option<ClientGroup>,
    #[serde(default)]
    results: Option<Vec<ResultEntry>>,
    summary: Map<String, Value>,
}

#[derive(Deserialize)]
struct ClientGroup {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    run_group_id: Option<String>,
    #[serde(default)]
    remote_addr: Option<String>,
    #[serde(default)]
    test_runs: Option<Vec<TestRun>>,
}

#[derive(Deserialize)]
struct TestRun {
    #[serde(default, deserialize_with = "timestamp")]
    client_start: Option<i128>,
}

#[derive(Deserialize)]
struct ResultEntry {
    #[serde(default)]
    run_count: Option<u64>,
    #[serde(default, deserialize_with = "timestamp")]
    client_time: Option<i128>,
    #[serde(default, deserialize_with = "timestamp")]
    server_time: Option<i128>,
    #[serde(default)]
    client_duration_ns: Option<u64>,
    #[serde(default)]
    server_duration_ns: Option<u64>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// The summary's `histogram`: ascending upper bounds (ns) and the runs in
/// each bucket `(bounds[i-1], bounds[i]]`.
#[derive(Deserialize)]
struct HistogramJson {
    unit: String,
    bounds: Vec<u64>,
    counts: Vec<u64>,
}

/// Round trips as buckets: `counts[i]` values at most `bounds[i]` (and
/// above `bounds[i-1]`), bounds ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<u64>,
    pub counts: Vec<u64>,
}

impl Buckets {
    /// Exact buckets of the values themselves: one per distinct value.
    fn of_values(mut values: Vec<u64>) -> Buckets {
        values.sort_unstable();
        let mut buckets = Buckets::default();
        for v in values {
            if buckets.bounds.last() == Some(&v) {
                if let Some(c) = buckets.counts.last_mut() {
                    *c += 1;
                }
            } else {
                buckets.bounds.push(v);
                buckets.counts.push(1);
            }
        }
        buckets
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1): the bound of the bucket holding
    /// the `ceil(q x total)`-th value; None when empty.
    pub fn value_at(&self, q: f64) -> Option<u64> {
        let total = self.total();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            seen += count;
            if seen >= rank {
                return Some(*bound);
            }
        }
        None
    }
}

/// One run's round trip as `scripts/plot.sh` plots it.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    pub run_count: u64,
    pub client_ns: Option<u64>,
    pub server_ns: Option<u64>,
}

/// The percentiles the summary holds exactly, by quantile.
const SUMMARY_PERCENTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99_9")];

/// The report's counts of runs (from `summary`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub not_sent: u64,
}

/// Everything the page and the charts are drawn from.
pub struct PlotData {
    /// The group's description, id and server, for the title.
    pub description: String,
    pub run_group_id: String,
    pub remote_addr: String,
    /// The summary as written, for the table.
    pub summary: Map<String, Value>,
    pub counts: Counts,
    /// The client round trips of every run, as buckets.
    pub latency: Buckets,
    /// Where `latency` comes from: the summary's histogram or the runs.
    pub latency_from_summary: bool,
    /// The results with a run count, in run count order.
    pub round_trips: Vec<RoundTrip>,
    /// When each run present left (ns since the epoch), in order.
    pub starts: Vec<i128>,
    /// When each failed run was due (or recorded), in order.
    pub failures: Vec<i128>,
    /// Runs with an entry in the report's run arrays.
    pub runs_present: u64,
}

impl PlotData {
    /// The client round trip at quantile `q`, as exact as the report
    /// holds it: the summary's own percentile where it has one (`p50`,
    /// `p90`, `p99`, `p99_9`: exact to the HDR histogram's precision),
    /// else the bucket bound, never above the summary's slowest run (a
    /// bucket's bound is up to 10% past what it holds).
    pub fn round_trip_at(&self, q: f64) -> Option<u64> {
        let stats = self.summary.get("client_duration_ns");
        let field = |name: &str| stats.and_then(|s| s.get(name)).and_then(Value::as_u64);
        let exact = SUMMARY_PERCENTILES
            .iter()
            .find(|(p, _)| *p == q)
            .and_then(|(_, name)| field(name));
        let bound = || {
            let v = self.latency.value_at(q)?;
            Some(field("max").map_or(v, |max| v.min(max)))
        };
        exact.or_else(bound)
    }

    /// Whether the report holds fewer runs than were sent: one written
    /// with `--runs failed`.
    pub fn only_failed_runs(&self) -> bool {
        self.runs_present < self.counts.runs.saturating_sub(self.counts.not_sent)
    }
}

fn count(summary: &Map<String, Value>, key: &str) -> u64 {
    summary.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn summary_histogram(summary: &Map<String, Value>) -> Result<Option<Buckets>, String> {
    let Some(value) = summary.get("histogram").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let h = HistogramJson::deserialize(value)
        .map_err(|e| format!("summary.histogram is not {{unit, bounds, counts}}: {e}"))?;
    if h.unit != "ns" {
        return Err(format!(
            "summary.histogram: unit '{}', expected 'ns'",
            h.unit
        ));
    }
    if h.bounds.len() != h.counts.len() {
        return Err(format!(
            "summary.histogram: {} bounds but {} counts",
            h.bounds.len(),
            h.counts.len()
        ));
    }
    if h.bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("summary.histogram: bounds are not ascending".into());
    }
    Ok(Some(Buckets {
        bounds: h.bounds,
        counts: h.counts,
    }))
}

/// Reads a report's bytes; the error says what is wrong in one line.
pub fn parse(bytes: &[u8]) -> Result<PlotData, String> {
    let report: ReportFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a conntest report: {e}"))?;
    let summary = report.summary;
    let counts = Counts {
        runs: count(&summary, "runs"),
        succeeded: count(&summary, "succeeded"),
        failed: count(&summary, "failed"),
        not_sent: count(&summary, "not_sent"),
    };
    let group = report.client_run_group;
    let (description, run_group_id, remote_addr, test_runs) = match group {
        Some(g) => (
            g.description.unwrap_or_default(),
            g.run_group_id.unwrap_or_default(),
            g.remote_addr.unwrap_or_default(),
            g.test_runs.unwrap_or_default(),
        ),
        None => Default::default(),
    };
    let results = report.results.unwrap_or_default();
    let mut round_trips: Vec<RoundTrip> = results
        .iter()
        .filter_map(|r| {
            Some(RoundTrip {
                run_count: r.run_count?,
                client_ns: r.client_duration_ns,
                server_ns: r.server_duration_ns,
            })
        })
        .collect();
    round_trips.sort_by_key(|r| r.run_count);
    let mut failures: Vec<i128> = results
        .iter()
        .filter(|r| r.error.is_some())
        .filter_map(|r| r.client_time.or(r.server_time))
        .collect();
    failures.sort_unstable();
    let mut starts: Vec<i128> = test_runs.iter().filter_map(|r| r.client_start).collect();
    starts.sort_unstable();
    let (latency, latency_from_summary) = match summary_histogram(&summary)? {
        Some(buckets) => (buckets, true),
        None => (
            Buckets::of_values(round_trips.iter().filter_map(|r| r.client_ns).collect()),
            false,
        ),
    };
    Ok(PlotData {
        description,
        run_group_id,
        remote_addr,
        summary,
        counts,
        latency,
        latency_from_summary,
        round_trips,
        starts,
        failures,
        runs_present: test_runs.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let b = Buckets::of_values(vec![30, 10, 20, 20]);
        assert_eq!(b.bounds, [10, 20, 30]);
        assert_eq!(b.counts, [1, 2, 1]);
        assert_eq!(b.value_at(0.0), Some(10));
        assert_eq!(b.value_at(0.5), Some(20));
        assert_eq!(b.value_at(0.75), Some(20));
        assert_eq!(b.value_at(0.99), Some(30));
        assert_eq!(Buckets::default().value_at(0.5), None);
    }

    #[test]
    fn a_bad_histogram_is_named() {
        let bad =
            br#"{"summary": {"histogram": {"unit": "ns", "bounds": [2, 1], "counts": [1, 1]}}}"#;
        let e = parse(bad).err().unwrap_or_default();
        assert!(e.contains("ascending"), "{e}");
    }
}
