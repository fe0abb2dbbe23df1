"""`AutoSegModel`: the model `F = h o g_ar o d` and its AC / ARL training step.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation", ECCV
2020: section 3 and the talk's "Model", "Variations of the model F" and
"Training procedure". Training sees images only: labels in the data are never
read by `train_step`.

Long (about 470 lines, 75 of them the docstring of its 27 arguments) because it is the one
owner of the model: construction, plain inference and the AC / ARL training step share its
layers and forward pass. The arguments' checks (`config.ModelConfig`), view sampling
(`views`), the objective (`objective`) and the label-free centres (`centres`) are what it
calls.
"""

import math

import keras
import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.layers import orderings as orderings_lib
from tf_autoseg.layers.backbones import ConvStem
from tf_autoseg.layers.backbones import ResNet18
from tf_autoseg.layers.masked_attention import MaskedAttentionBlock
from tf_autoseg.layers.masked_conv import MaskedResidualBlock
from tf_autoseg.modeling import centres as centres_lib
from tf_autoseg.modeling import transforms
from tf_autoseg.modeling import views
from tf_autoseg.modeling.config import VARIANTS
from tf_autoseg.modeling.config import ModelConfig
from tf_autoseg.modeling.objective import loss_and_mi


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
        num_classes: K, clusters of the main head (>= 2).
        input_shape: (height, width, channels) of training crops, checked against the
            grid stride, rotations and the attention's size when the model is built; None
            (or None height and width) leaves the crop size open, checked when a training
            step is traced. Default: (None, None, 3). Inference takes any height and width.
        front: `h`: "identity", "stem", "residual" (stem + `front_blocks`
            basic blocks) or "resnet18" (output stride 8).
        front_blocks: basic blocks after the stem for `front="residual"`.
        ar_blocks: `g_ar`: number of `MaskedResidualBlock`s (0 = identity).
        width: channels of the stem and of `g_ar`.
        stride: output stride of the stem (1, 2 or 4); `g_ar` and its
            attention run on the grid downsampled by it, and orderings are
            defined on that grid.
        attention_blocks: indices i in [1, ar_blocks] after whose i-th masked
            block a `MaskedAttentionBlock` is inserted.
        attention_heads: heads of each attention block.
        dropout: the paper's p, inside each masked residual block.
        overclustering: K_over > K for an auxiliary overclustering head, or None.
        objective: "ac" or "arl". ARL trains the representation only (the
            heads get no gradient): cluster its features to segment.
        entropy_weight: lambda of the AC loss (1 = mutual information).
        over_entropy_weight: lambda of the overclustering head's term (None: `entropy_weight`);
            IIC uses 1.5 on the main head and 1.0 on the overclustering one.
        marginal_momentum: in [0, 1). 0: the entropy terms use each step's own cluster
            marginal (IIC), which asks every batch to use all clusters equally. Above 0: a
            moving average of the marginal across steps (`losses.moving_marginal`), so only
            the data as a whole is asked to balance, not each batch.
        input_downsample: inference (`model(images)`, `predict_labels`, the export) shrinks
            images this many times before the network: set it to the `--downsample` the
            training images were shrunk by, so that full-size images are segmented at the
            training scale. Training steps take the crops as they come.
        labels_from: what plain inference's K clusters are: "head" (the main head's argmax,
            the paper's), or the nearest of K centres that `fit_centres` finds by k-means,
            without labels, in the space of `g_ar`'s "features" or of the "overclustering"
            head's probabilities. The head's clusters are pushed toward equal sizes by the
            mutual information; k-means centres are not, which suits classes of very unequal
            shares. Until `fit_centres` runs, inference answers with the head.
        sobel: feed Sobel gradients of the grey level beside the channels (IIC's COCO-Stuff
            input), which takes weight off raw colour.
        displacement: half side of IIC's displacement window for AC.
        per_offset: one joint per offset of the window and the mean of their mutual
            information (IIC's "uncollapsed" segmentation loss), instead of one joint pooled
            over the window.
        orderings: the set O of ordering ids views are drawn from (>= 2 ids).
        sampling: "random", "no_repeat" (every pair once before any repeats)
            or "hard" (the pair of O the current model agrees on least).
        photometric: colour jitter, drawn independently per view.
        geometric: "none", "flip", "rotate" or "flip_rotate": a random
            dihedral transform applied to the second view's input and
            inverted on its output.
        temperature, num_negatives: of the ARL objective.
        max_attention_positions: refuse attention grids with more positions
            (memory grows with their square).
        seed: seeds ordering sampling and augmentations.
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> model = AutoSegModel.variant("F2", num_classes=3, input_shape=(32, 32, 3), width=8)
    >>> model.compile(optimizer="adam")
    >>> model(np.zeros((1, 40, 24, 3), "float32")).shape
    TensorShape([1, 40, 24, 3])
    """

    def __init__(
        self,
        num_classes,
        input_shape=None,
        front="stem",
        front_blocks=0,
        ar_blocks=5,
        width=64,
        stride=4,
        attention_blocks=(),
        attention_heads=4,
        dropout=0.0,
        overclustering=None,
        objective="ac",
        entropy_weight=1.0,
        over_entropy_weight=None,
        marginal_momentum=0.0,
        sobel=False,
        input_downsample=1,
        labels_from="head",
        displacement=0,
        per_offset=False,
        orderings=tuple(orderings_lib.RASTER),
        sampling="random",
        photometric=False,
        geometric="none",
        temperature=0.1,
        num_negatives=255,
        max_attention_positions=4096,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Every argument but the input shape is checked, and normalised, by its config.
        self.model_config = ModelConfig(
            num_classes=num_classes, front=front, front_blocks=front_blocks,
            ar_blocks=ar_blocks, width=width, stride=stride, attention_blocks=attention_blocks,
            attention_heads=attention_heads, dropout=dropout, overclustering=overclustering,
            objective=objective, entropy_weight=entropy_weight,
            over_entropy_weight=over_entropy_weight, marginal_momentum=marginal_momentum,
            sobel=sobel, input_downsample=input_downsample, labels_from=labels_from,
            displacement=displacement, per_offset=per_offset, orderings=orderings,
            sampling=sampling, photometric=photometric, geometric=geometric,
            temperature=temperature, num_negatives=num_negatives,
            max_attention_positions=max_attention_positions, seed=seed,
        )  # fmt: skip
        for name, value in self.model_config.arguments().items():
            setattr(self, name, value)
        if input_shape is None:
            input_shape = (None, None, 3)
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(
                "`input_shape` must be (height, width, channels), height and width None for "
                f"any. Received: input_shape={input_shape!r}"
            )
        crop_height, crop_width, channels = input_shape
        self.image_shape = (
            *(
                None if v is None else arguments.integer("input_shape", v, 1)
                for v in (crop_height, crop_width)
            ),
            arguments.integer("input_shape", channels, 1),
        )
        self._check_grid()
        self._build_layers()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mi_tracker = keras.metrics.Mean(name="mi")
        self.build((None, *self.image_shape))

    @classmethod
    def variant(cls, name, num_classes, input_shape=None, **overrides):
        """One of the slides' variants: "F1".."F5", or "random" (F2, untrained)."""
        arguments.choice("variant", name, tuple(VARIANTS))
        return cls(num_classes, input_shape, **{**VARIANTS[name], **overrides})

    # ----------------------------------------------------------------- layers
    @property
    def grid_stride(self):
        """Input pixels per cell of the grid that `g_ar` and the heads run on."""
        return {"identity": 1, "resnet18": ResNet18.stride}.get(self.front, self.stride)

    def _check_grid(self, height=None, width=None):
        """Checks crops of (height, width) (default: `input_shape`'s) against the grid: the
        geometric transforms and the attention's size. Unknown sizes are checked when a
        training step is traced (`train_step`)."""
        height = height or self.image_shape[0]
        width = width or self.image_shape[1]
        if height is None or width is None:
            return
        s = self.grid_stride
        if self.geometric != "none" and (height % s or width % s):
            raise ValueError(
                f"`geometric` transforms need `input_shape` divisible by the grid stride {s} "
                f"so that pixels still correspond. Received: crops of {height}x{width}"
            )
        if "rotate" in self.geometric and height != width:
            raise ValueError(
                "`geometric` rotations need square crops. "
                f"Received: crops of {height}x{width}, geometric={self.geometric!r}"
            )
        positions = math.ceil(height / s) * math.ceil(width / s)
        if self.attention_blocks and positions > self.max_attention_positions:
            raise ValueError(
                f"`attention_blocks` on crops of {height}x{width} would attend over "
                f"{positions} positions (a {positions}x{positions} matrix per head and image), "
                f"more than max_attention_positions={self.max_attention_positions}. Use a "
                "larger `stride`, smaller crops, or raise `max_attention_positions`."
            )

    def _build_layers(self):
        policy = self.dtype_policy
        if self.front == "identity":
            self.front_layer = None
        elif self.front == "resnet18":
            self.front_layer = ResNet18(dtype=policy, name="front")
        else:
            blocks = self.front_blocks if self.front == "residual" else 0
            self.front_layer = ConvStem(
                self.width, stride=self.stride, blocks=blocks, dtype=policy, name="front"
            )
        self.ar_layers = []
        for i in range(1, self.ar_blocks + 1):
            self.ar_layers.append(
                MaskedResidualBlock(
                    self.width, dropout=self.dropout, dtype=policy, name=f"ar_block{i}"
                )
            )
            if i in self.attention_blocks:
                self.ar_layers.append(
                    MaskedAttentionBlock(
                        self.attention_heads, dtype=policy, name=f"ar_attention{i}"
                    )
                )
        self.head = keras.layers.Conv2D(self.num_classes, 1, dtype=policy, name="head")
        self.over_head = None
        if self.overclustering:
            self.over_head = keras.layers.Conv2D(
                self.overclustering, 1, dtype=policy, name="over_head"
            )
        # The moving cluster marginals (zeros until the first step records one). Every
        # replica computes the same value from the all-reduced joint; the first one's counts.
        self.marginals = {}
        if self.marginal_momentum > 0:
            sizes = {"main": self.num_classes, "overclustering": self.overclustering}
            for head, size in sizes.items():
                if size:
                    self.marginals[head] = self.add_weight(
                        shape=(size,), initializer="zeros", dtype="float32", trainable=False,
                        aggregation="only_first_replica", name=f"{head}_marginal",
                    )  # fmt: skip

    @property
    def feature_depth(self):
        """Channels of `g_ar`'s output (the features that `forward` returns first)."""
        return self._feature_depth

    def fit_centres(self, batches, samples=100_000, per_batch=4096, seed=0, restarts=10):
        """Fits the K centres of `labels_from` by k-means on a sample of plain-inference outputs.

        Labels are never read. Run it after training (the training program does); inference
        uses the centres from then on.

        Args:
            batches: an iterable of image batches, or of (images, labels) with labels ignored.
            samples: grid positions the k-means sees (a seeded sample).
            per_batch: at most this many positions kept from each batch before sampling.
            seed: seeds the sample and the k-means.
            restarts: k-means runs; the one of lowest inertia is kept (label-free).

        Returns:
            The (K, D) centres.
        """
        return centres_lib.fit(self, batches, samples, per_batch, seed, restarts)

    def build(self, input_shape):
        if self.built:
            return
        # Any size builds the layers; 64 pixels reach every front's grid (ResNet-18: 8x8).
        height, width, channels = (v or 64 for v in self.image_shape)
        features = self._forward(tf.zeros((1, height, width, channels)), None, training=False)[0]
        self._feature_depth = int(features.shape[-1])
        centres_lib.add_weights(self)
        self.built = True

    # ---------------------------------------------------------------- forward
    def _forward(self, images, ordering, training):
        """Returns (features, probabilities, overclustering probabilities) on the grid."""
        images = transforms.to_float_images(images)
        x = images * 2.0 - 1.0
        if self.sobel:
            x = tf.concat([x, transforms.sobel(images)], axis=-1)
        if self.front_layer is not None:
            x = self.front_layer(x, training=training)
        for layer in self.ar_layers:
            x = layer(x, ordering=ordering, training=training)
        hidden = keras.ops.relu(x)
        probs = tf.nn.softmax(tf.cast(self.head(hidden), tf.float32))
        over = None
        if self.over_head is not None:
            over = tf.nn.softmax(tf.cast(self.over_head(hidden), tf.float32))
        return x, probs, over

    def forward(self, images, ordering=None, training=False):
        """(features, probabilities, overclustering probabilities or None) on the head's grid.

        `ordering` None is plain inference; an ordering id runs the causal pass of that
        ordering. Features are `g_ar`'s output (before the heads' ReLU), probabilities float32.
        """
        return self._forward(images, ordering, training)

    def call(self, images, ordering=None, training=False):
        if ordering is None and not training:
            return self.inference(images)["main"]
        probs = self._forward(images, ordering, training)[1]
        size = tf.shape(images)[1:3]
        return tf.image.resize(probs, size, method="bilinear")

    def inference(self, images, heads=("main",)):
        """{head: (B, H, W, K) probabilities} of plain inference at the images' own size.

        Images are first shrunk `input_downsample` times (area averaging, the block mean of
        `--downsample`), so a model trained on shrunk images sees new ones at its scale; the
        probabilities are upsampled bilinearly from the head's grid to the input size.
        """
        images = transforms.to_float_images(images)
        size = tf.shape(images)[1:3]
        features, main, over = self._forward(self.shrink(images), None, training=False)
        if self.centres is not None:
            main = centres_lib.probabilities(self, features, over, main)
        probs = {"main": main, "overclustering": over}
        return {head: tf.image.resize(probs[head], size, method="bilinear") for head in heads}

    def shrink(self, images):
        """Float images shrunk `input_downsample` times by area averaging (as-is at 1)."""
        if self.input_downsample == 1:
            return images
        shrunk = tf.maximum(tf.shape(images)[1:3] // self.input_downsample, 1)
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
        if "overclustering" in heads and self.over_head is None:
            raise ValueError("`overclustering=True` needs a model built with `overclustering`.")
        images = tf.convert_to_tensor(images)
        outputs = {head: [] for head in heads}
        for i in range(0, int(images.shape[0]), batch_size):
            probs = self.inference(images[i : i + batch_size], heads)
            for head in heads:
                outputs[head].append(cluster_ids(probs[head]))
        return {head: tf.concat(parts, axis=0) for head, parts in outputs.items()}

    # --------------------------------------------------------------- training
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

    # ------------------------------------------------- views and objective
    # The step's ordering pair and views (`views`) and the AC / ARL loss (`objective`) are
    # functions of the model, kept apart from its architecture and inference.
    def candidate_pairs(self):
        """The unordered pairs of `orderings`, in a fixed order."""
        return views.candidate_pairs(self.orderings)

    def sample_pair(self, images=None):
        """The two ordering ids of this step, as a (2,) int32 tensor (`views.sample_pair`)."""
        return views.sample_pair(self, images)

    def pair_agreement(self, images):
        """Mutual information of every candidate pair under the current weights."""
        return views.pair_agreement(self, images)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self._check_grid(*images.shape[1:3])  # at tracing: crops `input_shape` left open
        pair = self.sample_pair(images)
        with tf.GradientTape() as tape:
            view1, view2 = views.two_views(self, images, pair, training=True, augment=True)
            loss, mi = loss_and_mi(self, view1, view2, update=True)
            # Gradients are summed over replicas; the loss is the same global
            # value on each, so 1/replicas gives one device's gradient.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        # Under ARL the cluster heads get no gradient: they are not trained
        # (segment an ARL model by clustering its features).
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._record(loss, mi)

    def test_step(self, data):
        labelled = isinstance(data, (tuple, list)) and len(data) > 1
        images = data[0] if isinstance(data, (tuple, list)) else data
        pair = tf.constant(self.orderings[:2], tf.int32)
        view1, view2 = views.two_views(self, images, pair, training=False, augment=False)
        if labelled:  # the compiled label metrics score plain inference against the labels
            probabilities = self.inference(images)["main"]
            for metric in getattr(self, "label_metrics", ()):
                metric.update_state(data[1], probabilities)
        return self._record(*loss_and_mi(self, view1, view2))

    def _record(self, loss, mi):
        self.loss_tracker.update_state(loss)
        self.mi_tracker.update_state(mi)
        # Rank-1 results: Keras 3 fit under MultiWorkerMirroredStrategy fails
        # to concatenate scalar step outputs across workers.
        return {m.name: tf.reshape(m.result(), [1]) for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": self.image_shape,
            **self.model_config.arguments(),
        }
