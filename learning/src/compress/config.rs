//! What a compression run is asked for: its [`Method`] and its settings ([`CompressConfig`]), as
//! written in configuration files and command lines, checked by `validate` before any run.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::TrainConfig;

/// How a student learns from the global model (the teacher).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// No distillation: the student trained on the public set's true labels (cross-entropy).
    Baseline,
    /// Logit KD: (1 − α) · KL(teacher ‖ student) at temperature T, times T², + α · CE where the
    /// public set has labels.
    Kd,
    /// Logit KD with the squared error between centred logits instead of the KL term.
    KdMse,
    /// FitNets hints: logit KD + β · squared error between a learned linear regressor of the
    /// student's hidden representation and the teacher's.
    Fitnets,
    /// Attention transfer: logit KD + β/2 · Σ over both convolutions of the squared error
    /// between normalised spatial attention maps. CNN teacher and CNN student only.
    Attention,
    /// Contrastive representation distillation: logit KD + β · symmetric in-batch InfoNCE
    /// between the student's and teacher's hidden representations through projection heads.
    Crd,
    /// Born-again networks: students of the teacher's architecture, each generation distilled
    /// (logit KD) from the one before, the first from the teacher.
    BornAgain,
    /// Multi-teacher: logit KD towards the weighted mean of the consensus soft labels and the
    /// global student's.
    MultiTeacher,
}

impl Method {
    /// Every method, in the order of tables.
    pub const ALL: [Method; 8] = [
        Method::Baseline,
        Method::Kd,
        Method::KdMse,
        Method::Fitnets,
        Method::Attention,
        Method::Crd,
        Method::BornAgain,
        Method::MultiTeacher,
    ];

    /// The name in files and on the command line (`kd-mse`, `born-again`, …).
    pub fn name(self) -> &'static str {
        match self {
            Method::Baseline => "baseline",
            Method::Kd => "kd",
            Method::KdMse => "kd-mse",
            Method::Fitnets => "fitnets",
            Method::Attention => "attention",
            Method::Crd => "crd",
            Method::BornAgain => "born-again",
            Method::MultiTeacher => "multi-teacher",
        }
    }

    /// The method of a name, as [`Method::name`] gives it.
    pub fn from_name(name: &str) -> Result<Method, Error> {
        Method::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            Error::Config(format!("unknown compression method `{name}`: one of {}", names.join(", ")))
        })
    }

    /// The default weight β of the method's feature term (0 for methods without one): FitNets 1,
    /// attention transfer 1000 (Zagoruyko and Komodakis), CRD 0.8 (Tian et al.).
    pub fn default_beta(self) -> f32 {
        match self {
            Method::Fitnets => 1.0,
            Method::Attention => 1000.0,
            Method::Crd => 0.8,
            _ => 0.0,
        }
    }
}

/// Settings of a compression run (every method reads those it needs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressConfig {
    /// Softmax temperature T of the logit term.
    pub temperature: f32,
    /// Weight α of the cross-entropy on the public set's labels in the logit term (used only
    /// where the set has labels).
    pub alpha: f32,
    /// Weight β of the feature term (FitNets, attention, CRD); unset: the method's default
    /// ([`Method::default_beta`]).
    pub beta: Option<f32>,
    /// Width of CRD's projection heads.
    pub crd_dim: usize,
    /// CRD's InfoNCE temperature τ.
    pub crd_temperature: f32,
    /// Born-again generations.
    pub generations: usize,
    /// Also score the ensemble of the born-again generations (the mean of their probabilities).
    pub ensemble: bool,
    /// Multi-teacher: weight of the consensus soft labels (the global student's is 1 minus it).
    pub consensus_weight: f32,
    /// Also store and score each student with int8 weights.
    pub int8: bool,
    /// Watts a busy logical core is charged when energy is estimated (no RAPL): the CPU's
    /// thermal design power divided by its logical cores. Unset: 85 W / logical cores.
    pub watts_per_core: Option<f64>,
    /// Optimiser, batch size, epochs of every student.
    pub train: TrainConfig,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            temperature: 4.0,
            alpha: 0.5,
            beta: None,
            crd_dim: 64,
            crd_temperature: 0.1,
            generations: 2,
            ensemble: true,
            consensus_weight: 0.5,
            int8: false,
            watts_per_core: None,
            // What the digits measurements used (docs/results.md): 500 public rows need the steps.
            train: TrainConfig { epochs: 30, batch_size: 32, learning_rate: 3e-3, ..TrainConfig::default() },
        }
    }
}

