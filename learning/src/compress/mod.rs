//! The global model compressed for the edge: students smaller than the teacher (or, born-again,
//! of its size) distilled on the public rows the aggregator holds, by the methods of
//! [`Method`], exported, optionally with int8 weights, and measured.
//!
//! Layers: `config → loss → fit → quant → measure → run`.
//!
//! - `config`: [`Method`] and [`CompressConfig`].
//! - `loss`: the feature terms (FitNets' hint, attention transfer, CRD's InfoNCE); the logit
//!   term is [`crate::loss::distill_loss`].
//! - `fit`: one student's training loop, its optimiser stepping the student with the method's
//!   auxiliary layers (regressor, projection heads).
//! - [`quant`]: int8 weights, per tensor.
//! - [`measure`]: the analysis of a model: accuracy, size, latency, memory, energy.
//! - `run`: a [`Job`] end to end ([`compress`]).

mod config;
mod fit;
pub mod loss;
pub mod measure;
pub mod quant;
mod run;

pub use config::{CompressConfig, Method, parse_architecture};
pub use fit::PublicSet;
pub use measure::{Analysis, EnergyMeter, EnergySource};
pub use run::{Compressed, Job, TestSet, compress};
