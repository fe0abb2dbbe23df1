"""The causal layers, under the names `tf_autoseg.layers` has always offered.

Convolutions live in `tf_autoseg.masked_conv`, attention in
`tf_autoseg.masked_attention`. This module only re-exports them, so that
`from tf_autoseg.layers import ...` keeps working (`tf_autoseg.model` imports
from here). Saved models do not need it: the layers are registered as
`tf_autoseg>ClassName`, a name that does not depend on their module.
"""

from tf_autoseg.masked_attention import MaskedAttentionBlock
from tf_autoseg.masked_attention import MaskedMultiHeadAttention
from tf_autoseg.masked_conv import MaskedResidualBlock
from tf_autoseg.masked_conv import ShiftedMaskedConv2D

__all__ = [
    "MaskedAttentionBlock",
    "MaskedMultiHeadAttention",
    "MaskedResidualBlock",
    "ShiftedMaskedConv2D",
]
