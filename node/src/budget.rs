//! The node's privacy budget (`[privacy]` in node.toml): record-level (ε, δ) differential
//! privacy of everything the node ever sends, enforced by the node itself.
//!
//! Every computation on private rows is a DP-SGD training ([`learning::joint::fit_joint`] with
//! [`DpSgd`]); soft labels, the digest of a consensus (public rows only) and everything sent
//! are post-processing of the trained model and cost nothing more. The budget plans the noise
//! for the trainings it expects (`rounds`, plus the final one at the end of the federation),
//! and keeps a ledger of every training in `state_dir/privacy.json`. An entry is written
//! (atomically, synced to disk) *before* its training starts, so a crash at any point can only
//! overcount what was spent, never forget it. A training that would take the composed ε past
//! the budget is refused; a missing ledger in a state folder that shows the node has trained (a
//! model checkpoint, or answered rounds in `answers.json`), or a corrupt one, stops the node
//! rather than starting the count again.
//!
//! The ledger pins the budget it counts against, ε and δ, at its first training: a node.toml
//! whose `[privacy]` says otherwise is refused at start-up, so editing the config cannot quietly
//! change the guarantee. An operator who means to change the budget says so with `fd-node privacy
//! repin` ([`repin`]), which pins the config's ε and δ, keeps every training recorded (they are
//! still counted, at the new δ) and keeps the replaced budget in the ledger's history.

use std::path::{Path, PathBuf};

use learning::dp::DpSgd;
use learning::privacy::{self, Accountant, Segment};
use learning::train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::error::Error;
pub use crate::error::Exhausted;
use crate::policy::{ANSWERS_FILE, Answers};

/// `[privacy]` of node.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// The node's total budget ε over its whole life (every round, every restart).
    pub epsilon: f64,
    /// δ of the guarantee; keep it well below 1 / (private rows).
    pub delta: f64,
    /// L2 clipping norm of each private row's gradient.
    #[serde(default = "default_clip_norm")]
    pub clip_norm: f32,
    /// Rounds the node plans to train in; the noise is calibrated so that these rounds and the
    /// final training fit in ε.
    pub rounds: u64,
    /// A fixed noise multiplier σ instead of calibrating it (must still fit the plan in ε).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Seed of DP-SGD's sampling and noise, for reproducible simulations only: whoever knows it
    /// knows the noise. Absent (the default), both come from the operating system.
    #[serde(default)]
    pub noise_seed: Option<u64>,
}

fn default_clip_norm() -> f32 {
    1.0
}

impl PrivacyConfig {
    /// Checks ranges without I/O; the error names the `privacy.*` key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, detail: String| Error::config(format!("privacy.{field}"), detail);
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(bad("epsilon", format!("{} must be a positive number", self.epsilon)));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(bad("delta", format!("{} must be in (0, 1)", self.delta)));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(bad("clip_norm", format!("{} must be positive", self.clip_norm)));
        }
        if self.rounds == 0 {
            return Err(bad("rounds", "must be at least 1".into()));
        }
        if let Some(s) = self.noise_multiplier
            && !(s.is_finite() && s > 0.0)
        {
            return Err(bad("noise_multiplier", format!("{s} must be positive")));
        }
        Ok(())
    }
}

/// One private training, as recorded before it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The round it answered; `None` for the final training at the end of the federation.
    pub round: Option<u64>,
    /// Its DP-SGD steps.
    pub segment: Segment,
}

/// The budget a ledger counts against.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// ε of the budget.
    pub epsilon: f64,
    /// δ of the budget.
    pub delta: f64,
}

impl Pin {
    fn of(cfg: &PrivacyConfig) -> Self {
        Self { epsilon: cfg.epsilon, delta: cfg.delta }
    }
}

/// A budget replaced on purpose (`fd-node privacy repin`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replaced {
    /// The budget that was pinned.
    pub pin: Pin,
    /// Trainings recorded when it was replaced.
    pub trainings: usize,
}

