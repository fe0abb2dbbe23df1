"""Causal attention: masked multi-head self-attention and its residual block.

Each layer takes `layer(x, ordering=None)` as the convolutions of
`tf_autoseg.layers.masked_conv` do (the `ordering` argument is checked by the same
`masked_conv.ordering_tensor`): an ordering id makes the attention causal under
that scan; `ordering=None` is full attention with the same weights.
"""

import functools

import keras
import tensorflow as tf
from keras import ops

from tf_autoseg import arguments
from tf_autoseg.layers import orderings
from tf_autoseg.layers.masked_conv import ordering_tensor


@functools.lru_cache(maxsize=16)
def _ranks_constant(height, width):
    table = orderings.ranks_table(height, width)
    table.setflags(write=False)
    return table


@keras.saving.register_keras_serializable(package="tf_autoseg")
class MaskedMultiHeadAttention(keras.layers.Layer):
    """Multi-head self-attention over a feature map, causal under an ordering.

    `A = softmax(Q K^T / sqrt(key_dim) + log M_o) V` with `M_o[p, q] = 1` iff
    `rank_o(q) <= rank_o(p)` (Ouali et al., ECCV 2020, section 3.2): the mask
    is applied to the logits before the softmax, and rows and columns are
    indexed by pixel position. It removes the blind spots of masked
    convolutions and is what makes zigzag orderings expressive. Wraps
    `keras.layers.MultiHeadAttention` over the flattened H*W positions.
    Memory grows as (H*W)^2: run it on a downsampled grid.

    Args:
        num_heads: number of attention heads (>= 1).
        key_dim: size of each head's query and key (>= 1).
        value_dim: size of each head's value (>= 1); defaults to `key_dim`.
        dropout: dropout rate on the attention weights, in [0, 1).
        use_bias: whether the projections use biases.
        output_dim: channels of the output (>= 1); defaults to the input's.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (batch, height, width, channels) tensor; height and width
            must be static when `ordering` is given.
        ordering: None (full attention), a Python int or a scalar int tensor.
        training: whether attention dropout is active.

    Input shape: (batch, height, width, channels).
    Output shape: (batch, height, width, output_dim or channels).

    Example:

    >>> import numpy as np
    >>> from tf_autoseg import MaskedMultiHeadAttention
    >>> layer = MaskedMultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = np.random.rand(2, 6, 5, 8).astype("float32")
    >>> layer(x, ordering=9).shape
    TensorShape([2, 6, 5, 8])
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = arguments.integer("num_heads", num_heads)
        self.key_dim = arguments.integer("key_dim", key_dim)
        self.value_dim = arguments.optional_integer("value_dim", value_dim)
        self.dropout = arguments.rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = arguments.optional_integer("output_dim", output_dim)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_shape=self.output_dim,
            dtype=self.dtype_policy,
            name="attention",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "MaskedMultiHeadAttention expects (batch, height, width, channels) "
                f"inputs. Received: input_shape={input_shape}"
            )
        batch, height, width, channels = input_shape
        positions = None if height is None or width is None else height * width
        sequence = (batch, positions, channels)
        self.attention.build(sequence, sequence)

    def call(self, inputs, ordering=None, training=None):
        batch, height, width = ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2]
        sequence = ops.reshape(inputs, (batch, height * width, inputs.shape[-1]))
        mask = None
        if ordering is not None:
            height, width = inputs.shape[1], inputs.shape[2]
            if height is None or width is None:
                raise ValueError(
                    "MaskedMultiHeadAttention needs a static height and width to build "
                    f"the mask of an ordering. Received: inputs.shape={inputs.shape}"
                )
            ordering = ordering_tensor(ordering, range(orderings.NUM_ORDERINGS))
            ranks = tf.gather(tf.constant(_ranks_constant(height, width)), ordering)
            mask = (ranks[None, :] <= ranks[:, None])[None]
        outputs = self.attention(sequence, sequence, attention_mask=mask, training=training)
        return ops.reshape(outputs, (batch, height, width, outputs.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.output_dim or input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_dim": self.output_dim,
        }


@keras.saving.register_keras_serializable(package="tf_autoseg")
class MaskedAttentionBlock(keras.layers.Layer):
    """Pre-norm residual attention block: `y = x + attention(layer_norm(x))`.

    Layer normalisation is over channels, per pixel, so the block is causal
    under the same ordering as its `MaskedMultiHeadAttention`.

    Args:
        num_heads: attention heads (>= 1).
        key_dim: size of each head's query and key (>= 1); defaults to
            `channels // num_heads` (at least 1) at build time.
        dropout: dropout on the attention weights, in [0, 1).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: (batch, height, width, channels) tensor; height and width
            must be static when `ordering` is given.
        ordering: None, a Python int or a scalar int tensor.
        training: whether dropout is active.

    Input shape: (batch, height, width, channels).
    Output shape: (batch, height, width, channels), as the input.

    Example:

    >>> import numpy as np
    >>> from tf_autoseg import MaskedAttentionBlock
    >>> block = MaskedAttentionBlock(num_heads=2)
    >>> x = np.random.rand(2, 4, 6, 8).astype("float32")
    >>> block(x, ordering=12).shape
    TensorShape([2, 4, 6, 8])
    >>> block.attention.key_dim  # 8 channels // 2 heads
    4
    """

    def __init__(self, num_heads=4, key_dim=None, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = arguments.integer("num_heads", num_heads)
        self.key_dim = arguments.optional_integer("key_dim", key_dim)
        self.dropout = arguments.rate("dropout", dropout)
        self.norm = keras.layers.LayerNormalization(dtype=self.dtype_policy, name="norm")
        self.attention = None

    def build(self, input_shape):
        channels = input_shape[-1]
        key_dim = self.key_dim or max(1, channels // self.num_heads)
        self.attention = MaskedMultiHeadAttention(
            self.num_heads, key_dim, dropout=self.dropout, dtype=self.dtype_policy, name="mhsa"
        )
        self.norm.build(input_shape)
        self.attention.build(input_shape)

    def call(self, inputs, ordering=None, training=None):
        return inputs + self.attention(self.norm(inputs), ordering=ordering, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
        }
