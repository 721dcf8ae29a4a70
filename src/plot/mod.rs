//! `conntest plot`: charts of a report, with no tool but this binary. The
//! page (`.html`) holds the summary table and every chart, inline and
//! self-contained; `.svg` holds the charts alone, stacked in one document.
//! The latency charts are drawn from the summary's histogram, so a report
//! written with `--runs failed` plots as well as a whole one; an older
//! report without it has them computed from its runs.

pub mod charts;
pub mod data;
pub mod page;

use std::path::Path;

/// Why a plot could not be written.
#[derive(Debug)]
pub enum PlotError {
    /// The report or the output path is not usable (exit status 2).
    Usage(String),
    /// A chart could not be drawn (exit status 3).
    Internal(String),
}

/// What `-o` asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Html,
    Svg,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("html" | "htm") => Ok(Format::Html),
            Some("svg") => Ok(Format::Svg),
            _ => Err(format!(
                "-o '{}': the name must end in .html or .svg",
                path.display()
            )),
        }
    }
}

/// The plot of a report's bytes, in `format`.
pub fn render(report: &[u8], format: Format) -> Result<String, PlotError> {
    let data = data::parse(report).map_err(PlotError::Usage)?;
    let charts = charts::charts(&data).map_err(PlotError::Internal)?;
    Ok(match format {
        Format::Html => page::page(&data, &charts),
        Format::Svg => charts::stacked(&charts),
    })
}

/// Reads the report at `report` and writes its plot to `output`.
pub fn write(report: &Path, output: &Path) -> Result<(), PlotError> {
    let format = Format::of(output).map_err(PlotError::Usage)?;
    let bytes = std::fs::read(report)
        .map_err(|e| PlotError::Usage(format!("cannot read '{}': {e}", report.display())))?;
    let text = render(&bytes, format).map_err(|e| match e {
        PlotError::Usage(m) => PlotError::Usage(format!("'{}': {m}", report.display())),
        internal => internal,
    })?;
    std::fs::write(output, text)
        .map_err(|e| PlotError::Usage(format!("cannot write '{}': {e}", output.display())))
}
