#!/usr/bin/env python3
"""Train the bundled Fashion-MNIST models and export them to ONNX (dev-only; needs ``pip install torch==2.13.0``).

Produces ``dse/data/lenet5.onnx``, ``dse/data/resnet8.onnx`` and ``dse/data/vit.onnx`` (a small ViT: 7x7 patches,
cls token, position embedding, 2 pre-norm blocks with timm-style attention (permute(2, 0, 3, 1, 4)) and GELU MLPs,
the ``SmallViT`` of scripts/export_models.py) (opset 17) with metadata_props ``dse.preprocess``
(JSON: scale, mean, std; x = (raw * scale - mean) / std) and ``dse.description``. Trains on the 60000-image TRAIN set
only; the TEST set (bundled as calib/search/holdout splits) is used for the printed accuracy. Seeds are fixed and
``torch.set_num_threads(2)``; each model takes a few minutes on 2 cores.

Also (re)builds dse/data/fashion_mnist_test.npz (dse.data.build_bundled: TEST set, seeded calib/search/holdout split).

Models the search was not tuned on (not bundled): ``--only vgg`` trains a VGG-style network, and ``--seed N`` shifts
every model's training seed (bundled models: seed 0), e.g. a second LeNet-5 and a VGG into /tmp:
    python scripts/train_models.py --out /tmp/dse-models --only lenet5 --seed 10 --epochs-lenet 3 --no-data
    python scripts/train_models.py --out /tmp/dse-models --only vgg --seed 10 --epochs-vgg 2 --no-data

Usage: python scripts/train_models.py [--out dse/data] [--epochs-lenet 6] [--epochs-resnet 6] [--epochs-vgg 3]
       [--epochs-vit 3] [--only lenet5|resnet8|vgg|vit] [--seed 0] [--threads 2] [--data-only | --no-data]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train-set pixel mean/std (after /255)
PREPROCESS = {"scale": 1.0 / 255.0, "mean": [MEAN], "std": [STD]}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX (optionally gzipped) file into a numpy array."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(DATA_DIR / f"{kind}-images-idx3-ubyte.gz").astype(np.float32)
    y = read_idx(DATA_DIR / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
    x = (x * PREPROCESS["scale"] - MEAN) / STD
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


class LeNet5(nn.Module):
    """Classic LeNet-5 with ReLU and max pooling; padding=2 on the first conv (28x28 -> 32x32 as in LeCun 1998)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + (1x1 conv-BN projection), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.proj(x))


class ResNet8(nn.Module):
    """ResNet-8: stem conv3x3-16+BN+ReLU, three stride-2 basic blocks 16/32/64 (28->14->7->4), GAP, FC-10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = BasicBlock(16, 16, 2)
        self.stage2 = BasicBlock(16, 32, 2)
        self.stage3 = BasicBlock(32, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class VGGSmall(nn.Module):
    """VGG-style: two blocks of two conv3x3+ReLU (16, 32 channels) each followed by 2x2 max pooling (28->14->7),
    FC-128, FC-10; no batch norm."""

    def __init__(self) -> None:
        super().__init__()
        conv = lambda a, b: [nn.Conv2d(a, b, 3, 1, 1), nn.ReLU()]  # noqa: E731
        self.features = nn.Sequential(*conv(1, 16), *conv(16, 16), nn.MaxPool2d(2),
                                      *conv(16, 32), *conv(32, 32), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    return correct / len(x)


def train(model: nn.Module, xtr, ytr, xte, yte, epochs: int, lr: float, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            xb = xtr[idx]
            # light augmentation: random horizontal flip (Fashion-MNIST items are left/right symmetric classes)
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = evaluate(model, xte, yte)
        print(f"  epoch {ep + 1}/{epochs}: loss {total / len(xtr):.4f} test acc {100 * acc:.2f} % "
              f"({time.time() - t0:.0f} s)", flush=True)
    return evaluate(model, xte, yte)


def export(model: nn.Module, path: Path, description: str) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=True)
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in (("dse.preprocess", json.dumps(PREPROCESS)), ("dse.description", description)):
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "dse" / "data"))
    ap.add_argument("--epochs-lenet", type=int, default=6)
    ap.add_argument("--epochs-resnet", type=int, default=6)
    ap.add_argument("--epochs-vgg", type=int, default=3)
    ap.add_argument("--epochs-vit", type=int, default=3)
    ap.add_argument("--only", choices=["lenet5", "resnet8", "vgg", "vit"])
    ap.add_argument("--seed", type=int, default=0, help="added to every model's training seed (bundled: 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-only", action="store_true", help="only (re)build the bundled test-set .npz")
    ap.add_argument("--no-data", action="store_true", help="do not (re)build the bundled test-set .npz")
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dse.data import build_bundled
    from export_models import SmallViT

    if not args.no_data:
        print(f"bundled data: {build_bundled(out=Path(args.out) / 'fashion_mnist_test.npz')}", flush=True)
    if args.data_only:
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    specs = [("lenet5", LeNet5, args.epochs_lenet, 3e-3,
              "LeNet-5 (conv5x5-6 pad 2, maxpool, conv5x5-16, maxpool, fc120, fc84, fc10, ReLU) on Fashion-MNIST"),
             ("resnet8", ResNet8, args.epochs_resnet, 4e-3,
              "ResNet-8 (stem conv3x3-16+BN, 3 stride-2 basic blocks 16/32/64 with 1x1 projections, GAP, FC) "
              "on Fashion-MNIST"),
             ("vgg", VGGSmall, args.epochs_vgg, 2e-3,
              "VGG-style (2x conv3x3-16, maxpool, 2x conv3x3-32, maxpool, fc128, fc10, ReLU) on Fashion-MNIST"),
             ("vit", lambda: SmallViT(size=28, patch=7, d=32, depth=2, heads=4, attention="timm", channels=1),
              args.epochs_vit, 2e-3,
              "ViT (7x7 patches -> 16 tokens + cls, d=32, 2 pre-norm blocks of 4-head timm-style attention and "
              "GELU MLP 64, LayerNorm, linear head on the cls token) on Fashion-MNIST")]
    for k, (name, cls, epochs, lr, desc) in enumerate(specs):
        if args.only and args.only != name:
            continue
        seed = args.seed + k
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        t0 = time.time()
        print(f"training {name} ({epochs} epochs)", flush=True)
        model = cls()
        acc = train(model, xtr, ytr, xte, yte, epochs, lr, seed)
        path = out / f"{name}.onnx"
        export(model, path, f"{desc}; training seed {seed}; float test accuracy {100 * acc:.2f} %")
        print(f"{name}: float test accuracy {100 * acc:.2f} % -> {path} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
