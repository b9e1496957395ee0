//! `cargo bench -p learning`: training (plain and DP-SGD) and inference throughput on both CPU
//! backends with 1 and 2 threads, and consensus throughput for 100 nodes × 10,000 samples × 10 classes.
//!
//! Thread counts are set per child process (`RAYON_NUM_THREADS`, `MATMUL_NUM_THREADS`), since
//! both backends read them once at start-up. Options (after `--`; `--help` lists them): `--quick`
//! for a short run, `--consensus-only` for the consensus part alone, `--runs N` to keep the best
//! of N interleaved runs (default 3), `--only TEXT` for the measurements whose name contains
//! TEXT, and `--pytorch PYTHON` to measure PyTorch on the same
//! models, data, batch size, optimiser and threads (benches/pytorch_train.py; needs torch and
//! numpy) and print burn's rates as ratios to PyTorch's. An unknown option is an error.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use learning::consensus::{self, ConsensusConfig, MeanAccumulator, Rule};
use learning::data::{self, CsvOptions, Dataset, Preprocess};
use learning::dp::DpSgd;
use learning::joint::fit_joint;
use learning::train::{self, TrainConfig};
use learning::{Architecture, BackendKind, Model};

/// `cargo bench -p learning -- [OPTIONS]`
#[derive(Parser)]
#[command(name = "learning-bench", about = "Training, inference and consensus throughput")]
struct Args {
    /// A short run (less data, one run): checks that the bench works; not for figures.
    #[arg(long)]
    quick: bool,
    /// Only the consensus part.
    #[arg(long)]
    consensus_only: bool,
    /// Keep the best of N interleaved runs (default 3, 1 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    runs: Option<u64>,
    /// Also run benches/pytorch_train.py with this interpreter (which needs torch and numpy) for
    /// the same measurements, and print burn's speed relative to PyTorch's.
    #[arg(long, value_name = "PYTHON")]
    pytorch: Option<PathBuf>,
    /// Only the training and inference measurements whose name contains this text (e.g.
    /// `784-256`); every one by default.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

fn digits() -> Dataset {
    let mut d = data::load_csv(&data_dir().join("digits/digits.csv.gz"), &CsvOptions::default()).expect("digits");
    Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut d.features, d.dim).expect("scale");
    d
}

fn mnist(n: usize) -> Dataset {
    let dir = data_dir().join("mnist");
    let mut d = data::load_idx(&dir.join("train-images-idx3-ubyte.gz"), &dir.join("train-labels-idx1-ubyte.gz"))
        .expect("mnist");
    d = d.subset(&(0..n).collect::<Vec<_>>());
    Preprocess::Scale { factor: 1.0 / 255.0 }.apply(&mut d.features, d.dim).expect("scale");
    d
}

/// Samples per second of one training epoch (after a warm-up epoch).
fn train_rate(arch: &Architecture, d: &Dataset, backend: BackendKind) -> f64 {
    let mut net = Model::new(arch, d.dim, d.classes, backend, 1).expect("net");
    let cfg = TrainConfig { epochs: 1, batch_size: 64, learning_rate: 1e-3, ..Default::default() };
    train::fit(&mut net, &d.subset(&(0..d.len().min(640)).collect::<Vec<_>>()), &cfg, 1).expect("warm-up");
    let t = Instant::now();
    train::fit(&mut net, d, &cfg, 2).expect("fit");
    d.len() as f64 / t.elapsed().as_secs_f64()
}

/// Samples per second of one DP-SGD epoch (Poisson batches of 64 expected rows, clipping and
/// noise; after a warm-up), the same model and data as [`train_rate`].
fn dp_rate(arch: &Architecture, d: &Dataset, backend: BackendKind) -> f64 {
    let mut net = Model::new(arch, d.dim, d.classes, backend, 1).expect("net");
    let cfg = TrainConfig { epochs: 1, batch_size: 64, learning_rate: 1e-3, ..Default::default() };
    let dp = |n: usize| DpSgd { clip_norm: 1.0, noise_multiplier: 1.0, sample_rate: 64.0 / n as f64, noise_seed: None };
    let warm = d.subset(&(0..d.len().min(640)).collect::<Vec<_>>());
    fit_joint(&mut net, &warm, None, &cfg, Some(&dp(warm.len())), 1).expect("warm-up");
    let t = Instant::now();
    let report = fit_joint(&mut net, d, None, &cfg, Some(&dp(d.len())), 2).expect("dp fit");
    // Rows seen: steps × expected batch, i.e. one epoch's worth.
    (report.dp_steps as f64 * 64.0) / t.elapsed().as_secs_f64()
}

