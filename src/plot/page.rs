//! The HTML page: one self-contained document (inline CSS, inline SVG, no
//! script, nothing fetched) that is also well-formed XML.

use super::charts::Chart;
use super::data::PlotData;
use serde_json::{Map, Value};
use std::fmt::Write;

const STYLE: &str = "\
body{font-family:sans-serif;margin:2em;color:#222;max-width:1160px}
h1{font-size:1.6em;margin-bottom:0.2em}
.meta{color:#555;margin-top:0}
.passed{color:#1a7f37;font-weight:bold}
.failed{color:#b42318;font-weight:bold}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.25em 0.7em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
figure{margin:0 0 1.5em}
svg{max-width:100%;height:auto;border:1px solid #ddd}
";

/// The percentile fields of a summary entry, in column order.
const PERCENTILE_FIELDS: [&str; 8] = ["count", "min", "mean", "p50", "p90", "p99", "p99_9", "max"];

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A duration in ns as people read it: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
fn duration(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.0} ns"),
        n if n < 1e6 => format!("{:.1} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

/// A summary value in a table cell: durations for `_ns` fields, counts by
/// kind as `kind n` (the non-zero ones).
fn cell(key: &str, value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::Number(n) if key.ends_with("_ns") => n.as_f64().map_or(n.to_string(), duration),
        Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        Value::Object(kinds) => {
            let parts: Vec<String> = kinds
                .iter()
                .filter(|(_, v)| v.as_u64() != Some(0))
                .map(|(k, v)| format!("{k} {}", cell(k, v)))
                .collect();
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_percentiles(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key("p50"))
}

/// The summary's scalar and by-kind fields, then its percentiles as a table
/// of their own; the histogram is drawn, not listed.
fn summary_tables(summary: &Map<String, Value>, out: &mut String) {
    out.push_str("<h2>Summary</h2>\n<table>\n<tr><th>field</th><th>value</th></tr>\n");
    for (key, value) in summary {
        if key == "histogram" || is_percentiles(value) || (key.ends_with("_ns") && value.is_null())
        {
            continue;
        }
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(key),
            escape(&cell(key, value))
        );
    }
    out.push_str("</table>\n<h2>Percentiles</h2>\n<table>\n<tr><th>of</th>");
    for field in PERCENTILE_FIELDS {
        let _ = write!(out, "<th>{field}</th>");
    }
    out.push_str("</tr>\n");
    for (key, value) in summary.iter().filter(|(_, v)| is_percentiles(v)) {
        let _ = write!(out, "<tr><td>{}</td>", escape(key));
        for field in PERCENTILE_FIELDS {
            let v = &value[field];
            let text = match v.as_f64() {
                Some(n) if field != "count" => duration(n),
                _ => cell(field, v),
            };
            let _ = write!(out, "<td>{}</td>", escape(&text));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// The whole page.
pub fn page(data: &PlotData, charts: &[Chart]) -> String {
    let passed = data.summary.get("passed").and_then(Value::as_bool);
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    let name = if data.description.is_empty() {
        data.run_group_id.as_str()
    } else {
        data.description.as_str()
    };
    let _ = writeln!(out, "<title>conntest report {}</title>", escape(name));
    let _ = write!(out, "<style>\n{STYLE}</style>\n</head>\n<body>\n");
    let _ = writeln!(out, "<h1>conntest report {}</h1>", escape(name));
    let verdict = match passed {
        Some(true) => "<span class=\"passed\">passed</span>",
        Some(false) => "<span class=\"failed\">failed</span>",
        None => "no verdict",
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">{verdict}: {} runs, {} succeeded, {} failed, {} not sent; group {} against {}</p>",
        data.counts.runs,
        data.counts.succeeded,
        data.counts.failed,
        data.counts.not_sent,
        escape(&data.run_group_id),
        escape(&data.remote_addr)
    );
    summary_tables(&data.summary, &mut out);
    out.push_str("<h2>Charts</h2>\n");
    for chart in charts {
        let _ = write!(
            out,
            "<figure aria-label=\"{}\">\n{}</figure>\n",
            escape(&chart.title),
            chart.svg
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_as_people_read_them() {
        assert_eq!(cell("wall_time_ns", &Value::from(1_500_000u64)), "1.50 ms");
        assert_eq!(cell("throughput_rps", &Value::from(123.456)), "123.5");
        let kinds = serde_json::json!({"refused": 0, "timeout": 2});
        assert_eq!(cell("errors", &kinds), "timeout 2");
        assert_eq!(cell("errors", &serde_json::json!({"refused": 0})), "none");
        assert_eq!(escape("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }
}
