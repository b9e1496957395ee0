//! The memory of a federation run as processes ([`super::processes`]): every second, each
//! process's resident set (RSS) and proportional set (PSS: each shared page counted once, split
//! among the processes that map it) from `/proc/PID/smaps_rollup`, summed over the aggregator
//! and the nodes. RSS counts a page shared by 100 node processes (the memory-mapped reference
//! set, the binary's code) 100 times; PSS counts it once, so the PSS sum is what the machine
//! actually holds for the federation.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the processes are sampled.
pub const EVERY: Duration = Duration::from_secs(1);

/// The peaks over a run's samples, in MiB. Written to `processes-memory.json` in the run
/// folder and copied into `results.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// Processes sampled: the aggregator and the nodes.
    pub processes: usize,
    /// Samples taken.
    pub samples: usize,
    /// Largest sum of every process's RSS at one sample.
    pub peak_rss_mib: f64,
    /// Largest sum of every process's PSS at one sample.
    pub peak_pss_mib: f64,
    /// Largest RSS of one node process.
    pub node_rss_mib: f64,
    /// Largest PSS of one node process.
    pub node_pss_mib: f64,
}

/// RSS and PSS of process `pid`, in KiB, or `None` once it has exited (or on a system without
/// `smaps_rollup`).
pub fn rss_pss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup(&text)
}

fn parse_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

impl ProcessMemory {
    /// Takes one sample: `aggregator` and `nodes` are process ids (exited ones are skipped).
    fn sample(&mut self, aggregator: Option<u32>, nodes: &[u32]) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let (mut rss, mut pss) = (0u64, 0u64);
        for (i, pid) in aggregator.iter().chain(nodes).enumerate() {
            let Some((r, p)) = rss_pss_kib(*pid) else { continue };
            rss += r;
            pss += p;
            if i > 0 || aggregator.is_none() {
                self.node_rss_mib = self.node_rss_mib.max(mib(r));
                self.node_pss_mib = self.node_pss_mib.max(mib(p));
            }
        }
        self.samples += 1;
        self.peak_rss_mib = self.peak_rss_mib.max(mib(rss));
        self.peak_pss_mib = self.peak_pss_mib.max(mib(pss));
    }
}

/// Samples a federation's processes in the background until [`Sampler::finish`].
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<ProcessMemory>,
}

impl Sampler {
    /// Starts sampling `aggregator` and `nodes` every [`EVERY`] (the first sample at once).
    pub fn start(aggregator: Option<u32>, nodes: Vec<u32>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut memory =
                ProcessMemory { processes: nodes.len() + usize::from(aggregator.is_some()), ..Default::default() };
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        let nodes = nodes.clone();
                        memory = match tokio::task::spawn_blocking(move || { memory.sample(aggregator, &nodes); memory }).await {
                            Ok(m) => m,
                            Err(_) => return ProcessMemory::default(),
                        };
                    }
                }
            }
            memory
        });
        Self { stop, task }
    }

    /// Stops sampling and returns the peaks.
    pub async fn finish(self) -> ProcessMemory {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollup_gives_rss_and_pss() {
        let text = "55d0c-7ffd0 ---p 00000000 00:00 0 [rollup]\nRss:              123456 kB\nPss:               65432 kB\nPss_Anon:          60000 kB\n";
        assert_eq!(parse_rollup(text), Some((123456, 65432)));
        assert_eq!(parse_rollup("Rss: 1 kB\n"), None, "no Pss");
    }

    #[tokio::test]
    async fn this_process_is_sampled_and_pss_is_at_most_rss() {
        let me = std::process::id();
        let Some((rss, pss)) = rss_pss_kib(me) else { panic!("/proc/{me}/smaps_rollup cannot be read") };
        assert!(rss > 0 && pss > 0 && pss <= rss, "rss {rss} KiB, pss {pss} KiB");
        let memory = Sampler::start(None, vec![me]).finish().await;
        assert_eq!(memory.processes, 1);
        assert!(memory.samples <= 1);
        let mut m = ProcessMemory::default();
        m.sample(Some(me), &[me, u32::MAX]);
        assert_eq!(m.samples, 1);
        assert!(
            m.peak_rss_mib >= 2.0 * m.node_rss_mib * 0.99,
            "the aggregator and one node counted; an exited pid skipped"
        );
        assert!(m.peak_pss_mib <= m.peak_rss_mib);
    }
}
