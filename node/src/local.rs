//! A node's per-round work as plain synchronous functions of the model, the private data, the
//! last consensus and the announcement: no network and no runtime. The trainer thread calls
//! them; the unit tests below call them directly.

use learning::Model;
use learning::abstain::{self, Abstain};
use learning::data::Dataset;
use learning::dp::DpSgd;
use learning::joint::{Teaching, fit_joint_padded};
use learning::train::{self, DistillConfig, DistillSet, TrainConfig, TrainReport};
use protocol::seed::{Stream, derive};
use protocol::{Consensus, Limits, Mask, ReferenceSet, ReferenceSetId, RefusalReason, RoundAnnouncement, SoftLabels};

use crate::config::{DigestConfig, DigestMode, Rest};
pub use crate::refusal::Refusal;

/// The consensus a node learns from: reference rows and the federation's soft labels on them.
#[derive(Clone, Debug, PartialEq)]
pub struct Teacher {
    /// Reference rows (masked samples left out).
    pub rows: Vec<u32>,
    /// Soft labels, `rows × classes`.
    pub probs: Vec<f32>,
    /// How much each row counts, in (0, 1].
    pub weights: Vec<f32>,
    /// Temperature they were made at.
    pub temperature: f32,
    /// For a top-k consensus, the classes each row sent (`rows × classes`); the others share
    /// the row's rest evenly in `probs`.
    pub kept: Option<Vec<bool>>,
}

impl Teacher {
    /// The reference inputs of the teacher's rows, row-major.
    pub fn inputs(&self, reference: &ReferenceSet) -> Vec<f32> {
        self.rows.iter().flat_map(|&r| reference.row(r as usize).iter().copied()).collect()
    }

    /// Checks a consensus against the reference set this node holds and the federation's
    /// classes, and keeps its unmasked samples.
    pub fn from_consensus(
        c: &Consensus,
        reference_id: &ReferenceSetId,
        reference: &ReferenceSet,
        classes: usize,
    ) -> Result<Self, Refusal> {
        if c.reference_set != *reference_id {
            return Err(Refusal::new(RefusalReason::WrongReferenceSet, "consensus for another reference set"));
        }
        if c.labels.classes as usize != classes {
            return Err(Refusal::new(
                RefusalReason::WrongShape,
                format!("consensus over {} classes, the federation has {classes}", c.labels.classes),
            ));
        }
        if !(c.temperature.is_finite() && c.temperature > 0.0) {
            return Err(Refusal::new(RefusalReason::InvalidValues, format!("temperature {}", c.temperature)));
        }
        let rows = c
            .selection
            .resolve(reference.samples as u32)
            .map_err(|e| Refusal::new(RefusalReason::WrongShape, e.to_string()))?;
        if rows.len() != c.labels.samples as usize || rows.len() != c.weights().len() {
            return Err(Refusal::new(RefusalReason::WrongShape, "selection, labels and weights differ in length"));
        }
        c.check_counts().map_err(|e| Refusal::new(e.refusal_reason(), e.to_string()))?;
        let (probs, kept) =
            c.labels.decode_kept(&Limits::default()).map_err(|e| Refusal::new(e.refusal_reason(), e.to_string()))?;
        // Masked samples (weight 0) and samples nobody knew (count 0) are left out of the
        // digest; the others keep their weight.
        let weights = c.weights();
        let keep: Vec<usize> =
            (0..rows.len()).filter(|&i| weights[i] > 0.0 && c.count(i).is_some_and(|n| n > 0)).collect();
        Ok(Self {
            rows: keep.iter().map(|&i| rows[i]).collect(),
            probs: keep.iter().flat_map(|&i| probs[i * classes..(i + 1) * classes].iter().copied()).collect(),
            weights: keep.iter().map(|&i| weights[i]).collect(),
            temperature: c.temperature,
            kept: kept.map(|k| keep.iter().flat_map(|&i| k[i * classes..(i + 1) * classes].iter().copied()).collect()),
        })
    }

