//! The analysis of a model on the edge: accuracy on the test rows, parameters, bytes on disk,
//! latency at batch 1 and 256, peak memory of inference and energy per 1,000 inferences.
//!
//! - **Peak memory of inference** at batch 256, computed ([`inference_memory_bytes`]): the
//!   weights (f32) plus the largest pair of consecutive activations of the forward pass (a
//!   layer's input and output, both alive while it runs), each `256 × width × 4` bytes.
//!   Measured beside it (`rss_growth_bytes`): the growth of the process's peak resident set
//!   while that batch runs (Linux resets `VmHWM` to the current resident set when `5` is
//!   written to `/proc/self/clear_refs`; `VmHWM` after minus `VmRSS` before). Process-wide,
//!   it misses memory the allocator kept from earlier work and reuses, so a small model's batch
//!   often shows 0; `None` where `/proc` does not allow it.
//! - **Energy**: 1,000 inferences one row at a time. Where RAPL is readable
//!   (`/sys/class/powercap/intel-rapl:N/energy_uj`, the packages), the energy the packages used
//!   meanwhile (the whole machine's, other processes included): [`EnergySource::Rapl`].
//!   Otherwise an **estimate** ([`EnergySource::Estimate`]): the CPU time this process used
//!   meanwhile (the sum over its threads of `/proc/self/task/*/schedstat`'s first field, in ns)
//!   times the power of one busy logical core, the CPU's thermal design power shared equally
//!   between its logical cores (CodeCarbon's TDP approach, charged by CPU time rather than at
//!   50% of TDP over wall time); with no TDP given, 85 W. Memory, disk and idle power are
//!   left out.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::eval::evaluate;
use crate::model::Model;

/// The thermal design power assumed when none is given, in watts.
pub const DEFAULT_TDP_WATTS: f64 = 85.0;

/// Where an energy figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// Measured by RAPL (package energy counters).
    Rapl,
    /// Estimated from CPU time and a power per core (see the module's doc).
    Estimate,
}

/// One line of the analysis table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// What the row is: `teacher`, a method's name, `… int8`, a generation.
    pub name: String,
    /// Architecture label.
    pub architecture: String,
    /// Accuracy on the test rows.
    pub accuracy: f32,
    /// Parameters.
    pub parameters: usize,
    /// Bytes of the weights file (burnpack; the int8 file for int8 rows).
    pub bytes: u64,
    /// Latency at batch 1, µs per row (best of 50).
    pub latency_us_batch1: f64,
    /// Latency at batch 256, µs per row (best of 5).
    pub latency_us_batch256: f64,
    /// Peak memory of inference at batch 256, bytes: weights and the largest pair of
    /// consecutive activations (computed, see the module's doc).
    pub peak_memory_bytes: u64,
    /// Growth of the process's peak resident set over that batch, bytes (measured, see the
    /// module's doc).
    pub rss_growth_bytes: Option<u64>,
    /// Energy of 1,000 inferences one row at a time, millijoules.
    pub energy_mj_per_1000: f64,
    /// Measured or estimated.
    pub energy_source: EnergySource,
}

/// How energy is measured here.
#[derive(Clone, Copy, Debug)]
pub struct EnergyMeter {
    watts_per_core: f64,
}

impl EnergyMeter {
    /// A meter that estimates at `watts_per_core` when RAPL is not readable (`None`:
    /// [`DEFAULT_TDP_WATTS`] over the logical cores).
    pub fn new(watts_per_core: Option<f64>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Self { watts_per_core: watts_per_core.unwrap_or(DEFAULT_TDP_WATTS / cores) }
    }

    /// Watts charged per busy logical core by the estimate.
    pub fn watts_per_core(&self) -> f64 {
        self.watts_per_core
    }

    /// Energy of `work`, in joules, and where it came from.
    pub fn measure<T>(&self, work: impl FnOnce() -> T) -> (T, f64, EnergySource) {
        let rapl = rapl_uj();
        let cpu = cpu_ns();
        let out = work();
        if let (Some(before), Some(after)) = (rapl, rapl_uj())
            && after > before
        {
            return (out, (after - before) as f64 * 1e-6, EnergySource::Rapl);
        }
        let used = cpu_ns().saturating_sub(cpu) as f64 * 1e-9;
        (out, used * self.watts_per_core, EnergySource::Estimate)
    }
}

