//! PNG plots for the report (plotters, with the DejaVu Sans font shipped in `assets/`).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::results::Results;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// What drawing a plot gives.
pub type Res = Result<(), Box<dyn std::error::Error>>;

/// Accuracy per round: federated distillation, FedAvg, and flat lines for the other baselines.
pub fn accuracy_per_round(r: &Results, path: &Path) -> Res {
    register();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let rounds = r.rounds.len().max(1) as u64;
    let mut lo = r.rounds.iter().map(|x| x.global_accuracy).fold(1.0f32, f32::min);
    if let Some(f) = &r.fedavg {
        lo = f.per_round.iter().copied().fold(lo, f32::min);
    }
    if let Some(l) = &r.local_only {
        lo = lo.min(l.mean);
    }
    let lo = ((lo - 0.05).max(0.0) * 20.0).floor() / 20.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: test accuracy per round", r.scenario), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(1u64..rounds, lo..1.0f32)?;
    chart.configure_mesh().x_desc("round").y_desc("test accuracy").label_style(("sans-serif", 14)).draw()?;
    let fd: Vec<(u64, f32)> = r.rounds.iter().map(|x| (x.round, x.global_accuracy)).collect();
    chart
        .draw_series(LineSeries::new(fd, BLUE.stroke_width(3)))?
        .label("federated distillation (global student)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
    if let Some(f) = &r.fedavg {
        let pts: Vec<(u64, f32)> = f.per_round.iter().enumerate().map(|(i, a)| (i as u64 + 1, *a)).collect();
        chart
            .draw_series(LineSeries::new(pts, RED.stroke_width(2)))?
            .label("FedAvg")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    let mut flat = |name: &str, v: f32, color: RGBColor| -> Res {
        chart
            .draw_series(LineSeries::new(vec![(1, v), (rounds, v)], color.stroke_width(1)))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        Ok(())
    };
    flat("teachers' ensemble (final)", r.ensemble_accuracy, RGBColor(0, 150, 0))?;
    if let Some(c) = &r.centralized {
        flat("centralized", c.accuracy, BLACK)?;
    }
    if let Some(l) = &r.local_only {
        flat("local-only (mean node)", l.mean, RGBColor(150, 150, 150))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Accuracy against cumulative bytes on the wire (log scale), FD against FedAvg.
pub fn accuracy_per_byte(r: &Results, path: &Path) -> Res {
    register();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut fd = Vec::new();
    let mut total = 0u64;
    for x in &r.rounds {
        total += x.bytes_up + x.bytes_down;
        fd.push((total.max(1) as f64, x.global_accuracy));
    }
    let mut fa = Vec::new();
    if let Some(f) = &r.fedavg {
        let per = f.bytes_total as f64 / f.per_round.len().max(1) as f64;
        fa = f.per_round.iter().enumerate().map(|(i, a)| (per * (i + 1) as f64, *a)).collect();
    }
    let xmax = fd.iter().chain(&fa).map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let xmin = fd.iter().chain(&fa).map(|p| p.0).fold(f64::MAX, f64::min) / 1.5;
    let lo = fd.iter().chain(&fa).map(|p| p.1).fold(1.0f32, f32::min);
    let lo = ((lo - 0.05).max(0.0) * 20.0).floor() / 20.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: accuracy against bytes on the wire", r.scenario), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((xmin..xmax).log_scale(), lo..1.0f32)?;
    chart
        .configure_mesh()
        .x_desc("cumulative bytes (both directions)")
        .y_desc("test accuracy")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart
        .draw_series(LineSeries::new(fd.clone(), BLUE.stroke_width(3)))?
        .label("federated distillation")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
    chart.draw_series(fd.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    if !fa.is_empty() {
        chart
            .draw_series(LineSeries::new(fa.clone(), RED.stroke_width(2)))?
            .label("FedAvg")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart.draw_series(fa.iter().map(|p| Circle::new(*p, 3, RED.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A curve of (cumulative bytes, accuracy) points.
pub type Curve = Vec<(f64, f32)>;

/// The global student's accuracy against cumulative bytes, the mean over seeds round by round:
/// one curve per run (e.g. an ablation's variants), and FedAvg's.
pub fn accuracy_per_byte_curves(scenario: &str, curves: &[(String, Curve)], fedavg: &Curve, path: &Path) -> Res {
    register();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = || curves.iter().flat_map(|(_, c)| c.iter()).chain(fedavg.iter());
    let xmax = points().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let xmin = points().map(|p| p.0).fold(f64::MAX, f64::min).min(xmax) / 1.5;
    let lo = points().map(|p| p.1).fold(1.0f32, f32::min);
    let lo = ((lo - 0.05).max(0.0) * 20.0).floor() / 20.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{scenario}: accuracy against bytes on the wire"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((xmin.max(1.0)..xmax.max(2.0)).log_scale(), lo..1.0f32)?;
    chart
        .configure_mesh()
        .x_desc("cumulative bytes (both directions), mean over seeds")
        .y_desc("global student's test accuracy")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, (name, c)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(c.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if !fedavg.is_empty() {
        chart
            .draw_series(LineSeries::new(fedavg.clone(), BLACK.stroke_width(2)))?
            .label("FedAvg")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Compression: test accuracy against bytes on disk (log scale), a point a model, labelled.
pub fn accuracy_per_size(r: &Results, path: &Path) -> Res {
    register();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts: Vec<(f64, f32, &str)> =
        r.compress.iter().map(|a| (a.bytes.max(1) as f64, a.accuracy, a.name.as_str())).collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let xmin = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min) / 2.0;
    let lo = pts.iter().map(|p| p.1).fold(1.0f32, f32::min);
    let lo = ((lo - 0.05).max(0.0) * 20.0).floor() / 20.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: accuracy against size", r.scenario), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((xmin..xmax).log_scale(), lo..1.0f32)?;
    chart.configure_mesh().x_desc("bytes on disk").y_desc("test accuracy").label_style(("sans-serif", 14)).draw()?;
    let colour = |name: &str| {
        if name == "teacher" {
            RED
        } else if name.ends_with("int8") {
            RGBColor(0, 150, 0)
        } else {
            BLUE
        }
    };
    chart.draw_series(pts.iter().map(|(x, y, n)| Circle::new((*x, *y), 4, colour(n).filled())))?;
    chart.draw_series(
        pts.iter().map(|(x, y, n)| Text::new(n.to_string(), (*x, *y), ("sans-serif", 11).into_font().color(&BLACK))),
    )?;
    root.present()?;
    Ok(())
}

/// Label distribution per node, as a heat map of counts.
pub fn label_distribution(counts: &[Vec<usize>], path: &Path) -> Res {
    register();
    let nodes = counts.len();
    let classes = counts.first().map_or(0, Vec::len);
    let height = (120 + 18 * nodes).clamp(300, 2000) as u32;
    let root = BitMapBackend::new(path, (800, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("private labels per node", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0..classes, 0..nodes)?;
    chart.configure_mesh().disable_mesh().x_desc("class").y_desc("node").label_style(("sans-serif", 13)).draw()?;
    chart.draw_series(counts.iter().enumerate().flat_map(|(n, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            let t = (v as f64 / max).sqrt();
            let shade = (255.0 * (1.0 - t)) as u8;
            Rectangle::new([(c, n), (c + 1, n + 1)], RGBColor(shade, shade, 255).filled())
        })
    }))?;
    root.present()?;
    Ok(())
}
