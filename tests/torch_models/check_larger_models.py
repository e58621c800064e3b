"""A larger check than the committed files: a full-size ResNet-18 (torchvision's layout) and an
EfficientNet-style stage (SiLU, squeeze-excitation, stochastic depth), realistic BatchNorm
statistics, both exporters; every output of onnxviz's default export against forward hooks.

Nothing is committed from it (ResNet-18 is 47 MB). Two steps, two environments:

    /tmp/torchvenv/bin/python tests/torch_models/check_larger_models.py export /tmp/larger
    python tests/torch_models/check_larger_models.py check /tmp/larger      # the project's environment
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = 64


def export(folder: Path) -> None:
    import warnings

    import torch
    from torch import nn

    sys.path.insert(0, str(HERE))
    from make_models import MEAN, STD, BasicBlock, Conv2dNormActivation, dedupe, hook_outputs, realistic

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)

            def layer(cin, cout, stride):
                return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))

            self.layer1, self.layer2 = layer(64, 64, 1), layer(64, 128, 2)
            self.layer3, self.layer4 = layer(128, 256, 2), layer(256, 512, 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class SE(nn.Module):
        def __init__(self, c, s):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)
            self.activation, self.scale_activation = nn.SiLU(), nn.Sigmoid()

        def forward(self, x):
            return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x

    class StochasticDepth(nn.Module):  # identity in eval mode, as torchvision's
        def forward(self, x):
            return x

    class MBConv(nn.Module):
        def __init__(self, cin, exp, cout, stride):
            super().__init__()
            self.use_res_connect = stride == 1 and cin == cout
            layers = [Conv2dNormActivation(cin, exp, 1, activation=nn.SiLU)] if exp != cin else []
            layers += [Conv2dNormActivation(exp, exp, 3, stride, groups=exp, activation=nn.SiLU),
                       SE(exp, max(1, cin // 4)), Conv2dNormActivation(exp, cout, 1, activation=None)]
            self.block = nn.Sequential(*layers)
            self.stochastic_depth = StochasticDepth()

        def forward(self, x):
            r = self.block(x)
            return self.stochastic_depth(r) + x if self.use_res_connect else r

    class EfficientNetStage(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                Conv2dNormActivation(3, 32, 3, 2, activation=nn.SiLU), nn.Sequential(MBConv(32, 32, 16, 1)),
                nn.Sequential(MBConv(16, 96, 24, 2), MBConv(24, 144, 24, 1)),
                Conv2dNormActivation(24, 128, 1, activation=nn.SiLU))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, 1000))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)
    x = ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    for name, cls in (("resnet18", ResNet18), ("efficientnet_stage", EfficientNetStage)):
        torch.manual_seed(0)
        model = realistic(cls(), 3)
        refs, aliases = dedupe(hook_outputs(model, torch.from_numpy(x)))
        np.savez(folder / f"{name}_hooks.npz", rgb=rgb.astype(np.uint8), aliases=np.array(aliases, dtype=str), **refs)
        for dynamo in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.from_numpy(x),), str(folder / f"{name}_{'dynamo' if dynamo else 'legacy'}.onnx"),
                                  dynamo=dynamo, opset_version=18, external_data=False)


def check(folder: Path) -> int:
    import onnx

    sys.path.insert(0, str(HERE.parents[1]))
    from onnxviz.api import export as onnxviz_export
    from onnxviz.exporter.sources.torch_names import module_names
    from onnxviz.run.session import open_session

    failed = 0
    for name in ("resnet18", "efficientnet_stage"):
        data = np.load(folder / f"{name}_hooks.npz")
        refs = {k: data[k] for k in data.files if k not in ("rgb", "aliases")}
        for alias in data["aliases"]:
            outer, inner = str(alias).split("=")
            refs[outer] = refs[inner]
        dynamo = module_names(onnx.load(folder / f"{name}_dynamo.onnx"))
        bn_of = {f"{i.folded[0]}+bn": i.name for i in dynamo.identities.values() if i.folded}
        for exporter in ("dynamo", "legacy"):
            out = folder / f"onnxviz_{name}_{exporter}.onnx"
            result = onnxviz_export(folder / f"{name}_{exporter}.onnx", out, preprocess="torchvision")
            outputs = open_session(out, "cpu").run(data["rgb"][None].astype(np.float32))
            match = worst = 0.0
            for layer in result.info.layers:
                module = bn_of.get(layer.name, layer.name)
                if module not in refs:
                    print(f"  {layer.name}: not a module output")
                    failed += 1
                    continue
                ref = refs[module].reshape(outputs[layer.name].shape)
                error = float(np.abs(outputs[layer.name] - ref).max()) / (float(np.ptp(ref)) or 1.0)
                worst = max(worst, error)
                match += error < 1e-5
                failed += error >= 1e-5
            print(f"{name} {exporter}: {int(match)} of {len(result.info.layers)} outputs named after a module and "
                  f"equal to its forward hook (worst {worst:.1e} of the range)")
    return 1 if failed else 0


if __name__ == "__main__":
    step, where = sys.argv[1], Path(sys.argv[2])
    if step == "export":
        export(where)
        sys.exit(0)
    sys.exit(check(where))
