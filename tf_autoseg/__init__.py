"""tf_autoseg: autoregressive unsupervised image segmentation in Keras 3.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation",
ECCV 2020 (arXiv 2007.08247).

The names below are imported on first use, not with the package: the command-line programs
(`python -m tf_autoseg.train`, ...) parse their flags, and answer `--help`, before TensorFlow
loads. `import tf_autoseg` is enough for `keras.saving.load_model` to load the package's models
and layers: Keras's table of custom objects imports them when asked (`registration`).
"""

from tf_autoseg import lazy
from tf_autoseg import registration

__version__ = "0.1.0"

# Public name -> the module that defines it (a module itself for `losses` and `orderings`).
_EXPORTS = {
    "AutoSegModel": "tf_autoseg.modeling.model",
    "MaskedAttentionBlock": "tf_autoseg.layers.masked_attention",
    "MaskedMultiHeadAttention": "tf_autoseg.layers.masked_attention",
    "MaskedResidualBlock": "tf_autoseg.layers.masked_conv",
    "ShiftedMaskedConv2D": "tf_autoseg.layers.masked_conv",
    "losses": "tf_autoseg.modeling.losses",
    "orderings": "tf_autoseg.layers.orderings",
}

__getattr__, __dir__, __all__ = lazy.exports(__name__, _EXPORTS)
registration.watch()  # last: the package's names are all defined
