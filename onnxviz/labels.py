"""Class names for a model's predictions."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ModelError


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
