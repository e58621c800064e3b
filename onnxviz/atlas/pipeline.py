"""`onnxviz atlas`: for every channel of the chosen layers, the N images of a dataset that excite it most.

One pass streams the images through the onnxviz file extended with per-channel reductions
(`plan`): only a score and a position per channel leave ONNX Runtime, and a `TopN` per layer
(`state`) keeps the best N per channel in fixed memory, on this machine (`local`) or on Ray
Data (`ray`). A second pass re-reads only the winning images and cuts each winner's receptive
field into sprite sheets; `crops` writes them, the table and the page.

State lives in `OUT/atlas-state.npz` (written atomically every few thousand images and
when a run is interrupted): a run on a folder that has one resumes it and adds new images
to it, so that the result is the same as one run over every image in that order.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from onnxviz.atlas.crops import write_atlas
from onnxviz.atlas.local import run_local
from onnxviz.atlas.options import AtlasOptions, EngineRun, Progress, RayTimes
from onnxviz.atlas.plan import make_plan
from onnxviz.atlas.ray import check_ray, run_ray
from onnxviz.atlas.state import STATE_FILE, resume_state
from onnxviz.errors import ImageError, OutputError
from onnxviz.files import ensure_dir
from onnxviz.run.images import collect_images


@dataclass
class AtlasResult:
    """What one `build_atlas` run did."""

    output: Path
    model: Path
    layers: list[str]
    channels: int
    images: int  # images in the atlas (all runs)
    new_images: int  # processed by this run
    failed: list[str]  # this run's unreadable images, one line each
    resumed: bool
    engine: str
    provider: str
    fallback: str | None
    seconds: float
    scan_seconds: float  # the pass through the network
    crop_seconds: float
    table: Path
    page: Path
    files: int
    bytes: int
    warnings: list[str] = field(default_factory=list)
    ray: RayTimes | None = None  # engine "ray": where its time went

    @property
    def images_per_second(self) -> float:
        return self.new_images / self.scan_seconds if self.scan_seconds > 0 else 0.0

    @property
    def engine_times(self) -> dict[str, float]:
        """`ray` as a dict (init_s, first_result_s, after_start_img_s); empty for the local engine."""
        return asdict(self.ray) if self.ray else {}


def check_output(output: Path) -> Path:
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"output '{output}' is a file, not a folder; choose a folder with -o")
    return ensure_dir(output)


def build_atlas(model: Path, inputs: list[Path], output: Path, options: AtlasOptions | None = None,
                progress: Progress | None = None, note: Callable[[str], None] | None = None) -> AtlasResult:
    """Collect the top images of every channel of `model`'s chosen layers over `inputs` into `output`."""
    options = options or AtlasOptions()
    options.check()
    started = time.perf_counter()
    note = note or (lambda message: None)
    paths, warnings = collect_images(list(inputs))
    if not paths and not (Path(output) / STATE_FILE).exists():
        why = "; ".join(warnings) or "no inputs given"
        raise ImageError(f"no images found ({why}); give image files or folders that hold them")
    output = check_output(output)
    if options.engine == "ray":
        check_ray(options.ray_address)  # before minutes of work: is Ray here, does the address answer
    plan = make_plan(Path(model), options)
    state, resumed = resume_state(output, plan, options)
    todo = state.add_images([str(Path(p).resolve()) for p in paths])
    if resumed:
        note(f"resuming the atlas in {output}: {len(state.images) - len(todo)} images done, {len(todo)} to go")
    channels = sum(t.channels for t in state.tops)
    note(f"{len(plan.layers)} layers, {channels} channels, top {options.top} by spatial {options.score}: "
         f"{', '.join(layer.name for layer in plan.layers)}")
    failed_before = set(state.failed)

    def checkpoint() -> None:
        state.save(output)

    t = time.perf_counter()
    try:
        if options.engine == "ray":
            ran: EngineRun = run_ray(plan, state, todo, options, checkpoint, progress)
        else:
            ran = run_local(plan, state, todo, options, checkpoint, progress)
    except KeyboardInterrupt:
        state.save(output)
        raise
    scan_seconds = time.perf_counter() - t
    plan = replace(plan, reduced=b"")  # the page does not need the reduced model: 100 MB (ResNet50) freed
    state.save(output)
    new_failed = [why for k, why in sorted(state.failed.items()) if k not in failed_before]
    if len(state.failed) == len(state.images):
        raise ImageError(f"none of the {len(state.images)} images could be read (first: {state.failed[min(state.failed)]})")
    t = time.perf_counter()
    written = write_atlas(plan, state, output, options, note)
    crop_seconds = time.perf_counter() - t
    return AtlasResult(output, Path(model), [layer.name for layer in plan.layers], channels,
                       len(state.images) - len(state.failed), len(todo), new_failed, resumed, options.engine,
                       ran.provider, ran.fallback, time.perf_counter() - started, scan_seconds,
                       crop_seconds, written.table, written.page, written.files, written.bytes, warnings, ran.ray)
