//! Per-round cohorts (`round.cohort`) over real libp2p peers on loopback: eight roster members,
//! four asked a round. Each round asks exactly the cohort its seed draws (and records it); a
//! round closes as soon as its cohort has answered, whatever the members outside it do; a
//! member that missed consensus rounds is sent the last consensus before its next announcement,
//! also after a restart, which restores that consensus from the checkpoint.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod support;

use std::path::Path;
use std::time::Duration;

use aggregator::config::{AggregatorConfig, Cohort, RosterEntry};
use aggregator::{Aggregator, RunSummary};
use protocol::*;
use support::{dir, setup};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a member saw, in the order it saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Announced(u64),
    Consensus(u64),
}

const MEMBERS: usize = 8;

/// A federation of eight (keys `k0.key` … `k7.key`), four asked a round, every round's quorum
/// the whole cohort, and a deadline no test waits for.
fn federation(d: &Path, rounds: u64) -> AggregatorConfig {
    let mut cfg = setup(d, &d.join("k0.key"));
    cfg.roster.truncate(1);
    cfg.roster[0].name = "k0".into();
    for i in 1..MEMBERS {
        let id = net::keys::generate(&d.join(format!("k{i}.key"))).unwrap().id();
        cfg.roster.push(RosterEntry { name: format!("k{i}"), peer_id: id, samples: None });
    }
    cfg.rounds = rounds;
    cfg.round.cohort = Some(Cohort::Count(4));
    cfg.round.quorum = Some(4);
    cfg.round.deadline_secs = 600.0;
    cfg
}

/// A roster member that joins, answers every announcement with fixed soft labels, and reports
/// what it is sent, in order.
async fn member(
    key: &Path,
    addr: net::multiaddr::Multiaddr,
    agg: ParticipantId,
    fed: FederationId,
    shutdown: &CancellationToken,
) -> mpsc::Receiver<Seen> {
    let me = net::keys::read(key).unwrap();
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: me.id(),
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    let (client, mut events, _network) = net::spawn(me, net::NetConfig::new(fed.clone(), vec![agg]), shutdown).unwrap();
    client.dial(addr).await.unwrap();
    assert!(matches!(
        client.request(&agg, &hello).await.unwrap(),
        Message::JoinReply(JoinReply { outcome: Ok(_), .. })
    ));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let net::Event::Request { message, responder, .. } = ev else { continue };
            let round = message.round().unwrap_or(0);
            let receipt =
                Receipt { federation: fed.clone(), round, status: ReceiptStatus::Accepted, detail: String::new() };
            let _ = responder.respond(Message::Receipt(receipt)).await;
            match message {
                Message::RoundAnnouncement(a) => {
                    let _ = tx.send(Seen::Announced(a.round)).await;
                    let rows = a.selection.len();
                    let probs: Vec<f32> = (0..rows * a.classes as usize)
                        .map(|i| if i % a.classes as usize == 0 { 0.8 } else { 0.2 / (a.classes - 1) as f32 })
                        .collect();
                    let sub = Message::Submission(Submission {
                        federation: fed.clone(),
                        round: a.round,
                        announcement: a.digest(),
                        reference_set: a.reference_set,
                        temperature: a.temperature,
                        local_samples: None,
                        labels: SoftLabels::encode(&probs, rows, a.classes as usize, a.encoding).unwrap(),
                        abstained: None,
                    });
                    let c = client.clone();
                    tokio::spawn(async move { c.request(&agg, &sub).await });
                }
                Message::Consensus(c) => {
                    let _ = tx.send(Seen::Consensus(c.round)).await;
                }
                _ => {}
            }
        }
    });
    rx
}

/// Runs `cfg` to its end with the eight members; returns the summary and what each member saw.
async fn run(d: &Path, cfg: &AggregatorConfig) -> (RunSummary, Vec<Vec<Seen>>) {
    let shutdown = CancellationToken::new();
    let agg = Aggregator::start(cfg.clone(), &shutdown).await.unwrap();
    let agg_id = agg.id();
    let addr = agg.listen_addrs()[0].clone().with(net::multiaddr::Protocol::P2p(net::peer_id(&agg_id)));
    let task = tokio::spawn(agg.run());
    let mut seen = Vec::new();
    for i in 0..MEMBERS {
        seen.push(member(&d.join(format!("k{i}.key")), addr.clone(), agg_id, cfg.federation.clone(), &shutdown).await);
    }
    // Every round's quorum is its whole cohort and its deadline 10 minutes away: the run ends in
    // time only if each round closes once its four members have answered.
    let summary = tokio::time::timeout(Duration::from_secs(120), task).await.unwrap().unwrap().unwrap();
    shutdown.cancel();
    let seen = seen.iter_mut().map(|rx| std::iter::from_fn(|| rx.try_recv().ok()).collect()).collect();
    (summary, seen)
}