/// `state_dir/privacy.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ledger {
    version: u32,
    /// The budget, pinned at the first training (absent in a ledger no training was recorded in,
    /// and in ledgers written before pinning, which the next training pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned: Option<Pin>,
    /// Budgets pinned before, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaced: Vec<Replaced>,
    entries: Vec<Entry>,
}

/// The ledger's file in a state folder.
pub const LEDGER_FILE: &str = "privacy.json";

const LEDGER_VERSION: u32 = 1;

/// What has been spent and what is left.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// ε spent so far at the configured δ.
    pub spent: f64,
    /// The budget.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Private trainings recorded.
    pub trainings: usize,
    /// DP-SGD steps recorded.
    pub steps: u64,
    /// Trainings still possible with the planned settings.
    pub trainings_left: u64,
    /// The planned settings.
    pub plan: DpSgd,
    /// Steps of one training.
    pub steps_per_training: u64,
}

/// The budget of a running node: the plan and the ledger.
#[derive(Debug)]
pub struct Budget {
    cfg: PrivacyConfig,
    path: PathBuf,
    ledger: Ledger,
    accountant: Accountant,
    plan: DpSgd,
    steps_per_training: u64,
    planned: u64,
}

impl Budget {
    /// Opens the ledger in `state_dir` and plans the noise of the trainings left. `rows`: private
    /// rows; `trainings`: trainings planned in all (`rounds` and the final one); `trained`:
    /// whether the node has a checkpoint, in which case a ledger must exist.
    pub fn open(
        cfg: &PrivacyConfig,
        state_dir: &Path,
        rows: usize,
        train: &TrainConfig,
        trainings: u64,
        trained: bool,
    ) -> Result<Self, Error> {
        cfg.validate()?;
        let path = state_dir.join(LEDGER_FILE);
        let ledger = read_ledger(&path, trained)?;
        check_pin(&path, &ledger, cfg)?;
        let segments: Vec<Segment> = ledger.entries.iter().map(|e| e.segment).collect();
        let accountant = Accountant::from_history(&segments).map_err(|e| ledger_err(&path, e))?;
        let left = trainings.saturating_sub(ledger.entries.len() as u64);
        // The trainings left are planned again (the data may have changed); once the plan is
        // done, or what is left cannot pay for one more, the node trains no more.
        let (plan, steps_per_training) = match (plan(cfg, rows, train, left.max(1), &accountant), ledger.entries.last())
        {
            (Ok(p), _) => p,
            (Err(_), Some(last)) => {
                let dp = DpSgd {
                    clip_norm: cfg.clip_norm,
                    noise_multiplier: last.segment.noise_multiplier,
                    sample_rate: last.segment.sample_rate,
                    noise_seed: cfg.noise_seed,
                };
                (dp, last.segment.steps)
            }
            (Err(e), None) => return Err(e),
        };
        let budget = Self { cfg: cfg.clone(), path, ledger, accountant, plan, steps_per_training, planned: trainings };
        if budget.after_one()? > cfg.epsilon * (1.0 + 1e-9) && cfg.noise_multiplier.is_some() {
            return Err(Error::config(
                "privacy.noise_multiplier",
                format!(
                    "σ = {} cannot pay for even one more training within ε = {}",
                    budget.plan.noise_multiplier, cfg.epsilon
                ),
            ));
        }
        Ok(budget)
    }

    /// ε if one more training ran; infinite once the planned trainings are done.
    fn after_one(&self) -> Result<f64, Error> {
        if self.ledger.entries.len() as u64 >= self.planned {
            return Ok(f64::INFINITY);
        }
        let mut a = self.accountant.clone();
        a.compose(self.plan.segment(self.steps_per_training)).map_err(|e| ledger_err(&self.path, e))?;
        Ok(a.epsilon(self.cfg.delta).map_err(|e| ledger_err(&self.path, e))?.epsilon)
    }