/// Summed package energy counters (µJ), if RAPL is readable.
fn rapl_uj() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/class/powercap").ok()?;
    let mut total = None;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Packages only (`intel-rapl:0`), not their sub-zones (`intel-rapl:0:0`).
        if name.starts_with("intel-rapl:") && name.matches(':').count() == 1 {
            let v: u64 = std::fs::read_to_string(e.path().join("energy_uj")).ok()?.trim().parse().ok()?;
            total = Some(total.unwrap_or(0) + v);
        }
    }
    total
}

/// CPU time of every thread of this process, ns.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident growth while `work` runs, bytes (see the module's doc).
fn peak_memory<T>(work: impl FnOnce() -> T) -> (T, Option<u64>) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmRSS:");
    let out = work();
    let peak = status_kib("VmHWM:");
    match (reset, before, peak) {
        (true, Some(b), Some(p)) => (out, Some(p.saturating_sub(b) * 1024)),
        _ => (out, None),
    }
}

/// Peak memory of a forward pass at `batch` (see the module's doc), bytes.
pub fn inference_memory_bytes(model: &Model, batch: usize) -> u64 {
    use crate::Architecture;
    // Widths (values a row) of the tensors of the forward pass, in order.
    let widths: Vec<usize> = match &model.architecture {
        Architecture::Mlp { hidden, .. } => {
            let mut w = vec![model.input_dim];
            for h in hidden {
                w.extend([*h, *h]); // linear, then ReLU
            }
            w.push(model.classes);
            w
        }
        Architecture::Cnn { channels: [c1, c2], hidden, .. } => {
            let side = (model.input_dim as f64).sqrt().round() as usize;
            let (s2, s4) = (side / 2, side / 2 / 2);
            vec![
                side * side,
                c1 * side * side,
                c1 * side * side,
                c1 * s2 * s2,
                c2 * s2 * s2,
                c2 * s2 * s2,
                c2 * s4 * s4,
                *hidden,
                *hidden,
                model.classes,
            ]
        }
    };
    let pair = widths.windows(2).map(|w| w[0] + w[1]).max().unwrap_or(widths[0]);
    4 * (model.num_params() + batch * pair) as u64
}

/// Measures `model` on the test rows; `bytes`: its weights file's size.
pub fn analyse(
    name: &str,
    model: &Model,
    bytes: u64,
    test: (&[f32], &[u32]),
    meter: &EnergyMeter,
) -> Result<Analysis, Error> {
    let (inputs, labels) = test;
    let probs = model.soft_labels(inputs, 1.0, 256)?;
    let accuracy = evaluate(&probs, labels, model.classes).accuracy;
    let rows = vec![0.5f32; 256 * model.input_dim];
    let (logits, rss_growth_bytes) = peak_memory(|| model.logits(&rows, 256));
    std::hint::black_box(logits?);
    let one = &rows[..model.input_dim];
    let (done, joules, energy_source) = meter.measure(|| (0..1000).try_for_each(|_| model.logits(one, 1).map(drop)));
    done?;
    Ok(Analysis {
        name: name.to_string(),
        architecture: model.architecture.label(model.input_dim, model.classes),
        accuracy,
        parameters: model.num_params(),
        bytes,
        latency_us_batch1: model.latency_us(1, 50)?,
        latency_us_batch256: model.latency_us(256, 5)?,
        peak_memory_bytes: inference_memory_bytes(model, 256),
        rss_growth_bytes,
        energy_mj_per_1000: joules * 1e3,
        energy_source,
    })
}

/// The row of an ensemble (the mean of its members' probabilities): its accuracy measured,
/// parameters, bytes, latency, energy summed over the members (they run one after the other),
/// peak memory the largest member's.
pub fn analyse_ensemble(
    name: &str,
    members: &[(&Model, &Analysis)],
    test: (&[f32], &[u32]),
) -> Result<Analysis, Error> {
    let (inputs, labels) = test;
    let Some((first, _)) = members.first() else { return Err(Error::Config("an ensemble of no model".into())) };
    let mut mean = vec![0f32; labels.len() * first.classes];
    for (m, _) in members {
        for (a, p) in mean.iter_mut().zip(m.soft_labels(inputs, 1.0, 256)?) {
            *a += p / members.len() as f32;
        }
    }
    let rows = members.iter().map(|(_, a)| *a);
    Ok(Analysis {
        name: name.to_string(),
        architecture: format!("{} × {}", members.len(), members[0].1.architecture),
        accuracy: evaluate(&mean, labels, first.classes).accuracy,
        parameters: rows.clone().map(|a| a.parameters).sum(),
        bytes: rows.clone().map(|a| a.bytes).sum(),
        latency_us_batch1: rows.clone().map(|a| a.latency_us_batch1).sum(),
        latency_us_batch256: rows.clone().map(|a| a.latency_us_batch256).sum(),
        peak_memory_bytes: rows.clone().map(|a| a.peak_memory_bytes).max().unwrap_or(0),
        rss_growth_bytes: rows.clone().map(|a| a.rss_growth_bytes).max().flatten(),
        energy_mj_per_1000: rows.clone().map(|a| a.energy_mj_per_1000).sum(),
        energy_source: members[0].1.energy_source,
    })
}

