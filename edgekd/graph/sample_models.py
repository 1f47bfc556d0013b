"""Tiny full-integer int8 ``.tflite`` models for tests and the planner benchmark.

Built with tf.keras + ``tf.lite.TFLiteConverter`` (int8 input and output, representative dataset) and
cached on disk, keyed by a version string, so several test files and the benchmark build them once.
TensorFlow is imported only when a model has to be built.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_write_bytes

_VERSION = "3"


def _cnn(tf: Any) -> Any:
    """Conv / depthwise / max-pool / 1x1 conv / avg-pool / dense / softmax."""
    L = tf.keras.layers
    inp = tf.keras.Input((16, 16, 1), batch_size=1)
    y = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    y = L.MaxPool2D()(y)
    y = L.Conv2D(16, 1, activation="relu")(y)
    y = L.AveragePooling2D(2)(y)
    y = L.Flatten()(y)
    y = L.Dense(10)(y)
    y = L.Softmax()(y)
    return tf.keras.Model(inp, y)


def _branch(tf: Any) -> Any:
    """Two parallel branches off the input, concatenated: a long branch with a wide middle tensor and a
    short one. Running the short branch first frees the input early, so operator order changes the peak."""
    L = tf.keras.layers
    inp = tf.keras.Input((16, 16, 8), batch_size=1)
    a = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    a = L.Conv2D(48, 1, activation="relu")(a)
    a = L.Conv2D(4, 3, padding="same", activation="relu")(a)
    b = L.Conv2D(4, 1, activation="relu")(inp)
    y = L.Concatenate()([a, b])
    y = L.GlobalAveragePooling2D()(y)
    y = L.Dense(10)(y)
    return tf.keras.Model(inp, y)


def _residual(tf: Any) -> Any:
    """Conv stem then a residual block (ADD) then dense."""
    L = tf.keras.layers
    inp = tf.keras.Input((12, 12, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(8, 3, padding="same")(y)
    y = L.Add()([x, y])
    y = L.ReLU()(y)
    y = L.MaxPool2D()(y)
    y = L.Flatten()(y)
    y = L.Dense(5)(y)
    return tf.keras.Model(inp, y)


def _mobilenet_tiny(tf: Any) -> Any:
    """A MobileNetV1-style stem (conv s2, then depthwise + pointwise blocks) at 16x16: TFLM's greedy
    placement fragments here, a better placement (offline offsets) saves a quarter of the head."""
    L = tf.keras.layers
    inp = tf.keras.Input((16, 16, 3), batch_size=1)
    y = L.ReLU()(L.Conv2D(8, 3, strides=2, padding="same")(inp))
    for ch, stride in [(16, 1), (32, 2)]:
        y = L.ReLU()(L.DepthwiseConv2D(3, strides=stride, padding="same")(y))
        y = L.ReLU()(L.Conv2D(ch, 1)(y))
    y = L.GlobalAveragePooling2D()(y)
    return tf.keras.Model(inp, L.Dense(2)(y))


def _mlp(tf: Any) -> Any:
    """Hinton-style MLP 64-32-16-10."""
    L = tf.keras.layers
    inp = tf.keras.Input((64,), batch_size=1)
    y = L.Dense(32, activation="relu")(inp)
    y = L.Dense(16, activation="relu")(y)
    y = L.Dense(10)(y)
    return tf.keras.Model(inp, y)


def _scratch_ops(tf: Any) -> Any:
    """Ops whose TFLM kernels request scratch buffers: TRANSPOSE_CONV, MEAN over one axis, REDUCE_MAX."""
    L = tf.keras.layers
    inp = tf.keras.Input((6, 6, 4), batch_size=1)
    y = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(inp)
    a = L.Lambda(lambda t: tf.reduce_mean(t, axis=1))(y)
    b = L.Lambda(lambda t: tf.reduce_max(t, axis=1))(y)
    y = L.Concatenate()([a, b])
    y = L.Flatten()(y)
    y = L.Dense(4)(y)
    return tf.keras.Model(inp, y)


def _kws_dscnn(tf: Any) -> Any:
    """MLPerf Tiny KWS DS-CNN architecture (49x10 MFCC, 64 filters, 4 DS blocks), random weights."""
    L = tf.keras.layers
    inp = tf.keras.Input((49, 10, 1), batch_size=1)
    y = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inp)
    y = L.ReLU()(L.BatchNormalization()(y))
    for _ in range(4):
        y = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)))
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1, use_bias=False)(y)))
    y = L.AveragePooling2D(pool_size=(25, 5))(y)
    y = L.Dense(12, activation="softmax")(L.Flatten()(y))
    return tf.keras.Model(inp, y)


def _ic_resnet8(tf: Any) -> Any:
    """MLPerf Tiny IC ResNet-8 architecture (32x32x3, 16/32/64 filters), random weights."""
    L = tf.keras.layers

    def block(x: Any, ch: int, stride: int) -> Any:
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(ch, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(ch, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(ch, 1, strides=stride)(x)
        return L.ReLU()(L.Add()([x, y]))

    inp = tf.keras.Input((32, 32, 3), batch_size=1)
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inp)))
    y = block(y, 16, 1)
    y = block(y, 32, 2)
    y = block(y, 64, 2)
    y = L.AveragePooling2D(pool_size=8)(y)
    y = L.Dense(10, activation="softmax")(L.Flatten()(y))
    return tf.keras.Model(inp, y)


def _vww_mobilenet(tf: Any) -> Any:
    """MLPerf Tiny VWW MobileNetV1-0.25 architecture (96x96x3), random weights. No final softmax:
    with random weights its input scale is degenerate and TFLM aborts (see tflm._crash_hint)."""
    L = tf.keras.layers

    def bn_relu(x: Any) -> Any:
        return L.ReLU()(L.BatchNormalization()(x))

    inp = tf.keras.Input((96, 96, 3), batch_size=1)
    y = bn_relu(L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp))
    blocks = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]
    for ch, stride in blocks:
        y = bn_relu(L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y))
        y = bn_relu(L.Conv2D(ch, 1, use_bias=False)(y))
    y = L.AveragePooling2D(3)(y)
    return tf.keras.Model(inp, L.Dense(2)(L.Flatten()(y)))


def _ad_fcae(tf: Any) -> Any:
    """MLPerf Tiny AD fully-connected autoencoder (640 -> 128x4 -> 8 -> 128x4 -> 640), random weights."""
    L = tf.keras.layers
    inp = tf.keras.Input((640,), batch_size=1)
    y = inp
    for units in [128, 128, 128, 128, 8, 128, 128, 128, 128]:
        y = L.ReLU()(L.BatchNormalization()(L.Dense(units)(y)))
    y = L.Dense(640)(y)
    return tf.keras.Model(inp, y)


def random_branchy(tf: Any, seed: int) -> Any:
    """A random small DAG CNN (parallel branches, ADD/CONCAT joins, reductions, transposed convs):
    a planner stress test where operator order and placement matter."""
    import numpy as np

    L = tf.keras.layers
    rng = np.random.default_rng(seed)
    hw = int(rng.choice([8, 12, 16]))
    inp = tf.keras.Input((hw, hw, int(rng.choice([1, 3, 4, 8]))), batch_size=1)
    feats = [inp]
    for _ in range(int(rng.integers(4, 9))):
        src = feats[int(rng.integers(len(feats)))]
        kind = str(rng.choice(["conv", "dw", "conv1", "pool", "mean", "tconv", "add", "concat"]))
        ch = int(rng.choice([2, 4, 8, 16, 24, 32]))
        if kind == "conv":
            y = L.Conv2D(ch, 3, padding="same", activation="relu")(src)
        elif kind == "conv1":
            y = L.Conv2D(ch, 1, activation="relu")(src)
        elif kind == "dw":
            y = L.DepthwiseConv2D(3, padding="same")(src)
        elif kind == "pool":
            y = L.MaxPool2D(2, padding="same")(src)
        elif kind == "mean":
            y = L.Lambda(lambda t: tf.reduce_mean(t, axis=1, keepdims=True))(src)
        elif kind == "tconv":
            y = L.Conv2DTranspose(ch, 3, padding="same")(src)
        else:
            same = [
                f
                for f in feats
                if f is not src
                and (f.shape == src.shape if kind == "add" else f.shape[1:3] == src.shape[1:3])
            ]
            if not same:
                continue
            y = L.Add()([src, same[0]]) if kind == "add" else L.Concatenate()([src, same[-1]])
        feats.append(y)
    ends = [L.GlobalAveragePooling2D()(f) for f in feats[1:][-3:]]
    y = L.Concatenate()(ends) if len(ends) > 1 else ends[0]
    return tf.keras.Model(inp, L.Dense(4)(y))


def _lstm_stack(tf: Any) -> Any:
    """Two stacked LSTMs (tf_keras, so they fuse to UNIDIRECTIONAL_SEQUENCE_LSTM) and a dense head."""
    import tf_keras

    L = tf_keras.layers
    inp = tf_keras.Input((20, 8), batch_size=1)
    y = L.LSTM(24, return_sequences=True)(inp)
    y = L.LSTM(12)(y)
    return tf_keras.Model(inp, L.Dense(4)(y))


BENCH_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "lstm_stack": _lstm_stack,
    "kws_dscnn_like": _kws_dscnn,
    "ic_resnet8_like": _ic_resnet8,
    "vww_mobilenet_like": _vww_mobilenet,
    "ad_fcae_like": _ad_fcae,
}
"""Bigger reference-architecture models for the planner benchmark (not built by the tests)."""

BUILDERS: dict[str, Callable[[Any], Any]] = {
    "tiny_cnn": _cnn,
    "branch": _branch,
    "residual": _residual,
    "mlp": _mlp,
    "scratch_ops": _scratch_ops,
    "mobilenet_tiny": _mobilenet_tiny,
}


def convert_int8(keras_model: Any, n_calib: int = 8, seed: int = 0) -> bytes:
    """Full-integer int8 conversion (int8 input and output) with a random representative dataset."""
    import numpy as np
    import tensorflow as tf

    shape = (1, *tuple(int(d) for d in keras_model.input.shape[1:]))

    def rep():
        rng = np.random.default_rng(seed)
        for _ in range(n_calib):
            yield [rng.standard_normal(shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEKD_SAMPLE_MODELS", Path(tempfile.gettempdir()) / "edgekd-sample-models"))


def sample_models(
    names: list[str] | None = None, cache_dir: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Paths of the sample int8 models (built on first use, then cached).

    ``names`` are keys of BUILDERS (default: all of them) or BENCH_BUILDERS, or ``random_<seed>``.
    """
    names = list(BUILDERS) if names is None else names
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out: dict[str, Path] = {}
    for name in names:
        if name not in BUILDERS and name not in BENCH_BUILDERS and not name.startswith("random_"):
            raise KeyError(f"unknown sample model {name!r}; known: {', '.join([*BUILDERS, *BENCH_BUILDERS])}")
        tag = hashlib.sha1(f"{_VERSION}:{name}".encode()).hexdigest()[:8]
        path = root / f"{name}-{tag}.tflite"
        if not path.exists():
            import tensorflow as tf

            tf.keras.utils.set_random_seed(0)
            if name.startswith("random_"):
                keras_model = random_branchy(tf, int(name.split("_", 1)[1]))
            else:
                keras_model = (BUILDERS.get(name) or BENCH_BUILDERS[name])(tf)
            atomic_write_bytes(path, convert_int8(keras_model))
        out[name] = path
    return out
