//! What the aggregator's integration tests share: a federation of three on loopback and roster
//! members that behave as nodes would.
#![allow(dead_code)] // each test file uses its own part of it

use std::path::Path;

use aggregator::config::{AggregatorConfig, ReferenceConfig, RosterEntry, RoundConfig, StudentConfig};
use learning::Architecture;
use protocol::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A fresh folder for a test's files, removed when the test ends (also when it fails).
pub fn dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("agg-test-{name}-")).tempdir().unwrap()
}

/// A federation of three: `n` (whose key is written at `node_key`) and two honest members whose
/// keys are `m1.key` and `m2.key` beside it (a consensus needs at least three submissions).
pub fn setup(d: &Path, node_key: &Path) -> AggregatorConfig {
    let agg_key = d.join("agg.key");
    net::keys::generate(&agg_key).unwrap();
    let node = net::keys::generate(node_key).unwrap();
    let others: Vec<RosterEntry> = ["m1", "m2"]
        .iter()
        .map(|name| RosterEntry {
            name: (*name).into(),
            peer_id: net::keys::generate(&d.join(format!("{name}.key"))).unwrap().id(),
            samples: None,
        })
        .collect();
    let values: Vec<f32> = (0..50 * 4).map(|i| (i % 7) as f32).collect();
    let rs = ReferenceSet::new(50, 4, values).unwrap();
    std::fs::write(d.join("ref.fdref"), rs.to_bytes()).unwrap();
    AggregatorConfig {
        federation: FederationId::new("bad-input").unwrap(),
        key: agg_key,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        output: d.join("out"),
        rounds: 1,
        seed: 1,
        backend: Default::default(),
        classes: 3,
        roster: [vec![RosterEntry { name: "n".into(), peer_id: node.id(), samples: None }], others].concat(),
        reference: ReferenceConfig { path: d.join("ref.fdref"), sha256: rs.id() },
        round: RoundConfig {
            samples: 10,
            temperature: 2.0,
            encoding: Encoding::F32,
            compact_consensus: false,
            consensus_encoding: None,
            consensus_samples: None,
            quorum: Some(3),
            deadline_secs: 60.0,
            sample_count_clip: 2.0,
            secure_aggregation: None,
            cohort: None,
        },
        consensus: Default::default(),
        student: StudentConfig {
            architecture: Architecture::Mlp { hidden: vec![8], dropout: 0.0 },
            warm_start: true,
            distill: Default::default(),
            teaching: Default::default(),
        },
        validation: None,
        connections: Default::default(),
        metrics: None,
        http: Default::default(),
    }
}

/// A roster member whose key is at `key`: connects, joins, and accepts whatever the aggregator
/// sends it (announcements, the consensus, the end of the federation).
pub async fn member(
    key: &Path,
    agg_addr: net::multiaddr::Multiaddr,
    agg_id: ParticipantId,
    fed: &FederationId,
    shutdown: &CancellationToken,
) -> net::Client {
    let me = net::keys::read(key).unwrap();
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: me.id(),
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    let (client, events, _network) = net::spawn(me, net::NetConfig::new(fed.clone(), vec![agg_id]), shutdown).unwrap();
    client.dial(agg_addr).await.unwrap();
    assert!(matches!(
        client.request(&agg_id, &hello).await.unwrap(),
        Message::JoinReply(JoinReply { outcome: Ok(_), .. })
    ));
    accept_everything(events, fed.clone());
    client
}

/// Answers every request of the aggregator with an acceptance, as a node would, in the background.
pub fn accept_everything(mut events: mpsc::Receiver<net::Event>, fed: FederationId) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let net::Event::Request { message, responder, .. } = ev {
                let round = message.round().unwrap_or(0);
                let _ = responder
                    .respond(Message::Receipt(Receipt {
                        federation: fed.clone(),
                        round,
                        status: ReceiptStatus::Accepted,
                        detail: String::new(),
                    }))
                    .await;
            }
        }
    });
}

/// A roster member that joins and submits fixed soft labels to every round announced; the
/// consensus messages it receives come out of the returned channel.
pub async fn submitting_member(
    key: &Path,
    agg_addr: net::multiaddr::Multiaddr,
    agg_id: ParticipantId,
    fed: &FederationId,
    shutdown: &CancellationToken,
) -> mpsc::Receiver<Consensus> {
    let me = net::keys::read(key).unwrap();
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: me.id(),
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    let (client, mut events, _network) =
        net::spawn(me, net::NetConfig::new(fed.clone(), vec![agg_id]), shutdown).unwrap();
    client.dial(agg_addr).await.unwrap();
    assert!(matches!(
        client.request(&agg_id, &hello).await.unwrap(),
        Message::JoinReply(JoinReply { outcome: Ok(_), .. })
    ));
    let (tx, rx) = mpsc::channel(16);
    let fed = fed.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let net::Event::Request { message, responder, .. } = ev else { continue };
            let round = message.round().unwrap_or(0);
            let _ = responder
                .respond(Message::Receipt(Receipt {
                    federation: fed.clone(),
                    round,
                    status: ReceiptStatus::Accepted,
                    detail: String::new(),
                }))
                .await;
            match message {
                Message::RoundAnnouncement(a) => {
                    let rows = a.selection.len();
                    let probs: Vec<f32> = (0..rows * a.classes as usize)
                        .map(|i| if i % a.classes as usize == 0 { 0.8 } else { 0.2 / (a.classes - 1) as f32 })
                        .collect();
                    let labels = SoftLabels::encode(&probs, rows, a.classes as usize, a.encoding).unwrap();
                    let sub = Message::Submission(Submission {
                        federation: fed.clone(),
                        round: a.round,
                        announcement: a.digest(),
                        reference_set: a.reference_set,
                        temperature: a.temperature,
                        local_samples: Some(5),
                        labels,
                        abstained: None,
                    });
                    let c = client.clone();
                    tokio::spawn(async move { c.request(&agg_id, &sub).await });
                }
                Message::Consensus(c) => {
                    let _ = tx.send(c).await;
                }
                _ => {}
            }
        }
    });
    rx
}