/// The names round `round`'s seed draws.
fn drawn(cfg: &AggregatorConfig, round: u64) -> Vec<String> {
    let names: Vec<String> = cfg.roster.iter().map(|e| e.name.clone()).collect();
    aggregator::cohort::draw(&names, Some(4), cfg.seed, round)
}

/// Each announcement a member saw comes after the consensus of the round before it (if any),
/// and no consensus it saw later is older.
fn assert_taught_before_announced(seen: &[Vec<Seen>], from: u64) {
    for (i, events) in seen.iter().enumerate() {
        let mut last = None;
        for e in events {
            match *e {
                Seen::Consensus(r) => last = Some(r),
                Seen::Announced(r) if r > from => {
                    assert_eq!(
                        last,
                        Some(r - 1),
                        "k{i} was announced round {r} without round {}'s consensus: {events:?}",
                        r - 1
                    )
                }
                Seen::Announced(_) => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_round_asks_the_cohort_its_seed_draws_and_members_that_missed_rounds_catch_up() {
    let tmp = dir("cohorts");
    let d = tmp.path();
    let cfg = federation(d, 6);
    let (summary, seen) = run(d, &cfg).await;
    assert!(summary.completed);
    assert_eq!(summary.rounds.len(), 6);
    let mut caught_up = 0;
    for m in &summary.rounds {
        let cohort = drawn(&cfg, m.round);
        assert_eq!(m.cohort, cohort, "round {}: the metrics record the drawn cohort", m.round);
        assert_eq!(m.participants, cohort, "round {}: the cohort alone answers, and all of it", m.round);
        for (i, events) in seen.iter().enumerate() {
            let name = format!("k{i}");
            let asked = events.contains(&Seen::Announced(m.round));
            assert_eq!(asked, cohort.contains(&name), "round {}: {name} asked {asked}", m.round);
            // Sent this round's consensus exactly when in its cohort.
            let taught = events.contains(&Seen::Consensus(m.round));
            assert!(!asked || taught, "round {}: {name} answered and was not sent the consensus", m.round);
            if m.round > 1 && asked && !drawn(&cfg, m.round - 1).contains(&name) {
                caught_up += 1;
            }
        }
    }
    assert!(caught_up > 0, "some member sat a round out and was asked again");
    assert_taught_before_announced(&seen, 1);
    // The draw depends on the seed and the round alone: the same rounds again draw the same.
    assert_eq!(
        (1..=6).map(|r| drawn(&cfg, r)).collect::<Vec<_>>(),
        (1..=6).map(|r| drawn(&cfg, r)).collect::<Vec<_>>()
    );
    let other = AggregatorConfig { seed: cfg.seed + 1, ..cfg.clone() };
    assert_ne!(
        (1..=6).map(|r| drawn(&cfg, r)).collect::<Vec<_>>(),
        (1..=6).map(|r| drawn(&other, r)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_checkpointed_consensus_reaches_the_next_cohort_first() {
    let tmp = dir("cohorts-restart");
    let d = tmp.path();
    let cfg = federation(d, 2);
    let (first, _) = run(d, &cfg).await;
    assert!(first.completed);
    let restored = aggregator::checkpoint::restore(&cfg.output, &cfg.reference.sha256, cfg.backend).unwrap();
    assert_eq!(restored.consensus.as_ref().map(|c| c.round), Some(2), "the checkpoint keeps round 2's consensus");
    assert_eq!(
        restored.metrics.iter().map(|m| m.cohort.clone()).collect::<Vec<_>>(),
        vec![drawn(&cfg, 1), drawn(&cfg, 2)]
    );
    // The same output folder, two more rounds, members that hold no consensus yet.
    let more = AggregatorConfig { rounds: 4, ..cfg.clone() };
    let (second, seen) = run(d, &more).await;
    assert_eq!(second.rounds.iter().map(|m| m.round).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(second.rounds[2].cohort, drawn(&cfg, 3));
    assert_taught_before_announced(&seen, 2);
    for (i, events) in seen.iter().enumerate() {
        if drawn(&cfg, 3).contains(&format!("k{i}")) {
            assert_eq!(events[..2], [Seen::Consensus(2), Seen::Announced(3)], "k{i}: {events:?}");
        }
    }
}