fn child(quick: bool, only: Option<&str>) {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let n = if quick { 500 } else { 10_000 };
    let dig = digits();
    let mn = mnist(n);
    for backend in [BackendKind::Flex, BackendKind::Ndarray] {
        // Runs a measurement (samples/s) unless `--only` leaves it out.
        let report = |what: &str, rate: &dyn Fn() -> f64| {
            if only.is_none_or(|o| what.contains(o)) {
                println!("{backend:?}\t{threads}\t{what}\t{:.0}", rate());
            }
        };
        let mlp_small = Architecture::Mlp { hidden: vec![128], dropout: 0.0 };
        let mlp_big = Architecture::Mlp { hidden: vec![256], dropout: 0.0 };
        let cnn = Architecture::Cnn { channels: [8, 16], hidden: 64, dropout: 0.0 };
        let cnn_rows = mn.subset(&(0..mn.len() / 4).collect::<Vec<_>>());
        report("train mlp 64-128-10 digits", &|| train_rate(&mlp_small, &dig, backend));
        report("train mlp 784-256-10 mnist", &|| train_rate(&mlp_big, &mn, backend));
        report("train cnn 8x16-64 mnist", &|| train_rate(&cnn, &cnn_rows, backend));
        report("dp train mlp 64-128-10 digits", &|| dp_rate(&mlp_small, &dig, backend));
        report("dp train mlp 784-256-10 mnist", &|| dp_rate(&mlp_big, &mn, backend));
        report("dp train cnn 8x16-64 mnist", &|| dp_rate(&cnn, &cnn_rows, backend));
        report("soft labels mlp 784-256-10 mnist", &|| {
            let net = Model::new(&mlp_big, 784, 10, backend, 3).expect("net");
            net.soft_labels(&mn.features[..784 * 256], 3.0, 256).expect("warm-up");
            let t = Instant::now();
            let probs = net.soft_labels(&mn.features, 3.0, 256).expect("soft labels");
            std::hint::black_box(probs);
            mn.len() as f64 / t.elapsed().as_secs_f64()
        });
    }
}

fn consensus_bench(quick: bool) {
    let (nodes, samples, classes) = (100usize, if quick { 200 } else { 10_000 }, 10usize);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let matrices: Vec<Vec<f32>> = (0..nodes)
        .map(|_| {
            let mut m: Vec<f32> = (0..samples * classes)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 1000) as f32 + 1.0
                })
                .collect();
            consensus::renormalise(&mut m, classes);
            m
        })
        .collect();
    let bytes = (nodes * samples * classes * 4) as f64;
    println!(
        "\nconsensus, {nodes} nodes x {samples} samples x {classes} classes ({:.0} MB of f32 input), one thread",
        bytes / 1e6
    );
    let t = Instant::now();
    let mut acc = MeanAccumulator::new(samples, classes);
    for m in &matrices {
        acc.add(m, 1.0).expect("add");
    }
    std::hint::black_box(acc.finish());
    let s = t.elapsed().as_secs_f64();
    println!("{:<28} {:>8.3} s {:>9.2} GB/s", "streaming mean", s, bytes / s / 1e9);
    let inputs: Vec<(&[f32], u64)> = matrices.iter().map(|m| (m.as_slice(), 100)).collect();
    for rule in [Rule::Mean, Rule::WeightedBySamples, Rule::CONFIDENCE, Rule::Median, Rule::TrimmedMean { trim: 0.1 }] {
        let cfg = ConsensusConfig { rule: rule.clone(), ..Default::default() };
        let t = Instant::now();
        std::hint::black_box(consensus::combine(&inputs, samples, classes, &cfg).expect("combine"));
        let s = t.elapsed().as_secs_f64();
        println!("{:<28} {:>8.3} s {:>9.2} GB/s", format!("{rule:?}"), s, bytes / s / 1e9);
    }
}

/// Runs one measuring child process and returns its lines (`backend\tthreads\twhat\tsamples/s`).
fn measure(mut cmd: Command, threads: &str) -> Vec<String> {
    let out = cmd
        .env("RAYON_NUM_THREADS", threads)
        .env("MATMUL_NUM_THREADS", threads)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("start the measuring child");
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split('\t').count() == 4)
        .map(str::to_owned)
        .collect();
    for l in &lines {
        println!("{l}");
    }
    lines
}

