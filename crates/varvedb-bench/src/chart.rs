//! The report as an SVG bar chart (`--svg FILE`): one group of bars per workload, one bar per
//! peer, on a log scale. Rows of different units get panels of their own (throughput; latency;
//! disk bytes per event), since one axis cannot compare events per second with milliseconds.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Report, Row, Unit};

/// One colour per peer, in the order of the report's peers (VarveDB first).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0x66, 0x66, 0x66),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
];

const WIDTH: u32 = 1200;
const PANEL_BASE: u32 = 140;
const PANEL_PER_ROW: u32 = 36;

fn failed(e: impl std::fmt::Display) -> crate::BenchError {
    crate::BenchError::Failed(format!("the chart: {e}"))
}

/// Writes `report` as an SVG chart to `path`.
pub fn write_svg(report: &Report, path: &Path) -> crate::BenchResult<()> {
    let panels: Vec<(&str, Vec<&Row>)> = [
        (
            Unit::EventsPerSecond,
            "events per second (higher is better)",
        ),
        (Unit::Milliseconds, "latency, ms (lower is better)"),
        (
            Unit::BytesPerEvent,
            "disk bytes per event (lower is better)",
        ),
    ]
    .into_iter()
    .map(|(unit, title)| {
        let rows = report
            .rows
            .iter()
            .filter(|r| r.unit == unit && r.cells.iter().any(|c| c.median.is_some()))
            .collect::<Vec<_>>();
        (title, rows)
    })
    .filter(|(_, rows)| !rows.is_empty())
    .collect();
    if panels.is_empty() {
        return Err(failed("the report has no figures"));
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, rows)| PANEL_BASE + PANEL_PER_ROW * rows.len() as u32)
        .collect();
    let legend = 40;
    let height = legend + heights.iter().sum::<u32>();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (top, mut rest) = root.split_vertically(legend);
    draw_legend(&top, &report.options.peers)?;
    for ((title, rows), h) in panels.iter().zip(&heights) {
        let (panel, below) = rest.split_vertically(*h);
        draw_panel(&panel, title, rows, &report.options.peers)?;
        rest = below;
    }
    root.present().map_err(failed)
}

fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    peers: &[String],
) -> crate::BenchResult<()> {
    let mut x = 20;
    for (i, peer) in peers.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        area.draw(&Rectangle::new([(x, 12), (x + 16, 28)], colour.filled()))
            .map_err(failed)?;
        area.draw(&Text::new(
            peer.clone(),
            (x + 22, 13),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(failed)?;
        x += 40 + 9 * peer.len() as i32;
    }
    Ok(())
}

/// A horizontal bar chart: a band per row (labelled with its title), a bar per peer.
fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    rows: &[&Row],
    peers: &[String],
) -> crate::BenchResult<()> {
    let values = rows
        .iter()
        .flat_map(|r| r.cells.iter().filter_map(|c| c.median))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades around the figures, so that every bar starts at the same left edge.
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    let n = rows.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(430)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => n
                .checked_sub(1 + *i)
                .and_then(|k| rows.get(k))
                .map_or(String::new(), |r| short(&r.title)),
            _ => String::new(),
        })
        .x_label_formatter(&|x| human(*x))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(failed)?;
    // The bars, in the same pixels as the bands: a coordinate system of plain numbers.
    let mut chart = chart.set_secondary_coord((lo..hi).log_scale(), 0f64..n as f64);
    let slots = peers.len() as f64 + 1.0;
    for (band, row) in rows.iter().enumerate() {
        let top = (n - band) as f64;
        for (p, peer) in peers.iter().enumerate() {
            let Some(value) = row
                .cells
                .iter()
                .find(|c| &c.peer == peer)
                .and_then(|c| c.median)
            else {
                continue;
            };
            let y0 = top - (p as f64 + 0.5) / slots;
            let y1 = y0 - 1.0 / slots;
            let colour = PALETTE[p % PALETTE.len()];
            chart
                .draw_secondary_series(std::iter::once(Rectangle::new(
                    [(lo, y1), (value.max(lo), y0)],
                    colour.filled(),
                )))
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// A workload title short enough for the label column.
fn short(title: &str) -> String {
    const MAX: usize = 62;
    if title.chars().count() <= MAX {
        return title.to_string();
    }
    let cut: String = title.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

/// 1500 → "1.5K", 2e6 → "2M".
fn human(v: f64) -> String {
    for (scale, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "K")] {
        if v >= scale {
            return format!("{}{suffix}", trim(v / scale));
        }
    }
    trim(v)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Cell, Machine};

    #[test]
    fn a_report_draws_every_row_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = crate::Options::quick(dir.path().into());
        options.peers = vec!["VarveDB".into(), "SQLite".into()];
        let row = |id: &str, unit, ours: f64, theirs: Option<f64>| Row {
            id: id.into(),
            title: format!("({id}) a workload"),
            unit,
            cells: vec![
                Cell::from_runs("VarveDB", vec![ours], None),
                match theirs {
                    Some(v) => Cell::from_runs("SQLite", vec![v], None),
                    None => Cell::not_applicable("SQLite", "no such API"),
                },
            ],
        };
        let report = Report {
            machine: Machine {
                cpu: "test".into(),
                cpus: 2,
                kernel: "test".into(),
                filesystem: "tmpfs".into(),
            },
            event_bytes: 136,
            options,
            rows: vec![
                row("a", Unit::EventsPerSecond, 2_000.0, Some(2_500.0)),
                row("d", Unit::EventsPerSecond, 5.5e6, None),
                row("g", Unit::Milliseconds, 1.2, Some(15.0)),
                row("h", Unit::BytesPerEvent, 483.0, Some(12_300.0)),
            ],
        };
        let path = dir.path().join("chart.svg");
        write_svg(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "(a) a workload",
            "(d) a workload",
            "(g) a workload",
            "(h) a workload",
            "VarveDB",
            "SQLite",
            "events per second",
            "latency, ms",
            "disk bytes per event",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // One bar per figure: 7 figures (the n/a cell draws none), in the peers' colours.
        let bars = |c: RGBColor| {
            svg.matches(&format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
                .count()
        };
        assert_eq!(bars(PALETTE[0]), 4 + 1, "VarveDB's bars and its legend box");
        assert_eq!(bars(PALETTE[1]), 3 + 1, "SQLite's bars and its legend box");
    }

    #[test]
    fn labels_read_as_people_write_them() {
        assert_eq!(human(1500.0), "1.5K");
        assert_eq!(human(2e6), "2M");
        assert_eq!(human(10.0), "10");
        assert_eq!(short("x".repeat(80).as_str()).chars().count(), 62);
    }
}
