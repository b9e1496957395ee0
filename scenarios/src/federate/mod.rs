//! The federated part of a run: the aggregator and the nodes, as real libp2p peers inside this
//! process ([`in_process`]) or as real `fd-aggregator` and `fd-node` processes ([`processes`]).
//! Both write the run folder's configs once the aggregator has bound its address, and return
//! the aggregator's metrics of each round.

use aggregator::RoundMetrics;

use crate::setup::Prepared;
use crate::spec::Transport;

pub mod in_process;
pub mod processes;

/// Runs the federation of `p` over its scenario's transport; returns each round's metrics.
pub async fn federate(p: &mut Prepared, progress: bool) -> anyhow::Result<Vec<RoundMetrics>> {
    match p.scenario.transport {
        Transport::InProcess => in_process::federate(p, progress).await,
        Transport::Processes => processes::federate(p, progress).await,
    }
}

/// A progress bar over the rounds (hidden unless `show`).
fn bar(total: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}
