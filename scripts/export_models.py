"""Dev-only: export real architectures from compact torch.nn definitions to ONNX and check that dse imports them.

torchvision does not load against the CPU torch wheel used here, so the networks are written from torch.nn layers:
MobileNetV3-small, an EfficientNet-B0-style MBConv+SE net, a ShuffleNetV2 block net, a small ViT (cls token, learned
position embedding, pre-norm multi-head attention, GELU MLP) in three attention styles (batch-first reshapes, timm's
permute(2, 0, 3, 1, 4), torch.nn.MultiheadAttention) and ResNet-18. Weights are random (BatchNorm statistics
too), which is enough to check the import: each model is exported with ``torch.onnx.export`` (opset 17, dynamic batch),
loaded with ``dse.model.onnx_import.load_onnx`` and run by the float executor against onnxruntime.

    pip install torch==2.13.0 && python scripts/export_models.py [-o DIR] [--opset 17] [--size 64]

prints one line per model: ONNX ops found, MAC layers, max |logit difference| relative to the logit range.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _bn_random(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics so that the folded affine maps are exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def conv_bn(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c, r, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, r, 1), act(), nn.Conv2d(r, c, 1), gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3 / EfficientNet MBConv: expand 1x1, depthwise kxk, optional SE, project 1x1, residual."""

    def __init__(self, cin, exp, cout, k, s, se, act, gate=nn.Hardsigmoid, se_act=nn.ReLU):
        super().__init__()
        layers = [conv_bn(cin, exp, 1, act=act)] if exp != cin else []
        layers.append(conv_bn(exp, exp, k, s, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, max(8, exp // 4), se_act, gate))
        layers.append(conv_bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.res else y


class MobileNetV3Small(nn.Module):
    CFG = [(16, 16, 3, 2, True, nn.ReLU), (16, 72, 24, 3, 2, False, nn.ReLU), (24, 88, 24, 3, 1, False, nn.ReLU),
           (24, 96, 40, 5, 2, True, nn.Hardswish), (40, 240, 40, 5, 1, True, nn.Hardswish),
           (40, 120, 48, 5, 1, True, nn.Hardswish), (48, 288, 96, 5, 2, True, nn.Hardswish)]

    def __init__(self, classes=10):
        super().__init__()
        layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        for cfg in self.CFG:
            if len(cfg) == 6:  # first block: no expansion
                c, e, k, s, se, act = cfg
                layers.append(InvertedResidual(c, c, e, k, s, se, act))
            else:
                layers.append(InvertedResidual(*cfg))
        layers.append(conv_bn(96, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, classes))

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class EfficientNetB0Style(nn.Module):
    CFG = [(32, 32, 16, 3, 1), (16, 96, 24, 3, 2), (24, 144, 24, 3, 1), (24, 144, 40, 5, 2), (40, 240, 80, 3, 2),
           (80, 480, 112, 5, 1), (112, 672, 192, 5, 2)]

    def __init__(self, classes=10):
        super().__init__()
        layers = [conv_bn(3, 32, 3, 2, act=nn.SiLU)]
        layers += [InvertedResidual(c, e, o, k, s, True, nn.SiLU, nn.Sigmoid, nn.SiLU) for c, e, o, k, s in self.CFG]
        layers.append(conv_bn(192, 640, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(640, classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        b = cout // 2
        if stride > 1:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, b, 1))
            cin_r = cin
        else:
            self.left = None
            cin_r = cin // 2
        self.right = nn.Sequential(conv_bn(cin_r, b, 1), conv_bn(b, b, 3, stride, groups=b, act=None), conv_bn(b, b, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            y = torch.cat((a, self.right(b)), 1)
        else:
            y = torch.cat((self.left(x), self.right(x)), 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle


class ShuffleNetV2Small(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
        units, cin = [], 24
        for cout, reps in ((48, 3), (96, 4), (192, 2)):
            units += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(reps - 1)]
            cin = cout
        self.units = nn.Sequential(*units)
        self.conv = conv_bn(cin, 512, 1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.conv(self.units(self.stem(x))).mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.h) ** -0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, d))


class TimmAttention(Attention):
    """timm's Attention: the same layers, but reshape (B, N, 3, H, D) and permute(2, 0, 3, 1, 4) (the batch on axis
    1) instead of three chunks."""

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = (q * (d // self.h) ** -0.5 @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, d))


class MhaAttention(nn.Module):
    """torch.nn.MultiheadAttention (batch_first): exported with [T, B, D], [B * heads, T, d] and [T * B, D] layouts."""

    def __init__(self, d, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


ATTENTION = {"plain": Attention, "timm": TimmAttention, "mha": MhaAttention}


class Block(nn.Module):
    def __init__(self, d, heads, mlp, attention="plain"):
        super().__init__()
        self.n1, self.att, self.n2 = nn.LayerNorm(d), ATTENTION[attention](d, heads), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))

    def forward(self, x):
        x = x + self.att(self.n1(x))
        return x + self.mlp(self.n2(x))


class SmallViT(nn.Module):
    def __init__(self, size=64, patch=8, d=64, depth=4, heads=4, classes=10, attention="plain", channels=3):
        super().__init__()
        self.embed = nn.Conv2d(channels, d, patch, patch)
        n = (size // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d, heads, 2 * d, attention) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.cls.expand(t.shape[0], -1, -1), t), 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.c1, self.c2 = conv_bn(cin, cout, 3, s), conv_bn(cout, cout, 3, act=None)
        self.down = conv_bn(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.c2(self.c1(x)) + self.down(x))


class ResNet18(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, s), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


MODELS = {"mobilenetv3_small": MobileNetV3Small, "efficientnet_b0_style": EfficientNetB0Style,
          "shufflenetv2_small": ShuffleNetV2Small, "vit_small": SmallViT, "vit_timm": SmallViT, "vit_mha": SmallViT,
          "resnet18": ResNet18}
VIT_ATTENTION = {"vit_small": "plain", "vit_timm": "timm", "vit_mha": "mha"}
# torch.nn.MultiheadAttention (need_weights=False) runs aten::scaled_dot_product_attention, which torch's ONNX
# exporter converts only from opset 14 on; the other models export at any opset from 13.
MIN_OPSET = {"vit_mha": 14}


def models_for(opset: int) -> list[str]:
    """The models torch can export at ``opset``."""
    return [name for name in MODELS if opset >= MIN_OPSET.get(name, 13)]


def export(name: str, out_dir: Path, opset: int = 17, size: int = 64) -> Path:
    if name not in models_for(opset):
        raise SystemExit(f"--opset {opset}: torch exports {name} only at opset >= {MIN_OPSET[name]}; "
                         f"raise --opset or leave {name} out of --models")
    torch.manual_seed(0)
    model = MODELS[name]() if name not in VIT_ATTENTION else SmallViT(size=size, attention=VIT_ATTENTION[name])
    model = _bn_random(model)
    path = out_dir / f"{name}.onnx"
    x = torch.randn(2, 3, size, size)
    torch.onnx.export(model, (x,), str(path), opset_version=opset, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    return path


def check(path: Path, size: int = 64, n: int = 4) -> dict:
    """Import with dse, run float vs onnxruntime: {ops, mac_layers, rel_diff}."""
    import onnx
    import onnxruntime as ort

    from dse.model.float_exec import run_float
    from dse.model.onnx_import import load_onnx

    ops = sorted({nd.op_type for nd in onnx.load(str(path)).graph.node})
    g = load_onnx(path)
    x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    r = s.run(None, {s.get_inputs()[0].name: x})[0]
    y = run_float(g, x)
    return {"ops": ops, "mac_layers": len(g.mac_nodes),
            "rel_diff": float(np.abs(y - r).max() / max(float(r.max() - r.min()), 1e-12))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="exported_models", help="output directory")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--size", type=int, default=64, help="input image size")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    worst = 0.0
    for name in a.models:
        res = check(export(name, out, a.opset, a.size), a.size)
        worst = max(worst, res["rel_diff"])
        print(f"{name:22s} MAC layers {res['mac_layers']:3d}  max |logit diff| / logit range {res['rel_diff']:.2e}  "
              f"ops: {' '.join(res['ops'])}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