    /// Records one more training (for `round`, or the final one) and returns its DP-SGD
    /// settings, or refuses when it would exceed the budget. The ledger is on disk before this
    /// returns.
    pub fn spend(&mut self, round: Option<u64>) -> Result<DpSgd, Error> {
        let after = self.after_one()?;
        if after > self.cfg.epsilon * (1.0 + 1e-9) {
            return Err(Error::BudgetSpent(Exhausted { spent: self.spent()?, epsilon: self.cfg.epsilon, after }));
        }
        let segment = self.plan.segment(self.steps_per_training);
        let mut ledger = self.ledger.clone();
        ledger.pinned.get_or_insert(Pin::of(&self.cfg));
        ledger.entries.push(Entry { round, segment });
        write_ledger(&self.path, &ledger)?;
        self.ledger = ledger;
        self.accountant.compose(segment).map_err(|e| ledger_err(&self.path, e))?;
        Ok(self.plan.clone())
    }

    /// Whether one more training fits.
    pub fn can_train(&self) -> bool {
        self.after_one().is_ok_and(|e| e <= self.cfg.epsilon * (1.0 + 1e-9))
    }

    /// The budget: ε at δ.
    pub fn epsilon(&self) -> (f64, f64) {
        (self.cfg.epsilon, self.cfg.delta)
    }

    /// ε spent so far at the configured δ.
    pub fn spent(&self) -> Result<f64, Error> {
        if self.ledger.entries.is_empty() {
            return Ok(0.0);
        }
        Ok(self.accountant.epsilon(self.cfg.delta).map_err(|e| ledger_err(&self.path, e))?.epsilon)
    }

    /// Spent and remaining.
    pub fn status(&self) -> Result<Status, Error> {
        let mut left = 0u64;
        let mut a = self.accountant.clone();
        let planned_left = self.planned.saturating_sub(self.ledger.entries.len() as u64);
        while left < planned_left {
            a.compose(self.plan.segment(self.steps_per_training)).map_err(|e| ledger_err(&self.path, e))?;
            if a.epsilon(self.cfg.delta).map_err(|e| ledger_err(&self.path, e))?.epsilon
                > self.cfg.epsilon * (1.0 + 1e-9)
            {
                break;
            }
            left += 1;
        }
        Ok(Status {
            spent: self.spent()?,
            epsilon: self.cfg.epsilon,
            delta: self.cfg.delta,
            trainings: self.ledger.entries.len(),
            steps: self.ledger.entries.iter().map(|e| e.segment.steps).sum(),
            trainings_left: left,
            plan: self.plan.clone(),
            steps_per_training: self.steps_per_training,
        })
    }

    /// The ledger's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The DP-SGD settings of `trainings` more trainings of `train` on `rows` private rows that keep
/// ε within `cfg.epsilon` after what `spent` holds, and the steps of one training. The sampling
/// rate is `batch_size / rows`; σ is `cfg.noise_multiplier` or calibrated.
pub fn plan(
    cfg: &PrivacyConfig,
    rows: usize,
    train: &TrainConfig,
    trainings: u64,
    spent: &Accountant,
) -> Result<(DpSgd, u64), Error> {
    let sample_rate = (train.batch_size as f64 / rows.max(1) as f64).min(1.0);
    let mut dp = DpSgd { clip_norm: cfg.clip_norm, noise_multiplier: 1.0, sample_rate, noise_seed: cfg.noise_seed };
    let steps_per_training = dp.steps(train.epochs);
    let steps = steps_per_training * trainings;
    dp.noise_multiplier = match cfg.noise_multiplier {
        Some(s) => s,
        None => {
            let c = spent.calibrate(cfg.epsilon, cfg.delta, sample_rate, steps).map_err(|e| {
                Error::config(
                    "privacy.epsilon",
                    format!("cannot plan {trainings} more training(s) of {steps_per_training} steps at sample rate {sample_rate:.4}: {e}"),
                )
            })?;
            // σ = 0 would mean "no noise needed"; DP-SGD always adds some.
            c.noise_multiplier.max(0.3)
        }
    };
    Ok((dp, steps_per_training))
}

fn ledger_err(path: &Path, e: impl ToString) -> Error {
    Error::Ledger { path: path.to_owned(), detail: e.to_string() }
}

/// Refuses a config whose ε or δ is not the ledger's pinned budget.
fn check_pin(path: &Path, ledger: &Ledger, cfg: &PrivacyConfig) -> Result<(), Error> {
    let Some(pin) = ledger.pinned else { return Ok(()) };
    let refuse = |key: &str, pinned: f64, asked: f64| {
        Err(Error::config(
            format!("privacy.{key}"),
            format!(
                "{asked} is not the {key} {pinned} pinned in {} after {} training(s): the guarantee already given is ({}, {})-DP; to change the budget on purpose, run `fd-node privacy repin --config node.toml`",
                path.display(),
                ledger.entries.len(),
                pin.epsilon,
                pin.delta
            ),
        ))
    };
    if pin.epsilon != cfg.epsilon {
        return refuse("epsilon", pin.epsilon, cfg.epsilon);
    }
    if pin.delta != cfg.delta {
        return refuse("delta", pin.delta, cfg.delta);
    }
    Ok(())
}

/// What [`repin`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Repinned {
    /// The budget pinned before (`None`: none was).
    pub before: Option<Pin>,
    /// The budget pinned now.
    pub now: Pin,
    /// Trainings recorded, all still counted.
    pub trainings: usize,
}

