"""The `onnxviz` command: each command parses its options, calls one library function
and prints a summary. Bad input ends in one `error: ...` line and exit code 1."""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import typer

from onnxviz.errors import NotOnnxvizFile, OnnxvizError

if TYPE_CHECKING:
    from onnxviz.compare.bench import BenchResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="See what a convolutional network sees: export a model with its feature maps "
    "as outputs, then render them with ONNX Runtime.",
)


def _err(message: str) -> None:
    typer.echo(message, err=True)


# Library parameters whose flag is not `--` + the name with dashes.
FLAGS = {"include_top": "--no-top", "source": "MODEL", "fmt": "--format", "output": "-o/--output",
         "json_out": "--json", "as_json": "--json", "model": "MODEL", "images": "IMAGES",
         "external_data": "--external-data"}


def flag_of(param: str) -> str:
    """The command-line spelling of a library parameter, for error messages."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def handles_errors(fn: Callable) -> Callable:
    """User errors print one line and exit 1; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OnnxvizError as exc:
            _err(f"error: {exc.spoken(flag_of)}")
            raise typer.Exit(1)
        except KeyboardInterrupt:
            _err("interrupted; files already written are complete, nothing is half-written")
            raise typer.Exit(130)

    return wrapper


class Progress:
    """Step lines on stderr with the time each step took."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        _err(f"[{time.perf_counter() - self.started:6.1f}s] {message}")


def _csv(values: Optional[str]) -> List[str]:
    return [v.strip() for v in values.split(",") if v.strip()] if values else []


def _numbers(value: Optional[str]) -> Optional[List[str]]:
    """'0.485,0.456,0.406' -> its parts; the library checks and converts them."""
    return None if value is None else [v.strip() for v in value.split(",")]


@app.command()
@handles_errors
def export(
    model: str = typer.Argument(..., help="keras.applications name (vgg16, resnet50, mobilenet, ...), a .keras/.h5 file, an .onnx file or a .tflite file"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write (default models/<name>.onnx)"),
    weights: Optional[str] = typer.Option(None, help="applications: imagenet (default) or none; a weights file for applications and Keras files"),
    input_size: Optional[str] = typer.Option(None, help="input size, N (square) or HxW (e.g. 48x192), where the model "
                                             "allows it; default: the model's fixed size, or the size its metadata "
                                             "states (Ultralytics' imgsz)"),
    alpha: Optional[float] = typer.Option(None, help="applications: width multiplier of MobileNet models"),
    top: bool = typer.Option(True, "--top/--no-top", help="applications: keep the classifier (--no-top: convolutional part only)"),
    layers: List[str] = typer.Option([], "--layers", help="layers to expose (glob, repeatable), e.g. 'block*_conv*'"),
    exclude: List[str] = typer.Option([], "--exclude", help="layers to leave out (glob, repeatable)"),
    skip_fused: bool = typer.Option(False, "--skip-fused", help="Keras models: leave out what ONNX Runtime would fuse "
                                    "away (a conv's output read only by BatchNorm, an activation or an Add; a "
                                    "BatchNorm's read only by an activation; padding read by a conv): faster "
                                    "extraction, the maps after them stay"),
    preprocess: Optional[str] = typer.Option(None, help="the preprocessing the model expects. Keras model files: caffe, "
                                             "tf, torch or none (default: that of the keras.applications architecture "
                                             "inside, else none). ONNX models: a preset, torchvision (ImageNet mean/std, "
                                             "1/255, resize 256 + crop 224), caffe, tf, torch or none"),
    resize: Optional[str] = typer.Option(None, help="ONNX models: how render resizes photos for this file: N (shorter "
                                         "side to N, bilinear, centre crop), stretch, crop or pad; default: the preset's"),
    tolerance: Optional[float] = typer.Option(None, help="largest error allowed, relative to each layer's range "
                                              "(default 1e-4)"),
    op_types: Optional[str] = typer.Option(None, help="ONNX models: expose outputs of these op types, e.g. Conv,Relu,MaxPool,Concat"),
    mean: Optional[str] = typer.Option(None, help="ONNX and TFLite models: mean to subtract (after --scale), 1 or 3 "
                                       "numbers (1 for one-channel models, which get the gray of the pixels)"),
    std: Optional[str] = typer.Option(None, help="ONNX and TFLite models: std to divide by, 1 or 3 numbers"),
    scale: Optional[str] = typer.Option(None, help="ONNX and TFLite models: factor applied to 0..255 pixels first, "
                                        "e.g. 1/255"),
    bgr: bool = typer.Option(False, help="ONNX and TFLite models: the network takes BGR"),
    layout: Optional[str] = typer.Option(None, help="ONNX models: input layout nchw or nhwc (inferred when clear)"),
    labels: Optional[str] = typer.Option(None, help="class names: imagenet (the 1000 ImageNet classes, shipped), or a "
                                         "file with one per line or 'index,name'"),
    external_data: Optional[bool] = typer.Option(None, "--external-data/--single-file", help="weights in NAME.onnx.data "
                                                 "beside NAME.onnx, or all in one file; default: one file up to 8 MiB "
                                                 "of weights (a pair opens no faster there), a pair above"),
) -> None:
    """Export a model to one ONNX file with its feature maps as outputs, checked output by output."""
    from onnxviz.run.tensordiff import layer_group
    from onnxviz.exporter.pipeline import export as run_export
    from onnxviz.exporter.sources.base import ExportOptions

    options = ExportOptions(
        weights=weights, input_size=input_size, alpha=alpha, include_top=top, layers=layers, exclude=exclude,
        skip_fused=skip_fused, preprocess=preprocess, op_types=_csv(op_types), mean=_numbers(mean),
        std=_numbers(std), scale=scale, bgr=bgr, layout=layout, labels=labels, resize=resize,
        external_data=external_data)
    if tolerance is not None:
        options.tolerance = tolerance
    from onnxviz.render.probe import check_renders

    result = run_export(model, output, options, progress=Progress(), verify=check_renders)
    for note in result.notes:
        _err(f"note: {note}")
    groups: dict[str, list] = {}
    for d in result.diffs:
        groups.setdefault(layer_group(d.name), []).append(d)
    for group, diffs in groups.items():
        worst = max(d.relative for d in diffs)
        noise = max(d.noise for d in diffs)
        typer.echo(f"  {group:<24} {len(diffs):3d} outputs  max relative error {worst:.1e} (rounding moves them "
                   f"{noise:.1e})")
    info = result.info
    typer.echo(f"preprocessing {result.preprocessing_reason}")
    typer.echo(
        f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB) in {result.seconds:.0f}s: "
        f"{len(info.layers)} outputs match {result.reference} (max relative error {result.max_relative:.1e}, "
        f"tolerance {result.tolerance:g}); input RGB 0..255 {info.height}x{info.width}"
        f"{f' ({result.size_reason})' if result.size_reason else ''}"
        f"{', gray for its one channel' if info.preprocessing.gray else ''}, "
        f"{len(info.feature_maps)} feature maps"
    )


@app.command("layers")
@handles_errors
def layers_cmd(
    model: Path = typer.Argument(..., help="an ONNX file written by onnxviz export"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for programs"),
) -> None:
    """List the exposed layers in network order (for other ONNX files: the 4-D maps export would pick from)."""
    from onnxviz.model.info import load_info

    try:
        info = load_info(model)
        source, size = info.source, f"{info.height}x{info.width} RGB 0..255"
        rows = [{"index": i, "name": layer.name, "class": layer.cls or layer.op, "op": layer.op, "shape": layer.shape,
                 "channels": layer.channels, "layout": layer.layout, "folded": layer.folded}
                for i, layer in enumerate(info.layers)]
        title = f"{len(rows)} outputs"
    except NotOnnxvizFile:
        from onnxviz.exporter.sources.onnx import inspect_onnx

        seen = inspect_onnx(model)
        source, size = f"ONNX model not written by onnxviz ({seen.layout} input)", f"{seen.height}x{seen.width}"
        rows = [{"index": i, "name": layer.name, "class": layer.op, "shape": [None, *layer.shape[1:]],
                 "channels": layer.shape[1], "layout": "NCHW", "default": layer.default}
                for i, layer in enumerate(seen.layers)]
        title = f"{len(rows)} feature maps that 'onnxviz export {model}' can expose"
    if as_json:
        typer.echo(json.dumps({"model": str(model), "source": source, "input": size, "layers": rows}, indent=2))
        return
    width = max([len(r["name"]) for r in rows] + [4])
    typer.echo(f"{model}: {source}, input {size}, {title}")
    for r in rows:
        shape = "x".join("N" if d is None else str(d) for d in r["shape"])
        folded = ""
        if r.get("folded") and r["name"].endswith("+bn"):  # TorchScript exporter: the BatchNorm's name is lost
            folded = f"  (a BatchNorm folded into {' + '.join(r['folded'])} by the exporter)"
        elif r.get("folded"):
            folded = f"  ({' + '.join(r['folded'])} folded in by the exporter)"
        typer.echo(f"{r['index']:4d}  {r['name']:<{width}}  {r['class']:<24} {shape:<18} {r['channels'] or '':<5}{folded}")


class Bar:
    """A progress line on stderr: redrawn in place on a terminal, a line every 10% otherwise."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int, name: str) -> None:
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        width = 24
        filled = int(width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, {rate:.1f}/s  {name[:40]}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100) + ("\n" if done == total else ""))
            sys.stderr.flush()
        elif total and (done * 10 // total != self.last or done == total):
            self.last = done * 10 // total
            _err(line)


@app.command()
@handles_errors
def render(
    model: Path = typer.Argument(..., help="an ONNX file written by onnxviz export"),
    images: List[Path] = typer.Argument(..., help="image files and/or folders of images"),
    output: Path = typer.Option(Path("onnxviz-out"), "-o", "--output", help="output folder; one subfolder per image"),
    layers: List[str] = typer.Option([], "--layers", help="layers to draw (glob, repeatable); default all"),
    max_channels: int = typer.Option(64, help="channels drawn per layer"),
    channels: Optional[str] = typer.Option(None, help="channel range A:B to draw, e.g. 0:32"),
    sort: str = typer.Option("index", help="channel order: index, mean or max (most active first)"),
    norm: str = typer.Option("channel", help="channel: min-max per channel; layer: one scale per layer"),
    colormap: str = typer.Option("viridis", help="viridis, gray, inferno, magma, plasma, jet, turbo, ..."),
    grids: bool = typer.Option(False, "--grids/--no-grids", help="also write coloured grid pictures per layer into "
                               "grids/ (for papers and READMEs); the report needs none"),
    fmt: str = typer.Option("jpg", "--format", help="of the grids: jpg or png"),
    quality: int = typer.Option(90, help="JPEG quality 1..100 of the grids"),
    top_k: int = typer.Option(5, help="predictions shown, when the model has class labels"),
    resize: Optional[str] = typer.Option(None, help="stretch (as Keras load_img), crop (centre), pad, or N: shorter side "
                                         "to N, bilinear, centre crop (torchvision); default: the file's own, else stretch"),
    batch_size: int = typer.Option(8, help="images per inference batch"),
    provider: str = typer.Option("auto", help="auto (CUDA when it really loads, else CPU), cuda or cpu"),
    atlas: Optional[Path] = typer.Option(None, help="an 'onnxviz atlas' folder of this model: each layer it "
                                         "covers links to what its channels respond to"),
    fresh: bool = typer.Option(False, "--fresh", help="start the run page of OUTPUT afresh; by default a render "
                               "adds its images to the run of the same model already there"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also say why CUDA was not used"),
    cam: bool = typer.Option(True, "--cam/--no-cam", help="class activation maps (Grad-CAM) of the top 3 classes, "
                             "for models with a classifier"),
    cam_layer: Optional[str] = typer.Option(None, help="the layer of the class activation maps; default: the last "
                                            "feature map before the classifier"),
    parts: int = typer.Option(5, help="factorize layers into this many parts (non-negative matrix factorization); "
                              "0 turns it off"),
    parts_layers: List[str] = typer.Option([], "--parts-layers", help="layers to factorize (glob, repeatable); "
                                           "default: one per stage"),
) -> None:
    """Store every layer's feature maps, the predictions and the first-layer filters, with a report, per image."""
    from onnxviz.render.options import RenderOptions, parse_channels
    from onnxviz.render.pipeline import render as run_render

    opts = RenderOptions(layers=layers, max_channels=max_channels, channels=parse_channels(channels), sort=sort,
                         norm=norm, colormap=colormap, grids=grids, fmt=fmt.lower().replace("jpeg", "jpg"),
                         quality=quality, top_k=top_k, resize=resize, batch_size=batch_size, provider=provider,
                         atlas=atlas, fresh=fresh, cam=cam, cam_layer=cam_layer, parts=parts,
                         parts_layers=parts_layers)
    result = run_render(model, images, output, opts, progress=Bar())
    _report_render(result, verbose)


def _ran_on(provider: str, fallback: str | None, verbose: bool, extra: str = "") -> str:
    """'ran on CPU': why CUDA was not used only with --verbose (the report keeps it)."""
    note = f"; CUDA not used: {fallback}" if fallback and verbose else ""
    return f"ran on {provider.upper()}{extra}{note}"


def _report_render(result, verbose: bool) -> None:
    """The lines every render prints: where each report is, the run's totals, the failures."""
    typer.echo(_ran_on(result.provider, result.fallback, verbose))
    for item in result.images[:20]:
        best = f": {item.predictions[0].label} {item.predictions[0].score * 100:.1f}%" if item.predictions else ""
        typer.echo(f"  {item.folder}/index.html  {item.layers} layers{best}")
    if len(result.images) > 20:
        typer.echo(f"  ... and {len(result.images) - 20} more (listed in {result.output}/run.json)")
    t = result.timings
    per_image = result.bytes / len(result.images) / 1e6 if result.images else 0.0
    typer.echo(f"rendered {len(result.images)} image(s) into {result.output} in {result.seconds:.1f}s "
               f"({result.images_per_second:.1f} images/s, {per_image:.1f} MB per image; work per stage: read "
               f"{t.read:.1f}s, inference {t.inference:.1f}s, drawing {t.drawing:.1f}s, encoding {t.encoding:.1f}s, "
               f"writing {t.writing:.1f}s)")
    for warning in result.failed:
        _err(f"warning: {warning}")
    if result.failed:
        _err(f"error: {len(result.failed)} input(s) could not be rendered")
        raise typer.Exit(1)
    if not result.images:
        _err("error: no images to render; give image files or folders (JPEG, PNG, BMP, WebP, TIFF)")
        raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    images: List[Path] = typer.Argument(None, help="your own photos or folders (default: the shipped photo)"),
    output: Path = typer.Option(Path("onnxviz-demo"), "-o", "--output", help="output folder"),
    provider: str = typer.Option("auto", help="auto (CUDA when it really loads, else CPU), cuda or cpu"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also say why CUDA was not used"),
) -> None:
    """Render a photo through the MobileNet shipped with onnxviz (0.25/128, ImageNet): no download, no export."""
    from onnxviz.render.demo import MODEL, demo as run_demo
    from onnxviz.render.options import RenderOptions

    result = run_demo(images or [], output, RenderOptions(provider=provider), progress=Bar())
    _report_render(result, verbose)
    if result.images:
        typer.echo(f"open {result.images[0].folder}/index.html in a browser"
                   f"{f' (and {result.output}/index.html for the run)' if len(result.images) > 1 else ''}; "
                   f"the model is {MODEL}")


@app.command()
@handles_errors
def filters(
    model: Path = typer.Argument(..., help="any ONNX file"),
    output: Path = typer.Option(Path("filters.jpg"), "-o", "--output", help="image to write (.jpg or .png)"),
) -> None:
    """Draw the first convolution's learned filters."""
    from onnxviz.render.filters import write_filters

    fmt = output.suffix.lower().lstrip(".").replace("jpeg", "jpg") or "jpg"
    result = write_filters(model, output, fmt)
    typer.echo(f"wrote {output}: {result.kernel} of '{result.layer}' ({result.channel_order} input)")


@app.command()
@handles_errors
def diff(
    model: Path = typer.Argument(..., help="an ONNX file written by onnxviz export"),
    image: Path = typer.Argument(..., help="one image"),
    providers: Optional[str] = typer.Option(None, help="two runs to compare, reference,candidate: cpu, cuda or "
                                            "cpu-unoptimized (ONNX Runtime's fusions off). Default: cpu,cuda where "
                                            "CUDA runs, else cpu-unoptimized,cpu"),
    against: Optional[str] = typer.Option(None, help="keras: compare ONNX Runtime CPU with the Keras model it came from"),
    tolerance: float = typer.Option(1e-3, help="largest error allowed, relative to each layer's range"),
    maps: Optional[Path] = typer.Option(None, help="folder for per-layer difference grids"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON"),
) -> None:
    """Compare every layer between two providers (or against Keras) and mark the first that diverges."""
    from onnxviz.compare.diff import diff_model
    from onnxviz.files import write_text

    result = diff_model(model, image, tuple(_csv(providers)) or None, against, tolerance, maps)
    typer.echo(result.table())
    if json_out:
        write_text(json_out, json.dumps(result.to_dict(), indent=2), param="json_out")
        typer.echo(f"wrote {json_out}")
    if result.maps:
        typer.echo(f"wrote {len(result.maps)} difference grids into {maps}")


@app.command()
@handles_errors
def bench(
    model: Path = typer.Argument(..., help="an ONNX file written by onnxviz export"),
    providers: Optional[str] = typer.Option(None, help="providers to time, e.g. cpu,cuda (default: every one that runs here)"),
    batch_sizes: str = typer.Option("1,8", help="batch sizes, e.g. 1,8,32"),
    runs: int = typer.Option(20, help="timed runs per provider and batch size"),
    warmup: int = typer.Option(3, help="untimed runs first (CUDA picks its convolution algorithms then)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON"),
    compare_keras: bool = typer.Option(False, help="also time the Keras model with the same outputs (needs the export extra)"),
) -> None:
    """Time feature-map extraction per provider and batch size, against the network without them."""
    from onnxviz.compare.bench import parse_batch_sizes, parse_providers, run_bench

    chosen = parse_providers(providers) if providers else None
    result = run_bench(model, chosen, parse_batch_sizes(batch_sizes), runs=runs, warmup=warmup,
                       compare_keras=compare_keras, progress=Progress())
    typer.echo(bench_table(result))
    if json_out:
        result.save_json(json_out)
        typer.echo(f"wrote {json_out}")


def bench_table(result: BenchResult) -> str:
    """`bench`'s report: one line per provider and batch size, then skipped providers and notes."""
    from onnxviz.compare.bench import MB

    lines = [f"{result.model} ({result.source}): {len(result.outputs)} outputs, {result.feature_maps} feature maps, "
             f"{result.feature_bytes_per_image / MB:.1f} MB of feature maps per image",
             f"{result.runs} timed runs after {result.warmup} warm-up; medians; "
             f"ONNX Runtime {result.machine.get('onnxruntime')}, {result.threads} threads "
             f"on {result.machine.get('cpu')}"]
    if result.floor_output:
        lines.append(f"floor: the same network with only '{result.floor_output}' as output, "
                     f"timed in alternating blocks")
    keras = any(r.keras_predict or r.keras_function for r in result.rows)
    header = ["provider", "batch", "median ms", "p90 ms", "img/s", "maps MB/s", "floor ms", "x floor"]
    if keras:
        header += ["predict ms", "ORT/predict", "tf.function ms", "ORT/tf.fn"]
    table = [header]
    for row in result.rows:
        used = row.provider if row.used == row.provider else f"{row.provider}->{row.used}"
        cells = [used, str(row.batch_size), f"{row.full.median_ms:.1f}", f"{row.full.p90_ms:.1f}",
                 f"{row.full.images_per_s:.1f}", f"{row.feature_mb_per_s:.0f}",
                 f"{row.floor.median_ms:.1f}" if row.floor else "-",
                 f"{row.extraction_ratio:.2f}" if row.extraction_ratio else "-"]
        if keras:
            cells += [f"{row.keras_predict.median_ms:.1f}" if row.keras_predict else "-",
                      f"{row.ort_over_keras_predict:.2f}" if row.ort_over_keras_predict else "-",
                      f"{row.keras_function.median_ms:.1f}" if row.keras_function else "-",
                      f"{row.ort_over_keras_function:.2f}" if row.ort_over_keras_function else "-"]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines.append("")
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    if result.keras:
        lines.append(f"Keras {result.keras.get('keras')} / TensorFlow {result.keras.get('tensorflow')} "
                     f"on {result.keras.get('device')}; ORT/Keras < 1 means ONNX Runtime is faster")
    for skip in result.skipped:
        where = f"{skip.provider} batch {skip.batch_size}" if skip.batch_size else skip.provider
        lines.append(f"skipped {where}: {skip.reason}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


@app.command()
@handles_errors
def atlas(
    model: Path = typer.Argument(..., help="an ONNX file written by onnxviz export"),
    images: List[Path] = typer.Argument(..., help="image files and/or folders of images (the dataset)"),
    output: Path = typer.Option(Path("onnxviz-atlas"), "-o", "--output", help="output folder; an atlas already "
                                "there is resumed and new images are added to it"),
    layers: List[str] = typer.Option([], "--layers", help="layers (glob, repeatable); default: at each resolution, the "
                                     "last of its widest maps"),
    top: int = typer.Option(9, "--top", help="images kept per channel"),
    score: str = typer.Option("max", help="how a channel's map scores an image: max (spatial max) or mean"),
    batch_size: int = typer.Option(8, help="images per inference batch"),
    provider: str = typer.Option("auto", help="auto (CUDA when it really loads, else CPU), cuda or cpu"),
    resize: str = typer.Option("stretch", help="stretch (as Keras load_img), crop (centre) or pad"),
    overlay: bool = typer.Option(False, "--overlay", help="also draw each channel's map over its crops (runs the "
                                 "winning images through the network once more)"),
    checkpoint_every: int = typer.Option(2000, help="save the state every this many images"),
    tile: int = typer.Option(64, help="side of a crop in the sprite sheets, in pixels"),
    engine: str = typer.Option("local", help="local (one ONNX Runtime session) or ray (Ray Data; pip install "
                               "'onnxviz\\[ray]')"),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="--engine ray: the cluster "
                                              "(host:port or ray://host:port); default: a local Ray"),
    workers: int = typer.Option(2, help="--engine ray: ONNX Runtime actors"),
    worker_cpus: Optional[float] = typer.Option(None, help="--engine ray: CPUs each actor reserves (default: "
                                                "1, or half a CPU when Ray runs on this machine)"),
    worker_gpus: float = typer.Option(0.0, help="--engine ray: GPUs each actor reserves (1 for one GPU each)"),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads per session (default: the cores; "
                                          "--engine ray: the CPUs an actor reserves, at least 1)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also say why CUDA was not used"),
) -> None:
    """For every channel, the images of a dataset that excite it most, cropped to the receptive field."""
    from onnxviz.atlas.options import AtlasOptions
    from onnxviz.atlas.pipeline import build_atlas

    opts = AtlasOptions(layers=layers, top=top, score=score, batch_size=batch_size, provider=provider,
                        resize=resize, engine=engine, overlay=overlay, checkpoint_every=checkpoint_every, tile=tile,
                        ray_address=ray_address, workers=workers, worker_cpus=worker_cpus,
                        worker_gpus=worker_gpus, threads=threads)
    progress = Progress()
    result = build_atlas(model, images, output, opts, progress=Bar(), note=progress)
    for warning in result.warnings + result.failed:
        _err(f"warning: {warning}")
    typer.echo(_ran_on(result.provider, result.fallback, verbose, f" ({result.engine})"))
    times = result.ray
    if times:
        typer.echo(f"ray: started in {times.init_s:.1f}s, first results after {times.first_result_s:.1f}s, "
                   f"{times.after_start_img_s:.1f} images/s once started")
    typer.echo(f"atlas of {result.images} images ({result.new_images} new, {result.images_per_second:.1f} images/s"
               f"{'' if not result.failed else f', {len(result.failed)} unreadable'}): {len(result.layers)} "
               f"layers, {result.channels} channels, top {top}; {result.files} files, "
               f"{result.bytes / 1e6:.1f} MB in {result.output}")
    typer.echo(f"  {result.page}\n  {result.table}")


def main() -> None:
    """The `onnxviz` command. A mistyped command line (an unknown option or command, a missing
    argument, a value of the wrong kind) is one line on stderr and exit 1, like every other bad
    input; `--help`, and no arguments at all, show the help."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `onnxviz` or a group alone: its help
            exc.show()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise  # not a usage error: a bug keeps its traceback
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else "; see 'onnxviz --help'"
        _err(f"error: {exc.format_message().rstrip('.')}{hint}")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
