//! Charts of a benchmark run (plotters, SVG and PNG): the singular value spectra of `W0`,
//! the LoRA update and the RoRA update for one layer, and CA / ASR per method.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::mean_sd;
use super::{METHODS, Results};

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

/// Write `spectra.{svg,png}` and `ca_asr.{svg,png}` into `out`.
pub fn write_charts(results: &Results, out: &Path) -> Result<(), String> {
    register_font()?;
    for ext in ["svg", "png"] {
        let spectra = out.join(format!("spectra.{ext}"));
        let bars = out.join(format!("ca_asr.{ext}"));
        if ext == "svg" {
            draw_spectra(
                &SVGBackend::new(&spectra, (800, 500)).into_drawing_area(),
                results,
            )?;
            draw_bars(
                &SVGBackend::new(&bars, (800, 500)).into_drawing_area(),
                results,
            )?;
        } else {
            draw_spectra(
                &BitMapBackend::new(&spectra, (800, 500)).into_drawing_area(),
                results,
            )?;
            draw_bars(
                &BitMapBackend::new(&bars, (800, 500)).into_drawing_area(),
                results,
            )?;
        }
    }
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn draw_spectra<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(err)?;
    let Some(s) = results.spectra.first() else {
        area.titled("no spectra (no LoRA/RoRA run)", ("sans-serif", 20))
            .map_err(err)?;
        return area.present().map_err(err);
    };
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
            format!("singular values: {} ({} / {})", s.layer, s.model, s.attack),
            ("sans-serif", 18),
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
    area.present().map_err(err)
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(err)?;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let poisoned_ca: Vec<f64> = results.poisoned.iter().map(|p| p.ca).collect();
    let poisoned_asr: Vec<f64> = results.poisoned.iter().map(|p| p.asr).collect();
    rows.push((
        "poisoned".into(),
        mean_sd(&poisoned_ca).0,
        mean_sd(&poisoned_asr).0,
    ));
    for m in METHODS {
        let ca: Vec<f64> = results
            .runs
            .iter()
            .filter(|r| r.method == m)
            .map(|r| r.ca)
            .collect();
        let asr: Vec<f64> = results
            .runs
            .iter()
            .filter(|r| r.method == m)
            .map(|r| r.asr)
            .collect();
        if !ca.is_empty() {
            rows.push((m.to_string(), mean_sd(&ca).0, mean_sd(&asr).0));
        }
    }
    let n = rows.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "CA and ASR per method (mean over models, attacks, seeds)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
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
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    area.present().map_err(err)
}