/// Pins `cfg`'s ε and δ in the ledger of `state_dir` on purpose (`fd-node privacy repin`): the
/// trainings recorded stay and are counted against the new budget; the budget replaced is kept
/// in the ledger's history. Without a ledger there is nothing to repin: the first training pins
/// the config's budget.
pub fn repin(cfg: &PrivacyConfig, state_dir: &Path) -> Result<Repinned, Error> {
    cfg.validate()?;
    let path = state_dir.join(LEDGER_FILE);
    if !path.exists() {
        return Err(ledger_err(&path, "no ledger yet: the first training pins the budget in node.toml"));
    }
    let mut ledger = read_ledger(&path, true)?;
    let (before, now) = (ledger.pinned, Pin::of(cfg));
    if before != Some(now) {
        if let Some(pin) = before {
            ledger.replaced.push(Replaced { pin, trainings: ledger.entries.len() });
        }
        ledger.pinned = Some(now);
        write_ledger(&path, &ledger)?;
    }
    Ok(Repinned { before, now, trainings: ledger.entries.len() })
}

/// Whether the node whose state folder is `state_dir` has trained: it holds a model checkpoint,
/// or its record of answers shows answered rounds (every answer came from a training). Checking
/// both means that deleting the checkpoint and the ledger cannot start the count again.
pub fn has_trained(state_dir: &Path) -> Result<bool, Error> {
    if state_dir.join("model.bpk").exists() {
        return Ok(true);
    }
    Ok(Answers::load(&state_dir.join(ANSWERS_FILE))?.count > 0)
}

fn read_ledger(path: &Path, trained: bool) -> Result<Ledger, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let ledger: Ledger = serde_json::from_slice(&bytes).map_err(|e| {
                ledger_err(
                    path,
                    format!(
                        "corrupt ({e}); restore it from a backup: the node will not train without knowing what it spent"
                    ),
                )
            })?;
            if ledger.version != LEDGER_VERSION {
                return Err(ledger_err(path, format!("version {} is not {LEDGER_VERSION}", ledger.version)));
            }
            for e in &ledger.entries {
                e.segment
                    .validate()
                    .map_err(|err| ledger_err(path, format!("entry for round {:?}: {err}", e.round)))?;
            }
            Ok(ledger)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !trained => {
            Ok(Ledger { version: LEDGER_VERSION, pinned: None, replaced: Vec::new(), entries: Vec::new() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ledger_err(
            path,
            "missing, but this state folder shows the node has trained (a model checkpoint, or answered rounds in answers.json): restore the ledger, or start from a fresh state folder (and a fresh model)",
        )),
        Err(source) => Err(Error::Io { path: path.to_owned(), source }),
    }
}

fn write_ledger(path: &Path, ledger: &Ledger) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(ledger).map_err(|e| ledger_err(path, e))?;
    learning::fs::atomic_write(path, &bytes)?;
    Ok(())
}

