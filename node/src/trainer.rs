//! [`Trainer`]: the node's model and private data, owned by a dedicated thread. The async side
//! sends it work (a round, the final digest, a checkpoint) and awaits the answer; training and
//! checkpoint I/O never run on the runtime, and no one else can reach the model.
//!
//! The arithmetic of a training runs on the process's compute threads ([`compute`]: as many as
//! cores), the owner thread waiting: a thread that multiplies matrices keeps the matrix
//! library's scratch space (gemm's 1 MiB L2 slab) and its allocator's caches for as long as it
//! lives, so a thousand nodes simulated in one process would each keep a megabyte after their
//! first training, and train all at once at the federation's end. On a few shared threads
//! an idle node holds its model and rows, and at most as many trainings as cores run at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use learning::Model;
use learning::data::Dataset;
use learning::dp::DpSgd;
use net::owner::{Owner, Thread};
use protocol::seed::{Stream, derive};
use protocol::{ReferenceSet, RoundAnnouncement};

use crate::budget::Budget;
use crate::config::DigestMode;
use crate::error::Error;
use crate::faults::Faults;
use crate::local::{self, Answer, Settings, Teacher};

/// Runs `f` on the process's compute threads (one a core, shared by every trainer of the
/// process) and waits for it. A network with dropout holds burn's process-wide generator for its
/// whole run (`learning::backend`): a compute thread waiting inside such a run may take up
/// another trainer's work, which would then wait on that lock forever, so `f` runs on the
/// calling thread instead.
fn compute<R: Send>(uses_rng: bool, f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        // As many threads as rayon's global pool (the cores, or RAYON_NUM_THREADS): burn splits
        // its parallel work by that count, so the figures stay those of the global pool's.
        rayon::ThreadPoolBuilder::new().thread_name(|i| format!("node-compute-{i}")).build().ok()
    });
    match pool {
        Some(pool) if !uses_rng => pool.install(f),
        _ => f(),
    }
}

struct State {
    model: Model,
    data: Arc<Dataset>,
    settings: Settings,
    checkpoint: PathBuf,
    budget: Option<Budget>,
    can_train: Arc<AtomicBool>,
    privacy: Privacy,
}

/// ε spent of the privacy budget, as the trainer's thread last recorded it: readable from any
/// thread without asking the trainer (the live view reads it).
#[derive(Clone, Debug, Default)]
pub struct Privacy {
    /// The budget (ε, δ), if there is one.
    pub budget: Option<(f64, f64)>,
    spent: Arc<AtomicU64>,
}

impl Privacy {
    /// ε spent so far (0 without a budget).
    pub fn spent(&self) -> f64 {
        f64::from_bits(self.spent.load(Ordering::Acquire))
    }

    fn record(&self, budget: &Budget) {
        if let Ok(e) = budget.spent() {
            self.spent.store(e.to_bits(), Ordering::Release);
        }
    }
}

impl State {
    fn save(&self) -> Result<(), Error> {
        self.model.save(&self.checkpoint)?;
        Ok(())
    }

    /// Pays for one private training (recorded before it runs) and returns its DP-SGD settings;
    /// `None` without a privacy budget.
    fn spend(&mut self, round: Option<u64>) -> Result<Option<DpSgd>, Error> {
        let Some(budget) = &mut self.budget else { return Ok(None) };
        let paid = budget.spend(round);
        self.can_train.store(budget.can_train(), Ordering::Release);
        self.privacy.record(budget);
        paid.map(Some)
    }
}

/// Handle to the thread that owns the node's model. Clonable; the thread ends with the last
/// handle, after the work already queued.
#[derive(Clone, Debug)]
pub struct Trainer {
    owner: Owner<State>,
    classes: usize,
    can_train: Arc<AtomicBool>,
    privacy: Privacy,
}

