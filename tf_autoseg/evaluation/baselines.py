"""Baselines scored by the same evaluation code: k-means on pixels, random network + k-means.

K-means (`tf_autoseg.modeling.kmeans`) is fitted on a seeded sample of pixels
(features), then every pixel is assigned to its nearest centre. A
random network is `AutoSegModel` never trained; its features are those of the
autoregressive part's output, bilinearly upsampled to the image.
"""

import numpy as np
import tensorflow as tf

from tf_autoseg.evaluation import metrics
from tf_autoseg.modeling.kmeans import assign
from tf_autoseg.modeling.kmeans import kmeans
from tf_autoseg.modeling.kmeans import sample_pool
from tf_autoseg.modeling.transforms import to_float_images

__all__ = ["assign", "kmeans", "kmeans_baseline", "network_features", "pixel_features"]


def pixel_features(images):
    """Pixel values as features: (B, H, W, C) -> (B * H * W, C) floats in [0, 1]."""
    images = to_float_images(images).numpy()
    return images.reshape(-1, images.shape[-1])


def network_features(model):
    """A function images -> (pixels, D) features of `model` (no ordering) at image size."""

    def features(images):
        images = to_float_images(images)
        hidden = model.network.forward(images).features
        hidden = tf.image.resize(tf.cast(hidden, tf.float32), tf.shape(images)[1:3])
        return hidden.numpy().reshape(-1, hidden.shape[-1])

    return features


def kmeans_baseline(
    fit_batches,
    score_batches,
    num_classes,
    features=pixel_features,
    sample=200_000,
    per_batch=20_000,
    seed=0,
    restarts=10,
):
    """k-means (K = num_classes) on `features`: centres fitted without labels, then scored.

    Args:
        fit_batches: iterable of (images, labels) whose pixels (a seeded sample)
            fit the centres; labels unused there.
        score_batches: iterable of (images, labels) to score; may be the same.
        num_classes: K.
        features: images -> (pixels, D) array (`pixel_features`, `network_features(m)`).
        sample: pixels sampled to fit the centres.
        per_batch: at most this many pixels of each fit batch are kept for sampling,
            so memory stays bounded on large sets.
        restarts: k-means runs, the lowest inertia kept (as the model's centres do).

    Returns:
        (fit, score) confusion matrices (num_classes x num_classes) of the
        clusters on both sets: `metrics.protocol(fit, score)` is the holdout
        mode, `metrics.protocol(score)` the "same" mode.
    """
    rng = np.random.default_rng(seed)
    arrays = (features(images) for images, _ in fit_batches)
    pool = sample_pool(arrays, sample, per_batch, rng)
    centres = kmeans(pool, num_classes, seed=seed, restarts=restarts)

    def confusion(batches):
        matrix = metrics.ConfusionMatrix(num_classes)
        for images, labels in batches:
            matrix.update(np.asarray(labels), assign(features(images), centres))
        return matrix

    return confusion(fit_batches), confusion(score_batches)
