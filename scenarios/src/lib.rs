//! Simulated federations on one machine: scenario files and presets ([`spec`], [`presets`]),
//! their files on disk ([`setup`]), the run itself with real libp2p peers in one process or as
//! real processes ([`run`]; the process transport in `processes`, what a run reports in
//! `results`), simulated faults ([`faults`], which production nodes cannot set),
//! the baselines ([`baselines`], with federated averaging in [`fedavg`]), the outputs
//! ([`report`]), runs over several seeds ([`seeds`]), privacy sweeps ([`sweep`]) and ablations
//! ([`ablation`]). [`flood`] is the flooder of the flood test (`fd-flood`): a roster member and a
//! stranger hammering an aggregator.
#![deny(missing_docs)]

pub mod ablation;
pub mod baselines;
pub mod faults;
pub mod fedavg;
pub mod flood;
pub mod plots;
pub mod presets;
mod processes;
pub mod report;
mod results;
pub mod run;
pub mod seeds;
pub mod setup;
pub mod spec;
pub mod sweep;

pub use spec::Scenario;
