"""`AutoSegNetwork`: the network `F = h o g_ar o d`, apart from its training.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation", ECCV 2020: section 3
and the talk's "Model" and "Variations of the model F". The network maps images and an
ordering to features and cluster probabilities on its grid; it knows nothing of views,
objectives or how its outputs become labels (`tf_autoseg.modeling.model.AutoSegModel`, the
training model, owns those), as keras-hub keeps a backbone apart from its task.
"""

import collections
import math

import keras
import tensorflow as tf

from tf_autoseg.layers.backbones import ConvStem
from tf_autoseg.layers.backbones import ResNet18
from tf_autoseg.layers.masked_attention import MaskedAttentionBlock
from tf_autoseg.layers.masked_conv import MaskedResidualBlock
from tf_autoseg.modeling import transforms
from tf_autoseg.modeling.config import NetworkConfig

# What a forward pass returns, on the grid: `g_ar`'s output (before the heads' ReLU), the main
# head's float32 probabilities, and the overclustering head's (None without that head).
Outputs = collections.namedtuple("Outputs", ["features", "probabilities", "overclustering"])


@keras.saving.register_keras_serializable(package="tf_autoseg")
class AutoSegNetwork(keras.layers.Layer):
    """The network `F = h o g_ar o d`: an unmasked front, masked blocks, 1x1 cluster heads.

    `forward(images, ordering)` runs the causal pass of one ordering (an int or a scalar int
    tensor, so one trace serves all 16); `ordering=None` is plain inference (no mask, no
    shift, full attention). Images are floats in [0, 1] or uint8.

    Args:
        **options: the fields of `tf_autoseg.modeling.config.NetworkConfig` (num_classes,
            front, front_blocks, ar_blocks, width, stride, attention_blocks, attention_heads,
            dropout, overclustering, sobel, max_attention_positions), checked there; and the
            base layer's arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> network = AutoSegNetwork(num_classes=3, width=8, ar_blocks=2)
    >>> outputs = network.forward(np.zeros((1, 32, 32, 3), "float32"), ordering=0)
    >>> outputs.probabilities.shape
    TensorShape([1, 8, 8, 3])
    """

    def __init__(self, **options):
        base = {key: options.pop(key) for key in list(options) if key not in NetworkConfig.names()}
        super().__init__(**base)
        self.config = NetworkConfig(**options)
        config, policy = self.config, self.dtype_policy
        if config.front == "identity":
            self.front_layer = None
        elif config.front == "resnet18":
            self.front_layer = ResNet18(dtype=policy, name="front")
        else:
            blocks = config.front_blocks if config.front == "residual" else 0
            self.front_layer = ConvStem(
                config.width, stride=config.stride, blocks=blocks, dtype=policy, name="front"
            )
        self.ar_layers = []
        for i in range(1, config.ar_blocks + 1):
            self.ar_layers.append(
                MaskedResidualBlock(
                    config.width, dropout=config.dropout, dtype=policy, name=f"ar_block{i}"
                )
            )
            if i in config.attention_blocks:
                self.ar_layers.append(
                    MaskedAttentionBlock(
                        config.attention_heads, dtype=policy, name=f"ar_attention{i}"
                    )
                )
        self.head = keras.layers.Conv2D(config.num_classes, 1, dtype=policy, name="head")
        self.over_head = None
        if config.overclustering:
            self.over_head = keras.layers.Conv2D(
                config.overclustering, 1, dtype=policy, name="over_head"
            )

    @property
    def num_classes(self):
        return self.config.num_classes

    @property
    def overclustering(self):
        """Clusters of the overclustering head, or None without one."""
        return self.config.overclustering

    @property
    def grid_stride(self):
        """Input pixels per cell of the grid that `g_ar` and the heads run on."""
        return self.config.grid_stride

    @property
    def feature_depth(self):
        """Channels of the features `forward` returns first (known once built)."""
        return self._feature_depth

    def build(self, input_shape=None):
        """Builds every layer by one plain pass over zeros of `input_shape` (B, H, W, C);
        an unknown height or width is taken as 64, which reaches every front's grid."""
        if self.built:
            return
        _, height, width, channels = tuple(input_shape or (None, None, None, 3))
        zeros = tf.zeros((1, height or 64, width or 64, channels or 3))
        self._feature_depth = int(self.forward(zeros).features.shape[-1])
        self.built = True

    def check_grid(self, height, width):
        """Refuses crops of (height, width) whose grid is too large for the attention."""
        s = self.grid_stride
        positions = math.ceil(height / s) * math.ceil(width / s)
        if self.config.attention_blocks and positions > self.config.max_attention_positions:
            raise ValueError(
                f"`attention_blocks` on crops of {height}x{width} would attend over "
                f"{positions} positions (a {positions}x{positions} matrix per head and image), "
                f"more than max_attention_positions={self.config.max_attention_positions}. Use "
                "a larger `stride`, smaller crops, or raise `max_attention_positions`."
            )

    def forward(self, images, ordering=None, training=False):
        """`Outputs(features, probabilities, overclustering)` on the grid.

        `ordering` None is plain inference; an ordering id runs the causal pass of that
        ordering. Probabilities are float32.
        """
        images = transforms.to_float_images(images)
        x = images * 2.0 - 1.0
        if self.config.sobel:
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
        return Outputs(x, probs, over)

    def call(self, images, ordering=None, training=False):
        """The main head's probabilities on the grid (`forward`'s second output)."""
        return self.forward(images, ordering, training).probabilities

    def get_config(self):
        return {**super().get_config(), **self.config.arguments()}
