"""The causal layers and what they are built from.

`orderings` (the 16 orderings, ranks, convolution and attention masks; NumPy only),
`masked_conv` (`ShiftedMaskedConv2D`, `MaskedResidualBlock`), `masked_attention`
(`MaskedMultiHeadAttention`, `MaskedAttentionBlock`) and `backbones` (the unmasked fronts).
The four layer classes are importable from here; they load (with TensorFlow) on first use, so
`from tf_autoseg.layers import orderings` stays free of TensorFlow. Saved models do not depend
on these paths: the layers are registered as `tf_autoseg>ClassName`.
"""

import importlib

_EXPORTS = {
    "MaskedAttentionBlock": "tf_autoseg.layers.masked_attention",
    "MaskedMultiHeadAttention": "tf_autoseg.layers.masked_attention",
    "MaskedResidualBlock": "tf_autoseg.layers.masked_conv",
    "ShiftedMaskedConv2D": "tf_autoseg.layers.masked_conv",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tf_autoseg.layers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
