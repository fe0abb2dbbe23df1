"""The model's options, each declared once, in the section of the piece that uses it (no TensorFlow).

`ModelConfig` nests four sections, as keras-hub keeps a backbone apart from its task:

- `NetworkConfig`: the network `F = h o g_ar o d` (`tf_autoseg.modeling.network`);
- `ViewsConfig`: which orderings make a step's two views, and their transforms
  (`tf_autoseg.modeling.views`);
- `ObjectiveConfig`: AC or ARL on the two views (`tf_autoseg.modeling.objective`);
- `LabellingConfig`: how plain inference turns the network's output into labels
  (`tf_autoseg.modeling.model`, `tf_autoseg.modeling.centres`);

plus the `seed` the views and the objective draw from. Each section checks and normalises its
options when it is made: a bad option is a ValueError naming it, before any layer is built.
`ModelConfig.from_arguments(**options)` routes flat keyword options (what `AutoSegModel`
takes, what its `get_config` and an older run's `.keras` hold) to their sections, and
`arguments()` is the flat form again.
"""

import dataclasses
from typing import Any

from tf_autoseg import arguments
from tf_autoseg.layers import orderings

FRONTS = ("identity", "stem", "residual", "resnet18")
LABEL_SOURCES = ("head", "mixture", "features", "overclustering")
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


class _Section:
    """A frozen section: `_check` returns its checked values, which replace the given ones."""

    def __post_init__(self):
        for name, value in self._check().items():
            object.__setattr__(self, name, value)

    def _check(self):
        return {}

    @classmethod
    def names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def arguments(self):
        return {name: getattr(self, name) for name in self.names()}


