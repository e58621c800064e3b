"""Class names: the ImageNet list shipped with onnxviz, or a file of the user's."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

IMAGENET = "imagenet"
_IMAGENET_FILE = Path(__file__).parent / "data" / "imagenet_classes.txt"


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
    from .onnx_import import read_labels

    return read_labels(Path(spec))
