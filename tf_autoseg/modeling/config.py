"""`ModelConfig`, exactly `AutoSegModel`'s arguments, and the slides' `VARIANTS` (no TensorFlow).

The training program turns its flags into a `ModelConfig` (`tf_autoseg.training.config`) and
builds `AutoSegModel(input_shape=..., **config.arguments())`; a test holds the fields, and their defaults,
equal to the constructor's signature, so an argument added there and not here is found.
"""

import dataclasses
from typing import Any

from tf_autoseg import arguments
from tf_autoseg.layers import orderings

FRONTS = ("identity", "stem", "residual", "resnet18")
LABEL_SOURCES = ("head", "features", "overclustering")
OBJECTIVES = ("ac", "arl")
SAMPLINGS = ("random", "no_repeat", "hard")
GEOMETRIC = ("none", "flip", "rotate", "flip_rotate")

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
    """`AutoSegModel`'s arguments but `input_shape` (the data's), with the same defaults,
    checked and normalised when the config is made (`AutoSegModel` makes one of its arguments):
    a bad argument is a ValueError naming it, before any layer is built.

    `AutoSegModel(input_shape=s, **config.arguments())` builds the model it describes.
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

    def __post_init__(self):
        checked = {
            "num_classes": arguments.integer("num_classes", self.num_classes, 2),
            "front": arguments.choice("front", self.front, FRONTS),
            "front_blocks": arguments.integer("front_blocks", self.front_blocks, 0),
            "ar_blocks": arguments.integer("ar_blocks", self.ar_blocks, 0),
            "width": arguments.integer("width", self.width, 1),
            "stride": arguments.choice("stride", self.stride, (1, 2, 4)),
        }
        if checked["front"] == "identity":
            checked["stride"] = 1  # the grid is the image's
        checked["attention_blocks"] = tuple(
            arguments.integer("attention_blocks", i, 1, checked["ar_blocks"])
            for i in self.attention_blocks
        )
        checked["attention_heads"] = arguments.integer("attention_heads", self.attention_heads, 1)
        checked["dropout"] = arguments.rate("dropout", self.dropout)
        if self.overclustering is not None and (
            arguments.integer("overclustering", self.overclustering, 1) <= checked["num_classes"]
        ):
            raise ValueError(
                "`overclustering` must exceed `num_classes` (or be None). Received: "
                f"overclustering={self.overclustering}, num_classes={self.num_classes}"
            )
        checked["objective"] = arguments.choice("objective", self.objective, OBJECTIVES)
        checked["entropy_weight"] = float(self.entropy_weight)
        if self.over_entropy_weight is not None:
            checked["over_entropy_weight"] = float(self.over_entropy_weight)
        checked["marginal_momentum"] = arguments.rate("marginal_momentum", self.marginal_momentum)
        checked["sobel"] = bool(self.sobel)
        checked["input_downsample"] = arguments.integer("input_downsample", self.input_downsample)
        checked["labels_from"] = arguments.choice("labels_from", self.labels_from, LABEL_SOURCES)
        if self.labels_from == "overclustering" and not self.overclustering:
            raise ValueError(
                "`labels_from='overclustering'` needs an `overclustering` head. "
                f"Received: overclustering={self.overclustering!r}"
            )
        checked["displacement"] = arguments.integer("displacement", self.displacement, 0)
        checked["per_offset"] = bool(self.per_offset)
        ids = tuple(orderings.validate(o, argument="orderings") for o in self.orderings)
        if len(set(ids)) != len(ids) or len(ids) < 2:
            raise ValueError(
                "`orderings` must hold at least 2 distinct ordering ids. "
                f"Received: orderings={self.orderings!r}"
            )
        checked["orderings"] = ids
        checked["sampling"] = arguments.choice("sampling", self.sampling, SAMPLINGS)
        checked["photometric"] = bool(self.photometric)
        checked["geometric"] = arguments.choice("geometric", self.geometric, GEOMETRIC)
        checked["temperature"] = arguments.positive("temperature", self.temperature)
        checked["num_negatives"] = arguments.integer("num_negatives", self.num_negatives, 1)
        checked["max_attention_positions"] = arguments.integer(
            "max_attention_positions", self.max_attention_positions, 1
        )
        checked["seed"] = arguments.integer("seed", self.seed, 0)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def arguments(self):
        """The keyword arguments of `AutoSegModel` (but `input_shape`)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
