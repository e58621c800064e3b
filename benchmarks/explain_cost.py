"""What showing where the network looks costs: Grad-CAM in the graph against numpy after the fact,
the layer factorization against scikit-learn's NMF, render with and without them. Medians.

    python benchmarks/make_photos.py --out /tmp/photos16 --count 16
    KERAS_HOME=/tmp/keras_home onnxviz export mobilenet --alpha 0.25 --input-size 128 -o /tmp/mobilenet.onnx
    python benchmarks/explain_cost.py --tiny-resnet /tmp/tiny_resnet.onnx     # exports it once (TensorFlow)
    python benchmarks/explain_cost.py /tmp/mobilenet.onnx /tmp/tiny_resnet.onnx --photos /tmp/photos16
    python benchmarks/explain_cost.py resnet50.onnx vgg16.onnx --photos photos100 --render-only --render-repeats 4

1. `gradient`: Grad-CAM of the top 3 classes of a batch of 8 photos at the default layer: the
   file's Grad-CAM graph (`explain.explainer.Explainer.gradcam`: one ONNX Runtime run giving the
   maps) against the numpy route for a global-average-pooling + linear head (one run giving the
   layer and the logits, the classifier's weights read from the file, the gradient `w_c / (h*w)`
   and the weighted sum in numpy). Both give the same maps (the largest difference is printed).
2. `nmf`: the default layers' activations of the 4 test photos, one image and all 4 jointly,
   5 parts: `explain.factorize.nmf` (HALS) and Lee & Seung's multiplicative updates (200 sweeps,
   the same start) against `sklearn.decomposition.NMF(5, init="nndsvda")`: error ratio and time.
3. `render`: `onnxviz render` of the photos with the defaults (class activation maps and 5 parts of
   one layer per stage) against `--no-cam --parts 0`, each in its own process, alternating: wall and
   CPU seconds, each pair's ratio and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("ONNXVIZ_TEST_DATA", ROOT.parent / "shared" / "data")) / "images"


def tiny_resnet(path: Path) -> None:
    """A ResNet-style network, random weights: 3 stages of residual blocks at 96 x 96, GAP, Dense(1000)."""
    import keras

    import onnxviz

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((96, 96, 3), name="image")
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(L.Conv2D(32, 3, 2, padding="same", name="stem")(inp)))
    for stage, width in enumerate((32, 64, 128)):
        stride = 1 if stage == 0 else 2
        y = L.Conv2D(width, 3, stride, padding="same", activation="relu", name=f"s{stage}_conv1")(x)
        y = L.Conv2D(width, 3, padding="same", name=f"s{stage}_conv2")(y)
        short = x if stride == 1 and x.shape[-1] == width else L.Conv2D(width, 1, stride, name=f"s{stage}_short")(x)
        x = L.ReLU(name=f"s{stage}_out")(L.Add(name=f"s{stage}_add")([short, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(1000, activation="softmax", name="predictions")(x)
    onnxviz.export(keras.Model(inp, out, name="tiny_resnet"), path, preprocess="tf")


def _median(values):
    return statistics.median(values)


def gradient(model: Path, repeats: int) -> dict:
    import onnx
    from onnx import numpy_helper

    import onnxviz
    from onnxviz.explain.gradient import logits_of

    m = onnxviz.load(model, provider="cpu")
    explainer = m._explainer()
    layer = explainer.default_layer()
    pixels = onnxviz.api.to_batch([PHOTOS / p for p in sorted(p.name for p in PHOTOS.iterdir())] * 2,
                                  m.info.height, m.info.width)
    light = onnx.load(model, load_external_data=True)
    logits = logits_of(light, m.info.prediction_output, True, "the model")
    # the classifier's weight: the one Conv / MatMul / Gemm between the pooled layer and the logits
    names = {n.output[0]: n for n in light.graph.node}
    inits = {t.name: t for t in light.graph.initializer}
    node, weight = names[logits], None
    while weight is None:
        if node.op_type in ("MatMul", "Gemm", "Conv") and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            weight = w.reshape(w.shape[0], -1) if node.op_type == "Conv" else (w.T if node.op_type == "Gemm" and
                                                                             any(a.name == "transB" and a.i for a in node.attribute) else w)
            weight = weight if node.op_type != "Conv" else weight.T  # [C, classes]
        else:
            node = names[node.input[0]]
    from onnxviz.run.session import open_session
    from onnxviz.model.graph import expose_outputs

    plain = expose_outputs(light, [layer, logits])
    session = open_session(model, "cpu", long_run=False, model_bytes=plain.SerializeToString())

    def in_graph():
        return explainer.gradcam(pixels, layer, 3)

    def numpy_route():
        a, z = session.session.run([layer, logits], {session.input_name: pixels})
        z = z.reshape(len(pixels), -1)
        top = np.argsort(-z, axis=1, kind="stable")[:, :3]
        alpha = weight[:, top].transpose(1, 2, 0) / (a.shape[2] * a.shape[3])  # [N, K, C]
        return np.maximum(np.einsum("nkc,nchw->nkhw", alpha, a), 0), top

    got, want = in_graph(), numpy_route()
    assert (got.classes == want[1]).all()
    difference = float(np.abs(got.maps - want[0]).max() / max(want[0].max(), 1e-12))
    times = {"in_graph": [], "numpy": []}
    for _ in range(repeats):
        for name, fn in (("in_graph", in_graph), ("numpy", numpy_route)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {"model": model.name, "layer": layer, "batch": len(pixels),
            "in_graph_ms": round(_median(times["in_graph"]) * 1000, 1),
            "numpy_ms": round(_median(times["numpy"]) * 1000, 1),
            "largest_difference_over_peak": difference}


def _mu(v: np.ndarray, k: int, sweeps: int = 200) -> float:
    from onnxviz.explain.factorize import nndsvda

    wt, h = nndsvda(v, k)  # W's columns as rows
    w = np.ascontiguousarray(wt.T)
    for _ in range(sweeps):
        h *= (w.T @ v) / np.maximum(w.T @ w @ h, 1e-12)
        w *= (v @ h.T) / np.maximum(w @ (h @ h.T), 1e-12)
    return float(np.linalg.norm(v - w @ h) / np.linalg.norm(v))


def nmf(model: Path, repeats: int) -> list[dict]:
    from sklearn.decomposition import NMF
    from threadpoolctl import threadpool_limits

    import onnxviz
    from onnxviz.explain.factorize import nmf as ours
    from onnxviz.model.selection import default_layers

    m = onnxviz.load(model, provider="cpu")
    layers = [layer.name for layer in default_layers(m.info) if layer.shape[2] * layer.shape[3] >= 5]
    acts = m.activations(sorted(PHOTOS.iterdir()), layers)
    rows = []
    for name in layers:
        for what, maps in (("one", acts[name][:1]), ("joint", acts[name])):
            v = np.maximum(maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1]), 0).astype(np.float64)
            t_ours, t_sk = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                _, _, error = ours(v, 5)
                t_ours.append(time.perf_counter() - t)
                with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
                    warnings.simplefilter("ignore")
                    t = time.perf_counter()
                    sk = NMF(5, init="nndsvda")
                    w = sk.fit_transform(v)
                    t_sk.append(time.perf_counter() - t)
                sk_error = float(np.linalg.norm(v - w @ sk.components_) / np.linalg.norm(v))
            rows.append({"model": model.name, "layer": name, "images": what, "matrix": list(v.shape),
                         "error": round(error, 4), "sklearn_error": round(sk_error, 4),
                         "ratio": round(error / sk_error, 4), "mu_ratio": round(_mu(v, 5) / sk_error, 4),
                         "ms": round(_median(t_ours) * 1000, 1), "sklearn_ms": round(_median(t_sk) * 1000, 1)})
    return rows


def render(model: Path, photos: Path, repeats: int) -> dict:
    """Render with the explanations against without, alternating fresh processes: wall and CPU seconds
    (user + system) of each, the ratio of each pair, their median and the ratio of the medians."""
    import resource

    runs: dict[str, list[float]] = {"plain": [], "explained": []}
    cpu: dict[str, list[float]] = {"plain": [], "explained": []}
    flags = {"plain": ["--no-cam", "--parts", "0"], "explained": []}
    for _ in range(repeats):
        for kind in ("plain", "explained"):
            out = Path(tempfile.mkdtemp(prefix="explain_cost_"))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "onnxviz", "render", str(model), str(photos), "-o", str(out / "o"),
                            "--provider", "cpu", *flags[kind]], check=True, capture_output=True, cwd=ROOT)
            runs[kind].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[kind].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            shutil.rmtree(out)
    plain, explained = _median(runs["plain"]), _median(runs["explained"])
    pairs = [e / p for p, e in zip(runs["plain"], runs["explained"])]
    return {"model": model.name, "photos": len(list(photos.iterdir())), "plain_s": [round(v, 2) for v in runs["plain"]],
            "explained_s": [round(v, 2) for v in runs["explained"]], "plain_cpu_s": [round(v, 1) for v in cpu["plain"]],
            "explained_cpu_s": [round(v, 1) for v in cpu["explained"]], "pair_ratios": [round(r, 3) for r in pairs],
            "median_pair_ratio": round(_median(pairs), 3), "ratio": round(explained / plain, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--render-repeats", type=int, default=3)
    parser.add_argument("--tiny-resnet", type=Path, help="export the ResNet-style test network here and stop")
    parser.add_argument("--render-only", action="store_true", help="time the renders alone (3.), with --photos")
    args = parser.parse_args()
    if args.tiny_resnet:
        tiny_resnet(args.tiny_resnet)
        return
    result = {} if args.render_only else {
        "gradient": [gradient(m, args.repeats) for m in args.models],
        "nmf": [row for m in args.models for row in nmf(m, max(1, args.repeats // 2))]}
    if args.photos:
        result["render"] = [render(m, args.photos, args.render_repeats) for m in args.models]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
