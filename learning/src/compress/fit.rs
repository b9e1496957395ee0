//! One student's training: a plain synchronous loop over the public rows in seeded batches, its
//! loss the method's (see [`Method`]), its optimiser stepping the student together with the
//! method's auxiliary layers (FitNets' regressor, CRD's two projection heads), which are thrown
//! away afterwards.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use protocol::seed::{Stream, derive};
use rand::seq::SliceRandom;

use super::config::{CompressConfig, Method};
use super::loss::{attention_loss, crd_loss, hint_loss};
use crate::arch::{Architecture, Features, Layers};
use crate::config::{DistillConfig, DistillLossKind};
use crate::data::rng;
use crate::loss::distill_loss;
use crate::model::Model;
use crate::step::{EpochLoss, check_finite};
use crate::tensor::{labels_tensor, rows_tensor};
use crate::{BackendKind, Error};

/// The public rows a student learns on.
#[derive(Clone, Copy, Debug)]
pub struct PublicSet<'a> {
    /// Row-major inputs, `rows × input_dim`.
    pub inputs: &'a [f32],
    /// True labels, where the set has them.
    pub labels: Option<&'a [u32]>,
    /// The last consensus soft labels of some rows (row → probabilities), for
    /// [`Method::MultiTeacher`].
    pub consensus: Option<&'a BTreeMap<u32, Vec<f32>>>,
}

impl PublicSet<'_> {
    /// Rows in the set.
    pub fn rows(&self, input_dim: usize) -> usize {
        self.inputs.len() / input_dim.max(1)
    }
}

/// What the student is taught besides the labels.
pub(crate) struct Lesson<'a> {
    /// Soft targets at the configured temperature, `rows × classes` (none: the baseline).
    pub targets: Option<&'a [f32]>,
    /// The teacher whose intermediate features the feature term matches.
    pub teacher: &'a Model,
    /// The method whose loss is used (born-again and multi-teacher: plain logit KD).
    pub method: Method,
}

/// The student and the method's auxiliary layers, stepped by one optimiser.
#[derive(Module, Debug)]
struct Trainee {
    student: Layers,
    /// FitNets: student hidden width → teacher hidden width.
    hint: Option<Linear>,
    /// CRD: student hidden width → `crd_dim`.
    project_student: Option<Linear>,
    /// CRD: teacher hidden width → `crd_dim`.
    project_teacher: Option<Linear>,
}

/// A linear layer whose initial weights are decided by `seed`.
fn seeded_linear(d_in: usize, d_out: usize, backend: BackendKind, seed: u64) -> Linear {
    let _rng = backend.hold_rng(seed);
    let device = backend.device().autodiff();
    let layer = LinearConfig::new(d_in, d_out).init(&device);
    // Parameters initialise lazily: touch them while the generator is held.
    let _ = layer.forward(Tensor::<2>::zeros([1, d_in], &device));
    layer
}

