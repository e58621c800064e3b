"""Named preprocessing presets: what a family of models expects of 0..255 RGB pixels, and
how photos are brought to its input size.

`torchvision` is the ImageNet recipe of torchvision's classification models:
`Resize(256)` (shorter side, bilinear, antialiased) + `CenterCrop(224)` + `ToTensor()`
(scale 1/255) + `Normalize(ImageNet mean, std)`. At other input sizes the resize keeps
torchvision's ratio 256/224, as its Inception V3 recipe does (`Resize(342)` + `CenterCrop(299)`).
The Keras modes (`caffe`, `tf`, `torch`, `none`) resize as Keras' `load_img` does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from onnxviz.errors import OptionError
from onnxviz.run.images import check_resize
from onnxviz.model.info import KERAS_MODES, Preprocessing

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class Preset:
    preprocessing: Preprocessing
    resize_ratio: float | None = None  # shorter side = round(input side * ratio), then a centre crop
    about: str = ""

    def resize_for(self, height: int, width: int) -> str | None:
        if self.resize_ratio is None:
            return None
        return str(int(round(min(height, width) * self.resize_ratio)))


PRESETS: dict[str, Preset] = {
    "torchvision": Preset(Preprocessing("torchvision", 1.0 / 255.0, IMAGENET_MEAN, IMAGENET_STD), 256 / 224,
                          "ImageNet mean/std, scale 1/255, shorter side to 256 and centre crop 224"),
    **{name: Preset(prep, None, f"Keras preprocess_input mode '{name}'") for name, prep in KERAS_MODES.items()},
}


def get_preset(name: str) -> Preset:
    key = name.strip().lower()
    if key not in PRESETS:
        listed = "; ".join(f"{n} ({p.about})" for n, p in PRESETS.items())
        raise OptionError(f"{{preprocess}} '{name}' is not a preset; the presets are: {listed}", params=("preprocess",))
    return PRESETS[key]


def choose_preprocessing(preprocess: str | None, *, mean: float | Sequence[float] | None = None,
                         std: float | Sequence[float] | None = None, scale: float | str | None = None,
                         bgr: bool = False) -> Preprocessing | None:
    """The preset's preprocessing, or None when no preset is named (the numbers then decide).

    A preset and numbers together are refused: the preset already says what they say.
    """
    if preprocess is None:
        return None
    preset = get_preset(preprocess)
    given = [param for param, value in (("mean", mean), ("std", std), ("scale", scale), ("bgr", bgr or None))
             if value is not None]
    if given:
        raise OptionError(f"{{preprocess}} {preprocess.strip().lower()} already sets mean, std, scale and channel "
                          f"order; leave out {', '.join('{' + g + '}' for g in given)} or {{preprocess}}",
                          params=("preprocess", *given))
    return replace(preset.preprocessing)


def choose_resize(preprocess: str | None, resize: str | int | None, height: int, width: int) -> str | None:
    """The resize recorded in the file: `resize` when given, else the preset's, else None."""
    if resize is not None:
        return check_resize(resize)
    if preprocess is None:
        return None
    return get_preset(preprocess).resize_for(height, width)
