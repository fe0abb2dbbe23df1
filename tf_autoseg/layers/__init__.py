"""The causal layers and what they are built from.

`orderings` (the 16 orderings, ranks, convolution and attention masks; NumPy only),
`masked_conv` (`ShiftedMaskedConv2D`, `MaskedResidualBlock`), `masked_attention`
(`MaskedMultiHeadAttention`, `MaskedAttentionBlock`) and `backbones` (the unmasked fronts).
The four layer classes are importable from here; they load (with TensorFlow) on first use, so
`from tf_autoseg.layers import orderings` stays free of TensorFlow. Saved models do not depend
on these paths: the layers are registered as `tf_autoseg>ClassName`.
"""

from tf_autoseg import lazy

_EXPORTS = {
    "MaskedAttentionBlock": "tf_autoseg.layers.masked_attention",
    "MaskedMultiHeadAttention": "tf_autoseg.layers.masked_attention",
    "MaskedResidualBlock": "tf_autoseg.layers.masked_conv",
    "ShiftedMaskedConv2D": "tf_autoseg.layers.masked_conv",
}

__getattr__, __dir__, __all__ = lazy.exports(__name__, _EXPORTS)
