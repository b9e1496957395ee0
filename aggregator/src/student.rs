//! [`Student`]: the global model and its distillation pool, owned by a dedicated thread.
//! Distillation, evaluation, checkpoints and the end-of-run exports run there, never on the
//! async runtime.

use std::path::PathBuf;
use std::sync::Arc;

use learning::consensus::Combined;
use learning::data::Dataset;
use learning::eval;
use learning::train::{self, DistillConfig, DistillSet};
use learning::{Architecture, BackendKind, Model};
use net::owner::Owner;
use protocol::seed::{Stream, derive};
use protocol::{FederationId, ReferenceSet, ReferenceSetId};

use crate::checkpoint::{self, Pool, Restored, RoundMetrics};
use crate::{Error, report};

/// What the student thread needs to know, fixed for the run.
#[derive(Clone, Debug)]
pub struct StudentSetup {
    /// Architecture of a fresh student.
    pub architecture: Architecture,
    /// Continue from the previous round's student.
    pub warm_start: bool,
    /// Distillation settings (the temperature is the round's).
    pub distill: DistillConfig,
    /// Temperature of the soft labels.
    pub temperature: f32,
    /// Classes.
    pub classes: usize,
    /// Backend.
    pub backend: BackendKind,
    /// Base seed.
    pub seed: u64,
    /// Output folder.
    pub output: PathBuf,
    /// Federation (for the report).
    pub federation: FederationId,
    /// Simulated faults (none but in simulations).
    pub faults: Arc<dyn crate::faults::Faults>,
}

struct State {
    setup: StudentSetup,
    model: Option<Model>,
    pool: Pool,
    reference: Arc<ReferenceSet>,
    reference_id: ReferenceSetId,
    validation: Option<Arc<Dataset>>,
}

/// How the student did after a round's distillation.
#[derive(Clone, Debug, Default)]
pub struct Learnt {
    /// Agreement of the student's argmax with the round's consensus.
    pub agreement: f32,
    /// Validation accuracy and NLL, if there is a validation set.
    pub validation: Option<eval::Metrics>,
    /// The student's soft labels at the round's temperature on the round's samples.
    pub labels: Vec<f32>,
}

/// Handle to the student's owner thread.
#[derive(Clone, Debug)]
pub struct Student {
    owner: Owner<State>,
}

impl Student {
    /// Starts the owner thread with what a restart restored.
    pub fn start(
        setup: StudentSetup,
        restored: Restored,
        reference: Arc<ReferenceSet>,
        reference_id: ReferenceSetId,
        validation: Option<Arc<Dataset>>,
    ) -> Result<Self, Error> {
        let output = setup.output.clone();
        let state = State { setup, model: restored.student, pool: restored.pool, reference, reference_id, validation };
        let (owner, _thread) =
            Owner::spawn("global-student", state, 4).map_err(|source| Error::Io { path: output, source })?;
        Ok(Self { owner })
    }

    /// Adds the round's consensus to the pool and distils the student on the whole pool.
    pub async fn learn(&self, round: u64, rows: Vec<u32>, combined: Combined) -> Result<Learnt, Error> {
        self.owner.call(move |s| s.learn(round, &rows, &combined)).await?
    }

    /// Checkpoints the student and the pool with the metrics of every round so far, and commits.
    pub async fn checkpoint(&self, metrics: Vec<RoundMetrics>) -> Result<(), Error> {
        self.owner
            .call(move |s| match &s.model {
                Some(m) => checkpoint::save_with(
                    &s.setup.output,
                    &s.reference_id,
                    m,
                    &s.pool,
                    &metrics,
                    s.setup.faults.as_ref(),
                ),
                None => Ok(()),
            })
            .await?
    }

    /// Writes the end-of-run outputs: the global model (burnpack, safetensors, ONNX) and the report.
    pub async fn finish(&self, metrics: Vec<RoundMetrics>) -> Result<(), Error> {
        self.owner
            .call(move |s| match &s.model {
                Some(m) => report::write(&s.setup.output, &s.setup.federation, m, &metrics),
                None => Ok(()),
            })
            .await?
    }
}

impl State {
    fn learn(&mut self, round: u64, rows: &[u32], combined: &Combined) -> Result<Learnt, Error> {
        let classes = self.setup.classes;
        for (i, &r) in rows.iter().enumerate() {
            if combined.weights[i] > 0.0 {
                self.pool.rows.insert(r, combined.probs[i * classes..(i + 1) * classes].to_vec());
            }
        }
        let seed = derive(self.setup.seed, Stream::Distillation, round);
        let previous = if self.setup.warm_start { self.model.take() } else { None };
        let mut student = match previous {
            Some(m) => m,
            None => Model::new(
                &self.setup.architecture,
                self.reference.features,
                classes,
                self.setup.backend,
                derive(self.setup.seed, Stream::Init, round),
            )?,
        };
        let inputs: Vec<f32> =
            self.pool.rows.keys().flat_map(|&r| self.reference.row(r as usize).iter().copied()).collect();
        let targets: Vec<f32> = self.pool.rows.values().flatten().copied().collect();
        let cfg = DistillConfig { temperature: self.setup.temperature, ..self.setup.distill.clone() };
        if !self.pool.rows.is_empty() {
            train::distill(
                &mut student,
                DistillSet { inputs: &inputs, targets: &targets, weights: None, labels: None },
                &cfg,
                seed,
            )?;
        }
        let round_inputs: Vec<f32> =
            rows.iter().flat_map(|&r| self.reference.row(r as usize).iter().copied()).collect();
        let labels = student.soft_labels(&round_inputs, self.setup.temperature, 256)?;
        let agreement = eval::agreement(&labels, &combined.probs, classes);
        let validation = match &self.validation {
            Some(v) => Some(eval::evaluate(&student.soft_labels(&v.features, 1.0, 256)?, &v.labels, classes)),
            None => None,
        };
        self.model = Some(student);
        Ok(Learnt { agreement, validation, labels })
    }
}
