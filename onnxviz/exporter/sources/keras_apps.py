"""The `keras.applications` models onnxviz knows, and recognising one inside a model file.

A fine-tuned application saved to a file (itself, or nested as the base of a
transfer-learning model) still expects its application's preprocessing: `recognise`
finds it by the layer names Keras gives each architecture, so the export can fold the
right preprocessing in without the user saying it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxviz.errors import ModelError

@dataclass(frozen=True)
class Application:
    """A `keras.applications` constructor and the preprocessing its weights expect."""

    constructor: str
    module: str
    mode: str
    alpha: bool = False
    size: int = 224  # Keras' default input size


def _apps() -> dict[str, Application]:
    table: dict[str, Application] = {
        "vgg16": Application("VGG16", "vgg16", "caffe"),
        "vgg19": Application("VGG19", "vgg19", "caffe"),
        "inceptionv3": Application("InceptionV3", "inception_v3", "tf", size=299),
        "inceptionresnetv2": Application("InceptionResNetV2", "inception_resnet_v2", "tf", size=299),
        "xception": Application("Xception", "xception", "tf", size=299),
        "mobilenet": Application("MobileNet", "mobilenet", "tf", alpha=True),
        "mobilenetv2": Application("MobileNetV2", "mobilenet_v2", "tf", alpha=True),
        "mobilenetv3small": Application("MobileNetV3Small", "mobilenet_v3", "none", alpha=True),
        "mobilenetv3large": Application("MobileNetV3Large", "mobilenet_v3", "none", alpha=True),
        "nasnetmobile": Application("NASNetMobile", "nasnet", "tf"),
        "nasnetlarge": Application("NASNetLarge", "nasnet", "tf", size=331),
    }
    for depth in (50, 101, 152):
        table[f"resnet{depth}"] = Application(f"ResNet{depth}", "resnet", "caffe")
        table[f"resnet{depth}v2"] = Application(f"ResNet{depth}V2", "resnet_v2", "tf")
    for depth in (121, 169, 201):
        table[f"densenet{depth}"] = Application(f"DenseNet{depth}", "densenet", "torch")
    for b, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
        table[f"efficientnetb{b}"] = Application(f"EfficientNetB{b}", "efficientnet", "none", size=size)
    for v, size in zip(("b0", "b1", "b2", "b3", "s", "m", "l"), (224, 240, 260, 300, 384, 480, 480)):
        table[f"efficientnetv2{v}"] = Application(f"EfficientNetV2{v.upper()}", "efficientnet_v2", "none", size=size)
    for size in ("tiny", "small", "base", "large", "xlarge"):
        table[f"convnext{size}"] = Application(f"ConvNeXt{size.capitalize()}", "convnext", "none")
    return table


APPLICATIONS = _apps()

def resolve_application(name: str) -> Application:
    key = name.lower().replace("_", "").replace("-", "")
    app = APPLICATIONS.get(key)
    if app is None:
        import difflib

        close = difflib.get_close_matches(key, APPLICATIONS, n=3, cutoff=0.75)
        guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ModelError(
            f"unknown model '{name}': {guess}give a .keras/.h5/.onnx file or one of {', '.join(sorted(APPLICATIONS))}"
        )
    return app


# Layer names every model of a family has (Keras 3 and Keras 2 builds alike), and names
# that tell apart families that share the others.
_SIGNATURES: list[tuple[str, frozenset[str], frozenset[str]]] = [
    ("VGG19", frozenset({"block1_conv1", "block5_conv3", "block5_conv4", "block5_pool"}), frozenset()),
    ("VGG16", frozenset({"block1_conv1", "block5_conv3", "block5_pool"}), frozenset({"block5_conv4"})),
    ("ResNet50V2", frozenset({"conv1_conv", "conv2_block1_preact_bn", "post_bn"}), frozenset()),
    ("ResNet50", frozenset({"conv1_conv", "conv1_bn", "conv2_block1_1_conv", "conv2_block1_out"}),
     frozenset({"conv2_block1_preact_bn"})),
    ("DenseNet121", frozenset({"conv1_conv", "conv2_block1_concat", "pool2_conv"}), frozenset()),
    ("InceptionV3", frozenset({"mixed0", "mixed5", "mixed9_0", "mixed10"}), frozenset()),
    ("InceptionResNetV2", frozenset({"mixed_5b", "block35_1_conv", "mixed_6a"}), frozenset()),
    ("Xception", frozenset({"block1_conv1_bn", "block14_sepconv2"}), frozenset()),
    ("MobileNet", frozenset({"conv1", "conv_dw_1", "conv_pw_13"}), frozenset()),
    ("MobileNetV2", frozenset({"Conv1", "bn_Conv1", "expanded_conv_depthwise", "block_16_project"}), frozenset()),
    ("NASNetMobile", frozenset({"stem_conv1", "stem_bn1"}), frozenset()),
    ("EfficientNetB0", frozenset({"stem_conv", "block1a_dwconv", "top_conv"}), frozenset()),
]


# Layers that scale pixels: a model that has one before its application part does its
# own preprocessing.
SCALING_LAYERS = frozenset({"Rescaling", "Normalization", "Lambda", "TFOpLambda"})


@dataclass
class Recognised:
    application: Application
    where: str  # the model (or nested model) that has the architecture
    evidence: list[str]  # the layer names that gave it away
    scaled_by: str | None = None  # a layer before that part that already scales pixels


def recognise(model: Any) -> Recognised | None:
    """The `keras.applications` architecture of `model` or of a model nested in it, if any."""
    for sub, names, before in _models_and_names(model, []):
        for constructor, needed, absent in _SIGNATURES:
            if needed <= names and not (absent & names):
                app = next(a for a in APPLICATIONS.values() if a.constructor == constructor)
                scaling = next((f"'{layer.name}' ({type(layer).__name__})" for layer in before
                                if type(layer).__name__ in SCALING_LAYERS), None)
                return Recognised(app, sub, sorted(needed)[:3], scaling)
    return None


def _models_and_names(model: Any, before: list, depth: int = 0):
    """(name, layer names, layers that run before it) of `model` and each model nested in it,
    outermost first."""
    layers = list(getattr(model, "layers", []) or [])
    yield getattr(model, "name", "model"), {layer.name for layer in layers}, before
    if depth < 4:
        for i, layer in enumerate(layers):
            if getattr(layer, "layers", None):
                yield from _models_and_names(layer, before + layers[:i], depth + 1)
