//! The output folder's crash-safe state: per-round checkpoints (global model, distillation pool,
//! the consensus sent to the nodes, the metrics so far, and `meta.json` written last) under
//! `checkpoints/round-N/`, the metrics
//! files, and `state.json`, the commit point rewritten last. A crash at any moment leaves the
//! previous commit intact. A checkpoint that fails part-way (disk full, too many open files)
//! leaves the last good one as the commit point. On restore, a committed round whose files do
//! not load falls back to the round before it, and a corrupt or missing `state.json` to the
//! newest complete checkpoint folder. Blocking: the aggregator calls these from its student's
//! owner thread or `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use learning::fs::atomic_write;
use learning::{BackendKind, Model};
use protocol::{Consensus, ReferenceSetId};
use serde::{Deserialize, Serialize};

use crate::error::Error;

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
    /// Abstentions: over the samples, participants minus the nodes that contributed.
    #[serde(default)]
    pub abstentions: u64,
    /// Global model accuracy on the validation set, if any.
    pub accuracy: Option<f32>,
    /// Global model NLL on the validation set, if any.
    pub nll: Option<f32>,
    /// Agreement of the global model with the consensus on this round's samples.
    pub agreement: f32,
    /// Wall-clock seconds of the round, announcement to checkpoint.
    pub seconds: f64,
    /// With `round.cohort`: the names of the roster members drawn for the round, in roster
    /// order (empty without a cohort: every member was asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohort: Vec<String>,
}

/// The commit point of the output folder; each checkpoint folder holds its own copy
/// (`meta.json`), written after everything else in it.
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
    /// The consensus sent after that round: nodes of a later cohort that missed it learn it
    /// before their announcement (absent in checkpoints written before it was kept).
    pub consensus: Option<Consensus>,
}

fn corrupt(path: &Path, detail: impl ToString) -> Error {
    Error::Checkpoint { path: path.to_owned(), detail: detail.to_string() }
}

/// The folder of round `round`'s checkpoint.
pub fn round_dir(out: &Path, round: u64) -> PathBuf {
    out.join("checkpoints").join(format!("round-{round}"))
}

/// Rounds that have a checkpoint folder, newest first.
fn checkpoint_rounds(out: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else { return Vec::new() };
    let mut rounds: Vec<u64> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_type().ok()?.is_dir().then_some(())?;
            e.file_name().to_str()?.strip_prefix("round-")?.parse().ok()
        })
        .collect();
    rounds.sort_unstable_by(|a, b| b.cmp(a));
    rounds
}

fn read_state(path: &Path) -> Result<State, Error> {
    let text = std::fs::read(path).map_err(|e| corrupt(path, e))?;
    serde_json::from_slice(&text).map_err(|e| corrupt(path, e))
}

