"""`ModelConfig`, exactly `AutoSegModel`'s arguments, and the slides' `VARIANTS` (no TensorFlow).

The training program turns its flags into a `ModelConfig` (`tf_autoseg.training.config`) and
builds `AutoSegModel(input_shape=..., **config)`; a test holds the fields, and their defaults,
equal to the constructor's signature, so an argument added there and not here is found.
"""

import dataclasses
from typing import Any

from tf_autoseg.layers import orderings

# The slides' table "Variations of the model F" (h, g_ar), plus the untrained
# baseline, which is F2's architecture never trained.
VARIANTS = {
    "F1": dict(front="identity", ar_blocks=5),
    "F2": dict(front="stem", ar_blocks=5),
    "F3": dict(front="residual", front_blocks=1, ar_blocks=4),
    "F4": dict(front="residual", front_blocks=5, ar_blocks=0),
    "F5": dict(front="resnet18", ar_blocks=0),
    "random": dict(front="stem", ar_blocks=5),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """`AutoSegModel`'s arguments but `input_shape` (the data's), with the same defaults.

    `dict(config)` is not defined; `AutoSegModel(input_shape=s, **config.arguments())`.
    """

    num_classes: int
    front: str = "stem"
    front_blocks: int = 0
    ar_blocks: int = 5
    width: int = 64
    stride: int = 4
    attention_blocks: tuple = ()
    attention_heads: int = 4
    dropout: float = 0.0
    overclustering: Any = None
    objective: str = "ac"
    entropy_weight: float = 1.0
    over_entropy_weight: Any = None
    marginal_momentum: float = 0.0
    sobel: bool = False
    input_downsample: int = 1
    labels_from: str = "head"
    displacement: int = 0
    per_offset: bool = False
    orderings: tuple = tuple(orderings.RASTER)
    sampling: str = "random"
    photometric: bool = False
    geometric: str = "none"
    temperature: float = 0.1
    num_negatives: int = 255
    max_attention_positions: int = 4096
    seed: int = 0

    def arguments(self):
        """The keyword arguments of `AutoSegModel` (but `input_shape`)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
