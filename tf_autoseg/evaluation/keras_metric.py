"""`MatchedSegmentationScore`: IIC's Hungarian-matched accuracy or mIoU as a Keras metric.

Pass it to `compile(metrics=...)` and `model.evaluate(labelled)` reports it beside the loss
and the mutual information. It streams a (classes, clusters) confusion of pixel counts
batch by batch, as `tf_autoseg.evaluation.metrics.ConfusionMatrix` does, and matches clusters
to classes only in `result()`, with the same code (`metrics.hungarian_match`,
`metrics.scores`): the matching is fitted and scored on everything seen since the last
reset (IIC's fully unsupervised "same" mode). Under a distribution strategy the counts are
summed over replicas like any Keras metric variable.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.evaluation import metrics

SCORES = ("pixel_accuracy", "mean_iou")


@keras.saving.register_keras_serializable(package="tf_autoseg")
class MatchedSegmentationScore(keras.metrics.Metric):
    """Pixel accuracy or mean IoU after a one-to-one Hungarian matching of clusters to classes.

    Args:
        num_classes: classes in the labels (pixels labelled `ignore_index` are left out).
        num_clusters: clusters the model predicts (default: `num_classes`).
        score: "pixel_accuracy" or "mean_iou".
        ignore_index: the label of unlabelled pixels.

    Call arguments (`update_state`):
        y_true: integer labels (batch, height, width).
        y_pred: per-pixel cluster probabilities (batch, height, width, clusters), or cluster
            ids (batch, height, width).

    Example:

    >>> metric = MatchedSegmentationScore(2, score="pixel_accuracy")
    >>> metric.update_state([[[0, 1, 255]]], [[[1, 0, 0]]])  # clusters swapped: still right
    >>> float(metric.result())
    1.0
    """

    def __init__(
        self, num_classes, num_clusters=None, score="mean_iou", ignore_index=255, **kwargs
    ):
        kwargs.setdefault("name", f"matched_{score}")
        super().__init__(**kwargs)
        self.num_classes = arguments.integer("num_classes", num_classes)
        self.num_clusters = arguments.integer("num_clusters", num_clusters or num_classes)
        self.score = arguments.choice("score", score, SCORES)
        self.ignore_index = int(ignore_index)
        self.counts = self.add_variable(
            shape=(self.num_classes, self.num_clusters),
            initializer="zeros",
            dtype="int64",
            aggregation="sum",
            name="counts",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "`sample_weight` is not supported: unlabelled pixels use ignore_index."
            )
        labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank == 4:
            y_pred = tf.argmax(y_pred, axis=-1)
        clusters = tf.reshape(tf.cast(y_pred, tf.int64), [-1])
        kept = tf.not_equal(labels, self.ignore_index)
        labels, clusters = tf.boolean_mask(labels, kept), tf.boolean_mask(clusters, kept)
        checks = [
            tf.debugging.assert_less(labels, tf.constant(self.num_classes, tf.int64),
                                     message="a label is >= num_classes and not ignore_index"),
            tf.debugging.assert_less(clusters, tf.constant(self.num_clusters, tf.int64),
                                     message="a cluster id is >= num_clusters"),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            flat = labels * self.num_clusters + clusters
        counts = tf.math.bincount(
            flat, minlength=self.num_classes * self.num_clusters, dtype=tf.int64, axis=None
        )[: self.num_classes * self.num_clusters]
        self.counts.assign_add(tf.reshape(counts, (self.num_classes, self.num_clusters)))

    def result(self):
        def matched(counts):
            if counts.sum() == 0:
                return np.float32(0.0)
            value = metrics.scores(counts, metrics.hungarian_match(counts))[self.score]
            return np.float32(value)

        value = tf.numpy_function(matched, [self.counts], tf.float32, stateful=False)
        return tf.reshape(value, [])

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_clusters": self.num_clusters,
            "score": self.score,
            "ignore_index": self.ignore_index,
        }
