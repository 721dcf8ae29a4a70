//! `GET /metrics`: the server's counters in the Prometheus text exposition
//! format, version 0.0.4.
//!
//! Every loop thread counts into the same relaxed atomics (no lock on the
//! request path); a scrape reads them all. Labels take values from fixed
//! sets only (route patterns, statuses, outcomes): never a group id, so the
//! number of series stays bounded.

use crate::event::clock::Nanos;
use crate::wire::UpstreamOutcome;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The media type of the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request's route pattern, the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    Groups,
    Create,
    Group,
    Status,
    Run,
    Shard,
    /// Any path no route serves (and requests refused before routing).
    Other,
}

const ROUTES: [Route; 10] = [
    Route::Healthz,
    Route::Readyz,
    Route::Metrics,
    Route::Groups,
    Route::Create,
    Route::Group,
    Route::Status,
    Route::Run,
    Route::Shard,
    Route::Other,
];

impl Route {
    /// The route of a path's segments (`/test-groups/ID` is
    /// `["test-groups", "ID"]`), as the API matches them.
    pub fn of(segments: &[&str]) -> Route {
        match segments {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["test-groups"] => Route::Groups,
            ["test-groups", "create"] => Route::Create,
            ["test-groups", _] => Route::Group,
            ["test-groups", _, "status"] => Route::Status,
            ["test-groups", _, _] => Route::Run,
            ["test-groups", _, "shards", _] => Route::Shard,
            _ => Route::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Groups => "/test-groups",
            Route::Create => "/test-groups/create",
            Route::Group => "/test-groups/{id}",
            Route::Status => "/test-groups/{id}/status",
            Route::Run => "/test-groups/{id}/{count}",
            Route::Shard => "/test-groups/{id}/shards/{shard}",
            Route::Other => "other",
        }
    }
}

/// The statuses counted per route: 100 to 599.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 500;

/// How an upstream GET ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An answer with a status from 200 to 399.
    Ok,
    /// An answer with any other status.
    Status,
    /// No usable answer: refused, reset, timed out, too large, ...
    Error,
}

const OUTCOMES: [(Outcome, &str); 3] = [
    (Outcome::Ok, "ok"),
    (Outcome::Status, "status"),
    (Outcome::Error, "error"),
];

impl Outcome {
    fn of(outcome: &UpstreamOutcome) -> Outcome {
        match (outcome.error.is_some(), outcome.code) {
            (false, _) => Outcome::Ok,
            (true, 0 | 200..=399) => Outcome::Error,
            (true, _) => Outcome::Status,
        }
    }
}

/// Upper bounds of the record-time buckets, in nanoseconds (1 µs to 100 ms).
const RECORD_BUCKETS: [Nanos; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// A histogram of durations over fixed buckets.
pub struct Histogram {
    bounds: &'static [Nanos],
    /// Per bucket, not cumulative; the last one counts what passes every bound.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [Nanos]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, ns: Nanos) {
        let bucket = self.bounds.partition_point(|&bound| bound < ns);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// `_bucket` lines (cumulative, ending with `+Inf`), `_sum` in seconds
    /// and `_count`.
    fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = match self.bounds.get(i) {
                Some(&bound) => seconds(bound),
                None => "+Inf".to_owned(),
            };
            out.sample(&bucket, &[("le", &le)], cumulative);
        }
        out.sample(
            &format!("{name}_sum"),
            &[],
            seconds(self.sum_ns.load(Relaxed)),
        );
        out.sample(&format!("{name}_count"), &[], cumulative);
    }
}

/// Nanoseconds as decimal seconds.
fn seconds(ns: Nanos) -> String {
    (ns as f64 / 1e9).to_string()
}

/// The server's metrics, shared by every loop.
pub struct Metrics {
    runs_recorded: AtomicU64,
    /// Route by status.
    requests: Box<[AtomicU64]>,
    open_connections: AtomicI64,
    upstream: [AtomicU64; 3],
    record_time: Histogram,
    /// Raw TCP and UDP runs (issue 12), by transport: see [`L4Counts`].
    l4: [L4Counts; 2],
    /// Whether the server takes raw TCP or UDP runs: their series are
    /// shown only then.
    l4_enabled: std::sync::atomic::AtomicBool,
}

/// A transport's messages: taken (whole, for a known group of its
/// protocol), taken with data that fails its checksum (recorded as they
/// came), and dropped by reason.
#[derive(Default)]
struct L4Counts {
    taken: AtomicU64,
    checksum: AtomicU64,
    dropped: [AtomicU64; L4_REASONS],
}

