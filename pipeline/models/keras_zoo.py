"""Keras models (TensorFlow backend): the seeds' TFLite workflow starts from one. Built with `weights=None` (no hub
download), trained by the same `train` stage, exported with TensorFlow's TFLiteConverter.

Keras models take NHWC input; the pipeline's arrays are NCHW, so this module and keras_rt transpose at the boundary.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def mobilenet_v2(num_classes: int, input_size, width_mult: float = 1.0, dropout: float = 0.0):
    """keras.applications.MobileNetV2 (alpha = width_mult), logits out. keras.applications has no dropout before the
    classifier, so `dropout` adds one (0 keeps the published architecture).

    Its BatchNorm momentum (0.999) suits ImageNet's many thousand steps; on a few hundred steps the moving statistics
    would lag the weights and evaluation would collapse, so it is set to 0.9 (PyTorch's 0.1)."""
    import keras

    from pipeline.data.size import hw

    base = keras.applications.MobileNetV2(input_shape=(*hw(input_size), 3), alpha=width_mult,
                                          include_top=False, weights=None, pooling="avg")
    x = base.output
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    out = keras.layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(base.input, out, name="keras_mobilenet_v2")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


BUILDERS = {"keras_mobilenet_v2": mobilenet_v2}


def build(name: str, num_classes: int, input_size: int, **kwargs: Any):
    return BUILDERS[name](num_classes, input_size, **kwargs)


def save(model, directory: Path) -> Path:
    """The architecture and weights only: Keras 3 writes a compiled model's optimizer state into the .keras file
    (Adam's two moments: 3x the model's size) and ignores include_optimizer=False, so an uncompiled copy is saved."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.keras"
    bare = model.__class__.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    bare.save(path)
    return path


def load(path: Path, modules: list[str] | tuple[str, ...] = ()):
    """Keras' own format, loaded in safe mode (no arbitrary code from the file). `modules`: the user's modules that
    register the model's custom layers (keras.saving.register_keras_serializable), imported first: a custom layer
    comes back as the user's own class, never as code deserialised from the file."""
    import importlib

    import keras

    for m in modules:
        importlib.import_module(m)

    return keras.models.load_model(path, compile=False, safe_mode=True)


def set_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process: its thread pools are fixed
        pass


def predict_outputs(model, x_nchw: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of a Keras model (NHWC inside) for an NCHW batch, in the order of model.outputs."""
    parts = []
    for i in range(0, len(x_nchw), batch_size):
        out = model(np.ascontiguousarray(x_nchw[i : i + batch_size].transpose(0, 2, 3, 1)), training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(parts[0]))]


def predict(model, x_nchw: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return predict_outputs(model, x_nchw, batch_size)[0]


def train(spec: dict, input_size: int, data, p, seed: int, log, directory: Path) -> tuple[Any, dict, Path]:
    """Build the Keras zoo model `spec` names, train it and save it under `directory`: (model, fit's result, path)."""
    from pipeline.core.host import host_threads

    set_threads(host_threads(p.threads))
    model = build(spec["name"], spec["num_classes"], input_size, **spec["kwargs"])
    result = fit(model, data, p, seed, log)
    return model, result, save(model, directory)


def fit(model, data, p, seed: int, log, tqdm=None) -> dict:
    """Train in place with the train stage's parameters (p: TrainConfig): one-cycle-like schedule (warm-up then
    cosine), AdamW or SGD, label smoothing, random shifts."""
    import keras

    keras.utils.set_random_seed(seed)
    x = np.ascontiguousarray(data.train_x.transpose(0, 2, 3, 1))
    y = keras.utils.to_categorical(data.train_y, data.num_classes)
    steps = p.epochs * math.ceil(len(x) / p.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(p.lr / 25, decay_steps=max(1, steps - int(0.3 * steps)),
                                                      warmup_target=p.lr, warmup_steps=int(0.3 * steps))
    if p.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=p.weight_decay)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=p.weight_decay)
    model.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                           label_smoothing=p.label_smoothing))
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(p.epochs):
        perm = rng.permutation(len(x))
        total, n = 0.0, 0
        for i in range(0, len(x), p.batch_size):
            idx = perm[i : i + p.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            xb = _shift(x[idx], rng) if p.augment else x[idx]
            loss = float(model.train_on_batch(xb, y[idx]))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} at epoch {epoch + 1}; lower the learning rate "
                    f"(stages.<train>.lr, now {p.lr:g}) or check the data for NaN/inf values")
            total += loss * len(idx)
            n += len(idx)
        acc = float((predict(model, data.val_x).argmax(1) == data.val_y).mean())
        history.append({"epoch": epoch + 1, "loss": total / max(n, 1), "val_accuracy": acc})
        log.info("epoch %d/%d  loss %.4f  val top-1 %.4f", epoch + 1, p.epochs, total / max(n, 1), acc)
    return {"val_accuracy": history[-1]["val_accuracy"], "train_loss": history[-1]["loss"], "history": history}


def _shift(xb: np.ndarray, rng) -> np.ndarray:
    """The torch trainer's augmentation on NHWC: pad by 1/8 with the border value, crop back at a random offset."""
    pad = max(1, xb.shape[1] // 8)
    padded = np.pad(xb, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, 2)
    return padded[:, dy : dy + xb.shape[1], dx : dx + xb.shape[2]]
