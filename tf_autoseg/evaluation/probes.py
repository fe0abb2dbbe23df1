"""Linear and non-linear probes: heads trained with labels on frozen features.

The slides' "Linear Evaluation" and "Non-Linear Evaluation": a 1x1
convolution (linear) or a small per-pixel MLP (non-linear) is trained with
pixel labels on the frozen features of the autoregressive part (plain
inference, no ordering), then scored with the identity mapping.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.evaluation import metrics
from tf_autoseg.modeling.transforms import to_float_images

KINDS = ("linear", "mlp")


def make_probe(num_classes, kind="linear", hidden=256):
    """A per-pixel head: a 1x1 conv ("linear") or 1x1 conv-ReLU-1x1 conv ("mlp")."""
    arguments.choice("kind", kind, KINDS)
    layers = [keras.layers.Conv2D(hidden, 1, activation="relu")] if kind == "mlp" else []
    return keras.Sequential([*layers, keras.layers.Conv2D(num_classes, 1, dtype="float32")])


def _features(model, images):
    return tf.cast(model.network.forward(to_float_images(images)).features, tf.float32)


def train_probe(model, batches, num_classes, kind="linear", steps=500, learning_rate=1e-3, seed=0):
    """Trains a probe on `model`'s frozen features; returns the probe.

    Labels are resized to the feature grid by nearest neighbour; pixels
    labelled 255 carry no loss.

    Args:
        model: an `AutoSegModel` (its weights are not changed).
        batches: a `tf.data.Dataset` of (images, labels), repeated as needed.
        num_classes: classes in the labels.
        kind: "linear" or "mlp".
        steps: optimisation steps.
    """
    keras.utils.set_random_seed(seed)
    probe = make_probe(num_classes, kind)
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(images, labels):
        features = _features(model, images)
        grid = tf.image.resize(labels[..., None], tf.shape(features)[1:3], method="nearest")[..., 0]
        keep = tf.cast(grid != 255, tf.float32)
        with tf.GradientTape() as tape:
            logits = probe(features)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.where(grid == 255, 0, grid), logits
            )
            loss = tf.reduce_sum(loss * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)
        optimizer.apply(tape.gradient(loss, probe.trainable_variables), probe.trainable_variables)
        return loss

    for images, labels in batches.repeat().take(steps):
        step(images, tf.cast(labels, tf.int32))
    return probe


def probe_scores(model, probe, batches, num_classes):
    """Pixel accuracy and mIoU of a trained probe (identity mapping) on (images, labels)."""
    confusion = metrics.ConfusionMatrix(num_classes)
    for images, labels in batches:
        logits = probe(_features(model, images))
        logits = tf.image.resize(logits, tf.shape(images)[1:3], method="bilinear")
        confusion.update(np.asarray(labels), tf.argmax(logits, -1).numpy())
    return metrics.scores(confusion, np.arange(num_classes))
