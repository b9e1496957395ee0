//! The federated-distillation aggregator.
//!
//! [`Aggregator::start`] validates the whole config before any I/O ([`config`]), then, off the
//! runtime, reads the key, checks the reference set's hash, loads the validation data and
//! restores the last checkpoint ([`checkpoint`]); it hands the global model to its owner thread
//! ([`student`]) and binds the network (`service`). [`Aggregator::run`] drives the rounds (`rounds`):
//! announce → collect validated, signed submissions until everyone answered or declined, or the
//! deadline passed with a quorum (`collect`, [`round`], answered by `serve`) →
//! consensus → distil the global student → send the consensus → checkpoint atomically → one log
//! line. After the last round it writes the global model and the report ([`report`]) and tells
//! every node that the federation is finished. A restart with the same output folder resumes
//! after the last completed round. With `round.cohort`, each round asks only the cohort its seed
//! draws ([`cohort`]), and a member that missed consensus rounds is sent the last one first.
//! Under `weighted_by_samples`, nodes weigh what the roster
//! declares or, failing that, what they report, clipped ([`weights`]). With a `metrics` address in
//! the config, [`metrics`] are served at `http://ADDR/metrics` until the run ends, and with
//! `http.status` the operator's live view ([`status`]: a page at `/`, its data at `/api/status`). An aggregator
//! with no open port listens through a circuit relay, which `fd-aggregator relay` runs ([`relay`]).
//!
//! Simulations can hold the aggregator at points where a test kills it ([`faults`]; the
//! production binary sets none).
//!
//! Setting a federation up: [`reference`] builds the public reference set's file from a user's
//! CSV or IDX file, [`init`] writes a new federation's folder, [`roster_edit`] adds and removes
//! roster entries in place.
//!
//! Output folder layout (a private folder: 0700, its files 0600): `state.json` (the commit
//! point: last completed round),
//! `checkpoints/round-N/` (global model and distillation pool of round N), `metrics.jsonl` and
//! `metrics.csv` (one row per round), `federation.resolved.toml` (the config as run), and at the
//! end `global.bpk`/`global.json`/`global.safetensors`/`global.onnx` and `report.md`.
//!
//! Shutdown, in order: stop announcing rounds → tell the nodes the federation is finished (if it
//! is) → drain the sends in flight → stop the network → stop serving metrics → join the
//! student's thread.
//!
//! Layers: error → weights/cohort → config → faults/metrics/reference/checkpoint/report/status → round → collect → student → init/relay/roster_edit/compress → state → serve → rounds → service.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod cohort;
mod collect;
pub mod compress;
pub mod config;
pub mod error;
pub mod faults;
pub mod init;
pub mod metrics;
pub mod reference;
pub mod relay;
pub mod report;
pub mod roster_edit;
pub mod round;
mod rounds;
mod secure;
mod serve;
mod service;
mod state;
pub mod status;
pub mod student;
pub mod weights;

pub use checkpoint::RoundMetrics;
pub use config::AggregatorConfig;
pub use error::Error;
pub use service::{RunSummary, run};
pub use state::Aggregator;