impl Trainer {
    /// Moves the model and the private data to their own thread. `checkpoint` is where the
    /// model is saved (atomically) after every round and at the end.
    /// With a privacy `budget`, every private training is paid for first, and refused once
    /// the budget cannot pay. The thread is joined once every handle is dropped.
    pub fn start(
        model: Model,
        data: Arc<Dataset>,
        settings: Settings,
        checkpoint: PathBuf,
        budget: Option<Budget>,
    ) -> Result<(Self, Thread), Error> {
        let classes = model.classes;
        let can_train = Arc::new(AtomicBool::new(budget.as_ref().is_none_or(Budget::can_train)));
        let privacy = Privacy { budget: budget.as_ref().map(Budget::epsilon), ..Default::default() };
        if let Some(b) = &budget {
            privacy.record(b);
        }
        let state = State {
            model,
            data,
            settings,
            checkpoint: checkpoint.clone(),
            budget,
            can_train: can_train.clone(),
            privacy: privacy.clone(),
        };
        let (owner, thread) =
            Owner::spawn("node-trainer", state, 4).map_err(|source| Error::Io { path: checkpoint, source })?;
        Ok((Self { owner, classes, can_train, privacy }, thread))
    }

    /// Whether the privacy budget (if any) can pay for one more training.
    pub fn can_train(&self) -> bool {
        self.can_train.load(Ordering::Acquire)
    }

    /// ε spent of the privacy budget, readable at any time.
    pub fn privacy(&self) -> Privacy {
        self.privacy.clone()
    }

    /// Classes the model predicts.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Runs [`local::local_round`] for `ann`, then checkpoints the model.
    pub async fn round(
        &self,
        ann: RoundAnnouncement,
        reference: Arc<ReferenceSet>,
        teacher: Option<Arc<Teacher>>,
        faults: Arc<dyn Faults>,
    ) -> Result<Answer, Error> {
        self.owner
            .call(move |s| {
                let round = ann.round;
                let tamper = |p: &mut [f32], c: usize| faults.tamper(round, p, c);
                let dp = s.spend(Some(round))?;
                let labels = compute(s.model.architecture.uses_rng(), || {
                    local::local_round(
                        &mut s.model,
                        &s.data,
                        teacher.as_deref(),
                        &ann,
                        &reference,
                        &s.settings,
                        dp.as_ref(),
                        &tamper,
                    )
                })?;
                s.save()?;
                Ok(labels)
            })
            .await?
    }

    /// At the end of the federation: learns once more with the last consensus (see
    /// [`local::learn`]; in `sequential` mode, only its digest step), so that the model the data
    /// holder keeps has learnt from it, then checkpoints.
    pub async fn finish(&self, last: Option<(Arc<ReferenceSet>, Arc<Teacher>, u64)>) -> Result<(), Error> {
        self.owner
            .call(move |s| {
                if let Some((reference, teacher, round)) = last {
                    let seed = derive(s.settings.seed, Stream::NodeTraining, round + 1);
                    // The joint final training reads private rows: it is paid for, and when the
                    // budget cannot pay, the node digests the consensus on public rows alone.
                    let joint =
                        s.settings.digest.mode == DigestMode::Joint && s.budget.as_ref().is_none_or(Budget::can_train);
                    let uses_rng = s.model.architecture.uses_rng();
                    if joint {
                        let dp = s.spend(None)?;
                        compute(uses_rng, || {
                            local::learn(
                                &mut s.model,
                                &s.data,
                                Some(&teacher),
                                &reference,
                                &s.settings,
                                dp.as_ref(),
                                seed,
                            )
                        })?;
                    } else {
                        compute(uses_rng, || local::digest(&mut s.model, &reference, &teacher, &s.settings, seed))?;
                    }
                }
                s.save()
            })
            .await?
    }

    /// Saves the model now.
    pub async fn checkpoint(&self) -> Result<(), Error> {
        self.owner.call(|s| s.save()).await?
    }
}
