//! The charts, drawn with plotters into SVG text: round trip by run count
//! (as `scripts/plot.sh` draws it), latency by percentile (the HdrHistogram
//! plot), the histogram, and the achieved rate and failed runs per second
//! over time. Text is written as SVG `<text>`: no font is read.

use super::data::{Buckets, PlotData};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

pub const WIDTH: u32 = 1100;
pub const HEIGHT: u32 = 440;

/// The percentiles the latency chart marks: x = 1/(1-p) on a log axis.
const PERCENTILE_TICKS: [f64; 6] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5];
/// The percentiles marked on the curve with their value.
const PERCENTILE_MARKS: [(f64, &str); 6] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (0.99999, "p99.999"),
];
/// Individual points are drawn up to this many runs; beyond, the line alone.
const MAX_MARKERS: usize = 2000;
/// Bins of the histogram chart (log-spaced between the smallest and largest
/// round trip).
const HISTOGRAM_BINS: usize = 60;
/// At most this many bins across the time charts.
const TIME_BINS: i128 = 60;

/// Tick labels and axis descriptions (plotters' defaults are small).
const LABELS: (&str, u32) = ("sans-serif", 16);
const AXIS_DESC: (&str, u32) = ("sans-serif", 18);

const CLIENT: RGBColor = RGBColor(31, 119, 180);
const SERVER: RGBColor = RGBColor(214, 39, 40);
const NOTE: RGBColor = RGBColor(180, 30, 30);

/// One chart: its title (also its caption) and its SVG document.
pub struct Chart {
    pub title: String,
    pub svg: String,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn drawing<E: std::fmt::Display>(e: E) -> String {
    format!("drawing a chart: {e}")
}

/// Draws one chart on a white canvas of WIDTH x HEIGHT.
fn render(title: &str, draw: impl FnOnce(&Area) -> Result<(), String>) -> Result<Chart, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root)?;
        root.present().map_err(drawing)?;
    }
    Ok(Chart {
        title: title.to_owned(),
        svg,
    })
}

fn builder<'a, 'b>(root: &'a Area<'b>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 24))
        .margin(18)
        .margin_right(48)
        .x_label_area_size(50)
        .y_label_area_size(90);
    b
}

/// The axes, with readable labels.
fn mesh<'a, 'b, X, Y>(
    chart: &'b mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> MeshStyle<'a, 'b, X, Y, SVGBackend<'a>>
where
    X: Ranged + ValueFormatter<X::ValueType>,
    Y: Ranged + ValueFormatter<Y::ValueType>,
{
    let mut style = chart.configure_mesh();
    style.label_style(LABELS).axis_desc_style(AXIS_DESC);
    style
}

/// A line of text under the caption: what the chart cannot show.
fn note(root: &Area, text: &str) -> Result<(), String> {
    let style = ("sans-serif", 18).into_font().color(&NOTE);
    root.draw(&Text::new(text.to_owned(), (110, 48), style))
        .map_err(drawing)
}

/// The unit a chart of durations up to `max_ns` reads best in, and its size in ns.
fn unit_for(max_ns: u64) -> (&'static str, f64) {
    if max_ns >= 10_000_000_000 {
        ("s", 1e9)
    } else if max_ns >= 10_000_000 {
        ("ms", 1e6)
    } else {
        ("µs", 1e3)
    }
}

/// The note per-run charts carry when the report lacks runs.
fn per_run_note(data: &PlotData, present: usize) -> Option<String> {
    if data.only_failed_runs() {
        Some(format!(
            "this report holds only the failed runs: {} of the {} sent",
            data.runs_present,
            data.counts.runs - data.counts.not_sent
        ))
    } else if present == 0 {
        Some("no per-run data in this report".into())
    } else {
        None
    }
}

/// A small range around a single value, so that an axis is never empty.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

fn round_trip_chart(data: &PlotData) -> Result<Chart, String> {
    let trips = &data.round_trips;
    let max_ns = trips
        .iter()
        .flat_map(|t| t.client_ns.into_iter().chain(t.server_ns))
        .max()
        .unwrap_or(0);
    let (unit, scale) = unit_for(max_ns);
    let series = |pick: fn(&super::data::RoundTrip) -> Option<u64>| -> Vec<(f64, f64)> {
        trips
            .iter()
            .filter_map(|t| Some((t.run_count as f64, pick(t)? as f64 / scale)))
            .collect()
    };
    let client = series(|t| t.client_ns);
    let server = series(|t| t.server_ns);
    let (x0, x1) = widen(
        trips.first().map_or(0.0, |t| t.run_count as f64),
        trips.last().map_or(1.0, |t| t.run_count as f64),
    );
    let y1 = (max_ns as f64 / scale * 1.08).max(1.0);
    let title = "Round trip by run count";
    render(title, |root| {
        let mut chart = builder(root, title)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(drawing)?;
        mesh(&mut chart)
            .x_desc("run count")
            .y_desc(format!("duration ({unit})"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(drawing)?;
        for (points, color, label) in [
            (&client, CLIENT, "client round trip"),
            (&server, SERVER, "server duration"),
        ] {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(1),
                ))
                .map_err(drawing)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            if points.len() <= MAX_MARKERS {
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 2, color.filled())))
                    .map_err(drawing)?;
            }
        }
        if !client.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(LABELS)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(drawing)?;
        }
        match per_run_note(data, trips.len()) {
            Some(text) => note(root, &text),
            None => Ok(()),
        }
    })
}

