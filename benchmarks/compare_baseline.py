"""`onnxviz render` against the Keras + matplotlib baseline, alternately, in fresh processes.

    pip install -e ".[export,bench]"   # the baseline needs matplotlib; onnxviz does not
    .venv/bin/onnxviz export vgg16 --no-top --weights ../shared/data/weights/vgg16_hed_edges_notop.h5 \
        -o models/vgg16-hed.onnx
    python benchmarks/compare_baseline.py --model models/vgg16-hed.onnx \
        --weights ../shared/data/weights/vgg16_hed_edges_notop.h5 --image ../shared/data/images/chelsea.png

Both draw the first 64 channels of VGG16's 18 conv/pool layers for one image: the baseline
as viridis PNG figures, onnxviz as its default output (per layer the exact 8-bit maps as a
PNG inside a stylesheet the page shows; `--model` may be a file with or without its
classifier). Each repeat runs the baseline and then `onnxviz render` (the order
swaps every repeat) and times each whole process from outside, interpreter start and
imports included. The drawing part comes from each one's own report: the baseline's
JSON, and render's summary.json (everything but inference: drawing and writing). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_baseline(args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / "keras_matplotlib_baseline.py"), "--weights", args.weights,
           "--image", str(args.image), "--out", str(out), "--style", args.style]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "drawing_s": report["phases_s"]["drawing_total"],
            "inference_s": report["phases_s"]["predict"], "pictures": len(list(out.glob("*.png")))}


def run_onnxviz(args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "onnxviz", "render", str(args.model), str(args.image), "-o", str(out),
           "--colormap", "viridis", "--max-channels", "64", "--provider", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    ms = summary["timings_ms"]
    drawing = sum(v for k, v in ms.items() if k != "inference")  # drawing/tiling and writing
    return {"wall_s": wall, "drawing_s": drawing / 1e3, "inference_s": ms["inference"] / 1e3,
            "pictures": sum(layer["kind"] == "map" for layer in summary["layers"])}  # layers drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="onnxviz export of the same VGG16")
    parser.add_argument("--weights", default="none", help="the .h5 the model was exported from, or none")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--style", choices=("subplot", "subplots"), default="subplot",
                        help="the baseline's drawing loop (see keras_matplotlib_baseline.py)")
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {"keras+matplotlib": [], "onnxviz render": []}
    tools = {"keras+matplotlib": run_baseline, "onnxviz render": run_onnxviz}
    with tempfile.TemporaryDirectory(prefix="onnxviz-compare-") as tmp:
        for r in range(args.repeats):
            for name in (list(tools) if r % 2 == 0 else list(tools)[::-1]):
                out = Path(tmp) / f"{name.split()[0]}-{r}"
                runs[name].append(tools[name](args, out))
                print(f"repeat {r + 1}: {name}: {runs[name][-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    report = {"repeats": args.repeats, "style": args.style, "model": str(args.model), "image": str(args.image), "tools": {}}
    print(f"{'':18s} {'process s':>10s} {'drawing s':>10s} {'inference s':>12s} {'pictures':>8s}")
    for name in runs:
        row = {key: med(name, key) for key in ("wall_s", "drawing_s", "inference_s")}
        row["pictures"] = runs[name][0]["pictures"]
        row["samples"] = runs[name]
        report["tools"][name] = row
        print(f"{name:18s} {row['wall_s']:10.2f} {row['drawing_s']:10.2f} {row['inference_s']:12.3f} {row['pictures']:8d}")
    base, ours = report["tools"]["keras+matplotlib"], report["tools"]["onnxviz render"]
    report["ratios"] = {"process": base["wall_s"] / ours["wall_s"], "drawing": base["drawing_s"] / ours["drawing_s"]}
    print(f"baseline / onnxviz (medians): whole process x{report['ratios']['process']:.1f}, "
          f"drawing x{report['ratios']['drawing']:.1f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
