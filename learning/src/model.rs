//! [`Model`]: a model with what is needed to use, save and reload it (architecture, shapes,
//! backend), plus batched inference, soft labels, atomic saving, and its parameters as plain
//! vectors (for weight averaging outside this crate). Export to other frameworks is in
//! [`crate::export`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::{Architecture, Layers};
use crate::backend::{BackendKind, RngGuard};
use crate::fs::atomic_write;
use crate::tensor::{argmax, read, rows_tensor};

/// Metadata saved beside the weights (`<name>.json` next to `<name>.bpk`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Architecture.
    pub architecture: Architecture,
    /// Features per input row.
    pub input_dim: usize,
    /// Number of classes.
    pub classes: usize,
}

/// A model and its shapes.
#[derive(Clone, Debug)]
pub struct Model {
    /// Architecture it was built from.
    pub architecture: Architecture,
    /// Features per input row.
    pub input_dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// Backend running it.
    pub backend: BackendKind,
    /// The weights (on the backend's autodiff device while training).
    pub model: Layers,
}

impl Model {
    /// A freshly initialised network; `seed` makes the initial weights reproducible, even when
    /// other threads create networks at the same time.
    pub fn new(
        architecture: &Architecture,
        input_dim: usize,
        classes: usize,
        backend: BackendKind,
        seed: u64,
    ) -> Result<Self, Error> {
        let _rng = backend.hold_rng(seed);
        let model = architecture.init(input_dim, classes, &backend.device().autodiff())?;
        let net = Self { architecture: architecture.clone(), input_dim, classes, backend, model };
        // Parameters initialise lazily; touch them now so the seed above decides them.
        net.model.num_params();
        net.logits(&vec![0.0; input_dim], 1)?;
        Ok(net)
    }

