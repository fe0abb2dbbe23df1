"""Unmasked fronts `h` of the model `F = h o g_ar o d`: conv stem, residual blocks, ResNet-18.

These run before the autoregressive part and are not causal (nor need to be:
the orderings act from `g_ar` on). Batch normalisation is allowed here.
"""

import keras

from tf_autoseg import arguments

STRIDES = (1, 2, 4)


def _batch_norm(policy, name):
    # Synchronised across replicas: the statistics are those of the global
    # batch, so a MirroredStrategy run trains as one device would.
    return keras.layers.BatchNormalization(synchronized=True, dtype=policy, name=name)


@keras.saving.register_keras_serializable(package="tf_autoseg")
class BasicBlock(keras.layers.Layer):
    """ResNet basic block: two 3x3 conv + BN, identity or projected shortcut.

    Args:
        filters: output channels.
        strides: stride of the first convolution (1 or 2).
        dilation: dilation of both convolutions (stride must then be 1).
        **kwargs: base layer arguments.
    """

    def __init__(self, filters, strides=1, dilation=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = arguments.integer("filters", filters)
        self.strides = arguments.integer("strides", strides)
        self.dilation = arguments.integer("dilation", dilation)
        if self.strides > 1 and self.dilation > 1:
            raise ValueError(
                f"`strides` and `dilation` cannot both exceed 1. Received: "
                f"strides={strides}, dilation={dilation}"
            )
        policy = self.dtype_policy
        conv = lambda s, name: keras.layers.Conv2D(  # noqa: E731
            self.filters,
            3,
            strides=s,
            padding="same",
            dilation_rate=self.dilation,
            use_bias=False,
            dtype=policy,
            name=name,
        )
        self.conv1 = conv(self.strides, "conv1")
        self.bn1 = _batch_norm(policy, "bn1")
        self.conv2 = conv(1, "conv2")
        self.bn2 = _batch_norm(policy, "bn2")
        self.shortcut = None
        self.shortcut_bn = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters or self.strides != 1:
            self.shortcut = keras.layers.Conv2D(
                self.filters,
                1,
                strides=self.strides,
                use_bias=False,
                dtype=self.dtype_policy,
                name="shortcut",
            )
            self.shortcut_bn = _batch_norm(self.dtype_policy, "shortcut_bn")

    def call(self, inputs, training=None):
        x = keras.ops.relu(self.bn1(self.conv1(inputs), training=training))
        x = self.bn2(self.conv2(x), training=training)
        skip = inputs
        if self.shortcut is not None:
            skip = self.shortcut_bn(self.shortcut(inputs), training=training)
        return keras.ops.relu(x + skip)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "dilation": self.dilation,
        }


@keras.saving.register_keras_serializable(package="tf_autoseg")
class ConvStem(keras.layers.Layer):
    """Conv stem: 3x3 conv, BN, ReLU, with output stride 1, 2 or 4.

    Stride 4 is the public reimplementation's stem: 3x3 conv stride 2, BN,
    ReLU, 3x3 max-pool stride 2.

    Args:
        filters: output channels.
        stride: 1, 2 or 4.
        blocks: number of `BasicBlock`s after the stem (the slides' "residual
            blocks" front).
        **kwargs: base layer arguments.
    """

    def __init__(self, filters, stride=4, blocks=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = arguments.integer("filters", filters)
        self.stride = int(arguments.choice("stride", stride, STRIDES))
        self.blocks = arguments.integer("blocks", blocks, low=0)
        policy = self.dtype_policy
        self.conv = keras.layers.Conv2D(
            self.filters,
            3,
            strides=min(self.stride, 2),
            padding="same",
            use_bias=False,
            dtype=policy,
            name="conv",
        )
        self.bn = _batch_norm(policy, "bn")
        self.pool = (
            keras.layers.MaxPooling2D(3, strides=2, padding="same", dtype=policy)
            if self.stride == 4
            else None
        )
        self.residual = [
            BasicBlock(self.filters, dtype=policy, name=f"block{i}") for i in range(self.blocks)
        ]

    def call(self, inputs, training=None):
        x = keras.ops.relu(self.bn(self.conv(inputs), training=training))
        if self.pool is not None:
            x = self.pool(x)
        for block in self.residual:
            x = block(x, training=training)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "stride": self.stride,
            "blocks": self.blocks,
        }


@keras.saving.register_keras_serializable(package="tf_autoseg")
class ResNet18(keras.layers.Layer):
    """ResNet-18 (He et al., 2016) for dense prediction, output stride 8.

    7x7/2 conv, BN, ReLU, 3x3/2 max-pool, then four stages of two basic
    blocks (64, 128, 256, 512 channels); the last two stages are dilated (2,
    4) instead of strided, as in DeepLab, so features keep 1/8 resolution.
    Written in Keras 3 here: no pretrained weights are loaded (none can be
    fetched offline, and the method is unsupervised).
    """

    STAGES = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))
    stride = 8

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        policy = self.dtype_policy
        self.conv = keras.layers.Conv2D(
            64, 7, strides=2, padding="same", use_bias=False, dtype=policy, name="conv"
        )
        self.bn = _batch_norm(policy, "bn")
        self.pool = keras.layers.MaxPooling2D(3, strides=2, padding="same", dtype=policy)
        self.blocks = []
        for stage, (filters, strides, dilation) in enumerate(self.STAGES):
            for i in range(2):
                self.blocks.append(
                    BasicBlock(
                        filters,
                        strides=strides if i == 0 else 1,
                        dilation=dilation,
                        dtype=policy,
                        name=f"stage{stage + 1}_block{i}",
                    )
                )

    def call(self, inputs, training=None):
        x = self.pool(keras.ops.relu(self.bn(self.conv(inputs), training=training)))
        for block in self.blocks:
            x = block(x, training=training)
        return x
