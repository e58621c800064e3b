"""A folder of N photos for render benchmarks, made from the 4 test photos: crops, flips, rescales.

    python benchmarks/make_photos.py --src ../shared/data/images --out /tmp/photos100 --count 100

Deterministic (seeded); no downloads. Each photo is a random crop (50-100% of each side) of
one of the sources, flipped or not, rescaled so its long side is 300..900 px, written as JPEG
quality 92, the kind of file a camera folder holds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "images")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    sources = sorted(p for p in args.src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sources]
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for k in range(args.count):
        n = k % len(images)
        img = images[n]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        side = int(rng.integers(300, 901))
        f = side / max(ch, cw)
        crop = cv2.resize(np.ascontiguousarray(crop), (max(1, round(cw * f)), max(1, round(ch * f))),
                          interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        cv2.imwrite(str(args.out / f"{k:03d}_{sources[n].stem}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {args.count} photos into {args.out}")


if __name__ == "__main__":
    main()
