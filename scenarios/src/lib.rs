//! Simulated federations on one machine or a Slurm cluster: scenarios and their presets, the run
//! itself with real libp2p peers in one process, as real processes or as a Slurm job, the
//! baselines beside it, the reports, and jobs over several seeds, privacy budgets or ablation
//! variants.
//!
//! Layers (each module uses only those before it):
//! `layout/provenance/faults → spec → presets → setup → fedavg → results → baselines → plots →
//! report → federate → run → seeds → sweep/ablation → outcome → table/job`; `flood` stands alone.
//!
//! - [`layout`]: every path of a run folder; [`provenance`]: the command, day and commit of a run;
//!   [`faults`]: simulated faults, which production nodes cannot set.
//! - [`spec`]: scenario files ([`Scenario`], ablation variants); [`presets`]: the built-in ones.
//! - [`setup`]: a scenario's files on disk; [`baselines`] (with federated averaging in
//!   [`fedavg`]); [`results`], [`plots`] and [`report`]: what a run writes.
//! - [`federate`]: the federation in one process, as processes or as a Slurm job; [`run`]: one
//!   run end to end (or a Slurm job exported, then its outputs collected).
//! - [`seeds`], [`sweep`], [`ablation`]: runs over several seeds, privacy budgets, variants;
//!   [`outcome`]: what any of them leaves in `results.json`; [`table`]: the table made from it;
//!   [`job`]: what `fd-scenarios run` runs.
//! - [`flood`]: the flooder of the flood test (`fd-flood`): a roster member and a stranger
//!   hammering an aggregator.
#![deny(missing_docs)]

pub mod ablation;
pub mod baselines;
pub mod faults;
pub mod fedavg;
pub mod federate;
pub mod flood;
pub mod job;
pub mod layout;
pub mod outcome;
pub mod plots;
pub mod presets;
pub mod provenance;
pub mod report;
pub mod results;
pub mod run;
pub mod seeds;
pub mod setup;
pub mod spec;
pub mod sweep;
pub mod table;

pub use spec::Scenario;
