"""The usual way to look at VGG16's feature maps, written as a user would: Keras + matplotlib.

    pip install -e ".[export,bench]"   # matplotlib, for benchmarks only; onnxviz does not need it
    python benchmarks/keras_matplotlib_baseline.py --weights ../shared/data/weights/vgg16_hed_edges_notop.h5 \
        --image ../shared/data/images/chelsea.png --out /tmp/baseline

VGG16 (without its classifier, as the weights above), a multi-output model of its 18
conv/pool layers, one image, then for each layer a matplotlib figure with one subplot
per channel (the first 64, 8x8), saved as PNG. Prints one JSON line: seconds for the
whole script (from its first line, imports included; not the interpreter's start) and
for each phase, drawing split into building the figures and saving (rendering) them.

Two ways of drawing, both common:
- `--style subplot` (default), as the widely copied tutorial loop writes it: for each
  channel `plt.subplot(8, 8, i)`, hide the ticks, `plt.imshow(...)`; then save the
  figure of the current pyplot state;
- `--style subplots`, the quicker variant: `plt.subplots(8, 8)` makes all 64 axes at
  once, `ax.imshow` and `ax.axis("off")` on each.
"""
import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="none", help="a VGG16 no-top .h5 weights file, or none (random)")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("baseline-out"))
    parser.add_argument("--channels", type=int, default=64, help="subplots per figure (a square number)")
    parser.add_argument("--style", choices=("subplot", "subplots"), default="subplot",
                        help="plt.subplot per channel (the tutorial loop) or plt.subplots at once")
    args = parser.parse_args()
    phases = {}

    t = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import keras
    phases["import"] = time.perf_counter() - t

    t = time.perf_counter()
    weights = None if args.weights.lower() == "none" else args.weights
    model = keras.applications.VGG16(weights=weights, include_top=False, input_shape=(224, 224, 3))
    names = [layer.name for layer in model.layers if "conv" in layer.name or "pool" in layer.name]
    feature_model = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    phases["build_model"] = time.perf_counter() - t

    t = time.perf_counter()
    image = keras.utils.load_img(args.image, target_size=(224, 224))
    x = keras.applications.vgg16.preprocess_input(keras.utils.img_to_array(image)[np.newaxis])
    phases["load_image"] = time.perf_counter() - t

    t = time.perf_counter()
    feature_maps = feature_model.predict(x, verbose=0)
    phases["predict"] = time.perf_counter() - t

    args.out.mkdir(parents=True, exist_ok=True)
    side = int(args.channels ** 0.5)
    draw = save = 0.0
    for name, fmap in zip(names, feature_maps):
        t = time.perf_counter()
        if args.style == "subplots":
            fig, axes = plt.subplots(side, side, figsize=(12, 12))
            for i, ax in enumerate(axes.flat):
                ax.imshow(fmap[0, :, :, i], cmap="viridis")
                ax.axis("off")
        else:
            fig = plt.figure(figsize=(12, 12))
            for i in range(side * side):
                ax = plt.subplot(side, side, i + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                plt.imshow(fmap[0, :, :, i], cmap="viridis")
        fig.suptitle(name)
        draw += time.perf_counter() - t
        t = time.perf_counter()
        fig.savefig(args.out / f"{name}.png")
        plt.close(fig)
        save += time.perf_counter() - t
    phases["draw_figures"] = draw
    phases["save_png"] = save
    phases["drawing_total"] = draw + save

    print(json.dumps({
        "total_s": round(time.perf_counter() - START, 3),
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "style": args.style, "layers": len(names), "channels_per_layer": side * side, "figures": len(names),
        "weights": args.weights, "image": str(args.image), "out": str(args.out),
        "versions": {"keras": keras.__version__, "matplotlib": matplotlib.__version__, "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
