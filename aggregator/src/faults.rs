//! Hooks for simulated faults: points at which the scenario runner's `fd-sim-aggregator` can
//! hold the aggregator, so that a test kills it exactly there. The production `fd-aggregator`
//! passes [`NoFaults`], and nothing in a config can set them (as with `node::Faults`).

/// Points of the aggregator's work where a simulation may act. Every method does nothing by
/// default.
pub trait Faults: Send + Sync + std::fmt::Debug {
    /// Called on the student's thread while round `round`'s checkpoint is half written: its
    /// folder holds the global model, the pool and the metrics but not yet `meta.json`, and
    /// `state.json` still names the round before.
    fn mid_checkpoint(&self, round: u64) {
        let _ = round;
    }
}

/// No faults: what the production binary runs with.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl Faults for NoFaults {}