    /// The metadata to save beside the weights.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec { architecture: self.architecture.clone(), input_dim: self.input_dim, classes: self.classes }
    }

    /// Checks that data of this shape can be used with the network.
    pub fn check_data(&self, dim: usize, classes: usize) -> Result<(), Error> {
        if dim != self.input_dim || classes > self.classes {
            return Err(Error::Shape(format!(
                "data has {dim} features and {classes} classes, the network takes {} and predicts {}",
                self.input_dim, self.classes
            )));
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    /// Logits for row-major `inputs` (`rows × input_dim`), in batches of `batch`.
    pub fn logits(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
        if !inputs.len().is_multiple_of(self.input_dim) {
            return Err(Error::Shape(format!("{} values are not rows of {}", inputs.len(), self.input_dim)));
        }
        let rows: Vec<usize> = (0..inputs.len() / self.input_dim).collect();
        logits_of(&self.model.valid(), inputs, &rows, self.input_dim, self.backend, batch)
    }

    /// Soft labels softmax(z / T) for row-major `inputs`.
    pub fn soft_labels(&self, inputs: &[f32], temperature: f32, batch: usize) -> Result<Vec<f32>, Error> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::Config(format!("temperature {temperature} must be positive")));
        }
        let z = self.logits(inputs, batch)?;
        Ok(softmax_rows(&z, self.classes, temperature))
    }

    /// Predicted class of each row.
    pub fn predict(&self, inputs: &[f32]) -> Result<Vec<u32>, Error> {
        let z = self.logits(inputs, 256)?;
        Ok(z.chunks_exact(self.classes).map(|r| argmax(r) as u32).collect())
    }

    /// Burnpack bytes of the weights. Burnpack stores each parameter's id beside its values, and
    /// burn draws a new id at random for every parameter it makes (from the thread's generator,
    /// not from the model's seed), so two runs of one seed wrote different files for the same
    /// values. Here the ids are numbered in the order the layers hold the parameters (0, 1, …):
    /// the same values give the same bytes. A model loaded from them gets these ids; they only
    /// have to be unique within the model (what an optimizer keys its state by).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let numbered = self.model.valid().map(&mut NumberIds(0));
        let bytes = numbered.into_record().into_bytes().map_err(|source| Error::Weights { path: None, source })?;
        Ok(bytes.to_vec())
    }

    /// Rebuilds a network from its spec and burnpack bytes.
    pub fn from_bytes(spec: &ModelSpec, bytes: Vec<u8>, backend: BackendKind) -> Result<Self, Error> {
        let model = spec.architecture.init(spec.input_dim, spec.classes, &backend.device().autodiff())?;
        let weights = |source| Error::Weights { path: None, source };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(weights)?;
        let model = model.try_load_record(record).map_err(weights)?;
        Ok(Self {
            architecture: spec.architecture.clone(),
            input_dim: spec.input_dim,
            classes: spec.classes,
            backend,
            model,
        })
    }

    /// Saves `<path>.bpk` (burnpack weights) and `<path>.json` (spec), each atomically.
    /// Returns the size of the weights file in bytes.
    pub fn save(&self, path: &Path) -> Result<u64, Error> {
        let spec_path = path.with_extension("json");
        let spec = serde_json::to_vec_pretty(&self.spec())
            .map_err(|source| Error::Spec { path: spec_path.clone(), source })?;
        atomic_write(&spec_path, &spec)?;
        let weights = self.to_bytes()?;
        atomic_write(&path.with_extension("bpk"), &weights)?;
        Ok(weights.len() as u64)
    }

    /// Loads what [`Model::save`] wrote.
    pub fn load(path: &Path, backend: BackendKind) -> Result<Self, Error> {
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| Error::Io { path: p, source: e });
        let spec_path = path.with_extension("json");
        let spec: ModelSpec = serde_json::from_slice(&read(spec_path.clone())?)
            .map_err(|source| Error::Spec { path: spec_path, source })?;
        let bpk = path.with_extension("bpk");
        Self::from_bytes(&spec, read(bpk.clone())?, backend).map_err(|e| match e {
            Error::Weights { path: None, source } => Error::Weights { path: Some(bpk), source },
            e => e,
        })
    }

    /// The values of every float parameter (weights and biases), one vector each, in the
    /// order the model's layers hold them: the order [`Model::with_parameters`] takes.
    pub fn parameters(&self) -> Result<Vec<Vec<f32>>, Error> {
        let mut c = Collect(Ok(Vec::new()));
        self.model.visit(&mut c);
        c.0
    }

    /// The same model with every float parameter replaced by `values`, given as
    /// [`Model::parameters`] returns them (as many vectors, of the same lengths).
    pub fn with_parameters(&self, values: Vec<Vec<f32>>) -> Result<Model, Error> {
        let mut sizes = Sizes(Vec::new());
        self.model.visit(&mut sizes);
        let given: Vec<usize> = values.iter().map(Vec::len).collect();
        if given != sizes.0 {
            return Err(Error::Shape(format!(
                "parameters of sizes {given:?} for a model whose parameters have sizes {:?}",
                sizes.0
            )));
        }
        let model = self.model.clone().map(&mut Replace(values.into_iter()));
        Ok(Model {
            architecture: self.architecture.clone(),
            input_dim: self.input_dim,
            classes: self.classes,
            backend: self.backend,
            model,
        })
    }

    /// Dropout draws from burn's process-wide generator: a network that uses it holds the
    /// generator, seeded, for the whole run; one that does not leaves it alone.
    pub(crate) fn hold_dropout_rng(&self, seed: u64) -> Option<RngGuard> {
        self.architecture.uses_rng().then(|| self.backend.hold_rng(seed))
    }

    /// Reseeds dropout's generator, held by this run (see [`Model::hold_dropout_rng`]), so that
    /// two passes over one batch draw the same masks.
    pub(crate) fn reseed_dropout(&self, seed: u64) {
        if self.architecture.uses_rng() {
            self.backend.seed(seed);
        }
    }

    /// Mean inference latency in µs per sample at the given batch size (best of `repeats` runs
    /// after one warm-up).
    pub fn latency_us(&self, batch: usize, repeats: usize) -> Result<f64, Error> {
        let model = self.model.valid();
        let device = self.backend.device();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32; batch * self.input_dim], [batch, self.input_dim]),
            &device,
        );
        let run = || -> Result<f64, Error> {
            let t = Instant::now();
            let out = read(model.forward(x.clone()))?;
            std::hint::black_box(out);
            Ok(t.elapsed().as_secs_f64() * 1e6 / batch as f64)
        };
        run()?;
        (0..repeats.max(1)).try_fold(f64::INFINITY, |best, _| Ok(best.min(run()?)))
    }
}

/// Logits of an inference-mode model for the given rows.
pub(crate) fn logits_of(
    model: &Layers,
    inputs: &[f32],
    rows: &[usize],
    dim: usize,
    backend: BackendKind,
    batch: usize,
) -> Result<Vec<f32>, Error> {
    let device = backend.device();
    let mut out = Vec::with_capacity(rows.len());
    for idx in rows.chunks(batch.max(1)) {
        let x = rows_tensor(inputs, idx, dim, &device);
        out.extend(read(model.forward(x))?);
    }
    Ok(out)
}