const L4_REASONS: usize = crate::l4::Dropped::ALL.len();
/// The `protocol` label of each [`Metrics::l4`] entry.
pub const L4_TRANSPORTS: [&str; 2] = ["tcp", "udp"];

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            runs_recorded: AtomicU64::new(0),
            requests: (0..ROUTES.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            open_connections: AtomicI64::new(0),
            upstream: Default::default(),
            record_time: Histogram::new(&RECORD_BUCKETS),
            l4: Default::default(),
            l4_enabled: Default::default(),
        }
    }
}

impl Metrics {
    pub fn run_recorded(&self) {
        self.runs_recorded.fetch_add(1, Relaxed);
    }

    /// An answer with `status` to a request on `route`.
    pub fn request(&self, route: Route, status: u16) {
        let status = usize::from(status.saturating_sub(FIRST_STATUS)).min(STATUSES - 1);
        if let Some(count) = self.requests.get(route as usize * STATUSES + status) {
            count.fetch_add(1, Relaxed);
        }
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    pub fn upstream(&self, outcome: &UpstreamOutcome) {
        self.upstream[Outcome::of(outcome) as usize].fetch_add(1, Relaxed);
    }

    /// The time one `Store::record` took.
    pub fn record_time(&self, ns: Nanos) {
        self.record_time.observe(ns);
    }

    /// The server takes raw TCP or UDP runs: show their series.
    pub fn enable_l4(&self) {
        self.l4_enabled.store(true, Relaxed);
    }

    /// A message taken over `transport` (0 tcp, 1 udp); `intact` when its
    /// data passes its checksum.
    pub fn l4_taken(&self, transport: usize, intact: bool) {
        if let Some(c) = self.l4.get(transport) {
            c.taken.fetch_add(1, Relaxed);
            if !intact {
                c.checksum.fetch_add(1, Relaxed);
            }
        }
    }

    /// A message dropped over `transport` (0 tcp, 1 udp).
    pub fn l4_dropped(&self, transport: usize, why: crate::l4::Dropped) {
        let reason = crate::l4::Dropped::ALL.iter().position(|&d| d == why);
        if let Some(c) = reason.and_then(|r| self.l4.get(transport)?.dropped.get(r)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The raw TCP and UDP families.
    fn render_l4(&self, out: &mut Exposition) {
        out.family(
            "conntest_l4_messages_total",
            "counter",
            "Raw TCP messages and UDP datagrams taken as runs (whole, for a known group of their protocol), by protocol.",
        );
        for (c, protocol) in self.l4.iter().zip(L4_TRANSPORTS) {
            out.sample(
                "conntest_l4_messages_total",
                &[("protocol", protocol)],
                c.taken.load(Relaxed),
            );
        }
        out.family(
            "conntest_l4_checksum_mismatch_total",
            "counter",
            "Messages taken whose data failed their CRC-32C: recorded as they came, so the comparison shows them corrupted.",
        );
        for (c, protocol) in self.l4.iter().zip(L4_TRANSPORTS) {
            out.sample(
                "conntest_l4_checksum_mismatch_total",
                &[("protocol", protocol)],
                c.checksum.load(Relaxed),
            );
        }
        out.family(
            "conntest_l4_dropped_total",
            "counter",
            "Messages and datagrams not ours, dropped and never recorded, by protocol and reason.",
        );
        for (c, protocol) in self.l4.iter().zip(L4_TRANSPORTS) {
            for (count, why) in c.dropped.iter().zip(crate::l4::Dropped::ALL) {
                out.sample(
                    "conntest_l4_dropped_total",
                    &[("protocol", protocol), ("reason", why.label())],
                    count.load(Relaxed),
                );
            }
        }
    }

    /// The exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.family(
            "conntest_runs_recorded_total",
            "counter",
            "Test runs recorded in the store.",
        );
        out.sample(
            "conntest_runs_recorded_total",
            &[],
            self.runs_recorded.load(Relaxed),
        );
        out.family(
            "conntest_http_requests_total",
            "counter",
            "HTTP requests answered, by route pattern and status.",
        );
        for route in ROUTES {
            for status in 0..STATUSES {
                let Some(count) = self.requests.get(route as usize * STATUSES + status) else {
                    continue;
                };
                let count = count.load(Relaxed);
                if count > 0 {
                    let status = (status + usize::from(FIRST_STATUS)).to_string();
                    out.sample(
                        "conntest_http_requests_total",
                        &[("route", route.label()), ("status", &status)],
                        count,
                    );
                }
            }
        }
        out.family(
            "conntest_open_connections",
            "gauge",
            "Client connections open now.",
        );
        out.sample(
            "conntest_open_connections",
            &[],
            self.open_connections.load(Relaxed),
        );
        out.family(
            "conntest_upstream_requests_total",
            "counter",
            "Upstream GETs by outcome: ok (status 200-399), status (any other), error (no usable answer).",
        );
        for (outcome, label) in OUTCOMES {
            out.sample(
                "conntest_upstream_requests_total",
                &[("outcome", label)],
                self.upstream[outcome as usize].load(Relaxed),
            );
        }
        self.record_time.render(
            &mut out,
            "conntest_store_record_seconds",
            "Time the store takes to record one run.",
        );
        if self.l4_enabled.load(Relaxed) {
            self.render_l4(&mut out);
        }
        out.text
    }
}

/// Text in the exposition format, family by family.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        for (i, (label, value)) in labels.iter().enumerate() {
            self.text.push(if i == 0 { '{' } else { ',' });
            let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            if i + 1 == labels.len() {
                self.text.push('}');
            }
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family("m", "counter", "a \\ b\nc");
        out.sample("m", &[("a", "x\"y\\z\nw"), ("b", "plain")], 3);
        out.sample("n", &[], 1.5);
        assert_eq!(
            out.text,
            "# HELP m a \\\\ b\\nc\n# TYPE m counter\n\
             m{a=\"x\\\"y\\\\z\\nw\",b=\"plain\"} 3\nn 1.5\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        static BOUNDS: [Nanos; 3] = [1_000, 10_000, 100_000];
        let h = Histogram::new(&BOUNDS);
        for ns in [500, 1_000, 5_000, 7_000, 50_000, 2_000_000] {
            h.observe(ns);
        }
        let mut out = Exposition::default();
        h.render(&mut out, "t_seconds", "help");
        assert_eq!(
            out.text,
            "# HELP t_seconds help\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.000001\"} 2\n\
             t_seconds_bucket{le=\"0.00001\"} 4\n\
             t_seconds_bucket{le=\"0.0001\"} 5\n\
             t_seconds_bucket{le=\"+Inf\"} 6\n\
             t_seconds_sum 0.0020635\n\
             t_seconds_count 6\n"
        );
    }

