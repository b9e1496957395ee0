//! The privacy accountant against the reference implementations, over sample rates 0.01–1, noise
//! multipliers 0.7–5 and 10–10,000 steps at δ = 10⁻⁵, on the same orders (Opacus's defaults):
//!
//! - Opacus's RDP analysis (`opacus/accountants/analysis/rdp.py`) evaluates the same exact series:
//!   ε must agree within 2 % everywhere.
//! - Google's dp_accounting (`RdpAccountant`) agrees at integer orders, where its formula is the
//!   same exact sum; at fractional orders it adds the series' terms in absolute value, an upper bound
//!   that is loose for large sample rates and small noise. There ε must agree within 2 % or lie
//!   below dp_accounting's, and the quadrature below decides which is right.
//! - A quadrature of the definition of `A_α` (mpmath, 40 digits) at the order we chose: ε must
//!   agree within 10⁻⁶, which shows that ε is the exact value of the bound at that order.
//!
//! The script is `tests/python/rdp_reference.py`. It runs on `$FD_PYTHON` if set (`.ci/run` sets
//! it), otherwise on a virtual environment in `target/python` made from PyPI on first use (so the
//! first run needs the network), from `tests/python/requirements.txt` and then, with `--no-deps`
//! (opacus would pull in torch), `tests/python/requirements-no-deps.txt`.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use learning::privacy::{self, Accountant, DEFAULT_ORDERS, Segment, Spent};
use serde_json::{Value, json};

const SAMPLE_RATES: [f64; 4] = [0.01, 0.05, 0.2, 1.0];
const NOISE_MULTIPLIERS: [f64; 4] = [0.7, 1.0, 2.0, 5.0];
const STEPS: [u64; 4] = [10, 100, 1000, 10_000];
const DELTA: f64 = 1e-5;
/// The largest relative difference allowed from a reference ε (2 %).
const TOLERANCE: f64 = 0.02;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the reference script imports (opacus only as files: its package would import torch).
const PROBE: &str = "import dp_accounting, mpmath, importlib.util; assert importlib.util.find_spec('opacus')";

/// ε from each reference for one case.
#[derive(Debug)]
struct Reference {
    dp_accounting: f64,
    opacus: f64,
    /// ε at our optimal order from a quadrature of the definition.
    quadrature: Option<f64>,
}

/// One accounting question, our answer, and the references' answers.
struct Case {
    segments: Vec<Segment>,
    orders: Vec<f64>,
    ours: Spent,
}

impl Case {
    fn new(segments: Vec<Segment>, orders: &[f64]) -> Case {
        let mut accountant = Accountant::with_orders(orders.to_vec()).unwrap();
        for s in &segments {
            accountant.compose(*s).unwrap();
        }
        let ours = accountant.epsilon(DELTA).unwrap();
        Case { segments, orders: orders.to_vec(), ours }
    }

    fn label(&self) -> String {
        let parts: Vec<String> = self
            .segments
            .iter()
            .map(|s| format!("q={} σ={} steps={}", s.sample_rate, s.noise_multiplier, s.steps))
            .collect();
        format!("[{}] (ours ε={} at α={})", parts.join("; "), self.ours.epsilon, self.ours.order)
    }
}

