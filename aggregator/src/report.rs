//! The end-of-run outputs: the global model three ways (`global.bpk`/`global.json` for burn,
//! `global.safetensors`, `global.onnx`) and `report.md`. Blocking: runs on the student's thread.

use std::fmt::Write as _;
use std::path::Path;

use learning::Model;
use learning::eval::ModelFacts;
use learning::fs::atomic_write;
use protocol::FederationId;

use crate::checkpoint::RoundMetrics;
use crate::error::Error;

/// Writes the global model and the report into `out`.
pub fn write(out: &Path, federation: &FederationId, student: &Model, metrics: &[RoundMetrics]) -> Result<(), Error> {
    student.save(&out.join("global"))?;
    student.export_safetensors(&out.join("global.safetensors"))?;
    student.export_onnx(&out.join("global.onnx"))?;
    let facts = ModelFacts::of(student)?;
    atomic_write(&out.join("report.md"), markdown(federation, &facts, metrics).as_bytes())?;
    Ok(())
}

fn markdown(federation: &FederationId, facts: &ModelFacts, metrics: &[RoundMetrics]) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Federation `{federation}`: {} rounds\n", metrics.len());
    let _ = writeln!(
        r,
        "Global model: {} — {} parameters, {} bytes, {:.1} µs/sample at batch 1, {:.2} µs/sample at batch 256.\n",
        facts.architecture, facts.parameters, facts.bytes, facts.latency_us_batch1, facts.latency_us_batch256
    );
    let _ = writeln!(
        r,
        "| round | participants | bytes in | bytes out | accuracy (%) | agreement | seconds |\n|---|---|---|---|---|---|---|"
    );
    for m in metrics {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {:.3} | {:.2} |",
            m.round,
            m.participants.len(),
            m.bytes_in,
            m.bytes_out,
            m.accuracy.map(percent).unwrap_or_else(|| "-".into()),
            m.agreement,
            m.seconds
        );
    }
    r
}

/// A validation accuracy (a fraction) as the report shows it: in %, two decimals.
fn percent(accuracy: f32) -> String {
    format!("{:.2}", 100.0 * f64::from(accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_accuracy_in_percent() {
        assert_eq!(percent(0.975), "97.50");
        assert_eq!(percent(1.0), "100.00");
        let facts = ModelFacts {
            architecture: "mlp".into(),
            parameters: 1,
            bytes: 4,
            latency_us_batch1: 1.0,
            latency_us_batch256: 1.0,
        };
        let m = |round, accuracy| RoundMetrics {
            round,
            participants: vec![],
            bytes_in: 0,
            bytes_out: 0,
            samples: 0,
            masked: 0,
            abstentions: 0,
            accuracy,
            nll: None,
            agreement: 0.0,
            seconds: 0.0,
            cohort: Vec::new(),
        };
        let text = markdown(&FederationId::new("f").unwrap(), &facts, &[m(1, Some(0.5)), m(2, None)]);
        assert!(text.contains("| accuracy (%) |"), "{text}");
        assert!(text.contains("| 1 | 0 | 0 | 0 | 50.00 |") && text.contains("| 2 | 0 | 0 | 0 | - |"), "{text}");
    }
}
