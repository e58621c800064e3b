"""Output-by-output comparison of two runs of the same network (export checks, `diff`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

# An output passes export's check when its error is within the tolerance (relative to its
# range) or within this many times what the source's own output moves under rounding-level
# changes of its input (`noise`).
NOISE_FACTOR = 4.0


@dataclass
class TensorDiff:
    """How far `actual` is from `reference` for one output.

    `relative` is the max absolute error over the reference's range (max - min), the
    measure export's tolerance applies to: it stays meaningful for layers whose values
    are large, tiny or mostly zero. `noise` is how far the reference itself moves under
    rounding-level changes of its input (or by one step of a quantized tensor), relative to the
    same range: what two correct computations of it can differ by.
    """

    name: str
    max_abs: float
    mean_abs: float
    relative: float
    cosine: float
    shape: list[int]
    noise: float = 0.0

    def allowed(self, tolerance: float) -> float:
        return max(tolerance, NOISE_FACTOR * self.noise) if np.isfinite(self.noise) else tolerance

    def ok(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.relative)) and self.relative <= self.allowed(tolerance)

    def to_dict(self) -> dict:
        return asdict(self)


def diff_tensor(name: str, reference: np.ndarray, actual: np.ndarray, noise: float = 0.0) -> TensorDiff:
    """`noise`: how far `reference` moves under rounding-level changes of its input, absolute."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        return TensorDiff(name, float("inf"), float("inf"), float("inf"), float("nan"), list(act.shape))
    err = np.abs(ref - act)
    span = float(ref.max() - ref.min()) if ref.size else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    relative = max_abs / span if span > 0 else (0.0 if max_abs == 0 else float("inf"))
    a, b = ref.ravel(), act.ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms > 0 else (1.0 if max_abs == 0 else 0.0)
    noise_rel = noise / span if span > 0 else (0.0 if noise == 0 else float("inf"))
    return TensorDiff(name, max_abs, float(err.mean()) if err.size else 0.0, relative, cosine, list(ref.shape),
                      noise_rel)


def diff_outputs(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                 names: list[str], noise: Mapping[str, float] | None = None) -> list[TensorDiff]:
    """One TensorDiff per name, in the order given (network order)."""
    noise = noise or {}
    return [diff_tensor(name, reference[name], actual[name], noise.get(name, 0.0)) for name in names]


def layer_group(name: str) -> str:
    """The block a layer belongs to, for grouped summaries: the name up to its first
    numbered part ('block1_conv2' -> 'block1', 'conv_pw_13_relu' -> 'conv_pw_13')."""
    parts = name.split("/")[-1].split("_")
    for i, part in enumerate(parts):
        if any(ch.isdigit() for ch in part):
            return "_".join(parts[: i + 1])
    return name
