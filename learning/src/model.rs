//! Models: an MLP and a small CNN for square single-channel images, behind one [`Model`] enum.
//!
//! Every model maps a batch of flat feature rows `[batch, input_dim]` to logits
//! `[batch, classes]`. Nodes may use different architectures; only the class count must agree.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::LearningError;

/// Which CPU backend runs the tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's newer pure-Rust CPU backend (recommended by burn).
    #[default]
    Flex,
    /// burn-ndarray.
    Ndarray,
}

impl BackendKind {
    /// The inference device of this backend.
    pub fn device(self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[allow(deprecated)]
            BackendKind::Ndarray => Device::ndarray(),
        }
    }

    /// Seeds the backend's random generator (parameter initialisation, dropout).
    ///
    /// The generator is process-wide per backend: runs that must be reproducible initialise and
    /// train models one at a time.
    pub fn seed(self, seed: u64) {
        self.device().seed(seed);
    }
}

/// Architecture of a model, as written in configuration files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Fully connected layers with ReLU between them.
    Mlp {
        /// Widths of the hidden layers (may be empty: softmax regression).
        hidden: Vec<usize>,
        /// Dropout probability after each hidden layer.
        #[serde(default)]
        dropout: f64,
    },
    /// Two 3×3 convolutions (ReLU, 2×2 max-pool each), then a hidden linear layer.
    /// The input must be a square single-channel image, flattened.
    Cnn {
        /// Output channels of the two convolutions.
        channels: [usize; 2],
        /// Width of the hidden linear layer.
        hidden: usize,
        /// Dropout probability before the last layer.
        #[serde(default)]
        dropout: f64,
    },
}

impl Architecture {
    /// Checks the architecture against the data's shape.
    pub fn validate(&self, input_dim: usize, classes: usize) -> Result<(), LearningError> {
        if classes < 2 || input_dim == 0 {
            return Err(LearningError::Config(format!("{input_dim} inputs and {classes} classes")));
        }
        match self {
            Architecture::Mlp { hidden, dropout } => {
                if hidden.contains(&0) {
                    return Err(LearningError::Config("mlp hidden widths must be positive".into()));
                }
                check_dropout(*dropout)
            }
            Architecture::Cnn { channels, hidden, dropout } => {
                let side = image_side(input_dim)?;
                if side < 4 {
                    return Err(LearningError::Config(format!("cnn needs images of at least 4×4, got {side}×{side}")));
                }
                if channels.contains(&0) || *hidden == 0 {
                    return Err(LearningError::Config("cnn channels and hidden width must be positive".into()));
                }
                check_dropout(*dropout)
            }
        }
    }

    /// Builds a freshly initialised model on `device`.
    pub fn init(&self, input_dim: usize, classes: usize, device: &Device) -> Result<Model, LearningError> {
        self.validate(input_dim, classes)?;
        Ok(match self {
            Architecture::Mlp { hidden, dropout } => {
                let mut widths = vec![input_dim];
                widths.extend_from_slice(hidden);
                widths.push(classes);
                Model::Mlp(Mlp {
                    layers: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect(),
                    act: Relu::new(),
                    dropout: DropoutConfig::new(*dropout).init(),
                })
            }
            Architecture::Cnn { channels, hidden, dropout } => {
                let side = image_side(input_dim)?;
                let pooled = side / 2 / 2;
                let conv = |cin, cout| {
                    Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Same).init(device)
                };
                Model::Cnn(Cnn {
                    conv1: conv(1, channels[0]),
                    conv2: conv(channels[0], channels[1]),
                    pool: MaxPool2dConfig::new([2, 2]).init(),
                    fc1: LinearConfig::new(channels[1] * pooled * pooled, *hidden).init(device),
                    fc2: LinearConfig::new(*hidden, classes).init(device),
                    act: Relu::new(),
                    dropout: DropoutConfig::new(*dropout).init(),
                    side,
                })
            }
        })
    }

    /// A short label for tables, e.g. `mlp 64-128-10`.
    pub fn label(&self, input_dim: usize, classes: usize) -> String {
        match self {
            Architecture::Mlp { hidden, .. } => {
                let mut w = vec![input_dim];
                w.extend_from_slice(hidden);
                w.push(classes);
                format!("mlp {}", w.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("-"))
            }
            Architecture::Cnn { channels, hidden, .. } => {
                format!("cnn {}x{}-{}-{}", channels[0], channels[1], hidden, classes)
            }
        }
    }
}

fn check_dropout(p: f64) -> Result<(), LearningError> {
    if !(0.0..1.0).contains(&p) {
        return Err(LearningError::Config(format!("dropout {p} must be in [0, 1)")));
    }
    Ok(())
}

fn image_side(input_dim: usize) -> Result<usize, LearningError> {
    let side = (input_dim as f64).sqrt().round() as usize;
    if side * side != input_dim {
        return Err(LearningError::Config(format!("cnn needs a square image, {input_dim} inputs is not one")));
    }
    Ok(side)
}

/// Multi-layer perceptron.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    act: Relu,
    dropout: Dropout,
}

impl Mlp {
    /// `[batch, input_dim]` → logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = self.dropout.forward(self.act.forward(h));
            }
        }
        h
    }
}

/// Small convolutional network for square greyscale images.
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    act: Relu,
    dropout: Dropout,
    side: usize,
}

impl Cnn {
    /// `[batch, side²]` → logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [batch, _] = x.dims();
        self.forward_images(x.reshape([batch, 1, self.side, self.side]))
    }

    /// Side of the square input images.
    pub fn side(&self) -> usize {
        self.side
    }

    /// `[batch, 1, side, side]` images → logits `[batch, classes]`.
    pub fn forward_images(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(self.act.forward(self.conv1.forward(x)));
        let h = self.pool.forward(self.act.forward(self.conv2.forward(h)));
        let h: Tensor<2> = h.flatten(1, 3);
        let h = self.dropout.forward(self.act.forward(self.fc1.forward(h)));
        self.fc2.forward(h)
    }
}

/// Any model of this crate.
#[derive(Module, Debug)]
pub enum Model {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`Cnn`].
    Cnn(Cnn),
}

impl Model {
    /// `[batch, input_dim]` → logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Model::Mlp(m) => m.forward(x),
            Model::Cnn(m) => m.forward(x),
        }
    }
}
