//! `fd-node`: one per data holder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fd-node",
    version,
    about = "Federated-distillation node: trains on private data, shares soft labels only"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 key (mode 0600) and print its PeerId for the aggregator's roster.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the private data, then write a commented node.toml and the node's key, and print
    /// the PeerId to send to the operator.
    Init {
        /// Folder to write (created private).
        #[arg(long)]
        dir: PathBuf,
        /// The private data: a CSV file (gzip detected). It stays where it is.
        #[arg(long)]
        data: PathBuf,
        /// The label column: index (negative from the end) or header name.
        #[arg(long, allow_hyphen_values = true)]
        label: String,
        /// The CSV's first line names the columns (implied by a label given by name).
        #[arg(long)]
        header: bool,
        /// The aggregator's address with its PeerId, as the operator gives it.
        #[arg(long)]
        aggregator: net::multiaddr::Multiaddr,
        /// The federation's name, as the operator gives it.
        #[arg(long)]
        federation: String,
        /// The federation's classes: labels must be 0 to CLASSES − 1.
        #[arg(long)]
        classes: usize,
        /// Features a row of the federation's reference set (printed by `fd-aggregator init`): the
        /// data must have as many columns besides the label.
        #[arg(long)]
        features: Option<usize>,
        /// The reference set's SHA-256, as the operator gives it.
        #[arg(long, value_name = "HEX")]
        reference_sha256: Option<String>,
        /// The reference set's size in bytes, as the operator gives it (`reference_bytes`
        /// printed by `fd-aggregator init`): a download of another size is refused at once.
        #[arg(long, value_name = "BYTES")]
        reference_bytes: Option<u64>,
        /// The preprocessing the reference set was built with, as `fd-aggregator init` prints it:
        /// `none`, `scale:FACTOR` or `standardise:MEAN/STD,…`.
        #[arg(long, default_value = "none")]
        preprocess: String,
    },
    /// Run the node.
    Run {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Export the node's checkpointed local model as ONNX and safetensors, for local use.
    Export {
        /// The node's TOML config (its state_dir holds the checkpoint).
        #[arg(long)]
        config: PathBuf,
        /// Folder to write model.onnx and model.safetensors into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Privacy accounting for DP-SGD (RDP of the Poisson-sampled Gaussian mechanism).
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,libp2p=warn");
    cli.log.finish(run(cli.command).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen { out } => {
            let peer = net::keys::keygen(&out).with_context(|| format!("cannot write key {}", out.display()))?;
            println!("{peer}");
        }
        Command::Export { config, out } => {
            let cfg = node::NodeConfig::load(&config)?;
            for path in node::export(&cfg, &out).context("export failed")? {
                println!("{}", path.display());
            }
        }
        Command::Privacy { command } => privacy(command)?,
        Command::Init {
            dir,
            data,
            label,
            header,
            aggregator,
            federation,
            classes,
            features,
            reference_sha256,
            reference_bytes,
            preprocess,
        } => {
            let federation = protocol::FederationId::new(federation).context("--federation")?;
            let reference_sha256 = reference_sha256
                .map(|h| {
                    protocol::hex::decode::<32>(h.trim())
                        .map(protocol::ReferenceSetId)
                        .context("--reference-sha256 must be 64 hex digits")
                })
                .transpose()?;
            let mut spec = learning::data::DataSpec::file(
                data,
                Some(learning::data::LabelColumn::from_flag(&label)),
                header,
                learning::data::Preprocess::from_flag(&preprocess)?,
            );
            spec.classes = Some(classes);
            spec = spec.resolved(&std::env::current_dir().context("current folder")?);
            init(
                features,
                node::init::Init {
                    dir,
                    data: spec,
                    federation,
                    aggregator,
                    reference_sha256,
                    reference_bytes,
                    model: learning::Architecture::Mlp { hidden: vec![128], dropout: 0.0 },
                },
            )?;
        }
        Command::Run { config } => {
            let cfg = node::NodeConfig::load(&config)?;
            let shutdown = net::cli::shutdown_signal();
            let summary = node::run(cfg, shutdown).await.context("node failed")?;
            tracing::info!(
                accepted = summary.accepted_rounds.len(),
                refused = summary.refused_rounds.len(),
                finished_after = ?summary.finished_after,
                "node stopped"
            );
        }
    }
    Ok(())
}

fn init(features: Option<usize>, i: node::init::Init) -> anyhow::Result<()> {
    let path = i.data.path.clone().unwrap_or_default();
    let check =
        node::init::check_data(&i.data).with_context(|| format!("the data file {} cannot be used", path.display()))?;
    println!("data {}: {} rows, {} features and a label", path.display(), check.rows, check.features);
    if let Some(features) = features {
        node::init::check_features(&check, features)
            .with_context(|| format!("the data file {} does not fit the federation", path.display()))?;
    }
    let found: Vec<String> = check.classes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
    println!("classes found (class: rows): {}", found.join(", "));
    let (peer, config) = node::init::init(&i).with_context(|| format!("cannot initialise {}", i.dir.display()))?;
    println!("wrote {} and the node's key", config.display());
    println!("peer_id {peer}");
    println!(
        "Send this PeerId to the operator, who adds it: fd-aggregator roster add --config federation.toml NAME {peer}"
    );
    if i.reference_sha256.is_none() {
        println!(
            "policy.reference_sha256 is a placeholder: set it to the hash the operator gives before running the node"
        );
    }
    Ok(())
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// Print ε after STEPS steps of DP-SGD, and the Rényi order that gives it.
    Epsilon {
        /// Probability that a record is in a step's batch (Poisson sampling), in [0, 1].
        #[arg(long, value_name = "Q")]
        sample_rate: f64,
        /// Noise standard deviation over the clipping norm, ≥ 0.
        #[arg(long, value_name = "S")]
        noise_multiplier: f64,
        /// Number of steps.
        #[arg(long, value_name = "N")]
        steps: u64,
        /// δ of the (ε, δ) guarantee, in (0, 1).
        #[arg(long, value_name = "D")]
        delta: f64,
    },
    /// Print what this node's privacy ledger says it spent, and what its budget has left.
    Status {
        /// The node's TOML config (with a `[privacy]` section).
        #[arg(long)]
        config: PathBuf,
    },
    /// Pin node.toml's epsilon and delta in this node's privacy ledger, replacing the budget
    /// pinned at its first training: the only way to change a budget once spent from. What was
    /// spent stays recorded and counts against the new budget.
    Repin {
        /// The node's TOML config (with a `[privacy]` section).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the smallest noise multiplier that keeps STEPS steps within (ε, δ).
    Calibrate {
        /// Target ε, > 0.
        #[arg(long, value_name = "E")]
        epsilon: f64,
        /// δ of the (ε, δ) guarantee, in (0, 1).
        #[arg(long, value_name = "D")]
        delta: f64,
        /// Probability that a record is in a step's batch (Poisson sampling), in [0, 1].
        #[arg(long, value_name = "Q")]
        sample_rate: f64,
        /// Number of steps, ≥ 1.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
    },
}

fn privacy(command: PrivacyCommand) -> anyhow::Result<()> {
    use learning::privacy;
    match command {
        PrivacyCommand::Epsilon { sample_rate, noise_multiplier, steps, delta } => {
            let segment = privacy::Segment { sample_rate, noise_multiplier, steps };
            let spent = privacy::epsilon(&[segment], delta).context("cannot compute epsilon")?;
            println!("epsilon {} (Rényi order {}, delta {delta})", spent.epsilon, spent.order);
        }
        PrivacyCommand::Calibrate { epsilon, delta, sample_rate, steps } => {
            let c = privacy::calibrate(epsilon, delta, sample_rate, steps).context("cannot calibrate the noise")?;
            let spent = c.spent;
            println!(
                "noise_multiplier {} (epsilon {} at Rényi order {}, delta {delta})",
                c.noise_multiplier, spent.epsilon, spent.order
            );
        }
        PrivacyCommand::Repin { config } => {
            let cfg = node::NodeConfig::load(&config)?;
            let r = node::privacy_repin(&cfg)?;
            match r.before {
                Some(b) if b == r.now => {
                    println!("epsilon {} and delta {} were already pinned; nothing changed", r.now.epsilon, r.now.delta)
                }
                Some(b) => println!(
                    "pinned epsilon {} and delta {} (was epsilon {} and delta {}); the {} training(s) recorded still count",
                    r.now.epsilon, r.now.delta, b.epsilon, b.delta, r.trainings
                ),
                None => println!(
                    "pinned epsilon {} and delta {}; the {} training(s) recorded still count",
                    r.now.epsilon, r.now.delta, r.trainings
                ),
            }
        }
        PrivacyCommand::Status { config } => {
            let cfg = node::NodeConfig::load(&config)?;
            let s = node::privacy_status(&cfg)?;
            println!(
                "epsilon spent {:.4} of {} (delta {}); {} training(s), {} DP-SGD steps recorded",
                s.spent, s.epsilon, s.delta, s.trainings, s.steps
            );
            println!(
                "plan: noise_multiplier {:.4}, sample_rate {:.5}, clip_norm {}, {} steps per training; {} more training(s) fit in the budget",
                s.plan.noise_multiplier, s.plan.sample_rate, s.plan.clip_norm, s.steps_per_training, s.trainings_left
            );
        }
    }
    Ok(())
}
