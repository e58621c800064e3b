"""Grad-CAM from onnxviz files against tf.GradientTape on the `keras.applications` models themselves.

    python benchmarks/gradcam_keras_apps.py VGG16 ResNet50 [--weights none|imagenet|FILE] [--out DIR]

Each model is built by Keras (`--weights none`: random weights from a fixed seed; Grad-CAM's gradient
is the same computation whatever the weights), exported with `onnxviz.export`, and `model.cam` of
the four photos in ../shared/data/images (top 3 classes at the default layer, top 2 at an earlier
one) is compared with the tape's Grad-CAM (tests/explain/test_gradcam_keras.py) for the
same classes: the largest difference over each map's range (target 1e-4). Prints one JSON line per
model. VGG16's export takes minutes and up to 13 GiB.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "explain"))
sys.path.insert(0, str(ROOT / "tests"))

EARLIER = {"VGG16": "block5_conv3", "ResNet50": "conv5_block2_out", "MobileNet": "conv_pw_12_relu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gradcam_keras_apps"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    import keras

    import onnxviz
    from test_gradcam_keras import tape_gradcam

    images = [args.data / "images" / n for n in ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        keras.utils.set_random_seed(0)
        weights = None if args.weights == "none" else args.weights
        net = getattr(keras.applications, name)(weights=weights)
        start = time.perf_counter()
        path = onnxviz.export(net, args.out / f"{name}.onnx", preprocess=_preprocess(name)).path
        exported = time.perf_counter() - start
        model = onnxviz.load(path, provider="cpu")
        row = {"model": name, "weights": args.weights, "export_s": round(exported, 1)}
        for label, kwargs in (("default", {"top_k": 3}), ("earlier", {"layer": EARLIER.get(name), "top_k": 2})):
            if kwargs.get("layer", "") is None:
                continue
            result = model.cam(images, **kwargs)
            x = _preprocess_input(keras, name, result.pixels.astype(np.float32))
            want = tape_gradcam(keras, net, result.layer, x, result.classes)
            spans = want.max(axis=(2, 3)) - want.min(axis=(2, 3))
            worst = max((float(np.abs(result.maps[i, k] - want[i, k]).max() / spans[i, k])
                         for i in range(want.shape[0]) for k in range(want.shape[1]) if spans[i, k] > 0), default=None)
            row[label] = {"layer": result.layer, "shape": list(result.maps.shape),
                          "largest_difference_over_range": None if worst is None else float(f"{worst:.3g}"),
                          "flat_maps": int((spans == 0).sum()),  # all zero after the ReLU: compared as values
                          "flat_largest_difference": float(np.abs(result.maps - want)[spans == 0].max(initial=0.0))}
        print(json.dumps(row), flush=True)


def _preprocess(name: str) -> str:
    return {"VGG16": "caffe", "VGG19": "caffe", "ResNet50": "caffe"}.get(name, "tf")


def _preprocess_input(keras, name: str, x: np.ndarray) -> np.ndarray:
    module = {"VGG16": "vgg16", "VGG19": "vgg19", "ResNet50": "resnet"}.get(name, "mobilenet")
    return getattr(keras.applications, module).preprocess_input(x.copy())


if __name__ == "__main__":
    main()