/// `99.9%` for x = 1000 (x = 1/(1-p)).
fn percentile_label(x: f64) -> String {
    let nines = x.log10().round() as i32;
    let p = 100.0 * (1.0 - 1.0 / x);
    match nines {
        i32::MIN..=0 => "0%".into(),
        1 | 2 => format!("{p:.0}%"),
        n => format!("{p:.prec$}%", prec = (n - 2) as usize),
    }
}

fn percentile_chart(data: &PlotData) -> Result<Chart, String> {
    let latency = &data.latency;
    let max_ns = data.round_trip_at(1.0).unwrap_or(0);
    let (unit, scale) = unit_for(max_ns);
    let top = PERCENTILE_TICKS[PERCENTILE_TICKS.len() - 1];
    // Log-uniform samples of x from 1 (0%) to `top` (99.999%).
    let samples = 400;
    let curve: Vec<(f64, f64)> = (0..=samples)
        .filter_map(|i| {
            let x = top.powf(i as f64 / samples as f64);
            let v = data.round_trip_at(1.0 - 1.0 / x)?;
            Some((x, v as f64 / scale))
        })
        .collect();
    let y1 = (max_ns as f64 / scale * 1.1).max(1.0);
    let title = "Round trip by percentile";
    render(title, |root| {
        let mut chart = builder(root, title)
            .build_cartesian_2d(
                (1.0..top)
                    .log_scale()
                    .with_key_points(PERCENTILE_TICKS.to_vec()),
                0.0..y1,
            )
            .map_err(drawing)?;
        mesh(&mut chart)
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc(format!("client round trip ({unit})"))
            .x_label_formatter(&|x| percentile_label(*x))
            .draw()
            .map_err(drawing)?;
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                CLIENT.stroke_width(2),
            ))
            .map_err(drawing)?;
        let marks = PERCENTILE_MARKS.iter().filter_map(|&(q, name)| {
            let v = data.round_trip_at(q)? as f64 / scale;
            Some(
                EmptyElement::at((1.0 / (1.0 - q), v))
                    + Circle::new((0, 0), 4, CLIENT.filled())
                    + Text::new(
                        format!("{name} {v:.1}"),
                        (if q < 0.999 { 6 } else { -110 }, -22),
                        LABELS,
                    ),
            )
        });
        chart.draw_series(marks).map_err(drawing)?;
        let source = if data.latency_from_summary {
            None
        } else if latency.total() == 0 {
            Some("no round trips in this report")
        } else {
            Some("computed from the runs in the report (it has no summary histogram)")
        };
        match source {
            Some(text) => note(root, text),
            None => Ok(()),
        }
    })
}