/// Loads the checkpoint of `round`, checking that it is complete and of this reference set.
fn load_round(out: &Path, round: u64, reference: &ReferenceSetId, backend: BackendKind) -> Result<Restored, Error> {
    let dir = round_dir(out, round);
    let meta_path = dir.join("meta.json");
    let meta = read_state(&meta_path)?;
    if meta.completed_round != round || meta.reference_set != reference.to_hex() {
        return Err(corrupt(&meta_path, "not this round's or this reference set's checkpoint"));
    }
    let student = Model::load(&dir.join("global"), backend).map_err(|e| corrupt(&dir, e))?;
    let pool_path = dir.join("pool.bin");
    let bytes = std::fs::read(&pool_path).map_err(|e| corrupt(&pool_path, e))?;
    let pool: Pool = protocol::codec::from_file_bytes(&bytes).map_err(|e| corrupt(&pool_path, e))?;
    let metrics: Vec<RoundMetrics> =
        read_metrics(&dir.join("metrics.jsonl"))?.into_iter().filter(|m| m.round <= round).collect();
    if metrics.last().map(|m| m.round) != Some(round) {
        return Err(corrupt(&dir, format!("its metrics do not reach round {round}")));
    }
    let consensus_path = dir.join(CONSENSUS_FILE);
    let consensus = match std::fs::read(&consensus_path) {
        Ok(bytes) => {
            let c: Consensus = protocol::codec::from_file_bytes(&bytes).map_err(|e| corrupt(&consensus_path, e))?;
            if c.round != round {
                return Err(corrupt(&consensus_path, format!("the consensus of round {}, not {round}", c.round)));
            }
            Some(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(corrupt(&consensus_path, e)),
    };
    Ok(Restored { completed: round, student: Some(student), pool, metrics, consensus })
}

/// Reads the last commit of `out`, if any. If the committed round's files do not load, the
/// round before it is used (its checkpoint is kept for this); if `state.json` itself is corrupt
/// or gone while checkpoints exist, the newest complete one. Each fallback is logged.
pub fn restore(out: &Path, reference: &ReferenceSetId, backend: BackendKind) -> Result<Restored, Error> {
    let state_path = out.join("state.json");
    let available = checkpoint_rounds(out);
    let candidates: Vec<u64> = match read_state(&state_path) {
        Ok(state) => {
            if state.reference_set != reference.to_hex() {
                return Err(corrupt(&state_path, "the output folder belongs to a run with another reference set"));
            }
            available.into_iter().filter(|&r| r <= state.completed_round).collect()
        }
        Err(_) if !state_path.exists() && available.is_empty() => return Ok(Restored::default()),
        Err(e) => {
            tracing::warn!(error = %e, "state.json cannot be read; looking for the newest complete checkpoint");
            available
        }
    };
    let mut last_error = None;
    for round in candidates {
        match load_round(out, round, reference, backend) {
            Ok(restored) => {
                if let Some(e) = &last_error {
                    tracing::warn!(round, error = %e, "a newer checkpoint does not load; resuming from an earlier one");
                }
                return Ok(restored);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| corrupt(&state_path, "no checkpoint folder of the committed round or an earlier one")))
}

/// The file of a checkpoint folder that holds the consensus sent after its round.
const CONSENSUS_FILE: &str = "consensus.bin";

/// Writes round `all.last()`'s checkpoint, then commits it by rewriting `state.json`; keeps the
/// committed round and the newest complete one before it. A failure leaves the previous commit
/// in force.
pub fn save(
    out: &Path,
    reference: &ReferenceSetId,
    student: &Model,
    pool: &Pool,
    all: &[RoundMetrics],
) -> Result<(), Error> {
    save_with(out, reference, student, pool, None, all, &crate::faults::NoFaults)
}

/// [`save`] with the consensus sent after the round, calling `faults` half-way
/// ([`crate::faults::Faults::mid_checkpoint`]).
pub fn save_with(
    out: &Path,
    reference: &ReferenceSetId,
    student: &Model,
    pool: &Pool,
    consensus: Option<&Consensus>,
    all: &[RoundMetrics],
    faults: &dyn crate::faults::Faults,
) -> Result<(), Error> {
    let Some(last) = all.last() else { return Ok(()) };
    let dir = round_dir(out, last.round);
    // A folder left by an earlier attempt (or a crash) is written over; its meta.json goes
    // first, so that it cannot pass for complete while it is being rewritten.
    match std::fs::remove_file(dir.join("meta.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Io { path: dir.join("meta.json"), source: e });
        }
        _ => {}
    }
    student.save(&dir.join("global"))?;
    let pool = protocol::codec::to_file_bytes(pool)?;
    atomic_write(&dir.join("pool.bin"), &pool)?;
    match consensus {
        Some(c) => atomic_write(&dir.join(CONSENSUS_FILE), &protocol::codec::to_file_bytes(c)?)?,
        None => match std::fs::remove_file(dir.join(CONSENSUS_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io { path: dir.join(CONSENSUS_FILE), source: e });
            }
            _ => {}
        },
    }
    let mut jsonl = String::new();
    for r in all {
        jsonl.push_str(&serde_json::to_string(r).map_err(|e| corrupt(out, e))?);
        jsonl.push('\n');
    }
    atomic_write(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    faults.mid_checkpoint(last.round);
    let state = serde_json::to_vec_pretty(&State { completed_round: last.round, reference_set: reference.to_hex() })
        .map_err(|e| corrupt(out, e))?;
    atomic_write(&dir.join("meta.json"), &state)?;
    atomic_write(&out.join("metrics.jsonl"), jsonl.as_bytes())?;
    atomic_write(&out.join("metrics.csv"), metrics_csv(all).as_bytes())?;
    atomic_write(&out.join("state.json"), &state)?;
    // Keep the newest complete checkpoint before this one, for a fallback; drop the others.
    let older: Vec<u64> = checkpoint_rounds(out).into_iter().filter(|&r| r < last.round).collect();
    let keep = older.iter().copied().find(|&r| round_dir(out, r).join("meta.json").is_file());
    for old in older.into_iter().filter(|&r| Some(r) != keep) {
        let _ = std::fs::remove_dir_all(round_dir(out, old));
    }
    Ok(())
}

fn read_metrics(path: &Path) -> Result<Vec<RoundMetrics>, Error> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| corrupt(path, e)))
        .collect()
}