@dataclasses.dataclass(frozen=True)
class NetworkConfig(_Section):
    """The network `F = h o g_ar o d` (the slides' "Model").

    Args:
        num_classes: K, clusters of the main head (>= 2).
        front: `h`: "identity", "stem", "residual" (stem + `front_blocks` basic blocks) or
            "resnet18" (output stride 8).
        front_blocks: basic blocks after the stem for `front="residual"`.
        ar_blocks: `g_ar`: number of masked residual blocks (0 = identity).
        width: channels of the stem and of `g_ar`.
        stride: output stride of the stem (1, 2 or 4); `g_ar` and its attention run on the grid
            downsampled by it, and orderings are defined on that grid ("identity": 1).
        attention_blocks: indices i in [1, ar_blocks] after whose i-th masked block a masked
            attention block is inserted.
        attention_heads: heads of each attention block.
        dropout: the paper's p, inside each masked residual block.
        overclustering: K_over > K for an auxiliary overclustering head, or None.
        sobel: feed Sobel gradients of the grey level beside the channels (IIC's COCO-Stuff
            input), which takes weight off raw colour.
        max_attention_positions: refuse attention grids with more positions (memory grows
            with their square).
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
    sobel: bool = False
    max_attention_positions: int = 4096

    def _check(self):
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
        checked["sobel"] = bool(self.sobel)
        checked["max_attention_positions"] = arguments.integer(
            "max_attention_positions", self.max_attention_positions, 1
        )
        return checked

    @property
    def grid_stride(self):
        """Input pixels per cell of the grid that `g_ar` and the heads run on."""
        return {"identity": 1, "resnet18": 8}.get(self.front, self.stride)


@dataclasses.dataclass(frozen=True)
class ViewsConfig(_Section):
    """A training step's two views (the slides' "Training procedure").

    Args:
        orderings: the set O of ordering ids views are drawn from (>= 2 distinct ids).
        sampling: "random", "no_repeat" (every pair once before any repeats) or "hard" (the
            pair of O the current model agrees on least).
        photometric: colour jitter, drawn independently per view.
        geometric: "none", "flip", "rotate" or "flip_rotate": a random dihedral transform
            applied to the second view's input and inverted on its output.
    """

    orderings: tuple = tuple(orderings.RASTER)
    sampling: str = "random"
    photometric: bool = False
    geometric: str = "none"

    def _check(self):
        ids = tuple(orderings.validate(o, argument="orderings") for o in self.orderings)
        if len(set(ids)) != len(ids) or len(ids) < 2:
            raise ValueError(
                "`orderings` must hold at least 2 distinct ordering ids. "
                f"Received: orderings={self.orderings!r}"
            )
        return {
            "orderings": ids,
            "sampling": arguments.choice("sampling", self.sampling, SAMPLINGS),
            "photometric": bool(self.photometric),
            "geometric": arguments.choice("geometric", self.geometric, GEOMETRIC),
        }


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig(_Section):
    """The objective of two views (METHOD.md section 5).

    Args:
        objective: "ac" or "arl". ARL trains the representation only (the heads get no
            gradient): cluster its features to segment.
        entropy_weight: lambda of the AC loss (1 = mutual information).
        over_entropy_weight: lambda of the overclustering head's term (None:
            `entropy_weight`); IIC uses 1.5 on the main head and 1.0 on the overclustering one.
        marginal_momentum: in [0, 1). 0: the entropy terms use each step's own cluster
            marginal (IIC), which asks every batch to use all clusters equally. Above 0: a
            moving average of the marginal across steps (`losses.moving_marginal`), so only
            the data as a whole is asked to balance, not each batch.
        displacement: half side of IIC's displacement window for AC.
        per_offset: one joint per offset of the window and the mean of their mutual
            information (IIC's "uncollapsed" segmentation loss), instead of one joint pooled
            over the window.
        temperature, num_negatives: of the ARL objective.
    """

    objective: str = "ac"
    entropy_weight: float = 1.0
    over_entropy_weight: Any = None
    marginal_momentum: float = 0.0
    displacement: int = 0
    per_offset: bool = False
    temperature: float = 0.1
    num_negatives: int = 255

    def _check(self):
        checked = {
            "objective": arguments.choice("objective", self.objective, OBJECTIVES),
            "entropy_weight": float(self.entropy_weight),
            "marginal_momentum": arguments.rate("marginal_momentum", self.marginal_momentum),
            "displacement": arguments.integer("displacement", self.displacement, 0),
            "per_offset": bool(self.per_offset),
            "temperature": arguments.positive("temperature", self.temperature),
            "num_negatives": arguments.integer("num_negatives", self.num_negatives, 1),
        }
        if self.over_entropy_weight is not None:
            checked["over_entropy_weight"] = float(self.over_entropy_weight)
        return checked


@dataclasses.dataclass(frozen=True)
class LabellingConfig(_Section):
    """How plain inference turns the network's output into the K labels it answers.

    Args:
        labels_from: "head" (the main head's argmax, the paper's); "mixture" (the label-free
            stage of `tf_autoseg.modeling.labelling`: a Gaussian mixture over the features
            and the pixels' colour, fitted to the images it labels); or the nearest of K
            centres found by k-means in the space of `g_ar`'s "features" or of the
            "overclustering" head's probabilities. All but "head" are fitted without labels
            by `AutoSegModel.fit_labelling` (the training program fits them at its end);
            until then inference answers with the head.
        mixture_dims: the features' principal axes in the mixture's space.
        mixture_colour: whether the pixels' colour joins them there.
        refine_iterations: mean-field steps of the edge-aware refinement at full resolution
            (`tf_autoseg.modeling.refinement`) after any labelling but the head's (0, the
            default of models saved before it existed: none; the training program's
            `--refine_iterations` defaults to 3).
        input_downsample: inference shrinks images this many times before the network: set
            it to the `--downsample` the training images were shrunk by, so that full-size
            images are segmented at the training scale. Training steps take the crops as
            they come.
    """

    labels_from: str = "head"
    mixture_dims: int = 3
    mixture_colour: bool = True
    refine_iterations: int = 0
    input_downsample: int = 1

    def _check(self):
        return {
            "labels_from": arguments.choice("labels_from", self.labels_from, LABEL_SOURCES),
            "mixture_dims": arguments.integer("mixture_dims", self.mixture_dims, 1),
            "mixture_colour": bool(self.mixture_colour),
            "refine_iterations": arguments.integer("refine_iterations", self.refine_iterations, 0),
            "input_downsample": arguments.integer("input_downsample", self.input_downsample),
        }


SECTIONS = {
    "network": NetworkConfig,
    "views": ViewsConfig,
    "objective": ObjectiveConfig,
    "labelling": LabellingConfig,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """`AutoSegModel`'s options but `input_shape` (the data's): four sections and a seed.

    `AutoSegModel(config, input_shape)` builds the model it describes; the training program
    makes one from its flags. A check that spans sections is made here.

    Args:
        network, views, objective, labelling: the sections (see each class).
        seed: seeds ordering sampling, augmentations and ARL's negatives.
    """

    network: NetworkConfig
    views: ViewsConfig = ViewsConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    labelling: LabellingConfig = LabellingConfig()
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "seed", arguments.integer("seed", self.seed, 0))
        if self.labelling.labels_from == "overclustering" and not self.network.overclustering:
            raise ValueError(
                "`labels_from='overclustering'` needs an `overclustering` head. "
                f"Received: overclustering={self.network.overclustering!r}"
            )

    @classmethod
    def from_arguments(cls, **options):
        """The config of flat keyword options, each routed to its section by name."""
        unknown = set(options) - set(cls.names())
        if unknown:
            raise TypeError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        sections = {
            key: section(**{name: options[name] for name in section.names() if name in options})
            for key, section in SECTIONS.items()
        }
        return cls(**sections, **({"seed": options["seed"]} if "seed" in options else {}))

    @classmethod
    def names(cls):
        """Every flat option name: the sections' fields and `seed`."""
        return tuple(name for section in SECTIONS.values() for name in section.names()) + ("seed",)

    def arguments(self):
        """The flat keyword options (`AutoSegModel`'s and its `get_config`'s, but
        `input_shape`)."""
        flat = {}
        for key in SECTIONS:
            flat.update(getattr(self, key).arguments())
        return {**flat, "seed": self.seed}
