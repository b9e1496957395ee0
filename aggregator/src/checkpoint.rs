//! The output folder's crash-safe state: per-round checkpoints (global model and distillation
//! pool) under `checkpoints/round-N/`, the metrics files, and `state.json`, the commit point
//! rewritten last. A crash at any moment leaves the previous commit intact. Blocking: the
//! aggregator calls these from its student's owner thread or `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use learning::fs::atomic_write;
use learning::{BackendKind, Model};
use protocol::ReferenceSetId;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Metrics of one completed round (a line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Round number.
    pub round: u64,
    /// Names of the nodes whose soft labels made the consensus.
    pub participants: Vec<String>,
    /// Bytes received during the round (encoded envelopes).
    pub bytes_in: u64,
    /// Bytes sent during the round.
    pub bytes_out: u64,
    /// Reference samples announced.
    pub samples: usize,
    /// Samples masked out of the consensus.
    pub masked: usize,
    /// Global model accuracy on the validation set, if any.
    pub accuracy: Option<f32>,
    /// Global model NLL on the validation set, if any.
    pub nll: Option<f32>,
    /// Agreement of the global model with the consensus on this round's samples.
    pub agreement: f32,
    /// Wall-clock seconds of the round, announcement to checkpoint.
    pub seconds: f64,
}

/// The commit point of the output folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    completed_round: u64,
    reference_set: String,
}

/// Latest consensus probabilities per reference row: what the global student distils from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Reference row → its latest consensus soft labels.
    pub rows: BTreeMap<u32, Vec<f32>>,
}

/// What a restart finds in the output folder.
#[derive(Debug, Default)]
pub struct Restored {
    /// Last committed round (0: a fresh start).
    pub completed: u64,
    /// The global student of that round.
    pub student: Option<Model>,
    /// The distillation pool of that round.
    pub pool: Pool,
    /// Metrics of rounds 1..=completed.
    pub metrics: Vec<RoundMetrics>,
}

fn corrupt(path: &Path, detail: impl ToString) -> Error {
    Error::Checkpoint { path: path.to_owned(), detail: detail.to_string() }
}

/// The folder of round `round`'s checkpoint.
pub fn round_dir(out: &Path, round: u64) -> PathBuf {
    out.join("checkpoints").join(format!("round-{round}"))
}

/// Reads the last commit of `out`, if any.
pub fn restore(out: &Path, reference: &ReferenceSetId, backend: BackendKind) -> Result<Restored, Error> {
    let state_path = out.join("state.json");
    let Ok(text) = std::fs::read(&state_path) else { return Ok(Restored::default()) };
    let state: State = serde_json::from_slice(&text).map_err(|e| corrupt(&state_path, e))?;
    if state.reference_set != reference.to_hex() {
        return Err(corrupt(&state_path, "the output folder belongs to a run with another reference set"));
    }
    let dir = round_dir(out, state.completed_round);
    let student = Model::load(&dir.join("global"), backend).map_err(|e| corrupt(&dir, e))?;
    let pool_path = dir.join("pool.bin");
    let bytes = std::fs::read(&pool_path).map_err(|e| corrupt(&pool_path, e))?;
    // A local file, not a message: its only cap is its own size.
    let pool: Pool = protocol::codec::from_bytes(&bytes, bytes.len()).map_err(|e| corrupt(&pool_path, e))?;
    let metrics = read_metrics(&out.join("metrics.jsonl"))?.into_iter().filter(|m| m.round <= state.completed_round).collect();
    Ok(Restored { completed: state.completed_round, student: Some(student), pool, metrics })
}

/// Writes round `all.last()`'s checkpoint, then commits it by rewriting `state.json`; keeps the
/// committed round and the one before it.
pub fn save(out: &Path, reference: &ReferenceSetId, student: &Model, pool: &Pool, all: &[RoundMetrics]) -> Result<(), Error> {
    let Some(last) = all.last() else { return Ok(()) };
    let dir = round_dir(out, last.round);
    student.save(&dir.join("global"))?;
    let pool = protocol::codec::to_bytes(pool)?;
    atomic_write(&dir.join("pool.bin"), &pool)?;
    let mut jsonl = String::new();
    for r in all {
        jsonl.push_str(&serde_json::to_string(r).map_err(|e| corrupt(out, e))?);
        jsonl.push('\n');
    }
    atomic_write(&out.join("metrics.jsonl"), jsonl.as_bytes())?;
    atomic_write(&out.join("metrics.csv"), metrics_csv(all).as_bytes())?;
    let state = State { completed_round: last.round, reference_set: reference.to_hex() };
    atomic_write(&out.join("state.json"), &serde_json::to_vec_pretty(&state).map_err(|e| corrupt(out, e))?)?;
    if last.round > 2 {
        let _ = std::fs::remove_dir_all(round_dir(out, last.round - 2));
    }
    Ok(())
}

fn read_metrics(path: &Path) -> Result<Vec<RoundMetrics>, Error> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).map_err(|e| corrupt(path, e))).collect()
}

fn metrics_csv(all: &[RoundMetrics]) -> String {
    let mut s = String::from("round,participants,bytes_in,bytes_out,samples,masked,accuracy,nll,agreement,seconds\n");
    for m in all {
        let opt = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{:.6},{:.3}",
            m.round,
            m.participants.len(),
            m.bytes_in,
            m.bytes_out,
            m.samples,
            m.masked,
            opt(m.accuracy),
            opt(m.nll),
            m.agreement,
            m.seconds
        );
    }
    s
}