/// The status of the ledger in `state_dir` for `cfg`, without a running node (`fd-node privacy
/// status`). `rows`: private rows (the plan depends on the sampling rate).
pub fn status(
    cfg: &PrivacyConfig,
    state_dir: &Path,
    rows: usize,
    train: &TrainConfig,
    trainings: u64,
) -> Result<Status, Error> {
    Budget::open(cfg, state_dir, rows, train, trainings, has_trained(state_dir)?)?.status()
}

/// The entries of the ledger in `state_dir` (none if there is no ledger).
pub fn read_entries(state_dir: &Path) -> Result<Vec<Entry>, Error> {
    Ok(read_ledger(&state_dir.join(LEDGER_FILE), false)?.entries)
}

/// ε of a list of entries at `delta` (0 for none).
pub fn epsilon_of(entries: &[Entry], delta: f64) -> Result<f64, privacy::PrivacyError> {
    if entries.is_empty() {
        return Ok(0.0);
    }
    let segments: Vec<Segment> = entries.iter().map(|e| e.segment).collect();
    Ok(privacy::epsilon(&segments, delta)?.epsilon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PrivacyConfig {
        PrivacyConfig {
            epsilon: 4.0,
            delta: 1e-5,
            clip_norm: 1.0,
            rounds: 5,
            noise_multiplier: None,
            noise_seed: Some(1),
        }
    }

    fn train() -> TrainConfig {
        TrainConfig { batch_size: 50, epochs: 2, ..Default::default() }
    }

    #[test]
    fn the_plan_fits_the_budget_exactly_and_one_more_training_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut b = Budget::open(&cfg(), dir, 1000, &train(), 6, false).unwrap();
        assert_eq!(b.steps_per_training, 40);
        for round in 1..=6 {
            assert!(b.can_train());
            let dp = b.spend(Some(round)).unwrap();
            assert_eq!(dp.sample_rate, 0.05);
        }
        let s = b.status().unwrap();
        assert!(s.spent <= 4.0 && s.spent > 3.9, "{s:?}");
        assert_eq!((s.trainings, s.steps, s.trainings_left), (6, 240, 0));
        assert!(!b.can_train());
        assert!(matches!(b.spend(None), Err(Error::BudgetSpent(_))));
        // Nothing is forgotten across a restart, and the refusal stands.
        let again = Budget::open(&cfg(), dir, 1000, &train(), 6, true).unwrap();
        assert_eq!(again.status().unwrap().trainings, 6);
        assert!(!again.can_train());
    }

    #[test]
    fn a_crash_after_recording_counts_the_training_as_spent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut b = Budget::open(&cfg(), dir, 1000, &train(), 6, false).unwrap();
        b.spend(Some(1)).unwrap();
        drop(b); // the training itself never ran: killed
        let b = Budget::open(&cfg(), dir, 1000, &train(), 6, true).unwrap();
        assert_eq!(b.status().unwrap().trainings, 1);
        // Re-planned for the 5 trainings left of the 6 planned.
        assert_eq!(b.status().unwrap().trainings_left, 5);
    }

    #[test]
    fn the_budget_is_pinned_at_the_first_training_and_changed_only_on_purpose() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut b = Budget::open(&cfg(), dir, 1000, &train(), 6, false).unwrap();
        b.spend(Some(1)).unwrap();
        drop(b);
        let larger = PrivacyConfig { epsilon: 8.0, ..cfg() };
        let err = Budget::open(&larger, dir, 1000, &train(), 6, true).unwrap_err();
        assert!(matches!(&err, Error::Config { field, .. } if field == "privacy.epsilon"), "{err}");
        assert!(err.to_string().contains("fd-node privacy repin"), "the error says how: {err}");
        let looser = PrivacyConfig { delta: 1e-3, ..cfg() };
        let err = Budget::open(&looser, dir, 1000, &train(), 6, true).unwrap_err();
        assert!(matches!(&err, Error::Config { field, .. } if field == "privacy.delta"), "{err}");
        let err = status(&larger, dir, 1000, &train(), 6).unwrap_err();
        assert!(matches!(&err, Error::Config { field, .. } if field == "privacy.epsilon"), "status too: {err}");
        // Other settings are not pinned: the plan is made again.
        Budget::open(&PrivacyConfig { clip_norm: 2.0, rounds: 9, ..cfg() }, dir, 1000, &train(), 10, true).unwrap();
        // On purpose: the training recorded stays and counts against the new budget.
        let r = repin(&larger, dir).unwrap();
        assert_eq!((r.before, r.now, r.trainings), (Some(Pin::of(&cfg())), Pin::of(&larger), 1));
        let b = Budget::open(&larger, dir, 1000, &train(), 6, true).unwrap();
        let s = b.status().unwrap();
        assert_eq!((s.trainings, s.epsilon), (1, 8.0));
        assert!(s.spent > 0.0);
        let ledger = read_ledger(&dir.join(LEDGER_FILE), true).unwrap();
        assert_eq!(ledger.replaced, vec![Replaced { pin: Pin::of(&cfg()), trainings: 1 }], "the history is kept");
        let err = Budget::open(&cfg(), dir, 1000, &train(), 6, true).unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, .. } if field == "privacy.epsilon"),
            "and now the old one is refused: {err}"
        );
        let fresh = tempfile::tempdir().unwrap();
        assert!(matches!(repin(&cfg(), fresh.path()), Err(Error::Ledger { .. })), "no ledger, nothing to repin");
    }

    #[test]
    fn answered_rounds_without_a_checkpoint_or_a_ledger_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(!has_trained(dir).unwrap());
        status(&cfg(), dir, 1000, &train(), 6).unwrap();
        // model.bpk and privacy.json deleted, but the record of answers shows two rounds.
        std::fs::write(dir.join(ANSWERS_FILE), br#"{"count": 2, "last": null}"#).unwrap();
        assert!(has_trained(dir).unwrap());
        let err = status(&cfg(), dir, 1000, &train(), 6).unwrap_err();
        assert!(matches!(&err, Error::Ledger { detail, .. } if detail.contains("answers.json")), "{err}");
        std::fs::write(dir.join(ANSWERS_FILE), br#"{"count": 0, "last": null}"#).unwrap();
        assert!(!has_trained(dir).unwrap(), "no round answered: a fresh start");
        std::fs::write(dir.join("model.bpk"), b"").unwrap();
        assert!(has_trained(dir).unwrap());
    }

    #[test]
    fn missing_corrupt_and_impossible_ledgers_and_settings_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = Budget::open(&cfg(), dir, 1000, &train(), 6, true).unwrap_err();
        assert!(matches!(err, Error::Ledger { .. }), "{err}");
        std::fs::write(dir.join("privacy.json"), b"{\"version\": 1, \"entries\": [").unwrap();
        let err = Budget::open(&cfg(), dir, 1000, &train(), 6, false).unwrap_err();
        assert!(matches!(err, Error::Ledger { .. }), "{err}");
        assert_eq!(
            std::fs::read(dir.join("privacy.json")).unwrap(),
            b"{\"version\": 1, \"entries\": [",
            "a corrupt ledger is never overwritten"
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let tiny = PrivacyConfig { epsilon: 1e-4, ..cfg() };
        let err = Budget::open(&tiny, dir, 1000, &train(), 6, false).unwrap_err();
        assert!(matches!(&err, Error::Config { field, .. } if field == "privacy.epsilon"), "{err}");
        let weak = PrivacyConfig { noise_multiplier: Some(0.01), ..cfg() };
        let err = Budget::open(&weak, dir, 1000, &train(), 6, false).unwrap_err();
        assert!(matches!(&err, Error::Config { field, .. } if field == "privacy.noise_multiplier"), "{err}");
        for (bad, field) in [
            (PrivacyConfig { epsilon: f64::NAN, ..cfg() }, "privacy.epsilon"),
            (PrivacyConfig { delta: 1.0, ..cfg() }, "privacy.delta"),
            (PrivacyConfig { clip_norm: 0.0, ..cfg() }, "privacy.clip_norm"),
            (PrivacyConfig { rounds: 0, ..cfg() }, "privacy.rounds"),
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config { field: f, .. }) if f == field));
        }
    }
}
