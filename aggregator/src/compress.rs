//! `fd-aggregator compress`: the global model distilled into smaller students on the public
//! reference set this aggregator holds (see [`learning::compress`]), scored on its validation
//! set; the consensus of its last checkpoint for the multi-teacher method.

use std::path::{Path, PathBuf};

use learning::compress::{Compressed, Job, PublicSet, TestSet};
use learning::{BackendKind, Model};

use crate::config::AggregatorConfig;
use crate::error::Error;

/// What `compress` is asked, validated.
#[derive(Clone, Debug)]
pub struct Request {
    /// The federation's config: its reference set, validation set and output folder.
    pub config: AggregatorConfig,
    /// The teacher's weights (`.bpk`, its `.json` spec beside it).
    pub teacher: PathBuf,
    /// The public set's labels, one a line in the reference set's order, if known.
    pub public_labels: Option<PathBuf>,
    /// What to compress into, and how.
    pub job: Job,
    /// Output folder.
    pub out: PathBuf,
    /// Seed of the students.
    pub seed: u64,
}

/// Reads a file of labels, one a line.
fn read_labels(path: &Path, classes: usize) -> Result<Vec<u32>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_owned(), source: e })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| match l.trim().parse::<u32>() {
            Ok(y) if (y as usize) < classes => Ok(y),
            _ => Err(Error::config("public_labels", format!("line {}: `{l}` is not a class below {classes}", i + 1))),
        })
        .collect()
}

/// Loads the teacher, the public rows (with their labels and the last consensus, if any) and
/// the validation set, then runs the job.
pub fn run(r: &Request) -> Result<Compressed, Error> {
    let backend: BackendKind = r.config.backend;
    let teacher = Model::load(&r.teacher.with_extension(""), backend)?;
    let (reference, id) = crate::reference::read(&r.config.reference.path)?;
    teacher.check_data(reference.features, teacher.classes)?;
    let labels = r.public_labels.as_deref().map(|p| read_labels(p, teacher.classes)).transpose()?;
    if labels.as_ref().is_some_and(|l| l.len() != reference.samples) {
        return Err(Error::config("public_labels", format!("not {} labels, one a reference row", reference.samples)));
    }
    let test = r.config.validation.as_ref().ok_or_else(|| {
        Error::config("validation", "compress scores every model on the validation set: the config has none")
    })?;
    let test = test.load().map_err(|e| Error::config("validation", e))?;
    teacher.check_data(test.dim, test.classes)?;
    let restored = crate::checkpoint::restore(&r.config.output, &id, backend)?;
    let consensus = (!restored.pool.rows.is_empty()).then_some(&restored.pool.rows);
    let public = PublicSet { inputs: &reference.values, labels: labels.as_deref(), consensus };
    let test = TestSet { inputs: &test.features, labels: &test.labels };
    Ok(learning::compress::compress(&teacher, &r.job, &public, test, &r.out, r.seed)?)
}
