//! Charts of a benchmark run (plotters, SVG and PNG): the singular value spectra of `W0`,
//! the LoRA update and the RoRA update for one layer, and CA / ASR per method; one panel
//! per (model, attack).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::mean_sd;
use super::{Method, Results};

/// Font files tried, in order, for text in PNG charts (Debian's `fonts-dejavu-core`).
const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("RORA_CHART_FONT")
            .ok()
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(|s| s.to_string()))
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!("no font found (tried {FONT_CANDIDATES:?}; set RORA_CHART_FONT)")
            })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| format!("{path}: not a usable font"))
    })
    .clone()
}

/// Write `spectra.{svg,png}` and `ca_asr.{svg,png}` into `out`: one panel per
/// (model, attack).
pub fn write_charts(results: &Results, out: &Path) -> Result<(), String> {
    register_font()?;
    let n_spectra = results.spectra.len().max(1);
    let n_groups = groups(results).len().max(1);
    for ext in ["svg", "png"] {
        let spectra = out.join(format!("spectra.{ext}"));
        let bars = out.join(format!("ca_asr.{ext}"));
        let (spectra_size, bars_size) = (canvas(n_spectra), canvas(n_groups));
        if ext == "svg" {
            draw_spectra(
                &SVGBackend::new(&spectra, spectra_size).into_drawing_area(),
                results,
            )?;
            draw_bars(
                &SVGBackend::new(&bars, bars_size).into_drawing_area(),
                results,
            )?;
        } else {
            draw_spectra(
                &BitMapBackend::new(&spectra, spectra_size).into_drawing_area(),
                results,
            )?;
            draw_bars(
                &BitMapBackend::new(&bars, bars_size).into_drawing_area(),
                results,
            )?;
        }
    }
    Ok(())
}

/// The (model, attack) pairs of a run, in run order.
fn groups(results: &Results) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for p in &results.poisoned {
        let g = (p.model.clone(), p.attack.clone());
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// Panels per row, and the canvas size for `n` panels.
const PANEL_COLUMNS: usize = 2;

fn canvas(n: usize) -> (u32, u32) {
    let cols = n.min(PANEL_COLUMNS) as u32;
    let rows = n.div_ceil(PANEL_COLUMNS) as u32;
    (560 * cols.max(1), 400 * rows.max(1))
}

/// `n` panels of `area`, row by row.
fn panels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    n: usize,
) -> Vec<DrawingArea<DB, Shift>> {
    let cols = n.clamp(1, PANEL_COLUMNS);
    area.split_evenly((n.div_ceil(cols).max(1), cols))
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn draw_spectra<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(err)?;
    if results.spectra.is_empty() {
        area.titled("no spectra (no LoRA/RoRA run)", ("sans-serif", 20))
            .map_err(err)?;
        return area.present().map_err(err);
    }
    for (panel, s) in panels(area, results.spectra.len())
        .iter()
        .zip(&results.spectra)
    {
        draw_spectrum(panel, s)?;
    }
    area.present().map_err(err)
}

fn draw_spectrum<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &super::Spectra,
) -> Result<(), String> {
    let series: [(&str, &Vec<f64>, RGBColor); 3] = [
        ("W0", &s.base, BLACK),
        ("LoRA update", &s.lora, BLUE),
        ("RoRA update", &s.rora, RED),
    ];
    let n = series
        .iter()
        .map(|(_, v, _)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let positive = series
        .iter()
        .flat_map(|(_, v, _)| v.iter().copied())
        .filter(|v| *v > 0.0);
    let (lo, hi) = positive.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (1e-3, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} / {}: σ of {}", s.model, s.attack, s.layer),
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(1usize..n, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("index i")
        .y_desc("σ_i")
        .draw()
        .map_err(err)?;
    for (name, values, color) in series {
        let points: Vec<(usize, f64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(i, v)| (i + 1, *v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(err)?;
    let groups = groups(results);
    for (panel, (model, attack)) in panels(area, groups.len()).iter().zip(&groups) {
        draw_group_bars(panel, results, model, attack)?;
    }
    area.present().map_err(err)
}

/// CA and ASR (mean over seeds, ASR with a ±1 sd whisker) of the poisoned model and each
/// method, for one (model, attack).
fn draw_group_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
    model: &str,
    attack: &str,
) -> Result<(), String> {
    // (label, CA mean, ASR mean, ASR sd)
    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
    if let Some(p) = results
        .poisoned
        .iter()
        .find(|p| p.model == model && p.attack == attack)
    {
        rows.push(("poisoned".into(), p.ca, p.asr, 0.0));
    }
    for m in Method::ALL {
        let runs: Vec<_> = results
            .runs
            .iter()
            .filter(|r| r.method == m && r.model == model && r.attack == attack)
            .collect();
        if !runs.is_empty() {
            let ca: Vec<f64> = runs.iter().map(|r| r.ca).collect();
            let (asr, asr_sd) = mean_sd(&runs.iter().map(|r| r.asr).collect::<Vec<_>>());
            rows.push((m.name().to_string(), mean_sd(&ca).0, asr, asr_sd));
        }
    }
    let seeds = results
        .runs
        .iter()
        .filter(|r| r.model == model && r.attack == attack && r.method == Method::Lora)
        .count();
    let n = rows.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{model} / {attack}: CA and ASR (mean of {seeds} seeds)"),
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..100f64)
        .map_err(err)?;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("%")
        .draw()
        .map_err(err)?;
    let ca_color = RGBColor(70, 130, 180);
    let asr_color = RGBColor(200, 60, 60);
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(i as f64 - 0.4, 0.0), (i as f64 - 0.02, 100.0 * r.1)],
                ca_color.filled(),
            )
        }))
        .map_err(err)?
        .label("CA")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], ca_color.filled()));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(i as f64 + 0.02, 0.0), (i as f64 + 0.4, 100.0 * r.2)],
                asr_color.filled(),
            )
        }))
        .map_err(err)?
        .label("ASR")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], asr_color.filled()));
    chart
        .draw_series(
            rows.iter()
                .enumerate()
                .filter(|(_, r)| r.3 > 0.0)
                .map(|(i, r)| {
                    let x = i as f64 + 0.21;
                    let (lo, hi) = (100.0 * (r.2 - r.3), (100.0 * (r.2 + r.3)).min(100.0));
                    PathElement::new(vec![(x, lo.max(0.0)), (x, hi)], BLACK.stroke_width(2))
                }),
        )
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
