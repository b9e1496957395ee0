//! `fd-aggregator`: collects soft labels, builds the consensus, distils the global model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fd-aggregator", version, about = "Federated-distillation aggregator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: net::cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 key (mode 0600) and print its PeerId for the nodes' configs.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// The public reference set.
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
    /// Write a new federation's folder: its key, a copy of the reference set and a commented
    /// federation.toml; print what each data holder needs.
    Init {
        /// Folder to write (created private).
        #[arg(long)]
        dir: PathBuf,
        /// The reference set, from `fd-aggregator reference build`.
        #[arg(long)]
        reference: PathBuf,
        /// The federation's name.
        #[arg(long)]
        federation: String,
        /// Classes every model predicts (labels 0 to CLASSES − 1).
        #[arg(long)]
        classes: usize,
        /// Listen address, with a fixed port that nodes can reach.
        #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
        listen: net::multiaddr::Multiaddr,
        /// Host name or IP address nodes reach this machine at (default: the listen IP, or
        /// 127.0.0.1 when listening on every interface).
        #[arg(long)]
        public_host: Option<String>,
        /// Rounds.
        #[arg(long, default_value_t = 10)]
        rounds: u64,
        /// Reference samples asked for each round (default: up to 500, at most the set's rows).
        #[arg(long)]
        samples: Option<u32>,
        /// A labelled holdout CSV the global model is scored on after each round (accuracy in
        /// output/report.md and output/metrics.csv); preprocessed as the reference set was.
        #[arg(long, value_name = "CSV")]
        validation: Option<PathBuf>,
        /// The holdout's label column: index (negative from the end) or header name.
        #[arg(long, default_value = "-1", allow_hyphen_values = true, requires = "validation")]
        validation_label: String,
        /// The holdout's first line names the columns (implied by a label given by name).
        #[arg(long, requires = "validation")]
        validation_header: bool,
    },
    /// Edit the roster of a federation.toml (comments and the rest of the file are kept).
    Roster {
        /// The federation's TOML config.
        #[arg(long, global = true, default_value = "federation.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// Run the federation.
    Run {
        /// The federation's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Once listening, write the bound addresses, each with `/p2p/<aggregator peer id>`, one
        /// a line, to this file. It appears complete (written aside, then renamed), so a script
        /// that listens on port 0 can wait for it and give the nodes the real address.
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
    },
    /// Distil the global model into a smaller student for the edge, on the public reference set
    /// (scored on the validation set of the config); export each student (burnpack,
    /// safetensors, ONNX, optionally int8) and print the analysis table (also written as
    /// analysis.md and analysis.json in --out).
    Compress {
        /// The federation's TOML config (its reference set, validation set and output folder,
        /// whose last checkpoint holds the consensus that multi-teacher uses).
        #[arg(long, default_value = "federation.toml")]
        config: PathBuf,
        /// The teacher: the global model's weights (`global.bpk`, its `global.json` beside it).
        #[arg(long)]
        teacher: PathBuf,
        /// The students' architecture: `same` (the teacher's), `mlp:W1,W2,…` (hidden widths) or
        /// `cnn:C1,C2,H` (channels of the two convolutions, hidden width).
        #[arg(long, default_value = "same")]
        arch: String,
        /// Methods, comma-separated or repeated: baseline (no distillation: the public set's true
        /// labels), kd (KL·T² + α·CE), kd-mse (MSE on logits), fitnets (hints through a learned
        /// regressor), attention (attention transfer, CNNs only), crd (contrastive, in-batch
        /// negatives), born-again (generations of the teacher's architecture), multi-teacher
        /// (consensus and global student together).
        #[arg(long, required = true, value_delimiter = ',',
              value_parser = clap::builder::PossibleValuesParser::new(learning::compress::Method::ALL.map(|m| m.name())))]
        method: Vec<String>,
        /// The public set's true labels, one a line in the reference set's order (the baseline
        /// needs them; KD adds α·CE with them).
        #[arg(long, value_name = "FILE")]
        public_labels: Option<PathBuf>,
        /// Settings (temperature, alpha, beta, generations, train.epochs, …) as a TOML file.
        #[arg(long, value_name = "TOML")]
        settings: Option<PathBuf>,
        /// Epochs of every student (overrides the settings).
        #[arg(long)]
        epochs: Option<usize>,
        /// Also store and score each student with int8 weights (per tensor, symmetric).
        #[arg(long)]
        int8: bool,
        /// Seed of the students.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder.
        #[arg(long, default_value = "compressed")]
        out: PathBuf,
    },
    /// Serve as a circuit relay v2 for an aggregator behind a NAT and its nodes, and nothing
    /// else (the aggregator lists `/…/p2p/<relay id>/p2p-circuit` among its listen addresses).
    Relay {
        /// The relay's key (see `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// A public address to listen on, e.g. `/ip4/0.0.0.0/tcp/4002` (repeatable).
        #[arg(long, required = true)]
        listen: Vec<net::multiaddr::Multiaddr>,
        /// A PeerId it relays for: each node's (repeatable).
        #[arg(long, value_parser = parse_peer)]
        allow: Vec<protocol::ParticipantId>,
        /// The aggregator's PeerId (repeatable, one a federation): the only peers that may
        /// reserve a slot, that is, be reached through the relay (allowed too). Without it every
        /// allowed peer may.
        #[arg(long, value_parser = parse_peer)]
        aggregator: Vec<protocol::ParticipantId>,
        /// Once listening, write its addresses, each with `/p2p/<relay peer id>`, to this file.
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
    },
}