/// Runs the reference script on `cases`; `quadrature` asks for the check at our optimal order.
fn references(cases: &[Case], quadrature: bool) -> Vec<Reference> {
    let request = json!({
        "orders": &DEFAULT_ORDERS[..],
        "cases": cases.iter().map(|c| json!({
            "segments": c.segments.iter().map(|s| json!([s.sample_rate, s.noise_multiplier, s.steps])).collect::<Vec<_>>(),
            "delta": DELTA,
            "orders": c.orders,
            "check_order": if quadrature { json!(c.ours.order) } else { Value::Null },
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new(support::python(PROBE))
        .arg(manifest().join("tests/python/rdp_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rdp_reference.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Reference> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Reference {
                dp_accounting: v["dp_accounting"]["epsilon"].as_f64().unwrap(),
                opacus: v["opacus"]["epsilon"].as_f64().unwrap(),
                quadrature: v["quadrature"].as_f64(),
            }
        })
        .collect();
    assert_eq!(lines.len(), cases.len(), "one answer a case");
    lines
}

fn grid(orders: &[f64]) -> Vec<Case> {
    let mut cases = Vec::new();
    for q in SAMPLE_RATES {
        for sigma in NOISE_MULTIPLIERS {
            for steps in STEPS {
                cases.push(Case::new(vec![Segment { sample_rate: q, noise_multiplier: sigma, steps }], orders));
            }
        }
    }
    cases
}

fn relative(ours: f64, reference: f64) -> f64 {
    (ours - reference).abs() / reference.abs()
}

/// The largest relative difference between ours and `pick(reference)`, with its case.
fn worst<'a>(cases: &'a [Case], refs: &[Reference], pick: impl Fn(&Reference) -> f64) -> (f64, &'a Case, f64) {
    cases
        .iter()
        .zip(refs)
        .map(|(c, r)| (relative(c.ours.epsilon, pick(r)), c, pick(r)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap()
}

#[test]
#[ignore = "long tier (Python with opacus, dp_accounting): cargo test --workspace --release -- --ignored"]
fn epsilon_agrees_with_opacus_and_the_definition_and_never_exceeds_dp_accounting() {
    let mut cases = grid(&DEFAULT_ORDERS);
    // Histories whose settings change between rounds compose by adding RDP.
    let seg = |sample_rate, noise_multiplier, steps| Segment { sample_rate, noise_multiplier, steps };
    for history in [
        vec![seg(0.01, 1.0, 500), seg(0.01, 2.0, 3000)],
        vec![seg(0.05, 5.0, 100), seg(0.2, 1.0, 10), seg(1.0, 5.0, 10)],
        vec![seg(0.2, 0.7, 1000), seg(0.01, 0.7, 10_000)],
    ] {
        cases.push(Case::new(history, &DEFAULT_ORDERS));
    }
    let refs = references(&cases, true);

    let (opacus, at, theirs) = worst(&cases, &refs, |r| r.opacus);
    println!("worst relative difference to Opacus: {opacus:.3e} at {} (Opacus ε={theirs})", at.label());
    let (quadrature, at, theirs) = worst(&cases, &refs, |r| r.quadrature.unwrap());
    println!("worst relative difference to the quadrature: {quadrature:.3e} at {} (quadrature ε={theirs})", at.label());
    let (dp, at, theirs) = worst(&cases, &refs, |r| r.dp_accounting);
    println!("worst relative difference to dp_accounting: {dp:.3e} at {} (dp_accounting ε={theirs})", at.label());
    let loose = cases.iter().zip(&refs).filter(|(c, r)| relative(c.ours.epsilon, r.dp_accounting) > TOLERANCE).count();
    println!(
        "cases where dp_accounting's fractional-order bound is more than 2 % above the exact ε: {loose} of {}",
        cases.len()
    );

    for (c, r) in cases.iter().zip(&refs) {
        let e = c.ours.epsilon;
        assert!(relative(e, r.opacus) <= TOLERANCE, "Opacus ε={} for {}", r.opacus, c.label());
        let exact = r.quadrature.unwrap();
        assert!(relative(e, exact) <= 1e-6, "quadrature ε={exact} for {}", c.label());
        assert!(
            relative(e, r.dp_accounting) <= TOLERANCE || e < r.dp_accounting,
            "dp_accounting ε={} for {}",
            r.dp_accounting,
            c.label()
        );
    }
}

#[test]
#[ignore = "long tier (Python with opacus, dp_accounting): cargo test --workspace --release -- --ignored"]
fn epsilon_agrees_with_both_references_at_integer_orders() {
    let integers: Vec<f64> = DEFAULT_ORDERS.iter().copied().filter(|a| a.fract() == 0.0).collect();
    let cases = grid(&integers);
    let refs = references(&cases, false);
    let (dp, at, theirs) = worst(&cases, &refs, |r| r.dp_accounting);
    println!(
        "integer orders: worst relative difference to dp_accounting: {dp:.3e} at {} (dp_accounting ε={theirs})",
        at.label()
    );
    let (opacus, at, theirs) = worst(&cases, &refs, |r| r.opacus);
    println!("integer orders: worst relative difference to Opacus: {opacus:.3e} at {} (Opacus ε={theirs})", at.label());
    assert!(dp <= TOLERANCE && opacus <= TOLERANCE);
}

#[test]
#[ignore = "long tier (Python with opacus, dp_accounting): cargo test --workspace --release -- --ignored"]
fn calibrated_noise_meets_the_target_by_the_references() {
    let mut cases = Vec::new();
    let mut targets = Vec::new();
    for (target, q, steps) in
        [(1.0, 0.01, 1000), (4.0, 0.01, 10_000), (8.0, 0.05, 1000), (4.0, 1.0, 10), (2.0, 0.2, 100)]
    {
        let c = privacy::calibrate(target, DELTA, q, steps).unwrap();
        println!("ε={target} q={q} steps={steps}: σ={}", c.noise_multiplier);
        cases.push(Case::new(
            vec![Segment { sample_rate: q, noise_multiplier: c.noise_multiplier, steps }],
            &DEFAULT_ORDERS,
        ));
        targets.push(target);
    }
    let refs = references(&cases, false);
    for ((c, r), target) in cases.iter().zip(&refs).zip(targets) {
        assert!(c.ours.epsilon <= target);
        assert!(relative(target, r.opacus) <= TOLERANCE, "Opacus ε={} for target {target}: {}", r.opacus, c.label());
    }
}
