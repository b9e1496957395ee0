//! AutoNAT's verdict on this node, made visible: the node asks its aggregator (and the relays its
//! `aggregator` address names) to dial it back (see [`net::nat`]), and each change of verdict
//! updates `fd_reachability{status}` and rewrites [`FILE`] in the state folder:
//! `{"reachability": "public" | "private" | "unknown", "address": "/ip4/…" | null}` (the address
//! a server reached, when public). The verdict changes nothing the node does: it only dials out.

use std::path::PathBuf;

use net::metrics::ReachabilityGauge;
use net::nat::Reachability;
use tokio::sync::watch;

/// The file in the state folder that holds the last verdict.
pub const FILE: &str = "reachability.json";

/// The file's contents for `r`.
pub fn json(r: &Reachability) -> serde_json::Value {
    let address = match r {
        Reachability::Public(a) => Some(a.to_string()),
        _ => None,
    };
    serde_json::json!({ "reachability": r.name(), "address": address })
}

/// Follows the verdicts until the network stops (its sender is dropped): the gauge, then the
/// file (written off the runtime; a failed write is logged, the node carries on).
pub(crate) fn follow(
    mut verdicts: watch::Receiver<Reachability>,
    gauge: ReachabilityGauge,
    path: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = verdicts.borrow_and_update().clone();
            gauge.set(&now);
            let (path, bytes) = (path.clone(), json(&now).to_string().into_bytes());
            match tokio::task::spawn_blocking(move || learning::fs::atomic_write(&path, &bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the reachability verdict"),
                Err(e) => tracing::warn!(error = %e, "reachability writer failed"),
            }
            if verdicts.changed().await.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_verdict_is_written_and_the_writer_ends_with_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (tx, rx) = watch::channel(Reachability::Unknown);
        let mut registry = prometheus_client::registry::Registry::default();
        let task = follow(rx, ReachabilityGauge::register(&mut registry), path.clone());
        let read = || std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let addr: net::multiaddr::Multiaddr = "/ip4/10.77.0.4/tcp/4001".parse().unwrap();
        for verdict in [Reachability::Private, Reachability::Public(addr)] {
            let want = json(&verdict);
            tx.send_replace(verdict);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while read().as_ref() != Some(&want) {
                assert!(tokio::time::Instant::now() < deadline, "{want} never written");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        assert_eq!(read().unwrap()["address"], "/ip4/10.77.0.4/tcp/4001");
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
