"""Grad-CAM from the onnxviz file equals Grad-CAM by tf.GradientTape on the Keras model, within
1e-4 of the map's range: MobileNet with its ImageNet weights, a VGG-style and a ResNet-style model."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import onnxviz
from tiny_models import tiny_functional, tiny_vgg

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="TensorFlow not installed (pip install 'onnxviz[export]')")


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def tape_gradcam(keras, model, layer, x, classes):
    """Grad-CAM as the Keras tutorial computes it: the gradient of the logit (the input of the final
    softmax) with respect to the layer's output, averaged over positions, weighting the channels."""
    import tensorflow as tf

    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense):  # Dense(softmax): the same model with a linear last layer
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.layers[-1].activation = keras.activations.linear
        grad_model = keras.Model(clone.inputs, [clone.get_layer(layer).output, clone.output])
    else:  # an Activation('softmax') layer after the logits (keras.applications.MobileNet)
        grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, last.input])
    maps = []
    for k in range(classes.shape[1]):
        with tf.GradientTape() as tape:
            acts, logits = grad_model(x)
            picked = tf.gather(tf.reshape(logits, (len(x), -1)), classes[:, k], axis=1, batch_dims=1)
        grads = tape.gradient(picked, acts)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        maps.append(tf.nn.relu(tf.reduce_sum(acts * weights[:, None, None, :], axis=-1)).numpy())
    return np.stack(maps, axis=1)  # [N, K, h, w]


def _close(got, want):
    for i in range(want.shape[0]):
        for k in range(want.shape[1]):
            span = want[i, k].max() - want[i, k].min()
            assert span > 0, "a flat reference map proves nothing"
            assert np.abs(got[i, k] - want[i, k]).max() <= 1e-4 * span, (i, k)


def test_mobilenet_with_imagenet_weights(keras, mobilenet_onnx, shared_data):
    path, _ = mobilenet_onnx
    model = onnxviz.load(path, provider="cpu")
    images = [shared_data / "images" / name for name in ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")]
    result = model.cam(images, top_k=3)
    assert result.layer == "conv_pw_13_relu" and result.maps.shape == (4, 3, 4, 4)
    assert result.labels[0][0] == "espresso"
    net = keras.applications.MobileNet(alpha=0.25, input_shape=(128, 128, 3), classes=1000,
                                       weights=str(shared_data / "keras_home" / "models" / "mobilenet_2_5_128_tf.h5"))
    x = keras.applications.mobilenet.preprocess_input(result.pixels.astype(np.float32))
    _close(result.maps, tape_gradcam(keras, net, "conv_pw_13_relu", x, result.classes))
    # deeper in the network: through a depthwise convolution, batch norms and ReLU6
    deeper = model.cam(images[:2], layer="conv_pw_12_relu", classes=[504, 967])
    _close(deeper.maps, tape_gradcam(keras, net, "conv_pw_12_relu", x[:2], deeper.classes))


def _export(keras, model, tmp_path):
    return onnxviz.load(onnxviz.export(model, tmp_path / f"{model.name}.onnx", preprocess="tf").path, provider="cpu")


def test_vgg_style_maxpool_flatten_dense_head(keras, tmp_path):
    net = tiny_vgg(keras)
    model = _export(keras, net, tmp_path)
    images = np.random.default_rng(5).integers(0, 256, (3, 24, 24, 3)).astype(np.uint8)
    images[0, :12, :12] = 0  # max-pool windows of equal values: the gradient goes to the first one
    result = model.cam(images, top_k=2)
    assert result.layer == "block2_pool"  # the last map before the classifier
    x = images.astype(np.float32) / 127.5 - 1
    _close(result.maps, tape_gradcam(keras, net, "block2_pool", x, result.classes))
    before_pool = model.cam(images, layer="block2_conv", top_k=2)  # MaxPool, Flatten, Dense, ReLU, Dropout, Dense
    _close(before_pool.maps, tape_gradcam(keras, net, "block2_conv", x, before_pool.classes))


def test_resnet_style_residual_head(keras, tmp_path):
    net = tiny_functional(keras)  # concat -> res_conv -> Add(concat, res_conv) -> MaxPool -> GAP -> Dense
    model = _export(keras, net, tmp_path)
    images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    x = images.astype(np.float32) / 127.5 - 1
    for layer in ("res_add", "concat", "stem_relu"):  # the residual's two paths add their gradients
        result = model.cam(images, layer=layer, top_k=2)
        _close(result.maps, tape_gradcam(keras, net, layer, x, result.classes))
