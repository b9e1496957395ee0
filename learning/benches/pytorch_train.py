"""PyTorch baseline for `cargo bench -p learning -- --pytorch PYTHON`.

Trains the same models as benches/learning.rs on the same data, batch size, optimiser and
thread count, with the same per-batch work: gather the batch rows, forward, cross-entropy, read
the loss, backward, Adam step. Then soft labels softmax(z / 3) at batch 256 without gradients.
Prints lines `PyTorch<TAB>threads<TAB>what<TAB>samples/s`, as the Rust bench's children do.

Usage: pytorch_train.py DATA_DIR THREADS [--quick]
"""
import gzip
import sys
import time

import numpy as np
import torch
from torch import nn


def digits(data_dir):
    rows = np.loadtxt(gzip.open(f"{data_dir}/digits/digits.csv.gz", "rt"), delimiter=",", dtype=np.float32)
    return rows[:, :-1] / 16.0, rows[:, -1].astype(np.int64)


def mnist(data_dir, n):
    with gzip.open(f"{data_dir}/mnist/train-images-idx3-ubyte.gz", "rb") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(f"{data_dir}/mnist/train-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return images[:n].astype(np.float32) / 255.0, labels[:n].astype(np.int64)


def mlp(widths):
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def epoch(model, opt, x, y, seed):
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for idx in order.split(64):
        loss = loss_fn(model(x[idx]), y[idx])
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_rate(model, x, y):
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    warm = min(len(x), 640)
    epoch(model, opt, x[:warm], y[:warm], 1)
    t = time.perf_counter()
    epoch(model, opt, x, y, 2)
    return len(x) / (time.perf_counter() - t)


def main():
    data_dir, threads = sys.argv[1], int(sys.argv[2])
    quick = "--quick" in sys.argv
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    n = 500 if quick else 10_000
    dx, dy = digits(data_dir)
    mx, my = mnist(data_dir, n)
    tag = f"PyTorch\t{threads}"
    print(f"{tag}\ttrain mlp 64-128-10 digits\t{train_rate(mlp([64, 128, 10]), dx, dy):.0f}", flush=True)
    print(f"{tag}\ttrain mlp 784-256-10 mnist\t{train_rate(mlp([784, 256, 10]), mx, my):.0f}", flush=True)
    q = n // 4
    print(f"{tag}\ttrain cnn 8x16-64 mnist\t{train_rate(cnn(), mx[:q], my[:q]):.0f}", flush=True)
    model = mlp([784, 256, 10]).eval()
    x = torch.from_numpy(mx)
    with torch.no_grad():
        for b in x[:256].split(256):
            torch.softmax(model(b) / 3.0, 1)
        t = time.perf_counter()
        probs = [torch.softmax(model(b) / 3.0, 1) for b in x.split(256)]
        rate = len(x) / (time.perf_counter() - t)
    assert sum(len(p) for p in probs) == len(x)
    print(f"{tag}\tsoft labels mlp 784-256-10 mnist\t{rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