fn parse_peer(s: &str) -> Result<protocol::ParticipantId, String> {
    net::keys::parse_peer_id(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum ReferenceCommand {
    /// Build a reference-set file from a CSV (or IDX images) file and print its SHA-256. Read
    /// and preprocessed as node data is; labels, if any, are dropped.
    Build {
        /// CSV file (gzip detected), or IDX images if its name contains `idx`.
        #[arg(long)]
        from: PathBuf,
        /// The label column to drop (index, negative from the end, or header name), or `none`.
        #[arg(long, default_value = "none", allow_hyphen_values = true)]
        label: String,
        /// The CSV's first line names the columns (implied by a label given by name).
        #[arg(long)]
        header: bool,
        /// `none`, `scale:FACTOR`, or `standardise` (each feature's mean and standard deviation
        /// on this set, pinned beside it in NAME.preprocess.toml): every node applies it too.
        #[arg(long, default_value = "none")]
        preprocess: String,
        /// Where to write the set.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Allow a node to join.
    Add {
        /// A name for logs and reports.
        name: String,
        /// Its PeerId, printed by `fd-node init` or `fd-node keygen`.
        peer_id: String,
        /// Its number of private samples, if known (what `weighted_by_samples` weighs).
        #[arg(long)]
        samples: Option<u64>,
    },
    /// Remove a node from the roster.
    Remove {
        /// Its name on the roster.
        name: String,
    },
}

fn reference_build(from: PathBuf, label: &str, header: bool, preprocess: &str, out: &Path) -> anyhow::Result<()> {
    let standardise = preprocess.trim() == "standardise";
    let preprocess =
        if standardise { learning::data::Preprocess::None } else { learning::data::Preprocess::from_flag(preprocess)? };
    let label = (label != "none").then(|| learning::data::LabelColumn::from_flag(label));
    let labelled = label.is_some();
    let spec = learning::data::DataSpec::file(from.clone(), label, header, preprocess);
    let built = aggregator::reference::build(&spec, labelled, standardise)
        .with_context(|| format!("cannot read {}", from.display()))?;
    let id =
        aggregator::reference::write(out, &built.set).with_context(|| format!("cannot write {}", out.display()))?;
    let pinned = aggregator::reference::write_preprocess(out, id, &built.preprocess)
        .with_context(|| format!("cannot write the preprocessing beside {}", out.display()))?;
    println!("rows {}", built.set.samples);
    println!("features {}", built.set.features);
    if built.dropped_labels {
        println!("labels dropped: the label column is not part of the reference set");
    }
    println!("sha256 {id}");
    println!("preprocessing pinned in {}", pinned.display());
    if let Some(s) = built.spread {
        eprintln!(
            "warning: feature scales differ widely (feature {} has standard deviation {}, feature {} {}); \
             a model learns little from such raw values: consider --preprocess standardise",
            s.widest.0, s.widest.1, s.narrowest.0, s.narrowest.1
        );
    }
    Ok(())
}

fn init(i: aggregator::init::Init) -> anyhow::Result<()> {
    let done = aggregator::init::init(&i).with_context(|| format!("cannot initialise {}", i.dir.display()))?;
    let (rows, features) = done.reference_shape;
    println!(
        "wrote {} and the aggregator's key; reference set: {rows} rows of {features} features",
        done.config.display()
    );
    println!("peer_id {}", done.peer_id);
    println!("aggregator {}", done.address);
    if let Some(quic) = &done.quic_address {
        println!("aggregator_quic {quic}");
    }
    println!("reference_sha256 {}", done.reference_sha256);
    println!("reference_bytes {}", done.reference_bytes);
    println!("Each data holder needs the address, the hash and size, the federation and its classes:");
    println!(
        "  fd-node init --dir DIR --data THEIR.csv --label COLUMN --preprocess {} --federation {} --classes {} --features {features} --aggregator {} --reference-sha256 {} --reference-bytes {}",
        done.preprocess.as_ref().map_or_else(|| "PREPROCESS".into(), |p| p.to_flag()),
        i.federation,
        i.classes,
        done.address,
        done.reference_sha256,
        done.reference_bytes
    );
    if let Some(quic) = &done.quic_address {
        println!("(or --aggregator {quic} to reach it over QUIC)");
    }
    if done.preprocess.is_none() {
        println!("with PREPROCESS the preprocessing the reference set was built with (nothing is pinned beside it).");
    }
    println!("Add each node's PeerId: fd-aggregator roster add --config {} NAME PEERID", done.config.display());
    Ok(())
}

/// What `run` prints at the end: where the global model is, or that none was written (no round
/// completed, e.g. stopped before the first round closed).
fn summary_line(rounds: usize, model: &Path) -> String {
    if rounds == 0 {
        "no round completed; no global model written".into()
    } else {
        format!("{rounds} rounds; global model at {}", model.display())
    }
}

/// Writes listen addresses with the peer id `who` to `path`, atomically.
fn write_addr_file(
    path: &Path,
    who: &protocol::ParticipantId,
    addrs: &[net::multiaddr::Multiaddr],
) -> anyhow::Result<()> {
    learning::fs::atomic_write(path, net::cli::addr_file_text(who, addrs).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
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
        Command::Reference { command: ReferenceCommand::Build { from, label, header, preprocess, out } } => {
            reference_build(from, &label, header, &preprocess, &out)?;
        }
        Command::Init {
            dir,
            reference,
            federation,
            classes,
            listen,
            public_host,
            rounds,
            samples,
            validation,
            validation_label,
            validation_header,
        } => {
            let federation = protocol::FederationId::new(federation).context("--federation")?;
            let here = std::env::current_dir().context("current folder")?;
            let validation = validation.map(|path| {
                let label = learning::data::LabelColumn::from_flag(&validation_label);
                let spec = learning::data::DataSpec::file(path, Some(label), validation_header, Default::default());
                spec.resolved(&here)
            });
            init(aggregator::init::Init {
                dir,
                reference,
                federation,
                classes,
                listen,
                public_host,
                rounds,
                samples,
                validation,
            })?;
        }
        Command::Roster { config, command } => {
            use aggregator::roster_edit;
            match command {
                RosterCommand::Add { name, peer_id, samples } => {
                    roster_edit::edit_file(&config, |t| roster_edit::add(t, &name, &peer_id, samples))
                        .with_context(|| format!("cannot add {name} to {}", config.display()))?;
                    println!("added {name} to {}", config.display());
                    println!("a running fd-aggregator reads its roster when it starts: restart it to admit {name}");
                }
                RosterCommand::Remove { name } => {
                    roster_edit::edit_file(&config, |t| roster_edit::remove(t, &name))
                        .with_context(|| format!("cannot remove {name} from {}", config.display()))?;
                    println!("removed {name} from {}", config.display());
                    println!(
                        "a running fd-aggregator reads its roster when it starts: restart it so that {name} can no longer connect (it resumes from its checkpoint)"
                    );
                }
            }
        }
        Command::Run { config, addr_file } => {
            let cfg = aggregator::AggregatorConfig::load(&config)?;
            let shutdown = net::cli::shutdown_signal();
            let agg = aggregator::Aggregator::start(cfg, &shutdown).await.context("aggregator failed to start")?;
            if let Some(path) = addr_file {
                write_addr_file(&path, &agg.id(), agg.listen_addrs())?;
            }
            let summary = agg.run().await.context("aggregator failed")?;
            println!("{}", summary_line(summary.rounds.len(), &summary.model));
        }
        Command::Compress { config, teacher, arch, method, public_labels, settings, epochs, int8, seed, out } => {
            let mut job_settings: learning::compress::CompressConfig = match &settings {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    toml::from_str(&text).with_context(|| format!("{}", path.display()))?
                }
                None => Default::default(),
            };
            if let Some(e) = epochs {
                job_settings.train.epochs = e;
            }
            job_settings.int8 |= int8;
            let methods =
                method.iter().map(|m| learning::compress::Method::from_name(m)).collect::<Result<Vec<_>, _>>()?;
            let job = learning::compress::Job {
                student: learning::compress::parse_architecture(&arch)?,
                methods,
                settings: job_settings,
            };
            job.validate()?;
            let meter = learning::compress::EnergyMeter::new(job.settings.watts_per_core);
            let cfg = aggregator::AggregatorConfig::load(&config)?;
            let request =
                aggregator::compress::Request { config: cfg, teacher, public_labels, job, out: out.clone(), seed };
            let done = tokio::task::spawn_blocking(move || aggregator::compress::run(&request))
                .await?
                .context("compression failed")?;
            let table = learning::compress::measure::markdown(&done.rows, &meter);
            learning::fs::atomic_write(&out.join("analysis.md"), table.as_bytes())?;
            learning::compress::measure::write_json(&done.rows, &out.join("analysis.json"))?;
            print!("{table}");
            println!("students in {}", out.display());
        }
        Command::Relay { key, listen, allow, aggregator, addr_file } => {
            let identity = net::keys::read(&key).with_context(|| format!("cannot read key {}", key.display()))?;
            let shutdown = net::cli::shutdown_signal();
            let relay = aggregator::relay::Relay::start(identity, &listen, allow, aggregator, &shutdown)
                .await
                .context("relay failed to start")?;
            if let Some(path) = addr_file {
                write_addr_file(&path, &relay.id(), relay.listen_addrs())?;
            }
            relay.run().await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_model_is_announced_when_no_round_completed() {
        let model = Path::new("out/global");
        assert_eq!(summary_line(0, model), "no round completed; no global model written");
        assert_eq!(summary_line(2, model), "2 rounds; global model at out/global");
    }
}
