"""Runs an MLP exported by fedistil as safetensors in plain numpy, as PyTorch's nn.Linear would.

Usage: mlp_safetensors_check.py MODEL.safetensors INPUTS.f32 EXPECTED.f32 INPUT_DIM CLASSES

Each layer `Mlp.layers.{i}` must hold `weight` in PyTorch's [out, in] layout and `bias`; the
forward pass is x @ W.T + b with ReLU between layers. Prints the largest absolute difference
from burn's logits; exits non-zero if the layout or the values disagree.
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def main() -> int:
    path, inputs_path, expected_path = sys.argv[1:4]
    dim, classes = int(sys.argv[4]), int(sys.argv[5])
    tensors = load_file(path)
    x = np.fromfile(inputs_path, dtype="<f4").reshape(-1, dim)
    expected = np.fromfile(expected_path, dtype="<f4").reshape(-1, classes)
    layers = sorted({int(k.split(".")[2]) for k in tensors if k.startswith("Mlp.layers.")})
    h = x
    for i in layers:
        w, b = tensors[f"Mlp.layers.{i}.weight"], tensors[f"Mlp.layers.{i}.bias"]
        if w.shape != (b.shape[0], h.shape[1]):
            print(f"layer {i}: weight {w.shape} is not [out, in] for input width {h.shape[1]}")
            return 1
        h = h @ w.T + b
        if i != layers[-1]:
            h = np.maximum(h, 0.0)
    diff = float(np.max(np.abs(h - expected)))
    print(diff)
    return 0 if diff <= 1e-4 * max(1.0, float(np.max(np.abs(expected)))) else 1


if __name__ == "__main__":
    sys.exit(main())