/// Checks that `method` can run from `teacher` into `student`, before any training.
pub(crate) fn check(
    teacher: &Model,
    student: &Architecture,
    method: Method,
    public: &PublicSet<'_>,
) -> Result<(), Error> {
    let cnn = |a: &Architecture| matches!(a, Architecture::Cnn { .. });
    match method {
        Method::Attention if !(cnn(&teacher.architecture) && cnn(student)) => Err(Error::Config(
            "attention transfer matches the spatial attention maps of convolution feature maps: it needs a CNN \
             teacher and a CNN student (an MLP has no spatial maps; use fitnets or crd to match its hidden layer)"
                .into(),
        )),
        Method::Baseline if public.labels.is_none() => Err(Error::Config(
            "the no-distillation baseline trains on the public set's true labels, and this set has none".into(),
        )),
        Method::MultiTeacher if public.consensus.is_none_or(|c| c.is_empty()) => Err(Error::Config(
            "multi-teacher needs the consensus soft labels (the aggregator's last pool), and none were given".into(),
        )),
        Method::BornAgain if *student != teacher.architecture => Err(Error::Config(
            "born-again students have the teacher's architecture: leave the student's architecture unset (`same`)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Trains a fresh student of `arch` (initial weights from `seed`) on the public rows.
pub(crate) fn train(
    arch: &Architecture,
    lesson: &Lesson<'_>,
    public: &PublicSet<'_>,
    cfg: &CompressConfig,
    seed: u64,
) -> Result<(Model, Vec<f32>), Error> {
    let teacher = lesson.teacher;
    let (dim, classes, backend) = (teacher.input_dim, teacher.classes, teacher.backend);
    let mut net = Model::new(arch, dim, classes, backend, derive(seed, Stream::Init, 0))?;
    let beta = cfg.beta_of(lesson.method);
    let (s_width, t_width) = (net.model.hidden_width(), teacher.model.hidden_width());
    let head = |i: u64, d_in, d_out| seeded_linear(d_in, d_out, backend, derive(seed, Stream::Init, 100 + i));
    let mut trainee = Trainee {
        student: net.model.clone().train(),
        hint: (lesson.method == Method::Fitnets).then(|| head(0, s_width, t_width)),
        project_student: (lesson.method == Method::Crd).then(|| head(1, s_width, cfg.crd_dim)),
        project_teacher: (lesson.method == Method::Crd).then(|| head(2, t_width, cfg.crd_dim)),
    };
    let distill = DistillConfig {
        temperature: cfg.temperature,
        alpha: if public.labels.is_some() { cfg.alpha } else { 0.0 },
        loss: if lesson.method == Method::KdMse { DistillLossKind::Mse } else { DistillLossKind::Kl },
        train: cfg.train.clone(),
        early_stopping: None,
    };
    let features = matches!(lesson.method, Method::Fitnets | Method::Attention | Method::Crd);
    let teacher_layers = teacher.model.valid();
    let (device, plain) = (backend.device().autodiff(), backend.device());
    let mut optim = cfg.train.optimizer();
    let _rng = net.hold_dropout_rng(seed);
    let rows = public.rows(dim);
    let mut order: Vec<usize> = (0..rows).collect();
    let mut losses = Vec::new();
    for epoch in 0..cfg.train.epochs {
        order.shuffle(&mut rng(seed, Stream::Shuffle, 1000 + epoch as u64));
        let mut epoch_loss = EpochLoss::default();
        for idx in order.chunks(cfg.train.batch_size) {
            let x = rows_tensor(public.inputs, idx, dim, &device);
            let y = public.labels.map(|l| labels_tensor(l, idx, &device));
            let f = trainee.student.features(x);
            let mut loss = match (lesson.targets, y.clone()) {
                (Some(t), y) => {
                    distill_loss(f.logits.clone(), rows_tensor(t, idx, classes, &device), None, y, &distill)
                }
                (None, Some(y)) => CrossEntropyLossConfig::new().init(&device).forward(f.logits.clone(), y),
                (None, None) => return Err(Error::Config("no targets and no labels to learn from".into())),
            };
            if features {
                let t = teacher_layers.features(rows_tensor(public.inputs, idx, dim, &plain));
                loss = loss + feature_term(&trainee, f, t, lesson.method, cfg, &device).mul_scalar(beta);
            }
            let value: f32 = loss.clone().into_scalar();
            check_finite(value, lesson.method.name())?;
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            trainee = optim.step(cfg.train.learning_rate, trainee, grads);
            epoch_loss.add(value);
        }
        losses.push(epoch_loss.mean());
    }
    net.model = trainee.student;
    Ok((net, losses))
}

/// The method's feature term (unweighted), the teacher's activations moved to the student's
/// autodiff device as constants.
fn feature_term(
    trainee: &Trainee,
    student: Features,
    teacher: Features,
    method: Method,
    cfg: &CompressConfig,
    device: &Device,
) -> Tensor<1> {
    let hidden = Tensor::<2>::from_data(teacher.hidden.into_data(), device);
    match (method, &trainee.hint, &trainee.project_student, &trainee.project_teacher) {
        (Method::Fitnets, Some(hint), _, _) => hint_loss(hint.forward(student.hidden), hidden),
        (Method::Crd, _, Some(ps), Some(pt)) => {
            crd_loss(ps.forward(student.hidden), pt.forward(hidden), cfg.crd_temperature)
        }
        _ => {
            let pairs = student.maps.into_iter().zip(teacher.maps);
            let terms = pairs.map(|(s, t)| attention_loss(s, Tensor::<4>::from_data(t.into_data(), device)));
            terms.reduce(|a, b| a + b).unwrap_or_else(|| Tensor::zeros([1], device)).div_scalar(2.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::read;

    fn params(m: &Option<Linear>) -> Vec<f32> {
        let m = m.as_ref().expect("head");
        read(m.weight.val()).unwrap()
    }

    /// One step of FitNets and of CRD changes the regressor and both projection heads: the
    /// gradient flows through them.
    #[test]
    fn gradients_reach_the_regressor_and_the_projection_heads() {
        let backend = BackendKind::Flex;
        let teacher = Model::new(&Architecture::Mlp { hidden: vec![6], dropout: 0.0 }, 4, 3, backend, 1).unwrap();
        let student_arch = Architecture::Mlp { hidden: vec![5], dropout: 0.0 };
        let inputs: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        let targets = teacher.soft_labels(&inputs, 4.0, 8).unwrap();
        let public = PublicSet { inputs: &inputs, labels: None, consensus: None };
        let cfg = CompressConfig {
            train: crate::config::TrainConfig { epochs: 1, batch_size: 8, ..Default::default() },
            ..Default::default()
        };
        for method in [Method::Fitnets, Method::Crd] {
            let student = Model::new(&student_arch, 4, 3, backend, 2).unwrap();
            let head = |i: u64, d_in, d_out| seeded_linear(d_in, d_out, backend, i);
            let mut trainee = Trainee {
                student: student.model.clone().train(),
                hint: Some(head(0, 5, 6)),
                project_student: Some(head(1, 5, 7)),
                project_teacher: Some(head(2, 6, 7)),
            };
            let before = (params(&trainee.hint), params(&trainee.project_student), params(&trainee.project_teacher));
            let device = backend.device().autodiff();
            let x = rows_tensor(&inputs, &[0, 1, 2, 3], 4, &device);
            let f = trainee.student.features(x.clone());
            let t = teacher.model.valid().features(rows_tensor(&inputs, &[0, 1, 2, 3], 4, &backend.device()));
            let loss = feature_term(&trainee, f, t, method, &cfg, &device);
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            let mut optim = cfg.train.optimizer();
            trainee = optim.step(1e-2, trainee, grads);
            let after = (params(&trainee.hint), params(&trainee.project_student), params(&trainee.project_teacher));
            match method {
                Method::Fitnets => {
                    assert_ne!(before.0, after.0, "the regressor learnt");
                    assert_eq!(before.1, after.1, "CRD heads are not in FitNets' loss");
                }
                _ => {
                    assert_ne!(before.1, after.1, "the student's projection head learnt");
                    assert_ne!(before.2, after.2, "the teacher's projection head learnt");
                    assert_eq!(before.0, after.0, "the regressor is not in CRD's loss");
                }
            }
            let lesson = Lesson { targets: Some(&targets), teacher: &teacher, method };
            let (_, losses) = train(&student_arch, &lesson, &public, &cfg, 3).unwrap();
            assert!(losses.iter().all(|l| l.is_finite()) && losses.len() == 1);
        }
    }

    #[test]
    fn impossible_combinations_are_refused_before_training() {
        let backend = BackendKind::Flex;
        let mlp = Architecture::Mlp { hidden: vec![6], dropout: 0.0 };
        let cnn = Architecture::Cnn { channels: [2, 2], hidden: 4, dropout: 0.0 };
        let teacher = Model::new(&cnn, 16, 3, backend, 1).unwrap();
        let public = PublicSet { inputs: &[0.0; 16], labels: None, consensus: None };
        assert!(matches!(check(&teacher, &mlp, Method::Attention, &public), Err(Error::Config(_))));
        assert!(check(&teacher, &cnn, Method::Attention, &public).is_ok());
        assert!(matches!(check(&teacher, &mlp, Method::Baseline, &public), Err(Error::Config(_))));
        assert!(matches!(check(&teacher, &mlp, Method::MultiTeacher, &public), Err(Error::Config(_))));
        assert!(matches!(check(&teacher, &mlp, Method::BornAgain, &public), Err(Error::Config(_))));
        assert!(check(&teacher, &cnn, Method::BornAgain, &public).is_ok());
    }
}
