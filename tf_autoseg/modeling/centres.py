"""Label-free cluster centres: inference by the nearest of K k-means centres.

With `labels_from="features"` or `"overclustering"`, `AutoSegModel`'s plain inference answers
the nearest of K centres fitted without labels (`fit`) in the space of `g_ar`'s features or of
the overclustering head's probabilities, instead of the main head's argmax. The head's clusters
are pushed toward equal sizes by the mutual information; k-means centres are not, which suits
classes of very unequal shares. Functions of the model, which holds the two weights (so they
are saved, loaded and exported with it).
"""

import numpy as np
import tensorflow as tf

from tf_autoseg.modeling import kmeans
from tf_autoseg.modeling import transforms


def add_weights(model):
    """Gives `model` its `centres` (K, D) and `centre_scale` weights, unfitted (zeros).

    None for both with `labels_from="head"`. `centre_scale` stays 0 until `fit`: the mean
    squared distance to the nearest centre then, the softmax's scale.
    """
    model.centres = model.centre_scale = None
    if model.labels_from == "head":
        return
    over = model.labels_from == "overclustering"
    depth = model.overclustering if over else model.feature_depth
    model.centres = model.add_weight(
        shape=(model.num_classes, depth), initializer="zeros", dtype="float32",
        trainable=False, name="centres",
    )  # fmt: skip
    model.centre_scale = model.add_weight(
        shape=(), initializer="zeros", dtype="float32", trainable=False, name="centre_scale"
    )


def space(model, features, over):
    """The float32 space the centres live in: features, or overclustering probabilities."""
    return tf.cast(features if model.labels_from == "features" else over, tf.float32)


def probabilities(model, features, over, main):
    """(B, h, w, K): softmax of the negative squared distances to the centres, in units of
    the mean distance at fitting time; `main` (the head's) while the centres are unfitted."""
    points = space(model, features, over)
    distances = (
        tf.reduce_sum(points**2, -1, keepdims=True)
        - 2.0 * tf.einsum("bhwd,kd->bhwk", points, model.centres)
        + tf.reduce_sum(model.centres**2, -1)
    )
    fitted = model.centre_scale > 0
    scale = tf.where(fitted, model.centre_scale, 1.0)
    return tf.where(fitted, tf.nn.softmax(-distances / scale), main)


def fit(model, batches, samples=100_000, per_batch=4096, seed=0, restarts=10):
    """Fits `model`'s centres by k-means on a sample of plain-inference outputs; see
    `AutoSegModel.fit_centres`. Returns the (K, D) centres."""
    if model.centres is None:
        raise ValueError("fit_centres needs a model built with labels_from='features' or "
                         "'overclustering'. Received: labels_from='head'")  # fmt: skip

    def outputs():
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            images = transforms.to_float_images(images)
            features, _, over = model.forward(model.shrink(images), training=False)
            points = space(model, features, over).numpy()
            yield points.reshape(-1, points.shape[-1])

    try:
        pool = kmeans.sample_pool(outputs(), samples, per_batch, np.random.default_rng(seed))
    except ValueError:
        raise ValueError("fit_centres got no batch of images") from None
    centres = kmeans.kmeans(pool, model.num_classes, seed=seed, restarts=restarts)
    distances = kmeans.nearest(pool, centres)[1]
    model.centres.assign(centres.astype(np.float32))
    model.centre_scale.assign(max(float(distances.mean()), 1e-6))
    return centres
