"""`MixtureLabelling`: the label-free labelling stage of `labels_from="mixture"`.

The paper's head is a K-way partition fixed on the training images: on a scene it never saw
(another street, dusk) it is at or below clustering pixel colours (docs/benchmarks.md). This
stage labels the network's output instead with a Gaussian mixture of K components
(`tf_autoseg.modeling.mixture`) over the network's features joined with the pixels' colour:

- each grid cell's point is the features' first `dims` principal axes (of the standardised
  features, each axis scaled to unit variance) beside the mean colour of the image's pixels
  in that cell (each channel standardised);
- a mixture (full covariances, so the axes' relative scales do not matter) is fitted there
  without labels (`AutoSegModel.fit_labelling`): at the end of training on training images
  (what the SavedModel, segment and the naming page serve), and again on the images that
  `evaluate` fits its mapping on (`--adapt_labelling`, its default) or that `segment
  --adapt_labelling` labels, as the k-means baselines fit their clusters; a refit keeps the
  component ids of the fit before it wherever the two agree, so named classes stay named.

A layer with its own weights (the folded normalisation and projection, the components), so a
fitted stage is saved, loaded and exported with the model.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_autoseg.modeling import kmeans
from tf_autoseg.modeling import mixture as mixture_lib
from tf_autoseg.modeling import transforms


class MixtureLabelling(keras.layers.Layer):
    """K mixture components over (features, colour) points, unfitted until `fit`.

    `call(points, fallback)`: (B, h, w, K) component probabilities of (B, h, w, D + C) points
    (`points(features, images)`), or `fallback` (the head's) while unfitted.

    Args:
        num_classes: K.
        feature_depth: D, channels of the network's features.
        channels: C, channels of the images.
        dims: the features' principal axes in the mixture's space.
        colour: whether the colour channels join them there.
        **kwargs: base layer arguments.
    """

    SAMPLES = 20_000  # points a fit sees, by default
    # EM runs from k-means starts; the one agreeing most with the others is kept (on CamVid's
    # dusk sequence the highest likelihood picked a worse partition: docs/benchmarks.md).
    RESTARTS = 10

    def __init__(self, num_classes, feature_depth, channels, dims=3, colour=True, **kwargs):
        super().__init__(dtype="float32", autocast=False, **kwargs)
        self.num_classes, self.feature_depth, self.channels = num_classes, feature_depth, channels
        self.dims, self.colour = dims, colour
        self.mixture_depth = dims + (channels if colour else 0)
        depth, dims = feature_depth + channels, self.mixture_depth

        def weight(name, shape):
            return self.add_weight(
                shape=shape, initializer="zeros", dtype="float32", trainable=False, name=name
            )

        self.projection = weight("projection", (depth, dims))  # normalisation and axes, folded
        self.offset = weight("offset", (dims,))
        self.means = weight("means", (num_classes, dims))
        self.whitening = weight("whitening", (num_classes, dims, dims))
        self.bias = weight("bias", (num_classes,))
        self.fitted_flag = weight("fitted", ())
        self.built = True

    @property
    def fitted(self):
        return float(self.fitted_flag.numpy()) > 0

    @staticmethod
    def points(features, images):
        """(B, h, w, D + C) float32: the features beside the images' colour averaged over each
        grid cell (images at any size, float in [0, 1])."""
        colour = tf.image.resize(tf.cast(images, tf.float32), tf.shape(features)[1:3], "area")
        return tf.concat([tf.cast(features, tf.float32), colour], -1)

    def call(self, points, fallback):
        z = tf.einsum("bhwd,dp->bhwp", tf.cast(points, tf.float32), self.projection) + self.offset
        centred = z[..., None, :] - self.means  # (B, h, w, K, P)
        whitened = tf.einsum("kij,bhwkj->bhwki", self.whitening, centred)
        logits = self.bias - 0.5 * tf.reduce_sum(whitened**2, -1)
        return tf.where(self.fitted_flag > 0, tf.nn.softmax(logits), fallback)

    def fit(self, points, seed=0, restarts=None):
        """Fits the stage on (N, D + C) points (labels are never read); returns the mixture.
        `restarts`: EM runs (default `RESTARTS`).

        A refit's components take the ids of the previous fit's that label the same points
        most alike (Hungarian matching of the two labellings), so cluster ids keep their
        meaning (named classes) while the components follow the new images.
        """
        points = np.asarray(points, np.float64)
        previous = self.labels(points) if self.fitted else None
        projection, offset = self._space(points)
        projected = points @ projection + offset
        restarts = self.RESTARTS if restarts is None else restarts
        fitted = mixture_lib.fit(projected, self.num_classes, seed, restarts, select="agreement")
        if previous is not None:
            new = fitted.posterior(projected).argmax(1)
            fitted = fitted.permuted(mixture_lib.agreement_order(new, previous, self.num_classes))
        whitening, bias = fitted.whitening()
        for variable, value in (
            (self.projection, projection), (self.offset, offset), (self.means, fitted.means),
            (self.whitening, whitening), (self.bias, bias), (self.fitted_flag, 1.0),
        ):  # fmt: skip
            variable.assign(np.asarray(value, np.float32))
        return fitted

    def _space(self, points):
        """(projection (D + C, P), offset (P,)) of the mixture's space on these points: the
        standardised features' first `dims` principal axes, each scaled to unit variance,
        then (with `colour`) every colour channel standardised."""
        d = self.feature_depth
        mean, spread = points.mean(0), points.std(0) + 1e-6
        standard = (points[:, :d] - mean[:d]) / spread[:d]
        values, vectors = np.linalg.eigh(np.cov(standard, rowvar=False))
        order = np.argsort(values)[::-1][: self.dims]
        axes = vectors[:, order] / np.sqrt(np.maximum(values[order], 1e-12))
        projection = np.zeros((points.shape[1], self.mixture_depth))
        projection[:d, : self.dims] = axes / spread[:d, None]
        if self.colour:
            projection[d:, self.dims :] = np.diag(1.0 / spread[d:])
        return projection, -mean @ projection

    def labels(self, points):
        """(N,) component ids of (N, D + C) points, by the current fit (NumPy)."""
        points = tf.constant(np.asarray(points, np.float32)[None, None])
        probabilities = self(points, tf.zeros((1, 1, len(points[0, 0]), self.num_classes)))
        return probabilities.numpy()[0, 0].argmax(-1)

    def reset(self):
        """Back to unfitted: inference answers with the fallback (the head)."""
        self.fitted_flag.assign(0.0)


def fit_stage(model, batches, samples=None, per_batch=4096, seed=0, restarts=None):
    """Fits `model`'s label-free stage (`labels_from` other than "head") on a sample of the
    images' grid points: `AutoSegModel.fit_labelling`.

    Labels are never read. The training program fits it on training images after its last
    step; evaluate fits it again where it fits the mapping (as the k-means baselines do), the
    mixture keeping its component ids. Call it on your own images before `predict_labels` to
    label them with a stage fitted to them.

    Args:
        model: an `AutoSegModel`.
        batches: an iterable of image batches, or of (images, labels) with labels ignored.
        samples: grid points the fit sees (a seeded sample; default: the stage's `SAMPLES`).
        per_batch: at most this many points kept from each batch before sampling.
        seed: seeds the sample and the fit.
        restarts: runs from different seeds, the best kept by a label-free criterion (k-means
            inertia; the mixture's agreement; default: the stage's `RESTARTS`).

    Returns:
        The fit: the (K, D) centres, or the `tf_autoseg.modeling.mixture.Mixture`.
    """
    stage = model.labelling
    if stage is None:
        raise ValueError("fit_labelling needs a model built with labels_from='mixture', "
                         "'features' or 'overclustering'. Received: labels_from='head'")  # fmt: skip

    def points():
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            images = model.shrink(transforms.checked_images(images, model.image_shape[-1]))
            grid = model.labelling_points(model.network.forward(images), images).numpy()
            yield grid.reshape(-1, grid.shape[-1])

    samples = stage.SAMPLES if samples is None else samples
    try:
        pool = kmeans.sample_pool(points(), samples, per_batch, np.random.default_rng(seed))
    except ValueError:
        raise ValueError("fit_labelling got no batch of images") from None
    restarts = stage.RESTARTS if restarts is None else restarts
    return stage.fit(pool, seed=seed, restarts=restarts)
