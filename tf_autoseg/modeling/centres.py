"""`ClusterCentres`: label-free k-means centres, the labelling of `labels_from="features"` or
`"overclustering"`.

Plain inference then answers the nearest of K centres fitted without labels in the space of
`g_ar`'s features or of the overclustering head's probabilities, instead of the main head's
argmax. The head's clusters are pushed toward equal sizes by the mutual information; k-means
centres are not, which suits classes of very unequal shares. A layer with its own weights, so
the centres are saved, loaded and exported with the model.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_autoseg.modeling import kmeans


class ClusterCentres(keras.layers.Layer):
    """K centres of depth D and the softmax scale, unfitted (zeros) until `fit`.

    `call(points, fallback)` gives (B, h, w, K) probabilities: the softmax of the negative
    squared distances of (B, h, w, D) points to the centres, in units of the mean distance at
    fitting time; `fallback` (the head's) while the centres are unfitted.

    Args:
        num_centres: K.
        depth: D.
        **kwargs: base layer arguments.
    """

    SAMPLES = 100_000  # points a fit sees, by default
    RESTARTS = 10  # k-means runs, the lowest inertia kept

    def __init__(self, num_centres, depth, **kwargs):
        super().__init__(dtype="float32", autocast=False, **kwargs)
        self.num_centres = num_centres
        self.depth = depth
        self.centres = self.add_weight(
            shape=(num_centres, depth), initializer="zeros", dtype="float32", trainable=False,
            name="centres",
        )  # fmt: skip
        # 0 until `fit`: then the mean squared distance to the nearest centre.
        self.scale = self.add_weight(
            shape=(), initializer="zeros", dtype="float32", trainable=False, name="centre_scale"
        )
        self.built = True

    @property
    def fitted(self):
        return float(self.scale.numpy()) > 0

    @property
    def fitted_flag(self):
        """1.0 once fitted, else 0.0 (a tensor, for graphs)."""
        return tf.cast(self.scale > 0, tf.float32)

    def call(self, points, fallback):
        points = tf.cast(points, tf.float32)
        distances = (
            tf.reduce_sum(points**2, -1, keepdims=True)
            - 2.0 * tf.einsum("bhwd,kd->bhwk", points, self.centres)
            + tf.reduce_sum(self.centres**2, -1)
        )
        fitted = self.scale > 0
        scale = tf.where(fitted, self.scale, 1.0)
        return tf.where(fitted, tf.nn.softmax(-distances / scale), fallback)

    def fit(self, points, seed=0, restarts=10):
        """Fits the centres by k-means (`restarts` runs, the lowest inertia kept) on (N, D)
        points; returns them, (K, D)."""
        centres = kmeans.kmeans(points, self.num_centres, seed=seed, restarts=restarts)
        distances = kmeans.nearest(points, centres)[1]
        self.centres.assign(centres.astype(np.float32))
        self.scale.assign(max(float(distances.mean()), 1e-6))
        return centres

    def reset(self):
        """Back to unfitted: inference answers with the fallback (the head)."""
        self.scale.assign(0.0)
