"""Make the tiny PyTorch models whose ONNX exports the tests read (torch is not needed to run the tests).

Three torchvision-style networks, written here because torchvision is not a test dependency:
a ResNet stem and two BasicBlock stages (the second with a downsample), a MobileNetV3-style
stem and inverted residual with Hardswish and squeeze-excitation, and a DenseNet-style
block (BatchNorm before each convolution, concatenation) with a transition. Every
BatchNorm gets realistic statistics (running mean and variance far from 0 and 1, weights
and biases far from 1 and 0), so a map taken before a BatchNorm differs clearly from the
map after it.

Each model is exported by both of torch's exporters (`dynamo=True`, the default since torch
2.9, and the TorchScript exporter `dynamo=False`) at opset 18 and 20, as
`<model>_<dynamo|legacy>_opset<N>.onnx`, and run once with forward hooks on every module:
`<model>_hooks.npz` holds `rgb` (the 0..255 HWC image fed), `input` (the normalised NCHW
tensor, ImageNet mean/std, scale 1/255), and each module's output, keyed by the module's
path, with `#2`, `#3` for its second and later calls (`layer1.0.relu#2`). An output equal
to one stored already (a container returns its last child's tensor) is listed in `aliases`
as `outer=inner` instead of being stored twice.

Run it with a CPU torch and onnxscript, in an environment of its own:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/torchvenv/bin/pip install onnxscript onnx numpy
    /tmp/torchvenv/bin/python tests/torch_models/make_models.py

The files were made with torch 2.13.0+cpu, onnxscript 0.7.2 and onnx 1.23.2.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SIZE = 24
OPSETS = (18, 20)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# ------------------------------------------------------------------ ResNet (torchvision.models.resnet)

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------ MobileNetV3 (torchvision.models.mobilenetv3)

class Conv2dNormActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.Hardswish) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expanded: int, cout: int, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        self.block = nn.Sequential(
            Conv2dNormActivation(cin, expanded, 1),
            Conv2dNormActivation(expanded, expanded, 3, stride, groups=expanded),
            SqueezeExcitation(expanded, 8),
            Conv2dNormActivation(expanded, cout, 1, activation=None),
        )

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res_connect else out


class TinyMobileNetV3(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2dNormActivation(3, 8, 3, 2),
            InvertedResidual(8, 24, 8, 1),
            InvertedResidual(8, 24, 16, 2),
            Conv2dNormActivation(16, 32, 1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(32, 24), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(24, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ------------------------------------------------------------------ DenseNet (torchvision.models.densenet)

class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bottleneck: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bottleneck, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck, growth, 3, 1, 1, bias=False)

    def forward(self, inputs: list[torch.Tensor]):
        concated = torch.cat(inputs, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, 16))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class TinyDenseNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        from collections import OrderedDict

        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, 16, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(16)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
            ("denseblock1", DenseBlock(2, 16, 8)),
            ("transition1", Transition(32, 16)),
            ("denseblock2", DenseBlock(2, 16, 8)),
            ("norm5", nn.BatchNorm2d(32)),
        ]))
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        out = torch.relu(self.features(x))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


MODELS = {"resnet": TinyResNet, "mobilenetv3": TinyMobileNetV3, "densenet": TinyDenseNet}


def realistic(model: nn.Module, seed: int) -> nn.Module:
    """Weights like a trained network's: BatchNorm statistics far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.8)
                m.running_var.copy_(torch.rand(c, generator=g) * 2.5 + 0.3)
                m.weight.copy_(torch.rand(c, generator=g) * 1.2 + 0.4)
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
    return model.eval()


def hook_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every module's output, `name`, `name#2`, ... in call order (the root module left out)."""
    found: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, name=name):
            if not isinstance(out, torch.Tensor):
                return
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            found[key] = out.detach().numpy().copy()

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return found


def dedupe(refs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Keep one copy of equal outputs (a container returns its last child's tensor); the other
    names are listed as `outer=inner` aliases."""
    kept: dict[str, np.ndarray] = {}
    aliases: list[str] = []
    for key, value in refs.items():
        same = next((k for k, v in kept.items() if v.shape == value.shape and np.array_equal(v, value)), None)
        if same is None:
            kept[key] = value
        else:
            aliases.append(f"{key}={same}")
    return kept, aliases


def main() -> int:
    torch.manual_seed(0)
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)
    x = ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    made = []
    for seed, (name, cls) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        model = realistic(cls(), seed)
        tensor = torch.from_numpy(x)
        refs, aliases = dedupe(hook_outputs(model, tensor))
        np.savez_compressed(HERE / f"{name}_hooks.npz", rgb=rgb.astype(np.uint8), input=x,
                            aliases=np.array(aliases, dtype=str), **refs)
        for opset in OPSETS:
            for dynamo in (True, False):
                out = HERE / f"{name}_{'dynamo' if dynamo else 'legacy'}_opset{opset}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        torch.onnx.export(model, (tensor,), str(out), dynamo=dynamo, opset_version=opset,
                                          input_names=["image"], output_names=["logits"], external_data=False)
                    except Exception as exc:  # an exporter that cannot write this opset
                        print(f"{out.name}: not made ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
                        continue
                made.append(out)
                print(f"{out.name}: {out.stat().st_size} bytes")
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
