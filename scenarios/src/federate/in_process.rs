//! The federation inside this process: the aggregator and every node a real libp2p peer on
//! loopback, each node a task that can leave and come back as its faults say.

use std::sync::Arc;

use aggregator::{Aggregator, RoundMetrics};
use anyhow::Context;
use net::multiaddr::Protocol;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bar;
use crate::faults::Simulation;
use crate::setup::{Prepared, write_configs};

/// Runs the federation of `p` in this process; returns each round's metrics.
pub(super) async fn federate(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let shutdown = CancellationToken::new();
    let mut agg =
        Aggregator::start(p.aggregator.clone(), &shutdown.child_token()).await.context("starting the aggregator")?;
    // The run folder's federation.toml names the port actually bound, as its node.toml files do.
    p.aggregator.listen = agg.listen_addrs().to_vec();
    let addr = agg.listen_addrs()[0].clone().with(Protocol::P2p(net::peer_id(&agg.id())));
    write_configs(p, &addr)?;
    let (tx, mut rx) = mpsc::channel(64);
    agg.set_progress(tx);
    let mut agg_task = tokio::spawn(agg.run());
    let (round_tx, round_rx) = watch::channel(0u64);
    // The data file, decoded once and held while the nodes start: each node then copies its rows
    // out of this one copy instead of decoding the file again (dropped after the first round).
    let mut hold = p.nodes.first().map(|c| c.data.source().and_then(|s| s.load_shared()));
    let node_tasks: Vec<_> = (0..p.nodes.len()).map(|i| spawn_node(p, i, &shutdown, round_rx.clone())).collect();
    let pb = bar(p.scenario.rounds, progress);
    let mut metrics = Vec::new();
    let summary = loop {
        tokio::select! {
            m = rx.recv() => if let Some(m) = m {
                pb.set_position(m.round);
                pb.set_message(format!("{} nodes, accuracy {:.3}", m.participants.len(), m.accuracy.unwrap_or(0.0)));
                let _ = round_tx.send(m.round);
                metrics.push(m);
                drop(hold.take());
            },
            r = &mut agg_task => break r.context("aggregator task")?.context("aggregator")?,
        }
    };
    while let Ok(m) = rx.try_recv() {
        metrics.push(m);
    }
    pb.finish_and_clear();
    shutdown.cancel();
    for t in node_tasks {
        t.await.context("node task")?.context("node")?;
    }
    Ok(summary.rounds)
}

/// Node `i` as a task: it runs until the federation ends or `shutdown`; a node that leaves (its
/// faults say when) and has a `return_at` round starts again once the round before it is complete.
fn spawn_node(
    p: &Prepared,
    i: usize,
    shutdown: &CancellationToken,
    mut round_rx: watch::Receiver<u64>,
) -> JoinHandle<Result<(), node::Error>> {
    let cfg = p.nodes[i].clone();
    let mut faults: Simulation = p.faults[i].clone();
    let token = shutdown.child_token();
    let return_at = p.scenario.faults.iter().find(|f| f.node == i).and_then(|f| f.return_at);
    tokio::spawn(async move {
        loop {
            let summary = node::run_with(cfg.clone(), Arc::new(faults.clone()), token.clone()).await?;
            match (summary.left_at, return_at) {
                (Some(_), Some(back)) => {
                    // Come back once round `back − 1` is complete, in time for round `back`.
                    tokio::select! {
                        _ = token.cancelled() => return Ok(()),
                        r = round_rx.wait_for(|r| *r + 1 >= back) => if r.is_err() { return Ok(()) },
                    }
                    faults.leave_at_round = None;
                }
                _ => return Ok(()),
            }
        }
    })
}
