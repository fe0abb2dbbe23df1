"""Causal convolutions: the shifted masked convolution and its residual block.

Each layer takes `layer(x, ordering=None)`. `ordering` is an id of
`tf_autoseg.layers.orderings` (a Python int or a scalar int tensor, so that one
traced graph serves all 16 orderings) and makes the layer causal under that
scan; `ordering=None` is plain inference: no shift, no mask, with the same
weights (the paper's "fall back to the normal convolution").
`ordering_tensor` checks that argument for every causal layer, attention
included.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_autoseg import arguments
from tf_autoseg.layers import orderings


def ordering_tensor(ordering, allowed, argument="ordering"):
    """Validates a layer's `ordering` argument; returns it as a scalar int32 tensor.

    A Python int is checked at once; a tensor gets a runtime check, since an
    out-of-range `tf.gather` index returns zeros on GPU instead of failing.

    Args:
        ordering: a Python int or a scalar integer tensor (not None).
        allowed: the ordering ids accepted (a `range`).
        argument: the argument's name, for the error message.
    """
    if not tf.is_tensor(ordering):
        return tf.constant(orderings.validate(ordering, allowed, argument), tf.int32)
    if not ordering.dtype.is_integer or ordering.shape.rank != 0:
        raise ValueError(
            f"`{argument}` must be None, a Python int or a scalar integer tensor "
            f"holding an ordering id in [{allowed.start}, {allowed.stop - 1}]. "
            f"Received: {argument} with dtype={ordering.dtype.name}, "
            f"shape={ordering.shape}"
        )
    ordering = tf.cast(ordering, tf.int32)
    message = (
        f"`{argument}` must be an ordering id in [{allowed.start}, "
        f"{allowed.stop - 1}]. Received: {argument}="
    )
    with tf.control_dependencies(
        [
            tf.debugging.assert_greater_equal(ordering, allowed.start, message=message),
            tf.debugging.assert_less(ordering, allowed.stop, message=message),
        ]
    ):
        return tf.identity(ordering)


def _square_odd_kernel(kernel_size):
    """Accepts `k` or `(k, k)` with k odd; returns k."""
    size = kernel_size
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(
                "`kernel_size` must be an odd int or a square (k, k) tuple. "
                f"Received: kernel_size={kernel_size!r}"
            )
        size = size[0]
    return orderings.validate_kernel_size(size)


@keras.saving.register_keras_serializable(package="tf_autoseg")
class ShiftedMaskedConv2D(keras.layers.Conv2D):
    """2D convolution made causal under an ordering by a shift and a mask.

    The paper's reduced masking (Ouali et al., ECCV 2020, footnote 2): for a
    raster scan the input is shifted by `(k - 1) // 2` pixels along the
    scan's slow axis, so the kernel's last row is the current row, and only
    the `(k - 1) // 2` weights of that row after the current pixel are
    masked. The shift is done by padding `k - 1` lines on one side and none
    on the other (then a VALID convolution): a pad-and-crop shift followed by
    SAME padding would drop the last line's own pixels. For zigzag scans the
    same shift is used and the kernel keeps the offsets on strictly earlier
    anti-diagonals plus the centre. All orderings share the kernel `W`;
    ordering `o` uses `W * M_o`, so a step only updates unmasked weights.

    Args:
        filters: number of output channels.
        kernel_size: odd int `k` (or `(k, k)`).
        allow_zigzag: whether zigzag orderings (8-15) are accepted. With
            `False` only raster orderings are, as in the paper's convolutions.
        **kwargs: the other arguments of `keras.layers.Conv2D`
            (`activation`, `use_bias`, initializers, regularizers, `dtype`);
            `strides`, `dilation_rate` and `groups` must stay 1 and
            `padding` "same".

    Call arguments:
        inputs: (batch, height, width, channels) tensor.
        ordering: None, a Python int or a scalar int tensor.

    Input shape: (batch, height, width, channels).
    Output shape: (batch, height, width, filters).

    Example:

    >>> import numpy as np
    >>> from tf_autoseg import ShiftedMaskedConv2D
    >>> layer = ShiftedMaskedConv2D(8, 3)
    >>> x = np.random.rand(2, 16, 16, 3).astype("float32")
    >>> layer(x, ordering=0).shape
    TensorShape([2, 16, 16, 8])
    """

    def __init__(self, filters, kernel_size, allow_zigzag=True, **kwargs):
        fixed = {"strides": 1, "dilation_rate": 1, "groups": 1}
        for arg, accepted in fixed.items():
            value = kwargs.get(arg, accepted)
            if value not in (accepted, (accepted, accepted), [accepted, accepted]):
                raise ValueError(
                    f"ShiftedMaskedConv2D supports only {arg}={accepted}. Received: {arg}={value!r}"
                )
        padding = kwargs.pop("padding", "same")
        if str(padding).lower() != "same":
            raise ValueError(
                "ShiftedMaskedConv2D pads itself: `padding` must be 'same'. "
                f"Received: padding={padding!r}"
            )
        if kwargs.get("data_format") not in (None, "channels_last"):
            raise ValueError(
                "ShiftedMaskedConv2D supports only data_format='channels_last'. "
                f"Received: data_format={kwargs['data_format']!r}"
            )
        k = _square_odd_kernel(kernel_size)
        super().__init__(filters, k, padding="same", **kwargs)
        self.allow_zigzag = bool(allow_zigzag)
        self.supported_orderings = (
            range(orderings.NUM_ORDERINGS) if self.allow_zigzag else orderings.RASTER
        )

    def build(self, input_shape):
        super().build(input_shape)
        k = self.kernel_size[0]
        ids = self.supported_orderings
        self._masks = np.stack([orderings.conv_mask(o, k) for o in ids])[..., None, None]
        self._paddings = np.array(
            [[(0, 0), *orderings.conv_padding(o, k), (0, 0)] for o in ids], np.int32
        )

    def call(self, inputs, ordering=None):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if ordering is None:
            outputs = self.convolution_op(inputs, kernel)
        else:
            # Not `self.convolution_op(inputs, kernel * mask)`: it convolves
            # with the layer's symmetric SAME padding, and the shift needs
            # `k - 1` lines on the scan's start side and none on the other,
            # chosen by an ordering that may be a tensor. Explicit asymmetric
            # padding in `tf.nn.conv2d`, behind a `tf.switch_case` over the
            # shifts, was 1.6-1.8x slower than this `tf.pad` (its paddings
            # gathered from a table) + VALID convolution on the development
            # CPU: oneDNN's fast path wants VALID or SAME (DEVELOPERS.md).
            ordering = ordering_tensor(ordering, self.supported_orderings)
            mask = tf.gather(tf.constant(self._masks, kernel.dtype), ordering)
            padded = tf.pad(inputs, tf.gather(self._paddings, ordering))
            k = self.kernel_size[0]
            padded.set_shape(
                [
                    inputs.shape[0],
                    None if inputs.shape[1] is None else inputs.shape[1] + k - 1,
                    None if inputs.shape[2] is None else inputs.shape[2] + k - 1,
                    inputs.shape[3],
                ]
            )
            outputs = ops.conv(padded, kernel * mask, strides=1, padding="valid")
        if self.use_bias:
            outputs = ops.add(outputs, ops.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), "allow_zigzag": self.allow_zigzag}


@keras.saving.register_keras_serializable(package="tf_autoseg")
class MaskedResidualBlock(keras.layers.Layer):
    """Pre-activation residual block of two shifted masked convolutions.

    `y = x + conv2(dropout(act(conv1(act(x)))))`, both convolutions under the
    same ordering. The skip path is the identity, or a 1x1 convolution when
    the channels change: both are per-pixel, so the block stays causal. There
    is no batch normalisation: its batch statistics mix every pixel's value
    into every output and would break causality in training.

    Args:
        filters: output channels.
        kernel_size: odd kernel size of both convolutions.
        dropout: dropout rate between the two convolutions (the paper's p),
            in [0, 1).
        activation: activation before each convolution.
        allow_zigzag: forwarded to both `ShiftedMaskedConv2D`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: (batch, height, width, channels) tensor.
        ordering: None, a Python int or a scalar int tensor.
        training: whether dropout is active.

    Input shape: (batch, height, width, channels).
    Output shape: (batch, height, width, filters).

    Example:

    >>> import numpy as np
    >>> from tf_autoseg import MaskedResidualBlock
    >>> block = MaskedResidualBlock(8, dropout=0.1)
    >>> x = np.random.rand(2, 9, 9, 4).astype("float32")
    >>> block(x, ordering=3).shape
    TensorShape([2, 9, 9, 8])
    >>> block(x, ordering=3, training=True).shape  # dropout active
    TensorShape([2, 9, 9, 8])
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        dropout=0.0,
        activation="relu",
        allow_zigzag=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = arguments.integer("filters", filters)
        self.kernel_size = _square_odd_kernel(kernel_size)
        self.dropout = arguments.rate("dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.allow_zigzag = bool(allow_zigzag)
        conv = functools.partial(
            ShiftedMaskedConv2D,
            self.filters,
            self.kernel_size,
            allow_zigzag=self.allow_zigzag,
            dtype=self.dtype_policy,
        )
        self.conv1 = conv(name="conv1")
        self.conv2 = conv(name="conv2")
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.projection = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            self.projection = keras.layers.Conv2D(
                self.filters, 1, dtype=self.dtype_policy, name="projection"
            )
            self.projection.build(input_shape)
        self.conv1.build(input_shape)
        self.conv2.build((*input_shape[:3], self.filters))

    def call(self, inputs, ordering=None, training=None):
        hidden = self.conv1(self.activation(inputs), ordering=ordering)
        hidden = self.drop(self.activation(hidden), training=training)
        hidden = self.conv2(hidden, ordering=ordering)
        skip = inputs if self.projection is None else self.projection(inputs)
        return skip + hidden

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "allow_zigzag": self.allow_zigzag,
        }
