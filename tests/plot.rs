//! `conntest plot`: a report's charts as one self-contained HTML page or
//! one SVG document, read back by a strict XML parser (tests/peers/plot_parse.py)
//! and checked chart by chart: titles, axes, one point per run, the
//! percentile axis, the histogram's bars, and nothing fetched from elsewhere.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const RUNS: u64 = 30;

/// The chart titles, top to bottom.
const TITLES: [&str; 5] = [
    "Round trip by run count",
    "Round trip by percentile",
    "Round trip histogram",
    "Achieved rate over time",
    "Failed runs per second over time",
];

fn plot(dir: &TempDir, report: &Path, out: &str) -> PathBuf {
    let path = dir.path(out);
    let args = [
        "plot",
        report.to_str().unwrap(),
        "-o",
        path.to_str().unwrap(),
    ];
    let done = run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT);
    assert_eq!(done.code, Some(0), "conntest plot: {}", done.stderr);
    path
}

/// What tests/peers/plot_parse.py found in a plot (it fails on a file that
/// is not well-formed XML).
fn parsed(path: &Path) -> Value {
    let script = peer_script("plot_parse.py");
    let done = run_python_ok(&[&script, path.to_str().unwrap()], LIMIT, "plot_parse");
    serde_json::from_str(&done.stdout).expect("plot_parse prints JSON")
}

