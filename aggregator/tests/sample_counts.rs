//! `weighted_by_samples` against a node that lies about its size, over a real aggregator and
//! three real libp2p clients: the join reply asks for a count only from a node the roster
//! declares none for, a declared count is taken as it is, a reported one is clipped to
//! `round.sample_count_clip` × the round's median, and the consensus the nodes receive shows it.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::time::Duration;

use aggregator::Aggregator;
use aggregator::config::{AggregatorConfig, ReferenceConfig, RosterEntry, RoundConfig, StudentConfig};
use learning::Architecture;
use learning::consensus::{ConsensusConfig, Rule};
use protocol::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// One node: joins, answers the announcement with `p` on class 0 of every sample and
/// `local_samples`, and returns whether it was asked for its count and the consensus it got.
async fn node(
    identity: Identity,
    agg: ParticipantId,
    addr: net::multiaddr::Multiaddr,
    p: f32,
    local_samples: Option<u64>,
    shutdown: CancellationToken,
) -> (bool, Consensus) {
    let fed = FederationId::new("counts").unwrap();
    let me = identity.id();
    let (client, mut events, _network) =
        net::spawn(identity, net::NetConfig::new(fed.clone(), vec![agg]), &shutdown).unwrap();
    client.dial(addr).await.unwrap();
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: me,
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    let wanted = match client.request(&agg, &hello).await.unwrap() {
        Message::JoinReply(JoinReply { outcome: Ok(a), .. }) => a.sample_count_wanted,
        other => panic!("join refused: {other:?}"),
    };
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the aggregator went quiet")
            .expect("network stopped");
        let net::Event::Request { message, responder, .. } = ev else { continue };
        let ack = Message::Receipt(Receipt {
            federation: fed.clone(),
            round: message.round().unwrap_or(0),
            status: ReceiptStatus::Accepted,
            detail: String::new(),
        });
        responder.respond(ack).await.unwrap();
        match message {
            Message::RoundAnnouncement(a) => {
                let rows = a.selection.len();
                let probs: Vec<f32> = (0..rows).flat_map(|_| [p, 1.0 - p, 0.0]).collect();
                let labels = SoftLabels::encode(&probs, rows, 3, a.encoding).unwrap();
                let sub = Submission {
                    federation: fed.clone(),
                    round: a.round,
                    announcement: a.digest(),
                    reference_set: a.reference_set,
                    temperature: a.temperature,
                    local_samples,
                    labels,
                    abstained: None,
                };
                match client.request(&agg, &Message::Submission(sub)).await.unwrap() {
                    Message::Receipt(Receipt { status: ReceiptStatus::Accepted, .. }) => {}
                    other => panic!("submission refused: {other:?}"),
                }
            }
            Message::Consensus(c) => return (wanted, c),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_sample_count_is_clipped_and_a_declared_one_is_taken() {
    let tmp = tempfile::Builder::new().prefix("agg-counts-").tempdir().unwrap();
    let d = tmp.path();
    let agg_key = d.join("agg.key");
    net::keys::generate(&agg_key).unwrap();
    let ids: Vec<Identity> = (0..3).map(|i| Identity::from_seed([i + 1; 32]).unwrap()).collect();
    let values: Vec<f32> = (0..50 * 4).map(|i| (i % 7) as f32).collect();
    let rs = ReferenceSet::new(50, 4, values).unwrap();
    std::fs::write(d.join("ref.fdref"), rs.to_bytes()).unwrap();
    let entry = |name: &str, id: &Identity, samples| RosterEntry { name: name.into(), peer_id: id.id(), samples };
    let cfg = AggregatorConfig {
        federation: FederationId::new("counts").unwrap(),
        key: agg_key,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        output: d.join("out"),
        rounds: 1,
        seed: 1,
        backend: Default::default(),
        classes: 3,
        // The liar and one honest node report their counts; the operator declares the other's.
        roster: vec![
            entry("liar", &ids[0], None),
            entry("reporter", &ids[1], None),
            entry("declared", &ids[2], Some(100)),
        ],
        reference: ReferenceConfig { path: d.join("ref.fdref"), sha256: rs.id() },
        round: RoundConfig {
            samples: 10,
            temperature: 2.0,
            encoding: Encoding::F32,
            compact_consensus: false,
            consensus_encoding: None,
            consensus_samples: None,
            quorum: None,
            deadline_secs: 60.0,
            sample_count_clip: 2.0,
            secure_aggregation: None,
            cohort: None,
        },
        consensus: ConsensusConfig { rule: Rule::WeightedBySamples, ..Default::default() },
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
    };
    let shutdown = CancellationToken::new();
    let agg = Aggregator::start(cfg, &shutdown).await.unwrap();
    let (agg_id, addr) =
        (agg.id(), agg.listen_addrs()[0].clone().with(net::multiaddr::Protocol::P2p(net::peer_id(&agg.id()))));
    let run = tokio::spawn(agg.run());
    // The declared node says it has 2²⁰ samples too: the roster's word stands.
    let nodes = [(0.0, Some(1 << 20)), (0.9, Some(100)), (0.9, Some(1 << 20))];
    let tasks: Vec<_> = ids
        .iter()
        .zip(nodes)
        .map(|(id, (p, n))| {
            tokio::spawn(node(Identity::from_seed(*id.seed()).unwrap(), agg_id, addr.clone(), p, n, shutdown.clone()))
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(tokio::time::timeout(WAIT, t).await.expect("a node did not get the consensus").unwrap());
    }
    let asked: Vec<bool> = results.iter().map(|(w, _)| *w).collect();
    assert_eq!(asked, vec![true, true, false], "only nodes without a declared count are asked for one");
    // Weights: liar min(2²⁰, 2 × median(2²⁰, 100, 100)) = 200, reporter 100, declared 100.
    let probs = results[0].1.labels.decode(&Limits::default()).unwrap();
    assert!((probs[0] - 0.45).abs() < 1e-4, "(0 × 200 + 0.9 × 100 + 0.9 × 100) / 400, got {}", probs[0]);
    let summary = tokio::time::timeout(WAIT, run).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.rounds[0].participants.len(), 3);
    shutdown.cancel();
}