/// One line per (backend, threads, what), with the highest rate among the runs, in first-seen order.
fn best_of(lines: &[String]) -> Vec<String> {
    let mut best: Vec<(String, f64)> = Vec::new();
    for l in lines {
        let (key, rate) = l.rsplit_once('\t').expect("four fields");
        let rate: f64 = rate.parse().unwrap_or(0.0);
        match best.iter_mut().find(|(k, _)| k == key) {
            Some((_, r)) => *r = r.max(rate),
            None => best.push((key.to_owned(), rate)),
        }
    }
    best.into_iter().map(|(k, r)| format!("{k}\t{r:.0}")).collect()
}

/// DP-SGD's rate over non-private training's, for each model, backend and thread count
/// (the target is ≥ 0.25 on the MLPs).
fn dp_ratios(lines: &[String]) {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    println!("\nDP-SGD against non-private training (same model, data, batch, backend and threads)");
    println!("{:<28} {:<8} {:>7} {:>12} {:>12} {:>8}", "what", "backend", "threads", "plain/s", "DP/s", "DP/plain");
    for r in rows.iter().filter(|r| r[2].starts_with("dp train ")) {
        let plain = &r[2]["dp ".len()..];
        let Some(p) = rows.iter().find(|q| q[0] == r[0] && q[1] == r[1] && q[2] == plain) else { continue };
        let (dp, p): (f64, f64) = (r[3].parse().unwrap_or(f64::NAN), p[3].parse().unwrap_or(f64::NAN));
        println!("{:<28} {:<8} {:>7} {:>12.0} {:>12.0} {:>7.2}x", plain, r[0], r[1], p, dp, dp / p);
    }
}

/// For each measurement PyTorch also made: burn's rate over PyTorch's, per backend.
fn compare(lines: &[String]) {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let rate = |backend: &str, threads: &str, what: &str| {
        rows.iter().find(|r| r[0] == backend && r[1] == threads && r[2] == what).and_then(|r| r[3].parse::<f64>().ok())
    };
    println!("\nagainst PyTorch (same models, data, batch, optimiser and threads; > 1 means burn is faster)");
    println!("{:<36} {:>7} {:>12} {:>12} {:>12}", "what", "threads", "PyTorch/s", "Flex/PyTorch", "Ndarray/PyT");
    for r in rows.iter().filter(|r| r[0] == "PyTorch") {
        let torch: f64 = r[3].parse().unwrap_or(f64::NAN);
        let ratio = |b: &str| rate(b, r[1], r[2]).map(|v| format!("{:.2}x", v / torch)).unwrap_or_else(|| "-".into());
        println!("{:<36} {:>7} {:>12.0} {:>12} {:>12}", r[2], r[1], torch, ratio("Flex"), ratio("Ndarray"));
    }
}

fn main() {
    let args = Args::parse();
    let quick = args.quick;
    if std::env::var_os("FD_BENCH_CHILD").is_some() {
        child(quick, args.only.as_deref());
        return;
    }
    if args.consensus_only {
        consensus_bench(quick);
        return;
    }
    // The children run `runs` times, interleaved, and the best rate of each measurement counts,
    // which damps the noise of a shared machine.
    let runs = args.runs.unwrap_or(if quick { 1 } else { 3 });
    println!("backend\tthreads\twhat\tsamples/s");
    let exe = std::env::current_exe().expect("exe");
    let mut lines = Vec::new();
    for _ in 0..runs {
        for threads in ["1", "2"] {
            let mut cmd = Command::new(&exe);
            if quick {
                cmd.arg("--quick");
            }
            if let Some(only) = &args.only {
                cmd.arg("--only").arg(only);
            }
            cmd.env("FD_BENCH_CHILD", "1");
            lines.extend(measure(cmd, threads));
            if let Some(py) = &args.pytorch {
                let mut cmd = Command::new(py);
                cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_train.py"))
                    .arg(data_dir())
                    .arg(threads);
                if quick {
                    cmd.arg("--quick");
                }
                // PyTorch sizes its pools from these too; set_num_threads in the script decides.
                cmd.env("OMP_NUM_THREADS", threads).env("MKL_NUM_THREADS", threads);
                lines.extend(measure(cmd, threads));
            }
        }
    }
    let lines = best_of(&lines);
    if runs > 1 {
        println!("\nbest of {runs} runs\nbackend\tthreads\twhat\tsamples/s");
        for l in &lines {
            println!("{l}");
        }
    }
    dp_ratios(&lines);
    if args.pytorch.is_some() {
        compare(&lines);
    }
    consensus_bench(quick);
}
