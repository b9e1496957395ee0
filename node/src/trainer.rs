//! [`Trainer`]: the node's model and private data, owned by a dedicated thread. The async side
//! sends it work (a round, the final digest, a checkpoint) and awaits the answer; training and
//! checkpoint I/O never run on the runtime, and no one else can reach the model.

use std::path::PathBuf;
use std::sync::Arc;

use learning::data::Dataset;
use learning::Model;
use net::owner::Owner;
use protocol::seed::{derive, Stream};
use protocol::{ReferenceSet, RoundAnnouncement, SoftLabels};

use crate::config::DigestMode;
use crate::faults::Faults;
use crate::local::{self, Settings, Teacher};
use crate::Error;

struct State {
    model: Model,
    data: Arc<Dataset>,
    settings: Settings,
    checkpoint: PathBuf,
}

impl State {
    fn save(&self) -> Result<(), Error> {
        self.model.save(&self.checkpoint)?;
        Ok(())
    }
}

/// Handle to the thread that owns the node's model. Clonable; the thread ends with the last
/// handle, after the work already queued.
#[derive(Clone, Debug)]
pub struct Trainer {
    owner: Owner<State>,
    classes: usize,
}

impl Trainer {
    /// Moves the model and the private data to their own thread. `checkpoint` is where the
    /// model is saved (atomically) after every round and at the end.
    pub fn start(model: Model, data: Arc<Dataset>, settings: Settings, checkpoint: PathBuf) -> Result<Self, Error> {
        let classes = model.classes;
        let state = State { model, data, settings, checkpoint: checkpoint.clone() };
        let (owner, _thread) = Owner::spawn("node-trainer", state, 4).map_err(|source| Error::Io { path: checkpoint, source })?;
        Ok(Self { owner, classes })
    }

    /// Classes the model predicts.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Runs [`local::local_round`] for `ann`, then checkpoints the model.
    pub async fn round(&self, ann: RoundAnnouncement, reference: Arc<ReferenceSet>, teacher: Option<Arc<Teacher>>, faults: Arc<dyn Faults>) -> Result<SoftLabels, Error> {
        self.owner
            .call(move |s| {
                let round = ann.round;
                let tamper = |p: &mut [f32], c: usize| faults.tamper(round, p, c);
                let labels = local::local_round(&mut s.model, &s.data, teacher.as_deref(), &ann, &reference, &s.settings, &tamper)?;
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
                    match s.settings.digest.mode {
                        DigestMode::Joint => local::learn(&mut s.model, &s.data, Some(&teacher), &reference, &s.settings, seed)?,
                        DigestMode::Sequential => local::digest(&mut s.model, &reference, &teacher, &s.settings, seed)?,
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
