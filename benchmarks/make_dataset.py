"""Build an image dataset for atlas tests and benchmarks from what is at hand, with no download.

Two kinds of image, alternating:
- transformed crops of the shared photos (../shared/data/images or $ONNXVIZ_TEST_DATA/images):
  a random box (10-100% of the side), flipped, rotated by a multiple of 90 degrees or a small
  angle, with brightness, contrast, hue shift and blur varied;
- procedural patterns: oriented stripes and gratings, checkerboards, dots, rings, colour
  blobs, gradients and noise, at random scales and colours (what early layers respond to).

Deterministic for a given --seed. Sizes vary (96..400 px a side), as a real dataset's do.

    python benchmarks/make_dataset.py -o /tmp/atlas-data --count 3000
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxviz.run.images import IMAGE_SUFFIXES, load_image  # noqa: E402


def photos_dir() -> Path:
    base = os.environ.get("ONNXVIZ_TEST_DATA")
    return Path(base) / "images" if base else ROOT.parent / "shared" / "data" / "images"


def crop_of(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    side = rng.uniform(0.1, 1.0)
    ch, cw = max(16, int(h * side * rng.uniform(0.7, 1.0))), max(16, int(w * side * rng.uniform(0.7, 1.0)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    img = photo[y:y + ch, x:x + cw].astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.ascontiguousarray(np.rot90(img, int(rng.integers(0, 4))))
    if rng.random() < 0.4:
        angle = rng.uniform(-25, 25)
        m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), angle, 1.0)
        img = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)
    img = (img - 128) * rng.uniform(0.6, 1.4) + 128 + rng.uniform(-40, 40)
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(0, 180))) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.5))
    size = int(rng.integers(96, 401))
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (size, int(size * rng.uniform(0.7, 1.3))),
                     interpolation=cv2.INTER_AREA)
    return img


def colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def pattern(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    h, w = int(rng.integers(96, 321)), int(rng.integers(96, 321))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = colour(rng), colour(rng)
    kind = ["stripes", "checker", "dots", "rings", "blobs", "gradient", "noise"][int(rng.integers(0, 7))]
    if kind == "stripes":
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
        t = (np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period) + 1) / 2
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "checker":
        s = rng.uniform(4, 40)
        t = ((np.floor(xx / s) + np.floor(yy / s)) % 2).astype(np.float32)
    elif kind == "dots":
        s, r = rng.uniform(10, 40), rng.uniform(0.15, 0.4)
        t = ((((xx % s) / s - 0.5) ** 2 + ((yy % s) / s - 0.5) ** 2) < r * r).astype(np.float32)
    elif kind == "rings":
        cy, cx, period = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 30)
        t = (np.sin(2 * np.pi * np.hypot(yy - cy, xx - cx) / period) + 1) / 2
    elif kind == "blobs":
        t = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(3, 12))):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 50)
            t = np.maximum(t, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    elif kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    else:
        t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.5, 6))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = a * (1 - t[..., None]) + b * t[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), kind


def build(output: Path, count: int, seed: int, photos: Path) -> int:
    rng = np.random.default_rng(seed)
    sources = sorted(p for p in photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if photos.is_dir() else []
    pictures = [(p.stem, load_image(p)) for p in sources]
    output.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if pictures and i % 2 == 0:
            stem, photo = pictures[int(rng.integers(0, len(pictures)))]
            img, name = crop_of(photo, rng), f"{i:05d}_{stem}"
        else:
            img, kind = pattern(rng)
            name = f"{i:05d}_{kind}"
        ext = ".png" if rng.random() < 0.1 else ".jpg"
        ok, data = cv2.imencode(ext, img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else [])
        assert ok
        (output / f"{name}{ext}").write_bytes(data.tobytes())
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos", type=Path, default=photos_dir())
    args = parser.parse_args()
    n = build(args.output, args.count, args.seed, args.photos)
    print(f"wrote {n} images into {args.output} (photos from {args.photos})")


if __name__ == "__main__":
    main()
