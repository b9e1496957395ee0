//! Models: an MLP and a small CNN for square single-channel images, behind one [`Layers`] enum.
//!
//! Every model maps a batch of flat feature rows `[batch, input_dim]` to logits
//! `[batch, classes]`. Nodes may use different architectures; only the class count must agree.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Error;

mod features;
pub(crate) use features::Features;

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
    pub fn validate(&self, input_dim: usize, classes: usize) -> Result<(), Error> {
        if classes < 2 || input_dim == 0 {
            return Err(Error::Config(format!("{input_dim} inputs and {classes} classes")));
        }
        match self {
            Architecture::Mlp { hidden, dropout } => {
                if hidden.contains(&0) {
                    return Err(Error::Config("mlp hidden widths must be positive".into()));
                }
                check_dropout(*dropout)
            }
            Architecture::Cnn { channels, hidden, dropout } => {
                let side = image_side(input_dim)?;
                if side < 4 {
                    return Err(Error::Config(format!("cnn needs images of at least 4×4, got {side}×{side}")));
                }
                if channels.contains(&0) || *hidden == 0 {
                    return Err(Error::Config("cnn channels and hidden width must be positive".into()));
                }
                check_dropout(*dropout)
            }
        }
    }

    /// Builds a freshly initialised model on `device`.
    pub fn init(&self, input_dim: usize, classes: usize, device: &Device) -> Result<Layers, Error> {
        self.validate(input_dim, classes)?;
        Ok(match self {
            Architecture::Mlp { hidden, dropout } => {
                Layers::Mlp(MlpConfig::new(input_dim, hidden.clone(), classes).with_dropout(*dropout).init(device))
            }
            Architecture::Cnn { channels, hidden, dropout } => Layers::Cnn(
                CnnConfig::new(image_side(input_dim)?, *channels, *hidden, classes).with_dropout(*dropout).init(device),
            ),
        })
    }

    /// Whether the forward pass draws random numbers (dropout).
    pub fn uses_rng(&self) -> bool {
        match self {
            Architecture::Mlp { dropout, .. } | Architecture::Cnn { dropout, .. } => *dropout > 0.0,
        }
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

fn check_dropout(p: f64) -> Result<(), Error> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("dropout {p} must be in [0, 1)")));
    }
    Ok(())
}

fn image_side(input_dim: usize) -> Result<usize, Error> {
    let side = (input_dim as f64).sqrt().round() as usize;
    if side * side != input_dim {
        return Err(Error::Config(format!("cnn needs a square image, {input_dim} inputs is not one")));
    }
    Ok(side)
}

/// burn configuration of an [`Mlp`] (what [`Architecture::Mlp`] resolves to for given data).
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Features per input row.
    pub input_dim: usize,
    /// Widths of the hidden layers (may be empty: softmax regression).
    pub hidden: Vec<usize>,
    /// Number of classes (outputs).
    pub classes: usize,
    /// Dropout probability after each hidden layer.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl MlpConfig {
    /// A freshly initialised MLP on `device`. Validate with [`Architecture::validate`] first:
    /// burn's layer configs panic on zero widths.
    pub fn init(&self, device: &Device) -> Mlp {
        let mut widths = vec![self.input_dim];
        widths.extend_from_slice(&self.hidden);
        widths.push(self.classes);
        Mlp {
            layers: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect(),
            act: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// burn configuration of a [`Cnn`] (what [`Architecture::Cnn`] resolves to for given data).
#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Side of the square single-channel input images.
    pub side: usize,
    /// Output channels of the two 3×3 convolutions.
    pub channels: [usize; 2],
    /// Width of the hidden linear layer.
    pub hidden: usize,
    /// Number of classes (outputs).
    pub classes: usize,
    /// Dropout probability before the last layer.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl CnnConfig {
    /// A freshly initialised CNN on `device`. Validate with [`Architecture::validate`] first.
    pub fn init(&self, device: &Device) -> Cnn {
        let pooled = self.side / 2 / 2;
        let conv = |cin, cout| Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Same).init(device);
        Cnn {
            conv1: conv(1, self.channels[0]),
            conv2: conv(self.channels[0], self.channels[1]),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(self.channels[1] * pooled * pooled, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.classes).init(device),
            act: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            side: self.side,
        }
    }
}