impl CompressConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), Error> {
        self.train.validate()?;
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.temperature) || !positive(self.crd_temperature) {
            return Err(Error::Config("temperature and crd_temperature must be positive".into()));
        }
        if !(0.0..=1.0).contains(&self.alpha) || !(0.0..=1.0).contains(&self.consensus_weight) {
            return Err(Error::Config("alpha and consensus_weight must be in [0, 1]".into()));
        }
        if self.beta.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
            return Err(Error::Config("beta must be ≥ 0".into()));
        }
        if self.crd_dim == 0 || self.generations == 0 || self.train.epochs == 0 {
            return Err(Error::Config("crd_dim, generations and epochs must be positive".into()));
        }
        if self.watts_per_core.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            return Err(Error::Config("watts_per_core must be positive".into()));
        }
        Ok(())
    }

    /// β of `method`.
    pub fn beta_of(&self, method: Method) -> f32 {
        self.beta.unwrap_or(method.default_beta())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()).unwrap(), m);
            let toml = serde_json::to_string(&m).unwrap();
            assert_eq!(toml, format!("\"{}\"", m.name()));
        }
        assert!(matches!(Method::from_name("dark-knowledge"), Err(Error::Config(_))));
        assert!(CompressConfig::default().validate().is_ok());
        assert!(CompressConfig { alpha: 2.0, ..Default::default() }.validate().is_err());
        assert!(CompressConfig { generations: 0, ..Default::default() }.validate().is_err());
    }
}

/// A student architecture as the command line writes it: `same` (the teacher's, `None`),
/// `mlp:W1,W2,…` (hidden widths; `mlp:` alone is softmax regression) or `cnn:C1,C2,H` (the two
/// convolutions' channels and the hidden width).
pub fn parse_architecture(s: &str) -> Result<Option<crate::Architecture>, Error> {
    use crate::Architecture;
    let bad = || Error::Config(format!("student architecture `{s}`: write same, mlp:W1,W2,… or cnn:C1,C2,H"));
    let numbers = |list: &str| -> Result<Vec<usize>, Error> {
        list.split(',').filter(|w| !w.trim().is_empty()).map(|w| w.trim().parse().map_err(|_| bad())).collect()
    };
    match s.trim().split_once(':') {
        None if s.trim() == "same" => Ok(None),
        Some(("mlp", widths)) => Ok(Some(Architecture::Mlp { hidden: numbers(widths)?, dropout: 0.0 })),
        Some(("cnn", spec)) => match numbers(spec)?[..] {
            [c1, c2, hidden] => Ok(Some(Architecture::Cnn { channels: [c1, c2], hidden, dropout: 0.0 })),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;
    use crate::Architecture;

    #[test]
    fn architectures_from_the_command_line() {
        assert_eq!(parse_architecture("same").unwrap(), None);
        assert_eq!(
            parse_architecture("mlp:32,16").unwrap(),
            Some(Architecture::Mlp { hidden: vec![32, 16], dropout: 0.0 })
        );
        assert_eq!(parse_architecture("mlp:").unwrap(), Some(Architecture::Mlp { hidden: vec![], dropout: 0.0 }));
        assert_eq!(
            parse_architecture("cnn:4,8,32").unwrap(),
            Some(Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.0 })
        );
        for bad in ["cnn:4,8", "rnn:3", "mlp:a", ""] {
            assert!(parse_architecture(bad).is_err(), "{bad}");
        }
    }
}