/// The round trips regrouped into HISTOGRAM_BINS log-spaced bins: the
/// edges (ns) and the runs in each.
fn log_bins(latency: &Buckets) -> (Vec<f64>, Vec<u64>) {
    let lo = latency.bounds.first().copied().unwrap_or(1).max(1) as f64;
    let hi = latency.bounds.last().copied().unwrap_or(1).max(1) as f64;
    let (lo, hi) = if hi > lo * 1.01 {
        (lo, hi)
    } else {
        (lo * 0.9, hi * 1.1)
    };
    let ratio = hi / lo;
    let edges: Vec<f64> = (0..=HISTOGRAM_BINS)
        .map(|k| lo * ratio.powf(k as f64 / HISTOGRAM_BINS as f64))
        .collect();
    let mut counts = vec![0u64; HISTOGRAM_BINS];
    for (&bound, &count) in latency.bounds.iter().zip(&latency.counts) {
        let at = (bound.max(1) as f64 / lo).ln() / ratio.ln() * HISTOGRAM_BINS as f64;
        counts[(at.max(0.0) as usize).min(HISTOGRAM_BINS - 1)] += count;
    }
    (edges, counts)
}

/// Tick values for a log axis from `lo` to `hi`: 1, 2 and 5 x powers of
/// ten, or every digit x a power of ten on a short range, or the ends.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let within = |digits: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|e| digits.iter().map(move |d| d * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let ticks = within(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 3 {
        return ticks;
    }
    let ticks = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if ticks.len() >= 2 {
        return ticks;
    }
    vec![lo, (lo * hi).sqrt(), hi]
}

