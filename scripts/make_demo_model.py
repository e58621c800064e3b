"""Make the demo files shipped in onnxviz/data/demo/ again, and their SHA256SUMS.

    python scripts/make_demo_model.py [--keras-home DIR] [--photo coffee.png]

The model is `onnxviz export mobilenet --alpha 0.25 --input-size 128 --single-file`: Keras'
MobileNet with its ImageNet weights (`mobilenet_2_5_128_tf.h5`, Apache-2.0), checked output by
output against Keras as every export is. Keras downloads the weights into its cache unless
`--keras-home` names a folder laid out as that cache (`DIR/models/mobilenet_2_5_128_tf.h5`).
`--photo` re-encodes a photo as the shipped `coffee.jpg` (JPEG quality 90); without it the
shipped photo is kept. Needs the export extra (TensorFlow).
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "onnxviz" / "data" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-home", type=Path, help="a Keras cache folder holding models/mobilenet_2_5_128_tf.h5")
    parser.add_argument("--photo", type=Path, help="a photo to ship as coffee.jpg")
    args = parser.parse_args()
    if args.keras_home:
        os.environ["KERAS_HOME"] = str(args.keras_home.resolve())  # before Keras is imported

    import onnxviz
    from onnxviz.render.demo import MODEL, PHOTO, SUMS

    if args.photo:
        import cv2

        from onnxviz.run.images import load_image

        cv2.imwrite(str(PHOTO), load_image(args.photo)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    result = onnxviz.export("mobilenet", MODEL, alpha=0.25, input_size=128, external_data=False,
                            progress=print)
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB), max relative error {result.max_relative:.1e}")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in (MODEL, PHOTO)]
    SUMS.write_text("\n".join(lines) + "\n")
    print(f"wrote {SUMS}")


if __name__ == "__main__":
    main()