/// The analysis as a Markdown table (one row each), with a note on where energy comes from.
pub fn markdown(rows: &[Analysis], meter: &EnergyMeter) -> String {
    let mut s = String::from(
        "| model | architecture | test accuracy | parameters | bytes on disk | µs/row @1 | µs/row @256 | peak memory @256 | mJ / 1,000 inferences |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let mem = format!("{:.1} KiB", r.peak_memory_bytes as f64 / 1024.0);
        let est = if r.energy_source == EnergySource::Estimate { " (estimate)" } else { "" };
        s.push_str(&format!(
            "| {} | {} | {:.2}% | {} | {} | {:.1} | {:.2} | {} | {:.2}{} |\n",
            r.name,
            r.architecture,
            100.0 * r.accuracy,
            r.parameters,
            r.bytes,
            r.latency_us_batch1,
            r.latency_us_batch256,
            mem,
            r.energy_mj_per_1000,
            est
        ));
    }
    if rows.iter().any(|r| r.energy_source == EnergySource::Estimate) {
        s.push_str(&format!(
            "\nEnergy marked (estimate): no readable RAPL counter; CPU time of 1,000 one-row inferences × {:.2} W per \
             busy logical core (thermal design power shared between the logical cores; {} W unless configured). \
             Peak memory @256: the f32 weights and the largest pair of consecutive activations \
             of a batch of 256 rows (computed).\n",
            meter.watts_per_core(),
            DEFAULT_TDP_WATTS
        ));
    }
    s
}

/// Writes the analysis as JSON.
pub fn write_json(rows: &[Analysis], path: &Path) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(rows).map_err(|source| Error::Spec { path: path.to_owned(), source })?;
    crate::fs::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, BackendKind};

    #[test]
    fn an_analysis_measures_what_it_says() {
        let arch = Architecture::Mlp { hidden: vec![8], dropout: 0.0 };
        let m = Model::new(&arch, 4, 2, BackendKind::Flex, 1).unwrap();
        let inputs = [1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let pred = m.predict(&inputs).unwrap();
        let labels = [pred[0], 1 - pred[1]];
        let meter = EnergyMeter::new(Some(10.0));
        let a = analyse("t", &m, 123, (&inputs, &labels), &meter).unwrap();
        // 58 weights; widths 4, 8, 8, 2: the largest pair is 8 + 8 at batch 256.
        assert_eq!(a.peak_memory_bytes, 4 * (58 + 256 * 16));
        let cnn =
            Model::new(&Architecture::Cnn { channels: [2, 3], hidden: 5, dropout: 0.0 }, 16, 2, BackendKind::Flex, 1);
        let cnn = cnn.unwrap();
        // 4×4 images: 16, 32, 32, 8, 12, 12, 3, 5, 5, 2 → the pair conv1 and its ReLU, 64 a row.
        assert_eq!(inference_memory_bytes(&cnn, 10), 4 * (cnn.num_params() as u64 + 10 * 64));
        assert_eq!((a.accuracy, a.parameters, a.bytes), (0.5, 4 * 8 + 8 + 8 * 2 + 2, 123));
        assert!(a.energy_mj_per_1000 > 0.0 && a.latency_us_batch1 > 0.0 && a.latency_us_batch256 > 0.0);
        let e = analyse_ensemble("e", &[(&m, &a), (&m, &a)], (&inputs, &labels)).unwrap();
        assert_eq!((e.accuracy, e.parameters, e.bytes), (0.5, 2 * a.parameters, 246));
        let table = markdown(&[a, e], &meter);
        assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 3);
    }
}