fn texts(chart: &Value) -> Vec<String> {
    chart["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

fn assert_text(chart: &Value, needle: &str) {
    let all = texts(chart);
    assert!(
        all.iter().any(|t| t.contains(needle)),
        "{needle:?} not in the chart's texts: {all:?}"
    );
}

fn polylines(chart: &Value) -> Vec<u64> {
    chart["polylines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

/// Five charts, each with its title and axes.
fn assert_charts(found: &Value) -> &Vec<Value> {
    let charts = found["charts"].as_array().unwrap();
    assert_eq!(charts.len(), TITLES.len(), "{found}");
    for (chart, title) in charts.iter().zip(TITLES) {
        assert_eq!(texts(chart)[0], title);
    }
    assert_text(&charts[0], "run count");
    assert_text(&charts[0], "duration (");
    for label in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
        assert!(texts(&charts[1]).iter().any(|t| t == label), "{label}");
    }
    assert_text(&charts[1], "percentile (log scale");
    assert_text(&charts[2], "client round trip (");
    assert_text(&charts[2], "runs");
    assert_text(&charts[3], "runs started per second");
    assert_text(&charts[3], "seconds since the first run left");
    assert_text(&charts[4], "failed runs per second");
    charts
}

/// The page holds the summary tables and runs or fetches nothing.
fn assert_self_contained(page_path: &Path, found: &Value) {
    let page = &found["page"];
    assert_eq!(page["scripts"], 0, "{page}");
    assert_eq!(page["links"], 0, "{page}");
    assert_eq!(page["css_fetches"], 0, "{page}");
    assert_eq!(page["external"], json!([]), "{page}");
    assert!(page["tables"].as_u64().unwrap() >= 2, "{page}");
    let text = std::fs::read_to_string(page_path).unwrap();
    for fetch in ["<script", "src=\"http", "href=\"http", "https://"] {
        assert!(!text.contains(fetch), "{fetch} in the page");
    }
}

#[test]
fn plots_a_report_of_a_real_run_as_a_page_and_as_svg() {
    let dir = TempDir::new("plot");
    let report = dir.path("report.json");
    let count = RUNS.to_string();
    let args = [
        "run",
        "--run-count",
        &count,
        "--concurrency",
        "3",
        "-q",
        "-f",
    ];
    let mut cmd = conntest_cmd(&dir.0, &args);
    cmd.arg(&report);
    let done = run_bounded(&mut cmd, LIMIT);
    assert_eq!(done.code, Some(0), "conntest run: {}", done.stderr);

    let page = plot(&dir, &report, "report.html");
    let svg = plot(&dir, &report, "report.svg");
    for path in [&page, &svg] {
        let found = parsed(path);
        let charts = assert_charts(&found);
        // One point per run: the client series is one polyline of RUNS
        // points, with a marker each (the server's durations too).
        assert!(polylines(&charts[0]).contains(&RUNS), "{}", charts[0]);
        assert_eq!(charts[0]["circles"], 2 * RUNS, "{}", charts[0]);
        assert_text(&charts[0], "client round trip");
        assert_text(&charts[0], "server duration");
        assert!(charts[2]["bars"].as_u64().unwrap() >= 1, "{}", charts[2]);
        // All runs are in the report: no note says otherwise.
        assert!(!texts(&charts[0]).iter().any(|t| t.contains("only")));
    }
    assert_self_contained(&page, &parsed(&page));
    assert!(parsed(&svg).get("page").is_none());
}

#[test]
fn a_report_without_a_summary_histogram_has_its_percentiles_from_the_runs() {
    let dir = TempDir::new("plot-old");
    let report = dir.path("report.json");
    let args = ["run", "--run-count", "20", "-q", "-f"];
    let mut cmd = conntest_cmd(&dir.0, &args);
    cmd.arg(&report);
    assert_eq!(run_bounded(&mut cmd, LIMIT).code, Some(0));
    let mut json = read_json(&report);
    json["summary"].as_object_mut().unwrap().remove("histogram");
    let old = dir.path("old.json");
    std::fs::write(&old, json.to_string()).unwrap();

    let found = parsed(&plot(&dir, &old, "old.svg"));
    let charts = assert_charts(&found);
    assert_text(&charts[1], "computed from the runs in the report");
    // p99.999 of 20 runs is the slowest run, exactly.
    let max = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["client_duration_ns"].as_u64())
        .max()
        .unwrap();
    assert_text(&charts[1], &format!("p99.999 {:.1}", max as f64 / 1e3));
}

#[test]
fn a_summary_histogram_alone_draws_the_latency_charts() {
    // As `--runs failed` writes a passing test: the summary, no runs.
    let report = json!({
        "client_run_group": {"run_group_id": "6f1c3f0e-5b7a-4a55-9a43-1d2c3b4a5f60",
                             "description": "<hand made & summary only>", "test_runs": []},
        "server_run_group": null,
        "results": [],
        "average_response_time_ns": 109000,
        "summary": {
            "passed": true, "runs": 1000, "succeeded": 1000, "failed": 0, "not_sent": 0,
            "errors": {"refused": 0}, "wall_time_ns": 2000000000u64,
            "client_duration_ns": {"count": 1000, "min": 100000, "mean": 109000,
                "p50": 100000, "p90": 100000, "p99": 200000, "p99_9": 1000000, "max": 5000000},
            "histogram": {"unit": "ns", "bounds": [100000, 200000, 1000000, 5000000],
                          "counts": [900, 90, 9, 1]}
        }
    });
    let dir = TempDir::new("plot-summary");
    let path = dir.path("summary-only.json");
    std::fs::write(&path, report.to_string()).unwrap();
    let page = plot(&dir, &path, "page.html");
    let found = parsed(&page);
    let charts = assert_charts(&found);
    assert_self_contained(&page, &found);
    // 900 runs at 100 us, 90 at 200 us, 9 at 1 ms, 1 at 5 ms.
    for mark in [
        "p50 100.0",
        "p90 100.0",
        "p99 200.0",
        "p99.9 1000.0",
        "p99.99 5000.0",
    ] {
        assert_text(&charts[1], mark);
    }
    assert!(!texts(&charts[1]).iter().any(|t| t.contains("computed")));
    assert_eq!(charts[2]["bars"], 4, "{}", charts[2]);
    // The per-run charts say why they are empty.
    for chart in [&charts[0], &charts[3], &charts[4]] {
        assert_text(chart, "only the failed runs: 0 of the 1000 sent");
        assert!(polylines(chart).iter().all(|&n| n <= 2 * 60 + 2), "{chart}");
    }
    assert_eq!(charts[0]["circles"], 0);
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(text.contains("&lt;hand made &amp; summary only&gt;"));
}

#[test]
fn the_marked_percentiles_are_the_summarys_exact_ones_not_bucket_bounds() {
    // The histogram's buckets are 10% wide: their bounds (110 us, 220 us,
    // 5.5 ms) are not the percentiles. The marks show the summary's exact
    // values, and nothing above the slowest run.
    let report = json!({
        "client_run_group": {"run_group_id": "6f1c3f0e-5b7a-4a55-9a43-1d2c3b4a5f61", "test_runs": []},
        "results": [],
        "summary": {
            "passed": true, "runs": 1000, "succeeded": 1000, "failed": 0, "not_sent": 0,
            "client_duration_ns": {"count": 1000, "min": 100000, "mean": 109000,
                "p50": 104000, "p90": 107000, "p99": 205000, "p99_9": 1003000, "max": 5012000},
            "histogram": {"unit": "ns", "bounds": [110000, 220000, 1100000, 5500000],
                          "counts": [900, 90, 9, 1]}
        }
    });
    let dir = TempDir::new("plot-exact");
    let path = dir.path("exact.json");
    std::fs::write(&path, report.to_string()).unwrap();
    let found = parsed(&plot(&dir, &path, "page.svg"));
    let charts = assert_charts(&found);
    for mark in [
        "p50 104.0",
        "p90 107.0",
        "p99 205.0",
        "p99.9 1003.0",
        "p99.99 5012.0",
        "p99.999 5012.0",
    ] {
        assert_text(&charts[1], mark);
    }
    assert!(!texts(&charts[1]).iter().any(|t| t.contains("5500.0")));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = TempDir::new("plot-bad");
    let garbage = dir.path("garbage.json");
    std::fs::write(&garbage, "{\"summary\": ").unwrap();
    let good = dir.path("good.json");
    std::fs::write(&good, r#"{"summary": {"runs": 0}}"#).unwrap();
    let missing = dir.path("missing.json");
    let cases: [(&Path, &str, &[&str]); 4] = [
        (&missing, "out.html", &["cannot read", "missing.json"]),
        (
            &garbage,
            "out.html",
            &["garbage.json", "not a conntest report"],
        ),
        (&good, "out.png", &["out.png", ".html or .svg"]),
        (&good, "", &["needs a report and -o"]),
    ];
    for (report, out, needles) in cases {
        let out_path = dir.path(out);
        let mut args = vec!["plot", report.to_str().unwrap()];
        if !out.is_empty() {
            args.extend(["-o", out_path.to_str().unwrap()]);
        }
        let done = run_bounded(&mut conntest_cmd(&dir.0, &args), LIMIT);
        assert_one_line_usage_error(&done, needles);
        if !out.is_empty() {
            assert!(!out_path.exists(), "{out} written");
        }
    }
    // A report with no runs at all still plots.
    plot(&dir, &good, "empty.svg");
}