    /// The teacher to learn from under `rest`: itself, or for a top-k consensus with
    /// [`Rest::Own`], its rows with the classes left out sharing the row's rest as `model`
    /// predicts them at the teacher's temperature (see [`fill_rest`]).
    pub fn completed(
        &self,
        model: &Model,
        reference: &ReferenceSet,
        rest: Rest,
    ) -> Result<std::borrow::Cow<'_, Self>, learning::Error> {
        let Some(kept) = self.kept.as_ref().filter(|_| rest == Rest::Own && !self.rows.is_empty()) else {
            return Ok(std::borrow::Cow::Borrowed(self));
        };
        let own = model.soft_labels(&self.inputs(reference), self.temperature, 256)?;
        let mut probs = self.probs.clone();
        fill_rest(&mut probs, kept, &own, model.classes);
        Ok(std::borrow::Cow::Owned(Self { probs, kept: None, ..self.clone() }))
    }
}

/// Replaces, in each row of `probs`, the values of the classes `kept` leaves out by the row's
/// rest (1 − the kept probabilities) shared in proportion to `own`'s values on them (evenly
/// where `own` gives them nothing). Kept values are unchanged; rows still sum to 1.
pub fn fill_rest(probs: &mut [f32], kept: &[bool], own: &[f32], classes: usize) {
    for ((row, k), o) in probs.chunks_exact_mut(classes).zip(kept.chunks_exact(classes)).zip(own.chunks_exact(classes))
    {
        let left = k.iter().filter(|&&b| !b).count();
        if left == 0 {
            continue;
        }
        let rest = (1.0 - row.iter().zip(k).filter(|(_, b)| **b).map(|(p, _)| *p).sum::<f32>()).max(0.0);
        let mass: f32 = o.iter().zip(k).filter(|(_, b)| !**b).map(|(q, _)| *q).sum();
        for ((p, _), q) in row.iter_mut().zip(k).zip(o).filter(|((_, b), _)| !**b) {
            *p = if mass > 0.0 { rest * q / mass } else { rest / left as f32 };
        }
    }
}

/// Checks an announcement against the reference set this node holds and its model's classes.
pub fn check_announcement(
    ann: &RoundAnnouncement,
    reference_id: &ReferenceSetId,
    reference: &ReferenceSet,
    classes: usize,
) -> Result<(), Refusal> {
    if ann.reference_set != *reference_id {
        return Err(Refusal::new(
            RefusalReason::WrongReferenceSet,
            format!("announced {} but this node holds {reference_id}", ann.reference_set),
        ));
    }
    if ann.reference_samples as usize != reference.samples {
        return Err(Refusal::new(RefusalReason::WrongShape, "reference sample count differs"));
    }
    if ann.classes as usize != classes {
        return Err(Refusal::new(
            RefusalReason::WrongShape,
            format!("{} classes announced, this node's model predicts {classes}", ann.classes),
        ));
    }
    if !(ann.temperature.is_finite() && ann.temperature > 0.0) {
        return Err(Refusal::new(RefusalReason::InvalidValues, format!("temperature {}", ann.temperature)));
    }
    ann.selection.resolve(ann.reference_samples).map_err(|e| Refusal::new(RefusalReason::WrongShape, e.to_string()))?;
    Ok(())
}

/// How a node learns each round.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Local training on the private rows.
    pub train: TrainConfig,
    /// Digest of the consensus on the public rows.
    pub digest: DigestConfig,
    /// Where the node abstains, if it does.
    pub abstain: Option<Abstain>,
    /// Base seed.
    pub seed: u64,
    /// Steps every training on private rows pads its work to (`[padding]`); 0: none.
    pub pad_steps: u64,
}

/// Fine-tunes the model towards the consensus on its reference rows. Uses no private row.
pub fn digest(
    model: &mut Model,
    reference: &ReferenceSet,
    teacher: &Teacher,
    settings: &Settings,
    seed: u64,
) -> Result<(), learning::Error> {
    if !settings.digest.enabled || teacher.rows.is_empty() {
        return Ok(());
    }
    let teacher = teacher.completed(model, reference, settings.digest.rest)?;
    let inputs = teacher.inputs(reference);
    let cfg = DistillConfig {
        temperature: teacher.temperature,
        train: TrainConfig {
            epochs: settings.digest.epochs,
            learning_rate: settings.digest.learning_rate,
            batch_size: settings.digest.batch_size,
            ..settings.train.clone()
        },
        ..Default::default()
    };
    train::distill(
        model,
        DistillSet { inputs: &inputs, targets: &teacher.probs, weights: Some(&teacher.weights), labels: None },
        &cfg,
        seed,
    )?;
    Ok(())
}

