//! Which CPU backend runs the tensors, and its random generator.
//!
//! burn's generator (parameter initialisation, dropout) is process-wide per backend. Whoever
//! seeds it and draws from it holds the one lock of this module (`BackendKind::hold_rng`), so
//! that concurrent nodes in one process stay reproducible.

use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which CPU backend runs the tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's newer pure-Rust CPU backend (recommended by burn).
    #[default]
    Flex,
    /// burn-ndarray.
    Ndarray,
}

impl BackendKind {
    /// The inference device of this backend.
    pub fn device(self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[allow(deprecated)]
            BackendKind::Ndarray => Device::ndarray(),
        }
    }

    /// Seeds the backend's random generator (parameter initialisation, dropout).
    ///
    /// The generator is process-wide per backend: runs that must be reproducible initialise and
    /// train models one at a time.
    pub fn seed(self, seed: u64) {
        self.device().seed(seed);
    }

    /// Takes the process-wide generator and seeds it: it is the caller's until the guard drops.
    pub(crate) fn hold_rng(self, seed: u64) -> RngGuard {
        let guard = BACKEND_RNG.lock().unwrap_or_else(|p| p.into_inner());
        self.seed(seed);
        guard
    }
}

/// Held while burn's generator is seeded and drawn from (see [`BackendKind::hold_rng`]).
pub(crate) type RngGuard = MutexGuard<'static, ()>;

static BACKEND_RNG: Mutex<()> = Mutex::new(());
