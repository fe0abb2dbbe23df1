"""`AutoSegModel`: the training model around the network, trainable with `fit`.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation", ECCV 2020: the talk's
"Training procedure". The network (`tf_autoseg.modeling.network.AutoSegNetwork`) maps images
and an ordering to features and cluster probabilities; this model owns what training and
labelling add to it: the step's two views (`views.Views`), the AC / ARL objective
(`objective.Objective`) and how plain inference turns the network's output into labels (the
main head, or label-free centres: `centres.ClusterCentres`). Training sees images only:
labels in the data are never read by `train_step`.
"""

import keras
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.modeling import labelling as labelling_lib
from tf_autoseg.modeling import refinement
from tf_autoseg.modeling import transforms
from tf_autoseg.modeling.centres import ClusterCentres
from tf_autoseg.modeling.config import VARIANTS
from tf_autoseg.modeling.config import ModelConfig
from tf_autoseg.modeling.labelling import MixtureLabelling
from tf_autoseg.modeling.network import AutoSegNetwork
from tf_autoseg.modeling.objective import Objective
from tf_autoseg.modeling.views import Views


def cluster_ids(probabilities):
    """(..., K) cluster probabilities -> (...) int32 cluster ids, their argmax.

    The one place probabilities become labels: `AutoSegModel.cluster_labels`, the export's
    signatures, `tf_autoseg.serving.loading`'s SavedModel segmenter and segment's tiles call it. What
    the K clusters are (`labels_from`: the main head or fitted centres) is decided before it,
    in `AutoSegModel.inference`.
    """
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32)


