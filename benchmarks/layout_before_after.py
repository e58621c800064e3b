"""The package before and after its reorganisation into role folders: the same time, the same files.

    python benchmarks/layout_before_after.py --before /tmp/base [--repeats 7] [--mobilenet M.onnx]

BEFORE is a checkout of the code before the reorganisation (flat package); AFTER is this tree.
Each figure is a new process timed from outside, BEFORE and AFTER alternating, medians:

- `import onnxviz`: the whole process (`python -c "import onnxviz"`), and the import alone
  timed inside the process;
- one image's `python -m onnxviz render MODEL IMAGE -o OUT` (default options; `--after-args`
  for AFTER) through the real MobileNet (alpha 0.25, 128x128, exported here from the Keras
  weights in ONNXVIZ_TEST_DATA).

Then it checks that a user sees the same thing from both: the tests' tiny model and MobileNet
rendered by each tree, compared file by file and byte for byte, except the fields that hold
measured times (`timings_ms` in summary.json/summary.js and the line that shows them in
index.html), which are listed; and the tests' tiny plain ONNX model exported by each tree,
compared byte for byte. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AFTER = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ONNXVIZ_TEST_DATA", AFTER.parent / "shared" / "data"))
IMPORT_ONLY = "import time; t = time.perf_counter(); import onnxviz; print(time.perf_counter() - t)"


def run(tree: Path, args: list[str], env: dict | None = None) -> tuple[float, str]:
    """Seconds of a new process with `tree` first on the path, and its stdout. It runs in a folder
    of its own: `python -m`/`-c` put the current folder before PYTHONPATH."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=dict(os.environ, PYTHONPATH=str(tree), **(env or {})),
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def make_models(folder: Path, mobilenet: Path | None) -> dict[str, Path]:
    """The tests' tiny onnxviz file and tiny plain ONNX model, and MobileNet (exported by AFTER)."""
    sys.path.insert(0, str(AFTER / "tests"))
    import onnx
    from tiny_models import tiny_model, tiny_onnx, write_image

    models = {"tiny": folder / "tiny.onnx", "plain": folder / "plain.onnx"}
    onnx.save(tiny_model(), models["tiny"])
    tiny_onnx(models["plain"])
    write_image(folder / "tiny.png", seed=3)
    if mobilenet is None:
        mobilenet = folder / "mobilenet.onnx"
        home = folder / "keras_home"
        shutil.copytree(DATA / "keras_home", home)
        run(AFTER, ["-m", "onnxviz", "export", "mobilenet", "--alpha", "0.25", "--input-size", "128", "-o",
                    str(mobilenet)], env={"KERAS_HOME": str(home)})
    models["mobilenet"] = mobilenet
    return models


def differences(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(files that differ only in measured times, files that differ otherwise or exist on one side)."""
    timed, other = [], []
    names_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    other += sorted(f"{n} (only {'before' if n in names_a else 'after'})" for n in names_a ^ names_b)
    for name in sorted(names_a & names_b):
        if filecmp.cmp(a / name, b / name, shallow=False):
            continue
        if _without_times(a / name) == _without_times(b / name):
            timed.append(name)
        else:
            other.append(name)
    return timed, other


def _without_times(path: Path) -> bytes:
    """The file with its measured times blanked: timings_ms (summary.json, summary.js) and the
    page's line that shows them (index.html)."""
    text = path.read_bytes()
    text = re.sub(rb'"timings_ms":\{[^}]*\}', b'"timings_ms":{}', text)
    return re.sub(rb'((?:read|inference|drawing|encoding|writing) )\d+( ms)', rb"\1#\2", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code before the reorganisation")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mobilenet", type=Path, help="an onnxviz MobileNet file (default: exported here)")
    parser.add_argument("--after-args", default="", help="render options given to AFTER only, to turn off what it "
                        "does beyond BEFORE (e.g. '--no-cam'), timed and compared that way")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": AFTER}
    extra = {"before": [], "after": args.after_args.split()}
    work = Path(tempfile.mkdtemp(prefix="layout_before_after_"))
    try:
        models = make_models(work, args.mobilenet)
        image = DATA / "images" / "coffee.png"
        for p in (models["mobilenet"], image):  # the page cache warm for both
            p.read_bytes()
        times: dict[str, list[float]] = {}
        for k in range(args.repeats):
            for label, tree in (trees.items() if k % 2 == 0 else reversed(list(trees.items()))):
                times.setdefault(f"python -c 'import onnxviz' ({label})", []).append(run(tree, ["-c", "import onnxviz"])[0])
                times.setdefault(f"import onnxviz alone ({label})", []).append(float(run(tree, ["-c", IMPORT_ONLY])[1]))
                out = work / f"time-{label}-{k}"
                times.setdefault(f"render, one MobileNet image ({label})", []).append(
                    run(tree, ["-m", "onnxviz", "render", str(models["mobilenet"]), str(image), "-o", str(out),
                               *extra[label]])[0])
                shutil.rmtree(out)
        medians = {key: statistics.median(values) for key, values in times.items()}
        print(f"{args.repeats} runs each, alternating; medians in ms (min..max)")
        for key, values in times.items():
            print(f"  {key:45s} {medians[key] * 1000:8.1f}   ({min(values) * 1000:.1f}..{max(values) * 1000:.1f})")
        for what in ("python -c 'import onnxviz'", "import onnxviz alone", "render, one MobileNet image"):
            print(f"  {what}: after / before = {medians[f'{what} (after)'] / medians[f'{what} (before)']:.3f}")

        same: dict[str, dict] = {}
        renders = {"tiny render": (models["tiny"], work / "tiny.png"), "MobileNet render": (models["mobilenet"], image)}
        for what, (model, picture) in renders.items():
            outs = {}
            for label, tree in trees.items():
                outs[label] = work / f"{what.split()[0]}-{label}"
                run(tree, ["-m", "onnxviz", "render", str(model), str(picture), "-o", str(outs[label]), *extra[label]])
            timed, other = differences(outs["before"], outs["after"])
            files = sum(1 for p in outs["after"].rglob("*") if p.is_file())
            same[what] = {"files": files, "differ_in_times_only": timed, "differ_otherwise": other}
        exports = {}
        for label, tree in trees.items():
            exports[label] = work / f"export-{label}" / "plain_viz.onnx"
            run(tree, ["-m", "onnxviz", "export", str(models["plain"]), "-o", str(exports[label])])
        timed, other = differences(exports["before"].parent, exports["after"].parent)
        same["tiny export"] = {"files": sum(1 for _ in exports["after"].parent.iterdir()),
                               "differ_in_times_only": timed, "differ_otherwise": other}
        for what, found in same.items():
            verdict = "byte for byte the same" if not found["differ_in_times_only"] and not found["differ_otherwise"] else ""
            print(f"{what}: {found['files']} files {verdict}")
            if found["differ_in_times_only"]:
                print(f"  differ only in measured times: {', '.join(found['differ_in_times_only'])}")
            if found["differ_otherwise"]:
                print(f"  DIFFER: {', '.join(found['differ_otherwise'])}")
        print(json.dumps({"repeats": args.repeats, "after_args": extra["after"], "median_s": medians, "same": same}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