/// What per-example gradient norms need of one weight layer (see [`crate::dp`]): its input,
/// without autodiff, and a zero `probe` added to its output, whose gradient is the gradient of
/// the loss at the layer's output, row by row.
pub(crate) enum Tap {
    /// A linear layer: input `[batch, in]`, probe `[batch, out]`.
    Linear { input: Tensor<2>, probe: Tensor<2> },
    /// A 3×3 convolution with stride 1 and padding 1 ("same"): input `[batch, cin, h, w]`,
    /// probe `[batch, cout, h, w]`.
    Conv3x3 { input: Tensor<4>, probe: Tensor<4> },
}

fn probe_like<const D: usize>(out: &Tensor<D>) -> Tensor<D> {
    Tensor::zeros(out.dims(), &out.device()).require_grad()
}

fn tap_linear(layer: &Linear, h: Tensor<2>, taps: &mut Vec<Tap>) -> Tensor<2> {
    let input = h.clone().inner();
    let out = layer.forward(h);
    let probe = probe_like(&out);
    taps.push(Tap::Linear { input, probe: probe.clone() });
    out + probe
}

fn tap_conv(layer: &Conv2d, h: Tensor<4>, taps: &mut Vec<Tap>) -> Tensor<4> {
    let input = h.clone().inner();
    let out = layer.forward(h);
    let probe = probe_like(&out);
    taps.push(Tap::Conv3x3 { input, probe: probe.clone() });
    out + probe
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

    fn forward_tapped(&self, x: Tensor<2>, taps: &mut Vec<Tap>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = tap_linear(layer, h, taps);
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

    fn forward_tapped(&self, x: Tensor<2>, taps: &mut Vec<Tap>) -> Tensor<2> {
        let [batch, _] = x.dims();
        let x = x.reshape([batch, 1, self.side, self.side]);
        let h = self.pool.forward(self.act.forward(tap_conv(&self.conv1, x, taps)));
        let h = self.pool.forward(self.act.forward(tap_conv(&self.conv2, h, taps)));
        let h: Tensor<2> = h.flatten(1, 3);
        let h = self.dropout.forward(self.act.forward(tap_linear(&self.fc1, h, taps)));
        tap_linear(&self.fc2, h, taps)
    }
}

/// Any model of this crate.
// One `Layers` per model owner: boxing the CNN would add an indirection to every forward pass
// to save a kilobyte per model.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Layers {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`Cnn`].
    Cnn(Cnn),
}

impl Layers {
    /// `[batch, input_dim]` → logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Layers::Mlp(m) => m.forward(x),
            Layers::Cnn(m) => m.forward(x),
        }
    }

    /// [`forward`](Self::forward), recording a [`Tap`] per weight layer.
    pub(crate) fn forward_tapped(&self, x: Tensor<2>, taps: &mut Vec<Tap>) -> Tensor<2> {
        match self {
            Layers::Mlp(m) => m.forward_tapped(x, taps),
            Layers::Cnn(m) => m.forward_tapped(x, taps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendKind;

    #[test]
    fn architectures_resolve_to_burn_configs_that_round_trip() {
        let device = BackendKind::Flex.device();
        let mlp = MlpConfig::new(64, vec![32, 16], 10).with_dropout(0.25);
        let back = MlpConfig::load_binary(mlp.to_string().as_bytes()).unwrap();
        assert_eq!((back.input_dim, back.hidden.clone(), back.classes, back.dropout), (64, vec![32, 16], 10, 0.25));
        // 64·32+32 + 32·16+16 + 16·10+10
        assert_eq!(back.init(&device).num_params(), 2080 + 528 + 170);

        let cnn = CnnConfig::new(28, [4, 8], 32, 10);
        let back = CnnConfig::load_binary(cnn.to_string().as_bytes()).unwrap();
        assert_eq!((back.side, back.channels, back.hidden, back.classes, back.dropout), (28, [4, 8], 32, 10, 0.0));
        // conv 1→4 and 4→8 (3×3 + bias), then 8·7·7 → 32 → 10
        assert_eq!(back.init(&device).num_params(), (9 * 4 + 4) + (36 * 8 + 8) + (392 * 32 + 32) + (32 * 10 + 10));

        let arch = Architecture::Cnn { channels: [4, 8], hidden: 32, dropout: 0.0 };
        assert_eq!(arch.init(784, 10, &device).unwrap().num_params(), back.init(&device).num_params());
        assert!(arch.init(785, 10, &device).is_err(), "not a square image");
        assert!(Architecture::Mlp { hidden: vec![0], dropout: 0.0 }.init(64, 10, &device).is_err());
    }
}
