"""`onnxviz diff`: the same image through two execution providers, or through ONNX Runtime
and Keras, compared layer by layer in network order."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from onnxviz.run.tensordiff import TensorDiff, diff_outputs
from onnxviz.picture.encoding import encode
from onnxviz.errors import OptionError
from onnxviz.files import write_bytes
from onnxviz.run.images import load_image, resize_image
from onnxviz.files import safe_name
from onnxviz.picture.tiling import layer_grid

DEFAULT_TOLERANCE = 1e-3


@dataclass
class DiffResult:
    model: str
    image: str
    reference: str  # what the errors are measured against: "cpu" or "keras"
    candidate: str  # "cuda", "cpu", ...
    tolerance: float
    layers: list[TensorDiff]
    first_divergent: str | None
    maps: list[str]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["layers"] = [d.to_dict() for d in self.layers]
        return out

    def table(self) -> str:
        width = max([len(d.name) for d in self.layers] + [5])
        lines = [f"{self.model} on {Path(self.image).name}: {self.candidate} against {self.reference}, "
                 f"tolerance {self.tolerance:g} (max error / layer range)",
                 f"{'layer':<{width}}  {'max abs':>10} {'mean abs':>10} {'relative':>10} {'cosine':>10}"]
        for d in self.layers:
            mark = "  <- first divergence" if d.name == self.first_divergent else ("  x" if not d.ok(self.tolerance) else "")
            lines.append(f"{d.name:<{width}}  {d.max_abs:10.3g} {d.mean_abs:10.3g} {d.relative:10.3g} {d.cosine:10.6f}{mark}")
        bad = sum(not d.ok(self.tolerance) for d in self.layers)
        lines.append(f"{len(self.layers) - bad} of {len(self.layers)} layers agree within {self.tolerance:g}"
                     + (f"; first divergence at '{self.first_divergent}'" if self.first_divergent else ""))
        return "\n".join(lines)


# Runs `diff` can compare: an execution provider, or CPU with ONNX Runtime's graph rewrites off.
UNOPTIMIZED = "cpu-unoptimized"


def default_providers() -> tuple[str, str]:
    """What this machine can compare: CPU against CUDA where CUDA runs, else CPU as written
    (no fusions) against CPU as ONNX Runtime optimises it, which catches fusion bugs."""
    from onnxviz.run.session import cuda_status

    return ("cpu", "cuda") if cuda_status()[0] else (UNOPTIMIZED, "cpu")


def _open(model: Path, name: str):
    from onnxviz.run.session import open_session

    if name == UNOPTIMIZED:
        return open_session(model, "cpu", optimize=False)
    return open_session(model, name)


def diff_model(model: Path, image: Path, providers: tuple[str, ...] | None = None, against: str | None = None,
               tolerance: float = DEFAULT_TOLERANCE, maps_dir: Path | None = None) -> DiffResult:
    """Compare every exposed output of `model` for one image between two runs: `providers`
    (reference, candidate; default `default_providers()`), or ONNX Runtime against Keras."""
    from onnxviz.files import existing_file

    model, image = existing_file(Path(model), "model file"), Path(image)
    if against not in (None, "keras"):
        raise OptionError(f"{{against}} '{against}' is not supported; the only choice is 'keras'", params=("against",))
    if tolerance <= 0:
        raise OptionError(f"{{tolerance}} must be positive, got {tolerance}", params=("tolerance",))
    if against is not None and providers:
        raise OptionError("give {providers} or {against}, not both", params=("providers", "against"))
    providers = tuple(providers) if providers else default_providers()
    if against is None and len(providers) != 2:
        raise OptionError(f"{{providers}} takes two names, e.g. cpu,cuda or {UNOPTIMIZED},cpu; got "
                          f"{','.join(providers) or 'none'}", params=("providers",))
    first_session = _open(model, "cpu" if against else providers[0])
    info = first_session.info
    batch = resize_image(load_image(image), info.height, info.width, info.resize or "stretch")[None].astype(np.float32)
    first_out = first_session.run(batch)
    if against == "keras":
        from onnxviz.exporter.sources.keras import keras_outputs

        # Keras is the reference; ONNX Runtime CPU is measured against it.
        reference_out, reference_name = keras_outputs(info, batch), "keras"
        candidate_out, candidate_name = first_out, first_session.provider
    else:
        second = first_session if providers[1] == providers[0] else _open(model, providers[1])
        reference_out, reference_name = first_out, _label(providers[0], first_session.provider)
        candidate_out, candidate_name = second.run(batch), _label(providers[1], second.provider)
    names = [layer.name for layer in info.layers]
    diffs = diff_outputs({k: v[0] for k, v in reference_out.items()}, {k: v[0] for k, v in candidate_out.items()}, names)
    first = next((d.name for d in diffs if not d.ok(tolerance)), None)
    written: list[str] = []
    if maps_dir is not None:
        for index, layer in enumerate(info.layers):
            if not layer.is_feature_map:
                continue
            delta = np.abs(reference_out[layer.name][0] - candidate_out[layer.name][0]).astype(np.float32)
            grid = layer_grid(delta, norm="layer", colormap="inferno")
            path = Path(maps_dir) / f"{index}.{safe_name(layer.name)}_diff.png"
            write_bytes(path, encode(grid.image, "png"))
            written.append(str(path))
    return DiffResult(str(model), str(image), reference_name, candidate_name, tolerance, diffs, first, written)


def _label(asked: str, used: str) -> str:
    return UNOPTIMIZED if asked == UNOPTIMIZED else used