@keras.saving.register_keras_serializable(package="tf_autoseg")
class AutoSegModel(keras.Model):
    """Autoregressive unsupervised segmentation model, trainable with `fit`.

    `model(images)` (no ordering: plain convolutions, full attention) returns
    (B, H, W, K) cluster probabilities at the input size; `predict_labels`
    returns the (B, H, W) cluster ids. `fit` runs the paper's procedure: two
    orderings sampled per step, two forward passes, the AC (mutual
    information) or ARL (InfoNCE) objective, one update. Images are floats in
    [0, 1] or uint8; anything after the images in a batch (labels) is ignored.

    Args:
        num_classes: K, clusters of the main head (>= 2); or give it in `config`.
        input_shape: (height, width, channels) of training crops, checked against the
            grid stride, rotations and the attention's size when the model is built; None
            (or None height and width) leaves the crop size open, checked when a training
            step is traced. Default: (None, None, 3). Inference takes any height and width.
        config: a `tf_autoseg.modeling.config.ModelConfig`, instead of the options.
        **options: the model's options by name, each declared (with its meaning, default and
            check) in one section of `tf_autoseg.modeling.config`: `NetworkConfig` (front,
            front_blocks, ar_blocks, width, stride, attention_blocks, attention_heads,
            dropout, overclustering, sobel, max_attention_positions), `ViewsConfig`
            (orderings, sampling, photometric, geometric), `ObjectiveConfig` (objective,
            entropy_weight, over_entropy_weight, marginal_momentum, displacement, per_offset,
            temperature, num_negatives), `LabellingConfig` (labels_from, input_downsample),
            and `seed`; plus `keras.Model`'s arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> model = AutoSegModel.variant("F2", num_classes=3, input_shape=(32, 32, 3), width=8)
    >>> model.compile(optimizer="adam")
    >>> model(np.zeros((1, 40, 24, 3), "float32")).shape
    TensorShape([1, 40, 24, 3])
    """

    def __init__(self, num_classes=None, input_shape=None, config=None, **options):
        base = {key: options.pop(key) for key in list(options) if key not in ModelConfig.names()}
        super().__init__(**base)
        if config is None:
            if num_classes is not None:
                options["num_classes"] = num_classes
            config = ModelConfig.from_arguments(**options)
        elif options or num_classes is not None:
            raise ValueError(
                "Give the model's options either as `config` or by name, not both. Received: "
                f"config and {sorted(options) or 'num_classes'}"
            )
        self.config = config
        self.image_shape = _image_shape(input_shape)
        self.network = self.make_network()
        self.views = Views(config.views, config.seed)
        self.objective = Objective(
            config.objective, config.network.num_classes, config.network.overclustering,
            config.seed, name="objective",
        )  # fmt: skip
        # The label-free labelling of `labels_from` (None for the head's), made in `build`.
        self.centres = self.mixture = None
        height, width = self.image_shape[:2]
        if height is not None and width is not None:
            self._check_crop(height, width)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mi_tracker = keras.metrics.Mean(name="mi")
        self.build((None, *self.image_shape))

    @classmethod
    def variant(cls, name, num_classes, input_shape=None, **overrides):
        """One of the slides' variants: "F1".."F5", or "random" (F2, untrained)."""
        arguments.choice("variant", name, tuple(VARIANTS))
        return cls(num_classes, input_shape, **{**VARIANTS[name], **overrides})

    def make_network(self):
        """The network of `config.network` (a subclass may build another layer stack)."""
        options = self.config.network.arguments()
        return AutoSegNetwork(**options, dtype=self.dtype_policy, name="network")

    @property
    def num_classes(self):
        """K, the clusters of the main head and of the labels."""
        return self.config.network.num_classes

    @property
    def overclustering(self):
        """Clusters of the overclustering head, or None without one."""
        return self.config.network.overclustering

    def _check_crop(self, height, width):
        """Checks training crops of (height, width) against the grid: the geometric transforms
        and the attention's size. Unknown sizes are checked when a step is traced."""
        self.views.check_crop(height, width, self.network.grid_stride)
        self.network.check_grid(height, width)

    def build(self, input_shape):
        if self.built:
            return
        self.network.build((None, *self.image_shape))
        labelling = self.config.labelling
        if labelling.labels_from == "mixture":
            self.mixture = MixtureLabelling(
                self.num_classes, self.network.feature_depth, self.image_shape[-1],
                dims=labelling.mixture_dims, colour=labelling.mixture_colour,
                name="mixture",
            )  # fmt: skip
        elif labelling.labels_from != "head":
            over = labelling.labels_from == "overclustering"
            depth = self.overclustering if over else self.network.feature_depth
            self.centres = ClusterCentres(self.num_classes, depth, name="centres")
        self.built = True

    # ---------------------------------------------------------------- inference
    def call(self, images, ordering=None, training=False):
        if ordering is None and not training:
            return self.inference(images)["main"]
        probs = self.network.forward(images, ordering, training).probabilities
        size = tf.shape(images)[1:3]
        return tf.image.resize(probs, size, method="bilinear")

    def labelling_points(self, outputs, images):
        """The float32 points on the grid that the labelling of `labels_from` labels: the
        features beside the colour (mixture), the features, or the overclustering head's
        probabilities (centres). `images`: the float images the network saw."""
        labels_from = self.config.labelling.labels_from
        if labels_from == "mixture":
            return MixtureLabelling.points(outputs.features, images)
        over = labels_from == "overclustering"
        return tf.cast(outputs.overclustering if over else outputs.features, tf.float32)

    @property
    def labelling(self):
        """The fitted-without-labels stage of `labels_from` (a layer), or None for the head."""
        return self.mixture if self.mixture is not None else self.centres

    def inference(self, images, heads=("main",), checked=False):
        """{head: (B, H, W, K) probabilities} of plain inference at the images' own size.

        Images are first shrunk `input_downsample` times (area averaging, the block mean of
        `--downsample`), so a model trained on shrunk images sees new ones at its scale. The
        main head's K clusters are the labelling's (`labels_from`): the head's softmax, or
        the fitted centres'. The probabilities are upsampled bilinearly from the grid to the
        input size. `checked`: the images are floats `transforms.checked_images` returned.
        """
        if not checked:
            images = transforms.checked_images(images, self.image_shape[-1])
        size = tf.shape(images)[1:3]
        shrunk = self.shrink(images)
        outputs = self.network.forward(shrunk, None, training=False)
        main = outputs.probabilities
        if self.labelling is not None:
            main = self.labelling(self.labelling_points(outputs, shrunk), main)
        probs = {"main": main, "overclustering": outputs.overclustering}
        probs = {head: tf.image.resize(probs[head], size, method="bilinear") for head in heads}
        if "main" in probs and self.labelling is not None:
            # Edge-aware, at full resolution; a no-op while the stage is unfitted (the head).
            refined = refinement.refine(
                probs["main"], images, self.config.labelling.refine_iterations
            )
            probs["main"] = tf.where(self.labelling.fitted_flag > 0, refined, probs["main"])
        return probs

    def shrink(self, images):
        """Float images shrunk `input_downsample` times by area averaging (as-is at 1)."""
        factor = self.config.labelling.input_downsample
        if factor == 1:
            return images
        shrunk = tf.maximum(tf.shape(images)[1:3] // factor, 1)
        return tf.image.resize(images, shrunk, method="area")

    def predict_labels(self, images, batch_size=8, overclustering=False):
        """(B, H, W) int32 cluster ids of plain inference (no ordering).

        With `overclustering=True`, the ids of the overclustering head.
        """
        head = "overclustering" if overclustering else "main"
        return self.cluster_labels(images, batch_size, heads=(head,))[head]

    def cluster_labels(self, images, batch_size=8, heads=("main", "overclustering")):
        """{head: (B, H, W) int32 cluster ids} of plain inference, one forward pass for all.

        `heads` names "main" and/or "overclustering" (which needs that head).
        """
        if "overclustering" in heads and not self.overclustering:
            raise ValueError("`overclustering=True` needs a model built with `overclustering`.")
        images = transforms.checked_images(images, self.image_shape[-1])  # whole, then by batch
        outputs = {head: [] for head in heads}
        for i in range(0, int(images.shape[0]), batch_size):
            probs = self.inference(images[i : i + batch_size], heads, checked=True)
            for head in heads:
                outputs[head].append(cluster_ids(probs[head]))
        return {head: tf.concat(parts, axis=0) for head, parts in outputs.items()}

    def fit_labelling(self, batches, samples=None, per_batch=4096, seed=0, restarts=None):
        """Fits the label-free stage of `labels_from` on these images, labels unread; see
        `tf_autoseg.modeling.labelling.fit_stage` (the arguments, and where it is called)."""
        return labelling_lib.fit_stage(self, batches, samples, per_batch, seed, restarts)

    # ---------------------------------------------------------------- training
    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras `compile`, less the loss: the model trains on its own objective.

        Args:
            optimizer: as in Keras.
            loss: must stay None: AC or ARL (`objective`) is the loss, and a loss given here
                would be silently unused.
            metrics: metrics of labelled evaluation, updated by `evaluate` on
                (images, labels) batches with the labels and plain inference's probabilities
                (e.g. `tf_autoseg.evaluation.keras_metric.MatchedSegmentationScore`).
            **kwargs: the other keywords of `keras.Model.compile`.
        """
        if loss is not None:
            raise ValueError(
                "AutoSegModel trains on its own objective (`objective`: AC or ARL): `compile` "
                f"takes no `loss`. Received: loss={loss!r}"
            )
        # Not tracked as state (compile may come after the model is built): the metrics' own
        # variables hold the counts, and `metrics` lists them for Keras to reset and report.
        object.__setattr__(self, "label_metrics", tuple(metrics or ()))
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded model (its optimizer and state), as Keras does for a model whose
        `compile` is its own; the label metrics are not saved."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.mi_tracker, *getattr(self, "label_metrics", ())]

    def _step(self):
        return self.optimizer.iterations if self.optimizer is not None else 0

    def _agreement(self, images):
        """Mutual information of every candidate pair under the current weights ("hard")."""
        outputs = {
            o: tf.stop_gradient(self.network.forward(images, o, training=False).probabilities)
            for o in self.config.views.orderings
        }
        return tf.stack(
            [
                self.objective.agreement(outputs[a], outputs[b])
                for a, b in self.views.candidate_pairs()
            ]
        )

    def fit(self, x=None, *args, **kwargs):
        """Keras `fit`; a `tf.data.Dataset` shuffles itself, so `shuffle` defaults to False
        for one (Keras would ignore True, with a warning)."""
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)
        return super().fit(x, *args, **kwargs)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self._check_crop(*images.shape[1:3])  # at tracing: crops `input_shape` left open
        images = transforms.checked_images(images, self.image_shape[-1])
        step = self._step()
        pair = self.views.sample_pair(step, lambda: self._agreement(images))
        with tf.GradientTape() as tape:
            view1, view2 = self.views.make(
                self.network.forward, images, pair, step, training=True, augment=True
            )
            loss, mi = self.objective.compute(view1, view2, step, update=True)
            # Gradients are summed over replicas; the loss is the same global
            # value on each, so 1/replicas gives one device's gradient.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        # Under ARL the cluster heads get no gradient: they are not trained
        # (segment an ARL model by clustering its features).
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        # The label metrics update on labelled batches only (`evaluate`), not here.
        return self._record(loss, mi, (self.loss_tracker, self.mi_tracker))

    def test_step(self, data):
        labelled = isinstance(data, (tuple, list)) and len(data) > 1
        images = data[0] if isinstance(data, (tuple, list)) else data
        images = transforms.checked_images(images, self.image_shape[-1])
        pair = tf.constant(self.config.views.orderings[:2], tf.int32)
        step = self._step()
        view1, view2 = self.views.make(
            self.network.forward, images, pair, step, training=False, augment=False
        )
        if labelled:  # the compiled label metrics score plain inference against the labels
            probabilities = self.inference(images, checked=True)["main"]
            for metric in getattr(self, "label_metrics", ()):
                metric.update_state(data[1], probabilities)
        return self._record(*self.objective.compute(view1, view2, step), self.metrics)

    def _record(self, loss, mi, reported):
        self.loss_tracker.update_state(loss)
        self.mi_tracker.update_state(mi)
        # Rank-1 results: Keras 3 fit under MultiWorkerMirroredStrategy fails
        # to concatenate scalar step outputs across workers.
        return {m.name: tf.reshape(m.result(), [1]) for m in reported}

    def get_config(self):
        return {**super().get_config(), "input_shape": self.image_shape, **self.config.arguments()}


def _image_shape(input_shape):
    """`input_shape` checked: (height or None, width or None, channels)."""
    if input_shape is None:
        input_shape = (None, None, 3)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), height and width None for "
            f"any. Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    return (
        *(None if v is None else arguments.integer("input_shape", v, 1) for v in (height, width)),
        arguments.integer("input_shape", channels, 1),
    )
