//! Everything learning: data, models, training, distillation, consensus and evaluation.
#![deny(missing_docs)]

pub mod data;