/// Row-wise softmax(z / T), computed stably.
pub fn softmax_rows(logits: &[f32], classes: usize, temperature: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|z| ((z - m) / temperature).exp()).collect();
        let s: f32 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// Reads every float parameter; the first failed read is kept and ends the reading.
struct Collect(Result<Vec<Vec<f32>>, Error>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Ok(values) = &mut self.0 {
            match read(param.val()) {
                Ok(v) => values.push(v),
                Err(e) => self.0 = Err(e),
            }
        }
    }
}

/// The number of values of every float parameter (no tensor is read).
struct Sizes(Vec<usize>);

impl ModuleVisitor for Sizes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().shape().num_elements());
    }
}

/// Replaces every float parameter, in visiting order, by values already checked against [`Sizes`].
struct Replace(std::vec::IntoIter<Vec<f32>>);

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.0.next() {
            Some(values) => param.map(|t| Tensor::from_data(TensorData::new(values, t.shape()), &t.device())),
            None => param,
        }
    }
}

/// Gives every parameter, in visiting order, the id 0, 1, … (see [`Model::to_bytes`]).
struct NumberIds(u64);

impl NumberIds {
    fn next(&mut self) -> burn::module::ParamId {
        self.0 += 1;
        burn::module::ParamId::from(self.0 - 1)
    }
}

impl ModuleMapper for NumberIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = self.next();
        param
    }

    fn map_int<const D: usize>(&mut self, mut param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        param.id = self.next();
        param
    }

    fn map_bool<const D: usize>(&mut self, mut param: Param<Tensor<D, Bool>>) -> Param<Tensor<D, Bool>> {
        param.id = self.next();
        param
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_weight_file() {
        let arch = Architecture::Mlp { hidden: vec![8], dropout: 0.0 };
        let tmp = tempfile::tempdir().unwrap();
        let save = |name: &str, seed: u64| {
            let m = Model::new(&arch, 5, 3, BackendKind::Flex, seed).unwrap();
            m.save(&tmp.path().join(name)).unwrap();
            std::fs::read(tmp.path().join(name).with_extension("bpk")).unwrap()
        };
        let (a, b) = (save("a", 7), save("b", 7));
        // What was written before: burn's record holds the random ids, so its bytes differ.
        let burn_bytes = || {
            let m = Model::new(&arch, 5, 3, BackendKind::Flex, 7).unwrap();
            m.model.valid().into_record().into_bytes().unwrap().to_vec()
        };
        assert_ne!(burn_bytes(), burn_bytes(), "burn draws parameter ids at random");
        assert_eq!(a, b, "two models of one seed, built apart, are saved byte for byte alike");
        assert_ne!(a, save("c", 8), "another seed, other values");
        let loaded = Model::load(&tmp.path().join("a"), BackendKind::Flex).unwrap();
        assert_eq!(loaded.to_bytes().unwrap(), a, "a loaded model saves the file it was loaded from");
    }

    #[test]
    fn parameters_round_trip_and_replacements_are_checked() {
        let arch = Architecture::Mlp { hidden: vec![4], dropout: 0.0 };
        let m = Model::new(&arch, 3, 2, BackendKind::Flex, 1).unwrap();
        let p = m.parameters().unwrap();
        assert_eq!(p.iter().map(Vec::len).sum::<usize>(), m.num_params());
        assert_eq!(m.with_parameters(p.clone()).unwrap().parameters().unwrap(), p);

        let shifted: Vec<Vec<f32>> = p.iter().map(|v| v.iter().map(|x| x + 1.0).collect()).collect();
        let n = m.with_parameters(shifted.clone()).unwrap();
        assert_eq!(n.parameters().unwrap(), shifted);
        assert_ne!(n.logits(&[1.0, 2.0, 3.0], 1).unwrap(), m.logits(&[1.0, 2.0, 3.0], 1).unwrap());
        assert_eq!(m.parameters().unwrap(), p, "the original is untouched");

        assert!(matches!(m.with_parameters(p[1..].to_vec()), Err(Error::Shape(_))));
        let mut short = p.clone();
        short[0].pop();
        assert!(matches!(m.with_parameters(short), Err(Error::Shape(_))));
    }
}