/// Local training with what the federation taught: in `joint` mode, private cross-entropy and
/// distillation towards `teacher` in the same steps; in `sequential` mode, [`digest`] then
/// private epochs; without a teacher (round 1), private epochs alone.
/// With `dp`, every step on private rows is a DP-SGD step; nothing else here reads a private row.
/// The training on private rows pads its work to `settings.pad_steps` (its report says how).
pub fn learn(
    model: &mut Model,
    data: &Dataset,
    teacher: Option<&Teacher>,
    reference: &ReferenceSet,
    settings: &Settings,
    dp: Option<&DpSgd>,
    seed: u64,
) -> Result<TrainReport, learning::Error> {
    let pad = settings.pad_steps;
    let completed = match teacher {
        Some(t) if settings.digest.enabled => Some(t.completed(model, reference, settings.digest.rest)?),
        _ => None,
    };
    let teacher = completed.as_deref().or(teacher);
    let report = match teacher {
        Some(t) if settings.digest.enabled && settings.digest.mode == DigestMode::Joint && !t.rows.is_empty() => {
            let inputs = t.inputs(reference);
            let set = DistillSet { inputs: &inputs, targets: &t.probs, weights: Some(&t.weights), labels: None };
            let soft = DistillConfig { temperature: t.temperature, ..Default::default() };
            let teaching =
                Teaching { set, weight: settings.digest.weight, distill: &soft, cover: settings.digest.cover };
            fit_joint_padded(model, data, Some(teaching), &settings.train, dp, seed, pad)?
        }
        Some(t) => {
            digest(model, reference, t, settings, seed)?;
            fit_joint_padded(model, data, None, &settings.train, dp, seed, pad)?
        }
        None => fit_joint_padded(model, data, None, &settings.train, dp, seed, pad)?,
    };
    if pad > 0 && report.steps > pad {
        tracing::warn!(
            steps = report.steps,
            padding_steps = pad,
            "a training took more steps than padding.steps: its time tells more than the padding hides"
        );
    }
    Ok(report)
}

/// A node's answer to a round: soft labels on the announced samples, and the samples it
/// abstains on (their rows are uniform).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Soft labels on the announced samples.
    pub labels: SoftLabels,
    /// Abstentions, with `[abstain]` configured.
    pub abstained: Option<Mask>,
}

/// The samples of `inputs` the node abstains on, under `settings.abstain`.
fn abstentions(
    model: &Model,
    data: &Dataset,
    inputs: &[f32],
    settings: &Settings,
) -> Result<Option<Vec<bool>>, learning::Error> {
    let Some(a) = &settings.abstain else { return Ok(None) };
    let threshold = a.threshold(model, data)?;
    Ok(Some(abstain::abstentions(model, inputs, a.score, threshold)?))
}

