"""What `Model.cam` and `Model.factorize` return: arrays, with a picture for Jupyter."""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from onnxviz.explain.overlay import PALETTE, caption, heat_overlay, parts_overlay, sheet

SHOWN_IMAGES = 6
PANEL = 160  # px, the longer side of each picture in the sheet


def _panel(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = PANEL / max(height, width)
    return cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _png(rgb: np.ndarray) -> bytes:
    from onnxviz.picture.encoding import encode_png

    return encode_png(np.ascontiguousarray(rgb[..., ::-1]))


@dataclass(repr=False)
class CamResult:
    """Class activation maps: `maps` `[N, K, h, w]` at the layer's resolution (Grad-CAM: the raw
    values after the ReLU; Eigen-CAM: the first principal component, K = 1), `classes` `[N, K]`
    (None for Eigen-CAM), `scores` `[N, K]` (the file's class scores), `labels` their names."""

    maps: np.ndarray
    classes: np.ndarray | None
    scores: np.ndarray | None
    labels: list[list[str]] | None
    layer: str
    method: str
    pixels: np.ndarray = field(repr=False)  # [N, H, W, 3] uint8 RGB, the images as the model saw them
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        n, k = self.maps.shape[:2]
        first = ""
        if self.labels:
            first = ": " + ", ".join(f"{label} {score:.2f}" for label, score in zip(self.labels[0], self.scores[0]))
        notes = f"; {len(self.notes)} notes" if self.notes else ""
        return (f"<CamResult {self.method} at {self.layer} {self.maps.shape[2]}x{self.maps.shape[3]}: "
                f"{n} images x {k} maps{first}{notes}>")

    def picture(self, image: int = 0, index: int = 0) -> np.ndarray:
        """Map `index` of `image` over the image: RGB uint8."""
        cam = self.maps[image, index]
        if self.method == "eigencam":
            cam = np.maximum(cam, 0)
        return heat_overlay(self.pixels[image], cam)

    def _repr_png_(self) -> bytes:
        rows = []
        for i in range(min(len(self.maps), SHOWN_IMAGES)):
            row = [caption(_panel(self.pixels[i]), "input")]
            for j in range(self.maps.shape[1]):
                text = (f"{self.labels[i][j]} {self.scores[i][j]:.2f}" if self.labels
                        else "Eigen-CAM" if self.method == "eigencam" else f"class {self.classes[i][j]}")
                row.append(caption(_panel(self.picture(i, j)), text))
            rows.append(row)
        return _png(sheet(rows))


@dataclass(repr=False)
class Factorization:
    """A layer's activations (positions x channels, negatives set to 0) ~ `maps` x `channels`:
    `maps` `[N, k, h, w]` >= 0, `channels` `[k, C]` >= 0 (each part's row peaks at 1), `error`
    the relative reconstruction error (Frobenius norm). Parts are shared by the images given."""

    maps: np.ndarray
    channels: np.ndarray
    error: float
    layer: str
    clipped: float  # share of the squared activations that were negative (set to 0)
    pixels: np.ndarray = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def strongest(self, part: int, n: int = 5) -> list[int]:
        """The channels that weigh most in `part`, strongest first."""
        from onnxviz.explain.factorize import strongest

        return strongest(self.channels, part, n)

    def __repr__(self) -> str:
        n, k = self.maps.shape[:2]
        notes = f"; {len(self.notes)} notes" if self.notes else ""
        return (f"<Factorization of {self.layer} into {k} parts over {n} images: error {self.error:.3f}, "
                f"{self.channels.shape[1]} channels{notes}>")

    def picture(self, image: int = 0) -> np.ndarray:
        """Every part of `image` over it in its colour: RGB uint8."""
        return parts_overlay(self.pixels[image], self.maps[image], self.maps.max(axis=(0, 2, 3)))

    def _repr_png_(self) -> bytes:
        pictures = [_panel(self.picture(i)) for i in range(min(len(self.maps), SHOWN_IMAGES))]
        legend = []
        for j in range(self.maps.shape[1]):
            swatch = np.tile(PALETTE[j % len(PALETTE)], (pictures[0].shape[0] // 4, pictures[0].shape[1], 1))
            legend.append(caption(swatch.astype(np.uint8), f"part {j}: ch {', '.join(map(str, self.strongest(j, 3)))}"))
        return _png(sheet([[caption(p, f"image {i}") for i, p in enumerate(pictures)], legend]))