/// `12.3`, `123`, `0.05`: three significant digits (whole numbers as such).
fn significant(v: f64) -> String {
    if v == v.round() {
        return format!("{v:.0}");
    }
    let digits = (2 - v.abs().max(1e-9).log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

fn histogram_chart(data: &PlotData) -> Result<Chart, String> {
    let (edges, counts) = log_bins(&data.latency);
    let (unit, scale) = unit_for(edges[edges.len() - 1] as u64);
    let y1 = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let (lo, hi) = (edges[0] / scale, edges[edges.len() - 1] / scale);
    let title = "Round trip histogram";
    render(title, |root| {
        let mut chart = builder(root, title)
            .build_cartesian_2d(
                (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
                0.0..y1,
            )
            .map_err(drawing)?;
        mesh(&mut chart)
            .x_desc(format!("client round trip ({unit}, log scale)"))
            .y_desc("runs")
            .x_label_formatter(&|x| significant(*x))
            .y_label_formatter(&|y| significant(*y))
            .draw()
            .map_err(drawing)?;
        let bars = counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, &c)| {
                Rectangle::new(
                    [(edges[k] / scale, 0.0), (edges[k + 1] / scale, c as f64)],
                    CLIENT.mix(0.75).filled(),
                )
            });
        chart.draw_series(bars).map_err(drawing)?;
        if data.latency.total() == 0 {
            note(root, "no round trips in this report")?;
        }
        Ok(())
    })
}

/// A bin width (ns) for `span_ns` of time: 1, 2 or 5 x a power of ten, at
/// least 1 ms, giving at most TIME_BINS bins.
fn bin_width(span_ns: i128) -> i128 {
    let mut decade: i128 = 1_000_000;
    loop {
        for width in [decade, 2 * decade, 5 * decade] {
            if span_ns / width < TIME_BINS {
                return width;
            }
        }
        decade *= 10;
    }
}

/// Counts per second of `times` from `origin` to `end` in bins of `width`,
/// as a step line (seconds from the origin, per second). The last bin
/// takes the remainder of the span too, so no sliver at the end has its few
/// runs read as a rate over a whole width.
fn per_second(times: &[i128], origin: i128, end: i128, width: i128) -> Vec<(f64, f64)> {
    let span = (end - origin).max(0);
    let bins = (span / width).max(1) as usize;
    let edge = |k: usize| {
        if k == bins {
            span.max(width)
        } else {
            k as i128 * width
        }
    };
    let mut counts = vec![0u64; bins];
    for t in times {
        let k = ((t - origin) / width).clamp(0, bins as i128 - 1) as usize;
        counts[k] += 1;
    }
    counts
        .iter()
        .enumerate()
        .flat_map(|(k, &c)| {
            let (from, to) = (edge(k), edge(k + 1));
            let rate = c as f64 * 1e9 / (to - from) as f64;
            [(from as f64 / 1e9, rate), (to as f64 / 1e9, rate)]
        })
        .collect()
}

fn time_chart(
    data: &PlotData,
    title: &str,
    y_desc: &str,
    times: &[i128],
    color: RGBColor,
) -> Result<Chart, String> {
    let origin = data
        .starts
        .first()
        .into_iter()
        .chain(data.failures.first())
        .min()
        .copied()
        .unwrap_or(0);
    let end = data
        .starts
        .last()
        .into_iter()
        .chain(data.failures.last())
        .max()
        .copied()
        .unwrap_or(0);
    let width = bin_width(end - origin);
    let line = per_second(times, origin, end, width);
    let x1 = line.last().map_or(1.0, |p| p.0);
    let y1 = line.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    render(title, |root| {
        let mut chart = builder(root, title)
            .build_cartesian_2d(0.0..x1, 0.0..y1)
            .map_err(drawing)?;
        mesh(&mut chart)
            .x_desc(format!(
                "seconds since the first run left (bins of {} ms)",
                width / 1_000_000
            ))
            .y_desc(y_desc)
            .y_label_formatter(&|y| significant(*y))
            .draw()
            .map_err(drawing)?;
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(drawing)?;
        match per_run_note(data, data.starts.len()) {
            Some(text) => note(root, &text),
            None => Ok(()),
        }
    })
}

/// Every chart of the report, top to bottom.
pub fn charts(data: &PlotData) -> Result<Vec<Chart>, String> {
    Ok(vec![
        round_trip_chart(data)?,
        percentile_chart(data)?,
        histogram_chart(data)?,
        time_chart(
            data,
            "Achieved rate over time",
            "runs started per second",
            &data.starts,
            CLIENT,
        )?,
        time_chart(
            data,
            "Failed runs per second over time",
            "failed runs per second",
            &data.failures,
            SERVER,
        )?,
    ])
}

/// The charts as one SVG document, stacked.
pub fn stacked(charts: &[Chart]) -> String {
    let height = HEIGHT as usize * charts.len();
    let mut out = format!(
        "<svg width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\n"
    );
    for (i, chart) in charts.iter().enumerate() {
        let at = format!("<svg x=\"0\" y=\"{}\" ", i * HEIGHT as usize);
        out.push_str(&chart.svg.replacen("<svg ", &at, 1));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_count_the_nines() {
        let labels: Vec<String> = PERCENTILE_TICKS
            .iter()
            .map(|&x| percentile_label(x))
            .collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn log_ticks_fit_the_range() {
        assert_eq!(log_ticks(3.0, 300.0), [5.0, 10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(log_ticks(21.0, 46.0), [30.0, 40.0]);
        assert_eq!(log_ticks(21.0, 22.0).len(), 3);
        assert_eq!(significant(0.0), "0");
        assert_eq!(significant(2.5), "2.50");
        assert_eq!(significant(21.37), "21.4");
    }

    #[test]
    fn the_last_time_bin_takes_the_remainder_of_the_span() {
        // 25 runs a ms over 2.5 ms in 1 ms bins: two bins, the second
        // 1.5 ms wide, every rate 25 000/s (a third bin of 0.5 ms would
        // read its runs over a whole ms).
        let times: Vec<i128> = (0..=62).map(|i| i * 40_000).collect();
        let line = per_second(&times, 0, 2_480_000, 1_000_000);
        assert_eq!(line.len(), 4, "{line:?}");
        assert_eq!(line[3].0, 0.00248);
        for (_, rate) in &line {
            assert!((rate - 25_000.0).abs() < 1_000.0, "{line:?}");
        }
        // One run: one bin of one width.
        assert_eq!(
            per_second(&[7], 7, 7, 1_000_000),
            [(0.0, 1000.0), (0.001, 1000.0)]
        );
    }

    #[test]
    fn bins_are_one_two_five() {
        assert_eq!(bin_width(0), 1_000_000);
        assert_eq!(bin_width(59_000_000), 1_000_000);
        assert_eq!(bin_width(100_000_000), 2_000_000);
        assert_eq!(bin_width(200_000_000), 5_000_000);
        assert_eq!(bin_width(500_000_000), 10_000_000);
        assert_eq!(bin_width(59_000_000_000), 1_000_000_000);
        assert_eq!(bin_width(60_000_000_000), 2_000_000_000);
    }
}
