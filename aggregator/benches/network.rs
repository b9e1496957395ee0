//! `cargo bench -p aggregator`: the network path alone — announce → submit → consensus — for 10
//! and 50 nodes on loopback, with fixed soft labels instead of training and a student that does
//! not train (0 epochs). Prints milliseconds per round and bytes per node per round against the
//! raw payload size. `--quick` (after `--`) runs 5 nodes for 3 rounds instead, to check that the
//! bench works; an unknown option is an error.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::Path;

use aggregator::Aggregator;
use aggregator::config::{AggregatorConfig, ReferenceConfig, RosterEntry, RoundConfig, StudentConfig};
use clap::Parser;
use learning::Architecture;
use learning::train::{DistillConfig, TrainConfig};
use protocol::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SAMPLES: u32 = 1000;
const CLASSES: usize = 10;

/// `cargo bench -p aggregator -- [OPTIONS]`
#[derive(Parser)]
#[command(name = "network-bench", about = "The network path alone: ms per round and bytes per node")]
struct Args {
    /// 5 nodes for 3 rounds: checks that the bench works; not for figures.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn config(dir: &Path, nodes: &[Identity], rounds: u64) -> AggregatorConfig {
    let key = dir.join("agg.key");
    let _ = std::fs::remove_file(&key);
    net::keys::generate(&key).expect("key");
    let rs = ReferenceSet::new(SAMPLES as usize * 2, 8, (0..SAMPLES as usize * 16).map(|i| (i % 13) as f32).collect())
        .expect("refset");
    std::fs::write(dir.join("ref.fdref"), rs.to_bytes()).expect("write");
    AggregatorConfig {
        federation: FederationId::new("bench").expect("fed"),
        key,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        output: dir.join("out"),
        rounds,
        seed: 1,
        backend: Default::default(),
        classes: CLASSES,
        roster: nodes
            .iter()
            .enumerate()
            .map(|(i, n)| RosterEntry { name: format!("n{i}"), peer_id: n.id(), samples: None })
            .collect(),
        reference: ReferenceConfig { path: dir.join("ref.fdref"), sha256: rs.id() },
        round: RoundConfig {
            samples: SAMPLES,
            temperature: 3.0,
            encoding: Encoding::Q8,
            compact_consensus: false,
            consensus_encoding: None,
            consensus_samples: None,
            quorum: Some(nodes.len()),
            deadline_secs: 60.0,
            sample_count_clip: 2.0,
            secure_aggregation: None,
            cohort: None,
        },
        consensus: Default::default(),
        student: StudentConfig {
            architecture: Architecture::Mlp { hidden: vec![], dropout: 0.0 },
            warm_start: true,
            distill: DistillConfig { train: TrainConfig { epochs: 0, ..Default::default() }, ..Default::default() },
            teaching: Default::default(),
        },
        validation: None,
        connections: Default::default(),
        metrics: None,
        http: Default::default(),
    }
}

/// A node that answers every announcement with the same soft labels.
async fn fixed_node(
    id: Identity,
    agg: ParticipantId,
    addr: net::multiaddr::Multiaddr,
    labels: SoftLabels,
    shutdown: CancellationToken,
) {
    let fed = FederationId::new("bench").expect("fed");
    let me = id.id();
    let (client, mut events, _network) =
        net::spawn(id, net::NetConfig::new(fed.clone(), vec![agg]), &shutdown).expect("net");
    client.dial(addr).await.expect("dial");
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: me,
        protocol_version: PROTOCOL_VERSION,
        agent: "bench".into(),
    });
    match client.request(&agg, &hello).await.expect("hello") {
        Message::JoinReply(JoinReply { outcome: Ok(_), .. }) => {}
        other => panic!("join refused: {other:?}"),
    }
    while let Some(ev) = events.recv().await {
        if let net::Event::Request { message, responder, .. } = ev {
            let round = message.round().unwrap_or(0);
            let ack = Message::Receipt(Receipt {
                federation: fed.clone(),
                round,
                status: ReceiptStatus::Accepted,
                detail: String::new(),
            });
            let _ = responder.respond(ack).await;
            if let Message::RoundAnnouncement(a) = message {
                let sub = Message::Submission(Submission {
                    federation: fed.clone(),
                    round: a.round,
                    announcement: a.digest(),
                    reference_set: a.reference_set,
                    temperature: a.temperature,
                    local_samples: None,
                    labels: labels.clone(),
                    abstained: None,
                });
                let c = client.clone();
                tokio::spawn(async move {
                    let _ = c.request(&agg, &sub).await;
                });
            }
        }
    }
}

async fn bench(n: usize, rounds: u64) {
    // Removed when the bench ends, also when it fails.
    let dir = tempfile::Builder::new().prefix(&format!("fd-net-bench-{n}-")).tempdir().expect("dir");
    let ids: Vec<Identity> = (0..n).map(|i| Identity::from_seed([i as u8 + 1; 32]).expect("id")).collect();
    let seeds: Vec<[u8; 32]> = ids.iter().map(|i| *i.seed()).collect();
    let cfg = config(dir.path(), &ids, rounds);
    let shutdown = CancellationToken::new();
    let mut agg = Aggregator::start(cfg, &shutdown).await.expect("aggregator");
    let agg_id = agg.id();
    let addr = agg.listen_addrs()[0].clone().with(net::multiaddr::Protocol::P2p(net::peer_id(&agg_id)));
    let (tx, mut rx) = mpsc::channel(64);
    agg.set_progress(tx);
    let probs: Vec<f32> = (0..SAMPLES as usize * CLASSES).map(|i| if i % CLASSES == 0 { 0.55 } else { 0.05 }).collect();
    let labels = SoftLabels::encode(&probs, SAMPLES as usize, CLASSES, Encoding::Q8).expect("labels");
    let payload = labels.data.len();
    // The aggregator answers hellos only while it runs: start it, then the nodes. Round 1
    // includes the joins and is left out of the figures.
    let task = tokio::spawn(agg.run());
    for s in seeds {
        tokio::spawn(fixed_node(
            Identity::from_seed(s).expect("id"),
            agg_id,
            addr.clone(),
            labels.clone(),
            shutdown.clone(),
        ));
    }
    let mut ms = Vec::new();
    let mut bytes = Vec::new();
    while let Some(m) = rx.recv().await {
        ms.push(m.seconds * 1e3);
        bytes.push((m.bytes_in + m.bytes_out) as f64 / n as f64);
        if m.round == rounds {
            break;
        }
    }
    task.await.expect("aggregator task").expect("aggregator");
    shutdown.cancel();
    // Round 1 includes joins; report the steady rounds.
    let steady = |v: &[f64]| v[1..].iter().sum::<f64>() / (v.len() - 1) as f64;
    println!(
        "{n:>5} nodes  {:>8.1} ms/round  {:>9.0} bytes/node/round  payload {payload} B (q8, {SAMPLES} x {CLASSES}), ratio {:.2}",
        steady(&ms),
        steady(&bytes),
        steady(&bytes) / payload as f64
    );
}

fn main() {
    let args = Args::parse();
    let (sizes, rounds): (&[usize], u64) = if args.quick { (&[5], 3) } else { (&[10, 50], 5) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!("network path: announce -> submit -> consensus, {rounds} rounds, fixed soft labels, no training");
    rt.block_on(async {
        for &n in sizes {
            bench(n, rounds).await;
        }
    });
}