/// One round of a node's work: learn (see [`learn`]) with the last consensus, and answer the
/// announcement with soft labels on the announced reference samples, abstaining where
/// `settings.abstain` says (a uniform row on those samples, and their bit set in the mask).
/// `tamper` may rewrite the probabilities before they are encoded (simulated faults).
/// A calibrated abstention threshold reads private rows outside DP-SGD, so with `dp` it is
/// refused before anything runs: the config refuses that pairing first, this keeps the code from
/// doing it whatever the config says.
// The round's inputs, each of its own kind; grouping them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn local_round(
    model: &mut Model,
    data: &Dataset,
    teacher: Option<&Teacher>,
    ann: &RoundAnnouncement,
    reference: &ReferenceSet,
    settings: &Settings,
    dp: Option<&DpSgd>,
    tamper: &dyn Fn(&mut [f32], usize),
) -> Result<Answer, learning::Error> {
    if dp.is_some() && settings.abstain.as_ref().is_some_and(Abstain::reads_private_rows) {
        return Err(learning::Error::Config(
            "abstain.quantile calibrates on private rows outside DP-SGD: under [privacy], set abstain.threshold".into(),
        ));
    }
    learn(model, data, teacher, reference, settings, dp, derive(settings.seed, Stream::NodeTraining, ann.round))?;
    let rows = ann.selection.resolve(ann.reference_samples).map_err(|e| learning::Error::Shape(e.to_string()))?;
    let inputs: Vec<f32> = rows.iter().flat_map(|&r| reference.row(r as usize).iter().copied()).collect();
    let mut probs = model.soft_labels(&inputs, ann.temperature, 256)?;
    tamper(&mut probs, model.classes);
    let abstained = abstentions(model, data, &inputs, settings)?;
    let c = model.classes;
    for (row, _) in probs.chunks_exact_mut(c).zip(abstained.iter().flatten()).filter(|(_, a)| **a) {
        row.fill(1.0 / c as f32);
    }
    let labels =
        SoftLabels::encode(&probs, rows.len(), c, ann.encoding).map_err(|e| learning::Error::Shape(e.to_string()))?;
    Ok(Answer { labels, abstained: abstained.map(|a| Mask::from_bools(&a)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::{Architecture, BackendKind};
    use protocol::{Encoding, FederationId, SampleSelection};

    /// Two well-separated classes in 4 features; the reference set is drawn the same way.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut s = seed | 1;
        for i in 0..n {
            let c = (i % 2) as u32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let noise = (s % 1000) as f32 / 1000.0 - 0.5;
                x.push(if c == 0 { -1.0 } else { 1.0 } + 0.3 * noise);
            }
            y.push(c);
        }
        (x, y)
    }

    fn setup() -> (Model, Dataset, ReferenceSet, Settings) {
        let (x, y) = blobs(64, 3);
        let data = Dataset::new(x, y, 4, 2).unwrap();
        let (rx, _) = blobs(20, 9);
        let reference = ReferenceSet::new(20, 4, rx).unwrap();
        let model =
            Model::new(&Architecture::Mlp { hidden: vec![8], dropout: 0.0 }, 4, 2, BackendKind::Flex, 1).unwrap();
        let settings = Settings {
            train: TrainConfig { epochs: 20, learning_rate: 1e-2, ..Default::default() },
            digest: DigestConfig::default(),
            abstain: None,
            seed: 5,
            pad_steps: 0,
        };
        (model, data, reference, settings)
    }

    fn announcement(round: u64) -> RoundAnnouncement {
        RoundAnnouncement {
            federation: FederationId::new("t").unwrap(),
            round,
            reference_set: ReferenceSetId([1; 32]),
            reference_samples: 20,
            selection: SampleSelection::Seeded { seed: 4, count: 8 },
            classes: 2,
            temperature: 2.0,
            deadline_unix_ms: 0,
            encoding: Encoding::F32,
            secure: None,
        }
    }

    #[test]
    fn a_round_trains_and_answers_the_announced_samples_at_the_announced_temperature() {
        let (mut model, data, reference, settings) = setup();
        let ann = announcement(1);
        let labels =
            local_round(&mut model, &data, None, &ann, &reference, &settings, None, &|_, _| {}).unwrap().labels;
        assert_eq!((labels.samples, labels.classes), (8, 2));
        let probs = labels.decode(&Limits::default()).unwrap();
        let rows = ann.selection.resolve(20).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            let truth = (reference.row(r as usize)[0] > 0.0) as usize;
            let p = &probs[i * 2..i * 2 + 2];
            assert!(p[truth] > 0.6, "row {r}: {p:?} after training on separable data");
            assert!(p[truth] < 0.999, "T = 2 softens the labels: {p:?}");
        }
        // Same inputs, same seed: the same bits.
        let (mut again, ..) = setup();
        assert_eq!(
            local_round(&mut again, &data, None, &ann, &reference, &settings, None, &|_, _| {}).unwrap().labels,
            labels
        );
    }

    /// Two nodes, 64 and 200 private rows, with and without DP-SGD: padded, their trainings do
    /// the same number of steps, and the answers are those of the unpadded trainings.
    #[test]
    fn with_padding_nodes_of_different_row_counts_do_the_same_steps() {
        let (model, small, reference, settings) = setup();
        let (x, y) = blobs(200, 11);
        let large = Dataset::new(x, y, 4, 2).unwrap();
        let settings = Settings { train: TrainConfig { epochs: 2, batch_size: 32, ..settings.train }, ..settings };
        let padded = Settings { pad_steps: 40, ..settings.clone() };
        let dp = |rows: usize| DpSgd {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            sample_rate: 32.0 / rows as f64,
            noise_seed: Some(2),
        };
        for private in [false, true] {
            let steps = |data: &Dataset, settings: &Settings| {
                let dp = private.then(|| dp(data.len()));
                let mut m = model.clone();
                let r = learn(&mut m, data, None, &reference, settings, dp.as_ref(), 3).unwrap();
                (r.steps, r.steps + r.padding_steps, m.soft_labels(&reference.values, 2.0, 64).unwrap())
            };
            let ((own_small, _, plain), (own_large, ..)) = (steps(&small, &settings), steps(&large, &settings));
            assert_ne!(own_small, own_large, "private {private}: unpadded, the steps follow the rows");
            let ((_, all_small, padded_labels), (_, all_large, _)) = (steps(&small, &padded), steps(&large, &padded));
            assert_eq!((all_small, all_large), (40, 40), "private {private}");
            assert_eq!(padded_labels, plain, "private {private}: padding changes no answer");
        }
    }

    #[test]
    fn the_digest_moves_the_model_towards_the_consensus_and_tamper_sees_the_answer() {
        let (mut model, data, reference, mut settings) = setup();
        settings.train.epochs = 0;
        settings.digest.mode = DigestMode::Sequential;
        settings.digest.epochs = 60;
        settings.digest.learning_rate = 1e-2;
        // A consensus that says the opposite of the truth on every reference row.
        let rows: Vec<u32> = (0..20).collect();
        let probs: Vec<f32> = rows
            .iter()
            .flat_map(|&r| if reference.row(r as usize)[0] > 0.0 { [0.95, 0.05] } else { [0.05, 0.95] })
            .collect();
        let teacher = Teacher { weights: vec![1.0; rows.len()], rows, probs, temperature: 1.0, kept: None };
        let ann = announcement(2);
        let seen = std::cell::Cell::new(0);
        let labels = local_round(&mut model, &data, Some(&teacher), &ann, &reference, &settings, None, &|p, c| {
            seen.set(p.len() / c)
        })
        .unwrap()
        .labels;
        assert_eq!(seen.get(), 8);
        let answer = labels.decode(&Limits::default()).unwrap();
        let selected = ann.selection.resolve(20).unwrap();
        let follows = selected
            .iter()
            .enumerate()
            .filter(|&(i, &r)| (answer[i * 2 + 1] > 0.5) == (reference.row(r as usize)[0] < 0.0))
            .count();
        assert!(follows >= 7, "the model learned the consensus' (inverted) labels on {follows} of 8");
    }

    #[test]
    fn bad_consensus_and_announcements_are_refused_with_a_reason() {
        let (_, _, reference, _) = setup();
        let id = ReferenceSetId([1; 32]);
        let mut ann = announcement(1);
        assert!(check_announcement(&ann, &id, &reference, 2).is_ok());
        assert_eq!(
            check_announcement(&ann, &ReferenceSetId([2; 32]), &reference, 2).unwrap_err().reason,
            RefusalReason::WrongReferenceSet
        );
        assert_eq!(check_announcement(&ann, &id, &reference, 3).unwrap_err().reason, RefusalReason::WrongShape);
        ann.temperature = f32::NAN;
        assert_eq!(check_announcement(&ann, &id, &reference, 2).unwrap_err().reason, RefusalReason::InvalidValues);
        let ann = announcement(1);
        let labels = SoftLabels::encode(&[0.5; 16], 8, 2, Encoding::F32).unwrap();
        let mut c = Consensus {
            federation: ann.federation.clone(),
            round: 1,
            reference_set: id,
            selection: ann.selection.clone(),
            temperature: 2.0,
            labels,
            weights: vec![255; 8],
            participants: 3,
            counts: vec![3; 8],
        };
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap().rows.len(), 8);
        c.weights[3] = 0;
        assert_eq!(
            Teacher::from_consensus(&c, &id, &reference, 2).unwrap().rows.len(),
            7,
            "a masked sample is left out"
        );
        // Counts: a sample nobody knew must be masked, and no count exceeds the participants.
        c.counts[5] = 0;
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap_err().reason, RefusalReason::InvalidValues);
        c.weights[5] = 0;
        assert_eq!(
            Teacher::from_consensus(&c, &id, &reference, 2).unwrap().rows.len(),
            6,
            "a sample nobody knew is left out"
        );
        c.counts[6] = 4;
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap_err().reason, RefusalReason::InvalidValues);
        c.counts.pop();
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap_err().reason, RefusalReason::WrongShape);
        c.counts = vec![3; 8];
        c.weights.pop();
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap_err().reason, RefusalReason::WrongShape);
        c.weights.push(1);
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 3).unwrap_err().reason, RefusalReason::WrongShape);
        c.labels.data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Teacher::from_consensus(&c, &id, &reference, 2).unwrap_err().reason, RefusalReason::InvalidValues);
    }

    #[test]
    fn a_node_abstains_where_it_is_unsure_and_sends_uniform_rows_there() {
        let (mut model, data, reference, mut settings) = setup();
        let ann = announcement(1);
        // A threshold above every score: the node abstains on every sample, and still answers.
        settings.abstain = Some(Abstain { threshold: Some(1.01), ..Default::default() });
        let all = local_round(&mut model, &data, None, &ann, &reference, &settings, None, &|_, _| {}).unwrap();
        assert_eq!(all.abstained.as_ref().map(Mask::count), Some(8));
        assert!(
            all.labels.decode(&Limits::default()).unwrap().iter().all(|p| (p - 0.5).abs() < 1e-6),
            "abstained rows are uniform"
        );
        // Calibrated on its own rows, it abstains on few of these well-separated samples.
        settings.abstain = Some(Abstain { quantile: Some(0.05), ..Default::default() });
        let (mut fresh, ..) = setup();
        let some = local_round(&mut fresh, &data, None, &ann, &reference, &settings, None, &|_, _| {}).unwrap();
        assert!(some.abstained.as_ref().map(Mask::count).unwrap() <= 2, "{:?}", some.abstained);
        // Under DP-SGD, calibrating on private rows is refused whatever the config said.
        let dp = DpSgd { clip_norm: 1.0, noise_multiplier: 1.0, sample_rate: 0.5, noise_seed: Some(1) };
        let refused = local_round(&mut fresh, &data, None, &ann, &reference, &settings, Some(&dp), &|_, _| {});
        assert!(matches!(refused, Err(learning::Error::Config(_))));
    }

    #[test]
    fn fill_rest_keeps_the_sent_classes_and_shares_the_rest_as_the_node_predicts() {
        // A top1 row over 4 classes: class 2 sent at 0.6, the others decoded at 0.4/3 each.
        let mut probs = vec![0.4 / 3.0, 0.4 / 3.0, 0.6, 0.4 / 3.0, 0.25, 0.25, 0.25, 0.25];
        let kept = [false, false, true, false, true, true, true, true];
        let own = [0.1, 0.3, 0.5, 0.1, 0.7, 0.1, 0.1, 0.1];
        fill_rest(&mut probs, &kept, &own, 4);
        let expect = [0.4 * 0.2, 0.4 * 0.6, 0.6, 0.4 * 0.2];
        for (p, e) in probs[..4].iter().zip(expect) {
            assert!((p - e).abs() < 1e-6, "{p} vs {e}");
        }
        assert_eq!(&probs[4..], &[0.25; 4], "a row with every class sent is left as it is");
        // The node's model gives the classes left out nothing: they share the rest evenly.
        let mut flat = vec![0.2, 0.2, 0.6, 0.0];
        fill_rest(&mut flat, &[false, false, true, true], &[0.0, 0.0, 0.5, 0.5], 4);
        for (p, e) in flat.iter().zip([0.2, 0.2, 0.6, 0.0]) {
            assert!((p - e).abs() < 1e-6, "{p} vs {e}");
        }
    }

    #[test]
    fn a_top_k_consensus_is_completed_with_the_nodes_own_rest_only_when_asked() {
        let (model, _, reference, _) = setup();
        let rows: Vec<u32> = (0..4).collect();
        let probs = vec![0.7, 0.3, 0.1, 0.9, 0.5, 0.5, 0.2, 0.8];
        let teacher = Teacher {
            weights: vec![1.0; 4],
            rows,
            probs: probs.clone(),
            temperature: 2.0,
            kept: Some(vec![true, false, false, true, true, false, false, true]),
        };
        assert_eq!(teacher.completed(&model, &reference, Rest::Uniform).unwrap().probs, probs);
        let done = teacher.completed(&model, &reference, Rest::Own).unwrap();
        // Two classes, one kept: the other takes the whole rest, whatever the model says.
        for (a, b) in done.probs.iter().zip(&probs) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(done.kept, None);
        let plain = Teacher { kept: None, ..teacher.clone() };
        assert_eq!(plain.completed(&model, &reference, Rest::Own).unwrap().probs, probs);
    }
}