    #[test]
    fn routes_are_patterns_never_ids() {
        let id = "0b6f9a52-3c1d-4e8a-9f57-2a1b3c4d5e6f";
        let cases = [
            ("/healthz", "/healthz"),
            ("/readyz", "/readyz"),
            ("/metrics", "/metrics"),
            ("/test-groups", "/test-groups"),
            ("/test-groups/create", "/test-groups/create"),
            (&format!("/test-groups/{id}"), "/test-groups/{id}"),
            (
                &format!("/test-groups/{id}/status"),
                "/test-groups/{id}/status",
            ),
            (&format!("/test-groups/{id}/7"), "/test-groups/{id}/{count}"),
            (&format!("/test-groups/{id}/7/x"), "other"),
            ("/nope", "other"),
            ("/", "other"),
        ];
        for (path, label) in cases {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            assert_eq!(Route::of(&segments).label(), label, "{path}");
        }
    }

    #[test]
    fn render_counts_by_route_status_and_outcome() {
        let m = Metrics::default();
        m.request(Route::Run, 200);
        m.request(Route::Run, 200);
        m.request(Route::Other, 404);
        m.run_recorded();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        let upstream = |code, error: Option<&str>| UpstreamOutcome {
            code,
            time_ns: 1,
            dns_ns: None,
            connect_ns: None,
            tls_ns: None,
            error: error.map(Into::into),
        };
        m.upstream(&upstream(204, None));
        m.upstream(&upstream(503, Some("status 503")));
        m.upstream(&upstream(0, Some("refused")));
        m.upstream(&upstream(200, Some("too large")));
        m.record_time(3_000);
        let text = m.render();
        assert_eq!(
            lines_of(&text, "conntest_http_requests_total{"),
            [
                "conntest_http_requests_total{route=\"/test-groups/{id}/{count}\",status=\"200\"} 2",
                "conntest_http_requests_total{route=\"other\",status=\"404\"} 1",
            ]
        );
        assert_eq!(
            lines_of(&text, "conntest_upstream_requests_total{"),
            [
                "conntest_upstream_requests_total{outcome=\"ok\"} 1",
                "conntest_upstream_requests_total{outcome=\"status\"} 1",
                "conntest_upstream_requests_total{outcome=\"error\"} 2",
            ]
        );
        assert!(
            text.contains("\nconntest_runs_recorded_total 1\n"),
            "{text}"
        );
        assert!(text.contains("\nconntest_open_connections 1\n"), "{text}");
        assert!(
            text.contains("\nconntest_store_record_seconds_bucket{le=\"0.000005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.ends_with("conntest_store_record_seconds_count 1\n"),
            "{text}"
        );
    }
}
