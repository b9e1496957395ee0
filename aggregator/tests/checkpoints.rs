//! A checkpoint that fails (here: a file stands where round 1's checkpoint folder goes, as a
//! full disk or an exhausted file table would make it fail) does not end the run: the consensus
//! has been sent, the failure is reported and retried, the last good checkpoint stays the
//! commit point, and the next round's checkpoint commits.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod support;

use std::time::Duration;

use aggregator::Aggregator;
use protocol::FederationId;
use support::{dir, setup, submitting_member};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_is_reported_and_the_run_goes_on() {
    let tmp = dir("ckpt-fail");
    let d = tmp.path();
    let mut cfg = setup(d, &d.join("n.key"));
    cfg.rounds = 3;
    let checkpoints = cfg.output.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::write(checkpoints.join("round-1"), b"in the way").unwrap();
    let fed = FederationId::new("bad-input").unwrap();
    let shutdown = CancellationToken::new();
    let agg = Aggregator::start(cfg.clone(), &shutdown).await.unwrap();
    let agg_id = agg.id();
    let addr = agg.listen_addrs()[0].clone().with(net::multiaddr::Protocol::P2p(net::peer_id(&agg_id)));
    let task = tokio::spawn(agg.run());
    let mut consensus = Vec::new();
    for key in ["n", "m1", "m2"] {
        consensus.push(submitting_member(&d.join(format!("{key}.key")), addr.clone(), agg_id, &fed, &shutdown).await);
    }
    let summary = tokio::time::timeout(Duration::from_secs(120), task).await.unwrap().unwrap().unwrap();
    assert!(summary.completed);
    assert_eq!(summary.rounds.iter().map(|m| m.round).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Every member got every round's consensus, round 1's included.
    for rx in &mut consensus {
        let rounds: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).map(|c| c.round).collect();
        assert_eq!(rounds, vec![1, 2, 3]);
    }
    // Round 1 never got its checkpoint; the later rounds did, and a restart resumes after 3.
    assert!(checkpoints.join("round-1").is_file());
    let restored = aggregator::checkpoint::restore(&cfg.output, &cfg.reference.sha256, cfg.backend).unwrap();
    assert_eq!(restored.completed, 3);
    assert_eq!(restored.metrics.len(), 3);
    assert!(cfg.output.join("global.bpk").is_file(), "the end-of-run outputs are written");
    shutdown.cancel();
}