fn metrics_csv(all: &[RoundMetrics]) -> String {
    let mut s = String::from(
        "round,participants,bytes_in,bytes_out,samples,masked,abstentions,accuracy,nll,agreement,seconds\n",
    );
    for m in all {
        let opt = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{:.6},{:.3}",
            m.round,
            m.participants.len(),
            m.bytes_in,
            m.bytes_out,
            m.samples,
            m.masked,
            m.abstentions,
            opt(m.accuracy),
            opt(m.nll),
            m.agreement,
            m.seconds
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::Architecture;

    fn metrics(rounds: u64) -> Vec<RoundMetrics> {
        (1..=rounds)
            .map(|round| RoundMetrics {
                round,
                participants: vec!["a".into()],
                bytes_in: 1,
                bytes_out: 1,
                samples: 1,
                masked: 0,
                abstentions: 0,
                accuracy: None,
                nll: None,
                agreement: 1.0,
                seconds: 0.1,
                cohort: Vec::new(),
            })
            .collect()
    }

    fn model() -> Model {
        Model::new(&Architecture::Mlp { hidden: vec![4], dropout: 0.0 }, 3, 2, BackendKind::default(), 1)
            .expect("model")
    }

    fn pool(round: u64) -> Pool {
        Pool { rows: [(round as u32, vec![0.5, 0.5])].into() }
    }

    /// Saves rounds 1..=n, each with a pool that names its round.
    fn saved(out: &Path, n: u64) -> ReferenceSetId {
        let reference = ReferenceSetId([7; 32]);
        for r in 1..=n {
            save(out, &reference, &model(), &pool(r), &metrics(r)).expect("save");
        }
        reference
    }

    fn restored_round(out: &Path, reference: &ReferenceSetId) -> (u64, Pool, usize) {
        let r = restore(out, reference, BackendKind::default()).expect("restore");
        (r.completed, r.pool, r.metrics.len())
    }

    #[test]
    fn a_failed_checkpoint_leaves_the_last_good_one_committed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("fail");
        let reference = saved(&out, 2);
        // Round 3's folder cannot be written (a file stands in its way, as a full disk would).
        std::fs::write(round_dir(&out, 3), b"in the way").expect("write");
        assert!(save(&out, &reference, &model(), &pool(3), &metrics(3)).is_err());
        assert_eq!(restored_round(&out, &reference), (2, pool(2), 2));
        // The next round's checkpoint succeeds and commits; round 2 stays as the fallback.
        std::fs::remove_file(round_dir(&out, 3)).expect("remove");
        save(&out, &reference, &model(), &pool(4), &metrics(4)).expect("save");
        assert_eq!(restored_round(&out, &reference), (4, pool(4), 4));
        assert_eq!(checkpoint_rounds(&out), vec![4, 2], "the newest complete checkpoint before the commit is kept");
    }

    #[test]
    fn a_corrupt_pool_or_state_falls_back_to_an_earlier_checkpoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("corrupt");
        let reference = saved(&out, 3);
        assert_eq!(checkpoint_rounds(&out), vec![3, 2]);
        std::fs::write(round_dir(&out, 3).join("pool.bin"), [0xFF; 9]).expect("write");
        assert_eq!(
            restored_round(&out, &reference),
            (2, pool(2), 2),
            "round 3's pool is corrupt: resume after round 2"
        );
        let out = tmp.path().join("state");
        let reference = saved(&out, 3);
        std::fs::write(out.join("state.json"), b"{ not json").expect("write");
        assert_eq!(
            restored_round(&out, &reference),
            (3, pool(3), 3),
            "state.json is corrupt: the newest complete checkpoint"
        );
        std::fs::remove_file(out.join("state.json")).expect("remove");
        assert_eq!(restored_round(&out, &reference), (3, pool(3), 3), "state.json is gone but checkpoints are there");
        std::fs::remove_file(round_dir(&out, 3).join("meta.json")).expect("remove");
        assert_eq!(restored_round(&out, &reference), (2, pool(2), 2), "a folder without meta.json is incomplete");
        // Another run's output folder is refused, not resumed.
        let other = ReferenceSetId([8; 32]);
        save(&out, &reference, &model(), &pool(4), &metrics(4)).expect("save");
        assert!(matches!(restore(&out, &other, BackendKind::default()), Err(Error::Checkpoint { .. })));
        assert_eq!(restored_round(&tmp.path().join("empty"), &reference).0, 0, "nothing there: a fresh start");
    }
}
