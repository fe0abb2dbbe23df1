"""tf_autoseg: autoregressive unsupervised image segmentation in Keras 3.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation",
ECCV 2020 (arXiv 2007.08247).
"""

from tf_autoseg import losses
from tf_autoseg import orderings
from tf_autoseg.masked_attention import MaskedAttentionBlock
from tf_autoseg.masked_attention import MaskedMultiHeadAttention
from tf_autoseg.masked_conv import MaskedResidualBlock
from tf_autoseg.masked_conv import ShiftedMaskedConv2D
from tf_autoseg.model import AutoSegModel

__version__ = "0.1.0"

__all__ = [
    "AutoSegModel",
    "MaskedAttentionBlock",
    "MaskedMultiHeadAttention",
    "MaskedResidualBlock",
    "ShiftedMaskedConv2D",
    "losses",
    "orderings",
]
