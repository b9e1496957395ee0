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
use net::owner::{Owner, Thread};
use protocol::seed::{Stream, derive};
use protocol::{FederationId, ReferenceSet, ReferenceSetId};

use crate::checkpoint::{self, Pool, Restored, RoundMetrics};
use crate::error::Error;
use crate::report;

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
    /// The global student: the last round's, or (before the first) the fresh one it starts from.
    model: Model,
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
    /// Starts the owner thread with what a restart restored (on a fresh start, a fresh student
    /// seeded for the first round to run). The thread is joined once every handle is dropped.
    pub fn start(
        setup: StudentSetup,
        restored: Restored,
        reference: Arc<ReferenceSet>,
        reference_id: ReferenceSetId,
        validation: Option<Arc<Dataset>>,
    ) -> Result<(Self, Thread), Error> {
        let model = match restored.student {
            Some(m) => m,
            None => fresh(&setup, reference.features, restored.completed + 1)?,
        };
        let output = setup.output.clone();
        let state = State { setup, model, pool: restored.pool, reference, reference_id, validation };
        let (owner, thread) =
            Owner::spawn("global-student", state, 4).map_err(|source| Error::Io { path: output, source })?;
        Ok((Self { owner }, thread))
    }

    /// Adds the round's consensus to the pool and distils the student on the whole pool. On a
    /// failure, the student and the pool stay as they were.
    pub async fn learn(&self, round: u64, rows: Vec<u32>, combined: Arc<Combined>) -> Result<Learnt, Error> {
        self.owner.call(move |s| s.learn(round, &rows, &combined)).await?
    }

    /// Checkpoints the student, the pool and the consensus sent after the round with the
    /// metrics of every round so far, and commits.
    pub async fn checkpoint(
        &self,
        metrics: Vec<RoundMetrics>,
        consensus: Option<Arc<protocol::Consensus>>,
    ) -> Result<(), Error> {
        self.owner
            .call(move |s| {
                checkpoint::save_with(
                    &s.setup.output,
                    &s.reference_id,
                    &s.model,
                    &s.pool,
                    consensus.as_deref(),
                    &metrics,
                    s.setup.faults.as_ref(),
                )
            })
            .await?
    }

    /// Writes the end-of-run outputs: the global model (burnpack, safetensors, ONNX) and the report.
    pub async fn finish(&self, metrics: Vec<RoundMetrics>) -> Result<(), Error> {
        self.owner.call(move |s| report::write(&s.setup.output, &s.setup.federation, &s.model, &metrics)).await?
    }
}

/// A fresh student, seeded for `round`.
fn fresh(setup: &StudentSetup, features: usize, round: u64) -> Result<Model, Error> {
    let seed = derive(setup.seed, Stream::Init, round);
    Ok(Model::new(&setup.architecture, features, setup.classes, setup.backend, seed)?)
}

impl State {
    /// Distils round `round`'s student from the pool with `combined` added; commits the student
    /// and the pool only if it works.
    fn learn(&mut self, round: u64, rows: &[u32], combined: &Combined) -> Result<Learnt, Error> {
        let classes = self.setup.classes;
        let mut pool = self.pool.clone();
        for (i, &r) in rows.iter().enumerate() {
            if combined.weights[i] > 0.0 {
                pool.rows.insert(r, combined.probs[i * classes..(i + 1) * classes].to_vec());
            }
        }
        let mut student = match self.setup.warm_start {
            true => self.model.clone(),
            false => fresh(&self.setup, self.reference.features, round)?,
        };
        let inputs: Vec<f32> = pool.rows.keys().flat_map(|&r| self.reference.row(r as usize).iter().copied()).collect();
        let targets: Vec<f32> = pool.rows.values().flatten().copied().collect();
        let cfg = DistillConfig { temperature: self.setup.temperature, ..self.setup.distill.clone() };
        if !pool.rows.is_empty() {
            let seed = derive(self.setup.seed, Stream::Distillation, round);
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
        self.model = student;
        self.pool = pool;
        Ok(Learnt { agreement, validation, labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::train::TrainConfig;

    fn state(warm_start: bool) -> State {
        let setup = StudentSetup {
            architecture: Architecture::Mlp { hidden: vec![4], dropout: 0.0 },
            warm_start,
            distill: DistillConfig { train: TrainConfig { epochs: 2, ..Default::default() }, ..Default::default() },
            temperature: 1.0,
            classes: 2,
            backend: BackendKind::default(),
            seed: 1,
            output: PathBuf::from("unused"),
            federation: FederationId::new("t").unwrap(),
            faults: Arc::new(crate::faults::NoFaults),
        };
        let reference = Arc::new(ReferenceSet::new(4, 3, (0..12).map(|v| v as f32 / 12.0).collect()).unwrap());
        let model = fresh(&setup, reference.features, 1).unwrap();
        State {
            setup,
            model,
            pool: Pool::default(),
            reference,
            reference_id: ReferenceSetId([1; 32]),
            validation: None,
        }
    }

    fn consensus(p: f32) -> Combined {
        Combined { probs: vec![p, 1.0 - p, 1.0 - p, p], weights: vec![1.0, 1.0], counts: vec![3, 3], classes: 2 }
    }

    #[test]
    fn a_failed_distillation_keeps_the_previous_student_and_pool() {
        for warm_start in [true, false] {
            let mut s = state(warm_start);
            s.learn(1, &[0, 1], &consensus(0.9)).unwrap();
            let pool = s.pool.clone();
            let probe = s.reference.values.clone();
            let before = s.model.soft_labels(&probe, 1.0, 256).unwrap();
            let poisoned = Combined { probs: vec![f32::NAN, 0.5, 0.5, 0.5], ..consensus(0.9) };
            assert!(s.learn(2, &[2, 3], &poisoned).is_err(), "a non-finite consensus cannot be distilled");
            assert_eq!(s.pool, pool, "warm start {warm_start}: the pool is as it was");
            assert_eq!(
                s.model.soft_labels(&probe, 1.0, 256).unwrap(),
                before,
                "warm start {warm_start}: the student too"
            );
            s.learn(2, &[2, 3], &consensus(0.8)).unwrap();
            assert_eq!(s.pool.rows.len(), 4, "and the next round's consensus is learnt");
            assert_ne!(s.model.soft_labels(&probe, 1.0, 256).unwrap(), before);
        }
    }
}
