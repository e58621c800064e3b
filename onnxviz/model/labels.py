"""Class names for a model's predictions (the ImageNet list shipped with onnxviz, or a file of the
user's), and a prediction's best classes."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from onnxviz.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

IMAGENET = "imagenet"
_IMAGENET_FILE = Path(__file__).parent.parent / "data" / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def _imagenet() -> tuple[str, ...]:
    lines = _IMAGENET_FILE.read_text(encoding="utf-8").splitlines()
    names = tuple(line for line in lines if line and not line.startswith("#"))
    assert len(names) == 1000, f"{_IMAGENET_FILE} has {len(names)} names, not 1000"
    return names


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, as Keras' `decode_predictions` names them
    (`tabby`, `tiger_cat`, `espresso`); the order of torchvision's and Keras' ImageNet heads."""
    return list(_imagenet())


def load_labels(spec: str | Path) -> list[str]:
    """`imagenet` (when no file of that name exists) for the shipped list, else a labels file
    (one name per line, or `index,name` lines)."""
    if str(spec) == IMAGENET and not Path(spec).exists():
        return imagenet_labels()
    return read_labels(Path(spec))


def read_labels(path: Path) -> list[str]:
    """Class names: one per line, or `index,name` lines (indices 0..K-1, any order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ModelError(f"cannot read labels file '{path}': {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"labels file '{path}' is not UTF-8 text; give one class name per line") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ModelError(f"labels file '{path}' is empty; give one class name per line")
    indexed = [re.match(r"^(\d+)\s*,\s*(.*)$", line) for line in lines]
    if not all(indexed):
        return lines
    labels: dict[int, str] = {}
    for m in indexed:
        index = int(m.group(1))  # type: ignore[union-attr]
        if index in labels:
            raise ModelError(f"labels file '{path}' gives index {index} twice")
        labels[index] = m.group(2).strip()  # type: ignore[union-attr]
    missing = sorted(set(range(len(labels))) - set(labels))
    if missing:
        raise ModelError(f"labels file '{path}' has {len(labels)} 'index,name' lines but no index "
                         f"{missing[0]}; indices must run 0..{len(labels) - 1}")
    return [labels[i] for i in range(len(labels))]


@dataclass
class Prediction:
    """One of a prediction's best classes: its name, its probability and its index in the scores."""

    label: str
    score: float
    index: int


def top_predictions(scores: np.ndarray, k: int, labels: Sequence[str] | None = None,
                    probabilities: bool = True) -> list[Prediction]:
    """The k best classes of `scores` (one image's class scores), best first, with their
    probabilities: softmax applied unless `probabilities` says the scores are already. A class
    without a name in `labels` is called `class N`."""
    import numpy as np

    if k <= 0:
        return []
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not probabilities:
        s = np.exp(s - s.max())
        s /= s.sum()
    order = np.argsort(-s, kind="stable")[:k]
    labels = labels or []
    return [Prediction(labels[i] if i < len(labels) else f"class {i}", float(s[i]), int(i)) for i in order]
