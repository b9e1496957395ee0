//! What feature-based distillation reads of a model besides its logits (see
//! [`crate::compress`]): the hidden representation that feeds the classifier and, for a CNN, the
//! feature maps of its convolutions. A child of `arch` because it walks the layers' private fields.

use burn::prelude::*;

use super::{Cnn, Layers, Mlp};

/// A forward pass with its intermediate activations.
pub(crate) struct Features {
    /// `[batch, classes]`.
    pub logits: Tensor<2>,
    /// The representation the last linear layer reads, after its ReLU, `[batch, width]`: an MLP's
    /// last hidden layer (its input for softmax regression), a CNN's hidden linear layer.
    pub hidden: Tensor<2>,
    /// A CNN's convolution outputs after ReLU, before pooling: `[batch, c1, side, side]` and
    /// `[batch, c2, side/2, side/2]`. Empty for an MLP.
    pub maps: Vec<Tensor<4>>,
}

impl Mlp {
    fn features(&self, x: Tensor<2>) -> Features {
        let last = self.layers.len() - 1;
        let mut h = x;
        for layer in &self.layers[..last] {
            h = self.dropout.forward(self.act.forward(layer.forward(h)));
        }
        Features { logits: self.layers[last].forward(h.clone()), hidden: h, maps: Vec::new() }
    }

    /// Width of [`Features::hidden`].
    fn hidden_width(&self) -> usize {
        let [input, _] = self.layers[self.layers.len() - 1].weight.shape().dims();
        input
    }
}

impl Cnn {
    fn features(&self, x: Tensor<2>) -> Features {
        let [batch, _] = x.dims();
        let x = x.reshape([batch, 1, self.side, self.side]);
        let a1 = self.act.forward(self.conv1.forward(x));
        let a2 = self.act.forward(self.conv2.forward(self.pool.forward(a1.clone())));
        let h: Tensor<2> = self.pool.forward(a2.clone()).flatten(1, 3);
        let hidden = self.dropout.forward(self.act.forward(self.fc1.forward(h)));
        Features { logits: self.fc2.forward(hidden.clone()), hidden, maps: vec![a1, a2] }
    }
}

impl Layers {
    /// The forward pass of [`Layers::forward`] with its intermediate activations.
    pub(crate) fn features(&self, x: Tensor<2>) -> Features {
        match self {
            Layers::Mlp(m) => m.features(x),
            Layers::Cnn(m) => m.features(x),
        }
    }

    /// Width of [`Features::hidden`].
    pub(crate) fn hidden_width(&self) -> usize {
        match self {
            Layers::Mlp(m) => m.hidden_width(),
            Layers::Cnn(m) => m.fc1.weight.shape().dims::<2>()[1],
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Architecture, BackendKind, Model};

    #[test]
    fn features_end_in_the_logits_of_forward() {
        let x = vec![0.25f32; 2 * 64];
        for (arch, width, maps) in [
            (Architecture::Mlp { hidden: vec![12, 7], dropout: 0.0 }, 7, 0),
            (Architecture::Mlp { hidden: vec![], dropout: 0.0 }, 64, 0),
            (Architecture::Cnn { channels: [3, 5], hidden: 9, dropout: 0.0 }, 9, 2),
        ] {
            let m = Model::new(&arch, 64, 4, BackendKind::Flex, 3).unwrap();
            let device = BackendKind::Flex.device();
            let t = crate::tensor::rows_tensor(&x, &[0, 1], 64, &device);
            let layers = burn::module::Module::valid(&m.model);
            let f = layers.features(t);
            let logits = crate::tensor::read(f.logits).unwrap();
            assert_eq!(logits, m.logits(&x, 2).unwrap());
            assert_eq!(f.hidden.dims(), [2, width]);
            assert_eq!(layers.hidden_width(), width);
            assert_eq!(f.maps.len(), maps);
            if maps == 2 {
                assert_eq!(f.maps[0].dims(), [2, 3, 8, 8]);
                assert_eq!(f.maps[1].dims(), [2, 5, 4, 4]);
            }
        }
    }
}
